"""Answer checking stays bounded in time, in the main thread and in any other thread."""

import threading
import time

import pytest

from backend.rewards.accuracy import answers_match
from backend.rewards.verify import estimated_digits, symbolic_match

PATHOLOGICAL = [
    ("9**9**9**9", "1"),  # a power tower: 9^(9^(9^9)) has ~10^8 digits, computed in C
    ("$9^{9^{9^9}}$", "1"),  # ... in LaTeX
    ("9^{99999999}", "1"),  # one huge exponent
    ("100000000!", "1"),  # a huge factorial
    ("\\prod_{k=1}^{10^{9}} k", "1"),  # a product of a billion terms
    ("1+" * 2500 + "1", "2501"),  # a 5,000-character expression
    ("\\frac{" * 300 + "1" + "}{2}" * 300, "1"),  # deeply nested LaTeX
    ("5 " + "a" * 90 + "1", "5"),  # letters that a careless unit pattern would split 2^90 ways
    ("(x+1)^{100000}", "(x+2)^{100000}"),  # a polynomial power whose expansion takes minutes
]


def _in_thread(function, *args):
    """Run ``function`` in a non-main thread; (finished, result) after at most 10 s."""
    result = {}
    worker = threading.Thread(target=lambda: result.update(value=function(*args)), daemon=True)
    worker.start()
    worker.join(10)  # a generous bound: this checks that it returns, not how fast
    return not worker.is_alive(), result.get("value")


@pytest.mark.parametrize("prediction, reference", PATHOLOGICAL)
def test_pathological_answer_returns_off_the_main_thread(prediction, reference):
    assert _in_thread(answers_match, prediction, reference) == (True, False)


@pytest.mark.parametrize("prediction, reference", PATHOLOGICAL)
def test_pathological_answer_returns_in_the_main_thread(prediction, reference):
    assert answers_match(prediction, reference) is False


def test_symbolic_answers_are_still_checked_off_the_main_thread():
    # The bound must not make off-thread checks blind: these need math-verify.
    assert _in_thread(answers_match, "\\frac{\\sqrt{3}}{2}", "\\sqrt{3}/2") == (True, True)
    assert _in_thread(answers_match, "2^{10}", "1024") == (True, True)
    assert _in_thread(answers_match, "\\sqrt{2}", "\\sqrt{3}") == (True, False)


def test_a_check_past_its_deadline_counts_as_wrong_and_the_next_one_works():
    # (x+1)^{3000} passes the size guard and keeps sympy busy for over a minute without a
    # timeout; off the main thread the caller stops waiting at the deadline.
    assert _in_thread(answers_match, "x+1", "1+x") == (True, True)  # helper process started and warm
    slow = ("(x+1)^{3000}", "(x+2)^{3000}")
    started = time.monotonic()
    finished, value = _in_thread(lambda: symbolic_match(*slow, deadline=1.0))
    assert finished and value is False and time.monotonic() - started < 10
    assert _in_thread(answers_match, "x+1", "1+x") == (True, True)  # a fresh helper answers again


@pytest.mark.parametrize(
    "latex, small_enough",
    [
        ("2^{10}", True),  # an ordinary power
        ("2^{2023}", True),  # olympiad-size power: 610 digits
        ("1000!", True),  # 2,568 digits
        ("10^{100}", True),  # a googol
        ("9^{999999}", False),  # ~950,000 digits
        ("9^{9^{9}}", False),  # a tower
        ("99999!", False),  # ~450,000 digits
        ("(x+1)^{60}", True),  # a polynomial power
        ("e^{i\\pi}", True),  # a complex exponent is not a size
    ],
)
def test_estimated_digits_guard(latex, small_enough):
    from math_verify import parse

    expression = parse(f"${latex}$")[0]
    assert (estimated_digits(expression) <= 10_000) is small_enough
