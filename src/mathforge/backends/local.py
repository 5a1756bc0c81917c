"""In-process transformers backend (CPU or GPU; loads GGUF too), batched with left padding."""

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
    threads: int | None = Field(None, ge=1, description="CPU threads for torch (default: all cores)")
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
        return label, "local:transformers"

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
            torch = require("torch", "local")
            torch.set_num_threads(self.config.threads or os.cpu_count() or 1)
            cache_key = (self.source, self.device, self.config.dtype, self.identity()[0])
            with _CACHE_LOCK:
                if cache_key not in _LOADED:
                    tok, model = load_tokenizer_and_model(self.source, device=self.device, dtype=self.config.dtype)
                    if self.config.adapter:  # a fresh base model: merging must not touch the cached one
                        model = apply_adapter(model, self.config.adapter)
                    _LOADED[cache_key] = (tok, model)
                self._tok, self._model = _LOADED[cache_key]
            self._tok.padding_side = "left"
        return self._tok, self._model

    def generate(self, requests: Sequence[GenRequest], sink: ResultSink) -> None:
        tok, _ = self.load()
        prompts = {r.key: render(tok, r.messages) for r in requests}
        lengths = {k: len(tok(p, add_special_tokens=False).input_ids) for k, p in prompts.items()}
        # Group requests with identical sampling settings, longest prompts first (least padding, early OOM).
        groups: dict[tuple, list[GenRequest]] = {}
        for r in requests:
            groups.setdefault((r.params.temperature, r.params.top_p, r.params.max_tokens, r.params.stop), []).append(r)
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
