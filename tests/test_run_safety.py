"""One writer per run directory, atomic stage outputs, and clear errors for lost or garbled run files."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

sys.path.insert(0, str(Path(__file__).parent))
from fake_openai_server import ServerConfig, ServerThread
from mathforge.cli.main import app
from mathforge.errors import EXIT_ERROR, EXIT_LOCKED, DataError
from mathforge.export import ExportConfig, ExportStage
from mathforge.generate import GenerateConfig, GenerateStage
from mathforge.pipeline.context import RunContext
from mathforge.pipeline.io import TMP_MARK, DirWriter, TableWriter, clean_leftovers
from mathforge.pipeline.recipe import load_recipe
from mathforge.records import Problem
from mathforge.store import append_rejected

FAST = ServerConfig(base_latency=0.01, per_token=0.0, min_completion=8, max_completion=12)


@pytest.fixture(scope="module")
def server():
    with ServerThread(lifetime=300) as srv:
        yield srv


def write_recipe(tmp: Path, url: str, n: int, **teacher) -> Path:
    with open(tmp / "problems.jsonl", "w") as f:
        for i in range(n):
            f.write(json.dumps({"question": f"What is {i} + 3?", "answer": str(i + 3)}) + "\n")
    recipe = {"name": "safety",
              "teachers": {"fake": {"backend": "openai", "model": "fake", "base_url": url, "api_key_env": None,
                                    **teacher}},
              "stages": [{"load": {"dataset": "generic", "path": str(tmp / "problems.jsonl")}},
                         {"generate": {"k": 1, "max_tokens": 32, "prompt": "cot"}}]}
    (tmp / "recipe.yaml").write_text(json.dumps(recipe))
    return tmp / "recipe.yaml"


def mathforge(*args: str, **kw) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "mathforge", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=dict(os.environ, COLUMNS="400"), **kw)


@pytest.mark.slow
def test_second_writer_is_refused_naming_the_holder_and_readers_still_work(server, tmp_path):
    server.configure(ServerConfig(base_latency=0.3, per_token=0.0, min_completion=8, max_completion=12))
    recipe, run = write_recipe(tmp_path, server.url, 30, max_concurrency=2), tmp_path / "run"
    first = mathforge("run", str(recipe), "-o", str(run))
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not (run / "generate.parquet").exists():
            if (run / "ledger.sqlite").exists() and (run / "problems.parquet").exists():
                break
            time.sleep(0.05)
        second = mathforge("run", str(recipe), "-o", str(run))
        out, err = second.communicate(timeout=60)
        assert second.returncode == EXIT_LOCKED, err
        assert f"PID {first.pid}" in " ".join(err.split()) and "mathforge report" in err
        assert first.poll() is None, "the first writer should still be running"
        report = subprocess.run([sys.executable, "-m", "mathforge", "report", str(run), "-o", str(tmp_path / "rep")],
                                capture_output=True, text=True, timeout=120)
        assert report.returncode == 0, report.stderr[-2000:]
    finally:
        out, err = first.communicate(timeout=120)
    assert first.returncode == 0, err[-2000:]
    assert (run / "generate.parquet").exists()


def test_lock_is_per_directory_and_released_on_close(tmp_path):
    with RunContext(tmp_path / "a"):
        with RunContext(tmp_path / "b"):  # another directory: its own lock
            pass
        with RunContext(tmp_path / "a"):  # the same process may nest (retry runs the runner)
            pass
        code = "from mathforge.pipeline.context import RunContext; RunContext(%r)" % str(tmp_path / "a")
        child = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
        assert child.returncode != 0 and "RunLockedError" in child.stderr and f"PID {os.getpid()}" in child.stderr
    RunContext(tmp_path / "a").close()  # free again


def test_a_failed_stage_leaves_the_previous_output_and_no_temp_files(tmp_path):
    rows = [{"id": f"s{i}", "problem_id": f"p{i}", "question": "q", "text": "t", "correct": True} for i in range(5)]
    with RunContext(tmp_path / "run") as ctx:
        ctx.write_samples("curated", rows)
        ExportStage().run(ctx, ExportConfig(formats=["jsonl"], validation_fraction=0))
        before = sorted(p.relative_to(ctx.run_dir) for p in ctx.path("export").rglob("*"))

        class Boom(Exception):
            pass

        def explode(*a, **k):
            raise Boom

        import mathforge.export as ex

        real, ex.export_batches = ex.export_batches, lambda b, out, *a, **k: (real(b, out, *a, **k), explode())
        try:
            with pytest.raises(Boom):
                ExportStage().run(ctx, ExportConfig(formats=["jsonl"], validation_fraction=0))
        finally:
            ex.export_batches = real
        after = sorted(p.relative_to(ctx.run_dir) for p in ctx.path("export").rglob("*"))
        assert after == before and not [p for p in ctx.run_dir.iterdir() if TMP_MARK in p.name]


def test_leftovers_of_killed_writers_are_cleaned_and_a_cut_switch_restored(tmp_path):
    run = tmp_path / "run"
    (run / "export").mkdir(parents=True)
    (run / "export" / "sft.jsonl").write_text("{}\n")
    w = TableWriter(run / "generate.parquet")
    w.write([{"a": 1}])  # a killed writer: its temp file stays behind
    d = DirWriter(run / "export")
    (d.path / "sft.jsonl").write_text("{}\n{}\n")
    os.replace(run / "export", run / ".export.12345678.mf-old")  # killed between the two renames of a switch
    done = clean_leftovers(run)
    assert "restored export" in done and (run / "export" / "sft.jsonl").read_text() == "{}\n"
    assert sorted(p.name for p in run.iterdir()) == ["export"]


@pytest.mark.slow
def test_kill_during_export_never_leaves_a_broken_export(tmp_path):
    """SIGKILL at random moments of `mathforge export`: export/ is always the old whole folder or the new one."""
    rows = [{"id": f"s{i}", "problem_id": f"p{i % 300}", "question": f"What is {i}?", "text": "x " * 200,
             "correct": True} for i in range(3000)]
    with RunContext(tmp_path / "run") as ctx:
        ctx.write_samples("curated", rows)
    run = tmp_path / "run"
    assert subprocess.run([sys.executable, "-m", "mathforge", "export", str(run)], timeout=300).returncode == 0
    expected = sorted(str(p.relative_to(run / "export")) for p in (run / "export").rglob("*"))
    rng = random.Random(7)
    for _ in range(6):
        proc = mathforge("export", str(run))
        time.sleep(rng.uniform(0.05, 3.0))
        proc.send_signal(signal.SIGKILL)
        proc.communicate(timeout=60)
        found = sorted(str(p.relative_to(run / "export")) for p in (run / "export").rglob("*"))
        assert found == expected
        lines = (run / "export" / "sft.jsonl").read_text().splitlines()
        assert len(lines) == 3000 and json.loads(lines[-1])["id"]
    with RunContext(run):  # the next writer cleans what the killed ones left
        assert not [p for p in run.iterdir() if TMP_MARK in p.name or ".mf-old" in p.name]


def seeded_run(server, tmp: Path) -> Path:
    """A run directory whose generate stage has 3 answered requests in its ledger."""
    server.configure(FAST)
    recipe = load_recipe(str(write_recipe(tmp, server.url, 3)))
    with RunContext(tmp / "run", teachers=recipe.teachers) as ctx:
        ctx.write_problems("problems", [Problem(f"p{i}", f"What is {i} + 3?", str(i + 3)) for i in range(3)])
        GenerateStage().run(ctx, GenerateConfig(k=1, max_tokens=16))
    return tmp / "run"


@pytest.mark.parametrize("damage", ["deleted", "zero-byte", "garbled"])
def test_a_lost_ledger_is_an_error_not_a_silent_repayment(server, tmp_path, damage):
    run = seeded_run(server, tmp_path)
    db = run / "ledger.sqlite"
    for extra in ("-wal", "-shm"):
        Path(str(db) + extra).unlink(missing_ok=True)
    if damage == "deleted":
        db.unlink()
    elif damage == "zero-byte":
        db.write_bytes(b"")
    else:
        db.write_bytes(b"this is not sqlite" * 100)
    fake = server.configure(FAST)
    res = CliRunner().invoke(app, ["run", str(tmp_path / "recipe.yaml"), "-o", str(run)], env={"COLUMNS": "400"})
    flat = " ".join(res.output.split())
    assert res.exit_code == EXIT_ERROR, res.output
    assert "ledger.sqlite" in flat and "--new-ledger" in flat and fake.total == 0
    if damage != "garbled":  # the explicit way on: a fresh ledger, every request paid again
        res = CliRunner().invoke(app, ["run", str(tmp_path / "recipe.yaml"), "-o", str(run), "--new-ledger"])
        assert res.exit_code == 0, res.output
        assert fake.total == 3


def test_garbled_state_and_rejected_files_name_the_file(server, tmp_path):
    run = seeded_run(server, tmp_path)
    (run / "state.json").write_text('{"stages": {"gen')
    with pytest.raises(DataError, match=r"state\.json: garbled .* delete it and rerun the recipe"):
        RunContext(run)
    (run / "state.json").unlink()
    (run / "rejected.parquet").write_bytes(b"PAR1 not really")
    with pytest.raises(DataError, match=r"rejected\.parquet: not a readable Parquet table .*`mv "):
        append_rejected(run, "verify", [({"id": "x"}, "why")])


def test_locked_error_carries_its_exit_code(tmp_path):
    with RunContext(tmp_path / "r") as ctx:
        ctx.write_samples("samples", [{"id": "s", "problem_id": "p", "question": "q", "text": "t"}])
        code = ("import sys; from mathforge.cli.main import main; sys.argv = ['mathforge', 'curate', %r]; main()"
                % str(tmp_path / "r"))
        child = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                               env=dict(os.environ, COLUMNS="400"))
    assert child.returncode == EXIT_LOCKED, child.stderr
    assert f"PID {os.getpid()}" in " ".join(child.stderr.split())
