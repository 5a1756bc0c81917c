"""Which models an eval scores: recipe teachers, local model specs, named backend configs, and adapters on top."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from mathforge.backends import BackendConfig, parse_teacher
from mathforge.backends.local import LocalConfig
from mathforge.errors import ConfigError


def model_name(spec: str) -> str:
    """A short name for a local model spec: 'smollm2', the folder or file stem of a path, the hub id's last part."""
    p = Path(spec)
    name = p.stem if p.suffix == ".gguf" else (p.name or spec)
    return re.sub(r"[^A-Za-z0-9_.+-]", "-", name) or "model"


def resolve_models(
    cfg: Any, teachers: dict[str, BackendConfig], run_dir: Path | None = None
) -> dict[str, BackendConfig]:
    """Name -> backend config for every model to score, adapters last (each on top of the first model).

    A relative adapter path is looked up in the run directory first (``train/adapter`` of the same recipe), so a run
    moved with ``--run-dir`` still finds the adapter it trained.
    """
    out: dict[str, BackendConfig] = {}
    if isinstance(cfg.models, dict):
        for name, data in cfg.models.items():
            out[name] = parse_teacher(name, data, f"eval: models.{name}")
    else:
        for spec in cfg.models:
            if spec in teachers:
                out[spec] = teachers[spec]
            else:
                out[model_name(spec)] = LocalConfig(model=spec)
    if not out:
        raise ConfigError("eval: name at least one model")
    if cfg.adapters:
        first_name, first = next(iter(out.items()))
        if "adapter" not in type(first).model_fields:
            raise ConfigError(f"eval: adapters need a backend that loads them (local); '{first_name}' is {first.backend}")
        named = cfg.adapters.items() if isinstance(cfg.adapters, dict) else [(None, a) for a in cfg.adapters]
        for given, adapter in named:
            if run_dir is not None and not Path(adapter).is_absolute() and (Path(run_dir) / adapter).exists():
                adapter = str(Path(run_dir) / adapter)
            name = given or f"{first_name}+{model_name(adapter.rstrip('/'))}"
            if name in out:
                raise ConfigError(f"eval: two models are named '{name}'; give the adapters names "
                                  "(adapters: {name: directory})")
            out[name] = first.model_copy(update={"adapter": adapter})
    return out


def base_model(cfg: Any, names: list[str]) -> str:
    """The model deltas are measured against: the configured one, else the first."""
    if cfg.base is not None and cfg.base not in names:
        raise ConfigError(f"eval: base '{cfg.base}' is not one of the models: {', '.join(names)}")
    return cfg.base or names[0]
