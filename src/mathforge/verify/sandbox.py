"""Program-of-thought sandbox: run model-written Python under OS isolation and read its printed answer.

The walls (``_bwrap``): bubblewrap puts the program in new user, mount, PID, network, IPC, UTS and cgroup namespaces
as uid 65534 with no capabilities, an empty environment, a read-only view of only the interpreter, its libraries and
the allowed packages, its own ``/proc``, and a size-capped tmpfs as the only writable place; a seccomp filter refuses
process and thread creation, sockets and namespace calls; ``prlimit`` caps CPU seconds, address space, processes,
open files and file size. The parent kills the sandbox at the wall-clock limit (its PID namespace dies with its
init) and, if mathforge itself dies, the parent-death signal takes it down: set in the forked child before ``prlimit``
is executed (so no window is left between fork and bubblewrap's own ``--die-with-parent``). Output is read through pipes
and capped. An audit hook inside (``_sandbox_boot``) is only a second layer that names what was refused.

Without bubblewrap, ``run_program`` refuses (SandboxUnavailable) unless the mode is ``unsafe-no-isolation``, which
runs the same boot script as a plain child process with rlimits and the audit hook only, and warns loudly.
"""

from __future__ import annotations

import contextvars
import ctypes
import json
import os
import re
import secrets
import selectors
import signal
import subprocess
import sys
import tempfile
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

from mathforge.verify import _bwrap
from mathforge.verify._bwrap import SandboxUnavailable

__all__ = [
    "MODES", "SandboxResult", "SandboxUnavailable", "extract_code", "reset_sandbox_mode", "run_program",
    "sandbox_mode", "set_sandbox_mode",
]

MARK = "SANDBOX-BLOCKED"
MAX_CAPTURE = 64 * 1024
MODES = ("bwrap", "unsafe-no-isolation")
UNSAFE = "unsafe-no-isolation"
_CODE_BLOCK = re.compile(r"```(?:python|py|python3)?[ \t]*\n(.*?)```", re.DOTALL | re.IGNORECASE)
# The mode for this context: set by the verify stage's ``sandbox`` key, else MATHFORGE_SANDBOX, else bwrap.
_MODE: contextvars.ContextVar[str | None] = contextvars.ContextVar("mathforge_sandbox_mode", default=None)
_warned = False


@dataclass
class SandboxResult:
    """What a sandboxed program did: ``status`` is ok, error, timeout, memory, blocked or output-limit."""

    stdout: str
    stderr: str
    returncode: int | None
    status: str
    answer: str | None
    reason: str = ""
    run_id: str = field(default="", repr=False)  # in the sandbox's command line, so its processes can be found


def sandbox_mode(mode: str | None = None) -> str:
    """The mode in force (``mode`` if given): ``bwrap`` (default) or ``unsafe-no-isolation``; validated."""
    mode = mode or _MODE.get() or os.environ.get("MATHFORGE_SANDBOX") or "bwrap"
    if mode not in MODES:
        raise ValueError(f"unknown sandbox mode {mode!r}; known: {', '.join(MODES)}")
    return mode


def set_sandbox_mode(mode: str | None) -> contextvars.Token:
    """Set the mode for the current context (the verify stage does this from its config); returns a reset token."""
    if mode is not None:
        sandbox_mode(mode)
    return _MODE.set(mode)


def reset_sandbox_mode(token: contextvars.Token) -> None:
    """Undo ``set_sandbox_mode``."""
    _MODE.reset(token)


def extract_code(text: str) -> str | None:
    """The last fenced Python block in a model output."""
    blocks = _CODE_BLOCK.findall(text or "")
    return blocks[-1] if blocks else None


def run_program(
    code: str,
    *,
    timeout: float = 5.0,
    memory_mb: int = 1024,
    fsize_mb: int = 1,
    disk_mb: int = 16,
    nofile: int = 64,
    mode: str | None = None,
) -> SandboxResult:
    """Run ``code`` confined; the answer is the last non-empty line it printed (only when it exited cleanly)."""
    mode = sandbox_mode(mode)
    run_id = secrets.token_hex(8)
    cpu_s = max(1, int(timeout) + 1)
    if mode == UNSAFE:
        return _run_unsafe(code, run_id, timeout, cpu_s, memory_mb, fsize_mb, nofile)
    _probe()
    stdout, stderr, rc, ended = _run_bwrap(
        code, run_id, timeout, list(_bwrap.view()[1]),
        cpu_s=cpu_s, memory_mb=memory_mb, fsize_mb=fsize_mb, disk_mb=disk_mb, nofile=nofile,
    )
    return _result(stdout, stderr, rc, ended, timeout, run_id)


