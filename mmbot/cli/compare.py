"""``mmbot compare SHADOW_DIR BACKTEST_DIR`` (mmbot/backtest/compare.py): exit 0 identical fills, 3 divergence,
2 not comparable (different configs, disjoint windows; ``--force``) or unreadable input."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click


@click.command("compare")
@click.argument("shadow_dir", type=click.Path(path_type=Path))
@click.argument("backtest_dir", type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.option("--force", is_flag=True,
              help="Compare even when the resolved configs differ or the time windows do not overlap.")
def compare_cmd(shadow_dir, backtest_dir, as_json, force) -> None:
    """Side by side: orders, fills, volume, fill times, PnL, first divergence and its cause.

    Refused (exit 2, naming what differs) when the two runs' resolved configs differ in a key
    that can change a decision, or their time windows do not overlap; --force compares anyway."""
    from mmbot.cli.main import fail
    from mmbot.backtest.compare import compare, render

    try:
        res = compare(shadow_dir, backtest_dir, force=force)
    except (FileNotFoundError, KeyError, ValueError) as e:  # CompareRefused is a ValueError
        fail(str(e))
    click.echo(json.dumps(res, indent=2, default=str) if as_json else render(res))
    sys.exit(0 if res["identical_fills"] else 3)


def register(main: click.Group) -> None:
    main.add_command(compare_cmd)
