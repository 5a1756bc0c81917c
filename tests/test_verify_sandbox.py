"""The program-of-thought sandbox against hostile programs: each is contained, reported, and the host unharmed."""

import os
import time

import pytest

from mathforge.verify import check
from mathforge.verify.sandbox import extract_code, run_program


def test_runs_a_program_and_takes_the_last_printed_line():
    r = run_program("from fractions import Fraction\nprint('work')\nprint(Fraction(1, 3) + Fraction(1, 6))")
    assert (r.status, r.answer, r.returncode) == ("ok", "1/2", 0)


def test_pot_extractor_in_check():
    text = "Let me compute.\n```python\nprint(sum(range(1, 11)))\n```\n"
    v = check(text, "55", extractors=["pot"])
    assert (v.correct, v.extractor, v.extracted) == (True, "pot", "55")
    assert extract_code("no code here") is None


@pytest.mark.parametrize(
    "name, code, status",
    [
        ("infinite loop", "while True:\n    pass", "timeout"),
        ("fork bomb", "import os\nwhile True:\n    os.fork()", "blocked"),
        ("memory bomb", "x = bytearray(8 * 1024**3)", "memory"),
        ("socket connect", "import socket\nsocket.create_connection(('127.0.0.1', 22))", "blocked"),
        ("socket via __import__", "__import__('soc' + 'ket').create_connection(('127.0.0.1', 22))", "blocked"),
        ("subprocess", "import subprocess\nsubprocess.run(['id'])", "blocked"),
        ("ctypes", "import ctypes\nctypes.CDLL(None).system(b'id')", "blocked"),
        ("ctypes via importlib", "import importlib\nimportlib.import_module('ctypes').CDLL('libc.so.6')", "blocked"),
        ("os.system", "import os\nos.system('id')", "blocked"),
        ("kill the parent", "import os\nos.kill(os.getppid(), 9)", "blocked"),
        ("parent environ", "import os\nprint(open(f'/proc/{os.getppid()}/environ').read())", "blocked"),
        ("output flood", "while True:\n    print('x' * 4096)", "output-limit"),
    ],
)
def test_hostile_programs_are_contained(name, code, status):
    t = time.perf_counter()
    r = run_program(code, timeout=1.0, memory_mb=512)
    assert r.status == status, (name, r)
    assert r.answer is None
    assert time.perf_counter() - t < 3.0


def test_environment_secrets_are_invisible(monkeypatch):
    monkeypatch.setenv("MATHFORGE_FAKE_SECRET", "hunter2")
    r = run_program("import os\nprint(sorted(os.environ.items()))")
    assert r.status == "ok" and "hunter2" not in r.stdout and "MATHFORGE_FAKE_SECRET" not in r.stdout


def test_writes_stay_inside_the_sandbox(tmp_path):
    target = tmp_path / "pwned.txt"
    r = run_program(f"open({str(target)!r}, 'w').write('x')")
    assert r.status == "blocked" and not target.exists()
    r = run_program(f"import os\nos.remove({str(tmp_path)!r})")
    assert r.status == "blocked" and tmp_path.exists()
    r = run_program("open('scratch.txt', 'w').write('ok')\nprint(open('scratch.txt').read())")
    assert (r.status, r.answer) == ("ok", "ok")


def test_library_imports_still_work():
    r = run_program("import sympy\nprint(sympy.Rational(3, 6))", timeout=20)
    assert (r.status, r.answer) == ("ok", "1/2")


def test_host_is_unaffected():
    assert os.getpid() > 0 and run_program("print(1)").answer == "1"
