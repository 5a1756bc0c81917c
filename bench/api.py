"""Benchmark the OpenAI-compatible teacher engine against the scripted test server (tests/fake_openai_server.py).

    python bench/api.py [--out bench/results/api.md] [--skip-20k]

The server runs in its own process and every client run in a fresh process of its own, so the peak RSS reported
(``ru_maxrss``) is the client's alone. Scenarios (server latency 0.8 s + 10 ms per completion token, 100-200 tokens):
  S1   no limit, 2,000 requests
  S2   3,000 RPM / 600,000 TPM enforced by the server, 3,000 requests
  S3   5% 5xx, 1% dropped connections, 0.5% 30 s hangs, 1,000 requests
Each runs `mathforge run` on a recipe with default settings (what a README reader gets) and with tuned settings; S1
also runs a plain AsyncOpenAI + semaphore(64) loop as the baseline; S3 then runs `mathforge retry`.
  S1-20k  peak RSS for 20,000 requests under S1 (library API, tuned)
Every row reports calls per kept answer from the server's own count of requests it received.
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


def client_cli(url: str, n: int, teacher: dict) -> dict:
    """What a README reader runs: `mathforge run` on a recipe (the CLI's own code path, in this process)."""
    from mathforge.cli.main import app

    d = Path(tempfile.mkdtemp())
    with open(d / "problems.jsonl", "w") as f:
        for i in range(n):
            f.write(json.dumps({"question": f"{PROMPT} clips? #{i}", "answer": "72"}) + "\n")
    recipe = {
        "name": "bench",
        "teachers": {"fake": {"backend": "openai", "model": "fake", "base_url": url, "api_key_env": "BENCH_KEY",
                              **teacher}},
        "stages": [{"load": {"dataset": "generic", "path": str(d / "problems.jsonl")}},
                   {"generate": {"k": 1, "max_tokens": 256, "prompt": "cot"}}],
    }
    (d / "recipe.yaml").write_text(json.dumps(recipe))
    os.environ["BENCH_KEY"] = "sk-bench-not-a-real-key"
    try:
        app(["run", str(d / "recipe.yaml"), "-o", str(d / "run")], standalone_mode=False)
    except SystemExit as exc:
        if exc.code:
            raise
    summary = json.loads((d / "run" / "summary.json").read_text())
    gen = summary["stages"]["generate"]
    t = gen["teachers"]["fake"]
    return {"seconds": gen["gen_seconds"], "ok": gen["samples"], "failed": gen.get("failed", 0),
            "api_calls": summary["api_calls"], "abandoned": summary["api_calls_abandoned"], "retries": t["retries"],
            "timeouts": t["timeouts"], "resends": t["resends"], "rate_limited": t["rate_limited_429"],
            "http_client": t["http_client"], "run_dir": str(d / "run"), "peak_rss_mb": peak_rss_mb()}


def client_baseline(url: str, n: int, teacher: dict | None = None, concurrency: int = 64) -> dict:
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
        for _ in range(1200):  # up to a minute on a busy machine
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
DEFAULTS: dict = {}  # what a README reader writes: no concurrency, limit or retry settings
TUNED = {
    "S1": {"max_concurrency": 1024, "initial_concurrency": 1024},
    "S2": {"rpm": 3000, "tpm": 600000, "max_concurrency": 512},
    "S3": {"max_concurrency": 768, "initial_concurrency": 768, "max_attempts": 2},
}
SERVER_CONFIG = {
    "S1": {},
    "S2": {"rpm": 3000, "tpm": 600000},
    "S3": {"error_rate": 0.05, "drop_rate": 0.01, "hang_rate": 0.005, "hang_seconds": 30},
}
SIZE = {"S1": 2000, "S2": 3000, "S3": 1000}
TITLE = {"S1": "S1 no limit, 2,000 req", "S2": "S2 3,000 RPM / 600k TPM, 3,000 req",
         "S3": "S3 faults, 1,000 req"}


def settings(teacher: dict) -> str:
    return ", ".join(f"{k}: {v}" for k, v in teacher.items()) or "defaults"


def retry_run(server: Server, run_dir: str) -> tuple[int, int]:
    """`mathforge retry` on a run directory: (requests the server received, requests answered in the ledger)."""
    before = server.stats()["total"]
    env = dict(os.environ, BENCH_KEY="sk-bench-not-a-real-key")
    out = subprocess.run([sys.executable, "-m", "mathforge", "retry", run_dir], env=env, capture_output=True, text=True,
                         timeout=600)
    if out.returncode:
        raise RuntimeError(out.stderr[-3000:])
    from mathforge.store.ledger import Ledger

    with Ledger(Path(run_dir) / "ledger.sqlite") as ledger:
        return server.stats()["total"] - before, ledger.counts().get("ok", 0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "api.md")
    ap.add_argument("--skip-20k", action="store_true")
    ap.add_argument("--only", nargs="*", help="scenarios to run (S1 S2 S3)")
    ap.add_argument("--scale", type=float, default=1.0, help="fraction of each scenario's requests (smoke runs)")
    ap.add_argument("--client")
    ap.add_argument("--url")
    ap.add_argument("--n", type=int)
    ap.add_argument("--teacher", default="{}")
    args = ap.parse_args()
    if args.client:
        fn = {"mathforge": client_mathforge, "cli": client_cli, "baseline": client_baseline}[args.client]
        print(json.dumps(fn(args.url, args.n, json.loads(args.teacher))))
        return

    server = Server()
    rows: list[tuple] = []
    load: list[float] = []
    try:
        for sc in args.only or ["S1", "S2", "S3"]:
            n = max(10, int(SIZE[sc] * args.scale))
            for label, teacher in (("defaults", DEFAULTS), ("tuned", TUNED[sc])):
                server.configure(**SERVER_CONFIG[sc])
                r = run_client("cli", server.url, n, teacher)
                st = server.stats()
                load.append(os.getloadavg()[0])
                print(sc, label, r, st, flush=True)
                exmin = r["ok"] / r["seconds"] * 60
                notes = [f"ok {r['ok']}, failed {r['failed']}", f"server peak in flight {st['peak_in_flight']}"]
                if sc == "S2":
                    r429 = st["status"].get("429", 0)
                    notes = [f"{exmin / 3000:.1%} of the 3,000/min ceiling", f"failed {r['failed']}",
                             f"429s {r429} ({r429 / st['total']:.2%} of calls)"]
                if sc == "S3":
                    resent, ok_final = retry_run(server, r["run_dir"])
                    notes += [f"{r['retries']} retries", f"{r['timeouts']} overdue", f"{r['resends']} early re-sends",
                              f"{r['abandoned']} abandoned", f"`mathforge retry` sent {resent}, ledger ok {ok_final}"]
                if r["api_calls"] != st["total"]:
                    notes.append(f"client counted {r['api_calls']} calls")
                notes.append(r["http_client"])
                rows.append((TITLE[sc], f"`mathforge run` ({settings(teacher)})", f"{exmin:,.0f}",
                             f"{r['peak_rss_mb']:.0f}", f"{st['total'] / r['ok']:.3f}" if r["ok"] else "-",
                             "; ".join(notes)))
            if sc == "S1":
                server.configure()
                b = run_client("baseline", server.url, n)
                st = server.stats()
                print("S1 baseline", b, st, flush=True)
                rows.append((TITLE[sc], "AsyncOpenAI + semaphore(64) (baseline)", f"{b['ok'] / b['seconds'] * 60:,.0f}",
                             f"{b['peak_rss_mb']:.0f}", f"{st['total'] / b['ok']:.3f}" if b["ok"] else "-",
                             f"ok {b['ok']}, failed {b['failed']}"))
        if not args.skip_20k:
            server.configure()
            s20 = run_client("mathforge", server.url, 20000, TUNED["S1"])
            st = server.stats()
            print("S1-20k", s20, flush=True)
            rows.append(("S1 no limit, 20,000 req", f"library API ({settings(TUNED['S1'])})",
                         f"{s20['ok'] / s20['seconds'] * 60:,.0f}", f"{s20['peak_rss_mb']:.0f}",
                         f"{st['total'] / s20['ok']:.3f}", f"ok {s20['ok']}, failed {s20['failed']}"))
    finally:
        server.close()
    table = ["| scenario | client and settings | ex/min | peak client RSS (MB) | calls per kept answer | notes |",
             "|---|---|---|---|---|---|"]
    table += ["| " + " | ".join(r) + " |" for r in rows]
    print("\n".join(table))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    marker = "<!-- bench:table -->"
    text = args.out.read_text() if args.out.exists() else f"{marker}\n{marker}\n"
    head, _, rest = text.partition(marker)
    _, _, tail = rest.partition(marker)
    cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")), "?")
    stamp = (f"\nRun {time.strftime('%Y-%m-%d %H:%M')} on {cpu}, {os.cpu_count()} cores; 1-min load average after "
             f"each scenario: {', '.join(f'{x:.1f}' for x in load)}.\n\n")
    args.out.write_text(head + marker + stamp + "\n".join(table) + "\n" + marker + tail)


if __name__ == "__main__":
    main()
