"""The rewards on real answers: the tiny task's own worked sums, and GSM8K's references."""

import json
import random

import pytest

from backend.rewards import REWARD_FUNCTIONS, accuracy, format as format_reward, repetition
from backend.rewards.accuracy import normalize_reference
from backend.tasks.addition import AdditionTask, full_completion


def test_the_tiny_tasks_correct_worked_sums_score_full_marks():
    # What GRPO should teach the tiny model to write: right answer, right format, no penalty.
    pairs = [(p.meta["a"], p.meta["b"]) for p in AdditionTask().heldout()]
    completions = [full_completion(a, b) for a, b in pairs]
    answers = [str(a + b) for a, b in pairs]
    prompts = [f"{a}+{b}=" for a, b in pairs]
    assert set(accuracy(prompts=prompts, completions=completions, answer=answers)) == {1.0}
    assert set(format_reward(prompts=prompts, completions=completions)) == {1.0}
    assert set(repetition(prompts=prompts, completions=completions)) == {0.0}


def test_the_tiny_tasks_wrong_sums_score_zero_accuracy():
    # The other half of the signal: off by one in any column is wrong.
    pairs = [(p.meta["a"], p.meta["b"]) for p in AdditionTask().heldout(100)]
    completions = [full_completion(a, b).replace(f"<answer>{a + b}<", f"<answer>{a + b + 1}<") for a, b in pairs]
    answers = [str(a + b) for a, b in pairs]
    assert set(accuracy(prompts=["p"] * len(pairs), completions=completions, answer=answers)) == {0.0}


# How real models write a GSM8K answer of ``x``; each must be judged by value.
STYLES = [
    "<answer>{x}</answer>",  # the R1 format
    "<think>...</think><answer>${x}</answer>",  # a dollar sign
    "<answer>{x} dollars</answer>",  # a unit word
    "<answer>{x}.</answer>",  # a full stop
    "The answer is \\boxed{{{x}}}.",  # a box, DeepSeek style
    "<answer>{x}.00</answer>",  # cents
]


def test_every_gsm8k_reference_is_matched_in_every_real_answer_style(gsm8k_dir):
    # Every reference of the GSM8K test split (or our sample of it) in every style above is
    # right, and the same answer plus one is wrong: the plain reading covers the real forms
    # (thousands commas, negatives) without math-verify.
    rows = [json.loads(line) for line in (gsm8k_dir / "test.jsonl").read_text().splitlines() if line.strip()]
    assert rows
    failures = []
    for row in rows:
        x = normalize_reference(row["answer"])
        wrong = str(int(x.replace(",", "")) + 1)
        for style in STYLES:
            if accuracy(prompts=["q"], completions=[style.format(x=x)], answer=[row["answer"]]) != [1.0]:
                failures.append((style.format(x=x), x))
            if accuracy(prompts=["q"], completions=[style.format(x=wrong)], answer=[row["answer"]]) != [0.0]:
                failures.append((style.format(x=wrong), x))
    assert failures == []


def test_every_reward_scores_a_realistic_batch_without_error():
    # One mixed batch through every reward, as TRL calls them: no exception, one value each.
    rng = random.Random(0)
    completions = [
        full_completion(12, 34),
        "<think>She sells 16 - 3 - 4 = 9 eggs at $2 each.</think><answer>18 dollars</answer>",
        "<think>" + "1+1=2," * 60 + "</think>",  # a degenerate loop, cut off
        "我们先算个位 \\boxed{\\frac{1}{3}}",
        "<answer>9**9**9**9</answer>",
        "",
    ]
    answers = ["46", "18", "2", "0.333...", "1", float("nan")]
    ids = [[rng.randint(0, 9)] * len(c) for c in completions]
    for name, function in REWARD_FUNCTIONS.items():
        rewards = function(prompts=["p"] * 6, completions=completions, answer=answers, completion_ids=ids,
                           language=["en", "en", "en", "zh", "fr", None])
        assert len(rewards) == 6, name
    assert accuracy(prompts=["p"] * 6, completions=completions, answer=answers) == [1.0, 1.0, 0.0, 1.0, 0.0, None]


@pytest.mark.parametrize("name", ["length", "cosine_length"])
def test_length_rewards_agree_with_accuracy_on_real_answers(name):
    # The length-shaped rewards use the accuracy reward's judgement: "18 dollars" is right.
    completions = ["<answer>18 dollars</answer>", "<answer>17 dollars</answer>"]
    rewards = REWARD_FUNCTIONS[name](prompts=["p", "p"], completions=completions, answer=["18", "18"],
                                     completion_ids=[[1] * 4, [1] * 4])
    if name == "length":  # equal lengths: Kimi's penalty gives a right answer 0, a wrong one min(0, 0)
        assert rewards == [0.0, 0.0]
    else:  # short: a right answer near the top (1.0), a wrong one near the bottom (-1.0)
        assert rewards[0] > 0.99 and rewards[1] < -0.99
