"""Format rewards: is the reasoning inside ``<think>`` and the answer inside ``<answer>``?

``format`` is the strict all-or-nothing check of the R1 recipe; ``tag_count`` is open-r1's
partial-credit version, which gives a signal earlier in training when no completion is fully
well-formed yet. Whitespace between the tags is optional: the tiny model writes
``<think>3+8+0=11,7+5+1=13</think><answer>1431</answer>`` with no spaces or newlines.

Between ``</think>`` and ``<answer>`` R1 (not R1-Zero) writes a short readable summary of its
reasoning; the strict format allows it there (``readable_summary`` rewards its quality), and
nowhere else.

(The function here is named ``format`` so that TRL logs it as ``rewards/format``; it shadows the
builtin inside this module only.)
"""

from __future__ import annotations

import re
from typing import Any

from backend.rewards.extract import FORMAT_TAGS, completion_text

_STRICT_FORMAT = re.compile(r"<think>(.*?)</think>(.*?)<answer>(.*?)</answer>", re.DOTALL)


def is_strict_format(text: str) -> bool:
    """The whole (stripped) text is ``<think>…</think>``, an optional summary, then
    ``<answer>…</answer>``, nothing else, each tag exactly once, the answer not blank. An empty thought is allowed (the answer is what
    accuracy grades; the thought's quality is not a format question)."""
    text = text.strip()
    if any(text.count(tag) != 1 for tag in FORMAT_TAGS):
        return False
    match = _STRICT_FORMAT.fullmatch(text)
    return bool(match and match.group(3).strip())


def format(prompts: list, completions: list, **kwargs: Any) -> list[float]:  # noqa: A001
    """1.0 for a strictly well-formed completion (see :func:`is_strict_format`), else 0.0."""
    return [1.0 if is_strict_format(completion_text(c)) else 0.0 for c in completions]


def tag_count(prompts: list, completions: list, **kwargs: Any) -> list[float]:
    """0.25 for each of ``<think> </think> <answer> </answer>`` that appears exactly once (0..1).

    open-r1's ``tag_count_reward`` counts ``"<think>\\n"``, ``"\\n</think>\\n"``, ``"\\n<answer>\\n"``
    and ``"\\n</answer>"``; the newlines are dropped here because the tiny model writes none.
    """
    rewards = []
    for completion in completions:
        text = completion_text(completion)
        rewards.append(0.25 * sum(text.count(tag) == 1 for tag in FORMAT_TAGS))
    return rewards
