"""Program-of-thought sandbox: run model-written Python in a confined child process and read its printed answer.

Layers of containment (any one failing leaves the others):
- a separate ``python -I -S`` process (no user site, no PYTHON* variables, no site hooks) with an EMPTY environment,
  started in its own session so the whole process group can be killed, in a fresh temporary working directory;
- ``setrlimit``: CPU seconds, address space, processes, file size, open files, no core dumps (``_sandbox_boot``);
- an audit hook installed before user code that refuses process creation (fork/exec/spawn/subprocess/os.system),
  sockets, ctypes, signals to other processes, reading other processes' ``/proc``, and any write, rename or delete
  outside the working directory; importing ctypes/subprocess/socket/... directly from the program is refused too;
- when unprivileged user namespaces work (``unshare -rn``), a private network namespace, so even a hook bypass
  finds no network;
- a wall-clock limit enforced by the parent with SIGKILL to the process group.
Audit hooks are not a security boundary against a determined attacker with native code, which is why ctypes and
process creation are closed first. As root, RLIMIT_NPROC does not apply; the hook still refuses fork.
"""

from __future__ import annotations

import functools
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import sysconfig
import tempfile
from dataclasses import dataclass
from pathlib import Path

_BOOT = Path(__file__).with_name("_sandbox_boot.py")
MARK = "SANDBOX-BLOCKED"
MAX_CAPTURE = 64 * 1024
_CODE_BLOCK = re.compile(r"```(?:python|py|python3)?[ \t]*\n(.*?)```", re.DOTALL | re.IGNORECASE)


@dataclass
class SandboxResult:
    """What a sandboxed program did: ``status`` is ok, error, timeout, memory, blocked or output-limit."""

    stdout: str
    stderr: str
    returncode: int | None
    status: str
    answer: str | None
    reason: str = ""


@functools.lru_cache(maxsize=1)
def _unshare_prefix() -> tuple[str, ...]:
    """``("unshare", "-rn", "--")`` when a private network namespace can be made without privileges, else ()."""
    exe = shutil.which("unshare")
    if not exe:
        return ()
    try:
        ok = subprocess.run([exe, "-rn", "--", "true"], capture_output=True, timeout=5).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        ok = False
    return (exe, "-rn", "--") if ok else ()


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
    allow_site_packages: bool = True,
    isolate_network: bool = True,
) -> SandboxResult:
    """Run ``code`` confined; the answer is the last non-empty line it printed (only when it exited cleanly)."""
    with tempfile.TemporaryDirectory(prefix="mathforge-pot-") as tmp:
        work = Path(tmp, "work")
        work.mkdir()
        (work / "main.py").write_text(code, encoding="utf-8")
        paths = sysconfig.get_paths()
        cfg = {
            "cwd": str(work),
            "cpu_s": max(1, int(timeout) + 1),
            "memory_mb": memory_mb,
            "nproc": 0 if os.geteuid() != 0 else 1,
            "fsize_mb": fsize_mb,
            "nofile": 64,
            "extra_paths": [paths["purelib"], paths["platlib"]] if allow_site_packages else [],
        }
        prefix = _unshare_prefix() if isolate_network else ()
        cmd = [*prefix, sys.executable, "-I", "-S", str(_BOOT), json.dumps(cfg)]
        out_path, err_path = Path(tmp, "stdout"), Path(tmp, "stderr")
        with open(out_path, "wb") as out, open(err_path, "wb") as err:
            proc = subprocess.Popen(
                cmd, stdin=subprocess.DEVNULL, stdout=out, stderr=err, cwd=work, env={},
                start_new_session=True, close_fds=True,
            )
            timed_out = False
            try:
                proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                timed_out = True
            _kill_group(proc)
        stdout, stderr = _read(out_path), _read(err_path)
    return _result(stdout, stderr, proc.returncode, timed_out, timeout)


def _kill_group(proc: subprocess.Popen) -> None:
    """SIGKILL the program's whole process group (it may have left children behind) and reap it."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    proc.wait()


def _read(path: Path) -> str:
    with open(path, "rb") as f:
        return f.read(MAX_CAPTURE).decode("utf-8", errors="replace")


def _result(stdout: str, stderr: str, rc: int | None, timed_out: bool, timeout: float) -> SandboxResult:
    """Classify how the program ended."""
    if timed_out or rc == -signal.SIGXCPU:
        status, reason = "timeout", f"killed after {timeout:g}s"
    elif MARK in stderr:
        blocked = [line.split(":", 1)[1].strip() for line in stderr.splitlines() if line.startswith(MARK)]
        status, reason = "blocked", "refused: " + "; ".join(dict.fromkeys(blocked))
    elif rc == -signal.SIGXFSZ or "File too large" in stderr:
        status, reason = "output-limit", "file size limit reached"
    elif "MemoryError" in stderr or rc == -signal.SIGSEGV and "memory" in stderr.lower():
        status, reason = "memory", "memory limit reached"
    elif rc != 0:
        last = stderr.strip().splitlines()[-1] if stderr.strip() else f"exit code {rc}"
        status, reason = "error", last[:300]
    else:
        status, reason = "ok", ""
    lines = [line.strip() for line in stdout.splitlines() if line.strip()]
    answer = lines[-1] if status == "ok" and lines else None
    return SandboxResult(stdout, stderr, rc, status, answer, reason)
