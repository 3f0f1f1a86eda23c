"""``mmbot kill`` (the kill switch's file trigger) and ``mmbot audit verify`` (docs/risk.md)."""

from __future__ import annotations

import getpass
import socket
from datetime import UTC, datetime
from pathlib import Path

import click

from mmbot.paths import DEFAULT_BACKTEST_CONFIG


def _signal_file(config_path: Path) -> Path:
    from mmbot.config.backtest import ConfigError, load_backtest_config

    if not Path(config_path).exists():
        raise ConfigError(f"{config_path}: no such config file")
    cfg = load_backtest_config(Path(config_path))
    ks = cfg.risk.guards.get("kill_switch") if cfg.risk is not None and cfg.risk.enabled else None
    if not ks or not ks.get("file"):
        raise ConfigError(f"{config_path}: risk.kill_switch.file: not set (give --file)")
    return cfg.path(ks["file"])


@click.command("kill")
@click.option("--reason", help="Why (recorded in the audit log). Required unless --resume.")
@click.option("--file", "file_path", type=click.Path(path_type=Path),
              help="Signal file (default: risk.kill_switch.file of --config).")
@click.option("--config", "config_path", type=click.Path(path_type=Path), default=DEFAULT_BACKTEST_CONFIG,
              show_default=True, help="Run config naming the signal file.")
@click.option("--resume", is_flag=True, help="Remove the signal file: the kill switch resets to ACTIVE.")
def kill(reason, file_path, config_path, resume) -> None:
    """Halt trading: write the kill switch's signal file atomically (cancel all, HALTED)."""
    from mmbot.cli.main import fail
    from mmbot.config.backtest import ConfigError
    from strategies.risk.kill_switch import write_signal

    try:
        path = Path(file_path) if file_path else _signal_file(config_path)
    except ConfigError as e:
        fail(str(e))
    if resume:
        existed = path.exists()
        path.unlink(missing_ok=True)
        click.echo(f"removed {path}" if existed else f"{path} was not there; nothing to resume")
        return
    if not reason or not reason.strip():
        fail("--reason: required (it is recorded in the audit log)")
    try:
        user = getpass.getuser()
    except Exception:  # noqa: BLE001 (no user name in some containers)
        user = "unknown"
    write_signal(path, reason.strip(), {"source": "cli", "user": user, "host": socket.gethostname(),
                                        "written_at": datetime.now(UTC).isoformat()})
    click.echo(f"wrote {path}: running guards halt at their next poll")


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
