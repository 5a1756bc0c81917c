"""Recipes: YAML validated into typed configs (``pipeline.runner`` runs them over a run directory).

A recipe is ``name``, optional ``run_dir``/``seed``, named ``teachers`` (each a backend config), and an ordered
list of ``stages``, each a one-key mapping ``{stage_name: {its config}}``. Every level rejects unknown keys.
"""

from __future__ import annotations

import importlib.resources
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import Field

from mathforge.backends import BackendConfig, parse_teacher
from mathforge.config import Secrets, StrictModel, load_yaml, read_text, validate
from mathforge.errors import ConfigError
from mathforge.pipeline.stages import stage_class


class RecipeHeader(StrictModel):
    name: str = Field(description="recipe name; the default run directory is runs/<name>")
    description: str = Field("", description="what this recipe is for")
    run_dir: str | None = Field(None, description="where the run directory goes (default runs/<name>)")
    seed: int = Field(0, description="base seed for sampling and splits")
    allow_partial: bool = Field(False, description="let later stages run on data that lacks answers to failed "
                                                   "requests (the run still exits with code 3)")
    executor: Literal["local", "ray"] = Field(
        "local", description="where stages run: 'local' (this process) or 'ray' (a Ray cluster: RAY_ADDRESS or "
        "`mathforge run --address`, else a Ray instance started on this machine; needs mathforge[ray])")
    teachers: dict[str, Any] = Field(default_factory=dict, description="named model backends used by stages")
    stages: list[Any] = Field(description="ordered stages, each {stage_name: {config}}")


@dataclass
class Recipe:
    name: str
    description: str
    run_dir: str | None
    seed: int
    teachers: dict[str, BackendConfig]
    stages: list[tuple[str, str, Any]]  # (stage name, stage id, config)
    source: str = "<recipe>"
    secrets: Secrets = field(default_factory=Secrets)
    allow_partial: bool = False
    executor: str = "local"

    def effective(self) -> dict[str, Any]:
        """The config with defaults filled in and secrets masked: what is written to the run directory."""
        data = {
            "name": self.name,
            "description": self.description,
            "run_dir": self.run_dir,
            "seed": self.seed,
            "allow_partial": self.allow_partial,
            **({"executor": self.executor} if self.executor != "local" else {}),
            "teachers": {k: v.model_dump(mode="json") for k, v in self.teachers.items()},
            "stages": [{name: cfg.model_dump(mode="json")} for name, _, cfg in self.stages],
        }
        return self.secrets.mask(data)


def bundled_recipes() -> dict[str, Path]:
    root = importlib.resources.files("mathforge") / "recipes"
    return {Path(str(p)).stem: Path(str(p)) for p in root.iterdir() if str(p).endswith(".yaml")}


def resolve_recipe_path(spec: str) -> Path:
    p = Path(spec)
    if p.suffix in (".yaml", ".yml") or p.exists():
        if not p.exists():
            raise ConfigError(f"{spec}: recipe file not found")
        return p
    bundled = bundled_recipes()
    if spec in bundled:
        return bundled[spec]
    raise ConfigError(f"no recipe file or bundled recipe named '{spec}'; bundled: {', '.join(sorted(bundled))}")


def parse_recipe(data: Any, where: str = "<recipe>") -> Recipe:
    secrets = Secrets()
    data = secrets.substitute(data, where)
    try:
        return _parse(data, where, secrets)
    except ConfigError as exc:  # an error may quote a value that came from ${VAR}: put the name back
        raise ConfigError(str(secrets.mask(str(exc)))) from None


def _parse(data: Any, where: str, secrets: Secrets) -> Recipe:
    header = validate(RecipeHeader, data, where)
    teachers = {name: parse_teacher(name, cfg, f"{where}: teachers.{name}") for name, cfg in header.teachers.items()}
    stages, seen = [], {}
    for i, entry in enumerate(header.stages):
        if not isinstance(entry, dict) or len(entry) != 1:
            raise ConfigError(f"{where}: stages[{i}]: each stage is a mapping with one key, the stage name")
        (name, cfg_data), = entry.items()
        cls = stage_class(name)
        seen[name] = seen.get(name, 0) + 1
        stage_id = name if seen[name] == 1 else f"{name}-{seen[name]}"
        stages.append((name, stage_id, validate(cls.Config, cfg_data, f"{where}: stages[{i}].{name}")))
    return Recipe(header.name, header.description, header.run_dir, header.seed, teachers, stages, where, secrets,
                  header.allow_partial, header.executor)


def load_recipe(spec: str) -> Recipe:
    path = resolve_recipe_path(spec)
    return parse_recipe(load_yaml(read_text(path), str(path)), str(path))


from mathforge.pipeline.runner import run_recipe  # noqa: E402  (its home is the runner; kept importable from here)

__all__ = ["Recipe", "bundled_recipes", "load_recipe", "parse_recipe", "resolve_recipe_path", "run_recipe"]
