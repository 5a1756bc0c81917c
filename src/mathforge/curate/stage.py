"""The curate stage: pool → filters → decontamination → dedup (problems, solutions) → RFT distinct paths.

Every step says what it dropped and why; the funnel (records in, dropped per reason, records out) is printed,
returned in the metrics and written with the rest of the report to ``<stage id>.json`` in the run directory.
"""

from __future__ import annotations

import json
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Any

from pydantic import Field
from rich.console import Console
from rich.table import Table

from mathforge.config import StrictModel
from mathforge.curate.decontam import BenchmarkIndex, DecontamConfig, build_index
from mathforge.curate.dedup import (
    DedupConfig,
    cluster_roots,
    cluster_stats,
    exact_duplicates,
    near_duplicates,
    signatures,
)
from mathforge.curate.filters import FilterConfig, apply_filters, build_filters
from mathforge.curate.ngrams import Tokens, tokenize
from mathforge.curate.pool import read_samples, union
from mathforge.curate.rft import RFTConfig, select_paths
from mathforge.masking import mask_config
from mathforge.pipeline.context import RunContext
from mathforge.pipeline.stages import Port, Stage

Rejects = list[tuple[dict[str, Any], str]]


class CurateConfig(StrictModel):
    pool: list[str] = Field(
        default_factory=list,
        description="other runs' samples (run directories, .parquet or .jsonl) unioned with this run's first",
    )
    filters: FilterConfig = Field(default_factory=FilterConfig, description="truncation, answer, length, repetition")
    decontam: DecontamConfig = Field(default_factory=DecontamConfig, description="benchmark n-gram overlap")
    dedup: DedupConfig = Field(default_factory=DedupConfig, description="exact and MinHash near-duplicates")
    rft: RFTConfig = Field(default_factory=RFTConfig, description="distinct reasoning paths per problem")


@dataclass
class Funnel:
    """Records in, then per step the records dropped by reason kind and the records left."""

    records_in: int
    steps: list[tuple[str, Counter, int]] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)
    _t: float = field(default_factory=time.perf_counter)

    def add(self, step: str, rejected: Rejects, left: int) -> None:
        """Record a step that just ended (its time is counted from the end of the previous one)."""
        self.steps.append((step, Counter(reason.split(":", 1)[0] for _, reason in rejected), left))
        now = time.perf_counter()
        self.seconds[step], self._t = round(now - self._t, 3), now

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


@dataclass
class CurateResult:
    kept: list[dict[str, Any]]
    rejected: Rejects
    funnel: Funnel
    report: dict[str, Any]


def curate(
    rows: list[dict[str, Any]],
    cfg: CurateConfig,
    *,
    pooled: list[tuple[str, list[dict[str, Any]]]] | None = None,
    index: BenchmarkIndex | None = None,
) -> CurateResult:
    """Curate sample rows (plus pooled tables); ``index`` overrides the benchmarks of ``cfg.decontam``."""
    rows, rejected = union([("this run", rows), *(pooled or [])])
    funnel = Funnel(len(rows) + len(rejected))
    report: dict[str, Any] = {"pooled": [src for src, _ in pooled or []]}
    funnel.add("pool", rejected, len(rows))
    teachers_in = Counter(str(r.get("teacher")) for r in rows)
    correct_in = Counter(str(r.get("teacher")) for r in rows if r.get("correct") is True)

    rows, dropped = apply_filters(rows, build_filters(cfg.filters))
    rejected += dropped
    funnel.add("filters", dropped, len(rows))

    tokens = tokenize([r.get("text") for r in rows])  # solutions are tokenised once, for decontam and dedup
    if cfg.decontam.enabled:
        index = index if index is not None else build_index(cfg.decontam)
        keep, dropped, report["decontam"] = _decontaminate(rows, tokens, index, cfg.decontam)
        rows, tokens = [rows[i] for i in keep], tokens.select(keep)
        rejected += dropped
        funnel.add("decontam", dropped, len(rows))

    keep, dropped, report["dedup_problems"] = _dedup_problems(rows, cfg.dedup)
    rows, tokens = [rows[i] for i in keep], tokens.select(keep)
    rejected += dropped
    funnel.add("dedup problems", dropped, len(rows))
    rows, dropped, report["dedup_solutions"] = _dedup_solutions(rows, tokens, cfg.dedup)
    rejected += dropped
    funnel.add("dedup solutions", dropped, len(rows))

    rows, dropped = select_paths(rows, cfg.rft)
    rejected += dropped
    funnel.add("rft", dropped, len(rows))

    out = Counter(str(r.get("teacher")) for r in rows)
    report["teachers"] = {
        t: {"samples": n, "correct": correct_in[t], "kept": out[t], "yield": round(out[t] / n, 4) if n else None}
        for t, n in sorted(teachers_in.items())
    }
    report["problems_out"] = len({r["problem_id"] for r in rows})
    report["funnel"] = funnel.to_dict()
    return CurateResult(rows, rejected, funnel, report)


