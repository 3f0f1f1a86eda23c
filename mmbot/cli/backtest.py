"""``mmbot backtest run``."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from mmbot.paths import DEFAULT_BACKTEST_CONFIG


@click.group()
def backtest() -> None:
    """Replay a catalog through the strategy on Nautilus' simulated Bybit venue."""


@backtest.command("run")
@click.option("--config", "config_path", type=click.Path(path_type=Path), default=DEFAULT_BACKTEST_CONFIG,
              show_default=True, help="TOML run config.")
@click.option("--catalog", type=click.Path(path_type=Path), help="Catalog directory (overrides run.catalog).")
@click.option("--instrument", help="Instrument id, e.g. BTCUSDT-LINEAR.BYBIT (overrides run.instrument).")
@click.option("--start", help="ISO-8601 start (UTC), default the catalog's first data.")
@click.option("--end", help="ISO-8601 end (UTC), default the catalog's last data.")
@click.option("--out", "out_dir", type=click.Path(path_type=Path), help="Output directory (default runs/<timestamp>-<config hash>/).")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE", help="Override a config key, e.g. strategy.levels_per_side=3.")
@click.option("--calibration", type=click.Path(path_type=Path),
              help="Queue-simulator calibration JSON (venue.calibration; docs/queue_model.md).")
@click.option("--progress/--no-progress", default=None, help="Progress bar on stderr (default: when stderr is a terminal).")
def backtest_run(config_path, catalog, instrument, start, end, out_dir, overrides, calibration, progress) -> None:
    """Run one backtest and write report.json/md/html and fills/orders/equity parquet."""
    from mmbot.backtest.run import run_backtest
    from mmbot.catalog_store import CatalogError
    from mmbot.cli.main import fail
    from mmbot.config.backtest import ConfigError, load_backtest_config
    from mmbot.config.rules import Override
    from mmbot.run_folder import RunFolderError, check_out_dir
    from mmbot.tuning.space import toml_literal

    sets = list(overrides)
    # Options become overrides that name the option, so a bad value is blamed on it.
    if catalog:
        sets.append(Override(f"run.catalog={toml_literal(str(Path(catalog).resolve()))}", f"--catalog {catalog}"))
    if calibration:
        sets.append(Override(f"venue.calibration={toml_literal(str(Path(calibration).resolve()))}",
                             f"--calibration {calibration}"))
    for key, value in (("instrument", instrument), ("start", start), ("end", end)):
        if value:
            sets.append(Override(f"run.{key}={toml_literal(value)}", f"--{key} {value}"))
    try:
        if out_dir is not None:
            check_out_dir(out_dir, "backtest")  # before the config: a refused --out costs nothing
        if not Path(config_path).exists():
            raise ConfigError(f"{config_path}: no such config file")
        cfg = load_backtest_config(Path(config_path), sets)
        show = progress if progress is not None else (cfg.run.progress and sys.stderr.isatty())
        outcome = run_backtest(cfg, out_dir=out_dir, progress=show)
    except (ConfigError, CatalogError, RunFolderError) as e:
        fail(str(e))
    metrics = outcome.report["metrics"]
    metrics = metrics.get("portfolio", metrics)  # a [portfolio] run: its sums (docs/portfolio.md)
    pnl, counts = metrics["pnl"], metrics["counts"]
    halted = outcome.extras.get("started_halted")
    click.echo(
        (f"STARTED HALTED (kill switch file {halted['file']}: {halted['reason']}; remove it with "
         f"`mmbot kill --config {config_path} --resume`): " if halted else "")
        + f"net PnL {pnl['net_pnl']:.2f} USDT (gross {pnl['gross_pnl']:.2f}, fees {pnl['fees_paid']:.2f}); "
        f"{counts.get('n_fills', 0)} fills; {outcome.events} stream rows in {outcome.wall_s:.1f} s "
        f"({outcome.events / max(outcome.wall_s, 1e-9):,.0f} rows/s, feed {outcome.feed})",
    )
    click.echo(f"wrote {outcome.out_dir}")


def register(main: click.Group) -> None:
    main.add_command(backtest)
