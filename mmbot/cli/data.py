"""``mmbot data fetch``: download Bybit's public history, optionally import it (docs/fetch.md)."""

from __future__ import annotations

import datetime as dt
import sys
from pathlib import Path

import click

from mmbot.paths import USER_DATA_HELP, user_catalog_dir, user_downloads_dir

EXIT_CODES_HELP = ("Exit status: 0 every file present and verified (and imported); 1 internal error; "
                   "2 bad input or the import rejected the data (catalog unchanged); 3 some files are not "
                   "published (HTTP 404), the rest is complete; 4 some downloads failed after all retries "
                   "(rerun: partial files resume); 130 interrupted.")


@click.group()
def data() -> None:
    """Download public market data."""


@data.command("fetch", epilog=EXIT_CODES_HELP)
@click.option("--symbol", required=True, help="Bybit linear perpetual, e.g. XRPUSDT.")
@click.option("--start", required=True, help="First time (UTC): ISO-8601 (2024-12-01, 2024-12-01T08:00:00Z) "
              "or epoch with unit (1733011200s). Whole UTC days are fetched.")
@click.option("--end", required=True, help="End time, exclusive: --start 2024-12-01 --end 2024-12-03 fetches "
              "2024-12-01 and 2024-12-02.")
@click.option("--kinds", default=",".join(("ob500", "trades", "funding")), show_default=True,
              help="Comma list of ob500, ob200 (daily order-book zips; Bybit's newer days are ob200 only: "
                   "a 404 on ob500 may mean try ob200), trades (daily trade csv.gz), funding (REST history), instruments "
                   "(instruments-info; added by --import for a symbol mmbot does not ship).")
@click.option("--out", "out_dir", type=click.Path(path_type=Path, file_okay=False), default=user_downloads_dir,
              show_default=f"downloads/bybit in {USER_DATA_HELP}", help="Download folder (files in OUT/SYMBOL/).")
@click.option("--jobs", type=click.IntRange(1, 32), default=4, show_default=True, help="Downloads at once.")
@click.option("--attempts", type=click.IntRange(1, 100), default=6, show_default=True,
              help="Tries per file (backoff 0.5 s doubling, capped at 30 s).")
@click.option("--import", "do_import", is_flag=True, help="Import the complete files into --catalog "
              "(the code of `mmbot catalog import`).")
@click.option("--catalog", "catalog_dir", type=click.Path(path_type=Path, file_okay=False), default=user_catalog_dir,
              show_default=f"catalog/ in {USER_DATA_HELP}", help="Catalog for --import.")
@click.option("--base-url-history", envvar="MMBOT_BYBIT_HISTORY_URL", show_envvar=True,
              help="Serves /orderbook/linear/... and /trading/... (default: quote-saver.bycsi.com for order "
                   "books, public.bybit.com for trades).")
@click.option("--base-url-rest", envvar="MMBOT_BYBIT_REST_URL", show_envvar=True,
              help="REST v5 host for funding and instruments (default https://api.bybit.com).")
@click.option("--progress/--no-progress", default=None, help="Progress bar on stderr (default: when stderr is a terminal).")
def fetch_cmd(symbol, start, end, kinds, out_dir, jobs, attempts, do_import, catalog_dir, base_url_history,
              base_url_rest, progress) -> None:
    """Download Bybit's daily order-book and trade files and the funding history of SYMBOL."""
    from mmbot.cli.main import fail
    from mmbot.data import fetch as F
    from mmbot.timeutil import parse_time_ns

    try:
        sym = F.parse_symbol(symbol)
        kind_list = F.parse_kinds(kinds)
        bounds = []
        for flag, text in (("--start", start), ("--end", end)):
            try:
                bounds.append(parse_time_ns(text))
            except ValueError as e:
                raise F.FetchInputError(f"{flag}: {e}") from None
        first, end_day = F.day_range(bounds[0], bounds[1], dt.datetime.now(dt.timezone.utc).date())
        sources = F.Sources.resolve(base_url_history, base_url_rest)
        if do_import and {"ob500", "ob200"} <= set(kind_list):
            raise F.FetchInputError("--kinds: ob500 and ob200 of the same days overlap in one catalog; "
                                    "import one of them")
        if out_dir.exists() and not out_dir.is_dir():
            raise F.FetchInputError(f"--out {out_dir}: not a folder")
    except F.FetchInputError as e:
        fail(str(e), F.EXIT_BAD_INPUT)
    extra_instruments = False
    if do_import and "instruments" not in kind_list:
        from adapters.instruments import InstrumentRegistry

        if sym not in InstrumentRegistry().symbols():
            kind_list = (*kind_list, "instruments")
            extra_instruments = True
            click.echo(f"{sym} is not among mmbot's shipped instruments: fetching its instruments-info for the import")
    req = F.FetchRequest(sym, first, end_day, kind_list, out_dir, jobs)
    days = req.days
    click.echo(f"fetching {sym} {days[0]} .. {days[-1]} ({len(days)} day(s)): {', '.join(kind_list)} -> "
               f"{out_dir / sym}")
    show = progress if progress is not None else sys.stderr.isatty()
    try:
        items = F.fetch(req, sources, F.RetryPolicy(attempts=attempts), progress=show)
    except KeyboardInterrupt:
        click.echo("interrupted: complete files are in place, partial ones (*.part) resume on the next run", err=True)
        sys.exit(130)
    for line in F.summary_lines(items):
        click.echo(line)
    code = F.exit_code(items)
    if do_import:
        _import(items, catalog_dir, extra_instruments or "instruments" in kind_list, sym)
    sys.exit(code)


def _import(items, catalog_dir: Path, use_instruments: bool, symbol: str) -> None:
    """Feed the complete files to the importer of `mmbot catalog import` (mmbot.catalog_store)."""
    from adapters.instruments import InstrumentDefinitionError, InstrumentRegistry
    from adapters.problems import ImportRejected
    from adapters.sources import UnknownFormat, classify
    from mmbot.catalog_store import CatalogError, import_paths
    from mmbot.cli.main import fail

    paths: list[Path] = []
    for item in items:
        if not item.ok or item.kind == "instruments":
            continue
        try:
            classify(item.dest)
        except UnknownFormat:
            click.echo(f"not imported: {item.dest.name} (this mmbot's importer does not read {item.kind} files)")
            continue
        paths.append(item.dest)
    inst = [i.dest for i in items if i.kind == "instruments" and i.ok]
    if use_instruments and not inst:
        fail(f"--import: no instrument definition for {symbol} (instruments-info was not fetched); "
             "catalog unchanged", 2)
    if not paths:
        click.echo("nothing to import")
        return
    try:
        registry = InstrumentRegistry([str(p) for p in inst] if use_instruments else [])
        result = import_paths(paths, catalog_dir, registry, strict=False)
    except (ImportRejected, CatalogError, InstrumentDefinitionError) as e:
        fail(f"--import: {e} (catalog unchanged)", 2)
    report = result.to_json(str(catalog_dir), [str(p) for p in paths], "ok", None)
    for w in report["written"]:
        click.echo(f"{w['data_type']:16} {w['instrument_id']:24} {w['rows']:>10} rows")
    problems = report["problems_total"]
    click.echo(f"imported {len(paths)} file(s) into {catalog_dir}: {report['files_added']} new parquet file(s), "
               f"{report['files_duplicate']} duplicate(s) skipped; problems: "
               + (", ".join(f"{k}={v}" for k, v in problems.items()) or "none"))


def register(main: click.Group) -> None:
    main.add_command(data)
