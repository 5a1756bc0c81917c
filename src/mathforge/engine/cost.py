"""What each teacher has cost and will cost, read from the ledger: the view a budget holder checks.

Spend is exact (the provider's token counts × the teacher's prices, at the batch price for requests answered through
a batch). What is still to come is projected: prompt characters / 4 in, and out the mean completion of the answers
so far (``max_tokens`` before any answer); batches in flight also show their worst case (every request at
``max_tokens``), which is what the budget cap reserves before a batch is submitted.
"""

from __future__ import annotations

import sqlite3
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Mapping

from mathforge.engine.accounting import Pricing


@dataclass
class TeacherCost:
    teacher: str
    mode: str = "online"
    price_input_per_m: float = 0.0
    price_output_per_m: float = 0.0
    batch_factor: float = 1.0  # batch price / online price (0.5: half price)
    budget: float | None = None
    answered: int = 0
    answered_in_batch: int = 0
    tokens_in: int = 0
    tokens_out: int = 0
    spent: float = 0.0
    in_flight: int = 0  # requests in provider batches
    in_flight_cost: float = 0.0  # projected
    in_flight_worst: float = 0.0  # every request at max_tokens (what the budget reserves)
    pending: int = 0
    pending_cost: float = 0.0  # projected
    failed: int = 0

    @property
    def projected_total(self) -> float:
        return self.spent + self.in_flight_cost + self.pending_cost

    def as_dict(self) -> dict[str, Any]:
        return asdict(self) | {"projected_total": self.projected_total}


def usd(x: float) -> str:
    """Dollars with cents, or four decimals under a dollar (test runs and small batches cost fractions of a cent)."""
    return f"${x:,.2f}" if abs(x) >= 1 else f"${x:.4f}"


def pricing_of(config: Mapping[str, Any] | Any) -> tuple[Pricing, float, str, float | None]:
    """(online pricing, batch factor, mode, budget) of a teacher config (a model or its dumped dict)."""
    c = config if isinstance(config, Mapping) else config.model_dump()
    batch = c.get("batch") or {}
    mode = c.get("mode") or "online"
    return (Pricing(float(c.get("price_input_per_m") or 0.0), float(c.get("price_output_per_m") or 0.0)),
            float(batch.get("price_factor", 0.5)) if isinstance(batch, Mapping) else 0.5, mode, c.get("budget"))


def teacher_costs(conn: sqlite3.Connection, teachers: Mapping[str, Any]) -> dict[str, TeacherCost]:
    """Per teacher (those in the ledger and those configured): spend so far and projected spend, from the ledger."""
    cols = {r[1] for r in conn.execute("PRAGMA table_info(requests)")}
    in_batch = "batch_id IS NOT NULL" if "batch_id" in cols else "0"
    rows = conn.execute(
        f"SELECT teacher, status, {in_batch}, COUNT(*), COALESCE(SUM(tokens_in),0), COALESCE(SUM(tokens_out),0), "
        "COALESCE(SUM((SELECT SUM(LENGTH(json_extract(m.value, '$.content'))) "
        "FROM json_each(requests.request, '$.messages') AS m)),0), "
        "COALESCE(SUM(json_extract(request, '$.params.max_tokens')),0) FROM requests GROUP BY 1, 2, 3"
    ).fetchall()
    out: dict[str, TeacherCost] = {}
    for name, cfg in teachers.items():
        pricing, factor, mode, budget = pricing_of(cfg)
        out[name] = TeacherCost(name, mode, pricing.input_per_m, pricing.output_per_m,
                                factor if mode == "batch" else 1.0, budget)
    later: list[tuple] = []
    for teacher, status, batched, n, tin, tout, chars, max_out in rows:
        tc = out.setdefault(teacher, TeacherCost(teacher))
        price = Pricing(tc.price_input_per_m, tc.price_output_per_m)
        if status == "ok":
            factor = _factor(teachers, teacher) if batched else 1.0
            tc.answered += n
            tc.answered_in_batch += n if batched else 0
            tc.tokens_in += tin
            tc.tokens_out += tout
            tc.spent += price.cost(tin, tout) * factor
        elif status == "failed":
            tc.failed += n
        else:
            later.append((tc, status, n, chars, max_out))
    for tc, status, n, chars, max_out in later:
        price = Pricing(tc.price_input_per_m, tc.price_output_per_m)
        mean_out = tc.tokens_out / tc.answered if tc.answered else max_out / max(n, 1)
        est_in = chars / 4 + 8 * n
        if status in ("submitting", "submitted"):
            factor = _factor(teachers, tc.teacher)
            tc.in_flight += n
            tc.in_flight_cost += price.cost(est_in, mean_out * n) * factor
            tc.in_flight_worst += price.cost(est_in, max_out) * factor
        else:
            tc.pending += n
            tc.pending_cost += price.cost(est_in, mean_out * n) * tc.batch_factor
    return out


def _factor(teachers: Mapping[str, Any], teacher: str) -> float:
    """The batch price factor of a teacher, whatever its mode now (batches it sent earlier were billed so)."""
    cfg = teachers.get(teacher)
    return pricing_of(cfg)[1] if cfg is not None else 0.5


def read_costs(ledger_path: str | Path, teachers: Mapping[str, Any]) -> dict[str, TeacherCost]:
    """``teacher_costs`` on a ledger file opened read-only (the report and ``mathforge status`` never write)."""
    path = Path(ledger_path)
    if not path.exists():
        return {}
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30)
    try:
        return teacher_costs(conn, teachers)
    finally:
        conn.close()


def ledger_costs(ledger: Any, teacher: str, config: Any) -> TeacherCost:
    """One teacher's costs from a live ``Ledger`` (the budget cap and the progress line use it)."""
    with ledger.transaction() as conn:  # a consistent snapshot (the write lock is cheap and brief)
        return teacher_costs(conn, {teacher: config})[teacher]
