"""How many requests may be in flight: an adjustable semaphore driven by AIMD under a hard cap.

Grows while requests succeed and the limit is what holds us back: in slow start by ``growth`` slots per answer (the
limit multiplies by ``1 + growth`` per round trip: x4 by default, so 64 reaches a cap of 1,024 in two round trips),
then by one per round trip. Slow start ends, without shrinking, as soon as the median latency of the last few answers
passes ``exit_factor`` times the best median seen (a server starting to queue: TCP HyStart's rule), so the fast
growth cannot overshoot far. The limit halves on overload (a 429 when no rate limit is known to pace us), and shrinks
by a fifth when the median latency of recent requests rises past twice the best median seen or when more than
``bad_share`` of recent attempts failed or went overdue. While more than half that share fails it does not grow.
Isolated faults (a 5xx here, a hang there) change nothing: only a rising rate does.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from collections import deque


class AdaptiveConcurrency:
    """An asyncio semaphore whose limit moves between ``floor`` and ``cap``."""

    def __init__(self, cap: int, initial: int | None = None, floor: int = 1, window: int = 50, latency_factor: float = 2.0,
                 bad_share: float = 0.2, growth: float = 3.0, exit_factor: float = 1.5, recent: int = 16):
        self.cap = max(1, cap)
        self.floor = max(1, min(floor, self.cap))
        self.limit = float(min(self.cap, max(self.floor, initial or self.cap)))
        self.slow_start = self.limit < self.cap
        self.in_use = 0
        self.latency_factor = latency_factor
        self._window: deque[float] = deque(maxlen=window)
        self.growth = growth  # slots added per answer in slow start
        self.exit_factor = exit_factor
        self._recent: deque[float] = deque(maxlen=max(1, min(recent, window)))  # slow start's latency check
        self._seen = 0
        self.best_median: float | None = None
        self._last_decrease = 0.0
        self._waiters: deque[asyncio.Future] = deque()
        self.bad_share = bad_share
        self._outcomes: deque[bool] = deque(maxlen=max(100, window))  # True: a failed or overdue attempt
        self._bad = 0
        # Requests are waiting to be sent (set by the engine while it has undispatched jobs): a wave of answers that
        # arrives in one event-loop tick frees many slots before the sender refills them, so free slots alone would
        # hide that the limit binds.
        self.demand = False

    async def acquire(self) -> None:
        if self.in_use < int(self.limit) and not self._waiters:
            self.in_use += 1
            return
        fut = asyncio.get_running_loop().create_future()
        self._waiters.append(fut)
        try:
            await fut
        except asyncio.CancelledError:
            if fut.done() and not fut.cancelled():
                self.release()  # we were handed a slot as we were cancelled: give it back
            raise

    def release(self) -> None:
        self.in_use -= 1
        self._wake()

    def _wake(self) -> None:
        while self._waiters and self.in_use < int(self.limit):
            fut = self._waiters.popleft()
            if not fut.done():
                self.in_use += 1
                fut.set_result(None)

    def _outcome(self, bad: bool) -> float:
        if len(self._outcomes) == self._outcomes.maxlen:
            self._bad -= self._outcomes[0]
        self._outcomes.append(bad)
        self._bad += bad
        return self._bad / len(self._outcomes)

    def on_error(self) -> None:
        """An attempt failed (5xx, dropped) or went overdue: shrink only when such outcomes become frequent."""
        if self._outcome(True) > self.bad_share and len(self._outcomes) >= 20:
            self._decrease(0.8)

    def on_success(self, latency: float | None) -> None:
        """One request answered: grow if the limit is what holds us back; back off if latency is rising.

        ``latency`` is None when it is no sign of the server's load (the client stalled, or the answer was overdue).
        """
        bad_rate = self._outcome(False)
        if latency is not None:
            self._window.append(latency)
            self._recent.append(latency)
            self._seen += 1
            if self.slow_start and self._queueing():
                self.slow_start = False  # latency rising: stop multiplying, keep what we have
            if self._seen % self._window.maxlen == 0:  # type: ignore[operator]
                median = statistics.median(self._window)
                if self.best_median is None or median < self.best_median:
                    self.best_median = median
                elif median > self.latency_factor * self.best_median:
                    self._decrease(0.8)
                    return
        if bad_rate > self.bad_share / 2:
            return
        if (self._waiters or self.demand or self.in_use >= int(self.limit) - 1) and self.limit < self.cap:
            self.limit = min(self.cap, self.limit + (self.growth if self.slow_start else 1.0 / self.limit))
            self._wake()

    def _queueing(self) -> bool:
        """The last few answers' median latency is past ``exit_factor`` x the best window median seen."""
        if self.best_median is None or len(self._recent) < (self._recent.maxlen or 1):
            return False
        return statistics.median(self._recent) > self.exit_factor * self.best_median

    def open_to_cap(self) -> None:
        """A rate limiter now paces the requests: concurrency only has to cover the latency, so allow the cap."""
        self.slow_start = False
        self.limit = float(self.cap)
        self._wake()

    def on_overload(self) -> None:
        """The server refused for load (429 without a known rate limit): halve."""
        self._decrease(0.5)

    def _decrease(self, factor: float) -> None:
        # At most once per round trip: the requests already in flight were sent under the old limit.
        now = time.monotonic()
        rtt = statistics.median(self._window) if self._window else 1.0
        if now - self._last_decrease < rtt:
            return
        self._last_decrease = now
        self.slow_start = False
        self.limit = max(float(self.floor), self.limit * factor)
