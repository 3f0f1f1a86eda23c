"""The recorder's node wiring, shared by every live mode (``mmbot.live.node``, ``mmbot.live.shadow``).

``[live] record`` (default true) adds ``adapters.recorder.RecorderActor`` (raw public frames to
``{SYMBOL}_{YYYY-MM-DD}.jsonl.gz``, our order events and fills to ``orders.jsonl``) writing to
``record_dir`` (default ``<run dir>/recording``). In shadow mode the raw frames come from the node's
own data client (``RawPublicDataClient``, ``feed = true``); in testnet/demo/mainnet from a parallel
tap (``raw_tap_client_config``: the same client with ``feed = false``, its own client id, beside
Nautilus' Bybit data client), see docs/runbook.md.
"""

from __future__ import annotations

from pathlib import Path

# The tap's data-client name (= its ClientId and its factory key). Nautilus builds a client named
# after the part of the config key before the first "-", so this must not contain "-" and must not
# be the venue's data-client key ("BYBIT").
RAW_TAP_CLIENT = "MMBOT_RAW_TAP"
RAW_TAP_DEPTH = 50  # orderbook.{depth}: what the strategy's L2 subscription gets from Bybit (and shadow uses)


def recording_enabled(live) -> bool:
    return bool(getattr(live, "record", True))


def recording_dir(cfg, live, run_dir: Path) -> Path:
    """``[live] record_dir`` (relative to the config file) or ``<run dir>/recording``."""
    return cfg.path(live.record_dir) if getattr(live, "record_dir", "") else Path(run_dir) / "recording"


def recorder_actor_config(instrument_id: str, live, rec_dir: Path, instrument_ids: list[str] | None = None):
    """``instrument_ids``: a [portfolio]'s instruments (one day file per symbol)."""
    from nautilus_trader.config import ImportableActorConfig

    from strategies.risk.base import KILL_ENDPOINT

    extra = {"instrument_ids": tuple(instrument_ids)} if instrument_ids and len(instrument_ids) > 1 else {}
    return ImportableActorConfig(
        actor_path="adapters.recorder:RecorderActor", config_path="adapters.recorder:RecorderConfig",
        config={"instrument_id": instrument_id, "out_dir": str(rec_dir), "component_id": "Recorder", **extra,
                "flush_interval_ms": getattr(live, "record_flush_ms", 1000),
                "required": getattr(live, "record_required", False), "kill_endpoint": KILL_ENDPOINT})


def raw_tap_client_config(instrument_id: str, live, env: str, depth: int = RAW_TAP_DEPTH):
    """The raw public tap for testnet/demo/mainnet: publishes raw frames for the recorder only
    (nothing into the data engine) and subscribes its topics itself on connect."""
    from adapters.recorder import BYBIT_PUBLIC_LINEAR, RawPublicDataClientConfig

    url = live.base_url_ws_public or BYBIT_PUBLIC_LINEAR[env]
    return RawPublicDataClientConfig(url=url, instrument_id=instrument_id, depth=depth, feed=False)
