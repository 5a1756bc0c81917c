"""The Stage interface (named inputs and outputs) and the registry: name -> Stage class, imported lazily."""

from __future__ import annotations

import functools
import importlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, ClassVar

from pydantic import BaseModel

from mathforge.errors import ConfigError

if TYPE_CHECKING:
    from mathforge.pipeline.context import RunContext

# One line per stage. A Stage subclass lives next to the code it drives.
STAGES: dict[str, str] = {
    "load": "mathforge.pipeline.builtin:LoadStage",
    "generate": "mathforge.generate:GenerateStage",
    "verify": "mathforge.pipeline.builtin:VerifyStage",
    "refine": "mathforge.refine.stage:RefineStage",
    "synthesize": "mathforge.synth.stage:SynthesizeStage",
    "synth_compare": "mathforge.synth.compare_stage:SynthCompareStage",
    "curate": "mathforge.curate.stage:CurateStage",
    "select": "mathforge.select.stage:SelectStage",
    "select_problems": "mathforge.select.stage:SelectProblemsStage",
    "export": "mathforge.export:ExportStage",
    "reference_sft": "mathforge.train.reference:ReferenceSFTStage",
    "train": "mathforge.train.stage:TrainStage",
    "eval": "mathforge.evaluate.stage:EvalStage",
    "report": "mathforge.report.stage:ReportStage",
}

WHOLE_RUN = "*"  # an input kind: reads everything the stages before it wrote (report)


@dataclass(frozen=True)
class Port:
    """A named input or output of a stage.

    ``kind`` is what flows through it ("problems", "samples", "export", ...): an input of kind K is resolved to the
    output of kind K of the nearest stage before it in the recipe. ``file`` names an output's table (default
    ``<stage id>.parquet`` for the first output, ``<stage id>-<name>.parquet`` for others; ``{id}`` is replaced by
    the stage id); ``folder`` marks an output written as a directory (``ctx.output_dir``).
    """

    kind: str
    optional: bool = False
    file: str | None = None
    folder: bool = False


class Stage:
    """A step of a recipe: reads its declared inputs, writes its declared outputs, returns summary metrics.

    Subclasses implement ``run(ctx, cfg)``; it is wrapped so that every call (from the runner, a CLI command or a
    test) runs inside ``ctx.stage_scope``: inputs resolved from the lineage, outputs committed atomically at the end.
    """

    name: ClassVar[str]
    Config: ClassVar[type[BaseModel]]
    inputs: ClassVar[dict[str, Port]] = {}
    outputs: ClassVar[dict[str, Port]] = {}
    # File name of each output when the stage id is the stage's own name (historic names: verified.parquet, ...).
    canonical_files: ClassVar[dict[str, str]] = {}
    stage_id: str = ""

    def __init__(self, stage_id: str | None = None):
        self.stage_id = stage_id or self.stage_id or self.name

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        body = cls.__dict__.get("run")
        if body is not None and not getattr(body, "_scoped", False):
            cls.run = _scoped(body)  # type: ignore[method-assign]

    def run(self, ctx: "RunContext", cfg: Any) -> dict[str, Any]:  # pragma: no cover - interface
        raise NotImplementedError

    def output_file(self, name: str) -> str:
        """The file (or folder) name of output ``name`` inside the run directory."""
        port = self.outputs[name]
        if self.stage_id == self.name and name in self.canonical_files:
            return self.canonical_files[name]
        if port.file:
            return port.file.replace("{id}", self.stage_id)
        first = next(iter(self.outputs))
        return f"{self.stage_id}.parquet" if name == first else f"{self.stage_id}-{name}.parquet"

    @classmethod
    def input_kinds(cls) -> set[str]:
        return {p.kind for p in cls.inputs.values()}

    @classmethod
    def output_kinds(cls) -> set[str]:
        return {p.kind for p in cls.outputs.values()}


def _scoped(body: Callable[..., dict[str, Any]]) -> Callable[..., dict[str, Any]]:
    @functools.wraps(body)
    def run(self: Stage, ctx: "RunContext", cfg: Any) -> dict[str, Any]:
        return ctx.run_stage(self, cfg, lambda: body(self, ctx, cfg))

    run._scoped = True  # type: ignore[attr-defined]
    return run


def stage_class(name: str) -> type[Stage]:
    if name not in STAGES:
        raise ConfigError(f"unknown stage '{name}'; valid stages: {', '.join(STAGES)}")
    module, _, attr = STAGES[name].partition(":")
    return getattr(importlib.import_module(module), attr)


def downstream(stages: list[tuple[str, type[Stage]]], start: set[str]) -> list[str]:
    """Stage ids after ``start`` (in recipe order) that read, directly or through others, what ``start`` writes."""
    hit = set(start)
    out: list[str] = []
    for i, (sid, cls) in enumerate(stages):
        if sid in hit:
            continue
        for kind in cls.input_kinds():
            if kind == WHOLE_RUN:
                producers = {s for s, _ in stages[:i]}
            else:
                producers = next(({s} for s, c in reversed(stages[:i]) if kind in c.output_kinds()), set())
            if producers & hit:
                hit.add(sid)
                out.append(sid)
                break
    return out