def _run_bwrap(
    code: str, run_id: str, timeout: float, site: list[str], **limits: int
) -> tuple[str, str, int | None, str]:
    """One program through prlimit + bubblewrap; the program and the seccomp filter travel as memfds."""
    code_fd = _memfd("pot-code", code.encode("utf-8"))
    seccomp_fd = _memfd("pot-seccomp", _bwrap.seccomp_filter())
    try:
        config = json.dumps({"cwd": _bwrap.WORK, "code": _bwrap.CODE, "site": site, "id": run_id})
        cmd = _bwrap.command(code_fd=code_fd, seccomp_fd=seccomp_fd, config=config, **limits)
        stdout, stderr, rc, ended = _communicate(cmd, timeout, pass_fds=(code_fd, seccomp_fd), cwd="/")
    finally:
        os.close(code_fd)
        os.close(seccomp_fd)
    if rc is not None and rc > 128:
        rc = -(rc - 128)  # bwrap reports a child killed by signal N as exit status 128 + N
    return stdout, stderr, rc, ended


def _memfd(name: str, data: bytes) -> int:
    """An anonymous in-memory file holding ``data``, positioned at its start (bwrap reads it to EOF)."""
    fd = os.memfd_create(name, os.MFD_CLOEXEC)  # pass_fds hands it to bwrap only
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]
    os.lseek(fd, 0, os.SEEK_SET)
    return fd


_probed: str | None = None


def _probe() -> None:
    """Check once per process that bubblewrap can really build the sandbox here; raise SandboxUnavailable if not."""
    global _probed
    if _probed == "ok":
        return
    if _probed is not None:
        raise SandboxUnavailable(_probed)
    try:
        _bwrap.tools()
        out, err, rc, _ = _run_bwrap(
            "print('ok')", "probe", 30.0, [], cpu_s=10, memory_mb=1024, fsize_mb=1, disk_mb=1, nofile=64
        )
        if rc != 0 or out.strip() != "ok":
            raise SandboxUnavailable(
                f"bubblewrap is installed but could not build the sandbox (exit {rc}): {err.strip()[-500:]}. It needs "
                "user namespaces (sysctl kernel.unprivileged_userns_clone=1, user.max_user_namespaces > 0; in a "
                f"container, allow unshare/mount); {_bwrap.INSTALL_HINT}"
            )
    except SandboxUnavailable as exc:
        _probed = str(exc)
        raise
    _probed = "ok"


_PR_SET_PDEATHSIG = 1
_prctl = getattr(ctypes.CDLL(None, use_errno=True), "prctl", None) if sys.platform == "linux" else None


def _die_with_us(parent: int):
    """A ``preexec_fn`` that makes the child get SIGKILL when the thread that forked it dies.

    bubblewrap's ``--die-with-parent`` does the same, but only once bwrap runs: a mathforge killed between the fork
    and that point would leave an orphan sandbox running until its timeout. The signal setting survives ``exec`` of
    ``prlimit`` and ``bwrap`` (neither is set-uid); a parent that died before it was set is caught by the pid check.
    """

    def preexec() -> None:
        if _prctl is not None and _prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0:
            os._exit(126)
        if os.getppid() != parent:
            os._exit(126)

    return preexec


