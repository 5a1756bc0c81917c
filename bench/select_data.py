"""Which data selection helps the student most? random vs IFD vs perplexity vs LESS-style influence, same budget.

The pool is what a pipeline without a verifier holds: every sample the base model (SmolLM2-135M) wrote for the
"prove it" experiment's training problems (``bench/science.py`` → ``<science run>/verified.parquet``), right or wrong.
Each method keeps ``--fraction`` of it; the verdicts are never shown to the methods, they only measure afterwards
how many kept rows are correct (selection precision; the pool's own share is the random expectation). Then a LoRA
student is trained on each selection and on the full pool with the experiment's training settings and the same
number of steps, and every student is scored greedily on the same held-out problems (95% Wilson intervals, paired
bootstrap differences against the random selection). Influence's target set is ``--target-size`` reference
solutions of training problems that are NOT in the pool (the task, never the test set).

Usage: nice -n 10 python bench/select_data.py [--science-run runs/science] [--fraction 0.2] [--test-problems 200]
Writes bench/results/select.md; the students, evals and ledger live in --run-dir (resumable: rerun to finish). On a
shared machine the arms can run as parallel processes (``--arm NAME`` each: train, then evaluate in
``<run-dir>/<NAME>/eval``), then ``--report-only`` gathers every eval into the results file.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from mathforge.backends.local import LocalConfig  # noqa: E402
from mathforge.datasets import load  # noqa: E402
from mathforge.evaluate.config import BenchmarkSpec, EvalConfig  # noqa: E402
from mathforge.evaluate.runner import run_eval  # noqa: E402
from mathforge.experiment import TRAIN_DEFAULTS  # noqa: E402
from mathforge.export import ExportConfig, export  # noqa: E402
from mathforge.pipeline.context import RunContext  # noqa: E402
from mathforge.prompts import get_prompt  # noqa: E402
from mathforge.select import SelectConfig, select_rows  # noqa: E402
from mathforge.store import read_rows  # noqa: E402
from mathforge.train.config import TrainConfig  # noqa: E402

OUT = Path(__file__).parent / "results" / "select.md"
PROMPT = "cot"


def cpu_model() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
        return next(line.split(":", 1)[1].strip() for line in out.splitlines() if line.startswith("Model name"))
    except Exception:
        return platform.processor() or "unknown"


def write_target(path: Path, pool_ids: set[str], size: int) -> int:
    """Reference solutions of training problems outside the pool: what the selection should help with."""
    rows = [{"question": p.question, "solution": p.solution}
            for p in load("arith", "bundled:arith-train", split="train") if p.id not in pool_ids][:size]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return len(rows)


def train_arm(arm_dir: Path, rows: list[dict[str, Any]], steps: int, seed: int) -> dict[str, Any]:
    from mathforge.train.sft import train

    if (arm_dir / "train" / "adapter").exists():  # trained by an earlier invocation: the bench resumes
        return _train_log(arm_dir)
    cfg = ExportConfig(formats=["jsonl"], styles=["chat"], system_prompt=get_prompt(PROMPT).system,
                       only_correct=False, validation_fraction=0.0, card=False)
    export(rows, arm_dir / "export", cfg, seed=seed)
    tcfg = TrainConfig(**{"model": "smollm2", **TRAIN_DEFAULTS, "max_steps": steps, "data": str(arm_dir / "export"),
                          "output_dir": str(arm_dir / "train")})
    m = train(tcfg, seed=seed)
    return _train_log(arm_dir) | {"global_step": m.get("global_step")}


def _train_log(arm_dir: Path) -> dict[str, Any]:
    """First and last training loss of a finished arm, from its log_history.jsonl."""
    log = arm_dir / "train" / "log_history.jsonl"
    if not log.exists():
        return {}
    lines = [json.loads(x) for x in log.read_text().splitlines() if x.strip()]
    losses = [x["loss"] for x in lines if "loss" in x]
    return {"first_loss": round(losses[0], 3) if losses else None, "last_loss": round(losses[-1], 3) if losses else None}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--science-run", default="runs/science", help="run directory of bench/science.py")
    ap.add_argument("--run-dir", default="runs/select")
    ap.add_argument("--fraction", type=float, default=0.2)
    ap.add_argument("--methods", nargs="+", default=["random", "pass-rate", "perplexity", "ifd", "influence"])
    ap.add_argument("--random-replicas", type=int, default=1, help="extra random arms (selection and training seed "
                                                                    "seed+1, seed+2, ...): how much an arm moves "
                                                                    "with its seed alone")
    ap.add_argument("--no-full", action="store_true", help="do not train a student on the whole pool")
    ap.add_argument("--target-size", type=int, default=16)
    ap.add_argument("--steps", type=int, default=TRAIN_DEFAULTS["max_steps"])
    ap.add_argument("--test-problems", type=int, default=200)
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument("--no-train", action="store_true", help="measure selection only (cost and precision)")
    ap.add_argument("--arm", help="train (if needed) and evaluate this one arm in <run-dir>/<arm>/eval, write no "
                                   "results file: arms then run as parallel processes; --report-only gathers them")
    ap.add_argument("--report-only", action="store_true", help="rewrite the results file from the students and "
                                                                  "eval already in --run-dir")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    run = Path(args.run_dir)
    run.mkdir(parents=True, exist_ok=True)
    pool = read_rows(Path(args.science_run) / "verified.parquet")
    base_rate = sum(r.get("correct") is True for r in pool) / len(pool)
    target = run / "target.jsonl"
    n_target = write_target(target, {r["problem_id"] for r in pool}, args.target_size)
    system = get_prompt(PROMPT).system
    load0 = os.getloadavg()[0]
    selections: dict[str, list[dict[str, Any]]] = {} if args.no_full else {"full": pool}
    rows_md = []
    arms = [(m, m, args.seed) for m in args.methods]
    arms += [(f"random-seed{args.seed + i}", "random", args.seed + i) for i in range(1, args.random_replicas + 1)]
    seeds = {name: seed for name, _, seed in arms}
    for name, method, seed in arms:
        cfg = SelectConfig(method=method, fraction=args.fraction, seed=seed,
                           proxy={"system_prompt": system, "threads": 1},
                           influence={"target": str(target)} if method == "influence" else {})
        cache = run / f"selection-{name}.json"  # a finished selection is reused: the bench resumes
        if cache.exists():
            saved = json.loads(cache.read_text(encoding="utf-8"))
            kept_ids, secs, load = set(saved["kept"]), saved["seconds"], saved.get("load", "-")
        else:
            # only pass-rate may read the verdicts: it is defined on k verified samples; the others never see them
            rows = pool if method == "pass-rate" else [{k: v for k, v in r.items() if k != "correct"} for r in pool]
            t0 = time.perf_counter()
            res = select_rows(rows, cfg, seed)
            secs = time.perf_counter() - t0
            load = f"{os.getloadavg()[0]:.1f}"
            kept_ids = {r["id"] for r in res.kept}
            cache.write_text(json.dumps({"kept": sorted(kept_ids), "seconds": secs, "load": load,
                                         "metrics": res.metrics}), encoding="utf-8")
        kept = [r for r in pool if r["id"] in kept_ids]
        selections[name] = kept
        precision = sum(r.get("correct") is True for r in kept) / len(kept)
        rows_md.append((name, len(kept), precision, secs, secs / len(pool), load))
        print(f"{name:<13} kept {len(kept):>4}  correct {precision:6.1%}  {secs:8.1f} s  {secs / len(pool):.3f} s/row",
              flush=True)

    results: dict[str, Any] = {}
    if args.arm:
        t0, started = time.perf_counter(), os.getloadavg()[0]
        evaluate(run / args.arm, {args.arm: train_arm(run / args.arm, selections[args.arm], args.steps,
                                                     seeds.get(args.arm, args.seed))}, None, args)
        (run / args.arm / "bench.json").write_text(json.dumps({  # the conditions this arm ran under
            "seconds": round(time.perf_counter() - t0, 1), "load_start": started,
            "load_end": os.getloadavg()[0]}), encoding="utf-8")
        return
    if args.report_only:
        results = {"arms": {name: _train_log(run / name) for name in selections}}
    elif not args.no_train:
        trained = {name: train_arm(run / name, rows, args.steps, seeds.get(name, args.seed))
                   for name, rows in selections.items()}
        results = evaluate(run, trained, "random" if "random" in trained else None, args)
    load1 = os.getloadavg()[0]
    write_md(args, pool, base_rate, n_target, rows_md, results, (load0, load1))


def evaluate(run: Path, trained: dict[str, Any], base: str | None, args: Any) -> dict[str, Any]:
    """Greedy eval of the trained arms' adapters on the held-out problems, in ``run/eval`` (a ledger per run)."""
    teacher = LocalConfig(model="smollm2", batch_size=30, threads=1)
    models = {name: teacher.model_copy(update={"adapter": str(Path(args.run_dir) / name / "train" / "adapter")}
                                       ).model_dump(mode="json") for name in trained}
    ctx = RunContext(run, teachers={}, seed=args.seed)
    try:
        ecfg = EvalConfig(models=models, base=base, max_tokens=args.max_tokens, prompt=PROMPT, seed=args.seed,
                          benchmarks=[BenchmarkSpec(name="arith", path="bundled:arith-test", split="test",
                                                    limit=args.test_problems)])
        return run_eval(ctx, ecfg, run / "eval") | {"arms": trained}
    finally:
        ctx.close()


