"""Per-record state of a streamed curation held in flat arrays instead of Python objects.

A dict of Python strings costs ~180 bytes per key and a list of ints ~36 bytes per entry (object, pointer, and the
allocator's arenas, which long-lived small objects pin); the same facts as numpy arrays, ``array.array`` and Arrow
string columns cost their payload: 16-24 bytes per key, 4 per code, the string's own bytes plus 4 per string.
Strings are identified by their 16-byte BLAKE2b digest, as exact duplicate texts already are (a collision among
a million keys has odds of ~2^-88).
"""

from __future__ import annotations

import bisect
import hashlib
from collections.abc import Sequence

import numpy as np
import pyarrow as pa


def digests(values: Sequence[str]) -> np.ndarray:
    """16-byte BLAKE2b digests of strings, as an (n, 2) uint64 array."""
    if not values:
        return np.empty((0, 2), np.uint64)
    raw = b"".join(hashlib.blake2b(v.encode("utf-8"), digest_size=16).digest() for v in values)
    return np.frombuffer(raw, np.uint64).reshape(-1, 2)


class KeyIndex:
    """Distinct strings → dense codes 0, 1, … in order of first appearance, as sorted digest arrays (24 B a key)."""

    def __init__(self) -> None:
        self._hi = np.empty(0, np.uint64)
        self._lo = np.empty(0, np.uint64)
        self._code = np.empty(0, np.int64)

    def __len__(self) -> int:
        return len(self._code)

    def _find(self, d: np.ndarray) -> np.ndarray:
        """Code of each digest row, or -1 where the key is new."""
        out = np.full(len(d), -1, np.int64)
        if not len(self._hi) or not len(d):
            return out
        hi, lo = d[:, 0], d[:, 1]
        left = np.searchsorted(self._hi, hi, "left")
        right = np.searchsorted(self._hi, hi, "right")
        at = np.minimum(left, len(self._hi) - 1)
        match = (left < right) & (self._lo[at] == lo)
        out[match] = self._code[at[match]]
        for i in np.flatnonzero(~match & (right - left > 1)):  # keys sharing their first 8 digest bytes
            for p in range(int(left[i]) + 1, int(right[i])):
                if self._lo[p] == lo[i]:
                    out[i] = self._code[p]
                    break
        return out

    def lookup(self, values: Sequence[str]) -> np.ndarray:
        """Codes of the strings, -1 for those never added."""
        return self._find(digests(values))

    def add(self, values: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """Codes of the strings, new ones numbered in order; and which occurrences created their code."""
        d = digests(values)
        codes = self._find(d)
        new = np.zeros(len(d), bool)
        fresh: dict[bytes, int] = {}  # keys first met in this batch (bounded by the batch)
        for i in np.flatnonzero(codes < 0).tolist():
            key = d[i].tobytes()
            c = fresh.get(key)
            if c is None:
                c = fresh[key] = len(self._code) + len(fresh)
                new[i] = True
            codes[i] = c
        if fresh:
            hi, lo, code = d[new, 0], d[new, 1], codes[new]
            order = np.argsort(hi, kind="stable")
            at = np.searchsorted(self._hi, hi[order], "right")
            self._hi = np.insert(self._hi, at, hi[order])
            self._lo = np.insert(self._lo, at, lo[order])
            self._code = np.insert(self._code, at, code[order])
        return codes, new


class Strings:
    """An append-only column of strings in Arrow arrays (the bytes plus 4 per string), read back by position."""

    def __init__(self) -> None:
        self._chunks: list[pa.Array] = []
        self._starts: list[int] = [0]

    def extend(self, values: Sequence[str]) -> None:
        if values:
            self._chunks.append(pa.array(values, pa.string()))
            self._starts.append(self._starts[-1] + len(values))

    def __len__(self) -> int:
        return self._starts[-1]

    def __getitem__(self, i: int) -> str:
        if not 0 <= i < len(self):
            raise IndexError(i)
        c = bisect.bisect_right(self._starts, i) - 1
        return self._chunks[c][i - self._starts[c]].as_py()


def first_occurrence(keys: np.ndarray) -> np.ndarray:
    """For each row of ``keys`` (n x m integers), the index of the first row equal to it (itself when first)."""
    if not len(keys):
        return np.empty(0, np.int64)
    _, first, inverse = np.unique(keys, axis=0, return_index=True, return_inverse=True)
    return first[inverse.reshape(-1)].astype(np.int64)


def cluster_roots(dup_of: np.ndarray) -> np.ndarray:
    """For each text, the first text of its cluster: ``dup_of`` links (-1: none) point backwards, so following
    them by repeated halving (roots of roots) ends at each chain's start."""
    roots = np.where(dup_of < 0, np.arange(len(dup_of)), dup_of)
    while True:
        nxt = roots[roots]
        if np.array_equal(nxt, roots):
            return roots
        roots = nxt


def cluster_stats(dup_of: np.ndarray) -> dict[str, int]:
    """Clusters with at least one duplicate, the largest cluster (its size), and duplicates found."""
    dups = np.flatnonzero(dup_of >= 0)
    if not len(dups):
        return {"clusters": 0, "largest": 0, "duplicates": 0}
    _, sizes = np.unique(cluster_roots(dup_of)[dups], return_counts=True)
    return {"clusters": int(len(sizes)), "largest": int(sizes.max()) + 1, "duplicates": int(len(dups))}
