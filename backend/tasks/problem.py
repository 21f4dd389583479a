"""One problem with a verifiable answer: the unit every task and dataset loader produces."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable


@dataclass
class Problem:
    """A prompt and the final answer a rule reward checks a completion against.

    ``answer`` is the bare final answer (``"18"``, ``"\\frac{1}{2}"``), never a worked
    solution; the full solution, when the source had one, is kept in ``meta["solution"]``.
    ``meta`` holds anything else worth keeping (extra dataset columns, task parameters); it
    must stay JSON-serialisable so problems can be written to jsonl and the store.
    """

    prompt: str
    answer: str
    meta: dict[str, Any] = field(default_factory=dict)


def prompt_key(prompt: str) -> str:
    """The prompt with runs of whitespace made one space and the ends stripped: two prompts
    with the same key are the same question (a re-wrapped or re-indented copy must not slip
    into training as a "different" problem)."""
    return " ".join(prompt.split())


def without_prompts(problems: Iterable[Problem], exclude: Iterable[str]) -> list[Problem]:
    """``problems`` minus those whose prompt (compared by :func:`prompt_key`) is in ``exclude``,
    order kept. Use it to keep held-out prompts out of training for any source of problems."""
    keys = {prompt_key(p) for p in exclude}
    return [p for p in problems if prompt_key(p.prompt) not in keys]
