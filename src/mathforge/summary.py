"""The run summary: problems, samples, accepted, yield, tokens, tokens/s, wall time — as JSON and a printed table."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, TYPE_CHECKING

from rich.console import Console
from rich.table import Table

from mathforge.masking import mask_config

if TYPE_CHECKING:
    from mathforge.pipeline.context import RunContext


def build_summary(ctx: "RunContext", wall: float, started: float | None = None) -> dict[str, Any]:
    m = ctx.metrics
    gen = [v for k, v in m.items() if k.startswith("generate")]
    problems = next((v["problems"] for k, v in m.items() if k.startswith("load")), None)
    if problems is None and ctx.has("problems"):
        from mathforge.pipeline.context import open_table

        ref = ctx.state.latest("problems")
        problems = open_table(ctx.path(ref.path)).num_rows if ref else None  # from metadata: the table is not read
    samples = sum(g.get("samples", 0) for g in gen)
    accepted = None
    for k, v in m.items():  # the last stage that states what it accepted wins
        if "accepted" in v:
            accepted = v["accepted"]
        elif k.startswith("verify"):
            accepted = v.get("correct")
    new_tokens = sum(g.get("new_tokens_out", 0) for g in gen)
    gen_seconds = sum(g.get("gen_seconds", 0.0) for g in gen)
    return {
        "run_dir": str(ctx.run_dir),
        "problems": problems,
        "samples": samples,
        "accepted": accepted,
        "yield": round(accepted / samples, 4) if accepted is not None and samples else None,
        "tokens_in": sum(g.get("tokens_in", 0) for g in gen),
        "tokens_out": sum(g.get("tokens_out", 0) for g in gen),
        # every stage's model requests (generate, refine, synthesize, eval) answered during this run
        "requests_sent": ctx.ledger.answered_since(started) if started is not None else sum(g.get("sent", 0) for g in gen),
        "requests_cached": sum(g.get("cached", 0) for g in gen),
        # HTTP attempts to API teachers in every stage (each may be billed): answered, failed and abandoned alike
        "api_calls": sum(v.get("api_calls", 0) for v in m.values() if isinstance(v, dict)),
        "api_calls_abandoned": sum(v.get("abandoned_calls", 0) for v in m.values() if isinstance(v, dict)),
        "tokens_per_s": round(new_tokens / gen_seconds, 1) if gen_seconds else None,
        "wall_seconds": round(wall, 2),
        "funnel": funnel(m),
        "stages": m,
    }


# curate's reject kinds (the text before ':' in rejected.parquet's reason) as a reader would say them
FUNNEL_LABELS = {
    "incorrect": "wrong answer", "missing-answer": "no answer", "unverified": "unverified", "truncated": "truncated",
    "wrong-step": "wrong step", "duplicate-solution": "duplicate", "near-duplicate-solution": "duplicate",
    "duplicate-problem": "duplicate problem", "near-duplicate-problem": "duplicate problem",
    "same-path": "same reasoning path", "test-leak": "test overlap", "over-cap": "over the cap per problem",
    "too-short": "too short", "too-long": "too long", "repetition": "repetitive",
}


def funnel(metrics: dict[str, Any]) -> dict[str, Any] | None:
    """Samples in, dropped per reason and kept, from the last curate stage of the run (None without one)."""
    cur = [v for k, v in metrics.items() if k.startswith("curate") and isinstance(v, dict) and "dropped" in v]
    if not cur:
        return None
    last = cur[-1]
    dropped: dict[str, int] = {}
    for kind, n in last["dropped"].items():
        label = FUNNEL_LABELS.get(kind, kind)
        dropped[label] = dropped.get(label, 0) + n
    return {"samples": last.get("samples_in"), "dropped": dict(sorted(dropped.items(), key=lambda kv: -kv[1])),
            "kept": last.get("accepted")}


def funnel_line(f: dict[str, Any]) -> str:
    """'48 samples → wrong answer 30, truncated 5, wrong step 1 → kept 10'."""
    why = ", ".join(f"{k} {n:,}" for k, n in f["dropped"].items()) or "nothing dropped"
    return f"{f['samples']:,} samples → {why} → kept {f['kept']:,}"


def write_summary(run_dir: str | Path, summary: dict[str, Any]) -> None:
    text = json.dumps(mask_config(summary), indent=2, default=str)  # stage metrics may quote an error message
    Path(run_dir, "summary.json").write_text(text, encoding="utf-8")


def print_summary(summary: dict[str, Any], console: Console | None = None) -> None:
    console = console or Console()
    t = Table(title=f"mathforge run: {summary['run_dir']}", show_header=True)
    t.add_column("metric")
    t.add_column("value", justify="right")
    fmt = {
        "yield": lambda v: f"{v:.1%}",
        "tokens_per_s": lambda v: f"{v:,.1f}",
        "wall_seconds": lambda v: f"{v:,.1f} s",
    }
    for key in ("problems", "samples", "accepted", "yield", "tokens_in", "tokens_out", "requests_sent",
                "requests_cached", "api_calls", "api_calls_abandoned", "tokens_per_s", "wall_seconds"):
        v = summary.get(key)
        t.add_row(key.replace("_", " "), "-" if v is None else fmt.get(key, lambda x: f"{x:,}")(v))
    console.print(t)
    if summary.get("funnel"):
        console.print(f"[bold]funnel:[/] {funnel_line(summary['funnel'])}", highlight=False)
