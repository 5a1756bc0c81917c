"""The engine's policies on their own: concurrency control, rate buckets, learned timeouts, backoff, redaction."""

from __future__ import annotations

import asyncio
import random
import time

from mathforge.engine import AdaptiveConcurrency, ApiError, LatencyTimeout, RateLimiter, RetryPolicy
from mathforge.engine.retry import parse_duration, redact, retry_after


def test_concurrency_slow_start_grows_only_when_the_limit_binds():
    c = AdaptiveConcurrency(cap=64, initial=4)
    c.in_use = 1
    c.on_success(1.0)
    assert c.limit == 4  # not using the slots we have: no reason to grow
    for _ in range(4):  # a round trip with every slot busy
        c.in_use = int(c.limit)
        c.on_success(1.0)
    assert c.limit == 16  # three slots per answer: quadruples per round trip
    c.in_use = 64
    for _ in range(500):
        c.on_success(1.0)
    assert c.limit == 64  # never past the cap


def test_concurrency_slow_start_ends_without_shrinking_when_recent_latency_rises():
    c = AdaptiveConcurrency(cap=4096, initial=64, window=50)
    rng = random.Random(0)
    for _ in range(200):  # latency noise within +-30% of 1 s: slow start goes on
        c.in_use = int(c.limit)
        c.on_success(rng.uniform(0.7, 1.3))
    assert c.slow_start and c.limit == 64 + 3 * 200
    assert 0.9 < c.best_median < 1.1
    grown = c.limit
    for i in range(16):  # the server starts queueing: the last 16 answers take 1.7 s
        c.in_use = int(c.limit)
        c.on_success(1.7)
        if c.slow_start:
            assert c.limit == grown + 3 * (i + 1)
    assert not c.slow_start
    assert c.limit >= grown  # ended, not shrunk: shrinking is for latency past 2x the best
    before = c.limit
    for _ in range(10):  # from now on one slot per round trip
        c.in_use = int(c.limit)
        c.on_success(1.0)
    assert before < c.limit < before + 1


def test_concurrency_halves_on_overload_then_grows_by_one_per_round_trip():
    c = AdaptiveConcurrency(cap=100)
    c.on_overload()
    assert c.limit == 50 and not c.slow_start
    c.on_overload()  # within the same round trip: the requests in flight were sent under the old limit
    assert c.limit == 50
    c.in_use = 50
    for _ in range(50):
        c.on_success(1.0)
    assert 50.9 < c.limit < 51.1


def test_concurrency_backs_off_when_latency_rises():
    c = AdaptiveConcurrency(cap=100, window=10)
    for _ in range(10):
        c.on_success(1.0)
    c._last_decrease = 0.0
    for _ in range(10):
        c.on_success(3.0)
    assert c.limit == 80


def test_concurrency_semaphore_admits_at_most_the_limit():
    async def main() -> int:
        c = AdaptiveConcurrency(cap=3)
        peak = 0

        async def worker() -> None:
            nonlocal peak
            await c.acquire()
            peak = max(peak, c.in_use)
            await asyncio.sleep(0.01)
            c.release()

        await asyncio.gather(*[worker() for _ in range(20)])
        assert c.in_use == 0
        return peak

    assert asyncio.run(main()) == 3


def test_rate_limiter_paces_requests_at_the_rpm():
    async def main() -> float:
        limiter = RateLimiter(rpm=600)  # 10 a second, 5 in the burst
        t0 = time.monotonic()
        for _ in range(15):
            await limiter.acquire(1)
        return time.monotonic() - t0

    assert 0.9 < asyncio.run(main()) < 1.5


def test_token_estimate_learns_completion_length_and_is_corrected_from_usage():
    limiter = RateLimiter(tpm=60_000)
    assert limiter.estimate(400, max_tokens=512) == 100 + 4 + 512  # before any answer: the cap
    level = limiter.tokens.level
    limiter.settle(reserved=616, used=300, completion_per_sample=196)
    assert limiter.tokens.level == level + 316  # refunded what the request did not use
    assert limiter.estimate(400, max_tokens=512) == 100 + 4 + 196


def test_headers_tighten_the_limits():
    limiter = RateLimiter(rpm=10_000)
    limiter.observe_headers({"x-ratelimit-limit-requests": "3000", "x-ratelimit-limit-tokens": "150000",
                             "x-ratelimit-remaining-requests": "0", "x-ratelimit-reset-requests": "20ms"})
    assert limiter.requests.per_minute == 3000 and limiter.tokens.per_minute == 150_000
    assert limiter.requests.level <= 0  # no burst while the server says none is left
    limiter.observe_headers({"x-ratelimit-limit-requests": "5000"})
    assert limiter.requests.per_minute == 3000  # headers only ever tighten a configured limit


def test_learned_timeout():
    t = LatencyTimeout(ceiling=60, multiplier=2.0, floor=1.0, min_samples=20)
    assert t.base() == 60  # nothing learned yet
    for i in range(100):
        t.observe(2.0 + i / 100)
    assert 5.9 < t.base() < 6.0  # 2 x p99
    assert t.for_attempt(1) == 2 * t.base() and t.for_attempt(10) == 60


