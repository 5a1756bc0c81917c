"""A scripted OpenAI-compatible chat server for exact-behaviour tests: replies chosen by what the prompt contains.

Each rule names substrings that must all appear in the request's messages and the replies to give, in order (the last
one repeats). The first matching rule answers; a request no rule matches gets HTTP 400, so a test sees an unexpected
request instead of a silent default. Every request body is recorded. Binds 127.0.0.1 on an ephemeral port, runs in a
background thread, and stops on exit from the ``with`` block or after ``lifetime`` seconds.

    with ScriptedServer([Rule(["strict grader"], ['{"correctness": 9, ...}'])]) as server:
        teacher = {"backend": "openai", "model": "scripted", "base_url": server.url, "api_key_env": None}
"""

from __future__ import annotations

import asyncio
import threading
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web


@dataclass
class Rule:
    contains: list[str]
    replies: list[str]
    served: int = 0

    def next_reply(self) -> str:
        reply = self.replies[min(self.served, len(self.replies) - 1)]
        self.served += 1
        return reply


@dataclass
class ScriptedServer:
    rules: list[Rule]
    lifetime: float = 120.0
    requests: list[dict[str, Any]] = field(default_factory=list)
    unmatched: list[dict[str, Any]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.port = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._lock = threading.Lock()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def count(self, *contains: str) -> int:
        """How many requests so far contained every one of ``contains`` in their messages."""
        return sum(all(c in _text(b) for c in contains) for b in self.requests)

    def __enter__(self) -> "ScriptedServer":
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("scripted server did not start")
        return self

    def __exit__(self, *exc: object) -> None:
        if self._loop and self._stop:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(10)

    def _serve(self) -> None:
        self._loop = asyncio.new_event_loop()
        self._loop.run_until_complete(self._main())
        self._loop.close()

    async def _main(self) -> None:
        app = web.Application()
        app.router.add_post("/v1/chat/completions", self._chat)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self._stop = asyncio.Event()
        self._ready.set()
        try:
            await asyncio.wait_for(self._stop.wait(), self.lifetime)
        except asyncio.TimeoutError:
            pass
        await runner.cleanup()

    async def _chat(self, request: web.Request) -> web.Response:
        body = await request.json()
        text = _text(body)
        with self._lock:
            self.requests.append(body)
            rule = next((r for r in self.rules if all(c in text for c in r.contains)), None)
            if rule is None:
                self.unmatched.append(body)
                return web.json_response({"error": {"message": "no scripted reply matches this prompt"}}, status=400)
            reply = rule.next_reply()
        n = body.get("n", 1)
        usage = {"prompt_tokens": len(text) // 4, "completion_tokens": n * (len(reply) // 4 + 1)}
        usage["total_tokens"] = usage["prompt_tokens"] + usage["completion_tokens"]
        choices = [{"index": i, "message": {"role": "assistant", "content": reply}, "finish_reason": "stop"}
                   for i in range(n)]
        return web.json_response({"id": f"chatcmpl-{len(self.requests)}", "object": "chat.completion",
                                  "model": body.get("model"), "choices": choices, "usage": usage})


def _text(body: dict[str, Any]) -> str:
    return "\n".join(str(m.get("content") or "") for m in body.get("messages") or [])
