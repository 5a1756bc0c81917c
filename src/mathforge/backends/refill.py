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

RETUNE_STEPS = 32
"""Decode steps between two reads of the cores other processes leave free (a busy moment at the start of a run
must not hold generation to one thread for all of it)."""

NUCLEUS_K = 64
"""Likeliest tokens per row among which top-p sampling first looks for the nucleus (exact: see ``_sample``)."""

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


def prefill_chunks(lengths: Sequence[int], *, waste: float = 0.1, most: int = 16) -> list[list[int]]:
    """Indices of ``lengths`` (sorted longest first) in runs whose padding is at most ``waste`` of each run's tokens
    and of at most ``most`` prompts (a bigger batch gains little on CPU once a forward holds a few hundred tokens)."""
    chunks: list[list[int]] = []
    for i, n in enumerate(lengths):
        if chunks and len(chunks[-1]) < most:
            run = chunks[-1]
            width = lengths[run[0]]
            if width * (len(run) + 1) - sum(lengths[j] for j in run) - n <= waste * width * (len(run) + 1):
                run.append(i)
                continue
        chunks.append([i])
    return chunks


class RefillGenerator:
    """Generate one sampling-settings group of requests with at most ``batch_size`` rows in flight."""

    def __init__(self, model, tok, eos_ids: set[int], batch_size: int, *, retune: Callable[[], None] | None = None):
        import torch

        self.torch, self.model, self.tok, self.eos = torch, model, tok, eos_ids
        self.batch_size = batch_size
        # refill when an eighth of the batch is free: one prefill and one cache copy per refill, few idle slots
        self.refill_at = max(1, batch_size // 8)
        # re-reads the free cores when a group starts and every RETUNE_STEPS decode steps; not at every refill: a read
        # samples the kernel for ~40 ms, and a small batch refills every few steps
        self.retune = retune
        self.steps = self.row_steps = 0  # decode forwards, and rows fed to them (for the padding account)
        self.prefilled = 0  # prompts run through a prefill forward (requests sharing a prompt count once)
        import inspect

        # transformers 5 renamed the forward's `past_key_values` to `cache` (the old name still works, with a warning)
        params = inspect.signature(model.forward).parameters
        self._cache_kw = "cache" if "cache" in params else "past_key_values"

    def run(self, requests: Sequence[GenRequest], prompt_ids: dict[str, list[int]], sink: ResultSink) -> None:
        torch = self.torch
        p = requests[0].params
        sample = p.temperature is not None and p.temperature > 0
        warp = (p.temperature, p.top_p if p.top_p is not None and p.top_p < 1 else 1.0) if sample else None
        # longest prompts first; equal prompts next to each other so that their samples share one prefill
        waiting = deque(sorted(requests, key=lambda r: (-len(prompt_ids[r.key]), prompt_ids[r.key])))
        rows: list[_Row] = []
        cache = mask = last = None
        if self.retune is not None:
            self.retune()
        with torch.inference_mode():
            while waiting or rows:
                free = self.batch_size - len(rows)
                if waiting and (not rows or free >= min(self.refill_at, len(waiting))):
                    new = [waiting.popleft() for _ in range(min(free, len(waiting)))]
                    new_rows, new_cache, new_mask, logits = self._prefill(new, prompt_ids, sample)
                    cache, mask = self._merge((cache, mask), (new_cache, new_mask))
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
                    if self.retune is not None and self.steps % RETUNE_STEPS == 0:
                        self.retune()
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
        """Prefill the new prompts: their rows, KV cache (left-padded to a common width), mask and last logits.

        Requests with the same prompt (k samples of one problem) share one prefill: the prompt is run once and its
        cache rows are copied to each sample, so k=4 pays for a quarter of the prompt tokens. Distinct prompts run in
        chunks of similar length (``prefill_chunks``), so that padding does not cost a forward of its own: one padded
        batch of 50 GSM8K prompts spent 30% of its prefill on padding."""
        torch = self.torch
        prompts = [tuple(prompt_ids[r.key]) for r in new]
        unique = sorted(set(prompts), key=lambda x: (-len(x), x))
        parts, logits = [], []
        for chunk in prefill_chunks([len(x) for x in unique]):
            part = [unique[i] for i in chunk]
            width = len(part[0])
            ids = torch.tensor([[self.tok.pad_token_id] * (width - len(x)) + list(x) for x in part])
            part_mask = torch.tensor([[0] * (width - len(x)) + [1] * len(x) for x in part])
            positions = (part_mask.cumsum(dim=1) - 1).clamp(min=0)
            part_cache = growing_cache(self.model.config)
            out = self.model(input_ids=ids, attention_mask=part_mask, position_ids=positions, use_cache=True,
                             logits_to_keep=1, **{self._cache_kw: part_cache})
            logits.append(out.logits[:, -1, :])
            parts.append((part_cache, part_mask))
        cache, mask = self._merge(*parts)
        logits = torch.cat(logits)
        where = {x: i for i, x in enumerate(unique)}
        idx = torch.tensor([where[x] for x in prompts])
        if not torch.equal(idx, torch.arange(len(unique))):
            for layer in cache.layers:
                layer.keys, layer.values = layer.keys[idx], layer.values[idx]
            mask, logits = mask[idx], logits[idx]
        self.prefilled += len(unique)
        now = time.perf_counter()
        rows = []
        for r in new:
            gen = torch.Generator().manual_seed(request_seed(r)) if sample else None
            rows.append(_Row(r, len(prompt_ids[r.key]), gen, now))
        return rows, cache, mask, logits

    def _merge(self, *parts):
        """Several (cache, mask) batches as one, each left-padded to the widest; ``None`` parts are skipped."""
        parts = [(c, m) for c, m in parts if c is not None]
        if len(parts) == 1:
            return parts[0]
        torch = self.torch
        F = torch.nn.functional
        width = max(m.shape[1] for _, m in parts)
        pads = [width - m.shape[1] for _, m in parts]
        layers = []
        for per_part in zip(*(c.layers for c, _ in parts)):
            layers.append((torch.cat([F.pad(x.keys, (0, 0, a, 0)) for x, a in zip(per_part, pads)]),
                           torch.cat([F.pad(x.values, (0, 0, a, 0)) for x, a in zip(per_part, pads)])))
        merged = growing_cache(self.model.config, layers)
        return merged, torch.cat([F.pad(m, (a, 0)) for (_, m), a in zip(parts, pads)])

    def _select(self, cache, mask, idx):
        """Keep the rows ``idx`` in the cache (in place) and drop leading columns that are padding in every row left;
        returns the mask of what is left."""
        mask = mask[idx]
        cut = int(mask.any(dim=0).int().argmax())
        for layer in cache.layers:
            layer.keys = layer.keys[idx, :, cut:]
            layer.values = layer.values[idx, :, cut:]
        return mask[:, cut:]

    def _sample(self, logits, rows: list[_Row], warp: tuple[float, float] | None):
        """Greedy, or one draw per row from its nucleus: temperature, then top-p as transformers' TopPLogitsWarper
        defines it (a token stays when the probability of the tokens ranked above it is below top_p).

        The nucleus is looked for among each row's ``NUCLEUS_K`` likeliest tokens and, for the rare row whose top-p
        mass lies beyond them, among all: sorting the whole 49k vocabulary of every row and drawing with
        ``torch.multinomial`` over it took 125 ms of a 350 ms decode step at batch 50. The draw is an inverse-CDF
        lookup of a uniform number from the row's own generator."""
        torch = self.torch
        if warp is None:
            return logits.argmax(dim=-1)
        temperature, top_p = warp
        probs = torch.softmax(logits.float() / temperature, dim=-1)
        uniform = torch.cat([torch.rand(1, generator=row.generator) for row in rows])
        vocab = probs.shape[-1]
        if top_p >= 1:  # the whole distribution: no ranking needed
            return self._draw(probs, uniform)
        picked = torch.empty(len(rows), dtype=torch.long)
        todo, k = torch.arange(len(rows)), min(NUCLEUS_K, vocab)
        while len(todo):
            top, ids = torch.topk(probs[todo], k, dim=-1)
            covered = top.sum(dim=-1) >= top_p if k < vocab else torch.ones(len(todo), dtype=torch.bool)
            top, ids, here = top[covered], ids[covered], todo[covered]
            top = top * ((top.cumsum(dim=-1) - top) < top_p)  # the nucleus; the first token always stays
            picked[here] = ids.gather(1, self._draw(top, uniform[here]).unsqueeze(1)).squeeze(1)
            todo, k = todo[~covered], vocab
        return picked

    def _draw(self, weights, uniform):
        """Per row, the index that its uniform number picks from its unnormalised ``weights`` (inverse CDF); a weight
        of 0 is never picked."""
        cdf = weights.cumsum(dim=-1)
        at = self.torch.searchsorted(cdf, (uniform * cdf[:, -1]).unsqueeze(1), right=True)
        return at.clamp(max=weights.shape[-1] - 1).squeeze(1)

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
