"""Length-shaped rewards: how long a completion is, weighed by whether it is right.

R1-Zero's thinking grows by itself; these rewards are for steering that growth, not needed by
the core recipe. Length is counted in tokens when TRL passes ``completion_ids`` (it always
does in training) and in characters otherwise (direct calls, tests, the UI).

- ``length``: Kimi k1.5's length penalty (section 2.3.3 of the Kimi k1.5 report), as in open-r1's
  ``len_reward``: ``lambda = 0.5 - (len - min_len) / (max_len - min_len)`` over the batch;
  correct completions get ``lambda`` (short ones rewarded, long ones penalised), wrong ones
  ``min(0, lambda)`` (never rewarded for being short). All lengths equal -> 0.0.
- ``cosine_length``: the cosine-scaled reward of "Demystifying Long Chain-of-Thought Reasoning"
  (appendix C.1), as in open-r1's ``get_cosine_scaled_reward`` and TRL's, with their defaults:
  ``r = v_min + 0.5 (v_max - v_min)(1 + cos(pi * len / max_len))``. Correct: 1.0 when
  empty, falling to 0.5 at ``max_len``. Wrong: the bounds are swapped, so -1.0 when short,
  rising to -0.5 at ``max_len``: a short wrong answer is punished most, which keeps the model
  exploring longer reasoning when it is wrong. Lengths past ``max_len`` count as ``max_len``
  (the cosine is periodic and would otherwise climb back up; TRL clamps the same way).

Correctness is :func:`backend.rewards.accuracy.is_correct` on the ``answer`` column, the same
cached judgement the ``accuracy`` reward made for the same completion in the same step (it is
computed once); rows with no reference score ``None`` (TRL ignores them), as in ``accuracy``.

Why ``cosine_length`` does not call TRL's ``trl.rewards.get_cosine_scaled_reward``: TRL's reward
decides correctness itself, by running its own ``accuracy_reward`` (math-verify on the whole
completion against a ``solution`` column, reading ``completion[0]["content"]``, so
conversational completions only). That is a different notion of correct from ours (the
``<answer>`` tag, units, the decimal rule), it would be computed a second time per completion,
and it cannot be handed ours. So the four-line formula is written here, with TRL's defaults
and its clamp at ``max_len``, and ``tests/rewards/test_length.py`` checks it against TRL's
reward value for value, so the two cannot drift apart.
"""

from __future__ import annotations

import functools
import math
from typing import Any, Callable

from backend.rewards.accuracy import is_correct
from backend.rewards.extract import completion_text

COSINE_MAX_LEN = 1000
COSINE_MIN_VALUE_WRONG = -1.0
COSINE_MAX_VALUE_WRONG = -0.5
COSINE_MIN_VALUE_CORRECT = 0.5
COSINE_MAX_VALUE_CORRECT = 1.0


def completion_lengths(completions: list, completion_ids: list | None = None) -> list[int]:
    """Token counts from ``completion_ids`` when given, else character counts of the text."""
    if completion_ids is not None:
        if len(completion_ids) != len(completions):
            raise ValueError(f"completion_ids has {len(completion_ids)} rows for {len(completions)} completions")
        return [len(ids) for ids in completion_ids]
    return [len(completion_text(c)) for c in completions]


def _correctness(completions: list, answer: list | None) -> list[bool | None]:
    if answer is None:
        return [None] * len(completions)
    return [is_correct(c, a) for c, a in zip(completions, answer, strict=True)]


def length(
    prompts: list,
    completions: list,
    answer: list | None = None,
    completion_ids: list | None = None,
    **kwargs: Any,
) -> list[float | None]:
    """Kimi k1.5 length penalty, normalised over the batch (see module docstring), in [-0.5, 0.5].

    The batch TRL scores holds whole GRPO groups, so min/max span the group(s) being compared.
    """
    lengths = completion_lengths(completions, completion_ids)
    correct = _correctness(completions, answer)
    if not lengths:
        return []
    shortest, longest = min(lengths), max(lengths)
    rewards: list[float | None] = []
    for n, ok in zip(lengths, correct):
        if ok is None:
            rewards.append(None)
        elif longest == shortest:
            rewards.append(0.0)
        else:
            lam = 0.5 - (n - shortest) / (longest - shortest)
            rewards.append(lam if ok else min(0.0, lam))
    return rewards


