"""Curation in bounded memory: records stream through pool → filters → decontamination in batches, dedup is global
over compact keys, and RFT runs per problem on hash partitions.

Memory of the global steps grows with the number of records only through what each record leaves behind, held in
flat arrays (``curate/compact.py``), never as Python objects: its id's 16-byte digest, its problem's integer code,
a 16-byte exact-text digest, the id itself as Arrow bytes when it survived pass 1, and for near-duplicates 8 bytes
per LSH band (11-16 bands at the default thresholds) while a dedup step runs: ~100-150 bytes per record. The
MinHash signatures themselves (512 bytes per text at 128 permutations) are appended to a scratch file and read
back a row at a time to confirm candidates. Record bodies are spooled to scratch files between passes, never held:
pass 1 filters, decontaminates and spools survivors; dedup decides on the keys; pass 2 streams the spool,
rejecting duplicates and partitioning the rest by problem into buckets of at most ``RFT_BUCKET`` records, each
selected in memory and emitted. Pass 1's per-record work (filters, benchmark lookups, MinHash signatures,
``curate/prepare.py``) is pure and runs where the executor puts it: here, or as Ray tasks, a batch each.
"""

from __future__ import annotations

import json
import pickle
import shutil
import tempfile
import time
from array import array
from collections import Counter, defaultdict, deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mathforge.curate.decontam import BenchmarkIndex, Hit
from mathforge.curate.compact import KeyIndex, Strings, cluster_roots, cluster_stats, digests, first_occurrence
from mathforge.curate.dedup import SignatureStore, near_duplicate_links, normalize
from mathforge.curate.prepare import Batch, Prepared, Preparer
from mathforge.curate.rft import select_paths

Rows = list[dict[str, Any]]
Rejects = list[tuple[dict[str, Any], str]]
RFT_BUCKET = 50_000  # records per RFT partition (all samples of a problem land in one)
BATCH = 4_000  # records per pass-1 batch: its rows, tokens, signatures and lookups are the transient memory


@dataclass
class Funnel:
    """Records in, then per step the records dropped by reason kind and the records left."""

    records_in: int
    steps: list[tuple[str, Counter, int]] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)

    def add(self, step: str, dropped: Rejects | Counter, left: int, seconds: float = 0.0) -> None:
        kinds = dropped if isinstance(dropped, Counter) else _kinds(dropped)
        self.steps.append((step, kinds, left))
        self.seconds[step] = round(seconds, 3)

    @property
    def records_out(self) -> int:
        return self.steps[-1][2] if self.steps else self.records_in

    def dropped(self) -> dict[str, int]:
        out: Counter = Counter()
        for _, kinds, _ in self.steps:
            out.update(kinds)
        return dict(out)

    def to_dict(self) -> dict[str, Any]:
        return {
            "records_in": self.records_in,
            "steps": [{"step": s, "dropped": dict(k), "left": left, "seconds": self.seconds.get(s)}
                      for s, k, left in self.steps],
            "records_out": self.records_out,
        }


def _kinds(rejected: Rejects) -> Counter:
    return Counter(reason.split(":", 1)[0] for _, reason in rejected)


class _Spool:
    """Record batches pickled to a scratch file and read back in order (exact Python values, no schema to infer)."""

    def __init__(self, path: Path):
        self.path, self.rows = path, 0
        self._fh = open(path, "wb")

    def write(self, rows: Rows) -> None:
        if rows:
            pickle.dump(rows, self._fh, protocol=pickle.HIGHEST_PROTOCOL)
            self.rows += len(rows)

    def batches(self) -> Iterator[Rows]:
        self._fh.close()
        with open(self.path, "rb") as fh:
            while True:
                try:
                    yield pickle.load(fh)
                except EOFError:
                    return


@dataclass
class _Timer:
    seconds: Counter = field(default_factory=Counter)
    _t: float = field(default_factory=time.perf_counter)

    def lap(self, step: str) -> None:
        now = time.perf_counter()
        self.seconds[step] += now - self._t
        self._t = now

    def restart(self) -> None:
        """Start the next lap now (the time since the last one was spent elsewhere, and counted there)."""
        self._t = time.perf_counter()


def _digests(texts: Iterable[str | None]) -> bytes:
    """16-byte digests of the normalised texts (what an exact duplicate shares), concatenated."""
    return digests([normalize(t) for t in texts]).tobytes()


def _hit_text(hit: Hit) -> str:
    return json.dumps([hit.benchmark, hit.item_id, hit.field, hit.ngram], ensure_ascii=False)


