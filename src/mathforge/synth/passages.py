"""Math text passages for synthesis: read from a file, split into chunks, and every chunk accounted for.

A ``.jsonl`` file holds one passage per line in a text field; any other file is plain text with passages separated by
blank lines. Passages longer than the chunk size are split at paragraph (then sentence) boundaries; chunks too short
to write a problem from are returned as rejects with the reason, never dropped silently.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

from mathforge.errors import ConfigError, DataError

_SENTENCE = re.compile(r"(?<=[.!?])\s+")


@dataclass(frozen=True)
class Passage:
    id: str
    text: str


def read_passages(path: str | Path, field: str = "text") -> list[Passage]:
    """Passages of a file, with ids ``<file stem>/<n>`` in file order."""
    p = Path(path)
    if not p.exists():
        raise ConfigError(f"passages file {p} does not exist")
    stem = p.stem
    if p.suffix == ".jsonl":
        out = []
        for i, line in enumerate(p.read_text(encoding="utf-8").splitlines(), 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise DataError(f"invalid JSON ({exc.msg})", file=str(p), line=i) from None
            if not isinstance(row, dict) or not isinstance(row.get(field), str):
                raise DataError(f"no text in field '{field}'", file=str(p), line=i, field=field)
            out.append(Passage(str(row.get("id", f"{stem}/{len(out)}")), row[field].strip()))
        return out
    blocks = re.split(r"\n\s*\n", p.read_text(encoding="utf-8"))
    return [Passage(f"{stem}/{i}", b.strip()) for i, b in enumerate(b for b in blocks if b.strip())]


def chunk_passages(
    passages: list[Passage], max_chars: int, min_chars: int
) -> tuple[list[Passage], list[tuple[Passage, str]]]:
    """Split long passages into chunks of at most ``max_chars``; return (chunks, rejected chunks with reasons)."""
    chunks, rejects = [], []
    for p in passages:
        pieces = _split(p.text, max_chars)
        for j, piece in enumerate(pieces):
            chunk = Passage(p.id if len(pieces) == 1 else f"{p.id}#{j}", piece)
            if len(piece) < min_chars:
                rejects.append((chunk, f"passage too short: {len(piece)} characters, fewer than {min_chars}"))
            else:
                chunks.append(chunk)
    return chunks, rejects


def _split(text: str, max_chars: int) -> list[str]:
    """Greedy packing of paragraphs (sentences inside an overlong paragraph, hard cuts as a last resort)."""
    units: list[tuple[str, str]] = []  # (text, separator from the unit before)
    for para in re.split(r"\n\s*\n", text):
        para = para.strip()
        if len(para) <= max_chars:
            units.append((para, "\n\n"))
            continue
        sep = "\n\n"
        for sentence in _SENTENCE.split(para):
            for i in range(0, len(sentence), max_chars):
                units.append((sentence[i : i + max_chars], sep))
                sep = " "
    out: list[str] = []
    for u, sep in units:
        if out and len(out[-1]) + len(sep) + len(u) <= max_chars:
            out[-1] += sep + u
        elif u:
            out.append(u)
    return out or [text.strip()]
