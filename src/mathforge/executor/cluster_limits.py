"""One RPM/TPM budget per API key for a whole Ray cluster, and the cluster's generation counters.

A provider's rate limits belong to the API key (and model), not to a worker: three workers that each paced themselves
at the full limit would send three times too much. Here one Ray actor holds the budget and every worker's engine
leases from it.

API
---
Driver (once per run, after ``ray.init``)::

    handle = cluster_limits.start()          # the named actor, on the driver's node (get-or-create)
    ... run the workers ...
    cluster_limits.totals(handle)            # {teacher: summed TeacherStats fields + "workers"}: progress and cost
    cluster_limits.describe(handle)          # {limit key: "2,970 rpm, 150,000 tpm"}

Worker (once per process, before building engines; a Ray task or actor)::

    cluster_limits.install(handle)           # every Engine built here now uses a ClusterLimiter
    cluster_limits.install(handle, scope)    # ... and, for a teacher with a ``budget:``, a ClusterBudget

``install(None)`` puts the local per-engine limiter back. ``ClusterLimiter`` implements exactly the methods the engine
calls on ``mathforge.engine.limits.RateLimiter`` (``active``, ``estimate``, ``acquire``, ``settle``, ``on_429``,
``observe_headers``, ``describe``, ``close``), so the engine does not know which one it has.

How it paces
------------
The actor keeps, per limit key (endpoint + model + a SHA-256 prefix of the API key, see
``OpenAIBackend.limit_key``), the same budgets as the local limiter: token buckets holding half a second of
RPM and TPM, a ``scale`` that shrinks by 10% per 429 and recovers as requests succeed, limits learned (only ever
tightened) from ``x-ratelimit-*`` headers, and the learned completion length used to estimate a request's tokens.
A worker leases requests and tokens in small batches (about ``LEASE_SECONDS`` of the cluster's rate, at most
``MAX_LEASE`` requests) so that a round trip to the actor serves several requests. A lease is a reservation: the
actor takes it from the bucket at once, the bucket may go negative, and the lease says how long to wait before using
it, so workers queue for the budget in the order they asked without polling; a worker asks for its next lease while
it uses the current one, so it never waits for the round trip itself (under CPU load a round trip can take longer
than a lease lasts). Everything the engine reports between
leases (token refunds from ``usage``, completion lengths, 429s, the limits seen in headers, the engine's counters) is
folded into one report sent with the next lease, or at least every ``SYNC_SECONDS`` while no limit is known (then
``acquire`` costs no round trip at all). Leased requests unused after ``LEASE_TTL`` seconds, or when the engine
closes, go back to the bucket.

Counters are snapshots per (worker limiter, teacher), replaced on each report, so a report sent twice counts once.
Runs that share a cluster share the actor, hence each key's budget (as they share the provider's); their counters
are told apart only by teacher name, so give ``start`` a name per run when two runs use the same teacher names.
If the actor is lost (its node died), Ray restarts it (``max_restarts``): budgets are re-learned from the configured
limits and headers, and the counters fill again from the next reports of the workers still running.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import time
import uuid
from typing import Any, Mapping

from mathforge.engine.accounting import TeacherStats, use_budget_factory
from mathforge.engine.limits import Bucket, Budget, RateLimiter, _int, use_limiter_factory
from mathforge.errors import BackendError
from mathforge.executor.cluster_budget import BudgetBooks, budget_factory

log = logging.getLogger(__name__)

ACTOR_NAME = "mathforge-cluster-limits"
NAMESPACE = "mathforge"
LEASE_SECONDS = 0.1  # a lease covers this much of the cluster's request rate
MAX_LEASE = 32  # requests per lease, at most
LEASE_TTL = 1.0  # seconds a leased request stays usable; older ones go back (no late bursts)
SYNC_SECONDS = 0.25  # most time between reports while leases do not carry them
ACTOR_RETRY_SECONDS = 60.0  # how long a worker waits for a restarting actor before its teacher stops
COUNTERS = ("total", "done", "failed", "retries", "rate_limited", "timeouts", "api_calls", "answered_calls",
            "error_calls", "abandoned", "resends", "connect_failures", "tokens_in", "tokens_out", "spend",
            "maybe_billed_cost")


class _Pace(Bucket):
    """The engine's token bucket, refilled at ``scale`` x its rate; reservations may take it below zero."""

    def reserve(self, amount: float, scale: float, now: float) -> float:
        """Take ``amount`` now; return the seconds until the bucket would have held it (0: available at once)."""
        self.refill(now, scale)
        self.level -= amount
        return 0.0 if self.level >= 0 else -self.level / (self.rate * scale)

    def give_back(self, amount: float, *, above_capacity: bool) -> None:
        # A usage refund may lift the level above capacity (the server counted less than we reserved, as in the
        # local limiter); unused leases may not (they were never sent, but a burst would be).
        cap = float("inf") if above_capacity else max(self.capacity, self.level)
        self.level = min(cap, self.level + amount)


