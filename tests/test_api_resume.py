"""Exactly once through the whole stage: SIGKILL and resume, k 4 -> 8, parameter changes, `mathforge retry`."""

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
import pytest
from typer.testing import CliRunner

sys.path.insert(0, str(Path(__file__).parent))
from fake_openai_server import ServerConfig, ServerThread
from mathforge.cli.main import app
from mathforge.errors import ConfigError
from mathforge.generate import GenerateConfig, GenerateStage, plan_requests
from mathforge.pipeline.context import RunContext
from mathforge.pipeline.recipe import load_recipe
from mathforge.records import PROBLEM_SCHEMA, Problem
from mathforge.store.shards import ShardWriter
from mathforge.store.ledger import Ledger

KEY = "sk-resume-test-key-0123456789"


@pytest.fixture(scope="module")
def server():
    with ServerThread(lifetime=240) as srv:
        yield srv


@pytest.fixture(autouse=True)
def api_key(monkeypatch):
    monkeypatch.setenv("RESUME_TEST_KEY", KEY)


def write_recipe(tmp: Path, url: str, n: int, *, k: int = 1, **teacher) -> Path:
    with open(tmp / "problems.jsonl", "w") as f:
        for i in range(n):
            f.write(json.dumps({"question": f"What is {i} + 2?", "answer": str(i + 2)}) + "\n")
    recipe = {
        "name": "api-test",
        "teachers": {"fake": {"backend": "openai", "model": "fake", "base_url": url, "api_key_env": "RESUME_TEST_KEY",
                              **teacher}},
        "stages": [{"load": {"dataset": "generic", "path": str(tmp / "problems.jsonl")}},
                   {"generate": {"k": k, "max_tokens": 64, "prompt": "cot"}}],
    }
    path = tmp / "recipe.yaml"
    path.write_text(json.dumps(recipe))
    return path


def ok_keys(db: Path) -> set[str]:
    if not db.exists():
        return set()
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10)
    try:
        return {k for (k,) in con.execute("SELECT key FROM requests WHERE status='ok'")}
    except sqlite3.OperationalError:  # not created yet
        return set()
    finally:
        con.close()


@pytest.mark.slow
def test_sigkill_then_resume_never_resends_a_stored_response(server, tmp_path):
    fake = server.configure(ServerConfig(base_latency=0.25, per_token=0.001, min_completion=20, max_completion=40))
    recipe = write_recipe(tmp_path, server.url, 150, max_concurrency=8)
    run_dir, db = tmp_path / "run", tmp_path / "run" / "ledger.sqlite"
    cmd = [sys.executable, "-m", "mathforge", "run", str(recipe), "-o", str(run_dir)]
    env = dict(os.environ, RESUME_TEST_KEY=KEY)
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while len(ok_keys(db)) < 40 and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait(10)
    stored = ok_keys(db)
    assert 40 <= len(stored) < 150, "the kill should land mid-run"
    first_run_requests = fake.total

    fake = server.configure(ServerConfig(base_latency=0.05, per_token=0.001, min_completion=20, max_completion=40))
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert not {k[:16] for k in stored} & set(fake.requests), "a stored response was asked for again"
    assert fake.total == 150 - len(stored) and max(fake.requests.values()) == 1
    assert first_run_requests >= len(stored)
    rows = pq.read_table(run_dir / "generate.parquet").to_pylist()
    assert len(rows) == 150 and len({r["id"] for r in rows}) == 150
    assert ok_keys(db) >= stored and len(ok_keys(db)) == 150


def test_raising_k_sends_only_new_samples_and_params_change_keys(server, tmp_path):
    fake = server.configure(ServerConfig(base_latency=0.02, per_token=0.0, min_completion=10, max_completion=20))
    recipe = load_recipe(str(write_recipe(tmp_path, server.url, 5)))
    ctx = RunContext(tmp_path / "run", teachers=recipe.teachers)
    ctx.write_problems("problems", [Problem(f"p{i}", f"What is {i} + 2?", str(i + 2)) for i in range(5)])
    stage = GenerateStage()
    try:
        m4 = stage.run(ctx, GenerateConfig(k=4, max_tokens=32))
        assert m4["sent"] == 20 and fake.total == 20 and m4["samples"] == 20
        first = set(fake.requests)
        fake = server.configure(ServerConfig(base_latency=0.02, per_token=0.0, min_completion=10, max_completion=20))
        m8 = stage.run(ctx, GenerateConfig(k=8, max_tokens=32))
        assert m8["cached"] == 20 and m8["sent"] == 20 and fake.total == 20 and not first & set(fake.requests)
        samples = ctx.samples()
        assert len(samples) == 40 and len({s["id"] for s in samples}) == 40
        base = {p.request.key for p in plan_requests(ctx, ctx.problems(), GenerateConfig(k=8, max_tokens=32))}
        for change in ({"temperature": 0.2}, {"top_p": 0.9}, {"max_tokens": 33}, {"seed": 7}, {"stop": ["\n\n"]}):
            cfg = GenerateConfig(k=8, max_tokens=32).model_copy(update=change)
            assert not base & {p.request.key for p in plan_requests(ctx, ctx.problems(), cfg)}, change
    finally:
        ctx.close()


