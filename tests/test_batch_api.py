"""Teachers in ``mode: batch`` against a fake files + batches server: packing, results, errors, expiry, retry, budget."""

from __future__ import annotations

import json
import sqlite3
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from fake_batch_server import BatchServerConfig, BatchServerThread
from mathforge.backends import parse_teacher
from mathforge.engine.batch import BatchesInFlight
from mathforge.engine.cost import read_costs
from mathforge.generate import GenerateConfig, GenerateStage, retry_failed_requests
from mathforge.pipeline.context import RunContext
from mathforge.records import Problem
from mathforge.store.batches import BatchStore
from mathforge.store.ledger import Ledger

KEY = "sk-batch-test-0123456789abcdef"
FAST = dict(poll_interval=0.05, poll_max_interval=0.2)


@pytest.fixture(scope="module")
def server():
    with BatchServerThread() as srv:
        yield srv


@pytest.fixture(autouse=True)
def api_key(monkeypatch):
    monkeypatch.setenv("BATCH_TEST_KEY", KEY)


def teacher(url: str, **batch) -> dict:
    return {"backend": "openai", "model": "fake-batch", "base_url": url, "api_key_env": "BATCH_TEST_KEY",
            "mode": "batch", "price_input_per_m": 2.0, "price_output_per_m": 8.0, "batch": FAST | batch}


def context(tmp: Path, url: str, n: int, **cfg) -> RunContext:
    extra = {k: cfg.pop(k) for k in ("budget",) if k in cfg}
    t = parse_teacher("t", teacher(url, **cfg) | extra, "test")
    ctx = RunContext(tmp / "run", teachers={"t": t})
    ctx.write_problems("load", [Problem(id=f"p{i}", question=f"What is {i} + {i}?", answer=str(2 * i))
                                for i in range(n)])
    return ctx


def run(ctx: RunContext, k: int = 1) -> dict:
    return GenerateStage().run(ctx, GenerateConfig(k=k, max_tokens=32, prompt="cot"))


def statuses(ctx: RunContext) -> dict[str, int]:
    return ctx.ledger.counts()


def test_batches_split_by_limits_and_every_answer_lands_once(server, tmp_path):
    api = server.configure(BatchServerConfig(max_requests=7, max_bytes=5_000))
    ctx = context(tmp_path, server.url, 20, max_requests=7, max_bytes=5_000)
    m = run(ctx, k=2)
    assert m["samples"] == 40 and m["missing"] == 0
    st = server.call(api.stats)
    assert st["requests_submitted"] == 40 and st["duplicates"] == 0
    # 40 requests of ~600 bytes: the byte limit (not the 7-request limit) decides, every file within both
    assert st["counts"]["creates"] >= 40 / 7
    assert all(len(ls) <= 7 and sum(len(json.dumps(x)) + 1 for x in ls) <= 5_000 for ls in api.requests.values())
    rows = list(ctx.ledger.rows(status="ok"))
    assert all(r.text.startswith("Batch answer to " + r.key[:12]) for r in rows)
    assert not list((tmp_path / "run" / "batches").glob("*.jsonl"))  # collected batches leave no files behind
    # a rerun pays nothing and submits nothing
    run(ctx, k=2)
    assert server.call(api.stats)["submissions"] == 40
    ctx.close()


def test_per_request_errors_become_failed_rows_that_retry_resends_in_batch_or_online(server, tmp_path):
    api = server.configure(BatchServerConfig(error_rate=0.3))
    ctx = context(tmp_path, server.url, 30)
    m = run(ctx)
    failed = [r for r in ctx.ledger.rows(status="failed")]
    assert failed and m["missing"] == len(failed) and all("simulated invalid request" in r.error for r in failed)
    assert server.call(api.stats)["submissions"] == 30
    # `mathforge retry`: only the failed ones go out again, in a new batch (the server now answers them all)
    server.configure(BatchServerConfig(error_rate=0.0))
    (tmp_path / "run" / "recipe.yaml").write_text(json.dumps({
        "name": "b", "teachers": {"t": teacher(server.url)},
        "stages": [{"generate": {"k": 1, "max_tokens": 32, "prompt": "cot"}}]}))
    ctx.close()
    out = retry_failed_requests(tmp_path / "run")
    assert out["generate"]["sent"] == len(failed) and out["generate"]["missing"] == 0
    st = server.call(api.stats)
    assert st["requests_submitted"] == len(failed) and st["duplicates"] == 0


def test_expired_and_cancelled_batches_keep_what_was_answered(server, tmp_path):
    api = server.configure(BatchServerConfig(expire_after=0.3, partial=0.5))
    ctx = context(tmp_path, server.url, 10)
    m = run(ctx)
    counts = statuses(ctx)
    assert counts == {"ok": 5, "failed": 5} and m["samples"] == 5
    assert all("expired" in r.error for r in ctx.ledger.rows(status="failed"))
    assert server.call(api.stats)["submissions"] == 10
    ctx.close()
    # cancelled at the provider's console while `mathforge run` was away: the answered share is kept
    api = server.configure(BatchServerConfig(in_progress_s=5.0))
    ctx = context(tmp_path / "c", server.url, 6, max_wait=0)
    with pytest.raises(BatchesInFlight):
        run(ctx)
    ctx.close()
    bid = next(iter(api.batches))
    server.call(lambda: api.batches[bid].__setitem__("cancel_t", 0.0))
    ctx = context(tmp_path / "c", server.url, 6)
    run(ctx)
    assert statuses(ctx) == {"ok": 3, "failed": 3}
    assert all("cancelled" in r.error for r in ctx.ledger.rows(status="failed"))
    assert server.call(api.stats)["submissions"] == 6
    ctx.close()


