"""Supervised fine-tuning with TRL's SFTTrainer: LoRA, QLoRA or full, loss on the assistant's tokens, resumable.

Layout of ``output_dir``::

    config.json          effective config + what was resolved (device, precision, masking, data, fingerprint)
    checkpoints/         Trainer checkpoints (checkpoint-<step>/); the newest is resumed after an interruption
    log_history.jsonl    one row per log: step, epoch, loss, learning_rate, grad_norm, eval_loss, ...
    adapter/             lora/qlora: the PEFT adapter + tokenizer + mathforge.json (which base it belongs to)
    merged/              merge: true — the base with the adapter folded in, loadable by from_pretrained
    model/               method full: the fine-tuned model + tokenizer
    metrics.json         final metrics; its presence (same fingerprint) makes a rerun a no-op
"""

from __future__ import annotations

import dataclasses
import gc
import hashlib
import json
import shutil
import time
from pathlib import Path
from typing import Any

from mathforge.errors import ConfigError, require
from mathforge.masking import mask_config
from mathforge.train.config import TrainConfig
from mathforge.train.data import fingerprint, load_splits, to_prompt_completion
from mathforge.train.launch import RowsSeen, launch, launched
from mathforge.train.logs import LOG_FILE, LogHistoryWriter, write_json
from mathforge.train.model import cpu_threads, lora_config, load_student, resolve_device, resolve_precision

BASE_FILE = "mathforge.json"  # inside adapter/: the base model spec, for loaders that only get the adapter dir


def choose_masking(tokenizer: Any, loss_on: str) -> str:
    """How TRL restricts the loss to the assistant: ``assistant_only_loss`` when the chat template has (or TRL can
    patch in) ``{% generation %}`` markers, else ``completion_only_loss`` on a prompt/completion split (any template,
    the last assistant turn only); ``none`` trains on every token."""
    if loss_on == "all":
        return "none"
    from trl.chat_template_utils import get_training_chat_template

    try:
        get_training_chat_template(tokenizer)
    except ValueError:  # TRL has no training variant of this template (SmolLM2's plain ChatML, for one)
        return "completion_only_loss"
    return "assistant_only_loss"


