"""The request ledger: every model request by content key, with status, attempts, response, usage and error.

The ledger is both the cache and the resume point. A response is committed the moment it arrives (SQLite in WAL
mode), so a process killed at any instant loses at most the requests that were in flight. Keys hash what was sent
(model, endpoint, messages, sampling parameters, sample index, seed) and never code, so editing a parser keeps every
paid-for response.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Iterator, NamedTuple, Sequence

SCHEMA = """
CREATE TABLE IF NOT EXISTS requests (
    key TEXT PRIMARY KEY,
    teacher TEXT NOT NULL,
    model TEXT NOT NULL,
    request TEXT NOT NULL,
    status TEXT NOT NULL DEFAULT 'pending',
    attempts INTEGER NOT NULL DEFAULT 0,
    abandoned INTEGER NOT NULL DEFAULT 0,
    text TEXT,
    finish_reason TEXT,
    tokens_in INTEGER,
    tokens_out INTEGER,
    response TEXT,
    error TEXT,
    latency REAL,
    created REAL NOT NULL,
    updated REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS requests_status ON requests(status);
"""

PENDING, OK, FAILED = "pending", "ok", "failed"
# The asynchronous batch lifecycle (``mathforge.engine.batch``): a request is ``submitting`` from the moment its local
# batch file is recorded (before any upload), and ``submitted`` once the provider's batch id is recorded. Neither is
# ever sent again by the online path; only the batch runner moves them on (to ok, failed, or back to pending).
SUBMITTING, SUBMITTED = "submitting", "submitted"
IN_BATCH = (SUBMITTING, SUBMITTED)

# Columns added after the first release, with their types: ledgers written before them are migrated on open.
_ADDED_COLUMNS = {
    "batch_id": "TEXT",
    # HTTP attempts of the request that the engine cut short (``attempts`` counts every attempt, these included)
    "abandoned": "INTEGER NOT NULL DEFAULT 0",
}


def canonical_json(obj: Any) -> str:
    """JSON with sorted keys and no whitespace: the same request always hashes the same."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def request_key(
    *,
    model: str,
    endpoint: str,
    messages: Sequence[dict[str, str]],
    params: dict[str, Any],
    sample_index: int,
) -> str:
    """Content key of one request: sha256 over the canonical request (the seed lives in ``params``)."""
    payload = {
        "model": model,
        "endpoint": endpoint,
        "messages": [{"role": m["role"], "content": m["content"]} for m in messages],
        "params": {k: v for k, v in params.items() if v is not None},
        "sample_index": sample_index,
    }
    return hashlib.sha256(canonical_json(payload).encode("utf-8")).hexdigest()


@dataclass
class LedgerRow:
    key: str
    teacher: str
    model: str
    request: dict[str, Any]
    status: str
    attempts: int
    text: str | None
    finish_reason: str | None
    tokens_in: int | None
    tokens_out: int | None
    response: dict[str, Any] | None
    error: str | None
    latency: float | None


class Answer(NamedTuple):
    """What a sample takes from an answered request."""

    text: str | None
    finish_reason: str | None
    tokens_in: int | None
    tokens_out: int | None


_COLUMNS = "key, teacher, model, request, status, attempts, text, finish_reason, tokens_in, tokens_out, response, error, latency"


def _row(t: tuple) -> LedgerRow:
    return LedgerRow(
        key=t[0], teacher=t[1], model=t[2], request=json.loads(t[3]), status=t[4], attempts=t[5], text=t[6],
        finish_reason=t[7], tokens_in=t[8], tokens_out=t[9], response=json.loads(t[10]) if t[10] else None,
        error=t[11], latency=t[12],
    )


