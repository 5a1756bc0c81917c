"""The report's PNG plots. Each function draws one figure from report data and returns False when there is no data.

Figures are built with ``matplotlib.figure.Figure`` (no pyplot state), so plotting needs no display and is thread-safe.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

from matplotlib.figure import Figure

from mathforge.evaluate.compare import fmt_score

COLORS = ["#4c72b0", "#dd8452", "#55a868", "#c44e52", "#8172b3", "#937860", "#da8bc3", "#8c8c8c"]


def _save(fig: Figure, path: Path) -> bool:
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    return True


def accuracy(rows: list[dict[str, Any]], path: Path) -> bool:
    """Headline accuracy of each (run, model, benchmark) with its 95% interval as error bars."""
    rows = [r for r in rows if r["primary"]]
    if not rows:
        return False
    multi_run = len({r["run"] for r in rows}) > 1
    labels = [f"{r['run'] + ' / ' if multi_run else ''}{r['model']} · {r['benchmark']} ({r['primary']})" for r in rows]
    scores = [r["metrics"][r["primary"]] for r in rows]
    vals = [100 * s["value"] for s in scores]
    err = [[max(0.0, v - 100 * s["ci_low"]) for v, s in zip(vals, scores)],
           [max(0.0, 100 * s["ci_high"] - v) for v, s in zip(vals, scores)]]
    benches = sorted({r["benchmark"] for r in rows})
    colors = [COLORS[benches.index(r["benchmark"]) % len(COLORS)] for r in rows]
    fig = Figure(figsize=(8, 1 + 0.45 * len(rows)))
    ax = fig.add_subplot()
    y = list(range(len(rows)))[::-1]
    ax.barh(y, vals, xerr=err, color=colors, capsize=3)
    ax.set_yticks(y, labels, fontsize=8)
    for yi, v, s in zip(y, vals, scores):
        ax.text(min(100 * s["ci_high"] + 1, 88), yi, fmt_score(s), va="center", fontsize=7)
    ax.set_xlim(0, 100)
    ax.set_xlabel("accuracy (%), 95% interval")
    ax.set_title("accuracy per model")
    return _save(fig, path)


def funnel(funnels: dict[str, list[tuple[str, int]]], path: Path) -> bool:
    """Samples left after each stage (generated → verified → curated → exported), one bar group per run."""
    funnels = {k: v for k, v in funnels.items() if v}
    if not funnels:
        return False
    steps = [s for s in ("generated", "verified", "curated", "exported") if any(s in dict(f) for f in funnels.values())]
    fig = Figure(figsize=(7, 3.5))
    ax = fig.add_subplot()
    width = 0.8 / len(funnels)
    for i, (run, f) in enumerate(funnels.items()):
        counts = dict(f)
        xs = [j + i * width for j, s in enumerate(steps) if s in counts]
        ys = [counts[s] for s in steps if s in counts]
        bars = ax.bar(xs, ys, width, label=run, color=COLORS[i % len(COLORS)])
        ax.bar_label(bars, fontsize=7)
    ax.set_xticks([j + width * (len(funnels) - 1) / 2 for j in range(len(steps))], steps)
    ax.set_ylabel("samples")
    ax.set_title("stage funnel")
    if len(funnels) > 1:
        ax.legend(fontsize=8)
    return _save(fig, path)


def usage(usage: dict[str, dict[str, Any]], path: Path) -> bool:
    """Tokens in and out per teacher, and the cost of the priced ones."""
    if not usage:
        return False
    names = list(usage)
    priced = [n for n in names if usage[n].get("cost") is not None]
    fig = Figure(figsize=(9 if priced else 6, 3.5))
    ax = fig.add_subplot(1, 2 if priced else 1, 1)
    tin = [usage[n]["tokens_in"] for n in names]
    tout = [usage[n]["tokens_out"] for n in names]
    ax.bar(names, tin, label="tokens in", color=COLORS[0])
    ax.bar(names, tout, bottom=tin, label="tokens out", color=COLORS[1])
    ax.set_ylabel("tokens")
    ax.set_title("tokens per teacher")
    ax.legend(fontsize=8)
    ax.tick_params(axis="x", labelsize=8, labelrotation=20)
    if priced:
        ax2 = fig.add_subplot(1, 2, 2)
        bars = ax2.bar(priced, [usage[n]["cost"] for n in priced], color=COLORS[2])
        ax2.bar_label(bars, fmt="$%.4g", fontsize=7)
        ax2.set_ylabel("USD")
        ax2.set_title("cost per teacher")
        ax2.tick_params(axis="x", labelsize=8, labelrotation=20)
    return _save(fig, path)


def throughput(points: dict[str, list[tuple[float, int]]], path: Path, bins: int = 40) -> bool:
    """Output tokens per second over the run's wall time, per teacher (answers binned by when they were stored)."""
    points = {t: p for t, p in points.items() if p}
    if not points:
        return False
    t0 = min(t for p in points.values() for t, _ in p)
    span = max(max(t for p in points.values() for t, _ in p) - t0, 1.0)
    width = span / bins
    fig = Figure(figsize=(7, 3.5))
    ax = fig.add_subplot()
    for i, (teacher, p) in enumerate(points.items()):
        tokens = [0.0] * bins
        for t, n in p:
            tokens[min(int((t - t0) / width), bins - 1)] += n
        ax.plot([(j + 0.5) * width / 60 for j in range(bins)], [n / width for n in tokens], label=teacher,
                color=COLORS[i % len(COLORS)], drawstyle="steps-mid")
    ax.set_xlabel("minutes since the first answer")
    ax.set_ylabel("output tokens / s")
    ax.set_title("throughput over time")
    ax.legend(fontsize=8)
    return _save(fig, path)


