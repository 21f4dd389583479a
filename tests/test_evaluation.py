"""Evaluation figures from hand-written completions (no model): pass@1 over k samples, cons@k
with equivalent answers as one vote, the unbiased pass@k, format use, and per-problem votes."""
from __future__ import annotations

from math import comb

import pytest

from backend.evaluation import pass_at_k, score_completions, vote
from backend.tasks.problem import Problem


def tagged(answer: str, thought: str = "work") -> str:
    """A completion in the exact R1 format."""
    return f"<think>{thought}</think><answer>{answer}</answer>"


# ----------------------------------------------------------------------------- pass@k


@pytest.mark.parametrize(
    "n, c, k, expected",
    [
        (5, 2, 2, 1 - 3 / 10),  # 1 - C(3,2)/C(5,2) = 1 - 3/10 = 0.7
        (5, 2, 1, 2 / 5),  # pass@1 is the share of correct samples
        (10, 3, 1, 0.3),
        (10, 0, 5, 0.0),  # nothing correct: 0 for any k
        (10, 10, 1, 1.0),  # everything correct: 1 for any k
        (4, 4, 4, 1.0),
        (10, 3, 8, 1.0),  # n - c = 7 < k = 8: every draw of 8 holds a correct one
        (10, 3, 4, 1 - comb(7, 4) / comb(10, 4)),  # 1 - 35/210 = 5/6
        (2000, 1, 1000, 0.5),  # one correct in 2000, draw half; C(2000, 1000) ~ 1e600 is past any float
        (3, 1, 5, 1.0),  # k > n: taken as k = n (any correct sample), documented
        (3, 0, 5, 0.0),
        (0, 0, 1, 0.0),  # no samples: nothing passes
    ],
)
def test_pass_at_k_against_hand_computed_values(n, c, k, expected):
    assert pass_at_k(n, c, k) == pytest.approx(expected, abs=1e-12)


@pytest.mark.parametrize("n, c, k", [(5, 6, 1), (5, -1, 1), (5, 2, 0), (-1, 0, 1)])
def test_pass_at_k_refuses_impossible_counts(n, c, k):
    with pytest.raises(ValueError):
        pass_at_k(n, c, k)


# ----------------------------------------------------------------------------- pass@1, cons@k


def test_pass_at_1_is_the_mean_over_k_samples():
    problems = [Problem("2+2=", "4"), Problem("3+3=", "6")]
    completions = [
        [tagged("4"), tagged("4"), tagged("5"), "no answer at all"],  # 2 of 4 right
        [tagged("6"), tagged("6"), tagged("6"), tagged("7")],  # 3 of 4 right
    ]
    result = score_completions(problems, completions)
    assert result["accuracy"] == pytest.approx((2 / 4 + 3 / 4) / 2)
    assert result["samples_per_problem"] == 4
    assert result["problems"] == 2
    # pass@4 with 4 samples: both problems have a correct sample
    assert result["pass_at_k"] == 1.0
    assert [p["n_correct"] for p in result["per_problem"]] == [2, 3]


@pytest.mark.parametrize(
    "reference, answers, string_vote, expected_majority_correct",
    [
        # the same number spelled three ways beats a wrong answer given twice the same way
        ("5600", ["5,600", "5600", "4200", "4200", "5600.0"], "4200", True),
        # a half in three spellings beats a repeated 0.25
        ("0.5", ["0.5", "1/2", "0.25", "0.25", "\\frac{1}{2}"], "0.25", True),
        # equivalence also merges wrong answers: 2 x "7" and 1 x "7.0" beat 2 x "8"
        ("8", ["7", "8", "7.0", "8", "7"], "7", False),
        # no answer never votes; the one answer given decides
        ("3", ["", "", "3"], "3", True),
    ],
)
def test_cons_at_k_counts_equivalent_answers_as_one_vote(reference, answers, string_vote,
                                                         expected_majority_correct):
    completions = [tagged(a) if a else "I am not sure." for a in answers]
    result = score_completions([Problem("q", reference)], [completions])
    problem = result["per_problem"][0]
    assert problem["majority_correct"] is expected_majority_correct
    assert result["cons_at_k"] == float(expected_majority_correct)
    # what plain string voting picks: a different answer in the first two cases
    counts = {a: answers.count(a) for a in answers if a}
    assert max(counts, key=counts.get) == string_vote


def test_cons_at_k_with_string_vote_wrong_and_equivalence_right():
    # "5,600" / "5600" / "5600.0" are one vote of 3; "4200" has 2: string voting would pick 4200
    completions = [tagged(a) for a in ["4200", "5,600", "4200", "5600", "5600.0"]]
    result = score_completions([Problem("How many?", "5600")], [completions])
    problem = result["per_problem"][0]
    assert problem["majority"] in {"5,600", "5600", "5600.0"}
    assert problem["majority_correct"] is True
    assert problem["votes"] == [
        {"answer": "5,600", "count": 3, "correct": True},
        {"answer": "4200", "count": 2, "correct": False},
    ]
    assert result["cons_at_k"] == 1.0
    assert result["accuracy"] == pytest.approx(3 / 5)


