"""Masking of anything that looks like a credential, wherever config, errors or logs are written or printed.

Three rules, all applied by :func:`mask_config` (dicts and lists of config) and the value rules by :func:`mask_text`
(free text: error messages, log lines, report strings):
- a field whose name says it holds a credential (``api_key``, ``hf_token``, ``client_secret``, ``password``; not
  ``max_tokens``, ``prompt_key`` or ``pad_token``) has its string value replaced by ``***``; a field named ``*_env``
  holds the *name* of an environment variable and is masked only when its value is not such a name (a pasted key);
- text shaped like a key: known provider prefixes (``sk-``, ``hf_``, ``AIza``, ``ghp_``, ...), ``Bearer <token>``,
  credentials in a URL (``?api_key=...``, ``user:pass@host``), and opaque runs of 32+ letters and digits (keys
  without a prefix: Mistral, Cohere, Azure, Together) unless they are a path segment (``snapshots/<sha>/``);
- the values substituted from ``${VAR}`` are put back as ``${VAR}`` (done by ``config.Secrets``, which knows them).
The module is named ``masking`` (not ``secrets``) so that it never shadows the standard library's ``secrets``.
Masking is one-way and on purpose conservative about what it keeps: a run directory never holds a secret.
"""

from __future__ import annotations

import logging
import re
from typing import Any, Iterable

MASK = "***"
ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")

_PREFIXED = re.compile(
    r"(?<![A-Za-z0-9])(?:(?:sk-|sk_|pk_live_|rk_live_|gsk_|AIza|hf_|ghp_|gho_|ghs_|ghu_|ghr_|github_pat_|glpat-|"
    r"xox[abprs]-|nvapi-|pplx-|r8_|fw_|csk-|eyJ)[-_A-Za-z0-9.*+/=]{6,}|(?:AKIA|ASIA)[0-9A-Z]{16}\b)"
)
_BEARER = re.compile(r"(?i)\b(bearer\s+|basic\s+|token\s*[=:]\s*)([-_A-Za-z0-9.+/=~*]{8,})")
_URL_PARAM = re.compile(
    r"(?i)([?&;](?:api[_-]?key|key|access[_-]?token|auth[_-]?token|token|secret|password|sig|signature)=)([^&#\s'\"]+)"
)
_URL_USERINFO = re.compile(r"(?i)(\b[a-z][a-z0-9+.-]*://[^/\s:@]+:)([^@\s/]+)(@)")
# A run of 32+ letters and digits that is not a path segment; the letter-and-digit test is done per match (linear).
_OPAQUE = re.compile(r"(?<![A-Za-z0-9/])[A-Za-z0-9]{32,}+(?![/])")

_SECRET_WORDS = {"secret", "secrets", "password", "passwd", "credential", "credentials", "apikey", "authorization",
                 "cookie", "bearer"}
_KEY_QUALIFIERS = {"api", "access", "private", "secret", "auth", "client", "account", "service", "signing",
                   "encryption", "master", "license", "subscription", "openai", "hf", "hub"}
_SPECIAL_TOKENS = {"pad", "eos", "bos", "unk", "sep", "cls", "mask", "start", "end", "special"}


def secret_field(name: str) -> bool:
    """Whether a config field of this name holds a credential itself (``*_env`` fields hold a variable's name)."""
    words = [w for w in re.split(r"[^a-z0-9]+", str(name).lower()) if w]
    if not words or words[-1] == "env":
        return False
    if any(w in _SECRET_WORDS for w in words):
        return True
    if words[-1] == "token":
        return not (len(words) > 1 and words[-2] in _SPECIAL_TOKENS)
    if words[-1] == "key":
        return len(words) == 1 or words[-2] in _KEY_QUALIFIERS
    return False


def mask_text(text: str, known: Iterable[str] = ()) -> str:
    """``text`` with every known secret value and everything shaped like a key replaced by ``***``."""
    for value in known:
        if value and len(value) >= 4:
            text = text.replace(value, MASK)
    if not text or len(text) < 8:
        return text
    text = _PREFIXED.sub(MASK, text)
    text = _BEARER.sub(lambda m: m.group(1) + MASK, text)
    text = _URL_PARAM.sub(lambda m: m.group(1) + MASK, text)
    text = _URL_USERINFO.sub(lambda m: m.group(1) + MASK + m.group(3), text)
    return _OPAQUE.sub(_opaque, text)


def _opaque(m: re.Match[str]) -> str:
    run = m.group()
    return MASK if any(c.isdigit() for c in run) and any(c.isalpha() for c in run) else run


def looks_like_secret(value: str) -> bool:
    """Whether a string is, or holds, something shaped like a key."""
    return mask_text(value) != value


def mask_config(obj: Any, known: Iterable[str] = ()) -> Any:
    """A copy of a config (nested dicts/lists) with credential fields and key-shaped text masked."""
    known = tuple(known)
    if isinstance(obj, dict):
        out = {}
        for k, v in obj.items():
            name = str(k)
            if isinstance(v, str) and v and secret_field(name):
                out[k] = MASK
            elif isinstance(v, str) and v and name.lower().endswith("_env") and not ENV_NAME.fullmatch(v):
                out[k] = MASK  # a key pasted where the name of its variable belongs
            else:
                out[k] = mask_config(v, known)
        return out
    if isinstance(obj, (list, tuple)):
        return [mask_config(v, known) for v in obj]
    if isinstance(obj, str):
        return mask_text(obj, known)
    return obj


class _MaskingRecordFactory:
    """Wraps the log record factory so every record's message is masked before any handler sees it."""

    def __init__(self, inner: Any):
        self.inner = inner

    def __call__(self, *args: Any, **kwargs: Any) -> logging.LogRecord:
        record = self.inner(*args, **kwargs)
        try:
            message = record.getMessage()
        except Exception:  # a malformed log call: leave it for logging to report as usual
            return record
        masked = mask_text(message)
        if masked != message:
            record.msg, record.args = masked, ()
        return record


def install_log_masking() -> None:
    """Mask key-shaped text in every log record of this process (idempotent; HTTP client debug logs included)."""
    factory = logging.getLogRecordFactory()
    if not isinstance(factory, _MaskingRecordFactory):
        logging.setLogRecordFactory(_MaskingRecordFactory(factory))
