"""The one request layer: sampling settings, requests, completions and how a request is planned and keyed.

Every stage that asks a model anything (generate, refine, synthesize, eval) builds its requests here, and every
backend and the API engine read them from here; neither ``backends/`` nor ``engine/`` defines its own. The sampling
defaults live in exactly one place (``TEMPERATURE``, ``TOP_P``, ``MAX_TOKENS``).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, Sequence

from pydantic import Field

from mathforge.config import StrictModel
from mathforge.store.ledger import request_key

if TYPE_CHECKING:
    from mathforge.records import Problem

# The sampling defaults of every request, everywhere (recipes, CLI flags, Python). top_p 0.95 is what every stage
# has used since the first recipes, so the ledger keys of existing runs stay valid.
TEMPERATURE = 0.7
TOP_P = 0.95
MAX_TOKENS = 512


@dataclass(frozen=True)
class SamplingParams:
    """Sampling settings of one request; all of them are part of the request's ledger key."""

    temperature: float = TEMPERATURE
    top_p: float = TOP_P
    max_tokens: int = MAX_TOKENS
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


class SamplingConfig(StrictModel):
    """Sampling settings as a recipe, the CLI and Python give them (one model for every stage that sends requests)."""

    temperature: float = Field(TEMPERATURE, ge=0, description="sampling temperature (0 = greedy)")
    top_p: float = Field(TOP_P, gt=0, le=1, description="nucleus sampling mass")
    max_tokens: int = Field(MAX_TOKENS, ge=1, description="most new tokens per reply")
    stop: list[str] | None = Field(None, description="stop strings")

    def params(self, seed: int | None) -> SamplingParams:
        """The request-level settings (all of them part of the ledger key)."""
        return SamplingParams(self.temperature, self.top_p, self.max_tokens, seed, tuple(self.stop) if self.stop else None)


@dataclass
class Planned:
    """A request with what it is for: the problem, the teacher that answers it and the prompt it was built from."""

    problem: "Problem"
    teacher: str
    model: str
    prompt_key: str
    request: GenRequest


def plan_request(
    identity: tuple[str, str],
    teacher: str,
    problem: "Problem",
    prompt_key: str,
    messages: list[dict[str, str]],
    params: SamplingParams,
    sample_index: int = 0,
    meta: dict[str, Any] | None = None,
) -> Planned:
    """One request of ``teacher`` (whose backend identity is ``(model, endpoint)``), keyed by its content."""
    model, endpoint = identity
    key = request_key(model=model, endpoint=endpoint, messages=messages, params=params.as_dict(),
                      sample_index=sample_index)
    request = GenRequest(key, messages, params, sample_index, {"problem_id": problem.id, **(meta or {})})
    return Planned(problem, teacher, model, prompt_key, request)
