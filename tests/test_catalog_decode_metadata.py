"""A catalog file that Nautilus' Arrow decoder cannot take as it is: its parquet schema metadata
lacks ``instrument_id``, ``price_precision`` or ``size_precision`` (Nautilus panics in Rust: an
abort, exit 134, no message), names another instrument, or gives precisions other than the
catalog instrument's (Nautilus' venue raises ``RuntimeError: invalid delta price precision``
inside the engine loop: a traceback, exit 1). Each is now one line naming the file and the key,
exit 2, before anything runs (``mmbot.catalog_store._check_decode_metadata``, called by
``list_catalog`` for the instruments a run replays). Run in a subprocess: the old behaviour aborts
the interpreter."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest

ROOT = Path(__file__).resolve().parents[1]
XRP = "XRPUSDT-LINEAR.BYBIT"


def _edit(catalog: Path, kind: str, change: dict) -> Path:
    """Every ``kind`` file of XRP with its schema metadata changed (None: the key removed)."""
    files = sorted((catalog / "data" / kind / XRP).glob("*.parquet"))
    for f in files:
        t = pq.read_table(f)
        meta = {k: v for k, v in t.schema.metadata.items()}
        for k, v in change.items():
            if v is None:
                meta.pop(k.encode())
            else:
                meta[k.encode()] = v.encode()
        pq.write_table(t.replace_schema_metadata(meta), f)
    return files[0]


def _mmbot(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "mmbot.cli.main", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=300, env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT), "HOME": "/tmp"})


CASES = {
    "no_price_precision": ("order_book_deltas", {"price_precision": None}, "has no price_precision"),
    "no_size_precision": ("trade_tick", {"size_precision": None}, "has no size_precision"),
    "no_instrument_id": ("order_book_deltas", {"instrument_id": None}, "has no instrument_id"),
    "other_instrument": ("trade_tick", {"instrument_id": "BTCUSDT-LINEAR.BYBIT"},
                         "says instrument_id 'BTCUSDT-LINEAR.BYBIT', the file is in the folder of " + XRP),
    "other_price_precision": ("order_book_deltas", {"price_precision": "2"},
                              "gives price_precision 2, the catalog's instrument " + XRP + " has 4"),
    "not_an_integer": ("order_book_deltas", {"size_precision": "0.5"}, "size_precision is '0.5', not an integer"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_a_file_nautilus_cannot_decode_is_one_line_exit_2(tmp_path, case):
    kind, change, says = CASES[case]
    cat = tmp_path / "cat"
    shutil.copytree(ROOT / "catalog", cat)
    bad = _edit(cat, kind, change)
    r = _mmbot("backtest", "run", "--catalog", str(cat), "--start", "2024-12-01T07:30:00Z",
               "--end", "2024-12-01T07:31:00Z", "--no-progress", "--out", str(tmp_path / "out"))
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 2 and len(lines) == 1, (r.returncode, r.stderr[-2000:])
    assert lines[0].startswith(f"error: {bad}: ") and says in lines[0], lines[0]
    assert not (tmp_path / "out").exists()


def test_other_instruments_and_the_listing(tmp_path):
    """A BTC replay is not refused over a broken XRP file; ``mmbot catalog ls`` (every instrument)
    names it in one line, exit 2."""
    cat = tmp_path / "cat"
    shutil.copytree(ROOT / "catalog", cat)
    bad = _edit(cat, "order_book_deltas", {"price_precision": None})
    r = _mmbot("backtest", "run", "--catalog", str(cat), "--set", 'run.instrument="BTCUSDT-LINEAR.BYBIT"',
               "--start", "2024-06-03T00:00:00Z", "--end", "2024-06-03T00:01:00Z", "--no-progress",
               "--out", str(tmp_path / "btc"))
    assert r.returncode == 0, r.stderr[-2000:]
    r = _mmbot("catalog", "ls", "--catalog", str(cat))
    assert r.returncode == 2 and r.stderr.strip() == f"error: {bad}: the parquet schema metadata has no " \
        "price_precision (Nautilus' decoder needs them): delete the file and import its source again, or import " \
        "into a new catalog", r.stderr
