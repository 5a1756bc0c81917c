"""A simulated Ray cluster on 127.0.0.1 and a load of API workers, for the cluster rate-limit test and benchmark.

``local_cluster`` starts the loopback cluster of ``tests/ray_cluster.py`` (one CPU per node) and connects to it.
``run_load`` starts one actor per worker, each running the real ``OpenAIBackend`` engine (with the cluster limiter
installed, or its local one) into a ledger of its own, and samples the server's count of answered requests while
they run.
"""

from __future__ import annotations

import contextlib
import os
import time
from pathlib import Path
from typing import Any, Callable, Iterator

KEY_ENV = "RAY_LOAD_KEY"


@contextlib.contextmanager
def local_cluster(nodes: int = 3) -> Iterator[Any]:
    """A ``nodes``-node Ray cluster on loopback (``tests/ray_cluster.py``), with this process connected to it."""
    import ray
    from ray_cluster import local_cluster as loopback_cluster

    # Ray's memory monitor kills workers when the host (shared here with other jobs) passes 95% of its memory, which
    # says nothing about this small cluster; the kernel's OOM killer still guards the machine.
    os.environ["RAY_memory_monitor_refresh_ms"] = "0"
    with loopback_cluster(nodes) as cluster:
        ray.init(address=cluster.address, namespace="mathforge-test", log_to_driver=False)
        yield cluster


def _worker_class() -> Any:
    import ray

    @ray.remote(num_cpus=1, max_restarts=0)
    class LoadWorker:
        """One cluster worker: an OpenAI teacher whose engine uses the cluster limiter (or, without a handle, its own)."""

        def __init__(self, handle: Any, key: str):
            os.environ[KEY_ENV] = key
            from mathforge.executor import cluster_limits
            from mathforge.backends import openai_api  # noqa: F401  (imported before the clock starts)

            cluster_limits.install(handle)

        def node(self) -> str:
            return ray.get_runtime_context().get_node_id()

        def run(self, url: str, n: int, tag: str, teacher: dict) -> dict:
            import tempfile

            from mathforge.backends.base import GenRequest, SamplingParams
            from mathforge.backends.openai_api import OpenAIBackend, OpenAIConfig
            from mathforge.generate import LedgerSink
            from mathforge.store.ledger import Ledger

            params = SamplingParams(temperature=0.7, top_p=1.0, max_tokens=64, seed=0)
            reqs = [GenRequest(f"{tag}{i:06d}".ljust(64, "0"), [{"role": "user", "content": f"What is {i} + 1?"}],
                               params, 0) for i in range(n)]
            backend = OpenAIBackend("t", OpenAIConfig(model="fake", base_url=url, api_key_env=KEY_ENV, **teacher))
            with tempfile.TemporaryDirectory() as d:
                ledger = Ledger(Path(d) / "ledger.sqlite")
                ledger.register((r.key, "t", "fake", {"i": i}) for i, r in enumerate(reqs))
                sink = LedgerSink(ledger)
                backend.generate(reqs, sink)
                ok = sum(1 for r in ledger.rows() if r.status == "ok")
                ledger.close()
            return {"ok": ok, "stats": sink.stats.as_dict()}

    return LoadWorker


def run_load(url: str, answered: Callable[[], int], *, workers: int, per_worker: int, teacher: dict,
             handle: Any | None, key: str = "sk-load-not-a-real-key", poll: float = 0.05) -> dict:
    """Run ``workers`` API workers of ``per_worker`` requests each at once; sample ``answered()`` (the server's 200s)."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    cls = _worker_class()
    node_ids = [n["NodeID"] for n in ray.nodes() if n["Alive"] and n["Resources"].get("CPU")]
    actors = [cls.options(scheduling_strategy=NodeAffinitySchedulingStrategy(node_ids[i % len(node_ids)], soft=True))
              .remote(handle, key) for i in range(workers)]
    nodes = ray.get([a.node.remote() for a in actors], timeout=600)  # every worker is up before the clock starts
    start_count = answered()
    t0 = time.monotonic()
    refs = [a.run.remote(url, per_worker, f"w{i}-", teacher) for i, a in enumerate(actors)]
    samples = [(0.0, 0)]
    pending = list(refs)
    deadline = t0 + 600
    while pending and time.monotonic() < deadline:
        _, pending = ray.wait(pending, num_returns=len(pending), timeout=poll)
        samples.append((time.monotonic() - t0, answered() - start_count))
    results = ray.get(refs, timeout=max(1.0, deadline - time.monotonic()))
    for a in actors:
        ray.kill(a)
    return {"results": results, "samples": samples, "nodes": len(set(nodes)), "elapsed": samples[-1][0]}


def steady_rate(samples: list[tuple[float, int]], lo: float = 0.1, hi: float = 0.9) -> float:
    """Answers per second between the moments ``lo`` and ``hi`` of all answers had arrived (ramp and tail left out)."""
    total = samples[-1][1]
    t_lo = next(t for t, c in samples if c >= lo * total)
    t_hi = next(t for t, c in samples if c >= hi * total)
    return (hi - lo) * total / max(1e-9, t_hi - t_lo)
