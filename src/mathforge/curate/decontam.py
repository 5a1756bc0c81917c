"""Benchmark decontamination: word n-gram overlap (13 by default) against benchmark test sets read by the loaders.

Every benchmark text (question and reference solution) contributes its word n-grams to a sorted hash index; a
benchmark text shorter than n contributes itself whole (when it has at least ``min_tokens`` words) and, however
short, is also matched as an exact whole question. A hit is confirmed word by word and reported with the benchmark,
the item id and the overlapping words, so a reviewer can see why a record was dropped.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable, Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pydantic import Field

from mathforge.config import StrictModel
from mathforge.curate.ngrams import Tokens, ngram_hashes, subset, token_ids, tokenize, whole_hashes
from mathforge.errors import ConfigError
from mathforge.records import Problem

DEFAULT_BENCHMARKS = ("gsm8k", "math", "math500", "svamp", "mathqa")
_BUCKETS = 1 << 24  # at most 16 MiB of bools per n-gram length
_FIND_TOKENS = 1 << 18  # tokens looked up at once: its hash, position and match arrays take ~70 B per token


class BenchmarkRef(StrictModel):
    name: str = Field(description="dataset name of the loader (gsm8k, math, math500, svamp, mathqa, generic, ...)")
    path: str | None = Field(None, description="file, directory, bundled:NAME or hub id (default: the loader's hub id)")
    split: str | None = Field("test", description="split to read (None: the loader's default or the file given)")
    options: dict[str, str] = Field(default_factory=dict, description="loader options (field names for generic)")


class DecontamConfig(StrictModel):
    enabled: bool = Field(True, description="reject samples whose problem or solution overlaps a benchmark")
    benchmarks: list[BenchmarkRef] = Field(
        default_factory=lambda: [BenchmarkRef(name=n) for n in DEFAULT_BENCHMARKS],
        description="benchmark test sets to check against, each {name, path, split}",
    )
    ngram: int = Field(13, ge=3, description="word n-gram length of an overlap")
    min_tokens: int = Field(
        8, ge=1, description="benchmark problems shorter than ngram but at least this long are matched whole"
    )
    fields: list[Literal["question", "solution"]] = Field(
        ["question", "solution"], description="benchmark fields whose n-grams are indexed"
    )
    check_solutions: bool = Field(True, description="also check each sample's solution text, not only its problem")


@dataclass(frozen=True)
class Hit:
    """One confirmed overlap: which benchmark item, which of its fields, and the overlapping words."""

    benchmark: str
    item_id: str
    field: str
    ngram: str

    def reason(self, side: str) -> str:
        return f"test-leak: {side} overlaps {self.benchmark} {self.item_id} ({self.field}): '{self.ngram}'"


@dataclass
class _Level:
    """Hashes of all indexed word sequences of one length, sorted, with the (text, start) each came from."""

    hashes: np.ndarray
    texts: np.ndarray
    starts: np.ndarray
    bitmap: np.ndarray  # bool per low-bits bucket: a cheap "certainly absent" test before the binary search

    @classmethod
    def of(cls, hashes: np.ndarray, texts: np.ndarray, starts: np.ndarray) -> "_Level":
        order = np.argsort(hashes, kind="stable")
        size = min(_BUCKETS, max(1 << 10, 1 << int(16 * len(hashes)).bit_length()))  # ~16 buckets per entry
        bitmap = np.zeros(size, bool)
        bitmap[(hashes & np.uint64(size - 1)).astype(np.intp)] = True
        return cls(hashes[order], texts[order], starts[order], bitmap)

    def lookup(self, h: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(indices into ``h`` of the hashes present, their positions in the level)."""
        maybe = np.flatnonzero(self.bitmap[(h & np.uint64(len(self.bitmap) - 1)).astype(np.intp)])
        pos = np.searchsorted(self.hashes, h[maybe])
        pos[pos == len(self.hashes)] = 0
        hit = self.hashes[pos] == h[maybe]
        return maybe[hit], pos[hit]


