"""Stage wrappers for the load and verify libraries (their logic lives in mathforge.datasets and mathforge.verify)."""

from __future__ import annotations

import json
from collections import Counter
from typing import Any

from mathforge.datasets import get_loader
from mathforge.datasets.stage import LoadConfig, iter_load_stage
from mathforge.pipeline.context import RunContext
from mathforge.pipeline.stages import Port, Stage
from mathforge.store.shards import fingerprint, shards_of
from mathforge.verify.stage import VerifyConfig, run_verify_stage


class LoadStage(Stage):
    name = "load"
    Config = LoadConfig
    outputs = {"problems": Port("problems")}
    canonical_files = {"problems": "problems.parquet"}
    stage_id = "load"

    def run(self, ctx: RunContext, cfg: LoadConfig) -> dict[str, Any]:
        # The dataset's prompt default travels with each problem, so generate picks the right template per problem.
        prompt = get_loader(cfg.dataset, **cfg.loader_options()).prompt
        rejects: list[tuple[dict[str, Any], str]] = []
        writer = ctx.output("problems")
        count = 0
        # Locally rows stream from the source to the shards a batch at a time; on a cluster the pieces of local
        # Parquet, JSONL and CSV sources (row groups, byte ranges) are read and parsed by the workers, a piece each,
        # and come back in order.
        imap = ctx.executor.imap if ctx.executor.kind != "local" else None
        for p in iter_load_stage(cfg, rejects, imap):
            p.meta.setdefault("prompt", prompt)
            writer.write((p.to_row(),))
            count += 1
        ctx.reject(self.stage_id, rejects)
        return {"problems": count, "rejected": len(rejects)}


class VerifyStage(Stage):
    name = "verify"
    Config = VerifyConfig
    inputs = {"samples": Port("samples"), "problems": Port("problems", optional=True)}
    outputs = {"samples": Port("samples")}
    canonical_files = {"samples": "verified.parquet"}
    stage_id = "verify"

    def run(self, ctx: RunContext, cfg: VerifyConfig) -> dict[str, Any]:
        source = shards_of(ctx.input("samples"))
        choices = _problem_choices(ctx) if ctx.has_input("problems") else {}
        methods: Counter = Counter()

        def tally(correct: list, method: list) -> None:
            methods.update(m or "none" for m in method)
            methods["\0correct"] += sum(c is True for c in correct)
            methods["\0wrong"] += sum(c is False for c in correct)

        def count(table: Any) -> None:  # on the driver, from what was written
            tally(table.column("correct").to_pylist(), table.column("method").to_pylist())

        # Shard i of the input becomes shard i of the output; a killed verify resumes at its first unfinished shard.
        stamp = fingerprint(cfg.model_dump(mode="json"), str(source.path), source.identity())
        writer = ctx.output("samples", fingerprint=stamp, resume=True)
        for i in writer.finished():  # kept from an earlier attempt: counted from what they hold
            for batch in writer.staged_batches(i, ["correct", "method"]):
                tally(batch.column("correct").to_pylist(), batch.column("method").to_pylist())
        # The function is pure (it may run on another machine under the Ray executor); the driver counts.
        shards = ctx.executor.map_shards(source, writer, _Verifier(cfg, choices), after=count)
        correct, wrong = methods.pop("\0correct", 0), methods.pop("\0wrong", 0)
        total = sum(methods.values())
        return {
            "samples": total,
            "correct": correct,
            "incorrect": wrong,
            "undecided": total - correct - wrong,
            "methods": dict(methods),
            **shards,
        }


class _Verifier:
    """Verify a batch of sample rows (a picklable callable: the Ray executor ships it to workers once)."""

    def __init__(self, cfg: VerifyConfig, choices: dict[str, str]):
        self.cfg, self.choices = cfg, choices

    def __call__(self, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        if self.choices:  # multiple-choice options live on the problem; the verifier needs them per sample
            rows = [r if r.get("choices") or r["problem_id"] not in self.choices
                    else {**r, "choices": self.choices[r["problem_id"]]} for r in rows]
        return run_verify_stage(rows, self.cfg)


def _problem_choices(ctx: RunContext) -> dict[str, str]:
    """Option texts of the multiple-choice problems only (a few columns read a batch at a time)."""
    out: dict[str, str] = {}
    for batch in shards_of(ctx.input("problems")).record_batches(columns=["id", "meta"]):
        for pid, meta in zip(batch.column("id").to_pylist(), batch.column("meta").to_pylist()):
            if meta and '"choices"' in meta:
                found = json.loads(meta).get("choices")
                if found:
                    out[pid] = _options_text(found)
    return out


def _options_text(choices: dict[str, str] | str) -> str:
    """Options in MathQA's own ``a ) 12 , b ) 16`` form: a flat string column that the verifier parses back."""
    if isinstance(choices, str):
        return choices
    return " , ".join(f"{k} ) {v}" for k, v in choices.items())
