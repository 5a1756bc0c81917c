"""Cost of the program-of-thought sandbox: programs per second before (audit-hook sandbox) and after (bubblewrap).

The "before" implementation is loaded from git (``--baseline``, default: the last commit before bubblewrap) and run
in the same process, interleaved round by round with the current one so that machine load hits both alike.
Writes the section between ``<!-- sandbox:begin -->`` and ``<!-- sandbox:end -->`` in ``bench/results/verify.md``
(the rest of that file belongs to ``bench/verify.py``).

    python bench/sandbox.py [--rounds 5] [--baseline REV]
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from mathforge.verify import _bwrap, sandbox  # noqa: E402

RESULT = ROOT / "bench" / "results" / "verify.md"
BEGIN, END = "<!-- sandbox:begin -->", "<!-- sandbox:end -->"
BASELINE = "7e51387"  # main just before the bubblewrap sandbox landed
WORKLOADS = {
    "print(1 + 1)": ("print(1 + 1)", "2", 10),
    "typical PoT (fractions, loops)": (
        "from fractions import Fraction\nimport math\n"
        "total = sum(Fraction(1, k * (k + 1)) for k in range(1, 200))\n"
        "ways = sum(math.comb(12, k) for k in range(0, 13, 2))\nprint(total + ways)",
        "409799/200", 6,
    ),
    "sympy solve": (
        "from sympy import symbols, solve\nx = symbols('x')\nprint(sorted(solve(x**3 - 6*x**2 + 11*x - 6, x)))",
        "[1, 2, 3]", 2,
    ),
}


def load_baseline(rev: str):
    """The old ``run_program``, from ``rev``'s sandbox.py and _sandbox_boot.py in a temporary directory."""
    tmp = Path(tempfile.mkdtemp(prefix="sandbox-baseline-"))
    for name in ("sandbox.py", "_sandbox_boot.py"):
        text = subprocess.run(
            ["git", "-C", str(ROOT), "show", f"{rev}:src/mathforge/verify/{name}"],
            capture_output=True, text=True, check=True,
        ).stdout
        (tmp / name).write_text(text)
    spec = importlib.util.spec_from_file_location("baseline_sandbox", tmp / "sandbox.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the class is built
    spec.loader.exec_module(module)
    return module.run_program


def timed(run, code: str, answer: str, n: int) -> float:
    """Seconds for ``n`` sequential runs; every run must give the right answer."""
    t = time.perf_counter()
    for _ in range(n):
        r = run(code, timeout=30)
        if r.answer != answer:
            raise SystemExit(f"wrong result {r.status} {r.answer!r} {r.reason} for {code!r}")
    return time.perf_counter() - t


def cpu_model() -> str:
    out = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
    m = re.search(r"Model name:\s*(.+)", out)
    return m.group(1).strip() if m else platform.processor()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--baseline", default=BASELINE)
    args = ap.parse_args()
    old = load_baseline(args.baseline)
    t = time.perf_counter()
    sandbox.run_program("print(1)")  # first call: find the libraries (ldd), compile seccomp, probe bwrap
    setup = time.perf_counter() - t
    old("print(1)")
    loads = [os.getloadavg()[0]]
    totals = {w: {"before": [0.0, 0], "after": [0.0, 0]} for w in WORKLOADS}
    for _ in range(args.rounds):
        for name, (code, answer, n) in WORKLOADS.items():
            for label, run in (("before", old), ("after", sandbox.run_program)):
                totals[name][label][0] += timed(run, code, answer, n)
                totals[name][label][1] += n
        loads.append(os.getloadavg()[0])
    rows = []
    for name, by in totals.items():
        rate = {k: v[1] / v[0] for k, v in by.items()}
        per = {k: 1000 * v[0] / v[1] for k, v in by.items()}
        rows.append(
            f"| {name} | {by['after'][1]} | {rate['before']:.1f} ({per['before']:.0f} ms) | "
            f"{rate['after']:.1f} ({per['after']:.0f} ms) | {rate['after'] / rate['before']:.2f}x |"
        )
    mounts = sum(1 for a in _bwrap.view()[0] if a.startswith("--"))
    section = "\n".join([
        BEGIN,
        "## 4. Program-of-thought sandbox cost",
        "",
        f"`python bench/sandbox.py --rounds {args.rounds}` on {cpu_model()}, {os.cpu_count()} cores, Python "
        f"{platform.python_version()}, {time.strftime('%Y-%m-%d')}. Load average (1 min) during the run: "
        f"{min(loads):.2f}–{max(loads):.2f}; the machine is shared with other engineers, so absolute numbers are "
        "noisy; before and after run interleaved in the same process, round by round.",
        "",
        f"Before: `{args.baseline}` (`python -I -S` child, rlimits, audit hook, `unshare -rn`). After: bubblewrap "
        f"(user/mount/PID/net/IPC/UTS/cgroup namespaces, {mounts} mount operations for the read-only view, seccomp, "
        "prlimit, 16 MB tmpfs). Sequential runs, each checked for the right answer.",
        "",
        "| program | runs each | before: programs/s (per run) | after: programs/s (per run) | after / before |",
        "|---|---|---|---|---|",
        *rows,
        "",
        f"One-time setup in a process (ldd over the interpreter's extension modules and packages, seccomp "
        f"compilation, a probe run): {setup:.2f} s.",
        END,
    ])
    print(section)
    text = RESULT.read_text() if RESULT.exists() else "# Verify benchmark\n"
    if BEGIN in text and END in text:
        text = text[: text.index(BEGIN)] + section + text[text.index(END) + len(END):]
    else:
        text = text.rstrip("\n") + "\n\n" + section + "\n"
    RESULT.write_text(text)


if __name__ == "__main__":
    main()
