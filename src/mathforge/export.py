"""The export stage: accepted samples as SFT datasets (chat and prompt-completion), with a dataset card.

Layout of ``<run>/export/`` (every split file readable by ``datasets``)::

    sft.jsonl, sft.parquet            every chat row, with its "split" (train / validation)
    chat/{train,validation}.{jsonl,parquet}        {"id", "problem_id", "teacher", "model", "messages": [...]}
    completion/{train,validation}.{jsonl,parquet}  {"id", "problem_id", "teacher", "model", "prompt", "completion"}
    dataset/{chat,completion}/        datasets.DatasetDict.save_to_disk (load with datasets.load_from_disk)
    README.md                         dataset card: provenance, counts, yields, decontamination, recipe

The split is by problem (every solution of a problem lands in the same split), seeded, so validation loss is
measured on problems the model has not trained on.
"""

from __future__ import annotations

import json
import random
import shutil
from collections import Counter
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Literal

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from pydantic import Field

from mathforge.config import StrictModel, dump_yaml
from mathforge.errors import ConfigError, MathforgeError
# SPLITS, SCHEMAS, sft_rows and completion_rows are also imported from here (synth/export.py, bench/train.py)
from mathforge.export_batch import (  # noqa: F401
    SCHEMAS, SPLITS, Part, Renderer, Tallier, completion_rows, render, sft_rows,
)
from mathforge.memory import release_free_memory
from mathforge.pipeline.context import RunContext
from mathforge.pipeline.stages import Port, Stage
from mathforge.records import Problem

Style = Literal["chat", "completion", "synthesis"]
Format = Literal["jsonl", "parquet", "dataset"]
Batch = list[dict[str, Any]] | pa.RecordBatch
IMap = Callable[[Callable[[Any], Any], Iterable[Any]], Iterator[Any]]


class ExportConfig(StrictModel):
    formats: list[Format] = Field(["jsonl", "parquet", "dataset"], description="any of: jsonl, parquet, dataset")
    styles: list[Style] = Field(["chat", "completion"], description="chat messages and/or prompt-completion pairs "
                                "of the samples; synthesis: (seed or passage, method, level) -> new problem chats "
                                "from a synthesize stage's problems, to train a synthesiser")
    synthesis_solution: bool = Field(False, description="synthesis style: the reply holds the pseudo-gold solution "
                                                        "after the problem")
    system_prompt: str | None = Field(None, description="system message of every exported chat (none by default)")
    prompt_template: str = Field(
        "Question: {question}\nAnswer: ", description="prompt of the prompt-completion style; {question} is filled in"
    )
    only_correct: bool = Field(True, description="export only samples the verifier accepted")
    validation_fraction: float = Field(0.05, ge=0, lt=1, description="share of problems held out for validation")
    seed: int | None = Field(None, description="seed of the train/validation split (default: the recipe's seed)")
    out_dir: str = Field("export", description="folder inside the run directory")
    card: bool = Field(True, description="write a dataset card (README.md) with provenance")
    push_to_hub: str | None = Field(None, description="hub dataset repo (user/name) to upload the export to")
    private: bool = Field(True, description="create the hub repo as private")


def split_problems(problem_ids: list[str], fraction: float, seed: int) -> set[str]:
    """The problems held out for validation: a seeded shuffle of the sorted ids, at least one when asked for any."""
    return held_out_of(sorted_unique([pa.array(map(str, problem_ids), pa.string())]), fraction, seed)


def sorted_unique(chunks: list[pa.Array]) -> pa.Array:
    """The distinct strings of Arrow string arrays, in code-point order (that of ``sorted``: UTF-8 bytes sort so)."""
    ids = pc.unique(pa.chunked_array(chunks, pa.string()))
    return ids.take(pc.sort_indices(ids))


