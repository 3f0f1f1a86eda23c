"""Import equality oracle: what `mmbot catalog import` writes, pinned by a digest.

The digest (tests/fixtures/import_equality.json) was recorded with the object importer (Nautilus
``OrderBookDelta`` objects + ``ParquetDataCatalog.write_data``), the importer every catalog in use
was written by. For every parquet file under ``data/``: the sha256 of its bytes and of its rows
(schema with Nautilus' metadata + every row, via an Arrow IPC stream of the whole table), plus the
catalog marker (``mmbot_catalog.json``, book invariant record included) and the import report
(temp paths replaced). Any engine must reproduce it exactly.

Inputs: the shipped real fixtures (XRPUSDT ob500 head, a funding response), copies of the ob500
fixture with one fault each (every problem the order-book validator reports, and input the Arrow
engine must not take: more decimals than the tick, a message spanning lines, ts as a string),
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


def _j(m: dict) -> bytes:
    return json.dumps(m, separators=(",", ":")).encode()


def _with_data(m: dict, **data) -> dict:
    return dict(m, data=dict(m["data"], **data))


def _fault_lines(fault: str) -> list[bytes]:
    """The real ob500 fixture (50 messages) with one fault: one the object path reports, or
    input it accepts that the Arrow engine must reproduce (``finer``, ``blank_lines``) or leave to
    the object path (``ts_string``)."""
    msgs = [json.loads(x) for x in (FIX / "2024-12-01_XRPUSDT_ob500.data").read_bytes().splitlines()]
    out = [_j(m) for m in msgs]
    if fault == "many":  # several kinds in one file, book rebuilt by snapshots in between
        out[5] = out[5][:40]
        out[3] = _j(_with_data(msgs[3], b=[["1.95x", "10"]]))
        out[8] = _j(_with_data(dict(msgs[0], ts=msgs[8]["ts"]), u=msgs[8]["data"]["u"]))
        out[12] = _j(_with_data(msgs[12], u=msgs[12]["data"]["u"] + 5))
        out[20] = _j(_with_data(dict(msgs[0], ts=msgs[20]["ts"]), u=msgs[20]["data"]["u"]))
        out[30] = _j(_with_data(dict(msgs[0], ts=msgs[30]["ts"]), u=msgs[30]["data"]["u"]))
        out[31] = _j(_with_data(msgs[31], b=[["1.9990", "5"]]))
    elif fault == "crossed":  # a bid above the best ask, late in the file
        out[40] = _j(_with_data(msgs[40], b=[["1.9990", "5"]]))
    elif fault == "gap":
        out[33] = _j(_with_data(msgs[33], u=msgs[33]["data"]["u"] + 2))
    elif fault == "bad_number":
        out[27] = _j(_with_data(msgs[27], a=[["-1.9600", "10"]]))
    elif fault == "exponent":  # a number an Arrow decimal cast would read (1.95e0 = 1.95), not decimal_str_to_raw
        b = msgs[27]["data"]["b"] or [["1.9500", "1"]]
        out[27] = _j(_with_data(msgs[27], b=[[b[0][0][:4] + "e0", b[0][1]]]))
    elif fault == "zero_price":
        out[27] = _j(_with_data(msgs[27], b=[["0.0000", "10"]]))  # a bid: cannot cross the book
    elif fault == "finer":  # more decimals than the tick, still on the tick: both paths accept it
        b = msgs[27]["data"]["b"] or [["1.9500", "1"]]
        out[27] = _j(_with_data(msgs[27], b=[[b[0][0] + "0", b[0][1]]]))
    elif fault == "ts_backwards":
        out[20] = _j(dict(msgs[20], ts=msgs[19]["ts"] - 5))
    elif fault == "other_day":  # the last line, so no later line goes back in time
        out[-1] = _j(dict(msgs[-1], ts=msgs[-1]["ts"] + 86_400_000 * 2))
    elif fault == "delta_first":
        out = out[1:]
    elif fault == "other_symbol":
        out[10] = _j(_with_data(msgs[10], s="BTCUSDT"))
    elif fault == "spanning":  # one message over two lines, the next on the second line too
        text = out[15].decode()
        cut = text.index('"data"')
        out[15:17] = [text[:cut].encode(), (text[cut:] + " ").encode() + out[16]]
    elif fault == "ts_string":
        out[25] = _j(dict(msgs[25], ts=str(msgs[25]["ts"])))
    elif fault == "resent":  # not problems, counted by the book invariant (unchanged_size, repeated_level)
        lv = (msgs[19]["data"]["b"] or msgs[19]["data"]["a"])[0]
        key = "b" if msgs[19]["data"]["b"] else "a"
        out[20] = _j(_with_data(msgs[20], **{key: [*msgs[20]["data"][key], lv]}))
        b = msgs[22]["data"]["b"] or [["1.9400", "3"]]
        out[22] = _j(_with_data(msgs[22], b=[*b, [b[0][0], "7"]]))
        out[24] = _j(_with_data(msgs[24], b=[*msgs[24]["data"]["b"], ["1.0000", "0"]]))  # delete of an absent level
    elif fault == "same_ts":  # legal: messages sharing a ms; ts_init is pushed past the previous row
        for k in (21, 22, 23):
            out[k] = _j(dict(msgs[k], ts=msgs[20]["ts"]))
    elif fault == "blank_lines":  # accepted by both paths: blank lines are skipped, counted
        out[10:10] = [b"", b"   "]
    else:
        raise ValueError(fault)
    return out


FAULTS = ("many", "crossed", "gap", "bad_number", "exponent", "zero_price", "finer", "ts_backwards", "other_day", "delta_first",
          "other_symbol", "spanning", "ts_string", "blank_lines", "resent", "same_ts")


def _inputs(case: str, src: Path) -> list[Path]:
    src.mkdir(parents=True, exist_ok=True)
    if case == "fixtures":
        ob = src / "2024-12-01_XRPUSDT_ob500.data"
        shutil.copy(FIX / "2024-12-01_XRPUSDT_ob500.data", ob)
        funding = src / "BTCUSDT_funding.json"
        shutil.copy(FIX / "http_get_funding_history.json", funding)
        return [ob, funding]
    if case.startswith("fault-"):
        ob = src / "2024-12-01_XRPUSDT_ob500.data"
        ob.write_bytes(b"\n".join(_fault_lines(case.removeprefix("fault-"))) + b"\n")
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
    if case == "two_files":  # two order-book files of one instrument: one falls back, one does not
        a, b = src / "a" / "2024-12-01_XRPUSDT_ob500.data", src / "b" / "2024-12-01_XRPUSDT_ob500.data"
        a.parent.mkdir()
        b.parent.mkdir()
        a.write_bytes(b"\n".join(_fault_lines("crossed")) + b"\n")
        from tools.gen_synthetic import write_bybit_orderbook

        write_bybit_orderbook(b, _generated_messages())
        return [a, b]
    if case == "recording":
        from tools.gen_synthetic import write_recording

        rec = src / "gen.jsonl"
        write_recording(rec, _generated_messages()[:1500])
        return [rec]
    raise ValueError(case)


CASES = ("fixtures", "generated", "recording", "two_files", *(f"fault-{f}" for f in FAULTS))


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
        engines.update({str(Path(f["file"]).relative_to(tmp / "src")): f.get("engine") for f in report["files"]})
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
ARROW_FILES = {"fixtures": {"2024-12-01_XRPUSDT_ob500.data"}, "generated": {"2024-12-01_XRPUSDT_ob500.data"},
               "recording": set(), "fault-blank_lines": {"2024-12-01_XRPUSDT_ob500.data"},
               # an aligned value with extra zero decimals: the decimal cast at the tick's scale is exact
               "fault-finer": {"2024-12-01_XRPUSDT_ob500.data"}, "fault-resent": {"2024-12-01_XRPUSDT_ob500.data"},
               "fault-same_ts": {"2024-12-01_XRPUSDT_ob500.data"}, "two_files": {"b/2024-12-01_XRPUSDT_ob500.data"}}


@pytest.mark.parametrize("case", CASES)
def test_arrow_engine_writes_the_recorded_catalog(case, tmp_path, monkeypatch):
    """Same files (bytes and rows), marker (book invariant) and report as the object importer."""
    from adapters import bybit_book_arrow

    # many chunks: chunk boundaries, and faults found after earlier chunks were handed to the
    # writer (what a fallback must undo)
    monkeypatch.setattr(bybit_book_arrow, "LINES_PER_CHUNK", 7 if case.startswith("fault-") else 500)
    engines: dict = {}
    digest = run_case(case, tmp_path, monkeypatch, engines=engines, engine="arrow")
    assert {name for name, e in engines.items() if e == "arrow"} == ARROW_FILES.get(case, set())
    golden = _golden()[case]
    assert digest["report"] == golden["report"]
    assert digest["marker"] == golden["marker"]
    assert sorted(digest["files"]) == sorted(golden["files"])
    for name, f in golden["files"].items():
        assert digest["files"][name] == f, name


@pytest.mark.parametrize("case", ["two_files"])
def test_jobs_write_the_same_catalog(case, tmp_path, monkeypatch):
    """--jobs 2: order-book files converted in worker processes, applied in input order (a file a
    worker gives up on is imported by the object path in the parent): the recorded catalog."""
    engines: dict = {}
    seen: list[tuple[int, int]] = []
    digest = run_case(case, tmp_path, monkeypatch, engines=engines, engine="arrow", jobs=2,
                      progress=lambda b, m: seen.append((b, m)))
    assert {name for name, e in engines.items() if e == "arrow"} == ARROW_FILES.get(case, set())
    assert digest == _golden()[case]
    assert sum(m for _, m in seen) >= 50 and all(b >= 0 for b, _ in seen)
