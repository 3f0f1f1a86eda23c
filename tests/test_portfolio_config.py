"""``[portfolio]``: several instruments in one node — the config's rules (docs/portfolio.md).

Every problem is one ``ConfigError`` line naming where the value came from and the key; the CLI
turns it into exit 2 (checked once, end to end, below)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from mmbot.config.backtest import ConfigError, load_backtest_config
from mmbot.config.rules import Override

ROOT = Path(__file__).resolve().parents[1]
XRP, BTC = "XRPUSDT-LINEAR.BYBIT", "BTCUSDT-LINEAR.BYBIT"

BASE = f"""
[run]
catalog = "{ROOT / 'catalog'}"

[strategy]
level_notional_usdt = 391.0
max_position_notional_usdt = 19540.0
k_vol = 0.0

[risk]
enabled = true

[risk.position]
hard_position_notional_usdt = 10000.0

[portfolio]
instruments = ["{XRP}", "{BTC}"]

[portfolio.overrides."{BTC}"]
strategy.level_notional_usdt = 2000.0
strategy.k_vol = 1.0
risk.position.hard_position_notional_usdt = 20000.0
"""


def _load(tmp_path: Path, text: str, sets=()):
    path = tmp_path / "portfolio.toml"
    path.write_text(text)
    return load_backtest_config(path, list(sets)), path


def test_members_get_their_own_overrides(tmp_path):
    cfg, path = _load(tmp_path, BASE)
    members = cfg.instrument_configs()
    assert list(members) == [XRP, BTC]  # the config's order: strategy i gets order id tag i:03d
    x, b = members[XRP], members[BTC]
    assert (x.run.instrument, b.run.instrument) == (XRP, BTC)
    assert x.strategy == {"level_notional_usdt": 391.0, "max_position_notional_usdt": 19540.0, "k_vol": 0.0}
    assert b.strategy == {"level_notional_usdt": 2000.0, "max_position_notional_usdt": 19540.0, "k_vol": 1.0}
    assert x.risk.guards["position"]["hard_position_notional_usdt"] == 10000.0
    assert b.risk.guards["position"]["hard_position_notional_usdt"] == 20000.0
    assert b.origin("strategy.k_vol") == f'{path} [portfolio.overrides."{BTC}"]'
    assert x.origin("strategy.k_vol") == str(path)
    # the node-wide config: the base sections, and the portfolio in the hash
    assert cfg.strategy["k_vol"] == 0.0
    assert cfg.to_dict()["portfolio"]["instruments"] == [XRP, BTC]
    single = load_backtest_config(None, [])
    assert single.instrument_configs() == {single.run.instrument: single}
    assert "portfolio" not in single.to_dict()


def test_override_of_one_size_key_replaces_the_files_twin(tmp_path):
    cfg, _ = _load(tmp_path, BASE.replace("strategy.level_notional_usdt = 2000.0", "strategy.level_size = 0.01"))
    b = cfg.instrument_configs()[BTC]
    assert b.strategy["level_size"] == 0.01 and "level_notional_usdt" not in b.strategy
    assert cfg.instrument_configs()[XRP].strategy["level_notional_usdt"] == 391.0


def test_set_applies_to_every_member_unless_an_override_pins_the_key(tmp_path):
    cfg, _ = _load(tmp_path, BASE, ["strategy.risk_aversion=0.2"])
    assert {k: m.strategy["risk_aversion"] for k, m in cfg.instrument_configs().items()} == {XRP: 0.2, BTC: 0.2}
    with pytest.raises(ConfigError) as e:
        _load(tmp_path, BASE, ["strategy.k_vol=2"])
    assert str(e.value).startswith("--set strategy.k_vol=2: strategy.k_vol: also set for BTCUSDT-LINEAR.BYBIT by ")


ERRORS = [
    # (edit of BASE, expected line after the file path)
    (lambda t: t.replace(f'"{BTC}"]\n\n[portfolio.over', f'"{XRP}"]\n\n[portfolio.over'),
     f": portfolio.instruments: {XRP} is listed twice (one strategy per instrument)"),
    (lambda t: t.replace(f'["{XRP}", "{BTC}"]', '[]'),
     ": portfolio.instruments: must be a non-empty list of instrument ids, got []"),
    (lambda t: t.replace(f'["{XRP}", "{BTC}"]', f'["{XRP}", "BTCUSDT"]'),
     ": portfolio.instruments: item 1 'BTCUSDT': not an instrument id like BTCUSDT-LINEAR.BYBIT"),
    (lambda t: t.replace("instruments =", "instrument ="),
     ": portfolio.instrument: unknown key; did you mean instruments?"),
    (lambda t: t.replace('[run]\n', f'[run]\ninstrument = "{XRP}"\n'),
     ": run.instrument: cannot be combined with [portfolio] instruments"),
    (lambda t: t.replace(f'overrides."{BTC}"', 'overrides."BTCUSD-LINEAR.BYBIT"'),
     ': portfolio.overrides."BTCUSD-LINEAR.BYBIT": BTCUSD-LINEAR.BYBIT is not in portfolio.instruments '
     f"({XRP}, {BTC}); did you mean {BTC}?"),
    (lambda t: t.replace("strategy.k_vol = 1.0", "strategy.k_voll = 1.0"),
     f' [portfolio.overrides."{BTC}"]: strategy.k_voll: unknown key; did you mean k_vol?'),
    (lambda t: t.replace("strategy.k_vol = 1.0", "strategy.k_vol = nan"),
     f' [portfolio.overrides."{BTC}"]: strategy.k_vol: must be a finite number, was nan'),
    (lambda t: t.replace("risk.position.hard_position_notional_usdt", "risk.position.hard_positon_notional_usdt"),
     f' [portfolio.overrides."{BTC}"]: risk.position.hard_positon_notional_usdt: unknown key; '
     "did you mean hard_position_notional_usdt?"),
    (lambda t: t + f'\n[portfolio.overrides."{XRP}".venue]\nleverage = 2\n',
     f': portfolio.overrides."{XRP}".venue: unknown section (known: risk, strategy) (the other sections are '
     "node-wide)"),
    (lambda t: t + f'\n[portfolio.overrides."{XRP}".risk.engine]\nmax_notional_per_order = 2\n',
     f': portfolio.overrides."{XRP}".risk.engine: risk.engine is node-wide (one per node): set it in [risk]'),
    (lambda t: t.replace("strategy.k_vol = 1.0", "strategy.max_position_notional_usdt = 100.0"),
     f' [portfolio.overrides."{BTC}"]: strategy.level_notional_usdt: must be <= max_position_notional_usdt '
     "(100.0) or nothing is ever quoted, was 2000.0"),
]


@pytest.mark.parametrize("edit,expected", ERRORS, ids=[e[1][:40] for e in ERRORS])
def test_each_problem_is_one_line_naming_origin_and_key(tmp_path, edit, expected):
    with pytest.raises(ConfigError) as e:
        _load(tmp_path, edit(BASE))
    text = str(e.value)
    assert "\n" not in text
    assert text.startswith(str(tmp_path / "portfolio.toml") + expected), text


def test_instrument_option_beside_portfolio_is_refused(tmp_path):
    with pytest.raises(ConfigError) as e:
        _load(tmp_path, BASE, [Override(f'run.instrument="{BTC}"', f"--instrument {BTC}")])
    assert str(e.value).startswith(f"--instrument {BTC}: run.instrument: cannot be combined with [portfolio]")


@pytest.mark.parametrize("mode", ["live"])  # mmbot wf tunes a [portfolio]: tests/test_wf_portfolio*.py
def test_modes_without_portfolio_support_refuse_it(tmp_path, mode):
    """Running the first instrument only would drop the others silently."""
    _, path = _load(tmp_path, BASE)
    if mode == "live":
        from mmbot.live.node import load_live_config

        call = lambda: load_live_config(path)  # noqa: E731
    else:
        from mmbot.tuning.config import load_wf_config

        call = lambda: load_wf_config(path)  # noqa: E731
    with pytest.raises(ConfigError, match=r"portfolio: mmbot (live|wf) runs one instrument so far"):
        call()


def test_cli_exit_2_one_line(tmp_path):
    path = tmp_path / "portfolio.toml"
    path.write_text(BASE.replace(f'"{BTC}"]\n\n[portfolio.over', f'"{XRP}"]\n\n[portfolio.over'))
    p = subprocess.run([sys.executable, "-m", "mmbot.cli", "backtest", "run", "--config", str(path),
                        "--out", str(tmp_path / "out")], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert p.returncode == 2, p.stderr
    lines = [ln for ln in p.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and "portfolio.instruments: XRPUSDT-LINEAR.BYBIT is listed twice" in lines[0], p.stderr
    assert not (tmp_path / "out").exists()
