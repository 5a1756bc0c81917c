"""The engine loop: admit each API call through budget, concurrency and rate limits, send it, commit or retry it.

One asyncio task per call in progress (never one per request up front, so 20,000 requests cost no more memory than
the calls in flight). Answers are handed to the sink in batches at the end of each event-loop tick: committed as
they arrive, one SQLite transaction for all that arrived together. A watchdog applies the re-send policy of
``attempts.py`` to attempts that outlive their learned timeout. Auth and model errors stop the teacher at once with
everything answered so far kept.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Awaitable, Callable, Mapping, Sequence

from mathforge.request import Completion, GenRequest, ResultSink
from mathforge.engine.accounting import Pricing, TeacherStats, new_budget
from mathforge.engine.attempts import _CURRENT, Attempt, LoopClock, ResendPolicy, response_started
from mathforge.engine.concurrency import AdaptiveConcurrency
from mathforge.engine.jobs import Job
from mathforge.engine.limits import new_limiter
from mathforge.engine.retry import FATAL_STATUS, ApiError, RetryPolicy
from mathforge.engine.timeouts import LatencyTimeout
from mathforge.errors import BackendError

BAD_REQUESTS_BEFORE_ABORT = 5  # this many 400s before any success: the teacher's config, not the prompts, is wrong
CONNECT_FAILURES_BEFORE_ABORT = 3  # refused connections of one request before any answer: the endpoint is down
TICK = 0.2  # seconds between watchdog rounds
# Failures after which the server may have done (and billed) the work without our seeing an answer.
MAYBE_BILLED = {"timeout", "connection", "malformed"}


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
    max_concurrency: int = 1024  # a safety cap; the adaptive limit finds the server's capacity below it
    initial_concurrency: int | None = 64  # where slow start (x4 per round trip) begins when no rate limit paces us
    timeout: float = 600.0  # ceiling of the learned per-attempt timeout
    resend_share: float = 0.01  # most early re-sends of overdue attempts, as a share of the run's calls
    timeout_multiplier: float = 2.0
    min_timeout: float = 2.0
    max_attempts: int = 6
    backoff_base: float = 0.5
    backoff_max: float = 30.0
    pricing: Pricing = field(default_factory=Pricing)
    budget: float | None = None


class _Call:
    """One job in progress: its live attempts, its concurrency slot and its unspent budget reservation."""

    def __init__(self, job: Job, reserved: float):
        self.job = job
        self.pool = reserved  # reserved budget not tied to an attempt yet
        self.holds_slot = True
        self.live: list[Attempt] = []
        self.wake: asyncio.Future | None = None
        self.want_resend = False
        self.resent = False


class _BudgetStop(Exception):
    """The budget cannot cover another attempt of this job."""


class Engine:
    """Runs one teacher's jobs to completion (or failure, or the budget cap), reporting each request to the sink."""

    def __init__(self, name: str, config: EngineConfig, send: Send, sink: ResultSink, *,
                 stats: TeacherStats | None = None, endpoint: str = "", limit_key: str = ""):
        self.name, self.config, self.send, self.sink, self.endpoint = name, config, send, sink, endpoint
        self.stats = stats or TeacherStats()
        # limit_key names the provider budget (endpoint, model, API key) that engines on a cluster share.
        self.limiter = new_limiter(name, limit_key or endpoint or name, config.rpm, config.tpm, self.stats)
        # With a known rate limit the limiter paces the calls; concurrency only needs to cover the latency.
        initial = None if self.limiter.active else config.initial_concurrency
        self.concurrency = AdaptiveConcurrency(config.max_concurrency, initial)
        self.timeouts = LatencyTimeout(config.timeout, config.timeout_multiplier, config.min_timeout)
        self.policy = RetryPolicy(config.max_attempts, config.backoff_base, config.backoff_max)
        self.budget = new_budget(name, config.budget, config.pricing, self.stats.prior_spend)
        self.resend = ResendPolicy(config.resend_share)
        self.clock = LoopClock(TICK)
        self._fatal: BaseException | None = None
        self._successes = 0
        self._last_success = 0.0
        self._bad_requests = 0
        self._active = 0
        self._parked = 0  # overdue attempts that gave their concurrency slot back
        self._tasks: set[asyncio.Task] = set()
        self._calls: set[_Call] = set()
        self._dispatched = False
        self._finished: asyncio.Event | None = None
        self._buffer: list[tuple[GenRequest, Completion]] = []
        self._flush_scheduled = False

    async def run(self, jobs: Sequence[Job]) -> TeacherStats:
        """Send every job; raise BackendError when the teacher cannot be used at all."""
        self._finished = asyncio.Event()
        self.stats.started = time.monotonic()
        self.resend.calls = len(jobs)
        self.clock = LoopClock(TICK)
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
            await self.limiter.close()
            await self.budget.close()
        if self._fatal is not None:
            raise self._fatal
        return self.stats

    # -- admission -----------------------------------------------------------------------------------------------
    def _worst_case(self, job: Job) -> tuple[int, int]:
        return job.prompt_chars // 4 + 4, job.max_tokens * job.n  # the most a call can be billed

    async def _dispatch(self, jobs: Sequence[Job]) -> None:
        self.concurrency.demand = True
        try:
            for job in jobs:
                await self.concurrency.acquire()
                if self._fatal is not None:
                    self.concurrency.release()
                    break
                reserved = await self.budget.reserve(*self._worst_case(job))
                if reserved is None:
                    self.concurrency.release()
                    self._stop_for_budget()
                    break
                self._active += 1
                task = asyncio.create_task(self._job(_Call(job, reserved)))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)
        finally:
            self.concurrency.demand = False
            self._dispatched = True
            self._maybe_finished()

    def _stop_for_budget(self) -> None:
        self.stats.stopped = f"budget ${self.config.budget:,.2f} reached"

    def _maybe_finished(self) -> None:
        if self._finished is not None and (self._fatal is not None or (self._dispatched and self._active == 0)):
            self._finished.set()

    # -- one call, all its attempts ------------------------------------------------------------------------------
    async def _job(self, call: _Call) -> None:
        job = call.job
        try:
            while self._fatal is None:
                try:
                    reply, attempt = await self._call(call)
                except _BudgetStop:
                    self._stop_for_budget()
                    return
                except ApiError as err:
                    self._release_slot(call)
                    delay = self._after_failure(job, err)
                    if delay is None:
                        return
                    await asyncio.sleep(delay)
                    await self.concurrency.acquire()
                    call.holds_slot = True
                    continue
                self._on_success(job, reply, attempt)
                return
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a bug or a sink failure: stop rather than lose requests silently
            self._abort(exc)
        finally:
            self._release_slot(call)
            self.budget.release(call.pool)
            call.pool = 0.0
            self._active -= 1
            self._maybe_finished()

    def _release_slot(self, call: _Call) -> None:
        if call.holds_slot:
            call.holds_slot = False
            self.concurrency.release()

    async def _launch(self, call: _Call, resend: bool) -> Attempt | None:
        """Reserve budget, wait for the rate limiter, and send one attempt of the call's job."""
        job = call.job
        if call.pool > 0:
            reserved, call.pool = call.pool, 0.0
        else:
            got = await self.budget.reserve(*self._worst_case(job))
            if got is None:
                raise _BudgetStop
            reserved = got
        est = self.limiter.estimate(job.prompt_chars, job.max_tokens, job.n)
        try:
            await self.limiter.acquire(est)
        except BaseException:
            call.pool += reserved
            raise
        attempt = Attempt(job, self.clock, time.monotonic(), self.clock.stalled, resend=resend)
        if resend and any(a.task is not None and a.task.done() for a in call.live):
            self.limiter.settle(est, 0)  # the first copy was answered while we waited: no second one
            call.pool += reserved
            return None
        attempt.reserved, attempt.est = reserved, est
        job.attempts += 1
        self.stats.api_calls += 1
        attempt.task = asyncio.ensure_future(self._send_attempt(attempt))
        call.live.append(attempt)
        return attempt

    async def _send_attempt(self, attempt: Attempt) -> Reply:
        token = _CURRENT.set(attempt)  # this task's own context: the backend marks the response's first byte through it
        try:
            reply = await self.send(attempt.job)
            response_started()  # backends that cannot see headers: the answer is complete, so it has started too
        finally:
            # The finished task keeps its context: holding the attempt there made a cycle (task -> context ->
            # attempt -> task) that kept every request of a window alive until a full garbage collection.
            _CURRENT.reset(token)
        return reply

    async def _call(self, call: _Call) -> tuple[Reply, Attempt]:
        """One call of the job: its attempt, plus an early re-send when the watchdog asks; the first answer wins."""
        self._calls.add(call)
        answered = False
        try:
            await self._launch(call, resend=False)
            while True:
                call.wake = asyncio.get_running_loop().create_future()
                waiting = [a.task for a in call.live] + [call.wake]
                done, _ = await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)  # type: ignore[arg-type]
                if call.want_resend:
                    call.want_resend = False
                    try:
                        if await self._launch(call, resend=True) is not None:
                            self.stats.resends += 1
                    except _BudgetStop:
                        pass  # no budget for a second copy: keep waiting for the first
                for attempt in [a for a in call.live if a.task.done()]:  # type: ignore[union-attr]
                    call.live.remove(attempt)
                    try:
                        reply = self._outcome(attempt)
                    except ApiError as err:
                        self._settle_failed(call, attempt, err)
                        if not call.live:
                            raise
                        self._note_error(call.job, err)  # another copy is still in flight: wait for it
                        continue
                    self.budget.settle(attempt.reserved, reply.tokens_in, reply.tokens_out)
                    self.stats.answered_calls += 1
                    answered = True
                    return reply, attempt
        finally:
            self._calls.discard(call)
            for other in call.live:  # copies still in flight: the answer came from another one, or we stop
                other.cut = other.cut or ("another copy of the request was answered first" if answered
                                          else "the teacher stopped")
                other.task.cancel()  # type: ignore[union-attr]
                self._abandon(call, other, record=True)
            call.live.clear()
            if call.wake is not None and not call.wake.done():
                call.wake.cancel()

    def _outcome(self, attempt: Attempt) -> Reply:
        """The attempt's reply, or the ApiError that ended it (a cut by the watchdog is a timeout)."""
        task = attempt.task
        assert task is not None
        if task.cancelled():
            if attempt.cut:
                raise ApiError("timeout", attempt.cut, abandoned=True)
            raise asyncio.CancelledError
        exc = task.exception()
        if exc is not None:
            raise exc
        return task.result()

    def _settle_failed(self, call: _Call, attempt: Attempt, err: ApiError) -> None:
        """Budget and counts of an attempt that ended without a usable answer."""
        if attempt.cut:
            self._abandon(call, attempt, record=False)  # the failure path records it in the ledger
            return
        self.limiter.settle(attempt.est, 0)
        if err.kind == "connect":  # no connection, so nothing reached the server: not a call it could bill
            self.stats.api_calls -= 1
            self.stats.connect_failures += 1
        else:
            self.stats.error_calls += 1
        if err.kind in MAYBE_BILLED:
            self.budget.forfeit(attempt.reserved)
            self.stats.maybe_billed_cost += attempt.reserved
        else:
            call.pool += attempt.reserved
        self._unpark(attempt)

    def _abandon(self, call: _Call, attempt: Attempt, *, record: bool) -> None:
        """Count an attempt the engine cut short; the server may bill it, so its worst case stays charged."""
        self.stats.abandoned += 1
        self.stats.maybe_billed_cost += attempt.reserved
        self.limiter.settle(attempt.est, 0)
        self.budget.forfeit(attempt.reserved)
        self._unpark(attempt)
        if record:
            for r in call.job.requests:
                self.sink.fail(r, f"abandoned: {attempt.cut}", final=False, abandoned=True)

    def _unpark(self, attempt: Attempt) -> None:
        if attempt.parked:
            attempt.parked = False
            self._parked -= 1

    async def _watchdog(self) -> None:
        """Each tick: mark attempts overdue (free their slot), cut those past the ceiling, re-send in the tail."""
        while True:
            await asyncio.sleep(TICK)
            now = self.clock.beat()
            overdue_calls = []
            for call in list(self._calls):
                for attempt in call.live:
                    if attempt.started is not None or attempt.cut or attempt.task is None or attempt.task.done():
                        continue
                    waited = attempt.waited(now)
                    if waited > self.timeouts.ceiling:
                        attempt.cut = f"no answer after {waited:.1f}s (the timeout ceiling)"
                        attempt.task.cancel()
                        if not attempt.overdue:
                            self.stats.timeouts += 1
                        continue
                    if waited > self.timeouts.for_attempt(call.job.timeouts):
                        # Two ticks in a row, so that an answer already in the socket buffer gets read first.
                        attempt.late_ticks += 1
                        if attempt.late_ticks >= 2 and not attempt.overdue:
                            self._mark_overdue(call, attempt)
                    else:
                        attempt.late_ticks = 0
                if call.live and all(a.overdue for a in call.live):
                    overdue_calls.append(call)
            # The tail: nothing left to dispatch and every unfinished call is waiting on an overdue attempt.
            tail = self._dispatched and overdue_calls and len(overdue_calls) == self._active
            for call in sorted(overdue_calls, key=lambda c: c.live[0].t0):
                if call.resent or not self.resend.may_resend(bool(tail)):
                    continue
                self.resend.used += 1
                call.resent = call.want_resend = True
                if call.wake is not None and not call.wake.done():
                    call.wake.set_result(None)

    def _mark_overdue(self, call: _Call, attempt: Attempt) -> None:
        """Past the learned timeout: count it, signal the controller, and hand the slot on while it keeps waiting."""
        attempt.overdue = True
        self.stats.timeouts += 1
        self.concurrency.on_error()
        if call.holds_slot and self._parked < self.concurrency.cap:
            call.holds_slot = False
            attempt.parked = True
            self._parked += 1
            self.concurrency.release()

    def _on_success(self, job: Job, reply: Reply, attempt: Attempt) -> None:
        latency = attempt.server_latency()  # None: the client stalled meanwhile, so the sample is not the server's
        self.limiter.settle(attempt.est, reply.tokens_in + reply.tokens_out, reply.tokens_out / job.n)
        if reply.headers:
            paced = self.limiter.active
            self.limiter.observe_headers(reply.headers)
            if self.limiter.active and not paced:  # limits just learned: the limiter paces from now on
                self.concurrency.open_to_cap()
        # An overdue answer says little about the typical latency, and was signalled when it went overdue.
        self.concurrency.on_success(None if attempt.overdue else latency)
        # The timeout learns from every answer: a stalled sample overstates the server's latency, which only makes
        # the timeout more patient (the wait it is compared with leaves the stalls out).
        self.timeouts.observe(latency if latency is not None else attempt.raw_latency() or 0.0)
        self._unpark(attempt)
        self._successes += 1
        self._last_success = time.monotonic()
        s = self.stats
        s.done += job.n
        s.tokens_in += reply.tokens_in
        s.tokens_out += reply.tokens_out
        s.spend = self.config.pricing.cost(s.tokens_in, s.tokens_out)
        for c in reply.completions:
            c.latency = attempt.raw_latency()
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
    def _signal(self, job: Job, err: ApiError) -> None:
        """Counters and controller signals of one failed attempt."""
        if err.status == 429:
            self.stats.rate_limited += 1
            if self.limiter.active:
                self.limiter.on_429()
            else:
                self.concurrency.on_overload()
        elif err.kind != "timeout":  # the watchdog signalled timeouts when the attempt went overdue
            self.concurrency.on_error()
        if err.kind == "timeout":
            job.timeouts += 1
            if not err.abandoned:
                self.stats.timeouts += 1  # a transport timeout, unseen by the watchdog

    def _note_error(self, job: Job, err: ApiError) -> None:
        """A failed copy while another copy of the call is still in flight."""
        self._signal(job, err)
        for r in job.requests:
            self.sink.fail(r, str(err), final=False, abandoned=err.abandoned)

    def _after_failure(self, job: Job, err: ApiError) -> float | None:
        """Record the failed attempt that ended a call; return the delay before the next one, or None when over."""
        self._signal(job, err)
        action = self.policy.action(err)
        if action == "abort":
            self._fail(job, str(err), final=False, abandoned=err.abandoned)
            self._abort(BackendError(f"teacher {self.name}: {FATAL_STATUS[err.status or 0]} ({err.status}): {err.message}"))
            return None
        if action == "fail":
            self._fail(job, str(err), final=True, abandoned=err.abandoned)
            self._bad_requests += 1
            if not self._successes and self._bad_requests >= BAD_REQUESTS_BEFORE_ABORT:
                self._abort(BackendError(f"teacher {self.name}: every request rejected ({err.status}): {err.message}"))
            return None
        if err.kind == "connect" and self._unreachable(job):
            self._fail(job, str(err), final=False, abandoned=err.abandoned)
            self._abort(BackendError(f"teacher {self.name}: could not reach {self.endpoint} ({err.message}); "
                                     "check base_url and that the server is running"))
            return None
        if job.attempts >= self.policy.max_attempts:
            self._fail(job, f"gave up after {job.attempts} attempts: {err}", final=True, abandoned=err.abandoned)
            return None
        self.stats.retries += 1
        self._fail(job, str(err), final=False, abandoned=err.abandoned)
        return self.policy.delay(job.attempts, err)

    def _unreachable(self, job: Job) -> bool:
        """Refused connections, no answer ever (or none lately): the endpoint is down, not flaky."""
        if not self._successes:
            return job.attempts >= min(CONNECT_FAILURES_BEFORE_ABORT, self.policy.max_attempts)
        return job.attempts >= self.policy.max_attempts and time.monotonic() - self._last_success > 10

    def _fail(self, job: Job, error: str, *, final: bool, abandoned: bool = False) -> None:
        if final:
            self.stats.failed += job.n
        for r in job.requests:
            self.sink.fail(r, error, final=final, abandoned=abandoned)

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
