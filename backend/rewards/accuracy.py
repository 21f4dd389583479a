"""Accuracy reward: does the completion's final answer equal the reference answer?

The rule-based reward of R1-Zero: verifiable, so it cannot be gamed the way a learned reward
model can. The rejection-sampling stage keeps or drops data by it, and evaluation, the group
inspector and the length-shaped rewards all use the same notion of "correct"
(:func:`is_correct`). Answer equality (:func:`answers_match`) is decided cheapest first:

1. the same string (after stripping) is equal;
2. the plain reading (:mod:`backend.rewards.numbers`): when both answers read as numbers
   (``1,234``, ``$18.00``, ``18 dollars``, ``5 km/h``, ``3/4``, ``0.333...``, ``10%``) their
   values decide, exactly, or by the documented rule for a rounded decimal against a fraction
   with no finite decimal expansion; math-verify is not asked, so its float rounding cannot
   blur two different numbers;
3. two plain-text answers that are not numbers (``Monday``, ``yes``) are equal when they
   agree ignoring case, spacing and a final full stop;
4. otherwise math-verify (:mod:`backend.rewards.verify`: symbolic equivalence, ``\\frac{1}{2}``
   vs ``0.5``, ``2^{10}`` vs ``1024``, ``x=5`` vs ``5``), with exact rationals from it judged by
   the same rule as in step 2, bounded in time in any thread.

A reference is missing (the row is skipped, reward ``None``, not scored) when it is ``None``,
a float NaN (pandas reads an empty cell so), pandas' ``NA``, blank, or the text ``nan``/``<NA>``.
GSM8K's full solutions are accepted as references: the answer is the text after ``####``.

Correctness is computed once per (completion text, reference): :func:`is_correct` keeps the
last :data:`CACHE_SIZE` results, so ``accuracy``, ``length`` and ``cosine_length`` scoring the
same batch pay for each completion once.
"""

from __future__ import annotations

import functools
import math
import re
from fractions import Fraction
from typing import Any

from backend.rewards.extract import completion_text, extract_answer
from backend.rewards.numbers import looks_like_latex, numbers_match, read_numbers
from backend.rewards.verify import symbolic_match

CACHE_SIZE = 8192  # completions; a GRPO step scores up to a few hundred
_MISSING_TEXT = {"", "nan", "<na>"}


def is_missing_reference(reference: Any) -> bool:
    """``None``, NaN, pandas ``NA``/``NaT``, blank or the text ``nan``: no reference to grade."""
    if reference is None:
        return True
    if isinstance(reference, float) and math.isnan(reference):
        return True
    if type(reference).__name__ in ("NAType", "NaTType"):  # pandas' missing values, without pandas
        return True
    if isinstance(reference, str):
        return reference.strip().lower() in _MISSING_TEXT
    return False


def normalize_reference(reference: Any) -> str | None:
    """The reference answer as a string, ``None`` if missing (see the module docstring).

    Accepts numbers (a numeric dataset column; ``72.0`` from a pandas column with gaps reads
    as 72) and full GSM8K solutions: the text after the last ``####`` is the answer.
    """
    if is_missing_reference(reference):
        return None
    if isinstance(reference, float) and reference.is_integer():
        reference = int(reference)
    text = str(reference)
    if "####" in text:
        text = text.rsplit("####", 1)[1]
    text = text.strip()
    return None if text.lower() in _MISSING_TEXT else text


def parse_number(text: str) -> Fraction | None:
    """``text`` as an exact number when it reads as exactly one, else ``None``.

    Kept for callers that want one value: see :func:`backend.rewards.numbers.read_numbers`
    for what reads as a number (a percentage reads two ways and gives ``None`` here).
    """
    numbers = read_numbers(text)
    return numbers[0].value if len(numbers) == 1 else None


def _plain_words(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip().rstrip(".").casefold()


def answers_match(prediction: str | None, reference: Any) -> bool:
    """Whether an extracted ``prediction`` equals ``reference`` (see the module docstring)."""
    reference = normalize_reference(reference)
    if prediction is None or reference is None:
        return False
    prediction = str(prediction).strip()
    if not prediction:
        return False
    if prediction == reference:
        return True
    pred_numbers, ref_numbers = read_numbers(prediction), read_numbers(reference)
    if pred_numbers and ref_numbers:
        return numbers_match(pred_numbers, ref_numbers)
    if not (pred_numbers or ref_numbers or looks_like_latex(prediction) or looks_like_latex(reference)):
        if _plain_words(prediction) == _plain_words(reference):
            return True
    return symbolic_match(prediction, reference, pred_numbers, ref_numbers)


@functools.lru_cache(maxsize=CACHE_SIZE)
def _is_correct_cached(text: str, reference: str) -> bool:
    return answers_match(extract_answer(text), reference)


def is_correct(completion: Any, reference: Any) -> bool | None:
    """Whether a completion's final answer equals ``reference``; ``None`` without a reference.

    ``completion``: its text, or a TRL conversational completion. Cached on (text, reference):
    see the module docstring.
    """
    reference = normalize_reference(reference)
    if reference is None:
        return None
    return _is_correct_cached(completion_text(completion), reference)


def correctness_cache_info() -> Any:
    """Hits, misses and size of the correctness cache (``functools`` ``CacheInfo``)."""
    return _is_correct_cached.cache_info()


def clear_correctness_cache() -> None:
    _is_correct_cached.cache_clear()


def accuracy(prompts: list, completions: list, answer: list | None = None, **kwargs: Any) -> list[float | None]:
    """1.0 when the extracted answer equals the reference ``answer`` column, else 0.0.

    No extractable answer (no ``<answer>`` tag and no ``\\boxed{}``), an empty or malformed
    completion all score 0.0. ``None`` only where the reference itself is missing, which TRL
    ignores when it combines rewards.
    """
    if answer is None:
        return [None] * len(completions)
    rewards: list[float | None] = []
    for completion, reference in zip(completions, answer, strict=True):
        correct = is_correct(completion, reference)
        rewards.append(None if correct is None else float(correct))
    return rewards
