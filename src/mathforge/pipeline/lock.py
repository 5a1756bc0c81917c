"""One writer per run directory: an exclusive ``fcntl`` lock on ``<run>/.lock``, held for the writer's lifetime.

The kernel drops the lock when the holder exits, however it exits (SIGKILL included), so a stale lock never needs
cleaning. The file holds the holder's PID and command line, which a second writer puts in its error message.
Readers (``report``, ``view``) take no lock: every table they read is switched in whole by a rename.
"""

from __future__ import annotations

import fcntl
import json
import os
import sys
import threading
import time
from pathlib import Path

from mathforge.errors import RunLockedError

LOCK_FILE = ".lock"

# A process may open several contexts on one run directory (``retry`` runs the recipe runner); they share one lock.
_held: dict[Path, tuple[int, int]] = {}  # resolved run dir -> (fd, reference count)
_guard = threading.Lock()


def holder(run_dir: str | Path) -> dict[str, object] | None:
    """Who holds (or last held) the lock: ``{"pid", "command", "since"}``, or None when never locked."""
    try:
        return json.loads((Path(run_dir) / LOCK_FILE).read_text(encoding="utf-8") or "null")
    except (OSError, ValueError):
        return None


class RunLock:
    """The run directory's writer lock; ``acquire`` raises ``RunLockedError`` naming the holder's PID."""

    def __init__(self, run_dir: str | Path):
        self.run_dir = Path(run_dir)
        self.key = self.run_dir.resolve()
        self.acquired = False

    def acquire(self) -> "RunLock":
        with _guard:
            if self.key in _held:
                fd, n = _held[self.key]
                _held[self.key] = (fd, n + 1)
                self.acquired = True
                return self
            path = self.run_dir / LOCK_FILE
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                info = holder(self.run_dir) or {}
                pid = info.get("pid", "unknown")
                since = time.strftime("%H:%M:%S", time.localtime(float(info.get("since") or 0))) if info else "?"
                raise RunLockedError(
                    f"{self.run_dir}: another mathforge process (PID {pid}, since {since}: {info.get('command', '?')}) "
                    "is writing this run directory. Wait for it to finish or stop it (`kill "
                    f"{pid}`); read-only commands (`mathforge report`, `mathforge view`) work meanwhile",
                    pid=pid if isinstance(pid, int) else None,
                ) from None
            os.ftruncate(fd, 0)
            os.pwrite(fd, json.dumps({"pid": os.getpid(), "command": " ".join(sys.argv)[:300],
                                      "since": time.time()}).encode(), 0)
            _held[self.key] = (fd, 1)
            self.acquired = True
            return self

    def release(self) -> None:
        if not self.acquired:
            return
        self.acquired = False
        with _guard:
            fd, n = _held[self.key]
            if n > 1:
                _held[self.key] = (fd, n - 1)
                return
            del _held[self.key]
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)

    def __enter__(self) -> "RunLock":
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()
