"""The viewer's records: every sample (run and eval) with its verdict, and every reject, as one flat list of items."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mathforge.evaluate.compare import find_results
from mathforge.pipeline.state import RunState
from mathforge.store import read_rows

STATUSES = ("correct", "incorrect", "undecided", "rejected")


@dataclass
class Item:
    """One row the viewer shows: a sample with its verdict, or a rejected record with its stage and reason."""

    source: str
    id: str
    problem_id: str
    question: str
    status: str
    gold: str | None = None
    teacher: str | None = None
    text: str = ""
    extracted: str | None = None
    normalized: str | None = None
    method: str | None = None
    extractor: str | None = None
    reason: str | None = None  # the verdict's reason, or why the record was rejected
    stage: str | None = None  # rejects: the stage that dropped it
    extra: dict[str, Any] = field(default_factory=dict)  # benchmark, mode, tokens, finish reason

    def haystack(self) -> str:
        return "\n".join(x for x in (self.id, self.problem_id, self.question, self.text, self.extracted or "") if x).lower()


def _status(correct: bool | None) -> str:
    return "correct" if correct is True else "incorrect" if correct is False else "undecided"


def sample_item(source: str, r: dict[str, Any]) -> Item:
    extra = {k: r[k] for k in ("benchmark", "mode", "tokens_out", "finish_reason", "sample_index") if r.get(k) is not None}
    return Item(
        source=source, id=r["id"], problem_id=r["problem_id"], question=r.get("question") or "",
        status=_status(r.get("correct")), gold=r.get("gold"), teacher=r.get("teacher"), text=r.get("text") or "",
        extracted=r.get("extracted"), normalized=r.get("normalized"), method=r.get("method"),
        extractor=r.get("extractor"), reason=r.get("reason"), extra=extra,
    )


def rejected_item(r: dict[str, Any], index: int) -> Item:
    try:
        rec = json.loads(r["record"])
    except (TypeError, json.JSONDecodeError):
        rec = {"raw": r.get("record")}
    if not isinstance(rec, dict):
        rec = {"raw": rec}
    text = rec.get("text") or json.dumps(rec, ensure_ascii=False, indent=1, default=str)
    return Item(
        source="rejected", id=str(rec.get("id") or r.get("record_id") or f"{r.get('stage')}#{index}"),
        problem_id=str(rec.get("problem_id") or rec.get("id") or r.get("record_id") or ""),
        question=str(rec.get("question") or rec.get("problem") or ""), status="rejected", gold=rec.get("gold"),
        teacher=rec.get("teacher"), text=text, extracted=rec.get("extracted"), normalized=rec.get("normalized"),
        method=rec.get("method"), extractor=rec.get("extractor"), reason=r.get("reason"), stage=r.get("stage"),
    )


def load_items(run: str | Path) -> list[Item]:
    """The run's samples (verified table, else its latest), each eval's answers, and rejected.parquet."""
    run = Path(run)
    items: list[Item] = []
    tables = RunState(run).latest_tables()
    samples = run / "verified.parquet" if (run / "verified.parquet").exists() else run / tables.get("samples", "")
    if samples.is_file():
        items += [sample_item(samples.stem, r) for r in read_rows(samples)]
    for folder, _ in find_results(run):
        if (folder / "samples.parquet").exists():
            items += [sample_item(f"eval:{folder.name}", r) for r in read_rows(folder / "samples.parquet")]
    if (run / "rejected.parquet").exists():
        items += [rejected_item(r, i) for i, r in enumerate(read_rows(run / "rejected.parquet"))]
    return items


@dataclass
class Query:
    """The viewer's filters, as they appear in the page's URL."""

    status: str = ""
    source: str = ""
    teacher: str = ""
    reason: str = ""
    q: str = ""
    page: int = 1

    @classmethod
    def from_params(cls, params: dict[str, list[str]]) -> "Query":
        get = lambda k: (params.get(k) or [""])[0].strip()
        page = get("page")
        return cls(get("status"), get("source"), get("teacher"), get("reason"), get("q"),
                   int(page) if page.isdigit() and int(page) > 0 else 1)

    def matches(self, item: Item) -> bool:
        if self.status and item.status != self.status:
            return False
        if self.source and item.source != self.source:
            return False
        if self.teacher and item.teacher != self.teacher:
            return False
        if self.reason and not (item.status == "rejected" and item.reason == self.reason):
            return False
        return not self.q or self.q.lower() in item.haystack()


def facets(items: list[Item]) -> dict[str, list[str]]:
    """The values each filter offers, from what the run holds."""
    return {
        "status": [s for s in STATUSES if any(i.status == s for i in items)],
        "source": sorted({i.source for i in items}),
        "teacher": sorted({i.teacher for i in items if i.teacher}),
        "reason": sorted({i.reason for i in items if i.status == "rejected" and i.reason}),
    }
