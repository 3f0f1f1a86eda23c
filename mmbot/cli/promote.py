"""``mmbot promote RUN_DIR --env testnet``: a wf run's champion as a ready live config (docs/tuning.md).

Exit status: 0 written; 2 refused (one line: no champion, a failed gate, an existing file
without --force, a config the live loader rejects).
"""

from __future__ import annotations

from pathlib import Path

import click


@click.command("promote")
@click.argument("run_dir", type=click.Path(path_type=Path))
@click.option("--env", "env", type=click.Choice(["testnet", "demo", "mainnet"]), default="testnet", show_default=True,
              help="Live environment: the template is config/<env>.toml.")
@click.option("--out", "out", type=click.Path(path_type=Path),
              help="File to write (default RUN_DIR/live-<env>.toml).")
@click.option("--force", is_flag=True, help="Replace an existing file.")
def promote_command(run_dir: Path, env: str, out: Path | None, force: bool) -> None:
    """Write the champion of a `mmbot wf` run folder as a live config; refuses if a gate failed."""
    from mmbot.cli.main import fail
    from mmbot.tuning.promote import PromoteError, write_live_config

    target = out or Path(run_dir) / f"live-{env}.toml"
    try:
        notes = write_live_config(run_dir, env, target, force=force)
    except PromoteError as e:
        fail(str(e))
    click.echo(f"wrote {target}: mmbot live --env {env} --config {target}")
    for note in notes:
        click.echo(note)


def register(main: click.Group) -> None:
    main.add_command(promote_command)
