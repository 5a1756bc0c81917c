"""Score every row with the chosen method, then keep the best units under the budget; the rest are rejects."""

from __future__ import annotations

import math
import random
import time
from collections import defaultdict
from dataclasses import dataclass
from typing import Any

from mathforge.errors import DataError
from mathforge.select.config import SelectConfig

Rejects = list[tuple[dict[str, Any], str]]


@dataclass
class SelectResult:
    kept: list[dict[str, Any]]
    rejected: Rejects
    metrics: dict[str, Any]


def pair(row: dict[str, Any]) -> tuple[str, str]:
    """(question, response) of a samples row (its text) or a problems row (its reference solution)."""
    question = row.get("question")
    response = row["text"] if "text" in row else row.get("solution")
    if not question or not response:
        field = "question" if not question else ("text" if "text" in row else "solution")
        raise DataError(f"select: row {row.get('id')!r} has no {field}; the proxy methods score a question and its "
                        "response")
    return str(question), str(response)


def _unit(row: dict[str, Any], cfg: SelectConfig) -> str:
    return str(row.get("problem_id") or row["id"]) if cfg.unit == "problem" else str(row["id"])


def pass_rate_scores(rows: list[dict[str, Any]], cfg: SelectConfig) -> list[float]:
    """p(1-p)·4 of each row's problem (1 at p = ½, 0 when always or never solved); outside the band: -1."""
    solved: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for r in rows:
        if "correct" not in r:
            raise DataError(f"select: pass-rate needs verified samples; row {r.get('id')!r} has no 'correct' "
                            "column (run verify first)")
        s = solved[str(r["problem_id"])]
        s[0] += r["correct"] is True
        s[1] += 1
    out = []
    for r in rows:
        ok, n = solved[str(r["problem_id"])]
        p = ok / n
        out.append(4 * p * (1 - p) if cfg.min_pass_rate <= p <= cfg.max_pass_rate else -1.0)
    return out


def score_rows(rows: list[dict[str, Any]], cfg: SelectConfig, seed: int) -> tuple[list[float], dict[str, Any]]:
    """One score per row (higher = keep first) and what the scoring measured."""
    if cfg.method == "random":
        rng = random.Random(seed)
        return [rng.random() for _ in rows], {}
    if cfg.method == "pass-rate":
        return pass_rate_scores(rows, cfg), {}
    if cfg.method in ("perplexity", "ifd"):
        from mathforge.select.proxy import loss_scores

        return loss_scores([pair(r) for r in rows], cfg, ifd=cfg.method == "ifd")
    from mathforge.select.influence import influence_scores

    return influence_scores([pair(r) for r in rows], cfg, seed)


def select_rows(rows: list[dict[str, Any]], cfg: SelectConfig, seed: int = 0) -> SelectResult:
    """Score, rank units by mean score (seeded tie breaks), keep the budget; every row gets ``select_score``."""
    t0 = time.perf_counter()
    seed = cfg.seed if cfg.seed is not None else seed
    scores, info = score_rows(rows, cfg, seed) if rows else ([], {})
    units: dict[str, list[int]] = defaultdict(list)
    for i, r in enumerate(rows):
        units[_unit(r, cfg)].append(i)
    unit_score = {u: sum(scores[i] for i in idx) / len(idx) for u, idx in units.items()}
    order = list(units)
    random.Random(seed).shuffle(order)  # ties fall in a seeded order, never in file order
    order.sort(key=lambda u: -_finite(unit_score[u]))
    budget = cfg.keep if cfg.keep is not None else math.ceil(cfg.fraction * len(order))  # type: ignore[operator]
    kept_units = set(order[:budget])
    cutoff = unit_score[order[budget - 1]] if 0 < budget <= len(order) else None
    kept, rejected = [], []
    for i, r in enumerate(rows):
        row = {**r, "select_score": scores[i]}
        if _unit(r, cfg) in kept_units:
            kept.append(row)
        else:
            rejected.append((row, f"not-selected: {cfg.method} score {scores[i]:.4g} "
                                  f"(unit {unit_score[_unit(r, cfg)]:.4g}) below the cutoff {cutoff:.4g} "
                                  f"of the top {budget} {cfg.unit}s"))
    seconds = time.perf_counter() - t0
    metrics = {
        "method": cfg.method,
        "rows_in": len(rows),
        "units_in": len(order),
        "units_kept": len(kept_units),
        "rows_kept": len(kept),
        "cutoff": cutoff,
        "seconds": round(seconds, 2),
        "seconds_per_row": round(seconds / len(rows), 5) if rows else None,
        **info,
    }
    return SelectResult(kept, rejected, metrics)


def _finite(x: float) -> float:
    return x if math.isfinite(x) else -1e30
