"""Exact and near-duplicate detection: normalised-text hashes, and MinHash LSH (datasketch) over word shingles.

Signatures are computed for a whole batch in one numpy pass with the permutations of datasketch's ``MinHash`` (the
arithmetic of ``MinHash.update_batch``, affine32 scheme; a test holds the two equal), then indexed with the bands
and rows datasketch's ``MinHashLSH`` uses, as sorted arrays of 64-bit band keys (a test holds the candidates equal
to ``MinHashLSH``'s; the arrays are what lets 900k texts fit in memory). In input order, a text that matches an earlier one is a duplicate; clusters are the
connected components of these links, and each keeps its first text.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Callable, Hashable, Iterator, Sequence

import numpy as np
from datasketch import MinHash
from datasketch.lsh import _optimal_param
from pydantic import Field

from mathforge.config import StrictModel
from mathforge.curate.ngrams import _MULT, Tokens, content_ids, ngram_hashes, subset, tokenize, whole_hashes

_SCHEME = "affine32"
_EMPTY = np.uint32(0xFFFFFFFF)
# MinHashLSH tuned at the threshold itself makes only ~40% of pairs *at* the threshold candidates (b=9, r=13 for
# 0.8 with 128 permutations); tuned this much lower it makes ~95% of them, and the signature check confirms.
LSH_MARGIN = 0.15
_CHUNK_SHINGLES = 1 << 16  # shingles per numpy pass: 2^16 x 128 permutations x 4 bytes = 32 MiB


class DedupConfig(StrictModel):
    exact: bool = Field(True, description="drop exact duplicates (same text after lower-casing and spacing)")
    problem_threshold: float | None = Field(
        0.9, ge=0, le=1, description="near-duplicate problems: estimated Jaccard of word shingles (None: off)"
    )
    solution_threshold: float | None = Field(
        0.8, ge=0, le=1, description="near-duplicate solutions of the same problem: estimated Jaccard (None: off)"
    )
    shingle: int = Field(3, ge=1, description="words per shingle")
    num_perm: int = Field(128, ge=16, description="MinHash permutations")
    seed: int = Field(1, description="seed of the MinHash permutations")


def normalize(text: str | None) -> str:
    """The text an exact duplicate shares: lower-cased, runs of whitespace collapsed."""
    return " ".join((text or "").lower().split())


def exact_duplicates(
    texts: Sequence[str | None], groups: Sequence[Hashable] | None = None, skip: Sequence[bool] | None = None
) -> list[int | None]:
    """For each text, the index of the first earlier text equal after normalisation (in the same group), else None;
    texts marked in ``skip`` are neither duplicates nor originals."""
    first: dict[tuple[Hashable, bytes], int] = {}
    out: list[int | None] = []
    for i, text in enumerate(texts):
        if skip is not None and skip[i]:
            out.append(None)
            continue
        key = (groups[i] if groups is not None else None,
               hashlib.blake2b(normalize(text).encode("utf-8"), digest_size=16).digest())
        earlier = first.get(key)
        out.append(earlier)
        if earlier is None:
            first[key] = i
    return out


def permutations(num_perm: int, seed: int) -> np.ndarray:
    """The (a, b) permutation parameters datasketch's MinHash draws for this ``num_perm`` and ``seed``."""
    return MinHash(num_perm=num_perm, seed=seed, scheme=_SCHEME).permutations


def _fmix32(h: np.ndarray) -> np.ndarray:
    """MurmurHash3's 32-bit finaliser, which datasketch applies to each input hash before permuting."""
    h = h ^ (h >> np.uint32(16))
    h = h * np.uint32(0x85EBCA6B)
    h = h ^ (h >> np.uint32(13))
    h = h * np.uint32(0xC2B2AE35)
    return h ^ (h >> np.uint32(16))


