"""``mathforge generate``: k samples per problem from each teacher, into a run directory. Every GenerateConfig field
is a flag (its description is the help), ``--config`` YAML can hold any of them, and flags override the file."""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any, Optional

import typer
from rich.console import Console

from mathforge.cli.flags import config_command, out_option, source_argument
from mathforge.cli.teachers import teacher_options, teachers_for
from mathforge.generate import GenerateConfig

app = typer.Typer(add_completion=False)
console = Console()


TEACHER_OPTIONS = [
    inspect.Parameter("dataset", inspect.Parameter.KEYWORD_ONLY, annotation=str, default=typer.Option(
        "generic", "--dataset", "-d",
        help="loader of a problems FILE: gsm8k, math, math500, numinamath, mathqa, svamp or generic")),
    *teacher_options(),
    inspect.Parameter("allow_partial", inspect.Parameter.KEYWORD_ONLY, annotation=bool, default=typer.Option(
        False, "--allow-partial", help="exit 0 with the samples that were answered even when requests failed")),
]


def generate_command(data: dict[str, Any], *, source: Path, out: Path | None, dataset: str, recipe: str | None,
                     model: str | None, backend: str, base_url: str | None, batch_size: int | None, keyless: bool,
                     allow_partial: bool, config: Path | None) -> None:
    from mathforge.config import validate
    from mathforge.datasets import load
    from mathforge.generate import GenerateStage
    from mathforge.pipeline.context import RunContext
    from mathforge.pipeline.runner import check_complete

    cfg = validate(GenerateConfig, data, str(config or "mathforge generate"))
    is_run = source.is_dir() and (source / "state.json").exists()
    run_dir = out or (source if is_run else source.with_name(f"{source.stem}-generate"))
    teachers, seed = teachers_for(source if is_run else None, recipe, model, backend, base_url, batch_size, keyless)
    with RunContext(run_dir, teachers=teachers, seed=seed, allow_partial=allow_partial) as ctx:
        if not is_run:
            ctx.write_problems("problems", list(load(dataset, str(source))))
        elif run_dir != source:
            raise typer.BadParameter("a run directory is generated into in place; -o is for a problems file",
                                     param_hint="--out")
        metrics = GenerateStage().run(ctx, cfg)
        console.print(f"{metrics['samples']:,} samples ({metrics['sent']:,} sent, {metrics['cached']:,} from the "
                      f"ledger) -> {ctx.path('generate.parquet')}")
        check_complete(ctx, "generate", metrics)


callback = config_command(
    GenerateConfig,
    generate_command,
    leading=[source_argument("a run directory (its problems, its recipe's teachers) or a problems file"),
             out_option()],
    trailing=TEACHER_OPTIONS,
    short={"k": ["-k"]},
    skip={"retry_failed"},
    doc="Generate k samples per problem from each teacher; every request goes through the run's ledger.",
)
app.command("generate")(callback)
