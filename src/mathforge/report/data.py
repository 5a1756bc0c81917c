"""What a report shows, read from run directories: summary, funnel, usage and cost, throughput, samples, rejects, evals.

Only files are read (summary.json, recipe.yaml, state.json, the stage tables, ledger.sqlite, rejected.parquet,
``*/results.json``), so a report can be made of a run that is finished, interrupted, or copied from elsewhere.
"""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from mathforge.engine.accounting import Pricing
from mathforge.engine.cost import read_costs
from mathforge.evaluate.compare import find_results
from mathforge.pipeline.state import RunState

SAMPLE_COLUMNS = ["problem_id", "teacher", "tokens_out", "correct", "extracted", "normalized", "mode"]


@dataclass
class RunData:
    """Everything the report needs about one run directory."""

    path: Path
    name: str
    summary: dict[str, Any] = field(default_factory=dict)
    funnel: list[tuple[str, int]] = field(default_factory=list)
    usage: dict[str, dict[str, Any]] = field(default_factory=dict)  # teacher -> requests, tokens, cost
    throughput: dict[str, list[tuple[float, int]]] = field(default_factory=dict)  # teacher -> (unix time, tokens)
    samples: list[dict[str, Any]] = field(default_factory=list)  # the latest samples table (few columns)
    rejected: dict[tuple[str, str], int] = field(default_factory=dict)  # (stage, reason) -> count
    evals: list[tuple[Path, dict[str, Any]]] = field(default_factory=list)
    training: dict[str, list[tuple[int, float]]] = field(default_factory=dict)  # train folder -> (step, loss)
    synth_sets: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)  # synth_compare file -> label -> metrics


def _json(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text(encoding="utf-8")) if path.exists() else {}


def _rows(path: Path, columns: list[str] | None = None) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    from mathforge.store.shards import ShardReader  # a single file or a shard directory

    return ShardReader(path).to_pylist() if not columns else [
        r for batch in ShardReader(path).batches(columns=columns) for r in batch]


def _count(path: Path, only_correct: bool = False) -> int | None:
    if not path.exists():
        return None
    if only_correct:
        return sum(1 for r in _rows(path, ["correct"]) if r.get("correct") is True)
    from mathforge.store.shards import ShardReader

    return ShardReader(path).num_rows


def stage_funnel(run: Path, summary: dict[str, Any]) -> list[tuple[str, int]]:
    """generated -> verified -> curated -> exported: from the stage metrics, else by counting the stage tables."""
    stages = summary.get("stages") or {}

    def metric(prefix: str, key: str) -> int | None:
        vals = [v[key] for k, v in stages.items() if k.startswith(prefix) and isinstance(v, dict) and key in v]
        return vals[-1] if vals else None

    generated = summary.get("samples") or _count(run / "generate.parquet")
    verified = metric("verify", "correct")
    verified = verified if verified is not None else _count(run / "verified.parquet", only_correct=True)
    curated = metric("curate", "accepted")
    curated = curated if curated is not None else _count(run / "curated.parquet")
    exported = metric("export", "accepted")
    if exported is None and (run / "export" / "sft.jsonl").exists():
        exported = sum(1 for _ in open(run / "export" / "sft.jsonl", encoding="utf-8"))
    steps = [("generated", generated), ("verified", verified), ("curated", curated), ("exported", exported)]
    return [(name, int(n)) for name, n in steps if n is not None]


def ledger_usage(run: Path, prices: dict[str, Pricing]) -> tuple[dict[str, dict[str, Any]], dict[str, list]]:
    """Per teacher: requests, failed, HTTP calls (and abandoned ones), calls per kept answer, tokens in/out, cost
    (when priced); and (finish time, tokens out) of each answer."""
    path = run / "ledger.sqlite"
    if not path.exists():
        return {}, {}
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        columns = {r[1] for r in conn.execute("PRAGMA table_info(requests)")}
        abandoned = "abandoned" if "abandoned" in columns else "0"  # ledgers older than the column
        rows = conn.execute(
            f"SELECT teacher, status, COALESCE(tokens_in,0), COALESCE(tokens_out,0), updated, attempts, {abandoned} "
            "FROM requests"
        ).fetchall()
    finally:
        conn.close()
    usage: dict[str, dict[str, Any]] = {}
    points: dict[str, list[tuple[float, int]]] = {}
    for teacher, status, tin, tout, updated, attempts, cut in rows:
        u = usage.setdefault(teacher, {"requests": 0, "failed": 0, "calls": 0, "abandoned": 0, "calls_per_answer": None,
                                       "tokens_in": 0, "tokens_out": 0, "cost": None})
        u["calls"] += attempts or 0
        u["abandoned"] += cut or 0
        if status == "ok":
            u["requests"] += 1
            u["tokens_in"] += tin
            u["tokens_out"] += tout
            points.setdefault(teacher, []).append((updated, tout))
        elif status == "failed":
            u["failed"] += 1
    for teacher, u in usage.items():
        # every HTTP attempt (answered, failed, abandoned) per answer kept: 1.0 means each answer was paid once
        u["calls_per_answer"] = round(u["calls"] / u["requests"], 3) if u["requests"] else None
        if teacher in prices:
            u["cost"] = prices[teacher].cost(u["tokens_in"], u["tokens_out"])
    return usage, points


