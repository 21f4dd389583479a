"""Reading an answer as a number, and when two numbers count as the same answer.

This is the "plain reading" of an answer, tried before any LaTeX parsing because most real
answers are plain numbers (GSM8K, the tiny addition task) and math-verify, given such text
as LaTeX, reads ``18 dollars`` as the product ``18·d·o·l·l·a·r·s``.

What reads as a number (:func:`read_numbers`), whole text only:

- an integer, a decimal or a fraction: ``1431``, ``-7``, ``5.``, ``.5``, ``3/4``, ``3 / 4``,
  with thousands commas (``1,234``, but ``1,2`` is not a number) and a Unicode minus;
- a currency sign before it (``$18``, ``\\$18``, ``-$5``, ``€3``);
- unit words after it (``18 dollars``, ``5 km/h``, ``9.8 m/s^2``, ``18 apples.``, ``90°``,
  ``18元``): the number is compared by value and the words are ignored. Not units, so the
  text is left to math-verify: a single Latin letter (``5x``, ``5 m``: a variable), a
  magnitude word (``18 thousand``, ``2 million``), anything holding another digit or an
  operator (``18 or 19``, ``5 hours 30 minutes``, ``2x+1``). Words *before* the number are
  not read either (``about 18``): the answer tag is meant to hold the answer;
- a percentage (``10%``, ``10\\%``, ``10 percent``) reads two ways, 10 and 0.1; it matches a
  reference written either way;
- a repeating decimal: ``0.\\overline{3}``, and an ellipsis after digits that end in a
  repeated block (``0.333...`` = 1/3, ``0.1666…`` = 1/6, ``0.142857142857...`` = 1/7).
  Without a repeated block the ellipsis is dropped (``3.14159...`` reads as 3.14159);
- light LaTeX around a plain number is removed first (``$18$``, ``18\\text{ dollars}``,
  ``18{,}000``, ``90^\\circ``). Anything else LaTeX (``\\frac{1}{3}``, ``2^{10}``) is not read
  here; math-verify reads it (:mod:`backend.rewards.verify`), and when it comes out as an
  exact rational the rule below decides.

When two numbers match (:func:`numbers_match`), the same rule whichever side is the reference
and however it is written (``\\frac{1}{3}``, ``1/3``, ``0.333...``):

1. equal exact values match (``0.5`` = ``1/2`` = ``\\frac{1}{2}``, ``18.00`` = ``18``);
2. a written decimal also matches a value that has *no* finite decimal expansion (a fraction
   whose denominator has a prime factor other than 2 and 5, like 1/3 or 2/7) when it is that
   value rounded or truncated to the digits written, with at least 3 significant digits:
   ``0.333``, ``0.3333`` and ``0.667``/``0.666`` match 1/3 and 2/3; ``0.33`` (2 significant
   digits), ``0.334`` (neither rounded nor truncated) and ``0.3`` do not. A value that can be
   written exactly (1/8 = 0.125) must be written exactly: ``0.13`` does not match 1/8, and an
   integer is never a rounding (``3`` does not match 10/3).

Irrational values (``\\sqrt{2}``, ``\\pi``) are not rationals and are left to math-verify,
which compares them numerically to 6 decimal places.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from fractions import Fraction

MIN_SIGNIFICANT_DIGITS = 3  # a rounded decimal needs this many to stand for a fraction like 1/3

# Magnitude words multiply the number; they are not units, so "18 thousand" is not 18.
_MAGNITUDE_WORDS = {"hundred", "hundreds", "thousand", "thousands", "million", "millions", "billion",
                    "billions", "trillion", "trillions", "lakh", "lakhs", "crore", "crores"}
_PERCENT_WORDS = {"%", "percent", "per cent", "pct", "percentage"}

_CURRENCY = "$€£¥₹"
# One unit: a run of letters (any script), a degree sign, or a currency sign, with an optional
# power (m^2, m²). Units are joined by spaces, "/", "·", "-" or "*" (km/h, N·m, m/s^2). The
# joiner is never empty: with an optional one, a run of n letters could be split into units
# 2^n ways, and a failing match would try them all (catastrophic backtracking).
_UNIT = rf"(?:°[^\W\d_]*|[^\W\d_]+|[{_CURRENCY}])(?:\^-?\d+|[²³])?"
_UNITS = rf"{_UNIT}(?:(?:\s+|\s*[/·*\-]\s*){_UNIT})*"
_DIGITS = r"(?:\d{1,3}(?:,\d{3})+|\d+)"  # 1234 or 1,234 (never 1,2)
_NUMBER = re.compile(
    rf"""^(?P<sign>[-+])?\s*(?P<currency>[{_CURRENCY}])?\s*(?P<sign2>[-+])?\s*
    (?:
        (?P<num>{_DIGITS})\s*/\s*(?P<den>{_DIGITS})                                    # 3/4
      | (?P<int>{_DIGITS})?(?:\.(?P<frac>\d*))?(?P<exp>[eE][-+]?\d+)?(?P<dots>\.\.\.|…)?  # 1.5, .5, 5.
    )
    \s*(?P<percent>%)?
    \s*(?P<units>{_UNITS})?
    \s*\.?$""",
    re.VERBOSE,
)
_OVERLINE = re.compile(r"^(?P<sign>-)?(?P<int>\d*)\.(?P<frac>\d*)\\overline\{(?P<rep>\d+)\}$")
_LATEX_WRAPPERS = re.compile(r"\\(?:text|textbf|textrm|mathrm|mbox|operatorname)\s*\{([^{}]*)\}")
_MATH_DELIMITERS = (("$$", "$$"), ("\\[", "\\]"), ("\\(", "\\)"), ("$", "$"))


@dataclass(frozen=True)
class Number:
    """An exact value and how it was written.

    ``decimals``: digits written after the decimal point when the text was a terminating
    decimal (``0.333`` -> 3), else ``None`` (integers, fractions, repeating decimals, values
    read by math-verify). ``significant``: significant digits written (``0.0333`` -> 3).
    """

    value: Fraction
    decimals: int | None = None
    significant: int = 0


def looks_like_latex(text: str) -> bool:
    """A backslash, a brace or a ``$...$`` pair: not plain text (a single ``$5`` is currency)."""
    return bool(re.search(r"[\\{}]", text)) or text.count("$") >= 2


def strip_light_latex(text: str) -> str:
    """Remove math delimiters and the LaTeX that only decorates a number; leave the rest."""
    s = text.strip()
    for left, right in _MATH_DELIMITERS:
        if len(s) > len(left) + len(right) and s.startswith(left) and s.endswith(right):
            s = s[len(left) : -len(right)].strip()
            break
    s = _LATEX_WRAPPERS.sub(r" \1", s)
    s = s.replace("\\$", "$").replace("\\%", "%").replace("{,}", ",")
    s = re.sub(r"\^\s*\{?\\circ\}?", "°", s)
    s = re.sub(r"\\[,!;: ]|~", " ", s)
    return s.strip()


def _decimal(integer: str, fraction: str, exponent: str) -> tuple[Fraction, int | None, int]:
    digits = (integer + fraction).lstrip("0")
    significant = len(digits) if digits else 1
    value = Fraction(f"{integer or '0'}.{fraction or '0'}{exponent}")
    decimals = len(fraction) if fraction and not exponent else None
    return value, decimals, significant


def _repeating(integer: str, fraction: str) -> Fraction | None:
    """``0.1666`` written with an ellipsis -> 1/6: the shortest block the digits end in, twice."""
    n = len(fraction)
    for block in range(1, n // 2 + 1):
        for start in range(0, n - 2 * block + 1):
            tail = fraction[start:]
            if all(tail[i] == tail[i - block] for i in range(block, len(tail))):
                return _repeating_value(integer, fraction[:start], tail[:block])
    return None


def _repeating_value(integer: str, prefix: str, block: str) -> Fraction:
    """integer . prefix (block)(block)... as an exact fraction."""
    head = Fraction(int(integer or "0")) + Fraction(int(prefix or "0"), 10 ** len(prefix))
    return head + Fraction(int(block), (10 ** len(block) - 1) * 10 ** len(prefix))


def _unit_words_allowed(units: str) -> bool:
    """Unit words, not a variable (``x``, ``m``) or a magnitude (``thousand``)."""
    words = units.lower().split()
    if re.fullmatch(r"[A-Za-z]", units.strip()):
        return False  # 5x, 5 m: a lone Latin letter is a variable
    return not (words and re.sub(r"\W", "", words[0]) in _MAGNITUDE_WORDS)


def read_numbers(text: str | None) -> tuple[Number, ...]:
    """The number(s) an answer reads as, plainly (see the module docstring); ``()`` if none.

    Two readings for a percentage (10% -> 10 and 1/10), one otherwise.
    """
    if text is None:
        return ()
    s = strip_light_latex(str(text)).replace("\u2212", "-")  # Unicode minus
    if len(s) > 100:  # no plain number with its units is this long; keep the regex cheap
        return ()
    overline = _OVERLINE.match(s)
    if overline:
        value = _repeating_value(overline["int"], overline["frac"], overline["rep"])
        return (Number(-value if overline["sign"] else value),)
    if looks_like_latex(s):
        return ()
    m = _NUMBER.match(s)
    if not m or (m["int"] is None and not m["frac"] and m["num"] is None):
        return ()
    units = (m["units"] or "").strip()
    percent = bool(m["percent"]) or units.lower() in _PERCENT_WORDS
    if units and units.lower() not in _PERCENT_WORDS and not _unit_words_allowed(units):
        return ()
    negative = (m["sign"] == "-") != (m["sign2"] == "-")
    if m["num"] is not None:
        den = int(m["den"].replace(",", ""))
        if den == 0:
            return ()
        number = Number(Fraction(int(m["num"].replace(",", "")), den))
    else:
        integer, fraction = (m["int"] or "").replace(",", ""), m["frac"] or ""
        repeating = _repeating(integer, fraction) if m["dots"] and not m["exp"] else None
        if repeating is not None:
            number = Number(repeating)
        else:
            value, decimals, significant = _decimal(integer, fraction, m["exp"] or "")
            number = Number(value, decimals, significant)
    if negative:
        number = Number(-number.value, number.decimals, number.significant)
    if percent:  # "10%" is 10 (% as a unit, GSM8K style) and 0.1 (its mathematical value)
        return (number, Number(number.value / 100, None if number.decimals is None else number.decimals + 2,
                               number.significant))
    return (number,)


def has_finite_decimal(value: Fraction) -> bool:
    """Whether ``value`` can be written exactly as a decimal (denominator 2^a 5^b)."""
    den = value.denominator
    for p in (2, 5):
        while den % p == 0:
            den //= p
    return den == 1


def _truncate(value: Fraction, decimals: int) -> Fraction:
    scaled = value * 10**decimals
    whole = scaled.numerator // scaled.denominator if scaled >= 0 else -((-scaled.numerator) // scaled.denominator)
    return Fraction(whole, 10**decimals)


def _round_half_away(value: Fraction, decimals: int) -> Fraction:
    scaled = abs(value) * 10**decimals
    whole = (scaled + Fraction(1, 2)).__floor__()
    return Fraction(whole if value >= 0 else -whole, 10**decimals)


def is_rounding_of(written: Number, exact: Fraction) -> bool:
    """Rule 2 of the module docstring: ``written`` is ``exact`` rounded or truncated."""
    if written.decimals is None or written.significant < MIN_SIGNIFICANT_DIGITS:
        return False
    if has_finite_decimal(exact):
        return False
    return written.value in (_round_half_away(exact, written.decimals), _truncate(exact, written.decimals))


def numbers_match(first: tuple[Number, ...] | Number, second: tuple[Number, ...] | Number) -> bool:
    """Whether any reading of ``first`` matches any reading of ``second`` (module docstring)."""
    firsts = (first,) if isinstance(first, Number) else first
    seconds = (second,) if isinstance(second, Number) else second
    return any(
        a.value == b.value or is_rounding_of(a, b.value) or is_rounding_of(b, a.value)
        for a in firsts
        for b in seconds
    )
