"""The one backend protocol every teacher, judge and student speaks.

A backend turns a list of chat requests into completions and reports each one to a sink as it finishes, so the
caller can commit it to the ledger immediately. Backends own how they batch or parallelise; they never decide what
is cached (the ledger does) and never render prompts differently (chat templates are applied in ``chat.py``).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Sequence

from mathforge.config import StrictModel
from mathforge.request import Completion, GenRequest, ResultSink, SamplingParams

__all__ = ["Backend", "BackendConfig", "Completion", "GenRequest", "ResultSink", "SamplingParams"]


class BackendConfig(StrictModel):
    """Fields every backend accepts; each backend's own config adds its options."""

    backend: str


class Backend(ABC):
    """A model that answers chat requests. Heavy packages are imported lazily in ``__init__``/``generate``."""

    Config: type[BackendConfig] = BackendConfig

    def __init__(self, name: str, config: BackendConfig):
        self.name = name
        self.config = config

    @classmethod
    def for_config(cls, config: BackendConfig) -> type["Backend"]:
        """The class that serves this config (a backend may hand a mode such as ``batch`` to another class)."""
        return cls

    @abstractmethod
    def identity(self) -> tuple[str, str]:
        """(model, endpoint) as they enter the ledger key; must not need the model to be loaded."""

    @abstractmethod
    def generate(self, requests: Sequence[GenRequest], sink: ResultSink) -> None:
        """Answer every request, reporting each to ``sink`` as soon as it is done."""

    def prepare(self) -> None:
        """Load weights or open connections before timing starts (a no-op for remote backends)."""

    def close(self) -> None:
        """Release the model or connections."""
