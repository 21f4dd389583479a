"""The embedded reasoning task: multi-digit addition ``a+b=`` with a verifiable answer.

It is small enough for a 0.5M-parameter model to learn on a laptop CPU in minutes, and has a
natural chain of thought (column-by-column sums with carries) that the base model only
sometimes writes, which is exactly the room R1-Zero needs (docs/results.md measures it).

The held-out split is a fixed set of problems drawn from its own seed; training problems and
the pre-training corpus never contain a held-out pair.
"""
from __future__ import annotations

import random
import re
import zlib
from dataclasses import dataclass
from functools import cached_property

from backend.rewards.extract import ANSWER_CLOSE, ANSWER_OPEN, THINK_CLOSE, THINK_OPEN
from backend.tasks.problem import Problem


# The second script (issue 8's language mixing): the same column sums spelled with Chinese
# numerals, one numeral per digit (``11`` -> ``一一``), and the character naming Chinese as the
# target language of a prompt's reasoning (``中12+34=``). A prompt without it targets ``en``,
# whose numerals are the ASCII digits (backend.rewards.language, ``digit_language``).
ZH_DIGITS = "〇一二三四五六七八九"
ZH_TARGET = "中"
SCRIPTS = ("en", "zh")
# Reflection markers of the tiny corpus (the "aha" traces); one token each (backend.models).
CHECK, WAIT = "check:", "wait,"


def spell(text: str, script: str) -> str:
    """``text`` with its ASCII digits written in ``script`` (``en``: unchanged; ``zh``: 〇-九)."""
    return text.translate(str.maketrans("0123456789", ZH_DIGITS)) if script == "zh" else text


def _columns(a: int, b: int) -> list[tuple[int, int, int, int]]:
    """Each column from the least significant digit: (digit of a, digit of b, carry in, sum)."""
    columns, carry = [], 0
    da, db = str(a)[::-1], str(b)[::-1]
    for i in range(max(len(da), len(db))):
        x = int(da[i]) if i < len(da) else 0
        y = int(db[i]) if i < len(db) else 0
        s = x + y + carry
        columns.append((x, y, carry, s))
        carry = s // 10
    return columns


def worked_solution(a: int, b: int, scripts: str | list[str] = "en",
                    reflection: tuple[int, str] | None = None) -> str:
    """Column sums from the least significant digit: ``3+8+0=11,7+5+1=13``.

    ``scripts``: one script for every column, or one per column (a trace that switches script
    part-way, as a mixed chain of thought does). ``reflection``: ``(column, kind)`` adds an
    "aha" at that column, ``kind`` ``"check"`` (the sum, then ``check:`` and the sum found
    again: ``3+8+0=11,check:11``) or ``"wait"`` (a slipped sum, off by one, then ``wait,`` and
    the right one: ``3+8+0=12,wait,11``). Only the sum is restated: re-adding the whole column
    would overflow the 40 completion tokens GRPO gives a 3-column problem."""
    columns = _columns(a, b)
    per_column = [scripts] * len(columns) if isinstance(scripts, str) else list(scripts)
    steps = []
    for i, ((x, y, c, s), script) in enumerate(zip(columns, per_column)):
        if reflection is not None and reflection[0] == i:
            if reflection[1] == "check":
                step = f"{x}+{y}+{c}={s},{CHECK}{s}"
            else:
                slip = s + 1 if s == 0 or (a + b + i) % 2 else s - 1
                step = f"{x}+{y}+{c}={slip},{WAIT}{s}"
        else:
            step = f"{x}+{y}+{c}={s}"
        steps.append(spell(step, script))
    return ",".join(steps)


def full_completion(a: int, b: int, scripts: str | list[str] = "en",
                    reflection: tuple[int, str] | None = None) -> str:
    """The worked sums in ``<think>``, then the answer (always ASCII digits, which the
    accuracy reward reads)."""
    return (f"{THINK_OPEN}{worked_solution(a, b, scripts, reflection)}{THINK_CLOSE}"
            f"{ANSWER_OPEN}{a + b}{ANSWER_CLOSE}")


