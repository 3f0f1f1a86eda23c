"""``mmbot calibrate --live DIR --out FILE`` (mmbot/backtest/calibrate.py, docs/calibration.md)."""

from __future__ import annotations

from pathlib import Path

import click

from mmbot.paths import DEFAULT_BACKTEST_CONFIG


@click.command("calibrate")
@click.option("--live", "live_dir", required=True, type=click.Path(path_type=Path),
              help="Live/testnet/shadow run directory (recording/ with the raw stream and orders.jsonl).")
@click.option("--out", "out", required=True, type=click.Path(path_type=Path),
              help="Calibration JSON to write; the fit report goes to <stem>_fit.json beside it.")
@click.option("--config", "config_path", type=click.Path(path_type=Path), default=DEFAULT_BACKTEST_CONFIG,
              show_default=True, help="The strategy config the session ran with (TOML).")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE", help="Override a config key (repeatable).")
@click.option("--trials", type=int, default=8, show_default=True,
              help="Grid points per fitted parameter (each grid is then refined 3 times, 2 points each).")
@click.option("--replicates", type=int, default=2, show_default=True,
              help="Simulator seeds averaged per queue-model candidate.")
@click.option("--seed", type=int, default=None, help="Simulator seed of the first replicate (default: run.seed).")
@click.option("--json", "as_json", is_flag=True, help="Print the fit report as JSON.")
def calibrate_cmd(live_dir, out, config_path, overrides, trials, replicates, seed, as_json) -> None:
    """Fit the queue simulator's latency and queue model to a recorded session: backtests of the
    same period, minimising the KS distances of queue wait, fill probability by distance from
    mid, markouts and acknowledgement delay."""
    from mmbot.backtest.calibrate import CalibrationInputError, render, run_calibration
    from mmbot.canonical_json import dumps_canonical
    from mmbot.catalog_store import CatalogError
    from mmbot.cli.main import fail
    from mmbot.config.backtest import ConfigError

    def progress(stage: str, row: dict) -> None:  # one line per candidate on stderr
        if stage == "latency":
            msg = f"latency_ms_mean {row['latency_ms_mean']:8.2f}: KS ack delay {row['ks_ack_latency']:.3f}"
        else:
            msg = f"prob_power n {row['queue_power']:6.3f}: KS sum (fills) {row['objective_fills']:.3f}"
        click.echo(f"calibrate: {msg}", err=True)

    try:
        _check_out_file(out)
        report = run_calibration(live_dir, out, config_path, list(overrides), trials=trials, seed=seed,
                                 replicates=replicates, progress=progress)
    except (CalibrationInputError, ConfigError, CatalogError) as e:
        fail(str(e))
    click.echo(dumps_canonical(report).decode().rstrip() if as_json else render(report))


def _check_out_file(out: Path) -> None:
    """``--out`` and the fit report beside it may replace only files calibrate wrote (a
    calibration JSON, a fit report), never a folder or another file."""
    import json

    from mmbot.backtest.calibrate import CalibrationInputError, fit_report_path

    if Path(out).is_dir() or not Path(out).name:
        raise CalibrationInputError(f"--out {out}: is a directory; give a file name such as calibration.json")
    for path, key, what in ((Path(out), "latency_ms_mean", "a calibration file"),
                            (fit_report_path(out), "calibration", "a calibration fit report")):
        if path.is_dir():
            raise CalibrationInputError(f"--out {out}: {path} is a directory; give a file name such as calibration.json")
        if path.exists():
            try:
                ok = key in json.loads(path.read_text())
            except (OSError, ValueError, TypeError):
                ok = False
            if not ok:
                raise CalibrationInputError(f"--out {out}: {path} exists and is not {what}; refusing to replace it")


def register(main: click.Group) -> None:
    main.add_command(calibrate_cmd)
