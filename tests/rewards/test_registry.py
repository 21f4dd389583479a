"""The reward lookup table, and the check of reward names and options when a run is configured."""

import pickle

import pytest

from backend.rewards import REWARD_FUNCTIONS, build_reward_functions, describe_reward, validate_reward_options

NAMES = [
    "accuracy", "format", "tag_count", "language_consistency", "length", "cosine_length", "repetition",
    "readable_summary",
]

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
    with pytest.raises(KeyError, match="accuracy.*helpfulness"):
        describe_reward("honesty")


@pytest.mark.parametrize("name", ["helpfulness", "harmlessness"])
def test_reward_model_rewards_are_described_too(name):
    # The group inspector shows reward-model scores like rule rewards, with a description.
    assert "reward model" in describe_reward(name)


@pytest.mark.parametrize(
    "names, options",
    [
        (["accuracy", "format"], {}),  # the r1-zero default
        (NAMES, {"language": "zh-CN", "cosine_max_len": 40}),  # every reward, with settings
        (["language_consistency"], {"language": "Chinese"}),  # a language name
        (["cosine_length"], {"cosine_max_len": None}),  # None means the default
        (["repetition"], {"repetition_ngram_size": 4, "repetition_max_penalty": -0.5}),  # repetition settings
    ],
)
def test_validate_reward_options_accepts_good_settings(names, options):
    assert validate_reward_options(names, options) is None


@pytest.mark.parametrize(
    "names, options, message",
    [
        (["accuracy", "helpfulness"], {}, "unknown reward function.*'helpfulness'.*available: accuracy"),  # typo'd reward
        ([], {}, "at least one reward"),  # nothing to train on
        ("accuracy,format", {}, "as a list"),  # a comma string, not a list
        (["accuracy", "accuracy"], {}, "more than once"),  # TRL would log both under one name
        (["language_consistency"], {"language": "fr"}, "supports en, zh.*set language to en or zh"),  # unsupported
        (["accuracy"], {"language": "fr"}, "supports en, zh"),  # refused even while unused
        (["accuracy"], {"langauge": "en"}, "unknown reward option.*known options: language"),  # typo'd option
        (["cosine_length"], {"cosine_max_len": 0}, "max_len must be a whole number"),  # bad cosine length
        (["cosine_length"], {"cosine_max_value_correct": 0.2}, "ordered"),  # right could score below wrong
        (["repetition"], {"repetition_max_penalty": 1.0}, "must be a number <= 0"),  # would reward loops
        (["repetition"], {"repetition_ngram_size": 0}, "ngram_size"),  # no n-grams
    ],
)
def test_validate_reward_options_says_how_to_fix(names, options, message):
    with pytest.raises(ValueError, match=message):
        validate_reward_options(names, options)


def test_build_reward_functions_applies_the_options():
    functions = build_reward_functions(NAMES, {"language": "zh", "cosine_max_len": 10})
    assert [f.__name__ for f in functions] == NAMES  # TRL logs each under its registry name
    by_name = dict(zip(NAMES, functions))
    right = "<think>先算</think><answer>5</answer>"
    # language bound: a Chinese thought is on target without a language column...
    assert by_name["language_consistency"](prompts=["p"], completions=[right]) == [1.0]
    # ...and a dataset's language column still wins row by row
    assert by_name["language_consistency"](prompts=["p"], completions=[right], language=["en"]) == [0.0]
    # cosine max_len bound: 5 tokens is half of 10, the middle of [0.5, 1.0]
    cosine = by_name["cosine_length"](prompts=["p"], completions=[right], answer=["5"], completion_ids=[[1] * 5])
    assert cosine == [pytest.approx(0.75)]
    restored = pickle.loads(pickle.dumps(functions))  # TRL may ship them to another process
    assert [f.__name__ for f in restored] == NAMES


def test_build_reward_functions_refuses_what_validation_refuses():
    with pytest.raises(ValueError, match="supports en, zh"):
        build_reward_functions(["language_consistency"], {"language": "de"})
