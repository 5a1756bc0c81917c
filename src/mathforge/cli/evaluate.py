"""``mathforge eval``: score models on benchmarks (greedy, maj@k, pass@k) and print the comparison table."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import typer
from rich.console import Console
from rich.table import Table

app = typer.Typer(add_completion=False)
console = Console()


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


@app.command()
def evaluate(
    model: Optional[list[str]] = typer.Option(None, "--model", "-m", help="model to score (repeatable): smollm2, a directory, a .gguf, a hub id, or an API model name with --backend openai"),
    adapter: Optional[list[str]] = typer.Option(None, "--adapter", help="PEFT adapter directory on top of the first model (repeatable); the plain model is the base"),
    benchmarks: Optional[str] = typer.Option(None, "--benchmarks", "-b", help="comma-separated: gsm8k,math,math500,svamp,mathqa"),
    data_dir: Optional[str] = typer.Option(None, "--data-dir", help="folder with one sub-folder per benchmark (else the hub)"),
    k: Optional[int] = typer.Option(None, "--k", help="samples per problem for maj@k / pass@k (default 1: greedy only)"),
    limit: Optional[int] = typer.Option(None, "--limit", "-n", help="first N problems of each benchmark"),
    max_tokens: Optional[int] = typer.Option(None, "--max-tokens", help="most new tokens per answer (default 512)"),
    no_greedy: bool = typer.Option(False, "--no-greedy", help="skip the greedy pass (needs --k >= 2)"),
    base: Optional[str] = typer.Option(None, "--base", help="model the deltas are measured against (default: the first)"),
    backend: str = typer.Option("local", "--backend", help="backend of --model: local, openai or vllm"),
    base_url: Optional[str] = typer.Option(None, "--base-url", help="OpenAI-compatible endpoint (with --backend openai)"),
    batch_size: Optional[int] = typer.Option(None, "--batch-size", help="prompts per forward pass (local backend)"),
    config: Optional[Path] = typer.Option(None, "--config", "-c", help="eval config YAML (models as named backend configs, benchmarks with paths, ...); flags override it"),
    run_dir: Path = typer.Option(Path("runs/eval"), "--run-dir", "-o", help="run directory (ledger = cache and resume point)"),
    seed: int = typer.Option(0, "--seed", help="sampling seed"),
    compare: Optional[list[Path]] = typer.Option(None, "--compare", help="also tabulate the eval results of this run (repeatable)"),
) -> None:
    """Score models on math benchmarks: greedy accuracy, maj@k, pass@k and mean pass@1 with 95% intervals."""
    from mathforge.config import load_yaml, read_text, validate
    from mathforge.evaluate import EvalConfig, comparison_rows, find_results, run_eval
    from mathforge.pipeline.context import RunContext

    data: dict[str, Any] = dict(load_yaml(read_text(config), str(config)) or {}) if config else {}
    if model:
        data["models"] = _models(model, backend, base_url, batch_size)
    flags = {"adapters": adapter, "data_dir": data_dir, "k": k, "limit": limit, "max_tokens": max_tokens, "base": base}
    data.update({key: v for key, v in flags.items() if v})
    if benchmarks:
        data["benchmarks"] = [b.strip() for b in benchmarks.split(",") if b.strip()]
    if no_greedy:
        data["greedy"] = False
    cfg = validate(EvalConfig, data, str(config or "mathforge eval"))
    ctx = RunContext(run_dir, seed=seed)
    try:
        out = run_dir / "eval"
        doc = run_eval(ctx, cfg, out)
    finally:
        ctx.close()
    sets = [(out, doc)] + [s for c in compare or [] for s in find_results(c)]
    print_table(comparison_rows(sets), title=f"eval: {run_dir}")
    gen = doc["generation"]
    console.print(
        f"requests {gen['requests']} (sent {gen['sent']}, cached {gen['cached']}), "
        f"{gen.get('tokens_per_s') or '-'} tokens/s; results in {out}/results.json, table in {out}/table.md"
    )