def test_vote_tie_goes_to_the_answer_seen_first():
    assert [v["answer"] for v in vote(["9", "1/2", "0.5", "9"])] == ["9", "1/2"]
    assert vote([None, None]) == []
    assert vote(["3", None, "3.0"]) == [{"answer": "3", "count": 2, "samples": [0, 2]}]


# ----------------------------------------------------------------------------- format, per problem


@pytest.mark.parametrize(
    "completion, think, tag, well_formed",
    [
        (tagged("4"), 1, 1, 1),  # the R1 format exactly
        ("<think>a</think> <answer>4</answer>", 1, 1, 1),  # whitespace between the tags is fine
        ("<answer>4</answer>", 0, 1, 0),  # no thought
        ("<think>a</think><answer>4</answer> and more", 1, 1, 0),  # text after the answer
        ("<think>a</think>4", 1, 0, 0),  # no answer tag
        ("the answer is \\boxed{4}", 0, 1, 0),  # a box is an answer, but not the R1 format
    ],
)
def test_think_answer_and_format_rates(completion, think, tag, well_formed):
    result = score_completions([Problem("2+2=", "4")], [[completion]])
    assert result["think_rate"] == think
    assert result["answer_tag_rate"] == tag
    assert result["format_rate"] == well_formed


def test_lenient_accuracy_reads_the_last_number_when_no_answer_is_tagged():
    completions = [["so it is 5,600 in all"], [tagged("12")], ["maybe 3 or 4"]]
    problems = [Problem("a", "5600"), Problem("b", "12"), Problem("c", "3")]
    result = score_completions(problems, completions)
    assert result["accuracy"] == pytest.approx(1 / 3)  # strict: only the tagged one
    assert result["accuracy_lenient"] == pytest.approx(2 / 3)  # "5,600" read whole; "4" is wrong


def test_per_problem_record_shows_every_sample():
    completions = [[tagged("1/2"), "no idea", tagged("0.5"), tagged("2")]]
    result = score_completions([Problem("Half of one?", "\\frac{1}{2}")], completions, k=2)
    problem = result["per_problem"][0]
    assert problem["prompt"] == "Half of one?"
    assert problem["answer"] == "\\frac{1}{2}"
    assert [(s["extracted"], s["correct"]) for s in problem["samples"]] == [
        ("1/2", True), (None, False), ("0.5", True), ("2", False)]
    assert problem["samples"][1]["completion"] == "no idea"
    assert (problem["n_correct"], problem["majority"], problem["majority_correct"]) == (2, "1/2", True)
    # pass@2 from 4 samples, 2 correct: 1 - C(2,2)/C(4,2) = 5/6
    assert result["pass_at_k"] == pytest.approx(5 / 6)
    assert result["mean_chars"] == pytest.approx(sum(map(len, completions[0])) / 4)


def test_no_completions_scores_zero_not_an_error():
    result = score_completions([Problem("q", "1")], [[]])
    assert (result["accuracy"], result["cons_at_k"], result["pass_at_k"]) == (0.0, 0.0, 0.0)
    assert result["per_problem"][0]["majority"] is None
    with pytest.raises(ValueError, match="2 problems but 1"):
        score_completions([Problem("q", "1"), Problem("r", "2")], [[tagged("1")]])


# ----------------------------------------------------------------------------- majority vote table


@pytest.mark.parametrize(
    "answers, expected",
    [
        # thousands separators: "5,600" and "5600" are one vote of 2 against "4200"'s 1
        (["5,600", "4200", "5600"], [("5,600", 2, [0, 2]), ("4200", 1, [1])]),
        # a fraction and its decimal are one vote; the first spelling seen names it on a tie
        (["0.5", "1/2", "3"], [("0.5", 2, [0, 1]), ("3", 1, [2])]),
        # the most common spelling names a cluster: "1/2" twice, "0.5" once
        (["0.5", "1/2", "1/2"], [("1/2", 3, [0, 1, 2])]),
        # None (no answer) never votes, nor does an empty or blank answer
        ([None, "7", None, " ", ""], [("7", 1, [1])]),
        ([None, None], []),
        # a tie between different answers goes to the one seen first
        (["9", "8", "8", "9"], [("9", 2, [0, 3]), ("8", 2, [1, 2])]),
        # whitespace around an answer is the same answer
        ([" 12", "12 ", "13"], [("12", 2, [0, 1]), ("13", 1, [2])]),
    ],
)
def test_vote_clusters_against_hand_counted_cases(answers, expected):
    assert [(v["answer"], v["count"], v["samples"]) for v in vote(answers)] == expected


@pytest.mark.parametrize(
    "n, k_values, correct_counts, expected",
    [
        # pass@1 = c/n, pass@n = 1 if any correct, pass@2 by 1 - C(n-c,2)/C(n,2)
        (4, (1, 2, 4), 1, (1 / 4, 1 - comb(3, 2) / comb(4, 2), 1.0)),  # 0.25, 0.5, 1
        (8, (1, 4, 8), 2, (2 / 8, 1 - comb(6, 4) / comb(8, 4), 1.0)),  # 0.25, 11/14, 1
        (16, (1, 8, 16), 0, (0.0, 0.0, 0.0)),
        (16, (1, 8, 16), 9, (9 / 16, 1.0, 1.0)),  # n - c = 7 < 8: every draw of 8 is a hit
    ],
)
def test_pass_at_k_for_the_k_the_cli_offers(n, k_values, correct_counts, expected):
    for k, value in zip(k_values, expected):
        assert pass_at_k(n, correct_counts, k) == pytest.approx(value)


