"""Benchmark batch mode: 10,000 requests through the fake files + batches server, and the kill-point matrix.

    python bench/batch.py [--out bench/results/batch.md] [--n 10000] [--skip-kills]

The server (tests/fake_batch_server.py) runs in a thread of this process on 127.0.0.1 with a simulated completion
time per batch (validating → in_progress → finalizing → completed); every client is a real `mathforge` command in
its own process, so its CPU time and peak RSS come from ``wait4`` and are the client's alone. The baseline is the
server's simulated completion time of one batch (the least any client could wait), measured in the same run as the
wall time. Scenarios:
  B1  `mathforge run` waiting for its batches to end (one command)
  B2  the detached flow: `mathforge run` with `max_wait: 0` (submit, exit 75), `mathforge status RUN --wait`
      (collects), `mathforge run` again (assembles the samples, submits nothing), then `mathforge retry` for the
      requests the server answered with a per-request error
  K   the kill-point matrix: `mathforge run` SIGKILLed at each point of the lifecycle, then rerun (OpenAI: 6 points,
      Anthropic Message Batches: 3)
"""

from __future__ import annotations

import argparse
import json
import os
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
from batch_kill import KEY, POINTS, kill_at  # noqa: E402
from fake_batch_server import BatchServerConfig, BatchServerThread  # noqa: E402

# A provider with lower limits than OpenAI's (50,000 requests, 200 MB): 2,000 requests or 1 MB per batch file, so
# 10,000 requests of ~700 bytes make 7+ batches and the byte limit decides.
LIMITS = {"max_requests": 2_000, "max_bytes": 1_000_000}
SERVER = BatchServerConfig(validating_s=2.0, in_progress_s=20.0, finalizing_s=3.0, error_rate=0.001, **LIMITS)
PROMPT = "Natalia sold clips to 48 of her friends in April, and then she sold half as many clips in May."


def cmd(*args: str, env: dict[str, str]) -> dict:
    """Run a mathforge command in its own process; wall, CPU (user+sys) and peak RSS from wait4."""
    t0 = time.perf_counter()
    p = subprocess.Popen([sys.executable, "-m", "mathforge", *args], env=env, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE)
    out = p.stdout.read() + p.stderr.read()  # type: ignore[union-attr]
    _, status, ru = os.wait4(p.pid, 0)
    return {"exit": os.waitstatus_to_exitcode(status), "wall": time.perf_counter() - t0,
            "cpu": ru.ru_utime + ru.ru_stime, "rss_mb": ru.ru_maxrss / 1024, "out": out.decode()[-3000:]}


def recipe(tmp: Path, url: str, n: int, **batch: object) -> Path:
    with open(tmp / "problems.jsonl", "w") as f:
        for i in range(n):
            f.write(json.dumps({"question": f"{PROMPT} How many clips in all? (case {i})", "answer": "72"}) + "\n")
    t = {"backend": "openai", "model": "fake-batch", "base_url": url, "api_key_env": "BATCH_KILL_KEY",
         "mode": "batch", "price_input_per_m": 2.5, "price_output_per_m": 10.0,
         "batch": {"poll_interval": 1.0, "poll_max_interval": 5.0, **LIMITS, **batch}}
    r = {"name": "bench-batch", "teachers": {"gpt": t},
         "stages": [{"load": {"dataset": "generic", "path": str(tmp / "problems.jsonl")}},
                    {"generate": {"k": 1, "max_tokens": 256, "prompt": "cot"}}]}
    path = tmp / "recipe.yaml"
    path.write_text(json.dumps(r))
    return path


def ledger(run: Path) -> dict[str, int]:
    con = sqlite3.connect(run / "ledger.sqlite")
    try:
        return dict(con.execute("SELECT status, COUNT(*) FROM requests GROUP BY status").fetchall())
    finally:
        con.close()


def samples(run: Path) -> tuple[int, int]:
    import pyarrow.parquet as pq

    t = pq.read_table(run / "generate.parquet", columns=["request_key"]).column(0).to_pylist()
    return len(t), len(set(t))


