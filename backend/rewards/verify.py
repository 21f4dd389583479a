"""Symbolic answer checking with math-verify, bounded in time in any thread or process.

:func:`symbolic_match` is the last step of :func:`backend.rewards.accuracy.answers_match`, for
answers that do not both read as plain numbers (``\\frac{1}{3}``, ``2^{10}``, ``x=5``,
``\\sqrt{2}``). Each side is read plainly first when it is not LaTeX: math-verify's expression
reading (``2^10``, ``3*4``), kept only when it covers the whole answer (otherwise it would pull
the ``2`` out of ``sqrt(2)``); then as LaTeX, wrapped in ``$...$`` when it carries no delimiter
(math-verify 0.9.0 reads undelimited ``2^{10}`` as ``2``). When both sides come out as exact
rationals, :func:`backend.rewards.numbers.numbers_match` decides, so ``0.333`` against
``\\frac{1}{3}`` is judged by the same rule as against ``1/3``; otherwise math-verify's
``verify`` decides (symbolic equality; floats to 6 decimal places).

Bounded time, three layers, because math-verify's own timeouts are ``signal.alarm()``, which
works only in a process's main thread and cannot interrupt one long C-level operation:

1. everywhere, before any parsing: answers longer than :data:`MAX_ANSWER_CHARS` are not
   parsed (no real final answer is that long: GSM8K's are a few characters, MATH's rarely
   100) and count as different unless the strings are identical; after parsing, expressions
   that would build a number of more than :data:`MAX_NUMBER_DIGITS` digits (``9^{9^{9^9}}``,
   ``100000000!``, ``\\prod_{k=1}^{10^9} k``) count as wrong without being evaluated (Python
   multiplies big integers in C, where no signal or thread can stop it);
2. in a main thread: math-verify's own timeouts, :data:`MATH_VERIFY_TIMEOUT_S` per parse and
   per comparison;
3. in any other thread (a UI callback, a thread pool): the check runs in one long-lived helper
   process (a plain ``python`` subprocess started on first need, talking JSON lines over a
   pipe) whose main thread has layer 2, and the caller stops waiting after
   :data:`CHECK_DEADLINE_S`: the answer counts as wrong and the helper is killed, to be
   restarted on the next need. Where no helper can be started (not POSIX, no ``python``), the
   check runs in-process with layer 1 only, and says so once in the log.
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
import select
import subprocess
import sys
import threading
from fractions import Fraction
from pathlib import Path
from typing import Any

from backend.rewards.numbers import Number, looks_like_latex, numbers_match

log = logging.getLogger(__name__)

MAX_ANSWER_CHARS = 400
MAX_NUMBER_DIGITS = 10_000  # 1000! has 2,568 digits and 2^{2023} has 610: both fine
MATH_VERIFY_TIMEOUT_S = 2  # signal.alarm() takes whole seconds
CHECK_DEADLINE_S = 10.0
HELPER_STARTUP_S = 120.0  # importing sympy + math-verify in a fresh process on a busy machine

_DELIMITERS = ("$", "\\(", "\\[", "\\boxed")


# ---------------------------------------------------------------------------- reading
def _parse(text: str, timeout: int | None) -> list:
    from math_verify import ExprExtractionConfig, LatexExtractionConfig, parse

    if not looks_like_latex(text):
        plain = parse(text, extraction_config=[ExprExtractionConfig()], parsing_timeout=timeout)
        if len(plain) == 2 and _squash(plain[1]) == _squash(text):
            return plain  # [expression, the text it was read from]: the whole answer
    wrapped = text if any(d in text for d in _DELIMITERS) else f"${text}$"
    return parse(wrapped, extraction_config=[LatexExtractionConfig()], parsing_timeout=timeout)


def _squash(text: str) -> str:
    return re.sub(r"\s+", "", text).rstrip(".")


def estimated_digits(expr: Any) -> float:
    """Upper estimate of the decimal digits of the largest number ``expr`` evaluates to.

    0 for anything without a size (symbols, strings); ``inf`` for exponents, factorial
    arguments or sum bounds above a million and product bounds above 10,000, which no answer
    needs. A power of a symbol counts its exponent as digits, so ``(x+1)^{100000}`` (whose
    expansion would take minutes) is too big as well.
    """
    import sympy

    if isinstance(expr, sympy.Integer):
        return len(str(abs(int(expr))))
    if isinstance(expr, sympy.Rational):
        return max(len(str(abs(int(expr.p)))), len(str(int(expr.q))))
    if isinstance(expr, sympy.Pow):
        base, exponent = expr.args
        base_digits, exponent_digits = estimated_digits(base), estimated_digits(exponent)
        if exponent_digits > 6:
            return math.inf
        if exponent.free_symbols or not exponent.is_number:
            return base_digits
        size = float(sympy.Abs(exponent))  # abs: e^{i\pi} has a complex exponent
        return max(base_digits, 1.0) * max(size, 1.0) if not base.free_symbols else base_digits + size
    if isinstance(expr, sympy.factorial):
        (arg,) = expr.args
        if estimated_digits(arg) > 6:
            return math.inf
        n = abs(float(arg)) if arg.is_number else 0.0
        return n * math.log10(n) if n > 1 else 1.0
    if isinstance(expr, (sympy.Sum, sympy.Product)):
        # a product of n terms is about n! (10^4 terms: ~35,000 digits); a sum is cheap
        most = 4 if isinstance(expr, sympy.Product) else 6
        bounds = [b for limit in expr.limits for b in limit[1:]]
        if any(estimated_digits(b) > most for b in bounds):
            return math.inf
    args = getattr(expr, "args", ())
    if not args or isinstance(expr, str):
        return 0.0
    digits = [estimated_digits(a) for a in args if isinstance(a, sympy.Basic)]
    if not digits:
        return 0.0
    return sum(digits) if isinstance(expr, (sympy.Mul, sympy.Product)) else max(digits) + 1


def _too_big(parsed: list) -> bool:
    return any(not isinstance(p, str) and estimated_digits(p) > MAX_NUMBER_DIGITS for p in parsed)


def _exact_rational(parsed: list) -> tuple[Number, ...]:
    """The value of a parsed answer when it is an exact rational number (``\\frac{2}{6}``,
    ``2^{10}``, ``10\\%``), else ``()``; called only on sizes :func:`_too_big` allowed."""
    import sympy

    expr = next((p for p in parsed if isinstance(p, sympy.Expr)), None)
    if expr is None or not expr.is_number or expr.has(sympy.Float):
        return ()
    value = expr.doit()
    if not isinstance(value, sympy.Rational):
        return ()
    return (Number(Fraction(int(value.p), int(value.q))),)


def _symbolic_match(
    prediction: str, reference: str, pred_numbers: tuple[Number, ...], ref_numbers: tuple[Number, ...],
    timeout: int | None,
) -> bool:
    """The comparison itself (module docstring); ``timeout`` is passed to math-verify."""
    from math_verify import verify

    try:
        guess = _parse(prediction, timeout)
        if not guess or _too_big(guess):
            return False
        guess_numbers = pred_numbers or _exact_rational(guess)
        if guess_numbers and ref_numbers:
            return numbers_match(guess_numbers, ref_numbers)
        gold = _parse(reference, timeout)
        if not gold or _too_big(gold):
            return False
        gold_numbers = ref_numbers or _exact_rational(gold)
        if guess_numbers and gold_numbers:
            return numbers_match(guess_numbers, gold_numbers)
        return bool(verify(gold, guess, timeout_seconds=timeout))
    except Exception:  # one odd string must not stop a training step; it scores as wrong
        log.debug("answer check failed on %r vs %r", prediction, reference, exc_info=True)
        return False


# ---------------------------------------------------------------------------- bounding
def _quiet_math_verify() -> None:
    # math-verify warns on every call made without a timeout; without one is our choice.
    for name in ("math_verify.parser", "math_verify.grader"):
        logging.getLogger(name).setLevel(logging.ERROR)


def _numbers_to_json(numbers: tuple[Number, ...]) -> list:
    return [[n.value.numerator, n.value.denominator, n.decimals, n.significant] for n in numbers]


def _numbers_from_json(rows: list) -> tuple[Number, ...]:
    return tuple(Number(Fraction(num, den), decimals, significant) for num, den, decimals, significant in rows)


def _serve() -> None:
    """Helper process main: one JSON request per stdin line ``[prediction, reference,
    pred_numbers, ref_numbers]``, one ``true``/``false`` line back on stdout."""
    import math_verify  # noqa: F401  (imported before saying ready, so deadlines time checks only)

    replies, sys.stdout = sys.stdout, sys.stderr  # a stray print from a library must not break the protocol
    _quiet_math_verify()
    print("ready", file=replies, flush=True)
    for line in sys.stdin:
        prediction, reference, pred_numbers, ref_numbers = json.loads(line)
        result = _symbolic_match(prediction, reference, _numbers_from_json(pred_numbers),
                                 _numbers_from_json(ref_numbers), MATH_VERIFY_TIMEOUT_S)
        print(json.dumps(result), file=replies, flush=True)


class _HelperProcess:
    """The helper process (a plain subprocess, not ``multiprocessing``: a spawned
    ``multiprocessing`` child re-imports the caller's main script, which a script without an
    ``if __name__ == "__main__"`` guard would run again). One request at a time (a lock)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._process: subprocess.Popen | None = None
        self.unavailable = os.name != "posix"  # the deadline waits with select() on a pipe

    def _readline(self, timeout: float) -> str | None:
        assert self._process is not None and self._process.stdout is not None
        ready, _, _ = select.select([self._process.stdout], [], [], timeout)
        return self._process.stdout.readline() if ready else None

    def _start(self) -> bool:
        root = str(Path(__file__).resolve().parents[2])
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")])))
        try:
            self._process = subprocess.Popen(
                [sys.executable, "-c", "from backend.rewards.verify import _serve; _serve()"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                text=True, bufsize=1, env=env, cwd=root,
            )
            if (self._readline(HELPER_STARTUP_S) or "").strip() == "ready":
                return True
        except Exception:
            log.warning("cannot start the answer-check helper process", exc_info=True)
        self._stop()
        return False

    def _stop(self) -> None:
        if self._process is not None:
            if self._process.poll() is None:
                self._process.kill()
            self._process.wait(5)
            for pipe in (self._process.stdin, self._process.stdout):
                if pipe is not None:
                    pipe.close()
        self._process = None

    def check(self, request: list, deadline: float) -> bool | None:
        """The helper's answer; False after ``deadline`` seconds; None if no helper can run."""
        with self._lock:
            if self.unavailable:
                return None
            if self._process is None or self._process.poll() is not None:
                if not self._start():
                    self.unavailable = True
                    log.warning("answer checks off the main thread run in-process without a time limit")
                    return None
            assert self._process is not None and self._process.stdin is not None
            try:
                self._process.stdin.write(json.dumps(request) + "\n")
                self._process.stdin.flush()
                line = self._readline(deadline)
                if line:
                    return bool(json.loads(line))
            except (OSError, ValueError):
                pass
            log.warning("answer check of %r took over %.0f s; counted as wrong", request[0][:80], deadline)
            self._stop()
            return False


_HELPER = _HelperProcess()


def symbolic_match(
    prediction: str,
    reference: str,
    pred_numbers: tuple[Number, ...] = (),
    ref_numbers: tuple[Number, ...] = (),
    *,
    deadline: float = CHECK_DEADLINE_S,
) -> bool:
    """Whether ``prediction`` equals ``reference`` (module docstring), in bounded time anywhere.

    ``pred_numbers``/``ref_numbers``: the plain numeric readings already made by the caller
    (:func:`backend.rewards.numbers.read_numbers`), so that a plain number on one side meets an
    exact LaTeX value on the other under the same rule.
    """
    if len(prediction) > MAX_ANSWER_CHARS or len(reference) > MAX_ANSWER_CHARS:
        return False
    if threading.current_thread() is threading.main_thread():
        return _symbolic_match(prediction, reference, pred_numbers, ref_numbers, MATH_VERIFY_TIMEOUT_S)
    request = [prediction, reference, _numbers_to_json(pred_numbers), _numbers_to_json(ref_numbers)]
    answer = _HELPER.check(request, deadline)
    if answer is not None:
        return answer
    _quiet_math_verify()
    return _symbolic_match(prediction, reference, pred_numbers, ref_numbers, None)

