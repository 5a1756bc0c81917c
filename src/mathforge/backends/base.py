"""The one backend protocol every teacher, judge and student speaks.

A backend turns a list of chat requests into completions and reports each one to a sink as it finishes, so the
caller can commit it to the ledger immediately. Backends own how they batch or parallelise; they never decide what
is cached (the ledger does) and never render prompts differently (chat templates are applied in ``chat.py``).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol, Sequence

from mathforge.config import StrictModel


@dataclass(frozen=True)
class SamplingParams:
    """Sampling settings of one request; all of them are part of the request's ledger key."""

    temperature: float = 0.7
    top_p: float = 1.0
    max_tokens: int = 512
    seed: int | None = None
    stop: tuple[str, ...] | None = None

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        if d["stop"] is not None:
            d["stop"] = list(d["stop"])
        return d


@dataclass
class GenRequest:
    """One request: a chat, its sampling parameters and which sample of the problem it is."""

    key: str
    messages: list[dict[str, str]]
    params: SamplingParams
    sample_index: int = 0
    meta: dict[str, Any] = field(default_factory=dict)


@dataclass
class Completion:
    text: str
    finish_reason: str | None
    tokens_in: int
    tokens_out: int
    latency: float | None = None
    response: dict[str, Any] | None = None


class ResultSink(Protocol):
    """Where a backend reports each finished request (the generate stage commits these to the ledger)."""

    def ok(self, request: GenRequest, completion: Completion) -> None: ...

    def ok_many(self, items: Sequence[tuple[GenRequest, Completion]]) -> None: ...

    def fail(self, request: GenRequest, error: str, *, final: bool, abandoned: bool = False) -> None:
        """A failed attempt (``abandoned``: cut short by the engine; it may still be billed)."""


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