def add_costs(run: Path, usage: dict[str, dict[str, Any]], configs: dict[str, Any]) -> None:
    """Per priced teacher: mode, prices, batch discount, spend (batch answers at the batch price), what is in flight
    and pending with its projected cost, and the budget (``mathforge.engine.cost``)."""
    priced = {t: c for t, c in configs.items() if t in usage and (
        c.get("price_input_per_m") or c.get("price_output_per_m"))}
    if not priced:
        return
    for teacher, tc in read_costs(run / "ledger.sqlite", priced).items():
        if teacher not in priced:
            continue
        usage[teacher].update(
            cost=tc.spent, mode=tc.mode, price=f"${tc.price_input_per_m:g} / ${tc.price_output_per_m:g}",
            batch_price="-" if tc.mode != "batch" else f"×{tc.batch_factor:g}", in_batch=tc.answered_in_batch,
            in_flight=tc.in_flight, pending=tc.pending, projected=tc.projected_total, budget=tc.budget)


def teacher_prices(run: Path, evals: list[tuple[Path, dict[str, Any]]]) -> dict[str, Pricing]:
    """Prices per teacher from the recipe (and from eval configs that name backends with prices)."""
    return {
        name: Pricing(c.get("price_input_per_m", 0.0), c.get("price_output_per_m", 0.0))
        for name, c in teacher_configs(run, evals).items()
        if "price_input_per_m" in c or "price_output_per_m" in c
    }


def teacher_configs(run: Path, evals: list[tuple[Path, dict[str, Any]]]) -> dict[str, dict[str, Any]]:
    """Teacher configs as the recipe (and eval configs) wrote them."""
    configs: dict[str, Any] = {}
    recipe = run / "recipe.yaml"
    if recipe.exists():
        configs.update((yaml.safe_load(recipe.read_text(encoding="utf-8")) or {}).get("teachers") or {})
    for _, doc in evals:
        models = (doc.get("config") or {}).get("models")
        if isinstance(models, dict):
            configs.update(models)
    return {name: c for name, c in configs.items() if isinstance(c, dict)}


def rejected_counts(run: Path) -> dict[tuple[str, str], int]:
    out: dict[tuple[str, str], int] = {}
    for r in _rows(run / "rejected.parquet", ["stage", "reason"]):
        key = (r["stage"], r["reason"])
        out[key] = out.get(key, 0) + 1
    return out


def sample_table(run: Path, tables: dict[str, str], evals: list[tuple[Path, dict[str, Any]]]) -> Path:
    """Samples with every verdict: the verify output (later tables keep only the accepted), else the eval's answers."""
    if (run / "verified.parquet").exists():
        return run / "verified.parquet"
    if "samples" in tables:
        return run / tables["samples"]
    return evals[-1][0] / "samples.parquet" if evals else run / "verified.parquet"


def training_curves(run: Path, depth: int = 3) -> dict[str, list[tuple[int, float]]]:
    """Training loss by step of every train folder in the run (``log_history.jsonl`` up to ``depth`` levels down)."""
    from mathforge.train.logs import LOG_FILE, read_log_history

    found = sorted(p for d in range(depth) for p in run.glob("/".join(["*"] * (d + 1) + [LOG_FILE])))
    return {str(p.parent.relative_to(run)): [(int(r["step"]), float(r["loss"])) for r in read_log_history(p)
                                             if "loss" in r and "step" in r]
            for p in found}


def synth_comparisons(run: Path) -> dict[str, dict[str, dict[str, Any]]]:
    """The side-by-side metrics of every ``synth_compare`` stage of the run (teacher-made vs distilled problems)."""
    return {p.stem: _json(p) for p in sorted(run.glob("synth_compare*.json"))}


def read_run(run: str | Path) -> RunData:
    """Gather one run directory's report data."""
    run = Path(run)
    summary = _json(run / "summary.json")
    tables = RunState(run).latest_tables()
    evals = find_results(run)
    usage, points = ledger_usage(run, teacher_prices(run, evals))
    add_costs(run, usage, teacher_configs(run, evals))
    samples = _rows(sample_table(run, tables, evals), SAMPLE_COLUMNS)
    return RunData(
        path=run,
        name=run.resolve().name,
        summary=summary,
        funnel=stage_funnel(run, summary),
        usage=usage,
        throughput=points,
        samples=samples,
        rejected=rejected_counts(run),
        evals=evals,
        training=training_curves(run),
        synth_sets=synth_comparisons(run),
    )
