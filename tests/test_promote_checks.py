"""Checks of ``mmbot promote`` beyond tests/test_hostile_review21.py: keys a searched space may not
carry into a live config, a malformed field past the shape checks, and (most of this file) a wf run
whose config sizes in USDT notional (docs/config.md, "Sizes in
notional"; docs/tuning.md, "Promotion"): promote writes the sizes the champion was judged with, the base
units the champion's newest used split's TEST run resolved them to (report.json
``splits[].out_of_sample.sizing``) and names the price and its source in the header.

The run folder is tests/fixtures/hostile21_wf_run (a real ``mmbot wf`` output, base units) turned
into the folder of the same run sized in USDT: the tested config's ``level_size``/``max_position``
replaced by their notional twins (391 / 1954 USDT), the hash recomputed everywhere, and the test
run's sizing record added as ``mmbot wf`` writes it (reference price 1.955, the first trade of
07:39). Each refusal test changes one thing of that folder.
"""

from __future__ import annotations

import json
import shutil
import tomllib
from pathlib import Path

import pytest

from mmbot.paths import REPO_ROOT
from mmbot.tuning.promote import PromoteError, config_hash_of, write_live_config

FIXTURE = REPO_ROOT / "tests" / "fixtures" / "hostile21_wf_run"
SOURCE = "the window's first trade, 2024-12-01T07:39:00.118Z"


def _rw(d: Path, name: str, fn) -> None:
    doc = json.loads((d / name).read_text())
    fn(doc)
    (d / name).write_text(json.dumps(doc))


def notional_run(tmp_path: Path, sizing: dict | None = None) -> Path:
    d = tmp_path / "wf-notional"
    shutil.copytree(FIXTURE, d)
    resolved = json.loads((d / "config.resolved.json").read_text())
    strategy = resolved["config"]["strategy"]
    strategy.pop("level_size")
    strategy.pop("max_position")
    strategy.update(level_notional_usdt=391.0, max_position_notional_usdt=1954.0)
    h = config_hash_of(resolved["config"])
    resolved["config_hash"] = h
    (d / "config.resolved.json").write_text(json.dumps(resolved))
    for name in ("mmbot_run.json", "champion.json"):
        _rw(d, name, lambda doc: doc.update(config_hash=h))
    record = sizing if sizing is not None else {
        "instrument": "XRPUSDT-LINEAR.BYBIT", "reference_price": 1.955, "price_source": SOURCE, "lot_step": "1",
        "keys": {"strategy.level_notional_usdt": {"notional_usdt": 391.0, "base_key": "strategy.level_size",
                                                  "base": 200.0, "rounding": "down to the lot step"},
                 "strategy.max_position_notional_usdt": {"notional_usdt": 1954.0, "base_key": "strategy.max_position",
                                                         "base": 999.0, "rounding": "down to the lot step"}}}

    def rep(r):
        r["config_hash"] = h
        if record:
            r["splits"][-1]["out_of_sample"]["sizing"] = record
    _rw(d, "report.json", rep)
    return d


def test_notional_sizes_are_written_in_base_units_with_price_and_source(tmp_path):
    out = tmp_path / "live.toml"
    write_live_config(notional_run(tmp_path), "testnet", out)
    text = out.read_text()
    doc = tomllib.loads(text)
    assert doc["strategy"]["level_size"] == 200.0 and doc["strategy"]["max_position"] == 999.0
    assert "level_notional_usdt" not in doc["strategy"] and "max_position_notional_usdt" not in doc["strategy"]
    head = text.split("\n[run]")[0]
    assert "reference price 1.955 USDT" in head and SOURCE in head and "split 1's test run" in head, head
    assert "strategy.level_notional_usdt 391 USDT -> level_size 200" in head, head


def test_a_run_without_the_test_runs_sizing_record_is_refused(tmp_path):
    """A notional config and no recorded price (a run of an older mmbot): no guessing."""
    d = notional_run(tmp_path, sizing={})
    with pytest.raises(PromoteError, match="does not record the price"):
        write_live_config(d, "testnet", tmp_path / "live.toml")
    assert not (tmp_path / "live.toml").exists()


def test_a_sizing_record_of_another_notional_is_refused(tmp_path):
    """The record must be the conversion of the tested config's value (not another run's)."""
    d = notional_run(tmp_path)
    _rw(d, "report.json", lambda r: r["splits"][-1]["out_of_sample"]["sizing"]["keys"]
        ["strategy.level_notional_usdt"].update(notional_usdt=10000.0, base=5000.0))
    with pytest.raises(PromoteError, match="no matching conversion"):
        write_live_config(d, "testnet", tmp_path / "live.toml")