def run_fingerprint(cfg: TrainConfig, data_fp: str) -> str:
    blob = json.dumps({"config": cfg.fingerprinted(), "data": data_fp}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def train(cfg: TrainConfig, *, seed: int = 0, callbacks: list[Any] | None = None) -> dict[str, Any]:
    """Fine-tune ``cfg.model`` on ``cfg.data`` into ``cfg.output_dir``; returns the final metrics."""
    if not cfg.data or not cfg.output_dir:
        raise ConfigError("train: both data and output_dir are needed")
    if Path(cfg.output_dir).is_file():  # refused before any loading, so nothing is half-done
        raise ConfigError(f"train: output_dir {cfg.output_dir} is a file; give a directory (created when missing)")
    device = resolve_device(cfg)  # refuses QLoRA without CUDA before any loading
    if cfg.num_processes > 1 and not launched():
        if callbacks:
            raise ConfigError("train: callbacks cannot be passed on to num_processes > 1 training processes")
        _, fp = _data(cfg)
        done = _finished(Path(cfg.output_dir), fp) if cfg.resume else None
        return {**done, "cached": True} if done is not None else launch(cfg, device, seed)
    with cpu_threads(cfg.threads if device == "cpu" else None):
        return _train(cfg, device, seed, callbacks or [])


def _data(cfg: TrainConfig) -> tuple[dict[str, Any], str]:
    """The training splits and the run's fingerprint (config + data)."""
    splits = load_splits(cfg.data, cfg.limit)
    return splits, run_fingerprint(cfg, fingerprint(splits))


def _train(cfg: TrainConfig, device: str, seed: int, callbacks: list[Any]) -> dict[str, Any]:
    """The body of ``train``: data, resume point, model, trainer, the final artefacts."""
    precision = resolve_precision(cfg, device)
    out = Path(cfg.output_dir)
    splits, fp = _data(cfg)
    done = _finished(out, fp) if cfg.resume else None
    if done is not None:
        return {**done, "cached": True}

    from accelerate import PartialState

    state = PartialState(cpu=device == "cpu")  # on CPU under a launcher: gloo processes, not one lone process
    out.mkdir(parents=True, exist_ok=True)
    resume = _resume_point(cfg, out, fp, state.is_main_process)
    state.wait_for_everyone()
    tok, model, source = load_student(cfg, device, precision)
    masking = choose_masking(tok, cfg.loss_on)
    resolved = {"device": device, "precision": precision, "masking": masking, "fingerprint": fp,
                "train_rows": len(splits["train"]), "validation_rows": len(splits.get("validation", [])),
                "model_label": source.label, "resumed_from": str(resume) if resume else None}
    if state.is_main_process:
        write_json(out / "config.json", {"config": mask_config(cfg.model_dump(mode="json")), "resolved": resolved})

    trainer = _make_trainer(cfg, tok, model, splits, masking, out, device, precision, seed, callbacks)
    seen = RowsSeen(trainer.data_collator, state.process_index)
    trainer.data_collator = seen
    t0 = time.perf_counter()
    result = trainer.train(resume_from_checkpoint=str(resume) if resume else None)
    seconds = time.perf_counter() - t0
    metrics = _final_metrics(trainer, result, seconds, device) | resolved
    metrics["processes"] = state.num_processes
    metrics["ranks"] = seen.gather(state.num_processes)
    final_dir = out / ("model" if cfg.method == "full" else "adapter")
    trainer.save_model(str(final_dir))
    if state.is_main_process:
        if cfg.method != "full":
            write_json(final_dir / BASE_FILE, {"base_model": cfg.model, "gguf_file": source.gguf_file,
                                               "base_label": source.label, "method": cfg.method})
    del trainer, model
    gc.collect()
    if cfg.merge and cfg.method != "full" and state.is_main_process:
        merge_adapter(cfg, final_dir, out / "merged", precision)
        metrics["merged_dir"] = str(out / "merged")
    metrics["output_dir"] = str(final_dir)
    if state.is_main_process:
        write_json(out / "metrics.json", metrics)
    return metrics


def _finished(out: Path, fp: str) -> dict[str, Any] | None:
    """The metrics of an earlier, complete run with the same fingerprint (so a rerun of a recipe skips training)."""
    path = out / "metrics.json"
    if not path.exists():
        return None
    metrics = json.loads(path.read_text(encoding="utf-8"))
    if metrics.get("fingerprint") != fp or not Path(metrics.get("output_dir", "")).exists():
        return None
    return metrics


def _resume_point(cfg: TrainConfig, out: Path, fp: str, main: bool) -> Path | None:
    """The checkpoint to continue from: resume_from, else the newest one made with the same config and data."""
    from transformers.trainer_utils import get_last_checkpoint

    if cfg.resume_from:
        if not Path(cfg.resume_from).is_dir():
            raise ConfigError(f"train: resume_from {cfg.resume_from} is not a checkpoint directory")
        return Path(cfg.resume_from)
    ckpts = out / "checkpoints"
    if not ckpts.is_dir():
        return None
    if not cfg.resume:
        if main:  # start over: the old checkpoints would otherwise be mixed with the new ones
            shutil.rmtree(ckpts)
            (out / "metrics.json").unlink(missing_ok=True)
        return None
    last = get_last_checkpoint(str(ckpts))
    if last is None:
        return None
    before = json.loads((out / "config.json").read_text(encoding="utf-8")) if (out / "config.json").exists() else {}
    if before.get("resolved", {}).get("fingerprint") != fp:
        old = before.get("config", {})
        changed = sorted(k for k, v in cfg.fingerprinted().items() if old.get(k) != v) or ["training data"]
        raise ConfigError(
            f"train: {last} was made with different settings ({', '.join(changed)}); "
            "set resume: false to start over (its checkpoints are removed), or restore the old settings"
        )
    return Path(last)


def _make_trainer(cfg, tok, model, splits, masking, out, device, precision, seed, callbacks):
    """The SFTTrainer for this config (datasets shaped for the chosen masking)."""
    datasets = require("datasets", "train")
    trl = require("trl", "train")
    # transformers 5 renamed gradient_checkpointing (now a deprecated alias) to activation_checkpointing
    fields = {f.name for f in dataclasses.fields(trl.SFTConfig)}
    ckpt_field = "activation_checkpointing" if "activation_checkpointing" in fields else "gradient_checkpointing"
    if not interactive():  # TRL's dataset preparation ("Tokenizing train dataset: 0%...") is datasets' bars
        datasets.disable_progress_bars()

    def shape(rows: list[dict[str, Any]]):
        rows = [to_prompt_completion(r) for r in rows] if masking == "completion_only_loss" else rows
        return datasets.Dataset.from_list(rows)

    eval_ds = shape(splits["validation"]) if cfg.evaluate and splits.get("validation") else None
    kwargs: dict[str, Any] = dict(
        output_dir=str(out / "checkpoints"),
        per_device_train_batch_size=cfg.batch_size,
        per_device_eval_batch_size=cfg.batch_size,
        gradient_accumulation_steps=cfg.grad_accum,
        num_train_epochs=cfg.epochs,
        max_steps=cfg.max_steps or -1,
        learning_rate=cfg.learning_rate,
        lr_scheduler_type=cfg.lr_scheduler,
        warmup_steps=cfg.warmup_ratio,  # a float in [0, 1) is a ratio of the total steps
        optim=cfg.optim,
        weight_decay=cfg.weight_decay,
        max_grad_norm=cfg.max_grad_norm,
        logging_steps=cfg.logging_steps,
        logging_first_step=True,
        save_strategy="steps",
        save_steps=cfg.save_steps,
        save_total_limit=cfg.save_total_limit,
        eval_strategy="steps" if eval_ds is not None else "no",
        eval_steps=cfg.save_steps,
        bf16=precision == "bf16",
        fp16=precision == "fp16",
        use_cpu=device == "cpu",
        **{ckpt_field: cfg.gradient_checkpointing},
        max_length=cfg.max_seq_length,
        packing=cfg.packing,
        assistant_only_loss=masking == "assistant_only_loss",
        completion_only_loss=masking == "completion_only_loss",
        report_to=cfg.report_to or "none",
        run_name=cfg.run_name,
        seed=cfg.seed if cfg.seed is not None else seed,
        include_num_input_tokens_seen="non_padding",
        disable_tqdm=not interactive(),
    )
    kwargs.update(cfg.trainer_args)
    try:
        args = trl.SFTConfig(**kwargs)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"train: invalid trainer settings: {exc}") from None
    return trl.SFTTrainer(
        model=model,
        args=args,
        train_dataset=shape(splits["train"]),
        eval_dataset=eval_ds,
        processing_class=tok,
        peft_config=lora_config(cfg),
        callbacks=[LogHistoryWriter(out / LOG_FILE), *callbacks],
    )