def signatures_from_hashes(hashes: np.ndarray, offsets: np.ndarray, perms: np.ndarray) -> np.ndarray:
    """MinHash signatures (texts x permutations, uint32) of texts given as 32-bit shingle hashes with offsets.

    Equal to ``MinHash(hashfunc=identity).update_batch(hashes of the text)`` for each text; a text without
    shingles keeps the all-max (empty) signature. Works through the shingles in fixed-size chunks laid out
    permutation-major, which keeps ``minimum.reduceat`` on contiguous rows and memory bounded.
    """
    a, b = perms[0][:, None], perms[1][:, None]
    n_docs = len(offsets) - 1
    out = np.full((len(perms[0]), n_docs), _EMPTY, np.uint32)
    mixed = _fmix32(hashes.astype(np.uint32))
    buf = np.empty((len(perms[0]), _CHUNK_SHINGLES), np.uint32)
    doc = 0
    while doc < n_docs:
        end = int(np.searchsorted(offsets, offsets[doc] + _CHUNK_SHINGLES, side="right")) - 1
        end = min(max(end, doc + 1), n_docs)
        lo, hi = int(offsets[doc]), int(offsets[end])
        nonempty = np.flatnonzero(offsets[doc + 1 : end + 1] > offsets[doc:end])
        if hi > lo:
            if hi - lo > buf.shape[1]:  # one text longer than a chunk
                buf = np.empty((len(perms[0]), hi - lo), np.uint32)
            view = buf[:, : hi - lo]
            np.multiply(a, mixed[None, lo:hi], out=view)
            view += b
            out[:, doc + nonempty] = np.minimum.reduceat(view, offsets[doc + nonempty] - lo, axis=1)
        doc = end
    return np.ascontiguousarray(out.T)


def shingle_hashes(tokens: Tokens, shingle: int) -> tuple[np.ndarray, np.ndarray]:
    """32-bit hashes of every word shingle of each text, with per-text offsets; a text shorter than a shingle
    is one shingle of all its words."""
    ids = content_ids(tokens)
    h, doc, _ = ngram_hashes(ids, tokens.offsets, shingle)
    lengths = np.diff(tokens.offsets)
    short = np.flatnonzero((lengths > 0) & (lengths < shingle))
    if len(short):
        h = np.concatenate([h, whole_hashes(*subset(ids, tokens.offsets, short))])
        doc = np.concatenate([doc, short])
        order = np.argsort(doc, kind="stable")
        h, doc = h[order], doc[order]
    counts = np.bincount(doc, minlength=len(tokens))
    offsets = np.zeros(len(tokens) + 1, np.int64)
    np.cumsum(counts, out=offsets[1:])
    return (h >> np.uint64(32)).astype(np.uint32), offsets


def signatures(
    texts: Sequence[str | None] | Tokens, shingle: int = 3, num_perm: int = 128, seed: int = 1
) -> np.ndarray:
    """MinHash signatures of texts (or of texts already tokenised) over their word shingles, one row per text."""
    tokens = texts if isinstance(texts, Tokens) else tokenize(list(texts))
    hashes, offsets = shingle_hashes(tokens, shingle)
    return signatures_from_hashes(hashes, offsets, permutations(num_perm, seed))


class SignatureStore:
    """MinHash signatures appended batch by batch to a file, read back a row or a chunk at a time.

    The global dedup step needs every signature, but only a few rows at once: appending them to disk keeps the
    process at the size of the LSH band keys (8 bytes x bands per text) instead of 4 bytes x permutations per text.
    """

    def __init__(self, path: str | Path, num_perm: int):
        self.path, self.num_perm, self.rows = Path(path), num_perm, 0
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._fh = open(self.path, "w+b")

    def append(self, sigs: np.ndarray) -> None:
        self._fh.seek(0, 2)
        self._fh.write(np.ascontiguousarray(sigs, np.uint32).tobytes())
        self.rows += len(sigs)

    def __len__(self) -> int:
        return self.rows

    def row(self, i: int) -> np.ndarray:
        self._fh.seek(i * self.num_perm * 4)
        return np.frombuffer(self._fh.read(self.num_perm * 4), np.uint32)

    def chunks(self, size: int = 1 << 15) -> Iterator[np.ndarray]:
        self._fh.flush()
        for lo in range(0, self.rows, size):
            self._fh.seek(lo * self.num_perm * 4)
            n = min(size, self.rows - lo)
            yield np.frombuffer(self._fh.read(n * self.num_perm * 4), np.uint32).reshape(n, self.num_perm)

    def close(self) -> None:
        self._fh.close()
        self.path.unlink(missing_ok=True)


