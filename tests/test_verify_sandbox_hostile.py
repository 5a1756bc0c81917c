"""Hostile programs against the bubblewrap sandbox: each attack is run and its EFFECT is checked on the host.

Every program tries to do harm and prints PWNED when a step appears to work. After each run the test checks the host:
no marker file and no change in a watched directory, the victim process alive, no connection or datagram at the
listeners, the planted secrets (environment and $HOME) absent from the output, and no process of the run left.
Many programs first disable the in-process audit hook (``UNHOOK``, the bypass found in issue 11) so that what is
tested is the operating-system isolation, not the hook.
"""

from __future__ import annotations

import os
import secrets
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from mathforge.verify.sandbox import MAX_CAPTURE, run_program
from tests.sandbox_helpers import require_bwrap, wait_gone

# Neutralise the audit hook through its closure (found with gc), as an attacker would.
UNHOOK = """import gc
for _o in gc.get_objects():
    if callable(_o) and getattr(_o, '__name__', '') == 'hook' and getattr(_o, '__closure__', None):
        for _c in _o.__closure__:
            if getattr(_c.cell_contents, '__name__', '') == 'deny':
                _c.cell_contents = lambda what: None
"""
# The other bypass: patch the hook's module-level settings through sys.modules['__main__'].
PATCH_MAIN = """import sys
_m = sys.modules['__main__']
_m._ALWAYS_BLOCKED = ('nothing.at.all',)
_m._DANGEROUS_IMPORTS = frozenset()
_m._PATH_EVENTS = {}
"""
TRY = "try:\n{body}\nexcept BaseException as e:\n    print('refused:', type(e).__name__, e)\n"


def attempt(body: str, prelude: str = UNHOOK) -> str:
    """``prelude`` then ``body`` (indented) inside a try that reports the refusal."""
    return prelude + TRY.format(body="\n".join("    " + line for line in body.strip("\n").splitlines()))


