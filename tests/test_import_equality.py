"""Import equality oracle: what `mmbot catalog import` writes, pinned by a digest.

The digest (tests/fixtures/import_equality.json) was recorded with the object importer (Nautilus
``OrderBookDelta`` objects + ``ParquetDataCatalog.write_data``), the importer every catalog in use
was written by. For every parquet file under ``data/``: the sha256 of its bytes and of its rows
(schema with Nautilus' metadata + every row, via an Arrow IPC stream of the whole table), plus the
catalog marker (``mmbot_catalog.json``, book invariant record included) and the import report
(temp paths replaced). Any engine must reproduce it exactly.

Inputs: the shipped real fixtures (XRPUSDT ob500 head, a funding response), a copy of the ob500
fixture with faults injected (gap, bad number, malformed line, crossed book: every problem path),
and a generated stream (tools/gen_synthetic.py) written in Bybit's ob500 layout, as a recording,
as a trade CSV and as a funding response. Small chunk sizes make the generated case cross file
and chunk boundaries.

Regenerate (only when the object importer's output is meant to change):
``MMBOT_WRITE_IMPORT_GOLDEN=1 .venv/bin/python -m pytest tests/test_import_equality.py``.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import shutil
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from adapters.instruments import InstrumentRegistry
from mmbot import catalog_store

FIX = Path(__file__).parent / "fixtures"
GOLDEN = FIX / "import_equality.json"
GEN_START = "2024-12-01T07:30:00Z"
GEN_MINUTES = 4.0
# Small enough that the generated case is written as several parquet files (chunk boundaries).
CHUNK_ROWS = 20_000

_GEN_CACHE: dict[str, list] = {}


def _generated_messages() -> list:
    if "msgs" not in _GEN_CACHE:
        from tools.gen_synthetic import generate, parse_start

        _GEN_CACHE["msgs"] = list(generate("XRPUSDT", parse_start(GEN_START), GEN_MINUTES, 7, depth=500))
    return _GEN_CACHE["msgs"]


def _trade_csv(path: Path, messages: list) -> None:
    """Bybit's daily trade CSV of the generated trades (newest first, as Bybit publishes some days)."""
    header = "timestamp,symbol,side,size,price,tickDirection,trdMatchID,grossValue,homeNotional,foreignNotional"
    rows = []
    for m in messages:
        if not str(m.get("topic", "")).startswith("publicTrade."):
            continue
        for t in m["data"]:
            ts_ms = int(t["T"])
            rows.append(f"{ts_ms // 1000}.{ts_ms % 1000:03d}0,{t['s']},{t['S']},{t['v']},{t['p']},"
                        f"{t.get('L', 'ZeroPlusTick')},{t['i']},1,{t['v']},1")
    rows.reverse()
    path.write_bytes(gzip.compress((header + "\n" + "\n".join(rows) + "\n").encode(), mtime=0))


def _faulty_ob(path: Path) -> None:
    """The real ob500 fixture with one fault of each kind the book validator handles."""
    lines = (FIX / "2024-12-01_XRPUSDT_ob500.data").read_bytes().splitlines()
    msgs = [json.loads(x) for x in lines]
    out = [json.dumps(m, separators=(",", ":")).encode() for m in msgs]
    out[5] = out[5][:40]  # malformed line (truncated JSON)
    m = dict(msgs[12], data=dict(msgs[12]["data"], u=msgs[12]["data"]["u"] + 5))  # update-id gap
    out[12] = json.dumps(m, separators=(",", ":")).encode()
    snap = dict(msgs[0], ts=msgs[20]["ts"], data=dict(msgs[0]["data"], u=msgs[20]["data"]["u"]))
    out[20] = json.dumps(snap, separators=(",", ":")).encode()  # a snapshot rebuilds the book
    m = dict(msgs[3], data=dict(msgs[3]["data"], b=[["1.95x", "10"]]))  # bad number
    out[3] = json.dumps(m, separators=(",", ":")).encode()
    snap = dict(msgs[0], ts=msgs[8]["ts"], data=dict(msgs[0]["data"], u=msgs[8]["data"]["u"]))
    out[8] = json.dumps(snap, separators=(",", ":")).encode()
    snap = dict(msgs[0], ts=msgs[30]["ts"], data=dict(msgs[0]["data"], u=msgs[30]["data"]["u"]))
    out[30] = json.dumps(snap, separators=(",", ":")).encode()
    m = dict(msgs[31], data=dict(msgs[31]["data"], b=[["1.9990", "5"]]))  # bid above the best ask
    out[31] = json.dumps(m, separators=(",", ":")).encode()
    path.write_bytes(b"\n".join(out) + b"\n")


