"""Rule-based rewards for GRPO, each a plain TRL reward function.

Signature: ``(prompts, completions, **kwargs) -> list[float | None]``. TRL passes every extra
dataset column as a keyword list aligned with ``completions`` (``answer=[...]``,
``language=[...]``) plus ``completion_ids`` and ``trainer_state``; each function takes what it
needs and ignores the rest. ``None`` means "no reward for this row" (TRL skips it).

Look a reward up by name in :data:`REWARD_FUNCTIONS`; the name is also the function's
``__name__``, which is what TRL logs (``rewards/<name>/mean``). Variants with other settings:
:func:`make_cosine_length`, :func:`make_repetition_penalty`.
"""

from __future__ import annotations

from typing import Callable

from backend.rewards.accuracy import accuracy
from backend.rewards.extract import completion_text, extract_answer, split_think_answer
from backend.rewards.format import format, tag_count  # noqa: A004
from backend.rewards.language import language_consistency
from backend.rewards.length import COSINE_MAX_LEN, cosine_length, length, make_cosine_length
from backend.rewards.repetition import make_repetition_penalty, repetition

REWARD_FUNCTIONS: dict[str, Callable[..., list[float | None]]] = {
    "accuracy": accuracy,
    "format": format,
    "tag_count": tag_count,
    "language_consistency": language_consistency,
    "length": length,
    "cosine_length": cosine_length,
    "repetition": repetition,
}

_DESCRIPTIONS = {
    "accuracy": "1 if the final answer (last <answer> or \\boxed{}) equals the reference, else 0.",
    "format": "1 if the completion is exactly <think>…</think><answer>…</answer>, else 0.",
    "tag_count": "0.25 for each of <think>, </think>, <answer>, </answer> appearing exactly once.",
    "language_consistency": "Share of the chain of thought written in the target language (en or zh), 0 to 1.",
    "length": "Kimi k1.5 length penalty: shorter correct answers score up to +0.5, long ones down to -0.5.",
    "cosine_length": (
        f"Correctness scaled by length on a cosine: right 1.0 (short) to 0.5 (at {COSINE_MAX_LEN} tokens), "
        "wrong -1.0 (short) to -0.5 (long)."
    ),
    "repetition": "Penalty for repeated 3-grams: 0 with no repeats down to -1 for a text that only repeats.",
}


def describe_reward(name: str) -> str:
    """One-line description of a reward, for the UI."""
    if name not in _DESCRIPTIONS:
        raise KeyError(f"unknown reward {name!r}; known rewards: {', '.join(REWARD_FUNCTIONS)}")
    return _DESCRIPTIONS[name]


__all__ = [
    "COSINE_MAX_LEN",
    "REWARD_FUNCTIONS",
    "accuracy",
    "completion_text",
    "cosine_length",
    "describe_reward",
    "extract_answer",
    "format",
    "language_consistency",
    "length",
    "make_cosine_length",
    "make_repetition_penalty",
    "repetition",
    "split_think_answer",
    "tag_count",
]
