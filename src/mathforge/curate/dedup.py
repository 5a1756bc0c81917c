"""Exact and near-duplicate detection: normalised-text hashes, and MinHash LSH (datasketch) over word shingles.

Signatures are computed for a whole batch in one numpy pass with the permutations of datasketch's ``MinHash`` (the
arithmetic of ``MinHash.update_batch``, affine32 scheme; a test holds the two equal), then indexed and queried with
datasketch's ``MinHashLSH``. In input order, a text that matches an earlier one is a duplicate; clusters are the
connected components of these links, and each keeps its first text.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from typing import Hashable, Sequence

import numpy as np
from datasketch import LeanMinHash, MinHash, MinHashLSH
from pydantic import Field

from mathforge.config import StrictModel
from mathforge.curate.ngrams import Tokens, content_ids, ngram_hashes, subset, tokenize, whole_hashes

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


def near_duplicates(
    sigs: np.ndarray,
    threshold: float,
    groups: Sequence[Hashable] | None = None,
    skip: Sequence[bool] | None = None,
    seed: int = 1,
) -> list[tuple[int, float] | None]:
    """For each signature row, (index of the most similar earlier text it nearly duplicates, estimated Jaccard),
    or None when it is the first of its cluster.

    Candidates come from datasketch's MinHashLSH and are confirmed on the signatures (estimated Jaccard >=
    ``threshold``); with ``groups`` only texts of the same group can be duplicates. Every text enters the index,
    so clusters are connected components (a lightly edited copy of a dropped duplicate is still found);
    :func:`cluster_roots` names the text each cluster keeps. ``skip`` marks texts left out.
    """
    num_perm = sigs.shape[1]
    lsh = MinHashLSH(threshold=max(0.05, threshold - LSH_MARGIN), num_perm=num_perm)
    empty = (sigs == _EMPTY).all(axis=1)
    out: list[tuple[int, float] | None] = [None] * len(sigs)
    for i in range(len(sigs)):
        if empty[i] or (skip is not None and skip[i]):
            continue
        m = LeanMinHash(seed=seed, hashvalues=sigs[i], scheme=_SCHEME)
        best: tuple[int, float] | None = None
        for c in lsh.query(m):
            if groups is not None and groups[c] != groups[i]:
                continue
            j = float(np.count_nonzero(sigs[c] == sigs[i])) / num_perm
            if j >= threshold and (best is None or j > best[1] or (j == best[1] and c < best[0])):
                best = (c, j)
        lsh.insert(i, m, check_duplication=False)
        out[i] = best
    return out


def cluster_roots(duplicate_of: Sequence[int | None]) -> list[int]:
    """For each text, the first text of its cluster (itself when it duplicates nothing); links point backwards."""
    roots: list[int] = []
    for i, d in enumerate(duplicate_of):
        roots.append(i if d is None else roots[d])
    return roots


def cluster_stats(duplicate_of: Sequence[int | None]) -> dict[str, int]:
    """Clusters with at least one duplicate, the largest cluster, and duplicates found."""
    roots = cluster_roots(duplicate_of)
    sizes = Counter(roots[i] for i, d in enumerate(duplicate_of) if d is not None)
    return {"clusters": len(sizes), "largest": max(sizes.values(), default=0) + (1 if sizes else 0),
            "duplicates": sum(sizes.values())}
