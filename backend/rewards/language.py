"""Language-consistency reward (DeepSeek-R1, stage 2): keep the chain of thought in one language.

The R1 paper adds this reward because RL made the CoT mix languages; it is "the proportion of
target language words in the CoT". Here the CoT is the text inside ``<think>`` (the whole
completion when there is no ``<think>``).

Method: Unicode script ranges, not a language-identification model. No maintained lang-id
library works offline on short, mixed, math-heavy strings (they classify whole texts, need
downloaded models, and guess wildly on a handful of characters), while for the languages this
reward targets, Chinese vs English, the script of each character decides the language exactly
and costs nothing. Words are:

- a run of Latin letters (``hello``, ``café``) is one Latin word;
- each Han ideograph is one word (Chinese has no spaces; one character ~ one word);
- a run of letters of any other script (Cyrillic, kana, ...) is one "other" word, never target.

Ignored: digits, punctuation, math symbols, LaTeX commands (``\\frac`` is notation, not English)
and single Latin letters (``x``, ``y`` are variables in a Chinese CoT as much as in an English
one; losing the English word "a" barely moves the share). A CoT with no words at all scores 1.0:
nothing in it is in the wrong language.

Numerals: ``〇`` (U+3007, the Chinese zero, not in the Han blocks) counts as Han. ASCII digits are
neutral notation by default (Arabic digits are normal in a Chinese CoT). A task whose two
"languages" are two ways of writing numbers says ``digit_language="en"``: then each ASCII digit
is one English word, as each Chinese numeral is one Chinese word, and the reward is symmetric.
The tiny addition task does this (its problems carry ``digit_language`` in ``meta``, passed as
a dataset column): ``八+三=一一`` scores 1.0 for ``zh`` and 0.0 for ``en``, ``8+3=11`` the
reverse, and a CoT with half its digits in each script 0.5 for either target.

Languages: ``en`` and ``zh`` (aliases ``english``, ``chinese``, ``cn``; region and script tags
such as ``en-US``, ``zh_Hans`` are dropped). An unsupported language is refused when the run is
configured (:func:`backend.rewards.validate_reward_options` calls :func:`normalize_language`);
should one still reach a training step (a dataset's own ``language`` column), that row gets
``None`` (not scored, which TRL skips) and a warning in the log, never an exception that would
end the stage. A missing value (``None``, NaN, blank) means the default, ``en``.
"""

from __future__ import annotations

import logging
import math
import re
from typing import Any

from backend.rewards.extract import completion_text, split_think_answer

log = logging.getLogger(__name__)

# CJK Unified Ideographs: Extension A, the main block, Compatibility, Extensions B-F and G.
# Plus U+3007 〇, the ideographic zero (a Chinese numeral, in the CJK symbols block).
_HAN = "\u3007\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\U00020000-\U0002ebef\U00030000-\U0003134f"
# Basic Latin letters, Latin-1 letters (without × and ÷), Latin Extended-A/B, Extended Additional.
_LATIN = "A-Za-z\u00c0-\u00d6\u00d8-\u00f6\u00f8-\u00ff\u0100-\u024f\u1e00-\u1eff"
_WORD = re.compile(
    rf"(?P<han>[{_HAN}])|(?P<latin>[{_LATIN}]+)|(?P<other>(?:(?![{_HAN}{_LATIN}])[^\W\d_])+)"
)
_LATEX_COMMAND = re.compile(r"\\[A-Za-z]+")

_LANGUAGE_ALIASES = {"en": "en", "english": "en", "zh": "zh", "chinese": "zh", "cn": "zh"}
SUPPORTED_LANGUAGES = ("en", "zh")


DEFAULT_LANGUAGE = "en"


