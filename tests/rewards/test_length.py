"""Tables for the Kimi k1.5 length penalty and the cosine-scaled length reward."""

import pickle

import pytest

from backend.rewards.length import COSINE_MAX_LEN, check_cosine_options, cosine_length, length, make_cosine_length

RIGHT = "<answer>5</answer>"
WRONG = "<answer>4</answer>"


@pytest.mark.parametrize(
    "completions, answers, ids_lengths, expected",
    [
        # all correct, token lengths 2/4/6: 0.5 - (len - 2) / 4
        ([RIGHT, RIGHT, RIGHT], ["5", "5", "5"], [2, 4, 6], [0.5, 0.0, -0.5]),
        # all wrong, same lengths: min(0, lambda), so short wrong answers earn nothing
        ([WRONG, WRONG, WRONG], ["5", "5", "5"], [2, 4, 6], [0.0, 0.0, -0.5]),
        # mixed: a short wrong answer and a long right one
        ([WRONG, RIGHT], ["5", "5"], [3, 13], [0.0, -0.5]),
        # all lengths equal: no length signal
        ([RIGHT, WRONG], ["5", "5"], [7, 7], [0.0, 0.0]),
        # a row without a reference is skipped but still sets the length range
        ([RIGHT, RIGHT], ["5", None], [0, 10], [0.5, None]),
        # empty and malformed completions are wrong answers of length 0
        ([RIGHT, "", None], ["5", "5", "5"], [10, 0, 0], [-0.5, 0.0, 0.0]),
    ],
)
def test_length_with_token_ids(completions, answers, ids_lengths, expected):
    completion_ids = [[1] * n for n in ids_lengths]
    prompts = ["p"] * len(completions)
    rewards = length(prompts=prompts, completions=completions, answer=answers, completion_ids=completion_ids)
    assert rewards == [pytest.approx(e) if e is not None else None for e in expected]


def test_length_counts_characters_without_token_ids():
    # 18 and 38 characters: the shorter right one gets +0.5, the longer one -0.5
    long_right = "<think>" + "x" * 5 + "</think>" + RIGHT
    assert len(RIGHT) == 18 and len(long_right) == 38
    assert length(prompts=["p", "q"], completions=[RIGHT, long_right], answer=["5", "5"]) == [0.5, -0.5]


def test_length_without_answer_column_skips_every_row():
    assert length(prompts=["p"], completions=[RIGHT]) == [None]


def test_length_empty_batch():
    assert length(prompts=[], completions=[], answer=[]) == []


@pytest.mark.parametrize(
    "correct, n_tokens, expected",
    [
        (True, 0, 1.0),  # right and empty: the top of the correct range
        (True, 5, 0.75),  # right at half of max_len: cos(pi/2) = 0, the middle
        (True, 10, 0.5),  # right at max_len
        (True, 20, 0.5),  # past max_len is clamped, not back up the cosine
        (False, 0, -1.0),  # wrong and short: the worst
        (False, 5, -0.75),  # wrong at half of max_len
        (False, 10, -0.5),  # wrong at max_len: the mildest penalty
        (False, 30, -0.5),  # clamped past max_len
    ],
)
def test_cosine_length(correct, n_tokens, expected):
    reward = make_cosine_length(max_len=10)
    completion = RIGHT if correct else WRONG
    rewards = reward(prompts=["p"], completions=[completion], answer=["5"], completion_ids=[[1] * n_tokens])
    assert rewards == [pytest.approx(expected)]


def test_cosine_length_defaults_count_characters():
    # default max_len 1000; a right answer of 500 characters sits in the middle of [0.5, 1.0]
    assert COSINE_MAX_LEN == 1000
    completion = "<think>" + "x" * (500 - len("<think></think>") - len(RIGHT)) + "</think>" + RIGHT
    assert len(completion) == 500
    assert cosine_length(prompts=["p"], completions=[completion], answer=["5"]) == [pytest.approx(0.75)]


