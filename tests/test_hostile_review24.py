"""Hostile review 24: the Arrow import engine against the object engine, and the plain-catalog path.

The Arrow engine (adapters/bybit_book_arrow.py) promises the object engine's catalog byte for byte,
or a fallback to the object path with the same problem lines. Each test below feeds both engines a
crafted Bybit order-book file and compares the catalogs with tests/test_import_equality.py's
digest (parquet bytes and rows, marker with the book invariant, import report without the engine
column). Findings that were defects carry the name of what was wrong; inputs on which both engines
already agreed are kept as a regression table (``AGREE``) and a small random-stream fuzz.
"""

from __future__ import annotations

import io
import json
import os
import random
import signal
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from adapters.instruments import InstrumentRegistry
from mmbot import catalog_store
from tests.test_import_equality import catalog_digest

FIX = Path(__file__).parent / "fixtures"
OB = "2024-12-01_XRPUSDT_ob500.data"
MSGS = [json.loads(x) for x in (FIX / OB).read_bytes().splitlines()]


def _j(m: dict) -> bytes:
    return json.dumps(m, separators=(",", ":"), ensure_ascii=False).encode()


def _lines(k: int | None = None, **data) -> list[bytes]:
    out = [_j(m) for m in MSGS]
    if k is not None:
        out[k] = _j(dict(MSGS[k], data=dict(MSGS[k]["data"], **data)))
    return out


def _file(lines: list[bytes]) -> bytes:
    return b"\n".join(lines) + b"\n"


def _import(engine: str, name: str, payload: bytes, tmp: Path, **kw) -> tuple[dict, dict]:
    """(engine per file, digest) of one import of ``payload`` saved as ``name``."""
    src = tmp / engine / "src"
    src.mkdir(parents=True)
    path = src / name
    path.write_bytes(payload)
    cat = tmp / engine / "cat"
    result = catalog_store.import_paths([path], cat, InstrumentRegistry(), engine=engine, **kw)
    report = result.to_json(str(cat), [str(path)], "ok", None)
    engines = {Path(f["file"]).name: (f.get("engine"), f.get("fallback")) for f in report["files"]}
    return engines, catalog_digest(cat, report, tmp / engine)


def _both(name: str, payload: bytes, tmp: Path) -> tuple[dict, dict, dict]:
    """(arrow engine per file, arrow digest, objects digest); an ImportRejected compares by text."""
    out = []
    for engine in ("arrow", "objects"):
        try:
            out.append(_import(engine, name, payload, tmp))
        except Exception as e:  # noqa: BLE001 - the two engines must fail alike
            out.append(({}, f"{type(e).__name__}: {str(e).replace(str(tmp / engine), '<tmp>')}"))
    return out[0][0], out[0][1], out[1][1]


def _level(k: int) -> tuple[str, list]:
    d = MSGS[k]["data"]
    side = "b" if d["b"] else "a"
    return side, d[side]


# --- finding 1: more than 16 decimals (Nautilus' raw precision) -----------------------------


@pytest.mark.parametrize("what", ["price", "size"])
def test_more_than_16_decimals_are_the_same_bad_number_in_both_engines(what, tmp_path):
    """'1.9533' + 13 zeros (17 decimals): the object path's decimal_str_to_raw refuses more than 16
    decimals (bad_number, the book invalidated until the next snapshot); the Arrow engine's decimal
    cast read it as 1.9533 and imported the file with no problem: 3967 rows against 2352, silently.
    Both must now write the object path's catalog."""
    side, lv = _level(27)
    px, sz = lv[0]
    long = (px if what == "price" else sz + ".") + "0" * 17
    long = long[: long.index(".") + 18]
    level = [long, sz] if what == "price" else [px, long]
    engines, arrow, objects = _both(OB, _file(_lines(27, **{side: [level, *lv[1:]]})), tmp_path)
    assert objects["report"]["problems_total"].get("bad_number") == 1
    assert engines[OB][0] == "objects"
    assert arrow == objects


# --- finding 2: non-ASCII digits in a fraction ------------------------------------------------


@pytest.mark.parametrize("digit", ["\u0665", "\uff15", "\u09eb"])  # Arabic-Indic, fullwidth, Bengali five
def test_non_ascii_fraction_digits_are_bad_numbers(digit, tmp_path):
    """decimal_str_to_raw checked only the whole part for ASCII: str.isdigit() and int() accept any
    Unicode decimal digit, so '1.953' + Arabic-Indic five was imported as 1.9535 by the object path
    (and by the Arrow engine's fallback) with no problem reported."""
    from adapters.bybit_book import decimal_str_to_raw

    with pytest.raises(ValueError):
        decimal_str_to_raw("1.953" + digit)
    side, lv = _level(27)
    px, sz = lv[0]
    engines, arrow, objects = _both(OB, _file(_lines(27, **{side: [[px[:-1] + digit, sz], *lv[1:]]})), tmp_path)
    assert objects["report"]["problems_total"].get("bad_number") == 1
    assert arrow == objects


