"""Promote the champion of a portfolio wf run (``[portfolio]`` config) to a live config.

The written file is ``config/<env>.toml`` (same tables, keys and comments) with (docs/tuning.md,
"Portfolio", Promote):

- ``[portfolio] instruments`` = the instruments the run tested, in its order; ``[run] instrument``
  removed (a ``[portfolio]`` names the instruments in one place only, docs/portfolio.md);
- ``[strategy]``: the tested config's node-wide keys; shared mode: the champion's values set there;
- ``[portfolio.overrides."<id>"]``: the tested config's override table of each instrument, with
  (per_symbol) that instrument's champion parameters, and every size in base units of THAT
  instrument: sizes in USDT notional become the base value that instrument's section of the newest
  used split's test run resolved them to (report.json ``splits[].out_of_sample.sizing[<id>]``);
  a base-unit size of the template (BTC units in config/testnet.toml) never applies to another
  coin: removed where the instruments get their own;
- ``[risk.position]`` from the tested config (base-unit limits per instrument as above);
  ``[risk.portfolio]`` and ``[portfolio.allocator]`` from the tested config (shared mode: tuned
  keys set), every other ``[risk]`` table the template's, as for one instrument;
- the header of a single-instrument promote, naming every instrument's out-of-sample objective.

Refusals are ``PromoteError`` (one line), as mmbot/tuning/promote.py.
"""

from __future__ import annotations

import copy
import tomllib
from pathlib import Path
from typing import Any

from mmbot.config.sizing import TWINS
from mmbot.tuning.promote import (
    PromoteError, _fmt_num, _get, _one_line, _Sizing, _TomlText, check_champion_keys, set_paths_and_mainnet_gate,
)
from mmbot.tuning.space import toml_literal

SYMBOL_SEP = ":"  # per_symbol champion keys: "<instrument id>:<key>" (mmbot/tuning/runner.py)
SIZE_SECTIONS = ("strategy", "risk.position")


def _put(table: dict, section: str, name: str, value: Any) -> None:
    """``table[name] = value``; a key of a size pair replaces its twin (the --set layering rule,
    mmbot/config/sizing.py): never both keys of a pair in one table."""
    for t in TWINS:
        if t.section == section and name in (t.base, t.notional):
            table.pop(t.notional if name == t.base else t.base, None)
    table[name] = value


def _layer(node: dict, override: dict, section: str) -> dict:
    """An instrument's table: the node-wide table with its override on top (the override's key of
    a size pair replaces the node's other key of the pair for that instrument)."""
    out = dict(node)
    for name, value in override.items():
        _put(out, section, name, value)
    return out


def _split_params(run_dir: Path, params: dict, ids: list[str], space: dict) -> dict[str, dict]:
    """per_symbol ``{"<iid>:<key>": v}`` -> ``{iid: {key: v}}``; every key names one of the run's
    instruments and a searched key, and every instrument has its parameters."""
    by_iid: dict[str, dict] = {}
    for name in sorted(params):
        iid, sep, key = name.partition(SYMBOL_SEP)
        if not sep or iid not in ids:
            raise PromoteError(f"{run_dir}: not promoted: champion parameter {_one_line(name)} is not "
                               "<instrument id>:<key> of one of the run's instruments (report.json portfolio)")
        by_iid.setdefault(iid, {})[key] = params[name]
    for iid in ids:
        if iid not in by_iid:
            raise PromoteError(f"{run_dir}: not promoted: the per_symbol champion has no parameters for {iid}")
        check_champion_keys(run_dir, by_iid[iid], space)
    return by_iid


def _dotted(table: dict, prefix: str = "") -> list[tuple[str, Any]]:
    """An override table's keys as dotted names (``strategy.k``, ``risk.position.k``), sorted."""
    out = []
    for k in sorted(table):
        v = table[k]
        out += _dotted(v, f"{prefix}{k}.") if isinstance(v, dict) else [(f"{prefix}{k}", v)]
    return out


