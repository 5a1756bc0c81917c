"""An OpenAI-compatible chat server for tests and benchmarks: scripted latency, rate limits and faults.

Binds 127.0.0.1 on an ephemeral port and stops by itself after ``lifetime`` seconds. Latency is
``base_latency + per_token * completion_tokens``; RPM/TPM are token buckets holding one second of budget (as real
providers enforce limits over short windows) and answer 429 with ``Retry-After``/``retry-after-ms``; every answer
carries ``x-ratelimit-*`` headers when a limit is set. Faults (5xx, dropped connections, hangs) are drawn from a
seeded RNG. Malformed 200s (an HTML page, ``choices: []``, ``content: null``) can be scripted, and ``body_delay`` sends
the headers at once and the body that many seconds later. Requests are counted on arrival (``total``, what a provider
would bill) and per ledger key (the client's ``x-mathforge-keys`` header).

Run standalone (benchmarks) with ``python tests/fake_openai_server.py --port-file PATH``; ``POST /admin/config``
replaces the config and resets counters, ``GET /admin/stats`` returns them.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import random
import threading
import time
from collections import Counter
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from aiohttp import web


@dataclass
class ServerConfig:
    base_latency: float = 0.8
    per_token: float = 0.010
    min_completion: int = 100  # completion length drawn uniformly from [min, max], capped by max_tokens
    max_completion: int = 200
    rpm: int | None = None
    tpm: int | None = None
    retry_after: str = "s"  # "s": Retry-After seconds, "ms": retry-after-ms, "none": no hint
    rate_headers: bool = True
    error_rate: float = 0.0  # 5xx
    drop_rate: float = 0.0  # connection closed without an answer, mid-request
    hang_rate: float = 0.0  # answer only after hang_seconds
    hang_seconds: float = 30.0
    body_delay: float = 0.0  # seconds between the response headers and the body (a slow transfer, not a slow server)
    # what the first requests get, in order of arrival: 200 normal, HANG, DROP, HTML, NO_CHOICES, NULL_CONTENT, or an
    # error status
    script: list[int] = field(default_factory=list)
    fail_keys: list[str] = field(default_factory=list)  # requests for these ledger keys (16-char prefix) get 500
    html_keys: list[str] = field(default_factory=list)  # requests for these keys always get a 200 HTML page
    api_key: str | None = None  # when set, any other bearer token gets 401
    models: list[str] | None = None  # when set, other models get 404
    seed: int = 0


HANG, DROP, HTML, NO_CHOICES, NULL_CONTENT = 1, 2, 3, 4, 5
MALFORMED = (HTML, NO_CHOICES, NULL_CONTENT)


class _Bucket:
    """A token bucket refilled at ``per_minute / 60`` a second, holding at most one second of budget."""

    def __init__(self, per_minute: float):
        self.limit = per_minute
        self.rate = per_minute / 60.0
        self.capacity = self.rate
        self.level = self.capacity
        self.t = time.monotonic()

    def refill(self) -> None:
        now = time.monotonic()
        self.level = min(self.capacity, self.level + (now - self.t) * self.rate)
        self.t = now

    def wait_for(self, amount: float) -> float:
        return max(0.0, (amount - self.level) / self.rate)

    def reset_in(self) -> float:
        return (self.capacity - self.level) / self.rate


class FakeOpenAI:
    """The server state: config, rate buckets, RNG and counters."""

    def __init__(self, config: ServerConfig | None = None):
        self.configure(config or ServerConfig())

    def configure(self, config: ServerConfig) -> None:
        self.config = config
        self.rng = random.Random(config.seed)
        self.requests = Counter()  # ledger key prefix -> requests received
        self.status = Counter()  # status (or "drop"/"hang") -> count
        self.total = 0
        self.in_flight = 0
        self.peak_in_flight = 0
        self.rpm = _Bucket(config.rpm) if config.rpm else None
        self.tpm = _Bucket(config.tpm) if config.tpm else None

    def stats(self) -> dict[str, Any]:
        return {
            "total": self.total,
            "status": {str(k): v for k, v in self.status.items()},
            "peak_in_flight": self.peak_in_flight,
            "keys": len(self.requests),
            "max_per_key": max(self.requests.values(), default=0),
        }

    # -- handlers ------------------------------------------------------------------------------------------------
    async def chat(self, request: web.Request) -> web.StreamResponse:
        cfg = self.config
        self.total += 1
        keys = [k for k in request.headers.get("x-mathforge-keys", "").split(",") if k]
        for k in keys:
            self.requests[k] += 1
        body = await request.json()
        scripted = cfg.script[self.total - 1] if self.total <= len(cfg.script) else 200
        if set(keys) & set(cfg.fail_keys):
            scripted = 500
        if set(keys) & set(cfg.html_keys):
            scripted = HTML
        if cfg.api_key and request.headers.get("authorization") != f"Bearer {cfg.api_key}":
            scripted = 401
        if cfg.models is not None and body.get("model") not in cfg.models:
            scripted = 404
        if scripted in MALFORMED:
            self.status[f"malformed-{scripted}"] += 1
            return _malformed(scripted, body)
        if scripted not in (200, HANG, DROP):
            return self._error(scripted, request)
        n = int(body.get("n") or 1)
        max_tokens = int(body.get("max_completion_tokens") or body.get("max_tokens") or 1 << 30)
        lengths = [min(max_tokens, self.rng.randint(cfg.min_completion, cfg.max_completion)) for _ in range(n)]
        prompt_tokens = sum(len(m.get("content") or "") for m in body.get("messages", [])) // 4 + 4
        headers = self._limit(1, prompt_tokens + sum(lengths))
        if headers is None:
            self.status[429] += 1
            return self._rate_limited()
        fault = self.rng.random()
        if scripted in (HANG, DROP):  # scripted faults go through the same paths as random ones
            fault = cfg.error_rate + (cfg.drop_rate if scripted == HANG else 0.0)
            cfg = _forced(cfg, scripted)
        self.in_flight += 1
        self.peak_in_flight = max(self.peak_in_flight, self.in_flight)
        try:
            if fault < cfg.error_rate:
                self.status[500] += 1
                await asyncio.sleep(0.05)
                return web.json_response({"error": {"message": "internal error", "type": "server_error"}}, status=500)
            latency = cfg.base_latency + cfg.per_token * max(lengths)
            if fault < cfg.error_rate + cfg.drop_rate:
                self.status["drop"] += 1
                await asyncio.sleep(latency / 2)
                request.transport.close()  # type: ignore[union-attr]
                return web.Response(status=500)  # never written: the connection is gone
            if fault < cfg.error_rate + cfg.drop_rate + cfg.hang_rate:
                self.status["hang"] += 1
                latency = cfg.hang_seconds
            await asyncio.sleep(latency)
            self.status[200] += 1
            if cfg.body_delay > 0:
                return await _slow_body(request, _completion(body, lengths, prompt_tokens), headers, cfg.body_delay)
            return web.json_response(_completion(body, lengths, prompt_tokens), headers=headers)
        finally:
            self.in_flight -= 1

    def _limit(self, requests: int, tokens: int) -> dict[str, str] | None:
        """Consume from the buckets and return the x-ratelimit headers, or None when the request is over a limit."""
        for b in (self.rpm, self.tpm):
            if b:
                b.refill()
        if (self.rpm and self.rpm.level < requests) or (self.tpm and self.tpm.level < tokens):
            return None
        headers: dict[str, str] = {}
        for b, name, amount in ((self.rpm, "requests", requests), (self.tpm, "tokens", tokens)):
            if b:
                b.level -= amount
                if self.config.rate_headers:
                    headers[f"x-ratelimit-limit-{name}"] = str(int(b.limit))
                    headers[f"x-ratelimit-remaining-{name}"] = str(max(0, int(b.level / b.capacity * b.limit)))
                    headers[f"x-ratelimit-reset-{name}"] = f"{int(b.reset_in() * 1000)}ms"
        return headers

    def _rate_limited(self) -> web.Response:
        wait = max(b.wait_for(1) for b in (self.rpm, self.tpm) if b) if (self.rpm or self.tpm) else 1.0
        wait = max(wait, 0.05)
        headers = {}
        if self.config.retry_after == "s":
            headers["retry-after"] = str(max(1, math.ceil(wait)))
        elif self.config.retry_after == "ms":
            headers["retry-after-ms"] = str(int(wait * 1000))
        err = {"error": {"message": "Rate limit reached", "type": "requests", "code": "rate_limit_exceeded"}}
        return web.json_response(err, status=429, headers=headers)

    def _error(self, status: int, request: web.Request) -> web.Response:
        self.status[status] += 1
        messages = {
            400: "Invalid request",
            401: "Incorrect API key provided: " + _partial(request.headers.get("authorization", "")),
            403: "Permission denied",
            404: "The model does not exist",
            408: "Request timeout",
            409: "Conflict",
            429: "Rate limit reached",
        }
        headers = {}
        if status == 429:
            headers = {"retry-after": "1"} if self.config.retry_after == "s" else {"retry-after-ms": "300"}
        return web.json_response({"error": {"message": messages.get(status, "server error")}}, status=status,
                                 headers=headers)

    async def admin_config(self, request: web.Request) -> web.Response:
        data = await request.json()
        self.configure(ServerConfig(**{k: v for k, v in data.items() if k in {f.name for f in fields(ServerConfig)}}))
        return web.json_response(asdict(self.config))

    async def admin_stats(self, request: web.Request) -> web.Response:
        return web.json_response(self.stats())

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/v1/chat/completions", self.chat)
        app.router.add_post("/admin/config", self.admin_config)
        app.router.add_get("/admin/stats", self.admin_stats)
        return app


def _malformed(kind: int, body: dict[str, Any]) -> web.Response:
    """A 200 that is no usable answer: a proxy's HTML page, no choices, or a choice without content."""
    if kind == HTML:
        return web.Response(text="<html><body><h1>502 Bad Gateway</h1></body></html>", content_type="text/html")
    data = _completion(body, [20], 10)
    if kind == NO_CHOICES:
        data["choices"] = []
    else:
        data["choices"][0]["message"]["content"] = None
    return web.json_response(data)


