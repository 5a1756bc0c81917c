"""``mathforge datasets``: list the built-in loaders, or show a few parsed records of one."""

from __future__ import annotations

import json

import typer
from rich.console import Console
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

app = typer.Typer(help="List the built-in datasets, or show parsed records of one.", add_completion=False)
console = Console()


@app.callback(invoke_without_command=True)
def datasets(ctx: typer.Context) -> None:
    """List the built-in datasets: name, description, default hub id, answer style and prompt."""
    if ctx.invoked_subcommand is not None:
        return
    from mathforge.datasets import get_loader, list_datasets

    table = Table("name", "description", "default hub id", "answer style", "prompt", title="datasets")
    for name in list_datasets():
        loader = get_loader(name)
        table.add_row(name, loader.description, loader.hub_id or "-", loader.answer_style, loader.prompt)
    console.print(table)


@app.command()
def show(
    name: str = typer.Argument(..., help="dataset name (see `mathforge datasets`)"),
    path: str | None = typer.Option(None, "--path", "-p", help="file, directory, bundled:NAME or hub id"),
    split: str | None = typer.Option(None, "--split", "-s", help="split to read (default: the dataset's)"),
    limit: int = typer.Option(3, "--limit", "-n", help="how many records to print"),
    offset: int = typer.Option(0, "--offset", help="skip this many source rows first"),
    on_bad_row: str = typer.Option("error", "--on-bad-row", help="error: stop at a bad row; skip: list it and go on"),
    config: str | None = typer.Option(None, "--config", help="hub config name"),
    max_row_bytes: int | None = typer.Option(None, help="a row larger than this many bytes is a bad row (1 MiB)"),
    question_field: str | None = typer.Option(None, help="generic: field holding the question"),
    answer_field: str | None = typer.Option(None, help="generic: field holding the gold answer"),
    solution_field: str | None = typer.Option(None, help="generic: field holding a reference solution"),
    id_field: str | None = typer.Option(None, help="generic: field holding the row's own id"),
    answer_parser: str | None = typer.Option(None, help="generic: raw, gsm8k or boxed"),
    source: str | None = typer.Option(None, help="generic: Problem.source and id prefix"),
    answer_style: str | None = typer.Option(
        None, "--answer-style", help="generic: number, latex or choice (picks the default prompt; as in a recipe)"),
    prompt: str | None = typer.Option(
        None, "--prompt", help="show the chat messages of this prompt template (default: the dataset's own), as the "
        "generate stage's `prompt` would send them"),
) -> None:
    """Print the first records of a dataset as parsed Problems (id, gold answer, question, meta)."""
    from mathforge.config import validate
    from mathforge.datasets.stage import LoadConfig, run_load_stage

    options = dict(
        dataset=name,
        path=path,
        split=split,
        limit=limit,
        offset=offset,
        on_bad_row=on_bad_row,
        config=config,
        max_row_bytes=max_row_bytes,
        question_field=question_field,
        answer_field=answer_field,
        solution_field=solution_field,
        id_field=id_field,
        answer_parser=answer_parser,
        source=source,
        answer_style=answer_style,
    )
    cfg = validate(LoadConfig, {k: v for k, v in options.items() if v is not None}, "datasets show")
    from mathforge.datasets import get_loader
    from mathforge.prompts import build_messages, get_prompt

    template = get_prompt(prompt) if prompt else None  # an unknown name fails here, before anything loads
    default_prompt = get_loader(cfg.dataset, **cfg.loader_options()).prompt
    problems, rejected = run_load_stage(cfg)
    for p in problems:
        body = Text()
        body.append("question: ", style="bold").append(p.question + "\n")
        body.append("answer:   ", style="bold").append(f"{p.answer}\n", style="green")
        if p.solution:
            short = p.solution if len(p.solution) <= 300 else p.solution[:300] + " …"
            body.append("solution: ", style="bold").append(short + "\n", style="dim")
        body.append("meta:     ", style="bold").append(json.dumps(p.meta, ensure_ascii=False) + "\n")
        key = prompt or p.meta.get("prompt") or default_prompt
        body.append("prompt:   ", style="bold").append(key)
        if template is not None:
            for m in build_messages(template, p):
                body.append(f"\n[{m['role']}] ", style="bold magenta").append(m["content"])
        console.print(Panel(body, title=Text(p.id, style="bold cyan"), title_align="left"))
    for _, reason in rejected:
        console.print(Text(f"skipped: {reason}", style="yellow"))
    console.print(Text(f"{len(problems)} problem(s) shown, {len(rejected)} row(s) skipped", style="dim"))
