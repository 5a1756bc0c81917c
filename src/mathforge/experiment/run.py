"""Does training on the base model's own verified samples make it better? Arms from one base, one budget, one test.

Arms, each a LoRA on the same base with the same steps, batch and number of training rows, scored greedily on the
same held-out problems (and an out-of-domain benchmark):

- ``base``: no training.
- ``rft``: k samples per training problem from the base → verify → curate (filters, dedup, RFT distinct reasoning
  paths with every arithmetic step checked). Its row count N sets every arm's.
- ``control``: the same samples without the verifier: curate with ``only_correct`` off and no step check or RFT
  selection (format filters stay: truncated, no answer, repetition), then N drawn at random. What a pipeline without a
  verifier would train on.
- ``reference``: N of the generator's own reference solutions (the ``reference_sft`` rows).

Everything goes through mathforge's stages: generation and eval through the ledger (a rerun sends nothing), training
through the train stage's resumable checkpoints (a finished arm is skipped), the report through ``build_report``.
Layout of the run directory: ``problems.parquet``, ``verified.parquet`` (the samples with verdicts), ``rejected.parquet``,
``<arm>/{export,train}``, ``eval/``, ``experiment.json`` (the funnel and every arm's data and training numbers),
``report/``.
"""

from __future__ import annotations

import json
import random
import re
import time
from pathlib import Path
from typing import Any

from mathforge.backends.local import LocalConfig
from mathforge.curate.decontam import DecontamConfig
from mathforge.curate.filters import FilterConfig
from mathforge.curate.rft import RFTConfig
from mathforge.curate.stage import CurateConfig, curate
from mathforge.datasets import load
from mathforge.evaluate.config import EvalConfig
from mathforge.evaluate.runner import run_eval
from mathforge.experiment.config import TRAIN_DEFAULTS, ExperimentConfig
from mathforge.export import ExportConfig, export
from mathforge.generate import GenerateConfig, collect_samples, plan_requests, run_generation
from mathforge.pipeline.context import RunContext
from mathforge.pipeline.progress import console
from mathforge.prompts import get_prompt
from mathforge.records import Problem
from mathforge.summary import build_summary, write_summary
from mathforge.train.config import TrainConfig
from mathforge.train.reference import ReferenceSFTConfig, reference_samples
from mathforge.verify.stage import VerifyConfig, run_verify_stage

BASE = "base"
PROMPT = "cot"  # the prompt of sampling and eval; the exports train in its context (its system message)


def run_experiment(cfg: ExperimentConfig) -> dict[str, Any]:
    """Run (or resume) every arm; returns what ``experiment.json`` holds, with the eval results under ``eval``."""
    run_dir = Path(cfg.run_dir)
    # float32 weights and static batches: how bench/results/science.md was measured; the quantisation is part of the
    # ledger identity, so another setting would be another model (and would not rerun from that ledger)
    teacher = LocalConfig(model=cfg.model, batch_size=cfg.batch_size, threads=cfg.threads, quantize="none",
                          batching="static")
    steps = set(cfg.steps)
    # Arms may train side by side in separate processes; only the one that samples is the run directory's writer.
    ctx = RunContext(run_dir, teachers={BASE: teacher}, seed=cfg.seed, shared="sample" not in steps)
    t0 = time.perf_counter()
    doc: dict[str, Any] = {"config": cfg.model_dump(mode="json")}
    try:
        if steps & {"sample", "train"}:
            # Only a run that samples writes the shared tables: arms trained side by side must not race on them.
            writer = ctx if "sample" in steps else None
            problems = _problems(cfg)
            samples, doc["generation"] = _sample(ctx, cfg, problems, writer)
            data, doc["funnel"] = arm_data(cfg, problems, samples, writer)
        if "train" in steps:
            doc["arms"] = {arm: _train_arm(cfg, run_dir / arm, data[arm]) for arm in cfg.arms}
        if "eval" in steps:
            doc["eval"] = _evaluate(ctx, cfg, run_dir)
        doc["seconds"] = round(time.perf_counter() - t0, 1)
        full = steps == {"sample", "train", "eval"}
        if full:
            _write_json(run_dir / "experiment.json", {k: v for k, v in doc.items() if k != "eval"})
            _write_summary(ctx, doc, time.perf_counter() - t0)
    finally:
        ctx.close()
    if cfg.report and full and cfg.eval_base:
        from mathforge.report.build import build_report

        build_report([run_dir], run_dir / "report", title="mathforge self-improvement experiment",
                     contrasts=contrasts(cfg.arms))
    return doc


