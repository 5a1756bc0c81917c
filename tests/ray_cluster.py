"""A multi-node Ray cluster simulated on this machine for tests and benchmarks: every node on 127.0.0.1.

Ray finds "its" address by probing a public one and would bind the cluster there; with
``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0`` it takes loopback instead, and every node is started with
``node_ip_address=127.0.0.1``. Usage stats and dashboards are off, object stores small, one CPU per node.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Any, Iterator

ROOT = Path(__file__).resolve().parent.parent
NODE = {"node_ip_address": "127.0.0.1", "object_store_memory": 100 * 1024**2, "num_cpus": 1}


def loopback_env() -> None:
    """The environment this process and every Ray process it starts need to stay on loopback."""
    os.environ["RAY_USAGE_STATS_ENABLED"] = "0"
    os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"  # read at import: loopback as the node address
    # Ray's memory monitor counts the whole machine: on a shared one it would kill our workers for others' use.
    os.environ["RAY_memory_monitor_refresh_ms"] = "0"
    # Workers inherit the raylets' environment: this checkout's sources (and tests/) come first on their path.
    paths = [str(ROOT / "src"), str(ROOT / "tests"), *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep))]
    os.environ["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(paths))
    import ray._private.ray_constants as constants  # in case ray was imported before the variable was set

    constants.ENABLE_RAY_CLUSTER = False


@contextlib.contextmanager
def local_cluster(nodes: int = 3, worker: dict[str, Any] | None = None) -> Iterator[Any]:
    """A ``nodes``-node cluster (the head and ``nodes - 1`` workers); always shut down, with every process.
    ``worker``: what the worker nodes declare instead of ``NODE``'s (``num_gpus=1``: a simulated GPU, a resource
    Ray schedules by; torch on such a node still sees no CUDA)."""
    loopback_env()
    from ray.cluster_utils import Cluster

    cluster = Cluster(initialize_head=True, head_node_args={**NODE, "include_dashboard": False})
    try:
        for _ in range(nodes - 1):
            cluster.add_node(**{**NODE, **(worker or {})})
        cluster.wait_for_nodes()
        yield cluster
    finally:
        import ray

        if ray.is_initialized():
            ray.shutdown()
        cluster.shutdown()


def kill_node(cluster: Any, node: Any, remove: bool = True) -> None:
    """Lose a node the way a machine is lost: its raylet and every worker process under it die at the same
    moment (``remove_node`` alone kills the raylet, and its workers would run on for a moment). ``remove``:
    also take it out of the cluster's books (else call ``cluster.remove_node`` later)."""
    import psutil

    raylet = psutil.Process(node.all_processes["raylet"][0].process.pid)
    victims = [raylet, *raylet.children(recursive=True)]
    for p in victims:
        try:
            p.kill()
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(victims, timeout=10)
    if remove:
        cluster.remove_node(node, allow_graceful=False)
