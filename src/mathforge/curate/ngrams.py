"""Word tokens and word n-gram hashes of many texts at once: pyarrow tokenises, numpy hashes whole batches.

Dedup (MinHash shingles) and decontamination (13-gram index) both need every word n-gram of ~10^5 texts; done one
Python tuple at a time that is tens of seconds, done as array arithmetic it is well under one.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

_SPLIT = r"[^\p{L}\p{N}]+"  # RE2: a token is a run of Unicode letters or digits
_MULT = np.uint64(0x9E3779B97F4A7C15)  # odd 64-bit multiplier of the polynomial hash


@dataclass
class Tokens:
    """Lower-cased word tokens of a batch of texts: a flat token array and per-text offsets into it."""

    flat: pa.Array
    offsets: np.ndarray  # int64, len(texts) + 1

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def words(self, doc: int, start: int = 0, n: int | None = None) -> list[str]:
        """The tokens of one text (or ``n`` of them from ``start``)."""
        lo = int(self.offsets[doc]) + start
        hi = int(self.offsets[doc + 1]) if n is None else lo + n
        return self.flat.slice(lo, hi - lo).to_pylist()

    def slice(self, lo: int, hi: int) -> "Tokens":
        """The tokens of texts ``lo`` to ``hi`` (exclusive), without copying."""
        start = int(self.offsets[lo])
        return Tokens(self.flat.slice(start, int(self.offsets[hi]) - start), self.offsets[lo : hi + 1] - start)

    def select(self, docs: np.ndarray) -> "Tokens":
        """The tokens of some of the texts only, in the order given (no re-tokenising)."""
        docs = np.asarray(docs, np.int64)
        lengths = self.offsets[docs + 1] - self.offsets[docs]
        offsets = np.zeros(len(docs) + 1, np.int64)
        np.cumsum(lengths, out=offsets[1:])
        base = np.repeat(self.offsets[docs] - offsets[:-1], lengths)
        return Tokens(self.flat.take(pa.array(base + np.arange(offsets[-1]))), offsets)


def tokenize(texts: list[str | None]) -> Tokens:
    """Split texts into lower-cased runs of letters and digits (punctuation, LaTeX braces and spaces separate)."""
    arr = pc.utf8_lower(pa.array([t or "" for t in texts], pa.large_string()))
    lists = pc.split_pattern_regex(arr, _SPLIT)
    flat = pc.list_flatten(lists)
    parents = pc.list_parent_indices(lists)
    keep = pc.not_equal(flat, "")
    flat, parents = flat.filter(keep), parents.filter(keep)
    counts = np.bincount(parents.to_numpy(zero_copy_only=False), minlength=len(texts))
    offsets = np.zeros(len(texts) + 1, np.int64)
    np.cumsum(counts, out=offsets[1:])
    return Tokens(flat, offsets)


def token_ids(tokens: Tokens, vocabulary: pa.Array) -> np.ndarray:
    """Indices of the tokens in a vocabulary (int64); tokens not in it are -1."""
    ids = pc.index_in(tokens.flat, value_set=vocabulary)
    return pc.fill_null(ids, -1).to_numpy(zero_copy_only=False).astype(np.int64)


def content_ids(tokens: Tokens) -> np.ndarray:
    """A stable non-negative 63-bit id per token computed from its text (blake2b), the same in every batch and run,
    so that hashes and MinHash signatures computed in separate calls can be compared."""
    encoded = pc.dictionary_encode(tokens.flat)
    words = encoded.dictionary.to_pylist()
    table = np.fromiter(
        (int.from_bytes(hashlib.blake2b(w.encode("utf-8"), digest_size=8).digest(), "little") >> 1 for w in words),
        np.int64, len(words),
    )
    return table[encoded.indices.to_numpy(zero_copy_only=False)]


def ngram_hashes(ids: np.ndarray, offsets: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """64-bit hashes of every word n-gram inside one text, as (hash, text index, start token within the text).

    N-grams that cross a text boundary or contain an unknown token (id -1) are left out.
    """
    total = len(ids)
    if total < n or n < 1:
        empty = np.zeros(0, np.int64)
        return np.zeros(0, np.uint64), empty, empty
    m = total - n + 1
    shifted = ids.astype(np.uint64) + np.uint64(1)  # -1 wraps to 0 and is masked below
    h = np.zeros(m, np.uint64)
    for j in range(n):
        h *= _MULT
        h += shifted[j : j + m]
    doc_of = np.repeat(np.arange(len(offsets) - 1, dtype=np.int64), np.diff(offsets))
    valid = doc_of[:m] == doc_of[n - 1 :]  # the n-gram starts and ends in the same text
    unknown = ids < 0
    if unknown.any():
        c = np.concatenate([[0], np.cumsum(unknown)])
        valid &= c[n:] == c[:m]
    starts = np.flatnonzero(valid)
    doc = doc_of[starts]
    return _mix64(h[starts]), doc, starts - offsets[doc]


def _mix64(h: np.ndarray) -> np.ndarray:
    """MurmurHash3's 64-bit finaliser, so that nearby polynomial hashes spread over all bits."""
    h = h ^ (h >> np.uint64(33))
    h *= np.uint64(0xFF51AFD7ED558CCD)
    h ^= h >> np.uint64(33)
    h *= np.uint64(0xC4CEB9FE1A85EC53)
    return h ^ (h >> np.uint64(33))


def subset(ids: np.ndarray, offsets: np.ndarray, docs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The token ids and offsets of some of the texts only, in the order given."""
    lengths = offsets[docs + 1] - offsets[docs]
    sub_offsets = np.zeros(len(docs) + 1, np.int64)
    np.cumsum(lengths, out=sub_offsets[1:])
    if not len(docs):
        return np.zeros(0, np.int64), sub_offsets
    # position k of the subset reads ids[offsets[doc] + (k - sub_offsets[doc index])]
    base = np.repeat(offsets[docs] - sub_offsets[:-1], lengths)
    return ids[base + np.arange(sub_offsets[-1])], sub_offsets


def whole_hashes(ids: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """One hash per text of its whole token sequence (texts of any length; 0 for an empty text)."""
    out = np.zeros(len(offsets) - 1, np.uint64)
    lengths = np.diff(offsets)
    for n in np.unique(lengths[lengths > 0]):
        docs = np.flatnonzero(lengths == n)
        h, d, _ = ngram_hashes(*subset(ids, offsets, docs), int(n))
        out[docs[d]] = h
    return out
