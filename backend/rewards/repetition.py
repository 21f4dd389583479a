"""Repetition penalty: punish completions that loop on the same text.

From "Demystifying Long Chain-of-Thought Reasoning" (appendix C.2), as in open-r1's
``get_repetition_penalty_reward`` and TRL's ``get_repetition_penalty_reward``:
``(1 - unique_ngrams / total_ngrams) * max_penalty``, so 0.0 for no repeats down to
``max_penalty`` for a text that is one n-gram over and over. Degenerate repetition is a common
way for a policy to hack length- or format-shaped rewards.

The text is looked at twice and the stronger penalty counts:

- word n-grams (``ngram_size`` lower-cased whitespace words, as open-r1): loops in prose,
  ``the cat the cat the cat``;
- character n-grams of ``char_ngram_size`` characters (16), whitespace dropped: loops written
  without spaces, which the word view sees as one word (``1+1+1+1+…``, ``abcabcabc…``).

Why 16 characters and not 3: short character n-grams repeat in any correct arithmetic
(``+1=`` comes back in ``5+1=13,9+1=14``), so a character-trigram penalty punished most of the
tiny task's correct worked sums and, enabled, taught the model to stop reasoning. Measured on
300 sampled correct worked sums per operand size, the share with any repeated n-gram was, for
8 / 12 / 16 characters: 3 digits 1 / 1 / 0, 6 digits 21 / 2 / 0, 12 digits 110 / 9 / 1
(-0.04); GSM8K's human-written test solutions (first 500) average -0.076 / -0.031 / -0.014
(their word trigrams: -0.043), while a long loop scores about -0.97 at every size. So a text
must come back 16 characters at a time to count as repeating: correct worked sums of up to 6
digits score 0, and a long loop is penalised almost fully.

The four format tags are removed first: they are structure, not content. Text shorter than one
n-gram (and the empty text) scores 0.0.
"""

from __future__ import annotations

import functools
from typing import Any, Callable

from backend.rewards.extract import FORMAT_TAGS, completion_text

NGRAM_SIZE = 3
CHAR_NGRAM_SIZE = 16
MAX_PENALTY = -1.0


def _strip_tags(text: str) -> str:
    for tag in FORMAT_TAGS:
        text = text.replace(tag, " ")
    return text


def repeated_share(units: list[str] | str, n: int) -> float:
    """``1 - unique / total`` over the n-grams of ``units``; 0.0 when there is no n-gram."""
    if len(units) < n:
        return 0.0
    ngrams = [tuple(units[i : i + n]) for i in range(len(units) - n + 1)]
    return 1 - len(set(ngrams)) / len(ngrams)


def repetition_score(
    text: str, ngram_size: int = NGRAM_SIZE, max_penalty: float = MAX_PENALTY, char_ngram_size: int = CHAR_NGRAM_SIZE
) -> float:
    """The penalty for ``text`` in ``[max_penalty, 0]`` (see the module docstring)."""
    text = _strip_tags(text).lower()
    words = text.split()
    share = max(repeated_share(words, ngram_size), repeated_share("".join(words), char_ngram_size))
    return share * max_penalty if share else 0.0


def repetition(
    prompts: list,
    completions: list,
    *,
    ngram_size: int = NGRAM_SIZE,
    max_penalty: float = MAX_PENALTY,
    char_ngram_size: int = CHAR_NGRAM_SIZE,
    **kwargs: Any,
) -> list[float]:
    """Repetition penalty per completion, in [max_penalty, 0] (see module docstring)."""
    return [repetition_score(completion_text(c), ngram_size, max_penalty, char_ngram_size) for c in completions]


def check_repetition_options(ngram_size: int, max_penalty: float, char_ngram_size: int = CHAR_NGRAM_SIZE) -> None:
    """Raise ``ValueError`` saying how to fix a bad setting."""
    if isinstance(ngram_size, bool) or not isinstance(ngram_size, int) or ngram_size < 1:
        raise ValueError(f"repetition ngram_size must be a whole number >= 1 (words per n-gram), got {ngram_size!r}")
    if isinstance(char_ngram_size, bool) or not isinstance(char_ngram_size, int) or char_ngram_size < 1:
        raise ValueError(f"repetition char_ngram_size must be a whole number >= 1, got {char_ngram_size!r}")
    if isinstance(max_penalty, bool) or not isinstance(max_penalty, (int, float)) or not max_penalty <= 0:
        raise ValueError(f"repetition max_penalty is a penalty and must be a number <= 0 (e.g. -1.0), got {max_penalty!r}")


def make_repetition_penalty(
    ngram_size: int = NGRAM_SIZE, max_penalty: float = MAX_PENALTY, char_ngram_size: int = CHAR_NGRAM_SIZE
) -> Callable[..., list[float]]:
    """``repetition`` with other settings; picklable, ``__name__`` ``"repetition"``."""
    check_repetition_options(ngram_size, max_penalty, char_ngram_size)
    reward = functools.partial(
        repetition, ngram_size=ngram_size, max_penalty=float(max_penalty), char_ngram_size=char_ngram_size
    )
    reward.__name__ = "repetition"  # type: ignore[attr-defined]
    return reward
