"""Named answer extractors: each finds the final answer in a model's text one way, and says which way.

``extract(text, extractors)`` tries the named extractors in order and returns the first hit as
``(answer, extractor_name)``. The default order prefers explicit anchors (``#### N``, Minerva's "Final Answer:",
``\\boxed{}``, "The answer is"); unanchored text is left to math-verify's own extraction in the symbolic layer.
All scanners are linear in the input (no nested quantifiers), so 100 KB outputs cost milliseconds.
"""

from __future__ import annotations

import re
from itertools import islice
from typing import Callable

from mathforge.verify.normalize import strip_emphasis

DEFAULT_EXTRACTORS = ("gsm8k-hash", "final-answer", "boxed", "answer-is")
BOX_JOIN_GAP = 40  # boxes closer than this (no sentence end between) form one multi-part answer
_MAX_BOXES_TRIED = 20

_HASH = re.compile(r"(?m)^[ \t]*####[ \t]*([^\n]*?)[ \t]*$")
_FINAL = re.compile(
    r"final answer\s*:\s*(?:the final answer is\s*:?\s*)?([^\n]{1,300}?)\s*(?:\.\s*I hope it is correct|\.?\s*$|\.\s*\n)",
    re.IGNORECASE | re.MULTILINE,
)
_ANSWER_IS = re.compile(
    r"(?:the|final|my|correct)\s+answer\s+(?:is|=|will be)\s*:?\s*([^\n]{1,300}?)\s*(?:\.\s|\.?$|\n)",
    re.IGNORECASE | re.MULTILINE,
)
_BOX_START = re.compile(r"\\(?:boxed|fbox)\s*")
_NUMBER = re.compile(r"-?\d{1,3}(?:,\d{3})+(?:\.\d+)?|-?\d+(?:\.\d+)?(?:/\d+)?|-?\.\d+")
_LETTER_PATTERNS = (
    re.compile(r"answer\s*(?:is|:)?\s*:?\s*\(?\s*(?:option\s*)?\$?\\?(?:boxed|text)?\{?\(?([a-e])\b\)?", re.IGNORECASE),
    re.compile(r"\\boxed\{\s*(?:\\text\{)?\s*\(?([a-e])\)?\s*\}?\s*\}", re.IGNORECASE),
    re.compile(r"(?:option|choice)\s*\(?([a-e])\)?\b", re.IGNORECASE),
    re.compile(r"^\s*\(?([a-e])\)?\s*[.)]?\s*$", re.IGNORECASE | re.MULTILINE),
)
_OPTION = re.compile(r"(?:^|,)\s*([a-e])\s*\)\s*")
# The start of a new few-shot exemplar or chat turn written by a model that did not stop after its answer.
# (The literal "\n" prefix keeps the scan a fast search: a few microseconds per GSM8K solution.)
_CONTINUATION = re.compile(
    r"\n[ \t#*]*(?i:question|problem|q|exercise|human|user|instruction)[ \t]*\d*[ \t]*[:.]\**[ \t]*\S"
)
_CHAT_TOKEN = re.compile(r"<\|(?:im_start|user|endoftext|eot_id|start_header_id)\|>|</s>")
_MAX_CONTINUATIONS = 5


def boxed_contents(text: str) -> list[tuple[str, int, int]]:
    """The last few ``\\boxed{}``/``\\fbox{}`` in order, as ``(content, start, end)`` (unclosed ones skipped)."""
    found: list[tuple[str, int, int]] = []
    for m in list(_BOX_START.finditer(text))[-_MAX_BOXES_TRIED:]:
        content = braced_at(text, m.end())
        if content is not None:
            found.append((content[0], m.start(), content[1]))
    return found


def balanced_braces(text: str) -> bool:
    """Whether every ``{`` has its ``}`` in order (escaped ``\\{``/``\\}`` are content, not structure)."""
    depth = 0
    for c in text.replace("\\{", "").replace("\\}", ""):
        depth += (c == "{") - (c == "}")
        if depth < 0:
            return False
    return depth == 0


def braced_at(text: str, pos: int) -> tuple[str, int] | None:
    """Read ``{...}`` starting at ``pos`` with nesting (or one bare token as in ``\\boxed 5``)."""
    if pos >= len(text):
        return None
    if text[pos] != "{":
        m = re.match(r"[^\s$.,;{}\\]+", text[pos:])
        return (m.group(0), pos + m.end()) if m else None
    depth, i = 0, pos
    while i < len(text):
        c = text[i]
        if c == "\\":
            i += 2
            continue
        if c == "{":
            depth += 1
        elif c == "}":
            depth -= 1
            if depth == 0:
                return text[pos + 1 : i], i + 1
        i += 1
    return None


def _boxed(text: str) -> str | None:
    """The last boxed answer; adjacent boxes (``\\boxed{1} and \\boxed{2}``) are joined into one list answer."""
    found = boxed_contents(text)
    if not found:
        return None
    group = [found[-1]]
    for box in reversed(found[:-1]):
        gap = text[box[2] : group[0][1]]
        if len(gap) > BOX_JOIN_GAP or "\n\n" in gap or re.search(r"[.!?](\s|$)", gap):
            break
        group.insert(0, box)
    parts: list[str] = []
    for content, _, _ in group:
        if content.strip() and content.strip() not in parts:
            parts.append(content.strip())
    return ", ".join(parts) if parts else None


