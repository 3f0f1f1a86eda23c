"""``mmbot live``: the market maker on Bybit through a Nautilus TradingNode (mmbot/live/node.py)."""

from __future__ import annotations

import os
from pathlib import Path

import click

from mmbot.paths import DEFAULT_BACKTEST_CONFIG

DEFAULT_LIVE_CONFIG = Path(DEFAULT_BACKTEST_CONFIG).parent / "testnet.toml"


@click.command("live")
@click.option("--env", "env", type=click.Choice(["testnet", "demo", "mainnet", "shadow"]), default=None,
              help="Bybit environment (default: [live] environment, else testnet); shadow: public data + queue simulator.")
@click.option("--data-env", "data_env", type=click.Choice(["mainnet", "testnet"]), default="mainnet", show_default=True,
              help="Shadow mode: whose public market data to use.")
@click.option("--config", "config_path", type=click.Path(path_type=Path), default=DEFAULT_LIVE_CONFIG,
              show_default=True, help="Run config (strategy, [risk], [live]).")
@click.option("--duration", "duration", default=None, help="Stop after this long (90s, 15m, 2h), as on SIGTERM.")
@click.option("--metrics-port", "metrics_port", type=int, default=None,
              help="Serve /metrics, /health, /ready on this port (0 = any free port; default: [live] metrics_port).")
@click.option("--key-file", "key_file", type=click.Path(path_type=Path), default=None,
              help="TOML file (mode 0600) with api_key and api_secret (default: [live] api_key_file, else env vars).")
@click.option("--confirm-mainnet", is_flag=True,
              help="Required for real money, with a mainnet config file that sets [live] allow_mainnet = true.")
