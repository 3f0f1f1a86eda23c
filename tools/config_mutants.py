"""Mutants of the config/import/run-folder guards: each must be caught by its tests.

``python -m tools.config_mutants [NAME ...]`` copies the checkout (without .venv, runs, .git) to a
temporary folder once per mutant, applies one deliberately broken edit, runs the tests that
guard it (``python -m pytest`` from the copy, so the copy's code is what runs) and prints
whether the mutant was caught (some test failed) or survived. Exit status 1 if any survived.
Not part of the default test run (a few minutes); docs/config.md lists the results.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
T_VALUES = "tests/test_config_values.py"
T_IMPORT = "tests/test_import_validation.py"
T_FOLDER = "tests/test_config_run_folder.py"
T_FIT = "tests/test_instrument_fit.py"
T_H27 = "tests/test_hostile_review27.py"

# name: (file, old text, new text, pytest args); old text may be a list of (old, new) edits (new = None)
MUTANTS: dict[str, tuple] = {
    "range check as `value < low`, NaN check dropped": (
        "mmbot/config/rules.py",
        [("if isinstance(value, float) and (math.isnan(value) or (math.isinf(value) and not self.allow_inf)):",
          "if isinstance(value, float) and math.isinf(value) and not self.allow_inf:"),
         ("if self.ge is not None and not value >= self.ge:", "if self.ge is not None and value < self.ge:"),
         ("if self.gt is not None and not value > self.gt:", "if self.gt is not None and value <= self.gt:"),
         ("if self.le is not None and not value <= self.le:", "if self.le is not None and value > self.le:")],
        None, [T_VALUES, "-k", "venue or run"]),
    "guard check_number without the upper bound": (
        "strategies/risk/base.py", "    if v > high:", "    if False:", [T_VALUES, "-k", "risk"]),
    "a --set value blamed on the config file": (
        "mmbot/config/rules.py", "        parts = dotted_key.split(\".\")\n",
        "        return self.source\n", [T_VALUES, "-k", "venue.leverage or typo"]),
    "no did-you-mean": (
        "mmbot/config/rules.py", 'return f"; did you mean {close[0]}?" if close else ""', 'return ""',
        [T_VALUES, "-k", "typo"]),
    "strategy config through a JSON round trip (inf -> null)": (
        "mmbot/builders.py", "msgspec.convert(check, MarketMakerConfig, dec_hook=msgspec_decoding_hook)",
        "MarketMakerConfig.parse(msgspec.json.encode(check))", [T_VALUES, "-k", "max_order_age_ms or infinity"]),
    "price limit 10x too high": (
        "adapters/bybit_book.py", "PRICE_RAW_MAX = int(PRICE_MAX) * 10**_RAW_DIGITS",
        "PRICE_RAW_MAX = int(PRICE_MAX) * 10**(_RAW_DIGITS + 1)", [T_IMPORT, "-k", "limits"]),
    "timestamps not range-checked": (
        "adapters/bybit_book.py", "    if isinstance(ts_ns, bool) or not isinstance(ts_ns, int) or not 0 <= ts_ns <= MAX_TS_NS:",
        "    if False:", [T_IMPORT, "-k", "ts or trades"]),
    "non-string numbers accepted": (
        "adapters/bybit_book.py", "    if not isinstance(text, str):\n", "    if False:\n",
        [T_IMPORT, "-k", "float_price or int_size or null_size"]),
    "import lock as a pid file (not released on SIGKILL)": (
        "mmbot/catalog_store.py", "            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)\n",
        "            if os.pread(fd, 32, 0).strip():\n                raise CatalogError(f'{catalog_dir}: locked')\n",
        [T_IMPORT, "-k", "sigkill"]),
    "stale staging kept": (
        "mmbot/catalog_store.py", "    for d in sorted(Path(catalog_dir).glob(STAGING_PREFIX + \"*\")):",
        "    for d in []:", [T_IMPORT, "-k", "sigkill or stale"]),
    "no import lock (concurrent imports)": (
        "mmbot/catalog_store.py", "            fcntl.flock(fd, fcntl.LOCK_EX)  # until the holder finishes or dies",
        "            pass", [T_IMPORT, "-k", "waits"]),
    "whole-file name mismatch not rejected": (
        "adapters/problems.py", "BAD_HEADER, NAME_MISMATCH})", "BAD_HEADER})", [T_IMPORT, "-k", "whole_file"]),
    "header-only CSV accepted silently": (
        "adapters/sources.py", "    if data_lines == 0:", "    if False:", [T_IMPORT, "-k", "header_only"]),
    "--out: any non-empty folder replaced": (
        "mmbot/run_folder.py", "        if rec is None:", "        if False:", [T_FOLDER, "-k", "out"]),
    "--out: a run folder of another kind accepted": (
        "mmbot/run_folder.py", '        if rec["kind"] != kind:', "        if False:", [T_FOLDER, "-k", "wf_out"]),
    "--out: the race loser's moved-aside folder left for good (hostile review 27 F8)": (
        "mmbot/run_folder.py",
        "            if os.path.lexists(out_dir):\n                shutil.rmtree(old, ignore_errors=True)\n"
        "            else:\n                os.replace(old, out_dir)\n",
        "            pass\n", [T_H27, "-k", "f8"]),
    "--out: a symlinked --out left as a stray '.old' link (hostile review 27 F9)": (
        "mmbot/run_folder.py", "        if old.is_symlink():", "        if False:", [T_H27, "-k", "f9"]),
    "soak --symbols: a non-ASCII digit reaches int() (hostile review 27 F2)": (
        "tools/soak/__main__.py", "    if text.isascii() and text.isdigit():", "    if text.isdigit():",
        [T_H27, "-k", "f2"]),
    "compare ignores config differences": (
        "mmbot/backtest/compare.py", "        if key.startswith(IGNORED_KEYS) or fa.get(key) == fb.get(key):",
        "        if True:", [T_FOLDER, "-k", "compare"]),
    "compare ignores disjoint windows": (
        "mmbot/backtest/compare.py", "    elif not (shadow_window[0] <= b_window[1] and b_window[0] <= shadow_window[1]):",
        "    elif False:", [T_FOLDER, "-k", "compare"]),
    "one kill file for every mode (placeholders dropped)": (
        "mmbot/config/risk.py", "    return _PLACEHOLDER.sub(lambda m: values[m.group(1)], template)",
        '    return _PLACEHOLDER.sub("x", template)', [T_FOLDER, "-k", "kill"]),
    "a backtest that starts halted is not reported": (
        "mmbot/backtest/run.py", "    if signal is None:\n        return None", "    if True:\n        return None",
        [T_FOLDER, "-k", "halted"]),
    "calibrate fits a shadow session": (
        "mmbot/backtest/calibrate.py", "    rec = read_marker(session_dir)\n", "    return\n",
        [T_FOLDER, "-k", "calibrate"]),
    "calibration file without its upper bounds": (
        "adapters/sim/calibration.py", "        if v > UPPER[key]:", "        if False:",
        ["tests/test_queue_model.py", "-k", "calibration"]),
    "calibration bound that lets inf through": (
        "adapters/sim/calibration.py",
        [("or not math.isfinite(v):", "or math.isnan(v):"),
         ("        if v > UPPER[key]:", "        if math.isfinite(v) and v > UPPER[key]:")],
        None, ["tests/test_queue_model.py", "-k", "calibration"]),
    "calibration problem blamed on the config file": (
        "mmbot/config/backtest.py", "raise ConfigError(f\"{origins.of('venue.calibration')}: venue.calibration: {e}\")",
        "raise ConfigError(f\"{origins.source}: venue.calibration: {e}\")",
        ["tests/test_queue_model.py", "-k", "calibration"]),
    "queue-simulator keys beside fill_model = nautilus not checked": (
        "mmbot/config/backtest.py", '    if venue.fill_model != "nautilus":\n        return\n',
        "    return\n", [T_VALUES, "-k", "nautilus"]),
    "nautilus check: the config file's queue keys rejected under a --set switch": (
        "mmbot/config/backtest.py", "        if model_from_file or where != origins.source:", "        if True:",
        [T_VALUES, "-k", "nautilus"]),
    "nautilus check: only command-line keys checked": (
        "mmbot/config/backtest.py", "        if model_from_file or where != origins.source:",
        "        if where != origins.source:", [T_VALUES, "-k", "nautilus"]),
    "nautilus check: a --set key blamed on the config file": (
        "mmbot/config/backtest.py", '                f"{where}: venue.{key}: applies only',
        '                f"{origins.source}: venue.{key}: applies only', [T_VALUES, "-k", "nautilus"]),
    "calibration numbers left out of the loaded config (hash and resolved config show the path only)": (
        "mmbot/config/backtest.py", "    return msgspec.structs.replace(venue, **effective)", "    return venue",
        ["tests/test_queue_model.py", "-k", "hash"]),
    "calibration's response_latency_ms left out of the loaded config": (
        "mmbot/config/backtest.py", '        effective["response_latency_ms"] = cal.response_latency_ms', "        pass",
        ["tests/test_queue_model.py", "-k", "hash"]),
    "strategy numbers without their upper bounds": (
        "strategies/market_maker.py", "            if high is not None and v > high:", "            if False:",
        [T_VALUES, "-k", "strategy"]),
    "strategy bound exclusive (the bound itself refused)": (
        "strategies/market_maker.py", "            if high is not None and v > high:",
        "            if high is not None and v >= high:", [T_VALUES, "-k", "strategy"]),
    "levels_per_side without its upper bound": (
        "strategies/market_maker.py", "        if self.levels_per_side > MAX_LEVELS:", "        if False:",
        [T_VALUES, "-k", "strategy"]),
    "instrument fit: minimum quantity not checked": (
        "mmbot/builders.py", "    if lots0 == 0 or q0 < min_qty - tol:", "    if False:", [T_FIT]),
    "instrument fit: maximum quantity not checked": (
        "mmbot/builders.py", "    if q0 > max_qty + tol:", "    if False:", [T_FIT]),
    "instrument fit: minimum order value on the unrounded level_size": (
        "mmbot/builders.py", "    if ref_price is not None and q0 * ref_price < min_notional * (1.0 - 1e-12):",
        "    if ref_price is not None and c.level_size * ref_price < min_notional * (1.0 - 1e-12):", [T_FIT]),
    "instrument fit: backtest without a reference price (no minimum-value check)": (
        "mmbot/builders.py", "        return found[0], (ticks[0].price.as_double() if ticks else None)",
        "        return found[0], None", [T_FIT]),
    "instrument fit: a --set value blamed on the config file": (
        "mmbot/builders.py", "        return ConfigError(f\"{cfg.origin(f'strategy.{key}')}: strategy.{key}: {text}\")",
        "        return ConfigError(f\"{cfg.source}: strategy.{key}: {text}\")", [T_FIT]),
    "instrument fit: live builder does not call it": (
        "mmbot/live/node.py", "    check_instrument_fit_shipped(cfg, instrument_id)  # sizes", "    pass  # sizes",
        [T_FIT, "-k", "live"]),
    "instrument fit: shadow builder does not call it": (
        "mmbot/live/shadow.py", "    check_instrument_fit_shipped(cfg, instrument_id)  # sizes", "    pass  # sizes",
        [T_FIT, "-k", "live"]),
}


def run_mutant(name: str) -> bool:
    """True when the mutant was caught."""
    file, old, new, args = MUTANTS[name]
    with tempfile.TemporaryDirectory(prefix="mmbot-mutant-") as tmp:
        copy = Path(tmp) / "repo"
        shutil.copytree(REPO, copy, ignore=shutil.ignore_patterns(".venv", "runs", ".git", "__pycache__",
                                                                  ".hypothesis", "*.egg-info"))
        target = copy / file
        text = target.read_text()
        for o, n in (old if isinstance(old, list) else [(old, new)]):
            if text.count(o) != 1:
                raise SystemExit(f"{name}: the text to mutate is not found exactly once in {file}: {o!r}")
            text = text.replace(o, n)
        target.write_text(text)
        r = subprocess.run([sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", *args], cwd=copy,
                           capture_output=True, text=True, timeout=900, check=False)
        return r.returncode != 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m tools.config_mutants")
    ap.add_argument("names", nargs="*", help="mutants to run (default: all)")
    names = ap.parse_args(argv).names or list(MUTANTS)
    survived = 0
    for name in names:
        caught = run_mutant(name)
        survived += not caught
        print(f"{'caught  ' if caught else 'SURVIVED'}  {name}", flush=True)
    return 1 if survived else 0


if __name__ == "__main__":
    raise SystemExit(main())