def _write_summary(ctx: RunContext, doc: dict[str, Any], wall: float) -> None:
    """The run summary in the stages' own terms, so the report's funnel reads samples → verified → distinct
    (curated) → trained on (exported, per arm)."""
    funnel = doc["funnel"]
    ctx.metrics.update({
        "load": {"problems": funnel["problems"]},
        "generate": {**doc["generation"], "samples": funnel["samples"]},
        "verify": {"samples": funnel["samples"], "correct": funnel["verified"]},
        "curate": {"accepted": funnel["distinct"], "problems_out": funnel["problems_solved"]},
        "export": {"accepted": funnel["rows_per_arm"]},
    })
    write_summary(ctx.run_dir, build_summary(ctx, wall=wall))


def contrasts(arms: list[str]) -> list[tuple[str, str]]:
    """The paired comparisons the experiment reports besides each arm vs base: RFT vs each other trained arm."""
    return [("rft", other) for other in arms if other != "rft"] if "rft" in arms else []


def _problems(cfg: ExperimentConfig) -> list[Problem]:
    spec = cfg.train_set
    problems = list(load(spec.name, spec.path, split=spec.split, limit=spec.limit))
    for p in problems:
        p.meta.setdefault("prompt", PROMPT)
    return problems


def _sample(ctx: RunContext, cfg: ExperimentConfig, problems: list[Problem],
            writer: RunContext | None) -> tuple[list[dict], dict[str, Any]]:
    """k samples per training problem from the base (through the ledger), verified; tables written by ``writer``."""
    gen_cfg = GenerateConfig(teachers=[BASE], k=cfg.k, prompt=PROMPT, temperature=cfg.temperature, top_p=cfg.top_p,
                             max_tokens=cfg.max_tokens)
    planned = plan_requests(ctx, problems, gen_cfg)
    gen = run_generation(ctx, planned)
    rows, missing = collect_samples(ctx.ledger, planned)
    if missing:
        raise RuntimeError(f"{missing} of {len(planned)} samples have no answer in the ledger; rerun to send them")
    rows = run_verify_stage(rows, VerifyConfig())
    if writer is not None:
        writer.write_problems("problems", problems)
        writer.write_samples("verified", rows)
    return rows, {k: gen.get(k) for k in ("requests", "sent", "cached", "new_tokens_out", "gen_seconds", "tokens_per_s")}


_FIRST_ANSWER = re.compile(r"(?im)(?:\bthe answer is\b[^\n]*|^[ \t]*####[^\n]*)")


def cut_after_answer(rows: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], int]:
    """Each sample cut after the first line that states a final answer ("The answer is N", "#### N"), as a stop
    sequence would have ended it, and verified again; and how many were cut.

    A small model often answers and then repeats itself until the token limit; without the cut such a sample counts
    as truncated and is dropped, and with it trained on, the student would learn the repetition.
    """
    out, cut = [], 0
    for r in rows:
        m = _FIRST_ANSWER.search(r.get("text") or "")
        if m is None or not (r["text"][m.end():]).strip():
            out.append(r)
            continue
        cut += 1
        out.append({**r, "text": r["text"][: m.end()].rstrip(), "finish_reason": "stop"})
    return run_verify_stage(out, VerifyConfig()) if cut else out, cut


def arm_data(cfg: ExperimentConfig, problems: list[Problem], samples: list[dict[str, Any]],
             ctx: RunContext | None = None) -> tuple[dict[str, list[dict[str, Any]]], dict[str, Any]]:
    """Each arm's training samples (all of the same count N) and the funnel of how they were chosen."""
    samples, cut = cut_after_answer(samples)
    no_decontam = DecontamConfig(enabled=False)  # the test set is disjoint by construction (see synth/family.py)
    rft = curate(samples, CurateConfig(decontam=no_decontam, rft=RFTConfig(enabled=True)))
    unverified = curate(samples, CurateConfig(decontam=no_decontam, filters=FilterConfig(only_correct=False),
                                              rft=RFTConfig(enabled=False)))
    if ctx is not None:
        ctx.reject("curate-rft", rft.rejected)
    n = min(cfg.rows or len(rft.kept), len(rft.kept))
    if n == 0:
        raise RuntimeError("RFT kept no sample: the base solved none of the training problems; use more problems, "
                           "a larger k or a larger max_tokens")
    rng = random.Random(cfg.seed)
    refs, _ = reference_samples(problems, ReferenceSFTConfig())
    data = {
        "rft": _subset(rft.kept, n, rng),
        "control": _subset(unverified.kept, n, rng),
        "reference": _subset(refs, n, rng),
    }
    correct = sum(1 for s in samples if s.get("correct") is True)
    funnel = {
        "problems": len(problems),
        "samples": len(samples),
        "cut_after_answer": cut,
        "verified": correct,
        "problems_solved": len({s["problem_id"] for s in samples if s.get("correct") is True}),
        "distinct": len(rft.kept),
        "rft_funnel": rft.funnel.to_dict(),
        "unverified_pool": len(unverified.kept),
        "unverified_funnel": unverified.funnel.to_dict(),
        "rows_per_arm": n,
        "control_correct": sum(1 for s in data["control"] if s.get("correct") is True),
    }
    return data, funnel


