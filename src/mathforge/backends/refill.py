"""Continuous batching for the local backend: a finished row leaves the batch and a waiting prompt takes its place.

``model.generate`` runs a batch until its longest sample stops, so a batch of 50 where most samples stop at 150
tokens and one runs to 256 pays for 50 x 256. Here every decode step feeds only rows still generating; when enough
rows have finished, the waiting prompts are prefilled together and merged into the KV cache (left-padded to a common
length, positions kept per row). transformers' own continuous-batching API (``generate_batch``) measured 2x slower
than static ``generate`` on CPU (bench/results/local_backend.md), so this loop stays on the plain model forward.

The KV cache grows in place (``growing_cache``): each layer keeps its keys and values in a buffer with room for
more tokens, so a decode step writes one column instead of copying the whole cache with ``torch.cat`` as
transformers' ``DynamicLayer`` does; that copy was 48% of a decode step's time at batch 50 and 274 cached tokens
(bench/results/local_backend.md).

Sampling is per request: each row draws from its own ``torch.Generator`` seeded from the request key, so a sample's
text does not depend on which other requests shared its batch (up to float rounding of batched matmuls).
"""

from __future__ import annotations

import hashlib
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Callable, Sequence

from mathforge.backends.base import Completion, GenRequest, ResultSink


@dataclass
class _Row:
    request: GenRequest
    prompt_len: int
    generator: object | None  # torch.Generator, or None when greedy
    started: float
    tokens: list[int] = field(default_factory=list)


def request_seed(request: GenRequest) -> int:
    """A 63-bit seed from the request key (which already holds the sampling seed and the sample index)."""
    digest = hashlib.sha256(request.key.encode()).digest()
    return (int.from_bytes(digest[:8], "little") ^ (request.params.seed or 0)) & (2**63 - 1)


GROW = 128
"""Tokens of room a cache buffer gets beyond what it holds when it is (re)allocated: one copy per 128 decode steps."""

_layer_class = None


def growing_layer():
    """The cache layer class (made on first use so that importing this module does not import transformers)."""
    global _layer_class
    if _layer_class is None:
        from transformers.cache_utils import DynamicLayer

        class GrowingLayer(DynamicLayer):
            """A ``DynamicLayer`` whose keys/values are views of buffers with room to grow.

            Appending writes into the room; when the room is used up, or someone replaced ``keys``/``values`` (row
            selection, padding cut, crop), the current tensors are copied once into new buffers with ``GROW`` tokens
            of room. Callers see the same tensors as with ``DynamicLayer``."""

            _view = None

            def update(self, key_states, value_states, *args, **kwargs):
                if not self.is_initialized:
                    self.lazy_initialization(key_states, value_states)
                keys, values = self.keys, self.values
                n = keys.shape[-2] if keys.dim() == 4 else 0
                end = n + key_states.shape[-2]
                if keys is not self._view or end > self._kbuf.shape[-2]:
                    b, h, _, d = key_states.shape
                    self._kbuf = key_states.new_empty(b, h, end + GROW, d)
                    self._vbuf = value_states.new_empty(b, h, end + GROW, value_states.shape[-1])
                    if n:
                        self._kbuf[:, :, :n] = keys
                        self._vbuf[:, :, :n] = values
                self._kbuf[:, :, n:end] = key_states
                self._vbuf[:, :, n:end] = value_states
                self.keys, self.values = self._kbuf[:, :, :end], self._vbuf[:, :, :end]
                self._view = self.keys
                return self.keys, self.values

        _layer_class = GrowingLayer
    return _layer_class


def growing_cache(config, data=None):
    """A ``DynamicCache`` of ``GrowingLayer``s for ``config``'s decoder, optionally filled with (keys, values) pairs."""
    from transformers import DynamicCache

    cache = DynamicCache(config=config)
    layer = growing_layer()
    cache.layers = [layer() for _ in cache.layers]
    for one, (keys, values) in zip(cache.layers, data or ()):
        one.update(keys, values)
    return cache


