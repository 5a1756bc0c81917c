"""Send model requests of any stage through the ledger, the way generate does, and read back their rows.

Judge, rewrite, problem-writing and solving requests are planned as ``generate.Planned`` items and sent with
``generate.run_generation``: content keys, registration before sending, one commit per response. So every request of
refine and synthesize resumes on its own, and a rerun sends nothing already answered.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

from mathforge.generate import run_generation
from mathforge.pipeline.context import RunContext
from mathforge.records import Problem
from mathforge.request import Planned, SamplingParams, plan_request
from mathforge.store.ledger import OK, LedgerRow

_SUMMED = ("requests", "cached", "sent", "failed", "new_tokens_out", "gen_seconds", "api_calls", "abandoned_calls")


@dataclass
class Usage:
    """Request counts summed over every batch a stage sent."""

    totals: dict[str, float] = field(default_factory=lambda: dict.fromkeys(_SUMMED, 0))

    def add(self, metrics: dict[str, Any]) -> None:
        for k in _SUMMED:
            self.totals[k] += metrics.get(k) or 0

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {k: int(v) for k, v in self.totals.items() if k != "gen_seconds"}
        out["gen_seconds"] = round(self.totals["gen_seconds"], 3)
        return out


def plan(
    ctx: RunContext,
    teacher: str,
    problem: Problem,
    prompt_key: str,
    messages: list[dict[str, str]],
    params: SamplingParams,
    sample_index: int = 0,
    meta: dict[str, Any] | None = None,
) -> Planned:
    """One request of ``teacher`` keyed by its content (model, endpoint, messages, params, sample index)."""
    return plan_request(ctx.backend(teacher).identity(), teacher, problem, prompt_key, messages, params,
                        sample_index, meta)


def send(ctx: RunContext, planned: Sequence[Planned], usage: Usage, retry_failed: bool = False) -> dict[str, LedgerRow]:
    """Send what the ledger has no answer for; return the answered rows by key (failed requests are absent)."""
    if not planned:
        return {}
    usage.add(run_generation(ctx, list(planned), retry_failed))
    rows = ctx.ledger.get_many([p.request.key for p in planned])
    return {k: r for k, r in rows.items() if r.status == OK}


def failure(ctx: RunContext, key: str) -> str:
    """Why a request has no answer (its last recorded error), for reject reasons."""
    row = ctx.ledger.get(key)
    if row is None:
        return "never sent"
    return f"{row.status}: {row.error or 'no error recorded'}"[:300]