class _InMemory:
    """An array of signatures with the store's interface."""

    def __init__(self, sigs: np.ndarray):
        self.sigs, self.num_perm = sigs, sigs.shape[1]

    def __len__(self) -> int:
        return len(self.sigs)

    def row(self, i: int) -> np.ndarray:
        return self.sigs[i]

    def chunks(self, size: int = 1 << 15) -> Iterator[np.ndarray]:
        for lo in range(0, len(self.sigs), size):
            yield self.sigs[lo : lo + size]


def lsh_params(threshold: float, num_perm: int) -> tuple[int, int]:
    """(bands, rows per band) that datasketch's ``MinHashLSH`` picks for this threshold (less the margin)."""
    return _optimal_param(max(0.05, threshold - LSH_MARGIN), num_perm, 0.5, 0.5)


def band_keys(sigs: np.ndarray, bands: int, rows: int, groups: np.ndarray | None = None) -> np.ndarray:
    """One 64-bit key per (text, band): a hash of the band's ``rows`` signature values (and of the text's group)."""
    out = np.zeros((len(sigs), bands), np.uint64)
    for b in range(bands):
        h = np.full(len(sigs), np.uint64(b + 1), np.uint64) if groups is None else groups.astype(np.uint64) * _MULT
        for v in sigs[:, b * rows : (b + 1) * rows].T:
            h = (h ^ v.astype(np.uint64)) * _MULT
        out[:, b] = h ^ (h >> np.uint64(29))
    return out


