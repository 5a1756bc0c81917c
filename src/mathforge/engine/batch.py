"""Provider batch APIs (half-price, answered within a day), submitted exactly once and collected after any kill.

The runner owns the lifecycle; a provider (``backends/openai_batch.py``, ``backends/anthropic_batch.py``) only
speaks its API. Order of writes, so that a SIGKILL at any instant neither submits a request twice nor loses a result:
1. the JSONL is written (atomically) and, in ONE transaction, the batch row is recorded and its requests marked
   ``submitting`` — before anything reaches the provider;
2. before uploading, the provider's file list is searched for the batch's file name; the file id is recorded;
3. before creating, the provider's batch list is searched for the batch's tag (``metadata``); a create that fails or
   whose answer is lost is reconciled the same way before it is ever tried again; the batch id is recorded and the
   requests become ``submitted``;
4. polling (with backoff) until the batch ends; then its output and error files are read and committed in ONE
   transaction: answers ``ok``, per-request errors and requests the provider returned nothing for ``failed``
   (``mathforge retry`` re-sends those, in batch or online mode).
``mathforge run`` may stop waiting (``max_wait``) while batches are in flight: it exits with ``EXIT_IN_FLIGHT`` and a
later ``mathforge run`` or ``mathforge status RUN`` resumes from the batch table.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Protocol, Sequence, TypeVar

from pydantic import Field

from mathforge.request import Completion, GenRequest
from mathforge.config import StrictModel
from mathforge.engine.accounting import Pricing, TeacherStats
from mathforge.engine.cost import usd
from mathforge.errors import EXIT_IN_FLIGHT, MathforgeError
from mathforge.store.batches import PREPARED, SUBMITTED, UPLOADED, BatchRow, BatchStore
from mathforge.store.ledger import PENDING, Ledger

TAG_KEY = "mathforge_batch"
T = TypeVar("T")


class BatchOptions(StrictModel):
    """How a teacher in ``mode: batch`` packs, submits and waits for its batches (defaults: OpenAI's limits)."""

    max_requests: int = Field(50_000, ge=1, description="requests per batch (OpenAI: 50,000; Anthropic: 100,000)")
    max_bytes: int = Field(200_000_000, ge=1024, description="bytes per batch file (OpenAI: 200 MB; Anthropic: 256 MB)")
    completion_window: str = Field("24h", description="the provider's completion window")
    price_factor: float = Field(0.5, gt=0, le=1, description="batch price as a share of the online price (50% off)")
    poll_interval: float = Field(30.0, gt=0, description="seconds between status checks at first")
    poll_max_interval: float = Field(600.0, gt=0, description="longest wait between checks while nothing changes")
    max_wait: float | None = Field(
        None, ge=0, description="seconds `mathforge run` waits for batches before exiting with code 75 "
        "(they stay in flight; rerun or `mathforge status RUN` collects them); default: until they end")


class BatchesInFlight(MathforgeError):
    """Batches were submitted and are not done yet: a later run or ``mathforge status RUN`` collects them."""

    exit_code = EXIT_IN_FLIGHT


class TransientError(Exception):
    """A provider call that may succeed when tried again (connection trouble, 429, 5xx)."""


class SdkErrors:
    """A provider SDK's errors → TransientError (retry after reconciling) or BackendError (stop), secrets removed.

    ``sdk`` names the module (``openai``, ``anthropic``): both raise ``APIStatusError`` and ``APIConnectionError``."""

    def __init__(self, sdk: str, what: str, base_url: str, secrets: list[str],
                 transient: tuple[int, ...] = (408, 409, 429)):
        self.sdk, self.what, self.base_url, self.secrets, self.transient = sdk, what, base_url, secrets, transient

    def __enter__(self) -> None:
        return None

    def __exit__(self, et: Any, exc: Any, tb: Any) -> bool:
        import importlib

        from mathforge.engine.retry import redact
        from mathforge.errors import BackendError

        if exc is None:
            return False
        sdk = importlib.import_module(self.sdk)
        if isinstance(exc, sdk.APIStatusError):
            msg = redact(f"{self.what} at {self.base_url}: {exc.status_code} {exc.message}", self.secrets)
            if exc.status_code in self.transient or exc.status_code >= 500:
                raise TransientError(msg) from None
            raise BackendError(msg) from None
        if isinstance(exc, sdk.APIConnectionError):
            raise TransientError(redact(f"{self.what} at {self.base_url}: {exc}", self.secrets)) from None
        return False


@dataclass
class BatchInfo:
    """A provider batch as the runner needs it."""

    id: str
    status: str  # the provider's own word (validating, in_progress, completed, expired, ended, ...)
    done: bool  # ended: results (possibly partial) can be read
    handle: dict[str, Any] = field(default_factory=dict)  # what ``results`` needs (file ids, results url)
    error: str | None = None
    created: float = 0.0


Result = tuple[str, Completion | None, str | None]  # (custom_id, answer, or the error)


class BatchProvider(Protocol):
    name: str
    uploads: bool  # input goes through a file upload (OpenAI) or inline in the create call (Anthropic)

    def line(self, request: GenRequest) -> dict[str, Any]: ...
    def find_file(self, filename: str, nbytes: int) -> str | None: ...
    def upload(self, filename: str, path: Path) -> str: ...
    def find_batch(self, tag: str, since: float, n: int, exclude: frozenset[str]) -> BatchInfo | None: ...
    def create(self, tag: str, file_id: str | None, path: Path) -> BatchInfo: ...
    def retrieve(self, provider_id: str) -> BatchInfo: ...
    def results(self, info: BatchInfo) -> Iterator[Result]: ...
    def close(self) -> None: ...


def estimate_tokens_in(request: GenRequest) -> int:
    """Prompt tokens before the provider counts them: 4 characters a token, plus the chat framing."""
    return sum(len(m.get("content") or "") for m in request.messages) // 4 + 8


class BatchRunner:
    """One teacher's batches in one run directory: submit what is pending, collect what is in flight."""

    def __init__(self, teacher: str, provider: BatchProvider, ledger: Ledger, options: BatchOptions, *,
                 pricing: Pricing, budget: float | None = None, stats: TeacherStats | None = None,
                 on_progress: Callable[[int, str], None] | None = None, sleep: Callable[[float], None] = time.sleep):
        self.teacher, self.provider, self.ledger, self.options = teacher, provider, ledger, options
        self.store = BatchStore(ledger)
        self.online_pricing = pricing
        self.pricing = Pricing(pricing.input_per_m * options.price_factor, pricing.output_per_m * options.price_factor)
        self.budget = budget
        self.stats = stats or TeacherStats()
        self.on_progress = on_progress
        self.sleep = sleep
        self.dir = ledger.path.parent / "batches"
        self._shown = 0.0

    # -- the whole job -------------------------------------------------------------------------------------------
    def run(self, requests: Sequence[GenRequest]) -> None:
        """Resume open batches, submit pending requests, and wait (up to ``max_wait``) until every batch ended."""
        self.poll_once()  # batches of an earlier run first: recorded, uploaded or submitted, never again
        self.submit(requests)
        self.wait()

    def submit(self, requests: Sequence[GenRequest]) -> int:
        """Pack the pending requests into batches within the limits and the budget; returns batches submitted."""
        status = self.ledger.statuses([r.key for r in requests])
        todo = [r for r in requests if status.get(r.key) == PENDING]
        submitted = 0
        for chunk, lines in self._chunks(todo):
            chunk, lines = self._within_budget(chunk, lines)
            if not chunk:
                break
            batch = self._prepare(chunk, lines)
            self._advance(batch)
            submitted += 1
            if self.stats.stopped:
                break
        return submitted

    def wait(self) -> None:
        """Poll with backoff until no batch of this teacher is open, or raise BatchesInFlight after ``max_wait``."""
        o = self.options
        deadline = None if o.max_wait is None else time.monotonic() + o.max_wait
        interval = o.poll_interval
        while self.store.open_batches(self.teacher):
            if deadline is not None and time.monotonic() + interval > deadline:
                raise self.in_flight()
            self.sleep(interval)
            changed = self.poll_once()
            interval = o.poll_interval if changed else min(interval * 1.5, o.poll_max_interval)

    def poll_once(self) -> int:
        """Move every open batch of this teacher one step on (upload, submit, check, collect); returns steps taken."""
        return sum(self._advance(b) for b in self.store.open_batches(self.teacher))

    def in_flight(self) -> BatchesInFlight:
        open_ = self.store.open_batches(self.teacher)
        n = sum(b.n for b in open_)
        ids = ", ".join(b.provider_id or b.id for b in open_[:3]) + (" …" if len(open_) > 3 else "")
        return BatchesInFlight(
            f"teacher {self.teacher}: {len(open_)} batches ({n} requests) still in flight at the provider ({ids}); "
            "they are recorded in the ledger and will not be submitted again: rerun `mathforge run` or "
            "`mathforge status RUN_DIR` later to collect them")

    # -- packing -------------------------------------------------------------------------------------------------
    def _chunks(self, todo: Sequence[GenRequest]) -> Iterator[tuple[list[GenRequest], list[bytes]]]:
        o = self.options
        chunk: list[GenRequest] = []
        lines: list[bytes] = []
        size = 0
        for r in todo:
            line = (json.dumps(self.provider.line(r), ensure_ascii=False, separators=(",", ":")) + "\n").encode()
            if len(line) > o.max_bytes:
                self.ledger.record_failure(r.key, f"request is {len(line)} bytes, over the batch file limit "
                                                  f"max_bytes={o.max_bytes}", final=True, attempts=0)
                self.stats.failed += 1
                continue
            if chunk and (len(chunk) >= o.max_requests or size + len(line) > o.max_bytes):
                yield chunk, lines
                chunk, lines, size = [], [], 0
            chunk.append(r)
            lines.append(line)
            size += len(line)
        if chunk:
            yield chunk, lines

    def worst_case(self, request: GenRequest) -> float:
        return self.pricing.cost(estimate_tokens_in(request), request.params.max_tokens)

    def _within_budget(self, chunk: list[GenRequest], lines: list[bytes]) -> tuple[list[GenRequest], list[bytes]]:
        """The longest prefix of the chunk whose worst-case cost fits under the cap (spent + in flight + it)."""
        if self.budget is None:
            return chunk, lines
        spent = self.spent()
        room = self.budget - spent - self.store.reserved(self.teacher)
        total, keep = 0.0, 0
        for r in chunk:
            total += self.worst_case(r)
            if total > room:
                break
            keep += 1
        if keep < len(chunk):
            self.stats.stopped = (f"budget {usd(self.budget)} reached (spent {usd(spent)}, in flight worst case "
                                  f"{usd(self.store.reserved(self.teacher))})")
        return chunk[:keep], lines[:keep]

    def costs(self) -> Any:
        """This teacher's ``TeacherCost`` in this run directory, from the ledger (online and batch answers)."""
        from mathforge.engine.cost import ledger_costs

        p = self.online_pricing
        return ledger_costs(self.ledger, self.teacher, {
            "price_input_per_m": p.input_per_m, "price_output_per_m": p.output_per_m, "budget": self.budget,
            "mode": "batch", "batch": {"price_factor": self.options.price_factor}})

    def spent(self) -> float:
        return self.costs().spent

    def _prepare(self, chunk: list[GenRequest], lines: list[bytes]) -> BatchRow:
        data = b"".join(lines)
        # Content + this ledger's id + how many batches it recorded before: the same after a kill before the record
        # (so the retry reuses the name), different for a later re-submission of the same requests (retry).
        seq = str(len(self.store.all_batches())).encode()
        batch_id = "mf-" + hashlib.sha256(self.store.ledger_id.encode() + seq + data).hexdigest()[:24]
        self.dir.mkdir(parents=True, exist_ok=True)
        path = self.dir / f"{batch_id}.jsonl"
        tmp = path.with_suffix(".tmp")
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        reserved = sum(self.worst_case(r) for r in chunk)
        marked = self.store.prepare(batch_id, self.teacher, self.provider.name, [r.key for r in chunk], len(data),
                                    reserved)
        if marked != len(chunk):  # its file would carry requests the ledger does not hold in it: never send that
            self.store.abandon(batch_id, "ledger changed while the batch was prepared")
            raise MathforgeError(f"teacher {self.teacher}: {len(chunk) - marked} requests of a new batch were no "
                                 "longer pending; is another process writing this run directory?")
        return next(b for b in self.store.open_batches(self.teacher) if b.id == batch_id)

    # -- one step of one batch -----------------------------------------------------------------------------------
    def _advance(self, b: BatchRow) -> int:
        """Take the batch as far as it goes without waiting; returns how many steps were taken."""
        steps = 0
        path = self.dir / f"{b.id}.jsonl"
        if b.state == PREPARED and self.provider.uploads:
            file_id = self._retry(lambda: self.provider.find_file(path.name, b.bytes))
            if file_id is None:
                if not path.exists():  # never uploaded and the file is gone: give the requests back
                    self.store.abandon(b.id, f"batch file {path} missing before upload")
                    return 1
                file_id = self._retry(lambda: self.provider.upload(path.name, path))
            self.store.set_file(b.id, file_id)
            b.state, b.file_id = UPLOADED, file_id
            steps += 1
        if b.state == UPLOADED or (b.state == PREPARED and not self.provider.uploads):
            info = self._retry(lambda: self.provider.find_batch(b.id, b.created, b.n, self._claimed()))
            if info is None:
                if not self.provider.uploads and not path.exists():
                    self.store.abandon(b.id, f"batch file {path} missing before submission")
                    return 1
                info = self._create(b, path)
            self.store.set_submitted(b.id, info.id, info.status)
            b.state, b.provider_id, b.provider_status = SUBMITTED, info.id, info.status
            steps += 1
        if b.state == SUBMITTED:
            assert b.provider_id
            info = self._retry(lambda: self.provider.retrieve(b.provider_id))  # type: ignore[arg-type]
            if info.done:
                self._collect(b, info)
                path.unlink(missing_ok=True)
                steps += 1
            elif info.status != b.provider_status:
                self.store.set_status(b.id, info.status)
                steps += 1
        self._progress()
        return steps

    def _create(self, b: BatchRow, path: Path) -> BatchInfo:
        """Create the provider batch; after any failure, look for it by tag before trying again (never twice)."""
        delay = 1.0
        for attempt in range(6):
            try:
                return self.provider.create(b.id, b.file_id, path)
            except TransientError:
                if attempt == 5:
                    raise
            self.sleep(delay)
            delay = min(delay * 2, 30.0)
            found = self._retry(lambda: self.provider.find_batch(b.id, b.created, b.n, self._claimed()))
            if found is not None:
                return found
        raise AssertionError("unreachable")

    def _claimed(self) -> frozenset[str]:
        """Provider batch ids this ledger already recorded (a look-up by shape must never adopt one of them)."""
        return frozenset(b.provider_id for b in self.store.all_batches() if b.provider_id)

    def _collect(self, b: BatchRow, info: BatchInfo) -> None:
        ok, failed = [], []
        tin = tout = 0
        for custom_id, comp, err in self._retry(lambda: list(self.provider.results(info))):
            if comp is not None:
                ok.append((custom_id, comp.text, comp.finish_reason, comp.tokens_in, comp.tokens_out, comp.response,
                           comp.latency))
                tin += comp.tokens_in
                tout += comp.tokens_out
            else:
                failed.append((custom_id, err or "error"))
        why = info.error or "the provider returned no result for this request"
        leftover = f"batch {info.id} {info.status}: {why}"
        n_ok, n_failed = self.store.collect(b.id, ok, failed, leftover, info.status)
        s = self.stats
        s.done += n_ok
        s.failed += n_failed
        s.api_calls += n_ok + len(failed)  # requests the provider ran (and may bill); a batch is not one call
        s.tokens_in += tin
        s.tokens_out += tout
        s.spend = self.pricing.cost(s.tokens_in, s.tokens_out)
        if self.on_progress is not None:
            self.on_progress(n_ok + n_failed, self.line())

    def _retry(self, fn: Callable[[], T], attempts: int = 6) -> T:
        """Read-only or idempotent provider calls: retried with backoff on transient errors."""
        delay = 1.0
        for attempt in range(attempts):
            try:
                return fn()
            except TransientError:
                if attempt == attempts - 1:
                    raise
                self.sleep(delay)
                delay = min(delay * 2, 30.0)
        raise AssertionError("unreachable")

    # -- the live view -------------------------------------------------------------------------------------------
    def line(self) -> str:
        open_ = self.store.open_batches(self.teacher)
        st = self.stats
        s = f"batches in flight {len(open_)} ({sum(b.n for b in open_)} req) failed {st.failed}"
        if self.online_pricing.input_per_m or self.online_pricing.output_per_m:
            tc = self.costs()
            s += (f" spent {usd(tc.spent)} in flight ≤{usd(tc.in_flight_worst)} projected {usd(tc.projected_total)}"
                  + (f" of budget {usd(self.budget)}" if self.budget is not None else ""))
        return s + (f" [{st.stopped}]" if st.stopped else "")

    def _progress(self) -> None:
        # The line reads the ledger: refresh it at most twice a second however many batches move.
        if self.on_progress is not None and time.monotonic() - self._shown > 0.5:
            self._shown = time.monotonic()
            self.on_progress(0, self.line())


__all__ = ["BatchOptions", "BatchRunner", "BatchInfo", "BatchProvider", "BatchesInFlight", "TransientError",
           "EXIT_IN_FLIGHT", "TAG_KEY"]