def cold_start_completion(a: int, b: int, script: str = "en") -> str:
    """A cold-start example: the worked column sums in ``<think>``, then a readable summary,
    then the answer: ``<think>8+3+0=11,7+5+1=13,5+8+1=14</think>=1431<answer>1431</answer>``.

    R1's cold-start data puts a summary for the reader after the reasoning. The tiny
    tokenizer spells only digits, ``+ - * = ,`` and the four tags, so the summary states the
    result (``=1431``). Restating the whole equation (``578+853=1431``) was tried: the 0.5M
    model could not copy the operands back reliably, the answer followed the garbled summary,
    and cold start took held-out accuracy from 37% to 7% (run of 2026-12-01)."""
    return (f"{THINK_OPEN}{worked_solution(a, b, script)}{THINK_CLOSE}={a + b}"
            f"{ANSWER_OPEN}{a + b}{ANSWER_CLOSE}")


@dataclass(frozen=True)
class AdditionTask:
    min_digits: int = 1
    max_digits: int = 3
    heldout_size: int = 500
    heldout_seed: int = 12345
    # Share of problems whose prompt names Chinese (``中a+b=``) as the language of the
    # reasoning; 0 = the one-script task (every prompt ``a+b=``, reasoning in digits).
    second_script_share: float = 0.0

    def __post_init__(self):
        if not 1 <= self.min_digits <= self.max_digits <= 12:
            raise ValueError(
                f"digits must satisfy 1 <= min_digits <= max_digits <= 12, got "
                f"{self.min_digits}..{self.max_digits}"
            )
        if not 0 <= self.second_script_share <= 1:
            raise ValueError(f"second_script_share must be between 0 and 1, got "
                             f"{self.second_script_share}")

    def _draw(self, rng: random.Random) -> tuple[int, int]:
        def operand() -> int:
            n = rng.randint(self.min_digits, self.max_digits)
            return rng.randint(0 if n == 1 else 10 ** (n - 1), 10**n - 1)
        return operand(), operand()

    def language(self, a: int, b: int) -> str:
        """The target language of ``a+b=``'s reasoning: ``zh`` for about
        ``second_script_share`` of the pairs, fixed per pair (a hash, not a draw), so a pair
        has one target in the corpus, in training and in the held-out split."""
        if not self.second_script_share:
            return "en"
        return "zh" if zlib.crc32(f"{a}+{b}".encode()) / 2**32 < self.second_script_share else "en"

    def problem(self, a: int, b: int) -> Problem:
        """``a+b=`` (``中a+b=`` when its target is ``zh``). ``meta`` carries the target
        ``language`` and ``digit_language="en"``: in this task the ASCII digits are the
        ``en`` script's numerals, so the language-consistency reward counts a digit in a
        ``zh`` chain of thought as an English word (backend.rewards.language)."""
        language = self.language(a, b)
        prefix = ZH_TARGET if language == "zh" else ""
        return Problem(prompt=f"{prefix}{a}+{b}=", answer=str(a + b),
                       meta={"a": a, "b": b, "language": language, "digit_language": "en"})

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

    def cold_start_examples(self, n: int, seed: int) -> list[dict[str, str]]:
        """``n`` prompt / completion pairs for cold-start SFT (:func:`cold_start_completion`),
        none of them held out; distinct problems while the task has enough of them."""
        try:
            pairs = self.train_pairs(n, seed + 11, distinct=True)
        except ValueError:  # e.g. 1-digit operands: only 100 problems exist
            pairs = self.train_pairs(n, seed + 11)
        # Cold-start data is readable: each in its prompt's target script, never mixed.
        return [{"prompt": self.problem(a, b).prompt,
                 "completion": cold_start_completion(a, b, self.language(a, b)),
                 "answer": str(a + b)} for a, b in pairs]

    def pretraining_corpus(self, n: int, seed: int, think_share: float = 0.3,
                           answer_share: float = 0.2, reflection_share: float = 0.0) -> list[str]:
        """Texts for the *base* model: some with worked reasoning in tags, some with only the
        answer tag, the rest a bare number, so the base model knows the format but uses it
        only sometimes (the share GRPO later raises).

        ``reflection_share`` of the texts (part of ``think_share``) are worked traces with one
        reflection (:func:`worked_solution`: half ``check:``, half ``wait,``), the "aha" R1-Zero
        amplifies, here present in the base from the start at a rate one can measure rising.

        With ``second_script_share``, a ``zh`` prompt's worked trace is written in Chinese
        numerals (70%), in digits (15%: like a base model, it does not always answer in the
        language it was asked in) or switches to digits from a random column on (15%: a mixed
        chain of thought), so the base already mixes a little and RL can make it mix more.
        """
        if not 0 <= reflection_share <= think_share:
            raise ValueError(f"reflection_share ({reflection_share}) is part of think_share "
                             f"({think_share}): 0 <= reflection_share <= think_share")
        rng = random.Random(seed + 1)
        texts = []
        for a, b in self.train_pairs(n, seed):
            language = self.language(a, b)
            prompt = self.problem(a, b).prompt
            u = rng.random()
            if u < think_share:
                columns = len(_columns(a, b))
                reflection = ((rng.randrange(columns), rng.choice(("check", "wait")))
                              if u < reflection_share else None)
                completion = full_completion(a, b, self._trace_scripts(language, columns, rng),
                                             reflection)
            elif u < think_share + answer_share:
                completion = f"{ANSWER_OPEN}{a + b}{ANSWER_CLOSE}"
            else:
                completion = str(a + b)
            texts.append(f"{prompt}{completion}")
        return texts

    @staticmethod
    def _trace_scripts(language: str, columns: int, rng: random.Random) -> list[str]:
        """The script of each column of a worked trace for a prompt targeting ``language``."""
        if language == "en":
            return ["en"] * columns
        u = rng.random()
        if u < 0.7:
            return ["zh"] * columns
        if u < 0.85 or columns == 1:
            return ["en"] * columns
        switch = rng.randrange(1, columns)
        return ["zh"] * switch + ["en"] * (columns - switch)


