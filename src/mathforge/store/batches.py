"""The batch table: one row per provider batch, next to the request ledger, so that every step survives a kill.

A local batch moves ``prepared`` (its JSONL written, its requests marked ``submitting`` in the same transaction,
nothing known at the provider) → ``uploaded`` (the provider's file id recorded) → ``submitted`` (the provider's batch
id recorded, requests ``submitted``) → ``collected`` (every request of it answered or failed, in one transaction).
The local id hashes the batch's content and this ledger's own random id; it tags the provider's file (its name) and
batch (``metadata``), which is how a run killed between a provider call and its record finds what it already did.
"""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass
from typing import Any, Iterable, Sequence

from mathforge.store.ledger import FAILED, PENDING, SUBMITTED, SUBMITTING, Ledger, canonical_json

PREPARED, UPLOADED, COLLECTED = "prepared", "uploaded", "collected"

SCHEMA = """
CREATE TABLE IF NOT EXISTS batches (
    id TEXT PRIMARY KEY,
    teacher TEXT NOT NULL,
    provider TEXT NOT NULL,
    state TEXT NOT NULL,
    n INTEGER NOT NULL,
    bytes INTEGER NOT NULL,
    reserved REAL NOT NULL DEFAULT 0,
    file_id TEXT,
    provider_id TEXT,
    provider_status TEXT,
    error TEXT,
    created REAL NOT NULL,
    updated REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS ledger_meta (name TEXT PRIMARY KEY, value TEXT NOT NULL);
"""

_COLS = "id, teacher, provider, state, n, bytes, reserved, file_id, provider_id, provider_status, error, created"


@dataclass
class BatchRow:
    id: str
    teacher: str
    provider: str
    state: str
    n: int
    bytes: int
    reserved: float
    file_id: str | None
    provider_id: str | None
    provider_status: str | None
    error: str | None
    created: float


