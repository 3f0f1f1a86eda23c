"""Fill-for-fill comparison and the attribution of every difference to a named rule.

A fill is keyed by (order id, exchange time): hftbacktest's local side sees two fills of one order
at one exchange time as one (module hbt_side), so mmbot's are added up the same way. Two keys
match when both engines filled the same lots at the same price. Everything else is a difference,
and ``attribute`` names the rule (rules.RULES) that explains it or calls it unexplained."""

from __future__ import annotations

from collections import defaultdict

from tools.crosscheck.rules import RULE_NAMES, UNEXPLAINED

QTY_TOL_LOTS = 1e-6  # hftbacktest's orders are 1e-7 lot short (hbt_side.HBT_QTY_EPS)


def by_key(fills: list[dict], until_ns: int) -> dict:
    """{(order, x_ns): {"qty", "price", "causes"}} for fills with exchange time before ``until_ns``."""
    out: dict = {}
    for f in fills:
        if f["x_ns"] >= until_ns:
            continue
        k = (f["order"], f["x_ns"])
        e = out.setdefault(k, {"qty": 0.0, "price": f["price"], "causes": []})
        e["qty"] = round(e["qty"] + f["qty"], 6)
        if "cause" in f:
            e["causes"].append(f["cause"])
    return out


def differing(a: dict, b: dict) -> set:
    keys = set(a) | set(b)
    return {k for k in keys if k not in a or k not in b or abs(a[k]["qty"] - b[k]["qty"]) > QTY_TOL_LOTS
            or abs(a[k]["price"] - b[k]["price"]) > 1e-12}


def main_cause(causes: list[str]) -> str:
    """A key's cause: "queue" if any of its fills depended on the queue model."""
    if not causes:
        return "?"
    return "queue" if "queue" in causes else causes[0]


def attribute(m0: dict, hbt: dict, stages: list[tuple[str, dict]]) -> tuple[list[dict], set]:
    """``stages``: [(rule name, mmbot fills by key with the rules up to and including it emulated)].
    Every key that differs between mmbot (``m0``) and hftbacktest goes to the first rule from which
    on it no longer differs; keys still differing after the last stage are unexplained. Returns the
    differences (one dict per key) and the keys that differ after the last stage (new ones included:
    the emulation must reproduce hftbacktest exactly)."""
    diffs0 = differing(m0, hbt)
    per_stage = [differing(s, hbt) for _, s in stages]
    last = per_stage[-1] if per_stage else diffs0
    out = []
    for k in sorted(diffs0):
        rule = UNEXPLAINED
        for i in range(len(stages)):
            if all(k not in per_stage[j] for j in range(i, len(stages))):
                rule = stages[i][0]
                break
        mm, hb = m0.get(k), hbt.get(k)
        # The cause of a fill only hftbacktest made: the emulated run that reproduced it says.
        em = next((s[k] for _, s in stages if k in s and k in hbt and abs(s[k]["qty"] - hbt[k]["qty"]) <= QTY_TOL_LOTS),
                  None)
        out.append({"order": k[0], "x_ns": k[1], "price": (mm or hb)["price"],
                    "mmbot_lots": mm["qty"] if mm else 0.0, "hbt_lots": hb["qty"] if hb else 0.0,
                    "mmbot_cause": main_cause(mm["causes"]) if mm else None,
                    "hbt_cause": main_cause(em["causes"]) if em else None, "rule": rule})
    return out, last


def count_by_rule(diffs: list[dict]) -> dict:
    """{rule: {"keys", "queue", "other", "mmbot_lots", "hbt_lots"}}: "queue" counts keys where
    either engine's fill depended on the queue model."""
    def new():
        return {"keys": 0, "queue": 0, "other": 0, "mmbot_lots": 0.0, "hbt_lots": 0.0}

    out = {r: new() for r in (*RULE_NAMES, UNEXPLAINED)}
    for d in diffs:
        e = out.setdefault(d["rule"], new())
        e["keys"] += 1
        e["queue" if "queue" in (d["mmbot_cause"], d["hbt_cause"]) else "other"] += 1
        e["mmbot_lots"] = round(e["mmbot_lots"] + d["mmbot_lots"], 6)
        e["hbt_lots"] = round(e["hbt_lots"] + d["hbt_lots"], 6)
    return out


def cause_table(m0: dict, hbt: dict) -> dict:
    """Per mmbot cause: mmbot fill keys, and how many hftbacktest made identically."""
    out: dict = defaultdict(lambda: {"mmbot": 0, "equal_in_hbt": 0})
    for k, e in m0.items():
        c = main_cause(e["causes"])
        out[c]["mmbot"] += 1
        h = hbt.get(k)
        if h is not None and abs(h["qty"] - e["qty"]) <= QTY_TOL_LOTS and abs(h["price"] - e["price"]) <= 1e-12:
            out[c]["equal_in_hbt"] += 1
    return dict(out)
