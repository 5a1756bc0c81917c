"""Named prompt templates: how a problem becomes chat messages, the same for every backend."""

from __future__ import annotations

from dataclasses import dataclass

from mathforge.errors import ConfigError
from mathforge.records import Problem


@dataclass(frozen=True)
class PromptTemplate:
    key: str
    system: str | None
    user: str  # formatted with {question} (and {choices} for multiple choice)
    description: str


PROMPTS: dict[str, PromptTemplate] = {
    "cot": PromptTemplate(
        "cot",
        "You are a careful math tutor. Solve the problem step by step, showing each calculation. "
        "End with a final line of the form 'The answer is N.' where N is just the number.",
        "{question}",
        "chain of thought for word problems with a numeric answer (GSM8K, SVAMP)",
    ),
    "cot-boxed": PromptTemplate(
        "cot-boxed",
        "You are a careful mathematician. Solve the problem step by step. "
        "Put the final answer in \\boxed{}.",
        "{question}",
        "chain of thought for competition math with a LaTeX answer (MATH, MATH-500, NuminaMath)",
    ),
    "cot-choice": PromptTemplate(
        "cot-choice",
        "You are a careful math tutor. Solve the problem step by step, then choose one option. "
        "End with a final line of the form 'The answer is X.' where X is the option letter.",
        "{question}\n\nOptions: {choices}",
        "chain of thought for multiple choice (MathQA)",
    ),
    "pot": PromptTemplate(
        "pot",
        "You are a careful math tutor who solves problems by writing Python. Write one Python program that "
        "computes the answer and prints only the final answer. Put the program in a ```python code block.",
        "{question}",
        "program of thought: a Python program that prints the answer (run in the sandbox)",
    ),
}


def get_prompt(key: str) -> PromptTemplate:
    if key not in PROMPTS:
        raise ConfigError(f"unknown prompt '{key}'; valid prompts: {', '.join(sorted(PROMPTS))}")
    return PROMPTS[key]


def build_messages(template: PromptTemplate, problem: Problem, system: str | None = None) -> list[dict[str, str]]:
    """Chat messages for one problem; ``system`` overrides the template's system prompt."""
    choices = problem.meta.get("choices") or {}
    user = template.user.format(
        question=problem.question.strip(),
        choices=", ".join(f"{k}) {v}" for k, v in choices.items()) if isinstance(choices, dict) else choices,
    )
    sys = system if system is not None else template.system
    msgs = [{"role": "system", "content": sys}] if sys else []
    msgs.append({"role": "user", "content": user})
    return msgs
