"""``verify_rows``: the verify stage's batch API: cheap layers inline, symbolic cases fanned out over the pool."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor

from mathforge.verify.check import VERDICT_COLUMNS, SymbolicTask, Verdict, finish, local_verdict
from mathforge.verify.pool import get_pool


def _choices_of(row: dict) -> dict | str | None:
    """Multiple-choice options from ``row["choices"]`` or ``row["meta"]["options"|"choices"]`` (meta may be JSON)."""
    if row.get("choices"):
        return row["choices"]
    meta = row.get("meta")
    if isinstance(meta, str) and meta.strip().startswith("{"):
        try:
            meta = json.loads(meta)
        except json.JSONDecodeError:
            meta = None
    if isinstance(meta, dict):
        return meta.get("options") or meta.get("choices")
    return None


def verify_rows(
    rows: list[dict],
    *,
    workers: int | None = None,
    timeout: float = 5.0,
    extractors: list[str] | None = None,
) -> list[dict]:
    """Return each row plus the verdict columns (extracted, normalized, correct, method, extractor, reason)."""
    verdicts: list[Verdict | None] = [None] * len(rows)
    pending: list[tuple[int, SymbolicTask]] = []
    for i, row in enumerate(rows):
        result = local_verdict(row.get("text"), row.get("gold"), extractors=extractors, choices=_choices_of(row))
        if isinstance(result, Verdict):
            verdicts[i] = result
        else:
            pending.append((i, result))
    if pending:
        pool = get_pool(workers)

        def run(item: tuple[int, SymbolicTask]) -> tuple[int, Verdict]:
            i, task = item
            status, value = pool.call("compare", task.args(), timeout)
            return i, finish(task, status, value, timeout)

        # threads only wait on worker pipes; one per worker keeps every core busy
        with ThreadPoolExecutor(max_workers=pool.size, thread_name_prefix="verify") as executor:
            for i, verdict in executor.map(run, pending):
                verdicts[i] = verdict
    out = []
    for row, verdict in zip(rows, verdicts):
        columns = verdict.to_columns() if verdict else dict.fromkeys(VERDICT_COLUMNS)
        out.append({**row, **columns})
    return out
