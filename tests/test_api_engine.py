"""The OpenAI-compatible teacher against the scripted test server: every retry, limit and failure policy."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from fake_openai_server import DROP, HANG, ServerConfig, ServerThread
from mathforge.backends.base import GenRequest, SamplingParams
from mathforge.backends.openai_api import OpenAIBackend, OpenAIConfig
from mathforge.errors import BackendError
from mathforge.generate import LedgerSink
from mathforge.store.ledger import Ledger

KEY = "sk-test-0123456789abcdef"
FAST = dict(base_latency=0.05, per_token=0.0005, min_completion=20, max_completion=40)


@pytest.fixture(scope="module")
def server():
    with ServerThread(lifetime=240) as srv:
        yield srv


@pytest.fixture(autouse=True)
def api_key(monkeypatch):
    monkeypatch.setenv("TEST_OPENAI_KEY", KEY)


def requests(n: int, tag: str = "r", max_tokens: int = 64) -> list[GenRequest]:
    params = SamplingParams(temperature=0.7, top_p=1.0, max_tokens=max_tokens, seed=0)
    return [GenRequest(f"{tag}{i:06d}".ljust(64, "0"), [{"role": "user", "content": f"What is {i} + 1?"}], params, 0)
            for i in range(n)]


def run(server: ServerThread, tmp_path, reqs: list[GenRequest], **teacher):
    """Send ``reqs`` through a fresh backend and ledger; returns (sink, ledger, error or None)."""
    cfg = OpenAIConfig(model="fake", base_url=teacher.pop("base_url", server.url), api_key_env="TEST_OPENAI_KEY",
                       **teacher)
    ledger = Ledger(tmp_path / f"ledger-{time.monotonic_ns()}.sqlite")
    ledger.register((r.key, "t", "fake", {"n": i}) for i, r in enumerate(reqs))
    sink = LedgerSink(ledger)
    try:
        OpenAIBackend("t", cfg).generate(reqs, sink)
        return sink, ledger, None
    except BackendError as exc:
        return sink, ledger, exc


def test_all_answered_once_with_usage(server, tmp_path):
    fake = server.configure(ServerConfig(**FAST))
    sink, ledger, err = run(server, tmp_path, requests(40))
    assert err is None
    rows = list(ledger.rows())
    assert {r.status for r in rows} == {"ok"} and len(rows) == 40
    assert all(r.attempts == 1 and r.tokens_out and r.tokens_in and r.text for r in rows)
    assert fake.total == 40 and max(fake.requests.values()) == 1
    assert sink.stats.done == 40 and sink.stats.tokens_out == sum(r.tokens_out for r in rows)


@pytest.mark.parametrize("mode,low,high", [("s", 1.0, 3.0), ("ms", 0.3, 0.9)])
def test_429_waits_for_retry_after(server, tmp_path, mode, low, high):
    fake = server.configure(ServerConfig(**FAST, script=[429], retry_after=mode))
    t0 = time.monotonic()
    sink, ledger, err = run(server, tmp_path, requests(1), max_concurrency=1)
    waited = time.monotonic() - t0
    assert err is None and sink.stats.rate_limited == 1 and sink.stats.retries == 1
    assert low <= waited < high, waited
    assert ledger.get(requests(1)[0].key).attempts == 2 and fake.total == 2


def test_transient_errors_are_retried(server, tmp_path):
    fake = server.configure(ServerConfig(**FAST, script=[500, 502, 503, 408, 409, DROP]))
    sink, ledger, err = run(server, tmp_path, requests(6), max_concurrency=1)
    assert err is None
    assert ledger.counts() == {"ok": 6}
    assert sink.stats.retries == 6 and fake.total == 12


def test_hung_request_is_abandoned_at_the_learned_timeout(server, tmp_path):
    # 30 quick answers teach a ~0.2 s latency; the hang is then cut at the 2 s floor instead of the 60 s ceiling.
    fake = server.configure(ServerConfig(**FAST, script=[200] * 30 + [HANG], hang_seconds=60))
    t0 = time.monotonic()
    sink, ledger, err = run(server, tmp_path, requests(40), max_concurrency=4, timeout=60)
    assert err is None and ledger.counts() == {"ok": 40}
    assert sink.stats.timeouts == 1 and fake.total == 41
    assert time.monotonic() - t0 < 10


def test_gives_up_after_max_attempts_and_retry_resends_only_failed(server, tmp_path):
    reqs = requests(5)
    fake = server.configure(ServerConfig(**FAST, fail_keys=[reqs[2].key[:16]]))
    sink, ledger, err = run(server, tmp_path, reqs, max_concurrency=1, max_attempts=3)
    assert err is None
    failed = list(ledger.rows(status="failed"))
    assert len(failed) == 1 and failed[0].key == reqs[2].key and failed[0].attempts == 3 and "gave up after 3 attempts" in failed[0].error
    assert "500" in failed[0].error and sink.failed == 1
    # what `mathforge retry` does: failed back to pending, then only those are sent
    fake = server.configure(ServerConfig(**FAST))
    assert ledger.reset_failed() == 1
    pending = [r for r in reqs if ledger.get(r.key).status == "pending"]
    OpenAIBackend("t", OpenAIConfig(model="fake", base_url=server.url, api_key_env="TEST_OPENAI_KEY")).generate(
        pending, LedgerSink(ledger))
    assert ledger.counts() == {"ok": 5} and fake.total == 1
    assert set(fake.requests) == {failed[0].key[:16]}


def test_rejected_key_fails_fast_and_never_reaches_the_ledger(server, tmp_path):
    fake = server.configure(ServerConfig(**FAST, api_key="sk-the-right-key-000000"))
    sink, ledger, err = run(server, tmp_path, requests(20), max_concurrency=1)
    assert err is not None and str(err).startswith("teacher t: API key rejected (401)")
    assert "$TEST_OPENAI_KEY" in str(err)
    assert fake.total == 1  # no retry of an auth error
    dump = repr([(r.request, r.error, r.response) for r in ledger.rows()]) + str(err)
    assert KEY not in dump and KEY[-4:] not in dump and "sk-t" not in dump


def test_unknown_model_fails_fast_naming_model_and_endpoint(server, tmp_path):
    server.configure(ServerConfig(**FAST, models=["other"]))
    _, _, err = run(server, tmp_path, requests(3), max_concurrency=1)
    assert err is not None and "(404)" in str(err) and "'fake'" in str(err) and server.url in str(err)


def test_bad_request_fails_that_request_only(server, tmp_path):
    fake = server.configure(ServerConfig(**FAST, script=[400]))
    sink, ledger, err = run(server, tmp_path, requests(4), max_concurrency=1)
    assert err is None and ledger.counts() == {"ok": 3, "failed": 1} and fake.total == 4
    assert "400" in next(ledger.rows(status="failed")).error


def test_unreachable_endpoint_names_teacher_and_url(tmp_path, server):
    url = "http://127.0.0.1:9/v1"
    t0 = time.monotonic()
    _, ledger, err = run(server, tmp_path, requests(3), base_url=url)  # default attempts and concurrency
    assert time.monotonic() - t0 < 5
    assert err is not None and "teacher t: could not reach" in str(err) and url in str(err)
    assert "ConnectionRefused" in str(err) and "event loop" not in str(err)
    assert set(ledger.counts()) == {"pending"}  # nothing lost: a rerun sends them


def test_rpm_is_never_exceeded(server, tmp_path):
    fake = server.configure(ServerConfig(**FAST, rpm=1200))
    t0 = time.monotonic()
    sink, ledger, err = run(server, tmp_path, requests(60), rpm=1200)
    took = time.monotonic() - t0
    assert err is None and ledger.counts() == {"ok": 60}
    assert fake.status.get(429, 0) == 0
    assert took >= (60 - 10) / 20 * 0.95  # 20 a second after a half-second burst


def test_limits_are_learned_from_headers(server, tmp_path):
    # No rpm configured: the first burst meets 429s, then the x-ratelimit headers set the pace.
    fake = server.configure(ServerConfig(**FAST, rpm=1200, retry_after="ms"))
    sink, ledger, err = run(server, tmp_path, requests(120), max_concurrency=32)
    assert err is None and ledger.counts() == {"ok": 120}
    first_burst = 32 - 20
    assert sink.stats.rate_limited <= first_burst + 10, sink.stats.rate_limited


def test_budget_cap_stops_cleanly(server, tmp_path):
    fake = server.configure(ServerConfig(**FAST))
    # ~30 output tokens a request at $1,000 per million: 3 cents each, so a 25-cent cap admits a handful.
    sink, ledger, err = run(server, tmp_path, requests(50, max_tokens=40), max_concurrency=2, price_output_per_m=1000,
                            budget=0.25)
    assert err is None
    counts = ledger.counts()
    assert 3 <= counts["ok"] <= 12 and counts["pending"] == 50 - counts["ok"] and "failed" not in counts
    assert sink.stats.stopped == "budget $0.25 reached" and sink.stats.spend <= 0.25
    assert fake.total == counts["ok"]


def test_n_per_request_batches_samples(server, tmp_path):
    fake = server.configure(ServerConfig(**FAST))
    params = SamplingParams(temperature=0.7, top_p=1.0, max_tokens=64, seed=0)
    reqs = [GenRequest(f"p{p}s{i}".ljust(64, "0"), [{"role": "user", "content": f"problem {p}"}], params, i)
            for p in range(3) for i in range(4)]
    sink, ledger, err = run(server, tmp_path, reqs, n_per_request=4)
    assert err is None and ledger.counts() == {"ok": 12}
    assert fake.total == 3 and sink.stats.api_calls == 3
    rows = ledger.get_many([r.key for r in reqs])
    assert sorted(rows[r.key].response["choice"] for r in reqs[:4]) == [0, 1, 2, 3]
    assert sink.stats.tokens_out == sum(r.tokens_out for r in rows.values())