class Ledger:
    """SQLite (WAL) store of model requests; safe to share between threads of one process."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.RLock()
        self._conn = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None, timeout=30)
        self._conn.execute("PRAGMA journal_mode=WAL")
        # NORMAL in WAL mode: a committed transaction survives a process crash (SIGKILL); only an OS crash can lose
        # the last commits, which are then simply re-sent.
        self._conn.execute("PRAGMA synchronous=NORMAL")
        self._conn.executescript(SCHEMA)
        self._migrate()

    def _migrate(self) -> None:
        """Add the columns newer code needs to a ledger written by older code (additive only; nothing rewritten)."""
        with self._lock:
            have = {r[1] for r in self._conn.execute("PRAGMA table_info(requests)")}
            for col, typ in _ADDED_COLUMNS.items():
                if col not in have:
                    self._conn.execute(f"ALTER TABLE requests ADD COLUMN {col} {typ}")

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """One atomic write transaction (for stores layered on the ledger, such as the batch table)."""
        with self._lock:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                yield self._conn
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
            self._conn.execute("COMMIT")

    def query(self, sql: str, args: Sequence[Any] = ()) -> list[tuple]:
        """Read rows with a SQL query (for stores layered on the ledger)."""
        with self._lock:
            return self._conn.execute(sql, args).fetchall()

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    def __enter__(self) -> "Ledger":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- writing -------------------------------------------------------------------------------------------------
    def register(self, items: Iterable[tuple[str, str, str, dict[str, Any]]]) -> None:
        """Record requests (key, teacher, model, request) as pending unless already known."""
        now = time.time()
        with self._lock:
            self._conn.execute("BEGIN")
            self._conn.executemany(
                "INSERT OR IGNORE INTO requests (key, teacher, model, request, status, created, updated) "
                "VALUES (?, ?, ?, ?, 'pending', ?, ?)",
                ((k, t, m, canonical_json(r), now, now) for k, t, m, r in items),  # streamed, not listed
            )
            self._conn.execute("COMMIT")

    def record_ok(
        self,
        key: str,
        *,
        text: str,
        finish_reason: str | None,
        tokens_in: int | None,
        tokens_out: int | None,
        response: dict[str, Any] | None = None,
        latency: float | None = None,
        attempts: int = 1,
    ) -> None:
        """Commit one response. A key already answered keeps its first response (exactly once)."""
        self.record_ok_many([(key, text, finish_reason, tokens_in, tokens_out, response, latency, attempts)])

    def record_ok_many(self, items: Sequence[tuple]) -> None:
        """Commit many (key, text, finish_reason, tokens_in, tokens_out, response, latency, attempts) in one go."""
        now = time.time()
        with self._lock:
            self._conn.execute("BEGIN")
            self._conn.executemany(
                "UPDATE requests SET status='ok', text=?, finish_reason=?, tokens_in=?, tokens_out=?, response=?, "
                "latency=?, attempts=attempts+?, error=NULL, updated=? WHERE key=? AND status!='ok'",
                [
                    (text, fr, ti, to, canonical_json(resp) if resp else None, lat, att, now, key)
                    for key, text, fr, ti, to, resp, lat, att in items
                ],
            )
            self._conn.execute("COMMIT")

    def record_failure(self, key: str, error: str, *, final: bool, attempts: int = 1, abandoned: int = 0) -> None:
        """Note a failed (or ``abandoned``) attempt; ``final`` marks the request failed (re-sent only by ``mathforge
        retry``). Attempts are counted even after the request was answered (a re-send's loser still costs a call)."""
        with self._lock:
            self._conn.execute(
                "UPDATE requests SET status=CASE WHEN status='ok' THEN status ELSE ? END, "
                "error=CASE WHEN status='ok' THEN error ELSE ? END, attempts=attempts+?, abandoned=abandoned+?, "
                "updated=CASE WHEN status='ok' THEN updated ELSE ? END WHERE key=?",
                (FAILED if final else PENDING, error, attempts, abandoned, time.time(), key),
            )

    def reset_failed(self, keys: Iterable[str] | None = None) -> int:
        """Mark failed requests pending again so the next run re-sends them; returns how many."""
        with self._lock:
            if keys is None:
                cur = self._conn.execute("UPDATE requests SET status='pending', batch_id=NULL WHERE status='failed'")
            else:
                cur = self._conn.executemany(
                    "UPDATE requests SET status='pending', batch_id=NULL WHERE status='failed' AND key=?",
                    [(k,) for k in keys],
                )
            return cur.rowcount

    # -- reading -------------------------------------------------------------------------------------------------
    def get(self, key: str) -> LedgerRow | None:
        with self._lock:
            t = self._conn.execute(f"SELECT {_COLUMNS} FROM requests WHERE key=?", (key,)).fetchone()
        return _row(t) if t else None

    def _by_key(self, columns: str, keys: Sequence[str], where: str = "") -> Iterator[tuple]:
        """Rows (key first) of the known keys, 500 keys a query, each query's rows fetched under the lock."""
        for i in range(0, len(keys), 500):
            chunk = list(keys[i : i + 500])
            q = f"SELECT {columns} FROM requests WHERE key IN ({','.join('?' * len(chunk))}){where}"
            with self._lock:
                rows = self._conn.execute(q, chunk).fetchall()
            yield from rows

    def get_many(self, keys: Sequence[str]) -> dict[str, LedgerRow]:
        return {t[0]: _row(t) for t in self._by_key(_COLUMNS, keys)}

    def answers(self, keys: Sequence[str]) -> dict[str, Answer]:
        """The answer of each key that has one (status ok), with only what a sample needs: parsing the request and
        raw response of every row too (``get_many``) cost a 20k-request window more memory than its samples."""
        cols = "key, text, finish_reason, tokens_in, tokens_out"
        return {t[0]: Answer(*t[1:]) for t in self._by_key(cols, keys, " AND status='ok'")}

    def statuses(self, keys: Sequence[str]) -> dict[str, str]:
        """Status of each known key (absent keys are not in the result)."""
        return dict(self._by_key("key, status", keys))

    def rows(self, status: str | None = None, teacher: str | None = None) -> Iterator[LedgerRow]:
        q, args = f"SELECT {_COLUMNS} FROM requests", []
        cond = []
        if status:
            cond.append("status=?")
            args.append(status)
        if teacher:
            cond.append("teacher=?")
            args.append(teacher)
        if cond:
            q += " WHERE " + " AND ".join(cond)
        with self._lock:
            fetched = self._conn.execute(q, args).fetchall()
        return (_row(t) for t in fetched)

    def counts(self) -> dict[str, int]:
        with self._lock:
            return dict(self._conn.execute("SELECT status, COUNT(*) FROM requests GROUP BY status").fetchall())

    def answered_since(self, since: float) -> int:
        """How many requests got their response at or after ``since`` (epoch seconds): what a run actually sent."""
        with self._lock:
            return self._conn.execute(
                "SELECT COUNT(*) FROM requests WHERE status='ok' AND updated >= ?", (since,)
            ).fetchone()[0]

    def calls(self) -> dict[str, dict[str, int]]:
        """HTTP attempts per teacher over every request: all, abandoned, and the answers kept."""
        with self._lock:
            rows = self._conn.execute(
                "SELECT teacher, COALESCE(SUM(attempts),0), COALESCE(SUM(abandoned),0), "
                "COALESCE(SUM(status='ok'),0) FROM requests GROUP BY teacher"
            ).fetchall()
        return {t: {"calls": c, "abandoned": a, "answers": k} for t, c, a, k in rows}

    def usage(self) -> dict[str, dict[str, int]]:
        """Tokens and requests per teacher over answered requests."""
        with self._lock:
            rows = self._conn.execute(
                "SELECT teacher, COUNT(*), COALESCE(SUM(tokens_in),0), COALESCE(SUM(tokens_out),0) "
                "FROM requests WHERE status='ok' GROUP BY teacher"
            ).fetchall()
        return {t: {"requests": n, "tokens_in": ti, "tokens_out": to} for t, n, ti, to in rows}
