"""The curate stage: pool → filters → decontamination → dedup (problems, solutions) → RFT distinct paths.

Every step says what it dropped and why; the funnel (records in, dropped per reason, records out) is printed,
returned in the metrics and written with the rest of the report to ``<stage id>.json`` in the run directory.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from pydantic import Field
from rich.console import Console
from rich.table import Table

from mathforge.config import StrictModel
from mathforge.curate.decontam import BenchmarkIndex, DecontamConfig, build_index
from mathforge.curate.dedup import DedupConfig
from mathforge.curate.filters import FilterConfig
from mathforge.curate.pool import sample_batches
from mathforge.curate.rft import RFTConfig
from mathforge.curate.streaming import BATCH, Funnel, curate_stream
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
    """Curate sample rows (plus pooled tables) in memory; ``index`` overrides the benchmarks of ``cfg.decontam``.

    The same steps as the stage, which streams them (:func:`mathforge.curate.streaming.curate_stream`).
    """
    if cfg.decontam.enabled and index is None:
        index = build_index(cfg.decontam)
    kept: list[dict[str, Any]] = []
    rejected: Rejects = []
    funnel, report = curate_stream([("this run", [rows]), *((src, [r]) for src, r in pooled or [])], cfg,
                                   index=index, emit=kept.extend, reject=rejected.extend)
    return CurateResult(kept, rejected, funnel, {"pooled": [src for src, _ in pooled or []], **report})


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
        from mathforge.store.tables import RejectedWriter

        source = ctx.input("samples")
        index = build_index(cfg.decontam) if cfg.decontam.enabled else None  # before any record is read
        sources = [("this run", source.batches(BATCH)), *((str(p), sample_batches(p, BATCH)) for p in cfg.pool)]
        writer = ctx.output("samples")
        with RejectedWriter(ctx.run_dir, self.stage_id) as rejects:
            funnel, result = curate_stream(sources, cfg, index=index, emit=writer.write, reject=rejects.add,
                                           work_dir=ctx.run_dir, find_candidates=ctx.executor.band_candidates,
                                           imap=ctx.executor.imap)
        report = {"stage": self.stage_id, "input": source.path.name, "input_stage": source.producer,
                  "config": mask_config(cfg.model_dump(mode="json")), "pooled": [str(p) for p in cfg.pool], **result}
        ctx.output_file("report").write_text(json.dumps(report, indent=1), encoding="utf-8")
        print_funnel(funnel, console)
        return {
            "samples_in": funnel.records_in,
            "accepted": funnel.records_out,
            "rejected": sum(funnel.dropped().values()),
            "dropped": funnel.dropped(),
            "problems_out": result["problems_out"],
        }
