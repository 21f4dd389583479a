"""Tables for the readable-summary reward: a short summary after </think>, in the target
language, stating the answer."""

import pickle

import pytest

from backend.rewards import build_reward_functions, readable_summary, validate_reward_options
from backend.rewards.summary import summary_problems, summary_text

THINK = "<think>8+3+0=11,7+5+1=13,5+8+1=14</think>"


@pytest.mark.parametrize(
    "completion, expected",
    [
        (f"{THINK}578+853=1431<answer>1431</answer>", 1.0),  # the cold-start form: the whole sum
        (f"{THINK}=1431<answer>1431</answer>", 1.0),  # the shortest restatement of the result
        (f"{THINK}<answer>1431</answer>", 0.0),  # no summary between </think> and <answer>
        ("<answer>1431</answer>", 0.0),  # no reasoning, so nothing to summarise
        (f"{THINK}=1432<answer>1431</answer>", 0.0),  # a summary that contradicts the answer
        (f"{THINK}=14310<answer>1431</answer>", 0.0),  # the answer only inside a longer number
        (f"{THINK}=1431", 1.0),  # no answer tag: the text after </think> is the summary
        (f"{THINK}=1431<think>1+1=2</think><answer>1431</answer>", 0.0),  # more reasoning, not a summary
        ("<think>x</think>   <answer>5</answer>", 0.0),  # a blank summary
        (f"{THINK}578+853=1431<answer>-</answer>", 0.0),  # the summary and the answer (a refusal) disagree
        ("", 0.0),  # empty completion
        (None, 0.0),  # malformed completion
        ([{"role": "assistant", "content": f"{THINK}=1431<answer>1431</answer>"}], 1.0),  # conversational
    ],
)
def test_tiny_completions(completion, expected):
    assert readable_summary(prompts=["578+853="], completions=[completion]) == [expected]


LONG = "So the total is 18 dollars. " * 20  # 559 characters once stripped


@pytest.mark.parametrize(
    "completion, settings, expected",
    [
        ("<think>算一下</think>So the total is 18 dollars.<answer>18</answer>", {}, 1.0),  # English summary
        ("<think>x</think>所以答案是 18。<answer>18</answer>", {}, 0.0),  # Chinese summary, English reader
        ("<think>x</think>所以答案是 18。<answer>18</answer>", {"language": "zh"}, 1.0),  # ... Chinese reader
        ("<think>x</think>So 答案 is 18.<answer>18</answer>", {"min_share": 0.5}, 1.0),  # 2 of 4 words English
        ("<think>x</think>So 答案 is 18.<answer>18</answer>", {}, 0.0),  # ... under the default 90%
        (f"<think>x</think>{LONG}<answer>18</answer>", {}, 0.0),  # over the 300-character budget
        (f"<think>x</think>{LONG}<answer>18</answer>", {"max_chars": 600}, 1.0),  # a larger budget
        ("<think>x</think>It is one half.<answer>\\frac{1}{2}</answer>", {}, 0.0),  # answer not stated
        ("<think>x</think>It is one half.<answer>\\frac{1}{2}</answer>",
         {"restates_answer": False}, 1.0),  # ... no restating required
        ("<think>x</think>The answer is Monday.<answer>monday</answer>", {}, 1.0),  # case ignored
        ("<think>x</think>About 2.5 km.<answer>2</answer>", {}, 0.0),  # 2 only as part of 2.5
    ],
)
def test_real_text(completion, settings, expected):
    assert readable_summary(prompts=["q"], completions=[completion], **settings) == [expected]


@pytest.mark.parametrize(
    "completion, reason",
    [
        ("<answer>5</answer>", "no </think>"),
        ("<think>x</think><answer>5</answer>", "nothing between"),
        (f"<think>x</think>{LONG}<answer>18</answer>", "559 characters is over the budget of 300"),
        ("<think>x</think>=5<think>y</think><answer>5</answer>", "format tags"),
        ("<think>x</think>所以是 5<answer>5</answer>", "only 0% of the summary is in en"),
        ("<think>x</think>=6<answer>5</answer>", "does not state the answer 5"),
    ],
)
def test_problems_say_which_check_failed(completion, reason):
    problems = summary_problems(completion)
    assert len(problems) == 1 and reason in problems[0]


def test_summary_text_stops_at_the_answer_tag():
    assert summary_text(f"{THINK} 578+853=1431 <answer>1431</answer>") == "578+853=1431"
    assert summary_text("<answer>1</answer>") is None


def test_language_column_wins_row_by_row_and_unsupported_rows_are_not_scored():
    completions = ["<think>x</think>所以答案是 18。<answer>18</answer>"] * 3
    assert readable_summary(prompts=["q"] * 3, completions=completions, language=["zh", "en", "fr"]) == [
        1.0,
        0.0,
        None,
    ]


def test_built_with_options_pickles_and_keeps_its_name():
    (function,) = build_reward_functions(["readable_summary"], {"summary_max_chars": 5})
    assert function.__name__ == "readable_summary"
    completions = [f"{THINK}=1431<answer>1431</answer>", f"{THINK}578+853=1431<answer>1431</answer>"]
    assert function(prompts=["p", "p"], completions=completions) == [1.0, 0.0]  # 5 vs 12 characters
    assert pickle.loads(pickle.dumps(function))(prompts=["p"], completions=completions[:1]) == [1.0]


@pytest.mark.parametrize(
    "options, message",
    [
        ({"summary_max_chars": 0}, "summary_max_chars must be a whole number"),
        ({"summary_max_chars": 2.5}, "summary_max_chars must be a whole number"),
        ({"summary_min_share": 1.5}, "summary_min_share must be a share between 0 and 1"),
        ({"summary_restates_answer": "yes"}, "summary_restates_answer must be true or false"),
    ],
)
def test_bad_options_are_refused_even_while_unused(options, message):
    with pytest.raises(ValueError, match=message):
        validate_reward_options(["accuracy"], options)