# --- inputs on which the engines agree (regression table) -------------------------------------


def _zip(members: list[tuple[str, bytes]]) -> bytes:
    bio = io.BytesIO()
    with zipfile.ZipFile(bio, "w") as z:
        for n, b in members:
            z.writestr(n, b)
    return bio.getvalue()


def _agree_cases() -> dict[str, tuple[str, bytes]]:
    L = _lines()
    side, lv = _level(27)
    px, sz = lv[0]

    def lvl(p: str, s: str = sz) -> bytes:
        return _file(_lines(27, **{side: [[p, s], *lv[1:]]}))

    def at(k: int, line: bytes) -> bytes:
        out = list(L)
        out[k] = line
        return _file(out)

    cases = {
        "plus": lvl("+" + px), "exponent": lvl("1e3"), "space": lvl(" " + px), "minus_zero": lvl("-0"),
        "nan": lvl("NaN"), "inf": lvl("inf"), "leading_dot": lvl("." + px.split(".")[1]),
        "trailing_dot": lvl(px.split(".")[0] + "."), "leading_zeros": lvl("000" + px),
        "trailing_zeros_16": lvl(px + "0" * (16 - len(px.split(".")[1]))), "size_zero_dot": lvl(px, "0.0"),
        "crlf": b"\r\n".join(L) + b"\r\n", "bom": b"\xef\xbb\xbf" + _file(L), "truncated_last": _file(L)[:-30],
        "no_final_newline": b"\n".join(L), "empty": b"", "blank_only": b"\n \n",
        "duplicate_key": at(20, L[20].replace(b'{"', b'{"type":"snapshot","', 1)),
        "ts_float": at(20, _j(dict(MSGS[20], ts=MSGS[20]["ts"] + 0.5))),
        "u_float": at(20, _j(dict(MSGS[20], data=dict(MSGS[20]["data"], u=float(MSGS[20]["data"]["u"]))))),
        "u_negative": at(20, _j(dict(MSGS[20], data=dict(MSGS[20]["data"], u=-1)))),
        "u_2_64": at(20, _j(dict(MSGS[20], data=dict(MSGS[20]["data"], u=2**64)))),
        "empty_delta": at(20, _j(dict(MSGS[20], data=dict(MSGS[20]["data"], b=[], a=[])))),
        "restart_u1": at(20, _j(dict(MSGS[20], data=dict(MSGS[20]["data"], u=1)))),
        "snapshot_mid_file": at(20, _j(dict(MSGS[0], ts=MSGS[20]["ts"], data=dict(MSGS[0]["data"],
                                                                                   u=MSGS[20]["data"]["u"])))),
        "vertical_tab": at(20, L[20] + b"\x0b"), "nbsp": at(20, b"\xc2\xa0" + L[20]), "nul_line": at(20, b"\x00"),
    }
    named = {k: (OB, v) for k, v in cases.items()}
    named.update({
        "zip": (OB + ".zip", _zip([("x.data", _file(L))])),
        "zip_zero_byte_member": (OB + ".zip", _zip([("x.data", b"")])),
        "zip_no_member": (OB + ".zip", _zip([])),
        "zip_two_members": (OB + ".zip", _zip([("x.data", _file(L)), ("y.data", _file(L))])),
        "other_day_name": ("2024-12-02_XRPUSDT_ob500.data", _file(L)),
        "other_symbol_name": ("2024-12-01_BTCUSDT_ob500.data", _file(L)),
    })
    return named


AGREE = _agree_cases()


@pytest.mark.parametrize("case", sorted(AGREE))
def test_engines_agree_on_hostile_input(case, tmp_path):
    name, payload = AGREE[case]
    _engines, arrow, objects = _both(name, payload, tmp_path)
    assert arrow == objects


