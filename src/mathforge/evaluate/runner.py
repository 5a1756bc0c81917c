"""Run an eval: the generate path (same prompts, ledger, batching) for greedy and k samples, the verifier, the metrics.

Every answer is a ledger request keyed on what was sent, so an interrupted eval resumes where it stopped and
re-scoring (after a verifier fix) costs no generation. Outputs go to one folder of the run directory:
``samples.parquet`` (every answer with its verdict), ``problems.parquet`` (per-problem scores, for paired deltas),
``results.json`` and ``table.md``.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TYPE_CHECKING

from mathforge.datasets import get_loader, load
from mathforge.evaluate.compare import RESULTS_KIND, comparison_rows, markdown_table
from mathforge.evaluate.config import BenchmarkSpec, EvalConfig
from mathforge.evaluate.metrics import ProblemOutcome, breakdown, summarize
from mathforge.evaluate.models import base_model, resolve_models
from mathforge.errors import ConfigError
from mathforge.generate import GenerateConfig, Planned, collect_samples, plan_requests, run_generation
from mathforge.masking import mask_config
from mathforge.pipeline.progress import console
from mathforge.records import SAMPLE_SCHEMA, Problem
from mathforge.store import write_table
from mathforge.verify import majority_vote
from mathforge.verify.stage import run_verify_stage

if TYPE_CHECKING:
    from mathforge.pipeline.context import RunContext

GROUP_KEYS = {"level": "level", "subject": "type"}  # breakdown name -> Problem.meta key (MATH, MATH-500)


@dataclass
class Benchmark:
    spec: BenchmarkSpec
    problems: list[Problem]
    prompt: str


def load_benchmarks(cfg: EvalConfig) -> list[Benchmark]:
    """Read every benchmark's problems (path: explicit, else <data_dir>/<name>, else the hub)."""
    out = []
    for spec in cfg.benchmarks:
        path = spec.path or (str(Path(cfg.data_dir) / spec.name) if cfg.data_dir else None)
        problems = list(load(spec.name, path, split=spec.split, limit=spec.limit or cfg.limit))
        prompt = spec.prompt or cfg.prompt or get_loader(spec.name).prompt
        out.append(Benchmark(spec, problems, prompt))
    return out


def _generate_config(cfg: EvalConfig, models: list[str], prompt: str, mode: str) -> GenerateConfig:
    common = dict(teachers=models, prompt=prompt, system_prompt=cfg.system_prompt, max_tokens=cfg.max_tokens, seed=cfg.seed)
    if mode == "greedy":
        return GenerateConfig(k=1, temperature=0.0, top_p=1.0, **common)
    return GenerateConfig(k=cfg.k, temperature=cfg.temperature, top_p=cfg.top_p, **common)


def _rows(ctx: "RunContext", planned: list[Planned], bench: Benchmark, mode: str) -> tuple[list[dict[str, Any]], int]:
    """Sample rows of one (benchmark, mode) plan, with the columns scoring and the viewer need."""
    rows, missing = collect_samples(ctx.ledger, planned)
    by_id = {p.id: p for p in bench.problems}
    for r in rows:
        meta = by_id[r["problem_id"]].meta
        r["id"] += f"#{mode}"
        r.update(benchmark=bench.spec.name, mode=mode, choices=meta.get("choices"))
        r.update({g: (str(meta[k]) if meta.get(k) is not None else None) for g, k in GROUP_KEYS.items()})
    return rows, missing


def _vote_key(row: dict[str, Any]) -> str | None:
    """The answer a sample votes for: the option letter for multiple choice, else the extracted answer."""
    return row.get("normalized") if row.get("method") == "choice" else row.get("extracted")


def outcomes_for(problems: list[Problem], rows: list[dict[str, Any]], timeout: float) -> list[ProblemOutcome]:
    """Per problem: the greedy verdict, the k sampled verdicts, and whether the majority answer is correct."""
    out = {
        p.id: ProblemOutcome(p.id, groups={g: p.meta.get(k) for g, k in GROUP_KEYS.items()}) for p in problems
    }
    sampled: dict[str, list[dict[str, Any]]] = {}
    for r in rows:
        if r["mode"] == "greedy":
            out[r["problem_id"]].greedy = r["correct"] is True
        else:
            sampled.setdefault(r["problem_id"], []).append(r)
    for pid, group in sampled.items():
        group.sort(key=lambda r: r["sample_index"])
        o = out[pid]
        o.sampled = [r["correct"] is True for r in group]
        vote = majority_vote([_vote_key(r) for r in group], timeout=timeout)
        o.majority = bool(vote.classes) and group[vote.classes[0][2][0]]["correct"] is True
    return list(out.values())


