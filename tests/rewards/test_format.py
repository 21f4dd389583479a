"""Tables for the strict format reward and the tag-count reward."""

import pytest

from backend.rewards import format as format_reward
from backend.rewards import tag_count

TINY = "<think>3+8+0=11,7+5+1=13</think><answer>1431</answer>"


@pytest.mark.parametrize(
    "completion, expected",
    [
        (TINY, 1.0),  # the tiny model: no whitespace between tags
        ("<think>\nx\n</think>\n<answer>\n5\n</answer>\n", 1.0),  # newlines around tags
        ("  <think>x</think> <answer>5</answer>  ", 1.0),  # surrounding whitespace is stripped
        ("<think></think><answer>5</answer>", 1.0),  # an empty thought is still the format
        ("<think>x</think><answer> </answer>", 0.0),  # blank answer
        ("<answer>5</answer>", 0.0),  # no thought
        ("<think>x</think>", 0.0),  # no answer
        ("<think>x</think><answer>5</answer> done", 0.0),  # text after the answer
        ("ok <think>x</think><answer>5</answer>", 0.0),  # text before the thought
        ("<think>x</think> so 5 <answer>5</answer>", 1.0),  # R1's readable summary between the parts
        ("<think>3+8+0=11</think>3+8=11<answer>11</answer>", 1.0),  # the tiny cold start's summary
        ("<think>x</think><answer>4</answer><answer>5</answer>", 0.0),  # two answers
        ("<think>x</think><answer><answer>5</answer></answer>", 0.0),  # nested answer tags
        ("<think>a<think>b</think><answer>5</answer>", 0.0),  # two <think> openings
        ("<think>x</think><answer>5", 0.0),  # unclosed answer
        ("<think>x<answer>5</answer>", 0.0),  # unclosed thought
        ("<answer>5</answer><think>x</think>", 0.0),  # parts in the wrong order
        ("1431", 0.0),  # plain answer
        ("", 0.0),  # empty completion
        (None, 0.0),  # malformed completion
        ([{"role": "assistant", "content": TINY}], 1.0),  # conversational completion
    ],
)
def test_format(completion, expected):
    assert format_reward(prompts=["p"], completions=[completion]) == [expected]


@pytest.mark.parametrize(
    "completion, expected",
    [
        (TINY, 1.0),  # all four tags once
        ("<answer>5</answer>", 0.5),  # answer tags only
        ("<think>x", 0.25),  # a single opening tag
        ("<think>a</think><think>b</think><answer>5</answer>", 0.5),  # doubled think tags earn nothing
        ("</think></answer>", 0.5),  # closing tags only
        ("<answer>5</answer> text <think>x</think>", 1.0),  # order is not checked here
        ("1431", 0.0),  # no tags
        ("", 0.0),  # empty completion
        ([{"role": "assistant", "content": "<think>x</think>"}], 0.5),  # conversational
    ],
)
def test_tag_count(completion, expected):
    assert tag_count(prompts=["p"], completions=[completion]) == [expected]