def test_a_sizing_record_of_another_instrument_is_refused(tmp_path):
    d = notional_run(tmp_path)
    _rw(d, "report.json", lambda r: r["splits"][-1]["out_of_sample"]["sizing"].update(instrument="BTCUSDT-LINEAR.BYBIT"))
    with pytest.raises(PromoteError, match="sizing record is for BTCUSDT"):
        write_live_config(d, "testnet", tmp_path / "live.toml")


@pytest.mark.parametrize("price", [0.0, -1.0, float("nan"), None, "1.9"])
def test_a_sizing_record_without_a_valid_price_is_refused(tmp_path, price):
    d = notional_run(tmp_path)
    _rw(d, "report.json", lambda r: r["splits"][-1]["out_of_sample"]["sizing"].update(reference_price=price))
    with pytest.raises(PromoteError, match="no valid reference_price"):
        write_live_config(d, "testnet", tmp_path / "live.toml")


def _in_space(d: Path, key: str, value) -> None:
    """The champion carries ``key`` and the run's space declares it (a legitimate-looking run)."""
    def rep(r):
        r["champion"]["parameters"][key] = value
        r["splits"][-1]["champion_params"][key] = value
        r["wf"]["space"][key] = {"choices": [value], "high": None, "log": False, "low": None, "step": None, "type": ""}
    _rw(d, "report.json", rep)
    _rw(d, "champion.json", lambda c: c["parameters"].update({key: value}))


@pytest.mark.parametrize(("key", "value"), [("live.base_url_ws_public", "wss://evil.example.com/v5/public/linear"),
                                            ("live.allow_mainnet", True), ("run.instrument", "ETHUSDT-LINEAR.BYBIT"),
                                            ("risk.kill_switch.file", "/tmp/never"),
                                            ("risk.audit.file", "/dev/null")])
def test_an_untunable_key_is_refused_even_when_the_space_declares_it(tmp_path, key, value):
    d = tmp_path / "wf"
    shutil.copytree(FIXTURE, d)
    _in_space(d, key, value)
    with pytest.raises(PromoteError, match=f"champion parameter {key} is not a tunable key"):
        write_live_config(d, "mainnet", tmp_path / "live.toml")
    assert not (tmp_path / "live.toml").exists()


def test_a_malformed_field_past_the_shape_checks_is_one_line(tmp_path):
    """champion.json ``selected.train`` a string: one line, not a TypeError traceback."""
    d = tmp_path / "wf"
    shutil.copytree(FIXTURE, d)
    _rw(d, "champion.json", lambda c: c["selected"].update(train="x"))
    with pytest.raises(PromoteError, match="malformed run files"):
        write_live_config(d, "testnet", tmp_path / "live.toml")


def test_a_templates_notional_key_does_not_stay_beside_the_written_base_key(tmp_path):
    """A template sized in USDT (a user's template may be): its notional key is
    dropped where the converted base key is written (one size, one unit)."""
    template = tmp_path / "testnet.toml"
    text = (REPO_ROOT / "config" / "testnet.toml").read_text()
    assert "\nlevel_size = " in text
    template.write_text(text.replace("\nlevel_size = ", "\nlevel_notional_usdt = 100.0\nlevel_size = ", 1))
    out = tmp_path / "live.toml"
    write_live_config(notional_run(tmp_path), "testnet", out, template=template)
    assert "level_notional_usdt =" not in out.read_text()


@pytest.mark.parametrize(("key", "value"), [("risk.position.hard_position", 2500.0), ("strategy.k_vol", 0.5),
                                            ("venue.queue_power", 2.0)])
def test_a_plausible_champion_key_the_run_never_searched_is_refused(tmp_path, key, value):
    """Tunable section, plausible value, but not in report.json wf.space: not a wf result."""
    d = tmp_path / "wf"
    shutil.copytree(FIXTURE, d)
    _in_space(d, key, value)
    _rw(d, "report.json", lambda r: r["wf"]["space"].pop(key))
    with pytest.raises(PromoteError, match=f"champion parameter {key} is not in the run's search space"):
        write_live_config(d, "testnet", tmp_path / "live.toml")


@pytest.mark.parametrize("name", ["report.json", "champion.json", "config.resolved.json", "mmbot_run.json"])
def test_a_run_file_that_is_not_a_json_object_is_named(tmp_path, name):
    d = tmp_path / "wf"
    shutil.copytree(FIXTURE, d)
    (d / name).write_text("[1, 2]")
    with pytest.raises(PromoteError, match=f"{name}: not a JSON object \\(found list\\)"):
        write_live_config(d, "testnet", tmp_path / "live.toml")
