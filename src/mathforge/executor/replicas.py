"""Model replicas on a Ray cluster: one actor per GPU (or per node on CPU) answering requests chunk by chunk.

A replica never touches the run directory. It answers a chunk of requests with the teacher's own backend and streams
the results back in small batches (a Ray streaming generator); the driver commits each batch to the ledger as it
arrives. A request that makes its backend raise fails alone: the chunk is bisected until the failing requests are
isolated, and those are reported as failed (recorded in the ledger, re-sent by ``mathforge retry``), never the job.
"""

from __future__ import annotations

import os
import queue
import threading
import time
from dataclasses import fields
from typing import Any, Iterator, Sequence

from mathforge.backends.base import Backend, Completion, GenRequest
from mathforge.engine.accounting import TeacherStats

MODEL_BACKENDS = ("local", "vllm")  # in-process models: one replica per GPU (per node on CPU)
BATCH_SECONDS = 0.2  # a replica sends what it has at least this often
BATCH_ITEMS = 64  # ... or as soon as it has this many results
STATS_SECONDS = 1.0  # a replica sends what its counters (calls, 429s, retries, tokens, spend) gained this often
MAX_SPLITS = 16  # bisection depth: 2^16 requests in a chunk are far more than any chunk holds


def replica_plan(config: Any, gpus: int, nodes: int, share: int = 1) -> tuple[int, dict[str, Any], int]:
    """How many replicas a teacher gets, the Ray resources of each, and the requests handed to one at a time.

    A model replica takes ``tensor_parallel_size`` GPUs (vLLM shards the model over them; 1 for transformers), or one
    CPU worker per node without GPUs. Its chunk keeps its batching busy: with refill batching four batches (a
    finished row's slot takes the next prompt of the chunk, so rows are refilled until the chunk's last batch), a
    batch with static batching, vLLM's own ``chunk_prompts``. API teachers wait on the network: one light worker per
    node (under one cluster-wide limit), four times their concurrency per chunk."""
    if config.backend in MODEL_BACKENDS:
        per = gpus_per_replica(config)
        if gpus:
            replicas, options = max(1, gpus // (per * share)), {"num_gpus": per, "num_cpus": 1}
        else:
            replicas, options = max(1, nodes // share), {"num_cpus": 1}
        batch = int(getattr(config, "batch_size", None) or 16)
        if getattr(config, "chunk_prompts", None):
            chunk = int(config.chunk_prompts)
        elif getattr(config, "batching", None) == "refill":
            chunk = 4 * batch
        else:
            chunk = batch
        return replicas, options, chunk
    return nodes, {"num_cpus": 0}, max(32, 4 * int(getattr(config, "max_concurrency", 8) or 8))


def gpus_per_replica(config: Any) -> int:
    """GPUs one model replica takes: vLLM's tensor-parallel size (the model sharded over them), else one."""
    return int(getattr(config, "tensor_parallel_size", 1) or 1)


class QueueSink:
    """The result sink inside a replica: results go to a queue that the streaming method drains."""

    def __init__(self) -> None:
        self.stats = TeacherStats()
        self.reported: set[str] = set()
        self.queue: queue.Queue = queue.Queue()

    def ok(self, request: GenRequest, completion: Completion) -> None:
        self.ok_many([(request, completion)])

    def ok_many(self, items: Sequence[tuple[GenRequest, Completion]]) -> None:
        self.reported.update(r.key for r, _ in items)
        self.queue.put(("ok", [(r.key, c.text, c.finish_reason, c.tokens_in, c.tokens_out, c.latency, c.response)
                               for r, c in items]))

    def fail(self, request: GenRequest, error: str, *, final: bool, abandoned: bool = False) -> None:
        if final:
            self.reported.add(request.key)
        self.queue.put(("fail", [(request.key, error, final, abandoned)]))


def answer(backend: Backend, requests: Sequence[GenRequest], sink: QueueSink, depth: int = 0) -> None:
    """Answer ``requests``; when the backend raises, only the requests that make it raise are failed.

    The unanswered rest is split in halves and each half tried again, so one over-long prompt or one bad batch costs
    only its own requests (each failing request is tried alone once before it is recorded as failed)."""
    try:
        backend.generate(requests, sink)
        return
    except Exception as exc:  # a backend's error is this chunk's problem, never the job's
        error = f"{type(exc).__name__}: {exc}"[:2000]
    left = [r for r in requests if r.key not in sink.reported]
    if len(left) <= 1 or depth >= MAX_SPLITS:
        for r in left:
            sink.fail(r, error, final=True)
        return
    half = len(left) // 2
    answer(backend, left[:half], sink, depth + 1)
    answer(backend, left[half:], sink, depth + 1)


def drain(sink: QueueSink, worker: threading.Thread, counters: "Counters | None" = None) -> Iterator[tuple[str, Any]]:
    """Batches of results from the sink's queue while ``worker`` runs, and whatever it left at the end; with
    ``counters``, what the replica's counters gained, every ``STATS_SECONDS`` while they change (the driver's live
    progress line, not only at the end of a chunk)."""
    pending: dict[str, list] = {"ok": [], "fail": []}
    last = last_stats = time.monotonic()
    while True:
        if counters is not None and time.monotonic() - last_stats >= STATS_SECONDS:
            last_stats = time.monotonic()
            gained = counters.gained()
            if gained:
                yield "stats", gained
        alive = worker.is_alive()
        try:
            kind, items = sink.queue.get(timeout=BATCH_SECONDS / 2)
            pending[kind].extend(items)
        except queue.Empty:
            pass
        full = sum(map(len, pending.values())) >= BATCH_ITEMS
        if full or time.monotonic() - last >= BATCH_SECONDS or (not alive and sink.queue.empty()):
            for kind in ("ok", "fail"):
                if pending[kind]:
                    yield kind, pending[kind]
                    pending[kind] = []
            last = time.monotonic()
        if not alive and sink.queue.empty() and not any(pending.values()):
            return


class Counters:
    """A replica's counters as increments: what each changed since the last time they were sent."""

    def __init__(self, stats: TeacherStats):
        self.stats, self.sent = stats, stats_dict(stats)

    def gained(self) -> dict[str, float]:
        now = stats_dict(self.stats)  # one snapshot: every increment sent is taken from it
        out = {k: v - self.sent.get(k, 0) for k, v in now.items() if v != self.sent.get(k, 0)}
        self.sent = now
        return out


def stats_dict(stats: TeacherStats) -> dict[str, float]:
    """The numeric counters of a replica's stats, summed into the driver's per teacher."""
    skip = {"total", "started", "finished", "prior_tokens_in", "prior_tokens_out", "prior_spend"}
    return {f.name: getattr(stats, f.name) for f in fields(stats)
            if f.name not in skip and isinstance(getattr(stats, f.name), (int, float))
            and not isinstance(getattr(stats, f.name), bool)}


class Replica:
    """The body of the replica actor (wrapped by ``ray.remote`` in ``ray_executor``)."""

    def __init__(self, name: str, config: Any, env: dict[str, str], limiter: Any = None, scope: str | None = None):
        from mathforge.backends import make_backend

        os.environ.update(env)  # the teacher's key variables: the backend reads them at send time, as locally
        if limiter is not None:  # the cluster-wide rate limit (and budget cap, in the run's ``scope``) of API teachers
            from mathforge.executor import cluster_limits

            cluster_limits.install(limiter, scope)
        self.backend = make_backend(name, config)

    def ready(self) -> str:
        """Load the model (or open connections); returns the node this replica runs on."""
        import ray

        self.backend.prepare()
        return ray.get_runtime_context().get_node_id()

    def run(self, requests: list[GenRequest]) -> Iterator[tuple[str, Any]]:
        """Answer a chunk, yielding ("ok" | "fail", items) batches as they finish and ("stats", increments) of its
        counters every second and at the end."""
        sink = QueueSink()
        errors: list[BaseException] = []

        def work() -> None:
            try:
                answer(self.backend, requests, sink)
            except BaseException as exc:  # answer() contains backend errors; anything else ends the chunk
                errors.append(exc)

        counters = Counters(sink.stats)
        worker = threading.Thread(target=work, daemon=True)
        worker.start()
        yield from drain(sink, worker, counters)
        worker.join()
        if errors:
            raise errors[0]
        yield "stats", counters.gained()
