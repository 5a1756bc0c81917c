"""OpenAI-compatible chat teachers (OpenAI, DeepSeek, Gemini's OpenAI endpoint, vLLM / SGLang / Ollama servers).

The ``openai`` SDK's async client does the HTTP, over aiohttp (the ``openai[aiohttp]`` core dependency: at hundreds
of requests in flight httpx spends 20-30% more client CPU and runs out of it first), with its own retries off; the
engine in ``mathforge.engine`` owns rate limits, concurrency, retries, timeouts and the budget. The API key is read
from the environment variable the config names, at send time only: it is never part of the config, the ledger or an
error. A response hook tells the engine when each answer's headers arrive (see ``engine/attempts.py``).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from typing import Any, Literal, Sequence

from pydantic import Field

from mathforge.backends.base import Backend, BackendConfig, Completion, GenRequest, ResultSink
from mathforge.engine.batch import BatchOptions
from mathforge.engine import ApiError, Engine, EngineConfig, Job, Pricing, Reply, TeacherStats, make_jobs, sample_seed
from mathforge.engine.attempts import response_started
from mathforge.engine.retry import redact, retry_after
from mathforge.engine.runner import run_sync
from mathforge.errors import BackendError

log = logging.getLogger(__name__)
_CLIENT_NOTED: set = set()  # what was already said once per process (which HTTP client, the open-file limit)
# Seconds to open a connection: a black-holed host is reported after three of these, not after `timeout` (a refused
# connection fails at once); generous, since a busy client or server can take seconds to complete a handshake.
CONNECT_TIMEOUT = 30.0


class OpenAIConfig(BackendConfig):
    backend: Literal["openai"] = "openai"
    model: str = Field(description="model name as the endpoint knows it (e.g. gpt-4o-mini, deepseek-chat)")
    base_url: str = Field("https://api.openai.com/v1", description="OpenAI-compatible endpoint, up to /v1")
    api_key_env: str | None = Field(
        "OPENAI_API_KEY", description="environment variable holding the API key (empty for keyless local servers)"
    )
    rpm: int | None = Field(None, gt=0, description="requests per minute granted (default: learned from headers)")
    tpm: int | None = Field(None, gt=0, description="tokens per minute granted (default: learned from headers)")
    max_concurrency: int = Field(
        1024, ge=1, description="safety cap on requests in flight; below it the limit adapts to the server's capacity"
    )
    initial_concurrency: int | None = Field(
        64, ge=1, description="requests in flight at the start (no rate limit known), multiplied by 4 per round trip "
        "while latency and error rate hold"
    )
    timeout: float = Field(600.0, gt=0, description="ceiling in seconds of the per-request timeout learned from latency")
    resend_share: float = Field(
        0.01, ge=0, le=1, description="most early re-sends of overdue requests, as a share of the run's calls "
        "(made only when the run waits on nothing else; 0 turns them off)"
    )
    max_attempts: int = Field(6, ge=1, description="attempts per request before it is recorded as failed")
    price_input_per_m: float = Field(0.0, ge=0, description="USD per million input tokens")
    price_output_per_m: float = Field(0.0, ge=0, description="USD per million output tokens")
    budget: float | None = Field(None, gt=0, description="USD cap for this teacher in this run directory")
    n_per_request: int = Field(1, ge=1, description="samples of one prompt per API call via `n` (where supported)")
    max_tokens_field: Literal["max_tokens", "max_completion_tokens"] = Field(
        "max_tokens", description="request field for the output cap (newer OpenAI models want max_completion_tokens)"
    )
    mode: Literal["online", "batch"] = Field(
        "online", description="online: one HTTP call per request; batch: the provider's files + batches API "
        "(half price, answered within its completion window)")
    batch: BatchOptions = Field(default_factory=BatchOptions, description="limits, polling and price of mode: batch")

    def engine_config(self) -> EngineConfig:
        return EngineConfig(
            rpm=self.rpm, tpm=self.tpm, max_concurrency=self.max_concurrency,
            initial_concurrency=self.initial_concurrency, timeout=self.timeout, max_attempts=self.max_attempts,
            resend_share=self.resend_share,
            pricing=Pricing(self.price_input_per_m, self.price_output_per_m), budget=self.budget,
        )


class OpenAIBackend(Backend):
    """Chat completions over HTTP, every request through the engine."""

    Config = OpenAIConfig
    config: OpenAIConfig

    def __init__(self, name: str, config: OpenAIConfig):
        super().__init__(name, config)
        self._client: Any = None
        self._key: str = ""
        self.last_stats: TeacherStats | None = None

    @classmethod
    def for_config(cls, config: BackendConfig) -> type[Backend]:
        if getattr(config, "mode", "online") == "batch":
            from mathforge.backends.openai_batch import OpenAIBatchBackend

            return OpenAIBatchBackend
        return cls

    def identity(self) -> tuple[str, str]:
        return self.config.model, self.config.base_url.rstrip("/")

    def api_key(self) -> str:
        env = self.config.api_key_env
        if not env:
            return "EMPTY"
        key = os.environ.get(env)
        if not key:
            raise BackendError(f"teacher {self.name}: environment variable {env} is not set (it holds the API key)")
        return key

    def limit_key(self) -> str:
        """Whose RPM/TPM budget this teacher spends: endpoint, model and a SHA-256 prefix of the key (never the key)."""
        digest = hashlib.sha256(self._key.encode()).hexdigest()[:12] if self._key else "none"
        return f"{self.config.base_url.rstrip('/')} {self.config.model} key:{digest}"

    def prepare(self) -> None:
        """Check the key is set and import the HTTP stack now, so neither delays the first request."""
        self._key = self.api_key()
        import httpx2  # noqa: F401
        import openai  # noqa: F401

    def generate(self, requests: Sequence[GenRequest], sink: ResultSink) -> None:
        if not requests:
            return
        stats: TeacherStats = getattr(sink, "stats", None) or TeacherStats()
        stats.prior_spend = Pricing(self.config.price_input_per_m, self.config.price_output_per_m).cost(
            stats.prior_tokens_in, stats.prior_tokens_out
        )
        self.last_stats = stats
        self._key = self.api_key()
        run_sync(self._run(make_jobs(requests, self.config.n_per_request), sink, stats))

    async def _run(self, jobs: list[Job], sink: ResultSink, stats: TeacherStats) -> None:
        config = self.config.engine_config()
        config.max_concurrency = fit_open_files(config.max_concurrency, self.name)
        self._client = self._make_client(config.max_concurrency)
        stats.http_client = self.http_client
        engine = Engine(self.name, config, self._send, sink, stats=stats, endpoint=self.config.base_url,
                        limit_key=self.limit_key())
        try:
            await engine.run(jobs)
        finally:
            await self._client.close()
            self._client = None

    def _make_client(self, cap: int) -> Any:
        import httpx2
        import openai

        # Overdue attempts keep their connection while giving their slot back: room for twice the cap.
        conns = 2 * cap + 16
        limits = httpx2.Limits(max_connections=conns, max_keepalive_connections=conns)
        hooks = {"response": [_on_response]}
        try:
            http_client = openai.DefaultAioHttpClient(limits=limits, event_hooks=hooks)
            kind = "aiohttp"
        except RuntimeError:  # aiohttp missing (it is a core dependency): httpx works, with more CPU per request
            http_client = openai.DefaultAsyncHttpxClient(limits=limits, event_hooks=hooks)
            kind = "httpx"
        if kind not in _CLIENT_NOTED:
            _CLIENT_NOTED.add(kind)
            if kind == "httpx":
                log.warning("aiohttp is not installed: the API client uses httpx, which needs 20-30%% more CPU per "
                            "request and limits throughput at high concurrency (pip install 'openai[aiohttp]')")
        self.http_client = kind
        return openai.AsyncOpenAI(
            base_url=self.config.base_url, api_key=self._key, max_retries=0, http_client=http_client,
            timeout=httpx2.Timeout(self.config.timeout + 5.0, connect=min(CONNECT_TIMEOUT, self.config.timeout)),
        )

    async def _send(self, job: Job) -> Reply:
        """One chat call for the job's samples; SDK errors become ApiErrors with every secret removed."""
        import httpx2
        import openai

        body = chat_body(self.config, job.requests[0], job.n)
        headers = {"x-mathforge-keys": ",".join(r.key[:16] for r in job.requests)}
        try:
            # The SDK's documented raw path (``client.post`` with ``cast_to=httpx2.Response``): same auth, errors and
            # transport as ``chat.completions.create`` without its per-call typed transform of the body, which costs
            # more CPU than the rest of the request at a few hundred requests a second.
            raw = await self._client.post("/chat/completions", cast_to=httpx2.Response, body=body,
                                          options={"headers": headers})
        except openai.APIStatusError as exc:
            raise ApiError("status", self._status_message(exc), exc.status_code,
                           retry_after(exc.response.headers), exc.response.headers) from None
        except openai.APIConnectionError as exc:  # includes timeouts; the transport's mapping is coarse
            kind, detail = classify_connection_error(exc)
            raise ApiError(kind, redact(detail, [self._key])) from None
        return self._reply(job, _parse_body(raw.content, raw.headers.get("content-type")), raw.headers)

    def _reply(self, job: Job, data: dict[str, Any], headers: Any) -> Reply:
        raw_choices = data.get("choices")
        if not isinstance(raw_choices, list) or not raw_choices:
            raise ApiError("malformed", f"HTTP 200 without choices ({_excerpt(data)})")
        if not all(isinstance(c, dict) for c in raw_choices):
            raise ApiError("malformed", "HTTP 200 with choices that are not objects")
        choices = sorted(raw_choices, key=lambda c: c.get("index", 0))
        if len(choices) != job.n:
            raise BackendError(
                f"teacher {self.name}: asked {self.config.base_url} for {job.n} samples in one call (n) and got "
                f"{len(choices)}; this endpoint does not support n: set n_per_request: 1"
            )
        usage = data.get("usage") or {}
        tokens_in = int(usage.get("prompt_tokens") or 0)
        tokens_out = int(usage.get("completion_tokens") or 0)
        texts = [(c.get("message") or {}).get("content") for c in choices]
        if any(not isinstance(t, str) for t in texts):
            reason = next((c.get("finish_reason") for c, t in zip(choices, texts) if not isinstance(t, str)), None)
            raise ApiError("malformed", f"HTTP 200 with no message content (finish_reason {reason!r})")
        shares = _split(tokens_out, [len(t) for t in texts])
        meta = {k: data[k] for k in ("id", "model", "system_fingerprint") if data.get(k)}
        completions = [
            Completion(text, c.get("finish_reason"), tokens_in, share, None,
                       meta | {"usage": usage, "n": job.n, "choice": i})
            for i, (c, text, share) in enumerate(zip(choices, texts, shares))
        ]
        return Reply(completions, tokens_in, tokens_out, headers)

    def _status_message(self, exc: Any) -> str:
        body = exc.body
        if isinstance(body, dict):
            body = body.get("error", body)
        msg = body.get("message") if isinstance(body, dict) else None
        msg = str(msg or exc.message)
        if exc.status_code == 401 and self.config.api_key_env:
            msg += f" (the key comes from ${self.config.api_key_env})"
        elif exc.status_code == 404:
            msg = f"model '{self.config.model}' at {self.config.base_url}: {msg}"
        return redact(msg, [self._key])


