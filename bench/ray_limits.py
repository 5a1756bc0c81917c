"""Benchmark the cluster-wide rate limit: 3 workers on a simulated 3-node Ray cluster against one rate-limited server.

    nice -n 10 python bench/ray_limits.py [--per-worker 600] [--out bench/results/ray_limits.md]

The fake OpenAI server (tests/fake_openai_server.py, latency 0.8 s + 10 ms per completion token, 100-200 tokens) runs
in its own process with the provider's limit; each worker is a Ray actor running the real OpenAI backend and engine
into a ledger of its own. Scenarios:
  cluster-rpm      the cluster limiter, 3,000 RPM configured in the recipe
  cluster-headers  the cluster limiter, nothing configured: limits learned from the server's x-ratelimit headers
  cluster-tpm      the cluster limiter, 3,000 RPM and 150,000 TPM configured (the TPM binds)
  local-full       baseline: each worker's own limiter at the full 3,000 RPM (what a per-worker limit does)
  local-split      baseline: each worker's own limiter at 1,000 RPM (a hand-made split of the key's budget)
The steady rate is counted between the moments 10% and 90% of the answers had arrived (ramp and tail left out).
Then, without the cluster: how many answers per second the driver's SQLite ledger commits (the single writer's limit).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "src"))

from ray_limits_load import local_cluster, run_load, steady_rate  # noqa: E402

RPM, TPM, WORKERS = 3000, 150_000, 3
SCENARIOS = [  # name, server limits, teacher config, cluster limiter?
    ("cluster-rpm", {"rpm": RPM}, {"rpm": RPM}, True),
    ("cluster-headers", {"rpm": RPM}, {}, True),
    ("cluster-tpm", {"rpm": RPM, "tpm": TPM}, {"rpm": RPM, "tpm": TPM}, True),
    ("local-full", {"rpm": RPM}, {"rpm": RPM}, False),
    ("local-split", {"rpm": RPM}, {"rpm": RPM // WORKERS}, False),
]


class Server:
    """The fake server in a process of its own, configured and read over its admin endpoints."""

    def __init__(self) -> None:
        self.dir = tempfile.TemporaryDirectory()
        port_file = Path(self.dir.name) / "port"
        self.proc = subprocess.Popen([sys.executable, str(ROOT / "tests" / "fake_openai_server.py"),
                                      "--port-file", str(port_file), "--lifetime", "1800"])
        for _ in range(300):
            if port_file.exists():
                break
            time.sleep(0.1)
        self.base = f"http://127.0.0.1:{port_file.read_text()}"

    def configure(self, **cfg) -> None:
        req = urllib.request.Request(f"{self.base}/admin/config", data=json.dumps(cfg).encode(), method="POST",
                                     headers={"content-type": "application/json"})
        urllib.request.urlopen(req, timeout=10).read()

    def stats(self) -> dict:
        return json.loads(urllib.request.urlopen(f"{self.base}/admin/stats", timeout=10).read())

    def close(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)
        self.dir.cleanup()


def scenario(server: Server, name: str, limits: dict, teacher: dict, cluster: bool, per_worker: int) -> dict:
    import ray

    from mathforge.executor import cluster_limits

    server.configure(**limits)
    handle = cluster_limits.start(name=f"bench-{name}") if cluster else None
    load = []
    t0 = time.monotonic()

    def answered() -> int:
        if time.monotonic() - t0 > len(load) * 5:
            load.append(os.getloadavg()[0])
        return int(server.stats()["status"].get("200", 0))

    out = run_load(f"{server.base}/v1", answered, workers=WORKERS, per_worker=per_worker, teacher=teacher,
                   handle=handle, poll=0.1)
    stats = server.stats()
    total = stats["total"]
    ok = int(stats["status"].get("200", 0))
    tokens = sum(r["stats"]["tokens_in"] + r["stats"]["tokens_out"] for r in out["results"])
    rate = steady_rate(out["samples"])
    row = {
        "scenario": name, "requests": total, "answered": ok, "r429": int(stats["status"].get("429", 0)),
        "steady_rpm": rate * 60, "overall_rpm": ok / out["elapsed"] * 60, "tpm": rate * 60 * tokens / max(1, ok),
        "elapsed": out["elapsed"], "nodes": out["nodes"], "load": max(load) if load else os.getloadavg()[0],
        "leases": ray.get(handle.lease_count.remote()) if handle else None,
        "failed": WORKERS * per_worker - sum(r["ok"] for r in out["results"]),
    }
    if handle is not None:
        ray.kill(handle)
    ceiling = min(RPM, TPM * ok / max(1, tokens)) if "tpm" in limits else RPM
    row["ceiling_rpm"] = ceiling
    return row


def ledger_rate(n: int = 20_000, batches: tuple[int, ...] = (1, 32, 256)) -> list[dict]:
    """Answers per second the driver's ledger commits (one SQLite transaction per batch), 500-token texts."""
    from mathforge.backends.base import GenRequest, SamplingParams
    from mathforge.generate import LedgerSink
    from mathforge.request import Completion
    from mathforge.store.ledger import Ledger

    params = SamplingParams(temperature=0.7, top_p=1.0, max_tokens=1024, seed=0)
    text = "Let x be the number of clips. " * 70  # ~2,000 characters, a CoT answer's size
    rows = []
    for batch in batches:
        count = n if batch > 1 else n // 10
        with tempfile.TemporaryDirectory() as d:
            ledger = Ledger(Path(d) / "ledger.sqlite")
            reqs = [GenRequest(f"b{batch}-{i:08d}".ljust(64, "0"), [{"role": "user", "content": "q"}], params, 0)
                    for i in range(count)]
            ledger.register((r.key, "t", "m", {"i": i}) for i, r in enumerate(reqs))
            sink = LedgerSink(ledger)
            t0 = time.perf_counter()
            for i in range(0, count, batch):
                sink.ok_many([(r, Completion(text, "stop", 140, 500)) for r in reqs[i:i + batch]])
            seconds = time.perf_counter() - t0
            ledger.close()
        rows.append({"batch": batch, "answers": count, "per_s": count / seconds, "load": os.getloadavg()[0]})
    return rows


