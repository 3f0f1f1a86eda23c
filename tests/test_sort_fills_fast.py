"""``sort_fills``' fast path (mmbot/report/metrics.py ``_in_fill_order``): a frame already in the
report's fill order is handed back as it is instead of being sorted again; every other frame takes
the stable sort. Whatever the path, the answer must be the stable sort's, cell for cell and dtype
for dtype: random frames with many equal times, trade ids that sort differently as text than as
numbers ("QT-99" > "QT-100"), missing trade ids, other indexes, float times."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mmbot.report import metrics as M


def _reference(fills: pd.DataFrame) -> pd.DataFrame:
    keys = ["ts_event_ns"] + (["trade_id"] if "trade_id" in fills.columns else [])
    return fills.sort_values(keys, kind="mergesort").reset_index(drop=True)


def _frame(ts, trade_ids, dtype) -> pd.DataFrame:
    n = len(ts)
    f = pd.DataFrame({"ts_event_ns": np.asarray(ts, dtype=np.int64),
                      "trade_id": pd.Series(trade_ids, dtype=dtype),
                      "side": ["BUY" if i % 2 else "SELL" for i in range(n)],
                      "price": np.arange(n, dtype=np.float64) + 0.5,
                      "qty": np.ones(n), "fee": np.zeros(n), "liquidity": ["MAKER"] * n})
    return f


trade_id = st.one_of(st.sampled_from(["QT-1", "QT-2", "QT-10", "QT-99", "QT-100", "a", "B", "é"]), st.none())


@settings(max_examples=300)
@given(ts=st.lists(st.integers(0, 4), min_size=0, max_size=30), data=st.data(),
       dtype=st.sampled_from([object, "str"]), presort=st.booleans(), with_trade_id=st.booleans())
def test_same_answer_as_the_stable_sort(ts, data, dtype, presort, with_trade_id):
    ids = data.draw(st.lists(trade_id, min_size=len(ts), max_size=len(ts)))
    f = _frame(ts, ids, dtype)
    if not with_trade_id:
        f = f.drop(columns="trade_id")
    if presort:  # the report's case: sorted once, handed on, sorted again
        f = _reference(f)
    want = _reference(f)
    got = M.sort_fills(f)
    pd.testing.assert_frame_equal(got, want, check_exact=True)
    assert got is not f  # a new frame, as the sort gives


def test_sorted_frame_takes_the_fast_path():
    f = _reference(_frame([1, 1, 1, 2, 3, 3], ["QT-100", "QT-99", "QT-99", "x", "QT-2", "QT-10"], "str"))
    assert M._in_fill_order(f, True)
    assert not M._in_fill_order(_frame([1, 1], ["QT-99", "QT-100"], "str"), True)  # text order, not numeric


@pytest.mark.parametrize("case", ["index", "tie_order", "missing_id_at_tie", "float_times", "time_order"])
def test_frames_not_provably_sorted_take_the_sort(case):
    f = _reference(_frame([1, 2, 2, 3], ["a", "b", "c", "d"], object))
    if case == "index":  # sorted values under another index: the sort resets it
        f.index = pd.RangeIndex(1, 5)
    elif case == "tie_order":
        f.loc[1, "trade_id"], f.loc[2, "trade_id"] = "c", "b"
    elif case == "missing_id_at_tie":  # the sort puts a missing id last: not provable by comparison
        f.loc[1, "trade_id"] = None
    elif case == "float_times":
        f["ts_event_ns"] = f["ts_event_ns"].astype(np.float64)
    elif case == "time_order":
        f.loc[3, "ts_event_ns"] = 0
    assert not M._in_fill_order(f, True)
    pd.testing.assert_frame_equal(M.sort_fills(f), _reference(f), check_exact=True)


def test_mutating_the_answer_leaves_the_input_alone():
    f = _reference(_frame([1, 2, 3], ["a", "b", "c"], object))
    got = M.sort_fills(f)
    got.loc[0, "price"] = -1.0
    got["extra"] = 1
    assert f.loc[0, "price"] == 0.5 and "extra" not in f.columns
