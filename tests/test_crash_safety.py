"""SIGKILL a whole recipe run (load → generate → verify → export) at 20 random moments, then let it finish.

Figures printed at the end (run with ``-s``): answers lost, samples duplicated, requests re-paid and how many of
those were in flight at a kill. The claim: 0 lost, 0 duplicated, and every re-paid request was in flight.
"""

from __future__ import annotations

import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest

sys.path.insert(0, str(Path(__file__).parent))
from fake_openai_server import ServerConfig, ServerThread

N, KILLS = 300, 20
# ~35 s of generation at 4 requests at a time: most kills land mid-generation, the last ones in verify or export
SLOW = ServerConfig(base_latency=0.4, per_token=0.002, min_completion=10, max_completion=30)


def ok_keys(db: Path) -> set[str]:
    if not db.exists():
        return set()
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10)
    try:
        return {k[:16] for (k,) in con.execute("SELECT key FROM requests WHERE status='ok'")}
    except sqlite3.OperationalError:  # not created yet
        return set()
    finally:
        con.close()


def write_recipe(tmp: Path, url: str) -> Path:
    with open(tmp / "problems.jsonl", "w") as f:
        for i in range(N):
            f.write(json.dumps({"question": f"What is {i} + 5?", "answer": "5" if i % 3 else str(i + 5)}) + "\n")
    recipe = {"name": "crash",
              "teachers": {"fake": {"backend": "openai", "model": "fake", "base_url": url, "api_key_env": None,
                                    # no early re-sends: this test counts every second send as a repay
                                    "max_concurrency": 4, "resend_share": 0}},
              "stages": [{"load": {"dataset": "generic", "path": str(tmp / "problems.jsonl")}},
                         {"generate": {"k": 1, "max_tokens": 40, "prompt": "cot"}},
                         {"verify": {"workers": 1}},
                         {"export": {"formats": ["jsonl"]}}]}
    (tmp / "recipe.yaml").write_text(json.dumps(recipe))
    return tmp / "recipe.yaml"


def kill_at(proc: subprocess.Popen, db: Path, stored: int, rng: random.Random) -> None:
    """SIGKILL at a random point: after a random number of new answers while generation lasts (process start-up
    time varies too much on a loaded machine for a timer), else after a random delay (verify, export, or done)."""
    deadline = time.monotonic() + 120
    if stored < N:
        target = stored + rng.randint(5, 40)
        while len(ok_keys(db)) < target and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
        time.sleep(rng.uniform(0, 0.3))
    else:
        time.sleep(rng.uniform(0.5, 8.0))
    proc.send_signal(signal.SIGKILL)


def export_is_whole(run: Path) -> bool:
    """export/ is absent or a complete folder (card, flat file and the chat split files)."""
    out = run / "export"
    if not out.exists():
        return True
    return (out / "README.md").exists() and (out / "sft.jsonl").exists() and (out / "chat" / "train.jsonl").exists()


@pytest.mark.slow
def test_twenty_random_sigkills_lose_nothing_duplicate_nothing_repay_only_in_flight(tmp_path):
    rng = random.Random(13)
    run, db = tmp_path / "run", tmp_path / "run" / "ledger.sqlite"
    cmd = [sys.executable, "-m", "mathforge", "run", str(tmp_path / "recipe.yaml"), "-o", str(run)]
    sent_total, in_flight_total, repaid = 0, set(), 0
    kills_in_generate = 0
    with ServerThread(lifetime=900) as server:
        write_recipe(tmp_path, server.url)
        for _ in range(KILLS):
            fake = server.configure(SLOW)
            stored_before = ok_keys(db)
            proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            kill_at(proc, db, len(stored_before), rng)
            proc.wait(30)
            stored_after = ok_keys(db)
            asked = dict(fake.requests)
            assert not set(asked) & stored_before, "a stored answer was paid for again"
            assert not asked or max(asked.values()) == 1, "one process sent a request twice"
            repaid += len(set(asked) & in_flight_total)
            in_flight_total |= set(asked) - stored_after  # sent, never stored: lost in flight at the kill
            sent_total += fake.total
            kills_in_generate += 0 < len(stored_after) < N and bool(asked)
            assert export_is_whole(run)
            if (run / "state.json").exists():
                json.loads((run / "state.json").read_text())
        fake = server.configure(SLOW)
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr[-3000:]
        repaid += len(set(fake.requests) & in_flight_total)
        sent_total += fake.total
    samples = pq.read_table(run / "generate.parquet").to_pylist()
    verified = pq.read_table(run / "verified.parquet").to_pylist()
    exported = [json.loads(line) for line in (run / "export" / "sft.jsonl").read_text().splitlines()]
    lost = N - len(ok_keys(db))
    duplicated = (len(samples) - len({s["id"] for s in samples})) + (len(exported) - len({e["id"] for e in exported}))
    print(f"\ncrash safety: {KILLS} SIGKILLs ({kills_in_generate} mid-generation), {sent_total} requests sent for "
          f"{N} answers, {lost} lost, {duplicated} duplicated, {repaid} re-paid, "
          f"{len(in_flight_total)} in flight at a kill")
    assert lost == 0 and duplicated == 0 and len(samples) == len(verified) == N
    assert sent_total == N + repaid and repaid <= len(in_flight_total)
    assert len(exported) == sum(v["correct"] is True for v in verified)
    assert kills_in_generate >= 5, "the kills should land during generation too"
    assert not [p for p in run.iterdir() if ".mf-tmp" in p.name or ".mf-old" in p.name]
