"""Promote a walk-forward champion to a live config file (``mmbot promote``, ``mmbot wf --export-config``).

The written file is ``config/<env>.toml`` (same keys, same comments) with:

- a header comment naming the wf run folder, its data window, objective and value, the split and
  trial the champion came from and the gate verdict;
- ``[run] instrument`` = the instrument the run was tuned on;
- every ``[strategy]`` key of the tested config (the wf base config with the champion's
  parameters applied), copied by name: live quotes exactly what was judged out-of-sample. The
  champion's own (tuned) keys are marked ``# tuned``; any other tuned key (``risk.*``) is set in
  its table, and fill-model keys (``venue.*``) only exist in backtests and are listed in the
  header;
- when the run's instrument differs from the template's, ``[risk.position]`` (limits in base
  units) from the tested config when it has one, else a refusal;
- relative paths of the template made absolute (the file may be written anywhere);
- ``--env mainnet``: ``allow_mainnet = false`` always; the operator reviews and sets it.

Only keys of the run's search space (report.json ``wf.space``) come from the champion, and only
``strategy``/``venue``/``risk`` limits (``check_champion_keys``). Sizes in USDT notional become the
base units the newest used split's test run resolved them to (``_Sizing``: the sizes the champion
was judged with; a notional key would be re-priced at the live mark); the header names the price and its source. Every run-file value in a comment is one
escaped line (``_one_line``).

Refusals (``PromoteError``, one line; the CLI exits 2): no ``champion.json`` (no split produced
an out-of-sample result), a failed gate (or a failed/missing verdict), a champion that is not the
most recent used split's, a champion key outside the space or not tunable, a champion turning the
guards or the audit off, a marker that is not a wf run's, a ``config.resolved.json`` whose hash is
not the run's, a report instrument that is not the tested config's, run files of the wrong shape or
not regular files, a notional size without its recorded conversion, an existing target without
``force``, ``--out`` a directory or below a file, a result the live loader rejects. The file is
written to a temp path in the target's directory, loaded with the live config loader, then renamed.
docs/tuning.md, "Promote the champion to a live config".
"""

from __future__ import annotations

import hashlib
import math
import json
import os
import re
import stat
import tempfile
import tomllib
from pathlib import Path
from typing import Any

from mmbot.canonical_json import dumps_canonical
from mmbot.config.sizing import TWINS
from mmbot.paths import CONFIG_DIR
from mmbot.tuning.space import toml_literal

ENVS = ("testnet", "demo", "mainnet")
# [section] key of the template whose relative value is a path against the template's directory
PATH_KEYS = (("risk.kill_switch", "file"), ("risk.audit", "file"), ("live", "lock_dir"), ("live", "out_dir"),
             ("live", "record_dir"), ("live", "api_key_file"))


class PromoteError(Exception):
    """The champion cannot be promoted (one line: what and why)."""


# Sections a wf champion may carry into a live config. ``run``/``report``/``wf`` cannot be searched
# (``check_space``) and ``live`` is not a backtest key: such a "champion" is not a wf result.
TUNABLE_SECTIONS = ("strategy", "venue", "risk")
# risk.* keys that are not limits: where the kill switch and the audit trail live (a champion
# pointing them elsewhere would disarm them).
UNTUNABLE_RISK = ("risk.kill_switch.", "risk.audit.file")
# A backtest without guards is never halted, so "off" can win in-sample: never promoted.
GUARD_SWITCHES = ("risk.enabled", "risk.audit.enabled")
# [risk.portfolio] limits in USDT where 0 = off (docs/portfolio.md): a tuned 0 is refused like a switch.
PORTFOLIO_LIMITS = "risk.portfolio."