class RefillGenerator:
    """Generate one sampling-settings group of requests with at most ``batch_size`` rows in flight."""

    def __init__(self, model, tok, eos_ids: set[int], batch_size: int, *, on_refill: Callable[[], None] | None = None):
        import torch
        from transformers.generation.logits_process import (
            LogitsProcessorList,
            TemperatureLogitsWarper,
            TopPLogitsWarper,
        )

        self.torch, self.model, self.tok, self.eos = torch, model, tok, eos_ids
        self.batch_size = batch_size
        # refill when an eighth of the batch is free: one prefill and one cache copy per refill, few idle slots
        self.refill_at = max(1, batch_size // 8)
        self.on_refill = on_refill
        self._warpers = (LogitsProcessorList, TemperatureLogitsWarper, TopPLogitsWarper)
        self.steps = self.row_steps = 0  # decode forwards, and rows fed to them (for the padding account)
        import inspect

        # transformers 5 renamed the forward's `past_key_values` to `cache` (the old name still works, with a warning)
        params = inspect.signature(model.forward).parameters
        self._cache_kw = "cache" if "cache" in params else "past_key_values"

    def run(self, requests: Sequence[GenRequest], prompt_ids: dict[str, list[int]], sink: ResultSink) -> None:
        torch = self.torch
        p = requests[0].params
        sample = p.temperature is not None and p.temperature > 0
        warp = None
        if sample:
            lp, temp, top_p = self._warpers
            warp = lp([temp(p.temperature)] + ([top_p(p.top_p)] if p.top_p is not None and p.top_p < 1 else []))
        waiting = deque(sorted(requests, key=lambda r: -len(prompt_ids[r.key])))
        rows: list[_Row] = []
        cache = mask = last = None
        with torch.inference_mode():
            while waiting or rows:
                free = self.batch_size - len(rows)
                if waiting and (not rows or free >= min(self.refill_at, len(waiting))):
                    if self.on_refill is not None:
                        self.on_refill()
                    new = [waiting.popleft() for _ in range(min(free, len(waiting)))]
                    new_rows, new_cache, new_mask, logits = self._prefill(new, prompt_ids, sample)
                    cache, mask = self._merge(cache, mask, new_cache, new_mask)
                    first = self._sample(logits, new_rows, warp)
                    rows += new_rows
                    last = first if last is None else torch.cat([last, first])
                    added = new_rows
                    picked = first
                else:
                    mask = torch.cat([mask, mask.new_ones(len(rows), 1)], dim=1)
                    positions = (mask.sum(dim=1, keepdim=True) - 1)
                    out = self.model(input_ids=last.view(-1, 1), attention_mask=mask, position_ids=positions,
                                     use_cache=True, logits_to_keep=1, **{self._cache_kw: cache})
                    self.steps += 1
                    self.row_steps += len(rows)
                    picked = self._sample(out.logits[:, -1, :], rows, warp)
                    last = picked
                    added = rows
                # append the tokens just picked; rows that were not fed this step (refill) picked nothing
                offset = len(rows) - len(added)
                done = []
                for i, (row, t) in enumerate(zip(added, picked.tolist())):
                    row.tokens.append(t)
                    finish = self._finished(row)
                    if finish:
                        done.append((offset + i, finish))
                if done:
                    sink.ok_many([(rows[i].request, self._completion(rows[i], f)) for i, f in done])
                    gone = {i for i, _ in done}
                    keep = [i for i in range(len(rows)) if i not in gone]
                    rows = [rows[i] for i in keep]
                    if not rows:
                        cache = mask = last = None
                        continue
                    idx = torch.tensor(keep)
                    mask, last = self._select(cache, mask, idx), last[idx]

    def _prefill(self, new: list[GenRequest], prompt_ids: dict[str, list[int]], sample: bool):
        """One forward over the new prompts (left-padded among themselves): their rows, KV cache, mask and logits."""
        torch = self.torch
        width = max(len(prompt_ids[r.key]) for r in new)
        pad = self.tok.pad_token_id
        ids = torch.tensor([[pad] * (width - len(prompt_ids[r.key])) + prompt_ids[r.key] for r in new])
        mask = torch.tensor([[0] * (width - len(prompt_ids[r.key])) + [1] * len(prompt_ids[r.key]) for r in new])
        positions = (mask.cumsum(dim=1) - 1).clamp(min=0)
        cache = growing_cache(self.model.config)
        out = self.model(input_ids=ids, attention_mask=mask, position_ids=positions, use_cache=True, logits_to_keep=1,
                         **{self._cache_kw: cache})
        now = time.perf_counter()
        rows = []
        for r in new:
            gen = torch.Generator().manual_seed(request_seed(r)) if sample else None
            rows.append(_Row(r, len(prompt_ids[r.key]), gen, now))
        return rows, cache, mask, out.logits[:, -1, :]

    def _merge(self, cache, mask, new_cache, new_mask):
        """The running rows' cache and the new rows' cache as one batch, left-padded to the longer of the two."""
        if cache is None:
            return new_cache, new_mask
        torch = self.torch
        F = torch.nn.functional
        width = max(mask.shape[1], new_mask.shape[1])
        a, b = width - mask.shape[1], width - new_mask.shape[1]
        layers = []
        for old, new in zip(cache.layers, new_cache.layers):
            layers.append((torch.cat([F.pad(old.keys, (0, 0, a, 0)), F.pad(new.keys, (0, 0, b, 0))]),
                           torch.cat([F.pad(old.values, (0, 0, a, 0)), F.pad(new.values, (0, 0, b, 0))])))
        merged = growing_cache(self.model.config, layers)
        return merged, torch.cat([F.pad(mask, (a, 0)), F.pad(new_mask, (b, 0))])

    def _select(self, cache, mask, idx):
        """Keep the rows ``idx`` in the cache (in place) and drop leading columns that are padding in every row left;
        returns the mask of what is left."""
        mask = mask[idx]
        cut = int(mask.any(dim=0).int().argmax())
        for layer in cache.layers:
            layer.keys = layer.keys[idx, :, cut:]
            layer.values = layer.values[idx, :, cut:]
        return mask[:, cut:]

    def _sample(self, logits, rows: list[_Row], warp):
        torch = self.torch
        if warp is None:
            return logits.argmax(dim=-1)
        probs = torch.softmax(warp(None, logits.float()), dim=-1)
        return torch.cat([torch.multinomial(probs[i], 1, generator=row.generator) for i, row in enumerate(rows)])

    def _finished(self, row: _Row) -> str | None:
        p = row.request.params
        if row.tokens[-1] in self.eos:
            return "stop"
        if p.stop and any(s in self.tok.decode(row.tokens, skip_special_tokens=True) for s in p.stop):
            return "stop"
        if len(row.tokens) >= p.max_tokens:
            return "length"
        return None

    def _completion(self, row: _Row, finish: str) -> Completion:
        text = self.tok.decode(row.tokens, skip_special_tokens=True)
        for s in row.request.params.stop or ():
            if s in text:
                text = text[: text.index(s)]
                break
        return Completion(text, finish, row.prompt_len, len(row.tokens), time.perf_counter() - row.started)