def normalize_language(language: Any) -> str:
    """``"en"``/``"zh"`` from codes like ``"en-US"``, ``"zh_Hans"``, ``"Chinese"``; missing -> ``"en"``.

    Raises ``ValueError`` for any other language, saying what is supported.
    """
    if language is None or (isinstance(language, float) and math.isnan(language)) or not str(language).strip():
        return DEFAULT_LANGUAGE
    code = re.split(r"[-_]", str(language).strip().lower(), maxsplit=1)[0]
    if code not in _LANGUAGE_ALIASES:
        raise ValueError(
            f"language_consistency supports {', '.join(SUPPORTED_LANGUAGES)} (it counts words by script: "
            f"Latin letters for en, Han characters for zh), got {language!r}; set language to en or zh"
        )
    return _LANGUAGE_ALIASES[code]


def count_words(text: str, digit_language: str | None = None) -> dict[str, int]:
    """Counts of ``han``, ``latin`` and ``other`` words in ``text`` (see module docstring);
    with ``digit_language="en"`` each ASCII digit counts as one ``latin`` word."""
    counts = {"han": 0, "latin": 0, "other": 0}
    for match in _WORD.finditer(_LATEX_COMMAND.sub(" ", text)):
        kind = match.lastgroup
        if kind == "latin" and len(match.group()) == 1:
            continue  # a lone letter is a variable, not a word
        counts[kind] += 1
    if _digit_language(digit_language) == "en":
        counts["latin"] += sum(ch in "0123456789" for ch in text)
    return counts


def _digit_language(value: Any) -> str | None:
    """``"en"`` when ASCII digits are English numerals, ``None`` when they are neutral
    (missing, blank, NaN: a dataset column that only some rows fill)."""
    if value is None or (isinstance(value, float) and math.isnan(value)) or not str(value).strip():
        return None
    if str(value).strip().lower() != "en":
        raise ValueError(f"digit_language must be en or empty (digits are neutral), got {value!r}")
    return "en"


def mixes_scripts(text: str, digit_language: str | None = "en") -> bool:
    """The text has words of both scripts, Latin (with ``digit_language="en"``, ASCII digits)
    and Han: a mixed chain of thought."""
    counts = count_words(text, digit_language)
    return counts["latin"] > 0 and counts["han"] > 0


def target_share(text: str, language: str = "en", digit_language: str | None = None) -> float:
    """Share of words in ``text`` that are in ``language``; 1.0 when there are no words."""
    counts = count_words(text, digit_language)
    total = sum(counts.values())
    if total == 0:
        return 1.0
    target = counts["han"] if normalize_language(language) == "zh" else counts["latin"]
    return target / total


_warned_languages: set[str] = set()


def _language_or_none(language: Any) -> str | None:
    try:
        return normalize_language(language)
    except ValueError as error:
        if str(language) not in _warned_languages:  # once per language, not once per row
            _warned_languages.add(str(language))
            log.warning("language_consistency: rows in language %r are not scored: %s", language, error)
        return None


def _per_row(name: str, value: Any, n: int) -> list:
    """One value for the whole batch, or (as TRL passes a dataset column) a list of ``n``."""
    if not isinstance(value, (list, tuple)):  # one value for the batch (a code, None, NaN)
        return [value] * n
    if len(value) != n:
        raise ValueError(f"{name} has {len(value)} entries for {n} completions")
    return list(value)


def language_consistency(
    prompts: list, completions: list, language: str | list[str | None] | None = DEFAULT_LANGUAGE,
    digit_language: str | list[str | None] | None = None, **kwargs: Any
) -> list[float | None]:
    """Share of target-language words in each completion's CoT, in [0, 1].

    ``language`` is one code for the whole batch (``"en"`` by default, or bound with
    functools.partial) or, as TRL passes a dataset column, a list aligned with ``completions``.
    A row in an unsupported language scores ``None`` (see the module docstring).
    ``digit_language`` (one value or a column): ``"en"`` where ASCII digits are English
    numerals (the two-script addition task), else digits are neutral.
    """
    languages = _per_row("language", language, len(completions))
    digit_languages = _per_row("digit_language", digit_language, len(completions))
    rewards: list[float | None] = []
    for completion, lang, digits in zip(completions, languages, digit_languages):
        target = _language_or_none(lang)
        if target is None:
            rewards.append(None)
            continue
        text = completion_text(completion)
        think, _ = split_think_answer(text)
        rewards.append(target_share(think if think is not None else text, target, digits))
    return rewards
