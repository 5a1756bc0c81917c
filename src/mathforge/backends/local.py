"""In-process transformers backend (CPU or GPU; loads GGUF too): continuous batching, int8 linear layers on CPU."""

from __future__ import annotations

import hashlib
import os
import threading
import time
from pathlib import Path
from typing import Literal, Sequence

from pydantic import Field

from mathforge.backends.base import Backend, BackendConfig, Completion, GenRequest, ResultSink
from mathforge.backends.chat import render
from mathforge.backends.models import load_tokenizer_and_model, resolve_model
from mathforge.backends.refill import RefillGenerator
from mathforge.errors import BackendError, require


# Loaded models, shared by every backend of the process that names the same weights (eval of base and student,
# several stages of one recipe, the test session): loading SmolLM2 from GGUF costs ~10 s, generation far less.
_LOADED: dict[tuple, tuple] = {}
_CACHE_LOCK = threading.Lock()


class LocalConfig(BackendConfig):
    backend: Literal["local"] = "local"
    model: str = Field("smollm2", description="'smollm2' (embedded), a model directory, a .gguf file or a hub id")
    gguf_file: str | None = Field(None, description="GGUF file inside the model directory or hub repo")
    device: str = Field("auto", description="'auto' (cuda when available), 'cpu', 'cuda', 'cuda:1', ...")
    dtype: str = Field("auto", description="'auto' (float32 on CPU, bfloat16 on CUDA) or a torch dtype name")
    batch_size: int = Field(32, ge=1, description="prompts generated together in one forward pass")
    threads: int | None = Field(
        None, ge=1, description="CPU threads for torch (default: the cores other processes leave free, re-read "
        "every 32 decode steps, so a shared machine is not oversubscribed)")
    quantize: Literal["auto", "fp16", "int8", "none"] = Field(
        "auto", description="CPU linear layers: 'fp16' weights (fp32 maths, half the memory traffic; greedy text "
        "nearly always identical), 'int8' (dynamic, fastest, changes greedy text: see bench/results/local_backend.md),"
        " 'none'; 'auto' = fp16 on CPU for float32 weights. Part of the model's ledger identity")
    batching: Literal["refill", "static"] = Field(
        "refill", description="'refill': a finished row's slot takes the next prompt (continuous batching); "
        "'static': transformers generate, each batch runs until its longest sample stops")
    adapter: str | None = Field(None, description="PEFT (LoRA) adapter directory applied on top of the model")


class LocalBackend(Backend):
    """transformers ``generate`` over batches of prompts of similar length."""

    Config = LocalConfig

    def __init__(self, name: str, config: LocalConfig):
        super().__init__(name, config)
        self.source = resolve_model(config.model, config.gguf_file)
        self.adapter = adapter_label(config.adapter) if config.adapter else None
        self._tok = self._model = None

    def identity(self) -> tuple[str, str]:
        label = self.source.label + (f"+adapter:{self.adapter}" if self.adapter else "")
        return label + (f"+{self.quantized}-linear" if self.quantized else ""), "local:transformers"

    @property
    def quantized(self) -> str | None:
        """'fp16' or 'int8' when linear layers are quantised (another model's outputs: it enters the ledger key)."""
        q = self.config.quantize
        if q == "none" or not self.device.startswith("cpu"):
            return None
        if q == "auto":
            return "fp16" if self.config.dtype in ("auto", "float32") else None
        return q

    @property
    def device(self) -> str:
        if self.config.device != "auto":
            return self.config.device
        torch = require("torch", "local")
        return "cuda" if torch.cuda.is_available() else "cpu"

    def prepare(self) -> None:
        self.load()

    def load(self):
        if self._model is None:
            self._set_threads()
            cache_key = (self.source, self.device, self.config.dtype, self.identity()[0])
            with _CACHE_LOCK:
                if cache_key not in _LOADED:
                    tok, model = load_tokenizer_and_model(self.source, device=self.device, dtype=self.config.dtype)
                    if self.config.adapter:  # a fresh base model: merging must not touch the cached one
                        model = apply_adapter(model, self.config.adapter)
                    if self.quantized:
                        model = quantize_linear(model, self.quantized)
                    _LOADED[cache_key] = (tok, model)
                self._tok, self._model = _LOADED[cache_key]
            self._tok.padding_side = "left"
        return self._tok, self._model

    def _set_threads(self) -> None:
        torch = require("torch", "local")
        want = self.config.threads or free_cores()
        if want != torch.get_num_threads():
            torch.set_num_threads(want)

    def generate(self, requests: Sequence[GenRequest], sink: ResultSink) -> None:
        tok, _ = self.load()
        prompts = {r.key: render(tok, r.messages) for r in requests}
        lengths = {k: len(tok(p, add_special_tokens=False).input_ids) for k, p in prompts.items()}
        # Group requests with identical sampling settings, longest prompts first (least padding, early OOM).
        groups: dict[tuple, list[GenRequest]] = {}
        for r in requests:
            groups.setdefault((r.params.temperature, r.params.top_p, r.params.max_tokens, r.params.stop), []).append(r)
        if self.config.batching == "refill" and refill_supported(self._model):
            ids = {k: tok(p, add_special_tokens=False).input_ids for k, p in prompts.items()}
            for group in groups.values():
                RefillGenerator(self._model, tok, _eos_ids(tok, self._model), self.config.batch_size,
                                retune=None if self.config.threads else self._set_threads).run(group, ids, sink)
            return
        for group in groups.values():
            group.sort(key=lambda r: -lengths[r.key])
            bs = self.config.batch_size
            for i in range(0, len(group), bs):
                batch = group[i : i + bs]
                sink.ok_many(list(zip(batch, self._generate_batch(batch, [prompts[r.key] for r in batch]))))

    def _generate_batch(self, batch: list[GenRequest], prompts: list[str]) -> list[Completion]:
        torch = require("torch", "local")
        tok, model = self._tok, self._model
        p = batch[0].params
        enc = tok(prompts, return_tensors="pt", padding=True, add_special_tokens=False).to(model.device)
        kwargs = dict(max_new_tokens=p.max_tokens, pad_token_id=tok.pad_token_id)
        if p.temperature and p.temperature > 0:
            kwargs.update(do_sample=True, temperature=p.temperature, top_p=p.top_p)
        else:
            kwargs.update(do_sample=False, temperature=None, top_p=None, top_k=None)
        if p.stop:
            kwargs.update(stop_strings=list(p.stop), tokenizer=tok)
        # Seed from the batch's keys: the same batch of the same requests samples the same text.
        digest = hashlib.sha256("".join(r.key for r in batch).encode()).digest()
        torch.manual_seed((p.seed or 0) ^ int.from_bytes(digest[:4], "little"))
        t0 = time.perf_counter()
        with torch.inference_mode():
            out = model.generate(**enc, **kwargs)
        latency = time.perf_counter() - t0
        gen = out[:, enc.input_ids.shape[1] :]
        eos_ids = _eos_ids(tok, model)
        results = []
        for row, mask in zip(gen.tolist(), enc.attention_mask.tolist()):
            n, finish = len(row), "length"
            for j, t in enumerate(row):
                if t in eos_ids:
                    n, finish = j + 1, "stop"
                    break
            text = tok.decode(row[:n], skip_special_tokens=True)
            if p.stop and finish == "length":
                for s in p.stop:
                    if s in text:
                        text, finish = text[: text.index(s)], "stop"
                        break
            results.append(Completion(text, finish, int(sum(mask)), n, latency))
        return results

    def close(self) -> None:
        self._tok = self._model = None