def test_cosine_length_custom_bounds():
    reward = make_cosine_length(max_len=4, min_value_correct=0.0, max_value_correct=2.0)
    assert reward(prompts=["p"], completions=[RIGHT], answer=["5"], completion_ids=[[1, 1]]) == [pytest.approx(1.0)]


def test_cosine_length_skips_missing_reference():
    completions, completion_ids = [RIGHT, RIGHT], [[1], [1]]
    answers = [None, "5"]
    rewards = cosine_length(prompts=["p", "q"], completions=completions, answer=answers, completion_ids=completion_ids)
    assert rewards[0] is None and rewards[1] == pytest.approx(1.0, abs=1e-4)


def test_make_cosine_length_is_named_and_picklable():
    # TRL logs rewards by __name__ and may send reward functions to a spawned process.
    reward = make_cosine_length(max_len=10)
    restored = pickle.loads(pickle.dumps(reward))
    assert reward.__name__ == restored.__name__ == "cosine_length"
    assert restored(prompts=["p"], completions=[RIGHT], answer=["5"], completion_ids=[[1] * 5]) == [pytest.approx(0.75)]


def test_make_cosine_length_rejects_bad_max_len():
    with pytest.raises(ValueError, match="max_len"):
        make_cosine_length(max_len=0)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"max_len": 0}, "max_len must be a whole number"),  # no length to scale by
        ({"max_len": 12.5}, "max_len must be a whole number"),  # tokens are counted whole
        ({"max_len": True}, "max_len must be a whole number"),  # a flag is not a length
        ({"min_value_correct": float("nan")}, "finite"),  # NaN would poison the total reward
        ({"max_value_wrong": "x"}, "finite number"),  # not a number
        ({"min_value_correct": -2.0}, "ordered"),  # a right answer could score below a wrong one
        ({"min_value_wrong": 0.0}, "ordered"),  # short and wrong would beat long and wrong
    ],
)
def test_check_cosine_options_says_how_to_fix(kwargs, message):
    with pytest.raises(ValueError, match=message):
        check_cosine_options(**kwargs)


@pytest.mark.parametrize("reference", [None, float("nan"), "", "nan"])
def test_length_rewards_skip_missing_references(reference):
    # A NaN from pandas is a missing reference: no correctness, so no length-shaped reward.
    kwargs = {"prompts": ["p", "q"], "completions": [RIGHT, RIGHT], "answer": ["5", reference],
              "completion_ids": [[1] * 3, [1] * 9]}
    assert length(**kwargs)[1] is None
    assert cosine_length(**kwargs)[1] is None


@pytest.mark.parametrize(
    "bounds",
    [
        {},  # TRL's defaults, which are ours
        {"min_value_wrong": -2.0, "max_value_wrong": 0.0, "min_value_correct": 0.0, "max_value_correct": 3.0},
    ],
)
def test_cosine_length_equals_trls_cosine_scaled_reward(bounds):
    # Our formula is TRL's (see backend/rewards/length.py for why it is not called): on
    # completions where TRL's own correctness agrees with ours, the rewards must be equal,
    # below, at and past max_len.
    from trl.rewards import get_cosine_scaled_reward

    trl_reward = get_cosine_scaled_reward(max_len=10, **bounds)
    ours = make_cosine_length(max_len=10, **bounds)
    texts = ["\\boxed{\\frac{1}{3}}", "\\boxed{\\frac{1}{2}}"]  # right, wrong
    table = {}
    for n_tokens in (0, 1, 3, 5, 9, 10, 25):
        ids = [[1] * n_tokens, [1] * n_tokens]
        expected = trl_reward([[{"role": "assistant", "content": t}] for t in texts], ["\\frac{1}{3}"] * 2, ids)
        got = ours(prompts=["p", "p"], completions=texts, answer=["\\frac{1}{3}"] * 2, completion_ids=ids)
        assert got == pytest.approx(expected)
        table[n_tokens] = expected
    assert table[0][0] > 0 > table[0][1]  # the table covered a right and a wrong answer