class BatchStore:
    """Batch rows and the request-state moves that go with them, each one SQLite transaction."""

    def __init__(self, ledger: Ledger):
        self.ledger = ledger
        for stmt in SCHEMA.split(";"):
            if stmt.strip():
                ledger.query(stmt)  # CREATE ... IF NOT EXISTS: idempotent, and older ledgers gain the tables
        # A random id per ledger: two run directories with the same requests never adopt each other's batches.
        with ledger.transaction() as conn:
            conn.execute("INSERT OR IGNORE INTO ledger_meta VALUES ('ledger_id', ?)", (uuid.uuid4().hex,))
        self.ledger_id: str = ledger.query("SELECT value FROM ledger_meta WHERE name='ledger_id'")[0][0]

    # -- moves ---------------------------------------------------------------------------------------------------
    def prepare(self, batch_id: str, teacher: str, provider: str, keys: Sequence[str], nbytes: int,
                reserved: float) -> int:
        """Record a new batch and mark its pending requests ``submitting``; returns how many were marked."""
        now = time.time()
        with self.ledger.transaction() as conn:
            conn.execute(
                f"INSERT OR IGNORE INTO batches ({_COLS}, updated) VALUES (?,?,?,?,?,?,?,NULL,NULL,NULL,NULL,?,?)",
                (batch_id, teacher, provider, PREPARED, len(keys), nbytes, reserved, now, now),
            )
            marked = 0
            for i in range(0, len(keys), 500):
                chunk = list(keys[i : i + 500])
                cur = conn.execute(
                    f"UPDATE requests SET status='{SUBMITTING}', batch_id=?, updated=? "
                    f"WHERE status='{PENDING}' AND key IN ({','.join('?' * len(chunk))})",
                    [batch_id, now, *chunk],
                )
                marked += cur.rowcount
        return marked

    def set_file(self, batch_id: str, file_id: str) -> None:
        with self.ledger.transaction() as conn:
            conn.execute("UPDATE batches SET state=?, file_id=?, updated=? WHERE id=?",
                         (UPLOADED, file_id, time.time(), batch_id))

    def set_submitted(self, batch_id: str, provider_id: str, status: str) -> None:
        now = time.time()
        with self.ledger.transaction() as conn:
            conn.execute("UPDATE batches SET state=?, provider_id=?, provider_status=?, updated=? WHERE id=?",
                         (SUBMITTED, provider_id, status, now, batch_id))
            conn.execute(f"UPDATE requests SET status='{SUBMITTED}', updated=? WHERE batch_id=? AND status=?",
                         (now, batch_id, SUBMITTING))

    def set_status(self, batch_id: str, status: str) -> None:
        with self.ledger.transaction() as conn:
            conn.execute("UPDATE batches SET provider_status=?, updated=? WHERE id=?", (status, time.time(), batch_id))

    def collect(self, batch_id: str, ok: Iterable[tuple], failed: Iterable[tuple[str, str]],
                leftover_error: str, status: str) -> tuple[int, int]:
        """Commit a finished batch at once: answers, per-request errors, and ``leftover_error`` for the requests
        the provider returned nothing for (expired, cancelled, failed batch). Returns (answered, failed)."""
        now = time.time()
        n_ok = n_failed = 0
        with self.ledger.transaction() as conn:
            for key, text, fr, ti, to, resp, lat in ok:
                n_ok += conn.execute(
                    "UPDATE requests SET status='ok', text=?, finish_reason=?, tokens_in=?, tokens_out=?, response=?, "
                    "latency=?, attempts=attempts+1, error=NULL, updated=? WHERE key=? AND batch_id=? AND status IN "
                    f"('{SUBMITTING}','{SUBMITTED}')",
                    (text, fr, ti, to, canonical_json(resp) if resp else None, lat, now, key, batch_id),
                ).rowcount
            for key, error in failed:
                n_failed += conn.execute(
                    f"UPDATE requests SET status='{FAILED}', error=?, attempts=attempts+1, updated=? "
                    f"WHERE key=? AND batch_id=? AND status IN ('{SUBMITTING}','{SUBMITTED}')",
                    (error, now, key, batch_id),
                ).rowcount
            n_failed += conn.execute(
                f"UPDATE requests SET status='{FAILED}', error=?, updated=? "
                f"WHERE batch_id=? AND status IN ('{SUBMITTING}','{SUBMITTED}')",
                (leftover_error, now, batch_id),
            ).rowcount
            conn.execute("UPDATE batches SET state=?, provider_status=?, reserved=0, updated=? WHERE id=?",
                         (COLLECTED, status, now, batch_id))
        return n_ok, n_failed

    def abandon(self, batch_id: str, error: str) -> int:
        """A prepared batch the provider never received: its requests go back to pending; returns how many."""
        now = time.time()
        with self.ledger.transaction() as conn:
            n = conn.execute(f"UPDATE requests SET status='{PENDING}', batch_id=NULL, updated=? "
                             f"WHERE batch_id=? AND status='{SUBMITTING}'", (now, batch_id)).rowcount
            conn.execute("UPDATE batches SET state=?, error=?, reserved=0, updated=? WHERE id=?",
                         (COLLECTED, error, now, batch_id))
        return n

    # -- reading -------------------------------------------------------------------------------------------------
    def open_batches(self, teacher: str | None = None) -> list[BatchRow]:
        q, args = f"SELECT {_COLS} FROM batches WHERE state != ?", [COLLECTED]
        if teacher:
            q += " AND teacher=?"
            args.append(teacher)
        return [BatchRow(*r) for r in self.ledger.query(q + " ORDER BY created", args)]

    def all_batches(self) -> list[BatchRow]:
        return [BatchRow(*r) for r in self.ledger.query(f"SELECT {_COLS} FROM batches ORDER BY created")]

    def batch_requests(self, batch_id: str) -> list[tuple[str, dict[str, Any], str]]:
        """(key, request record, status) of every request in a batch, in key order (how its file was written)."""
        rows = self.ledger.query("SELECT key, request, status FROM requests WHERE batch_id=? ORDER BY key", (batch_id,))
        return [(k, json.loads(r), s) for k, r, s in rows]

    def reserved(self, teacher: str) -> float:
        return self.ledger.query("SELECT COALESCE(SUM(reserved),0) FROM batches WHERE teacher=? AND state!=?",
                                 (teacher, COLLECTED))[0][0]


__all__ = ["BatchStore", "BatchRow", "PREPARED", "UPLOADED", "SUBMITTED", "COLLECTED"]