def _communicate(
    cmd: list[str], timeout: float, *, pass_fds: tuple[int, ...] = (), cwd: str | None = None
) -> tuple[str, str, int | None, str]:
    """Run ``cmd`` with an empty environment; read at most MAX_CAPTURE of each stream; kill at the deadline.

    Returns (stdout, stderr, returncode, ended) where ended is ``exit``, ``timeout`` or ``output-limit``.
    """
    proc = subprocess.Popen(
        cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env={}, cwd=cwd,
        start_new_session=True, close_fds=True, pass_fds=pass_fds, preexec_fn=_die_with_us(os.getpid()),
    )
    bufs = {proc.stdout: bytearray(), proc.stderr: bytearray()}
    ended = "exit"
    deadline = time.monotonic() + timeout
    with selectors.DefaultSelector() as sel:
        for stream in bufs:
            sel.register(stream, selectors.EVENT_READ)
        try:
            while sel.get_map():
                left = deadline - time.monotonic()
                if left <= 0:
                    ended = "timeout"
                    break
                for key, _ in sel.select(left):
                    chunk = os.read(key.fd, 65536)
                    if not chunk:
                        sel.unregister(key.fileobj)
                        continue
                    buf = bufs[key.fileobj]
                    buf += chunk[: MAX_CAPTURE + 1 - len(buf)]
                    if len(buf) > MAX_CAPTURE:
                        ended = "output-limit"
                if ended != "exit":
                    break
            if ended == "exit":
                try:
                    proc.wait(max(0.0, deadline - time.monotonic()))
                except subprocess.TimeoutExpired:
                    ended = "timeout"
        finally:
            _kill(proc)
    out, err = (bytes(bufs[s][:MAX_CAPTURE]).decode("utf-8", errors="replace") for s in (proc.stdout, proc.stderr))
    proc.stdout.close()
    proc.stderr.close()
    return out, err, proc.returncode, ended


def _kill(proc: subprocess.Popen) -> None:
    """SIGKILL the sandbox's outer process and its group, and reap it.

    In bwrap mode that is enough for everything inside: the PID namespace's init is killed with its parent
    (``--die-with-parent``), and the kernel kills every process of a namespace whose init dies.
    """
    for kill in (os.killpg, os.kill):
        try:
            kill(proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
    proc.wait()


def _run_unsafe(
    code: str, run_id: str, timeout: float, cpu_s: int, memory_mb: int, fsize_mb: int, nofile: int
) -> SandboxResult:
    """The explicitly unsafe mode: a plain child with rlimits and the audit hook, no OS isolation."""
    global _warned
    if not _warned:
        _warned = True
        msg = (
            "SANDBOX DISABLED (sandbox: unsafe-no-isolation): model-written programs run with your user's full access "
            "to files, processes and the network; only rlimits and an audit hook (which a program can defeat) remain"
        )
        warnings.warn(msg, RuntimeWarning, stacklevel=3)
        print(f"WARNING: {msg}", file=sys.stderr)
    with tempfile.TemporaryDirectory(prefix="mathforge-pot-") as tmp:
        work = Path(tmp, "work")
        work.mkdir()
        (Path(tmp) / "main.py").write_text(code, encoding="utf-8")
        config = json.dumps({"cwd": str(work), "code": str(Path(tmp) / "main.py"), "site": _site_paths(), "id": run_id})
        limits = _bwrap.limits(_bwrap.prlimit_path(), cpu_s, memory_mb, nofile, fsize_mb)
        cmd = [*limits, sys.executable, "-I", "-S", "-B", str(_bwrap.BOOT), config]
        stdout, stderr, rc, ended = _communicate(cmd, timeout, cwd=str(work))
    return _result(stdout, stderr, rc, ended, timeout, run_id)


def _site_paths() -> list[str]:
    import sysconfig

    paths = sysconfig.get_paths()
    return list(dict.fromkeys([paths["purelib"], paths["platlib"]]))


def _result(stdout: str, stderr: str, rc: int | None, ended: str, timeout: float, run_id: str) -> SandboxResult:
    """Classify how the program ended."""
    if ended == "timeout" or rc == -signal.SIGXCPU:
        status, reason = "timeout", f"killed after {timeout:g}s"
    elif ended == "output-limit":
        status, reason = "output-limit", f"more than {MAX_CAPTURE} bytes of output"
    elif MARK in stderr:
        blocked = [line.split(":", 1)[1].strip() for line in stderr.splitlines() if line.startswith(MARK)]
        status, reason = "blocked", "refused: " + "; ".join(dict.fromkeys(blocked))
    elif rc == -signal.SIGXFSZ or "File too large" in stderr or "No space left on device" in stderr:
        status, reason = "output-limit", "file size or disk limit reached"
    elif "MemoryError" in stderr or (rc == -signal.SIGSEGV and "memory" in stderr.lower()):
        status, reason = "memory", "memory limit reached"
    elif rc != 0:
        last = stderr.strip().splitlines()[-1] if stderr.strip() else f"exit code {rc}"
        status, reason = "error", last[:300]
    else:
        status, reason = "ok", ""
    lines = [line.strip() for line in stdout.splitlines() if line.strip()]
    answer = lines[-1] if status == "ok" and lines else None
    return SandboxResult(stdout, stderr, rc, status, answer, reason, run_id)
