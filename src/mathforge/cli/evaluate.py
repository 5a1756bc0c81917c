"""``mathforge eval``: score models on benchmarks (greedy, maj@k, pass@k) and print the comparison table. Every
EvalConfig field that a flag can hold is a flag (its description is the help); ``models``, ``adapters`` and
``benchmarks`` (names or records) have shorthand flags, and ``--config`` YAML can hold any field."""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any, Optional

import typer
from rich.console import Console
from rich.table import Table

from mathforge.cli.flags import config_command, out_option
from mathforge.evaluate.config import EvalConfig

app = typer.Typer(add_completion=False)
console = Console()

DEFAULT_OUT = Path("runs/eval")
SHORT = {"limit": ["-n"], "k": ["-k"]}


def _models(specs: list[str], backend: str, base_url: str | None, batch_size: int | None) -> dict[str, dict[str, Any]]:
    """Backend configs for ``--model`` values: the spec is the backend's model (a local path/GGUF/hub id or API name)."""
    from mathforge.evaluate.models import model_name

    out = {}
    for spec in specs:
        cfg: dict[str, Any] = {"backend": backend, "model": spec}
        if base_url:
            cfg["base_url"] = base_url
        if batch_size and backend == "local":
            cfg["batch_size"] = batch_size
        out[model_name(spec)] = cfg
    return out


def print_table(rows: list[dict[str, Any]], title: str = "eval") -> None:
    from mathforge.evaluate.compare import table_cells

    header, cells = table_cells(rows)
    table = Table(*header, title=title)
    for line in cells:
        table.add_row(*line)
    console.print(table)


def build_config(data: dict[str, Any], *, model: list[str] | None = None, adapter: list[str] | None = None,
                 benchmarks: str | None = None, backend: str = "local", base_url: str | None = None,
                 batch_size: int | None = None, config: Path | None = None) -> EvalConfig:
    """The EvalConfig from --config and the generated flags (``data``) plus the shorthand flags for the fields
    that hold names or records (models, adapters, benchmarks)."""
    from mathforge.config import validate

    data = dict(data)
    if model:
        data["models"] = _models(model, backend, base_url, batch_size)
    if adapter:
        data["adapters"] = adapter
    if benchmarks:
        data["benchmarks"] = [b.strip() for b in benchmarks.split(",") if b.strip()]
    return validate(EvalConfig, data, str(config or "mathforge eval"))


def eval_command(data: dict[str, Any], *, model: list[str] | None, adapter: list[str] | None, benchmarks: str | None,
                 backend: str, base_url: str | None, batch_size: int | None, out: Path | None,
                 compare: list[Path] | None, config: Path | None) -> None:
    """Score models on math benchmarks: greedy accuracy, maj@k, pass@k and mean pass@1 with 95% intervals."""
    from mathforge.evaluate import comparison_rows, find_results, run_eval
    from mathforge.pipeline.context import RunContext

    cfg = build_config(data, model=model, adapter=adapter, benchmarks=benchmarks, backend=backend, base_url=base_url,
                       batch_size=batch_size, config=config)
    run_dir = out or DEFAULT_OUT
    ctx = RunContext(run_dir, seed=cfg.seed or 0)
    try:
        folder = run_dir / "eval"
        doc = run_eval(ctx, cfg, folder)
    finally:
        ctx.close()
    sets = [(folder, doc)] + [s for c in compare or [] for s in find_results(c)]
    print_table(comparison_rows(sets), title=f"eval: {run_dir}")
    gen = doc["generation"]
    console.print(
        f"requests {gen['requests']} (sent {gen['sent']}, cached {gen['cached']}), "
        f"{gen.get('tokens_per_s') or '-'} tokens/s; results in {folder}/results.json, table in {folder}/table.md"
    )


def _param(name: str, annotation: Any, default: Any) -> inspect.Parameter:
    return inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, annotation=annotation, default=default)


SHORTHANDS = [
    _param("model", Optional[list[str]], typer.Option(
        None, "--model", "-m", help="models: a model to score (repeatable): smollm2, a directory, a .gguf, a hub id, "
        "or an API model name with --backend openai")),
    _param("adapter", Optional[list[str]], typer.Option(
        None, "--adapter", help="adapters: a PEFT adapter directory on top of the first model (repeatable); the plain "
        "model is the base")),
    _param("benchmarks", Optional[str], typer.Option(
        None, "--benchmarks", "-b", help="benchmarks, comma-separated: gsm8k,math,math500,svamp,mathqa")),
    _param("backend", str, typer.Option("local", "--backend", help="backend of --model: local, openai or vllm")),
    _param("base_url", Optional[str], typer.Option(None, "--base-url", help="OpenAI-compatible endpoint of --model "
                                                   "(with --backend openai)")),
    _param("batch_size", Optional[int], typer.Option(None, "--batch-size", help="prompts per forward pass of --model "
                                                     "(local backend)")),
]
TRAILING = [
    out_option(f"run directory to write to: its ledger is the cache and resume point, results go to <out>/eval "
               f"(default: {DEFAULT_OUT})", extra=["--run-dir"]),
    _param("compare", Optional[list[Path]], typer.Option(None, "--compare", help="also tabulate the eval results of "
                                                         "this run (repeatable)")),
]

app.command("eval")(config_command(
    EvalConfig,
    eval_command,
    leading=SHORTHANDS,
    trailing=TRAILING,
    short=SHORT,
    doc="Score models on math benchmarks: greedy accuracy, maj@k, pass@k and mean pass@1 with 95% intervals.",
))
