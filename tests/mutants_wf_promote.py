"""Mutants of the promotion refusals (docs/tuning.md, "Promote"): each deliberately broken
version must make tests/test_wf_promote.py fail. Not collected by pytest (about 35 s per mutant):

    .venv/bin/python tests/mutants_wf_promote.py [PREFIX]

restores every file afterwards.
"""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PROMOTE, REPORT = "mmbot/tuning/promote.py", "mmbot/tuning/report.py"
MUTANTS = {
    "M1 a failed gate exported anyway (gate check removed)":
        (PROMOTE, '    if gates.get("passed") is not True or gates.get("failed"):', "    if False:"),
    "M2 the champion taken from the oldest used split":
        (PROMOTE, "    last = used[-1]  # trained", "    last = used[0]  # trained"),
    "M3 champion.json not checked against report.json's newest used split":
        (PROMOTE, '            or (report.get("champion") or {}).get("parameters") != last["champion_params"]:',
         '            or (report.get("champion") or {}).get("parameters") != last["champion_params"] if False else False:'),
    "M4 the gate check trusts a missing 'failed' list":
        (PROMOTE, '    if gates.get("passed") is not True or gates.get("failed"):', '    if gates.get("failed") is None:'),
    "M5 an existing file replaced without --force":
        (PROMOTE, "    if out.exists() and not force:", "    force = True\n    if False:"),
    "M6 the wf report names the oldest used split's champion":
        (REPORT, "    champ = used[-1] if used else None", "    champ = used[0] if used else None"),
}


def main(prefix: str = "") -> int:
    survived = 0
    for name, (path, old, new) in MUTANTS.items():
        if not name.startswith(prefix):
            continue
        file = ROOT / path
        orig = file.read_text()
        assert old in orig, name
        try:
            file.write_text(orig.replace(old, new))
            r = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                                "tests/test_wf_promote.py"], cwd=ROOT, capture_output=True, text=True, check=False)
        finally:
            file.write_text(orig)
        failed = [ln.split("::")[1].split(" ")[0] for ln in r.stdout.splitlines() if ln.startswith(("FAILED", "ERROR"))]
        survived += r.returncode == 0
        print(f"{name}: {'caught by ' + ', '.join(failed) if r.returncode else 'SURVIVED'}", flush=True)
    return 1 if survived else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1] if len(sys.argv) > 1 else ""))
