"""The stage registry: name -> Stage class, imported lazily so the CLI stays light."""

from __future__ import annotations

import importlib
from typing import Any, ClassVar

from mathforge.config import StrictModel
from mathforge.errors import ConfigError

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
    "export": "mathforge.export:ExportStage",
    "reference_sft": "mathforge.train.reference:ReferenceSFTStage",
    "train": "mathforge.train.stage:TrainStage",
    "eval": "mathforge.evaluate.stage:EvalStage",
    "report": "mathforge.report.stage:ReportStage",
}


class Stage:
    """A step of a recipe: reads the tables the stages before it wrote, writes its own, returns summary metrics."""

    name: ClassVar[str]
    Config: ClassVar[type[StrictModel]]
    # Which table kinds it reads and writes ("problems", "samples"); the runner records what each wrote.
    writes: ClassVar[str | None] = None

    def run(self, ctx: Any, cfg: Any) -> dict[str, Any]:  # pragma: no cover - interface
        raise NotImplementedError


def stage_class(name: str) -> type[Stage]:
    if name not in STAGES:
        raise ConfigError(f"unknown stage '{name}'; valid stages: {', '.join(STAGES)}")
    module, _, attr = STAGES[name].partition(":")
    return getattr(importlib.import_module(module), attr)
