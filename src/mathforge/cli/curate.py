"""``mathforge curate``: filters, decontamination, dedup and RFT selection over a run directory or a samples file."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import typer

app = typer.Typer(add_completion=False)


def _benchmark(spec: str) -> dict[str, Any]:
    """``NAME`` or ``NAME=PATH`` -> a BenchmarkRef mapping (a file path needs no split)."""
    name, _, path = spec.partition("=")
    ref: dict[str, Any] = {"name": name.strip()}
    if path:
        ref["path"] = path.strip()
        if Path(path.strip()).is_file():
            ref["split"] = None
    return ref


def open_run(source: Path, out: Optional[Path], suffix: str) -> Any:
    """A RunContext: ``source`` itself when it is a run directory, else ``out`` (default ``<stem>-<suffix>``)
    with the samples file copied in as its samples table."""
    from mathforge.curate.pool import read_samples
    from mathforge.pipeline.context import RunContext

    if source.is_dir() and (source / "state.json").exists():
        if out is not None:
            raise typer.BadParameter("--out is for a samples file; a run directory is curated in place",
                                     param_hint="--out")
        return RunContext(source)
    rows = read_samples(source)
    ctx = RunContext(out or source.with_name(f"{source.stem}-{suffix}"))
    ctx.write_samples("samples", rows)
    return ctx


@app.command()
def curate(
    source: Path = typer.Argument(..., help="run directory, or a samples .parquet/.jsonl file"),
    out: Optional[Path] = typer.Option(
        None, "--out", "-o", help="output folder for a samples file (default <stem>-curated)"
    ),
    config: Optional[Path] = typer.Option(None, "--config", "-c", help="YAML with the curate stage's config"),
    pool: Optional[list[str]] = typer.Option(None, "--pool", help="another run's samples to pool; repeatable"),
    benchmark: Optional[list[str]] = typer.Option(
        None, "--benchmark", "-b", help="benchmark NAME or NAME=PATH to decontaminate against; repeatable"
    ),
    no_decontam: bool = typer.Option(False, "--no-decontam", help="skip decontamination"),
    ngram: Optional[int] = typer.Option(None, "--ngram", help="word n-gram length of a benchmark overlap"),
    max_per_problem: Optional[int] = typer.Option(None, "--max-per-problem", help="cap of distinct paths per problem"),
    no_rft: bool = typer.Option(False, "--no-rft", help="keep every sample that survives, not only distinct paths"),
) -> None:
    """Curate samples: filters, benchmark decontamination, dedup and RFT distinct paths; prints the funnel."""
    from mathforge.config import load_yaml, read_text, validate
    from mathforge.curate.stage import CurateConfig, CurateStage

    data: dict[str, Any] = (load_yaml(read_text(config), str(config)) or {}) if config else {}
    if pool:
        data["pool"] = [*data.get("pool", []), *pool]
    decontam = data.setdefault("decontam", {})
    if benchmark:
        decontam["benchmarks"] = [_benchmark(b) for b in benchmark]
    if no_decontam:
        decontam["enabled"] = False
    if ngram is not None:
        decontam["ngram"] = ngram
    rft = data.setdefault("rft", {})
    if max_per_problem is not None:
        rft["max_per_problem"] = max_per_problem
    if no_rft:
        rft["enabled"] = False
    cfg = validate(CurateConfig, data, str(config or "curate"))
    ctx = open_run(source, out, "curated")
    try:
        metrics = CurateStage().run(ctx, cfg)
    finally:
        ctx.close()
    typer.echo(f"{metrics['accepted']:,} of {metrics['samples_in']:,} samples kept -> {ctx.path('curated.parquet')}")
