"""A fake provider batch API for tests and benchmarks: OpenAI files + batches, and Anthropic Message Batches.

Binds 127.0.0.1 on an ephemeral port. A batch's status follows the clock from its creation: ``validating`` →
``in_progress`` → ``finalizing`` → ``completed`` (durations in the config), or ``expired`` after ``expire_after``
seconds with only the first ``partial`` share answered, or ``cancelling`` → ``cancelled`` after a cancel, or
``failed`` when the input breaks the limits (requests per batch, bytes per file) or is not valid JSONL. Requests whose
custom_id's sha256 falls under ``error_rate`` get a per-request error in the error file. The server counts what
matters for exactly-once: ``submissions[custom_id]`` (how many created batches held that request), uploads, creates.

``hold`` names points where the server stops answering until ``release()`` (and notes in ``reached`` that a request
got there), so a test can SIGKILL a client at that exact point: ``files.list`` (the look-up before an upload),
``files.create`` (after the file is stored, before the answer), ``batches.create.before`` (before the batch exists),
``batches.create.after`` (the batch exists, the answer is not sent), ``batches.retrieve`` (polling),
``files.content`` (half the results file sent).

Standalone (benchmarks): ``python tests/fake_batch_server.py --port-file PATH [--config JSON]``; ``GET /admin/stats``.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import web


@dataclass
class BatchServerConfig:
    validating_s: float = 0.2
    in_progress_s: float = 0.5
    finalizing_s: float = 0.2
    cancelling_s: float = 0.2
    expire_after: float | None = None  # seconds after creation; the batch expires unless done by then
    partial: float = 0.5  # share of requests answered in an expired or cancelled batch
    error_rate: float = 0.0  # share of requests answered with a per-request error
    max_requests: int = 50_000
    max_bytes: int = 200_000_000
    completion_tokens: int = 24
    hold: list[str] = field(default_factory=list)
    api_key: str | None = None


def _frac(custom_id: str, salt: str) -> float:
    return int(hashlib.sha256((salt + custom_id).encode()).hexdigest()[:8], 16) / 2**32


class FakeBatchAPI:
    def __init__(self, config: BatchServerConfig | None = None):
        self.configure(config or BatchServerConfig())

    def configure(self, config: BatchServerConfig) -> None:
        self.config = config
        self.files: dict[str, dict[str, Any]] = {}
        self.contents: dict[str, bytes] = {}
        self.batches: dict[str, dict[str, Any]] = {}
        self.requests: dict[str, list[dict[str, Any]]] = {}  # batch id -> its parsed request lines
        self.submissions: Counter[str] = Counter()
        self.counts: Counter[str] = Counter()
        self.online: Counter[str] = Counter()  # online chat calls per ledger key prefix
        self.reached: set[str] = set()
        self._released = asyncio.Event() if _loop_running() else None
        self._seq = 0

    # -- test controls -------------------------------------------------------------------------------------------
    async def _hold(self, point: str) -> None:
        if point in self.config.hold:
            self.reached.add(point)
            if self._released is None:
                self._released = asyncio.Event()
            await self._released.wait()

    def release(self) -> None:
        self.config.hold = []
        if self._released is not None:
            self._released.set()

    def stats(self) -> dict[str, Any]:
        dup = {k: n for k, n in self.submissions.items() if n > 1}
        return {"counts": dict(self.counts), "requests_submitted": len(self.submissions),
                "submissions": sum(self.submissions.values()), "duplicates": len(dup), "reached": sorted(self.reached),
                "batches": {b["id"]: self._status(b) for b in self.batches.values()}}

    def _id(self, prefix: str) -> str:
        self._seq += 1
        return f"{prefix}_{self._seq:06d}"

    def _auth(self, request: web.Request) -> None:
        key = self.config.api_key
        if key and request.headers.get("Authorization") != f"Bearer {key}" and request.headers.get("x-api-key") != key:
            raise web.HTTPUnauthorized(text=json.dumps({"error": {"message": "bad key"}}),
                                       content_type="application/json")

    # -- files ---------------------------------------------------------------------------------------------------
    async def create_file(self, request: web.Request) -> web.Response:
        self._auth(request)
        form = await request.post()
        upload = form["file"]
        data = upload.file.read()  # type: ignore[union-attr]
        fid = self._id("file")
        obj = {"id": fid, "object": "file", "bytes": len(data), "created_at": int(time.time()),
               "filename": upload.filename, "purpose": form.get("purpose", "batch"), "status": "processed"}  # type: ignore[union-attr]
        self.files[fid], self.contents[fid] = obj, data
        self.counts["uploads"] += 1
        await self._hold("files.create")
        return web.json_response(obj)

    async def list_files(self, request: web.Request) -> web.Response:
        self._auth(request)
        self.counts["file_lists"] += 1
        await self._hold("files.list")
        items = [f for f in self.files.values() if f["purpose"] == request.query.get("purpose", f["purpose"])]
        if request.query.get("order", "desc") == "desc":
            items = items[::-1]
        return self._page(items, request)

    async def file_content(self, request: web.Request) -> web.StreamResponse:
        self._auth(request)
        fid = request.match_info["fid"]
        if fid not in self.contents:
            raise web.HTTPNotFound()
        data = self.contents[fid]
        self.counts["downloads"] += 1
        if "files.content" in self.config.hold:
            resp = web.StreamResponse(headers={"Content-Type": "application/octet-stream",
                                               "Content-Length": str(len(data))})
            return await self._half_then_hold(request, resp, data)
        return web.Response(body=data, content_type="application/octet-stream")

    async def _half_then_hold(self, request: web.Request, resp: web.StreamResponse, data: bytes) -> web.StreamResponse:
        """Send half the body, hold, then the rest (the client is usually SIGKILLed in between)."""
        try:
            await resp.prepare(request)
            await resp.write(data[: len(data) // 2])
            await self._hold("files.content")
            await resp.write(data[len(data) // 2 :])
        except ConnectionResetError:  # the killed client's socket is gone (aiohttp's error subclasses it)
            pass
        return resp

    # -- batches -------------------------------------------------------------------------------------------------
    async def create_batch(self, request: web.Request) -> web.Response:
        self._auth(request)
        body = await request.json()
        await self._hold("batches.create.before")
        fid = body.get("input_file_id")
        if fid not in self.files:
            return web.json_response({"error": {"message": f"no file {fid}"}}, status=400)
        bid = self._id("batch")
        b = {"id": bid, "object": "batch", "endpoint": body.get("endpoint"), "input_file_id": fid,
             "completion_window": body.get("completion_window", "24h"), "created_at": int(time.time()),
             "t0": time.monotonic(), "metadata": body.get("metadata"), "errors": None}
        lines, error = self._parse(self.contents[fid])
        b["invalid"] = error
        self.batches[bid], self.requests[bid] = b, lines
        if not error:
            self.submissions.update(r["custom_id"] for r in lines)
        self.counts["creates"] += 1
        await self._hold("batches.create.after")
        return web.json_response(self._public(b))

    def _parse(self, data: bytes) -> tuple[list[dict[str, Any]], str | None]:
        c = self.config
        if len(data) > c.max_bytes:
            return [], f"file is {len(data)} bytes, over {c.max_bytes}"
        try:
            lines = [json.loads(x) for x in data.decode().splitlines() if x.strip()]
        except ValueError as exc:
            return [], f"invalid JSONL: {exc}"
        if len(lines) > c.max_requests:
            return [], f"{len(lines)} requests, over {c.max_requests}"
        if len({x.get("custom_id") for x in lines}) != len(lines):
            return [], "duplicate custom_id"
        return lines, None

    def _status(self, b: dict[str, Any]) -> str:
        c, age = self.config, time.monotonic() - b["t0"]
        if b.get("final"):
            return b["final"]
        if "cancel_t" in b:
            status = "cancelled" if time.monotonic() - b["cancel_t"] >= c.cancelling_s else "cancelling"
        elif age < c.validating_s:
            status = "validating"
        elif b["invalid"]:
            status = "failed"
        elif c.expire_after is not None and age >= c.expire_after:
            status = "expired"
        elif age < c.validating_s + c.in_progress_s:
            status = "in_progress"
        elif age < c.validating_s + c.in_progress_s + c.finalizing_s:
            status = "finalizing"
        else:
            status = "completed"
        if status in ("completed", "expired", "cancelled", "failed"):
            self._finish(b, status)
        return status

    def _finish(self, b: dict[str, Any], status: str) -> None:
        b["final"] = status
        if status == "failed":
            b["errors"] = {"object": "list", "data": [{"code": "invalid_input", "message": b["invalid"], "line": None,
                                                       "param": None}]}
            return
        lines = self.requests[b["id"]]
        answered = lines if status == "completed" else lines[: int(len(lines) * self.config.partial)]
        out, err = [], []
        for r in answered:
            cid = r["custom_id"]
            if _frac(cid, "error") < self.config.error_rate:
                err.append({"id": self._id("req"), "custom_id": cid, "response": {
                    "status_code": 400, "request_id": self._id("rq"),
                    "body": {"error": {"message": "simulated invalid request", "type": "invalid_request_error"}}},
                    "error": None})
            else:
                out.append({"id": self._id("req"), "custom_id": cid, "response": {
                    "status_code": 200, "request_id": self._id("rq"), "body": self._completion(r)}, "error": None})
        if status == "expired":
            err += [{"id": self._id("req"), "custom_id": r["custom_id"], "response": None,
                     "error": {"code": "batch_expired", "message": "This request could not be executed before the "
                               "completion window expired."}} for r in lines[len(answered):]]
        for name, rows in (("output_file_id", out), ("error_file_id", err)):
            if rows:
                fid = self._id("file")
                data = "".join(json.dumps(x) + "\n" for x in rows).encode()
                self.files[fid] = {"id": fid, "object": "file", "bytes": len(data), "created_at": int(time.time()),
                                   "filename": f"{b['id']}_{name}.jsonl", "purpose": "batch_output",
                                   "status": "processed"}
                self.contents[fid] = data
                b[name] = fid
        b["counts"] = {"total": len(lines), "completed": len(out), "failed": len(err)}

    def _completion(self, r: dict[str, Any]) -> dict[str, Any]:
        body = r.get("body") or {}
        prompt = "".join(m.get("content", "") for m in body.get("messages", []))
        text = f"Batch answer to {r['custom_id'][:12]}. The answer is {len(prompt) % 97}.\n#### {len(prompt) % 97}"
        n_out = min(self.config.completion_tokens, int(body.get("max_tokens") or body.get("max_completion_tokens") or 10**9))
        return {"id": self._id("chatcmpl"), "object": "chat.completion", "model": body.get("model"),
                "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
                "usage": {"prompt_tokens": len(prompt) // 4 + 8, "completion_tokens": n_out,
                          "total_tokens": len(prompt) // 4 + 8 + n_out}}

    def _public(self, b: dict[str, Any]) -> dict[str, Any]:
        status = self._status(b)
        counts = b.get("counts") or {"total": len(self.requests.get(b["id"], [])), "completed": 0, "failed": 0}
        return {k: v for k, v in b.items() if k not in ("t0", "invalid", "final", "counts", "cancel_t")} | {
            "status": status, "request_counts": counts}

    async def get_batch(self, request: web.Request) -> web.Response:
        self._auth(request)
        self.counts["polls"] += 1
        await self._hold("batches.retrieve")
        b = self.batches.get(request.match_info["bid"])
        if b is None:
            raise web.HTTPNotFound()
        return web.json_response(self._public(b))

    async def list_batches(self, request: web.Request) -> web.Response:
        self._auth(request)
        self.counts["batch_lists"] += 1
        return self._page([self._public(b) for b in list(self.batches.values())[::-1]], request)

    async def cancel_batch(self, request: web.Request) -> web.Response:
        self._auth(request)
        b = self.batches[request.match_info["bid"]]
        if not b.get("final"):
            b["cancel_t"] = time.monotonic()
        return web.json_response(self._public(b))

    def _page(self, items: list[dict[str, Any]], request: web.Request) -> web.Response:
        after, limit = request.query.get("after"), int(request.query.get("limit", 20))
        if after:
            ids = [x["id"] for x in items]
            items = items[ids.index(after) + 1 :] if after in ids else []
        page = items[:limit]
        return web.json_response({"object": "list", "data": page, "has_more": len(items) > limit,
                                  "first_id": page[0]["id"] if page else None,
                                  "last_id": page[-1]["id"] if page else None})

    async def chat(self, request: web.Request) -> web.Response:
        """The online endpoint on the same base URL (as real providers have): counted per ledger key prefix."""
        self._auth(request)
        body = await request.json()
        for k in (request.headers.get("x-mathforge-keys") or "").split(","):
            self.online[k] += 1
        return web.json_response(self._completion({"custom_id": "online", "body": body}))

    # -- Anthropic Message Batches ------------------------------------------------------------------------------
    async def a_create(self, request: web.Request) -> web.Response:
        self._auth(request)
        body = await request.json()
        await self._hold("batches.create.before")
        lines = [{"custom_id": r["custom_id"], "body": r["params"]} for r in body.get("requests", [])]
        data = json.dumps(body).encode()
        bid = self._id("msgbatch")
        b = {"id": bid, "anthropic": True, "created_at": int(time.time()), "t0": time.monotonic(), "errors": None,
             "invalid": None, "base": f"{request.scheme}://{request.host}"}
        _, error = self._parse(b"".join(json.dumps(x).encode() + b"\n" for x in lines))
        if error or len(data) > self.config.max_bytes:  # Anthropic refuses an over-limit batch outright
            return web.json_response({"type": "error", "error": {"type": "invalid_request_error",
                                                                 "message": error or "request too large"}}, status=400)
        self.batches[bid], self.requests[bid] = b, lines
        self.submissions.update(r["custom_id"] for r in lines)
        self.counts["creates"] += 1
        await self._hold("batches.create.after")
        return web.json_response(self._a_public(b))

    def _a_public(self, b: dict[str, Any]) -> dict[str, Any]:
        status = self._status(b)
        n = len(self.requests[b["id"]])
        ended = status in ("completed", "expired", "cancelled")
        c = b.get("counts") or {}
        iso = lambda t: time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))  # noqa: E731
        return {"id": b["id"], "type": "message_batch", "created_at": iso(b["created_at"]),
                "expires_at": iso(b["created_at"] + 86400), "archived_at": None,
                "cancel_initiated_at": iso(b["created_at"]) if "cancel_t" in b else None,
                "ended_at": iso(time.time()) if ended else None,
                "processing_status": "ended" if ended else ("canceling" if "cancel_t" in b else "in_progress"),
                "request_counts": {"processing": 0 if ended else n, "succeeded": c.get("completed", 0),
                                   "errored": c.get("failed", 0) if status == "completed" else 0,
                                   "canceled": n - c.get("completed", 0) if status == "cancelled" else 0,
                                   "expired": n - c.get("completed", 0) if status == "expired" else 0},
                "results_url": f"{b['base']}/v1/messages/batches/{b['id']}/results" if ended else None}

    async def a_get(self, request: web.Request) -> web.Response:
        self._auth(request)
        self.counts["polls"] += 1
        await self._hold("batches.retrieve")
        b = self.batches.get(request.match_info["bid"])
        if b is None:
            raise web.HTTPNotFound()
        return web.json_response(self._a_public(b))

    async def a_list(self, request: web.Request) -> web.Response:
        self._auth(request)
        self.counts["batch_lists"] += 1
        items = [self._a_public(b) for b in list(self.batches.values())[::-1] if b.get("anthropic")]
        after, limit = request.query.get("after_id"), int(request.query.get("limit", 20))
        if after:
            ids = [x["id"] for x in items]
            items = items[ids.index(after) + 1 :] if after in ids else []
        page = items[:limit]
        return web.json_response({"data": page, "has_more": len(items) > limit,
                                  "first_id": page[0]["id"] if page else None, "last_id": page[-1]["id"] if page else None})

    async def a_cancel(self, request: web.Request) -> web.Response:
        b = self.batches[request.match_info["bid"]]
        if not b.get("final"):
            b["cancel_t"] = time.monotonic()
        return web.json_response(self._a_public(b))

    async def a_results(self, request: web.Request) -> web.StreamResponse:
        self._auth(request)
        b = self.batches[request.match_info["bid"]]
        self._status(b)
        done = {}
        for name in ("output_file_id", "error_file_id"):
            for line in self.contents.get(b.get(name, ""), b"").decode().splitlines():
                x = json.loads(line)
                done[x["custom_id"]] = x
        rows = []
        for r in self.requests[b["id"]]:
            x = done.get(r["custom_id"])
            if x is None or (x.get("error") or {}).get("code") == "batch_expired":
                result: dict[str, Any] = {"type": "canceled" if b["final"] == "cancelled" else "expired"}
            elif x.get("error") or x["response"]["status_code"] != 200:
                result = {"type": "errored", "error": {"type": "error", "error": {
                    "type": "invalid_request_error", "message": "simulated invalid request"}}}
            else:
                c = x["response"]["body"]
                result = {"type": "succeeded", "message": {
                    "id": c["id"], "type": "message", "role": "assistant", "model": c["model"],
                    "content": [{"type": "text", "text": c["choices"][0]["message"]["content"]}],
                    "stop_reason": "end_turn", "stop_sequence": None,
                    "usage": {"input_tokens": c["usage"]["prompt_tokens"], "output_tokens": c["usage"]["completion_tokens"]}}}
            rows.append({"custom_id": r["custom_id"], "result": result})
        data = "".join(json.dumps(x) + "\n" for x in rows).encode()
        self.counts["downloads"] += 1
        if "files.content" in self.config.hold:
            resp = web.StreamResponse(headers={"Content-Type": "application/binary", "Content-Length": str(len(data))})
            return await self._half_then_hold(request, resp, data)
        return web.Response(body=data, content_type="application/binary")

    async def admin_stats(self, request: web.Request) -> web.Response:
        return web.json_response(self.stats())

    def app(self) -> web.Application:
        app = web.Application(client_max_size=1024**3)
        app.router.add_post("/v1/files", self.create_file)
        app.router.add_get("/v1/files", self.list_files)
        app.router.add_get("/v1/files/{fid}/content", self.file_content)
        app.router.add_post("/v1/batches", self.create_batch)
        app.router.add_get("/v1/batches", self.list_batches)
        app.router.add_get("/v1/batches/{bid}", self.get_batch)
        app.router.add_post("/v1/batches/{bid}/cancel", self.cancel_batch)
        app.router.add_post("/v1/chat/completions", self.chat)
        app.router.add_post("/v1/messages/batches", self.a_create)
        app.router.add_get("/v1/messages/batches", self.a_list)
        app.router.add_get("/v1/messages/batches/{bid}", self.a_get)
        app.router.add_get("/v1/messages/batches/{bid}/results", self.a_results)
        app.router.add_post("/v1/messages/batches/{bid}/cancel", self.a_cancel)
        app.router.add_get("/admin/stats", self.admin_stats)
        return app


def _loop_running() -> bool:
    try:
        asyncio.get_running_loop()
        return True
    except RuntimeError:
        return False


class BatchServerThread:
    """The server in a daemon thread of this process (tests); ``url`` is the OpenAI base_url."""

    def __init__(self, config: BatchServerConfig | None = None):
        self.api = FakeBatchAPI(config)
        self.port = 0
        self._ready = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(target=lambda: asyncio.run(self._main()), daemon=True)

    def __enter__(self) -> "BatchServerThread":
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("fake batch server did not start")
        return self

    def __exit__(self, *exc: object) -> None:
        if self._loop and self._stop:
            self._loop.call_soon_threadsafe(self.api.release)
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(10)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def call(self, fn: Any, *args: Any) -> Any:
        """Run ``fn(*args)`` on the server's loop (configure, release, stats) and return its result."""
        assert self._loop

        async def go() -> Any:
            return fn(*args)

        return asyncio.run_coroutine_threadsafe(go(), self._loop).result(10)

    def configure(self, config: BatchServerConfig) -> FakeBatchAPI:
        self.call(self.api.release)
        self.call(self.api.configure, config)
        return self.api

    async def _main(self) -> None:
        self._loop, self._stop = asyncio.get_running_loop(), asyncio.Event()
        runner = web.AppRunner(self.api.app(), access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.api._released = asyncio.Event()
        self._ready.set()
        await self._stop.wait()
        await runner.cleanup()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--port-file", required=True)
    ap.add_argument("--config", default="{}", help="BatchServerConfig fields as JSON")
    ap.add_argument("--lifetime", type=float, default=3600)
    args = ap.parse_args()
    api = FakeBatchAPI(BatchServerConfig(**json.loads(args.config)))

    async def serve() -> None:
        api._released = asyncio.Event()
        runner = web.AppRunner(api.app(), access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        Path(args.port_file).write_text(str(port))
        await asyncio.sleep(args.lifetime)

    asyncio.run(serve())


if __name__ == "__main__":
    main()


__all__ = ["BatchServerConfig", "FakeBatchAPI", "BatchServerThread"]
