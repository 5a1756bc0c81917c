"""Training data: find the SFT chats (run export, JSONL/Parquet file or saved DatasetDict) and shape them for TRL."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from mathforge.errors import ConfigError, DataError

TRAIN_NAMES = ("train", "sft_train", "sft")
VALID_NAMES = ("validation", "valid", "val", "sft_validation", "sft_valid", "sft_val")
SUFFIXES = (".jsonl", ".parquet", ".json")


def locate(data: str | Path) -> dict[str, Path]:
    """Map split name -> file (or the DatasetDict directory under key ``dict``) for a data spec.

    In a run directory the export's chat split files come first (``export/chat/{train,validation}.*``), then its saved
    DatasetDict, then a single ``export/sft.*`` (whose ``split`` column, when present, is honoured by load_splits).
    """
    p = Path(data).expanduser()
    if not p.exists():
        raise ConfigError(f"training data {p} does not exist")
    if p.is_file():
        return {"train": p}
    for folder in (p, p / "export" / "chat", p / "export" / "dataset" / "chat", p / "export", p / "chat"):
        if (folder / "dataset_dict.json").exists():
            return {"dict": folder}
        train = _first(folder, TRAIN_NAMES)
        if train:
            found = {"train": train}
            valid = _first(folder, VALID_NAMES)
            if valid:
                found["validation"] = valid
            return found
    raise ConfigError(
        f"no training data in {p}: expected export/chat/train.jsonl or export/sft.jsonl (run an 'export' or "
        f"'reference_sft' stage), {'/'.join(TRAIN_NAMES)}.jsonl|parquet, or a saved DatasetDict"
    )


def _first(folder: Path, names: tuple[str, ...]) -> Path | None:
    for name in names:
        for suffix in SUFFIXES:
            if (folder / f"{name}{suffix}").is_file():
                return folder / f"{name}{suffix}"
    return None


def load_splits(data: str | Path, limit: int | None = None) -> dict[str, list[dict[str, Any]]]:
    """Read the train (and validation, when present) chats as lists of ``{"messages": [...]}`` rows."""
    found = locate(data)
    if "dict" in found:
        from datasets import load_from_disk

        dd = load_from_disk(str(found["dict"]))
        if "train" not in dd:
            raise ConfigError(f"{found['dict']}: the DatasetDict has no 'train' split (splits: {', '.join(dd)})")
        raw = {name: list(dd[name]) for name in dd}
        where = {name: f"{found['dict']}[{name}]" for name in dd}
    else:
        raw = {name: read_rows_file(path) for name, path in found.items()}
        where = {name: str(path) for name, path in found.items()}
    checked: dict[str, list[tuple[dict[str, Any], Any]]] = {}
    for name, rows in raw.items():
        if name == "train" or name in VALID_NAMES:
            checked["train" if name == "train" else "validation"] = [
                (_check(r, where[name], i), r.get("split")) for i, r in enumerate(rows)]
    # a single file may carry each row's split in a column (the export's flat sft.jsonl does)
    out = {"train": [r for r, split in checked["train"] if split != "validation"]}
    valid = [r for r, _ in checked.get("validation", [])] + [r for r, split in checked["train"] if split == "validation"]
    if valid:
        out["validation"] = valid
    if limit:
        out["train"] = out["train"][:limit]
    if not out["train"]:
        raise ConfigError(f"{where['train']}: no training rows (did the export keep any verified samples?)")
    return out


def read_rows_file(path: Path) -> list[dict[str, Any]]:
    """The rows of a .parquet, .json (a list, or {"rows": [...]}) or JSONL file; bad JSON or bytes name the line."""
    if path.suffix == ".parquet":
        import pyarrow.parquet as pq

        return pq.read_table(path).to_pylist()
    if path.suffix == ".json":
        data = json.loads(path.read_text(encoding="utf-8"))
        return data if isinstance(data, list) else data.get("rows", [])
    rows: list[dict[str, Any]] = []
    with open(path, "rb") as fh:
        for n, raw in enumerate(fh, 1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise DataError(f"not UTF-8 ({exc.reason})", file=str(path), line=n) from None
            if line.strip():
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError as exc:
                    raise DataError(f"invalid JSON: {exc.msg}", file=str(path), line=n) from None
    return rows


def _check(row: dict[str, Any], where: str, index: int) -> dict[str, Any]:
    """Keep only ``messages``; each row must be a chat that ends with an assistant turn."""
    msgs = row.get("messages")
    if isinstance(msgs, str):
        msgs = json.loads(msgs)
    if not isinstance(msgs, list) or not msgs:
        raise DataError("expected a non-empty 'messages' list", file=where, line=index + 1, field="messages")
    clean = []
    for m in msgs:
        if not isinstance(m, dict) or not isinstance(m.get("content"), str) or m.get("role") not in (
            "system", "user", "assistant"
        ):
            raise DataError(f"bad message {m!r}: need role system/user/assistant and string content",
                            file=where, line=index + 1, field="messages")
        clean.append({"role": m["role"], "content": m["content"]})
    if clean[-1]["role"] != "assistant":
        raise DataError("the chat must end with an assistant message", file=where, line=index + 1, field="messages")
    return {"messages": clean}


def to_prompt_completion(row: dict[str, Any]) -> dict[str, Any]:
    """Split a chat before its last assistant turn: TRL then masks the prompt, whatever the chat template."""
    msgs = row["messages"]
    return {"prompt": msgs[:-1], "completion": msgs[-1:]}


def fingerprint(splits: dict[str, list[dict[str, Any]]]) -> str:
    """A hash of the exact rows trained on, so a checkpoint is only resumed on the same data."""
    h = hashlib.sha256()
    for name in sorted(splits):
        h.update(name.encode())
        for row in splits[name]:
            h.update(json.dumps(row, sort_keys=True, ensure_ascii=False).encode())
    return h.hexdigest()[:16]