# ----------------------------------------------------------------------------- non-reasoning
def non_reasoning_examples(n: int, seed: int, min_digits: int = 1,
                           max_digits: int = 3) -> list[dict]:
    """The tiny preset's *non-reasoning* data (R1 mixes ~200k such samples into its SFT data):
    a second task family, subtraction ``a-b=`` with ``a >= b``, answered directly with
    ``<answer>a-b</answer>`` and no ``<think>``, the way R1 answers a simple query without a
    chain of thought. Only characters of the tiny vocabulary are used.

    Rows ``{prompt, completion, answer}``. The list is prefix-stable (the first ``k`` rows are
    the same for every ``n >= k``), so a resumed stage can continue where it stopped. No
    operand pair is held out (in either order): held-out ``a-b=`` prompts measure the
    helpfulness reward model and RL (``general_prompts(heldout=True)``).
    """
    task = AdditionTask(min_digits=min_digits, max_digits=max_digits)
    blocked = set(task._heldout_pairs) | {(b, a) for a, b in task._heldout_pairs}
    rng, rows = random.Random(seed + 31), []
    while len(rows) < n:
        a, b = task._draw(rng)
        if (a, b) in blocked:
            continue
        a, b = max(a, b), min(a, b)
        rows.append({"prompt": f"{a}-{b}=", "completion": f"{ANSWER_OPEN}{a - b}{ANSWER_CLOSE}",
                     "answer": str(a - b)})
    return rows


# ----------------------------------------------------------------------------- judge texts
@dataclass(frozen=True)
class JudgeExample:
    """One verdict a judge should give: the ``candidate`` completion answers ``question`` with
    ``reference`` as the right answer; ``verdict`` is the rule check's (``is_correct``)."""

    question: str
    reference: str
    candidate: str
    verdict: bool
    kind: str  # how the candidate was made (for per-kind accuracy)


def _wrong_number(value: int, rng: random.Random) -> int:
    """A plausible wrong sum: off by one, by ten, a dropped or an extra digit, digits swapped."""
    text = str(value)
    choice = rng.randrange(5)
    if choice == 0:
        wrong = value + rng.choice((-1, 1))
    elif choice == 1:
        wrong = value + rng.choice((-10, 10))
    elif choice == 2 and len(text) > 1:
        i = rng.randrange(len(text))
        wrong = int(text[:i] + text[i + 1:])
    elif choice == 3:
        i = rng.randrange(len(text) + 1)
        wrong = int(text[:i] + str(rng.randrange(10)) + text[i:])
    else:
        digits = list(text)
        if len(digits) > 1:
            i = rng.randrange(len(digits) - 1)
            digits[i], digits[i + 1] = digits[i + 1], digits[i]
        wrong = int("".join(digits))
    if wrong == value or wrong < 0:
        wrong = value + 1
    return wrong


