"""Tables for the repetition penalty: loops are penalised, correct worked arithmetic is not."""

import pickle

import pytest

from backend.rewards.repetition import make_repetition_penalty, repetition


@pytest.mark.parametrize(
    "completion, expected",
    [
        ("a b c d", 0.0),  # two distinct word trigrams
        ("the cat the cat the cat", -0.5),  # word trigrams: 4 total, 2 unique: (1 - 2/4) * -1
        ("The cat THE cat the CAT", -0.5),  # case-insensitive, as open-r1
        ("go go go go go go go go", -5 / 6),  # 6 word trigrams, 1 unique
        ("abc" * 10, -0.8),  # a loop without spaces: 15 character 16-grams, 3 unique
        ("1+" * 20, -23 / 25),  # `1+1+1+…`: 25 character 16-grams, 2 unique
        ("<think>" + "1+1=2," * 30 + "</think>", -(1 - 6 / 165)),  # a looping thought: 165 16-grams, 6 unique
        ("<think>3+8+0=11,7+5+1=13,4+9+1=14</think><answer>1431</answer>", 0.0),  # correct worked sum
        ("<think>1+1+0=2,1+1+0=2,1+1+0=2</think><answer>222</answer>", 0.0),  # 111+111: three equal columns
        ("1+1=2,1+1=2", 0.0),  # short arithmetic: shorter than one 16-gram
        ("aaaaa", 0.0),  # too short to be a loop
        ("<think>aaaa</think>", 0.0),  # the tags are not content
        ("ab", 0.0),  # shorter than any n-gram
        ("", 0.0),  # empty completion
        (None, 0.0),  # malformed completion
        ([{"role": "assistant", "content": "the cat the cat the cat"}], -0.5),  # conversational
    ],
)
def test_repetition(completion, expected):
    assert repetition(prompts=["p"], completions=[completion]) == [pytest.approx(expected)]


def test_repetition_never_punishes_the_tiny_tasks_correct_worked_sums():
    # Every correct worked sum of the tiny task up to 3 digits a side (its preset) scores 0:
    # a penalty here would teach the model to stop reasoning. Sampled densely over the range.
    from backend.tasks.addition import full_completion

    completions = [full_completion(a, b) for a in range(0, 1000, 7) for b in range(0, 1000, 11)]
    rewards = repetition(prompts=["p"] * len(completions), completions=completions)
    assert set(rewards) == {0.0}


@pytest.mark.parametrize(
    "settings, completion, expected",
    [
        ({"ngram_size": 2}, "a a a a", -2 / 3),  # word bigrams: 3 total, 1 unique
        ({"max_penalty": -0.5}, "the cat the cat the cat", -0.25),  # half the penalty scale
        ({"ngram_size": 1}, "go went go went", -0.5),  # unigrams: 4 total, 2 unique
        ({"char_ngram_size": 3}, "aaaaa", -2 / 3),  # short character n-grams: 3 total, 1 unique
    ],
)
def test_make_repetition_penalty(settings, completion, expected):
    reward = make_repetition_penalty(**settings)
    assert reward(prompts=["p"], completions=[completion]) == [pytest.approx(expected)]


def test_make_repetition_penalty_is_named_and_picklable():
    reward = make_repetition_penalty(ngram_size=2)
    restored = pickle.loads(pickle.dumps(reward))
    assert reward.__name__ == restored.__name__ == "repetition"
    assert restored(prompts=["p"], completions=["a a a a"]) == [pytest.approx(-2 / 3)]


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"max_penalty": 0.5}, "max_penalty"),  # a positive penalty would reward repetition
        ({"ngram_size": 0}, "ngram_size"),  # no n-grams to count
        ({"ngram_size": 2.5}, "ngram_size"),  # not a whole number of words
        ({"char_ngram_size": 0}, "char_ngram_size"),  # no character n-grams
    ],
)
def test_make_repetition_penalty_rejects_bad_settings(kwargs, message):
    with pytest.raises(ValueError, match=message):
        make_repetition_penalty(**kwargs)
