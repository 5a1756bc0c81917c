"""Dedup and decontamination of written problems, through mathforge.curate's MinHash and benchmark n-gram index.

New problems are compared with the seed problems and with each other (greedy in order: seeds first, so a copy of a
seed names the seed), and with the benchmark test sets; each hit becomes a reject reason.
"""

from __future__ import annotations

from typing import Sequence

from mathforge.curate.decontam import BenchmarkIndex
from mathforge.curate.dedup import exact_duplicates, near_duplicates, signatures


def duplicate_reasons(
    texts: Sequence[str],
    ids: Sequence[str],
    seeds: Sequence[tuple[str, str]],
    threshold: float | None,
) -> list[str | None]:
    """For each new problem, why it duplicates a seed or an earlier new problem (exactly or nearly), else None."""
    all_ids = [sid for sid, _ in seeds] + list(ids)
    all_texts = [t for _, t in seeds] + list(texts)
    skip_seed = len(seeds)
    exact = exact_duplicates(all_texts)
    near: list = [None] * len(all_texts)
    if threshold is not None and all_texts:
        near = near_duplicates(signatures(all_texts), threshold, skip=[j is not None for j in exact])
    out: list[str | None] = []
    for i in range(skip_seed, len(all_texts)):
        if exact[i] is not None:
            out.append(f"duplicate: same text as {_what(exact[i], skip_seed)} {all_ids[exact[i]]}")
        elif near[i] is not None:
            j, jaccard = near[i]
            out.append(f"near-duplicate: of {_what(j, skip_seed)} {all_ids[j]} (estimated Jaccard {jaccard:.2f})")
        else:
            out.append(None)
    return out


def _what(index: int, n_seeds: int) -> str:
    return "seed" if index < n_seeds else "new problem"


def leak_reasons(texts: Sequence[str], index: BenchmarkIndex | None) -> list[str | None]:
    """For each new problem, the benchmark item it overlaps (n-gram or whole question), else None."""
    if index is None:
        return [None] * len(texts)
    return [hit.reason("problem") if hit else None for hit in index.find(list(texts), whole=True)]