def _decontaminate(rows: list[dict[str, Any]], tokens: Tokens, index: BenchmarkIndex, cfg: DecontamConfig):
    """Indices of the samples kept, and the rejects: samples whose problem or own solution overlaps a benchmark."""
    questions: dict[str, str] = {}
    for r in rows:
        questions.setdefault(str(r["problem_id"]), r.get("question") or "")
    pids = list(questions)
    problem_hits = dict(zip(pids, index.find([questions[p] for p in pids], whole=True)))
    solution_hits = index.find(tokens) if cfg.check_solutions else [None] * len(rows)
    kept, rejected = [], []
    per_bench: dict[str, Counter] = defaultdict(Counter)
    for i, (r, sol_hit) in enumerate(zip(rows, solution_hits)):
        hit, side = problem_hits[str(r["problem_id"])], "problem"
        if hit is None:
            hit, side = sol_hit, "solution"
        if hit is None:
            kept.append(i)
            continue
        rejected.append((r, hit.reason(side)))
        per_bench[hit.benchmark][f"{side}_samples"] += 1
    for pid, hit in problem_hits.items():
        if hit is not None:
            per_bench[hit.benchmark]["problems"] += 1
    report = {
        "ngram": index.n,
        "benchmarks": dict(index.sizes),
        "hits": {b: dict(c) for b, c in sorted(per_bench.items())},
        "problems_checked": len(pids),
        "samples_dropped": len(rejected),
    }
    return kept, rejected, report


def _dedup_problems(rows: list[dict[str, Any]], cfg: DedupConfig):
    """Indices kept, and rejects: every sample of a problem whose question duplicates an earlier problem's."""
    questions: dict[str, str] = {}
    for r in rows:
        questions.setdefault(str(r["problem_id"]), r.get("question") or "")
    pids = list(questions)
    texts = [questions[p] for p in pids]
    why: dict[str, str] = {}
    exact = exact_duplicates(texts) if cfg.exact else [None] * len(pids)
    for i, j in enumerate(exact):
        if j is not None:
            why[pids[i]] = f"duplicate-problem: same question as problem {pids[j]}"
    near: list = [None] * len(pids)
    if cfg.problem_threshold is not None and pids:
        sigs = signatures(texts, cfg.shingle, cfg.num_perm, cfg.seed)
        near = near_duplicates(sigs, cfg.problem_threshold, skip=[j is not None for j in exact], seed=cfg.seed)
        roots = cluster_roots([h and h[0] for h in near])
        for i, hit in enumerate(near):
            if hit is not None:
                why[pids[i]] = (f"near-duplicate-problem: of problem {pids[hit[0]]} (estimated Jaccard {hit[1]:.2f}"
                                + _kept_note(pids[roots[i]], pids[hit[0]]) + ")")
    kept = [i for i, r in enumerate(rows) if str(r["problem_id"]) not in why]
    rejected = [(r, why[str(r["problem_id"])]) for r in rows if str(r["problem_id"]) in why]
    stats = {"problems": len(pids), "exact": cluster_stats(exact), "near": cluster_stats([h and h[0] for h in near])}
    return kept, rejected, stats


