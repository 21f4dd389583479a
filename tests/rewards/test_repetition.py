"""Tables for the n-gram repetition penalty."""

import pickle

import pytest

from backend.rewards.repetition import make_repetition_penalty, repetition


@pytest.mark.parametrize(
    "completion, expected",
    [
        ("a b c d", 0.0),  # two distinct word trigrams
        ("the cat the cat the cat", -0.5),  # 4 trigrams, 2 unique: (1 - 2/4) * -1
        ("The cat THE cat the CAT", -0.5),  # case-insensitive, as open-r1
        ("aaaaa", -2 / 3),  # one word: character trigrams, 3 total, 1 unique
        ("1+1=2,1+1=2", -1 / 3),  # tiny-model style, no spaces: 9 character trigrams, 6 unique
        ("<think>3+8+0=11,7+5+1=13</think><answer>1431</answer>", 0.0),  # tags are not content
        ("<think>aaaa</think>", -0.5),  # tags removed: "aaaa", 2 trigrams, 1 unique
        ("ab", 0.0),  # shorter than one trigram
        ("", 0.0),  # empty completion
        (None, 0.0),  # malformed completion
        ([{"role": "assistant", "content": "the cat the cat the cat"}], -0.5),  # conversational
    ],
)
def test_repetition(completion, expected):
    assert repetition(prompts=["p"], completions=[completion]) == [pytest.approx(expected)]


@pytest.mark.parametrize(
    "ngram_size, max_penalty, completion, expected",
    [
        (2, -1.0, "a a a a", -2 / 3),  # word bigrams: 3 total, 1 unique
        (3, -0.5, "aaaaa", -1 / 3),  # half the penalty scale
        (1, -1.0, "go go go go", -0.75),  # unigrams: 4 total, 1 unique
    ],
)
def test_make_repetition_penalty(ngram_size, max_penalty, completion, expected):
    reward = make_repetition_penalty(ngram_size=ngram_size, max_penalty=max_penalty)
    assert reward(prompts=["p"], completions=[completion]) == [pytest.approx(expected)]


def test_make_repetition_penalty_is_named_and_picklable():
    reward = make_repetition_penalty(ngram_size=2)
    restored = pickle.loads(pickle.dumps(reward))
    assert reward.__name__ == restored.__name__ == "repetition"
    assert restored(prompts=["p"], completions=["a a a a"]) == [pytest.approx(-2 / 3)]


@pytest.mark.parametrize(
    "kwargs",
    [
        {"max_penalty": 0.5},  # a positive penalty would reward repetition
        {"ngram_size": 0},  # no n-grams to count
    ],
)
def test_make_repetition_penalty_rejects_bad_settings(kwargs):
    with pytest.raises(ValueError):
        make_repetition_penalty(**kwargs)