def test_retry_command_resends_only_failed(server, tmp_path):
    fake = server.configure(ServerConfig(base_latency=0.02, per_token=0.0, min_completion=10, max_completion=20,
                                         script=[500, 500]))
    recipe = write_recipe(tmp_path, server.url, 12, max_concurrency=1, max_attempts=1)
    runner = CliRunner()
    res = runner.invoke(app, ["run", str(recipe), "-o", str(tmp_path / "run")])
    assert res.exit_code == 3, res.output  # failed requests: a distinct exit code, and what to do about it
    assert "2 failed" in res.output and "mathforge retry" in res.output
    with Ledger(tmp_path / "run" / "ledger.sqlite") as ledger:
        failed = {r.key for r in ledger.rows(status="failed")}
        assert len(failed) == 2 and ledger.counts()["ok"] == 10
    fake = server.configure(ServerConfig(base_latency=0.02, per_token=0.0, min_completion=10, max_completion=20))
    res = runner.invoke(app, ["retry", str(tmp_path / "run")])
    assert res.exit_code == 0, res.output
    assert set(fake.requests) == {k[:16] for k in failed} and fake.total == 2
    with Ledger(tmp_path / "run" / "ledger.sqlite") as ledger:
        assert ledger.counts() == {"ok": 12}
    assert pq.read_table(tmp_path / "run" / "generate.parquet").num_rows == 12
    saved = (tmp_path / "run" / "recipe.yaml").read_text()
    assert KEY not in saved and "RESUME_TEST_KEY" in saved


def test_bundled_openai_recipe_validates():
    recipe = load_recipe("openai-teachers")
    assert {t.backend for t in recipe.teachers.values()} == {"openai"}
    assert recipe.teachers["qwen-local"].api_key_env is None and recipe.teachers["gpt4o-mini"].n_per_request == 4
    generate = next(cfg for name, _, cfg in recipe.stages if name == "generate")
    assert set(generate.teachers) <= set(recipe.teachers) and len(generate.teachers) == 2


def test_teachers_run_at_once_each_under_its_own_limit(server, tmp_path):
    fake = server.configure(ServerConfig(base_latency=0.05, per_token=0.0, min_completion=10, max_completion=20))
    teachers = {name: {"backend": "openai", "model": name, "base_url": server.url, "api_key_env": "RESUME_TEST_KEY",
                       "rpm": rpm} for name, rpm in (("slow", 600), ("fast", 2400))}
    recipe = {"name": "two", "teachers": teachers, "stages": [{"generate": {"k": 2, "max_tokens": 32}}]}
    (tmp_path / "two.yaml").write_text(json.dumps(recipe))
    parsed = load_recipe(str(tmp_path / "two.yaml"))
    ctx = RunContext(tmp_path / "run", teachers=parsed.teachers)
    ctx.write_problems("problems", [Problem(f"p{i}", f"What is {i} + 2?", str(i + 2)) for i in range(15)])
    try:
        m = GenerateStage().run(ctx, GenerateConfig(k=2, max_tokens=32))
    finally:
        ctx.close()
    slow, fast = m["teachers"]["slow"], m["teachers"]["fast"]
    assert slow["done"] == fast["done"] == 30 and fake.total == 60 and fake.status.get(429, 0) == 0
    # 30 requests at 10/s (after a 5-request burst) take ~2.5 s; at 40/s under 1 s: both ran, each at its own pace
    assert slow["ex_per_min"] < 900 < fast["ex_per_min"]


