"""Tables for the shared helpers: completion_text, extract_answer, split_think_answer."""

import pytest

from backend.rewards.extract import completion_text, extract_answer, split_think_answer

TINY = "<think>3+8+0=11,7+5+1=13</think><answer>1431</answer>"


@pytest.mark.parametrize(
    "completion, expected",
    [
        ("abc", "abc"),  # standard (string) completion
        ([{"role": "assistant", "content": "x"}], "x"),  # TRL conversational completion
        (  # several messages: the last assistant one
            [
                {"role": "user", "content": "q"},
                {"role": "assistant", "content": "a1"},
                {"role": "assistant", "content": "a2"},
                {"role": "user", "content": "later"},
            ],
            "a2",
        ),
        ([{"role": "user", "content": "q"}], "q"),  # no assistant message: the last message
        ({"role": "assistant", "content": "x"}, "x"),  # a single message dict
        (  # content given as text parts
            [{"role": "assistant", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]}],
            "ab",
        ),
        ([{"role": "assistant", "content": None}], ""),  # malformed: no content
        ([], ""),  # malformed: empty message list
        (None, ""),  # malformed: None
        (42, ""),  # malformed: not text at all
    ],
)
def test_completion_text(completion, expected):
    assert completion_text(completion) == expected


@pytest.mark.parametrize(
    "text, expected",
    [
        (TINY, "1431"),  # the tiny model's format
        ("<answer> 5 \n</answer>", "5"),  # content is stripped
        ("<answer>12</answer> wait <answer>13</answer>", "13"),  # several answers: the last one
        ("<answer><answer>7</answer></answer>", "7"),  # nested tags: the innermost content
        ("<answer>5", None),  # unclosed answer tag, no box
        ("<answer>5</answer> <answer>6", "5"),  # trailing unclosed answer: the last closed one
        ("5</answer>", None),  # closing tag without an opening one
        ("<answer></answer>", None),  # empty answer tag is no answer
        ("\\boxed{3} <answer>  </answer>", "3"),  # blank answer tag falls back to the box
        ("<answer>\\boxed{5}</answer>", "5"),  # a box that is the whole tag content is unwrapped
        ("<answer>\\boxed{1} or \\boxed{2}</answer>", "\\boxed{1} or \\boxed{2}"),  # not one box: kept
        ("so \\boxed{\\frac{1}{2}}.", "\\frac{1}{2}"),  # box with nested braces
        ("\\boxed{1} no, \\boxed{2}", "2"),  # several boxes: the last one
        ("\\boxed{1} then \\boxed{2", "1"),  # last box unclosed (truncated): an earlier balanced one
        ("\\boxed{\\{1,2\\}}", "\\{1,2\\}"),  # escaped braces inside a box are literal
        ("\\boxed{1}<answer>2</answer>", "2"),  # an answer tag wins over a box
        ("\\boxed{}", None),  # empty box
        ("1431", None),  # bare number: no answer marker
        ("", None),  # empty completion
        (None, None),  # malformed completion
        ([{"role": "assistant", "content": TINY}], "1431"),  # conversational completion
    ],
)
def test_extract_answer(text, expected):
    assert extract_answer(text) == expected


@pytest.mark.parametrize(
    "text, expected",
    [
        (TINY, ("3+8+0=11,7+5+1=13", "1431")),  # the tiny model's format
        ("<answer>5</answer>", (None, "5")),  # no thought
        ("hello", (None, None)),  # neither part
        ("<think>reason</think> The answer is 5.", ("reason", "The answer is 5.")),  # R1 chat format
        ("reason</think><answer>5</answer>", ("reason", "5")),  # <think> prefilled by the chat template
        ("<think>still going", ("still going", None)),  # unclosed think (cut off)
        ("<think>abc<answer>5</answer>", ("abc", "5")),  # unclosed think followed by an answer
        ("<think></think><answer>5</answer>", ("", "5")),  # empty thought is "" not None
        ("<think>a</think><answer></answer>", ("a", "")),  # empty answer tag is "" not None
        ("<think>a</think>  \n", ("a", None)),  # only whitespace after the thought
        ("<think>a</think><answer>\\boxed{5}</answer>", ("a", "\\boxed{5}")),  # raw answer, box kept
        ("", (None, None)),  # empty completion
    ],
)
def test_split_think_answer(text, expected):
    assert split_think_answer(text) == expected
