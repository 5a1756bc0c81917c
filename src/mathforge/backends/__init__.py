"""Model backends, looked up by name so that heavy optional packages load only when used."""

from __future__ import annotations

import importlib
from typing import Any

from mathforge.backends.base import Backend, BackendConfig, Completion, GenRequest, ResultSink, SamplingParams
from mathforge.config import validate
from mathforge.errors import ConfigError

# name -> "module:Class"; each module holds one backend and its Config model.
BACKENDS: dict[str, str] = {
    "anthropic": "mathforge.backends.anthropic_batch:AnthropicBatchBackend",
    "local": "mathforge.backends.local:LocalBackend",
    "openai": "mathforge.backends.openai_api:OpenAIBackend",
    "vllm": "mathforge.backends.vllm_offline:VLLMBackend",
}


def backend_class(kind: str) -> type[Backend]:
    if kind not in BACKENDS:
        raise ConfigError(f"unknown backend '{kind}'; valid backends: {', '.join(sorted(BACKENDS))}")
    module, _, attr = BACKENDS[kind].partition(":")
    return getattr(importlib.import_module(module), attr)


def parse_teacher(name: str, data: Any, where: str) -> BackendConfig:
    """Validate one teacher's config against its backend's Config model."""
    if not isinstance(data, dict) or "backend" not in data:
        raise ConfigError(f"{where}: a teacher needs 'backend' (one of {', '.join(sorted(BACKENDS))})")
    return validate(backend_class(data["backend"]).Config, data, where)


def make_backend(name: str, config: BackendConfig) -> Backend:
    cls = backend_class(config.backend)
    return cls.for_config(config)(name, config)


__all__ = [
    "Backend", "BackendConfig", "Completion", "GenRequest", "ResultSink", "SamplingParams",
    "BACKENDS", "backend_class", "parse_teacher", "make_backend",
]