def set_paths_and_mainnet_gate(doc, base: dict, template: Path, env: str, notes: list[str]) -> None:
    """The edits every promoted file gets, single-instrument or portfolio: the template's relative
    paths (kill file, audit log, lock and run folders) made absolute (the file is written
    elsewhere), and for mainnet ``allow_mainnet = false`` (the operator reviews and sets it)."""
    for table, key in PATH_KEYS:
        value = _get(base, f"{table}.{key}")
        if isinstance(value, str) and value and not Path(value).is_absolute():
            doc.set(table, key, toml_literal(str((template.parent / value).resolve())), "made absolute")
    if env == "mainnet":
        doc.set("live", "allow_mainnet", "false", "promoted: the operator reviews this file and sets true")
        notes.append("mainnet: allow_mainnet = false; review the file and set [live] allow_mainnet = true yourself")


def check_champion_keys(run_dir: Path, params: dict, space: dict, also: tuple[str, ...] = ()) -> None:
    """Every champion parameter is a key of the run's search space (report.json ``wf.space``) and a
    tunable key (``TUNABLE_SECTIONS``, no path or kill-switch key; ``also``: more key prefixes, a
    portfolio's ``portfolio.allocator.``): else ``PromoteError`` naming it."""
    for key in sorted(params):
        if key not in space:
            raise PromoteError(f"{run_dir}: not promoted: champion parameter {_one_line(key)} is not in the run's "
                               "search space (report.json wf.space): a wf champion carries only searched keys")
        if (key.split(".")[0] not in TUNABLE_SECTIONS and not key.startswith(also or ("\0",))) \
                or key.startswith(UNTUNABLE_RISK) or key.endswith("file"):
            raise PromoteError(f"{run_dir}: not promoted: champion parameter {_one_line(key)} is not a tunable key "
                               f"(only {', '.join(s + '.*' for s in TUNABLE_SECTIONS)} limits and parameters; never "
                               "live, run, paths, the kill switch)")
        if _is_guard_switch(key) and params[key] is not True:
            raise PromoteError(f"{run_dir}: not promoted: the champion sets {key} = {_one_line(params[key])}: the "
                               "risk guards and the audit trail of a live config are not a tuning result")
        if key.startswith(PORTFOLIO_LIMITS) and key.endswith("_usdt") and not isinstance(params[key], bool) \
                and params[key] == 0:
            raise PromoteError(f"{run_dir}: not promoted: the champion sets {key} = 0, which turns that portfolio "
                               "limit off: a limit that never halts can win in-sample; not a tuning result")


def _is_guard_switch(key: str) -> bool:
    """``risk.enabled``, ``risk.audit.enabled``, and every guard's or the allocator's own switch
    (``risk.<guard>.enabled``, ``portfolio.allocator.enabled``): hostile review 27 F6 (before, a
    wf space searching ``portfolio.allocator.enabled`` or ``risk.portfolio.enabled`` promoted "off",
    to mainnet too)."""
    return key in GUARD_SWITCHES or (key.endswith(".enabled") and key.startswith(("risk.", "portfolio.allocator.")))


def _one_line(value: Any) -> str:
    """``value`` as text for one comment line: every non-printable character (newline, CR, other
    control and line-separator characters) escaped as ``\\uXXXX``, so no run-file value can start
    a header line of its own."""
    return "".join(c if c.isprintable() else f"\\u{ord(c):04x}" for c in str(value))


def _load_json(path: Path) -> dict:
    """A run file's JSON object; ``PromoteError`` (one line naming the file) for a missing or
    non-regular file (a FIFO or device is never opened for reading: no hang), unreadable JSON or a
    document that is not an object."""
    try:
        if not path.is_file():
            raise PromoteError(f"{path}: " + ("not a regular file" if path.exists() else "no such file"))
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)  # swapped for a FIFO after is_file: still no hang
        with os.fdopen(fd, "rb") as fh:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                raise PromoteError(f"{path}: not a regular file")
            doc = json.loads(fh.read())
    except (OSError, ValueError) as e:
        raise PromoteError(f"{path}: unreadable ({e})") from None
    if not isinstance(doc, dict):
        raise PromoteError(f"{path}: not a JSON object (found {type(doc).__name__})")
    return doc