def build_portfolio_live_config(run_dir: Path, env: str, template: Path, base_text: str, report: dict,
                                champion: dict, tested: dict) -> tuple[str, list[str]]:
    """(the live config text, notes) for the champion of a portfolio wf run (module docstring)."""
    base = tomllib.loads(base_text)
    doc = _TomlText(base_text)
    notes: list[str] = []
    mode = report["portfolio"]["params"]
    ids = [str(i) for i in report["portfolio"]["instruments"]]
    space = (report.get("wf") or {}).get("space") or {}
    params: dict[str, Any] = champion["parameters"]
    if mode == "per_symbol":
        by_iid, shared = _split_params(run_dir, params, ids, space), {}
    else:
        check_champion_keys(run_dir, params, space, also=("portfolio.allocator.",))
        by_iid, shared = {}, params
    strategy = dict(tested.get("strategy") or {})
    risk = tested.get("risk") or {}
    tables: dict[str, dict] = {f"risk.{g}": dict(t) for g, t in (risk.get("guards") or {}).items()}
    tables["risk.engine"] = dict(risk.get("engine") or {})
    tables["portfolio.allocator"] = dict(_get(tested, "portfolio.allocator") or {})
    overrides = copy.deepcopy(_get(tested, "portfolio.overrides") or {})
    not_live: list[str] = []
    tuned: dict[str, set[str]] = {"": set(), **{iid: set() for iid in ids}}  # "" = node-wide
    for key in sorted(shared):  # shared: the node-wide tables
        section, _, name = key.rpartition(".")
        if key.startswith("venue."):  # the backtest's fill model: nothing to set live
            not_live.append(f"{key} = {toml_literal(shared[key])}")
            continue
        _put(strategy if section == "strategy" else tables.setdefault(section, {}), section, name, shared[key])
        tuned[""].add(key)
    for iid in ids:  # per_symbol: each instrument's override table
        for key in sorted(by_iid.get(iid, {})):
            value = by_iid[iid][key]
            if key.startswith("venue."):
                not_live.append(f"{iid}{SYMBOL_SEP}{key} = {toml_literal(value)}")
                continue
            parts = key.split(".")
            node = overrides.setdefault(iid, {})
            for part in parts[:-1]:
                node = node.setdefault(part, {})
            _put(node, ".".join(parts[:-1]), parts[-1], value)
            tuned[iid].add(key)
    position = tables.get("risk.position")
    if not position:
        raise PromoteError(f"{run_dir}: not promoted: the wf config has no [risk.position] limits for its instruments "
                           f"(the {env} template's are in its own instrument's units; add a [risk] section to the "
                           "wf config, docs/tuning.md)")
    # Sizes: each instrument's in ITS base units (the sizes its section of the test run was judged with).
    node_tables = {"strategy": strategy, "risk.position": position}
    size_notes: dict[str, dict[str, str]] = {iid: {} for iid in ids}
    size_headers: list[str] = []
    for iid in ids:
        ov = overrides.get(iid) or {}
        sizes = _Sizing(run_dir, report, iid, by_instrument=True)
        for section in SIZE_SECTIONS:
            own = _get(ov, section) or {}
            member = _layer(node_tables[section], own, section)
            for name, value, src in sizes.to_base(section, member):
                target = overrides.setdefault(iid, {})
                for part in section.split("."):
                    target = target.setdefault(part, {})
                _put(target, section, name, value)
                how = "tuned by wf as " if f"{section}.{src}" in tuned[iid] | tuned[""] else "from "
                size_notes[iid][f"{section}.{name}"] = f"{how}{src} (header: sizes of {iid})"
        if sizes.done:
            size_headers.append(sizes.header_line())
    for section, table in node_tables.items():
        for t in TWINS:
            # A node-wide notional key stays (the loader needs one key of each required pair; every
            # instrument's base key in its override replaces it there). The template's base-unit key is
            # in its own instrument's units: removed unless the tested config itself sets it.
            if t.section == section and t.base not in table:
                doc.remove(section, t.base)
            if t.section == section and t.notional not in table:
                doc.remove(section, t.notional)
    node_notional = {t.notional for t in TWINS}
    doc.remove("run", "instrument")  # refused beside [portfolio]: the instruments are named in one place
    for name in sorted(strategy):
        doc.set("strategy", name, toml_literal(strategy[name]), "tuned by wf" if f"strategy.{name}" in tuned[""] else
                "USDT; each instrument's base-unit size (its override table) replaces it" if name in node_notional else "")
    for name in sorted(position):
        doc.set("risk.position", name, toml_literal(position[name]),
                "tuned by wf" if f"risk.position.{name}" in tuned[""] else
                "USDT; each instrument's base-unit limit (its override table) replaces it" if name in node_notional
                else "from the wf config")
    doc.set("portfolio", "instruments", "[" + ", ".join(toml_literal(i) for i in ids) + "]",
            "the instruments the champion was tuned on, in the tested order")
    for section in ("portfolio.allocator", "risk.portfolio"):  # node-wide, as tested
        for name in sorted(tables.get(section) or {}):
            doc.set(section, name, toml_literal(tables[section][name]),
                    "tuned by wf" if f"{section}.{name}" in tuned[""] else "from the wf config")
    for key in sorted(tuned[""]):  # any other tuned risk.* key: its table
        section, _, name = key.rpartition(".")
        if section not in ("strategy", "risk.position", "portfolio.allocator", "risk.portfolio"):
            doc.set(section, name, toml_literal(tables[section][name]), "tuned by wf")
    set_paths_and_mainnet_gate(doc, base, template, env, notes)
    text = doc.text()
    for iid in ids:  # [portfolio.overrides."<id>"]: _TomlText edits bare table names only, so appended whole
        rows = _dotted(overrides.get(iid) or {})
        if not rows:
            continue
        text += f'\n[portfolio.overrides.{toml_literal(iid)}]\n'
        for key, value in rows:
            note = size_notes[iid].get(key) or ("tuned by wf" if key in tuned[iid] else "from the wf config")
            text += f"{key} = {toml_literal(value)}  # {_one_line(note)}\n"
    sel, oos = champion["selected"], champion["out_of_sample"]
    obj = champion["objective"]
    wf_oos = champion.get("walk_forward_out_of_sample") or {}
    by = wf_oos.get("by_instrument") or {}
    trials = (", ".join(f"{iid} trial {sel['trials'][iid]}" for iid in ids) if mode == "per_symbol"
              else f"trial {sel['trial']}")
    header = [
        f"# mmbot live --env {env} — the champion of walk-forward run {run_dir.name} (mmbot promote): "
        f"a portfolio of {len(ids)} instruments, {mode} parameters.",
        f"# wf run: {run_dir.name} (wf hash {report['wf_hash']}, config {report['config_source']} "
        f"{report['config_hash']}); base: {template.name}.",
        f"# data window: {report['data_range']['start']} .. {report['data_range']['end']} ({', '.join(ids)}); "
        f"champion: split {sel['split']} {trials}, trained {sel['train']['start']} .. {sel['train']['end']}, "
        f"tested {oos['test']['start']} .. {oos['test']['end']}.",
        f"# objective: {obj['kind']}" + (f" (cvar_lambda {obj.get('cvar_lambda')})" if obj["kind"] == "mean_minus_cvar" else "")
        + f" = {_fmt_num(oos['objective'])} out-of-sample (the portfolio) on its test window; walk-forward out-of-sample "
        f"{_fmt_num(wf_oos.get('objective'))} over {wf_oos.get('windows')} window(s); per instrument (walk-forward): "
        + ", ".join(f"{iid} {_fmt_num((by.get(iid) or {}).get('objective'))}" for iid in ids) + ".",
        (f"# gates: all passed on the portfolio's {report['gates']['scope'].replace('_', '-')} out-of-sample result: "
         f"{', '.join(v['gate'] for v in report['gates']['verdicts'])}." if report["gates"]["verdicts"]
         else "# gates: none configured in the wf config: nothing was checked out-of-sample."),
        "# [strategy], [risk.position], [risk.portfolio], [portfolio.allocator] and [portfolio.overrides.*]: the tested "
        "config's (tuned keys marked); every size in each instrument's own base units; everything else is the template's.",
        *size_headers,
    ]
    if not_live:
        header.append(f"# fill-model parameters (backtest only, not set here): {', '.join(not_live)}")
    if env == "mainnet":
        header.append("# REVIEW: allow_mainnet is false; an operator must review this file and set it to true.")
    return "\n".join(_one_line(h) for h in header) + "\n" + text, notes
