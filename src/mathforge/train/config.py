"""The training config: one typed model for the Python API, the ``train`` recipe stage and ``mathforge train`` flags.

Defaults reproduce the seed experiment (Qwen2.5-1.5B-Instruct, QLoRA r=64 / alpha=128 / dropout 0.08, AdamW, cosine
peaking at 1e-5 with 10% warm-up, batch 4 x accumulation 4, 2 epochs, 4-bit NF4 + bf16).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from mathforge.config import StrictModel

# Fields that change where or how a run is reported, not what it learns: they may differ when resuming.
NOT_FINGERPRINTED = frozenset(
    {"data", "output_dir", "resume", "resume_from", "merge", "report_to", "run_name", "logging_steps", "save_steps",
     "save_total_limit", "evaluate", "threads"}
)
# Fields added after checkpoints and finished runs already existed: at these values they leave the fingerprint as it
# was before they existed, so adding a field never forces a retrain or blocks a resume of the same training.
LATER_FIELDS: dict[str, Any] = {"num_processes": 1}


class TrainConfig(StrictModel):
    """Supervised fine-tuning of a student on exported chat data (TRL SFTTrainer + PEFT)."""

    model: str = Field(description="student base model: 'smollm2', a directory, a .gguf file or a hub id")
    gguf_file: str | None = Field(None, description="GGUF file inside `model` when it is a directory or hub repo")
    data: str | None = Field(
        None,
        description="training data: a run directory (its export/), a JSONL/Parquet file of {messages} rows, or a "
        "saved DatasetDict; in a recipe the default is this run's export",
    )
    output_dir: str | None = Field(None, description="directory where checkpoints, adapter and logs go (recipe: <run>/<stage>)")
    limit: int | None = Field(None, ge=1, description="train on the first N rows only (smoke tests)")

    method: Literal["lora", "qlora", "full"] = Field(
        "qlora", description="lora: adapters on a bf16/fp32 base; qlora: adapters on a 4-bit NF4 base (CUDA only); "
        "full: every weight is trained"
    )
    lora_r: int = Field(64, ge=1, description="LoRA rank")
    lora_alpha: int = Field(128, ge=1, description="LoRA scaling numerator (scale = alpha / r)")
    lora_dropout: float = Field(0.08, ge=0.0, lt=1.0, description="dropout on the LoRA input")
    target_modules: list[str] = Field(
        ["all-linear"], description="module names that get adapters, or ['all-linear'] for every linear layer"
    )
    quant_type: Literal["nf4", "fp4"] = Field("nf4", description="qlora: 4-bit quantisation type")
    double_quant: bool = Field(True, description="qlora: also quantise the quantisation constants")

    learning_rate: float = Field(1e-5, gt=0.0, description="peak learning rate")
    lr_scheduler: str = Field("cosine", description="transformers scheduler name: cosine, linear, constant, ...")
    warmup_ratio: float = Field(0.1, ge=0.0, lt=1.0, description="fraction of the steps spent warming up")
    optim: str = Field("adamw_torch", description="transformers optimizer name (adamw_torch, paged_adamw_8bit, ...)")
    weight_decay: float = Field(0.0, ge=0.0, description="AdamW weight decay")
    max_grad_norm: float = Field(1.0, gt=0.0, description="gradient clipping norm")
    batch_size: int = Field(4, ge=1, description="sequences per device per step")
    grad_accum: int = Field(4, ge=1, description="gradient accumulation steps (effective batch = batch_size x "
                            "grad_accum x devices)")
    epochs: float = Field(2.0, gt=0.0, description="passes over the training data")
    max_steps: int | None = Field(None, ge=1, description="stop after this many optimizer steps (overrides epochs)")
    max_seq_length: int = Field(1024, ge=16, description="longer chats are truncated; the block size when packing")
    packing: bool = Field(False, description="pack several chats into one max_seq_length sequence (TRL bfd)")
    loss_on: Literal["assistant", "all"] = Field(
        "assistant", description="assistant: loss on the assistant's tokens only; all: on the whole chat"
    )
    precision: Literal["auto", "bf16", "fp16", "fp32"] = Field(
        "auto", description="auto: bf16 on a GPU that supports it, else fp16 on GPU, fp32 on CPU"
    )
    device: Literal["auto", "cpu", "cuda"] = Field("auto", description="auto: CUDA when available")
    threads: int | None = Field(None, ge=1, description="CPU training: torch threads (default: all cores; 1 is "
                                "faster on a machine shared with other jobs)")
    num_processes: int = Field(
        1, ge=1, description="data-parallel training processes, one per GPU (on CPU: gloo processes); above 1 the "
        "run launches itself with accelerate launch (torchrun); effective batch = batch_size x grad_accum x this")
    gradient_checkpointing: bool = Field(True, description="recompute activations to save memory (slower)")
    attn_implementation: str | None = Field(None, description="e.g. sdpa, flash_attention_2; null keeps the model's")
    seed: int | None = Field(None, description="training seed; null = the recipe seed (0 outside a recipe)")

    logging_steps: int = Field(10, ge=1, description="write loss and learning rate every N steps")
    save_steps: int = Field(100, ge=1, description="checkpoint every N steps")
    save_total_limit: int | None = Field(2, ge=1, description="keep only the newest N checkpoints")
    evaluate: bool = Field(True, description="compute validation loss at every checkpoint when the data has a "
                           "validation split")
    resume: bool = Field(True, description="continue from the newest checkpoint in output_dir when there is one; "
                         "false removes old checkpoints and starts over")
    resume_from: str | None = Field(None, description="a specific checkpoint directory to continue from")
    merge: bool = Field(False, description="also save the base model with the adapter merged in (merged/)")
    report_to: list[str] = Field([], description="trackers for TRL to log to: wandb, mlflow, tensorboard, ...")
    run_name: str | None = Field(None, description="run name shown in the trackers")
    trainer_args: dict[str, Any] = Field(
        {}, description="extra SFTConfig keyword arguments passed through to TRL (validated by TRL)"
    )

    def fingerprinted(self) -> dict[str, Any]:
        """The fields that decide what is learnt: a checkpoint only resumes under the same values."""
        return {k: v for k, v in self.model_dump(mode="json").items()
                if k not in NOT_FINGERPRINTED and not (k in LATER_FIELDS and v == LATER_FIELDS[k])}
