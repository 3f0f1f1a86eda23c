"""``mmbot kill`` (the kill switch's file trigger) and ``mmbot audit verify`` (docs/risk.md)."""

from __future__ import annotations

import getpass
import socket
from datetime import UTC, datetime
from pathlib import Path

import click

from mmbot.paths import DEFAULT_BACKTEST_CONFIG


KILL_ENVS = ("backtest", "shadow", "testnet", "demo", "mainnet")


def _signal_file(config_path: Path, env: str | None, account: str | None) -> tuple[Path, str, str]:
    """(signal file, env, account) of ``risk.kill_switch.file`` in ``config_path``. ``env``
    defaults to the config's ``[live] environment`` (a live config), else ``backtest``;
    ``account`` to its ``[live] account``, else ``default``."""
    from mmbot.builders import BACKTEST_ENV, DEFAULT_ACCOUNT, kill_file_path
    from mmbot.config.backtest import ConfigError, _read_toml, load_backtest_config

    if not Path(config_path).exists():
        raise ConfigError(f"{config_path}: no such config file")
    cfg = load_backtest_config(Path(config_path))
    live = _read_toml(Path(config_path)).get("live", {})
    live = live if isinstance(live, dict) else {}
    env = env or str(live.get("environment") or BACKTEST_ENV)
    account = account or str(live.get("account") or DEFAULT_ACCOUNT)
    path = kill_file_path(cfg, env, account)
    if path is None:
        raise ConfigError(f"{config_path}: risk.kill_switch.file: not set (give --file)")
    return path, env, account


@click.command("kill")
@click.option("--reason", help="Why (recorded in the audit log). Required unless --resume.")
@click.option("--file", "file_path", type=click.Path(path_type=Path),
              help="Signal file (default: risk.kill_switch.file of --config for --env/--account).")
@click.option("--config", "config_path", type=click.Path(path_type=Path), default=DEFAULT_BACKTEST_CONFIG,
              show_default=True, help="Run config naming the signal file.")
@click.option("--env", "env", type=click.Choice(KILL_ENVS), default=None,
              help="Which mode's bot to halt ({env} of the file; default: the config's [live] environment, "
                   "else backtest).")
@click.option("--account", "account", default=None,
              help="Which account's bot ({account} of the file; default: the config's [live] account, else default).")
@click.option("--resume", is_flag=True, help="Remove the signal file: the kill switch resets to ACTIVE.")
def kill(reason, file_path, config_path, env, account, resume) -> None:
    """Halt trading: write the kill switch's signal file atomically (cancel all, HALTED).

    One file per mode and account (risk.kill_switch.file = "../runs/KILL.{env}.{account}"), so a
    kill for a backtest or testnet never halts mainnet."""
    from mmbot.cli.main import fail
    from mmbot.config.backtest import ConfigError
    from strategies.risk.kill_switch import write_signal

    try:
        if file_path:
            path, what = Path(file_path), ""
        else:
            path, env, account = _signal_file(config_path, env, account)
            what = f" (env {env}, account {account})"
    except ConfigError as e:
        fail(str(e))
    if (path.exists() or path.is_symlink()) and not (path.is_file() and not path.is_symlink()):
        # a kill file is a regular file mmbot writes; replacing or removing anything else (a
        # folder, a device such as /dev/null, a symlink) is never what the operator meant
        fail(f"{path}: exists and is not a regular file; refusing to {'remove' if resume else 'replace'} it")
    if resume:
        existed = path.exists()
        path.unlink(missing_ok=True)
        click.echo(f"removed {path}{what}" if existed else f"{path} was not there{what}; nothing to resume")
        return
    if not reason or not reason.strip():
        fail("--reason: required (it is recorded in the audit log)")
    try:
        user = getpass.getuser()
    except Exception:  # noqa: BLE001 (no user name in some containers)
        user = "unknown"
    write_signal(path, reason.strip(), {"source": "cli", "user": user, "host": socket.gethostname(),
                                        "written_at": datetime.now(UTC).isoformat()})
    click.echo(f"wrote {path}{what}: running guards halt at their next poll")


@click.group("audit")
def audit() -> None:
    """Risk audit logs (hash-chained JSONL)."""


@audit.command("verify")
@click.argument("file", type=click.Path(path_type=Path))
def audit_verify(file) -> None:
    """Check the hash chain of FILE: exit 0 when intact, 2 with the first broken line."""
    from mmbot.cli.main import fail
    from strategies.risk.audit import verify_chain

    if not Path(file).is_file():
        fail(f"{file}: no such file")
    ok, line, problem = verify_chain(file)
    if not ok:
        fail(f"{file}: line {line}: {problem}")
    click.echo(f"{file}: ok, {line} record(s), chain intact")


def register(main: click.Group) -> None:
    main.add_command(kill)
    main.add_command(audit)
