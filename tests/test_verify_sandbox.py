"""The program-of-thought sandbox: normal programs work, refusals are reported, modes and missing bubblewrap.

The hostile-program suite, which checks effects on the host, is in ``test_verify_sandbox_hostile.py``.
"""

import os
import time

import pytest

from mathforge.verify import _bwrap, check, sandbox
from mathforge.verify.sandbox import SandboxUnavailable, extract_code, run_program
from tests.sandbox_helpers import require_bwrap


@pytest.fixture(autouse=True)
def _needs_bwrap(request):
    if not any(w in request.node.name for w in ("unsafe", "unavailable", "validated")):
        require_bwrap()


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


@pytest.mark.parametrize(
    "code, answer",
    [
        ("import math\nprint(math.comb(10, 3))", "120"),
        ("from sympy import symbols, solve\nx = symbols('x')\nprint(solve(x**2 - 5*x + 6, x))", "[2, 3]"),
        ("import numpy as np\nprint(int(np.arange(1, 101).sum()))", "5050"),
        ("import itertools\nprint(sum(1 for p in itertools.permutations(range(5)) if p[0] < p[-1]))", "60"),
        ("open('note.txt', 'w').write('42')\nimport tempfile\nwith tempfile.TemporaryFile() as f:\n    f.write(b'1')\n"
         "print(open('note.txt').read())", "42"),
        ("import decimal\ndecimal.getcontext().prec = 12\nprint(decimal.Decimal(1) / 7)", "0.142857142857"),
    ],
)
def test_normal_programs_get_the_right_answer(code, answer):
    r = run_program(code, timeout=20)
    assert (r.status, r.answer) == ("ok", answer), r


def test_errors_and_timeouts_are_reported_as_such():
    r = run_program("print('partial')\nraise ValueError('bad step')")
    assert (r.status, r.answer) == ("error", None) and "ValueError: bad step" in r.reason
    t = time.perf_counter()
    r = run_program("import time\ntime.sleep(30)", timeout=1.0)
    assert (r.status, r.answer, r.reason) == ("timeout", None, "killed after 1s")
    assert time.perf_counter() - t < 2.5
    r = run_program("import sys\nprint(7)\nsys.exit(3)")
    assert (r.status, r.returncode, r.answer) == ("error", 3, None)


def test_bwrap_unavailable_refuses_with_install_hint(monkeypatch):
    monkeypatch.setattr(_bwrap.shutil, "which", lambda name: None)
    monkeypatch.setattr(sandbox, "_probed", None)
    monkeypatch.delenv("MATHFORGE_SANDBOX", raising=False)
    with pytest.raises(SandboxUnavailable, match="apt-get install bubblewrap"):
        run_program("print(1)")
    with pytest.raises(SandboxUnavailable, match="unsafe-no-isolation"):
        check("```python\nprint(2)\n```", "2", extractors=["pot"])


def test_unsafe_mode_runs_without_bwrap_and_warns(monkeypatch):
    monkeypatch.setattr(_bwrap.shutil, "which", lambda name: "/usr/bin/prlimit" if name == "prlimit" else None)
    monkeypatch.setattr(sandbox, "_warned", False)
    monkeypatch.setenv("MATHFORGE_SANDBOX", "unsafe-no-isolation")
    with pytest.warns(RuntimeWarning, match="SANDBOX DISABLED"):
        r = run_program("print(6 * 7)")
    assert (r.status, r.answer) == ("ok", "42")
    r = run_program("import socket\nsocket.socket()", mode="unsafe-no-isolation")
    assert r.status == "blocked"  # only the audit hook is left in this mode


def test_mode_is_validated_and_set_per_context(monkeypatch):
    monkeypatch.delenv("MATHFORGE_SANDBOX", raising=False)
    with pytest.raises(ValueError, match="unknown sandbox mode"):
        run_program("print(1)", mode="none")
    token = sandbox.set_sandbox_mode("unsafe-no-isolation")
    try:
        assert sandbox.sandbox_mode() == "unsafe-no-isolation"
    finally:
        sandbox.reset_sandbox_mode(token)
    assert sandbox.sandbox_mode() == "bwrap"


def test_verify_stage_sandbox_key(monkeypatch):
    from mathforge.verify.stage import VerifyConfig, run_verify_stage

    with pytest.raises(ValueError):
        VerifyConfig(sandbox="none")
    rows = [{"text": "```python\nprint(3 + 4)\n```", "gold": "7"}]
    assert run_verify_stage(rows, VerifyConfig(extractors=["pot"]))[0]["correct"] is True
    monkeypatch.setattr(_bwrap.shutil, "which", lambda name: "/usr/bin/prlimit" if name == "prlimit" else None)
    monkeypatch.setattr(sandbox, "_probed", None)
    monkeypatch.delenv("MATHFORGE_SANDBOX", raising=False)
    with pytest.raises(SandboxUnavailable):
        run_verify_stage(rows, VerifyConfig(extractors=["pot"]))
    with pytest.warns(RuntimeWarning):
        out = run_verify_stage(rows, VerifyConfig(extractors=["pot"], sandbox="unsafe-no-isolation"))
    assert out[0]["correct"] is True and sandbox.sandbox_mode() == "bwrap"
