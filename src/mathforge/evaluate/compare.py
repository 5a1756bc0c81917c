"""The comparison table across models and runs: accuracy with a 95% interval per metric, and the delta to the base.

Deltas are paired over the problems both models answered (a bootstrap over problems of the per-problem difference)
when the per-problem scores are at hand, which is what says whether a student really beat its base model.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from mathforge.evaluate.metrics import paired_delta, primary_metric

RESULTS_KIND = "mathforge-eval"
# metric name -> per-problem column of problems.parquet that averages to it
PER_PROBLEM = {"greedy": "greedy", "mean_pass@1": "pass1"}


def find_results(path: str | Path) -> list[tuple[Path, dict[str, Any]]]:
    """Eval results under ``path``: a results.json, an eval folder, or a run directory (its eval folders)."""
    path = Path(path)
    if path.is_file():
        candidates = [path]
    else:
        candidates = [path / "results.json", *sorted(path.glob("*/results.json"))]
    out = []
    for c in candidates:
        if c.is_file():
            doc = json.loads(c.read_text(encoding="utf-8"))
            if doc.get("kind") == RESULTS_KIND:
                out.append((c.parent, doc))
    return out


def _metric_column(metric: str) -> str | None:
    return PER_PROBLEM.get(metric) or ("majority" if metric.startswith("maj@") else None)


def _per_problem(folder: Path, model: str, benchmark: str, column: str) -> dict[str, float] | None:
    path = folder / "problems.parquet"
    if not path.exists():
        return None
    import pyarrow.parquet as pq

    rows = pq.read_table(path).to_pylist()
    return {r["problem_id"]: r[column] for r in rows
            if r["model"] == model and r["benchmark"] == benchmark and r.get(column) is not None}


def _delta(row: dict[str, Any], base_row: dict[str, Any]) -> dict[str, Any] | None:
    metric = row["primary"]
    if metric is None or metric not in base_row["metrics"]:
        return None
    column = _metric_column(metric)
    if column:
        mine = _per_problem(row["folder"], row["model"], row["benchmark"], column)
        theirs = _per_problem(base_row["folder"], base_row["model"], base_row["benchmark"], column)
        if mine and theirs:
            common = sorted(set(mine) & set(theirs))
            if common:
                return {"metric": metric, "paired": True,
                        **paired_delta([mine[i] for i in common], [theirs[i] for i in common])}
    diff = row["metrics"][metric]["value"] - base_row["metrics"][metric]["value"]
    return {"metric": metric, "paired": False, "delta": diff, "ci_low": None, "ci_high": None}


def contrast_rows(rows: list[dict[str, Any]], pairs: list[tuple[str, str]]) -> list[dict[str, Any]]:
    """Paired differences between two named models (e.g. RFT vs its control) on every benchmark both answered."""
    out = []
    for a, b in pairs:
        for row in rows:
            if row["model"] != a:
                continue
            others = [o for o in rows if o["model"] == b and o["benchmark"] == row["benchmark"]]
            other = next((o for o in others if o["folder"] == row["folder"]), others[0] if others else None)
            if other is None:
                continue
            delta = _delta(row, other)
            if delta is not None:
                out.append({"a": a, "b": b, "benchmark": row["benchmark"], **delta})
    return out


def contrast_markdown(contrasts: list[dict[str, Any]]) -> str:
    """The contrasts as a Markdown table: difference in points with its paired 95% interval."""
    lines = ["| comparison | benchmark | metric | n | difference (pts, 95% CI) |", "|---|---|---|---|---|"]
    lines += [f"| {c['a']} − {c['b']} | {c['benchmark']} | {c['metric']} | {c.get('n', '-')} | "
              f"{fmt_delta(c, False)} |" for c in contrasts]
    return "\n".join(lines)


def comparison_rows(sets: list[tuple[Path, dict[str, Any]]], base: str | None = None) -> list[dict[str, Any]]:
    """One row per (run, model, benchmark), with its metrics and the delta of its headline metric to the base."""
    rows = []
    for folder, doc in sets:
        run = Path(doc.get("run_dir") or folder.parent).name
        label = run if sum(1 for f, d in sets if Path(d.get("run_dir") or "").name == run) <= 1 else f"{run}/{folder.name}"
        for r in doc["results"]:
            rows.append({
                "run": label, "folder": folder, "model": r["model"], "benchmark": r["benchmark"],
                "n": r["problems"], "metrics": r["metrics"], "primary": primary_metric(r["metrics"]),
                "base": base or doc.get("base"), "delta": None,
            })
    for row in rows:
        if row["model"] == row["base"]:
            continue
        candidates = [b for b in rows if b["model"] == row["base"] and b["benchmark"] == row["benchmark"]]
        same_run = [b for b in candidates if b["folder"] == row["folder"]]
        if candidates:
            row["delta"] = _delta(row, (same_run or candidates)[0])
    return rows


def metric_names(rows: list[dict[str, Any]]) -> list[str]:
    """Metric columns in reading order: greedy, maj@k, mean pass@1, pass@k by k."""
    def order(m: str) -> tuple[int, int]:
        k = m.split("@")[-1]
        return (0 if m == "greedy" else 1 if m.startswith("maj@") else 2 if m == "mean_pass@1" else 3,
                int(k) if k.isdigit() else 0)

    return sorted({m for r in rows for m in r["metrics"]}, key=order)


def fmt_score(score: dict[str, Any] | None) -> str:
    """'41.2 ± 2.9' in percent, the ± being half the 95% interval's width."""
    if not score:
        return "-"
    return f"{100 * score['value']:.1f} ± {100 * (score['ci_high'] - score['ci_low']) / 2:.1f}"


def fmt_delta(delta: dict[str, Any] | None, is_base: bool) -> str:
    if is_base:
        return "base"
    if not delta:
        return "-"
    text = f"{100 * delta['delta']:+.1f}"
    if delta.get("ci_low") is not None:
        text += f" [{100 * delta['ci_low']:+.1f}, {100 * delta['ci_high']:+.1f}]"
    return text


def table_cells(rows: list[dict[str, Any]]) -> tuple[list[str], list[list[str]]]:
    """Header and cells of the comparison table (shared by Markdown, the console and the HTML report)."""
    metrics = metric_names(rows)
    multi_run = len({r["run"] for r in rows}) > 1
    header = (["run"] if multi_run else []) + ["model", "benchmark", "n"] + metrics + ["Δ base (pts, 95% CI)"]
    cells = []
    for r in rows:
        line = ([r["run"]] if multi_run else []) + [r["model"], r["benchmark"], str(r["n"])]
        line += [fmt_score(r["metrics"].get(m)) for m in metrics]
        line.append(fmt_delta(r["delta"], r["model"] == r["base"]))
        cells.append(line)
    return header, cells


def markdown_table(rows: list[dict[str, Any]]) -> str:
    """The comparison as a Markdown table (accuracy in %, ± half the 95% interval)."""
    header, cells = table_cells(rows)
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(c) + " |" for c in cells]
    return "\n".join(lines)
