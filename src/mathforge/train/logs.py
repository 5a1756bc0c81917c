"""What a training run leaves for the report: the loss / learning-rate curve and the final metrics, as files."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from transformers import TrainerCallback

LOG_FILE = "log_history.jsonl"


def write_json(path: Path, data: Any) -> None:
    """Write JSON atomically (a reader never sees half a file)."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data, indent=1, ensure_ascii=False, default=str), encoding="utf-8")
    os.replace(tmp, path)


def read_log_history(path: str | Path) -> list[dict[str, Any]]:
    """The rows of a ``log_history.jsonl`` (a run's training directory or the file itself)."""
    p = Path(path)
    p = p / LOG_FILE if p.is_dir() else p
    if not p.exists():
        return []
    return [json.loads(line) for line in p.read_text(encoding="utf-8").splitlines() if line.strip()]


class LogHistoryWriter(TrainerCallback):
    """Rewrites ``log_history.jsonl`` from the trainer state at every log, so it survives interruptions.

    The state is restored from the checkpoint on resume, so logs written after the last checkpoint of an interrupted
    run are replaced rather than duplicated.
    """

    def __init__(self, path: Path):
        self.path = path

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not state.is_world_process_zero:
            return
        tmp = self.path.with_name(f".{self.path.name}.tmp")
        with open(tmp, "w", encoding="utf-8") as fh:
            for row in state.log_history:
                fh.write(json.dumps(row, default=float) + "\n")
        os.replace(tmp, self.path)