def check_cosine_options(
    max_len: int = COSINE_MAX_LEN,
    min_value_wrong: float = COSINE_MIN_VALUE_WRONG,
    max_value_wrong: float = COSINE_MAX_VALUE_WRONG,
    min_value_correct: float = COSINE_MIN_VALUE_CORRECT,
    max_value_correct: float = COSINE_MAX_VALUE_CORRECT,
) -> None:
    """Raise ``ValueError`` saying how to fix a bad ``cosine_length`` setting.

    ``max_len`` is a whole number >= 1 (tokens; the stage's max completion length is a good
    value); the four bounds are finite numbers ordered ``min_value_wrong <= max_value_wrong <=
    min_value_correct <= max_value_correct``, so that no wrong answer outscores a right one.
    """
    if isinstance(max_len, bool) or not isinstance(max_len, int) or max_len < 1:
        raise ValueError(
            f"cosine_length max_len must be a whole number of tokens >= 1 (e.g. the max completion "
            f"length), got {max_len!r}"
        )
    bounds = {
        "min_value_wrong": min_value_wrong,
        "max_value_wrong": max_value_wrong,
        "min_value_correct": min_value_correct,
        "max_value_correct": max_value_correct,
    }
    for name, value in bounds.items():
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise ValueError(f"cosine_length {name} must be a finite number, got {value!r}")
    if not min_value_wrong <= max_value_wrong <= min_value_correct <= max_value_correct:
        order = ", ".join(f"{name}={value}" for name, value in bounds.items())
        raise ValueError(
            "cosine_length bounds must be ordered min_value_wrong <= max_value_wrong <= min_value_correct "
            f"<= max_value_correct (a wrong answer never outscores a right one), got {order}; the defaults "
            f"are {COSINE_MIN_VALUE_WRONG}, {COSINE_MAX_VALUE_WRONG}, {COSINE_MIN_VALUE_CORRECT}, "
            f"{COSINE_MAX_VALUE_CORRECT}"
        )


def cosine_length(
    prompts: list,
    completions: list,
    answer: list | None = None,
    completion_ids: list | None = None,
    *,
    max_len: int = COSINE_MAX_LEN,
    min_value_wrong: float = COSINE_MIN_VALUE_WRONG,
    max_value_wrong: float = COSINE_MAX_VALUE_WRONG,
    min_value_correct: float = COSINE_MIN_VALUE_CORRECT,
    max_value_correct: float = COSINE_MAX_VALUE_CORRECT,
    **kwargs: Any,
) -> list[float | None]:
    """Cosine-scaled correctness reward (see module docstring); ``max_len`` in tokens (or chars)."""
    if max_len <= 0:  # settings are checked when the run is configured; this guards direct calls
        raise ValueError(f"cosine_length needs max_len > 0, got {max_len}")
    lengths = completion_lengths(completions, completion_ids)
    rewards: list[float | None] = []
    for n, ok in zip(lengths, _correctness(completions, answer)):
        if ok is None:
            rewards.append(None)
            continue
        cosine = math.cos(min(n / max_len, 1.0) * math.pi)  # clamped: past max_len stays at the long end
        if ok:
            low, high = min_value_correct, max_value_correct
        else:
            low, high = max_value_wrong, min_value_wrong  # swapped: short and wrong is worst
        rewards.append(float(low + 0.5 * (high - low) * (1.0 + cosine)))
    return rewards


def make_cosine_length(
    max_len: int = COSINE_MAX_LEN,
    min_value_wrong: float = COSINE_MIN_VALUE_WRONG,
    max_value_wrong: float = COSINE_MAX_VALUE_WRONG,
    min_value_correct: float = COSINE_MIN_VALUE_CORRECT,
    max_value_correct: float = COSINE_MAX_VALUE_CORRECT,
) -> Callable[..., list[float | None]]:
    """``cosine_length`` with other bounds, e.g. ``max_len`` = the stage's max completion length.

    A ``functools.partial`` rather than a closure so it pickles (TRL may ship reward functions
    to a spawned process); its ``__name__`` stays ``"cosine_length"`` because TRL logs each
    reward under its function's name.
    """
    check_cosine_options(max_len, min_value_wrong, max_value_wrong, min_value_correct, max_value_correct)
    reward = functools.partial(
        cosine_length,
        max_len=max_len,
        min_value_wrong=min_value_wrong,
        max_value_wrong=max_value_wrong,
        min_value_correct=min_value_correct,
        max_value_correct=max_value_correct,
    )
    reward.__name__ = "cosine_length"  # type: ignore[attr-defined]
    return reward