async def _slow_body(request: web.Request, data: dict[str, Any], headers: dict[str, str], delay: float) -> web.StreamResponse:
    """Headers now, the body ``delay`` seconds later: the answer has started arriving and is merely slow."""
    payload = json.dumps(data).encode()
    resp = web.StreamResponse(headers={**headers, "content-type": "application/json"})
    resp.content_length = len(payload)
    await resp.prepare(request)
    await resp.write(payload[:1])  # aiohttp may hold the headers back until the first body bytes
    await asyncio.sleep(delay)
    await resp.write(payload[1:])
    await resp.write_eof()
    return resp


def _forced(cfg: ServerConfig, fault: int) -> ServerConfig:
    """A copy of the config under which ``fault`` (HANG or DROP) is what the drawn number selects."""
    out = ServerConfig(**asdict(cfg))
    if fault == HANG:
        out.hang_rate = 1.0
    else:
        out.drop_rate = 1.0
    return out


def _partial(auth: str) -> str:
    """Echo part of the key back, as real providers do (the client must scrub it from what it stores)."""
    key = auth.removeprefix("Bearer ")
    return key[:3] + "***" + key[-4:] if len(key) > 8 else "***"


def _completion(body: dict[str, Any], lengths: list[int], prompt_tokens: int) -> dict[str, Any]:
    choices = []
    for i, n in enumerate(lengths):
        text = " ".join(["step"] * (n - 4)) + " The answer is 5."
        finish = "length" if n >= int(body.get("max_tokens") or 1 << 30) else "stop"
        choices.append({"index": i, "message": {"role": "assistant", "content": text}, "finish_reason": finish})
    return {
        "id": f"chatcmpl-{random.getrandbits(48):x}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": body.get("model", "fake"),
        "choices": choices,
        "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": sum(lengths),
                  "total_tokens": prompt_tokens + sum(lengths)},
    }


