"""``mmbot live``: the market maker on Bybit through a Nautilus TradingNode (mmbot/live/node.py)."""

from __future__ import annotations

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
@click.option("--confirm-mainnet", is_flag=True, help="Required, with [live] allow_mainnet = true, for --env mainnet.")
@click.option("--set", "overrides", multiple=True, help="Override a config key: section.key=value (e.g. live.base_url_http=...).")
def live(env, data_env, config_path, duration, metrics_port, key_file, confirm_mainnet, overrides) -> None:
    """Quote on Bybit (testnet by default) with the backtest's strategy and risk guards."""
    import sys

    if env == "shadow":  # no keys, no execution client: mmbot/live/shadow.py
        from mmbot.live.shadow import shadow_main

        sys.exit(shadow_main(Path(config_path), duration, metrics_port, list(overrides), data_env))

    from mmbot.cli.main import fail
    from mmbot.config.backtest import ConfigError
    from mmbot.live.node import (
        LiveRefused, LiveRun, build_live_node_config, check_environment, kill_token_from_env, load_live_config,
        log_json, banner, parse_duration, print_banner,
    )
    from mmbot.live.lock import LiveLock, LockHeld, lock_path
    from mmbot.live.secrets import SecretsError, load_credentials, mask_process_output

    # Everything up to the lock is checked before any connection; each refusal exits 2.
    try:
        if not Path(config_path).exists():
            raise ConfigError(f"{config_path}: no such config file")
        cfg, live_cfg = load_live_config(Path(config_path), list(overrides))
        env = env or live_cfg.environment
        check_environment(env, live_cfg, confirm_mainnet)
        duration_s = parse_duration(duration)
        keyf = key_file or (cfg.path(live_cfg.api_key_file) if live_cfg.api_key_file else None)
        creds = load_credentials(env, keyf)
    except (ConfigError, LiveRefused, SecretsError) as e:
        fail(str(e))
    port = live_cfg.metrics_port if metrics_port is None else metrics_port
    kill_token = kill_token_from_env(live_cfg)
    masker = mask_process_output(creds.secrets() + ([kill_token] if kill_token else []))
    code = 1
    lock = None
    try:
        lock = LiveLock(lock_path(cfg.path(live_cfg.lock_dir), env, live_cfg.account, cfg.run.instrument))
        try:
            lock.acquire()
        except LockHeld as e:
            log_json("refused", "ERROR", reason=str(e))
            click.echo(f"error: {e}", err=True)
            code = 2
            sys.exit(code)
        from datetime import UTC, datetime

        run_dir = cfg.path(live_cfg.out_dir) / f"{datetime.now(UTC).strftime('%Y%m%dT%H%M%SZ')}-{env}"
        run_dir.mkdir(parents=True, exist_ok=True)
        print_banner(banner(cfg, live_cfg, env, creds, lock.path, port, duration_s))
        try:
            node_config = build_live_node_config(cfg, live_cfg, env, creds, run_dir=run_dir, metrics_port=port,
                                                 kill_token=kill_token)
        except ConfigError as e:
            click.echo(f"error: {e}", err=True)
            code = 2
            sys.exit(code)
        run = LiveRun(node_config, cfg.run.instrument, duration_s)
        code = run.run()
        log_json("exit", code=code, reason=run.stop_reason, run_dir=str(run_dir))
    except SystemExit:
        raise
    except Exception as e:  # noqa: BLE001
        log_json("internal_error", "ERROR", error=f"{type(e).__name__}: {e}")
        code = 1
    finally:
        if lock is not None:
            lock.release()
        masker.stop()
    sys.exit(code)


def register(main: click.Group) -> None:
    main.add_command(live)
