"""One problem with a verifiable answer: the unit every task and dataset loader produces."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


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
