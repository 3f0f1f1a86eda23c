"""Mutants of the notional-size conversion and its guards (docs/config.md, "Sizes in notional"):
each replaces one line of mmbot/builders.py or mmbot/config/sizing.py, runs the sizing tests and
puts the file back. Run: .venv/bin/python tests/mutate_sizing.py (every line must say CAUGHT)."""
import subprocess, sys, shutil
MUTS = [
 ("round up", "mmbot/builders.py", "lots = math.floor(notional / ref_price / step + qm.TICK_EPS)", "lots = math.ceil(notional / ref_price / step - qm.TICK_EPS)"),
 ("round to nearest", "mmbot/builders.py", "lots = math.floor(notional / ref_price / step + qm.TICK_EPS)", "lots = round(notional / ref_price / step)"),
 ("price in the wrong unit (x price)", "mmbot/builders.py", "lots = math.floor(notional / ref_price / step + qm.TICK_EPS)", "lots = math.floor(notional * ref_price / step + qm.TICK_EPS)"),
 ("price off by 0.01 %", "mmbot/builders.py", "lots = math.floor(notional / ref_price / step + qm.TICK_EPS)", "lots = math.floor(notional * (1.0 / ref_price) / step * 1.0001 + qm.TICK_EPS)"),
 ("instrument lot step ignored (1.0)", "mmbot/builders.py", "    step = instrument.size_increment.as_double()\n    precision", "    step = 1.0\n    precision"),
 ("tick size used as lot step", "mmbot/builders.py", "    step = instrument.size_increment.as_double()\n    precision", "    step = instrument.price_increment.as_double()\n    precision"),
 ("no float tolerance at the boundary", "mmbot/builders.py", "lots = math.floor(notional / ref_price / step + qm.TICK_EPS)", "lots = math.floor(notional / ref_price / step)"),
 ("min order value ignored", "mmbot/builders.py", "                               math.ceil(min_notional / ref_price / step - qm.TICK_EPS))", "                               0)"),
 ("limit of 0 lots allowed", "mmbot/builders.py", "            elif lots < 1:", "            elif lots < 0:"),
 ("max qty ignored", "mmbot/builders.py", "if base > max_qty * (1.0 + 1e-12):", "if False:"),
 ("both keys: file twin always dropped", "mmbot/config/sizing.py", "            else:\n                where = o_notional", "            elif False:\n                where = o_notional"),
 ("both keys: command line does not replace", "mmbot/config/sizing.py", "            if base_cli and not notional_cli:", "            if False:"),
 ("notional NaN allowed", "mmbot/config/sizing.py", "            if problem is not None:\n                raise error", "            if problem is not None and table[t.notional] == table[t.notional]:\n                raise error"),
 ("live accepts notional", "mmbot/builders.py", "    if items:\n        t = items[0][0]\n        raise ConfigError(f\"{cfg.origin(t.notional_key)}: {t.notional_key}: a size in USDT", "    if False:\n        t = items[0][0]\n        raise ConfigError(f\"{cfg.origin(t.notional_key)}: {t.notional_key}: a size in USDT"),
]
sel = sys.argv[1] if len(sys.argv) > 1 else ""
for name, path, a, b in MUTS:
    src = open(path).read()
    assert src.count(a) == 1, (name, src.count(a))
    shutil.copy(path, "/tmp/p15_mut_bak")
    open(path, "w").write(src.replace(a, b))
    try:
        r = subprocess.run([".venv/bin/python", "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider",
                            "tests/test_sizing_notional.py", "tests/test_config_values.py", "-k",
                            "not btc_runs and not byte_identical and not exits_2_before and (sizing or notional)"],
                           capture_output=True, text=True, timeout=600)
        last = [l for l in r.stdout.splitlines() if "passed" in l or "failed" in l][-1:]
        failed = [l for l in r.stdout.splitlines() if l.startswith("FAILED")][:1]
        print(f"{'CAUGHT' if r.returncode else 'SURVIVED'} | {name} | {failed[0][7:110] if failed else ''} | {last}")
    finally:
        shutil.copy("/tmp/p15_mut_bak", path)
