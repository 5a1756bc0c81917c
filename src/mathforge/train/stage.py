"""The ``train`` recipe stage: fine-tune the student on this run's export (or any data) into ``<run>/<stage id>/``."""

from __future__ import annotations

from typing import Any

from mathforge.pipeline.stages import Stage
from mathforge.train.config import TrainConfig

SUMMARY_KEYS = ("global_step", "first_loss", "last_loss", "eval_loss", "tokens_per_second", "train_seconds",
                "masking", "train_rows", "output_dir", "merged_dir", "cached")


class TrainStage(Stage):
    name = "train"
    Config = TrainConfig
    stage_id = "train"

    def run(self, ctx: Any, cfg: TrainConfig) -> dict[str, Any]:
        from mathforge.train.sft import train

        cfg = cfg.model_copy(update={
            "data": _in_run(ctx, cfg.data) if cfg.data else str(ctx.run_dir),
            "output_dir": cfg.output_dir or str(ctx.path(self.stage_id)),
        })
        metrics = train(cfg, seed=ctx.seed)
        return {k: metrics[k] for k in SUMMARY_KEYS if k in metrics}


def _in_run(ctx: Any, data: str) -> str:
    """A relative data path names a folder of this run (e.g. ``export/synthesis``) when one exists there."""
    from pathlib import Path

    inside = ctx.path(data)
    return str(inside) if not Path(data).is_absolute() and inside.exists() else data