def run_eval(ctx: "RunContext", cfg: EvalConfig, out_dir: str | Path) -> dict[str, Any]:
    """Generate, verify and score every (model, benchmark); write the outputs to ``out_dir``; return results."""
    out_dir = Path(out_dir)
    t0 = time.perf_counter()
    models = resolve_models(cfg, ctx.teachers, ctx.run_dir)
    for name, config in models.items():
        if name in ctx.teachers and ctx.teachers[name] != config:
            raise ConfigError(f"eval: model '{name}' clashes with a recipe teacher of that name but another config")
        ctx.teachers[name] = config
    names = list(models)
    base = base_model(cfg, names)
    benches = load_benchmarks(cfg)
    modes = (["greedy"] if cfg.greedy else []) + (["sampled"] if cfg.k > 1 else [])
    plans = {(b.spec.name, m): plan_requests(ctx, b.problems, _generate_config(cfg, names, b.prompt, m),
                                                allow_twins=True)
             for b in benches for m in modes}
    gen = run_generation(ctx, [p for plan in plans.values() for p in plan])
    rows, missing = _answers(ctx, benches, plans, names)
    rows = run_verify_stage(rows, cfg.verify)  # the verify stage's own code path
    results, per_problem = [], []
    for b in benches:
        for name in names:
            mine = [r for r in rows if r["teacher"] == name and r["benchmark"] == b.spec.name]
            outcomes = outcomes_for(b.problems, mine, cfg.verify.timeout)
            results.append(_result(name, b, mine, outcomes, missing[(name, b.spec.name)], cfg.seed or 0))
            per_problem += [_problem_row(name, b.spec.name, o) for o in outcomes]
    doc = {
        "kind": RESULTS_KIND,
        "run_dir": str(ctx.run_dir),
        "created": time.time(),
        "base": base,
        "models": mask_config({n: _model_info(ctx, n, c) for n, c in models.items()}),
        "config": mask_config(cfg.model_dump(mode="json")),
        "generation": gen,
        "results": results,
        "seconds": round(time.perf_counter() - t0, 3),
    }
    _write(out_dir, rows, per_problem, doc)
    return doc


def _answers(ctx: "RunContext", benches: list[Benchmark], plans: dict, names: list[str]) -> tuple[list[dict], dict]:
    """Every answered request as a sample row, and how many answers each (model, benchmark) lacks."""
    rows: list[dict[str, Any]] = []
    missing: dict[tuple[str, str], int] = {(n, b.spec.name): 0 for n in names for b in benches}
    by_name = {b.spec.name: b for b in benches}
    for (bench, mode), plan in plans.items():
        for name in names:
            r, miss = _rows(ctx, [p for p in plan if p.teacher == name], by_name[bench], mode)
            rows += r
            missing[(name, bench)] += miss
    return rows, missing


def _result(name: str, b: Benchmark, rows: list[dict], outcomes: list[ProblemOutcome], missing: int, seed: int) -> dict:
    result = {
        "model": name,
        "benchmark": b.spec.name,
        "split": b.spec.split,
        "prompt": b.prompt,
        "problems": len(b.problems),
        "missing": missing,
        "tokens_out": sum(r["tokens_out"] for r in rows),
        "mean_tokens_out": round(sum(r["tokens_out"] for r in rows) / len(rows), 1) if rows else None,
        "truncated": sum(r["finish_reason"] == "length" for r in rows),
        "metrics": summarize(outcomes, seed),
    }
    groups = {g: breakdown(outcomes, g, seed) for g in GROUP_KEYS}
    result["breakdown"] = {g: v for g, v in groups.items() if v}
    if missing:
        console.log(f"[yellow]eval {name}/{b.spec.name}: {missing} answers missing (failed requests count as wrong)")
    return result


def _problem_row(model: str, benchmark: str, o: ProblemOutcome) -> dict[str, Any]:
    return {
        "model": model,
        "benchmark": benchmark,
        "problem_id": o.problem_id,
        "level": None if o.groups.get("level") is None else str(o.groups["level"]),
        "subject": o.groups.get("subject"),
        "greedy": None if o.greedy is None else float(o.greedy),
        "majority": None if not o.sampled else float(bool(o.majority)),
        "pass1": sum(o.sampled) / len(o.sampled) if o.sampled else None,
        "n_samples": len(o.sampled),
        "n_correct": sum(o.sampled),
    }


def _model_info(ctx: "RunContext", name: str, config: Any) -> dict[str, Any]:
    model, endpoint = ctx.backend(name).identity()
    return {"model": model, "endpoint": endpoint, "backend": config.backend, "adapter": getattr(config, "adapter", None)}


def _write(out_dir: Path, rows: list[dict], per_problem: list[dict], doc: dict) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    for r in rows:
        r["choices"] = json.dumps(r["choices"], ensure_ascii=False) if r.get("choices") else None
    write_table(out_dir / "samples.parquet", rows, SAMPLE_SCHEMA)
    write_table(out_dir / "problems.parquet", per_problem)
    tmp = out_dir / ".results.json.tmp"
    tmp.write_text(json.dumps(doc, indent=1, default=str), encoding="utf-8")
    tmp.replace(out_dir / "results.json")
    table = comparison_rows([(out_dir, doc)])
    (out_dir / "table.md").write_text(markdown_table(table) + "\n", encoding="utf-8")