def render(rows: list[dict], per_worker: int, ledger: list[dict]) -> str:
    """The result file: the scenario table, then the ledger's commit rate."""
    cpu = next((ln.split(":", 1)[1].strip() for ln in subprocess.run(["lscpu"], capture_output=True, text=True)
                .stdout.splitlines() if ln.startswith("Model name")), platform.processor())
    lines = [
        "# Cluster-wide rate limit (bench/ray_limits.py)", "",
        f"{WORKERS} workers (Ray actors running the OpenAI backend and engine, {per_worker} requests each, one per "
        "node) on a simulated 3-node Ray cluster on 127.0.0.1 (`ray.cluster_utils.Cluster`, 1 CPU per node), against "
        "tests/fake_openai_server.py in its own process (latency 0.8 s + 10 ms per completion token, 100-200 "
        f"tokens; limits of {RPM:,} RPM, and {TPM:,} TPM where shown). Steady rate: answers per minute between the "
        "moments 10% and 90% of the answers had arrived. Ceiling: the server's limit (for TPM, the RPM that its "
        "token limit allows at the measured tokens per request).", "",
        f"CPU: {cpu}, {os.cpu_count()} cores, shared with other engineers' work (absolute times are noisy; the "
        "load average column is the highest 1-minute load seen during the scenario). Run at nice 10.", "",
        "| scenario | requests sent | 429 answers | 429 share | steady rate (rpm) | % of ceiling | overall (rpm) "
        "| tokens/min | actor leases per request | failed | load avg |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        leases = f"{r['leases'] / max(1, r['answered']):.2f}" if r["leases"] is not None else "-"
        lines.append(
            f"| {r['scenario']} | {r['requests']:,} | {r['r429']:,} | {r['r429'] / max(1, r['requests']):.1%} "
            f"| {r['steady_rpm']:,.0f} | {r['steady_rpm'] / r['ceiling_rpm']:.1%} | {r['overall_rpm']:,.0f} "
            f"| {r['tpm']:,.0f} | {leases} | {r['failed']} | {r['load']:.2f} |")
    lines += ["", "The `local-*` rows are the baselines measured in the same run: a per-worker limit at the key's "
              "full RPM sends about three times too much and lives on 429s (retried with backoff; requests that "
              "met a 429 on all 6 attempts end `failed` in the ledger, for `mathforge retry`); a hand-made split "
              "holds the limit only while every worker is busy and needs the number of workers in the recipe. The "
              "cluster limiter holds one budget for the key and costs one actor round trip per lease of several "
              "requests. `cluster-headers` learns the limit from the server's headers: its 429s are the first "
              "wave, sent before any answer (1.4 s away) carried a header, and their retries; the fake server's "
              "429s carry no `x-ratelimit-*` headers to learn from, so with the limit unknown the three workers' "
              "opening concurrency (64 each) meets a bucket of 50. Configure `rpm`/`tpm` to avoid that wave.", ""]
    if ledger:
        lines += ["## The driver's ledger commits", "",
                  "The Ray executor keeps the driver the only writer of the run directory: every answer a worker "
                  "streams back is committed to the driver's SQLite ledger. Answers per second it commits here "
                  "(`LedgerSink.ok_many`, one transaction per batch, ~2,000-character answers), the ceiling of a "
                  "cluster's answer rate (docs/scale.md):", "",
                  "| answers per transaction | answers | answers/s | load avg |", "|---:|---:|---:|---:|"]
        lines += [f"| {r['batch']} | {r['answers']:,} | {r['per_s']:,.0f} | {r['load']:.2f} |" for r in ledger]
        lines.append("")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--per-worker", type=int, default=600)
    ap.add_argument("--only", nargs="*", help="scenario names to run (default: all; 'ledger' for the commit rate)")
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "ray_limits.md")
    args = ap.parse_args()
    server = Server()
    rows = []
    try:
        with local_cluster(nodes=3):
            for name, limits, teacher, cluster in SCENARIOS:
                if args.only and name not in args.only:
                    continue
                row = scenario(server, name, limits, teacher, cluster, args.per_worker)
                print(json.dumps(row), flush=True)
                rows.append(row)
    finally:
        server.close()
    ledger = ledger_rate() if not args.only or "ledger" in args.only else []
    for row in ledger:
        print(json.dumps(row), flush=True)
    text = render(rows, args.per_worker, ledger)
    print(text)
    args.out.write_text(text)


if __name__ == "__main__":
    main()