def test_failed_batch_marks_its_requests_failed_with_the_providers_reason(server, tmp_path):
    server.configure(BatchServerConfig(max_requests=3))  # the provider's limit is lower than the client's
    ctx = context(tmp_path, server.url, 5)
    run(ctx)
    failed = list(ctx.ledger.rows(status="failed"))
    assert len(failed) == 5 and all("5 requests, over 3" in r.error for r in failed)
    ctx.close()


def test_exit_while_in_flight_and_resume_collects_without_resubmitting(server, tmp_path):
    api = server.configure(BatchServerConfig(in_progress_s=1.0))
    ctx = context(tmp_path, server.url, 8, max_wait=0)
    with pytest.raises(BatchesInFlight) as exc:
        run(ctx)
    assert exc.value.exit_code == 75 and "8 requests" in str(exc.value)
    assert statuses(ctx) == {"submitted": 8}
    ctx.close()
    ctx = context(tmp_path, server.url, 8)  # same run directory, now willing to wait
    m = run(ctx)
    assert m["samples"] == 8 and server.call(api.stats)["submissions"] == 8
    ctx.close()


def test_budget_cap_refuses_a_batch_that_could_pass_it(server, tmp_path):
    api = server.configure(BatchServerConfig())
    # worst case per request: (~90 prompt tokens × $2 + 32 × $8) / 1e6 × 0.5 ≈ $0.0002; 20 requests ≈ $0.0045
    ctx = context(tmp_path, server.url, 20, budget=0.002)
    m = run(ctx)
    sent = server.call(api.stats)["submissions"]
    assert 0 < sent < 20 and statuses(ctx)["pending"] == 20 - sent
    costs = read_costs(tmp_path / "run" / "ledger.sqlite", {"t": ctx.teachers["t"]})["t"]
    assert costs.spent <= 0.002 and costs.pending == 20 - sent and costs.pending_cost > 0
    assert costs.batch_factor == 0.5 and costs.answered_in_batch == sent
    assert "budget $0.0020 reached" in (m["teachers"]["t"]["stopped"] or "")
    # the live line: spend, in flight, projection (pending at the mean completion so far) and the cap
    line = ctx.backend("t").runner(ctx.ledger).line()
    assert f"spent ${costs.spent:.4f}" in line and f"projected ${costs.projected_total:.4f} of budget $0.0020" in line
    ctx.close()


def test_old_ledger_is_migrated_in_place(tmp_path):
    db = tmp_path / "ledger.sqlite"
    con = sqlite3.connect(db)
    con.executescript("""CREATE TABLE requests (key TEXT PRIMARY KEY, teacher TEXT NOT NULL, model TEXT NOT NULL,
        request TEXT NOT NULL, status TEXT NOT NULL DEFAULT 'pending', attempts INTEGER NOT NULL DEFAULT 0, text TEXT,
        finish_reason TEXT, tokens_in INTEGER, tokens_out INTEGER, response TEXT, error TEXT, latency REAL,
        created REAL NOT NULL, updated REAL NOT NULL);
        INSERT INTO requests VALUES ('k1','t','m','{}','ok',1,'hi','stop',3,4,NULL,NULL,0.1,0,0);""")
    con.commit()
    con.close()
    with Ledger(db) as ledger:
        store = BatchStore(ledger)
        assert ledger.get("k1").text == "hi" and store.open_batches() == []
        assert ledger.query("SELECT batch_id FROM requests") == [(None,)]


def test_retry_online_resends_batch_failures_through_the_online_path(server, tmp_path):
    """`mathforge retry RUN --mode online`: batch failures re-sent as ordinary chat calls, never as a batch."""
    from typer.testing import CliRunner

    from mathforge.cli.main import app

    api = server.configure(BatchServerConfig(error_rate=0.4))
    ctx = context(tmp_path, server.url, 12)
    run(ctx)
    failed = {r.key for r in ctx.ledger.rows(status="failed")}
    assert failed
    t = teacher(server.url)
    (tmp_path / "run" / "recipe.yaml").write_text(json.dumps({
        "name": "b", "teachers": {"t": t}, "stages": [{"generate": {"k": 1, "max_tokens": 32, "prompt": "cot"}}]}))
    ctx.close()
    res = CliRunner().invoke(app, ["retry", str(tmp_path / "run"), "--mode", "online"])
    assert res.exit_code == 0, res.output
    assert dict(api.online) == {k[:16]: 1 for k in failed}
    assert server.call(api.stats)["submissions"] == 12  # nothing more went through the batch API
    with Ledger(tmp_path / "run" / "ledger.sqlite") as ledger:
        assert ledger.counts() == {"ok": 12}
        costs = read_costs(ledger.path, {"t": parse_teacher("t", t, "t")})["t"]
        assert costs.answered_in_batch == 12 - len(failed)


