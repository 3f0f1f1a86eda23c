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
    assert "'messages': 3001" in text  # 5 minutes at 10 messages/s, both ends included
    assert "'spread_ticks_median': 1.0" in text
    assert n_images(nb) >= 1
