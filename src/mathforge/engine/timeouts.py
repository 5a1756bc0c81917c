"""Per-request timeouts learned from observed latency, so a hung request is abandoned and re-sent early.

Until ``min_samples`` answers are seen the configured ceiling applies. Then an attempt may take ``multiplier`` times
the p99 of recent latencies (at least ``floor`` seconds), doubled on each re-send of a request that timed out, so a
legitimately long answer still gets through, and never more than the ceiling.
"""

from __future__ import annotations

from collections import deque


class LatencyTimeout:
    def __init__(self, ceiling: float, multiplier: float = 2.0, floor: float = 2.0, min_samples: int = 20, window: int = 500):
        self.ceiling = ceiling
        self.multiplier = multiplier
        self.floor = floor
        self.min_samples = min_samples
        self._recent: deque[float] = deque(maxlen=window)
        self._cached: float | None = None
        self._since = 0

    def observe(self, latency: float) -> None:
        self._recent.append(latency)
        self._since += 1
        if self._cached is None or self._since >= 20:  # re-sort at most every 20 answers
            self._cached = None

    def base(self) -> float:
        """The learned timeout of a first attempt."""
        if len(self._recent) < self.min_samples:
            return self.ceiling
        if self._cached is None:
            ordered = sorted(self._recent)
            p99 = ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))]
            self._cached = min(self.ceiling, max(self.floor, self.multiplier * p99))
            self._since = 0
        return self._cached

    def for_attempt(self, timeouts_so_far: int) -> float:
        """Timeout of an attempt after ``timeouts_so_far`` earlier attempts of the same request timed out."""
        return min(self.ceiling, self.base() * 2**timeouts_so_far)
