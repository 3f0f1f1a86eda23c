"""``mmbot wf``: walk-forward tuning (see docs/tuning.md).

Exit status: 0 done and every gate passes, 2 a gate fails (stderr names it) or the input is
rejected (one line naming the key), 1 internal error, 130 interrupted (resume with --storage).
"""

from __future__ import annotations

import os
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import click

from mmbot.paths import CONFIG_DIR

DEFAULT_WF_CONFIG = CONFIG_DIR / "wf.toml"


@click.command("wf")
@click.option("--config", "config_path", type=click.Path(path_type=Path), default=DEFAULT_WF_CONFIG,
              show_default=True, help="TOML run config with a [wf] section.")
@click.option("--space", "space_path", type=click.Path(path_type=Path),
              help="TOML file with the [wf] table (search space, wf keys) for a config without one, "
                   "e.g. --config config/portfolio.toml --space config/wf_portfolio.toml.")
@click.option("--catalog", type=click.Path(path_type=Path), help="Catalog directory (overrides run.catalog).")
@click.option("--instrument", help="Instrument id (overrides run.instrument).")
@click.option("--start", help="Start of the walk-forward range (ISO-8601 UTC); default the catalog's first minute.")
@click.option("--end", help="End of the range; default the catalog's last data.")
@click.option("--train", help="Train window, e.g. 6h (wf.train).")
@click.option("--test", help="Test window, e.g. 2h (wf.test).")
@click.option("--step", help="Step between splits (wf.step; default the test window).")
@click.option("--anchored/--rolling", default=None, help="Anchored train windows (all start at the range start).")
@click.option("--method", type=click.Choice(["tpe", "random", "grid"]), help="Search method (wf.method).")
@click.option("--trials", type=int, help="Trials per split (wf.trials).")
@click.option("--seed", type=int, help="Search seed (wf.seed).")
@click.option("--workers", type=int, help="Parallel backtests (wf.workers; 0 = all cores).")
@click.option("--storage", help="Optuna storage URL, e.g. sqlite:///runs/wf.db: resumable (wf.storage).")
@click.option("--ray-address", help='Run trials on Ray: "local", "auto" or ray://host:10001 (wf.ray_address).')
@click.option("--min-fills", type=int, help="Fewest fills for a scored trial / a used test window (wf.min_fills).")
@click.option("--min-test-minutes", type=float, help="Fewest minutes with data in a test window (wf.min_test_minutes).")
@click.option("--out", "out_dir", type=click.Path(path_type=Path), help="Output directory (default runs/wf-<UTC time>-<hash>/).")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
              help="Override a config key: strategy.levels_per_side=3, wf.trials=5, wf.gates.min_net_pnl_usdt=0.")
@click.option("--progress/--no-progress", default=None, help="Progress bar on stderr (default: when it is a terminal).")
@click.option("--export-config", "export_config", type=click.Path(path_type=Path),
              help="Write the champion as a live config to FILE (as `mmbot promote`); refused if a gate failed.")
@click.option("--export-env", type=click.Choice(["testnet", "demo", "mainnet"]), default="testnet", show_default=True,
              help="Live environment of --export-config (template config/<env>.toml).")
