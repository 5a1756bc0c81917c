"""Requests-per-minute and tokens-per-minute budgets, as token buckets, tightened from ``x-ratelimit-*`` headers.

Providers enforce a per-minute limit over short windows (60,000 RPM is 1,000 per second), so each bucket holds half a
second of budget and refills continuously: the client sends at the limit, never in bursts above it. Tokens are
reserved before sending (prompt estimate + learned completion length) and corrected from ``usage`` afterwards.
A 429 slows the rate a little (it recovers as requests succeed); ``remaining == 0`` in headers empties the bucket, so
the client goes on at the steady rate without a burst.

One limiter per engine by default. A process that runs engines on a cluster (a Ray worker) installs a factory with
``use_limiter_factory`` so that every engine it builds shares one budget per API key with the whole cluster
(``mathforge.executor.cluster_limits``); the engine only ever calls the methods of ``RateLimiter``.
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING, Callable, Mapping

if TYPE_CHECKING:
    from mathforge.engine.accounting import TeacherStats

BURST_SECONDS = 0.5


class Bucket:
    """A token bucket of ``per_minute`` with half a second of burst; ``level`` may go negative after a correction."""

    def __init__(self, per_minute: float, now: float | None = None):
        self.per_minute = per_minute
        self.level = self.capacity
        self.t = time.monotonic() if now is None else now

    @property
    def rate(self) -> float:
        return self.per_minute / 60.0

    @property
    def capacity(self) -> float:
        return max(1.0, self.rate * BURST_SECONDS)

    def refill(self, now: float, scale: float = 1.0) -> None:
        # Refill stops at capacity, but a refund from ``settle`` above it is kept: the server counted less than we
        # reserved, so its own bucket holds that much more than ours. ``scale`` < 1 refills slower (after 429s).
        if self.level < self.capacity:
            self.level = min(self.capacity, self.level + (now - self.t) * self.rate * scale)
        self.t = now

    def wait(self, amount: float) -> float:
        """Seconds until ``amount`` is available (amounts above capacity wait for a full bucket)."""
        need = min(amount, self.capacity)
        return 0.0 if self.level >= need else (need - self.level) / self.rate


class Budget:
    """Request and token buckets under configured limits, tightened by learned ones and slowed by 429s."""

    _bucket: type[Bucket] = Bucket

    def __init__(self, rpm: float | None = None, tpm: float | None = None, backoff: float = 0.9):
        now = time.monotonic()
        self.configured = (rpm, tpm)
        self.requests = self._bucket(rpm, now) if rpm else None
        self.tokens = self._bucket(tpm, now) if tpm else None
        self.scale = 1.0  # < 1 after 429s; recovers towards 1 on success
        self.backoff = backoff
        self.completion_tokens: float | None = None  # learned mean completion length per sample

    @property
    def active(self) -> bool:
        return self.requests is not None or self.tokens is not None

    def _tighten(self, idx: int, limit: float, now: float | None = None) -> None:
        """Limit requests (idx 0) or tokens (idx 1) to ``limit`` per minute unless already tighter."""
        bucket = self.requests if idx == 0 else self.tokens
        if bucket is None:
            bucket = self._bucket(limit, now)
            if idx == 0:
                self.requests = bucket
            else:
                self.tokens = bucket
        elif limit < bucket.per_minute:
            bucket.per_minute = limit

    def _learn(self, idx: int, limit: float, now: float | None = None) -> None:
        """A limit the server told us: tighten to it, never past the configured one."""
        configured = self.configured[idx]
        self._tighten(idx, min(limit, configured) if configured else limit, now)

    def _slow_down(self) -> None:
        """The server says we are over its limit: a lower rate and no burst."""
        self.scale = max(0.5, self.scale * self.backoff)
        if self.requests:
            self.requests.level = min(self.requests.level, 0.0)


class RateLimiter(Budget):
    """RPM/TPM admission for one teacher; ``None`` limits are learned from response headers when the server sends them."""

    def __init__(self, rpm: float | None = None, tpm: float | None = None, backoff: float = 0.9):
        super().__init__(rpm, tpm, backoff)
        self._lock = asyncio.Lock()

    def estimate(self, prompt_chars: int, max_tokens: int, n: int = 1) -> int:
        """Tokens a request will use: prompt (≈4 characters a token) plus learned completion length, per sample."""
        completion = self.completion_tokens if self.completion_tokens is not None else max_tokens
        return int(prompt_chars / 4) + 4 + int(min(completion, max_tokens) * n)

    async def acquire(self, tokens: int) -> None:
        """Wait until one request of ``tokens`` fits both budgets, then take it (FIFO across callers)."""
        async with self._lock:
            while True:
                now = time.monotonic()
                wait = 0.0
                for bucket, amount in ((self.requests, 1), (self.tokens, tokens)):
                    if bucket is not None:
                        bucket.refill(now)
                        wait = max(wait, bucket.wait(amount) / self.scale)
                if wait <= 0:
                    if self.requests:
                        self.requests.level -= 1
                    if self.tokens:
                        self.tokens.level -= tokens
                    return
                await asyncio.sleep(wait)

    def settle(self, reserved: int, used: int, completion_per_sample: float | None = None) -> None:
        """Correct the token bucket by what the request really used, and learn the completion length."""
        if self.tokens is not None:
            self.tokens.level += reserved - used
        if completion_per_sample is not None:
            c = self.completion_tokens
            self.completion_tokens = completion_per_sample if c is None else 0.9 * c + 0.1 * completion_per_sample
        if self.scale < 1.0:
            self.scale = min(1.0, self.scale + 0.002)

    def on_429(self) -> None:
        """The server says we are over its limit: slow down (only meaningful once a limit is known)."""
        self._slow_down()

    def observe_headers(self, headers: Mapping[str, str]) -> None:
        """Tighten to the server's ``x-ratelimit-limit-*``; no burst while its ``remaining`` is zero."""
        for name, idx in (("requests", 0), ("tokens", 1)):
            limit = _int(headers.get(f"x-ratelimit-limit-{name}"))
            if limit:
                self._learn(idx, limit)
            bucket = self.requests if idx == 0 else self.tokens
            if bucket is not None and _int(headers.get(f"x-ratelimit-remaining-{name}")) == 0:
                bucket.level = min(bucket.level, 0.0)

    async def close(self) -> None:
        """The engine is done with the limiter: nothing to hand back for a local one."""

    def describe(self) -> str:
        parts = []
        if self.requests:
            parts.append(f"{self.requests.per_minute * self.scale:,.0f} rpm")
        if self.tokens:
            parts.append(f"{self.tokens.per_minute * self.scale:,.0f} tpm")
        return ", ".join(parts) or "no rate limit"


# (teacher name, limit key, rpm, tpm, the engine's counters) -> the limiter an engine uses
LimiterFactory = Callable[[str, str, "float | None", "float | None", "TeacherStats"], RateLimiter]
_factory: LimiterFactory | None = None


def use_limiter_factory(factory: LimiterFactory | None) -> None:
    """Make every engine built in this process take its limiter from ``factory`` (None: a local RateLimiter again)."""
    global _factory
    _factory = factory


def new_limiter(name: str, key: str, rpm: float | None, tpm: float | None, stats: "TeacherStats") -> RateLimiter:
    """The limiter for one engine: the installed factory's (a cluster-wide budget), else a local one."""
    return _factory(name, key, rpm, tpm, stats) if _factory is not None else RateLimiter(rpm, tpm)


def _int(value: str | None) -> int | None:
    try:
        return int(float(value)) if value is not None else None
    except ValueError:
        return None