def _need(doc: dict, key: str, kind: type | tuple, where: str) -> Any:
    """``doc[key]``, of type ``kind``; else ``PromoteError`` naming the file and key."""
    value = doc.get(key) if isinstance(doc, dict) else None
    if not isinstance(value, kind) or isinstance(value, bool) and kind is not bool:
        name = kind.__name__ if isinstance(kind, type) else " or ".join(k.__name__ for k in kind)
        raise PromoteError(f"{where}: {key}: missing or not a {name} (not a run folder this mmbot wrote)")
    return value


def config_hash_of(config: dict) -> str:
    """``config.resolved.json``'s hash as mmbot/run_folder.py computes it (12 hex of SHA-256 of the
    canonical ``config``)."""
    return hashlib.sha256(dumps_canonical(config)).hexdigest()[:12]


def _configured_gates(wf: dict) -> list[str]:
    gates = wf.get("gates") if isinstance(wf, dict) else None
    return sorted(k for k, v in (gates or {}).items() if k != "scope" and v is not None) if isinstance(gates, dict) else []


def champion_of(run_dir: Path) -> tuple[dict, dict, dict]:
    """(report.json, champion.json, the tested config) of a wf run folder; refuses a folder that is
    not a wf run's (marker kind), files that do not agree with each other (config hash, instrument),
    a run without a champion, with a failed or missing gate verdict, or whose champion is not the
    most recent used split's."""
    run_dir = Path(run_dir)
    if not (run_dir / "report.json").is_file():
        raise PromoteError(f"{run_dir}: not a wf run folder (no report.json)")
    rfile, cfile = run_dir / "report.json", run_dir / "champion.json"
    report = _load_json(rfile)
    marker = _load_json(run_dir / "mmbot_run.json")
    if marker.get("kind") != "wf":
        raise PromoteError(f"{run_dir}: not a wf run folder (mmbot_run.json kind {_one_line(marker.get('kind'))!r})")
    portfolio = report.get("portfolio")
    if portfolio is not None and (not isinstance(portfolio, dict) or portfolio.get("params") not in ("shared", "per_symbol")
                                  or not isinstance(portfolio.get("instruments"), list)):
        raise PromoteError(f"{rfile}: portfolio: not an object with instruments and params shared/per_symbol "
                           "(not a run folder this mmbot wrote)")
    per_symbol = portfolio is not None and portfolio["params"] == "per_symbol"
    if not cfile.is_file():
        raise PromoteError(f"{run_dir}: not promoted: the run has no champion (no split produced an out-of-sample result)")
    gates = _need(report, "gates", dict, f"{rfile}")
    verdicts = _need(gates, "verdicts", list, f"{rfile} gates")
    if any(not isinstance(v, dict) or not isinstance(v.get("gate"), str) for v in verdicts):
        raise PromoteError(f"{rfile}: gates.verdicts: each verdict must be an object with a gate name")
    bad = [v["gate"] for v in verdicts if v.get("passed") is not True]
    if gates.get("passed") is not True or gates.get("failed") or bad:
        failed = ", ".join(_one_line(g) for g in (bad or gates.get("failed") or ["(no verdict)"]))
        raise PromoteError(f"{run_dir}: not promoted: gate(s) failed: {failed} (report.json gates)")
    wf = _need(report, "wf", dict, f"{rfile}")
    missing = sorted(set(_configured_gates(wf)) - {v["gate"] for v in verdicts})
    if missing:
        raise PromoteError(f"{run_dir}: not promoted: gate(s) configured in the wf config have no verdict: "
                           f"{', '.join(_one_line(g) for g in missing)} (report.json gates.verdicts)")
    champion = _load_json(cfile)
    splits = _need(report, "splits", list, f"{rfile}")
    if any(not isinstance(s, dict) for s in splits):
        raise PromoteError(f"{rfile}: splits: each split must be an object")
    used = [s for s in splits if s.get("status") == "ok" and s.get("out_of_sample")]
    if not used:
        raise PromoteError(f"{run_dir}: not promoted: report.json has no used split")
    last = used[-1]  # trained on the newest data: the one to deploy (docs/tuning.md)
    for key, kind in (("index", int), ("champion_trial", int), ("champion_params", dict)):
        if per_symbol and key == "champion_trial":  # one trial per symbol's study: champion_by_instrument
            key, kind = "champion_by_instrument", dict
        _need(last, key, kind, f"{rfile} splits[{splits.index(last)}]")
    _need(champion, "parameters", dict, f"{cfile}")
    for key in ("selected", "out_of_sample", "objective"):
        _need(champion, key, dict, f"{cfile}")
    sel = champion["selected"]
    # per_symbol: the split's champion is each symbol's own study's champion trial, one per instrument
    trial = ({iid: (c or {}).get("trial") for iid, c in last["champion_by_instrument"].items()} if per_symbol
             else last["champion_trial"])
    if (sel.get("split"), sel.get("trials" if per_symbol else "trial")) != (last["index"], trial) \
            or champion.get("parameters") != last["champion_params"] \
            or (report.get("champion") or {}).get("parameters") != last["champion_params"]:
        what = "trials" if per_symbol else "trial"  # per_symbol: one trial per instrument (hostile review 27 F5)
        raise PromoteError(f"{run_dir}: not promoted: champion.json (split {_one_line(sel.get('split'))}, {what} "
                           f"{_one_line(sel.get(what))}) is not the champion of the most recent used split "
                           f"({last['index']}, {what} {_one_line(trial)}) in report.json")
    rcfile = run_dir / "config.resolved.json"
    resolved_doc = _load_json(rcfile)
    resolved = _need(resolved_doc, "config", dict, f"{rcfile}")
    # Integrity: the tested config is the one the run hashed (report.json, the marker, champion.json).
    actual = config_hash_of(resolved)
    for name, doc in (("config.resolved.json", resolved_doc), ("mmbot_run.json", marker), ("report.json", report),
                      ("champion.json", champion)):
        if doc.get("config_hash") != actual:
            raise PromoteError(f"{run_dir}: not promoted: config.resolved.json's config (hash {actual}) is not the "
                               f"config the run tested ({name} config_hash {_one_line(doc.get('config_hash'))!r}): "
                               "edited after the run")
    instrument = _need(report, "instrument", str, f"{rfile}")
    tested_instrument = _get(resolved, "run.instrument")
    if portfolio is not None:  # the instruments the run tested, in its order (the strategies' order id tags)
        tested_ids = _get(resolved, "portfolio.instruments")
        tested_instrument = "+".join(map(str, tested_ids)) if isinstance(tested_ids, list) else None
        if portfolio["instruments"] != tested_ids:
            raise PromoteError(f"{run_dir}: not promoted: report.json portfolio.instruments "
                               f"{_one_line(portfolio['instruments'])} are not the tested config's "
                               f"portfolio.instruments {_one_line(tested_ids)} (config.resolved.json)")
    if instrument != tested_instrument:
        raise PromoteError(f"{run_dir}: not promoted: report.json instrument {_one_line(instrument)} is not the tested "
                           f"config's {'portfolio.instruments' if portfolio is not None else 'run.instrument'} "
                           f"{_one_line(tested_instrument)} (config.resolved.json)")
    for key, kind in (("data_range", dict), ("wf_hash", str), ("config_source", str)):
        _need(report, key, kind, f"{rfile}")
    return report, champion, resolved


