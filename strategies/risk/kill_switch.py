"""Kill switch: a manual trigger halts everything, with the reason recorded.

Triggers, all ending in ``KillSwitch.trigger(reason, source)``:

- a signal file (``file``): read once in ``on_start`` and then every ``poll_interval_ms`` on
  the engine clock. While the file exists the switch is ``HALTED`` (reason from the file's JSON
  ``{"reason": ...}``); when the file is removed the switch resets to ``ACTIVE``. ``mmbot kill --reason TEXT``
  writes the file atomically, ``mmbot kill --resume`` removes it;
- the message-bus endpoint ``mmbot.risk.kill``: any component (a future HTTP endpoint in live
  mode) may ``msgbus.send("mmbot.risk.kill", {"action": "kill" | "reset", "reason": ...})``;
- direct calls to ``trigger`` / ``manual_reset``.

A trigger cancels all orders and sets ``HALTED`` (RiskEngine too). Only the source that halted
the switch resets it: removing the file does not undo an endpoint kill.

Start under a leftover kill: Nautilus' ``Trader`` starts every actor before any strategy, so the
first read in ``on_start`` halts the RiskEngine (through the supervisor) before the strategy
exists. The strategy subscribes to the constraint topic only in its own ``on_start``, after that
first constraint was published; so when a strategy reaches ``RUNNING`` (its
``ComponentStateChanged`` event) while the switch is ``HALTED``, the switch publishes its
constraint once more for it, and no quote is ever sent (before: the first poll came one
``poll_interval_ms`` after start, and the bot quoted meanwhile).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pandas as pd

from nautilus_trader.common.enums import ComponentState
from nautilus_trader.model.identifiers import StrategyId

from strategies.risk.base import (
    ACTIVE, HALTED, KILL_ENDPOINT, MAX_INTERVAL_MS, RiskConstraint, RiskGuard, RiskGuardConfig, check_number,
)


def read_signal(path: str) -> dict | None:
    """The signal file's content (``{"reason": ...}``), ``{}`` if unreadable, None if absent."""
    if not os.path.exists(path):  # the common case, and much cheaper than a failed open
        return None
    try:
        raw = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except OSError:
        return {}
    try:
        data = json.loads(raw)
    except ValueError:
        return {"reason": raw.strip()[:200]}
    return data if isinstance(data, dict) else {}


def write_signal(path: str | os.PathLike[str], reason: str, extra: dict | None = None) -> Path:
    """Write the signal file atomically (temp file in the same directory, then rename)."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = p.with_name(f".{p.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps({"reason": reason, **(extra or {})}, sort_keys=True) + "\n", encoding="utf-8")
    os.replace(tmp, p)
    return p


class KillSwitchConfig(RiskGuardConfig, frozen=True):
    """``file``: signal file path ("" = no file trigger); ``poll_interval_ms`` [ms]."""

    file: str = ""
    poll_interval_ms: int = 1000

    def __post_init__(self) -> None:
        check_number(self, "poll_interval_ms", strict=True, high=MAX_INTERVAL_MS)


class KillSwitch(RiskGuard):
    GUARD = "kill_switch"

    def __init__(self, config: KillSwitchConfig) -> None:
        super().__init__(config)
        self.source = ""
        self.kills = 0

    def on_start(self) -> None:
        super().on_start()
        self.msgbus.register(endpoint=KILL_ENDPOINT, handler=self._on_command)
        self.msgbus.subscribe(topic="events.system.*", handler=self._on_component_state)
        if self.config.file:
            self.poll()  # now, before any strategy starts (module doc), not one interval later
            self.clock.set_timer(f"{self.id}-poll", pd.Timedelta(milliseconds=self.config.poll_interval_ms),
                                 callback=self.on_loop(lambda e: self.poll()))

    def on_stop(self) -> None:
        self.msgbus.deregister(endpoint=KILL_ENDPOINT, handler=self._on_command)
        self.msgbus.unsubscribe(topic="events.system.*", handler=self._on_component_state)
        super().on_stop()

    def _on_component_state(self, event) -> None:
        """A strategy that starts while the switch is halted missed the halt (it subscribes to the
        constraint topic in its own on_start): publish the constraint again for it."""
        if (self.guard_state != HALTED or event.state != ComponentState.RUNNING
                or not isinstance(event.component_id, StrategyId)):
            return
        self.msgbus.publish(topic=self.config.topic, msg=RiskConstraint(
            guard=self.GUARD, ts_ns=self.clock.timestamp_ns(), old_state=HALTED, new_state=HALTED,
            reason=f"{self.reason} (re-sent: {event.component_id} started while halted)",
            allow_bid=False, allow_ask=False, trading_state=HALTED, instrument_id=self._iid_str,
            numbers={"kills": float(self.kills)}))

    def poll(self) -> None:
        """Check the signal file once."""
        signal = read_signal(self.config.file)
        if signal is not None and self.guard_state != HALTED:
            self.trigger(str(signal.get("reason") or "kill file present"), source="file")
        elif signal is None and self.guard_state == HALTED and self.source == "file":
            self.manual_reset("kill file removed", source="file")

    def _on_command(self, msg: dict) -> None:
        action = msg.get("action", "kill")
        source = str(msg.get("source", "endpoint"))
        if action == "kill":
            self.trigger(str(msg.get("reason", "")), source=source)
        elif action == "reset":
            self.manual_reset(str(msg.get("reason", "reset")), source=source)

    def trigger(self, reason: str, source: str = "manual") -> None:
        """Halt: cancel all orders, ``HALTED``; ``reason`` goes to the audit log."""
        if self.guard_state == HALTED:
            return
        self.kills += 1
        self.source = source
        self.transition(HALTED, f"kill switch ({source}): {reason or 'no reason given'}", {"kills": self.kills},
                        allow_bid=False, allow_ask=False, trading_state=HALTED, cancel="all")

    def manual_reset(self, reason: str = "manual reset", source: str = "manual") -> None:
        if self.guard_state == HALTED and source not in (self.source, "manual"):
            return
        self.source = ""
        self.transition(ACTIVE, f"kill switch reset ({source}): {reason}")

    def guard_metrics(self) -> dict:
        return {**super().guard_metrics(), "kills": self.kills}