def interactive() -> bool:
    """True when stderr is a terminal: the trainer's tqdm bar there; in a log file or CI output its plain per-log
    lines instead (a bar redrawn into a file is one unreadable line per refresh)."""
    import sys

    return sys.stderr.isatty()


def _final_metrics(trainer: Any, result: Any, seconds: float, device: str) -> dict[str, Any]:
    """Loss, steps, tokens/s and peak memory of this session (the report reads these from metrics.json)."""
    import resource

    import torch

    st = trainer.state
    losses = [r["loss"] for r in st.log_history if "loss" in r]
    m = result.metrics
    # tokens_per_second: of this session (a resumed run counts only what it trained itself)
    metrics = {
        "global_step": st.global_step,
        "epoch": st.epoch,
        "train_loss": m.get("train_loss"),
        "first_loss": losses[0] if losses else None,
        "last_loss": losses[-1] if losses else None,
        "eval_loss": next((r["eval_loss"] for r in reversed(st.log_history) if "eval_loss" in r), None),
        "tokens_seen": int(st.num_input_tokens_seen),
        "train_seconds": round(seconds, 2),
        "tokens_per_second": next(
            (r["train_tokens_per_second"] for r in reversed(st.log_history) if "train_tokens_per_second" in r), None
        ),
        "peak_rss_gb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 3),
    }
    if device == "cuda":
        metrics["peak_gpu_gb"] = round(torch.cuda.max_memory_allocated() / 2**30, 3)
        metrics["gpu"] = torch.cuda.get_device_name()
    return metrics


def merge_adapter(cfg: TrainConfig, adapter_dir: Path, merged_dir: Path, precision: str) -> Path:
    """Fold the adapter into a freshly loaded (not quantized) base and save a plain transformers model."""
    peft = require("peft", "train")
    tok, base, _ = load_student(cfg, "cpu", "fp32" if precision == "fp16" else precision, quantize=False)
    merged = peft.PeftModel.from_pretrained(base, str(adapter_dir)).merge_and_unload()
    merged.config.use_cache = True
    merged.save_pretrained(str(merged_dir))
    tok.save_pretrained(str(merged_dir))
    return merged_dir
