"""Anthropic Message Batches through the official SDK against the fake server: results, errors, expiry, cancel."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

pytest.importorskip("anthropic")
sys.path.insert(0, str(Path(__file__).parent))
from batch_kill import kill_at
from fake_batch_server import BatchServerConfig, BatchServerThread
from mathforge.backends import parse_teacher
from mathforge.engine.batch import BatchesInFlight
from mathforge.generate import GenerateConfig, GenerateStage
from mathforge.pipeline.context import RunContext
from mathforge.records import Problem

KEY = "sk-ant-test-0123456789abcdef"


@pytest.fixture(scope="module")
def server():
    with BatchServerThread() as srv:
        yield srv


@pytest.fixture(autouse=True)
def api_key(monkeypatch):
    monkeypatch.setenv("ANT_TEST_KEY", KEY)


def context(tmp: Path, server: BatchServerThread, n: int, **batch) -> RunContext:
    t = parse_teacher("claude", {"backend": "anthropic", "model": "claude-fake", "base_url": server.url[:-3],
                                 "api_key_env": "ANT_TEST_KEY", "price_input_per_m": 3.0, "price_output_per_m": 15.0,
                                 "batch": {"poll_interval": 0.05, "poll_max_interval": 0.2} | batch}, "test")
    ctx = RunContext(tmp / "run", teachers={"claude": t})
    ctx.write_problems("load", [Problem(id=f"p{i}", question=f"What is {i} * 3?", answer=str(3 * i)) for i in range(n)])
    return ctx


def run(ctx: RunContext) -> dict:
    return GenerateStage().run(ctx, GenerateConfig(k=2, max_tokens=32, prompt="cot", system_prompt="Be brief."))


def test_message_batches_answer_every_request_once_with_errors_failed(server, tmp_path):
    api = server.configure(BatchServerConfig(error_rate=0.25, max_requests=9))
    ctx = context(tmp_path, server, 10, max_requests=9)
    m = run(ctx)
    counts = ctx.ledger.counts()
    assert counts["ok"] + counts["failed"] == 20 and counts["failed"] > 0 and m["samples"] == counts["ok"]
    st = server.call(api.stats)
    assert st["requests_submitted"] == 20 and st["duplicates"] == 0 and st["counts"]["creates"] == 3
    body = api.requests[next(iter(api.requests))][0]["body"]
    assert body["system"] == "Be brief." and all(m["role"] != "system" for m in body["messages"])
    ok = next(ctx.ledger.rows(status="ok"))
    assert ok.text.startswith("Batch answer to " + ok.key[:12]) and ok.tokens_out == 24
    assert all(r.error.startswith("errored: invalid_request_error") for r in ctx.ledger.rows(status="failed"))
    ctx.close()


def test_cancelled_and_expired_batches_fail_only_what_did_not_run(server, tmp_path):
    api = server.configure(BatchServerConfig(in_progress_s=5.0))
    ctx = context(tmp_path, server, 4, max_wait=0)
    with pytest.raises(BatchesInFlight):
        run(ctx)
    bid = next(iter(api.batches))
    server.call(lambda: api.batches[bid].__setitem__("cancel_t", 0.0))  # cancelled at the console long ago
    ctx.close()
    ctx = context(tmp_path, server, 4)
    run(ctx)
    failed = list(ctx.ledger.rows(status="failed"))
    assert ctx.ledger.counts() == {"ok": 4, "failed": 4}  # the share that ran before the cancel is kept
    assert all(r.error.startswith("canceled") for r in failed)
    ctx.close()
    server.configure(BatchServerConfig(expire_after=0.3, partial=0.5))
    ctx = context(tmp_path / "b", server, 4)
    run(ctx)
    assert ctx.ledger.counts() == {"ok": 4, "failed": 4}
    assert all(r.error.startswith("expired") for r in ctx.ledger.rows(status="failed"))
    ctx.close()


@pytest.mark.slow
@pytest.mark.parametrize("hold", ["batches.create.before", "batches.create.after", "files.content"])
def test_kill_points_of_message_batches(server, tmp_path, hold, monkeypatch):
    monkeypatch.setenv("BATCH_KILL_KEY", KEY)
    r = kill_at(server, hold, tmp_path, n=20, provider="anthropic", hold=hold)
    assert r["reached"], r["first_stderr"]
    assert r["rerun_exit"] == 0, r["rerun_stderr"]
    assert r["ledger_after"] == {"ok": 20}
    assert r["duplicates"] == 0 and r["submitted"] == r["submissions"] == 20