def _fmt_num(v: Any) -> str:
    return "-" if v is None else (f"{v:.6g}" if isinstance(v, float) else str(v))


def _split_value(line: str) -> tuple[str, str]:
    """(value text, trailing comment incl. '#', or '') of a ``key = value  # comment`` line."""
    _, _, rest = line.partition("=")
    quote = None
    for i, ch in enumerate(rest):
        if quote:
            if ch == quote:
                quote = None
        elif ch in "\"'":
            quote = ch
        elif ch == "#":
            return rest[:i].strip(), rest[i:]
    return rest.strip(), ""


class _TomlText:
    """Line-level edits of a TOML file that keep its layout and comments."""

    def __init__(self, text: str) -> None:
        self.lines = text.splitlines()
        # The template's own value of each (table, key): a key set twice (limits copied for another
        # instrument, then tuned) still names the TEMPLATE's value in its comment, not the first set's.
        self.template_values: dict[tuple[str, str], str] = {}
        for ln, t in zip(self.lines, self._table_of_each_line(), strict=True):
            m = re.match(r"^\s*([A-Za-z0-9_\-]+)\s*=", ln)
            if m:
                self.template_values.setdefault((t, m.group(1)), _split_value(ln)[0])

    def _table_of_each_line(self) -> list[str]:
        table, out = "", []
        for ln in self.lines:
            m = re.match(r"^\s*\[([A-Za-z0-9_.\-]+)\]", ln)
            if m:
                table = m.group(1)
            out.append(table)
        return out

    def set(self, table: str, key: str, literal: str, note: str = "") -> None:
        literal, note = _one_line(literal), _one_line(note)
        tables = self._table_of_each_line()
        pat = re.compile(rf"^(\s*){re.escape(key)}\s*=")
        for i, (ln, t) in enumerate(zip(self.lines, tables, strict=True)):
            if t == table and pat.match(ln):
                old, comment = _split_value(ln)
                old = self.template_values.get((table, key), old)
                head = f"{pat.match(ln).group(1)}{key} = {literal}"
                if old != literal:  # the template's comment described its own value: replace it
                    comment = f"# {note + '; ' if note else ''}template: {old}"
                elif note:
                    comment = f"# {note}"
                self.lines[i] = f"{head:<30} {comment}".rstrip() if comment else head
                return
        new = f"{key} = {literal}" + (f"  # {note}" if note else "")
        rows = [i for i, t in enumerate(tables) if t == table]
        if rows:  # after the table's last key line
            keys = [i for i in rows if re.match(r"^\s*[A-Za-z0-9_\"]", self.lines[i]) and "=" in self.lines[i]]
            self.lines.insert((keys or rows)[-1] + 1, new)
        else:
            self.lines += ["", f"[{table}]", new]

    def remove(self, table: str, key: str) -> None:
        pat = re.compile(rf"^\s*{re.escape(key)}\s*=")
        self.lines = [ln for ln, t in zip(self.lines, self._table_of_each_line(), strict=True)
                      if not (t == table and pat.match(ln))]

    def text(self) -> str:
        return "\n".join(self.lines) + "\n"