@click.option("--set", "overrides", multiple=True, help="Override a config key: section.key=value (e.g. live.base_url_http=...).")
def live(env, data_env, config_path, duration, metrics_port, key_file, confirm_mainnet, overrides) -> None:
    """Quote on Bybit (testnet by default) with the backtest's strategy and risk guards."""
    import sys

    # Before any Nautilus client exists (live and shadow): a proxy variable never carries loopback
    # (plaintext) traffic. Shadow returned before this, so its clients sent loopback requests (the
    # loopback exchange, a soak in shadow mode) to the proxy.
    from mmbot.live.endpoints import bypass_proxies_for_loopback
    from mmbot.live.node import log_json

    proxied = bypass_proxies_for_loopback()
    if proxied:
        log_json("proxy_env", "INFO", variables=proxied, bypassed_for="localhost,127.0.0.0/8,::1")

    if env == "shadow":  # no keys, no execution client: mmbot/live/shadow.py
        from mmbot.live.shadow import shadow_main

        sys.exit(shadow_main(Path(config_path), duration, metrics_port, list(overrides), data_env))

    from mmbot.cli.main import fail
    from mmbot.config.backtest import ConfigError
    from mmbot.live.lock import LiveLock, LockHeld, LockUnusable, key_lock_path
    from mmbot.live.node import (
        NAUTILUS_LOG_FIFO, LiveRefused, LiveRun, banner, build_live_node_config, check_environment,
        check_node_inputs, live_trader_tag,
        kill_token_from_env, load_live_config, log_json, nautilus_log_paths, parse_duration, print_banner,
    )
    from mmbot.live.secrets import SecretsError, load_credentials, mask_process_output, mask_text, scrub_files
    from mmbot.live.sizing import VenueNotReady, resolve_live_sizing, sizing_summary
    from mmbot.live.stop import VenueSweep

    # Everything up to the lock is checked before any connection; each refusal exits 2.
    try:
        if not Path(config_path).exists():
            raise ConfigError(f"{config_path}: no such config file")
        # a [portfolio]: one market maker per instrument on one execution client (docs/portfolio.md "Modes")
        cfg, live_cfg, file_cfg = load_live_config(Path(config_path), list(overrides), with_file=True,
                                                   portfolio=True)
        from mmbot.live.portfolio import check_instruments_listed, instruments_of, resolve_members_sizing, run_label

        if cfg.portfolio is not None:  # every instrument listed, before any request
            check_instruments_listed(cfg)
        env = env or live_cfg.environment
        endpoints = check_environment(env, live_cfg, confirm_mainnet, file_cfg=file_cfg)
        duration_s = parse_duration(duration)
        keyf = key_file or (cfg.path(live_cfg.api_key_file) if live_cfg.api_key_file else None)
        creds = load_credentials(env, keyf)
        kill_token = kill_token_from_env(live_cfg)
        # Sizes in USDT notional: the venue's order rules and mark price over public REST
        # (mmbot/live/sizing.py; no key is sent); no notional key, no request. After every local
        # check: a typo is exit 2 at once, not exit 4 after timeout_connection_s with the venue down.
        rest_url = endpoints.get("rest").url
        cfg, sizing = resolve_members_sizing(  # a [portfolio]: each instrument at its own mark price
            cfg, lambda member: resolve_live_sizing(member, rest_url, live_cfg.timeout_connection_s))
        check_node_inputs(cfg)  # what the node builder would refuse, before a run folder exists
    except (ConfigError, LiveRefused, SecretsError) as e:
        fail(str(e))
    except VenueNotReady as e:  # not ready at start (exit 4), as a node that cannot connect
        log_json("not_ready", "ERROR", reason=str(e))
        click.echo(f"error: {e}", err=True)
        sys.exit(4)
    port = live_cfg.metrics_port if metrics_port is None else metrics_port
    secrets = creds.secrets() + ([kill_token] if kill_token else [])
    # One instance per API key, whatever the [live] account label or the endpoints' spelling says.
    instruments = instruments_of(cfg)
    lock = LiveLock(key_lock_path(cfg.path(live_cfg.lock_dir), creds.api_key), what="API key",
                    info=f"account={live_cfg.account} instrument={run_label(cfg) if cfg.portfolio else cfg.run.instrument}")
    try:
        lock.acquire()
    except LockHeld as e:
        log_json("refused", "ERROR", reason=str(e))
        fail(str(e))
    except LockUnusable as e:  # bad input: one line naming live.lock_dir and where it came from
        src = next((f"--set {o}" for o in reversed(overrides) if o.partition("=")[0].strip() == "live.lock_dir"),
                   str(config_path))
        fail(f"{src}: live.lock_dir = {live_cfg.lock_dir!r}: {e}")
    from mmbot.builders import kill_file_path
    from mmbot.live.session import (
        new_run_dir, started_halted, summary_line, write_session_config, write_session_report,
    )

    code = 1
    masker = None
    run = None
    reports: list = []
    halted = None
    run_dir = None
    try:
        run_dir = new_run_dir(cfg.path(live_cfg.out_dir), env)
        # stdout/stderr and Nautilus' JSON file log pass through the masking pump from here on.
        masker = mask_process_output(secrets, file_sinks=[nautilus_log_paths(run_dir)])
        # The run folder says what ran, before anything connects (never a key: masked regardless).
        write_session_config(run_dir, cfg, live_cfg, env, endpoints=endpoints, secrets=secrets,
                             kill_file=kill_file_path(cfg, env, live_cfg.account),
                             extra_paths={"run_dir": str(run_dir), "lock": str(lock.path)}, sizing=sizing)
        if os.environ.get("MMBOT_TRACEMALLOC"):  # opt-in diagnostics only (mmbot/live/memtrace.py)
            from mmbot.live.memtrace import maybe_start

            maybe_start(run_dir)
        halted = started_halted(cfg, env, live_cfg.account)
        info = banner(cfg, live_cfg, env, creds, lock.path, port, duration_s, endpoints)
        info.update(run_dir=str(run_dir), started_halted=halted, config_path=str(config_path))
        if cfg.portfolio is not None:
            info["instrument"] = ", ".join(instruments)
        if sizing is not None:  # what the notional keys became, at which price
            info["sizing"] = sizing_summary(sizing) if cfg.portfolio is None else "; ".join(
                f"{iid.split('-')[0]}: {sizing_summary(rec)}" for iid, rec in sizing.items())
        print_banner(info)
        try:
            node_config = build_live_node_config(cfg, live_cfg, env, creds, run_dir=run_dir, metrics_port=port,
                                                 kill_token=kill_token, log_file_name=NAUTILUS_LOG_FIFO)
        except ConfigError as e:
            click.echo(f"error: {e}", err=True)
            code = 2
            sys.exit(code)
        sweep = VenueSweep(api_key=creds.api_key, api_secret=creds.api_secret, rest_url=endpoints.get("rest").url,
                           adapter_environment=endpoints.adapter_environment, instrument_id=instruments[0],
                           trader_tag=live_trader_tag(creds.api_key), deadline_s=live_cfg.stop_deadline_s,
                           mask=lambda text: mask_text(text, secrets))
        if cfg.portfolio is None:
            def after_stop(r):
                reports.append(write_session_report(r, cfg, run_dir, env=env, halted=halted,
                                                    orders_to=endpoints.order_class))
        else:
            from mmbot.live.portfolio import write_portfolio_session_report

            def after_stop(r):
                reports.append(write_portfolio_session_report(r, cfg, run_dir, env=env, halted=halted))
        run = LiveRun(node_config, instruments[0], duration_s, instrument_ids=instruments,
                      ready_timeouts=(live_cfg.timeout_connection_s, live_cfg.timeout_reconciliation_s),
                      reconnect_timeout_s=live_cfg.reconnect_timeout_s, sweep=sweep,
                      status_interval_s=live_cfg.status_interval_s, after_stop=after_stop)
        code = run.run()
        log_json("exit", code=code, reason=run.stop_reason, run_dir=str(run_dir), started_halted=halted)
        print(summary_line(code, run.stop_reason, run_dir, reports[0] if reports else None, halted), flush=True)
    except SystemExit:
        raise
    except Exception as e:  # noqa: BLE001
        log_json("internal_error", "ERROR", error=f"{type(e).__name__}: {e}")
        code = 1
    finally:
        try:
            from nautilus_trader.core import nautilus_pyo3

            nautilus_pyo3.logger_flush()
            import time

            time.sleep(0.1)  # the logger thread writes what it still holds into the masking FIFO
        except Exception:  # noqa: BLE001
            pass
        lock.release()
        if masker is not None:
            masker.stop()
    # After the pump has written the last log line: no file of the run may hold a secret. A hit is
    # a sink that escaped masking at its source (a bug): masked now, and said.
    scrubbed = scrub_files(run_dir, secrets) if run_dir is not None and run_dir.exists() else []
    rec_dir = cfg.path(live_cfg.record_dir) if live_cfg.record_dir else None
    if rec_dir is not None and rec_dir.exists() and run_dir not in rec_dir.parents:
        # A record_dir outside the run folder may be any folder (the key file's, a home directory):
        # only the recorder's own files there (adapters/recorder.py names), never anything else.
        import glob

        mine = [rec_dir / "orders.jsonl"]
        for iid in instruments_of(cfg):
            mine += rec_dir.glob(f"{glob.escape(iid.split('-')[0])}_*.jsonl.gz")
        scrubbed += scrub_files(rec_dir, secrets, only=mine)
    if scrubbed:
        log_json("secret_scrubbed", "ERROR", files=[str(p) for p in scrubbed])
    if run is not None and run.error:
        click.echo(f"error: {run.error}", err=True)
    sys.exit(code)


def register(main: click.Group) -> None:
    main.add_command(live)
