"""The embedded reasoning task: multi-digit addition ``a+b=`` with a verifiable answer.

It is small enough for a 0.5M-parameter model to learn on a laptop CPU in minutes, and has a
natural chain of thought (column-by-column sums with carries) that the base model only
sometimes writes, which is exactly the room R1-Zero needs (docs/results.md measures it).

The held-out split is a fixed set of problems drawn from its own seed; training problems and
the pre-training corpus never contain a held-out pair.
"""
from __future__ import annotations

import random
from dataclasses import dataclass
from functools import cached_property

from backend.tasks.problem import Problem

THINK_OPEN, THINK_CLOSE, ANSWER_OPEN, ANSWER_CLOSE = "<think>", "</think>", "<answer>", "</answer>"


def worked_solution(a: int, b: int) -> str:
    """Column sums from the least significant digit: ``3+8+0=11,7+5+1=13``."""
    steps, carry = [], 0
    da, db = str(a)[::-1], str(b)[::-1]
    for i in range(max(len(da), len(db))):
        x = int(da[i]) if i < len(da) else 0
        y = int(db[i]) if i < len(db) else 0
        s = x + y + carry
        steps.append(f"{x}+{y}+{carry}={s}")
        carry = s // 10
    return ",".join(steps)


def full_completion(a: int, b: int) -> str:
    return f"{THINK_OPEN}{worked_solution(a, b)}{THINK_CLOSE}{ANSWER_OPEN}{a + b}{ANSWER_CLOSE}"


@dataclass(frozen=True)
class AdditionTask:
    min_digits: int = 1
    max_digits: int = 3
    heldout_size: int = 500
    heldout_seed: int = 12345

    def __post_init__(self):
        if not 1 <= self.min_digits <= self.max_digits <= 12:
            raise ValueError(
                f"digits must satisfy 1 <= min_digits <= max_digits <= 12, got "
                f"{self.min_digits}..{self.max_digits}"
            )

    def _draw(self, rng: random.Random) -> tuple[int, int]:
        def operand() -> int:
            n = rng.randint(self.min_digits, self.max_digits)
            return rng.randint(0 if n == 1 else 10 ** (n - 1), 10**n - 1)
        return operand(), operand()

    @staticmethod
    def problem(a: int, b: int) -> Problem:
        return Problem(prompt=f"{a}+{b}=", answer=str(a + b), meta={"a": a, "b": b})

    @cached_property
    def _heldout_pairs(self) -> list[tuple[int, int]]:
        rng, seen, pairs = random.Random(self.heldout_seed), set(), []
        tries = 0
        while len(pairs) < self.heldout_size and tries < self.heldout_size * 100:
            tries += 1
            pair = self._draw(rng)
            if pair not in seen:
                seen.add(pair)
                pairs.append(pair)
        return pairs

    def heldout(self, n: int | None = None) -> list[Problem]:
        pairs = self._heldout_pairs[: n or self.heldout_size]
        return [self.problem(a, b) for a, b in pairs]

    def train_pairs(self, n: int, seed: int, distinct: bool = False) -> list[tuple[int, int]]:
        """``n`` training pairs, none of them held out (repeats allowed unless ``distinct``)."""
        held, rng, out = set(self._heldout_pairs), random.Random(seed), []
        seen: set[tuple[int, int]] = set()
        tries = 0
        while len(out) < n:
            tries += 1
            if tries > 100 * n + 1000:
                raise ValueError(f"cannot draw {n} distinct training problems with "
                                 f"{self.min_digits}-{self.max_digits} digits; use fewer")
            pair = self._draw(rng)
            if pair in held or (distinct and pair in seen):
                continue
            seen.add(pair)
            out.append(pair)
        return out

    def train_problems(self, n: int, seed: int, distinct: bool = False) -> list[Problem]:
        return [self.problem(a, b) for a, b in self.train_pairs(n, seed, distinct)]

    def pretraining_corpus(self, n: int, seed: int, think_share: float = 0.3,
                           answer_share: float = 0.2) -> list[str]:
        """Texts for the *base* model: some with worked reasoning in tags, some with only the
        answer tag, the rest a bare number, so the base model knows the format but uses it
        only sometimes (the share GRPO later raises)."""
        rng = random.Random(seed + 1)
        texts = []
        for a, b in self.train_pairs(n, seed):
            u = rng.random()
            if u < think_share:
                completion = full_completion(a, b)
            elif u < think_share + answer_share:
                completion = f"{ANSWER_OPEN}{a + b}{ANSWER_CLOSE}"
            else:
                completion = str(a + b)
            texts.append(f"{a}+{b}={completion}")
        return texts