class _Curation:
    """The state one curation carries between its passes: compact keys per record and per problem, in arrays.

    Per input record: its id's digest and source (KeyIndex, ~26 B). Per problem: its id's digest and code (~24 B),
    whether it was checked against the benchmarks and which hit it has (5 B). Per survivor of pass 1: its id (its
    bytes + 4), problem code (4 B) and text digest (16 B). Per surviving problem: its id, code and question digest
    (~24 B plus the id). Reasons and hits are kept only for the records they drop.
    """

    def __init__(self, cfg: Any, index: BenchmarkIndex | None, work: Path,
                 find_candidates: Callable[..., dict[int, set[int]]] | None = None):
        self.cfg, self.index, self.work = cfg, index, work
        self.find_candidates = find_candidates  # the executor's LSH candidate search (None: in this process)
        self.timer = _Timer()
        self.dropped: dict[str, Counter] = defaultdict(Counter)
        self.records_in = 0
        self.sample_ids = KeyIndex()  # every input record's id: the pool's duplicate-id check
        self.first_source = array("H")  # per sample id code: the source it was first pooled from
        self.problems = KeyIndex()  # problem id -> integer code (order of first appearance after the filters)
        self.teachers_in: Counter = Counter()
        self.correct_in: Counter = Counter()
        # decontamination, per problem code
        self.checked = bytearray()
        self.hit_of = array("i")  # index into hits, -1: none
        self.hits = Strings()
        self.per_bench: dict[str, Counter] = defaultdict(Counter)
        self.decontam_dropped = 0
        # survivors of pass 1, in order: one entry each
        self.ids = Strings()
        self.code_of = array("i")
        self.text_digest = bytearray()
        # surviving problems, in order of first survivor
        self.problem_index = array("i")  # per problem code: index among the surviving problems, -1: none
        self.problem_pids = Strings()
        self.problem_code = array("i")
        self.question_digest = bytearray()
        dcfg = cfg.dedup
        self.sol_sigs = SignatureStore(work / "solutions.sig", dcfg.num_perm) if dcfg.solution_threshold is not None else None
        self.prob_sigs = SignatureStore(work / "problems.sig", dcfg.num_perm) if dcfg.problem_threshold is not None else None
        self.spool = _Spool(work / "survivors.pkl")
        self.source_names: list[str] = []

    def problem_codes(self, rows: Rows) -> np.ndarray:
        """Codes of the rows' problems, numbering new problems in order."""
        codes, new = self.problems.add([str(r["problem_id"]) for r in rows])
        if new.any():
            grow = len(self.problems) - len(self.checked)
            self.checked.extend(bytes(grow))
            self.hit_of.extend([-1] * grow)
            self.problem_index.extend([-1] * grow)
        return codes

    # -- pass 1 ------------------------------------------------------------------------------------------------------
    # A batch is taken in (duplicate ids across the pool: driver state), prepared (filters, benchmark lookups,
    # signatures: pure, wherever the executor runs it), then absorbed in the order taken (problem codes, one check
    # per problem, the spool). With batches prepared ahead, a problem may be checked by two batches in flight: the
    # driver keeps the first answer, so the outcome is the one of batches prepared one after the other.
    def take(self, source: int, name: str, rows: Rows) -> tuple[Rows, Rejects, Batch]:
        """The rows of a batch not pooled before (and the rejects of those that were), with what to prepare."""
        self.records_in += len(rows)
        codes, new = self.sample_ids.add([str(row["id"]) for row in rows])
        kept, dup = [], []
        for row, c, first in zip(rows, codes.tolist(), new.tolist()):
            if not first:
                owner = self.source_names[self.first_source[c]]
                dup.append((row, f"duplicate-id: sample {row['id']} of {name} is already pooled from {owner}"))
                continue
            self.first_source.append(source)
            kept.append(row)
        for r in kept:
            self.teachers_in[str(r.get("teacher"))] += 1
            if r.get("correct") is True:
                self.correct_in[str(r.get("teacher"))] += 1
        pids = list(dict.fromkeys(str(r["problem_id"]) for r in kept))
        known = self.problems.lookup(pids).tolist()
        check: set[str] = set()
        if self.cfg.decontam.enabled and self.index is not None:
            check = {p for p, c in zip(pids, known) if c < 0 or not self.checked[c]}
        sign: set[str] = set()
        if self.prob_sigs is not None:
            sign = {p for p, c in zip(pids, known) if c < 0 or self.problem_index[c] < 0}
        self.timer.lap("pool")
        return kept, dup, Batch(kept, check, sign)

    def absorb(self, rows: Rows, dup: Rejects, prep: Prepared, reject: Callable[[Rejects], None]) -> None:
        """Fold a prepared batch into the curation's state and spool its survivors."""
        self.timer.restart()
        self.timer.seconds.update(prep.seconds)
        self._drop("pool", dup, reject)
        self._drop("filters", [(rows[i], reason) for i, reason in prep.dropped], reject)
        rows = [rows[i] for i in prep.kept]
        codes = self.problem_codes(rows)
        sol_sigs = prep.solution_sigs
        if self.cfg.decontam.enabled and self.index is not None:
            keep = self._decontaminate(rows, codes, prep, reject)
            sel = np.asarray(keep, np.int64)
            rows, codes = [rows[i] for i in keep], codes[sel]
            sol_sigs = sol_sigs[sel] if sol_sigs is not None else None
            self.timer.lap("decontam")
        self._register(rows, codes, sol_sigs, prep.question_sigs)
        self.spool.write(rows)
        self.timer.lap("dedup solutions")

    def _drop(self, step: str, rejected: Rejects, reject: Callable[[Rejects], None]) -> None:
        self.dropped[step].update(_kinds(rejected))
        if rejected:
            reject(rejected)

    def _hit(self, code: int) -> Hit | None:
        h = self.hit_of[code]
        return None if h < 0 else Hit(*json.loads(self.hits[h]))

    def _decontaminate(self, rows: Rows, codes: np.ndarray, prep: Prepared,
                       reject: Callable[[Rejects], None]) -> list[int]:
        """Indices of the rows kept; a row whose problem or own solution overlaps a benchmark is rejected."""
        found: list[str] = []
        for r, c in zip(rows, codes.tolist()):
            if self.checked[c]:
                continue
            self.checked[c] = 1  # by its first row's question, as the question hits were computed
            hit = prep.question_hits[r.get("question") or ""]
            if hit is not None:
                self.hit_of[c] = len(self.hits) + len(found)
                found.append(_hit_text(hit))
                self.per_bench[hit.benchmark]["problems"] += 1
        self.hits.extend(found)
        solution_hits = prep.solution_hits if prep.solution_hits is not None else [None] * len(rows)
        kept, rejected = [], []
        for i, (r, c, sol_hit) in enumerate(zip(rows, codes.tolist(), solution_hits)):
            hit, side = self._hit(c), "problem"
            if hit is None:
                hit, side = sol_hit, "solution"
            if hit is None:
                kept.append(i)
                continue
            rejected.append((r, hit.reason(side)))
            self.per_bench[hit.benchmark][f"{side}_samples"] += 1
        self.decontam_dropped += len(rejected)
        self._drop("decontam", rejected, reject)
        return kept

    def _register(self, rows: Rows, codes: np.ndarray, sol_sigs: np.ndarray | None,
                  question_sigs: dict[str, np.ndarray]) -> None:
        """Keep the compact keys of the survivors: ids, problem codes, digests, signatures (on disk)."""
        self.ids.extend([str(r["id"]) for r in rows])
        self.code_of.extend(codes.tolist())
        self.text_digest += _digests(r.get("text") for r in rows)
        new_questions: list[str] = []
        new_pids: list[str] = []
        for r, c in zip(rows, codes.tolist()):
            if self.problem_index[c] < 0:
                self.problem_index[c] = len(self.problem_code)
                self.problem_code.append(c)
                new_pids.append(str(r["problem_id"]))
                new_questions.append(r.get("question") or "")
        self.problem_pids.extend(new_pids)
        self.question_digest += _digests(new_questions)
        if self.prob_sigs is not None and new_questions:
            self.prob_sigs.append(np.stack([question_sigs[q] for q in new_questions]))
        if self.sol_sigs is not None and rows:
            self.sol_sigs.append(sol_sigs)

    # -- global dedup ------------------------------------------------------------------------------------------------
    def dedup_problems(self) -> tuple[dict[int, str], dict[str, Any]]:
        """Reasons per problem code for the problems that duplicate an earlier one, and the step's stats."""
        dcfg, pids = self.cfg.dedup, self.problem_pids
        n = len(self.problem_code)
        exact = np.full(n, -1, np.int64)
        if dcfg.exact and n:
            first = first_occurrence(np.frombuffer(bytes(self.question_digest), np.uint64).reshape(-1, 2))
            exact = np.where(first != np.arange(n), first, -1)
        why: dict[int, str] = {int(i): f"duplicate-problem: same question as problem {pids[int(exact[i])]}"
                               for i in np.flatnonzero(exact >= 0)}
        near = np.full(n, -1, np.int64)
        if self.prob_sigs is not None and n:
            near, jaccard = near_duplicate_links(self.prob_sigs, dcfg.problem_threshold, skip=exact >= 0,
                                                 find_candidates=self.find_candidates)
            roots = cluster_roots(near)
            for i in np.flatnonzero(near >= 0).tolist():
                why[i] = (f"near-duplicate-problem: of problem {pids[int(near[i])]} (estimated Jaccard "
                          f"{jaccard[i]:.2f}" + _kept_note(pids[int(roots[i])], pids[int(near[i])]) + ")")
        stats = {"problems": n, "exact": cluster_stats(exact), "near": cluster_stats(near)}
        return {self.problem_code[pi]: reason for pi, reason in why.items()}, stats

    def dedup_solutions(self, bad_problems: dict[int, str]) -> tuple[dict[int, str], dict[str, Any]]:
        """Reasons per survivor position for solutions repeating an earlier solution of the same problem."""
        dcfg, ids = self.cfg.dedup, self.ids
        codes = np.frombuffer(self.code_of, np.int32).astype(np.int64) if len(self.code_of) else np.empty(0, np.int64)
        out_problem = np.isin(codes, np.fromiter(bad_problems, np.int64, len(bad_problems)))
        why: dict[int, str] = {}
        exact = np.full(len(codes), -1, np.int64)
        if dcfg.exact and len(codes):
            pos = np.flatnonzero(~out_problem)
            digest = np.frombuffer(bytes(self.text_digest), np.uint64).reshape(-1, 2)[pos]
            first = pos[first_occurrence(np.column_stack([codes[pos].astype(np.uint64), digest]))]
            exact[pos] = np.where(first != pos, first, -1)
            for i in np.flatnonzero(exact >= 0).tolist():
                why[i] = f"duplicate-solution: same text as sample {ids[int(exact[i])]}"
        near = np.full(len(codes), -1, np.int64)
        if self.sol_sigs is not None and len(codes):
            near, jaccard = near_duplicate_links(self.sol_sigs, dcfg.solution_threshold, codes,
                                                 skip=out_problem | (exact >= 0),
                                                 find_candidates=self.find_candidates)
            roots = cluster_roots(near)
            for i in np.flatnonzero(near >= 0).tolist():
                why[i] = (f"near-duplicate-solution: of sample {ids[int(near[i])]} (estimated Jaccard "
                          f"{jaccard[i]:.2f}" + _kept_note(ids[int(roots[i])], ids[int(near[i])]) + ")")
        stats = {"solutions": int((~out_problem).sum()), "exact": cluster_stats(exact), "near": cluster_stats(near)}
        return why, stats

    def close(self) -> None:
        for store in (self.sol_sigs, self.prob_sigs):
            if store is not None:
                store.close()


