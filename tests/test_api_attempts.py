"""Pay once: no answered request is re-sent, early re-sends stay within their bound, every HTTP call is counted,
and a 200 that is no answer is a retryable failure of that one request (issues 18 and 11)."""

from __future__ import annotations

import asyncio
import math
import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from fake_openai_server import HANG, HTML, NO_CHOICES, NULL_CONTENT, ServerConfig, ServerThread
from mathforge.engine import Pricing
from mathforge.generate import LedgerSink
from test_api_engine import KEY, requests, run

FAST = dict(base_latency=0.05, per_token=0.0005, min_completion=20, max_completion=40)
SLOW_BODY = 200  # scripted as a normal answer; ``body_delay`` makes every answer's body late


@pytest.fixture(scope="module")
def server():
    with ServerThread(lifetime=240) as srv:
        yield srv


@pytest.fixture(autouse=True)
def api_key(monkeypatch):
    monkeypatch.setenv("TEST_OPENAI_KEY", KEY)


class StallingSink(LedgerSink):
    """A CPU-starved client: once ``stall_at`` answers are in, every event-loop iteration blocks for ``seconds``
    (``rounds`` times), so each step of reading a response waits that long, while the server, in its own thread,
    goes on answering within a second."""

    def __init__(self, ledger, stall_at: int, seconds: float, rounds: int):
        super().__init__(ledger)
        self.answered, self.stall_at, self.seconds, self.rounds, self.stalls = 0, stall_at, seconds, rounds, 0

    def ok_many(self, items):
        super().ok_many(items)
        self.answered += len(items)
        if self.answered >= self.stall_at and not self.stalls:
            loop = asyncio.get_running_loop()

            def burn(left: int) -> None:
                time.sleep(self.seconds)
                self.stalls += 1
                if left > 1:
                    loop.call_soon(burn, left - 1)  # runs in the next iteration: one block per iteration

            loop.call_soon(burn, self.rounds)


def ledger_calls(ledger) -> tuple[int, int]:
    rows = list(ledger.rows())
    return sum(r.attempts for r in rows), sum(ledger.calls()[t]["abandoned"] for t in ledger.calls())


def test_starved_client_never_resends_an_answered_request(server, tmp_path, monkeypatch):
    # Headers first, the body 50 ms later (as a busy server's writes often arrive): reading a response takes several
    # loop iterations, each 1.2 s long while starved, so the client needs 3-5 s for answers sent within 0.8 s.
    fake = server.configure(ServerConfig(base_latency=0.1, per_token=0.01, min_completion=10, max_completion=60,
                                         body_delay=0.05))
    reqs = requests(120)
    sinks = []

    def make_sink(ledger):
        # starved in the tail (every request sent, the last ones in flight: where re-sends happen)
        sinks.append(StallingSink(ledger, stall_at=100, seconds=1.2, rounds=6))
        return sinks[-1]

    monkeypatch.setattr("test_api_engine.LedgerSink", make_sink)
    # Every call may be re-sent (share 1.0), so only the latency measurement stands between an answer and a re-send.
    sink, ledger, err = run(server, tmp_path, reqs, max_concurrency=16, resend_share=1.0)
    assert err is None and ledger.counts() == {"ok": 120}
    st = sink.stats
    assert sinks and sinks[0].stalls == 6
    assert fake.total == 120 and max(fake.requests.values()) == 1  # the server's own count: nothing re-sent
    assert st.api_calls == 120 and st.abandoned == 0 and st.resends == 0 and st.timeouts == 0
    assert ledger_calls(ledger) == (120, 0)


