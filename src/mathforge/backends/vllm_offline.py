"""In-process vLLM teacher (GPU): ``vllm.LLM.generate`` with ``SamplingParams(n=k)``, the optional ``vllm`` extra.

Prompts are rendered by ``chat.render`` with the model's tokenizer, exactly as the transformers backend renders them.
Requests are generated in chunks and each chunk is committed before the next starts, so a crash loses one chunk.
"""

from __future__ import annotations

import time
from typing import Any, Literal, Sequence

from pydantic import Field

from mathforge.backends.base import Backend, BackendConfig, Completion, GenRequest, ResultSink
from mathforge.backends.chat import render
from mathforge.engine.jobs import Job, make_jobs, sample_seed
from mathforge.errors import require


class VLLMConfig(BackendConfig):
    backend: Literal["vllm"] = "vllm"
    model: str = Field(description="hub id or local directory of the weights")
    tensor_parallel_size: int = Field(1, ge=1, description="GPUs to shard the model over")
    gpu_memory_utilization: float = Field(0.9, gt=0, le=1, description="share of GPU memory vLLM may take")
    max_model_len: int | None = Field(None, ge=1, description="context length (default: the model's)")
    dtype: str = Field("auto", description="weights dtype: auto, bfloat16, float16")
    max_samples_per_prompt: int = Field(64, ge=1, description="samples of one prompt generated together via n")
    chunk_prompts: int = Field(256, ge=1, description="prompts per generate call; each chunk is committed at once")
    trust_remote_code: bool = Field(False, description="allow model code from the hub")


class VLLMBackend(Backend):
    """vLLM's offline engine; the weights load in ``prepare`` (or on first use)."""

    Config = VLLMConfig
    config: VLLMConfig

    def __init__(self, name: str, config: VLLMConfig):
        super().__init__(name, config)
        self._llm: Any = None

    def identity(self) -> tuple[str, str]:
        return self.config.model, "local:vllm"

    def prepare(self) -> None:
        if self._llm is None:
            vllm = require("vllm", "vllm")
            c = self.config
            kwargs: dict[str, Any] = dict(model=c.model, tensor_parallel_size=c.tensor_parallel_size,
                                          gpu_memory_utilization=c.gpu_memory_utilization, dtype=c.dtype,
                                          trust_remote_code=c.trust_remote_code)
            if c.max_model_len:
                kwargs["max_model_len"] = c.max_model_len
            self._llm = vllm.LLM(**kwargs)

    def generate(self, requests: Sequence[GenRequest], sink: ResultSink) -> None:
        self.prepare()
        vllm = require("vllm", "vllm")
        tok = self._llm.get_tokenizer()
        jobs = make_jobs(requests, self.config.max_samples_per_prompt)
        for i in range(0, len(jobs), self.config.chunk_prompts):
            chunk = jobs[i : i + self.config.chunk_prompts]
            prompts = [render(tok, job.requests[0].messages) for job in chunk]
            params = [_sampling_params(vllm, job) for job in chunk]
            t0 = time.perf_counter()
            outputs = self._llm.generate(prompts, params, use_tqdm=False)
            latency = time.perf_counter() - t0
            sink.ok_many([item for job, out in zip(chunk, outputs) for item in _completions(job, out, latency)])

    def close(self) -> None:
        self._llm = None


def _sampling_params(vllm: Any, job: Job) -> Any:
    first = job.requests[0]
    p = first.params
    return vllm.SamplingParams(
        n=job.n, temperature=p.temperature, top_p=p.top_p, max_tokens=p.max_tokens,
        seed=sample_seed(p.seed, first.sample_index) if p.seed is not None else None,
        stop=list(p.stop) if p.stop else None,
    )


def _completions(job: Job, out: Any, latency: float) -> list[tuple[GenRequest, Completion]]:
    tokens_in = len(out.prompt_token_ids or [])
    choices = sorted(out.outputs, key=lambda o: o.index)
    return [
        (r, Completion(o.text, o.finish_reason, tokens_in, len(o.token_ids), latency,
                       {"engine": "vllm", "n": job.n, "choice": o.index}))
        for r, o in zip(job.requests, choices)
    ]