def _kept_note(root: str, direct: str) -> str:
    return "" if root == direct else f"; its cluster keeps {root}"


def curate_stream(
    sources: list[tuple[str, Iterable[Rows]]],
    cfg: Any,
    *,
    index: BenchmarkIndex | None,
    emit: Callable[[Rows], None],
    reject: Callable[[Rejects], None],
    work_dir: str | Path | None = None,
    find_candidates: Callable[..., dict[int, set[int]]] | None = None,
    imap: Callable[[Callable[[Batch], Prepared], Iterable[Batch]], Iterator[Prepared]] | None = None,
) -> tuple[Funnel, dict[str, Any]]:
    """Curate record batches from named sources (this run's first); kept records go to ``emit`` and dropped ones,
    with their reasons, to ``reject``, batch by batch. Returns the funnel and the report. ``find_candidates``:
    the executor's near-duplicate candidate search (see ``curate.dedup.near_duplicate_links``); ``imap``: the
    executor's ordered map that runs the per-batch step (filters, benchmark lookups, signatures) on its workers."""
    work = Path(tempfile.mkdtemp(prefix=".curate-", suffix=".tmp", dir=work_dir))  # a kill's leftover is cleaned
    state = _Curation(cfg, index, work, find_candidates)
    state.source_names = [name for name, _ in sources]
    taken: deque[tuple[Rows, Rejects]] = deque()  # batches handed to ``imap`` and not absorbed yet

    def batches() -> Iterator[Batch]:
        for s, (name, source) in enumerate(sources):
            for rows in source:
                rows, dup, batch = state.take(s, name, rows)
                taken.append((rows, dup))
                yield batch

    try:
        for prep in (imap or map)(Preparer(cfg, index), batches()):
            state.absorb(*taken.popleft(), prep, reject)
        return _finish(state, cfg, emit, reject)
    finally:
        state.close()
        shutil.rmtree(work, ignore_errors=True)


