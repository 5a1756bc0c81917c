"""``mode: batch`` for OpenAI-compatible teachers: the files + batches API through the ``openai`` SDK.

Requests become JSONL lines (``custom_id`` = ledger key, body = exactly the online chat body), uploaded with
``purpose=batch`` under the name ``<local batch id>.jsonl``, submitted with ``metadata={"mathforge_batch": id}``;
both are how a resumed run finds what a killed one already did (``mathforge.engine.batch`` has the whole protocol).
The SDK's own retries are off: a retried create could submit twice, so the runner reconciles before any retry.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterator, Sequence

from mathforge.backends.base import Completion, GenRequest, ResultSink
from mathforge.backends.openai_api import OpenAIBackend, OpenAIConfig, chat_body
from mathforge.engine.accounting import Pricing, TeacherStats
from mathforge.engine.batch import TAG_KEY, BatchInfo, BatchRunner, Result, SdkErrors
from mathforge.errors import BackendError

LIST_LIMIT = 20_000  # most files or batches looked through when reconciling (newest first)
DONE = {"completed", "expired", "cancelled", "failed"}


class OpenAIBatchProvider:
    """The files + batches endpoints of one OpenAI-compatible base URL."""

    name = "openai"
    uploads = True

    def __init__(self, config: OpenAIConfig, api_key: str):
        import openai

        self.config, self._key = config, api_key
        self.client = openai.OpenAI(base_url=config.base_url, api_key=api_key, max_retries=0, timeout=120.0)

    def line(self, request: GenRequest) -> dict[str, Any]:
        return {"custom_id": request.key, "method": "POST", "url": "/v1/chat/completions",
                "body": chat_body(self.config, request)}

    def find_file(self, filename: str, nbytes: int) -> str | None:
        with self._errors("list files"):
            for i, f in enumerate(self.client.files.list(purpose="batch", order="desc")):
                if f.filename == filename and f.bytes == nbytes and getattr(f, "status", None) != "error":
                    return f.id
                if i >= LIST_LIMIT:
                    break
        return None

    def upload(self, filename: str, path: Path) -> str:
        with self._errors("upload batch file"), open(path, "rb") as fh:
            return self.client.files.create(file=(filename, fh, "application/jsonl"), purpose="batch").id

    def find_batch(self, tag: str, since: float, n: int, exclude: frozenset[str] = frozenset()) -> BatchInfo | None:
        with self._errors("list batches"):
            for i, b in enumerate(self.client.batches.list(limit=100)):
                if (b.metadata or {}).get(TAG_KEY) == tag:
                    return self._info(b)
                # Newest first: a batch created a day before this one was recorded cannot be it.
                if b.created_at < since - 86_400 or i >= LIST_LIMIT:
                    break
        return None

    def create(self, tag: str, file_id: str | None, path: Path) -> BatchInfo:
        assert file_id
        with self._errors("create batch"):
            b = self.client.batches.create(input_file_id=file_id, endpoint="/v1/chat/completions",
                                           completion_window=self.config.batch.completion_window,  # type: ignore[arg-type]
                                           metadata={TAG_KEY: tag})
        return self._info(b)

    def retrieve(self, provider_id: str) -> BatchInfo:
        with self._errors("check batch"):
            return self._info(self.client.batches.retrieve(provider_id))

    def results(self, info: BatchInfo) -> Iterator[Result]:
        for fid in (info.handle.get("output_file_id"), info.handle.get("error_file_id")):
            if not fid:
                continue
            with self._errors("download results"):
                with self.client.files.with_streaming_response.content(fid) as resp:
                    lines = list(resp.iter_lines())
            for line in lines:
                if line.strip():
                    yield parse_result_line(line)

    def close(self) -> None:
        self.client.close()

    def _info(self, b: Any) -> BatchInfo:
        errors = getattr(getattr(b, "errors", None), "data", None) or []
        msg = "; ".join(f"{e.code}: {e.message}" + (f" (line {e.line})" if e.line else "") for e in errors) or None
        return BatchInfo(b.id, b.status, b.status in DONE,
                         {"output_file_id": b.output_file_id, "error_file_id": b.error_file_id}, msg,
                         float(b.created_at))

    def _errors(self, what: str) -> Any:
        return SdkErrors("openai", what, self.config.base_url, [self._key])


def parse_result_line(line: str) -> Result:
    """One line of an output or error file → (custom_id, completion or None, error or None)."""
    import json

    obj = json.loads(line)
    cid = obj.get("custom_id") or ""
    if obj.get("error"):
        e = obj["error"]
        return cid, None, f"{e.get('code')}: {e.get('message')}" if isinstance(e, dict) else str(e)
    resp = obj.get("response") or {}
    body = resp.get("body") or {}
    status = resp.get("status_code", 200)
    if status != 200 or not body.get("choices"):
        err = body.get("error") if isinstance(body, dict) else None
        msg = err.get("message") if isinstance(err, dict) else str(body)[:300]
        return cid, None, f"{status}: {msg}"
    choice = body["choices"][0]
    usage = body.get("usage") or {}
    meta = {k: body[k] for k in ("id", "model", "system_fingerprint") if body.get(k)}
    return cid, Completion(
        (choice.get("message") or {}).get("content") or "", choice.get("finish_reason"),
        int(usage.get("prompt_tokens") or 0), int(usage.get("completion_tokens") or 0), None,
        meta | {"usage": usage, "batch_request_id": resp.get("request_id")},
    ), None


class OpenAIBatchBackend(OpenAIBackend):
    """An OpenAI-compatible teacher in ``mode: batch``: the same ledger keys as online, answered through batches."""

    resumes_batches = True  # the generate stage hands it requests already in flight, so it can collect them

    def prepare(self) -> None:
        self._key = self.api_key()

    def provider(self) -> OpenAIBatchProvider:
        return OpenAIBatchProvider(self.config, self.api_key())

    def runner(self, ledger: Any, stats: TeacherStats | None = None, on_progress: Any = None) -> BatchRunner:
        c = self.config
        return BatchRunner(self.name, self.provider(), ledger, c.batch,
                           pricing=Pricing(c.price_input_per_m, c.price_output_per_m), budget=c.budget,
                           stats=stats, on_progress=on_progress)

    def generate(self, requests: Sequence[GenRequest], sink: ResultSink) -> None:
        run_batches(self, requests, sink)


def run_batches(backend: Any, requests: Sequence[GenRequest], sink: ResultSink) -> None:
    """The batch path of ``Backend.generate``: the sink must be the ledger's (batches are recorded beside it)."""
    ledger = getattr(sink, "ledger", None)
    if ledger is None:
        raise BackendError(f"teacher {backend.name}: mode: batch needs a run directory's ledger (use it from a stage)")
    stats: TeacherStats = getattr(sink, "stats", None) or TeacherStats()
    backend.last_stats = stats
    progress = getattr(sink, "progress", None)
    task = getattr(sink, "task", None)

    def on_progress(n: int, line: str) -> None:
        if progress is not None:
            progress.update(task, advance=n, extra=line)

    runner = backend.runner(ledger, stats, on_progress)
    stats.prior_spend = runner.spent()
    try:
        runner.run(requests)
    finally:
        runner.provider.close()
