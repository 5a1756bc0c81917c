"""Does mathforge's data make the embedded SmolLM2-135M-Instruct better? The controlled experiment, on a CPU.

Arms from one base with one training budget, scored greedily on the same 300 held-out problems of the ``arith``
family (``mathforge.synth.family``) and on 50 SVAMP problems (out of domain): base; RFT on its own verified,
distinct-path samples; a control trained on as many of its samples without verification; SFT on the generator's
reference solutions. See ``mathforge.experiment.run`` for the arms.

Resumable: rerun the same command after an interruption; the ledger answers what was generated, finished arms are
skipped, an interrupted arm continues from its last checkpoint. A rerun of a finished run reproduces every number
from the ledger and the saved adapters without generating or training anything.

Writes bench/results/science.md (and the run's report under <run-dir>/report/).
Usage: nice -n 5 python bench/science.py [--run-dir runs/science] [--train-problems 64] [--k 4] [--steps 16]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from mathforge.evaluate.compare import comparison_rows, find_results, fmt_delta, fmt_score  # noqa: E402
from mathforge.evaluate.config import BenchmarkSpec  # noqa: E402
from mathforge.experiment import ARMS, TRAIN_DEFAULTS, ExperimentConfig, run_experiment  # noqa: E402
from mathforge.store import read_rows  # noqa: E402

OUT = Path(__file__).parent / "results" / "science.md"
LABELS = {"base": "(a) base, no training", "rft": "(b) RFT: verified, distinct paths",
          "control": "(c) control: same count, unverified", "reference": "(d) SFT on reference solutions"}


class LoadSampler:
    """The 1-minute load average every 30 s while the experiment runs (the machine is shared: say how busy)."""

    def __init__(self) -> None:
        self.values: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while True:
            self.values.append(os.getloadavg()[0])
            if self._stop.wait(30):
                return

    def __enter__(self) -> "LoadSampler":
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join()


def cpu_seconds() -> float:
    """User + system CPU time of this process and its waited-for children so far."""
    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def cpu_model() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
        return next(line.split(":", 1)[1].strip() for line in out.splitlines() if line.startswith("Model name"))
    except (OSError, subprocess.CalledProcessError, StopIteration):
        return platform.processor() or platform.machine()


def config(a: argparse.Namespace) -> ExperimentConfig:
    return ExperimentConfig(
        run_dir=a.run_dir, seed=a.seed, threads=a.threads, batch_size=a.batch_size, k=a.k, max_tokens=a.max_tokens,
        eval_batching=a.eval_batching,
        train_set=BenchmarkSpec(name="arith", path="bundled:arith-train", split="train", limit=a.train_problems),
        test=BenchmarkSpec(name="arith", path="bundled:arith-test", split="test", limit=a.test_problems),
        ood=BenchmarkSpec(name="svamp", path="bundled:svamp-100", split="test", limit=a.ood_problems)
        if a.ood_problems else None,
        train={"max_steps": a.steps, "batch_size": a.train_batch, "learning_rate": a.lr},
        arms=a.arms, steps=a.only, eval_base=not a.no_eval_base,
    )


def per_kind(run_dir: Path) -> dict[str, dict[str, tuple[int, int]]]:
    """model -> problem kind -> (correct, n) on the in-domain test set, from the eval's answers."""
    rows = read_rows(run_dir / "eval" / "samples.parquet")
    from mathforge.datasets import load

    kinds = {p.id: p.meta["kind"] for p in load("arith", "bundled:arith-test")}
    out: dict[str, dict[str, list[int]]] = {}
    for r in rows:
        if r["benchmark"] != "arith" or r["mode"] != "greedy":
            continue
        c = out.setdefault(r["teacher"], {}).setdefault(kinds[r["problem_id"]], [0, 0])
        c[0] += r["correct"] is True
        c[1] += 1
    return {m: {k: (v[0], v[1]) for k, v in sorted(d.items())} for m, d in out.items()}