def test_answer_that_started_arriving_is_never_abandoned(server, tmp_path):
    # 40 quick answers teach a 2 s timeout; then 20 answers whose headers come at once and whose body takes 3 s.
    fake = server.configure(ServerConfig(**FAST))
    sink, ledger, err = run(server, tmp_path, requests(40, tag="a"), max_concurrency=8)
    assert err is None
    fake = server.configure(ServerConfig(**FAST, body_delay=3.0))
    backend_reqs = requests(20, tag="b")
    ledger.register((r.key, "t", "fake", {}) for r in backend_reqs)
    from mathforge.backends.openai_api import OpenAIBackend, OpenAIConfig
    from mathforge.engine import runner

    learned = {}
    original = runner.Engine.run

    async def seeded_run(self, jobs):  # the second run starts from what the first one learned
        for latency in learned["latencies"]:
            self.timeouts.observe(latency)
        return await original(self, jobs)

    learned["latencies"] = [0.06] * 40
    runner.Engine.run = seeded_run
    try:
        cfg = OpenAIConfig(model="fake", base_url=server.url, api_key_env="TEST_OPENAI_KEY", max_concurrency=8,
                           resend_share=1.0)
        sink2 = LedgerSink(ledger)
        t0 = time.monotonic()
        OpenAIBackend("t", cfg).generate(backend_reqs, sink2)
    finally:
        runner.Engine.run = original
    assert time.monotonic() - t0 >= 3.0 * (20 / 8) * 0.9  # the bodies really were slow
    assert fake.total == 20 and sink2.stats.abandoned == 0 and sink2.stats.resends == 0
    assert sink2.stats.timeouts == 0 and ledger.counts() == {"ok": 60}


def test_hung_requests_resend_bound_and_exact_counts(server, tmp_path):
    # The last 20 requests to arrive hang 8 s: the run's tail. 1% of 200 calls = 2 early re-sends, no more.
    fake = server.configure(ServerConfig(**FAST, script=[200] * 180 + [HANG] * 20, hang_seconds=8))
    t0 = time.monotonic()
    sink, ledger, err = run(server, tmp_path, requests(200, max_tokens=64), price_input_per_m=1.0,
                            price_output_per_m=100.0)
    took = time.monotonic() - t0
    assert err is None and ledger.counts() == {"ok": 200}
    st = sink.stats
    assert st.resends == math.ceil(0.01 * 200) == 2  # the bound, reached and held
    assert 2 <= st.timeouts <= 20 and st.abandoned == 2  # each re-send won its race; the hung copy was cut
    # every HTTP attempt counted, and the counts match the server's own count of calls exactly
    assert fake.total == st.api_calls == 202 == st.answered_calls + st.abandoned + st.error_calls
    assert ledger_calls(ledger) == (202, 2)
    assert sum(1 for r in ledger.rows() if r.attempts == 2) == 2
    assert took < 20  # the 18 others were waited for (patience), not re-sent
    # the abandoned copies stay charged at their worst case: prompt estimate and all of max_tokens
    chars = len(requests(1)[0].messages[0]["content"])
    worst = Pricing(1.0, 100.0).cost(chars // 4 + 4, 64)
    assert st.maybe_billed_cost == pytest.approx(2 * worst, rel=0.1)


def test_resends_off_waits_for_every_hung_request(server, tmp_path):
    fake = server.configure(ServerConfig(**FAST, script=[200] * 30 + [HANG] * 2, hang_seconds=2.5))
    sink, ledger, err = run(server, tmp_path, requests(32), max_concurrency=8, resend_share=0.0)
    assert err is None and ledger.counts() == {"ok": 32}
    assert fake.total == 32 and sink.stats.resends == 0 and sink.stats.abandoned == 0


def test_malformed_200s_are_retried_per_request(server, tmp_path):
    fake = server.configure(ServerConfig(**FAST, script=[HTML, NO_CHOICES, NULL_CONTENT]))
    sink, ledger, err = run(server, tmp_path, requests(6), max_concurrency=1)
    assert err is None and ledger.counts() == {"ok": 6}
    assert all(r.text for r in ledger.rows())  # never an empty answer recorded as ok
    st = sink.stats
    assert fake.total == 9 == st.api_calls and st.error_calls == 3 and st.retries == 3
    assert ledger_calls(ledger) == (9, 0)


def test_persistently_malformed_request_fails_alone_with_its_reason(server, tmp_path):
    reqs = requests(8)
    fake = server.configure(ServerConfig(**FAST, html_keys=[reqs[3].key[:16]]))
    sink, ledger, err = run(server, tmp_path, reqs, max_concurrency=2, max_attempts=3)
    assert err is None and ledger.counts() == {"ok": 7, "failed": 1}
    failed = next(ledger.rows(status="failed"))
    assert failed.key == reqs[3].key and failed.attempts == 3
    assert "gave up after 3 attempts" in failed.error and "not JSON" in failed.error and "text/html" in failed.error
    assert fake.total == 10
