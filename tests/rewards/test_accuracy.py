"""Tables for the accuracy reward and the answer comparison behind it."""

from fractions import Fraction

import pytest

from backend.rewards.accuracy import accuracy, answers_match, normalize_reference, parse_number

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
        ("<answer>0.333</answer>", "\\frac{1}{3}", 1.0),  # a truncated decimal of 1/3 (see test_numbers)
        ("<answer>0.33</answer>", "\\frac{1}{3}", 0.0),  # ... but not with 2 significant digits
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
        ("<answer>5 dollars</answer>", "5", 1.0),  # a unit word after the value: judged by value
        ("<answer>yes</answer>", "yes", 1.0),  # non-numeric exact match
        ("<answer>no</answer>", "yes", 0.0),  # non-numeric mismatch
        ("<answer>Monday.</answer>", "monday", 1.0),  # plain words: case and a final full stop ignored
        ("<answer>72</answer>", "She pays 8*9 = <<8*9=72>>72\n#### 72", 1.0),  # full GSM8K solution
        ("<answer>72</answer>", 72, 1.0),  # numeric reference column
        ([{"role": "assistant", "content": "<answer>7</answer>"}], "7", 1.0),  # conversational
        (TINY, None, None),  # missing reference: skipped by TRL
        (TINY, "  ", None),  # blank reference counts as missing
        (TINY, float("nan"), None),  # pandas reads an empty cell as NaN: skipped, not scored
        (TINY, "nan", None),  # ... and NaN written out as text
        (TINY, 1431.0, 1.0),  # an integer column with gaps comes back as floats
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
        ("5_", None),  # nor is a trailing underscore
        ("1/0", None),  # division by zero
        ("\\frac{1}{2}", None),  # LaTeX is left to math-verify
        ("18 dollars", Fraction(18)),  # a unit word
        ("10%", None),  # a percentage reads two ways: no single number
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


# Numbers followed by unit words are judged by their value, whatever the unit.
@pytest.mark.parametrize(
    "prediction, reference, expected",
    [
        ("18 dollars", "18", True),  # GSM8K answer with its unit
        ("$18.00", "18", True),  # currency and cents
        ("18 apples.", "18", True),  # a sentence's full stop
        ("5 km/h", "5", True),  # compound unit: not the LaTeX product 5·k·m/h
        ("9.8 m/s^2", "9.8", True),  # unit with a power
        ("18\\text{ dollars}", "18", True),  # LaTeX unit
        ("18", "18 dollars", True),  # the unit on the reference side
        ("17 dollars", "18", False),  # the value still decides
        ("18 thousand", "18", False),  # a magnitude word is not a unit
        ("18 thousand", "18000", False),  # ... and is not multiplied out either: write the number
        ("5x", "5", False),  # a variable is not a unit
        ("18 or 19", "19", False),  # hedging between two numbers is wrong
        ("about 18", "18", False),  # words before the number: the answer tag holds prose
    ],
)
def test_units_are_judged_by_value(prediction, reference, expected):
    assert answers_match(prediction, reference) is expected


# A rounded decimal and a fraction: one rule (tests/rewards/test_numbers.py) whichever way the
# reference is written, so each row holds for every form of the reference.
ONE_THIRD = ["\\frac{1}{3}", "1/3", "0.333...", "\\dfrac13", "$\\frac{1}{3}$", "0.\\overline{3}", "\\frac{2}{6}"]


@pytest.mark.parametrize("reference", ONE_THIRD)
@pytest.mark.parametrize(
    "prediction, expected",
    [
        ("0.333", True),  # truncated, 3 significant digits
        ("0.3333333", True),  # more digits
        ("1/3", True),  # plain fraction
        ("\\frac{1}{3}", True),  # LaTeX fraction
        ("2/6", True),  # unreduced fraction
        ("0.333...", True),  # repeating decimal
        ("0.33", False),  # 2 significant digits
        ("0.334", False),  # neither rounded nor truncated
        ("0.3", False),  # 1 significant digit
        ("1/4", False),  # another value
    ],
)
def test_decimal_and_fraction_rule_is_the_same_for_every_reference_form(prediction, reference, expected):
    assert answers_match(prediction, reference) is expected


ONE_EIGHTH = ["\\frac{1}{8}", "1/8", "0.125", "$0.125$", "12.5\\%"]


@pytest.mark.parametrize("reference", ONE_EIGHTH)
@pytest.mark.parametrize(
    "prediction, expected",
    [
        ("0.125", True),  # exact decimal
        ("1/8", True),  # exact fraction
        ("\\frac{2}{16}", True),  # unreduced LaTeX fraction
        ("0.13", False),  # 1/8 has an exact decimal, so a rounding of it is wrong
        ("0.12", False),  # ... truncated too
    ],
)
def test_a_value_with_an_exact_decimal_must_be_written_exactly(prediction, reference, expected):
    assert answers_match(prediction, reference) is expected


# Missing references, as pandas and CSV files produce them: skipped (None), never scored.
@pytest.mark.parametrize(
    "reference",
    [None, float("nan"), "", "   ", "nan", "NaN", "<NA>"],
)
def test_missing_reference_is_skipped(reference):
    assert normalize_reference(reference) is None
    assert accuracy(prompts=["p"], completions=[TINY], answer=[reference]) == [None]


def test_blank_cells_read_by_pandas_are_skipped(tmp_path):
    # The user's CSV has an answer column with a gap; pandas fills it with NaN (and pd.NA
    # with a nullable dtype); the row must be skipped, the others scored.
    pd = pytest.importorskip("pandas")
    path = tmp_path / "problems.csv"
    path.write_text("question,answer\n1+1=,2\n2+2=,\n3+3=,6\n")
    frame = pd.read_csv(path)
    completions = ["<answer>2</answer>", "<answer>4</answer>", "<answer>7</answer>"]
    assert accuracy(prompts=list(frame.question), completions=completions, answer=list(frame.answer)) == [
        1.0, None, 0.0
    ]
    nullable = list(frame.answer.astype("Int64"))
    assert accuracy(prompts=list(frame.question), completions=completions, answer=nullable) == [1.0, None, 0.0]


def test_correctness_is_computed_once_per_completion_for_all_three_rewards(monkeypatch):
    # accuracy, length and cosine_length all need "is it right?"; the judgement is cached on
    # (completion text, reference), so a batch scored by all three pays for it once.
    import importlib

    from backend.rewards import cosine_length, length

    # the module, not the function of the same name that backend.rewards exports
    accuracy_module = importlib.import_module("backend.rewards.accuracy")

    calls = []
    real = accuracy_module.answers_match
    monkeypatch.setattr(accuracy_module, "answers_match", lambda p, r: calls.append(p) or real(p, r))
    accuracy_module.clear_correctness_cache()
    # a group of five samples, two of them identical (common once a policy converges)
    completions = ["<answer>1431</answer>", "<answer>1430</answer>", "<answer>\\frac{1}{2}</answer>", TINY, TINY]
    answers = ["1431", "1431", "0.5", "1431", "1431"]
    kwargs = {"prompts": ["p"] * 5, "completions": completions, "answer": answers}
    assert accuracy(**kwargs) == [1.0, 0.0, 1.0, 1.0, 1.0]
    length(**kwargs)
    cosine_length(**kwargs)
    assert len(calls) == 4  # one per distinct (completion text, reference), not 3 x 5