def simulated() -> float:
    return SERVER.validating_s + SERVER.in_progress_s + SERVER.finalizing_s


def b1(server: BatchServerThread, n: int, env: dict[str, str]) -> dict:
    api = server.configure(BatchServerConfig(**{**SERVER.__dict__}))
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        path = recipe(tmp, server.url, n)
        t0 = time.monotonic()  # the server runs in this process: its batch clocks are comparable
        r = cmd("run", str(path), "-o", str(tmp / "run"), env=env)
        end = time.monotonic()
        st = server.call(api.stats)
        created = sorted(b["t0"] for b in api.batches.values())
        if not created:
            raise SystemExit(f"B1: no batch reached the server (exit {r['exit']}):\n{r['out']}")
        r["phases"] = {"first batch created": created[0] - t0, "last batch created": created[-1] - t0,
                       "last batch completed (server)": created[-1] + simulated() - t0,
                       "exit after it": end - (created[-1] + simulated())}
        rows, unique = samples(tmp / "run") if r["exit"] == 0 else (0, 0)
        return r | {"ledger": ledger(tmp / "run"), "server": st, "samples": rows, "unique": unique,
                    "batches": st["counts"].get("creates", 0)}


def b2(server: BatchServerThread, n: int, env: dict[str, str]) -> dict:
    api = server.configure(BatchServerConfig(**{**SERVER.__dict__}))
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        run = tmp / "run"
        steps = {"run (max_wait 0)": cmd("run", str(recipe(tmp, server.url, n, max_wait=0)), "-o", str(run), env=env)}
        after_submit = ledger(run)
        steps["status --wait"] = cmd("status", str(run), "--wait", env=env)
        steps["run again"] = cmd("run", str(recipe(tmp, server.url, n)), "-o", str(run), env=env)
        first = server.call(api.stats)
        failed = ledger(run).get("failed", 0)
        server.call(lambda: setattr(api.config, "error_rate", 0.0))
        steps["retry"] = cmd("retry", str(run), env=env)
        steps["run after retry"] = cmd("run", str(recipe(tmp, server.url, n)), "-o", str(run), env=env)
        final = server.call(api.stats)
        rows, unique = samples(run)
        return {"steps": steps, "after_submit": after_submit, "first": first, "failed_first": failed,
                "final": final, "ledger": ledger(run), "samples": rows, "unique": unique,
                "max_per_request": max(api.submissions.values())}


