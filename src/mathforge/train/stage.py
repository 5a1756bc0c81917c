"""The ``train`` recipe stage: fine-tune the student on this run's export (or any data) into ``<run>/<stage id>/``."""

from __future__ import annotations

from typing import Any

from mathforge.pipeline.context import RunContext
from mathforge.pipeline.stages import Port, Stage
from mathforge.train.config import TrainConfig

SUMMARY_KEYS = ("global_step", "first_loss", "last_loss", "eval_loss", "tokens_per_second", "train_seconds",
                "masking", "train_rows", "output_dir", "merged_dir", "cached")


class TrainStage(Stage):
    name = "train"
    Config = TrainConfig
    inputs = {"data": Port("export", optional=True)}  # the export before it, unless the config names data
    outputs = {"model": Port("model", folder=True, file="{id}")}
    stage_id = "train"

    def run(self, ctx: RunContext, cfg: TrainConfig) -> dict[str, Any]:
        from mathforge.train.sft import train

        exported = ctx.input_path("data")
        cfg = cfg.model_copy(update={
            "data": _in_run(ctx, cfg.data) if cfg.data else str(exported or ctx.run_dir),
            # checkpoints are resumed from, so the folder is kept in place rather than switched in at the end
            "output_dir": str(ctx.output_in_place("model", cfg.output_dir)),
        })
        metrics = train(cfg, seed=ctx.seed)
        return {k: metrics[k] for k in SUMMARY_KEYS if k in metrics}


def _in_run(ctx: RunContext, data: str) -> str:
    """A relative data path names a folder of this run (e.g. ``export/synthesis``) when one exists there."""
    from pathlib import Path

    inside = ctx.path(data)
    return str(inside) if not Path(data).is_absolute() and inside.exists() else data
