"""``mathforge curate``: filters, decontamination, dedup and RFT selection over a run directory or a samples file."""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any, Optional

import typer

from mathforge.cli.flags import config_command, out_option, source_argument
from mathforge.curate.stage import CurateConfig

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


def curate_command(data: dict[str, Any], *, source: Path, out: Optional[Path], benchmark: list[str] | None,
                   config: Optional[Path]) -> None:
    """Curate samples: filters, benchmark decontamination, dedup and RFT distinct paths; prints the funnel."""
    from mathforge.config import validate
    from mathforge.curate.stage import CurateStage

    if benchmark:
        data.setdefault("decontam", {})["benchmarks"] = [_benchmark(b) for b in benchmark]
    cfg = validate(CurateConfig, data, str(config or "curate"))
    ctx = open_run(source, out, "curated")
    try:
        metrics = CurateStage().run(ctx, cfg)
    finally:
        ctx.close()
    typer.echo(f"{metrics['accepted']:,} of {metrics['samples_in']:,} samples kept -> {ctx.path('curated.parquet')}")


app.command("curate")(config_command(
    CurateConfig,
    curate_command,
    leading=[source_argument("run directory, or a samples .parquet/.jsonl file"),
             out_option("run directory for a samples file (default <stem>-curated)")],
    trailing=[inspect.Parameter("benchmark", inspect.Parameter.KEYWORD_ONLY, annotation=Optional[list[str]],
                                default=typer.Option(None, "--benchmark", "-b", help="benchmark NAME or NAME=PATH "
                                                     "to decontaminate against; repeatable"))],
    short={"decontam.enabled": ["--decontam/--no-decontam"], "decontam.ngram": ["--ngram"],
           "rft.max_per_problem": ["--max-per-problem"], "rft.enabled": ["--rft/--no-rft"]},
    doc="Curate samples: filters, benchmark decontamination, dedup and RFT distinct paths; prints the funnel.",
))
