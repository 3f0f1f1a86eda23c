"""``python -m tools.soak.regate DIR``: judge a finished soak again with the current gate code.

Recomputes the gates that depend only on what ``soak_report.json`` already holds (today
``state_mismatch``: its timeline episodes, balance samples, fault windows and reconciliation
interval) and rewrites the report (.json/.md/.html/.png). The report as the run wrote it is kept
as ``soak_report.asrun.json`` and the rewritten one says ``"regated"``. For a run made before a gate
fix; nothing is measured again. Exit 0 when every applicable gate holds, 1 otherwise, 2 on bad input.
"""

from __future__ import annotations

import json
import math
import shutil
import sys
from datetime import UTC, datetime
from pathlib import Path

from tools.soak import gates as G
from tools.soak.schedule import Fault


def regate(rep: dict) -> dict:
    t0 = rep["ready_wall_s"]
    faults = [Fault(f["kind"], f["at_s"], f["window_s"], f.get("params") or {}, f.get("text", "")) for f in rep["faults"]]
    holds = [(int((t0 + f.at_s) * 1e9), int((t0 + f.end_s + f.window_s) * 1e9)) for f in faults if f.holds_exchange]
    old = next(g for g in rep["gates"] if g["name"] == "state_mismatch")
    if rep.get("timelines") is not None:  # a portfolio soak (--symbols N > 1): per instrument
        diffs = [(s["t_s"], s.get("balance_node", math.nan) - s.get("balance_exchange", math.nan))
                 if s.get("balance_node") is not None and s.get("balance_exchange") is not None else (s["t_s"], None)
                 for s in rep["samples"]]
        new = G.state_mismatch_per_instrument_gate(rep["timelines"], diffs, rep["reconciliation_interval_s"],
                                                   old["bound"], holds)
    elif rep.get("mode") == "shadow" or rep.get("timeline") is None:
        new = G.state_mismatch_gate(None, [], rep["reconciliation_interval_s"], old["bound"])
    else:
        diffs = [(s["t_s"], s.get("balance_node", math.nan) - s.get("balance_exchange", math.nan))
                 if s.get("balance_node") is not None and s.get("balance_exchange") is not None else (s["t_s"], None)
                 for s in rep["samples"]]
        new = G.state_mismatch_gate(rep["timeline"], diffs, rep["reconciliation_interval_s"], old["bound"], holds)
    out = dict(rep)
    out["gates"] = [new.to_json() if g["name"] == "state_mismatch" else g for g in rep["gates"]]
    out["ok"] = all(g["holds"] for g in out["gates"] if g["applicable"])
    out["regated"] = {"at_utc": datetime.now(UTC).isoformat(timespec="seconds"), "gates": ["state_mismatch"],
                      "as_run": {"ok": rep["ok"], "state_mismatch": {k: old[k] for k in ("holds", "value", "bound")}}}
    return out


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1 or not (Path(args[0]) / "soak_report.json").is_file():
        print("usage: python -m tools.soak.regate DIR  (DIR holds a soak_report.json)", file=sys.stderr)
        return 2
    d = Path(args[0])
    rep = json.loads((d / "soak_report.json").read_text())
    asrun = d / "soak_report.asrun.json"
    if not asrun.exists():
        shutil.copyfile(d / "soak_report.json", asrun)
    else:
        rep = json.loads(asrun.read_text())
    out = regate(rep)
    from tools.soak.report import write_report

    write_report(out, d)
    for g in out["gates"]:
        state = "n/a " if not g["applicable"] else ("ok  " if g["holds"] else "FAIL")
        print(f"gate {state} {g['name']:<15} value={g['value']!r} bound={g['bound']!r} {g['unit']}", file=sys.stderr)
    print(json.dumps({"ok": out["ok"], "as_run_ok": rep["ok"], "report": str(d / "soak_report.html")}))
    return 0 if out["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