def _subset(rows: list[dict[str, Any]], n: int, rng: random.Random) -> list[dict[str, Any]]:
    """``n`` rows in their original order (all of them when there are fewer), drawn with the experiment's seed."""
    if len(rows) <= n:
        return list(rows)
    keep = sorted(rng.sample(range(len(rows)), n))
    return [rows[i] for i in keep]


def _train_arm(cfg: ExperimentConfig, arm_dir: Path, rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Export the arm's rows (chat, in the eval prompt's context) and train its LoRA; resumes or skips when done."""
    from mathforge.train.sft import train

    export_cfg = ExportConfig(formats=["jsonl"], styles=["chat"], system_prompt=get_prompt(PROMPT).system,
                              only_correct=False, validation_fraction=0.0, card=False)
    counts = export(rows, arm_dir / "export", export_cfg, seed=cfg.seed)
    train_cfg = TrainConfig(**{"model": cfg.model, **TRAIN_DEFAULTS, **cfg.train,
                               "data": str(arm_dir / "export"), "output_dir": str(arm_dir / "train")})
    console.log(f"[bold cyan]train {arm_dir.name}[/] on {counts['train']['rows']} rows …")
    metrics = train(train_cfg, seed=cfg.seed)
    keep = ("global_step", "first_loss", "last_loss", "train_loss", "tokens_seen", "train_seconds",
            "tokens_per_second", "peak_rss_gb", "cached", "masking")
    return {"rows": counts["train"]["rows"], "problems": counts["train"]["problems"],
            "correct_rows": sum(1 for r in rows if r.get("correct") is True),
            "adapter": str(arm_dir / "train" / "adapter"), **{k: metrics.get(k) for k in keep}}


def _evaluate(ctx: RunContext, cfg: ExperimentConfig, run_dir: Path) -> dict[str, Any]:
    """Base and every arm, greedy, on the test set and the out-of-domain benchmark, in one eval (paired deltas).

    With ``eval_base`` off only the arms are scored (into ``parts/eval-<arms>/``); their answers land in the same ledger,
    so the full eval later answers them from there.
    """
    benchmarks = [cfg.test] + ([cfg.ood] if cfg.ood else [])
    adapters = {arm: str(run_dir / arm / "train" / "adapter") for arm in cfg.arms}
    missing = [a for a, path in adapters.items() if not Path(path).is_dir()]
    if missing:
        raise RuntimeError(f"no trained adapter for {', '.join(missing)} in {run_dir}: run the train step first")
    common = dict(benchmarks=benchmarks, max_tokens=cfg.max_tokens, prompt=PROMPT, seed=cfg.seed)
    # Greedy answers are the same under either batching and batching is not in the ledger key, so the eval may
    # use continuous batching while sampling keeps the static batches its seeds are derived from.
    ctx.teachers[BASE] = ctx.teachers[BASE].model_copy(update={"batching": cfg.eval_batching})
    ctx.forget_backend(BASE)
    if cfg.eval_base:
        eval_cfg, out = EvalConfig(models=[BASE], adapters=adapters, **common), run_dir / "eval"
    else:  # the same backend configs as the full eval's adapters, so the same ledger keys
        if not adapters:
            raise RuntimeError("nothing to evaluate: eval_base is off and no arms are named")
        models = {arm: ctx.teachers[BASE].model_copy(update={"adapter": path}).model_dump(mode="json")
                  for arm, path in adapters.items()}
        # parts/ is below the report's reach: the full eval holds every model once
        eval_cfg, out = EvalConfig(models=models, **common), run_dir / "parts" / f"eval-{'-'.join(adapters)}"
    return run_eval(ctx, eval_cfg, out)


def _write_json(path: Path, data: Any) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data, indent=1, default=str), encoding="utf-8")
    tmp.replace(path)