def test_retry_policy_actions_and_backoff():
    p = RetryPolicy(max_attempts=5, base_delay=0.5, max_delay=4)
    for status in (408, 409, 429, 500, 502, 503, 529):
        assert p.action(ApiError("status", "x", status)) == "retry"
    for status in (401, 403, 404):
        assert p.action(ApiError("status", "x", status)) == "abort"
    assert p.action(ApiError("status", "x", 400)) == "fail"
    assert p.action(ApiError("connection", "reset")) == "retry"
    rng = random.Random(0)
    delays = [p.delay(a, rng=rng) for a in range(1, 8)]
    assert all(0.25 <= d <= 4 for d in delays) and delays[-1] >= 2
    assert p.delay(1, ApiError("status", "x", 429, retry_after=7.0)) == 7.0


def test_retry_after_and_durations():
    assert retry_after({"retry-after-ms": "250"}) == 0.25
    assert retry_after({"retry-after": "3"}) == 3.0
    assert retry_after({}) is None
    assert parse_duration("6m0s") == 360 and parse_duration("20ms") == 0.02 and parse_duration("1.5s") == 1.5


def test_redact_removes_keys():
    key = "sk-proj-abcdefghijklmnop"
    text = redact(f"Incorrect API key provided: {key}; also sk-ab***mnop and AIzaSyD-123456", [key])
    assert key not in text and "mnop" not in text and "AIza" not in text


def test_concurrency_holds_on_isolated_faults_and_shrinks_when_they_become_frequent():
    c = AdaptiveConcurrency(cap=1024, initial=64)
    for i in range(200):  # 2% of attempts fail: growth goes on
        c.in_use = int(c.limit)
        c.on_error() if i % 50 == 0 else c.on_success(1.0)
    assert c.limit > 200
    grown = c.limit
    c._last_decrease = 0.0
    for _ in range(30):  # a burst of failures: more than 20% of the last 100 attempts
        c.on_error()
    assert c.limit == grown * 0.8  # shrinks once per round trip, not once per failure
    before = c.limit
    for _ in range(20):  # still 30 bad in the last 100: no growth while the error rate is high
        c.in_use = int(c.limit)
        c.on_success(1.0)
    assert c.limit == before


def test_resend_policy_bound():
    from mathforge.engine.attempts import ResendPolicy

    p = ResendPolicy(share=0.01, calls=1000)
    assert p.allowed == 10 and not p.may_resend(tail=False) and p.may_resend(tail=True)
    p.used = 10
    assert not p.may_resend(tail=True)
    assert ResendPolicy(share=0.01, calls=40).allowed == 1 and ResendPolicy(share=0.0, calls=10**6).allowed == 0


class _NullSink:
    def __init__(self):
        self.ok = 0

    def ok_many(self, items):
        self.ok += len(items)

    def fail(self, request, error, *, final, abandoned=False):
        raise AssertionError(error)


def test_default_settings_grow_to_the_servers_capacity():
    # A server that answers everything in 1 s, 1,500 requests: the defaults grow from 64 in flight to the cap of 1,024
    # (64 -> 256 -> 1,024 by the third round trip, when 1,344 requests have been sent). Doubling per round trip would
    # peak near 540 (64, 128, 256, 512, then the 540 left).
    from mathforge.backends.base import Completion, GenRequest, SamplingParams
    from mathforge.engine import Engine, EngineConfig, Reply, make_jobs

    in_flight = peak = 0

    async def send(job):
        nonlocal in_flight, peak
        in_flight += 1
        peak = max(peak, in_flight)
        await asyncio.sleep(1.0)
        in_flight -= 1
        return Reply([Completion("x", "stop", 10, 5)], 10, 5)

    params = SamplingParams(max_tokens=16)
    reqs = [GenRequest(f"k{i}", [{"role": "user", "content": "q"}], params) for i in range(1500)]
    sink = _NullSink()
    engine = Engine("t", EngineConfig(), send, sink)
    asyncio.run(engine.run(make_jobs(reqs, 1)))
    assert sink.ok == 1500 and engine.stats.api_calls == 1500
    assert peak >= 1000 and engine.concurrency.limit >= 1000, (peak, engine.concurrency.limit)


def test_open_file_limit_is_raised_or_the_cap_fitted(monkeypatch):
    import resource

    from mathforge.backends.openai_api import fit_open_files

    limits = {"soft": 1024, "hard": 4096}
    monkeypatch.setattr(resource, "getrlimit", lambda _: (limits["soft"], limits["hard"]))
    monkeypatch.setattr(resource, "setrlimit", lambda _, v: limits.update(soft=v[0]))
    assert fit_open_files(1024, "t") == 1024 and limits["soft"] == 2 * 1024 + 256  # raised towards the hard limit
    limits.update(soft=1024, hard=1024)
    assert fit_open_files(1024, "t") == (1024 - 256) // 2  # cannot be raised: fewer in flight, said once
    assert fit_open_files(100, "t") == 100
