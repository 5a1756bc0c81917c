"""Build the report of one or more runs: plots (PNG), ``index.html`` (jinja2), ``summary.md`` and ``metrics.json``."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import jinja2

from mathforge.evaluate.compare import (
    comparison_rows,
    contrast_markdown,
    contrast_rows,
    fmt_delta,
    fmt_score,
    markdown_table,
    table_cells,
)
from mathforge.masking import mask_config
from mathforge.report import plots
from mathforge.report.data import RunData, read_run

SUMMARY_KEYS = ("problems", "samples", "accepted", "yield", "tokens_in", "tokens_out", "tokens_per_s", "wall_seconds")


def _env() -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.PackageLoader("mathforge.report", "templates"),
        autoescape=lambda name: bool(name and name.endswith(".html.j2")),
        trim_blocks=True,
        lstrip_blocks=True,
        undefined=jinja2.StrictUndefined,
    )


def _fmt(key: str, v: Any) -> str:
    if v is None:
        return "-"
    if key == "yield":
        return f"{v:.1%}"
    if isinstance(v, float):
        return f"{v:,.1f}"
    return f"{v:,}" if isinstance(v, int) else str(v)


def _keyed(runs: list[RunData], attr: str) -> dict[str, Any]:
    """Merge a per-teacher mapping over runs, naming keys 'run/teacher' when there are several runs."""
    out: dict[str, Any] = {}
    for r in runs:
        for k, v in getattr(r, attr).items():
            out[f"{r.name}/{k}" if len(runs) > 1 else k] = v
    return out


def _breakdowns(sets: list[tuple[Path, dict[str, Any]]]) -> list[dict[str, Any]]:
    """Per (model, benchmark) with a level/subject breakdown: one small table per grouping."""
    out = []
    for _, doc in sets:
        for r in doc["results"]:
            for group, values in (r.get("breakdown") or {}).items():
                metrics = list(next(iter(values.values())).keys()) if values else []
                rows = [[g, str(next(iter(m.values()))["n"])] + [fmt_score(m.get(x)) for x in metrics]
                        for g, m in values.items()]
                out.append({"title": f"{r['model']} · {r['benchmark']} by {group}",
                            "header": [group, "n", *metrics], "rows": rows})
    return out


def _synth_tables(runs: list[RunData]) -> list[dict[str, Any]]:
    """One table per synth_compare stage: a row per metric, a column per problem set."""
    out = []
    for r in runs:
        for stem, sets in r.synth_sets.items():
            labels = list(sets)
            metrics = list(dict.fromkeys(k for m in sets.values() for k in m))
            rows = [[k, *["-" if sets[lb].get(k) is None else str(sets[lb][k]) for lb in labels]] for k in metrics]
            out.append({"title": f"{r.name}: {stem}" if len(runs) > 1 else stem, "header": ["metric", *labels],
                        "rows": rows})
    return out


def build_report(runs: list[str | Path], out_dir: str | Path, *, title: str | None = None,
                 base: str | None = None, contrasts: list[tuple[str, str]] | None = None) -> dict[str, Any]:
    """Write the report of ``runs`` (the first is the main one) to ``out_dir``; returns what metrics.json holds.

    ``contrasts`` names pairs of models (a, b) whose paired difference a − b is reported besides each model vs base.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    data = [read_run(r) for r in runs]
    sets = [s for d in data for s in d.evals]
    rows = comparison_rows(sets, base)
    paired = contrast_rows(rows, [tuple(c) for c in contrasts or []])
    samples = [s for d in data for s in d.samples]
    drawn = {
        "accuracy": plots.accuracy(rows, out / "accuracy.png"),
        "funnel": plots.funnel({d.name: d.funnel for d in data}, out / "funnel.png"),
        "usage": plots.usage(_keyed(data, "usage"), out / "usage.png"),
        "throughput": plots.throughput(_keyed(data, "throughput"), out / "throughput.png"),
        "agreement": plots.agreement(samples, out / "agreement.png"),
        "lengths": plots.lengths(samples, out / "lengths.png"),
        "training": plots.training(_keyed(data, "training"), out / "training.png"),
    }
    header, cells = table_cells(rows) if rows else ([], [])
    context = {
        "title": title or f"mathforge report: {', '.join(d.name for d in data)}",
        "created": time.strftime("%Y-%m-%d %H:%M"),
        "runs": [{"name": d.name, "path": str(d.path), **{k: _fmt(k, d.summary.get(k)) for k in SUMMARY_KEYS}}
                 for d in data],
        "summary_keys": SUMMARY_KEYS,
        "eval_header": header,
        "eval_rows": cells,
        "eval_markdown": markdown_table(rows) if rows else "",
        "breakdowns": _breakdowns(sets),
        "synth_tables": _synth_tables(data),
        "contrasts": [{"comparison": f"{c['a']} − {c['b']}", "benchmark": c["benchmark"], "metric": c["metric"],
                       "n": c.get("n", "-"), "delta": fmt_delta(c, False)} for c in paired],
        "contrast_markdown": contrast_markdown(paired) if paired else "",
        "plots": {name: f"{name}.png" for name, ok in drawn.items() if ok},
        "usage": [{"teacher": t, **{k: _fmt(k, v) for k, v in u.items()},
                   **{k: "-" if u.get(k) is None else f"${u[k]:,.4f}" for k in ("cost", "projected", "budget")}}
                  for t, u in _keyed(data, "usage").items()],
        "batch_costs": any("mode" in u for u in _keyed(data, "usage").values()),
        "funnel": [{"run": d.name, "steps": d.funnel} for d in data if d.funnel],
        "rejected": sorted(((f"{d.name}: {s}" if len(data) > 1 else s, reason, n)
                            for d in data for (s, reason), n in d.rejected.items()), key=lambda x: -x[2]),
    }
    context = mask_config(context)  # the report quotes reject reasons, paths and names: never a key-shaped string
    env = _env()
    (out / "index.html").write_text(env.get_template("index.html.j2").render(**context), encoding="utf-8")
    (out / "summary.md").write_text(env.get_template("summary.md.j2").render(**context), encoding="utf-8")
    metrics = {
        "runs": [{"name": d.name, "path": str(d.path), "summary": {k: d.summary.get(k) for k in SUMMARY_KEYS},
                  "funnel": dict(d.funnel), "usage": d.usage,
                  "rejected": [{"stage": s, "reason": r, "count": n} for (s, r), n in d.rejected.items()]}
                 for d in data],
        "eval": [{k: v for k, v in r.items() if k != "folder"} for r in rows],
        "contrasts": paired,
        "training": {name: [{"step": st, "loss": loss} for st, loss in pts]
                     for name, pts in _keyed(data, "training").items()},
        "plots": sorted(context["plots"].values()),
        "synth_compare": {f"{d.name}/{k}" if len(data) > 1 else k: v for d in data for k, v in d.synth_sets.items()},
    }
    metrics = mask_config(metrics)
    (out / "metrics.json").write_text(json.dumps(metrics, indent=1, default=str), encoding="utf-8")
    return metrics
