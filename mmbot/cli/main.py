"""The ``mmbot`` command line (click).

Exit status everywhere: 0 done, 2 input or configuration rejected (one clear line on
stderr), 1 internal error.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from mmbot.paths import DEFAULT_CATALOG, USER_DATA_HELP, user_catalog_dir

EXIT_REJECTED = 2


def fail(message: str, code: int = EXIT_REJECTED) -> None:
    """One ``error:`` line on stderr (a multi-line message is joined) and exit ``code``."""
    message = "; ".join(line.strip() for line in str(message).splitlines() if line.strip())
    click.echo(f"error: {message}", err=True)
    sys.exit(code)


@click.group()
@click.version_option(package_name="mmbot")
def main() -> None:
    """mmbot: market making on Bybit perpetuals with NautilusTrader."""


@main.group()
def catalog() -> None:
    """Import data into a ParquetDataCatalog and inspect it."""


@catalog.command("import")
@click.argument("paths", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--catalog", "catalog_dir", type=click.Path(path_type=Path), default=user_catalog_dir,
              show_default=f"catalog/ in {USER_DATA_HELP}; the shipped catalog only when given explicitly")
@click.option("--strict", is_flag=True, help="Any problem in the input rejects the whole import.")
@click.option("--report", "report_path", type=click.Path(path_type=Path), help="Write the JSON import report here.")
@click.option("--instruments", "instrument_files", multiple=True, type=click.Path(path_type=Path),
              help="Extra Bybit instruments-info JSON (linear) defining more symbols.")
@click.option("--fee-rates", "fee_file", type=click.Path(path_type=Path), help="Bybit fee-rate JSON for maker/taker fees.")
@click.option("--engine", type=click.Choice(["arrow", "objects"]), default="arrow", show_default=True,
              help="arrow: Bybit order-book files become Arrow columns directly (a file with any problem falls "
                   "back to objects, said per file in --report); objects: every row a Nautilus object first. "
                   "Both write the same catalog.")
@click.option("--jobs", type=click.IntRange(1, 64), default=1, show_default=True,
              help="Order-book files converted in parallel (processes); the catalog is the same for any N.")
@click.option("--progress/--no-progress", default=None,
              help="Progress bar on stderr with messages/s and ETA (default: when stderr is a terminal and CI "
                   "is not 'true').")
def catalog_import(paths, catalog_dir, strict, report_path, instrument_files, fee_file, engine, jobs, progress) -> None:
    """Import Bybit order-book/trade files, mmbot recordings and funding history (PATH...).

    \b
    File kinds, by name (docs/data.md):
      YYYY-MM-DD_SYMBOL_obN.data[.zip]  Bybit historical order book
      SYMBOLYYYY-MM-DD.csv[.gz]         Bybit historical trades
      *.jsonl[.gz]                      mmbot recording (public WebSocket frames)
      SYMBOL_funding[_ANY].json         Bybit GET /v5/market/funding/history response
    """
    from adapters.instruments import InstrumentDefinitionError, InstrumentRegistry
    from adapters.problems import ImportRejected
    from mmbot.canonical_json import write_json_atomic
    from mmbot.catalog_store import CatalogError, ImportResult, import_paths

    inputs = [str(p) for p in paths]
    result, status, error, code = ImportResult(), "ok", None, 0
    bar = _import_progress(list(paths), progress)
    try:
        registry = InstrumentRegistry(list(instrument_files), fee_file)
        result = import_paths(list(paths), catalog_dir, registry, strict=strict, on_wait=lambda pid: click.echo(
            f"waiting: another import into {catalog_dir} (pid {pid}) holds its lock", err=True),
            engine=engine, jobs=jobs, progress=bar.update if bar else None)
    except (ImportRejected, CatalogError, InstrumentDefinitionError) as e:
        status, error, code = "rejected", str(e), EXIT_REJECTED
    finally:
        if bar:
            bar.close()
    report = result.to_json(str(catalog_dir), inputs, status, error)
    if report_path:
        write_json_atomic(report_path, report)
    for d in result.stale_removed:
        click.echo(f"removed {d}: staging left by an import that died (no process held the catalog's lock)", err=True)
    if error:
        fail(error + " (catalog unchanged)", code)
    for w in report["written"]:
        click.echo(f"{w['data_type']:16} {w['instrument_id']:24} {w['rows']:>10} rows")
    problems = report["problems_total"]
    click.echo(
        f"imported {len(inputs)} file(s) into {catalog_dir}: {report['files_added']} new parquet file(s), "
        f"{report['files_duplicate']} duplicate(s) skipped; problems: "
        + (", ".join(f"{k}={v}" for k, v in problems.items()) or "none"),
    )


class _ImportBar:
    """tqdm over input bytes (ETA) with messages/s beside it; ``update(bytes, messages)``."""

    def __init__(self, total_bytes: int) -> None:
        import time

        from tqdm import tqdm

        self._time = time.monotonic
        self._t0 = self._time()
        self._messages = 0
        self._bar = tqdm(total=total_bytes or None, unit="B", unit_scale=True, unit_divisor=1024, file=sys.stderr,
                         desc="import", dynamic_ncols=True)

    def update(self, nbytes: int, messages: int) -> None:
        self._messages += messages
        rate = self._messages / max(self._time() - self._t0, 1e-9)
        self._bar.set_postfix_str(f"{self._messages:,} msgs, {rate:,.0f} msgs/s", refresh=False)
        self._bar.update(nbytes)

    def close(self) -> None:
        self._bar.close()


def _import_progress(paths: list[Path], wanted: bool | None) -> _ImportBar | None:
    import os

    from mmbot.catalog_store import input_bytes

    if wanted is None:
        wanted = sys.stderr.isatty() and os.environ.get("CI", "").lower() != "true"
    return _ImportBar(input_bytes(paths)) if wanted else None


@catalog.command("ls")
@click.option("--catalog", "catalog_dir", type=click.Path(path_type=Path), default=DEFAULT_CATALOG, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def catalog_ls(catalog_dir, as_json) -> None:
    """List instruments, data types, row counts and time ranges."""
    from mmbot.catalog_store import CatalogError, list_catalog
    from mmbot.timeutil import ns_to_iso

    try:
        listing = list_catalog(catalog_dir)
    except CatalogError as e:
        fail(str(e))
    if as_json:
        click.echo(json.dumps(listing, indent=2, sort_keys=True))
        return
    click.echo(f"catalog {listing['catalog']} (nautilus_trader {listing['nautilus_trader']})")
    click.echo("instruments:")
    for i in listing["instruments"]:
        click.echo(f"  {i['instrument_id']:24} tick {i['price_increment']:>8} step {i['size_increment']:>6} "
                   f"min qty {i['min_quantity']:>6} maker {i['maker_fee']} taker {i['taker_fee']}")
    click.echo("data:")
    for d in listing["data"]:
        click.echo(f"  {d['data_type']:18} {d['instrument_id']:24} {d['rows']:>10} rows  "
                   f"{ns_to_iso(d['start_ns'])} .. {ns_to_iso(d['end_ns'])}")


def _register_optional_commands() -> None:
    """Subcommands living in their own modules (added as the project grows)."""
    import importlib

    for module in ("mmbot.cli.backtest", "mmbot.cli.wf", "mmbot.cli.risk", "mmbot.cli.live", "mmbot.cli.compare",
                   "mmbot.cli.calibrate", "mmbot.cli.data", "mmbot.cli.status", "mmbot.cli.promote",
                   "mmbot.cli.runs"):
        try:
            mod = importlib.import_module(module)
        except ModuleNotFoundError as e:
            if e.name != module:
                raise
            continue
        mod.register(main)


_register_optional_commands()

if __name__ == "__main__":
    main()