def fit_open_files(cap: int, teacher: str) -> int:
    """Raise the soft open-file limit towards the hard one so ``cap`` requests (two sockets each, at worst) fit; if
    they still do not, lower the cap and say so once (many systems default to 1,024 open files)."""
    import resource

    need = 2 * cap + 256  # sockets of in-flight and overdue requests, plus the ledger, tables and the interpreter
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < need:
        target = need if hard == resource.RLIM_INFINITY else min(need, hard)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError):
            pass
    if soft != resource.RLIM_INFINITY and soft < need:
        fitted = max(1, (soft - 256) // 2)
        if ("nofile", fitted) not in _CLIENT_NOTED:
            _CLIENT_NOTED.add(("nofile", fitted))
            log.warning("teacher %s: the open-file limit (%d) allows %d requests in flight, not max_concurrency %d "
                        "(raise it with `ulimit -n`)", teacher, soft, fitted, cap)
        return min(cap, fitted)
    return cap


async def _on_response(response: Any) -> None:
    """httpx response hook: the headers are in, so the server has answered (runs in the sending task)."""
    response_started()


def _parse_body(content: bytes, content_type: str | None) -> dict[str, Any]:
    """The JSON object of a 200; an HTML page, truncated JSON or a non-object is a malformed answer (retried)."""
    try:
        data = json.loads(content)
    except (ValueError, UnicodeDecodeError):
        raise ApiError("malformed", f"HTTP 200 with a body that is not JSON ({content_type or 'no content-type'}: "
                                    f"{content[:80]!r})") from None
    if not isinstance(data, dict):
        raise ApiError("malformed", f"HTTP 200 with a JSON {type(data).__name__} instead of an object")
    return data


def _excerpt(data: dict[str, Any]) -> str:
    text = json.dumps(data)
    return text if len(text) <= 120 else text[:117] + "..."


CONNECT_NAMES = {"ClientConnectorError", "ConnectionRefusedError", "gaierror", "ConnectError", "ConnectTimeout",
                 "ConnectionTimeoutError", "ClientConnectorDNSError"}
DROP_NAMES = {"ServerDisconnectedError", "ClientOSError", "ClientPayloadError", "RemoteProtocolError", "ReadError",
              "ConnectionResetError"}


def chat_body(config: OpenAIConfig, request: GenRequest, n: int = 1) -> dict[str, Any]:
    """The chat-completions body of a request (online calls and batch files send the same one)."""
    p = request.params
    body: dict[str, Any] = {"model": config.model, "messages": request.messages,
                            "temperature": p.temperature, "top_p": p.top_p, config.max_tokens_field: p.max_tokens}
    if n > 1:
        body["n"] = n
    if p.seed is not None:
        body["seed"] = sample_seed(p.seed, request.sample_index)
    if p.stop:
        body["stop"] = list(p.stop)
    return body


def classify_connection_error(exc: BaseException) -> tuple[str, str]:
    """("connect" | "connection" | "timeout", detail) from the exception chain under an SDK connection error.

    The detail is the deepest exception that says what happened on the network; asyncio noise further down the
    chain (such as "no running event loop" from a transport closed during teardown) is not it.
    """
    chain, x = [], exc
    while x is not None and len(chain) < 8:
        chain.append(x)
        x = x.__cause__ or x.__context__
    # The deepest known exception decides: the transport maps a server disconnect to httpx's ConnectTimeout.
    for e in reversed(chain):
        name = type(e).__name__
        if name in CONNECT_NAMES:
            return "connect", _describe(e)
        if name in DROP_NAMES:
            return "connection", _describe(e)
    informative = [e for e in chain[1:] if not isinstance(e, RuntimeError)] or chain
    return "timeout", _describe(informative[-1])


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


def _split(total: int, weights: list[int]) -> list[int]:
    """Split the call's output tokens over its choices in proportion to their length (the API reports one sum)."""
    if len(weights) == 1:
        return [total]
    s = sum(weights) or len(weights)
    shares = [total * (w or (s / len(weights))) // s for w in weights]
    shares[-1] += total - sum(shares)
    return [int(x) for x in shares]