class KeyBudget(Budget):
    """The cluster's budget for one limit key: configured limits, learned limits, 429 scale, completion length."""

    _bucket = _Pace

    def configure(self, rpm: float | None, tpm: float | None) -> None:
        """Another worker's config for the same key: the tighter limit wins."""
        now = time.monotonic()
        for idx, value in ((0, rpm), (1, tpm)):
            if value:
                self._tighten(idx, value, now)

    def reserve(self, requests: int, tokens: int) -> float:
        now = time.monotonic()
        wait = 0.0
        if self.requests is not None and requests:
            wait = max(wait, self.requests.reserve(requests, self.scale, now))
        if self.tokens is not None and tokens:
            wait = max(wait, self.tokens.reserve(tokens, self.scale, now))
        return wait

    def apply(self, report: Mapping[str, Any]) -> None:
        """Fold in what one worker saw since its last report."""
        if self.tokens is not None and report.get("refund"):
            self.tokens.give_back(report["refund"], above_capacity=True)
        if self.requests is not None and report.get("unused_requests"):
            self.requests.give_back(report["unused_requests"], above_capacity=False)
        if self.tokens is not None and report.get("unused_tokens"):
            self.tokens.give_back(report["unused_tokens"], above_capacity=False)
        count = report.get("completions", 0)
        if count:
            mean = report["completion_sum"] / count
            keep = 0.9 ** count  # the local limiter's moving average, applied once per observation
            c = self.completion_tokens
            self.completion_tokens = mean if c is None else keep * c + (1 - keep) * mean
        for _ in range(report.get("rate_limited", 0)):
            self._slow_down()
        if self.scale < 1.0 and report.get("settled"):
            self.scale = min(1.0, self.scale + 0.002 * report["settled"])
        now = time.monotonic()
        for idx, name in ((0, "requests"), (1, "tokens")):
            limit = report.get(f"limit_{name}")
            if limit:
                self._learn(idx, limit, now)
            pace = self.requests if idx == 0 else self.tokens
            if pace is not None and report.get(f"exhausted_{name}"):
                pace.level = min(pace.level, 0.0)

    def snapshot(self) -> dict[str, Any]:
        return {
            "active": self.active, "scale": self.scale, "completion_tokens": self.completion_tokens,
            "rpm": self.requests.per_minute if self.requests else None,
            "tpm": self.tokens.per_minute if self.tokens else None,
        }


