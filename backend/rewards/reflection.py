"""Reflections in a completion: the R1-Zero "aha moment", counted by marker.

The R1 paper reports that R1-Zero learns, without being taught, to stop and re-check its work
("Wait, wait. Wait. That's an aha moment I can flag here."). Here a reflection is an occurrence
of one of a configurable list of markers, matched case-insensitively as whole words: ``wait``
matches ``Wait,`` and ``wait,`` but not ``await``; ``let me check`` matches with any whitespace
between its words. Overlapping markers count once (the longest wins: ``Let me check:`` is one reflection
even though ``check:`` is a marker too).

:data:`DEFAULT_MARKERS` serve both kinds of model: the tiny corpus writes ``check:`` and
``wait,`` (backend.tasks.addition), real models write "wait", "verify", "let me check". This is
a metric, not a reward: the GRPO stage logs :func:`reflection_stats` every step
(``reflection_rate``, ``reflection_markers``) so one can watch reflections appear.
"""
from __future__ import annotations

import functools
import re
from typing import Iterable, Sequence

from backend.rewards.extract import completion_text

DEFAULT_MARKERS = ("wait", "check:", "verify", "let me check")


def check_markers(markers: Sequence[str]) -> list[str]:
    """The markers, stripped; ``ValueError`` saying how to fix an empty list or marker."""
    if isinstance(markers, str):
        raise ValueError("reflection_markers is a list of markers, e.g. wait,verify,let me check")
    cleaned = [str(m).strip() for m in markers]
    if not cleaned or any(not m for m in cleaned):
        raise ValueError("reflection_markers needs at least one non-empty marker, e.g. "
                         "wait,verify,let me check")
    return cleaned


@functools.lru_cache(maxsize=32)
def _pattern(markers: tuple[str, ...]) -> re.Pattern:
    parts = []
    for marker in sorted(set(m.lower() for m in markers), key=len, reverse=True):
        body = r"\s+".join(re.escape(word) for word in marker.split())
        # Whole words: no letter right before a marker that starts with one, none right
        # after a marker that ends with one.
        before = r"(?<![^\W\d_])" if marker[0].isalpha() else ""
        after = r"(?![^\W\d_])" if marker[-1].isalpha() else ""
        parts.append(f"{before}{body}{after}")
    return re.compile("|".join(parts), re.IGNORECASE)


def count_reflections(completion, markers: Iterable[str] = DEFAULT_MARKERS) -> int:
    """Markers in one completion (text or chat messages)."""
    return len(_pattern(tuple(check_markers(list(markers)))).findall(completion_text(completion)))


def reflection_stats(completions: list, markers: Iterable[str] = DEFAULT_MARKERS) -> dict[str, float]:
    """``reflection_rate``: share of completions with at least one marker;
    ``reflection_markers``: markers per completion (mean). Zeros for no completions."""
    counts = [count_reflections(c, markers) for c in completions]
    if not counts:
        return {"reflection_rate": 0.0, "reflection_markers": 0.0}
    return {"reflection_rate": sum(c > 0 for c in counts) / len(counts),
            "reflection_markers": sum(counts) / len(counts)}