class _Sizing:
    """Sizes in USDT notional (mmbot/config/sizing.py ``TWINS``) as base units for live (live could
    resolve a notional key at its mark price, mmbot/live/sizing.py, but then the live sizes would
    not be the ones the champion was judged with): each becomes the base value the champion's newest used split's TEST run
    resolved it to (report.json ``splits[].out_of_sample.sizing``, written by that run's builder:
    reference price = the test window's first trade, rounded down to the lot step). So live quotes
    the sizes that were judged out-of-sample; the header names the price and its source."""

    def __init__(self, run_dir: Path, report: dict, instrument: str, by_instrument: bool = False) -> None:
        self.run_dir, self.report, self.instrument = run_dir, report, instrument
        self.by_instrument = by_instrument  # a portfolio run: one record per instrument, keyed by its id
        self.done: list[str] = []
        self._record: dict | None = None

    def record(self, notional_key: str) -> dict:
        if self._record is None:
            used = [s for s in self.report["splits"] if s.get("status") == "ok" and s.get("out_of_sample")]
            last = used[-1]
            rec = last["out_of_sample"].get("sizing") if isinstance(last["out_of_sample"], dict) else None
            if self.by_instrument:
                rec = rec.get(self.instrument) if isinstance(rec, dict) else None
            if not isinstance(rec, dict) or not isinstance(rec.get("keys"), dict):
                raise PromoteError(f"{self.run_dir}: not promoted: the tested config gives {notional_key} in USDT and "
                                   f"report.json does not record the price split {last.get('index')}'s test run "
                                   "converted it at (splits[].out_of_sample.sizing; a run of an older mmbot): "
                                   "run the wf again, or size the wf config in base units")
            if rec.get("instrument") != self.instrument:
                raise PromoteError(f"{self.run_dir}: not promoted: report.json's sizing record is for "
                                   f"{_one_line(rec.get('instrument'))}, not {self.instrument}")
            price = rec.get("reference_price")
            if isinstance(price, bool) or not isinstance(price, (int, float)) or not math.isfinite(price) or price <= 0:
                raise PromoteError(f"{self.run_dir}: not promoted: report.json's sizing record has no valid "
                                   f"reference_price ({_one_line(price)})")
            self._record = {**rec, "split": last.get("index")}
        return self._record

    def to_base(self, section: str, table: dict) -> list[tuple[str, Any, str]]:
        """Replace every notional key of ``table`` (a ``section`` table) by its base twin, in place;
        returns (base name, base value, notional name) of each."""
        out = []
        for t in TWINS:
            if t.section != section or t.notional not in table:
                continue
            notional = table.pop(t.notional)
            rec = self.record(t.notional_key)
            k = rec["keys"].get(t.notional_key)
            if not isinstance(k, dict) or k.get("notional_usdt") != notional or k.get("base_key") != t.base_key \
                    or isinstance(k.get("base"), bool) or not isinstance(k.get("base"), (int, float)) \
                    or not math.isfinite(k["base"]) or k["base"] < 0:
                raise PromoteError(f"{self.run_dir}: not promoted: {t.notional_key} = {_one_line(notional)} USDT has no "
                                   f"matching conversion in split {rec['split']}'s test run (report.json "
                                   "splits[].out_of_sample.sizing)")
            bad_base = self._conversion_mismatch(rec, notional, float(k["base"]))
            if bad_base is not None:
                raise PromoteError(f"{self.run_dir}: not promoted: {t.notional_key} = {_one_line(notional)} USDT -> "
                                   f"{t.base} {_one_line(k['base'])} in split {rec['split']}'s sizing record is not "
                                   f"{bad_base} (report.json splits[].out_of_sample.sizing edited after the run?)")
            table.pop(t.base, None)  # the pair's base key: replaced by the converted value
            table[t.base] = float(k["base"])
            self.done.append(f"{t.notional_key} {notional:g} USDT -> {t.base} {k['base']:g}")
            out.append((t.base, table[t.base], t.notional))
        return out

    @staticmethod
    def _conversion_mismatch(rec: dict, notional: float, base: float) -> str | None:
        """Why ``base`` is not the record's own conversion of ``notional`` (None: it is). The
        builder wrote ``base = floor(notional / reference_price / lot_step) * lot_step``
        (mmbot/builders.py ``resolve_sizing``): so ``base * price <= notional`` and, with the lot
        step, ``(base + lot_step) * price > notional``. Without this a base edited in report.json
        (a BTC size x100) went live unchecked (hostile review 27 F1)."""
        price = rec["reference_price"]
        if base * price > notional * (1.0 + 1e-9) + 1e-12:
            return f"at most notional / reference_price = {notional / price:.6g}"
        try:
            step = float(rec.get("lot_step"))
        except (TypeError, ValueError):
            step = math.nan
        if not (math.isfinite(step) and step > 0.0):
            return f"checkable: the record's lot_step {_one_line(rec.get('lot_step'))} is not a positive number"
        if notional > 0.0 and (base + step) * price <= notional * (1.0 - 1e-9):
            return f"notional / reference_price = {notional / price:.6g} rounded down to the lot step {step:g}"
        return None

    def header_line(self) -> str:
        rec = self._record or {}
        whose = f" of {self.instrument}" if self.by_instrument else ""
        return (f"# sizes{whose} in USDT as base units (live takes base units): {'; '.join(self.done)}, at the reference "
                f"price {rec.get('reference_price'):g} USDT ({rec.get('price_source')}; split {rec.get('split')}'s "
                "test run, rounded down to the lot step).")


