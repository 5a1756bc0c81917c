"""Loading the student for training: device and precision, the 4-bit QLoRA base, and the LoRA config."""

from __future__ import annotations

import importlib.util
import os
from contextlib import contextmanager
from typing import Any, Iterator

from mathforge.backends.models import ModelSource, load_tokenizer_and_model, resolve_model
from mathforge.errors import BackendError, ConfigError, require
from mathforge.train.config import TrainConfig

DTYPES = {"bf16": "bfloat16", "fp16": "float32", "fp32": "float32"}  # fp16 training keeps fp32 master weights


def resolve_device(cfg: TrainConfig) -> str:
    """``cuda`` or ``cpu``; QLoRA on a machine without CUDA is refused here, before anything loads."""
    torch = require("torch", "train")
    cuda = torch.cuda.is_available()
    if cfg.device == "cuda" and not cuda:
        raise ConfigError("train: device 'cuda' was asked for but torch sees no CUDA GPU")
    device = "cuda" if cfg.device == "auto" and cuda else ("cpu" if cfg.device == "auto" else cfg.device)
    if cfg.method == "qlora":
        if device != "cuda":
            raise ConfigError(
                "train: method 'qlora' (4-bit NF4 through bitsandbytes) needs a CUDA GPU and this run has none; "
                "use method: lora (or full) on CPU"
            )
        if importlib.util.find_spec("bitsandbytes") is None:
            raise BackendError("train: method 'qlora' needs bitsandbytes: pip install bitsandbytes")
    return device


def resolve_precision(cfg: TrainConfig, device: str) -> str:
    """bf16 / fp16 / fp32: ``auto`` is bf16 on GPUs that support it, fp16 on older GPUs, fp32 on CPU."""
    if cfg.precision != "auto":
        if cfg.precision == "fp16" and device == "cpu":
            raise ConfigError("train: precision 'fp16' needs a GPU; use fp32 or bf16 on CPU")
        return cfg.precision
    if device == "cpu":
        return "fp32"
    import torch

    return "bf16" if torch.cuda.is_bf16_supported() else "fp16"


@contextmanager
def cpu_threads(n: int | None) -> Iterator[None]:
    """Run with ``n`` torch threads (None: unchanged), restoring the previous count afterwards."""
    import torch

    before = torch.get_num_threads()
    if n:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def load_student(cfg: TrainConfig, device: str, precision: str, *, quantize: bool | None = None) -> tuple[Any, Any, ModelSource]:
    """Tokenizer and model ready for the trainer (left on CPU unless 4-bit, which must load onto its GPU)."""
    source = resolve_model(cfg.model, cfg.gguf_file)
    quantize = cfg.method == "qlora" if quantize is None else quantize
    if quantize:
        tok, model = _load_4bit(cfg, source)
    else:
        tok, model = load_tokenizer_and_model(source, device="cpu", dtype=DTYPES[precision], for_training=True)
        _drop_gguf_quantizer(model)
    if cfg.attn_implementation:
        model.set_attn_implementation(cfg.attn_implementation)
    model.config.use_cache = False  # the KV cache is useless in training and conflicts with checkpointing
    return tok, model, source


def _drop_gguf_quantizer(model: Any) -> None:
    """A GGUF model is loaded de-quantised, but transformers still marks it quantized and refuses to train it."""
    quantizer = getattr(model, "hf_quantizer", None)
    if quantizer is None:
        return
    packed = any(type(m).__name__.startswith("Gguf") for m in model.modules())
    if quantizer.quantization_config.quant_method != "gguf" or packed:
        raise ConfigError(f"train: the model is quantized ({quantizer.quantization_config.quant_method}); "
                          "load a full-precision checkpoint, or use method: qlora on a GPU")
    quantizer.remove_quantization_config(model)


def _load_4bit(cfg: TrainConfig, source: ModelSource) -> tuple[Any, Any]:
    """The NF4 base of QLoRA, placed on this process's GPU (one per rank under torchrun/accelerate)."""
    if source.gguf_file:
        raise ConfigError("train: method 'qlora' needs a safetensors checkpoint, not a GGUF file; use method: lora")
    torch = require("torch", "train")
    transformers = require("transformers", "train")
    bnb = transformers.BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type=cfg.quant_type,
        bnb_4bit_use_double_quant=cfg.double_quant,
        bnb_4bit_compute_dtype=torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16,
        bnb_4bit_quant_storage=torch.bfloat16,
    )
    rank = int(os.environ.get("LOCAL_RANK", "0"))
    try:
        tok = transformers.AutoTokenizer.from_pretrained(source.name_or_path)
        model = transformers.AutoModelForCausalLM.from_pretrained(
            source.name_or_path, quantization_config=bnb, dtype=bnb.bnb_4bit_compute_dtype, device_map={"": rank}
        )
    except OSError as exc:
        raise BackendError(f"cannot load model '{source.name_or_path}': {exc}") from None
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return tok, model


def lora_config(cfg: TrainConfig) -> Any:
    """The PEFT LoraConfig for lora and qlora (None for full fine-tuning)."""
    if cfg.method == "full":
        return None
    peft = require("peft", "train")
    targets: Any = "all-linear" if cfg.target_modules == ["all-linear"] else list(cfg.target_modules)
    return peft.LoraConfig(
        r=cfg.lora_r,
        lora_alpha=cfg.lora_alpha,
        lora_dropout=cfg.lora_dropout,
        target_modules=targets,
        bias="none",
        task_type="CAUSAL_LM",
    )
