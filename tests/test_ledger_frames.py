"""``_frame`` (mmbot/backtest/ledger.py): the report's fills and orders frames built a chunk of rows
at a time into Arrow columns are the frames ``pd.DataFrame(rows, columns).astype(dtypes)`` made from
all the rows at once (the code before session 32), value for value, type for type, and in the
same parquet bytes, whatever the rows and however they are cut into chunks (one spill's each)."""

from __future__ import annotations

import io

import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mmbot.backtest.ledger import (
    _FILL_DTYPES,
    _ORDER_DTYPES,
    FILL_FRAME_COLUMNS,
    ORDER_FRAME_COLUMNS,
    _frame,
)


def reference(rows: list, columns, dtypes: dict, seq_first: bool = False) -> pd.DataFrame:
    """The frames as they were made before: every row at once, then the types fixed."""
    if seq_first:
        rows = [r[1:] for r in sorted(rows, key=lambda r: r[0])]
    return pd.DataFrame(rows, columns=list(columns)).astype(dtypes)


_INT64 = st.integers(-(2**63), 2**63 - 1)
_FLOAT = st.floats(allow_nan=True, allow_infinity=True) | st.sampled_from([0.0, -0.0, 1e-12, 0.1 + 0.2])
_TEXT = st.text(max_size=12) | st.sampled_from(["", "BUY", "SELL", "FILLED", "é€😀", "a\x00b"])
_VALUE = {"int64": _INT64, "float64": _FLOAT, "str": _TEXT}


def _rows(columns, dtypes: dict, seq_first: bool):
    row = st.tuples(*[_VALUE[dtypes[c]] for c in columns])
    if not seq_first:
        return st.lists(row, max_size=40)
    # creation numbers unique (the ledger's), in any order (rows are spilled when they close)
    return st.lists(row, max_size=40).flatmap(
        lambda rs: st.permutations(range(len(rs))).map(lambda seqs: [(q, *r) for q, r in zip(seqs, rs)]))


def _chunked(rows: list, cuts: list[int]) -> list[list]:
    points = sorted({c % (len(rows) + 1) for c in cuts} | {0, len(rows)})
    return [rows[a:b] for a, b in zip(points, points[1:])] + [[]]  # an empty chunk too (no rows in memory)


def _parquet(frame: pd.DataFrame) -> bytes:
    out = io.BytesIO()
    frame.to_parquet(out, index=False)
    return out.getvalue()


@pytest.mark.parametrize("columns, dtypes, seq_first", [
    (FILL_FRAME_COLUMNS, _FILL_DTYPES, False),
    (ORDER_FRAME_COLUMNS, _ORDER_DTYPES, True),
], ids=["fills", "orders"])
@settings(max_examples=150, deadline=None)
@given(data=st.data())
def test_frame_built_in_chunks_is_the_frame_of_all_rows(columns, dtypes, seq_first, data):
    rows = data.draw(_rows(columns, dtypes, seq_first))
    cuts = data.draw(st.lists(st.integers(0, 100), max_size=5))
    got = _frame(_chunked(rows, cuts), columns, dtypes, seq_first=seq_first)
    want = reference(rows, columns, dtypes, seq_first)
    pd.testing.assert_frame_equal(got, want, check_exact=True)
    assert isinstance(got.index, pd.RangeIndex)
    assert _parquet(got) == _parquet(want)


def test_a_value_arrow_refuses_is_converted_as_before():
    """Only a ledger bug puts a number in a text column; the frame then has what pandas' ``astype``
    made of it before (its text), not an error at the end of a long run."""
    rows = [(1, 7, "V", "T", "BUY", 1.0, 2.0, 0.1, 0.0, "maker", -1, "MAKER")]
    got = _frame([rows], FILL_FRAME_COLUMNS, _FILL_DTYPES)
    pd.testing.assert_frame_equal(got, reference(rows, FILL_FRAME_COLUMNS, _FILL_DTYPES), check_exact=True)
    assert got["client_order_id"].iloc[0] == "7"


def test_a_long_runs_frame_writes_the_same_parquet_bytes():
    """50,000 fills spilled 500 at a time: the parquet file is the one the frame of all rows writes
    (a text column left in one Arrow chunk per spill is written in other pages: other bytes from
    ~50,000 rows on)."""
    rows = [(1_733_000_000_000_000_000 + 1_000 * i, f"O-20241201-000000-001-000-{i}", f"V-{i}", f"T-{i}",
             "BUY" if i % 2 else "SELL", 0.5 + (i % 997) / 1e4, 200.0, 0.004, 0.0, "trade", -1, "MAKER")
            for i in range(50_000)]
    got = _frame([rows[i:i + 500] for i in range(0, len(rows), 500)], FILL_FRAME_COLUMNS, _FILL_DTYPES)
    assert _parquet(got) == _parquet(reference(rows, FILL_FRAME_COLUMNS, _FILL_DTYPES))


_FILL = (1, "O-1", "V-1", "T-1", "BUY", 1.0, 2.0, 0.1, 0.0, "trade", -1, "MAKER")


@pytest.mark.parametrize("rows", [
    [_FILL + ("extra",)],                 # a field added to the row, not to the columns
    [_FILL[:-1]],                         # a field missing
    [_FILL, _FILL[:-1]],                  # rows of two widths
    [_FILL, _FILL + ("extra",)],          # the shorter one as wide as the columns
], ids=["longer", "shorter", "mixed", "mixed_extra"])
def test_rows_of_another_width_than_the_columns_are_refused(rows):
    """``zip`` would drop the extra value, or a column (hostile review 39 F3); the construction
    before refused the first and filled the second with NaN."""
    with pytest.raises(ValueError, match="ledger rows of"):
        _frame([rows], FILL_FRAME_COLUMNS, _FILL_DTYPES)


@pytest.mark.parametrize("chunks", [[[(None,) + _FILL[1:]]], [[_FILL], [(None,) + _FILL[1:]]]], ids=["alone", "after"])
def test_a_missing_value_in_an_integer_column_is_refused(chunks):
    """As ``astype("int64")`` refused it; Arrow would make the column float64 with NaN (review 39 F2)."""
    with pytest.raises(ValueError, match="'ts_event_ns'.*integer"):
        _frame(chunks, FILL_FRAME_COLUMNS, _FILL_DTYPES)


def test_the_types_follow_pandas_options_as_before():
    """With ``future.infer_string`` off, pandas' text columns are object, Arrow ``string`` in
    parquet, as the frames made from rows had them (review 39 F6)."""
    rows = [_FILL, (2, "O-2", "", "T-2", "SELL", 1.5, 2.0, 0.1, 0.0, "venue", 7, "TAKER")]
    with pd.option_context("future.infer_string", False):
        got = _frame([rows[:1], rows[1:]], FILL_FRAME_COLUMNS, _FILL_DTYPES)
        want = reference(rows, FILL_FRAME_COLUMNS, _FILL_DTYPES)
        pd.testing.assert_frame_equal(got, want, check_exact=True)
        assert _parquet(got) == _parquet(want)
