"""Chat templates are applied here and nowhere else, so every in-process backend renders prompts identically."""

from __future__ import annotations

from typing import Any, Sequence


def render(tokenizer: Any, messages: Sequence[dict[str, str]]) -> str:
    """Render a chat with the model's own template, ready for the assistant's turn."""
    if getattr(tokenizer, "chat_template", None):
        return tokenizer.apply_chat_template(list(messages), tokenize=False, add_generation_prompt=True)
    # Base models without a template: a plain transcript, the same for every backend.
    parts = [f"{m['role'].capitalize()}: {m['content']}" for m in messages]
    return "\n\n".join(parts) + "\n\nAssistant:"