class ServerThread:
    """The server in a daemon thread of this process (for tests); ``url`` is its OpenAI base_url."""

    def __init__(self, config: ServerConfig | None = None, lifetime: float = 300.0):
        self.fake = FakeOpenAI(config)
        self.lifetime = lifetime
        self._ready = threading.Event()
        self._stop: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self.port = 0
        self._thread = threading.Thread(target=lambda: asyncio.run(self._main()), daemon=True)

    def __enter__(self) -> "ServerThread":
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("fake OpenAI server did not start")
        return self

    def __exit__(self, *exc: object) -> None:
        if self._loop and self._stop:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(10)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def configure(self, config: ServerConfig) -> FakeOpenAI:
        """Replace the config and reset the counters (before the call returns)."""
        assert self._loop

        async def apply() -> None:
            self.fake.configure(config)

        asyncio.run_coroutine_threadsafe(apply(), self._loop).result(5)
        return self.fake

    async def _main(self) -> None:
        self._loop, self._stop = asyncio.get_running_loop(), asyncio.Event()
        runner, self.port = await start(self.fake)
        self._ready.set()
        try:
            await asyncio.wait_for(self._stop.wait(), self.lifetime)
        except asyncio.TimeoutError:
            pass
        await runner.cleanup()


async def start(fake: FakeOpenAI, port: int = 0) -> tuple[web.AppRunner, int]:
    runner = web.AppRunner(fake.app(), access_log=None, handler_cancellation=True)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", port, backlog=4096)
    await site.start()
    return runner, site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]


async def _serve(port_file: Path, lifetime: float) -> None:
    runner, port = await start(FakeOpenAI())
    tmp = port_file.with_suffix(".tmp")
    tmp.write_text(str(port))
    tmp.replace(port_file)
    await asyncio.sleep(lifetime)
    await runner.cleanup()


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--port-file", type=Path, required=True)
    ap.add_argument("--lifetime", type=float, default=900.0, help="seconds before the server stops by itself")
    args = ap.parse_args()
    asyncio.run(_serve(args.port_file, args.lifetime))