HOSTILE: dict[str, str] = {
    # --- the audit hook itself is not the wall
    "patch hook settings via sys.modules": attempt(
        "import os\nrc = os.system('echo PWNED > MARKER')\nprint('PWNED' if rc == 0 else rc)\n"
        "open('MARKER', 'w').write('x')\nprint('PWNED')",
        PATCH_MAIN,
    ),
    "patch hook closure via gc then write": attempt("open('MARKER', 'w').write('x')\nprint('PWNED')"),
    "patch hook closure via gc then shell": attempt("import os\nrc = os.system('id > MARKER')\n"
        "print('PWNED' if rc == 0 else rc)"),
    # --- dir_fd writes and deletes
    "dir_fd create outside": attempt(
        "import os\nd = os.open('TMPDIR', os.O_RDONLY)\n"
        "os.close(os.open('pwned', os.O_WRONLY | os.O_CREAT, dir_fd=d))\nprint('PWNED')",
        "",
    ),
    "dir_fd unlink outside": attempt("import os\nos.unlink('keep.txt', dir_fd=os.open('TMPDIR', os.O_RDONLY))\n"
        "print('PWNED')", ""),
    "dir_fd root then create": attempt(
        "import os\nd = os.open('/', os.O_RDONLY)\nos.close(os.open('pwned', os.O_WRONLY | os.O_CREAT, dir_fd=d))\n"
        "print('PWNED')"
    ),
    "dir_fd rename into root": attempt(
        "import os\nopen('f', 'w').write('x')\nos.rename('f', 'f2', dst_dir_fd=os.open('/', os.O_RDONLY))\n"
        "print('PWNED')"
    ),
    # --- process creation, direct and indirect
    "concurrent.futures process pool": attempt(
        "import os\nfrom concurrent.futures import ProcessPoolExecutor\n"
        "print('PWNED', ProcessPoolExecutor(1).submit(os.getpid).result(timeout=3))"
    ),
    "multiprocessing spawnv_passfds": attempt(
        "import importlib\nu = importlib.import_module('multiprocessing.util')\n"
        "u.spawnv_passfds('/bin/sh', ['sh', '-c', 'echo PWNED; id > MARKER'], ())\nprint('PWNED')"
    ),
    "_posixsubprocess.fork_exec directly": attempt(
        "import _posixsubprocess, os\nr, w = os.pipe()\n"
        "pid = _posixsubprocess.fork_exec([b'/bin/sh', b'-c', b'id > MARKER'], [b'/bin/sh'], True, (w,), None, None, "
        "-1, -1, -1, -1, -1, -1, r, w, False, False, -1, None, None, -1, -1, None, False)\nprint('PWNED', pid)"
    ),
    "subprocess after unhook": attempt("import subprocess\n"
        "print(subprocess.run(['/bin/sh', '-c', 'echo PWNED'], capture_output=True).stdout)"),
    "subprocess running the interpreter": attempt(
        "import subprocess, sys\n"
        "out = subprocess.run([sys.executable, '-c', 'print(1)'], capture_output=True).stdout\nprint('PWNED', out)"
    ),
    "posix_spawn": attempt("import os\nos.posix_spawn('/bin/sh', ['sh', '-c', 'id > MARKER'], {})\nprint('PWNED')"),
    "pty.fork": attempt("import pty\npid, fd = pty.fork()\nprint('PWNED', pid)"),
    "exec a fresh interpreter": attempt(
        "import os, sys\nos.execv(sys.executable, [sys.executable, '-c', "
        "\"import os; open('MARKER', 'w'); os.kill(VICTIM, 9); print('PWNED')\"])"
    ),
    "setsid child outlives the run": attempt(
        "import os, time\npid = os.fork()\nif pid == 0:\n    os.setsid()\n    time.sleep(3)\n"
        "    open('MARKER', 'w').write('late')\n    os._exit(0)\nprint('PWNED', pid)"
    ),
    "double-fork daemon": attempt(
        "import os, time\nif os.fork() == 0:\n    os.setsid()\n    if os.fork() == 0:\n        time.sleep(3)\n"
        "        os.kill(VICTIM, 9)\n    os._exit(0)\nprint('PWNED')"
    ),
    "fork bomb": attempt("import os\nn = 0\nwhile n < 100000:\n    os.fork()\n    n += 1\nprint('PWNED')"),
    "thread bomb": attempt(
        "import threading, time\nn = 0\ntry:\n    while n < 100000:\n"
        "        threading.Thread(target=time.sleep, args=(30,), daemon=True).start()\n        n += 1\n"
        "finally:\n    print('threads', n)\n    print('PWNED' if n > 0 else '')"
    ),
    "raw _thread start": attempt("import _thread, time\n_thread.start_new_thread(time.sleep, (30,))\nprint('PWNED')"),
    # --- signals to processes outside
    "kill the victim": attempt("import os\nos.kill(VICTIM, 9)\nprint('PWNED')"),
    "pidfd_send_signal to the victim": attempt("import os, signal\n"
        "signal.pidfd_send_signal(os.pidfd_open(VICTIM), 9)\nprint('PWNED')"),
    "pidfd via unittest.signals": attempt(
        "import os, unittest.signals as us\nus.signal.pidfd_send_signal(os.pidfd_open(VICTIM), 9)\nprint('PWNED')", ""
    ),
    "kill -1": attempt("import os\nos.kill(-1, 9)\nprint('PWNED')"),
    "kill every pid": attempt(
        "import os\nhit = 0\nfor p in range(2, 40000):\n    if p != os.getpid():\n        try:\n"
        "            os.kill(p, 9)\n            hit += 1\n        except OSError:\n            pass\n"
        "print('killed', hit)"
    ),
    "kill the parent": attempt("import os\nos.kill(os.getppid(), 9)\nos.killpg(os.getpgid(0), 9)\nprint('PWNED')"),
    # --- reads of the host
    "read /etc/passwd": attempt("print(open('/etc/passwd').read())\nprint('PWNED')"),
    "read a file in $HOME": attempt("print(open('SECRETFILE').read())\nprint('PWNED')"),
    "expanduser home secret": attempt("import os\nprint(open(os.path.expanduser('~/secret.txt')).read())\n"
        "print('PWNED')"),
    "parent environ": attempt("import os\nprint(open(f'/proc/{os.getppid()}/environ').read())\n"
        "print(open('/proc/1/environ').read())"),
    "parent environ via /proc/self/..": attempt(
        "import os\n"
        "for p in ('/proc/self/../1/environ', f'/proc/self/../{os.getppid()}/environ', '/proc/self/../../proc/1/environ'):\n"
        ""
        "    try:\n        print(open(p).read())\n    except OSError as e:\n        print(e)"
    ),
    "walk every /proc environ and cmdline": attempt(
        "import os\nfor p in os.listdir('/proc'):\n    for f in ('environ', 'cmdline'):\n        try:\n"
        "            print(p, f, open(f'/proc/{p}/{f}', 'rb').read())\n        except OSError as e:\n"
        "            print(p, f, e)"
    ),
    "environment of this process": attempt("import os\nprint(dict(os.environ))"),
    "host root through /proc/1/root": attempt(
        "import os\nprint(os.listdir('/proc/1/root'))\nprint(open('/proc/1/root/etc/passwd').read())\nprint('PWNED')"
    ),
    "read the project and this test": attempt("print(open('TESTFILE').read()[:100])\nprint('PWNED')"),
    "list /root and /home": attempt("import os\nprint(os.listdir('/home'))\nprint('PWNED')"),
    # --- disk
    "2 GB disk fill": attempt(
        "import os\ntotal = 0\ntry:\n    for i in range(2048):\n        with open(f'fill{i}', 'wb') as f:\n"
        "            for _ in range(1):\n                f.write(b'x' * (1 << 20))\n        total += 1 << 20\n"
        "finally:\n    print('written', total)\n    print('PWNED' if total > 64 << 20 else '')"
    ),
    "fill /dev/shm": attempt("open('/dev/shm/fill', 'wb').write(b'x' * (64 << 20))\nprint('PWNED')"),
    "one file over the size limit": attempt("open('big', 'wb').write(b'x' * (8 << 20))\nprint('PWNED')"),
    "many files": attempt(
        "import os, time\nn, t = 0, time.time()\ntry:\n    while n < 10**6 and time.time() - t < 1.5:\n"
        "        os.close(os.open(f'f{n}', os.O_CREAT | os.O_WRONLY))\n        n += 1\nfinally:\n    print('files', n)"
    ),
    # --- native code and import tricks
    "ctypes system": attempt("import ctypes\nrc = ctypes.CDLL(None).system(b'id > MARKER')\n"
        "print('PWNED' if rc == 0 else rc)"),
    "ctypes raw socket syscall": attempt(
        "import ctypes\nfd = ctypes.CDLL(None, use_errno=True).syscall(41, 2, 1, 0)\n"
        "print('PWNED' if fd >= 0 else 'no socket')"
    ),
    "ctypes unshare a user namespace": attempt(
        "import ctypes\nrc = ctypes.CDLL(None).unshare(0x10000000)\nprint('PWNED' if rc == 0 else 'no userns')"
    ),
    "ctypes via importlib": attempt("import importlib\n"
        "rc = importlib.import_module('ctypes').CDLL(None).system(b'id > MARKER')\n"
        "print('PWNED' if rc == 0 else rc)", ""),
    "subprocess loaded from its source file": attempt(
        "import importlib.util, sysconfig\n"
        "spec = importlib.util.spec_from_file_location('sp2', sysconfig.get_path('stdlib') + '/subprocess.py')\n"
        "m = importlib.util.module_from_spec(spec)\nspec.loader.exec_module(m)\n"
        "m.run(['/bin/sh', '-c', 'id > MARKER'])\nprint('PWNED')",
        "",
    ),
    "__import__ by string concat": attempt("rc = getattr(__builtins__, '__imp' + 'ort__')('o' + 's').system('id > MARKER')\n"
        "print('PWNED' if rc == 0 else rc)", ""),
    "__subclasses__ walk to os.system": attempt(
        "c = [c for c in ().__class__.__base__.__subclasses__() if c.__name__ == '_wrap_close'][0]\n"
        "rc = c.__init__.__globals__['system']('id > MARKER')\nprint('PWNED' if rc == 0 else rc)",
        "",
    ),
    "__subclasses__ walk to BuiltinImporter": attempt(
        "bi = [c for c in object.__subclasses__() if c.__name__ == 'BuiltinImporter'][0]\n"
        "ps = bi.load_module('_posixsubprocess')\nimport os\nos.fork()\nprint('PWNED', ps)",
        "",
    ),
    "sys.modules swap": attempt("import sys\nsys.modules.pop('ctypes', None)\n"
        "rc = __import__('ctypes').CDLL(None).system(b'id > MARKER')\nprint('PWNED' if rc == 0 else rc)", ""),
    # --- network
    "tcp connect to a host listener": attempt("import socket\n"
        "socket.create_connection(('127.0.0.1', PORT), timeout=1)\nprint('PWNED')"),
    "udp datagram to a host listener": attempt(
        "import socket\ns = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\ns.sendto(b'x', ('127.0.0.1', UPORT))\n"
        "print('PWNED')"
    ),
    "urllib to a host listener": attempt("import urllib.request\n"
        "urllib.request.urlopen('http://127.0.0.1:PORT/', timeout=1)\nprint('PWNED')"),
    "asyncio connection": attempt(
        "import asyncio\nasync def go():\n    await asyncio.open_connection('127.0.0.1', PORT)\nasyncio.run(go())\n"
        "print('PWNED')"
    ),
    "raw _socket": attempt("import _socket\ns = _socket.socket()\ns.connect(('127.0.0.1', PORT))\nprint('PWNED')"),
    "abstract unix socket": attempt(
        "import socket\ns = socket.socket(socket.AF_UNIX)\ns.connect(b'\\0ABSTRACT')\nprint('PWNED')"
    ),
    # --- filesystem escapes
    "symlink out of cwd": attempt("import os\nos.symlink('TMPDIR', 'esc')\nopen('esc/pwned', 'w').write('x')\n"
        "print('PWNED')"),
    "rename out of cwd": attempt("import os\nopen('f', 'w').write('x')\nos.rename('f', 'MARKER')\nprint('PWNED')"),
    "rename into the root": attempt("import os\nopen('f', 'w').write('x')\nos.rename('f', '/f')\nprint('PWNED')"),
    "hard link out of cwd": attempt("import os\nopen('f', 'w').write('x')\nos.link('f', 'MARKER')\nprint('PWNED')"),
    "chdir to / and write": attempt("import os\nos.chdir('/')\nopen('pwned', 'w').write('x')\nprint('PWNED')"),
    "write into an allowed package": attempt("open('/sandbox/site/sympy/__init__.py', 'a').write('#')\nprint('PWNED')"),
    "write into the interpreter": attempt("import os\nopen(os.__file__, 'a').write('#')\nprint('PWNED')"),
    # --- resources and privileges
    "fd exhaustion": attempt(
        "fs = []\ntry:\n    while len(fs) < 100000:\n        fs.append(open('/dev/null'))\nfinally:\n"
        "    print('fds', len(fs))\n    print('PWNED' if len(fs) > 100 else '')"
    ),
    "raise the file limit": attempt("import resource\nresource.setrlimit(resource.RLIMIT_NOFILE, (65536, 65536))\n"
        "print('PWNED')"),
    "become root": attempt("import os\nos.setuid(0)\nprint('PWNED', os.getuid())"),
}
SPIN = attempt("import signal\nsignal.signal(signal.SIGXCPU, signal.SIG_IGN)\nwhile True:\n    pass")