def near_duplicate_links(
    sigs: np.ndarray | SignatureStore,
    threshold: float,
    groups: Sequence[Hashable] | np.ndarray | None = None,
    skip: Sequence[bool] | np.ndarray | None = None,
    find_candidates: Callable[..., dict[int, set[int]]] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """For each signature row, the index of the most similar earlier text it nearly duplicates (-1: none, it is the
    first of its cluster) and that estimated Jaccard, as two arrays (8 + 8 bytes per text).

    LSH with the bands and rows datasketch's ``MinHashLSH`` would use: texts sharing a band are candidates, and a
    candidate is confirmed on the signatures (estimated Jaccard >= ``threshold``); with ``groups`` only texts of the
    same group can be duplicates. The band index is a sorted array of 64-bit keys (8 bytes x bands per text) rather
    than MinHashLSH's dict of byte strings and sets (2-4 KB per text measured), so 900k texts fit in ~100 MB; ``sigs`` may be a
    :class:`SignatureStore` on disk. Every text enters the index, so clusters are connected components (a lightly
    edited copy of a dropped duplicate is still found); :func:`mathforge.curate.compact.cluster_roots` names the text each cluster keeps.
    ``skip`` marks texts left out. ``find_candidates(chunks, n, bands)`` finds the candidate pairs (default
    :func:`candidates_in`, in this process; the Ray executor partitions the band keys by hash over workers and gets
    the same pairs).
    """
    store = sigs if isinstance(sigs, SignatureStore) else _InMemory(np.asarray(sigs, np.uint32))
    n, num_perm = len(store), store.num_perm
    dup_of, jaccard = np.full(n, -1, np.int64), np.zeros(n, np.float64)
    if n == 0:
        return dup_of, jaccard
    bands, rows = lsh_params(threshold, num_perm)
    codes = None
    if groups is not None:
        codes = np.asarray(groups) if isinstance(groups, np.ndarray) else np.unique(
            np.asarray([str(g) for g in groups], object), return_inverse=True)[1]
    skip_mask = None if skip is None else np.asarray(skip, bool)

    def chunks() -> Iterator[tuple[np.ndarray, np.ndarray]]:
        lo = 0
        for chunk in store.chunks():
            hi = lo + len(chunk)
            usable = ~(chunk == _EMPTY).all(axis=1)
            if skip_mask is not None:
                usable &= ~skip_mask[lo:hi]
            keys = band_keys(chunk, bands, rows, None if codes is None else codes[lo:hi])
            yield np.flatnonzero(usable) + lo, keys[usable]
            lo = hi

    candidates = (find_candidates or candidates_in)(chunks, n, bands)
    for i in sorted(candidates):
        row = store.row(i)
        best: tuple[int, float] | None = None
        for c in sorted(candidates[i]):
            if codes is not None and codes[c] != codes[i]:
                continue
            j = float(np.count_nonzero(store.row(c) == row)) / num_perm
            if j >= threshold and (best is None or j > best[1]):
                best = (c, j)
        if best is not None:
            dup_of[i], jaccard[i] = best
    return dup_of, jaccard


def near_duplicates(
    sigs: np.ndarray | SignatureStore,
    threshold: float,
    groups: Sequence[Hashable] | np.ndarray | None = None,
    skip: Sequence[bool] | np.ndarray | None = None,
    seed: int = 1,
    find_candidates: Callable[..., dict[int, set[int]]] | None = None,
) -> list[tuple[int, float] | None]:
    """:func:`near_duplicate_links` as a list: (earlier text, estimated Jaccard) per text, or None when it is the
    first of its cluster. ``seed`` is kept for callers; the permutations are already in the signatures."""
    dup_of, jaccard = near_duplicate_links(sigs, threshold, groups, skip, find_candidates)
    return [None if d < 0 else (d, j) for d, j in zip(dup_of.tolist(), jaccard.tolist())]


def candidates_in(chunks: Callable[[], Iterator[tuple[np.ndarray, np.ndarray]]], n: int,
                  bands: int) -> dict[int, set[int]]:
    """Text -> the earlier texts sharing one of its band keys; ``chunks()`` yields (text ids, their band keys) of at
    most ``n`` texts in all.

    The keys are copied into one band-major array as the chunks come (8 bytes x bands per text, held once: ~115 MB
    at 900k texts and 16 bands; joining a list of the chunks would hold them twice), and each band is then sorted
    on its own (one band's order and sorted keys, 16 bytes per text, at a time)."""
    ids = np.empty(n, np.int64)
    keys = np.empty((bands, n), np.uint64)
    m = 0
    for chunk_ids, chunk_keys in chunks():
        if m + len(chunk_ids) > n:
            raise ValueError(f"candidates_in: chunks hold more than the {n} texts announced")
        ids[m : m + len(chunk_ids)] = chunk_ids
        keys[:, m : m + len(chunk_ids)] = chunk_keys.T
        m += len(chunk_ids)
    candidates: dict[int, set[int]] = {}
    for b in range(bands):
        add_pairs(candidates, keys[b, :m], ids[:m])
    return candidates


def add_pairs(candidates: dict[int, set[int]], keys: np.ndarray, ids: np.ndarray) -> None:
    """Texts with equal ``keys`` (one band) become candidates of each other, a later text pointing at earlier ones."""
    order = np.lexsort((ids, keys))  # equal keys in text order: earlier texts first
    sorted_keys = keys[order]
    starts = np.flatnonzero(np.concatenate([[True], sorted_keys[1:] != sorted_keys[:-1]]))
    sizes = np.diff(np.append(starts, len(order)))
    for s, m in zip(starts[sizes > 1].tolist(), sizes[sizes > 1].tolist()):
        members = ids[order[s : s + m]].tolist()
        for k in range(1, m):
            candidates.setdefault(members[k], set()).update(members[:k])
