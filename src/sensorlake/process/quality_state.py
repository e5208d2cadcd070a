"""The quality stage's memory: the last reading of every (tenant, device, metric) key.

A key is the 64-bit polars hash of (tenant, device_id, metric). The keys are kept sorted in
numpy arrays beside their last ts, last value and run of identical values, so a batch
finds its keys with `searchsorted` (batch × log keys, no hash table rebuilt per batch) and a
commit updates the keys it knows in place; only new keys cost a merge of the arrays. What a
batch taught the stage waits in a small `pending` table until `commit()`; `rollback()` drops
it. A hash collision (about one chance in 10^7 with a million keys) would make two series
share a memory; it can add or miss a flag, never change a value.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import polars as pl

KEY_SEED = 0x5EC5
"""Seed of the key hash (fixed, so keys are comparable between batches of one process)."""


def key_hash(frame: pl.DataFrame, columns: tuple[str, ...] = ("tenant", "device_id",
                                                             "metric")) -> np.ndarray:
    """The uint64 key of each row of `frame`."""
    return frame.select(pl.struct([pl.col(c).cast(pl.String) for c in columns]).hash(
        KEY_SEED)).to_series().to_numpy()


COLUMNS: dict[str, type] = {"last_ts": np.int64, "last_value": np.float64, "run": np.int64,
                            "run_start": np.int64}
"""What is kept per key: the newest reading's ts (µs) and value, how many identical values
end there, and the ts (µs) of the first of them."""


@dataclass
class KeyTable:
    """Sorted unique keys (uint64) and, per key, the COLUMNS arrays."""

    key: np.ndarray
    columns: dict[str, np.ndarray]

    @staticmethod
    def empty() -> KeyTable:
        return KeyTable(np.empty(0, np.uint64),
                        {name: np.empty(0, dtype) for name, dtype in COLUMNS.items()})

    @staticmethod
    def of(key: np.ndarray, **columns: np.ndarray) -> KeyTable:
        """A table from unique keys in any order and every one of COLUMNS."""
        order = np.argsort(key, kind="stable")
        return KeyTable(key[order], {name: np.asarray(columns[name], dtype)[order]
                                     for name, dtype in COLUMNS.items()})

    def __len__(self) -> int:
        return len(self.key)

    def __getitem__(self, name: str) -> np.ndarray:
        return self.columns[name]

    def find(self, keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(position, found) of each of `keys`."""
        if len(self.key) == 0:
            return np.zeros(len(keys), np.int64), np.zeros(len(keys), bool)
        at = np.minimum(np.searchsorted(self.key, keys), len(self.key) - 1)
        return at, self.key[at] == keys

    def take(self, at: np.ndarray) -> KeyTable:
        return KeyTable(self.key[at], {n: c[at] for n, c in self.columns.items()})

    def copy(self) -> KeyTable:
        return KeyTable(self.key.copy(), {n: c.copy() for n, c in self.columns.items()})

    def upsert(self, other: KeyTable) -> KeyTable:
        """This table with `other`'s rows replacing or joining its own (a new table)."""
        if len(other) == 0:
            return self
        out = self.copy()
        out.apply(other)
        return out

    def apply(self, other: KeyTable) -> None:
        """Write `other` into this table in place; new keys are merged in."""
        if len(other) == 0:
            return
        at, hit = self.find(other.key)
        for name, column in self.columns.items():
            column[at[hit]] = other[name][hit]
        new = ~hit
        if new.any():
            where = np.searchsorted(self.key, other.key[new])
            self.key = np.insert(self.key, where, other.key[new])
            self.columns = {name: np.insert(column, where, other[name][new])
                            for name, column in self.columns.items()}

    def trimmed(self, max_keys: int) -> KeyTable:
        """At most `max_keys` keys: past it, cut to the 90 % most recently advanced (so the
        cut is not paid on every batch)."""
        if len(self) <= max_keys:
            return self
        keep = max(1, max_keys * 9 // 10)
        newest = np.argpartition(self["last_ts"], len(self) - keep)[len(self) - keep:]
        return self.take(np.sort(newest))  # positions in key order keep the keys sorted


class KeyState:
    """Committed keys plus what the batches since the last commit changed."""

    def __init__(self, max_keys: int) -> None:
        self.max_keys = max_keys
        self.committed = KeyTable.empty()
        self.pending = KeyTable.empty()

    def lookup(self, keys: np.ndarray) -> tuple[np.ndarray, KeyTable]:
        """(found, rows) for `keys`: pending first, then committed (rows are junk where not
        found)."""
        p_at, p_hit = self.pending.find(keys)
        c_at, c_hit = self.committed.find(keys)
        rows = KeyTable.empty() if len(keys) == 0 else _pick(
            p_hit, self.pending, p_at, self.committed, c_at)
        return p_hit | c_hit, rows

    def stage(self, updates: KeyTable) -> None:
        self.pending = self.pending.upsert(updates).trimmed(self.max_keys)

    def commit(self) -> None:
        self.committed.apply(self.pending)
        self.committed = self.committed.trimmed(self.max_keys)
        self.pending = KeyTable.empty()

    def rollback(self) -> None:
        self.pending = KeyTable.empty()

    def frame(self) -> pl.DataFrame:
        """Every key as the next batch sees it (for tests and inspection)."""
        merged = self.committed.upsert(self.pending)
        return pl.DataFrame({"key": merged.key, **merged.columns})


def _pick(first: np.ndarray, a: KeyTable, a_at: np.ndarray, b: KeyTable,
          b_at: np.ndarray) -> KeyTable:
    """Row-wise: `a` at a_at where `first`, else `b` at b_at (empty tables give zeros)."""

    def column(name: str) -> np.ndarray:
        dtype = COLUMNS[name]
        left = a[name][a_at] if len(a) else np.zeros(len(first), dtype)
        right = b[name][b_at] if len(b) else np.zeros(len(first), dtype)
        return np.where(first, left, right)

    return KeyTable(np.where(first, a.key[a_at] if len(a) else 0, b.key[b_at] if len(b) else 0
                             ).astype(np.uint64), {name: column(name) for name in COLUMNS})
