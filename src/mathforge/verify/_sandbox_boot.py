"""Sandbox bootstrap: ``python -I -S -B _sandbox_boot.py CONFIG_JSON`` in the child, before any user code.

The walls are outside this process (bubblewrap namespaces, seccomp, rlimits; see ``_bwrap``). This script only sets
the path and thread variables, then installs an audit hook as a second layer that turns the obvious attempts
(process creation, sockets, ctypes, signals, other processes' ``/proc``, writes outside the working directory) into a
clear ``SANDBOX-BLOCKED`` report. The hook is not a boundary: a program can disable it, and the OS walls still hold.
Standard library only; it must not import mathforge.
"""

import json
import os
import sys

MARK = "SANDBOX-BLOCKED"
_DANGEROUS_IMPORTS = frozenset({
    "ctypes", "_ctypes", "subprocess", "_posixsubprocess", "socket", "_socket", "ssl", "multiprocessing", "pty",
    "fcntl", "mmap", "resource", "signal", "_signal", "asyncio", "selectors", "concurrent",
})
_ALWAYS_BLOCKED = (
    "os.system", "os.exec", "os.posix_spawn", "os.spawn", "os.fork", "os.forkpty", "subprocess.Popen", "pty.spawn",
    "os.kill", "os.killpg", "signal.pthread_kill", "os.chroot", "os.setuid", "os.setgid", "resource.setrlimit",
    "resource.prlimit", "sys.remote_exec", "os.startfile", "_thread.start_new_thread",
)
_PATH_EVENTS = {
    "os.remove": (0,), "os.unlink": (0,), "os.rmdir": (0,), "os.mkdir": (0,), "os.chmod": (0,), "os.chown": (0,),
    "os.truncate": (0,), "os.utime": (0,), "os.rename": (0, 1), "os.replace": (0, 1), "os.link": (0, 1),
    "os.symlink": (0, 1), "shutil.rmtree": (0,), "shutil.copyfile": (1,), "shutil.move": (1,),
}
_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC


def _install_hook(root: str, user_file: str) -> None:
    """Report process creation, network, native code, signals and writes outside ``root`` as refused."""
    realpath, fspath, write, getframe = os.path.realpath, os.fspath, os.write, sys._getframe

    def inside(path) -> bool:
        if isinstance(path, int):
            return True  # an open descriptor; what it can reach is the OS's business
        p = realpath(fspath(path) if not isinstance(path, bytes) else path.decode(errors="replace"))
        return p == root or p.startswith(root + os.sep)

    def deny(what: str):
        write(2, f"\n{MARK}: {what}\n".encode())
        raise PermissionError(f"sandbox: {what} is not allowed")

    def hook(event: str, args: tuple) -> None:
        if event == "sys._getframe":
            return
        if event.startswith(_ALWAYS_BLOCKED) or event.startswith(("socket.", "_winapi")):
            deny(event)
        elif event.startswith("ctypes."):
            if event == "ctypes.dlopen" and args and args[0] is None:
                return  # ctypes' own import-time handle to the interpreter, needed by numpy/sympy imports
            deny(event)
        elif event == "import":
            name = str(args[0]).split(".")[0]
            if name in _DANGEROUS_IMPORTS:
                frame = getframe(1)
                while frame is not None and frame.f_code.co_filename.startswith("<frozen importlib"):
                    frame = frame.f_back
                if frame is not None and frame.f_code.co_filename == user_file:
                    deny(f"import {name}")
        elif event == "open":
            path, mode, flags = args[0], args[1] or "r", args[2] or 0
            if isinstance(path, (str, bytes)):
                text = path if isinstance(path, str) else path.decode(errors="replace")
                if text.startswith("/proc/") and not text.startswith("/proc/self/"):
                    deny(f"open {text}")
            writing = any(c in str(mode) for c in "wax+") or bool(flags & _WRITE_FLAGS)
            if writing and path != "/dev/null" and not inside(path):
                deny(f"write outside the sandbox: {path!r}")
        elif event in _PATH_EVENTS:
            for i in _PATH_EVENTS[event]:
                if i < len(args) and args[i] is not None and not inside(args[i]):
                    deny(f"{event} outside the sandbox: {args[i]!r}")

    sys.addaudithook(hook)


def main() -> None:
    cfg = json.loads(sys.argv[1])
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = "1"  # no thread pools: the sandbox refuses new threads
    root = os.path.realpath(cfg["cwd"])
    os.environ["TMPDIR"] = root
    os.chdir(root)
    sys.path[:] = [p for p in sys.path if p] + list(cfg.get("site", []))
    user_file = cfg["code"]
    with open(user_file, encoding="utf-8") as f:
        code = compile(f.read(), user_file, "exec")
    _install_hook(root, user_file)
    sys.argv = [user_file]
    exec(code, {"__name__": "__main__", "__file__": user_file, "__builtins__": __builtins__})


if __name__ == "__main__":
    main()
