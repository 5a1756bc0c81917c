"""``mathforge export``: curated samples as SFT datasets (chat, prompt-completion) with a card, optionally pushed."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import typer

app = typer.Typer(add_completion=False)


@app.command()
def export(
    source: Path = typer.Argument(..., help="run directory, or a samples .parquet/.jsonl file"),
    out: Optional[Path] = typer.Option(
        None, "--out", "-o", help="export folder (default: <run>/export, or <stem>-export beside a samples file)"
    ),
    style: Optional[list[str]] = typer.Option(
        None, "--style", help="chat and/or completion; repeatable (default both)"
    ),
    fmt: Optional[list[str]] = typer.Option(
        None, "--format", "-f", help="jsonl, parquet and/or dataset; repeatable (default all three)"
    ),
    system_prompt: Optional[str] = typer.Option(None, "--system-prompt", help="system message of every chat"),
    validation: Optional[float] = typer.Option(None, "--validation", help="share of problems held out (default 0.05)"),
    seed: Optional[int] = typer.Option(None, "--seed", help="seed of the train/validation split"),
    include_incorrect: bool = typer.Option(
        False, "--include-incorrect", help="also export unverified and incorrect samples"
    ),
    push_to_hub: Optional[str] = typer.Option(None, "--push-to-hub", help="hub dataset repo (user/name) to upload to"),
    public: bool = typer.Option(False, "--public", help="create the hub repo public (default private)"),
) -> None:
    """Export samples as SFT data: chat and prompt-completion, JSONL/Parquet/DatasetDict, train/validation, card."""
    from mathforge.config import validate
    from mathforge.curate.pool import read_samples
    from mathforge.export import ExportConfig, ExportStage, export_atomic, latest_curate_report
    from mathforge.export import push_to_hub as push
    from mathforge.pipeline.context import RunContext

    options: dict[str, Any] = {
        "styles": style, "formats": fmt, "system_prompt": system_prompt, "validation_fraction": validation,
        "seed": seed, "push_to_hub": push_to_hub, "out_dir": str(out.resolve()) if out else None,
    }
    data = {k: v for k, v in options.items() if v is not None}
    if include_incorrect:
        data["only_correct"] = False
    if public:
        data["private"] = False
    cfg = validate(ExportConfig, data, "export")
    if source.is_dir() and (source / "state.json").exists():
        ctx = RunContext(source)
        try:
            metrics = ExportStage().run(ctx, cfg)
        finally:
            ctx.close()
    else:  # a samples file: the output folder is the export itself
        folder = out or source.with_name(f"{source.stem}-export")
        provenance = {"name": source.stem, "curate": latest_curate_report(source.parent)}
        counts = export_atomic(read_samples(source), folder, cfg, seed=cfg.seed or 0, provenance=provenance)
        metrics = {"train": counts["train"]["rows"], "validation": counts["validation"]["rows"], "out_dir": str(folder)}
        if cfg.push_to_hub:
            metrics["hub_url"] = push(folder, cfg.push_to_hub, cfg.private)
    typer.echo(f"{metrics['train']:,} train + {metrics['validation']:,} validation rows -> {metrics['out_dir']}")
    if metrics.get("hub_url"):
        typer.echo(f"pushed to {metrics['hub_url']}")
