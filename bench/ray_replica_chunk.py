"""A model replica's chunk on the Ray executor: one batch per chunk (before session 5) against four (now), for the
embedded SmolLM2 with refill batching, with the local executor as reference, all in one run.

    nice -n 19 python bench/ray_replica_chunk.py [--problems 24] [--k 2] [--batch 8] [--rounds 2]

The quickstart's recipe shape (arith problems, k samples, temperature 0.7, 128 tokens) on a one-node Ray cluster
simulated on this machine (127.0.0.1, 2 CPUs, one CPU replica with 2 threads). A replica streams each answer as its
row finishes; with a chunk of one batch the replica's refill loop has no next prompt to put in a finished row's slot,
so the batch drains like a static one and the replica waits for the chunk's longest row. The arms differ only in the
chunk size the driver hands out (``replicas.replica_plan``, patched for the one-batch arm). Reported: generate's
tokens per second (model load excluded: replicas are ready before timing starts), median of the rounds, arms
alternating; appended to ``bench/results/ray.md`` as a dated section.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from ray_cluster import NODE, local_cluster  # noqa: E402

from mathforge.executor import ray_executor, replicas  # noqa: E402
from mathforge.pipeline.recipe import parse_recipe  # noqa: E402
from mathforge.pipeline.runner import run_recipe  # noqa: E402


def recipe(problems: int, k: int, batch: int) -> dict:
    return {
        "name": "replica-chunk", "seed": 0,
        "teachers": {"smol": {"backend": "local", "model": "smollm2", "batch_size": batch, "threads": 2,
                              "device": "cpu"}},
        "stages": [{"load": {"dataset": "arith", "path": "bundled:arith-train", "limit": problems}},
                   {"generate": {"k": k, "prompt": "cot", "temperature": 0.7, "top_p": 0.95, "max_tokens": 128}}],
    }


def one_batch_plan(config, gpus, nodes, share=1):
    """The chunk as it was before: one batch."""
    n, options, _ = replicas.replica_plan(config, gpus, nodes, share)
    return n, options, int(config.batch_size)


def run(arm: str, spec: dict, work: Path, address: str | None) -> dict:
    out = work / f"{arm}-{time.monotonic_ns()}"
    ray_executor.replica_plan = one_batch_plan if arm == "ray, one batch per chunk" else replicas.replica_plan
    kwargs = {"executor": "ray", "address": address} if address else {}
    res = run_recipe(parse_recipe(spec), out, **kwargs)["stages"]["generate"]
    return {"tokens": res["new_tokens_out"], "seconds": res["gen_seconds"], "tok_s": res["tokens_per_s"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--problems", type=int, default=24)
    ap.add_argument("--k", type=int, default=2)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "ray.md")
    args = ap.parse_args()
    spec = recipe(args.problems, args.k, args.batch)
    arms = ["local executor", "ray, one batch per chunk", "ray, four batches per chunk"]
    results: dict[str, list[dict]] = {a: [] for a in arms}
    loads = [os.getloadavg()[0]]
    started = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    with tempfile.TemporaryDirectory() as d, local_cluster(1, None) as cluster:
        work = Path(d)
        for r in range(args.rounds):
            order = arms if r % 2 == 0 else arms[::-1]
            for arm in order:
                got = run(arm, spec, work, None if arm == "local executor" else cluster.address)
                results[arm].append(got)
                loads.append(os.getloadavg()[0])
                print(f"round {r + 1} {arm}: {got}", flush=True)
    cpu = next((ln.split(":", 1)[1].strip() for ln in subprocess.run(["lscpu"], capture_output=True, text=True)
                .stdout.splitlines() if ln.startswith("Model name")), platform.processor())
    base = statistics.median(x["tok_s"] for x in results["ray, one batch per chunk"])
    lines = [f"## {started}: a model replica's chunk, one batch against four (refill batching)", "",
             f"`python bench/ray_replica_chunk.py --problems {args.problems} --k {args.k} --batch {args.batch} "
             f"--rounds {args.rounds}`: the embedded SmolLM2 (CPU, 2 threads, `batch_size: {args.batch}`, refill "
             f"batching), {args.problems} arith problems x {args.k} samples at temperature 0.7, up to 128 tokens; "
             "a one-node Ray cluster simulated on this machine (one CPU replica). CPU: "
             f"{cpu}, {os.cpu_count()} cores; load average (1 min) {min(loads):.1f}-{max(loads):.1f} during the run "
             "(shared machine: the ratio, measured in the same run with the arms alternating, is the figure).", "",
             "| arm | tokens | generate s | tokens/s (median) | / one batch per chunk |", "|---|---:|---:|---:|---:|"]
    for arm in arms:
        rows = results[arm]
        tok_s = statistics.median(x["tok_s"] for x in rows)
        lines.append(f"| {arm} | {statistics.median(x['tokens'] for x in rows):.0f} | "
                     f"{statistics.median(x['seconds'] for x in rows):.1f} | {tok_s:.1f} | {tok_s / base:.2f} |")
    text = "\n".join(lines) + "\n"
    print(text)
    with args.out.open("a") as fh:
        fh.write("\n" + text)


if __name__ == "__main__":
    main()