def held_out_of(ids: pa.Array, fraction: float, seed: int) -> set[str]:
    """``split_problems`` over ids already unique and sorted in an Arrow array (an export keeps its problems there:
    a few bytes each, instead of a set of Python strings that outlive each batch among its freed objects).
    The shuffle permutes positions, which depend on the count alone, so the ids picked are those of the list form."""
    if fraction <= 0 or len(ids) < 2:
        return set()
    order = list(range(len(ids)))
    random.Random(seed).shuffle(order)
    k = min(len(ids) - 1, max(1, round(fraction * len(ids))))
    return set(ids.take(pa.array(order[:k])).to_pylist())


class _Files:
    """The export's open files: one JSONL and/or Parquet writer per (style, split), opened on first use."""

    def __init__(self, root: Path, formats: list[str]):
        self.root, self.formats = root, formats
        self.jsonl: dict[Path, Any] = {}
        self.parquet: dict[Path, pq.ParquetWriter] = {}

    def write(self, name: str, schema_name: str, rows: list[dict[str, Any]], parquet_too: bool = False) -> None:
        part = render(name, schema_name, rows, "jsonl" in self.formats, "parquet" in self.formats or parquet_too)
        if part is not None:
            self.append(part)

    def append(self, part: Part) -> None:
        """Append what a batch rendered for one file (the driver writes every file; the rendering ran anywhere)."""
        if part.jsonl is not None:
            self._jsonl(part.name).write(part.jsonl)
        if part.table is not None:
            self._parquet(part.name, part.schema).write_table(part.table)

    def ensure(self, name: str, schema_name: str) -> None:
        """Create ``name``'s files empty when no row was written to them: zero accepted rows is still an export."""
        if "jsonl" in self.formats:
            self._jsonl(name)
        if "parquet" in self.formats:
            self._parquet(name, schema_name)

    def _jsonl(self, name: str) -> Any:
        path = self.root / f"{name}.jsonl"
        if path not in self.jsonl:
            path.parent.mkdir(parents=True, exist_ok=True)
            self.jsonl[path] = open(path, "wb")  # UTF-8 bytes, rendered with the rows
        return self.jsonl[path]

    def _parquet(self, name: str, schema_name: str) -> pq.ParquetWriter:
        path = self.root / f"{name}.parquet"
        if path not in self.parquet:
            path.parent.mkdir(parents=True, exist_ok=True)
            self.parquet[path] = pq.ParquetWriter(path, SCHEMAS[schema_name])
        return self.parquet[path]

    def close(self) -> None:
        for fh in self.jsonl.values():
            fh.close()
        for w in self.parquet.values():
            w.close()


def _save_datasets(root: Path, styles: list[str], formats: list[str]) -> None:
    """``DatasetDict.save_to_disk`` per style, built from the split Parquet files (memory-mapped, never in RAM)."""
    from datasets import Dataset, DatasetDict
    from datasets.utils import logging as ds_logging

    quiet = ds_logging.is_progress_bar_enabled()
    ds_logging.disable_progress_bar()  # one bar per split per style is noise in a stage's output
    cache = root / ".cache"
    try:
        for style in styles:
            files = {sp: root / style / f"{sp}.parquet" for sp in SPLITS if (root / style / f"{sp}.parquet").exists()}
            if not files:
                continue
            dd = DatasetDict({sp: Dataset.from_parquet(str(f), cache_dir=str(cache), keep_in_memory=False)
                              for sp, f in files.items()})
            dd.save_to_disk(str(root / "dataset" / style))
            # Unmapped before the next style's files are mapped: the pages save_to_disk read count in RSS while
            # mapped, and two styles' at once were half of a 900k export's peak.
            del dd
            release_free_memory()
            if "parquet" not in formats:
                for f in files.values():
                    f.unlink()
    finally:
        shutil.rmtree(cache, ignore_errors=True)
        if quiet:
            ds_logging.enable_progress_bar()


def write_split_files(out: Path, style: str, splits: dict[str, list[dict[str, Any]]], formats: list[str]) -> None:
    """One style's split files (JSONL, Parquet, a saved DatasetDict) from rows already in memory."""
    files = _Files(out, formats)
    try:
        for sp, rows in splits.items():
            files.write(f"{style}/{sp}", style, rows, parquet_too="dataset" in formats)
    finally:
        files.close()
    if "dataset" in formats:
        _save_datasets(out, [style], formats)


