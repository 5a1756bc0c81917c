"""The engine loop: admit each API call through budget, concurrency and rate limits, send it, commit or retry it.

One asyncio task per call in progress (never one per request up front, so 20,000 requests cost no more memory than
the calls in flight). Answers are handed to the sink in batches at the end of each event-loop tick: committed as
they arrive, one SQLite transaction for all that arrived together. A watchdog abandons attempts that outlive their
learned timeout. Auth and model errors stop the teacher at once with everything answered so far kept.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Awaitable, Callable, Mapping, Sequence

from mathforge.backends.base import Completion, GenRequest, ResultSink
from mathforge.engine.accounting import Budget, Pricing, TeacherStats
from mathforge.engine.concurrency import AdaptiveConcurrency
from mathforge.engine.jobs import Job
from mathforge.engine.limits import RateLimiter
from mathforge.engine.retry import FATAL_STATUS, ApiError, RetryPolicy
from mathforge.engine.timeouts import LatencyTimeout
from mathforge.errors import BackendError

BAD_REQUESTS_BEFORE_ABORT = 5  # this many 400s before any success: the teacher's config, not the prompts, is wrong


@dataclass
class Reply:
    """What one call returned: a completion per request of the job, billed tokens, response headers."""

    completions: list[Completion]
    tokens_in: int
    tokens_out: int
    headers: Mapping[str, str] = field(default_factory=dict)


Send = Callable[[Job], Awaitable[Reply]]


@dataclass
class EngineConfig:
    rpm: float | None = None
    tpm: float | None = None
    max_concurrency: int = 128
    initial_concurrency: int | None = None
    timeout: float = 600.0  # ceiling of the learned per-attempt timeout
    timeout_multiplier: float = 2.0
    min_timeout: float = 2.0
    max_attempts: int = 6
    backoff_base: float = 0.5
    backoff_max: float = 30.0
    pricing: Pricing = field(default_factory=Pricing)
    budget: float | None = None


class Engine:
    """Runs one teacher's jobs to completion (or failure, or the budget cap), reporting each request to the sink."""

    def __init__(self, name: str, config: EngineConfig, send: Send, sink: ResultSink, *,
                 stats: TeacherStats | None = None, endpoint: str = ""):
        self.name, self.config, self.send, self.sink, self.endpoint = name, config, send, sink, endpoint
        self.stats = stats or TeacherStats()
        self.limiter = RateLimiter(config.rpm, config.tpm)
        # With a known rate limit the limiter paces the calls; concurrency only needs to cover the latency.
        initial = None if self.limiter.active else config.initial_concurrency
        self.concurrency = AdaptiveConcurrency(config.max_concurrency, initial)
        self.timeouts = LatencyTimeout(config.timeout, config.timeout_multiplier, config.min_timeout)
        self.policy = RetryPolicy(config.max_attempts, config.backoff_base, config.backoff_max)
        self.budget = Budget(config.budget, config.pricing, spent=self.stats.prior_spend)
        self._fatal: BaseException | None = None
        self._successes = 0
        self._last_success = 0.0
        self._bad_requests = 0
        self._active = 0
        self._tasks: set[asyncio.Task] = set()
        self._dispatched = False
        self._finished: asyncio.Event | None = None
        self._inflight: dict[asyncio.Future, tuple[float, int]] = {}
        self._expired: set[asyncio.Future] = set()
        self._buffer: list[tuple[GenRequest, Completion]] = []
        self._flush_scheduled = False

    async def run(self, jobs: Sequence[Job]) -> TeacherStats:
        """Send every job; raise BackendError when the teacher cannot be used at all."""
        self._finished = asyncio.Event()
        self.stats.started = time.monotonic()
        watchdog = asyncio.create_task(self._watchdog())
        dispatcher = asyncio.create_task(self._dispatch(jobs))
        try:
            await self._finished.wait()
            if dispatcher.done() and not dispatcher.cancelled() and dispatcher.exception():
                raise dispatcher.exception()  # type: ignore[misc]
        finally:
            pending = [dispatcher, watchdog, *self._tasks]
            for t in pending:
                t.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
            self._flush()
            self.stats.finished = time.monotonic()
        if self._fatal is not None:
            raise self._fatal
        return self.stats

    # -- admission -----------------------------------------------------------------------------------------------
    async def _dispatch(self, jobs: Sequence[Job]) -> None:
        try:
            for job in jobs:
                await self.concurrency.acquire()
                if self._fatal is not None:
                    self.concurrency.release()
                    break
                est_in = job.prompt_chars // 4 + 4
                est_out = job.max_tokens * job.n  # the worst case, so the cap is never passed
                reserved = self.budget.try_reserve(est_in, est_out)
                if reserved is None:
                    self.concurrency.release()
                    self.stats.stopped = f"budget ${self.config.budget:,.2f} reached"
                    break
                self._active += 1
                task = asyncio.create_task(self._job(job, reserved))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)
        finally:
            self._dispatched = True
            self._maybe_finished()

    def _maybe_finished(self) -> None:
        if self._finished is not None and (self._fatal is not None or (self._dispatched and self._active == 0)):
            self._finished.set()

    # -- one call, all its attempts ------------------------------------------------------------------------------
    async def _job(self, job: Job, reserved_cost: float) -> None:
        holds_slot = True
        try:
            while self._fatal is None:
                est = self.limiter.estimate(job.prompt_chars, job.max_tokens, job.n)
                await self.limiter.acquire(est)
                job.attempts += 1
                self.stats.api_calls += 1
                t0 = time.monotonic()
                try:
                    reply = await self._attempt(job, t0)
                except ApiError as err:
                    self.limiter.settle(est, 0)
                    self.concurrency.release()
                    holds_slot = False
                    delay = self._after_failure(job, err)
                    if delay is None:
                        return
                    await asyncio.sleep(delay)
                    await self.concurrency.acquire()
                    holds_slot = True
                    continue
                latency = time.monotonic() - t0
                self._on_success(job, reply, est, latency)
                self.budget.settle(reserved_cost, reply.tokens_in, reply.tokens_out)
                reserved_cost = 0.0
                return
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a bug or a sink failure: stop rather than lose requests silently
            self._abort(exc)
        finally:
            if holds_slot:
                self.concurrency.release()
            self.budget.release(reserved_cost)
            self._active -= 1
            self._maybe_finished()

    async def _attempt(self, job: Job, t0: float) -> Reply:
        inner = asyncio.ensure_future(self.send(job))
        self._inflight[inner] = (t0, job.timeouts)
        try:
            return await inner
        except asyncio.CancelledError:
            if inner in self._expired:
                limit = self.timeouts.for_attempt(job.timeouts)
                raise ApiError("timeout", f"no answer after {limit:.1f}s (learned timeout)") from None
            raise
        finally:
            self._inflight.pop(inner, None)
            self._expired.discard(inner)

    async def _watchdog(self) -> None:
        """Abandon attempts that outlive their learned timeout (re-evaluated as the timeout is learned)."""
        while True:
            await asyncio.sleep(0.2)
            now = time.monotonic()
            base = self.timeouts.base()
            for fut, (t0, timeouts) in list(self._inflight.items()):
                if now - t0 > min(self.timeouts.ceiling, base * 2**timeouts) and fut not in self._expired:
                    self._expired.add(fut)
                    fut.cancel()

    def _on_success(self, job: Job, reply: Reply, est: int, latency: float) -> None:
        self.limiter.settle(est, reply.tokens_in + reply.tokens_out, reply.tokens_out / job.n)
        if reply.headers:
            self.limiter.observe_headers(reply.headers)
        self.concurrency.on_success(latency)
        self.timeouts.observe(latency)
        self._successes += 1
        self._last_success = time.monotonic()
        s = self.stats
        s.done += job.n
        s.tokens_in += reply.tokens_in
        s.tokens_out += reply.tokens_out
        s.spend = self.config.pricing.cost(s.tokens_in, s.tokens_out)
        self._buffer.extend(zip(job.requests, reply.completions))
        if not self._flush_scheduled:
            self._flush_scheduled = True
            asyncio.get_running_loop().call_soon(self._flush)

    def _flush(self) -> None:
        """Commit every answer that arrived in this tick of the event loop in one transaction."""
        self._flush_scheduled = False
        if not self._buffer:
            return
        items, self._buffer = self._buffer, []
        try:
            self.sink.ok_many(items)
        except Exception as exc:
            self._abort(exc)

    # -- failures ------------------------------------------------------------------------------------------------
    def _after_failure(self, job: Job, err: ApiError) -> float | None:
        """Record a failed attempt; return the delay before the next one, or None when the job is over."""
        if err.status == 429:
            self.stats.rate_limited += 1
            if self.limiter.active:
                self.limiter.on_429()
            else:
                self.concurrency.on_overload()
        if err.kind == "timeout":
            self.stats.timeouts += 1
            job.timeouts += 1
        action = self.policy.action(err)
        if action == "abort":
            self._fail(job, str(err), final=False)
            self._abort(BackendError(f"teacher {self.name}: {FATAL_STATUS[err.status or 0]} ({err.status}): {err.message}"))
            return None
        if action == "fail":
            self._fail(job, str(err), final=True)
            self._bad_requests += 1
            if not self._successes and self._bad_requests >= BAD_REQUESTS_BEFORE_ABORT:
                self._abort(BackendError(f"teacher {self.name}: every request rejected ({err.status}): {err.message}"))
            return None
        if job.attempts >= self.policy.max_attempts:
            # Refused connections through every attempt, and no answer lately: the endpoint is down, not flaky.
            if err.kind == "connect" and (not self._successes or time.monotonic() - self._last_success > 10):
                self._fail(job, str(err), final=False)
                self._abort(BackendError(f"teacher {self.name}: cannot reach {self.endpoint}: {err.message}"))
                return None
            self._fail(job, f"gave up after {job.attempts} attempts: {err}", final=True)
            return None
        self.stats.retries += 1
        self._fail(job, str(err), final=False)
        return self.policy.delay(job.attempts, err)

    def _fail(self, job: Job, error: str, *, final: bool) -> None:
        if final:
            self.stats.failed += job.n
        for r in job.requests:
            self.sink.fail(r, error, final=final)

    def _abort(self, exc: BaseException) -> None:
        if self._fatal is None:
            self._fatal = exc
        self._maybe_finished()


def run_sync(coro: Awaitable) -> object:
    """Run a coroutine to completion from synchronous code, in a fresh thread if this one already runs a loop."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)  # type: ignore[arg-type]
    import concurrent.futures

    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coro).result()  # type: ignore[arg-type]