def judge_candidate(a: int, b: int, rng: random.Random) -> tuple[str, str]:
    """A candidate completion for ``a+b=`` and what kind it is, drawn so that about half are
    right: the worked solution with the right answer; the answer alone; a wrong final answer
    after a correct thought; a thought that slipped (a wrong operand) carried to its wrong
    answer; a cut-off completion; a bare number with no answer tag."""
    s = a + b
    u = rng.random()
    if u < 0.35:
        return full_completion(a, b), "right"
    if u < 0.5:
        return f"{ANSWER_OPEN}{s}{ANSWER_CLOSE}", "right_answer_only"
    if u < 0.65:
        wrong = _wrong_number(s, rng)
        return (f"{THINK_OPEN}{worked_solution(a, b)}{THINK_CLOSE}{ANSWER_OPEN}{wrong}"
                f"{ANSWER_CLOSE}"), "wrong_answer"
    if u < 0.8:
        slipped = _wrong_number(b, rng)
        return full_completion(a, slipped), "wrong_thought"
    if u < 0.9:
        # Cut between tokens (a tag is one token of the tiny vocabulary), never inside a tag.
        tokens = re.findall(r"</?think>|</?answer>|.", full_completion(a, b))
        return "".join(tokens[:rng.randrange(1, len(tokens) - 1)]), "cut_off"
    return (f"{THINK_OPEN}{worked_solution(a, b)}{THINK_CLOSE}{s}" if rng.random() < 0.5
            else str(s)), "untagged"


def judge_examples(n: int, seed: int, min_digits: int = 1, max_digits: int = 3,
                   heldout: bool = False) -> list[JudgeExample]:
    """``n`` verdicts for training (or, with ``heldout``, evaluating) a tiny generative judge.

    Questions come from the addition task's training pairs, or from its held-out pairs when
    ``heldout`` (so a judge is measured on questions it never saw). The verdict is the rule
    check's own (``backend.rewards.is_correct``): in the tiny world the judge learns to read
    a completion's final answer and compare it with the reference, what an LLM judge does for
    answers a rule cannot parse.
    """
    from backend.rewards.accuracy import is_correct

    task = AdditionTask(min_digits=min_digits, max_digits=max_digits)
    rng = random.Random(seed + 97)
    if heldout:
        pairs = task._heldout_pairs
        pairs = [pairs[rng.randrange(len(pairs))] for _ in range(n)]
    else:
        pairs = task.train_pairs(n, seed=seed + 98)
    out = []
    for a, b in pairs:
        candidate, kind = judge_candidate(a, b, rng)
        out.append(JudgeExample(question=f"{a}+{b}=", reference=str(a + b), candidate=candidate,
                                verdict=bool(is_correct(candidate, str(a + b))), kind=kind))
    return out


# ----------------------------------------------------------------------------- RL for all scenarios
# R1's last stage trains on reasoning prompts (rule rewards) and *general* prompts scored by
# reward models for helpfulness and harmlessness. The tiny world's rules, all spelled in the tiny
# vocabulary (digits, + - * = , and the four tags):
#
# - General prompts carry no reference answer: subtraction ``a-b=`` (a >= b) is a benign request
#   (answer it); multiplication ``a*b=`` is the tiny world's *forbidden request class* (refuse it).
# - A refusal is the answer ``-``: ``<answer>-</answer>`` (:data:`REFUSAL`).
# - Helpfulness: a complete answer beats an incomplete one, a wrong one and a refusal; on a
#   forbidden prompt the refusal beats complying (the helpful answer within the rules). On an
#   addition prompt the cold-start form (worked sums, the readable summary ``=s``, the
#   answer) beats the bare ``<answer>s</answer>``, the worked sums without a summary, a wrong
#   answer, a refusal and an untagged number; on a subtraction prompt the direct answer
#   ``<answer>d</answer>`` (as the non-reasoning data answers it) beats a wrong answer, a
#   refusal and an untagged number.
# - Harmlessness: on a forbidden prompt the refusal beats every way of complying (the product
#   bare, with a summary, reasoned, wrong, untagged); on a benign prompt the answer beats a
#   refusal. Without these benign pairs a reward model can score a refusal high whatever the
#   prompt, and GRPO on it would learn to refuse everything.
#
# Training and held-out pairs never share an operand pair (in either order), so held-out pair
# accuracy measures prompts the reward model never saw.
REFUSAL = f"{ANSWER_OPEN}-{ANSWER_CLOSE}"
FORBIDDEN_OPERATOR = "*"
PREFERENCE_ASPECTS = ("helpfulness", "harmlessness")


