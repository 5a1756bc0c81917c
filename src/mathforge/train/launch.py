"""Training on several processes: ``train`` relaunches itself under ``accelerate launch`` (torchrun underneath).

TRL's trainers are data-parallel as soon as they run under one of the launchers they support, so nothing here does
distributed work itself: ``launch`` writes the config next to the outputs, starts ``accelerate launch --multi_gpu
--num_processes N -m mathforge.train.launch CONFIG SEED`` (one process per GPU; on a machine without one, N CPU
processes on the gloo backend), waits, and returns the metrics the main process wrote. Each process runs
``mathforge.train.sft.train``, which sees the launcher's ``WORLD_SIZE`` and trains its share of every batch.
The rendezvous is on 127.0.0.1 on a free port, so two runs on one machine do not meet by accident.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

from mathforge.errors import BackendError, ConfigError
from mathforge.masking import mask_config
from mathforge.train.config import TrainConfig
from mathforge.train.logs import write_json

LAUNCH_FILE = "launch.json"  # inside output_dir: the config the processes were started with


def launched() -> bool:
    """This process is one of a launcher's (torchrun / accelerate launch set WORLD_SIZE and LOCAL_RANK)."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1 and "LOCAL_RANK" in os.environ


def command(cfg: TrainConfig, device: str, config_path: Path, seed: int) -> tuple[list[str], dict[str, str]]:
    """The ``accelerate launch`` command line and environment for ``cfg.num_processes`` processes."""
    n = cfg.num_processes
    if device == "cuda":
        import torch

        if torch.cuda.device_count() < n:
            raise ConfigError(f"train: num_processes {n} needs {n} GPUs and torch sees {torch.cuda.device_count()}")
    with socket.socket() as s:  # a free port for the rendezvous (the default 29500 is shared by every run here)
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", str(n),
           "--num_machines", "1", "--main_process_ip", "127.0.0.1", "--main_process_port", str(port),
           "--mixed_precision", "no", "--dynamo_backend", "no",  # the trainer's own precision setting decides
           "-m", "mathforge.train.launch", str(config_path), str(seed)]
    env = dict(os.environ)
    if device == "cpu":
        env["ACCELERATE_USE_CPU"] = "true"  # processes on CPU: accelerate picks the gloo backend
        env["OMP_NUM_THREADS"] = str(cfg.threads or max(1, (os.cpu_count() or 1) // n))
    return cmd, env


def launch(cfg: TrainConfig, device: str, seed: int) -> dict[str, Any]:
    """Run ``cfg`` on ``cfg.num_processes`` processes and return the main process's metrics."""
    if importlib.util.find_spec("accelerate") is None:
        raise BackendError("train: num_processes > 1 needs accelerate: pip install 'mathforge[train]'")
    out = Path(cfg.output_dir or ".")
    out.mkdir(parents=True, exist_ok=True)
    config_path = out / LAUNCH_FILE
    dumped = cfg.model_dump(mode="json")
    if mask_config(dumped) != dumped:  # the processes read the config from disk: no credential may be in it
        raise ConfigError("train: the config holds a credential-like value (e.g. a token in trainer_args); with "
                          "num_processes > 1 it is written to launch.json, so set it through its environment "
                          "variable instead (HF_TOKEN, WANDB_API_KEY, ...)")
    write_json(config_path, dumped)
    metrics = out / "metrics.json"
    before = metrics.stat().st_mtime_ns if metrics.exists() else None
    cmd, env = command(cfg, device, config_path, seed)
    proc = subprocess.run(cmd, env=env)
    if proc.returncode != 0:
        raise BackendError(f"train: the {cfg.num_processes} training processes failed (exit {proc.returncode}); "
                           f"their output is above, the config is in {config_path}")
    if not metrics.exists() or metrics.stat().st_mtime_ns == before:
        raise BackendError(f"train: the training processes exited without writing {metrics}")
    return json.loads(metrics.read_text(encoding="utf-8"))


class RowsSeen:
    """Wraps the trainer's data collator to count, in each process, the rows it trained on and hash the first ones.

    ``gather`` collects every process's record on each of them (metrics ``ranks``): evidence that the processes
    split the data rather than each training on all of it. (With ``dataloader_num_workers`` > 0 the collator runs in
    loader subprocesses and nothing is counted.)
    """

    KEEP = 64  # row hashes kept per process

    def __init__(self, collator: Any, rank: int):
        self.collator, self.rank = collator, rank
        self.rows = 0
        self.first: list[str] = []

    def __call__(self, examples: list[dict[str, Any]]) -> Any:
        self.rows += len(examples)
        for ex in examples[: max(0, self.KEEP - len(self.first))]:
            ids = ex.get("input_ids")
            blob = json.dumps(list(ids) if ids is not None else ex, sort_keys=True, default=str)
            self.first.append(hashlib.sha256(blob.encode()).hexdigest()[:12])
        return self.collator(examples)

    def gather(self, processes: int) -> list[dict[str, Any]]:
        record = {"rank": self.rank, "rows": self.rows, "first_rows": self.first}
        if processes == 1:
            return [record]
        from accelerate.utils import gather_object

        return sorted(gather_object([record]), key=lambda r: r["rank"])


def main(argv: list[str]) -> None:
    """Entry point of each launched process: ``python -m mathforge.train.launch CONFIG_JSON SEED``."""
    from mathforge.train.sft import train

    cfg = TrainConfig.model_validate(json.loads(Path(argv[0]).read_text(encoding="utf-8")))
    train(cfg, seed=int(argv[1]))


if __name__ == "__main__":
    main(sys.argv[1:])
