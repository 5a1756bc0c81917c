"""Export's per-record work on one batch of samples: which are accepted, their problems and provenance (pass 1), and
their chat, prompt-completion and sft rows, serialised as the export's files hold them (pass 2).

Pure (a batch in, a small result out, nothing carried between batches), so the executor may run it anywhere: in this
process (``executor: local``) or as one Ray task per batch (``executor: ray``). The driver (``export.export_batches``)
keeps what spans batches (the split by problem, the counts, the card) and is the only writer of the export folder: it
appends each batch's rendered JSONL bytes and Arrow tables to the files, in batch order, so both executors write the
same bytes.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable

import pyarrow as pa
import pyarrow.compute as pc

if TYPE_CHECKING:
    from mathforge.export import ExportConfig

Rows = list[dict[str, Any]]
SPLITS = ("train", "validation")

_BASE = [("id", pa.string()), ("problem_id", pa.string()), ("teacher", pa.string()), ("model", pa.string())]
_MESSAGES = pa.list_(pa.struct([("role", pa.string()), ("content", pa.string())]))
SCHEMAS = {
    "chat": pa.schema([*_BASE, ("messages", _MESSAGES)]),
    "completion": pa.schema([*_BASE, ("prompt", pa.string()), ("completion", pa.string())]),
    "sft": pa.schema([*_BASE, ("messages", _MESSAGES), ("split", pa.string())]),
    "synthesis": pa.schema([*_BASE, ("method", pa.string()), ("level", pa.string()), ("messages", _MESSAGES)]),
}


def rows_of(batch: Rows | pa.RecordBatch | pa.Table) -> Rows:
    """A batch as row dicts (a stage hands Arrow batches: they cross to a worker without being pickled row by row)."""
    return batch.to_pylist() if isinstance(batch, (pa.RecordBatch, pa.Table)) else batch


def accepted(samples: Rows, cfg: "ExportConfig") -> Rows:
    """The samples exported: those the verifier accepted, or all of them when ``only_correct`` is off."""
    return [s for s in samples if not cfg.only_correct or s.get("correct") is True]


def _base(s: dict[str, Any]) -> dict[str, Any]:
    return {"id": s["id"], "problem_id": s["problem_id"], "teacher": s.get("teacher"), "model": s.get("model")}


def sft_rows(samples: Rows, cfg: "ExportConfig") -> Rows:
    """Chat rows: optional system message, the question as the user turn, the solution as the assistant turn."""
    rows = []
    for s in accepted(samples, cfg):
        msgs = [{"role": "system", "content": cfg.system_prompt}] if cfg.system_prompt else []
        msgs += [{"role": "user", "content": s["question"]}, {"role": "assistant", "content": s["text"].strip()}]
        rows.append({**_base(s), "messages": msgs})
    return rows


def completion_rows(samples: Rows, cfg: "ExportConfig") -> Rows:
    """Prompt-completion rows (TRL's standard format): the templated question, and the solution."""
    return [
        {**_base(s), "prompt": cfg.prompt_template.format(question=s["question"]), "completion": s["text"].strip()}
        for s in accepted(samples, cfg)
    ]


BUILDERS: dict[str, Callable[[Rows, "ExportConfig"], Rows]] = {"chat": sft_rows, "completion": completion_rows}


def jsonl_bytes(rows: Rows) -> bytes:
    """Rows as JSON Lines, UTF-8 (the exact bytes of an export's ``.jsonl`` files)."""
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows).encode("utf-8")


@dataclass
class Part:
    """What one batch appends to one file of the export (``name``: its path without extension)."""

    name: str
    schema: str
    jsonl: bytes | None  # None: no JSONL file is written
    table: pa.Table | None  # None: no Parquet file is written


def render(name: str, schema: str, rows: Rows, jsonl: bool, parquet: bool) -> Part | None:
    """``rows`` serialised for the files of ``name`` (None when there are no rows: nothing to append)."""
    if not rows:
        return None
    return Part(name, schema, jsonl_bytes(rows) if jsonl else None,
                pa.Table.from_pylist(rows, SCHEMAS[schema]) if parquet else None)


@dataclass
class Tally:
    """Pass 1 of one batch: its accepted samples' distinct problem ids and the card's provenance counts."""

    problems: pa.Array
    teachers: Counter = field(default_factory=Counter)  # (teacher, model) -> accepted rows
    sources: Counter = field(default_factory=Counter)  # dataset prefix of the problem id -> accepted rows


class Tallier:
    """Pass 1's per-batch step (a picklable callable)."""

    def __init__(self, cfg: "ExportConfig"):
        self.cfg = cfg

    def __call__(self, batch: Rows | pa.RecordBatch) -> Tally:
        ids = []
        out = Tally(pa.array([], pa.string()))
        for s in accepted(rows_of(batch), self.cfg):
            pid = str(s["problem_id"])
            ids.append(pid)
            out.teachers[(s.get("teacher"), s.get("model"))] += 1
            out.sources[pid.split("/", 1)[0] if "/" in pid else "(no dataset prefix)"] += 1
        out.problems = pc.unique(pa.array(ids, pa.string()))
        return out


@dataclass
class Rendered:
    """Pass 2 of one batch: accepted rows per split, and what to append to each file, in the order to append it."""

    rows: dict[str, int]
    parts: list[Part]


class Renderer:
    """Pass 2's per-batch step: the rows of every style and split, serialised (a picklable callable that carries the
    problems held out for validation: the Ray executor ships it once per run)."""

    def __init__(self, cfg: "ExportConfig", held_out: set[str]):
        self.cfg, self.held_out = cfg, held_out

    def __call__(self, batch: Rows | pa.RecordBatch) -> Rendered:
        cfg = self.cfg
        jsonl = "jsonl" in cfg.formats
        parquet = "parquet" in cfg.formats or "dataset" in cfg.formats  # a DatasetDict is built from Parquet
        ok = accepted(rows_of(batch), cfg)
        split_of = {s["id"]: ("validation" if str(s["problem_id"]) in self.held_out else "train") for s in ok}
        counts = Counter(split_of.values())
        parts: list[Part | None] = []
        for style in cfg.styles:
            built = BUILDERS[style](ok, cfg)
            for sp in SPLITS:
                parts.append(render(f"{style}/{sp}", style, [r for r in built if split_of[r["id"]] == sp],
                                    jsonl, parquet))
            if style == "chat":
                parts.append(render("sft", "sft", [{**r, "split": split_of[r["id"]]} for r in built], jsonl,
                                    "parquet" in cfg.formats))
            del built
        return Rendered({sp: counts[sp] for sp in SPLITS}, [p for p in parts if p is not None])