def is_refusal(completion: str) -> bool:
    """The completion's final answer is the refusal ``-``."""
    from backend.rewards.extract import extract_answer

    return extract_answer(completion) == "-"


def is_forbidden(prompt: str) -> bool:
    """A request of the forbidden class (multiplication)."""
    return FORBIDDEN_OPERATOR in prompt


@dataclass(frozen=True)
class PreferencePair:
    """One preference: ``chosen`` is the better completion of ``prompt`` than ``rejected``;
    ``kind`` says which rule made the pair (``"addition/bare"``: the complete addition answer
    over the bare one), for accuracy by kind."""

    prompt: str
    chosen: str
    rejected: str
    kind: str


def _operand_pairs(task: AdditionTask, n: int, rng: random.Random,
                   heldout: bool) -> list[tuple[int, int]]:
    """``n`` operand pairs: from the task's held-out pairs, or drawn apart from them (neither
    order held out, so ``a-b`` and ``a*b`` prompts cannot leak either)."""
    held = task._heldout_pairs
    if heldout:
        return [held[rng.randrange(len(held))] for _ in range(n)]
    blocked = set(held) | {(b, a) for a, b in held}
    out, tries = [], 0
    while len(out) < n:
        tries += 1
        if tries > 100 * n + 1000:
            raise ValueError(f"cannot draw {n} operand pairs apart from the held-out ones with "
                             f"{task.min_digits}-{task.max_digits} digits; use more digits")
        pair = task._draw(rng)
        if pair not in blocked:
            out.append(pair)
    return out


def general_prompts(n: int, seed: int, min_digits: int = 1, max_digits: int = 3,
                    forbidden_share: float = 0.5, heldout: bool = False) -> list[dict]:
    """``n`` general prompts ``{prompt, kind}`` (kind ``benign``: ``a-b=``; ``forbidden``:
    ``a*b=``), about ``forbidden_share`` of them forbidden; from held-out operands with
    ``heldout`` (for measuring refusals on prompts never trained on)."""
    task = AdditionTask(min_digits=min_digits, max_digits=max_digits)
    rng = random.Random(seed + (53 if heldout else 51))
    rows = []
    for a, b in _operand_pairs(task, n, rng, heldout):
        if rng.random() < forbidden_share:
            rows.append({"prompt": f"{a}{FORBIDDEN_OPERATOR}{b}=", "kind": "forbidden"})
        else:
            rows.append({"prompt": f"{max(a, b)}-{min(a, b)}=", "kind": "benign"})
    return rows


def _helpful_answer(op: str, a: int, b: int) -> str:
    """The completion the helpfulness rules prefer for a benign prompt."""
    if op == "+":
        return cold_start_completion(a, b)
    return f"{ANSWER_OPEN}{a - b}{ANSWER_CLOSE}"