def test_status_command_collects_batches_a_run_left_in_flight(server, tmp_path):
    from typer.testing import CliRunner

    from mathforge.cli.main import app

    api = server.configure(BatchServerConfig(in_progress_s=0.6))
    ctx = context(tmp_path, server.url, 6, max_wait=0)
    with pytest.raises(BatchesInFlight):
        run(ctx)
    ctx.close()
    (tmp_path / "run" / "recipe.yaml").write_text(json.dumps({  # as the run wrote it: max_wait 0
        "name": "b", "teachers": {"t": teacher(server.url, max_wait=0)}, "stages": []}))
    first = CliRunner().invoke(app, ["status", str(tmp_path / "run"), "--no-collect"])
    assert first.exit_code == 75 and "submitted" in first.output
    res = CliRunner().invoke(app, ["status", str(tmp_path / "run"), "--wait"])
    assert res.exit_code == 0, res.output
    assert "collected 6 results" in res.output and "cost (USD)" in res.output
    with Ledger(tmp_path / "run" / "ledger.sqlite") as ledger:
        assert ledger.counts() == {"ok": 6}
    assert server.call(api.stats)["submissions"] == 6


def test_report_shows_batch_prices_spend_and_projection(server, tmp_path):
    from mathforge.report.build import build_report

    server.configure(BatchServerConfig())
    ctx = context(tmp_path, server.url, 6)
    run(ctx)
    ctx.close()
    t = teacher(server.url) | {"budget": 5.0}
    (tmp_path / "run" / "recipe.yaml").write_text(json.dumps({"name": "b", "teachers": {"t": t}, "stages": []}))
    with Ledger(tmp_path / "run" / "ledger.sqlite") as ledger:  # two more planned but never sent
        ledger.register([("k-a", "t", "fake-batch", {"messages": [{"role": "user", "content": "x" * 400}],
                                                     "params": {"max_tokens": 32}}),
                         ("k-b", "t", "fake-batch", {"messages": [{"role": "user", "content": "y" * 400}],
                                                     "params": {"max_tokens": 32}})])
    metrics = build_report([tmp_path / "run"], tmp_path / "report")
    u = metrics["runs"][0]["usage"]["t"]
    assert u["mode"] == "batch" and u["in_batch"] == 6 and u["pending"] == 2 and u["budget"] == 5.0
    assert u["cost"] == pytest.approx((u["tokens_in"] * 2.0 + u["tokens_out"] * 8.0) / 1e6 * 0.5)
    # pending: 2 × (400/4 + 8 in at $2, 24 out (the mean so far) at $8) at half price
    assert u["projected"] == pytest.approx(u["cost"] + 2 * (108 * 2.0 + 24 * 8.0) / 1e6 * 0.5)
    html = (tmp_path / "report" / "index.html").read_text()
    assert 'id="cost"' in html and "×0.5" in html and "$2 / $8" in html


def test_a_request_over_the_byte_limit_fails_alone(server, tmp_path):
    api = server.configure(BatchServerConfig())
    t = parse_teacher("t", teacher(server.url, max_bytes=2_000), "test")
    ctx = RunContext(tmp_path / "run", teachers={"t": t})
    ctx.write_problems("load", [Problem(id="long", question="Why? " * 500, answer="1"),
                                Problem(id="short", question="What is 1 + 1?", answer="2")])
    m = run(ctx)
    assert m["samples"] == 1 and statuses(ctx) == {"ok": 1, "failed": 1}
    (bad,) = ctx.ledger.rows(status="failed")
    assert "over the batch file limit max_bytes=2000" in bad.error and bad.attempts == 0
    assert server.call(api.stats)["submissions"] == 1
    ctx.close()


def test_status_collects_only_under_the_run_lock(server, tmp_path):
    from typer.testing import CliRunner

    from mathforge.cli.main import app
    from mathforge.pipeline.lock import RunLock

    server.configure(BatchServerConfig())
    ctx = context(tmp_path, server.url, 2)
    run(ctx)
    ctx.close()
    (tmp_path / "run" / "recipe.yaml").write_text(json.dumps({"name": "b", "teachers": {"t": teacher(server.url)},
                                                              "stages": []}))
    script = ("import sys, time; from mathforge.pipeline.lock import RunLock; RunLock(sys.argv[1]).acquire(); "
              "print('locked', flush=True); time.sleep(60)")
    import subprocess

    holder = subprocess.Popen([sys.executable, "-c", script, str(tmp_path / "run")], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        busy = CliRunner().invoke(app, ["status", str(tmp_path / "run")])
        assert busy.exit_code == 4 and "another mathforge process" in busy.output
        assert CliRunner().invoke(app, ["status", str(tmp_path / "run"), "--no-collect"]).exit_code == 0
    finally:
        holder.kill()
        holder.wait()
    RunLock(tmp_path / "run").acquire().release()  # the killed holder left no stale lock
