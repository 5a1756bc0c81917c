"""The Ray executor: the same recipe with its shard maps, model replicas and dedup partitions on a Ray cluster.

The driver (the ``mathforge run`` process) stays the only writer of the run directory: it reads each input shard and
hands it to a task, writes the shard that comes back, and commits every answer a replica streams back to the ledger
itself. Workers therefore need no access to the run directory (local disks or a shared filesystem work alike), a lost
worker costs only its uncommitted work (re-run elsewhere: shard maps are pure, requests re-queued), and a killed
driver resumes from the ledger and the finished shards like a local run.
"""

from __future__ import annotations

import os
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Iterable, Iterator, Sequence

from mathforge.errors import BackendError, ConfigError
from mathforge.executor.replicas import MODEL_BACKENDS, Replica, gpus_per_replica, replica_plan

if TYPE_CHECKING:
    import pyarrow as pa

    from mathforge.backends.base import GenRequest, ResultSink
    from mathforge.pipeline.context import RunContext
    from mathforge.store.shards import ShardReader, ShardWriter

MAX_LOSSES = 3  # a chunk whose replica died this often is failed (recorded; `mathforge retry` re-sends it)
READY_TIMEOUT = 600.0  # seconds for a replacement replica to load its model
MAX_IN_FLIGHT = 16  # items of an ordered map submitted ahead (the driver holds them until their results come)


def import_ray() -> Any:
    """``ray``, or a clear error naming the extra that installs it."""
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")  # never report usage from a data pipeline
    try:
        import ray
    except ImportError:
        raise ConfigError("executor: ray needs Ray, which is not installed: pip install 'mathforge[ray]'") from None
    return ray


@dataclass
class Pool:
    """The replicas of one teacher for one stage, and what the driver knows about them."""

    teacher: str
    actors: list[Any]
    chunk: int
    spec: dict[str, Any] = field(default_factory=dict)  # how to start a replacement replica
    lost: int = 0


@dataclass(frozen=True)
class Turns:
    """Model teachers that take turns on the cluster's GPUs: ``free`` counts the GPUs (``slots``) not in use."""

    free: threading.BoundedSemaphore
    teachers: frozenset[str]
    slots: int


