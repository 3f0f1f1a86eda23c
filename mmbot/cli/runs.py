"""``mmbot runs ls [ROOT]`` and ``mmbot runs diff A B`` (mmbot/report/runs.py)."""

from __future__ import annotations

import json
from pathlib import Path

import click


def _default_root() -> Path:
    """Where ``mmbot backtest run`` writes without ``--out``: the default config's ``run.out_dir``."""
    from mmbot.config.backtest import load_backtest_config
    from mmbot.paths import DEFAULT_BACKTEST_CONFIG

    cfg = load_backtest_config(DEFAULT_BACKTEST_CONFIG, [])
    return Path(cfg.path(cfg.run.out_dir))


@click.group()
def runs() -> None:
    """List run folders and compare two runs (config and key metrics side by side)."""


@runs.command("ls")
@click.argument("root", required=False, type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="One JSON document instead of the table.")
@click.option("--kind", type=click.Choice(["backtest", "wf", "shadow", "live"]), multiple=True,
              help="Only runs of this kind (repeatable).")
def runs_ls(root: Path | None, as_json: bool, kind: tuple[str, ...]) -> None:
    """Every run folder under ROOT (default: the runs/ folder `mmbot backtest run` writes to), with
    kind, venue, when written, instrument, data window, fills, net PnL and config hash."""
    from mmbot.cli.main import fail
    from mmbot.report.runs import RunsError, find_runs, ls_table, strict_json

    base = root if root is not None else _default_root()
    try:
        found = find_runs(base)
    except RunsError as e:
        fail(f"runs ls: {e}")
    if kind:
        found = [r for r in found if r.kind in kind]
    if as_json:
        doc = {"root": str(base), "runs": [r.to_json(base) for r in found]}
        click.echo(json.dumps(strict_json(doc), indent=1, sort_keys=True, allow_nan=False))
        return
    if not found:
        click.echo(f"no run folders under {base}")
        return
    click.echo(ls_table(found, base))


@runs.command("diff")
@click.argument("run_a", type=click.Path(path_type=Path))
@click.argument("run_b", type=click.Path(path_type=Path))
@click.option("--all", "all_keys", is_flag=True, help="List the config keys that are equal too.")
@click.option("--json", "as_json", is_flag=True, help="One JSON document instead of the tables.")
def runs_diff(run_a: Path, run_b: Path, all_keys: bool, as_json: bool) -> None:
    """Config diff (every key of config.resolved.json that differs) and key metrics of report.json
    side by side, with B - A."""
    from mmbot.cli.main import fail
    from mmbot.report.runs import RunsError, diff, diff_text, load_run, strict_json

    try:
        a, b = load_run(run_a), load_run(run_b)
    except RunsError as e:
        fail(f"runs diff: {e}")
    d = diff(a, b, all_keys=all_keys)
    if as_json:
        click.echo(json.dumps(strict_json(d), indent=1, sort_keys=True, default=str, allow_nan=False))
    else:
        click.echo(diff_text(d))


def register(main: click.Group) -> None:
    main.add_command(runs)