def _finish(state: _Curation, cfg: Any, emit: Callable[[Rows], None],
            reject: Callable[[Rejects], None]) -> tuple[Funnel, dict[str, Any]]:
    report: dict[str, Any] = {}
    funnel = Funnel(state.records_in)
    timer = state.timer
    left = state.records_in - sum(state.dropped["pool"].values())
    funnel.add("pool", state.dropped["pool"], left, timer.seconds["pool"])
    left -= sum(state.dropped["filters"].values())
    funnel.add("filters", state.dropped["filters"], left, timer.seconds["filters"])
    if cfg.decontam.enabled and state.index is not None:
        left -= state.decontam_dropped
        funnel.add("decontam", state.dropped["decontam"], left, timer.seconds["decontam"])
        report["decontam"] = {
            "ngram": state.index.n,
            "benchmarks": dict(state.index.sizes),
            "hits": {b: dict(c) for b, c in sorted(state.per_bench.items())},
            "problems_checked": len(state.checked),
            "samples_dropped": state.decontam_dropped,
        }
    bad_problems, report["dedup_problems"] = state.dedup_problems()
    timer.lap("dedup problems")
    why_solution, report["dedup_solutions"] = state.dedup_solutions(bad_problems)
    timer.lap("dedup solutions")

    # pass 2: reject duplicates, partition the rest by problem for RFT
    buckets = max(1, -(-(state.spool.rows - len(why_solution)) // RFT_BUCKET)) if cfg.rft.enabled else 0
    parts = [_Spool(state.work / f"rft-{b}.pkl") for b in range(buckets)] if buckets > 1 else []
    single: Rows = []
    dropped_p: Counter = Counter()
    dropped_s: Counter = Counter()
    pos = 0
    out_teachers: Counter = Counter()
    out_problems = np.zeros(len(state.problems), bool)
    kept_total = 0

    def out(rows: Rows) -> None:
        nonlocal kept_total
        for r in rows:
            out_teachers[str(r.get("teacher"))] += 1
        if rows:
            out_problems[state.problems.lookup([str(r["problem_id"]) for r in rows])] = True
            emit(rows)
        kept_total += len(rows)

    for rows in state.spool.batches():
        rejected: Rejects = []
        passing: Rows = []
        passing_codes: list[int] = []
        for r in rows:
            c = state.code_of[pos]
            if c in bad_problems:
                rejected.append((r, bad_problems[c]))
                dropped_p[bad_problems[c].split(":", 1)[0]] += 1
            elif pos in why_solution:
                rejected.append((r, why_solution[pos]))
                dropped_s[why_solution[pos].split(":", 1)[0]] += 1
            else:
                passing.append(r)
                passing_codes.append(c)
            pos += 1
        if rejected:
            reject(rejected)
        if not cfg.rft.enabled:
            out(passing)
        elif parts:
            by_part: dict[int, Rows] = defaultdict(list)
            for r, c in zip(passing, passing_codes):
                by_part[c % buckets].append(r)
            for b, part in by_part.items():
                parts[b].write(part)
        else:
            single.extend(passing)
    timer.lap("dedup solutions")  # pass 2 is the dedup steps' rejecting and the RFT partitioning
    after_problems = left - sum(dropped_p.values())
    funnel.add("dedup problems", dropped_p, after_problems, timer.seconds["dedup problems"])
    after_solutions = after_problems - sum(dropped_s.values())
    funnel.add("dedup solutions", dropped_s, after_solutions, timer.seconds["dedup solutions"])
    dropped_r: Counter = Counter()
    if cfg.rft.enabled:
        for rows in ([single] if not parts else (_all(p) for p in parts)):
            kept, rejected = select_paths(rows, cfg.rft)
            dropped_r.update(_kinds(rejected))
            if rejected:
                reject(rejected)
            out(kept)
    timer.lap("rft")
    funnel.add("rft", dropped_r, kept_total, timer.seconds["rft"])
    report["teachers"] = {
        t: {"samples": n, "correct": state.correct_in[t], "kept": out_teachers[t],
            "yield": round(out_teachers[t] / n, 4) if n else None}
        for t, n in sorted(state.teachers_in.items())
    }
    report["problems_out"] = int(out_problems.sum())
    report["funnel"] = funnel.to_dict()
    return funnel, report


def _all(spool: _Spool) -> Rows:
    rows: Rows = []
    for batch in spool.batches():
        rows.extend(batch)
    return rows