def export(samples: list[dict[str, Any]], out: Path, cfg: ExportConfig, seed: int = 0,
           provenance: dict[str, Any] | None = None) -> dict[str, Any]:
    """Write the export folder for ``samples``; returns counts (rows and problems per split)."""
    return export_batches(lambda: iter([samples]), out, cfg, seed, provenance)


def export_batches(batches: Callable[[], Iterator[Batch]], out: Path, cfg: ExportConfig, seed: int = 0,
                   provenance: dict[str, Any] | None = None, imap: IMap | None = None) -> dict[str, Any]:
    """Write the export folder from sample batches (``batches()`` is read twice: once for the split by problem and
    the card's counts, once to write), a batch in memory at a time. ``imap``: the executor's ordered map, which runs
    the per-batch work (``export_batch.py``) on its workers; this process writes every file. Returns counts."""
    imap = imap or map
    chunks: list[pa.Array] = []  # each batch's accepted problem ids, unique, as compact Arrow strings
    teachers: Counter = Counter()
    sources: Counter = Counter()
    for tally in imap(Tallier(cfg), batches()):
        chunks.append(tally.problems)
        teachers.update(tally.teachers)
        sources.update(tally.sources)
        del tally
    problems = sorted_unique(chunks)
    del chunks
    release_free_memory()
    held_out = held_out_of(problems, cfg.validation_fraction, cfg.seed if cfg.seed is not None else seed)
    counts = {sp: {"rows": 0, "problems": 0} for sp in SPLITS}
    counts["validation"]["problems"] = len(held_out)
    counts["train"]["problems"] = len(problems) - len(held_out)
    del problems
    staging = Path(out)  # written in place: the stage hands a staging folder that is switched in whole
    staging.mkdir(parents=True, exist_ok=True)
    for old in [*(staging / st for st in ("chat", "completion", "dataset")), staging / "sft.jsonl",
                staging / "sft.parquet"]:  # an earlier export's files in a folder written again
        if old.is_dir():
            shutil.rmtree(old)
        else:
            old.unlink(missing_ok=True)
    files = _Files(staging, cfg.formats)
    try:
        for rendered in imap(Renderer(cfg, held_out), batches()):
            for sp in SPLITS:
                counts[sp]["rows"] += rendered.rows[sp]
            for part in rendered.parts:
                files.append(part)
            del rendered
        if "chat" in cfg.styles:
            files.ensure("sft", "sft")
    finally:
        files.close()
    release_free_memory()  # what the batches freed, before datasets maps the files
    if "dataset" in cfg.formats:
        _save_datasets(staging, cfg.styles, cfg.formats)
    if cfg.card:
        (staging / "README.md").write_text(dataset_card(teachers, sources, counts, cfg, provenance or {}),
                                           encoding="utf-8")
    return counts


def _data_files(cfg: ExportConfig, counts: dict[str, dict[str, int]]) -> list[dict[str, Any]]:
    ext = "parquet" if "parquet" in cfg.formats else "jsonl" if "jsonl" in cfg.formats else None
    if ext is None:
        return []
    return [
        {"config_name": style, "default": i == 0,
         "data_files": [{"split": sp, "path": f"{style}/{sp}.{ext}"} for sp in SPLITS if counts[sp]["rows"]]}
        for i, style in enumerate(cfg.styles)
    ]


