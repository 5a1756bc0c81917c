"""Stage wrappers for the load and verify libraries (their logic lives in mathforge.datasets and mathforge.verify)."""

from __future__ import annotations

import json
from collections import Counter
from typing import Any

from mathforge.datasets import get_loader
from mathforge.datasets.stage import LoadConfig, iter_load_stage
from mathforge.pipeline.stages import Stage
from mathforge.store.shards import ShardReader, fingerprint, map_shards
from mathforge.verify.stage import VerifyConfig, run_verify_stage


class LoadStage(Stage):
    name = "load"
    Config = LoadConfig
    writes = "problems"
    stage_id = "load"

    def run(self, ctx: Any, cfg: LoadConfig) -> dict[str, Any]:
        # The dataset's prompt default travels with each problem, so generate picks the right template per problem.
        prompt = get_loader(cfg.dataset, **cfg.loader_options()).prompt
        rejects: list[tuple[dict[str, Any], str]] = []
        writer = ctx.writer("problems" if self.stage_id == "load" else self.stage_id, "problems")
        count = 0
        for p in iter_load_stage(cfg, rejects):  # rows stream from the source to the shards, a row group at a time
            p.meta.setdefault("prompt", prompt)
            writer.write((p.to_row(),))
            count += 1
        ctx.commit_table("problems", writer)
        ctx.reject(self.stage_id, rejects)
        return {"problems": count, "rejected": len(rejects)}


class VerifyStage(Stage):
    name = "verify"
    Config = VerifyConfig
    writes = "samples"
    stage_id = "verify"

    def run(self, ctx: Any, cfg: VerifyConfig) -> dict[str, Any]:
        source = ctx.reader("samples")
        choices = _problem_choices(ctx) if ctx.has("problems") else {}

        def verify(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
            if choices:  # multiple-choice options live on the problem; the verifier needs them per sample
                rows = [r if r.get("choices") or r["problem_id"] not in choices
                        else {**r, "choices": choices[r["problem_id"]]} for r in rows]
            return run_verify_stage(rows, cfg)

        # Shard i of the input becomes shard i of the output; a killed verify resumes at its first unfinished shard.
        stamp = fingerprint(cfg.model_dump(mode="json"), str(source.path), source.identity())
        writer = ctx.writer("verified" if self.stage_id == "verify" else self.stage_id, "samples",
                            fingerprint=stamp, resume=True)
        shards = map_shards(source, writer, verify)
        out = ctx.commit_table("samples", writer)
        methods: Counter = Counter()
        correct = wrong = total = 0
        for batch in ShardReader(out).record_batches(columns=["correct", "method"]):
            total += batch.num_rows
            for c, m in zip(batch.column("correct").to_pylist(), batch.column("method").to_pylist()):
                correct += c is True
                wrong += c is False
                methods[m or "none"] += 1
        return {
            "samples": total,
            "correct": correct,
            "incorrect": wrong,
            "undecided": total - correct - wrong,
            "methods": dict(methods),
            **shards,
        }


def _problem_choices(ctx: Any) -> dict[str, str]:
    """Option texts of the multiple-choice problems only (a few columns read a batch at a time)."""
    out: dict[str, str] = {}
    for batch in ctx.reader("problems").record_batches(columns=["id", "meta"]):
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