class RayExecutor:
    """Stage work on a Ray cluster; the driver keeps every write to the run directory."""

    kind = "ray"

    def __init__(self, address: str | None = None):
        self.ray = ray = import_ray()
        self.owned = not ray.is_initialized()
        if self.owned:
            address = address or os.environ.get("RAY_ADDRESS")
            kwargs: dict[str, Any] = {"log_to_driver": False, "namespace": "mathforge"}
            if address:
                kwargs["address"] = address
            else:  # a Ray instance on this machine only, bound to loopback, no dashboard
                kwargs.update(include_dashboard=False, _node_ip_address="127.0.0.1")
            try:
                ray.init(**kwargs)
            except ConnectionError as exc:
                raise ConfigError(f"executor: ray: cannot join the Ray cluster at {address}: {exc}") from None
        self._remote: dict[str, Any] = {}
        self._pools: dict[str, Pool] = {}
        self._limiter: Any = None
        self._turns: Turns | None = None  # model teachers taking turns on too few GPUs (see ``prepare``)
        self.scope = uuid.uuid4().hex[:16]  # this run's books in the cluster limits actor (budget caps)
        self.lost_replicas = 0  # replicas that died while answering (for tests and the summary)

    # -- cluster facts ---------------------------------------------------------------------------------------------
    def resources(self) -> dict[str, float]:
        return self.ray.cluster_resources()

    def nodes(self) -> int:
        return max(1, sum(1 for n in self.ray.nodes() if n.get("Alive")))

    def cpus(self) -> int:
        return max(1, int(self.resources().get("CPU", 1)))

    def gpus(self) -> int:
        return int(self.resources().get("GPU", 0))

    def _fn(self, name: str) -> Any:
        """A remote function or actor class, defined once per executor (Ray must be initialised first)."""
        if name not in self._remote:
            ray = self.ray
            if name == "map":
                self._remote[name] = ray.remote(_map_shard)
            elif name == "call":
                self._remote[name] = ray.remote(_call)
            elif name == "candidates":
                self._remote[name] = ray.remote(_partition_candidates)
            else:
                self._remote[name] = ray.remote(max_restarts=0, max_task_retries=0)(_ReplicaActor)
        return self._remote[name]

    # -- map-like stages ---------------------------------------------------------------------------------------------
    def map_shards(self, reader: "ShardReader", writer: "ShardWriter", fn: Callable[[list[dict]], list[dict]],
                   after: Callable[["pa.Table"], None] | None = None) -> dict[str, int]:
        """Input shard i -> output shard i as Ray tasks, at most two per CPU in flight; the driver reads each input
        shard and writes each result (workers need no access to the run directory). A task lost with its worker is
        re-run by Ray (the function is pure); a killed stage resumes at its unfinished shards."""
        import pyarrow as pa

        ray = self.ray
        todo = [i for i in range(len(reader)) if not writer.done(i)]
        reused = len(reader) - len(todo)
        fn_ref = ray.put(fn)
        pending: dict[Any, int] = {}
        queue = deque(todo)

        def submit() -> None:
            i = queue.popleft()
            table = pa.Table.from_batches(list(reader.shard_batches(i)), reader.schema)
            pending[self._fn("map").remote(fn_ref, table, writer.schema)] = i

        while queue and len(pending) < 2 * self.cpus():
            submit()
        while pending:
            ready, _ = ray.wait(list(pending), num_returns=1)
            i = pending.pop(ready[0])
            out = ray.get(ready[0])
            if after is not None:
                after(out)
            writer.write_shard(i, out)
            if queue:
                submit()
        return {"shards": len(todo), "shards_reused": reused}

    def imap(self, fn: Callable[[Any], Any], items: Iterable[Any]) -> Iterator[Any]:
        """``fn`` over ``items`` as one Ray task each, results in order. Items are taken lazily, at most
        ``MAX_IN_FLIGHT`` (and two per CPU) ahead of the one the caller waits for: the driver holds that many items
        and each worker one, whatever the length of ``items``. ``fn`` is put in the object store once and unpacked
        once per worker process (``_call``). A task lost with its worker is re-run (``fn`` is pure)."""
        ray = self.ray
        fn_box = [ray.put(fn)]  # in a list: Ray hands the task the reference, not a fresh copy of the object
        window = max(2, min(MAX_IN_FLIGHT, 2 * self.cpus()))
        pending: deque[Any] = deque()
        for item in items:
            pending.append(self._fn("call").remote(fn_box, item))
            if len(pending) >= window:
                yield ray.get(pending.popleft())
        while pending:
            yield ray.get(pending.popleft())

    # -- global dedup ------------------------------------------------------------------------------------------------
    def band_candidates(self, chunks: Callable[[], Iterator[tuple[Any, Any]]], n: int,
                        bands: int) -> dict[int, set[int]]:
        """LSH candidates with the band keys partitioned by hash over workers: a worker holds 1/P of the keys
        (P = 2 per CPU, at least 2), and the union of the partitions' pairs is exactly the local search's."""
        import numpy as np

        ray = self.ray
        parts = max(2, 2 * self.cpus())
        refs: list[list[Any]] = [[] for _ in range(parts)]
        for ids, keys in chunks():
            if not len(ids):
                continue
            band = np.repeat(np.arange(bands, dtype=np.int16)[None, :], len(ids), axis=0).ravel()
            flat_ids = np.repeat(ids.astype(np.int64), bands)
            flat_keys = keys.ravel()
            where = (flat_keys % np.uint64(parts)).astype(np.int64)
            for p in range(parts):
                m = where == p
                if m.any():
                    refs[p].append(ray.put((band[m], flat_ids[m], flat_keys[m])))
        out: dict[int, set[int]] = {}
        tasks = [self._fn("candidates").remote(*r) for r in refs if r]
        for found in ray.get(tasks):
            for i, js in found.items():
                out.setdefault(i, set()).update(js)
        return out

    # -- generation --------------------------------------------------------------------------------------------------
    def teacher_config(self, config: Any) -> Any:
        """``device: auto`` of a model teacher decided for the replicas, not for the driver: a driver without a GPU
        would otherwise plan CPU keys (fp16-quantised linear layers) for replicas that run on GPUs."""
        if config.backend == "local" and getattr(config, "device", None) == "auto":
            return config.model_copy(update={"device": "cuda" if self.gpus() else "cpu"})
        return config

    def model_slots(self, per: int = 1) -> int:
        """Model replicas the cluster holds at once: one per ``per`` GPUs (a replica's tensor-parallel size), or one
        per CPU on a cluster without GPUs."""
        gpus = self.gpus()
        if gpus and gpus < per:
            raise ConfigError(f"a model teacher needs {per} GPUs (tensor_parallel_size) and the cluster has {gpus}")
        return gpus // per if gpus else self.cpus()

    def prepare(self, ctx: "RunContext", teachers: list[str]) -> None:
        """Start the replicas of the teachers that answer next (together: students evaluated at once share the
        GPUs) and wait until each has loaded its model; pools of other teachers are released first.

        More model teachers than GPUs (CPUs, without GPUs): they take turns, one replica each and at most one per
        GPU at a time, each released as soon as it has answered (``generate``), instead of replicas waiting for a
        GPU that no pool gives back before the stage ends."""
        for other in [t for t in self._pools if t not in teachers]:
            self._release(other)
        for teacher in [t for t in teachers if on_driver(ctx, t)]:
            ctx.backend(teacher).prepare()
        teachers = [t for t in teachers if not on_driver(ctx, t)]
        models = [t for t in teachers if ctx.backend(t).config.backend in MODEL_BACKENDS]
        slots = self.model_slots(max((gpus_per_replica(ctx.backend(t).config) for t in models), default=1))
        self._turns = None
        if len(models) > slots:
            from mathforge.pipeline.progress import console

            unit = "GPU" if self.gpus() else "CPU"
            console.log(f"{len(models)} model teachers and {slots} {unit}{'s' if slots > 1 else ''} in the cluster: "
                        f"they take turns, {slots} at a time, one replica ({unit}) each")
            self._turns = Turns(threading.BoundedSemaphore(slots), frozenset(models), slots)
            for teacher in [t for t in self._pools if t in self._turns.teachers]:
                self._release(teacher)  # a pool kept from an earlier call would hold a GPU outside the turns
            teachers = [t for t in teachers if t not in self._turns.teachers]  # started when their turn comes
        for teacher in teachers:
            self._pool(ctx, teacher, share=max(1, len(models)))

    def _pool(self, ctx: "RunContext", teacher: str, share: int = 1) -> Pool:
        """The teacher's replicas, started once per stage; ``share``: model teachers splitting the GPUs (or the
        nodes, on CPU) between them, each getting at least one replica."""
        if teacher in self._pools:
            return self._pools[teacher]
        config = ctx.backend(teacher).config  # as the driver resolved it (a run's own adapter path)
        model = config.backend in MODEL_BACKENDS
        env = {v: os.environ[v] for k, v in config.model_dump().items()
               if k.endswith("_env") and isinstance(v, str) and v in os.environ}
        limiter = None if model else self._cluster_limiter()
        replicas, options, chunk = replica_plan(config, self.gpus(), self.nodes(), share)
        spec = {"options": {**options, "scheduling_strategy": "SPREAD"},
                "args": (teacher, config, env, limiter, self.scope if limiter is not None else None)}
        started = [self._fn("replica").options(**spec["options"]).remote(*spec["args"]) for _ in range(replicas)]
        ready = {a: a.ready.remote() for a in started}
        actors, error = [], None
        deadline = time.monotonic() + READY_TIMEOUT  # one wait for all: replicas that cannot be placed cost it once
        for a, ref in ready.items():  # a replica that cannot start (no memory on its node) leaves the others working
            try:
                self.ray.get(ref, timeout=max(0.0, deadline - time.monotonic()))
                actors.append(a)
            except Exception as exc:
                error = exc
                self.ray.kill(a)
        if not actors:
            raise BackendError(f"teacher {teacher}: no Ray replica could start: {error}")
        pool = self._pools[teacher] = Pool(teacher, actors, chunk, spec)
        return pool

    def _cluster_limiter(self) -> Any:
        """The cluster-wide RPM/TPM budget per API key (``executor/cluster_limits.py``): every API worker leases
        from it, so N workers together keep the provider's limit and still learn it from headers and 429s."""
        if self._limiter is None:
            from mathforge.executor import cluster_limits

            self._limiter = cluster_limits.start()
        return self._limiter

    def generate(self, ctx: "RunContext", teacher: str, requests: Sequence["GenRequest"], sink: "ResultSink") -> None:
        """Answer ``requests`` on the teacher's replicas, a chunk per replica at a time; every result is committed
        through ``sink`` (the driver's ledger) as its batch arrives. A replica lost mid-chunk loses only what it had
        not streamed back: that part of the chunk goes back in the queue for the others."""
        if on_driver(ctx, teacher):
            ctx.backend(teacher).generate(requests, sink)
            return
        turns = self._turns
        if turns is not None and teacher in turns.teachers:
            with turns.free:  # a GPU for this teacher's one replica, given back as soon as it has answered
                try:
                    self._answer(self._pool(ctx, teacher, share=turns.slots), requests, sink)
                finally:
                    self._release(teacher)
            return
        self._answer(self._pool(ctx, teacher), requests, sink)

    def _answer(self, pool: Pool, requests: Sequence["GenRequest"], sink: "ResultSink") -> None:
        """``generate`` on the teacher's pool."""
        from mathforge.backends.base import Completion

        book = self._open_budget(pool, sink)
        by_key = {r.key: r for r in requests}
        work: deque[tuple[int, list[GenRequest]]] = deque(
            (0, list(requests[i : i + pool.chunk])) for i in range(0, len(requests), pool.chunk))
        lock = threading.Lock()
        answered = [0]  # requests answered or failed for good (the rest, if the budget stopped them, are unsent)
        errors: list[BaseException] = []
        stats = getattr(sink, "stats", None)
        progress = getattr(sink, "progress", None)  # the driver's live view of the whole cluster's work

        def take() -> tuple[int, list] | None:
            with lock:
                return work.popleft() if work else None

        def drive(actor: Any) -> None:
            while not errors:
                item = take()
                if item is None:
                    return
                losses, chunk = item
                done: set[str] = set()
                try:
                    for ref in actor.run.options(num_returns="streaming").remote(chunk):
                        kind, items = self.ray.get(ref)
                        if kind == "ok":
                            sink.ok_many([(by_key[k], Completion(text, finish, tin, tout, latency, response))
                                          for k, text, finish, tin, tout, latency, response in items])
                            done.update(k for k, *_ in items)
                            with lock:
                                answered[0] += len(items)
                        elif kind == "fail":
                            for k, error, final, abandoned in items:
                                sink.fail(by_key[k], error, final=final, abandoned=abandoned)
                                if final:
                                    done.add(k)
                                    with lock:
                                        answered[0] += 1
                        elif stats is not None:  # increments, every second while the chunk runs and at its end
                            with lock:
                                for name, value in items.items():
                                    setattr(stats, name, getattr(stats, name) + value)
                            if progress is not None:
                                progress.update(getattr(sink, "task", None), extra=stats.line())
                except self.ray.exceptions.RayTaskError as exc:  # a bug in the replica, not a lost machine
                    errors.append(exc)
                    return
                except self.ray.exceptions.RayError:  # the replica, its worker or its node is gone
                    # Some of these leave the actor alive (unavailable for a moment, a full object store): kill it,
                    # or it would hold its GPU for the rest of the stage outside every pool (a dead one: no-op).
                    self.ray.kill(actor)
                    left = [r for r in chunk if r.key not in done]
                    with lock:
                        self.lost_replicas += 1
                        pool.lost += 1
                        pool.actors = [a for a in pool.actors if a is not actor]
                        if left and losses + 1 >= MAX_LOSSES:
                            for r in left:
                                sink.fail(r, f"lost with its Ray worker {MAX_LOSSES} times", final=True)
                            answered[0] += len(left)
                        elif left:
                            work.appendleft((losses + 1, left))
                    return  # the other replicas take the rest
                except BaseException as exc:  # the driver's own side (the ledger, the progress line): end the stage
                    errors.append(exc)
                    return

        # Rounds: a replica lost late may put work back after the others stopped looking; each round either finishes
        # the queue or loses a replica, and a chunk is failed after MAX_LOSSES losses, so this ends.
        while work:
            if not pool.actors and self._replace(pool) is None:
                break  # no replica can start: what is left stays pending in the ledger (a rerun sends it)
            threads = [threading.Thread(target=drive, args=(a,), daemon=True) for a in list(pool.actors)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            if errors:
                raise errors[0]
        if book is not None and answered[0] < len(requests):
            self._budget_outcome(pool, book, sink)

    def _open_budget(self, pool: Pool, sink: "ResultSink") -> str | None:
        """Open the teacher's cluster-wide book of spend (``executor/cluster_budget.py``) for the requests about to
        go out, from the cap and the spend the driver's ledger holds; None when the teacher has no ``budget:``."""
        from mathforge.engine.accounting import Pricing
        from mathforge.executor.cluster_budget import budget_key

        teacher, config, _, limiter, scope = pool.spec["args"]
        cap = getattr(config, "budget", None)
        if cap is None or limiter is None:
            return None
        stats = getattr(sink, "stats", None)
        pricing = Pricing(getattr(config, "price_input_per_m", 0.0), getattr(config, "price_output_per_m", 0.0))
        prior = pricing.cost(stats.prior_tokens_in, stats.prior_tokens_out) if stats is not None else 0.0
        key = budget_key(scope, teacher)
        self.ray.get(limiter.open_budget.remote(key, cap, prior))
        return key

    def _budget_outcome(self, pool: Pool, key: str, sink: "ResultSink") -> None:
        """Say on the driver's counters that the cap stopped the workers, when it left requests unsent."""
        limiter = pool.spec["args"][3]
        state = self.ray.get(limiter.budget_state.remote(key))
        stats = getattr(sink, "stats", None)
        if state is not None and state["exhausted"] and stats is not None:
            stats.stopped = f"budget ${state['limit']:,.2f} reached (cluster-wide, all workers together)"

    def _replace(self, pool: Pool, attempts: int = 3) -> Any | None:
        """A new replica where the cluster has room (every replica was lost), or None when none comes up. A few
        attempts: right after a node dies the scheduler may still place a replica on it."""
        for _ in range(attempts):
            actor = self._fn("replica").options(**pool.spec["options"]).remote(*pool.spec["args"])
            try:
                self.ray.get(actor.ready.remote(), timeout=READY_TIMEOUT)
            except Exception:
                self.ray.kill(actor)
                time.sleep(1.0)
                continue
            pool.actors.append(actor)
            return actor
        return None

    def _release(self, teacher: str) -> None:
        """Kill a teacher's replicas: their GPUs (or CPUs) go back to the cluster."""
        pool = self._pools.pop(teacher, None)
        for a in pool.actors if pool is not None else ():
            self.ray.kill(a)

    def end_stage(self) -> None:
        """Release the stage's replicas (their CPUs and GPUs go back to the next stage's tasks)."""
        for teacher in list(self._pools):
            self._release(teacher)
        self._turns = None

    def close(self) -> None:
        # The limiter actor is shared by every run on the cluster that uses the same key (get-or-create by name):
        # it is left to end with its owner, never killed under another run.
        self.end_stage()
        if self._limiter is not None:  # this run's budget books (the actor itself may serve other runs)
            try:
                self.ray.get(self._limiter.drop_budgets.remote(self.scope), timeout=10)
            except Exception:  # the actor is gone: so are the books
                pass
        self._limiter = None
        if self.owned and self.ray.is_initialized():
            self.ray.shutdown()


def on_driver(ctx: "RunContext", teacher: str) -> bool:
    """A teacher in ``mode: batch`` runs on the driver under either executor: the provider answers its requests, and
    the driver only writes batch files, submits and polls, all recorded in the batch table beside its ledger (the
    exactly-once protocol of ``engine/batch.py``, which a worker without the ledger could not keep). Its ``budget:``
    is therefore the local one: one runner, the run's ledger and batch table as its book."""
    return bool(getattr(ctx.backend(teacher), "resumes_batches", False))


class _ReplicaActor(Replica):
    """``Replica`` as a Ray actor class; its ``run`` is a streaming generator."""


def _map_shard(fn: Callable[[list[dict]], list[dict]], table: "pa.Table", schema: Any) -> "pa.Table":
    """One shard through ``fn``, a row group at a time (runs on a worker)."""
    import pyarrow as pa

    from mathforge.store.shards import ROW_GROUP, _to_table, map_batches

    out = list(map_batches(table.to_batches(ROW_GROUP), fn, schema))
    return pa.concat_tables(out) if out else _to_table([], schema)


# Per worker process: the function of the ordered map it ran last, by the id of its object in the store. A task gets
# the object's reference, so a worker unpickles the function, and what it carries (curate's benchmark index, export's
# held-out problems), once per map rather than once per item (an argument would be a fresh copy for every task). One
# function per process, replaced when a task of another map comes: objects in the store are immutable and their ids
# never reused, so an id names one content and a different function can never be served from this cache.
_unpacked: tuple[str, Callable[[Any], Any]] | None = None


def _call(fn_box: list[Any], item: Any) -> Any:
    """One item through the map's function, unpacked when this process has not unpacked it yet (runs on a worker)."""
    global _unpacked
    ref = fn_box[0]
    if _unpacked is None or _unpacked[0] != ref.hex():
        import ray

        _unpacked = None  # the previous map's function is freed before the next is unpacked
        _unpacked = (ref.hex(), ray.get(ref))
    return _unpacked[1](item)


def _partition_candidates(*parts: tuple[Any, Any, Any]) -> dict[int, set[int]]:
    """Candidate pairs from one hash partition of the band keys (runs on a worker)."""
    import numpy as np

    from mathforge.curate.dedup import add_pairs

    band = np.concatenate([p[0] for p in parts])
    ids = np.concatenate([p[1] for p in parts])
    keys = np.concatenate([p[2] for p in parts])
    out: dict[int, set[int]] = {}
    for b in np.unique(band).tolist():
        m = band == b
        add_pairs(out, keys[m], ids[m])
    return out
