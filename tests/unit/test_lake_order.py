"""The lake writes a span's rows sorted by (hour, tenant, device_id, metric, ts); the sort
is skipped when the store already read them back in that order, so `is_sorted` must agree
with an actual sort on every input."""

from __future__ import annotations

import pyarrow as pa
from hypothesis import given
from hypothesis import strategies as st

from sensorlake.store.lake import is_sorted

ROWS = st.lists(st.tuples(st.integers(0, 2), st.sampled_from(["a", "b", "ab", ""]),
                          st.one_of(st.none(), st.integers(-3, 3))), max_size=12)


@given(ROWS)
def test_is_sorted_agrees_with_sorting(rows: list[tuple[int, str, int | None]]) -> None:
    table = pa.table({"h": [r[0] for r in rows], "s": [r[1] for r in rows],
                      "n": pa.array([r[2] for r in rows], pa.int64())})
    keys = ("h", "s", "n")
    in_order = table.sort_by([(k, "ascending") for k in keys]).equals(table)
    has_nulls = table.column("n").null_count > 0 and len(rows) > 1
    if has_nulls:  # nulls are never trusted: the lake sorts (it never claims a wrong order)
        assert not is_sorted(table, keys) or in_order
    else:
        assert is_sorted(table, keys) == in_order
