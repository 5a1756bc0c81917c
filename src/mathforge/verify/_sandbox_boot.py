"""Sandbox bootstrap: run as ``python -I -S _sandbox_boot.py CONFIG_JSON`` in the child, before any user code.

It sets resource limits, confines the interpreter with an audit hook, then executes ``main.py`` from the working
directory. Standard library only; it must not import mathforge (``-S`` and ``-I`` keep the host's paths out).
"""

import json
import os
import resource
import sys

MARK = "SANDBOX-BLOCKED"
_DANGEROUS_IMPORTS = {
    "ctypes", "_ctypes", "subprocess", "_posixsubprocess", "socket", "_socket", "ssl", "multiprocessing",
    "pty", "fcntl", "mmap", "resource", "signal", "_signal", "asyncio", "selectors",
}
_ALWAYS_BLOCKED = (
    "os.system", "os.exec", "os.posix_spawn", "os.spawn", "os.fork", "os.forkpty", "subprocess.Popen", "pty.spawn",
    "os.kill", "os.killpg", "signal.pthread_kill", "os.chroot", "os.setuid", "os.setgid", "resource.setrlimit",
    "resource.prlimit", "sys.remote_exec", "os.startfile",
)
_PATH_EVENTS = {
    "os.remove": (0,), "os.unlink": (0,), "os.rmdir": (0,), "os.mkdir": (0,), "os.chmod": (0,), "os.chown": (0,),
    "os.truncate": (0,), "os.utime": (0,), "os.rename": (0, 1), "os.replace": (0, 1), "os.link": (0, 1),
    "os.symlink": (0, 1), "os.chdir": (0,), "shutil.rmtree": (0,), "shutil.copyfile": (1,), "shutil.move": (1,),
    "shutil.copymode": (1,), "shutil.copystat": (1,), "shutil.copytree": (1,), "shutil.make_archive": (0,),
}
_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC


def _limits(cfg: dict) -> None:
    """Apply the resource limits (CPU seconds, address space, processes, file size, open files, no core dumps)."""
    mb = 1024 * 1024
    for name, value in (
        ("RLIMIT_CPU", cfg["cpu_s"]),
        ("RLIMIT_AS", cfg["memory_mb"] * mb),
        ("RLIMIT_NPROC", cfg["nproc"]),
        ("RLIMIT_FSIZE", cfg["fsize_mb"] * mb),
        ("RLIMIT_NOFILE", cfg["nofile"]),
        ("RLIMIT_CORE", 0),
    ):
        try:
            resource.setrlimit(getattr(resource, name), (value, value))
        except (ValueError, OSError):
            pass  # a limit the platform refuses; the others and the audit hook still hold


def _install_hook(root: str, user_file: str) -> None:
    """Refuse process creation, network, native code, signals and writes outside ``root`` for the rest of the run."""
    own_pid = os.getpid()
    realpath, fspath, write = os.path.realpath, os.fspath, os.write
    getframe = sys._getframe

    def inside(path) -> bool:
        if isinstance(path, int):
            return True  # an already-open descriptor
        p = realpath(fspath(path) if not isinstance(path, bytes) else path.decode(errors="replace"))
        return p == root or p.startswith(root + os.sep)

    def deny(what: str):
        write(2, f"\n{MARK}: {what}\n".encode())
        raise PermissionError(f"sandbox: {what} is not allowed")

    def hook(event: str, args: tuple) -> None:
        if event == "sys._getframe":
            return
        if event.startswith(_ALWAYS_BLOCKED):
            if event in ("os.kill", "os.killpg") and args and args[0] in (own_pid, 0):
                return
            deny(event)
        elif event.startswith("socket.") or event.startswith("_winapi"):
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
    _limits(cfg)
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = "1"
    root = os.path.realpath(cfg["cwd"])
    os.chdir(root)
    sys.path[:] = [p for p in sys.path if p] + list(cfg.get("extra_paths", []))
    user_file = os.path.join(root, "main.py")
    with open(user_file, encoding="utf-8") as f:
        code = compile(f.read(), user_file, "exec")
    _install_hook(root, user_file)
    sys.argv = [user_file]
    exec(code, {"__name__": "__main__", "__file__": user_file, "__builtins__": __builtins__})


if __name__ == "__main__":
    main()