@dataclass
class BenchmarkIndex:
    """Word n-gram index over benchmark texts; ``find`` returns the first confirmed hit of each query text."""

    n: int
    min_tokens: int
    items: list[tuple[str, str, str]] = field(default_factory=list)  # (benchmark, item id, field) per text
    sizes: dict[str, int] = field(default_factory=dict)  # benchmark -> items indexed
    _tokens: Tokens | None = None
    _vocab: pa.Array | None = None
    _levels: dict[int, _Level] = field(default_factory=dict)
    _whole: dict[int, int] = field(default_factory=dict)  # whole-question hash -> text index

    @classmethod
    def build(cls, problems: Iterable[tuple[str, Problem]], n: int = 13, min_tokens: int = 8,
              fields: Iterable[str] = ("question", "solution")) -> "BenchmarkIndex":
        """Index (benchmark name, Problem) pairs: their questions and, if asked, reference solutions."""
        index = cls(n, min_tokens)
        fields = set(fields)
        texts: list[str] = []
        for bench, p in problems:
            index.sizes[bench] = index.sizes.get(bench, 0) + 1
            for name, text in (("question", p.question), ("solution", p.solution)):
                if name in fields and text:
                    index.items.append((bench, p.id, name))
                    texts.append(text)
        tokens = tokenize(texts)
        index._tokens = tokens
        index._vocab = pc.unique(tokens.flat)
        ids = token_ids(tokens, index._vocab)
        lengths = np.diff(tokens.offsets)
        levels: dict[int, list[tuple[np.ndarray, np.ndarray, np.ndarray]]] = {}
        h, d, s = ngram_hashes(ids, tokens.offsets, n)
        levels[n] = [(h, d, s)]
        short = np.flatnonzero((lengths < n) & (lengths >= min_tokens))
        for length in np.unique(lengths[short]):
            docs = short[lengths[short] == length]
            wh = whole_hashes(*subset(ids, tokens.offsets, docs))
            levels.setdefault(int(length), []).append((wh, docs.astype(np.int64), np.zeros(len(docs), np.int64)))
        for length, parts in levels.items():
            index._levels[length] = _Level.of(*(np.concatenate([p[i] for p in parts]) for i in range(3)))
        questions = [i for i, it in enumerate(index.items) if it[2] == "question"]
        qh = whole_hashes(*subset(ids, tokens.offsets, np.array(questions, np.int64)))
        index._whole = {int(h): i for h, i in zip(qh, questions) if h}
        return index

    def __len__(self) -> int:
        return len(self.items)

    def find(self, texts: list[str | None] | Tokens, whole: bool = False) -> list[Hit | None]:
        """For each text (or text already tokenised), its first benchmark overlap, None if clean.

        ``whole`` (for problem statements) also matches benchmark texts shorter than n: contained whole when they
        have at least ``min_tokens`` words, equal to the whole text when shorter still.
        """
        tokens = texts if isinstance(texts, Tokens) else tokenize(list(texts))
        if int(tokens.offsets[-1]) > _FIND_TOKENS and len(tokens) > 1:  # texts are independent: look up in parts
            out: list[Hit | None] = []
            lo = 0
            while lo < len(tokens):
                hi = int(np.searchsorted(tokens.offsets, tokens.offsets[lo] + _FIND_TOKENS, "right")) - 1
                hi = min(max(hi, lo + 1), len(tokens))
                out += self._find(tokens.slice(lo, hi), whole)
                lo = hi
            return out
        return self._find(tokens, whole)

    def _find(self, tokens: Tokens, whole: bool) -> list[Hit | None]:
        out: list[Hit | None] = [None] * len(tokens)
        if not len(tokens) or self._tokens is None:
            return out
        ids = token_ids(tokens, self._vocab)
        for length, level in sorted(self._levels.items(), reverse=True):
            if length != self.n and not whole:
                continue
            h, doc, start = ngram_hashes(ids, tokens.offsets, length)
            found, positions = level.lookup(h)
            for k, pos in zip(found.tolist(), positions.tolist()):
                d = int(doc[k])
                if out[d] is not None:
                    continue
                out[d] = self._confirm(tokens, d, int(start[k]), length, level, pos, h[k])
        if whole and self._whole:
            for d, wh in enumerate(whole_hashes(ids, tokens.offsets)):
                if out[d] is None and int(wh) in self._whole:
                    out[d] = self._confirm_whole(tokens, d, self._whole[int(wh)])
        return out

    def _confirm(self, tokens: Tokens, doc: int, start: int, length: int, level: _Level, pos: int,
                 h: np.uint64) -> Hit | None:
        words = tokens.words(doc, start, length)
        while pos < len(level.hashes) and level.hashes[pos] == h:  # equal hashes: check the words themselves
            text, bstart = int(level.texts[pos]), int(level.starts[pos])
            if self._tokens.words(text, bstart, length) == words:
                bench, item_id, fld = self.items[text]
                return Hit(bench, item_id, fld, " ".join(words))
            pos += 1
        return None

    def _confirm_whole(self, tokens: Tokens, doc: int, text: int) -> Hit | None:
        words = tokens.words(doc)
        if self._tokens.words(text) != words:
            return None
        bench, item_id, fld = self.items[text]
        return Hit(bench, item_id, fld, " ".join(words))


def load_benchmarks(refs: list[BenchmarkRef]) -> Iterable[tuple[str, Problem]]:
    """(benchmark name, Problem) pairs of every benchmark through the dataset loaders; a failure names the benchmark."""
    from mathforge.datasets import load
    from mathforge.errors import MathforgeError

    for ref in refs:
        try:
            problems = list(load(ref.name, ref.path, split=ref.split, on_bad_row="skip", **ref.options))
        except MathforgeError as exc:
            raise ConfigError(f"decontamination benchmark '{ref.name}': {exc} (set its path: or remove it)") from None
        except Exception as exc:  # the hub when offline, a missing optional reader
            raise ConfigError(
                f"decontamination benchmark '{ref.name}' could not be loaded ({type(exc).__name__}: {exc}); "
                "give it a local path: or remove it from decontam.benchmarks"
            ) from None
        for p in problems:
            yield ref.name, p


def build_index(cfg: DecontamConfig) -> BenchmarkIndex:
    """The index over every configured benchmark."""
    return BenchmarkIndex.build(load_benchmarks(cfg.benchmarks), cfg.ngram, cfg.min_tokens, cfg.fields)
