"""Mutants of the promotion refusals (and, P*, of portfolio tuning: docs/tuning.md, "Portfolio") (docs/tuning.md, "Promote"): each deliberately broken
version must make tests/test_wf_promote.py fail (M*: about 35 s per mutant), or tests/test_hostile_review21.py /
tests/test_promote_checks.py (H*, S*: hostile review 21's refusals, a few seconds each; H10 waits for
the FIFO test's 30 s timeout). Not collected by pytest:

    .venv/bin/python tests/mutants_wf_promote.py [PREFIX]

restores every file afterwards.
"""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PROMOTE, REPORT, WF = "mmbot/tuning/promote.py", "mmbot/tuning/report.py", "mmbot/cli/wf.py"
RUNS, RUNS_CLI = "mmbot/report/runs.py", "mmbot/cli/runs.py"
RUNNER, WORKER = "mmbot/tuning/runner.py", "mmbot/tuning/worker.py"
WF_CONFIG = "mmbot/tuning/config.py"
PROMOTE_PF = "mmbot/tuning/promote_portfolio.py"
PP = ["tests/test_wf_promote_portfolio.py"]
PR = ["tests/test_wf_portfolio_report.py", "-k", "panel"]  # the made-up report: a second  # two small portfolio wf runs, ~100 s per mutant
# portfolio tuning: the config-level tests (no backtest but P7's, a few seconds) and the e2e runs (~3 min)
PF_FAST = ["tests/test_wf_portfolio_config.py"]
PF_SLOW = ["tests/test_wf_portfolio.py"]
SLOW = ["tests/test_wf_promote.py"]
# hostile review 21's refusals: its tests and tests/test_promote_checks.py (fast: no wf run)
FAST = ["tests/test_hostile_review21.py", "tests/test_promote_checks.py"]
RUNS_TESTS = ["tests/test_hostile_review21.py", "tests/test_runs_cli.py"]
# name: (file, [(original text, mutated text), ...], tests that must fail)
MUTANTS = {
    "M1 a failed gate exported anyway (gate check removed)":
        (PROMOTE, [('    if gates.get("passed") is not True or gates.get("failed") or bad:', "    if False:")], SLOW),
    "M2 the champion taken from the oldest used split":
        (PROMOTE, [("    last = used[-1]  # trained", "    last = used[0]  # trained")], SLOW),
    "M3 champion.json not checked against report.json's newest used split":
        (PROMOTE, [('            or (report.get("champion") or {}).get("parameters") != last["champion_params"]:',
                    '            or (report.get("champion") or {}).get("parameters") != last["champion_params"] '
                    'if False else False:')], SLOW),
    "M4 the gate check trusts a missing 'failed' list":
        (PROMOTE, [('    if gates.get("passed") is not True or gates.get("failed") or bad:',
                    '    if gates.get("failed") is None:')], SLOW),
    "M5 an existing file replaced without --force":
        (PROMOTE, [("    if os.path.lexists(out) and not force:", "    force = True\n    if False:")], SLOW),
    "M6 the wf report names the oldest used split's champion":
        (REPORT, [("    champ = used[-1] if used else None", "    champ = used[0] if used else None")], SLOW),
    "H1 a champion key outside the run's search space accepted":
        (PROMOTE, [("        if key not in space:", "        if False:")], FAST),
    "H2 a searched live/run/kill-switch/path key accepted":
        (PROMOTE, [('        if (key.split(".")[0] not in TUNABLE_SECTIONS and not key.startswith(also or ("\\0",))) \\\n'
                    '                or key.startswith(UNTUNABLE_RISK) or key.endswith("file"):', "        if False:")], FAST),
    "H3 a champion switching risk.enabled/risk.audit.enabled off accepted":
        (PROMOTE, [("        if _is_guard_switch(key) and params[key] is not True:", "        if False:")], FAST),
    "H4 a marker whose kind is not wf accepted":
        (PROMOTE, [('    if marker.get("kind") != "wf":', "    if False:")], FAST),
    "H5 config.resolved.json's hash not compared":
        (PROMOTE, [('        if doc.get("config_hash") != actual:', "        if False:")], FAST),
    "H6 report instrument not compared with the tested config's":
        (PROMOTE, [("    if instrument != tested_instrument:", "    if False:")], FAST),
    "H7 a failed verdict under passed=true accepted":
        (PROMOTE, [('    if gates.get("passed") is not True or gates.get("failed") or bad:',
                    '    if gates.get("passed") is not True or gates.get("failed"):')], FAST),
    "H8 a configured gate without a verdict accepted":
        (PROMOTE, [("    if missing:", "    if False:")], FAST),
    "H9 a run file that is not a JSON object accepted":
        (PROMOTE, [("    if not isinstance(doc, dict):", "    if False:")], FAST),
    "H10 a non-regular run file read (no is_file, blocking open)":
        (PROMOTE, [("        if not path.is_file():", "        if not path.exists():"),
                   ("os.O_RDONLY | os.O_NONBLOCK", "os.O_RDONLY")], FAST),
    "H11 header values not escaped":
        (PROMOTE, [('    return "".join(c if c.isprintable() else', '    return str(value) or "".join(c if c.isprintable() else')],
         FAST),
    "H12 --out a directory not refused (is_dir check and replace's OSError catch removed)":
        (PROMOTE, [("    if out.is_dir():", "    if False:"),
                   ("            except OSError as e:\n                raise PromoteError(f\"{out}: not written",
                    "            except FileNotFoundError as e:\n                raise PromoteError(f\"{out}: not written")],
         FAST),
    "H13 --out below a file: mkdir's OSError not caught":
        (PROMOTE, [("    except OSError as e:\n        raise PromoteError(f\"{out}: cannot write there",
                    "    except FileNotFoundError as e:\n        raise PromoteError(f\"{out}: cannot write there")], FAST),
    "H14 --export-config follows a dangling symlink (exists instead of lexists)":
        (WF, [("os.path.lexists(export_config)", "Path(export_config).exists()")], FAST),
    "H15 a key set twice names the first set's value as the template's":
        (PROMOTE, [("                old = self.template_values.get((table, key), old)\n", "")], FAST),
    "H16 a field of the wrong shape past the checks: traceback":
        (PROMOTE, [("    except (KeyError, TypeError, AttributeError, IndexError) as e:", "    except ZeroDivisionError as e:")],
         FAST),
    "S1 notional sizes written without the test run's record (no refusal)":
        (PROMOTE, [('            if not isinstance(rec, dict) or not isinstance(rec.get("keys"), dict):',
                    "            if False:")], FAST),
    "S2 a sizing record of another instrument accepted":
        (PROMOTE, [("            if rec.get(\"instrument\") != self.instrument:", "            if False:")], FAST),
    "S3 a sizing record without a valid reference price accepted":
        (PROMOTE, [("            if isinstance(price, bool) or not isinstance(price, (int, float)) or not "
                    "math.isfinite(price) or price <= 0:", "            if False:")], FAST),
    "S4 a conversion of another notional value accepted":
        (PROMOTE, [('            if not isinstance(k, dict) or k.get("notional_usdt") != notional',
                    '            if not isinstance(k, dict) or False')], FAST),
    "S5 the notional key written live (no conversion)":
        (PROMOTE, [("            table[t.base] = float(k[\"base\"])", "            table[t.notional] = notional")], FAST),
    "S6 the template's notional key kept beside the base key":
        (PROMOTE, [("        doc.remove(t.section, t.notional)", "        pass")], FAST),
    "R1 runs: a report's metadata of the wrong shape read as is":
        (RUNS, [("        if isinstance(meta, dict):\n            return meta", "        if True:\n            return meta or {}")],
         RUNS_TESTS),
    "R2 runs: a non-regular report.json read (no is_file, blocking open)":
        (RUNS, [("    if not path.is_file():  # a FIFO", "    if False:  # a FIFO"),
                ("os.O_RDONLY | os.O_NONBLOCK", "os.O_RDONLY")], RUNS_TESTS),
    "R3 runs: --json prints NaN/Infinity":
        (RUNS_CLI, [("json.dumps(strict_json(doc), indent=1, sort_keys=True, allow_nan=False)",
                     "json.dumps(doc, indent=1, sort_keys=True)"),
                    ("json.dumps(strict_json(d), indent=1, sort_keys=True, default=str, allow_nan=False)",
                     "json.dumps(d, indent=1, sort_keys=True, default=str)")], RUNS_TESTS),
    "R4 runs: a wf report's top-level data window ignored":
        (RUNS, [('        return report if "metadata" not in report else {}', "        return {}")], RUNS_TESTS),
    "R5 runs: a non-finite metric not named in the run's problems":
        (RUNS, [("                info.problems.append(f\"{REPORT}: metrics.{path} is {v} (not a finite number)\")",
                 "                pass")], RUNS_TESTS),
    "P1 per-symbol parameters written into the wrong instrument's table":
        (RUNNER, [("        table = tables.setdefault(iid, {})",
                   "        table = tables.setdefault(sorted(params_by_iid)[-1 - sorted(params_by_iid).index(iid)], {})")],
         PF_FAST),
    "P2 shared parameters applied to the first instrument only":
        (RUNNER, [("    if plan.mode != \"per_symbol\":\n        return S.overrides(params)",
                   "    if plan.mode != \"per_symbol\":\n        return [f\"portfolio.overrides={toml_inline(override_tables("
                   "plan.cfg.portfolio.overrides, {plan.instruments[0]: params}))}\"]")], PF_FAST),
    "P3 a per_symbol trial runs every instrument instead of its own alone":
        (RUNNER, [("        items = [f\"portfolio.instruments=[{S.toml_literal(unit)}]\", ",
                   "        items = [")], PF_FAST),
    "P4 validator: a shared key an override table pins passes":
        (RUNNER, [("                if mode == \"shared\" and \"also set for\" in problem:\n",
                   "                if mode == \"shared\" and \"also set for\" in problem:\n                    continue\n")],
         PF_FAST),
    "P5 validator: a node-wide key passes in per_symbol mode":
        (RUNNER, [("        if mode == \"per_symbol\" and (section not in PER_SYMBOL_SECTIONS",
                   "        if False and (section not in PER_SYMBOL_SECTIONS")], PF_FAST),
    "P6 validator: per_symbol on a single-instrument config passes":
        (WF_CONFIG, [("    if cfg.portfolio is None and wf.portfolio_params != \"shared\":", "    if False:")], PF_FAST),
    "P9 Ray ships the config text with every trial (no ray.put)":
        (WORKER, [("        return self._remote.remote(replace(task, config_text=\"\"), ref).future()",
                   "        return self._remote.remote(task, task.config_text).future()")], PF_FAST),
    "P10 per-instrument out-of-sample rows taken from another instrument's section":
        (RUNNER, [("            s = O.summary_from_metrics(rec[\"metrics\"][\"instruments\"][iid][\"metrics\"],",
                   "            s = O.summary_from_metrics(rec[\"metrics\"][\"instruments\"][sorted(rec[\"instruments\"])[0]]"
                   "[\"metrics\"],")], PF_SLOW),
    "P11 the per_symbol champion combines the first instrument's parameters for all":
        (RUNNER, [("    params = {symbol_param(u, k): v for u in sorted(units) for k, v in units[u][\"champion\"][\"params\"].items()}",
                   "    params = {symbol_param(u, k): v for u in sorted(units) "
                   "for k, v in units[sorted(units)[0]][\"champion\"][\"params\"].items()}")], PF_SLOW),
    # promoting a portfolio champion (docs/tuning.md, "Portfolio", Promote): tests/test_wf_promote_portfolio.py
    "PP1 per_symbol parameters written into another instrument's override table":
        (PROMOTE_PF, [("            node = overrides.setdefault(iid, {})",
                       "            node = overrides.setdefault(ids[(ids.index(iid) + 1) % len(ids)], {})")], PP),
    "PP2 a sizing record of another instrument accepted (portfolio)":
        (PROMOTE, [("            if rec.get(\"instrument\") != self.instrument:", "            if False:")], PP),
    "PP3 the template's base-unit size kept (BTC units for every coin)":
        (PROMOTE_PF, [("                doc.remove(section, t.base)", "                pass")], PP),
    "PP4 a failed gate of a portfolio run promoted":
        (PROMOTE, [('    if gates.get("passed") is not True or gates.get("failed") or bad:', "    if False:")], PP),
    "PP5 per_symbol champion trials not compared with the split's":
        (PROMOTE, [('    if (sel.get("split"), sel.get("trials" if per_symbol else "trial")) != (last["index"], trial) \\',
                    '    if (sel.get("split"), sel.get("trials" if per_symbol else "trial")) != (last["index"], '
                    'sel.get("trials" if per_symbol else "trial")) \\')], PP),
    "PP6 report.json portfolio.instruments not compared with the tested config's":
        (PROMOTE, [('        if portfolio["instruments"] != tested_ids:', "        if False:")], PP),
    "PP7 shared parameters not set in [strategy]":
        (PROMOTE_PF, [("        _put(strategy if section == \"strategy\" else", "        _put({} if section == \"strategy\" else")],
         PP),
    "PP8 a per_symbol key of an instrument outside the run accepted":
        (PROMOTE_PF, [("        if not sep or iid not in ids:", "        if not sep:")], PP),
    "H27F1 a sizing record's base value not checked against its own notional and price":
        (PROMOTE, [("            bad_base = self._conversion_mismatch(rec, notional, float(k[\"base\"]))",
                    "            bad_base = None")], ["tests/test_hostile_review27.py", "-k", "f1"]),
    "H27F6a a guard's or the allocator's own switch tuned off promoted":
        (PROMOTE, [("    return key in GUARD_SWITCHES or (key.endswith(\".enabled\")", "    return key in GUARD_SWITCHES or (False")],
         ["tests/test_hostile_review27.py", "-k", "f6"]),
    "H27F6b a portfolio limit tuned to 0 (off) promoted":
        (PROMOTE, [("                and params[key] == 0:", "                and params[key] == -1:")],
         ["tests/test_hostile_review27.py", "-k", "f6"]),
    # the wf report's per-symbol plot (docs/tuning.md "Portfolio", Outputs): tests/test_wf_portfolio_report.py
    "PR1 the per-symbol plot takes another instrument's out-of-sample objective":
        (REPORT, [('            out[iid].append((s["index"], is_by.get(iid), oos["by_instrument"][iid]["objective"]))',
                   '            out[iid].append((s["index"], is_by.get(iid), oos["by_instrument"]'
                   '[report["portfolio"]["instruments"][0]]["objective"]))')], PR),
    "PR2 the per-symbol plot draws a missing in-sample figure as 0":
        (REPORT, [("            vals = [r[col] for r in splits]", "            vals = [r[col] or 0.0 for r in splits]")], PR),
}


def main(prefix: str = "") -> int:
    survived = 0
    for name, (path, edits, tests) in MUTANTS.items():
        if not name.startswith(prefix):
            continue
        file = ROOT / path
        orig = file.read_text()
        mutated = orig
        for old, new in edits:
            assert mutated.count(old) == 1, (name, old)
            mutated = mutated.replace(old, new)
        try:
            file.write_text(mutated)
            r = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *tests],
                               cwd=ROOT, capture_output=True, text=True, check=False)
        finally:
            file.write_text(orig)
        failed = [ln.split("::")[1].split(" ")[0] for ln in r.stdout.splitlines() if ln.startswith(("FAILED", "ERROR"))]
        survived += r.returncode == 0
        shown = ", ".join(failed[:3]) + (f" (and {len(failed) - 3} more)" if len(failed) > 3 else "")
        print(f"{name}: {'caught by ' + shown if r.returncode else 'SURVIVED'}", flush=True)
    return 1 if survived else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1] if len(sys.argv) > 1 else ""))
