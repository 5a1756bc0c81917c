"""Teacher options shared by the commands that send requests (generate, refine, synthesize): one teacher from
``--model``, else a recipe's teachers, else the run directory's own recipe."""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any, Optional

import typer


def _option(name: str, annotation: Any, *decls: str, help: str, default: Any = None) -> inspect.Parameter:
    return inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, annotation=annotation,
                             default=typer.Option(default, *decls, help=help))


def teacher_options(role: str = "one teacher") -> list[inspect.Parameter]:
    """``--recipe``, ``--model``, ``--backend``, ``--base-url``, ``--batch-size``, ``--keyless``."""
    return [
        _option("recipe", Optional[str], "--recipe", help="take teachers and seed from this recipe (default: the run's)"),
        _option("model", Optional[str], "--model", "-m",
                help=f"{role}: smollm2, a path, a hub id or an API model (with --backend openai)"),
        _option("backend", str, "--backend", default="local", help="backend of --model: local, openai or vllm"),
        _option("base_url", Optional[str], "--base-url", help="OpenAI-compatible endpoint (with --backend openai)"),
        _option("batch_size", Optional[int], "--batch-size", help="prompts per forward pass (local backend)"),
        _option("keyless", bool, "--keyless", default=False, help="the --base-url server needs no API key (local servers)"),
    ]


def teachers_for(
    run_dir: Path | None, recipe: Optional[str], model: Optional[str], backend: str, base_url: Optional[str],
    batch_size: Optional[int], keyless: bool = False,
) -> tuple[dict[str, Any], int]:
    """Teacher configs and seed: one teacher from ``--model``, else a recipe's, else the run directory's recipe.yaml."""
    from mathforge.backends import parse_teacher
    from mathforge.errors import ConfigError
    from mathforge.pipeline.recipe import load_recipe

    if model:
        cfg: dict[str, Any] = {"backend": backend, "model": model}
        if base_url:
            cfg["base_url"] = base_url
        if keyless:
            cfg["api_key_env"] = None
        if batch_size and backend == "local":
            cfg["batch_size"] = batch_size
        name = Path(model).stem if backend == "local" else model
        return {name: parse_teacher(name, cfg, "--model")}, 0
    spec = recipe or (str(run_dir / "recipe.yaml") if run_dir and (run_dir / "recipe.yaml").exists() else None)
    if spec is None:
        raise ConfigError("no teachers: pass --model, or --recipe with a recipe that defines teachers")
    r = load_recipe(spec)
    return r.teachers, r.seed