def _last_group(pattern: re.Pattern[str], text: str) -> str | None:
    """The first capture group of the last match of ``pattern``."""
    last = None
    for last in pattern.finditer(text):
        pass
    return last.group(1).strip() if last else None


def _gsm8k_hash(text: str) -> str | None:
    """GSM8K's first ``#### N`` line (anchored at line start, so ``$`` amounts in the working never compete).

    The first, not the last: ``####`` ends a GSM8K answer, so any later one belongs to a few-shot continuation the
    model wrote after its own answer."""
    for m in _HASH.finditer(text):
        if m.group(1).strip():
            return m.group(1).strip()
    return None


def _final_answer(text: str) -> str | None:
    """Minerva's "Final Answer: The final answer is X. I hope it is correct."."""
    ans = _last_group(_FINAL, text)
    return _unquote(ans) if ans else None


def _answer_is(text: str) -> str | None:
    """"The answer is X" (last occurrence, up to the end of the sentence)."""
    ans = _last_group(_ANSWER_IS, text)
    return _unquote(ans) if ans else None


def _unquote(ans: str) -> str | None:
    ans = ans.strip().strip('"').strip().rstrip(".").strip()
    inner = _boxed(ans)
    return inner if inner is not None and ans.lstrip("$\\( ").startswith(("\\boxed", "\\fbox")) else (ans or None)


def _last_number(text: str) -> str | None:
    """The last number in the text (lm-eval's "flexible-extract")."""
    ans = _last_group(re.compile(f"({_NUMBER.pattern})"), text)
    return ans


def parse_options(options: str | dict | None) -> dict[str, str]:
    """MathQA's ``a ) 12 , b ) 16 , ...`` (or a dict) as ``{"a": "12", ...}`` with lower-case letters."""
    if not options:
        return {}
    if isinstance(options, dict):
        return {str(k).strip().lower().strip("()"): str(v).strip() for k, v in options.items()}
    marks = list(_OPTION.finditer(options))
    out: dict[str, str] = {}
    for i, m in enumerate(marks):
        end = marks[i + 1].start() if i + 1 < len(marks) else len(options)
        out[m.group(1).lower()] = options[m.end() : end].strip().rstrip(",").strip()
    return out


def _choice(text: str) -> str | None:
    """A multiple-choice letter a-e from "answer : a", "(B)", "\\boxed{C}" or a line holding just the letter."""
    tail = text[-2000:]
    for pat in _LETTER_PATTERNS:
        letter = _last_group(pat, tail)
        if letter:
            return letter.lower()
    return None


def _pot(text: str) -> str | None:
    """Run the last fenced Python block in the sandbox and take the last line it prints."""
    from mathforge.verify.sandbox import extract_code, run_program

    code = extract_code(text)
    if code is None:
        return None
    return run_program(code).answer


EXTRACTORS: dict[str, Callable[[str], str | None]] = {
    "gsm8k-hash": _gsm8k_hash,
    "final-answer": _final_answer,
    "boxed": _boxed,
    "answer-is": _answer_is,
    "last-number": _last_number,
    "choice": _choice,
    "pot": _pot,
}


def extract(text: str | None, extractors: list[str] | tuple[str, ...] | None = None) -> tuple[str | None, str | None]:
    """Try the named extractors in order; return ``(answer, extractor_name)`` or ``(None, None)``.

    A model that runs on into a few-shot continuation ("...#### 72\n\nQuestion: ... The answer is 10") answered
    before the continuation: the text up to the first new exemplar is tried first, whenever it holds an answer.
    """
    if not text:
        return None, None
    names = DEFAULT_EXTRACTORS if extractors is None else extractors
    for name in names:
        if name not in EXTRACTORS:
            raise ValueError(f"unknown extractor {name!r}; known: {', '.join(EXTRACTORS)}")
    cuts = [m.start() for m in islice(_CONTINUATION.finditer(text), _MAX_CONTINUATIONS)]
    if "<|" in text or "</s>" in text:
        cuts = sorted(cuts + [m.start() for m in islice(_CHAT_TOKEN.finditer(text), _MAX_CONTINUATIONS)])
    for cut in cuts[:_MAX_CONTINUATIONS]:
        found = _first_hit(text[:cut], names)
        if found[0] is not None:
            return found
    return _first_hit(text, names)


def _first_hit(text: str, names: list[str] | tuple[str, ...]) -> tuple[str | None, str | None]:
    for name in names:
        ans = EXTRACTORS[name](text)
        if ans:
            ans = strip_emphasis(ans) if name != "pot" else ans
            if ans:
                return ans, name
    return None, None


def gold_answer(gold: str) -> tuple[str, str | None]:
    """The answer inside a gold field: a full reference solution is reduced by the anchored extractors."""
    ans, name = extract(gold, DEFAULT_EXTRACTORS)
    return (ans, name) if ans else (gold.strip(), None)
