"""End to end with the real SmolLM2: a tiny recipe, its run directory, resume from the ledger, and SIGKILL."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import yaml

from mathforge.pipeline.recipe import parse_recipe, run_recipe
from tests.conftest import requires_smollm2

QUESTIONS = [
    ("Tom has 4 apples and buys 3 more. How many apples does he have?", 7),
    ("A box holds 6 pens. How many pens are in 2 boxes?", 12),
    ("Sara had 10 dollars and spent 4. How many dollars are left?", 6),
    ("There are 5 birds and 3 fly away. How many birds remain?", 2),
    ("Each of 3 children gets 5 sweets. How many sweets in total?", 15),
    ("A train travels 20 miles an hour for 2 hours. How far does it go?", 40),
]


def write_problems(path: Path, n: int) -> Path:
    with open(path, "w") as fh:
        for q, a in QUESTIONS[:n]:
            fh.write(json.dumps({"question": q, "answer": f"Some reasoning.\n#### {a}"}) + "\n")
    return path


def recipe(data_path: Path, *, k: int, max_tokens: int, batch_size: int = 8) -> dict:
    return {
        "name": "tiny",
        "teachers": {"smollm2": {"backend": "local", "model": "smollm2", "batch_size": batch_size}},
        "stages": [
            {"load": {"dataset": "gsm8k", "path": str(data_path)}},
            {"generate": {"k": k, "max_tokens": max_tokens, "temperature": 0.7}},
            {"verify": {}},
            {"export": {}},
        ],
    }


@requires_smollm2
def test_tiny_recipe_writes_run_directory_and_reruns_from_ledger(tmp_path, smollm2_backend):
    data = write_problems(tmp_path / "p.jsonl", 2)
    run = tmp_path / "run"
    summary = run_recipe(parse_recipe(recipe(data, k=2, max_tokens=32)), run)
    for name in ("recipe.yaml", "ledger.sqlite", "problems.parquet", "generate.parquet", "verified.parquet",
                 "summary.json", "export/sft.jsonl", "export/sft.parquet"):
        assert (run / name).exists(), name
    assert summary["problems"] == 2 and summary["samples"] == 4 and summary["requests_sent"] == 4
    verified = pq.read_table(run / "verified.parquet").to_pylist()
    assert len({r["id"] for r in verified}) == 4
    for r in verified:
        assert r["tokens_out"] <= 32 and r["method"] and r["correct"] in (True, False, None)
        assert r["gold"] in ("7", "12")
    exported = [json.loads(line) for line in open(run / "export/sft.jsonl")]
    assert len(exported) == sum(r["correct"] is True for r in verified) == summary["accepted"]
    effective = yaml.safe_load((run / "recipe.yaml").read_text())
    assert effective["stages"][1]["generate"]["top_p"] == 0.95  # defaults filled in

    again = run_recipe(parse_recipe(recipe(data, k=2, max_tokens=32)), run)
    assert again["requests_sent"] == 0 and again["requests_cached"] == 4
    assert pq.read_table(run / "verified.parquet").to_pylist() == verified

    more = run_recipe(parse_recipe(recipe(data, k=3, max_tokens=32)), run)  # k 2 -> 3 sends only the new sample
    assert more["requests_sent"] == 2 and more["samples"] == 6


@requires_smollm2
def test_sigkill_mid_generation_then_resume(tmp_path):
    data = write_problems(tmp_path / "p.jsonl", 6)
    run = tmp_path / "run"
    rfile = tmp_path / "r.yaml"
    rfile.write_text(yaml.safe_dump(recipe(data, k=2, max_tokens=24, batch_size=2)))
    cmd = [sys.executable, "-m", "mathforge", "run", str(rfile), "--run-dir", str(run)]
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    ledger = run / "ledger.sqlite"
    done_before = 0
    deadline = time.time() + 240
    while time.time() < deadline and proc.poll() is None:
        if ledger.exists():
            try:
                with sqlite3.connect(ledger) as con:
                    done_before = con.execute("SELECT COUNT(*) FROM requests WHERE status='ok'").fetchone()[0]
            except sqlite3.OperationalError:
                pass
            if done_before >= 2:
                break
        time.sleep(0.2)
    assert proc.poll() is None, "the run finished before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    with sqlite3.connect(ledger) as con:
        before = dict(con.execute("SELECT key, text FROM requests WHERE status='ok'").fetchall())
    assert 2 <= len(before) < 12

    out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=400)
    assert out.returncode == 0, out.stderr[-2000:]
    summary = json.loads((run / "summary.json").read_text())
    assert summary["requests_cached"] == len(before)
    assert summary["requests_sent"] == 12 - len(before)  # only what had no stored response
    with sqlite3.connect(ledger) as con:
        after = dict(con.execute("SELECT key, text FROM requests WHERE status='ok'").fetchall())
    assert len(after) == 12 and all(after[k] == v for k, v in before.items())
    samples = pq.read_table(run / "generate.parquet").to_pylist()
    assert len(samples) == 12 and len({s["id"] for s in samples}) == 12
