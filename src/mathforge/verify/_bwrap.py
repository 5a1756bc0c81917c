"""The bubblewrap command line for one program-of-thought run: namespaces, a read-only view, seccomp, rlimits.

What the sandbox sees: the interpreter binary, its standard library and the shared libraries they load (found with
``ldd``, bound file by file), the allowed packages (sympy, mpmath, numpy) under ``/sandbox/site``, the boot script and
the program, a private ``/proc`` of its own PID namespace, a minimal ``/dev``, and a size-capped tmpfs at ``/work``.
Nothing else of the host: no ``/home``, ``/root``, ``/etc`` (except the loader's cache), project or venv.
"""

from __future__ import annotations

import errno
import functools
import glob
import importlib.util
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import tempfile
from pathlib import Path

from mathforge.errors import MathforgeError

BOOT = Path(__file__).with_name("_sandbox_boot.py")
SANDBOX_UID = 65534  # "nobody": the program never runs as root inside, whoever runs mathforge
WORK = "/work"
SITE = "/sandbox/site"
CODE = "/sandbox/main.py"
BOOT_IN = "/sandbox/boot.py"
PACKAGES = ("sympy", "mpmath", "numpy")
INSTALL_HINT = (
    "program-of-thought runs model-written code only inside bubblewrap: `apt-get install bubblewrap` "
    "(Debian/Ubuntu), or opt out knowingly with `sandbox: unsafe-no-isolation` "
    "(env MATHFORGE_SANDBOX=unsafe-no-isolation), which runs the code with no OS isolation"
)
# Syscalls the program never needs. Process and thread creation are refused outright: as root outside the sandbox
# RLIMIT_NPROC does not apply (the kernel exempts uid 0 even in a user namespace), so this is what stops fork and
# thread bombs. Sockets, namespaces, tracing and kernel-facing calls are refused as a second wall behind the
# namespaces.
_DENIED = (
    "fork", "vfork", "clone", "clone3", "socket", "socketpair", "ptrace", "process_vm_readv", "process_vm_writev",
    "pidfd_open", "pidfd_getfd", "pidfd_send_signal", "unshare", "setns", "mount", "umount2", "pivot_root", "chroot",
    "keyctl", "add_key", "request_key", "bpf", "perf_event_open", "userfaultfd", "io_uring_setup", "kexec_load",
    "init_module", "finit_module", "delete_module", "personality", "acct", "swapon", "swapoff", "reboot", "syslog",
)


# A few device nodes bound one by one: bwrap's ``--dev`` would be a tmpfs the program owns and could fill.
_DEVICES = (
    *(a for d in ("null", "zero", "urandom", "random") for a in ("--dev-bind", f"/dev/{d}", f"/dev/{d}")),
    "--symlink", "/proc/self/fd", "/dev/fd", "--symlink", "/proc/self/fd/0", "/dev/stdin",
    "--symlink", "/proc/self/fd/1", "/dev/stdout", "--symlink", "/proc/self/fd/2", "/dev/stderr",
)


class SandboxUnavailable(MathforgeError):
    """OS isolation for program-of-thought cannot be set up on this machine."""


def prlimit_path() -> str:
    """Absolute path of ``prlimit`` (util-linux), which applies the rlimits before anything else starts."""
    prlimit = shutil.which("prlimit")
    if not prlimit:
        raise SandboxUnavailable("prlimit (util-linux) is not installed: apt-get install util-linux")
    return prlimit


def tools() -> tuple[str, str]:
    """Absolute paths of ``bwrap`` and ``prlimit``; raises SandboxUnavailable naming what to install."""
    bwrap = shutil.which("bwrap")
    if not bwrap:
        raise SandboxUnavailable(f"bubblewrap (bwrap) is not installed; {INSTALL_HINT}")
    return bwrap, prlimit_path()


@functools.lru_cache(maxsize=1)
def seccomp_filter() -> bytes:
    """The compiled BPF program (libseccomp through pyseccomp) that bwrap loads before starting the interpreter."""
    try:
        import pyseccomp as sc
    except (ImportError, OSError, RuntimeError) as exc:  # pyseccomp raises at import when libseccomp is missing
        raise SandboxUnavailable(
            f"seccomp filter unavailable ({exc}): pip install pyseccomp; apt-get install libseccomp2"
        ) from exc
    flt = sc.SyscallFilter(sc.ALLOW)
    for name in _DENIED:
        try:
            flt.add_rule(sc.ERRNO(errno.EPERM), name)
        except (ValueError, RuntimeError, OSError):
            pass  # a syscall this architecture does not have
    with tempfile.TemporaryFile() as f:
        flt.export_bpf(f)
        f.seek(0)
        return f.read()


def _interpreter() -> tuple[str, str, str]:
    """The real interpreter binary (not a venv symlink), its stdlib, and its extension-module directory."""
    exe = os.path.realpath(sys.executable)
    stdlib = os.path.realpath(sysconfig.get_path("stdlib"))
    dynload = os.path.realpath(sysconfig.get_config_var("DESTSHARED") or os.path.join(stdlib, "lib-dynload"))
    return exe, stdlib, dynload


def _packages(names: tuple[str, ...]) -> list[tuple[str, str]]:
    """(host dir, name) of each allowed package that is installed, plus its vendored ``<name>.libs`` directory."""
    out = []
    for name in names:
        spec = importlib.util.find_spec(name)
        if spec is None or not spec.submodule_search_locations:
            continue
        pkg = os.path.realpath(list(spec.submodule_search_locations)[0])
        out.append((pkg, name))
        libs = pkg + ".libs"
        if os.path.isdir(libs):
            out.append((libs, name + ".libs"))
    return out