def _helpfulness_pair(a: int, b: int, rng: random.Random) -> PreferencePair:
    u = rng.random()
    if u < 0.2:
        # A forbidden request's helpful answer is the refusal: without these pairs the
        # helpfulness model, which saw a refusal only as the worse answer to + and -, scored a
        # refusal of a*b= 3.3 points below complying (harmlessness: 0.6 above, r1 run #24), so
        # the sum of both rewards punished every refusal RL for all scenarios sampled.
        p = a * b
        complying = {"comply": f"{ANSWER_OPEN}{p}{ANSWER_CLOSE}",
                     "comply_wrong": f"{ANSWER_OPEN}{_wrong_number(p, rng)}{ANSWER_CLOSE}",
                     "comply_untagged": str(p)}
        kind = rng.choice(sorted(complying))
        return PreferencePair(f"{a}{FORBIDDEN_OPERATOR}{b}=", REFUSAL, complying[kind],
                              f"forbidden/{kind}")
    if u < 0.68:
        s = a + b
        wrong = _wrong_number(s, rng)
        rejected = {
            "bare": f"{ANSWER_OPEN}{s}{ANSWER_CLOSE}",
            "no_summary": full_completion(a, b),
            "wrong": (f"{THINK_OPEN}{worked_solution(a, b)}{THINK_CLOSE}={wrong}"
                      f"{ANSWER_OPEN}{wrong}{ANSWER_CLOSE}"),
            "refusal": REFUSAL,
            "untagged": str(s),
        }
        kind = rng.choice(sorted(rejected))
        return PreferencePair(f"{a}+{b}=", _helpful_answer("+", a, b), rejected[kind],
                              f"addition/{kind}")
    a, b = max(a, b), min(a, b)
    d = a - b
    rejected = {"wrong": f"{ANSWER_OPEN}{_wrong_number(d, rng)}{ANSWER_CLOSE}",
                "refusal": REFUSAL, "untagged": str(d)}
    kind = rng.choice(sorted(rejected))
    return PreferencePair(f"{a}-{b}=", _helpful_answer("-", a, b), rejected[kind],
                          f"subtraction/{kind}")


def _harmlessness_pair(a: int, b: int, rng: random.Random) -> PreferencePair:
    if rng.random() < 2 / 3:
        p = a * b
        wrong = _wrong_number(p, rng)
        complying = {
            "comply": f"{ANSWER_OPEN}{p}{ANSWER_CLOSE}",
            "comply_summary": f"={p}{ANSWER_OPEN}{p}{ANSWER_CLOSE}",
            "comply_reasoned": (f"{THINK_OPEN}{a}*{b}={p}{THINK_CLOSE}={p}"
                                f"{ANSWER_OPEN}{p}{ANSWER_CLOSE}"),
            "comply_wrong": f"{ANSWER_OPEN}{wrong}{ANSWER_CLOSE}",
            "comply_untagged": str(p),
        }
        kind = rng.choice(sorted(complying))
        return PreferencePair(f"{a}{FORBIDDEN_OPERATOR}{b}=", REFUSAL, complying[kind],
                              f"forbidden/{kind}")
    if rng.random() < 0.5:
        return PreferencePair(f"{a}+{b}=", _helpful_answer("+", a, b), REFUSAL,
                              "addition/refusal")
    a, b = max(a, b), min(a, b)
    return PreferencePair(f"{a}-{b}=", _helpful_answer("-", a, b), REFUSAL,
                          "subtraction/refusal")


def preference_pairs(aspect: str, n: int, seed: int, min_digits: int = 1, max_digits: int = 3,
                     heldout: bool = False) -> list[PreferencePair]:
    """``n`` preference pairs for a ``helpfulness`` or ``harmlessness`` reward model, made by
    the rules above; with ``heldout``, on the task's held-out operand pairs only."""
    if aspect not in PREFERENCE_ASPECTS:
        raise ValueError(f"aspect must be one of {', '.join(PREFERENCE_ASPECTS)}, got {aspect!r}")
    task = AdditionTask(min_digits=min_digits, max_digits=max_digits)
    rng = random.Random(seed + (61 if heldout else 59) + (0 if aspect == "helpfulness" else 7))
    make = _helpfulness_pair if aspect == "helpfulness" else _harmlessness_pair
    return [make(a, b, rng) for a, b in _operand_pairs(task, n, rng, heldout)]


def refusal_examples(n: int, seed: int, min_digits: int = 1, max_digits: int = 3) -> list[dict]:
    """``n`` SFT rows refusing the forbidden class: ``{prompt: "a*b=", completion: REFUSAL,
    answer: "-"}`` (safety data, as R1's SFT mixes in DeepSeek-V3's). Without some refusals in
    the SFT data the policy never samples ``<answer>-</answer>`` (no training text has ``-``
    inside an answer), so GRPO with the harmlessness reward model has no refusal to reinforce.
    Prefix-stable, on operands apart from the held-out ones."""
    task = AdditionTask(min_digits=min_digits, max_digits=max_digits)
    pairs = _operand_pairs(task, n, random.Random(seed + 71), heldout=False)
    return [{"prompt": f"{a}{FORBIDDEN_OPERATOR}{b}=", "completion": REFUSAL, "answer": "-"}
            for a, b in pairs]
