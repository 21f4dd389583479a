"""The language-consistency reward on the two-script addition task: digits are the en
script's numerals (digit_language="en"), Chinese numerals the zh script's; the reward is
symmetric for the two targets, and the mixing check sees a CoT that uses both."""
import pytest

from backend.rewards.language import language_consistency, mixes_scripts

PURE_EN = "<think>8+3+0=11,7+5+1=13</think><answer>131</answer>"
PURE_ZH = "<think>八+三+〇=一一,七+五+一=一三</think><answer>131</answer>"
HALF = "<think>八+三+〇=一一,7+5+1=13</think><answer>131</answer>"  # 5 numerals, 5 digits
SWITCH = "<think>八+三+〇=一一,7+5+1=13,1+0+1=2</think><answer>1131</answer>"  # 5 zh, 9 en


@pytest.mark.parametrize(
    "completion, language, expected",
    [
        (PURE_EN, "en", 1.0),  # digits only, target en
        (PURE_EN, "zh", 0.0),  # digits only, target zh: entirely off-target
        (PURE_ZH, "zh", 1.0),  # numerals only, target zh
        (PURE_ZH, "en", 0.0),  # numerals only, target en
        (HALF, "zh", 0.5),  # half of each: symmetric
        (HALF, "en", 0.5),
        (SWITCH, "zh", 5 / 14),  # switched to digits for two of three columns
        (SWITCH, "en", 9 / 14),
        ("<think>〇+〇+〇=〇</think>", "zh", 1.0),  # 〇 (U+3007) is a Chinese numeral
        ("<think>五+五+〇=一〇,check:一〇</think>", "zh", 7 / 8),  # an English marker in zh
        ("<think></think><answer>5</answer>", "zh", 1.0),  # nothing in the CoT
        ("<answer>5</answer>", "zh", 0.0),  # no think: the whole completion, digits en
    ],
)
def test_two_script_task_scores_both_targets_symmetrically(completion, language, expected):
    rewards = language_consistency(["p"], [completion], language=language, digit_language="en")
    assert rewards == [pytest.approx(expected)]


@pytest.mark.parametrize("completion, language", [(PURE_EN, "zh"), (HALF, "zh"), (PURE_EN, "en")])
def test_digits_stay_neutral_without_digit_language(completion, language):
    """Real data: Arabic digits are normal in a Chinese CoT, so by default they do not count."""
    assert language_consistency(["p"], [completion], language=language) == [1.0]


def test_per_row_columns_as_trl_passes_them():
    rewards = language_consistency(["p"] * 4, [PURE_EN, PURE_ZH, PURE_EN, HALF],
                                   language=["en", "zh", "zh", "zh"],
                                   digit_language=["en", "en", "", "en"])
    assert rewards == [1.0, 1.0, 1.0, pytest.approx(0.5)]  # row 3: digits neutral


@pytest.mark.parametrize(
    "think, mixed",
    [("八+三+〇=一一,7+5+1=13", True), ("八+三+〇=一一", False), ("8+3+0=11", False),
     ("五+五+〇=一〇,check:一〇", True), ("", False)],
)
def test_mixes_scripts(think, mixed):
    assert mixes_scripts(think) is mixed


def test_bad_digit_language_is_refused():
    with pytest.raises(ValueError, match="digit_language"):
        language_consistency(["p"], [PURE_EN], language="en", digit_language="fr")
