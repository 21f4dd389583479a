"""Tables for the plain reading of numbers and the rule for when two numbers match."""

from fractions import Fraction

import pytest

from backend.rewards.numbers import Number, numbers_match, read_numbers


@pytest.mark.parametrize(
    "text, values",
    [
        ("1431", [1431]),  # integer
        ("-7", [-7]),  # negative
        ("\u22127", [-7]),  # Unicode minus
        ("1,234,567", [1234567]),  # thousands separators
        ("1,2", []),  # a pair is not a number
        ("5.", [5]),  # trailing full stop
        (".5", [Fraction(1, 2)]),  # no leading zero
        ("3 / 4", [Fraction(3, 4)]),  # fraction with spaces
        ("1/0", []),  # division by zero
        ("$18.00", [18]),  # currency and cents
        ("\\$18", [18]),  # LaTeX-escaped dollar
        ("-$5", [-5]),  # sign before the currency
        ("€3", [3]),  # another currency
        ("18 dollars", [18]),  # a unit word after the number
        ("18 apples.", [18]),  # ... at the end of a sentence
        ("5 km/h", [5]),  # a compound unit
        ("9.8 m/s^2", [Fraction(98, 10)]),  # a unit with a power
        ("90°", [90]),  # degrees
        ("18元", [18]),  # a unit in another script
        ("$18$", [18]),  # a number in math delimiters
        ("18\\text{ dollars}", [18]),  # a LaTeX unit
        ("18{,}000", [18000]),  # LaTeX thousands separator
        ("90^\\circ", [90]),  # LaTeX degrees
        ("10%", [10, Fraction(1, 10)]),  # a percentage reads two ways
        ("10\\%", [10, Fraction(1, 10)]),  # ... in LaTeX
        ("10 percent", [10, Fraction(1, 10)]),  # ... in words
        ("0.333...", [Fraction(1, 3)]),  # repeating decimal
        ("0.1666…", [Fraction(1, 6)]),  # repeating after a prefix, Unicode ellipsis
        ("0.142857142857...", [Fraction(1, 7)]),  # a six-digit block
        ("0.999...", [1]),  # 0.999... is 1
        ("3.14159...", [Fraction(314159, 100000)]),  # no repeated block: the ellipsis is dropped
        ("0.\\overline{3}", [Fraction(1, 3)]),  # LaTeX repeating decimal
        ("5x", []),  # a lone letter is a variable, not a unit
        ("5 m", []),  # ... also after a space
        ("18 thousand", []),  # a magnitude word is not a unit
        ("18 or 19", []),  # two numbers
        ("5 hours 30 minutes", []),  # a digit in the tail
        ("2x+1", []),  # an expression
        ("about 18", []),  # words before the number are not read
        ("\\frac{1}{3}", []),  # LaTeX beyond decoration is math-verify's
        ("1" * 200, []),  # too long to be a plain answer
        ("", []),  # empty
        (None, []),  # missing
    ],
)
def test_read_numbers(text, values):
    assert [n.value for n in read_numbers(text)] == values


@pytest.mark.parametrize(
    "text, decimals, significant",
    [
        ("0.333", 3, 3),  # three decimals, three significant digits
        ("0.0333", 4, 3),  # leading zeros are not significant
        ("33.3", 1, 3),  # digits before the point count
        ("18", None, 2),  # an integer has no decimals
        ("0.333...", None, 0),  # a repeating decimal is exact
    ],
)
def test_read_numbers_records_how_a_decimal_was_written(text, decimals, significant):
    (number,) = read_numbers(text)
    assert (number.decimals, number.significant) == (decimals, significant)


def _n(text):
    return read_numbers(text)


@pytest.mark.parametrize(
    "first, second, expected",
    [
        ("0.5", "1/2", True),  # exact values
        ("18.00", "18", True),  # trailing zeros
        ("0.333", "1/3", True),  # truncated to the digits written, 3 significant
        ("0.3333", "1/3", True),  # more digits
        ("0.667", "2/3", True),  # rounded
        ("0.666", "2/3", True),  # truncated
        ("-0.333", "-1/3", True),  # negative, truncated toward zero
        ("3.33", "10/3", True),  # 3 significant digits
        ("33.3%", "1/3", True),  # a percentage, read as 0.333
        ("0.33", "1/3", False),  # only 2 significant digits
        ("0.3", "1/3", False),  # 1 significant digit
        ("0.334", "1/3", False),  # neither rounded nor truncated
        ("3", "10/3", False),  # an integer is never a rounding
        ("0.13", "1/8", False),  # 1/8 can be written exactly: it must be
        ("0.333", "0.3333", False),  # two written decimals are compared exactly
        ("1/3", "0.333", True),  # symmetric: either side may be the decimal
        ("10%", "10", True),  # percent sign as a unit
        ("10%", "0.1", True),  # percent as a value
        ("10%", "1", False),  # neither reading
    ],
)
def test_numbers_match(first, second, expected):
    assert numbers_match(_n(first), _n(second)) is expected
    assert numbers_match(_n(second), _n(first)) is expected  # the rule is symmetric


def test_numbers_match_accepts_single_numbers():
    assert numbers_match(Number(Fraction(1, 2)), Number(Fraction(2, 4)))
