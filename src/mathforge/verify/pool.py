"""A process pool with hard per-task time limits: a task past its limit has its worker killed, never waited on.

``concurrent.futures.ProcessPoolExecutor`` cannot cancel a running task, and math-verify's SIGALRM timeout neither
works outside the main thread nor interrupts long C-level work (``5^{5^{5^{5^5}}}``). Here each worker is a plain
``python -c`` subprocess serving one task at a time over its own pipes (no ``multiprocessing`` start method, so the
caller's ``__main__`` is never re-imported); the calling thread waits on the pipe with a deadline and, past it,
SIGKILLs the worker. One worker more than the concurrency is kept warm, so a kill never stalls the next call while the
replacement imports sympy. ``call`` is safe from any number of threads, and from asyncio via ``asyncio.to_thread``.
"""

from __future__ import annotations

import atexit
import os
import queue
import subprocess
import sys
import threading
from multiprocessing.connection import Connection
from typing import Any

_BOOT = "from mathforge.verify.pool import _worker_main; _worker_main()"


def _worker_main() -> None:
    """Worker loop: limit memory, warm up, then answer ``(function, args)`` requests until stdin closes."""
    proto_out = os.dup(1)
    os.dup2(2, 1)  # stray prints from libraries must not corrupt the protocol stream
    memory_mb = int(os.environ.get("MATHFORGE_VERIFY_MEMORY_MB", "0"))
    if memory_mb:
        import resource

        limit = memory_mb * 1024 * 1024
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    reader, writer = Connection(0, writable=False), Connection(proto_out, readable=False)
    from mathforge.verify import symbolic

    functions = {"compare": symbolic.compare}
    symbolic.warm()
    writer.send("ready")
    while True:
        try:
            name, args = reader.recv()
        except (EOFError, OSError):
            return
        try:
            writer.send(("ok", functions[name](*args)))
        except MemoryError:
            writer.send(("error", "memory limit reached"))
        except Exception as exc:  # a bad input must not take the worker down
            writer.send(("error", f"{type(exc).__name__}: {exc}"[:300]))


class _Worker:
    """One worker subprocess and the two ends of its protocol pipes."""

    __slots__ = ("process", "send_conn", "recv_conn")

    def __init__(self, memory_mb: int | None):
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in sys.path if p and os.path.isdir(p))
        env["MATHFORGE_VERIFY_MEMORY_MB"] = str(memory_mb or 0)
        self.process = subprocess.Popen(
            [sys.executable, "-c", _BOOT], stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env, close_fds=True
        )
        assert self.process.stdin is not None and self.process.stdout is not None
        self.send_conn = Connection(os.dup(self.process.stdin.fileno()), readable=False)
        self.recv_conn = Connection(os.dup(self.process.stdout.fileno()), writable=False)
        self.process.stdin.close()
        self.process.stdout.close()

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        try:
            self.process.wait(timeout=5)
        except subprocess.TimeoutExpired:  # pragma: no cover - a SIGKILLed process always exits
            pass
        self.send_conn.close()
        self.recv_conn.close()


class VerifyPool:
    """``size`` worker processes running symbolic checks, each call bounded by a hard wall-clock limit."""

    def __init__(self, workers: int | None = None, *, memory_mb: int | None = 4096, start_timeout: float = 120.0):
        self.size = max(1, workers or os.cpu_count() or 1)
        self.memory_mb, self.start_timeout = memory_mb, start_timeout
        self._idle: queue.Queue[_Worker] = queue.Queue()
        self._live: set[_Worker] = set()
        self._lock = threading.Lock()
        self._closed = False
        for _ in range(self.size + 1):  # the extra one is the warm spare
            self._spawn()

    def _spawn(self) -> None:
        """Start one worker; a background thread hands it to the idle queue once it has warmed up."""
        if self._closed:
            return
        worker = _Worker(self.memory_mb)
        with self._lock:
            self._live.add(worker)
        threading.Thread(target=self._await_ready, args=(worker,), daemon=True).start()

    def _await_ready(self, worker: _Worker) -> None:
        try:
            ready = worker.recv_conn.poll(self.start_timeout) and worker.recv_conn.recv() == "ready"
        except (EOFError, OSError):
            ready = False
        if ready and not self._closed:
            self._idle.put(worker)
        else:
            self._discard(worker)

    def _discard(self, worker: _Worker) -> None:
        with self._lock:
            self._live.discard(worker)
        worker.kill()

    def _replace(self, worker: _Worker) -> None:
        self._discard(worker)
        self._spawn()

    def call(self, name: str, args: tuple, timeout: float) -> tuple[str, Any]:
        """Run ``name(*args)`` in a worker: ``("ok", value)``, ``("error", message)`` or ``("timeout", None)``."""
        if self._closed:
            raise RuntimeError("verify pool is closed")
        try:
            worker = self._idle.get(timeout=self.start_timeout)
        except queue.Empty:
            raise RuntimeError("no verify worker became ready; is math-verify importable?") from None
        try:
            worker.send_conn.send((name, args))
            if worker.recv_conn.poll(timeout):
                status, value = worker.recv_conn.recv()
                self._idle.put(worker)
                return status, value
        except (EOFError, OSError, BrokenPipeError):
            self._replace(worker)
            return "error", "worker process died (memory or crash)"
        self._replace(worker)
        return "timeout", None

    def close(self) -> None:
        """Stop all workers."""
        self._closed = True
        with self._lock:
            workers = list(self._live)
            self._live.clear()
        for worker in workers:
            worker.kill()


_POOLS: dict[int, VerifyPool] = {}
_POOLS_LOCK = threading.Lock()


def get_pool(workers: int | None = None) -> VerifyPool:
    """The process-wide pool with ``workers`` workers (default: all cores), started on first use."""
    size = max(1, workers or os.cpu_count() or 1)
    with _POOLS_LOCK:
        pool = _POOLS.get(size)
        if pool is None or pool._closed:
            pool = _POOLS[size] = VerifyPool(size)
        return pool


@atexit.register
def shutdown_pools() -> None:
    """Stop every shared pool (also registered at exit)."""
    with _POOLS_LOCK:
        for pool in _POOLS.values():
            pool.close()
        _POOLS.clear()
