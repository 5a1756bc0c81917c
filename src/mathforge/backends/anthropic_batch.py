"""Anthropic teachers through the Message Batches API (half price), with the official ``anthropic`` SDK.

Needs ``pip install 'mathforge[anthropic]'``. Requests go inline in the create call (no file upload); ``custom_id``
is the ledger key (64 hex characters, within Anthropic's ``^[a-zA-Z0-9_-]{1,64}$``). Message Batches carry no
metadata, so a run killed after its create call reached Anthropic but before the batch id was recorded finds its
batch by shape: the newest batch created since the local record with the same request count that no other local
batch claims. That look-up can only err towards *not* re-submitting: a wrongly adopted batch answers none of these
keys, so its requests end ``failed`` (``mathforge retry`` re-sends them) and never run twice.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterator, Literal, Sequence

from pydantic import Field

from mathforge.backends.base import Backend, BackendConfig, Completion, GenRequest, ResultSink
from mathforge.engine.accounting import Pricing, TeacherStats
from mathforge.engine.batch import BatchInfo, BatchOptions, BatchRunner, Result, SdkErrors
from mathforge.errors import BackendError, require

LIST_LIMIT = 5_000


def _anthropic_batch_defaults() -> BatchOptions:
    return BatchOptions(max_requests=100_000, max_bytes=256_000_000)


class AnthropicConfig(BackendConfig):
    backend: Literal["anthropic"] = "anthropic"
    model: str = Field(description="Anthropic model name (e.g. claude-sonnet-4-5)")
    base_url: str = Field("https://api.anthropic.com", description="API root (without /v1)")
    api_key_env: str = Field("ANTHROPIC_API_KEY", description="environment variable holding the API key")
    mode: Literal["batch"] = Field("batch", description="only the Message Batches API is supported for Anthropic")
    price_input_per_m: float = Field(0.0, ge=0, description="USD per million input tokens (online price)")
    price_output_per_m: float = Field(0.0, ge=0, description="USD per million output tokens (online price)")
    budget: float | None = Field(None, gt=0, description="USD cap for this teacher in this run directory")
    batch: BatchOptions = Field(default_factory=_anthropic_batch_defaults, description="limits, polling, price")


class AnthropicBatchProvider:
    name = "anthropic"
    uploads = False

    def __init__(self, config: AnthropicConfig, api_key: str):
        anthropic = require("anthropic", "anthropic")
        self.config, self._key = config, api_key
        self.client = anthropic.Anthropic(base_url=config.base_url, api_key=api_key, max_retries=0, timeout=120.0)

    def line(self, request: GenRequest) -> dict[str, Any]:
        p = request.params
        system = "\n\n".join(m["content"] for m in request.messages if m["role"] == "system")
        params: dict[str, Any] = {
            "model": self.config.model, "max_tokens": p.max_tokens, "temperature": p.temperature,
            "messages": [{"role": m["role"], "content": m["content"]} for m in request.messages if m["role"] != "system"],
        }
        if p.top_p < 1.0:
            params["top_p"] = p.top_p
        if system:
            params["system"] = system
        if p.stop:
            params["stop_sequences"] = list(p.stop)
        return {"custom_id": request.key, "params": params}

    def find_file(self, filename: str, nbytes: int) -> str | None:  # pragma: no cover - no uploads here
        return None

    def upload(self, filename: str, path: Path) -> str:  # pragma: no cover - no uploads here
        raise NotImplementedError

    def find_batch(self, tag: str, since: float, n: int, exclude: frozenset[str] = frozenset()) -> BatchInfo | None:
        with self._errors("list batches"):
            for i, b in enumerate(self.client.messages.batches.list(limit=100)):
                created = b.created_at.timestamp()
                if created < since - 120 or i >= LIST_LIMIT:  # newest first; 2 min of clock skew allowed
                    break
                c = b.request_counts
                total = c.processing + c.succeeded + c.errored + c.canceled + c.expired
                if total == n and b.id not in exclude:
                    return self._info(b)
        return None

    def create(self, tag: str, file_id: str | None, path: Path) -> BatchInfo:
        import json

        with open(path, encoding="utf-8") as f:
            requests = [json.loads(line) for line in f if line.strip()]
        with self._errors("create batch"):
            return self._info(self.client.messages.batches.create(requests=requests))

    def retrieve(self, provider_id: str) -> BatchInfo:
        with self._errors("check batch"):
            return self._info(self.client.messages.batches.retrieve(provider_id))

    def results(self, info: BatchInfo) -> Iterator[Result]:
        with self._errors("download results"):
            rows = list(self.client.messages.batches.results(info.id))
        for r in rows:
            res = r.result
            if res.type == "succeeded":
                m = res.message
                text = "".join(getattr(c, "text", "") for c in m.content)
                usage = {"input_tokens": m.usage.input_tokens, "output_tokens": m.usage.output_tokens}
                yield r.custom_id, Completion(text, m.stop_reason, m.usage.input_tokens, m.usage.output_tokens, None,
                                              {"id": m.id, "model": m.model, "usage": usage}), None
            elif res.type == "errored":
                err = getattr(res.error, "error", None)
                yield r.custom_id, None, f"errored: {getattr(err, 'type', '')}: {getattr(err, 'message', err)}"
            else:
                yield r.custom_id, None, f"{res.type}: the batch ended before this request ran"

    def close(self) -> None:
        self.client.close()

    def _info(self, b: Any) -> BatchInfo:
        return BatchInfo(b.id, b.processing_status, b.processing_status == "ended", {}, None, b.created_at.timestamp())

    def _errors(self, what: str) -> Any:
        # 529: Anthropic's "overloaded"
        return SdkErrors("anthropic", what, self.config.base_url, [self._key], transient=(408, 409, 429, 529))


class AnthropicBatchBackend(Backend):
    """Claude models as teachers through Message Batches; the engine in ``mathforge.engine.batch`` drives it."""

    Config = AnthropicConfig
    config: AnthropicConfig
    resumes_batches = True

    def __init__(self, name: str, config: AnthropicConfig):
        super().__init__(name, config)
        self.last_stats: TeacherStats | None = None

    def identity(self) -> tuple[str, str]:
        return self.config.model, self.config.base_url.rstrip("/")

    def api_key(self) -> str:
        import os

        key = os.environ.get(self.config.api_key_env)
        if not key:
            raise BackendError(f"teacher {self.name}: environment variable {self.config.api_key_env} is not set "
                               "(it holds the API key)")
        return key

    def prepare(self) -> None:
        self.api_key()
        require("anthropic", "anthropic")

    def runner(self, ledger: Any, stats: TeacherStats | None = None, on_progress: Any = None) -> BatchRunner:
        c = self.config
        return BatchRunner(self.name, AnthropicBatchProvider(c, self.api_key()), ledger, c.batch,
                           pricing=Pricing(c.price_input_per_m, c.price_output_per_m), budget=c.budget,
                           stats=stats, on_progress=on_progress)

    def generate(self, requests: Sequence[GenRequest], sink: ResultSink) -> None:
        from mathforge.backends.openai_batch import run_batches

        run_batches(self, requests, sink)