def _shared_libraries(files: list[str]) -> list[str]:
    """Every shared library ``ldd`` says these binaries load, as the paths the loader will open."""
    ldd = shutil.which("ldd")
    if not ldd:
        raise SandboxUnavailable("ldd (libc-bin) is needed to find the interpreter's shared libraries")
    found: set[str] = set()
    for i in range(0, len(files), 200):
        out = subprocess.run([ldd, *files[i : i + 200]], capture_output=True, text=True, timeout=60).stdout
        found.update(re.findall(r"(?:=>\s+|^\s+)(/\S+)\s+\(0x", out, re.MULTILINE))
    # glibc loads libgcc_s at run time to unwind (it never shows in ldd)
    libc_dir = next((os.path.dirname(p) for p in found if os.path.basename(p).startswith("libc.so")), None)
    if libc_dir and os.path.exists(os.path.join(libc_dir, "libgcc_s.so.1")):
        found.add(os.path.join(libc_dir, "libgcc_s.so.1"))
    return sorted(found)


def _expose(path: str, ops: list[str], seen: set[str], depth: int = 0) -> None:
    """Add the mounts that make ``path`` resolve inside the sandbox as on the host: its symlinks, then the file."""
    cur = "/"
    parts = Path(path).parts[1:]
    for i, part in enumerate(parts):
        nxt = os.path.join(cur, part)
        if os.path.islink(nxt) and depth < 40:
            target = os.readlink(nxt)
            if nxt not in seen:
                seen.add(nxt)
                ops += ["--symlink", target, nxt]
            rest = os.path.normpath(os.path.join(cur, target, *parts[i + 1 :]))
            return _expose(rest, ops, seen, depth + 1)
        cur = nxt
    if cur not in seen and os.path.exists(cur):
        seen.add(cur)
        ops += ["--ro-bind", cur, cur]


@functools.lru_cache(maxsize=4)
def view(packages: tuple[str, ...] = PACKAGES) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """The read-only mounts (bwrap arguments) and the ``sys.path`` entries of the sandbox; computed once."""
    exe, stdlib, dynload = _interpreter()
    pkgs = _packages(packages)
    # Tk's GUI libraries are not needed to compute an answer
    binaries = [exe, *(p for p in glob.glob(os.path.join(dynload, "*.so")) if "_tkinter" not in p)]
    for host_dir, _ in pkgs:
        binaries += glob.glob(os.path.join(host_dir, "**", "*.so*"), recursive=True)
    pkg_dirs = tuple(d + os.sep for d, _ in pkgs)
    ops: list[str] = []
    seen: set[str] = set()
    for path in (exe, stdlib) if dynload.startswith(stdlib + os.sep) else (exe, stdlib, dynload):
        _expose(path, ops, seen)
    hidden = os.path.join(stdlib, "site-packages")
    if os.path.isdir(hidden):  # the interpreter's own third-party packages stay out
        ops += ["--size", str(4096), "--tmpfs", hidden]
    for lib in _shared_libraries(binaries):
        if not os.path.realpath(lib).startswith(pkg_dirs):
            _expose(lib, ops, seen)
    if os.path.exists("/etc/ld.so.cache"):
        ops += ["--ro-bind", "/etc/ld.so.cache", "/etc/ld.so.cache"]  # library paths only; speeds up loading
    for host_dir, name in pkgs:
        ops += ["--ro-bind", host_dir, f"{SITE}/{name}"]
    ops += ["--ro-bind", str(BOOT), BOOT_IN]
    return tuple(ops), ((SITE,) if pkgs else ())


def nproc_limit() -> int:
    """RLIMIT_NPROC counts every process of the real uid, so allow what that uid already runs plus a small margin."""
    if os.geteuid() == 0:
        return 16  # the kernel exempts uid 0; the seccomp filter is what refuses new processes
    uid, count = os.getuid(), 0
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                count += entry.stat().st_uid == uid
            except OSError:
                pass
    return count + 16


def command(
    *, code_fd: int, seccomp_fd: int, config: str, cpu_s: int, memory_mb: int, fsize_mb: int, disk_mb: int,
    nofile: int, packages: tuple[str, ...] = PACKAGES,
) -> list[str]:
    """The full ``prlimit … bwrap … python`` argv for one run (the caller passes both fds to the child)."""
    bwrap, prlimit = tools()
    mounts, _ = view(packages)
    exe = _interpreter()[0]
    mb = 1024 * 1024
    sandbox = [
        bwrap, "--unshare-all", "--unshare-user", "--disable-userns", "--uid", str(SANDBOX_UID), "--gid",
        str(SANDBOX_UID), "--hostname", "pot", "--die-with-parent", "--new-session", "--clearenv", "--cap-drop", "ALL",
        *mounts,
        "--ro-bind-data", str(code_fd), CODE,
        "--proc", "/proc", *_DEVICES,
        "--size", str(disk_mb * mb), "--tmpfs", WORK, "--chdir", WORK,
        "--remount-ro", "/",
        "--seccomp", str(seccomp_fd),
        "--", exe, "-I", "-S", "-B", BOOT_IN, config,
    ]
    return [*limits(prlimit, cpu_s, memory_mb, nofile, fsize_mb), *sandbox]


def limits(prlimit: str, cpu_s: int, memory_mb: int, nofile: int, fsize_mb: int) -> list[str]:
    """``prlimit`` arguments: CPU seconds (SIGXCPU, then SIGKILL), address space, processes, files, file size."""
    mb = 1024 * 1024
    return [
        prlimit, f"--cpu={cpu_s}:{cpu_s + 1}", f"--as={memory_mb * mb}", f"--nproc={nproc_limit()}",
        f"--nofile={nofile}", f"--fsize={fsize_mb * mb}", "--core=0", "--",
    ]