class ClusterState:
    """What the actor holds: a budget per limit key and the latest counters of every worker's engine."""

    def __init__(self) -> None:
        self.budgets: dict[str, KeyBudget] = {}
        self.counters: dict[tuple[str, str], dict[str, float]] = {}  # (worker limiter id, teacher) -> counters
        self.leases = 0
        self.books = BudgetBooks()  # the ``budget:`` caps, one ledger of spend per run and teacher

    def lease(self, key: str, requests: int, tokens: int, config: tuple[float | None, float | None],
              report: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """Apply a worker's report, reserve its lease; the answer says how long to wait and the budget's state."""
        budget = self.budgets.get(key)
        if budget is None:
            budget = self.budgets[key] = KeyBudget(*config)
        elif report is None or not report.get("known"):
            budget.configure(*config)  # first contact of this worker: its configured limits count too
        if report:
            budget.apply(report)
            if report.get("stats") is not None:
                self.counters[(report["worker"], report["teacher"])] = report["stats"]
        wait = budget.reserve(requests, tokens) if budget.active else 0.0
        if requests or tokens:
            self.leases += 1
        return {"wait": wait, **budget.snapshot()}

    def totals(self) -> dict[str, dict[str, float]]:
        """The counters summed per teacher over every worker, with how many workers reported."""
        out: dict[str, dict[str, float]] = {}
        for (_, teacher), stats in self.counters.items():
            t = out.setdefault(teacher, {name: 0 for name in COUNTERS} | {"workers": 0})
            for name in COUNTERS:
                t[name] += stats.get(name, 0)
            t["workers"] += 1
        return out

    def describe(self) -> dict[str, str]:
        out = {}
        for key, b in self.budgets.items():
            parts = [f"{p.per_minute * b.scale:,.0f} {unit}" for p, unit in ((b.requests, "rpm"), (b.tokens, "tpm")) if p]
            out[key] = ", ".join(parts) or "no rate limit"
        return out

    def lease_count(self) -> int:
        return self.leases

    # -- the cluster-wide budget cap (``executor/cluster_budget.py``) ------------------------------------------------
    def open_budget(self, key: str, limit: float, spent: float) -> None:
        self.books.open(key, limit, spent)

    def budget_lease(self, key: str, need: float, extra: float) -> float:
        return self.books.lease(key, need, extra)

    def budget_charge(self, key: str, reserved: float, cost: float) -> None:
        self.books.charge(key, reserved, cost)

    def budget_release(self, key: str, reserved: float) -> None:
        self.books.release(key, reserved)

    def budget_forfeit(self, key: str, reserved: float) -> None:
        self.books.forfeit(key, reserved)

    def budget_state(self, key: str) -> dict[str, Any] | None:
        return self.books.state(key)

    def drop_budgets(self, scope: str) -> None:
        self.books.drop(scope)


def _counters(stats: TeacherStats) -> dict[str, float]:
    return {name: getattr(stats, name) for name in COUNTERS}


class ClusterLimiter:
    """The engine's limiter on a cluster worker: leases from the ``ClusterLimits`` actor, reports back in batches."""

    def __init__(self, handle: Any, name: str, key: str, rpm: float | None, tpm: float | None,
                 stats: TeacherStats | None = None):
        self.handle, self.name, self.key = handle, name, key
        self.config = (rpm, tpm)
        self.stats = stats
        self.worker = uuid.uuid4().hex
        self._state: dict[str, Any] = {"active": bool(rpm or tpm), "scale": 1.0, "completion_tokens": None,
                                       "rpm": rpm, "tpm": tpm}
        self._known = False  # the actor has seen this limiter (its config is registered)
        # Leases not used up yet, oldest first: [usable from (monotonic), requests, tokens].
        self._grants: collections.deque[list[float]] = collections.deque()
        self._prefetch: asyncio.Task | None = None  # the next lease, asked for while this one is being used
        self._debt = 0.0  # tokens used without a lease (the TPM was learned after the request was covered)
        self._last_sync = 0.0
        self._learned = False  # a limit header was seen here since the last report
        self._lock: asyncio.Lock | None = None
        self._report = self._empty_report()

    @staticmethod
    def _empty_report() -> dict[str, Any]:
        return {"refund": 0, "completions": 0, "completion_sum": 0.0, "rate_limited": 0, "settled": 0}

    # -- what the engine calls ---------------------------------------------------------------------------------
    @property
    def active(self) -> bool:
        return bool(self._state["active"]) or self._learned

    def estimate(self, prompt_chars: int, max_tokens: int, n: int = 1) -> int:
        """Tokens a request will use: as the local limiter, with the completion length learned cluster-wide."""
        learned = self._state["completion_tokens"]
        completion = learned if learned is not None else max_tokens
        return int(prompt_chars / 4) + 4 + int(min(completion, max_tokens) * n)

    async def acquire(self, tokens: int) -> None:
        """Wait until one request of ``tokens`` fits the cluster's budget, then take it (FIFO in this worker)."""
        if self._lock is None:
            self._lock = asyncio.Lock()
        async with self._lock:
            if not self.active:
                if time.monotonic() - self._last_sync > SYNC_SECONDS:
                    await self._lease(0, 0)
                if not self.active:
                    return
            self._expire()
            counts_tokens = bool(self._state["tpm"])
            need = tokens + self._debt if counts_tokens else 0
            batch = self._batch(tokens)
            leases = 0
            while (take := self._covering(need)) is None:
                if leases == 3:  # each lease covers the request; only a TPM learned meanwhile asks for another
                    raise BackendError(f"teacher {self.name}: the cluster rate limiter's leases do not cover a request")
                leases += 1
                if self._prefetch is not None:
                    task, self._prefetch = self._prefetch, None
                    await task
                    continue
                have_r, have_t = self._held()
                want_t = max(0, int(need - have_t) + tokens * (batch - 1)) if counts_tokens and have_t < need else 0
                await self._lease(batch if have_r < 1 else 0, want_t)
            delay = take - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            self._consume(tokens if self._state["tpm"] else 0)
            # Ask for the next lease while this one is used, so that the actor's round trip is never waited for.
            if self._prefetch is None and self._held()[0] <= batch // 2:
                want_t = tokens * batch if self._state["tpm"] else 0
                self._prefetch = asyncio.ensure_future(self._lease(batch, want_t))
                self._prefetch.add_done_callback(self._prefetched)

    def settle(self, reserved: int, used: int, completion_per_sample: float | None = None) -> None:
        """Queue the token correction and the completion length for the next report."""
        r = self._report
        r["refund"] += reserved - used
        r["settled"] += 1
        if completion_per_sample is not None:
            r["completions"] += 1
            r["completion_sum"] += completion_per_sample
            c = self._state["completion_tokens"]  # learn locally too, until the actor's average comes back
            self._state["completion_tokens"] = completion_per_sample if c is None else 0.9 * c + 0.1 * completion_per_sample

    def on_429(self) -> None:
        """Queue the 429 (the actor slows the whole key) and drop this worker's unused lease."""
        self._report["rate_limited"] += 1
        self._return_unused()

    def observe_headers(self, headers: Mapping[str, str]) -> None:
        """Note the tightest ``x-ratelimit-limit-*`` and any ``remaining == 0`` for the next report."""
        r = self._report
        for name in ("requests", "tokens"):
            limit = _int(headers.get(f"x-ratelimit-limit-{name}"))
            if limit:
                r[f"limit_{name}"] = min(limit, r.get(f"limit_{name}") or limit)
                self._learned = True
            if _int(headers.get(f"x-ratelimit-remaining-{name}")) == 0:
                r[f"exhausted_{name}"] = True

    def describe(self) -> str:
        s = self._state
        parts = [f"{s[k] * s['scale']:,.0f} {k}" for k in ("rpm", "tpm") if s[k]]
        return (", ".join(parts) or "no rate limit") + " (cluster-wide)"

    async def close(self) -> None:
        """Hand unused leases back and send the last report (the final counters of this engine)."""
        if self._prefetch is not None:
            await asyncio.gather(self._prefetch, return_exceptions=True)  # its lease goes back below
        self._return_unused()
        try:
            await self._lease(0, 0, retry=False)
        except BackendError as exc:  # the run is over for this engine; the counters are lost, not the answers
            log.warning("cluster limiter: final report of %s lost: %s", self.name, exc)

    # -- talking to the actor ----------------------------------------------------------------------------------
    def _batch(self, tokens: int) -> int:
        """Requests per lease: about ``LEASE_SECONDS`` of the cluster's pace (one when it is unknown yet)."""
        s = self._state
        if s["rpm"]:
            per_second = s["rpm"] / 60.0
        elif s["tpm"]:
            per_second = s["tpm"] / 60.0 / max(1, tokens)
        else:
            return 1
        return max(1, min(MAX_LEASE, int(per_second * s["scale"] * LEASE_SECONDS)))

    def _held(self) -> tuple[float, float]:
        return sum(g[1] for g in self._grants), sum(g[2] for g in self._grants)

    def _covering(self, tokens: int) -> float | None:
        """When one request of ``tokens`` may go, from the leases held (None: they do not cover it)."""
        requests, have, usable = 0.0, 0.0, 0.0
        for at, r, t in self._grants:
            requests, have, usable = requests + r, have + t, max(usable, at)
            if requests >= 1 and have >= tokens:
                return usable
        return None

    def _consume(self, tokens: int) -> None:
        """Take one request and ``tokens`` (plus any debt) from the oldest leases; what they lack stays owed.

        Tokens are owed when a lease taught this worker the TPM after its request had been covered without tokens.
        """
        need_r, need_t = 1.0, tokens + self._debt if tokens else 0.0
        for g in self._grants:
            take_r, take_t = min(need_r, g[1]), min(need_t, g[2])
            g[1], g[2], need_r, need_t = g[1] - take_r, g[2] - take_t, need_r - take_r, need_t - take_t
        self._debt = need_t
        while self._grants and self._grants[0][1] <= 0 and self._grants[0][2] <= 0:
            self._grants.popleft()

    def _prefetched(self, task: asyncio.Task) -> None:
        if self._prefetch is task:
            self._prefetch = None
        if not task.cancelled() and task.exception() is not None:
            log.warning("cluster limiter: a lease of %s failed: %s", self.name, task.exception())

    def _expire(self) -> None:
        """Leases unused ``LEASE_TTL`` after they became usable go back (a late burst would pass the limit)."""
        now = time.monotonic()
        while self._grants and self._grants[0][0] + LEASE_TTL < now:
            self._give_back(self._grants.popleft())

    def _return_unused(self) -> None:
        while self._grants:
            self._give_back(self._grants.popleft())

    def _give_back(self, grant: list[float]) -> None:
        r = self._report
        if grant[1] > 0:
            r["unused_requests"] = r.get("unused_requests", 0) + grant[1]
        if grant[2] > 0:
            r["unused_tokens"] = r.get("unused_tokens", 0) + grant[2]

    async def _lease(self, requests: int, tokens: int, retry: bool = True) -> None:
        report, self._report = self._report, self._empty_report()
        report.update(worker=self.worker, teacher=self.name, known=self._known,
                      stats=_counters(self.stats) if self.stats is not None else None)
        deadline = time.monotonic() + (ACTOR_RETRY_SECONDS if retry else 5.0)
        while True:
            try:
                sent = time.monotonic()
                answer = await self.handle.lease.remote(self.key, requests, tokens, self.config, report)
                break
            except Exception as exc:  # the actor died or is restarting: Ray raises its own error types
                if time.monotonic() > deadline:
                    raise BackendError(f"teacher {self.name}: the cluster rate limiter is unreachable ({exc})") from exc
                report["known"] = False  # a restarted actor has forgotten this worker's config
                await asyncio.sleep(0.5)
        self._known = True
        self._learned = self._learned and not answer["active"]
        self._last_sync = time.monotonic()
        self._state = {k: answer[k] for k in ("active", "scale", "completion_tokens", "rpm", "tpm")}
        if requests or tokens:
            # The wait counts from when the actor answered; measured from the send it is only ever later.
            self._grants.append([sent + answer["wait"], float(requests), float(tokens)])


def _actor_class() -> Any:
    ray = _ray()
    return ray.remote(num_cpus=0, max_restarts=-1, max_task_retries=0)(ClusterState)


def _ray() -> Any:
    try:
        import ray
    except ImportError as exc:
        raise BackendError("the cluster rate limiter needs Ray: pip install 'mathforge[ray]'") from exc
    return ray


def start(name: str = ACTOR_NAME) -> Any:
    """The driver's handle to the cluster's limits actor, created on the driver's node if it does not exist yet."""
    ray = _ray()
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    here = NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(), soft=True)
    return _actor_class().options(name=name, namespace=NAMESPACE, get_if_exists=True,
                                  scheduling_strategy=here).remote()


def install(handle: Any | None, scope: str | None = None) -> None:
    """Make every engine built in this process lease from ``handle`` (None: back to a local limiter per engine);
    with ``scope`` (the run's), a teacher's ``budget:`` cap is also held by ``handle`` for the whole cluster."""
    use_budget_factory(budget_factory(handle, scope) if handle is not None and scope else None)
    if handle is None:
        use_limiter_factory(None)
        return

    def factory(name: str, key: str, rpm: float | None, tpm: float | None, stats: TeacherStats) -> RateLimiter:
        return ClusterLimiter(handle, name, key, rpm, tpm, stats)  # type: ignore[return-value]

    use_limiter_factory(factory)


def totals(handle: Any) -> dict[str, dict[str, float]]:
    """The whole cluster's counters per teacher (requests, tokens, cost, errors), for the progress view."""
    return _ray().get(handle.totals.remote())


def describe(handle: Any) -> dict[str, str]:
    """The pace of each limit key as the cluster holds it now."""
    return _ray().get(handle.describe.remote())


def stats_of(total: Mapping[str, float]) -> TeacherStats:
    """A ``TeacherStats`` holding one teacher's cluster totals, to render with the local progress line."""
    return TeacherStats(**{name: total.get(name, 0) for name in COUNTERS})
