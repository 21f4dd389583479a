"""Repetition penalty: punish completions that loop on the same n-grams.

From "Demystifying Long Chain-of-Thought Reasoning" (appendix C.2), as in open-r1's
``get_repetition_penalty_reward``: ``(1 - unique_ngrams / total_ngrams) * max_penalty``,
so 0.0 for no repeats down to ``max_penalty`` for a text that is one n-gram over and over.
Degenerate repetition is a common way for a policy to hack length- or format-shaped rewards.

n-grams are taken over lower-cased whitespace words, as open-r1 does. When the text has fewer
words than ``ngram_size`` they are taken over its characters instead (whitespace dropped):
the tiny model writes ``3+8+0=11,7+5+1=13`` with no spaces at all, and would otherwise never
be scored. The four format tags are removed first: they are structure, and in character mode
``<think>``/``</think>`` would otherwise count as a repeat in every well-formed completion.
Text shorter than one n-gram (and the empty text) scores 0.0.
"""

from __future__ import annotations

import functools
from typing import Any, Callable

from backend.rewards.extract import FORMAT_TAGS, completion_text


def ngram_units(text: str, ngram_size: int) -> list[str]:
    """The words of ``text`` (tags removed, lower-cased), or its characters if too few words."""
    for tag in FORMAT_TAGS:
        text = text.replace(tag, " ")
    words = text.lower().split()
    if len(words) >= ngram_size:
        return words
    return list("".join(words))


def repetition_score(text: str, ngram_size: int = 3, max_penalty: float = -1.0) -> float:
    """``(1 - unique/total) * max_penalty`` over the n-grams of ``text``; 0.0 if it has none."""
    units = ngram_units(text, ngram_size)
    if len(units) < ngram_size:
        return 0.0
    ngrams = list(zip(*(units[i:] for i in range(ngram_size))))
    scaling = 1 - len(set(ngrams)) / len(ngrams)
    return scaling * max_penalty if scaling else 0.0


def repetition(
    prompts: list, completions: list, *, ngram_size: int = 3, max_penalty: float = -1.0, **kwargs: Any
) -> list[float]:
    """Repetition penalty per completion, in [max_penalty, 0] (see module docstring)."""
    return [repetition_score(completion_text(c), ngram_size, max_penalty) for c in completions]


def make_repetition_penalty(ngram_size: int = 3, max_penalty: float = -1.0) -> Callable[..., list[float]]:
    """``repetition`` with another n-gram size or penalty; picklable, ``__name__`` ``"repetition"``."""
    if ngram_size < 1:
        raise ValueError(f"ngram_size must be >= 1, got {ngram_size}")
    if max_penalty > 0:
        raise ValueError(f"max_penalty is a penalty and must be <= 0, got {max_penalty}")
    reward = functools.partial(repetition, ngram_size=ngram_size, max_penalty=max_penalty)
    reward.__name__ = "repetition"  # type: ignore[attr-defined]
    return reward
