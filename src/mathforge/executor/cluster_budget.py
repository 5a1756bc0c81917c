"""One ledger of spend per teacher for a whole Ray cluster: the ``budget:`` cap holds for all workers together.

Locally an engine's ``Budget`` admits an attempt only if what is spent, what is in flight (at its worst case) and
the attempt's worst case fit under the cap. On a cluster each worker runs its own engine, so each would hold the cap
for itself and N workers would spend N times it. Here the books live in the cluster limits actor
(``executor/cluster_limits.py``, the one that already holds each API key's RPM/TPM budget), keyed by run and
teacher; every worker's engine reserves each attempt's worst case against it and reports what it then cost.

- The driver opens a teacher's book before each batch of requests it hands out (``open_budget``), with the cap and
  the spend already in its ledger (as the local engine starts from the ledger's prior spend).
- A worker's ``ClusterBudget`` leases dollars from the book and reserves each attempt's worst case from its lease,
  so most attempts cost no round trip: a lease covers up to ``LEASE_ATTEMPTS`` worst cases, but never more than
  ``1/LEASE_SHARE`` of the room left under the cap beyond the one asked for, so near the cap leases shrink to one
  attempt and no worker sits on money another one needs for long. Reservations a worker releases go back to its
  lease; what it has left when its engine closes goes back to the book. Charges and forfeits are sent without
  waiting: Ray runs one caller's calls to an actor in the order sent.
- A worker that cannot reach the actor (its node lost; a restarted actor has no books) refuses the attempt: the cap
  is never passed, the requests stay unsent in the ledger and a rerun sends them under a reopened book.
"""

from __future__ import annotations

import logging
from typing import Any

from mathforge.engine.accounting import Budget, Pricing

log = logging.getLogger(__name__)
LEASE_ATTEMPTS = 8  # worst cases a lease covers while the cap is far
LEASE_SHARE = 8  # a lease takes at most this share of the room left beyond what it needs now


class BudgetBooks:
    """The actor's side: a ``Budget`` in dollars per (run, teacher) key."""

    def __init__(self) -> None:
        self.books: dict[str, Budget] = {}

    def open(self, key: str, limit: float, spent: float) -> None:
        """(Re)open a book: the cap and what the run's ledger already holds as spent."""
        self.books[key] = Budget(limit, Pricing(), spent=spent)

    def lease(self, key: str, need: float, extra: float) -> float:
        """Dollars for a worker: ``need`` plus up to ``extra`` while the room allows; 0 (and exhausted) when even
        ``need`` does not fit (or the book is unknown: a restarted actor refuses until the driver reopens it)."""
        book = self.books.get(key)
        if book is None or book.limit is None:
            return 0.0
        room = book.limit - book.spent - book.forfeited - book.reserved
        if need > room:
            book.exhausted = True
            return 0.0
        grant = need + max(0.0, min(extra, (room - need) / LEASE_SHARE))
        book.reserved += grant
        return grant

    def charge(self, key: str, reserved: float, cost: float) -> None:
        if key in self.books:
            self.books[key].charge(reserved, cost)

    def release(self, key: str, reserved: float) -> None:
        if key in self.books:
            self.books[key].release(reserved)

    def forfeit(self, key: str, reserved: float) -> None:
        if key in self.books:
            self.books[key].forfeit(reserved)

    def drop(self, scope: str) -> None:
        """Forget the books of one run (its driver is done)."""
        for key in [k for k in self.books if k.startswith(f"{scope}/")]:
            del self.books[key]

    def state(self, key: str) -> dict[str, Any] | None:
        book = self.books.get(key)
        if book is None:
            return None
        return {"limit": book.limit, "spent": book.spent, "reserved": book.reserved, "forfeited": book.forfeited,
                "exhausted": book.exhausted}


def budget_key(scope: str, teacher: str) -> str:
    """The book of one teacher in one run (``scope``: the driver's executor; runs sharing a cluster differ)."""
    return f"{scope}/{teacher}"


class ClusterBudget(Budget):
    """The engine's budget on a cluster worker: the cap is decided by the actor's book, shared by every worker.

    The local fields (``spent``, ``reserved``, ...) still count this engine's own share, for its progress line."""

    def __init__(self, handle: Any, key: str, limit: float | None, pricing: Pricing, spent: float = 0.0):
        super().__init__(limit, pricing, spent=spent)
        self.handle, self.key = handle, key
        self.held = 0.0  # leased from the book, not reserved by an attempt yet

    def try_reserve(self, tokens_in: int, tokens_out: int) -> float | None:
        raise TypeError("a cluster budget is reserved through the actor: await reserve(...)")

    async def reserve(self, tokens_in: int, tokens_out: int) -> float | None:
        est = self.pricing.cost(tokens_in, tokens_out)
        if est > self.held:
            try:
                granted = await self.handle.budget_lease.remote(self.key, est - self.held, est * (LEASE_ATTEMPTS - 1))
            except Exception as exc:  # the actor is gone or restarting: Ray raises its own error types
                log.warning("cluster budget %s: the limits actor is unreachable (%s); sending stops", self.key, exc)
                granted = 0.0
            if granted <= 0:
                self.exhausted = True
                return None
            self.held += granted
        self.held = max(0.0, self.held - est)
        self.reserved += est
        return est

    def charge(self, reserved: float, cost: float) -> None:
        super().charge(reserved, cost)
        self.handle.budget_charge.remote(self.key, reserved, cost)

    def release(self, reserved: float) -> None:
        if reserved:
            super().release(reserved)
            self.held += reserved  # back to this worker's lease (the book counts it as reserved until close)

    def forfeit(self, reserved: float) -> None:
        super().forfeit(reserved)
        if reserved:
            self.handle.budget_forfeit.remote(self.key, reserved)

    async def close(self) -> None:
        """Hand what is left of the lease back to the book (other workers may need it)."""
        if self.held > 0:
            held, self.held = self.held, 0.0
            try:
                await self.handle.budget_release.remote(self.key, held)
            except Exception as exc:
                log.warning("cluster budget %s: could not hand back $%.4f (%s)", self.key, held, exc)


def budget_factory(handle: Any, scope: str) -> Any:
    """The engine's budget factory on a worker: a ``ClusterBudget`` for a capped teacher, a local one otherwise."""

    def factory(name: str, limit: float | None, pricing: Pricing, spent: float) -> Budget:
        if limit is None:
            return Budget(None, pricing, spent=spent)
        return ClusterBudget(handle, budget_key(scope, name), limit, pricing, spent)

    return factory