def _get(doc: dict, dotted: str) -> Any:
    for part in dotted.split("."):
        if not isinstance(doc, dict) or part not in doc:
            return None
        doc = doc[part]
    return doc


def build_live_config(run_dir: Path, env: str, template: Path | None = None) -> tuple[str, list[str]]:
    """(the live config text, notes for the operator) for the champion of ``run_dir``."""
    try:
        return _build_live_config(run_dir, env, template)
    except (KeyError, TypeError, AttributeError, IndexError) as e:  # a field of the wrong shape past the checks
        raise PromoteError(f"{run_dir}: not promoted: malformed run files (report.json/champion.json: "
                           f"{type(e).__name__} {_one_line(e)})") from None


def _build_live_config(run_dir: Path, env: str, template: Path | None) -> tuple[str, list[str]]:
    if env not in ENVS:
        raise PromoteError(f"--env {env}: must be one of {', '.join(ENVS)}")
    run_dir = Path(run_dir)
    report, champion, tested = champion_of(run_dir)
    template = Path(template) if template else CONFIG_DIR / f"{env}.toml"
    try:
        base_text = template.read_text()
        base = tomllib.loads(base_text)
    except (OSError, tomllib.TOMLDecodeError) as e:
        raise PromoteError(f"{template}: cannot read the {env} template ({e})") from None
    if "portfolio" in report:  # several instruments: mmbot/tuning/promote_portfolio.py
        from mmbot.tuning.promote_portfolio import build_portfolio_live_config

        return build_portfolio_live_config(run_dir, env, template, base_text, report, champion, tested)
    doc = _TomlText(base_text)
    notes: list[str] = []
    params: dict[str, Any] = champion["parameters"]
    check_champion_keys(run_dir, params, (report.get("wf") or {}).get("space") or {})
    instrument = report["instrument"]
    tested_strategy = dict(tested.get("strategy") or {})
    for key, value in params.items():  # the tested config with the champion applied
        section, _, name = key.partition(".")
        if section == "strategy":
            tested_strategy[name] = value
            for t in TWINS:  # a searched key replaces its twin (the --set layering rule, sizing.py)
                if t.section == "strategy" and name in (t.base, t.notional):
                    tested_strategy.pop(t.notional if name == t.base else t.base, None)
    sizes = _Sizing(run_dir, report, instrument)
    tuned_names = {k.partition(".")[2] for k in params if k.startswith("strategy.")}
    converted = {}
    for name, _, src in sizes.to_base("strategy", tested_strategy):
        converted[name] = f"{'tuned by wf as ' if src in tuned_names else 'from '}{src} (header: sizes)"
    for name in sorted(tested_strategy):
        note = converted.get(name) or ("tuned by wf" if name in tuned_names else "")
        doc.set("strategy", name, toml_literal(tested_strategy[name]), note)
    for t in TWINS:  # one key per pair: none of the template's notional keys may stay beside the base key
        doc.remove(t.section, t.notional)
    if instrument != _get(base, "run.instrument"):
        doc.set("run", "instrument", toml_literal(instrument), "the instrument the champion was tuned on")
        position = _get(tested, "risk.guards.position")
        if not position:
            raise PromoteError(f"{run_dir}: not promoted: tuned on {instrument} but the {env} template trades "
                               f"{_get(base, 'run.instrument')} and the wf config has no [risk.position] limits "
                               "for it (add a [risk] section to the wf config, docs/tuning.md)")
        position = dict(position)
        sizes.to_base("risk.position", position)
        for name in sorted(position):
            doc.set("risk.position", name, toml_literal(position[name]), f"from the wf config ({instrument})")
    # tuned keys last: a tuned risk.position key wins over the copied limits
    not_live = []
    for key in sorted(params):
        section, _, rest = key.rpartition(".")
        if key.startswith("strategy."):
            continue
        if key.startswith("venue."):  # the backtest's fill model: nothing to set live
            not_live.append(f"{key} = {toml_literal(params[key])}")
            continue
        if section == "risk.position":
            table = {rest: params[key]}
            sizes.to_base(section, table)  # a tuned USDT limit: its base-unit twin
            ((rest, value),) = table.items()
            doc.set(section, rest, toml_literal(value), "tuned by wf")
            continue
        doc.set(section, rest, toml_literal(params[key]), "tuned by wf")
    set_paths_and_mainnet_gate(doc, base, template, env, notes)
    sel, oos = champion["selected"], champion["out_of_sample"]
    obj = champion["objective"]
    wf_oos = champion.get("walk_forward_out_of_sample") or {}
    header = [
        f"# mmbot live --env {env} — the champion of walk-forward run {run_dir.name} (mmbot promote).",
        f"# wf run: {run_dir.name} (wf hash {report['wf_hash']}, config {report['config_source']} "
        f"{report['config_hash']}); base: {template.name}.",
        f"# data window: {report['data_range']['start']} .. {report['data_range']['end']} ({instrument}); "
        f"champion: split {sel['split']} trial {sel['trial']}, trained {sel['train']['start']} .. {sel['train']['end']}, "
        f"tested {oos['test']['start']} .. {oos['test']['end']}.",
        f"# objective: {obj['kind']}" + (f" (cvar_lambda {obj.get('cvar_lambda')})" if obj["kind"] == "mean_minus_cvar" else "")
        + f" = {_fmt_num(oos['objective'])} out-of-sample on its test window; walk-forward out-of-sample "
        f"{_fmt_num(wf_oos.get('objective'))} over {wf_oos.get('windows')} window(s).",
        (f"# gates: all passed on the {report['gates']['scope'].replace('_', '-')} out-of-sample result: "
         f"{', '.join(v['gate'] for v in report['gates']['verdicts'])}." if report["gates"]["verdicts"]
         else "# gates: none configured in the wf config: nothing was checked out-of-sample."),
        "# [strategy]: the tested config's keys (tuned ones marked); everything else is the template's.",
    ]
    if sizes.done:
        header.append(sizes.header_line())
    if not_live:
        header.append(f"# fill-model parameters (backtest only, not set here): {', '.join(not_live)}")
    if env == "mainnet":
        header.append("# REVIEW: allow_mainnet is false; an operator must review this file and set it to true.")
    # Run-file values are interpolated above: each line stays one line (no value can add a line).
    return "\n".join(_one_line(h) for h in header) + "\n" + doc.text(), notes


