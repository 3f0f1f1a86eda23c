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


@settings(max_examples=300)
@given(ts=st.lists(st.integers(0, 3), min_size=2, max_size=40), data=st.data(), dtype=st.sampled_from([object, "str"]))
def test_one_tie_out_of_order_anywhere_takes_the_sort(ts, data, dtype):
    """A sorted frame with the trade ids of ONE pair of equal-time neighbours swapped, the pair
    anywhere in the frame (not only the first tie; hostile review 37 F4): never the fast path, and
    the answer is the sort's."""
    ids = [f"T{i:03d}" for i in range(len(ts))]  # distinct, so a swap always breaks the order
    f = _reference(_frame(sorted(ts), ids, dtype))
    t = f["ts_event_ns"].to_numpy()
    ties = np.flatnonzero(t[1:] == t[:-1])
    if len(ties) == 0:
        return
    k = int(ties[data.draw(st.integers(0, len(ties) - 1))])
    col = f["trade_id"].to_numpy(dtype=object).copy()
    col[k], col[k + 1] = col[k + 1], col[k]
    f["trade_id"] = pd.Series(col, dtype=dtype)
    assert not M._in_fill_order(f, True)
    pd.testing.assert_frame_equal(M.sort_fills(f), _reference(f), check_exact=True)


def test_sorted_frame_takes_the_fast_path():
    f = _reference(_frame([1, 1, 1, 2, 3, 3], ["QT-100", "QT-99", "QT-99", "x", "QT-2", "QT-10"], "str"))
    assert M._in_fill_order(f, True)
    assert not M._in_fill_order(_frame([1, 1], ["QT-99", "QT-100"], "str"), True)  # text order, not numeric


@pytest.mark.parametrize("case", ["index", "named_index", "tie_order", "missing_id_at_tie", "float_times",
                                  "nullable_times", "time_order", "categorical_ids", "duplicate_columns"])
def test_frames_not_provably_sorted_take_the_sort(case):
    f = _reference(_frame([1, 2, 2, 3], ["a", "b", "c", "d"], object))
    if case == "index":  # sorted values under another index: the sort resets it
        f.index = pd.RangeIndex(1, 5)
    elif case == "named_index":  # the sort drops the name
        f.index = pd.RangeIndex(0, 4, name="row")
    elif case == "categorical_ids":  # ordered by their categories, not as text (review 37 F1)
        f["trade_id"] = pd.Categorical(["a", "b", "c", "d"], categories=["d", "c", "b", "a"])  # b, c: text order only
    elif case == "nullable_times":  # a missing time, sorted last as the sort puts it
        f["ts_event_ns"] = pd.array([1, 2, 2, pd.NA], dtype="Int64")
    elif case == "tie_order":
        f.loc[1, "trade_id"], f.loc[2, "trade_id"] = "c", "b"
    elif case == "missing_id_at_tie":  # the sort puts a missing id last: not provable by comparison
        f.loc[1, "trade_id"] = None
    elif case == "float_times":
        f["ts_event_ns"] = f["ts_event_ns"].astype(np.float64)
    elif case == "time_order":
        f.loc[3, "ts_event_ns"] = 0
    if case == "duplicate_columns":  # the sort refuses a key that is not unique (review 37 F3)
        f.insert(1, "ts_event_ns", [1, 2, 2, 3], allow_duplicates=True)
        assert not M._in_fill_order(f, True)
        with pytest.raises(ValueError, match="not unique"):
            M.sort_fills(f)
        return
    assert not M._in_fill_order(f, True)
    pd.testing.assert_frame_equal(M.sort_fills(f), _reference(f), check_exact=True)


@pytest.mark.parametrize("ids", [["a", "b", [3]], ["a", "b", {"x"}], ["a", "b", (1,), 3]])
def test_ids_the_sort_refuses_are_refused_sorted_or_not(ids):
    """Ids the stable sort cannot hash or order raise as the sort does, even in time order
    (review 37 F3: the fast path handed such frames back)."""
    f = _frame(list(range(len(ids))), ["x"] * len(ids), object)
    f["trade_id"] = pd.Series(ids, dtype=object)
    with pytest.raises(TypeError):
        _reference(f)
    with pytest.raises(TypeError):
        M.sort_fills(f)


def test_mutating_the_answer_leaves_the_input_alone():
    f = _reference(_frame([1, 2, 3], ["a", "b", "c"], object))
    got = M.sort_fills(f)
    got.loc[0, "price"] = -1.0
    got["extra"] = 1
    assert f.loc[0, "price"] == 0.5 and "extra" not in f.columns