@click.option("--force", is_flag=True, help="--export-config may replace an existing file.")
def wf_command(config_path, space_path, catalog, instrument, start, end, train, test, step, anchored, method, trials, seed,
               workers, storage, ray_address, min_fills, min_test_minutes, out_dir, overrides, progress,
               export_config, export_env, force) -> None:
    """Walk-forward tuning: search on train windows, judge champions on the following test windows."""
    from mmbot.catalog_store import CatalogError
    from mmbot.cli.main import fail
    from mmbot.config.backtest import ConfigError
    from mmbot.config.rules import Override
    from mmbot.run_folder import RunFolderError, check_out_dir, write_marker, write_resolved_config
    from mmbot.tuning.runner import prepare, run_walk_forward
    from mmbot.tuning.space import toml_literal

    sets = list(overrides)
    # Options become overrides that name the option, so a bad value is blamed on it.
    if catalog:
        sets.append(Override(f"run.catalog={toml_literal(str(Path(catalog).resolve()))}", f"--catalog {catalog}"))
    for key, value in (("instrument", instrument), ("start", start), ("end", end)):
        if value:
            sets.append(Override(f"run.{key}={toml_literal(value)}", f"--{key} {value}"))
    for key, value in (("train", train), ("test", test), ("step", step), ("anchored", anchored), ("method", method),
                       ("trials", trials), ("seed", seed), ("workers", workers), ("storage", storage),
                       ("ray_address", ray_address), ("min_fills", min_fills), ("min_test_minutes", min_test_minutes)):
        if value is not None:
            option = f"--{key.replace('_', '-')}" if key != "anchored" else ("--anchored" if value else "--rolling")
            sets.append(Override(f"wf.{key}={toml_literal(value)}", option if key == "anchored" else f"{option} {value}"))
    if export_config is not None and os.path.lexists(export_config) and not force:  # a dangling link too
        fail(f"--export-config {export_config}: exists (use --force to replace it)")  # before hours of trials
    try:
        if out_dir is not None:
            check_out_dir(out_dir, "wf")  # before anything runs: never write into a foreign folder
        plan = prepare(Path(config_path), sets, space_path)
    except (ConfigError, CatalogError, RunFolderError) as e:
        fail(str(e))
    wf = plan.wf
    n_workers = wf.workers or os.cpu_count() or 1
    if wf.storage.startswith("sqlite:///"):
        Path(wf.storage[len("sqlite:///"):]).parent.mkdir(parents=True, exist_ok=True)
    out = Path(out_dir) if out_dir else (plan.cfg.path(plan.cfg.run.out_dir)
                                         / f"wf-{datetime.now(UTC).strftime('%Y%m%dT%H%M%SZ')}-{plan.wf_hash}")
    show = progress if progress is not None else (plan.cfg.run.progress and sys.stderr.isatty())
    per = (f" x {len(plan.instruments)} symbol(s) ({wf.portfolio_params})" if plan.mode == "per_symbol"
           else f" ({len(plan.instruments)} instruments, {wf.portfolio_params} parameters)" if plan.instruments else "")
    click.echo(f"{len(plan.splits)} split(s), {len(plan.skipped)} skipped before running; "
               f"{wf.method} x {wf.trials} trial(s) per split{per}, seed {wf.seed}", err=True)
    from mmbot.tuning.runner import risk_guards

    guards = risk_guards(plan.cfg)
    click.echo(f"risk guards in every trial: {', '.join(guards)} (as live)" if guards else
               f"risk guards: none ({config_path}: no [risk] guards, or risk.enabled = false): trials run without "
               "the live guards (docs/tuning.md, Risk guards in trials)",
               err=True)
    t0 = time.perf_counter()
    try:
        outcome = run_walk_forward(plan, workers=n_workers, storage=wf.storage, ray_address=wf.ray_address,
                                   progress=show, log=lambda s: click.echo(s, err=True))
    except KeyboardInterrupt:
        hint = " run the same command again to resume" if wf.storage else " (no --storage: nothing kept)"
        click.echo(f"interrupted; finished trials are in the study;{hint}", err=True)
        sys.exit(130)
    except (ConfigError, CatalogError) as e:
        fail(str(e))
    wall = time.perf_counter() - t0
    from mmbot.tuning.report import write_outputs

    try:
        check_out_dir(out, "wf")  # again: the folder may have been filled while the trials ran
    except RunFolderError as e:
        fail(str(e))
    # The marker first: a folder interrupted while its outputs are written is still recognised as ours.
    write_marker(out, "wf", plan.cfg.config_hash(), wf_hash=plan.wf_hash)
    write_resolved_config(out, plan.cfg)
    report, champion = write_outputs(out, outcome)
    oos = report["out_of_sample"]
    reused = f", {outcome.trials_reused} reused from storage" if wf.storage else ""
    ran_on = (f"{wall:.1f} s on {outcome.executor}" if outcome.executor
              else "nothing ran: every result was in the storage" if outcome.trials_reused
              else "nothing ran: every split was skipped")
    click.echo(f"trials: {outcome.trials_run} run now{reused}; {ran_on}")
    if oos["summary"]:
        s = oos["summary"]
        click.echo(f"out-of-sample over {oos['windows']} window(s): net PnL {s['net_pnl']:.2f} USDT, "
                   f"{s['n_fills']} fills, objective {oos['objective']}")
        for iid, r in ((report.get("portfolio") or {}).get("out_of_sample_by_instrument") or {}).items():
            click.echo(f"  {iid}: net PnL {r['summary']['net_pnl']:.2f} USDT, {r['summary']['n_fills']} fills, "
                       f"objective {r['objective']}")
    for o in report["skipped"]:
        click.echo(f"skipped split {o['split']}: {o['reason']}")
    click.echo(f"wrote {out}")
    gates = report["gates"]
    if not gates["passed"]:
        for v in gates["verdicts"]:
            if v["passed"]:
                continue
            if v["gate"] == "out_of_sample_result":  # no split was used: nothing to judge (docs/tuning.md, Gates)
                click.echo("gate failed: out_of_sample_result: no split produced an out-of-sample result "
                           "(see the skipped splits above)", err=True)
            else:
                click.echo(f"gate failed: {v['gate']}: {v['metric']} = {v['value']} (needs {v['op']} {v['threshold']})",
                           err=True)
        if export_config is not None:
            _export(out, export_env, export_config, force)  # refuses: the gate check lives in one place
        sys.exit(2)
    click.echo("all gates pass" if gates["verdicts"] else "no gates configured")
    if export_config is not None:
        _export(out, export_env, export_config, force)


def _export(run_dir: Path, env: str, target: Path, force: bool) -> None:
    """``--export-config``: as ``mmbot promote RUN_DIR --env ENV --out FILE``; exit 2 on a refusal."""
    from mmbot.cli.main import fail
    from mmbot.tuning.promote import PromoteError, write_live_config

    try:
        notes = write_live_config(run_dir, env, Path(target), force=force)
    except PromoteError as e:
        fail(f"--export-config {target}: {e}")
    click.echo(f"wrote {target}: mmbot live --env {env} --config {target}")
    for note in notes:
        click.echo(note)


def register(main: click.Group) -> None:
    main.add_command(wf_command)