def kills(server: BatchServerThread) -> list[dict]:
    out = []
    for point in POINTS:
        with tempfile.TemporaryDirectory() as d:
            out.append(kill_at(server, point, Path(d)) | {"provider": "openai"})
    for hold in ("batches.create.before", "batches.create.after", "files.content"):
        with tempfile.TemporaryDirectory() as d:
            name = {"batches.create.before": "before create", "batches.create.after": "created, id not recorded",
                    "files.content": "while downloading"}[hold]
            r = kill_at(server, name, Path(d), n=30, provider="anthropic", hold=hold)
            out.append(r | {"provider": "anthropic", "point": name})
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "batch.md"))
    ap.add_argument("--n", type=int, default=10_000)
    ap.add_argument("--skip-kills", action="store_true")
    args = ap.parse_args()
    env = dict(os.environ, BATCH_KILL_KEY=KEY, PYTHONPATH=str(ROOT / "src"), HF_HUB_OFFLINE="1")
    os.environ.update(env)  # the kill matrix starts its own clients
    cpu = next((ln.split(":", 1)[1].strip() for ln in subprocess.run(["lscpu"], capture_output=True, text=True)
                .stdout.splitlines() if ln.startswith("Model name")), "?")
    with BatchServerThread() as server:
        r1 = b1(server, args.n, env)
        r2 = b2(server, args.n, env)
        k = [] if args.skip_kills else kills(server)
    load = os.getloadavg()
    lines = [f"Run {time.strftime('%Y-%m-%d %H:%M')}, CPU {cpu}, {os.cpu_count()} cores, load average at the end "
             f"{load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f} (1/5/15 min; the machine is shared, so wall and CPU "
             "figures are noisy).", "",
             f"Server: {SERVER.validating_s:g} s validating + {SERVER.in_progress_s:g} s in progress + "
             f"{SERVER.finalizing_s:g} s finalizing = **{simulated():g} s simulated completion per batch** (the "
             f"baseline); limits {LIMITS['max_requests']:,} requests / {LIMITS['max_bytes']:,} bytes per batch; "
             f"{SERVER.error_rate:.1%} per-request errors.", "",
             "| scenario | requests | batches | wall (s) | wall / simulated | client CPU (s) | peak client RSS (MB) "
             "| submitted / duplicates | ledger at the end | samples (unique) |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    s1 = r1["server"]
    lines.append(f"| B1 `mathforge run`, waits | {args.n:,} | {r1['batches']} | {r1['wall']:.1f} | "
                 f"{r1['wall'] / simulated():.2f} | {r1['cpu']:.1f} | {r1['rss_mb']:.0f} | "
                 f"{s1['submissions']:,} / {s1['duplicates']} | {r1['ledger']} | {r1['samples']:,} ({r1['unique']:,}) |")
    steps = r2["steps"]
    wall2 = sum(s["wall"] for s in steps.values())
    cpu2 = sum(s["cpu"] for s in steps.values())
    rss2 = max(s["rss_mb"] for s in steps.values())
    f = r2["first"]
    lines.append(f"| B2 detached: run (exit {steps['run (max_wait 0)']['exit']}) → status --wait → run → retry → run "
                 f"| {args.n:,} | {r2['final']['counts'].get('creates', 0)} | {wall2:.1f} | {wall2 / simulated():.2f} | "
                 f"{cpu2:.1f} | {rss2:.0f} | first pass {f['submissions']:,} / {f['duplicates']}; retry re-sent "
                 f"{r2['final']['submissions'] - f['submissions']} of {r2['failed_first']} failed | {r2['ledger']} | "
                 f"{r2['samples']:,} ({r2['unique']:,}) |")
    lines += ["", "B1 timeline (seconds from the start of `mathforge run`): " + ", ".join(
        f"{k} {v:.1f}" for k, v in r1["phases"].items()) + "."]
    lines += ["", "B2 step by step:", "", "| step | exit | wall (s) | CPU (s) | peak RSS (MB) |", "|---|---|---|---|---|"]
    lines += [f"| {name} | {s['exit']} | {s['wall']:.1f} | {s['cpu']:.1f} | {s['rss_mb']:.0f} |"
              for name, s in steps.items()]
    lines += ["", f"Ledger right after the detached submit: {r2['after_submit']}; most submissions of one request over "
              f"B2 (a failed one re-sent by retry counts twice): {r2['max_per_request']}.", ""]
    if k:
        lines += ["Kill-point matrix (SIGKILL at the point, then `mathforge run` again; counts from the server):", "",
                  "| provider | killed at | ledger at the kill | rerun exit | ledger after | requests | submitted | "
                  "submissions | duplicates | uploads | creates |", "|---|---|---|---|---|---|---|---|---|---|---|"]
        for r in k:
            lines.append(f"| {r['provider']} | {r['point']}{'' if r['reached'] else ' (NOT REACHED)'} | "
                         f"{r['ledger_at_kill']} | {r['rerun_exit']} | {r['ledger_after']} | {r['requests']} | "
                         f"{r['submitted']} | {r['submissions']} | {r['duplicates']} | {r['uploads']} | "
                         f"{r['creates']} |")
    table = "\n".join(lines)
    print(table)
    for name, s in [("B1", r1)] + list(steps.items()):
        if s["exit"] not in (0, 75):
            print(f"--- {name} output ---\n{s['out']}")
    out = Path(args.out)
    text = out.read_text() if out.exists() else "# Batch mode benchmark\n\n<!-- bench:table -->\n<!-- bench:table -->\n"
    head, _, rest = text.partition("<!-- bench:table -->")
    _, _, tail = rest.partition("<!-- bench:table -->")
    out.write_text(f"{head}<!-- bench:table -->\n{table}\n<!-- bench:table -->{tail}")


if __name__ == "__main__":
    main()