@pytest.fixture(scope="module")
def host(tmp_path_factory):
    """What the attacks aim at: a watched dir, a victim process, TCP/UDP listeners, secrets in env and $HOME."""
    require_bwrap()
    with pytest.MonkeyPatch.context() as monkeypatch:
        yield from _host(tmp_path_factory.mktemp("host"), monkeypatch)


def _host(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    secret = "sk-test-" + secrets.token_hex(12)
    monkeypatch.setenv("OPENAI_API_KEY", secret)
    home = tmp_path / "home"
    home.mkdir()
    (home / "secret.txt").write_text(secret)
    monkeypatch.setenv("HOME", str(home))
    watched = tmp_path / "watched"
    watched.mkdir()
    (watched / "keep.txt").write_text("keep")
    victim = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    tcp = socket.create_server(("127.0.0.1", 0))
    tcp.settimeout(0.05)
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    udp.bind(("127.0.0.1", 0))
    udp.settimeout(0.05)
    unix = socket.socket(socket.AF_UNIX)
    abstract = "mathforge-test-" + secrets.token_hex(6)
    unix.bind("\0" + abstract)
    unix.listen()
    unix.settimeout(0.05)
    hits: list[str] = []
    stop = threading.Event()

    def listen() -> None:
        while not stop.is_set():
            for name, sock in (("tcp", tcp), ("unix", unix)):
                try:
                    sock.accept()[0].close()
                    hits.append(name)
                except OSError:
                    pass
            try:
                udp.recvfrom(64)
                hits.append("udp")
            except OSError:
                pass

    listener = threading.Thread(target=listen, daemon=True)
    listener.start()
    env = {
        "MARKER": str(watched / "pwned"), "TMPDIR": str(watched), "VICTIM": str(victim.pid),
        "PORT": str(tcp.getsockname()[1]), "UPORT": str(udp.getsockname()[1]), "SECRETFILE": str(home / "secret.txt"),
        "TESTFILE": str(Path(__file__).resolve()), "ABSTRACT": abstract,
    }
    yield {"env": env, "secret": secret, "watched": watched, "victim": victim, "hits": hits}
    stop.set()
    listener.join(timeout=2)
    for sock in (tcp, udp, unix):
        sock.close()
    victim.kill()
    victim.wait()


def render(code: str, env: dict[str, str]) -> str:
    for key in sorted(env, key=len, reverse=True):  # UPORT before PORT
        code = code.replace(key, env[key])
    return code


@pytest.mark.parametrize("name", list(HOSTILE))
def test_hostile_program_is_contained(name, host):
    host["hits"].clear()
    t = time.monotonic()
    r = run_program(render(HOSTILE[name], host["env"]), timeout=3.0, memory_mb=512)
    elapsed = time.monotonic() - t
    output = r.stdout + r.stderr
    assert "PWNED" not in r.stdout, (name, r)
    assert r.answer != "PWNED"
    assert host["secret"] not in output, name
    assert "root:x:0:0" not in output, name
    assert sorted(p.name for p in host["watched"].iterdir()) == ["keep.txt"], name
    assert (host["watched"] / "keep.txt").read_text() == "keep"
    assert host["victim"].poll() is None, f"{name}: the victim process was killed"
    assert not wait_gone(r.run_id), f"{name}: processes of the sandbox are still running"
    time.sleep(0.1)  # let the listener thread see any late connection
    assert host["hits"] == [], f"{name}: the listener got {host['hits']}"
    assert elapsed < 3.0 + 2.0, f"{name}: took {elapsed:.1f}s"
    assert os.getpid() > 0 and (Path.cwd()).exists()


def test_the_suite_is_large_enough():
    assert len(HOSTILE) >= 40


def _run(name: str, host) -> object:
    return run_program(render(HOSTILE[name], host["env"]), timeout=3.0, memory_mb=512)


def test_disk_fill_stops_at_the_tmpfs_cap(host):
    r = _run("2 GB disk fill", host)
    written = int(next(line.split()[1] for line in r.stdout.splitlines() if line.startswith("written")))
    assert written <= 16 << 20


def test_single_file_size_is_capped(host):
    r = _run("one file over the size limit", host)
    assert "File too large" in r.stdout, r


def test_fd_exhaustion_stops_at_the_limit(host):
    r = _run("fd exhaustion", host)
    assert "fds" in r.stdout and int(r.stdout.split("fds")[1].split()[0]) < 64


def test_threads_and_processes_are_refused_by_the_kernel(host):
    r = _run("thread bomb", host)
    assert "threads 0" in r.stdout, r
    r = _run("fork bomb", host)
    assert "refused: PermissionError" in r.stdout, r


def test_cpu_limit_cannot_be_ignored(host):
    r = run_program(SPIN, timeout=2.0)
    assert r.status == "timeout", r


def test_sandbox_sees_its_own_pid_namespace_only(host):
    r = run_program("import os\nprint(sorted(int(p) for p in os.listdir('/proc') if p.isdigit()))\nprint(os.getpid())")
    pids = eval(r.stdout.splitlines()[0])  # a list of small ints printed by the program
    assert max(pids) < 10 and int(r.answer) < 10, r


def test_huge_output_is_capped_without_exhausting_memory():
    require_bwrap()
    for code in ("while True:\n    print('x' * 65536)", "import sys\nsys.stdout.write('y' * 10**8)",
                 "import sys\nsys.stderr.write('z' * 10**8)"):
        r = run_program(code, timeout=3.0)
        assert r.status == "output-limit", r.reason
        assert len(r.stdout) <= MAX_CAPTURE and len(r.stderr) <= MAX_CAPTURE
        assert not wait_gone(r.run_id)


def test_memory_bomb_is_reported():
    require_bwrap()
    r = run_program("x = bytearray(8 * 1024**3)", timeout=3.0, memory_mb=512)
    assert r.status == "memory", r


def test_killing_mathforge_leaves_no_sandbox_behind(tmp_path):
    """A real mathforge process running a PoT program is SIGKILLed: nothing of the sandbox survives it."""
    require_bwrap()
    token = secrets.token_hex(8)
    script = (
        "import sys\nfrom mathforge.verify.sandbox import run_program\n"
        f"run_program({'import time; time.sleep(60)  # ' + token!r}, timeout=60)\n"
    )
    env = {**os.environ, "TMPDIR": str(tmp_path), "PYTHONPATH": os.pathsep.join(sys.path)}
    proc = subprocess.Popen([sys.executable, "-c", script], env=env)
    # importing mathforge and the first ldd scan are slow on a loaded machine
    _kill_and_check_survivors(proc, lambda: _descendants(proc.pid), "sandbox processes", start_s=180)
    assert list(tmp_path.iterdir()) == []  # nothing left on disk either


def test_a_child_dies_with_mathforge_even_before_bubblewrap_runs(tmp_path):
    """The parent-death signal is set in the forked child, not only by bwrap once it runs.

    A command that is not bwrap stands for the window between fork and bwrap's own ``--die-with-parent`` (the CI
    failure this closes: mathforge killed while the child was still ``prlimit`` left the program running).
    """
    token = secrets.token_hex(8)
    child = f"import time; time.sleep(60)  # {token}"
    script = (
        "import sys\nfrom mathforge.verify.sandbox import _communicate\n"
        f"_communicate([sys.executable, '-c', {child!r}], 60)\n"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    proc = subprocess.Popen([sys.executable, "-c", script], env=env)
    _kill_and_check_survivors(proc, lambda: [p for p in _tree(proc.pid) if token.encode() in _cmdline(p)], "a child")


def _kill_and_check_survivors(proc: subprocess.Popen, find, what: str, *, start_s: float = 120) -> None:
    """Wait until ``find()`` names processes below ``proc``, SIGKILL ``proc``, and assert that they all die too."""
    try:
        found: list[int] = []
        deadline = time.monotonic() + start_s
        while not found and time.monotonic() < deadline:
            time.sleep(0.1)
            found = find()
        assert found, f"{what} never started"
        proc.kill()
        proc.wait()
        deadline = time.monotonic() + 10
        while (alive := [p for p in found if _alive(p)]) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert alive == [], f"{what} outlived mathforge: {alive}"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def _tree(pid: int) -> list[int]:
    """Every process below ``pid``."""
    children: dict[int, list[int]] = {}
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                with open(f"/proc/{name}/stat") as f:
                    ppid = int(f.read().rsplit(")", 1)[1].split()[1])
                children.setdefault(ppid, []).append(int(name))
            except (OSError, ValueError, IndexError):
                pass
    out, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out


def _descendants(pid: int) -> list[int]:
    """All processes below ``pid`` that are inside a sandbox (their command line names the boot script)."""
    return [p for p in _tree(pid) if _cmdline(p).find(b"/sandbox/boot.py") >= 0]


def _cmdline(pid: int) -> bytes:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read()
    except OSError:
        return b""


def _alive(pid: int) -> bool:
    """True while ``pid`` exists and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False
