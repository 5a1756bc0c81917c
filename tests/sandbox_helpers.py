"""Shared helpers for the sandbox tests: whether bubblewrap works here, and finding a run's leftover processes."""

from __future__ import annotations

import functools
import os
import time

import pytest

from mathforge.verify.sandbox import SandboxUnavailable, run_program


@functools.lru_cache(maxsize=1)
def bwrap_problem() -> str | None:
    """None when the bubblewrap sandbox works on this machine, else why not."""
    try:
        run_program("print(1)", mode="bwrap")
    except SandboxUnavailable as exc:
        return str(exc)
    return None


def require_bwrap() -> None:
    """Skip without bubblewrap, except on CI (which installs it), where a missing sandbox is a failure."""
    problem = bwrap_problem()
    if problem and os.environ.get("CI"):
        pytest.fail(f"CI must run the sandbox tests: {problem}")
    if problem:
        pytest.skip(problem)


def processes_with(token: str) -> list[int]:
    """PIDs of host processes whose command line contains ``token`` (a run's id)."""
    found = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/cmdline", "rb") as f:
                if token.encode() in f.read():
                    found.append(int(name))
        except OSError:
            pass
    return found


def wait_gone(token: str, seconds: float = 3.0) -> list[int]:
    """Wait (bounded) until no process carries ``token``; return those still there."""
    deadline = time.monotonic() + seconds
    while (left := processes_with(token)) and time.monotonic() < deadline:
        time.sleep(0.05)
    return left
