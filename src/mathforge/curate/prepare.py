"""Curate's per-record work on one batch: the filters, the benchmark lookups and the MinHash signatures.

Pure (a batch in, verdicts out, nothing carried between batches), so the executor may run it anywhere: in this
process (``executor: local``) or as one Ray task per batch (``executor: ray``). What depends on earlier batches (a
sample id pooled twice, a problem checked once, problem codes, the global dedup) stays with the driver in
``curate/streaming.py``, which tells each batch which of its problems still need a benchmark check or a signature.
A worker holds one batch and the benchmark index, whatever the size of the dataset.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from mathforge.curate.decontam import BenchmarkIndex, Hit
from mathforge.curate.dedup import signatures
from mathforge.curate.filters import build_filters, filter_positions
from mathforge.curate.ngrams import tokenize

Rows = list[dict[str, Any]]


@dataclass
class Batch:
    """One batch of sample rows, and which of its problems the driver has not checked or signed yet."""

    rows: Rows
    check: set[str] = field(default_factory=set)  # problem ids whose question needs a benchmark check
    sign: set[str] = field(default_factory=set)  # problem ids whose question needs a MinHash signature


@dataclass
class Prepared:
    """What the driver needs of a batch; rows are named by their position in it (they are not sent back)."""

    kept: list[int]  # rows the filters kept, in order
    dropped: list[tuple[int, str]]  # (row, reason) for the rows they dropped
    solution_hits: list[Hit | None] | None  # per kept row: its solution's benchmark overlap (None: not checked)
    question_hits: dict[str, Hit | None]  # per question of a problem in ``check``
    solution_sigs: np.ndarray | None  # per kept row (None: no solution dedup)
    question_sigs: dict[str, np.ndarray]  # per question of a problem in ``sign``
    seconds: dict[str, float]  # time per funnel step, added to the driver's


class Preparer:
    """The per-batch step of a curation (a picklable callable: the Ray executor ships it, and its index, once)."""

    def __init__(self, cfg: Any, index: BenchmarkIndex | None):
        self.cfg = cfg
        self.index = index if cfg.decontam.enabled else None
        self.filters = build_filters(cfg.filters)

    def __call__(self, batch: Batch) -> Prepared:
        dcfg = self.cfg.dedup
        t0 = time.perf_counter()
        kept, dropped = filter_positions(batch.rows, self.filters)
        rows = [batch.rows[i] for i in kept]
        t1 = time.perf_counter()
        tokens = tokenize([r.get("text") for r in rows])
        question_hits: dict[str, Hit | None] = {}
        solution_hits = None
        if self.index is not None:
            questions = _questions(rows, batch.check)
            question_hits = dict(zip(questions, self.index.find(questions, whole=True)))
            if self.cfg.decontam.check_solutions:
                solution_hits = self.index.find(tokens)
        t2 = time.perf_counter()
        solution_sigs = None
        if dcfg.solution_threshold is not None:
            solution_sigs = signatures(tokens, dcfg.shingle, dcfg.num_perm, dcfg.seed)
        question_sigs: dict[str, np.ndarray] = {}
        if dcfg.problem_threshold is not None:
            questions = _questions(rows, batch.sign)
            if questions:
                question_sigs = dict(zip(questions, signatures(questions, dcfg.shingle, dcfg.num_perm, dcfg.seed)))
        # tokenising serves both steps: it counts as decontamination when there is one, else as dedup
        lookups = "decontam" if self.index is not None else "dedup solutions"
        seconds = {"filters": t1 - t0, lookups: t2 - t1}
        seconds["dedup solutions"] = seconds.get("dedup solutions", 0.0) + time.perf_counter() - t2
        return Prepared(kept, dropped, solution_hits, question_hits, solution_sigs, question_sigs, seconds)


def _questions(rows: Rows, problems: set[str]) -> list[str]:
    """The distinct question texts of the rows of these problems, in order."""
    if not problems:
        return []
    return list(dict.fromkeys(r.get("question") or "" for r in rows if str(r["problem_id"]) in problems))
