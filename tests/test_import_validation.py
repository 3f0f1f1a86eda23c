"""`mmbot catalog import` never crashes on bad numbers, never locks itself out, and reports files
whose content contradicts their name (issue 13 item 8)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from mmbot.cli.main import main
from tests.test_loaders import book_lines, write_ob

FIX = Path(__file__).parent / "fixtures"
XRP_OB = FIX / "2024-12-01_XRPUSDT_ob500.data"
REPO = Path(__file__).resolve().parent.parent
PRICE_OVER_MAX = "20000000000000.00"  # Nautilus' PRICE_MAX is 17014118346046
SIZE_OVER_MAX = "40000000000000.000"  # QUANTITY_MAX is 34028236692093


def run(*args: str):
    return CliRunner().invoke(main, list(args))


def import_report(path: Path, cat: Path, *extra: str) -> tuple[object, dict]:
    rep = path.parent / f"{path.name}.report.json"
    r = run("catalog", "import", str(path), "--catalog", str(cat), "--report", str(rep), *extra)
    assert "Traceback" not in r.output and r.exit_code in (0, 2), (r.exit_code, r.output, r.exception)
    return r, json.loads(rep.read_text())


def problems(report: dict) -> dict[str, list[int]]:
    return {k: v["lines"] for f in report["files"] for k, v in f["problems"].items()}


# -- numbers are checked before Nautilus sees them ------------------------------------------------

@pytest.mark.parametrize(("name", "edit", "expected"), [
    ("float_price", lambda m: m[2]["data"].__setitem__("b", [[67000.0, "1.000"]]), {"bad_number": [3]}),
    ("int_size", lambda m: m[2]["data"].__setitem__("b", [["67000.00", 2]]), {"bad_number": [3]}),
    ("null_size", lambda m: m[2]["data"].__setitem__("b", [["67000.00", None]]), {"bad_number": [3]}),
    ("dict_levels", lambda m: m[2]["data"].__setitem__("b", {"67000.00": "1"}), {"bad_number": [3]}),
    ("huge_ts", lambda m: m[2].__setitem__("ts", 10**20), {"bad_number": [3]}),
    ("negative_ts", lambda m: m[2].__setitem__("ts", -5), {"bad_number": [3]}),
    ("huge_u", lambda m: m[2]["data"].__setitem__("u", 10**25), {"bad_number": [3]}),
    ("negative_u", lambda m: m[2]["data"].__setitem__("u", -1), {"bad_number": [3]}),
    ("huge_size", lambda m: m[2]["data"].__setitem__("b", [["67000.00", "1" + "0" * 30]]), {"bad_number": [3]}),
])
def test_bad_numbers_in_book_are_reported_not_crashing(tmp_path, name, edit, expected):
    msgs = book_lines()
    edit(msgs)
    p = write_ob(tmp_path, msgs)
    r, rep = import_report(p, tmp_path / "cat")
    assert r.exit_code == 0, r.output
    got = problems(rep)
    assert {k: got[k] for k in expected} == expected, got
    assert "dropped_in_gap" in got  # the book is invalid until the next snapshot


def test_values_above_nautilus_limits_are_reported_in_a_real_process(tmp_path):
    """On the old code Nautilus panicked (the process aborted, exit -6) and left .staging-*.
    In a subprocess: a regression must not abort the test session."""
    files = []
    for where, (side, px, sz) in (("delta", ("b", PRICE_OVER_MAX, "1.000")), ("snapshot", ("a", "67000.10", SIZE_OVER_MAX))):
        msgs = book_lines()
        msgs[2 if where == "delta" else 0]["data"][side] = [[px, sz]]
        (tmp_path / where).mkdir()
        files.append(str(write_ob(tmp_path / where, msgs)))
    files.append(str(trades_csv(tmp_path, ["1717372800.1,BTCUSDT,Buy,0.001,67000.0,PlusTick,m-1,1,1,1",
                                           f"1717372800.2,BTCUSDT,Buy,0.001,{PRICE_OVER_MAX},PlusTick,m-2,1,1,1",
                                           f"1717372800.3,BTCUSDT,Buy,{SIZE_OVER_MAX},67000.0,PlusTick,m-3,1,1,1"])))
    cat, rep = tmp_path / "cat", tmp_path / "rep.json"
    r = subprocess.run([sys.executable, "-m", "mmbot.cli", "catalog", "import", *files, "--catalog", str(cat),
                        "--report", str(rep)], capture_output=True, text=True, check=False, cwd=REPO, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    by_file = {Path(f["file"]).parent.name + "/" + Path(f["file"]).name: f["problems"]["bad_number"]
               for f in json.loads(rep.read_text())["files"]}
    assert len(by_file) == 3 and all("above Nautilus' limit" in v["first"] for v in by_file.values()), by_file
    assert [v["lines"] for k, v in sorted(by_file.items()) if k.endswith(".csv")] == [[3, 4]]
    assert not list(cat.glob(".staging-*"))


def trades_csv(tmp: Path, rows: list[str], name: str = "BTCUSDT2024-06-03.csv") -> Path:
    p = tmp / name
    header = "timestamp,symbol,side,size,price,tickDirection,trdMatchID,grossValue,homeNotional,foreignNotional"
    p.write_text("\n".join([header, *rows]) + ("\n" if rows else "\n"))
    return p


def test_bad_numbers_in_trades_are_reported(tmp_path):
    ok = "1717372800.1,BTCUSDT,Buy,0.001,67000.0,PlusTick,m-1,1,1,1"
    p = trades_csv(tmp_path, [ok, "99999999999999999999.1,BTCUSDT,Buy,0.001,67000.0,PlusTick,m-2,1,1,1",
                              "1717372800.3,BTCUSDT,Buy,0.001,67000.0,PlusTick," + "m" * 40 + ",1,1,1"])
    r, rep = import_report(p, tmp_path / "cat")
    assert r.exit_code == 0 and rep["written"][0]["rows"] == 1, r.output
    assert problems(rep) == {"bad_number": [3, 4]}  # an overflowing time; a trade id over Nautilus' 36 chars


def test_bad_numbers_in_recorded_trades_are_reported(tmp_path):
    import gzip

    def trade(**kw):
        item = {"T": 1_717_372_800_100, "s": "BTCUSDT", "S": "Buy", "v": "0.001", "p": "67000.0", "i": "m-1", **kw}
        return {"topic": "publicTrade.BTCUSDT", "type": "snapshot", "ts": 1_717_372_800_100, "data": [item],
                "local_ts_ns": 1_717_372_800_101_000_000}

    lines = [trade(), trade(p=67000.5, i="m-2"), trade(T=10**20, i="m-3"), trade(S=["Buy"], i="m-4"),
             {**trade(i="m-5"), "local_ts_ns": 2**64}]
    p = tmp_path / "BTCUSDT_2024-06-03.jsonl.gz"
    with gzip.open(p, "wt") as f:
        f.write("\n".join(json.dumps(x) for x in lines) + "\n")
    r, rep = import_report(p, tmp_path / "cat")
    assert r.exit_code == 0, r.output
    assert problems(rep) == {"bad_number": [2, 3, 4, 5]}


# -- files whose content contradicts their name ---------------------------------------------------

def test_header_only_trade_csv_is_reported(tmp_path):
    p = trades_csv(tmp_path, [])
    r, rep = import_report(p, tmp_path / "cat")
    assert r.exit_code == 0 and "empty_file=1" in r.output, r.output
    assert problems(rep) == {"empty_file": [0]}


def test_whole_file_of_another_day_is_rejected(tmp_path):
    p = write_ob(tmp_path, book_lines(), name="2024-06-04_BTCUSDT_ob50.data")  # the lines are of 2024-06-03
    r, rep = import_report(p, tmp_path / "cat")
    assert r.exit_code == 2 and "name_mismatch" in r.output and "2024-06-04" in r.output, r.output
    assert not (tmp_path / "cat").exists()
    csv = trades_csv(tmp_path, ["1717372800.1,BTCUSDT,Buy,0.001,67000.0,PlusTick,m-1,1,1,1"],
                     name="BTCUSDT2024-06-05.csv")
    r, _ = import_report(csv, tmp_path / "cat")
    assert r.exit_code == 2 and "name_mismatch" in r.output and "2024-06-05" in r.output, r.output


def test_lines_of_another_day_are_counted(tmp_path):
    msgs = book_lines()
    msgs[3]["ts"] += 2 * 86_400_000  # two days later (kept: the exchange time is what the catalog uses)
    p = write_ob(tmp_path, msgs)
    r, rep = import_report(p, tmp_path / "cat")
    assert r.exit_code == 0 and problems(rep)["date_mismatch"] == [4], r.output


def test_whole_file_of_another_symbol_is_rejected(tmp_path):
    p = write_ob(tmp_path, book_lines("ETHUSDT"), name="2024-06-03_BTCUSDT_ob50.data")
    r, _ = import_report(p, tmp_path / "cat")
    assert r.exit_code == 2 and "name_mismatch" in r.output and "ETHUSDT" in r.output, r.output
    csv = trades_csv(tmp_path, ["1717372800.1,ETHUSDT,Buy,0.001,3500.0,PlusTick,m-1,1,1,1"])
    r, _ = import_report(csv, tmp_path / "cat")
    assert r.exit_code == 2 and "name_mismatch" in r.output and "ETHUSDT" in r.output, r.output


# -- the import lock and stale staging ------------------------------------------------------------

def big_book_file(tmp: Path, n: int = 40_000) -> Path:
    """One snapshot then ``n`` one-level deltas (a few seconds to import)."""
    snap, first = book_lines()[:2]
    lines = [json.dumps(snap)]
    for i in range(n):
        d = json.loads(json.dumps(first))
        d["ts"] = snap["ts"] + 1 + i
        d["data"]["u"] = 101 + i
        d["data"]["b"] = [["67000.00", f"{1 + (i % 7)}.000"]]
        lines.append(json.dumps(d))
    p = tmp / "2024-06-03_BTCUSDT_ob50.data"
    p.write_text("\n".join(lines) + "\n")
    return p


def import_cmd(path: Path, cat: Path) -> list[str]:
    return [sys.executable, "-m", "mmbot.cli", "catalog", "import", str(path), "--catalog", str(cat)]


def test_sigkill_during_first_import_then_import_succeeds(tmp_path):
    big = big_book_file(tmp_path)
    cat = tmp_path / "cat"
    proc = subprocess.Popen(import_cmd(big, cat), cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while not list(cat.glob(".staging-*")) and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.005)
    # inside the import: staging exists from just after the lock until the end; the Arrow engine
    # imports this file in a few tenths of a second (the object engine took seconds), so kill soon
    time.sleep(0.02)
    assert proc.poll() is None, "the import ended before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    assert list(cat.glob(".staging-*")), "the kill left no staging: nothing tested"
    r = subprocess.run(import_cmd(XRP_OB, cat), cwd=REPO, capture_output=True, text=True, timeout=60, check=False)
    assert r.returncode == 0, r.stderr
    assert "staging left by an import that died" in r.stderr
    assert not list(cat.glob(".staging-*")) and not (cat / ".mmbot-import.lock").exists()
    listing = json.loads(run("catalog", "ls", "--catalog", str(cat), "--json").output)
    assert [d["rows"] for d in listing["data"]] == [3967]


def test_stale_staging_in_a_new_catalog_does_not_lock_it_out(tmp_path):
    cat = tmp_path / "cat"
    (cat / ".staging-4242-abcd" / "data").mkdir(parents=True)  # what a killed first import leaves
    r = run("catalog", "import", str(XRP_OB), "--catalog", str(cat))
    assert r.exit_code == 0, r.output
    assert not list(cat.glob(".staging-*"))


def test_a_second_import_waits_for_the_lock_then_succeeds(tmp_path):
    from mmbot.catalog_store import import_lock

    cat, err_file = tmp_path / "cat", tmp_path / "err.txt"
    with import_lock(cat), open(err_file, "w") as err:
        proc = subprocess.Popen(import_cmd(XRP_OB, cat), cwd=REPO, stdout=subprocess.DEVNULL, stderr=err)
        deadline = time.monotonic() + 60
        while "waiting" not in err_file.read_text() and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.02)
        assert f"(pid {os.getpid()}) holds its lock" in err_file.read_text()
        time.sleep(2)  # an import that did not wait would be writing (or done) by now
        assert proc.poll() is None, "the import did not wait for the lock: " + err_file.read_text()
        assert not (cat / "mmbot_catalog.json").exists() and not list(cat.glob(".staging-*"))
    assert proc.wait(timeout=60) == 0, err_file.read_text()
    assert not (cat / ".mmbot-import.lock").exists()


def test_two_imports_at_once_serialise(tmp_path):
    """Two imports into one new catalog: on the old code each saw the other's .staging-* and one
    refused ("exists, is not empty and is not an mmbot catalog")."""
    cat = tmp_path / "cat"
    trades = trades_csv(tmp_path, ["1733011200.1,XRPUSDT,Buy,10,2.0000,PlusTick,m-1,1,1,1"],
                        name="XRPUSDT2024-12-01.csv")
    procs = [subprocess.Popen(import_cmd(p, cat), cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for p in (XRP_OB, trades)]
    results = [(p.wait(timeout=120), p.stderr.read()) for p in procs]
    assert [code for code, _ in results] == [0, 0], results
    listing = json.loads(run("catalog", "ls", "--catalog", str(cat), "--json").output)
    assert sorted(d["data_type"] for d in listing["data"]) == ["order_book_deltas", "trade_tick"]
