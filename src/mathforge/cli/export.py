"""``mathforge export``: curated samples as SFT datasets (chat, prompt-completion) with a card, optionally pushed.
Every ExportConfig field is a flag (its description is the help); ``--config`` YAML can hold any of them."""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any, Optional

import typer

from mathforge.cli.flags import config_command, out_option, source_argument
from mathforge.export import ExportConfig

app = typer.Typer(add_completion=False)


def export_command(data: dict[str, Any], *, source: Path, out: Path | None, include_incorrect: bool, public: bool,
                   config: Path | None) -> None:
    from mathforge.config import validate
    from mathforge.curate.pool import read_samples
    from mathforge.export import ExportStage, export_atomic, latest_curate_report
    from mathforge.export import push_to_hub as push
    from mathforge.pipeline.context import RunContext

    if out:
        data["out_dir"] = str(out.resolve())
    if include_incorrect:
        data["only_correct"] = False
    if public:
        data["private"] = False
    cfg = validate(ExportConfig, data, str(config or "export"))
    if source.is_dir() and (source / "state.json").exists():
        with RunContext(source) as ctx:
            metrics = ExportStage().run(ctx, cfg)
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


def _flag(name: str, decl: str, help: str, annotation: Any = bool, default: Any = False) -> inspect.Parameter:
    return inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, annotation=annotation,
                             default=typer.Option(default, decl, help=help))


app.command("export")(config_command(
    ExportConfig,
    export_command,
    leading=[source_argument("run directory, or a samples .parquet/.jsonl file"),
             out_option("export folder (default: <run>/export, or <stem>-export beside a samples file)")],
    trailing=[_flag("include_incorrect", "--include-incorrect", "also export unverified and incorrect samples "
                    "(same as --no-only-correct)"),
              _flag("public", "--public", "create the hub repo public (same as --no-private)")],
    short={"formats": ["--format", "-f"], "styles": ["--style"], "validation_fraction": ["--validation"]},
    skip={"out_dir"},
    doc="Export samples as SFT data: chat and prompt-completion, JSONL/Parquet/DatasetDict, train/validation, card.",
))