def _random_stream(seed: int, n: int = 60) -> bytes:
    """Snapshots and deltas on a narrow price grid: deletes, a level repeated in one message,
    deletes of absent levels, same-ms messages, restarts (u small), a rare crossed book."""
    r = random.Random(seed)
    ts, u, out = 1733011201000, 100, []

    def lv(lo: int, hi: int, zero_p: float) -> list[str]:
        return [f"{r.randint(lo, hi) / 10000:.4f}", "0" if r.random() < zero_p else str(r.randint(1, 3))]

    for i in range(n):
        if i == 0 or r.random() < 0.05:
            bids = [lv(19480, 19499, 0.1) for _ in range(r.randint(0, 6))]
            asks = [lv(19501, 19520, 0.1) for _ in range(r.randint(0, 6))]
            u, typ = (r.randint(1, 5) if r.random() < 0.2 else u + r.randint(1, 3)), "snapshot"
        else:
            bids = [lv(19485, 19499 + (2 if r.random() < 0.01 else 0), 0.4) for _ in range(r.randint(0, 4))]
            asks = [lv(19501 - (2 if r.random() < 0.01 else 0), 19515, 0.4) for _ in range(r.randint(0, 4))]
            if bids and r.random() < 0.3:
                bids.append([bids[0][0], str(r.randint(0, 2))])
            u, typ = u + 1, "delta"
        ts += r.choice([0, 0, 1, 10])
        out.append({"topic": "orderbook.500.XRPUSDT", "type": typ, "ts": ts,
                    "data": {"s": "XRPUSDT", "b": bids, "a": asks, "u": u, "seq": 1}, "cts": ts})
    return _file([_j(m) for m in out])


@pytest.mark.parametrize("seed", range(8))
def test_engines_agree_on_random_streams(seed, tmp_path, monkeypatch):
    """A representative subset: 300 seeds were run in the review with no difference."""
    from adapters import bybit_book_arrow

    monkeypatch.setattr(bybit_book_arrow, "LINES_PER_CHUNK", (1, 2, 3, 7)[seed % 4])
    _engines, arrow, objects = _both(OB, _random_stream(seed), tmp_path)
    assert arrow == objects


# --- finding 3: a --jobs worker killed -----------------------------------------------------------


def test_a_killed_jobs_worker_falls_back_to_the_object_path(tmp_path, monkeypatch):
    """SIGKILL of a --jobs worker (the OOM killer, a crash in Arrow's C++) ended the import with a
    BrokenProcessPool traceback. The files it held are now imported by the object path, as any file
    the Arrow engine cannot vouch for, and said so in the report: the catalog is the one the object
    engine writes."""
    lines = _lines()
    a, b = tmp_path / "src" / "a" / OB, tmp_path / "src" / "b" / "2024-12-02_XRPUSDT_ob500.data"
    a.parent.mkdir(parents=True)
    b.parent.mkdir(parents=True)
    a.write_bytes(_file(lines))
    day = 86_400_000
    b.write_bytes(_file([_j(dict(m, ts=m["ts"] + day)) for m in MSGS]))
    start = catalog_store._start_workers

    def start_then_kill(*args, **kwargs):
        pool, futures = start(*args, **kwargs)
        list(futures.values())  # submitted; the pool starts its processes on the first submit
        victim = next(iter(pool._processes.values()))
        os.kill(victim.pid, signal.SIGKILL)
        victim.join(30)
        return pool, futures

    monkeypatch.setattr(catalog_store, "_start_workers", start_then_kill)
    out = {}
    for engine, jobs in (("arrow", 2), ("objects", 1)):
        cat = tmp_path / engine / "cat"
        result = catalog_store.import_paths([a, b], cat, InstrumentRegistry(), engine=engine, jobs=jobs)
        report = result.to_json(str(cat), [str(a), str(b)], "ok", None)
        out[engine] = (result, catalog_digest(cat, report, tmp_path / engine))
    engines = out["arrow"][0].engines
    assert any(e == "objects" and why and "worker" in why for e, why in engines.values()), engines
    assert out["arrow"][1] == out["objects"][1]


# --- finding 4: a corrupt parquet file in a catalog ----------------------------------------------