ORDER = ["full", "random", "random-seed1", "random-seed2", "pass-rate", "perplexity", "ifd", "influence"]
READING = """\
How to read it. Every arm starts from the same base and takes the same 12 optimiser steps of 8 rows (96 rows seen),
so the full set is half an epoch of a pool that is 85% wrong, and a 39-row selection is about 2.5 epochs of its
rows. The selections differ before any training in what share of the rows a student imitates is right (the
precision column); the students show how much of that reaches held-out accuracy in so few steps. Pass-rate is not blind: it is defined on k verified
samples, so it reads the verdicts (its 0 scoring seconds stand on the k = 4 samples per problem that generate +
verify already paid for); the other methods never see them.

What the literature predicts at this scale. Superfiltering (Li et al. 2024) finds a small proxy's IFD ranking
transfers to larger students (weak-to-strong), and IFD is the cheap CPU method here. LESS (Xia et al. 2024) reports
gradient selection paying off with a 7B selector, over a short warm-up on thousands of examples, for larger or
same-size students, after a warm-up on 5% of the data; with a 135M selector warmed up on 16 rows and a 16-example
target, its features are close to noise, and with selector = student = 135M
nothing of the weak-to-strong gain can show. Expect influence ≈ random here, and compare any Δ with the spread of
two random seeds before reading it as a method's effect."""


