"""The reward lookup table: every name present, every function batch-shaped like TRL expects."""

import pytest

from backend.rewards import REWARD_FUNCTIONS, describe_reward

NAMES = ["accuracy", "format", "tag_count", "language_consistency", "length", "cosine_length", "repetition"]

COMPLETIONS = [
    "<think>3+8+0=11,7+5+1=13</think><answer>1431</answer>",  # tiny model, right
    "<answer>1430</answer>",  # wrong, no thought
    [{"role": "assistant", "content": "<think>先算</think>\\boxed{1431}"}],  # conversational, boxed
    "",  # empty
]


def test_every_reward_is_registered():
    assert sorted(REWARD_FUNCTIONS) == sorted(NAMES)


@pytest.mark.parametrize("name", NAMES)
def test_reward_returns_one_value_per_completion(name):
    # Called the way TRL calls it: keyword args, extra columns and bookkeeping included.
    rewards = REWARD_FUNCTIONS[name](
        prompts=["1431=?"] * len(COMPLETIONS),
        completions=COMPLETIONS,
        answer=["1431"] * len(COMPLETIONS),
        completion_ids=[[1] * 20, [1] * 5, [1] * 9, []],
        trainer_state=None,
        difficulty=[1, 2, 3, 4],
    )
    assert len(rewards) == len(COMPLETIONS)
    assert all(r is None or isinstance(r, float) for r in rewards)


@pytest.mark.parametrize("name", NAMES)
def test_reward_name_is_what_trl_logs(name):
    # TRL logs each reward under reward_func.__name__; it must match the lookup key.
    assert REWARD_FUNCTIONS[name].__name__ == name


@pytest.mark.parametrize("name", NAMES)
def test_describe_reward_is_one_line(name):
    description = describe_reward(name)
    assert description and "\n" not in description


def test_describe_unknown_reward_lists_known_ones():
    with pytest.raises(KeyError, match="accuracy"):
        describe_reward("helpfulness")