def free_cores() -> int:
    """Cores that other processes leave free right now, at least 1.

    Two threads on a machine whose two cores are busy spend most of their time waiting for each other: measured 9x
    the CPU time per decode step of one thread (bench/results/local_backend.md). "Right now" is the kernel's count of
    runnable threads (``procs_running``, median of a few samples over ~40 ms) less this calling thread: the 1-minute
    load average lags by minutes, so just after ``pip install`` or a test run it took one core from an idle machine.
    Without ``/proc/stat`` the load average stands in."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    others = _runnable_others()
    if others is None:
        try:
            others = os.getloadavg()[0]
        except OSError:  # no load average on this platform
            return cores
    return max(1, min(cores, round(cores - others)))


def _runnable_others(samples: int = 5) -> float | None:
    """Runnable threads other than the caller (median over ``samples`` reads 10 ms apart), or None off Linux."""
    counts = []
    for i in range(samples):
        try:
            with open("/proc/stat", "rb") as f:
                line = next(x for x in f if x.startswith(b"procs_running "))
        except (OSError, StopIteration):
            return None
        counts.append(int(line.split()[1]) - 1)
        if i + 1 < samples:
            time.sleep(0.01)
    return max(0.0, float(sorted(counts)[len(counts) // 2]))


def quantize_linear(model, kind: str):
    """Linear layers with fp16 weights (fbgemm, fp32 maths) or dynamic int8 (per-channel weights) for CPU decoding.

    Decoding a small model is bound by reading weights: fp16 halves that traffic (1.4x, greedy text kept for 7 of 8
    prompts over 48 tokens); int8 quantises activations too (2.8x, but greedy text of SmolLM2-135M diverges within a
    few tokens), so it is opt-in."""
    import warnings

    torch = require("torch", "local")
    from torch.ao.quantization import float16_dynamic_qconfig, per_channel_dynamic_qconfig, quantize_dynamic

    qconfig, dtype = (float16_dynamic_qconfig, torch.float16) if kind == "fp16" else (per_channel_dynamic_qconfig,
                                                                                       torch.qint8)
    with warnings.catch_warnings():  # torch points eager-mode users at torchao; this API still ships with torch
        warnings.simplefilter("ignore")
        return quantize_dynamic(model, {torch.nn.Linear: qconfig}, dtype=dtype, inplace=True)


def refill_supported(model) -> bool:
    """Continuous batching edits the KV cache by hand: only plain full-attention decoder caches qualify."""
    from transformers import DynamicCache
    from transformers.cache_utils import DynamicLayer

    try:
        cache = DynamicCache(config=model.config)
    except Exception:
        return False
    return bool(cache.layers) and all(type(layer) is DynamicLayer for layer in cache.layers)


def _eos_ids(tok, model) -> set[int]:
    ids = set()
    cfg_eos = getattr(model.generation_config, "eos_token_id", None)
    if isinstance(cfg_eos, int):
        ids.add(cfg_eos)
    elif cfg_eos:
        ids.update(cfg_eos)
    if tok.eos_token_id is not None:
        ids.add(tok.eos_token_id)
    return ids


def adapter_label(path: str) -> str:
    """``dirname@sha12`` of an adapter's weights: retraining into the same folder changes the ledger key."""
    p = Path(path).expanduser()
    weights = sorted(p.glob("adapter_model.*")) if p.is_dir() else []
    if not weights:
        raise BackendError(f"adapter {path}: no adapter_model.safetensors/.bin (a PEFT adapter directory is expected)")
    digest = hashlib.sha256()
    for w in weights:
        with open(w, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                digest.update(block)
    return f"{p.resolve().name}@{digest.hexdigest()[:12]}"


def apply_adapter(model, path: str):
    """Load a PEFT adapter onto ``model`` and merge it, so generation runs at the base model's speed."""
    peft = require("peft", "train")
    return peft.PeftModel.from_pretrained(model, str(Path(path).expanduser())).merge_and_unload().eval()