def _inputs(case: str, src: Path) -> list[Path]:
    src.mkdir(parents=True, exist_ok=True)
    if case == "fixtures":
        ob = src / "2024-12-01_XRPUSDT_ob500.data"
        shutil.copy(FIX / "2024-12-01_XRPUSDT_ob500.data", ob)
        funding = src / "BTCUSDT_funding.json"
        shutil.copy(FIX / "http_get_funding_history.json", funding)
        return [ob, funding]
    if case == "faults":
        ob = src / "2024-12-01_XRPUSDT_ob500.data"
        _faulty_ob(ob)
        return [ob]
    if case == "generated":
        from tools.gen_synthetic import generate_funding, parse_start, write_bybit_orderbook, write_recording

        msgs = _generated_messages()
        ob = src / "2024-12-01_XRPUSDT_ob500.data"
        write_bybit_orderbook(ob, msgs)
        trades = src / "XRPUSDT2024-12-01.csv.gz"
        _trade_csv(trades, msgs)
        funding = src / "XRPUSDT_funding.json"
        start = parse_start(GEN_START)
        funding.write_text(json.dumps(generate_funding("XRPUSDT", start, start + int(GEN_MINUTES * 60e9), 7)))
        return [ob, trades, funding]
    if case == "recording":
        from tools.gen_synthetic import write_recording

        rec = src / "gen.jsonl"
        write_recording(rec, _generated_messages()[:1500])
        return [rec]
    raise ValueError(case)


CASES = ("fixtures", "faults", "generated", "recording")


def _rows_digest(path: Path) -> tuple[str, int]:
    table = pq.read_table(path).combine_chunks()
    sink = io.BytesIO()
    with pa.ipc.new_stream(sink, table.schema) as w:
        w.write_table(table)
    return hashlib.sha256(sink.getvalue()).hexdigest(), table.num_rows


def catalog_digest(cat: Path, report: dict, tmp: Path) -> dict:
    files = {}
    for p in sorted((cat / "data").rglob("*.parquet")):
        rows_sha, n = _rows_digest(p)
        files[str(p.relative_to(cat))] = {"rows": n, "rows_sha256": rows_sha,
                                          "bytes_sha256": hashlib.sha256(p.read_bytes()).hexdigest()}
    text = json.dumps(report, sort_keys=True).replace(str(tmp), "<tmp>")
    rep = json.loads(text)
    for f in rep.get("files", []):  # which engine read a file is not part of the output
        f.pop("engine", None)
        f.pop("fallback", None)
    return {"files": files, "marker": json.loads((cat / catalog_store.VERSION_FILE).read_text()), "report": rep}


def run_case(case: str, tmp: Path, monkeypatch, engines: dict | None = None, **import_kwargs) -> dict:
    monkeypatch.setattr(catalog_store, "CHUNK_ROWS", CHUNK_ROWS)
    inputs = _inputs(case, tmp / "src")
    cat = tmp / "cat"
    result = catalog_store.import_paths(inputs, cat, InstrumentRegistry(), **import_kwargs)
    report = result.to_json(str(cat), [str(p) for p in inputs], "ok", None)
    if engines is not None:
        engines.update({Path(f["file"]).name: f.get("engine") for f in report["files"]})
    return catalog_digest(cat, report, tmp)


def _golden() -> dict:
    return json.loads(GOLDEN.read_text()) if GOLDEN.exists() else {}


@pytest.mark.parametrize("case", CASES)
def test_object_importer_matches_recorded_digest(case, tmp_path, monkeypatch):
    """The recorded digest is the object importer's output (it pins the oracle itself)."""
    digest = run_case(case, tmp_path, monkeypatch, engine="objects")
    if os.environ.get("MMBOT_WRITE_IMPORT_GOLDEN"):
        golden = _golden()
        golden[case] = digest
        GOLDEN.write_text(json.dumps(dict(sorted(golden.items())), indent=1, sort_keys=True) + "\n")
    assert digest == _golden()[case]


# Which engine each input must take under --engine arrow: clean Bybit order-book files the Arrow
# path, the faulty copy falls back (its problems are reported by the object path), others objects.
ARROW_FILES = {"fixtures": {"2024-12-01_XRPUSDT_ob500.data"}, "faults": set(),
               "generated": {"2024-12-01_XRPUSDT_ob500.data"}, "recording": set()}


@pytest.mark.parametrize("case", CASES)
def test_arrow_engine_writes_the_recorded_catalog(case, tmp_path, monkeypatch):
    """Same files (bytes and rows), marker (book invariant) and report as the object importer."""
    from adapters import bybit_book_arrow

    monkeypatch.setattr(bybit_book_arrow, "LINES_PER_CHUNK", 500)  # many chunks: chunk boundaries
    engines: dict = {}
    digest = run_case(case, tmp_path, monkeypatch, engines=engines, engine="arrow")
    assert {name for name, e in engines.items() if e == "arrow"} == ARROW_FILES[case]
    golden = _golden()[case]
    assert digest["report"] == golden["report"]
    assert digest["marker"] == golden["marker"]
    assert sorted(digest["files"]) == sorted(golden["files"])
    for name, f in golden["files"].items():
        assert digest["files"][name] == f, name