def _size_category(n: int) -> str:
    for limit, name in ((1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"), (1_000_000, "100K<n<1M")):
        if n < limit:
            return name
    return "1M<n<10M"


def dataset_card(teachers: Counter, sources: Counter, counts: dict[str, dict[str, int]], cfg: ExportConfig,
                 provenance: dict[str, Any]) -> str:
    """README.md with hub metadata (configs, splits) and provenance: teachers, sources, counts, yields, recipe."""
    total = sum(c["rows"] for c in counts.values())
    meta = {"configs": _data_files(cfg, counts), "task_categories": ["text-generation"], "language": ["en"],
            "tags": ["math", "reasoning", "synthetic", "mathforge"], "size_categories": [_size_category(total)]}
    lines = ["---", dump_yaml(meta).rstrip(), "---", "", f"# {provenance.get('name') or 'mathforge SFT dataset'}", "",
             "Step-by-step math solutions written by teacher models, verified against gold answers and curated by "
             "mathforge (filters, benchmark decontamination, dedup, RFT distinct paths).", ""]
    lines += ["## Contents", "", "| split | rows | problems |", "|---|---:|---:|"]
    lines += [f"| {sp} | {c['rows']:,} | {c['problems']:,} |" for sp, c in counts.items()]
    seed = cfg.seed if cfg.seed is not None else provenance.get("seed", 0)
    lines += ["", f"Styles: {', '.join(cfg.styles)}. Formats: {', '.join(cfg.formats)}. The split is by problem "
              f"({cfg.validation_fraction:.0%} of problems held out, seed {seed}).", ""]
    lines += ["## Teachers", "", "| teacher | model | rows |", "|---|---|---:|"]
    lines += [f"| {t} | {m} | {n:,} |" for (t, m), n in sorted(teachers.items(), key=lambda x: -x[1])]
    lines += ["", "## Problem sources", "", ", ".join(f"{src} ({n:,} rows)" for src, n in sources.most_common()), ""]
    curate = provenance.get("curate")
    if curate:
        lines += _curate_section(curate)
    else:
        lines += ["## Curation", "", "Not curated by `mathforge curate`: no decontamination or dedup was recorded.", ""]
    if provenance.get("recipe"):
        lines += ["## Recipe", "", "```yaml", provenance["recipe"].rstrip(), "```", ""]
    lines += ["## Loading", "", "```python", "from datasets import load_dataset",
              f"ds = load_dataset(\"<this repo or folder>\", \"{cfg.styles[0] if cfg.styles else 'chat'}\")", "```", ""]
    return "\n".join(lines)


def _curate_section(curate: dict[str, Any]) -> list[str]:
    lines = ["## Yields", "", "| teacher | samples | correct | kept | yield |", "|---|---:|---:|---:|---:|"]
    for t, v in curate.get("teachers", {}).items():
        y = f"{v['yield']:.1%}" if v.get("yield") is not None else "-"
        lines.append(f"| {t} | {v['samples']:,} | {v['correct']:,} | {v['kept']:,} | {y} |")
    funnel = curate.get("funnel", {})
    lines += ["", "## Curation funnel", "", f"In: {funnel.get('records_in', 0):,} samples.", "",
              "| step | dropped (reason) | left |", "|---|---|---:|"]
    for st in funnel.get("steps", []):
        reasons = ", ".join(f"{k} {n:,}" for k, n in st["dropped"].items()) or "-"
        lines.append(f"| {st['step']} | {reasons} | {st['left']:,} |")
    dec = curate.get("decontam")
    lines += ["", "## Decontamination", ""]
    if not dec:
        lines.append("Decontamination was switched off.")
    else:
        benches = ", ".join(f"{b} ({n:,} items)" for b, n in dec.get("benchmarks", {}).items())
        lines.append(f"Word {dec.get('ngram')}-gram overlap against: {benches}.")
        hits = dec.get("hits", {})
        lines.append("No overlaps found." if not hits else "Dropped: " + "; ".join(
            f"{b}: " + ", ".join(f"{k} {n:,}" for k, n in c.items()) for b, c in hits.items()) + ".")
    if curate.get("pooled"):
        lines += ["", "Pooled from: " + ", ".join(curate["pooled"]) + "."]
    return lines + [""]


def push_to_hub(out: Path, repo: str, private: bool = True, token: str | None = None) -> str:
    """Upload the card and the split files (not the Arrow copies) to a hub dataset repo; returns its URL."""
    from huggingface_hub import HfApi

    try:
        api = HfApi(token=token)
        url = api.create_repo(repo, repo_type="dataset", private=private, exist_ok=True)
        api.upload_folder(folder_path=str(out), repo_id=repo, repo_type="dataset",
                          allow_patterns=["README.md", "chat/*", "completion/*"],
                          commit_message="mathforge export")
    except Exception as exc:  # network, auth, offline mode: one clear message
        raise MathforgeError(f"push to hub dataset '{repo}' failed: {type(exc).__name__}: {exc}") from None
    return str(url)


def curate_report(path: Path | None) -> dict[str, Any] | None:
    """A curate stage's report (``curate.json``), or None."""
    return json.loads(path.read_text(encoding="utf-8")) if path is not None and path.exists() else None


def latest_curate_report(folder: Path) -> dict[str, Any] | None:
    """The newest curate report beside a samples file that is not part of a run's lineage."""
    reports = sorted(folder.glob("curate*.json"), key=lambda p: p.stat().st_mtime)
    return curate_report(reports[-1]) if reports else None


def export_atomic(samples: list[dict[str, Any]], out: Path, cfg: ExportConfig, seed: int = 0,
                  provenance: dict[str, Any] | None = None) -> dict[str, Any]:
    """``export`` into a staging folder switched in whole: a kill never leaves a half-written ``out``."""
    from mathforge.pipeline.io import DirWriter

    staging = DirWriter(out)
    try:
        counts = export(samples, staging.path, cfg, seed, provenance)
        staging.commit()
    except BaseException:
        staging.abort()
        raise
    return counts


class ExportStage(Stage):
    name = "export"
    Config = ExportConfig
    inputs = {"samples": Port("samples", optional=True), "problems": Port("problems", optional=True),
              "curate_report": Port("curate-report", optional=True)}
    outputs = {"export": Port("export", folder=True)}
    stage_id = "export"

    def run(self, ctx: RunContext, cfg: ExportConfig) -> dict[str, Any]:
        out = ctx.output_dir("export", cfg.out_dir)
        recipe = ctx.path("recipe.yaml")
        provenance = {
            "name": ctx.run_dir.name,
            "seed": ctx.seed,
            "recipe": recipe.read_text(encoding="utf-8") if recipe.exists() else None,
            "curate": curate_report(ctx.input_path("curate_report")),
        }
        sample_styles = [s for s in cfg.styles if s != "synthesis"]
        counts = {sp: {"rows": 0, "problems": 0} for sp in SPLITS}
        if sample_styles:
            if not ctx.has_input("samples"):
                raise ConfigError(f"export: styles {', '.join(sample_styles)} need a samples table before this stage "
                                  "(a generate or verify stage); style synthesis alone needs only synthesised problems")
            # Arrow batches: under Ray they reach the workers as they are, the rows are made there
            counts = export_batches(ctx.input("samples").record_batches, out.path,
                                    cfg.model_copy(update={"styles": sample_styles}), seed=ctx.seed,
                                    provenance=provenance, imap=ctx.executor.imap)
        metrics: dict[str, Any] = {}
        if "synthesis" in cfg.styles:
            from mathforge.synth.export import export_synthesis

            if not ctx.has_input("problems"):
                raise ConfigError("export: style synthesis needs the problems of a synthesize stage before this one")
            problems = [Problem.from_row(r) for r in ctx.input("problems").to_pylist()]
            syn = export_synthesis(problems, out.path, cfg, ctx.seed)
            metrics["synthesis"] = {sp: c["rows"] for sp, c in syn.items()}
            if not sample_styles:
                counts = syn
        metrics |= {
            "accepted": counts["train"]["rows"] + counts["validation"]["rows"],
            "train": counts["train"]["rows"],
            "validation": counts["validation"]["rows"],
            "out_dir": str(out.final),
        }
        if cfg.push_to_hub:  # the staging folder holds exactly the files about to be switched in
            metrics["hub_url"] = push_to_hub(out.path, cfg.push_to_hub, cfg.private)
        return metrics