def _load(x: Any) -> str:
    return f"{x:.1f}" if isinstance(x, (int, float)) else str(x)


def write_md(args: Any, pool: list[dict[str, Any]], base_rate: float, n_target: int, rows_md: list[tuple],
             results: dict[str, Any], loads: tuple[float, float]) -> None:
    lines = ["# Data selection: random, pass-rate, perplexity, IFD, LESS-style influence and the full set", "",
             f"`python bench/select_data.py --fraction {args.fraction} --steps {args.steps} --test-problems "
             f"{args.test_problems} --random-replicas {args.random_replicas}` (the arms may run as parallel "
             f"processes with `--arm NAME`, then `--report-only`). CPU: {cpu_model()}, {os.cpu_count()} cores, "
             "shared with other engineers' jobs; every training and scoring ran with 1 torch thread at nice 10. "
             "Seconds are pessimistic and depend on the load (given per row below): compare rows with each other, "
             "not with other files. No GPU was lent to this task.", "",
             f"Pool: {len(pool)} samples by the base SmolLM2-135M on {len({r['problem_id'] for r in pool})} training "
             f"problems of the arith family, right or wrong (`{args.science_run}`: the `verified.parquet` of the "
             f"\"prove it\" experiment's reduced run), {base_rate:.1%} of them correct. Budget: {args.fraction:.0%} of "
             f"the rows. Influence target: {n_target} reference solutions of training problems outside the pool. "
             "Proxy: the same SmolLM2-135M (so selector = student size).", "",
             "## Selection: cost and precision", "",
             "| method | rows kept | correct among kept | scoring seconds | seconds per pool row | load average while "
             "scoring |", "|---|---:|---:|---:|---:|---:|"]
    lines += [f"| {m} | {n} | {p:.1%} | {s:.1f} | {spr:.3f} | {_load(ld)} |" for m, n, p, s, spr, ld in rows_md]
    lines += ["", f"Precision of a random pick is the pool's share, {base_rate:.1%}. Scoring seconds are those of the "
              "invocation that scored each method (saved in `selection-<name>.json` of the run directory and reused "
              "by later invocations). Per example: random and pass-rate cost nothing beyond the samples; perplexity "
              "is one forward pass of the proxy, IFD two, influence a warm-up plus one forward + backward pass per "
              "row per checkpoint (`docs/select-and-synthesis.md`).", ""]
    if results:
        from mathforge.evaluate.compare import comparison_rows, find_results, fmt_delta, fmt_score

        run = Path(args.run_dir)  # the joint eval of the first arms, then each arm evaluated on its own (--arm)
        sets = find_results(run / "eval") + [s for name in results["arms"] for s in find_results(run / name / "eval")]
        rows = sorted(comparison_rows(sets, "random"),
                      key=lambda r: ORDER.index(r["model"]) if r["model"] in ORDER else len(ORDER))
        sizes = {m: n for m, n, *_ in rows_md} | {"full": len(pool)}
        arm_runs = {name: json.loads((run / name / "bench.json").read_text(encoding="utf-8"))
                    for name in results["arms"] if (run / name / "bench.json").exists()}
        lines += ["## Students (same base, same steps; greedy on held-out arith problems)", "",
                  "| arm | training rows | test problems | accuracy ± 95% CI (%) | Δ vs random, paired bootstrap over "
                  "the common problems [95% CI] (points) | seconds of its `--arm` run: training (unless done before) + eval "
                  "(load average start → end) |",
                  "|---|---:|---:|---:|---|---|"]
        for r in rows:
            cond = arm_runs.get(r["model"])
            when = (f"{cond['seconds']:.0f} ({cond['load_start']:.1f} → {cond['load_end']:.1f})" if cond
                    else "in the joint run, load 10-20")
            lines.append(f"| {r['model']} | {sizes.get(r['model'], '-')} | {r['n']} | "
                         f"{fmt_score(r['metrics'].get(r['primary']))} | "
                         f"{fmt_delta(r['delta'], r['model'] == r['base'])} | {when} |")
        fewer = [r["model"] for r in rows if r["n"] < args.test_problems]
        if fewer:
            lines += ["", f"{', '.join(fewer)}: evaluated on the first problems of the same test set only (run with "
                      "a smaller `--test-problems` when the shared machine's load left no time for all); the paired "
                      "Δ uses the problems both arms answered, so its interval is wider."]
        missing = [name for name in results["arms"] if name not in {r["model"] for r in rows}]
        if missing:
            lines += ["", f"Selected but without an evaluated student (not finished when this file was written): "
                      f"{', '.join(missing)}."]
        lines += ["", f"{args.steps} LoRA steps per arm (TRAIN_DEFAULTS of the experiment); `random-seedN` is a second "
                  "random arm with selection and training seed N, so its Δ is the seed-to-seed noise of one arm. "
                  "Training loss first → last: " + ", ".join(f"{k} {v.get('first_loss')} → {v.get('last_loss')}"
                                                             for k, v in results["arms"].items() if v)
                  + ".", "", READING,
                  ""]
    OUT.write_text("\n".join(lines) + "\n", encoding="utf-8")
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
