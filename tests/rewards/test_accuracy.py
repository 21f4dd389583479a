"""Tables for the accuracy reward and the answer comparison behind it."""

from fractions import Fraction

import pytest

from backend.rewards.accuracy import accuracy, answers_match, parse_number

TINY = "<think>3+8+0=11,7+5+1=13</think><answer>1431</answer>"


@pytest.mark.parametrize(
    "completion, reference, expected",
    [
        (TINY, "1431", 1.0),  # tiny model, right
        ("<think>3+8=11</think><answer>1430</answer>", "1431", 0.0),  # tiny model, wrong
        ("1431", "1431", 0.0),  # bare number: no <answer> and no box, nothing to grade
        ("", "1431", 0.0),  # empty completion
        (None, "1431", 0.0),  # malformed completion
        ("<think>x</think><answer>1431", "1431", 0.0),  # unclosed answer tag
        ("<answer>  </answer>", "1431", 0.0),  # blank answer
        ("<answer>12</answer><answer>1431</answer>", "1431", 1.0),  # several answers: the last counts
        ("<answer>1431</answer><answer>12</answer>", "1431", 0.0),  # ... even when the first was right
        ("<answer><answer>1431</answer></answer>", "1431", 1.0),  # nested answer tags
        ("so the answer is \\boxed{1431}", "1431", 1.0),  # boxed answer, no tags
        ("\\boxed{\\frac{1}{2}}", "0.5", 1.0),  # box with nested braces, via math-verify
        ("<answer>\\frac{1}{2}</answer>", "1/2", 1.0),  # LaTeX fraction vs plain fraction
        ("<answer>0.5</answer>", "\\frac{1}{2}", 1.0),  # decimal vs LaTeX fraction
        ("<answer>\\dfrac{1}{2}</answer>", "\\frac12", 1.0),  # two LaTeX spellings
        ("<answer>0.333</answer>", "\\frac{1}{3}", 0.0),  # a rounded value is not equal
        ("<answer>2^{10}</answer>", "1024", 1.0),  # bare LaTeX is wrapped in $...$ before parsing
        ("<answer>x=5</answer>", "5", 1.0),  # an equation's right-hand side, via math-verify
        ("<answer>\\sqrt{2}</answer>", "$\\sqrt{2}$", 1.0),  # delimited vs bare LaTeX
        ("<answer>1,234</answer>", "1234", 1.0),  # GSM8K thousands separator
        ("<answer>1234</answer>", "1,234", 1.0),  # ... on the reference side
        ("<answer>$5</answer>", "5", 1.0),  # GSM8K dollar sign
        ("<answer>5.0</answer>", "5", 1.0),  # decimal form of an integer
        ("<answer>5.</answer>", "5", 1.0),  # trailing full stop
        ("<answer>3/4</answer>", "0.75", 1.0),  # fraction vs decimal, exact
        ("<answer>1,2</answer>", "12", 0.0),  # a pair is not a thousands separator
        ("<answer>5 dollars</answer>", "5", 0.0),  # words after the value are not stripped
        ("<answer>yes</answer>", "yes", 1.0),  # non-numeric exact match
        ("<answer>no</answer>", "yes", 0.0),  # non-numeric mismatch
        ("<answer>72</answer>", "She pays 8*9 = <<8*9=72>>72\n#### 72", 1.0),  # full GSM8K solution
        ("<answer>72</answer>", 72, 1.0),  # numeric reference column
        ([{"role": "assistant", "content": "<answer>7</answer>"}], "7", 1.0),  # conversational
        (TINY, None, None),  # missing reference: skipped by TRL
        (TINY, "  ", None),  # blank reference counts as missing
    ],
)
def test_accuracy(completion, reference, expected):
    assert accuracy(prompts=["p"], completions=[completion], answer=[reference]) == [expected]


def test_accuracy_without_answer_column_skips_every_row():
    # A dataset with no answer column: nothing to grade, every row None.
    assert accuracy(prompts=["p", "q"], completions=[TINY, TINY]) == [None, None]


def test_accuracy_ignores_unknown_kwargs():
    # TRL passes completion_ids, trainer_state and every other dataset column.
    rewards = accuracy(
        prompts=["p"], completions=[TINY], answer=["1431"], completion_ids=[[1, 2]], trainer_state=None, level=[3]
    )
    assert rewards == [1.0]


def test_accuracy_rejects_misaligned_answers():
    with pytest.raises(ValueError):
        accuracy(prompts=["p", "q"], completions=[TINY, TINY], answer=["1431"])


@pytest.mark.parametrize(
    "text, expected",
    [
        ("1431", Fraction(1431)),  # integer
        ("-7", Fraction(-7)),  # negative
        ("1,234,567", Fraction(1234567)),  # thousands separators
        ("$5", Fraction(5)),  # dollar sign
        ("\\$5", Fraction(5)),  # LaTeX-escaped dollar sign
        ("5.0", Fraction(5)),  # decimal
        ("5.", Fraction(5)),  # trailing full stop
        ("3 / 4", Fraction(3, 4)),  # fraction with spaces
        ("1,2", None),  # a pair, not a number
        ("1_000", None),  # underscores are not a written number
        ("1/0", None),  # division by zero
        ("\\frac{1}{2}", None),  # LaTeX is left to math-verify
        ("", None),  # empty
    ],
)
def test_parse_number(text, expected):
    assert parse_number(text) == expected


@pytest.mark.parametrize(
    "prediction, reference, expected",
    [
        (None, "5", False),  # no prediction
        ("5", None, False),  # no reference
        ("", "5", False),  # empty prediction
        ("10\\%", "0.1", True),  # percent via math-verify
    ],
)
def test_answers_match(prediction, reference, expected):
    assert answers_match(prediction, reference) is expected