def _dedup_solutions(rows: list[dict[str, Any]], tokens: Tokens, cfg: DedupConfig):
    """Drop solutions that repeat (exactly, or nearly) an earlier solution of the same problem."""
    texts = [r.get("text") for r in rows]
    groups = [str(r["problem_id"]) for r in rows]
    exact = exact_duplicates(texts, groups) if cfg.exact else [None] * len(rows)
    why: dict[int, str] = {i: f"duplicate-solution: same text as sample {rows[j]['id']}"
                           for i, j in enumerate(exact) if j is not None}
    near: list = [None] * len(rows)
    if cfg.solution_threshold is not None and rows:
        sigs = signatures(tokens, cfg.shingle, cfg.num_perm, cfg.seed)
        near = near_duplicates(sigs, cfg.solution_threshold, groups, skip=[j is not None for j in exact],
                               seed=cfg.seed)
        roots = cluster_roots([h and h[0] for h in near])
        for i, hit in enumerate(near):
            if hit is not None:
                why[i] = (f"near-duplicate-solution: of sample {rows[hit[0]]['id']} (estimated Jaccard {hit[1]:.2f}"
                          + _kept_note(rows[roots[i]]["id"], rows[hit[0]]["id"]) + ")")
    kept = [r for i, r in enumerate(rows) if i not in why]
    rejected = [(rows[i], why[i]) for i in sorted(why)]
    stats = {"solutions": len(rows), "exact": cluster_stats(exact), "near": cluster_stats([h and h[0] for h in near])}
    return kept, rejected, stats


def _kept_note(root: str, direct: str) -> str:
    return "" if root == direct else f"; its cluster keeps {root}"


def print_funnel(funnel: Funnel, console: Console) -> None:
    """The funnel as a table: each step's drops by reason, and what is left."""
    t = Table(title="curate funnel", show_header=True)
    t.add_column("step")
    t.add_column("dropped (reason)")
    t.add_column("dropped", justify="right")
    t.add_column("left", justify="right")
    t.add_column("s", justify="right")
    t.add_row("in", "", "", f"{funnel.records_in:,}", "")
    for step, kinds, left in funnel.steps:
        reasons = ", ".join(f"{k} {n:,}" for k, n in kinds.most_common()) or "-"
        t.add_row(step, reasons, f"{sum(kinds.values()):,}", f"{left:,}", f"{funnel.seconds.get(step, 0):.1f}")
    t.add_row("out", "", "", f"{funnel.records_out:,}", f"{sum(funnel.seconds.values()):.1f}", style="bold")
    console.print(t)


class CurateStage(Stage):
    name = "curate"
    Config = CurateConfig
    inputs = {"samples": Port("samples")}
    outputs = {"samples": Port("samples"), "report": Port("curate-report", file="{id}.json")}
    canonical_files = {"samples": "curated.parquet", "report": "curate.json"}
    stage_id = "curate"

    def run(self, ctx: RunContext, cfg: CurateConfig) -> dict[str, Any]:
        from mathforge.pipeline.progress import console

        source = ctx.input("samples")
        pooled = [(str(p), read_samples(p)) for p in cfg.pool]
        result = curate(source.to_pylist(), cfg, pooled=pooled)
        ctx.output("samples").write(result.kept)
        ctx.reject(self.stage_id, result.rejected)
        report = {"stage": self.stage_id, "input": source.path.name, "input_stage": source.producer,
                  "config": mask_config(cfg.model_dump(mode="json")), **result.report}
        ctx.output_file("report").write_text(json.dumps(report, indent=1), encoding="utf-8")
        print_funnel(result.funnel, console)
        return {
            "samples_in": result.funnel.records_in,
            "accepted": len(result.kept),
            "rejected": len(result.rejected),
            "dropped": result.funnel.dropped(),
            "problems_out": result.report["problems_out"],
        }