def test_a_corrupt_parquet_file_is_one_line_not_a_traceback(tmp_path):
    """A truncated parquet file under data/ (a plain Nautilus catalog copied half, a disk error)
    made `mmbot catalog ls` and `mmbot backtest run` end with pyarrow's traceback."""
    from tests.test_plain_catalog import plain_catalog

    root = plain_catalog(tmp_path / "plain")
    bad = next((root / "data" / "order_book_deltas").rglob("*.parquet"))
    bad.write_bytes(bad.read_bytes()[: bad.stat().st_size // 2])
    with pytest.raises(catalog_store.CatalogError, match=f"{bad.name}.*not a readable parquet file"):
        catalog_store.list_catalog(root)
    r = subprocess.run([sys.executable, "-m", "mmbot.cli", "catalog", "ls", "--catalog", str(root)],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2, r.stderr[-1500:]
    assert "Traceback" not in r.stderr
    assert [ln for ln in r.stderr.splitlines() if not ln.startswith("warning: ")] == [
        ln for ln in r.stderr.splitlines() if bad.name in ln]


def test_funding_timestamp_in_other_scripts_digits_is_refused():
    """Same hole in the funding loader: a fundingRateTimestamp string in Arabic-Indic digits was
    read as that many ms (str.isdigit and int take any script's digits)."""
    from adapters.bybit_funding import parse_timestamp_ms

    arabic = "".join(chr(0x660 + int(c)) for c in "1733011200000")
    with pytest.raises(ValueError):
        parse_timestamp_ms(arabic)
    assert parse_timestamp_ms("1733011200000") == 1733011200000


# --- finding 5: ts / u that are not integers ----------------------------------------------------


def _int_field_cases() -> dict[str, bytes]:
    L = _lines()
    u, ts = str(MSGS[20]["data"]["u"]).encode(), str(MSGS[20]["ts"]).encode()
    fullwidth = "".join(chr(0xFF10 + int(c)) for c in ts.decode()).encode()

    def at(old: bytes, new: bytes) -> bytes:
        out = list(L)
        out[20] = L[20].replace(old, new, 1)
        return _file(out)

    return {"u_fraction": at(b'"u":' + u, b'"u":' + u + b".7"),
            "u_true": at(b'"u":' + u, b'"u":true'),
            "ts_fraction": at(b'"ts":' + ts, b'"ts":' + ts + b".5"),
            "ts_underscore_string": at(b'"ts":' + ts, b'"ts":"' + ts[:4] + b"_" + ts[4:] + b'"'),
            "ts_fullwidth_string": at(b'"ts":' + ts, b'"ts":"' + fullwidth + b'"')}


INT_FIELDS = _int_field_cases()


@pytest.mark.parametrize("case", sorted(INT_FIELDS))
def test_a_ts_or_update_id_that_is_not_an_integer_is_reported(case, tmp_path):
    """The object path read ts and u with int(): 1234.7 became 1234, true became 1 (u == 1 is
    Bybit's restart signal: a delta's few levels became the whole book, flagged as a snapshot),
    '1733_011...' and fullwidth digit strings became times, all without a problem line. Both
    engines now report the line (malformed_line) and write the same catalog."""
    engines, arrow, objects = _both(OB, INT_FIELDS[case], tmp_path)
    assert objects["report"]["problems_total"].get("malformed_line") == 1, objects["report"]["problems_total"]
    assert arrow == objects


# --- finding 6: a zip the zipfile module cannot open -------------------------------------------


def _patched_zip(flag: int | None = None, method: int | None = None, lzma_corrupt: bool = False) -> bytes:
    """The fixture in a zip whose header says encrypted (flag bit 0), an unsupported method
    (9 = deflate64), or an LZMA member with its compressed bytes damaged."""
    import struct

    bio = io.BytesIO()
    with zipfile.ZipFile(bio, "w", zipfile.ZIP_LZMA if lzma_corrupt else zipfile.ZIP_STORED) as z:
        z.writestr("x.data", _file(_lines()))
    b = bytearray(bio.getvalue())
    cd = b.find(b"PK\x01\x02")
    if flag is not None:
        b[6:8] = b[cd + 8:cd + 10] = struct.pack("<H", flag)
    if method is not None:
        b[8:10] = b[cd + 10:cd + 12] = struct.pack("<H", method)
    if lzma_corrupt:
        mid = 30 + len("x.data") + 200
        b[mid:mid + 64] = bytes(64)
    return bytes(b)


@pytest.mark.parametrize("kind", ["encrypted", "deflate64", "lzma_corrupt"])
def test_a_zip_member_zipfile_cannot_read_is_a_bad_archive_line(kind, tmp_path):
    """An encrypted member (RuntimeError), an unsupported compression method (NotImplementedError)
    or a damaged LZMA stream (LZMAError) ended the import in a traceback with either engine; they
    are now the file's bad_archive / malformed_line problem like any unreadable zip."""
    payload = {"encrypted": _patched_zip(flag=1), "deflate64": _patched_zip(method=9),
               "lzma_corrupt": _patched_zip(lzma_corrupt=True)}[kind]
    _engines, arrow, objects = _both(OB + ".zip", payload, tmp_path)
    assert arrow == objects
    if isinstance(objects, str):
        assert objects.startswith("ImportRejected: ") and "bad_archive" in objects, objects
    else:
        assert objects["report"]["problems_total"], objects["report"]
