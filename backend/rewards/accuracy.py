"""Accuracy reward: does the completion's final answer equal the reference answer?

The rule-based reward of R1-Zero: verifiable, so it cannot be gamed the way a learned reward
model can. Answer equality is decided in three steps, cheapest first:

1. exact string match after stripping;
2. numeric equality when both sides read as numbers (GSM8K style: ``1,234``, ``$5``, ``5.0``,
   ``5.``, ``3/4``), compared exactly as fractions. Two numbers that differ are wrong without
   asking math-verify: it is the common case for the tiny model (64 numeric answers a step) and
   math-verify's float rounding would otherwise call e.g. ``0.3333333`` equal to ``1/3``;
3. ``math_verify`` (symbolic equivalence: ``\\frac{1}{2}`` vs ``0.5``, ``2^{10}`` vs ``1024``).

math-verify caveat (found by trying math-verify 0.9.0): without LaTeX delimiters its parser
falls back to grabbing a number, so ``parse("2^{10}")`` gives ``2``, ``parse("x=5")`` gives
``5`` and ``parse("\\sqrt{2}")`` gives nothing. Both the extracted prediction and the
reference are therefore wrapped in ``$...$`` when they carry no delimiter of their own
(``$``, ``\\(``, ``\\[``, ``\\boxed``); if the wrapped text does not parse, the bare text is tried.
"""

from __future__ import annotations

import logging
import re
import threading
from fractions import Fraction
from typing import Any

from backend.rewards.extract import completion_text, extract_answer

log = logging.getLogger(__name__)

_THOUSANDS_COMMA = re.compile(r"(?<=\d),(?=\d{3}(?!\d))")
_LATEX_DELIMITERS = ("$", "\\(", "\\[", "\\boxed")


def normalize_reference(reference: Any) -> str | None:
    """The reference answer as a string, ``None`` if missing.

    Accepts numbers (a numeric dataset column) and full GSM8K solutions: the text after the
    last ``####`` is the answer.
    """
    if reference is None:
        return None
    text = str(reference)
    if "####" in text:
        text = text.rsplit("####", 1)[1]
    text = text.strip()
    return text or None


def parse_number(text: str) -> Fraction | None:
    """``text`` as an exact number, or ``None``.

    Drops a leading ``$`` (or ``\\$``), thousands commas (``1,234`` but not the pair ``1,2``),
    a trailing ``.`` (end of sentence) and spaces around ``/``; then integers, decimals and
    fractions ``3/4`` all parse through :class:`fractions.Fraction`.
    """
    s = text.strip().replace("\\$", "").replace("$", "")
    s = _THOUSANDS_COMMA.sub("", s)
    s = re.sub(r"\s*/\s*", "/", s).strip()
    if s.endswith("."):
        s = s[:-1]
    if not s or "_" in s:  # Fraction accepts 1_000; an answer with "_" is not a plain number
        return None
    try:
        return Fraction(s)
    except (ValueError, ZeroDivisionError):
        return None


def _math_verify_parse(text: str, timeout: int | None) -> list:
    from math_verify import parse

    wrapped = text if any(d in text for d in _LATEX_DELIMITERS) else f"${text}$"
    parsed = parse(wrapped, parsing_timeout=timeout)
    if not parsed and wrapped != text:
        parsed = parse(text, parsing_timeout=timeout)
    return parsed


def _math_verify_equal(prediction: str, reference: str) -> bool:
    from math_verify import verify

    # math-verify enforces timeouts with signal.alarm(), which only works in the main thread;
    # elsewhere (a thread pool, a UI callback) run without a timeout, as TRL's accuracy_reward does.
    main_thread = threading.current_thread() is threading.main_thread()
    parse_timeout, verify_timeout = (5, 5) if main_thread else (None, None)
    if not main_thread:  # math-verify warns on every call that the timeout is off; we know
        for name in ("math_verify.parser", "math_verify.grader"):
            logging.getLogger(name).setLevel(logging.ERROR)
    try:
        gold = _math_verify_parse(reference, parse_timeout)
        pred = _math_verify_parse(prediction, parse_timeout)
        if not gold or not pred:
            return False
        return bool(verify(gold, pred, timeout_seconds=verify_timeout))
    except Exception:  # one odd string must not stop a training step; it scores as wrong
        log.debug("math_verify failed on %r vs %r", prediction, reference, exc_info=True)
        return False


def answers_match(prediction: str | None, reference: Any) -> bool:
    """Whether an extracted ``prediction`` equals ``reference`` (see the module docstring)."""
    reference = normalize_reference(reference)
    if prediction is None or reference is None:
        return False
    prediction = prediction.strip()
    if not prediction:
        return False
    if prediction == reference:
        return True
    pred_number, ref_number = parse_number(prediction), parse_number(reference)
    if pred_number is not None and ref_number is not None:
        return pred_number == ref_number
    return _math_verify_equal(prediction, reference)


def is_correct(completion: Any, reference: Any) -> bool | None:
    """Whether a completion's final answer is right; ``None`` when there is no reference."""
    if normalize_reference(reference) is None:
        return None
    return answers_match(extract_answer(completion_text(completion)), reference)


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
