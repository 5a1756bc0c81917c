"""Benchmark the OpenAI-compatible teacher engine against the scripted test server (tests/fake_openai_server.py).

    python bench/api.py [--out bench/results/api.md] [--skip-20k]

The server runs in its own process and every client run in a fresh process of its own, so the peak RSS reported
(``ru_maxrss``) is the client's alone. Scenarios (server latency 0.8 s + 10 ms per completion token, 100-200 tokens):
  S1   no limit, 2,000 requests: mathforge vs a plain AsyncOpenAI + semaphore(64) loop
  S2   3,000 RPM / 600,000 TPM enforced by the server, 3,000 requests
  S3   5% 5xx, 1% dropped connections, 0.5% 30 s hangs, 1,000 requests through `mathforge run` + `mathforge retry`
  S1-20k  peak RSS for 20,000 requests under S1
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SERVER = ROOT / "tests" / "fake_openai_server.py"
PROMPT = "Natalia sold clips to 48 of her friends in April, and then she sold half as many clips in May. How many"


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def requests_for(n: int, tag: str):
    from mathforge.backends.base import GenRequest, SamplingParams

    params = SamplingParams(temperature=0.7, top_p=1.0, max_tokens=256, seed=0)
    return [GenRequest(f"{tag}{i:08d}", [{"role": "user", "content": f"{PROMPT} clips? #{i}"}], params, 0)
            for i in range(n)]


# -- client processes -------------------------------------------------------------------------------------------
def client_mathforge(url: str, n: int, teacher: dict) -> dict:
    """The real path: OpenAIBackend, the engine and a LedgerSink committing to SQLite."""
    from mathforge.backends.openai_api import OpenAIBackend, OpenAIConfig
    from mathforge.generate import LedgerSink
    from mathforge.store.ledger import Ledger

    os.environ["BENCH_KEY"] = "sk-bench-not-a-real-key"
    backend = OpenAIBackend("bench", OpenAIConfig(model="fake", base_url=url, api_key_env="BENCH_KEY", **teacher))
    with tempfile.TemporaryDirectory() as d:
        ledger = Ledger(Path(d) / "ledger.sqlite")
        reqs = requests_for(n, "k")
        ledger.register((r.key, "bench", "fake", {}) for r in reqs)
        sink = LedgerSink(ledger)
        backend.prepare()  # as the generate stage does before its clock starts
        t0 = time.perf_counter()
        backend.generate(reqs, sink)
        seconds = time.perf_counter() - t0
        counts = ledger.counts()
        ledger.close()
    st = sink.stats
    return {"seconds": seconds, "ok": counts.get("ok", 0), "failed": counts.get("failed", 0),
            "pending": counts.get("pending", 0), "retries": st.retries, "rate_limited": st.rate_limited,
            "peak_rss_mb": peak_rss_mb()}


def client_baseline(url: str, n: int, concurrency: int = 64) -> dict:
    """What a user writes first: AsyncOpenAI (its own retries on) behind a semaphore."""
    import openai

    async def main() -> tuple[int, int]:
        client = openai.AsyncOpenAI(base_url=url, api_key="sk-bench")
        sem = asyncio.Semaphore(concurrency)

        async def one(r) -> bool:
            async with sem:
                try:
                    await client.chat.completions.create(model="fake", messages=r.messages, max_tokens=256)
                    return True
                except openai.APIError:
                    return False

        res = await asyncio.gather(*[one(r) for r in requests_for(n, "b")])
        await client.close()
        return sum(res), n - sum(res)

    t0 = time.perf_counter()
    ok, failed = asyncio.run(main())
    return {"seconds": time.perf_counter() - t0, "ok": ok, "failed": failed, "peak_rss_mb": peak_rss_mb()}


def run_client(kind: str, url: str, n: int, teacher: dict | None = None) -> dict:
    args = [sys.executable, __file__, "--client", kind, "--url", url, "--n", str(n), "--teacher", json.dumps(teacher or {})]
    out = subprocess.run(args, capture_output=True, text=True, timeout=600)
    if out.returncode:
        raise RuntimeError(f"client {kind} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


# -- the server -------------------------------------------------------------------------------------------------
class Server:
    def __init__(self) -> None:
        self.dir = tempfile.mkdtemp()
        port_file = Path(self.dir) / "port"
        self.proc = subprocess.Popen([sys.executable, str(SERVER), "--port-file", str(port_file), "--lifetime", "900"])
        for _ in range(200):
            if port_file.exists():
                break
            time.sleep(0.05)
        self.base = f"http://127.0.0.1:{port_file.read_text()}"
        self.url = self.base + "/v1"

    def configure(self, **cfg) -> None:
        req = urllib.request.Request(self.base + "/admin/config", json.dumps(cfg).encode(), {"content-type": "application/json"})
        urllib.request.urlopen(req, timeout=10).read()

    def stats(self) -> dict:
        return json.loads(urllib.request.urlopen(self.base + "/admin/stats", timeout=10).read())

    def close(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)


# -- scenarios --------------------------------------------------------------------------------------------------
def s3_recipe_run(server: Server, n: int) -> dict:
    """S3 through the CLI: `mathforge run` on a recipe, then `mathforge retry` for what failed after max_attempts."""
    d = Path(tempfile.mkdtemp())
    with open(d / "problems.jsonl", "w") as f:
        for i in range(n):
            f.write(json.dumps({"question": f"{PROMPT} clips? #{i}", "answer": "72"}) + "\n")
    recipe = {
        "name": "bench-s3",
        "teachers": {"fake": {"backend": "openai", "model": "fake", "base_url": server.url, "api_key_env": "BENCH_KEY",
                              "max_concurrency": 768, "max_attempts": 2}},
        "stages": [{"load": {"dataset": "generic", "path": str(d / "problems.jsonl")}},
                   {"generate": {"k": 1, "max_tokens": 256, "prompt": "cot"}}],
    }
    (d / "recipe.yaml").write_text(json.dumps(recipe))
    env = dict(os.environ, BENCH_KEY="sk-bench-not-a-real-key")
    mf = [sys.executable, "-m", "mathforge"]
    run = subprocess.run(mf + ["run", str(d / "recipe.yaml"), "-o", str(d / "run")], env=env, capture_output=True,
                         text=True, timeout=600)
    if run.returncode:
        raise RuntimeError(run.stderr[-3000:])
    summary = json.loads((d / "run" / "summary.json").read_text())
    gen = summary["stages"]["generate"]
    failed_first = gen.get("failed", 0)
    server_total = server.stats()["total"]
    retry = subprocess.run(mf + ["retry", str(d / "run")], env=env, capture_output=True, text=True, timeout=600)
    if retry.returncode:
        raise RuntimeError(retry.stderr[-3000:])
    import pyarrow.parquet as pq

    from mathforge.store.ledger import Ledger

    rows = pq.read_table(d / "run" / "generate.parquet").to_pylist()
    with Ledger(d / "run" / "ledger.sqlite") as ledger:
        counts = ledger.counts()
    return {"seconds": gen["gen_seconds"], "ok_first": gen["samples"], "failed_first": failed_first,
            "resent_by_retry": server.stats()["total"] - server_total, "ok": counts.get("ok", 0),
            "failed": counts.get("failed", 0), "samples": len(rows), "unique": len({r["id"] for r in rows}),
            "teacher": gen["teachers"]["fake"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "api.md")
    ap.add_argument("--skip-20k", action="store_true")
    ap.add_argument("--client")
    ap.add_argument("--url")
    ap.add_argument("--n", type=int)
    ap.add_argument("--teacher", default="{}")
    args = ap.parse_args()
    if args.client:
        fn = client_mathforge if args.client == "mathforge" else client_baseline
        result = fn(args.url, args.n, json.loads(args.teacher)) if args.client == "mathforge" else fn(args.url, args.n)
        print(json.dumps(result))
        return

    server = Server()
    rows: list[tuple] = []
    try:
        def exmin(r: dict, n: int) -> float:
            return r["ok"] / r["seconds"] * 60 if n else 0.0

        server.configure()
        s1 = run_client("mathforge", server.url, 2000, {"max_concurrency": 1024})
        st1 = server.stats()
        print("S1 mathforge", s1, st1, flush=True)
        server.configure()
        b1 = run_client("baseline", server.url, 2000)
        print("S1 baseline", b1, flush=True)
        rows.append(("S1 no limit, 2,000 req", "mathforge (cap 1024)", f"{exmin(s1, 2000):,.0f}", f"{s1['peak_rss_mb']:.0f}",
                     f"ok {s1['ok']}, failed {s1['failed']}, server peak in flight {st1['peak_in_flight']}"))
        rows.append(("S1 no limit, 2,000 req", "AsyncOpenAI + semaphore(64)", f"{exmin(b1, 2000):,.0f}",
                     f"{b1['peak_rss_mb']:.0f}", f"ok {b1['ok']}, failed {b1['failed']}"))

        server.configure(rpm=3000, tpm=600000)
        s2 = run_client("mathforge", server.url, 3000, {"rpm": 3000, "tpm": 600000, "max_concurrency": 512})
        st2 = server.stats()
        print("S2", s2, st2, flush=True)
        r429 = st2["status"].get("429", 0)
        rows.append(("S2 3,000 RPM / 600k TPM, 3,000 req", "mathforge", f"{exmin(s2, 3000):,.0f}",
                     f"{s2['peak_rss_mb']:.0f}",
                     f"{exmin(s2, 3000) / 3000:.1%} of ceiling; failed {s2['failed']}; 429s {r429} "
                     f"({r429 / 3000:.2%} of requests)"))

        server.configure(error_rate=0.05, drop_rate=0.01, hang_rate=0.005, hang_seconds=30)
        s3 = s3_recipe_run(server, 1000)
        print("S3", s3, server.stats(), flush=True)
        t = s3["teacher"]
        rows.append(("S3 faults, 1,000 req", "mathforge run + retry", f"{s3['ok_first'] / s3['seconds'] * 60:,.0f}", "-",
                     f"first run: {s3['ok_first']} ok, {s3['failed_first']} failed after 2 attempts, "
                     f"{t['retries']} retries, {t['timeouts']} timeouts; `mathforge retry` sent {s3['resent_by_retry']}; "
                     f"final: ledger ok {s3['ok']}, failed {s3['failed']}, samples {s3['samples']} "
                     f"({s3['unique']} unique)"))

        if not args.skip_20k:
            server.configure()
            s20 = run_client("mathforge", server.url, 20000, {"max_concurrency": 1024})
            print("S1-20k", s20, flush=True)
            rows.append(("S1 no limit, 20,000 req", "mathforge (cap 1024)", f"{exmin(s20, 20000):,.0f}",
                         f"{s20['peak_rss_mb']:.0f}", f"ok {s20['ok']}, failed {s20['failed']}"))
    finally:
        server.close()
    table = ["| scenario | client | ex/min | peak client RSS (MB) | notes |", "|---|---|---|---|---|"]
    table += ["| " + " | ".join(r) + " |" for r in rows]
    print("\n".join(table))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    marker = "<!-- bench:table -->"
    text = args.out.read_text() if args.out.exists() else f"{marker}\n{marker}\n"
    head, _, rest = text.partition(marker)
    _, _, tail = rest.partition(marker)
    load = os.getloadavg()
    stamp = f"\nRun {time.strftime('%Y-%m-%d %H:%M')}, 1-min load average at the end {load[0]:.1f}, {os.cpu_count()} cores.\n\n"
    args.out.write_text(head + marker + stamp + "\n".join(table) + "\n" + marker + tail)


if __name__ == "__main__":
    main()