# ----------------------------------------------------------------------------- paper metrics


def test_samples_carry_their_vote_cluster_and_format():
    completions = [[tagged("4200"), tagged("5,600"), "no answer", tagged("5600"),
                    "<answer>5600</answer>"]]
    result = score_completions([Problem("How many?", "5600")], completions)
    samples = result["per_problem"][0]["samples"]
    # the 5600 cluster (3 votes) is the majority: cluster 0; 4200 is cluster 1; no answer: None
    assert [s["cluster"] for s in samples] == [1, 0, None, 0, 0]
    assert [s["format_ok"] for s in samples] == [True, True, False, True, False]


def test_language_consistency_and_reasoning_length():
    completions = [[
        "<think>add the ones then the tens</think><answer>5</answer>",  # all English words
        "<think>先加个位 then tens</think><answer>5</answer>",  # 4 Han + 2 Latin: 2/6 English
        "<think>2+3=5</think><answer>5</answer>",  # no words: consistent (1.0)
        "5",  # no thought: the whole text is read, no words: 1.0; no reasoning length
    ]]
    result = score_completions([Problem("2+3=", "5")], completions,
                               count_tokens=lambda text: len(text.split()))
    assert result["language"] == pytest.approx((1 + 2 / 6 + 1 + 1) / 4)
    thoughts = ["add the ones then the tens", "先加个位 then tens", "2+3=5"]
    # mean over the three samples that think, none counted for the one that does not
    assert result["reasoning_chars"] == pytest.approx(sum(map(len, thoughts)) / 3)
    assert result["reasoning_tokens"] == pytest.approx((6 + 3 + 1) / 3)
    zh = score_completions([Problem("2+3=", "5")], completions, language="zh")
    assert zh["language"] == pytest.approx((0 + 4 / 6 + 1 + 1) / 4)


def test_a_problems_own_target_language_decides_its_consistency():
    """The two-script task names the target per prompt: numerals are on target for a 中 prompt,
    digits for a plain one, whatever the evaluation's default language."""
    completions = [["<think>八+三+〇=一一</think><answer>11</answer>"],
                   ["<think>8+3+0=11</think><answer>11</answer>"]]
    zh = Problem("中8+3=", "11", {"language": "zh", "digit_language": "en"})
    en = Problem("8+3=", "11", {"language": "en", "digit_language": "en"})
    assert score_completions([zh, en], completions)["language"] == pytest.approx(1.0)
    # swapped: each CoT is wholly in the other script
    assert score_completions([zh, en], completions[::-1])["language"] == pytest.approx(0.0)


def test_no_thought_anywhere_means_zero_reasoning_length():
    result = score_completions([Problem("1+1=", "2")], [[tagged("2").split("</think>")[1]]])
    assert result["reasoning_chars"] == 0.0
    assert "reasoning_tokens" not in result  # only counted with a tokenizer


def test_problem_outcomes_from_stored_samples():
    from types import SimpleNamespace

    from backend.evaluation import problem_outcomes

    def row(problem, sample, extracted, correct, cluster, greedy=False):
        return SimpleNamespace(problem_index=problem, prompt=f"q{problem}", reference="5",
                               greedy=greedy, sample_index=sample, extracted=extracted,
                               correct=correct, cluster=cluster)

    samples = [
        # problem 0: greedy right, 2 of 3 samples right, majority right
        row(0, 0, "5", True, None, greedy=True),
        row(0, 0, "5", True, 0), row(0, 1, "5.0", True, 0), row(0, 2, "6", False, 1),
        # problem 1: greedy wrong, majority "7" (2 votes) wrong, the right answer 1 vote
        row(1, 0, "7", False, None, greedy=True),
        row(1, 2, "7", False, 0), row(1, 0, "7", False, 0), row(1, 1, "5", True, 1),
        # problem 2: no sample answered: failed
        row(2, 0, None, False, None), row(2, 1, None, False, None),
    ]
    outcomes = problem_outcomes(samples)
    assert [(p["problem_index"], p["n_correct"], p["k"], p["majority"], p["failed"])
            for p in outcomes] == [(0, 2, 3, "5", False), (1, 1, 3, "7", True),
                                   (2, 0, 2, None, True)]
    assert outcomes[1]["votes"] == [
        {"cluster": 0, "answer": "7", "count": 2, "correct": False, "samples": [0, 2]},
        {"cluster": 1, "answer": "5", "count": 1, "correct": True, "samples": [1]}]
    assert (outcomes[0]["greedy_answer"], outcomes[0]["greedy_correct"]) == ("5", True)
    assert outcomes[2]["no_answer"] == 2 and outcomes[2]["greedy_answer"] is None
