"""The kill-point matrix of batch mode: a real ``mathforge run`` SIGKILLed at each point of the batch lifecycle,
then run again; the fake server's own counts say whether any request was submitted twice or lost.

Shared by ``tests/test_batch_kill.py`` and ``bench/batch.py``.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from fake_batch_server import BatchServerConfig, BatchServerThread

KEY = "sk-batch-kill-0123456789abcdef"

# point name -> (the server hold that marks it, what the ledger must hold at the kill)
POINTS: dict[str, tuple[str, set[str]]] = {
    "before upload": ("files.list", {"submitting", "pending"}),
    "upload sent, id not recorded": ("files.create", {"submitting", "pending"}),
    "uploaded, before submit": ("batches.create.before", {"submitting", "pending"}),
    "submitted, id not recorded": ("batches.create.after", {"submitting", "pending"}),
    "while polling": ("batches.retrieve", {"submitted", "pending"}),
    "while downloading": ("files.content", {"submitted", "pending", "ok"}),
}


def write_recipe(tmp: Path, url: str, n: int, *, provider: str = "openai", max_requests: int = 10) -> Path:
    with open(tmp / "problems.jsonl", "w") as f:
        for i in range(n):
            f.write(json.dumps({"question": f"What is {i} + 2?", "answer": str(i + 2)}) + "\n")
    t: dict[str, Any] = {"backend": provider, "model": "fake-batch", "base_url": url, "api_key_env": "BATCH_KILL_KEY",
                         "price_input_per_m": 2.0, "price_output_per_m": 8.0,
                         "batch": {"poll_interval": 0.05, "poll_max_interval": 0.2, "max_requests": max_requests}}
    if provider == "openai":
        t["mode"] = "batch"
    else:
        t["base_url"] = url.removesuffix("/v1")
    recipe = {"name": "batch-kill", "teachers": {"fake": t},
              "stages": [{"load": {"dataset": "generic", "path": str(tmp / "problems.jsonl")}},
                         {"generate": {"k": 1, "max_tokens": 32, "prompt": "cot"}}]}
    path = tmp / "recipe.yaml"
    path.write_text(json.dumps(recipe))
    return path


def ledger_counts(db: Path) -> dict[str, int]:
    if not db.exists():
        return {}
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10)
    try:
        return dict(con.execute("SELECT status, COUNT(*) FROM requests GROUP BY status").fetchall())
    except sqlite3.OperationalError:
        return {}
    finally:
        con.close()


def kill_at(server: BatchServerThread, point: str, tmp: Path, n: int = 30, provider: str = "openai",
            hold: str | None = None) -> dict[str, Any]:
    """Run, SIGKILL when the server reaches ``point``, run again to the end; return what both sides counted."""
    hold = hold or POINTS[point][0]
    api = server.configure(BatchServerConfig(hold=[hold]))
    recipe = write_recipe(tmp, server.url, n, provider=provider)
    run_dir = tmp / "run"
    cmd = [sys.executable, "-m", "mathforge", "run", str(recipe), "-o", str(run_dir)]
    env = dict(os.environ, BATCH_KILL_KEY=KEY)
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 90
    while hold not in server.call(lambda: set(api.reached)) and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    reached = hold in server.call(lambda: set(api.reached))
    alive = proc.poll() is None
    proc.send_signal(signal.SIGKILL)
    _, err = proc.communicate(timeout=30)
    at_kill = ledger_counts(run_dir / "ledger.sqlite")
    server.call(api.release)
    t0 = time.monotonic()
    second = subprocess.run(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, timeout=120)
    stats = server.call(api.stats)
    return {
        "point": point, "reached": reached and alive, "first_stderr": err.decode()[-2000:],
        "ledger_at_kill": at_kill, "rerun_exit": second.returncode, "rerun_stderr": second.stderr.decode()[-2000:],
        "rerun_seconds": round(time.monotonic() - t0, 2), "ledger_after": ledger_counts(run_dir / "ledger.sqlite"),
        "requests": n, "submitted": stats["requests_submitted"], "submissions": stats["submissions"],
        "duplicates": stats["duplicates"], "uploads": stats["counts"].get("uploads", 0),
        "creates": stats["counts"].get("creates", 0),
    }
