"""One HTTP attempt in flight, how long the *server* has kept it waiting, and the bounded early re-send policy.

Waiting time is measured to the response's first byte (a backend calls :func:`response_started` when the headers
arrive), minus any time the client's own event loop was too busy to notice anything (:class:`LoopClock`). So a client
that is CPU-starved, or busy committing answers, never mistakes its own backlog for a slow server, and a response
that has started arriving is never abandoned.

The re-send policy (:class:`ResendPolicy`): an attempt that waits past its learned timeout is *overdue*. Mid-run it
gives back its concurrency slot and keeps waiting (its answer is still taken when it comes, up to the ``timeout``
ceiling), which costs no wall time and no extra call. Only when the run is waiting on nothing but overdue attempts
(everything else is answered or in flight) does it send a second copy, first answer wins; at most ``resend_share`` of
the run's calls get one. Every copy cut short is counted as *abandoned* (the server may still bill it).
"""

from __future__ import annotations

import asyncio
import math
import time
from contextvars import ContextVar
from dataclasses import dataclass

from mathforge.engine.jobs import Job

_CURRENT: ContextVar["Attempt | None"] = ContextVar("mathforge_attempt", default=None)


def response_started() -> None:
    """Mark the current attempt as answered by the server (its headers arrived); call from the sending task."""
    attempt = _CURRENT.get()
    if attempt is not None and attempt.started is None:
        attempt.started = time.monotonic()
        attempt.stall_at_start = attempt.clock.stalled


class LoopClock:
    """Seconds the event loop was blocked or backlogged: how late each watchdog tick fired, summed (lateness under
    ``jitter``, ordinary scheduling noise on a busy machine, is not a stall)."""

    jitter = 0.05

    def __init__(self, tick: float):
        self.tick = tick
        self.stalled = 0.0
        self._last = time.monotonic()

    def beat(self) -> float:
        """One watchdog tick; returns the time now."""
        now = time.monotonic()
        late = now - self._last - self.tick
        if late > self.jitter:
            self.stalled += late
        self._last = now
        return now


@dataclass(eq=False)
class Attempt:
    """One HTTP call of a job; ``started`` is set when its response begins to arrive."""

    job: Job
    clock: LoopClock
    t0: float
    stall0: float
    resend: bool = False  # an early re-send racing an overdue attempt
    task: asyncio.Future | None = None
    started: float | None = None
    stall_at_start: float = 0.0
    late_ticks: int = 0  # consecutive watchdog ticks past the deadline
    overdue: bool = False
    cut: str | None = None  # why the engine cancelled it, if it did
    reserved: float = 0.0  # budget held for its worst case
    est: int = 0  # tokens taken from the rate limiter
    parked: bool = False  # overdue, and its job gave its concurrency slot back

    def waited(self, now: float) -> float:
        """Seconds the server has kept this attempt waiting (the client's own stalls excluded)."""
        return max(0.0, now - self.t0 - (self.clock.stalled - self.stall0))

    def raw_latency(self) -> float | None:
        """Time to first byte as the client saw it; None until the response starts."""
        return None if self.started is None else self.started - self.t0

    def server_latency(self) -> float | None:
        """Time to first byte, or None when the client stalled meanwhile (then it says more about the client than
        the server, and subtracting the stall would understate it: the server may have answered during the stall)."""
        raw = self.raw_latency()
        if raw is None:
            return None
        stalled = self.stall_at_start - self.stall0
        return raw if stalled <= 0.1 * raw else None


@dataclass
class ResendPolicy:
    """How many early re-sends a run may make, and when."""

    share: float = 0.01  # of the run's calls; 0 turns early re-sends off
    calls: int = 0  # calls in the run
    used: int = 0

    @property
    def allowed(self) -> int:
        return math.ceil(self.share * self.calls) if self.share > 0 else 0

    def may_resend(self, tail: bool) -> bool:
        """Re-send only when the run waits on nothing but overdue attempts, and within the cap."""
        return tail and self.used < self.allowed
