"""Tables for the language-consistency reward (share of target-language words in the CoT)."""

import pytest

from backend.rewards.language import count_words, language_consistency, normalize_language

TINY = "<think>3+8+0=11,7+5+1=13</think><answer>1431</answer>"


@pytest.mark.parametrize(
    "completion, language, expected",
    [
        (TINY, "en", 1.0),  # tiny model: digits only, no words, nothing in the wrong language
        (TINY, "zh", 1.0),  # ... whatever the target
        ("<think>I think the answer is 5</think><answer>5</answer>", "en", 1.0),  # all English
        ("<think>I think the answer is 5</think><answer>5</answer>", "zh", 0.0),  # English CoT, zh target
        ("<think>我们先算个位</think><answer>5</answer>", "zh", 1.0),  # 6 Han characters
        ("<think>我们先算个位</think><answer>5</answer>", "en", 0.0),  # Chinese CoT, en target
        ("<think>先算 units digit 然后进位</think>", "zh", 0.75),  # mixed: 6 Han / (6 + 2 Latin words)
        ("<think>先算 units digit 然后进位</think>", "en", 0.25),  # mixed: 2 Latin / 8
        ("<think>因为 \\frac{x}{y} = 2</think>", "zh", 1.0),  # LaTeX commands and variables ignored
        ("<think>let x + y = 3, so 所以</think>", "en", 0.5),  # "let", "so" vs 所, 以 (x, y ignored)
        ("<think>считаем the sum</think>", "en", 2 / 3),  # other scripts count as non-target words
        ("<think>café résumé</think>", "en", 1.0),  # accented Latin letters are Latin
        ("<think></think><answer>答案</answer>", "en", 1.0),  # empty CoT; the answer is not the CoT
        ("The answer is 5", "en", 1.0),  # no <think>: the whole completion is the CoT
        ("The answer is 5", "zh", 0.0),  # ... scored against zh
        ("<think>unclosed 思考", "en", 1 / 3),  # unclosed think: the rest, 1 Latin word / (1 + 2 Han)
        ("", "en", 1.0),  # empty completion
        (None, "en", 1.0),  # malformed completion reads as empty
        ([{"role": "assistant", "content": "<think>算</think>"}], "zh", 1.0),  # conversational
        ("<think>全部 all</think>", "zh-CN", 2 / 3),  # region-tagged language code
        ("<think>全部 all</think>", None, 1 / 3),  # None defaults to English
    ],
)
def test_language_consistency(completion, language, expected):
    rewards = language_consistency(prompts=["p"], completions=[completion], language=language)
    assert rewards == [pytest.approx(expected)]


def test_default_language_is_english():
    # Without a language kwarg the target is English.
    assert language_consistency(prompts=["p"], completions=["<think>先算 units digit 然后进位</think>"]) == [0.25]


def test_language_column_per_sample():
    # TRL passes a dataset column as a list aligned with the completions.
    completions = ["<think>add the digits</think>", "<think>add the digits</think>"]
    assert language_consistency(prompts=["p", "q"], completions=completions, language=["en", "zh"]) == [1.0, 0.0]


def test_language_column_must_align():
    with pytest.raises(ValueError):
        language_consistency(prompts=["p"], completions=["a", "b"], language=["en"])


@pytest.mark.parametrize(
    "code, expected",
    [
        ("en", "en"),  # plain code
        ("EN-us", "en"),  # case and region
        ("zh_Hans", "zh"),  # script subtag
        ("Chinese", "zh"),  # language name
        (None, "en"),  # default
        (float("nan"), "en"),  # missing, as pandas reads it
    ],
)
def test_normalize_language(code, expected):
    assert normalize_language(code) == expected


def test_unsupported_language_says_what_is_supported():
    # Refused when the run is configured (validate_reward_options calls this), with the fix.
    with pytest.raises(ValueError, match="supports en, zh.*set language to en or zh"):
        normalize_language("fr")


@pytest.mark.parametrize(
    "language, expected",
    [
        ("fr", [None, None]),  # an unsupported language reaching a training step: rows not scored
        (["fr", "en"], [None, 1.0]),  # a dataset column with one bad row: only that row is skipped
        ([float("nan"), "zh"], [1.0, 0.0]),  # a missing value (pandas NaN) means the default, en
        (["", None], [1.0, 1.0]),  # blank and None: the default too
    ],
)
def test_language_consistency_never_raises_on_a_language_mid_training(language, expected):
    completions = ["<think>add the digits</think>", "<think>add the digits</think>"]
    assert language_consistency(prompts=["p", "q"], completions=completions, language=language) == expected


@pytest.mark.parametrize(
    "text, expected",
    [
        ("hello world", {"han": 0, "latin": 2, "other": 0}),  # two Latin words
        ("你好world", {"han": 2, "latin": 1, "other": 0}),  # no space between scripts
        ("x=1, y=2", {"han": 0, "latin": 0, "other": 0}),  # variables and digits only
        ("\\sqrt{2} \\cdot 3", {"han": 0, "latin": 0, "other": 0}),  # LaTeX commands only
        ("привет мир", {"han": 0, "latin": 0, "other": 2}),  # Cyrillic words
        ("ひらがな", {"han": 0, "latin": 0, "other": 1}),  # kana is not Han
    ],
)
def test_count_words(text, expected):
    assert count_words(text) == expected