def write_live_config(run_dir: Path, env: str, out: Path, force: bool = False,
                      template: Path | None = None) -> list[str]:
    """Write the champion's live config to ``out`` (temp file, checked with the live loader,
    renamed; never over an existing file unless ``force``). Returns notes for the operator."""
    out = Path(out)
    if os.path.lexists(out) and not force:  # a dangling symlink too: os.link would refuse it at the end
        raise PromoteError(f"{out}: exists (use --force to replace it)")
    if out.is_dir():
        raise PromoteError(f"{out}: is a directory (give a file name)")
    text, notes = build_live_config(run_dir, env, template)
    is_portfolio = "portfolio" in tomllib.loads(text)  # a [portfolio] table: mmbot live runs it as a portfolio
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".toml", dir=out.parent)
    except OSError as e:
        raise PromoteError(f"{out}: cannot write there ({e.strerror or e})") from None
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o644)
        from mmbot.config.backtest import ConfigError
        from mmbot.live.node import load_live_config

        try:
            if is_portfolio:  # as `mmbot live` loads it, with what it checks before any connection
                from mmbot.live.node import check_node_inputs

                cfg, _ = load_live_config(Path(tmp), [], portfolio=True)
                check_node_inputs(cfg)
            else:
                load_live_config(Path(tmp), [])
        except ConfigError as e:
            raise PromoteError(f"{out}: not written: the live config loader rejects it: "
                               f"{str(e).replace(tmp, str(out))}") from None
        if force:
            try:
                os.replace(tmp, out)
            except OSError as e:
                raise PromoteError(f"{out}: not written ({e.strerror or e})") from None
        else:
            try:
                os.link(tmp, out)  # no-clobber: fails if the file appeared meanwhile
            except FileExistsError:
                raise PromoteError(f"{out}: exists (use --force to replace it)") from None
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return notes