def agreement_shares(samples: list[dict[str, Any]]) -> list[float]:
    """Per (problem, teacher) with several samples: the share of samples giving the most common answer."""
    groups: dict[tuple[str, str], list[str | None]] = {}
    for s in samples:
        if s.get("mode") != "greedy":
            groups.setdefault((s["problem_id"], s["teacher"]), []).append(s.get("normalized") or s.get("extracted"))
    shares = []
    for answers in groups.values():
        if len(answers) > 1:
            counts = Counter(a for a in answers if a)
            shares.append(max(counts.values(), default=0) / len(answers))
    return shares


def agreement(samples: list[dict[str, Any]], path: Path) -> bool:
    """How often the samples of one problem agree: 1.0 = every sample gave the same answer."""
    shares = agreement_shares(samples)
    if not shares:
        return False
    fig = Figure(figsize=(6, 3.5))
    ax = fig.add_subplot()
    ax.hist(shares, bins=[i / 10 for i in range(11)], color=COLORS[4], edgecolor="white")
    ax.set_xlabel("share of samples with the majority answer")
    ax.set_ylabel("problems")
    ax.set_title("answer agreement")
    return _save(fig, path)


def lengths(samples: list[dict[str, Any]], path: Path) -> bool:
    """Output length in tokens, correct and incorrect samples apart."""
    if not samples:
        return False
    fig = Figure(figsize=(6, 3.5))
    ax = fig.add_subplot()
    groups = [("correct", True, COLORS[2]), ("incorrect", False, COLORS[3]), ("undecided", None, COLORS[7])]
    data = [([s["tokens_out"] or 0 for s in samples if s.get("correct") is v], name, c) for name, v, c in groups]
    data = [d for d in data if d[0]]
    ax.hist([d[0] for d in data], bins=30, label=[d[1] for d in data], color=[d[2] for d in data], stacked=True)
    ax.set_xlabel("output tokens")
    ax.set_ylabel("samples")
    ax.set_title("solution length")
    ax.legend(fontsize=8)
    return _save(fig, path)


def training(curves: dict[str, list[tuple[int, float]]], path: Path) -> bool:
    """Training loss by optimizer step, one line per training run."""
    curves = {k: v for k, v in curves.items() if v}
    if not curves:
        return False
    fig = Figure(figsize=(7, 3.5))
    ax = fig.add_subplot()
    for i, (name, points) in enumerate(curves.items()):
        ax.plot([p[0] for p in points], [p[1] for p in points], label=name, color=COLORS[i % len(COLORS)])
    ax.set_xlabel("step")
    ax.set_ylabel("training loss")
    ax.set_title("training curves")
    ax.legend(fontsize=8)
    return _save(fig, path)
