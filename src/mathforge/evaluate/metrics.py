"""Evaluation metrics: greedy accuracy, maj@k, unbiased pass@k, mean pass@1, 95% intervals, per-group breakdowns.

Pure functions over per-problem outcomes, so they are tested without a model. Binary scores (greedy, maj@k) get a
Wilson interval; fractional per-problem scores (pass@k, mean pass@1) a percentile bootstrap over problems.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Iterable, Sequence

import numpy as np

Z95 = 1.959963984540054


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k from n samples of which c are correct (Chen et al. 2021): 1 - C(n-c, k) / C(n, k)."""
    if not 0 <= c <= n or not 1 <= k <= n:
        raise ValueError(f"pass@k needs 0 <= c <= n and 1 <= k <= n, got n={n} c={c} k={k}")
    if n - c < k:
        return 1.0
    # the product form of the binomial ratio stays exact-enough and never overflows
    return 1.0 - float(np.prod(1.0 - k / np.arange(n - c + 1, n + 1)))


def wilson_interval(successes: float, n: int, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval of a binomial proportion (sane at 0%, 100% and small n)."""
    if n == 0:
        return (0.0, 0.0)
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    # The interval always holds p; clamping to it removes rounding such as a lower bound of 5.6e-17 at 0 of 3.
    return (min(p, max(0.0, centre - half)), max(p, min(1.0, centre + half)))


def bootstrap_interval(
    values: Sequence[float], *, resamples: int = 2000, seed: int = 0, level: float = 0.95
) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean of per-problem scores (seeded: the same input, the same interval)."""
    x = np.asarray(values, dtype=float)
    if x.size == 0:
        return (0.0, 0.0)
    rng = np.random.default_rng(seed)
    means = x[rng.integers(0, x.size, size=(resamples, x.size))].mean(axis=1)
    lo, hi = np.quantile(means, [(1 - level) / 2, 1 - (1 - level) / 2])
    return (float(lo), float(hi))


def paired_delta(a: Sequence[float], b: Sequence[float], *, resamples: int = 2000, seed: int = 0) -> dict[str, float]:
    """Mean of a - b over the same problems with a paired bootstrap 95% interval (is the student really better?)."""
    d = np.asarray(a, dtype=float) - np.asarray(b, dtype=float)
    lo, hi = bootstrap_interval(d, resamples=resamples, seed=seed)
    return {"delta": float(d.mean()) if d.size else 0.0, "ci_low": lo, "ci_high": hi, "n": int(d.size)}


@dataclass
class Score:
    """One metric over a set of problems: its value, 95% interval, and how many problems it covers."""

    value: float
    ci_low: float
    ci_high: float
    n: int
    interval: str

    def as_dict(self) -> dict[str, Any]:
        return {"value": self.value, "ci_low": self.ci_low, "ci_high": self.ci_high, "n": self.n, "interval": self.interval}


def binary_score(flags: Sequence[bool]) -> Score:
    """Accuracy of yes/no outcomes with a Wilson interval."""
    n, s = len(flags), sum(bool(f) for f in flags)
    lo, hi = wilson_interval(s, n)
    return Score(s / n if n else 0.0, lo, hi, n, "wilson")


def mean_score(values: Sequence[float], seed: int = 0) -> Score:
    """Mean of fractional per-problem scores with a bootstrap interval."""
    lo, hi = bootstrap_interval(values, seed=seed)
    return Score(float(np.mean(values)) if len(values) else 0.0, lo, hi, len(values), "bootstrap")


@dataclass
class ProblemOutcome:
    """What one model did on one problem: the greedy verdict and the verdicts and vote of its k samples."""

    problem_id: str
    greedy: bool | None = None  # None: no greedy run
    sampled: list[bool] = field(default_factory=list)
    majority: bool | None = None  # the majority answer's verdict (None: no samples)
    groups: dict[str, Any] = field(default_factory=dict)  # level, subject, ...


def ks_for(n: int) -> list[int]:
    """The k of pass@k reported for n samples: 1, 2, 4, ... and n itself."""
    ks, k = [], 1
    while k < n:
        ks.append(k)
        k *= 2
    return ks + [n] if n >= 1 else []


def summarize(outcomes: Sequence[ProblemOutcome], seed: int = 0) -> dict[str, dict[str, Any]]:
    """Every metric the outcomes support, by name: greedy, maj@k, pass@k for k in ks_for(k), mean pass@1."""
    out: dict[str, dict[str, Any]] = {}
    greedy = [o.greedy for o in outcomes if o.greedy is not None]
    if greedy:
        out["greedy"] = binary_score(greedy).as_dict()
    sampled = [o for o in outcomes if o.sampled]
    if sampled:
        n = min(len(o.sampled) for o in sampled)
        out[f"maj@{n}"] = binary_score([bool(o.majority) for o in sampled]).as_dict()
        for k in ks_for(n):
            vals = [pass_at_k(len(o.sampled), sum(o.sampled), k) for o in sampled]
            name = "mean_pass@1" if k == 1 else f"pass@{k}"
            out[name] = mean_score(vals, seed).as_dict()
    return out


def primary_metric(metrics: dict[str, Any]) -> str | None:
    """The headline metric of a result: greedy accuracy when measured, else maj@k, else mean pass@1."""
    if "greedy" in metrics:
        return "greedy"
    return next((m for m in metrics if m.startswith("maj@")), next(iter(metrics), None))


def breakdown(outcomes: Iterable[ProblemOutcome], key: str, seed: int = 0) -> dict[str, dict[str, Any]]:
    """``summarize`` per value of ``groups[key]`` (MATH level or subject), groups in sorted order."""
    by: dict[str, list[ProblemOutcome]] = {}
    for o in outcomes:
        if o.groups.get(key) is not None:
            by.setdefault(str(o.groups[key]), []).append(o)
    return {g: summarize(by[g], seed) for g in sorted(by)}