def write_markdown(a: argparse.Namespace, doc: dict[str, Any], wall: float, loads: list[float]) -> str:
    run_dir = Path(a.run_dir)
    exp = json.loads((run_dir / "experiment.json").read_text())
    report = json.loads((run_dir / "report" / "metrics.json").read_text())
    rows = comparison_rows(find_results(run_dir / "eval"))
    f = exp["funnel"]
    gen = exp["generation"]
    ev = doc["eval"]["generation"]
    train = {**TRAIN_DEFAULTS, **exp["config"]["train"]}
    lines = [
        "# bench/science: does training on mathforge's data make SmolLM2-135M better?",
        "",
        f"`{a.command}` — CPU: {cpu_model()}, {os.cpu_count()} cores, torch threads {a.threads}. This invocation took "
        f"{wall / 60:.1f} min wall and {cpu_seconds():.0f} CPU-s (user+sys of this process and its children); work "
        "already in the run directory (ledger answers, trained arms) is reused, not "
        f"redone. 1-minute load average during this invocation: min {min(loads):.1f}, median "
        f"{sorted(loads)[len(loads) // 2]:.1f}, max {max(loads):.1f} (the machine is shared with other engineers' "
        "jobs, so wall-clock times are noisy; accuracies are not: sampling is seeded, eval is greedy, and a rerun "
        "reproduces every number from the ledger and the saved adapters).",
        "",
        "**GPU:** no device was lent to this session; nothing here ran on a GPU (see `docs/reproduce.md` for the "
        "GPU-scale recipes and their estimated cost).",
        "",
        "## Set-up",
        "",
        f"- Base: SmolLM2-135M-Instruct (the embedded Q4_1 GGUF, de-quantised to float32), prompt `cot`, "
        f"max_tokens {a.max_tokens}.",
        f"- In-domain task: `arith` (`mathforge.synth.family`, seed 0): one-step add/sub/mul and two-step "
        f"mul-add/add-sub word problems with small numbers. Train pool: the first {a.train_problems} of "
        f"`bundled:arith-train`; held-out test: the first {a.test_problems} of `bundled:arith-test` (disjoint: no "
        "(kind, numbers) pair is in both, checked by `tests/test_family.py`).",
        f"- Out of domain: the first {a.ood_problems} problems of SVAMP (`bundled:svamp-100`).",
        f"- Samples: k={a.k} per train problem from the base, temperature {exp['config']['temperature']}, "
        f"top_p {exp['config']['top_p']}.",
        f"- Every arm: LoRA r {train['lora_r']} / α {train['lora_alpha']} on all linear layers, lr "
        f"{train['learning_rate']} cosine, {train['max_steps']} steps × batch {train['batch_size']}, on exactly "
        f"{f['rows_per_arm']} rows (the number RFT kept), loss on the assistant's tokens; the same seed. Scored "
        "greedily on the same problems in one eval (paired).",
        "",
        "## Data funnel (samples → verified → distinct → trained)",
        "",
        "| step | count |",
        "|---|---:|",
        f"| train problems | {f['problems']} |",
        f"| samples drawn (k={a.k}) | {f['samples']} |",
        f"| verified correct | {f['verified']} ({f['verified'] / max(1, f['samples']):.1%}) |",
        f"| problems with at least one correct sample | {f['problems_solved']} |",
        f"| distinct reasoning paths kept by curate (RFT) | {f['distinct']} |",
        f"| rows trained on, every arm | {f['rows_per_arm']} |",
        f"| of the control's rows, correct | {f['control_correct']} of {f['rows_per_arm']} |",
        "",
        "RFT curate funnel: " + "; ".join(
            f"{s['step']}: dropped {sum(s['dropped'].values())} ({', '.join(f'{k} {v}' for k, v in s['dropped'].items()) or '-'}), "
            f"left {s['left']}" for s in f["rft_funnel"]["steps"]) + ".",
        "",
        "## Accuracy (greedy), 95% intervals",
        "",
        "| arm | benchmark | n | accuracy | Δ vs base (pts, paired 95% CI) |",
        "|---|---|---:|---:|---:|",
    ]
    for r in rows:
        g = r["metrics"].get("greedy")
        lines.append(f"| {LABELS.get(r['model'], r['model'])} | {r['benchmark']} | {r['n']} | {fmt_score(g)} | "
                     f"{fmt_delta(r['delta'], r['model'] == r['base'])} |")
    lines += ["", "Paired comparisons between trained arms (bootstrap over the same problems):", "",
              "| comparison | benchmark | n | difference (pts, 95% CI) |", "|---|---|---:|---:|"]
    for c in report["contrasts"]:
        lines.append(f"| {c['a']} − {c['b']} | {c['benchmark']} | {c.get('n', '-')} | {fmt_delta(c, False)} |")
    kinds = per_kind(run_dir)
    names = sorted({k for d in kinds.values() for k in d})
    lines += ["", "In-domain accuracy by problem kind (correct / n):", "",
              "| arm | " + " | ".join(names) + " |", "|---|" + "---:|" * len(names)]
    for model, d in kinds.items():
        lines.append(f"| {model} | " + " | ".join(f"{d[k][0]}/{d[k][1]}" if k in d else "-" for k in names) + " |")
    lines += ["", "## Training", "", "| arm | rows | of them correct | steps | first loss | last loss | tokens | "
              "train s (its last process) | tokens/s |", "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for arm, t in exp["arms"].items():
        lines.append(f"| {arm} | {t['rows']} | {t['correct_rows']} | {t['global_step']} | {_f(t['first_loss'])} | "
                     f"{_f(t['last_loss'])} | {t.get('tokens_seen') or '-'} | {t.get('train_seconds') or '-'} | "
                     f"{_f(t.get('tokens_per_second'))} |")
    lines += ["", *plot_links(run_dir, Path(a.out).parent),
              "## Cost", "",
              f"- Sampling: {gen.get('requests')} requests, {gen.get('new_tokens_out') or 0:,} new tokens in "
              f"{gen.get('gen_seconds') or 0:.0f} s this invocation ({gen.get('cached')} answered from the ledger).",
              f"- Eval: {ev.get('requests')} requests, {ev.get('new_tokens_out') or 0:,} new tokens in "
              f"{ev.get('gen_seconds') or 0:.0f} s this invocation ({ev.get('cached')} from the ledger).",
              "", "## Reading", "", a.reading or "(see the closing notes of the issue)", "",
              "## Reproduce", "", f"    {a.command}", "",
              f"The run directory `{a.run_dir}` holds the ledger, every table, the arms' exports, checkpoints and "
              "adapters, the eval answers and the report (`report/index.html`); rerunning the command answers from "
              "them and rewrites this file with the same numbers.", ""]
    return "\n".join(lines)


def plot_links(run_dir: Path, out_dir: Path) -> list[str]:
    """The report's plots copied next to the results file (so the markdown shows them), and the lines linking them."""
    names = {"training": "training curves: loss per step, every arm (rows in `<arm>/train/log_history.jsonl`)",
             "accuracy": "accuracy of every arm with its 95% interval", "funnel": "the data funnel"}
    lines = []
    for name, what in names.items():
        src = run_dir / "report" / f"{name}.png"
        if src.exists():
            shutil.copyfile(src, out_dir / f"science-{name}.png")
            lines += [f"![{name}](science-{name}.png) {what} (from the run's `report/{name}.png`)", ""]
    return lines or ["(no plots: matplotlib is not installed)"]


def _f(v: Any) -> str:
    return "-" if v is None else f"{v:.3f}" if isinstance(v, float) else str(v)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run-dir", default="runs/science")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--batch-size", type=int, default=16, help="generation batch")
    ap.add_argument("--train-problems", type=int, default=64)
    ap.add_argument("--test-problems", type=int, default=300)
    ap.add_argument("--ood-problems", type=int, default=50)
    ap.add_argument("--k", type=int, default=4)
    ap.add_argument("--max-tokens", type=int, default=96)
    ap.add_argument("--eval-batching", default="refill", choices=["refill", "static"],
                    help="batching of the eval's greedy answers (same text either way; refill is faster)")
    ap.add_argument("--steps", type=int, default=TRAIN_DEFAULTS["max_steps"])
    ap.add_argument("--train-batch", type=int, default=TRAIN_DEFAULTS["batch_size"])
    ap.add_argument("--lr", type=float, default=TRAIN_DEFAULTS["learning_rate"])
    ap.add_argument("--arms", nargs="*", default=list(ARMS), choices=ARMS)
    ap.add_argument("--only", nargs="+", default=["sample", "train", "eval"], choices=["sample", "train", "eval"],
                    help="run only these steps (e.g. arms side by side in separate processes); the results file is "
                    "written by a full run, which reuses everything done before")
    ap.add_argument("--no-eval-base", action="store_true", help="eval step: score the arms only")
    ap.add_argument("--reading", default="", help="the interpretation paragraph written into the results file")
    ap.add_argument("--out", default=str(OUT))
    a = ap.parse_args()
    a.command = "python bench/science.py " + " ".join(
        f"--{k.replace('_', '-')} {v}" for k, v in vars(a).items()
        if k not in ("reading", "out", "command") and v != ap.get_default(k))
    partial = set(a.only) != {"sample", "train", "eval"} or a.no_eval_base or set(a.arms) != set(ARMS)
    t0 = time.perf_counter()
    with LoadSampler() as loads:
        doc = run_experiment(config(a))
    if partial:
        print(f"partial run ({' '.join(a.only)}; arms {' '.join(a.arms)}) done in {time.perf_counter() - t0:.0f} s")
        return
    text = write_markdown(a, doc, time.perf_counter() - t0, loads.values)
    Path(a.out).write_text(text, encoding="utf-8")
    print(text)


if __name__ == "__main__":
    main()
