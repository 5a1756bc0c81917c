"""Overhead of the Ray executor against the local one: the same recipe (load → generate against a local fake
OpenAI-compatible server → verify → curate → export) run both ways in one process, on a 2-node Ray cluster
simulated on this machine (127.0.0.1), with identical outputs checked.

    nice -n 10 python bench/ray_overhead.py [--problems 400] [--k 2] [--rounds 3]

Prints a table and writes bench/results/ray.md: wall seconds per stage for each executor (median of the rounds,
alternating which goes first), their ratio, and the one-off costs (cluster start, joining it). The machine is shared,
so absolute numbers are noisy; the ratio is measured in the same run.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from fake_openai_server import ServerConfig, ServerThread  # noqa: E402
from ray_cluster import local_cluster  # noqa: E402

STAGES = ("load", "generate", "verify", "curate", "export")
SERVER = ServerConfig(base_latency=0.05, per_token=0.0005, min_completion=40, max_completion=40)


def recipe(tmp: Path, url: str, n: int, k: int) -> dict:
    import pyarrow as pa
    import pyarrow.parquet as pq

    def question(i: int) -> str:
        return f"A box holds {i} apples and {5 - i} pears. How many fruits?"

    # Parquet in row groups of 100 (under Ray, load parses them as tasks); a benchmark holding every 50th problem
    # (curate's decontamination runs, as tasks under Ray, and drops their samples)
    path = tmp / "problems.parquet"
    pq.write_table(pa.Table.from_pylist([{"question": question(i), "answer": "5" if i % 3 else "6"}
                                         for i in range(n)]), path, row_group_size=100)
    bench = tmp / "bench.jsonl"
    bench.write_text("".join(json.dumps({"question": question(i), "answer": "5"}) + "\n" for i in range(0, n, 50)))
    return {"name": "bench-ray",
            "teachers": {"fake": {"backend": "openai", "model": "fake", "base_url": url, "api_key_env": "BENCH_KEY",
                                  "max_concurrency": 16, "resend_share": 0}},
            "stages": [{"load": {"dataset": "generic", "path": str(path)}},
                       {"generate": {"k": k, "max_tokens": 64, "prompt": "cot", "temperature": 0.7}},
                       {"verify": {"workers": 1}},
                       # the fake server's answers repeat themselves: without the repetition filter curate
                       # keeps the correct ones and its later steps have work to do
                       {"curate": {"filters": {"max_repetition": None},
                                   "decontam": {"benchmarks": [{"name": "generic", "path": str(bench),
                                                                "split": None}]}}},
                       {"export": {"formats": ["jsonl"]}}]}


def run_once(spec: dict, run: Path, executor: str, address: str | None) -> tuple[dict[str, float], float, str]:
    from mathforge.pipeline.recipe import parse_recipe
    from mathforge.pipeline.runner import run_recipe

    t0 = time.perf_counter()
    summary = run_recipe(parse_recipe(spec), run, executor=executor, address=address)
    wall = time.perf_counter() - t0
    seconds = {s: summary["stages"][s]["seconds"] for s in STAGES}
    seconds["sending"] = summary["stages"]["generate"].get("gen_seconds", 0.0)  # after the replicas are ready
    export = (run / "export" / "sft.jsonl").read_text()
    return seconds, wall, export


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--problems", type=int, default=400)
    ap.add_argument("--k", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "ray.md"))
    args = ap.parse_args()
    os.environ["BENCH_KEY"] = "sk-bench-ray-0123456789"
    cpu = next((ln.split(":", 1)[1].strip() for ln in subprocess.run(["lscpu"], capture_output=True, text=True)
                .stdout.splitlines() if ln.startswith("Model name")), "?")
    loads = [os.getloadavg()[0]]
    times: dict[str, list[dict[str, float]]] = {"local": [], "ray": []}
    walls: dict[str, list[float]] = {"local": [], "ray": []}
    exports: dict[str, set[str]] = {"local": set(), "ray": set()}
    with tempfile.TemporaryDirectory() as d, ServerThread(SERVER, lifetime=3600) as server:
        tmp = Path(d)
        spec = recipe(tmp, server.url, args.problems, args.k)
        t = time.perf_counter()
        with local_cluster(2) as cluster:
            cluster_start = time.perf_counter() - t
            import ray

            t = time.perf_counter()
            ray.init(address=cluster.address, log_to_driver=False, namespace="mathforge")
            join = time.perf_counter() - t
            for ex in ("local", "ray"):  # warm-up, not counted: imports and first-use caches of either path
                server.configure(SERVER)
                run_once(spec, tmp / f"{ex}-warm", ex, cluster.address if ex == "ray" else None)
            for r in range(args.rounds):
                order = ("local", "ray") if r % 2 == 0 else ("ray", "local")
                for ex in order:
                    server.configure(SERVER)
                    seconds, wall, export = run_once(spec, tmp / f"{ex}-{r}", ex,
                                                   cluster.address if ex == "ray" else None)
                    times[ex].append(seconds)
                    walls[ex].append(wall)
                    exports[ex].add(export)
                    loads.append(os.getloadavg()[0])
    same = exports["local"] == exports["ray"] and len(exports["local"]) == 1
    med = {ex: {s: statistics.median(t[s] for t in times[ex]) for s in (*STAGES, "sending")} for ex in times}
    wall = {ex: statistics.median(walls[ex]) for ex in walls}
    rows = [(s, med["local"][s], med["ray"][s]) for s in STAGES]
    rows.insert(2, ("  of which sending (replicas ready)", med["local"]["sending"], med["ray"]["sending"]))
    rows.append(("whole run", wall["local"], wall["ray"]))
    lines = [
        "# Ray executor overhead vs the local executor",
        "",
        f"`python bench/ray_overhead.py --problems {args.problems} --k {args.k} --rounds {args.rounds}`,"
        f" run at `nice -n {os.nice(0)}`."
        f" The same recipe ({args.problems} problems x k={args.k} = {args.problems * args.k} requests against a local"
        " fake OpenAI-compatible server with a fixed 40-token answer after 50 ms + 0.5 ms/token; load (Parquet, row"
        " groups of 100) → generate → verify → curate (decontamination against a benchmark of every 50th problem)"
        " (repetition filter off: the fake answers repeat) → export) with `executor: local` and with `executor: ray` on a 2-node Ray cluster"
        " simulated on this machine (`tests/ray_cluster.py`: 127.0.0.1, 1 CPU per node), alternating which goes"
        " first, after one warm-up run of each (not counted); medians of the rounds. \"sending\" is generate from"
        " the first request to the last answer, i.e. without starting the replicas.",
        "",
        f"- CPU: {cpu} ({os.cpu_count()} cores, shared with other engineers' jobs: absolute seconds are noisy, the"
        " ratio is measured in the same run)",
        f"- load average (1 min) during the run: {min(loads):.1f} to {max(loads):.1f}",
        f"- outputs identical (export/sft.jsonl of every run): {'yes' if same else 'NO'}",
        f"- one-off: starting the 2-node cluster {cluster_start:.1f} s, joining it {join:.2f} s (not in the table:"
        " a cluster is started once, not per run)",
        "- not measured here: tokens/s per model replica on a GPU (no GPU machine was lent to this task)",
        "",
        "| stage | local s | ray s | ray / local |",
        "|---|---:|---:|---:|",
        *(f"| {s} | {a:.2f} | {b:.2f} | {b / a if a else float('nan'):.2f} |" for s, a, b in rows),
        "",
        "Where the difference comes from: under Ray, generate first starts one worker actor per node and waits until"
        " each is ready (a Ray worker process, imports, the backend: once per stage, the gap between the generate and"
        " sending rows); sending itself (answers streamed worker → driver, committed there) is on par with the local"
        " run. load parses each Parquet row group in a task; verify ships each shard to a task and back; curate ships"
        " each batch of 4,000 samples (with the benchmark index, once) to a task for its filters, decontamination"
        " lookups and signatures, and its near-duplicate search puts the band keys in the object store and runs one"
        " task per partition; all are small fixed costs at this size. On one machine with"
        " two shared cores the executor can only cost time: what it buys is spreading model replicas over GPUs and"
        " API workers over hosts.",
    ]
    text = "\n".join(lines) + "\n"
    print(text)
    Path(args.out).write_text(text)


if __name__ == "__main__":
    main()
