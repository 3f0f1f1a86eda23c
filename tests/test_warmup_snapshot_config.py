"""``run.warmup`` (docs/config.md, "Windows between snapshots"): the values it takes, where
"snapshot" cannot run (one line naming the key and where it came from, exit 2, nothing written),
and the default's config hash unchanged."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from mmbot.cli.main import main
from mmbot.config.backtest import load_backtest_config

ROOT = Path(__file__).resolve().parents[1]


def _bt(tmp_path: Path, *args: str):
    out = tmp_path / "run"
    r = CliRunner().invoke(main, ["backtest", "run", "--no-progress", "--out", str(out), *args])
    return r, out


@pytest.mark.parametrize("sets, names", [
    (['run.warmup="snapshot"', 'run.feed="per_delta"'], ("--set run.warmup", "run.feed", "per_delta")),
    (['run.warmup="snapshot"', 'venue.fill_model="nautilus"'], ("--set run.warmup", "venue.fill_model")),
    (['run.warmup="fast"'], ("--set run.warmup", "run.warmup")),
    (['run.warmup=1'], ("--set run.warmup", "run.warmup")),
])
def test_snapshot_warmup_where_it_cannot_run_is_one_line_exit_2(tmp_path, sets, names):
    r, out = _bt(tmp_path, "--config", str(ROOT / "config" / "backtest.toml"),
                 *[x for kv in sets for x in ("--set", kv)])
    assert r.exit_code == 2, r.output
    lines = [x for x in r.output.splitlines() if x.strip()]
    assert len(lines) == 1 and all(n in lines[0] for n in names), r.output
    assert not out.exists()


def test_snapshot_warmup_in_the_file_names_the_file(tmp_path):
    cfg = tmp_path / "bt.toml"
    cfg.write_text((ROOT / "config" / "backtest.toml").read_text().replace(
        "[run]\n", '[run]\nwarmup = "snapshot"\nfeed = "per_delta"\n', 1).replace(
        'catalog = "../catalog"', f'catalog = "{ROOT / "catalog"}"'))
    r, out = _bt(tmp_path, "--config", str(cfg))
    assert r.exit_code == 2, r.output
    assert str(cfg) in r.output and "run.warmup" in r.output and len(r.output.strip().splitlines()) == 1
    assert not out.exists()


def test_a_portfolio_backtest_refuses_the_snapshot_warmup(tmp_path):
    r, out = _bt(tmp_path, "--config", str(ROOT / "config" / "portfolio.toml"), "--set", 'run.warmup="snapshot"')
    assert r.exit_code == 2, r.output
    assert "run.warmup" in r.output and "--set" in r.output and len(r.output.strip().splitlines()) == 1
    assert not out.exists()


def test_the_default_leaves_the_config_hash_unchanged():
    """``run.warmup = "replay"`` is the default: it is not part of the hash (earlier runs' hashes
    stay valid); "snapshot" changes results, so it is."""
    base = load_backtest_config(ROOT / "config" / "backtest.toml", [])
    same = load_backtest_config(ROOT / "config" / "backtest.toml", ['run.warmup="replay"'])
    snap = load_backtest_config(ROOT / "config" / "backtest.toml", ['run.warmup="snapshot"'])
    assert base.config_hash() == same.config_hash() != snap.config_hash()
    assert "warmup" not in base.to_dict()["run"]


def test_a_calibration_trial_refuses_a_snapshot_start_it_cannot_make(tmp_path):
    """Calibration trials replay through Nautilus' node per delta: a window that would start on a
    built snapshot is refused (one line naming run.warmup and where it came from), not replayed
    silently another way."""
    from mmbot.backtest.calibrate import run_trial
    from mmbot.config.backtest import ConfigError

    cfg = load_backtest_config(ROOT / "config" / "backtest.toml",
                               ['run.warmup="snapshot"', 'run.start="2024-12-01T08:20:00Z"',
                                'run.end="2024-12-01T08:21:00Z"'])
    with pytest.raises(ConfigError, match=r"--set run\.warmup.*run\.warmup"):
        run_trial(cfg, tmp_path / "trial")
    assert not (tmp_path / "trial" / "recording" / "orders.jsonl").exists()
