"""The self-improvement experiment's config: one typed model for Python, ``bench/science.py`` flags and YAML."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from mathforge.config import StrictModel
from mathforge.evaluate.config import BenchmarkSpec

Arm = Literal["rft", "control", "reference"]
Step = Literal["sample", "train", "eval"]
ARMS: tuple[Arm, ...] = ("rft", "control", "reference")

# LoRA on the embedded 135M model, sized for a 2-core CPU: every arm trains exactly this many steps of this batch.
TRAIN_DEFAULTS: dict[str, Any] = {
    "method": "lora", "lora_r": 16, "lora_alpha": 32, "lora_dropout": 0.05, "learning_rate": 5e-4,
    "warmup_ratio": 0.1, "lr_scheduler": "cosine", "batch_size": 8, "grad_accum": 1, "max_steps": 16,
    "max_seq_length": 320, "gradient_checkpointing": False, "logging_steps": 1, "save_steps": 4,
    "save_total_limit": 1, "evaluate": False, "threads": 1,
}


class ExperimentConfig(StrictModel):
    """Arms trained from one base on one budget, scored greedily on one held-out set (see bench/science.py)."""

    run_dir: str = Field("runs/science", description="the experiment's run directory (ledger, tables, arms, report)")
    seed: int = Field(0, description="seed of sampling, subsets, data splits and training")
    model: str = Field("smollm2", description="the base model every arm starts from (and the sampler of RFT data)")
    threads: int | None = Field(1, ge=1, description="torch threads for generation (1 is fastest on a shared CPU)")
    batch_size: int = Field(16, ge=1, description="prompts generated together (small batches stop sooner when "
                            "their answers are short)")
    train_set: BenchmarkSpec = Field(
        BenchmarkSpec(name="arith", path="bundled:arith-train", split="train", limit=64),
        description="the training problems (the pool that samples and reference solutions come from)",
    )
    test: BenchmarkSpec = Field(
        BenchmarkSpec(name="arith", path="bundled:arith-test", split="test", limit=300),
        description="the held-out in-domain test set (disjoint from train_set)",
    )
    ood: BenchmarkSpec | None = Field(
        BenchmarkSpec(name="svamp", path="bundled:svamp-100", split="test", limit=50),
        description="an out-of-domain benchmark, so that in-domain gains are not over-claimed (null: none)",
    )
    k: int = Field(4, ge=1, description="samples per training problem drawn from the base")
    temperature: float = Field(0.7, gt=0, description="sampling temperature of those samples")
    top_p: float = Field(0.95, gt=0, le=1, description="nucleus mass of those samples")
    max_tokens: int = Field(96, ge=1, description="most new tokens per sample and per eval answer")
    eval_batching: Literal["refill", "static"] = Field(
        "refill", description="batching of the eval step's greedy answers: 'refill' (a finished answer's slot takes "
        "the next problem; the trained arms stop early, so this is several times faster) or 'static'. Greedy text is "
        "the same either way and batching is not part of the ledger identity; sampling always uses static batches"
    )
    arms: list[Arm] = Field(list(ARMS), description="trained arms: rft, control, reference (the base is always scored)")
    rows: int | None = Field(
        None, ge=1, description="at most this many training rows per arm (default and upper bound: as many as RFT "
        "kept, so every arm has the same)"
    )
    train: dict[str, Any] = Field(
        default_factory=dict, description="TrainConfig fields over TRAIN_DEFAULTS (the same for every arm)"
    )
    steps: list[Step] = Field(
        ["sample", "train", "eval"],
        description="what to run: sample (and curate), train the arms, eval; a step's earlier work is reused, so "
        "separate processes can run arms or evals side by side and a final full run finds everything done",
    )
    eval_base: bool = Field(True, description="score the base model in the eval step (false: the arms only)")
    report: bool = Field(True, description="write the mathforge report (report/) after a full run")