def test_generate_in_windows_over_problem_shards_resumes_per_shard(server, tmp_path):
    """Problems in 3 shards, requests sent in windows of 4: the samples are the unwindowed ones; after a failure
    in the last shard, the rerun keeps the finished shards (not re-planned) and sends only what is missing."""
    fake = server.configure(ServerConfig(base_latency=0.01, per_token=0.0, min_completion=5, max_completion=10))
    recipe = load_recipe(str(write_recipe(tmp_path, server.url, 1)))
    ctx = RunContext(tmp_path / "run", teachers=recipe.teachers)
    writer = ShardWriter(ctx.path("problems.parquet"), PROBLEM_SCHEMA, rows_per_shard=4)
    writer.write(Problem(f"p{i}", f"What is {i} + 2?", str(i + 2)).to_row() for i in range(10))
    writer.commit()
    ctx.add_file("problems", "problems", "problems.parquet")
    stage = GenerateStage()
    cfg = GenerateConfig(k=2, max_tokens=16, window=4)
    real = GenerateStage._windows
    calls: list[int] = []

    def failing(self, ctx, cfg, source, shard, *rest):
        calls.append(shard)
        if shard == 2:
            raise RuntimeError("killed in shard 2")
        yield from real(self, ctx, cfg, source, shard, *rest)

    try:
        GenerateStage._windows = failing
        with pytest.raises(RuntimeError):
            stage.run(ctx, cfg)
        GenerateStage._windows = real
        sent_before = fake.total
        assert sent_before == 16 and calls == [0, 1, 2]  # shards 0 and 1 (8 problems x k=2) were sent
        m = stage.run(ctx, cfg)
        assert m["shards_reused"] == 2 and m["sent"] == 4 and fake.total == 20 and m["samples"] == 20
        samples = ctx.samples()
        whole = [p.request.key for p in plan_requests(ctx, ctx.problems(), GenerateConfig(k=2, max_tokens=16))]
        assert sorted(s["request_key"] for s in samples) == sorted(whole) and len(set(whole)) == 20
        assert (tmp_path / "run" / "generate.parquet" / "_manifest.json").exists()
    finally:
        GenerateStage._windows = real
        ctx.close()


def test_a_window_is_gone_before_the_next_is_planned(server, tmp_path, monkeypatch):
    """Memory holds one window: when a window is planned, no request of an earlier window is alive. Both ways they
    lived on are covered: the generator kept the last window's plan while planning the next (two windows at once),
    and each finished send task's context held its attempt, a cycle that kept every window's requests until a full
    garbage collection."""
    import weakref

    import mathforge.generate as generate

    server.configure(ServerConfig(base_latency=0.0, per_token=0.0, min_completion=2, max_completion=4))
    recipe = load_recipe(str(write_recipe(tmp_path, server.url, 1)))
    ctx = RunContext(tmp_path / "run", teachers=recipe.teachers)
    writer = ShardWriter(ctx.path("problems.parquet"), PROBLEM_SCHEMA)
    writer.write(Problem(f"p{i}", f"What is {i} + 2?", str(i + 2)).to_row() for i in range(12))
    writer.commit()
    ctx.add_file("problems", "problems", "problems.parquet")
    real, earlier, alive = generate.plan_requests, [], []

    def plan(*args, **kwargs):
        alive.append(sum(r() is not None for r in earlier))
        planned = real(*args, **kwargs)
        earlier.extend(weakref.ref(p.request) for p in planned)
        return planned

    monkeypatch.setattr(generate, "plan_requests", plan)
    try:
        m = GenerateStage().run(ctx, GenerateConfig(k=2, max_tokens=8, window=6))
    finally:
        ctx.close()
    assert alive == [0, 0, 0, 0] and m["samples"] == 24


def test_twin_teachers_are_refused_before_anything_is_sent(server, tmp_path):
    fake = server.configure(ServerConfig(base_latency=0.02, per_token=0.0, min_completion=10, max_completion=20))
    twin = {"backend": "openai", "model": "fake", "base_url": server.url, "api_key_env": "RESUME_TEST_KEY"}
    recipe = {"name": "twins", "teachers": {"a": twin, "b": dict(twin, rpm=600)},
              "stages": [{"generate": {"k": 2, "max_tokens": 32}}]}
    (tmp_path / "twins.yaml").write_text(json.dumps(recipe))
    parsed = load_recipe(str(tmp_path / "twins.yaml"))
    ctx = RunContext(tmp_path / "run", teachers=parsed.teachers)
    ctx.write_problems("problems", [Problem("p0", "What is 1 + 2?", "3")])
    try:
        with pytest.raises(ConfigError, match="teachers 'a' and 'b' are the same model 'fake' at .*identical samples"):
            GenerateStage().run(ctx, GenerateConfig(k=2, max_tokens=32))
    finally:
        ctx.close()
    assert fake.total == 0


def test_summary_counts_every_http_call(server, tmp_path):
    fake = server.configure(ServerConfig(base_latency=0.02, per_token=0.0, min_completion=10, max_completion=20,
                                         script=[500, 502]))
    recipe = write_recipe(tmp_path, server.url, 6, max_concurrency=1)
    res = CliRunner().invoke(app, ["run", str(recipe), "-o", str(tmp_path / "run")])
    assert res.exit_code == 0, res.output
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["requests_sent"] == 6 and summary["api_calls"] == 8 == fake.total
    assert summary["api_calls_abandoned"] == 0
    assert summary["stages"]["generate"]["teachers"]["fake"]["calls_per_answer"] == round(8 / 6, 4)
