"""Tokens, cost and the budget cap per teacher, and the counters behind its live progress line."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Pricing:
    """US dollars per million input and output tokens."""

    input_per_m: float = 0.0
    output_per_m: float = 0.0

    def cost(self, tokens_in: float, tokens_out: float) -> float:
        return (tokens_in * self.input_per_m + tokens_out * self.output_per_m) / 1e6


@dataclass
class Budget:
    """A spending cap: an attempt is sent only if what is spent, what is in flight and its worst case fit.

    Attempts that may be billed without an answer reaching us (cut short, timed out, dropped, unparseable) stay
    charged at their worst-case cost (``forfeited``): the server may have generated every token.
    """

    limit: float | None
    pricing: Pricing
    spent: float = 0.0
    reserved: float = 0.0
    forfeited: float = 0.0
    exhausted: bool = False

    def try_reserve(self, tokens_in: int, tokens_out: int) -> float | None:
        """Reserve the worst-case cost of one attempt; None (and ``exhausted``) when it would pass the cap."""
        return self.take(self.pricing.cost(tokens_in, tokens_out))

    async def reserve(self, tokens_in: int, tokens_out: int) -> float | None:
        """``try_reserve`` as the engine calls it (a cluster's budget asks its ledger, which takes a round trip)."""
        return self.try_reserve(tokens_in, tokens_out)

    def take(self, est: float) -> float | None:
        """Reserve ``est`` dollars if they fit under the cap (None, and ``exhausted``, when they do not)."""
        if self.limit is not None and self.spent + self.forfeited + self.reserved + est > self.limit:
            self.exhausted = True
            return None
        self.reserved += est
        return est

    def settle(self, reserved: float, tokens_in: int, tokens_out: int) -> None:
        self.charge(reserved, self.pricing.cost(tokens_in, tokens_out))

    def charge(self, reserved: float, cost: float) -> None:
        """An attempt reserved at ``reserved`` was answered and cost ``cost``."""
        self.reserved = max(0.0, self.reserved - reserved)
        self.spent += cost

    def release(self, reserved: float) -> None:
        self.reserved = max(0.0, self.reserved - reserved)

    def forfeit(self, reserved: float) -> None:
        """An attempt that may be billed came to nothing: keep its worst case charged."""
        self.reserved = max(0.0, self.reserved - reserved)
        self.forfeited += reserved

    async def close(self) -> None:
        """The engine is done with the budget (a cluster's hands its unused lease back)."""


# (teacher name, cap, pricing, spent before this engine) -> the budget an engine uses
BudgetFactory = Callable[[str, "float | None", Pricing, float], Budget]
_factory: BudgetFactory | None = None


def use_budget_factory(factory: BudgetFactory | None) -> None:
    """Make every engine built in this process take its budget from ``factory`` (None: a local Budget again)."""
    global _factory
    _factory = factory


def new_budget(name: str, limit: float | None, pricing: Pricing, spent: float = 0.0) -> Budget:
    """The budget for one engine: the installed factory's (one ledger of spend for a cluster), else a local one."""
    return _factory(name, limit, pricing, spent) if _factory is not None else Budget(limit, pricing, spent=spent)


@dataclass
class TeacherStats:
    """Live counters of one teacher's generation (requests here are samples: one per ledger key).

    Every HTTP attempt that reached the wire is in ``api_calls`` (what the server counts and may bill); each ends
    as answered, an error, or abandoned (cut short by the engine: an early re-send's loser, or past the ceiling).
    """

    total: int = 0
    done: int = 0
    failed: int = 0
    retries: int = 0
    rate_limited: int = 0  # 429 answers
    timeouts: int = 0  # attempts that went overdue (past their learned timeout) or hit the ceiling
    api_calls: int = 0  # HTTP attempts sent
    answered_calls: int = 0  # attempts whose answer was kept
    error_calls: int = 0  # attempts that came back with an error (429, 5xx, dropped, unparseable)
    abandoned: int = 0  # attempts the engine cut short; the server may still bill them
    resends: int = 0  # early re-sends of overdue attempts (bounded by ``resend_share``)
    connect_failures: int = 0  # attempts that never got a connection (not in ``api_calls``: nothing was sent)
    maybe_billed_cost: float = 0.0  # worst-case USD of attempts that may be billed without a kept answer
    http_client: str = ""
    tokens_in: int = 0
    tokens_out: int = 0
    spend: float = 0.0
    prior_tokens_in: int = 0  # answered for this teacher in this run directory before this run
    prior_tokens_out: int = 0
    prior_spend: float = 0.0
    stopped: str | None = None  # why sending stopped early (budget)
    started: float = field(default_factory=time.monotonic)
    finished: float | None = None

    def line(self) -> str:
        """The progress line: 429s, retries, failures, spend (done/total, rates are shown by the bar itself)."""
        s = f"calls {self.api_calls}"
        if self.abandoned:
            s += f" (abandoned {self.abandoned})"
        s += f" 429s {self.rate_limited} retries {self.retries} failed {self.failed}"
        if self.spend or self.prior_spend:
            s += f" ${self.spend + self.prior_spend:,.2f}"
        return s + (f" [{self.stopped}]" if self.stopped else "")

    def as_dict(self) -> dict:
        elapsed = max(1e-9, (self.finished or time.monotonic()) - self.started)
        return {
            "total": self.total, "done": self.done, "failed": self.failed, "retries": self.retries,
            "rate_limited_429": self.rate_limited, "timeouts": self.timeouts, "api_calls": self.api_calls,
            "answered_calls": self.answered_calls, "error_calls": self.error_calls, "abandoned_calls": self.abandoned,
            "resends": self.resends, "connect_failures": self.connect_failures,
            "maybe_billed_max_usd": round(self.maybe_billed_cost, 6),
            "calls_per_answer": round(self.api_calls / self.done, 4) if self.done else None,
            "http_client": self.http_client,
            "tokens_in": self.tokens_in, "tokens_out": self.tokens_out, "spend_usd": round(self.spend, 6),
            "ex_per_min": round(self.done / elapsed * 60, 1), "tokens_per_s": round(self.tokens_out / elapsed, 1),
            "stopped": self.stopped,
        }
