"""The analysis notebooks run on the embedded catalog and on a real short backtest."""

from __future__ import annotations

import json

import pytest

from tests.notebooks import NOTEBOOKS, execute_notebook, n_images, outputs_text

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("name", sorted(p.name for p in NOTEBOOKS.glob("*.ipynb")))
def test_committed_without_outputs(name):
    nb = json.loads((NOTEBOOKS / name).read_text())
    for cell in nb["cells"]:
        if cell["cell_type"] == "code":
            assert cell.get("outputs") == [] and cell.get("execution_count") is None, name


def test_catalog_explore_on_embedded_catalog():
    nb = execute_notebook("catalog_explore.ipynb", {"MMBOT_MINUTES": "5"})
    text = outputs_text(nb)
    # One sample per exchange message (F_LAST) of the first 5 minutes, counted here independently:
    # ~50 messages/s (ob50 every 20 ms; a push with no change is not sent).
    from nautilus_trader.model.data import OrderBookDelta
    from nautilus_trader.model.enums import RecordFlag

    from mmbot.catalog_store import list_catalog, open_catalog
    from mmbot.paths import DEFAULT_CATALOG

    iid = "XRPUSDT-LINEAR.BYBIT"
    row = next(d for d in list_catalog(DEFAULT_CATALOG)["data"]
               if d["instrument_id"] == iid and d["data_type"] == "order_book_deltas")
    deltas = open_catalog(DEFAULT_CATALOG).query(OrderBookDelta, identifiers=[iid], start=row["start_ns"],
                                                 end=row["start_ns"] + 300 * 10**9)
    messages = sum(1 for d in deltas if d.flags & RecordFlag.F_LAST)
    assert 0.9 * 15_000 < messages <= 15_001
    assert f"'messages': {messages}" in text
    assert "'spread_ticks_median': 1.0" in text
    assert n_images(nb) >= 1
