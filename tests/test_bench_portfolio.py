"""Smoke test of ``python -m tools.bench portfolio`` (tools/bench/portfolio.py; docs/benchmarks.md,
"Instruments in one node"): its configs load and name the instruments they should, and the
same-data catalog holds the same rows under every instrument id. No timed run (benchmarks are
not CI tests)."""

from __future__ import annotations

import tomllib

import pyarrow.parquet as pq

from mmbot.config.backtest import load_backtest_config
from tools.bench.portfolio import CLONES, config_text, same_data_catalog, same_data_config

XRP, BTC, DOGE = "XRPUSDT-LINEAR.BYBIT", "BTCUSDT-LINEAR.BYBIT", "DOGEUSDT-LINEAR.BYBIT"


def test_embedded_configs_take_the_first_n_instruments(tmp_path):
    for n, expected in ((1, [XRP]), (2, [XRP, BTC]), (3, [XRP, BTC, DOGE])):
        text, keep = config_text(n)
        path = tmp_path / f"{n}.toml"
        path.write_text(text)
        cfg = load_backtest_config(path, [])
        assert keep == expected and list(cfg.instrument_configs()) == expected


def test_same_data_catalog_and_configs(tmp_path):
    cat = same_data_catalog(tmp_path, 0.05)
    rows = {}
    for sym in CLONES:
        files = list((cat / "data" / "order_book_deltas" / f"{sym}-LINEAR.BYBIT").glob("*.parquet"))
        table = pq.read_table(files[0])
        rows[sym] = (table.num_rows, table.column("price").to_pylist(), table.column("size").to_pylist())
    assert rows[CLONES[0]][0] > 0 and all(r == rows[CLONES[0]] for r in rows.values())
    for n in (1, 2, 3):
        text, keep = same_data_config(n, cat)
        path = tmp_path / f"same-{n}.toml"
        path.write_text(text)
        cfg = load_backtest_config(path, [])
        assert list(cfg.instrument_configs()) == keep == [f"{s}-LINEAR.BYBIT" for s in CLONES[:n]]
        raw = tomllib.loads(text)
        assert "portfolio" not in raw["risk"] and "overrides" not in raw["portfolio"]
