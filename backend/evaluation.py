"""Held-out evaluation the way the R1 paper reports it: pass@1 averaged over k samples, cons@k
(majority vote over equivalence-checked answers), the unbiased pass@k, and format use.

Shared by the pretrain stage (base model accuracy), the GRPO stage's periodic quick eval and
the evaluate stage, so that every accuracy on every page is computed the same way. Correctness
is the accuracy reward's own (``answers_match`` on ``extract_answer``), and "well formatted"
is the format reward's own, so an evaluation never disagrees with what training rewarded.
"""
from __future__ import annotations

import re
from collections import Counter
from typing import Callable, Optional, Sequence

from backend.generation import generate
from backend.rewards.accuracy import answers_match
from backend.rewards.extract import THINK_CLOSE, THINK_OPEN, extract_answer, split_think_answer
from backend.rewards.format import format as format_reward
from backend.rewards.language import language_consistency
from backend.tasks.problem import Problem

# A number, thousands commas included ("5,600"), so the lenient reading keeps the whole value.
_NUMBER = re.compile(r"-?\d{1,3}(?:,\d{3})+(?:\.\d+)?|-?\d+(?:\.\d+)?")


def lenient_answer(text: str) -> str | None:
    """The tagged answer if there is one, else the last number anywhere in the text."""
    tagged = extract_answer(text)
    if tagged is not None:
        return tagged.strip()
    numbers = _NUMBER.findall(text)
    return numbers[-1] if numbers else None


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased estimate of pass@k from ``n`` samples of which ``c`` are correct (Chen et al.
    2021, "Evaluating Large Language Models Trained on Code"): ``1 - C(n-c, k) / C(n, k)``, the
    chance that k samples drawn without replacement from the n include a correct one.

    Computed as the product ``1 - prod_{i=n-c+1..n} (1 - k/i)`` (the form Chen et al. give),
    which never forms the binomials themselves (C(2000, 1000) ~ 1e600 is past any float).

    ``k > n``: the n samples cannot say what k draws would do; k is then taken as n, which
    gives 1.0 if any sample is correct, else 0.0 (a lower bound on the true pass@k). ``n == 0``
    (no samples) gives 0.0. Raises ``ValueError`` for ``k < 1`` or ``c`` outside ``0..n``.
    """
    if k < 1:
        raise ValueError(f"pass@k needs k >= 1, got k={k}")
    if n < 0 or not 0 <= c <= n:
        raise ValueError(f"pass@k needs 0 <= c <= n, got n={n}, c={c}")
    if n == 0:
        return 0.0
    k = min(k, n)
    if n - c < k:  # every draw of k samples contains a correct one
        return 1.0
    missing = 1.0  # C(n-c, k) / C(n, k): the chance that k draws are all wrong
    for i in range(n - c + 1, n + 1):
        missing *= 1.0 - k / i
    return 1.0 - missing


def vote(answers: Sequence[str | None]) -> list[dict]:
    """Group the extracted answers of one problem's samples into votes, equivalent answers
    ("5,600" and "5600", "0.5" and "1/2") counted as one vote; ``None`` (no answer) never votes.

    Returns the clusters, largest first (ties: the one seen first), each
    ``{"answer": its most common spelling, "count": votes, "samples": [sample indices]}``.
    An answer joins the first cluster whose first spelling ``answers_match`` it; identical
    strings are grouped before any comparison, so math-verify runs once per distinct pair.
    """
    spellings: dict[str, list[int]] = {}
    for i, answer in enumerate(answers):
        if answer is not None and answer.strip():
            spellings.setdefault(answer.strip(), []).append(i)
    clusters: list[dict] = []
    for spelling, indices in spellings.items():  # insertion order = first appearance
        for cluster in clusters:
            if answers_match(spelling, cluster["spellings"][0][0]):
                cluster["spellings"].append((spelling, indices))
                break
        else:
            clusters.append({"spellings": [(spelling, indices)]})
    votes = []
    for order, cluster in enumerate(clusters):
        indices = sorted(i for _, idx in cluster["spellings"] for i in idx)
        # max() keeps the first of equal counts: the spelling seen first
        shown = max(cluster["spellings"], key=lambda s: len(s[1]))[0]
        votes.append({"answer": shown, "count": len(indices), "samples": indices, "_order": order})
    votes.sort(key=lambda v: (-v["count"], v["_order"]))
    for v in votes:
        del v["_order"]
    return votes


def _cached_match(verdicts: dict[str, bool], answer: str, reference: str) -> bool:
    if answer not in verdicts:
        verdicts[answer] = answers_match(answer, reference)
    return verdicts[answer]


def score_completions(problems: Sequence[Problem], completions: Sequence[Sequence[str]],
                      *, k: int | None = None, language: str = "en",
                      count_tokens: Optional[Callable[[str], int]] = None) -> dict:
    """Accuracy figures for ``completions[i]`` (the samples) of ``problems[i]``.

    Summary keys (rates are in 0..1):

    * ``accuracy``: pass@1, the share of correct samples per problem, averaged over problems
      (the paper's pass@1 over k samples; with one greedy sample, plain accuracy). Strict: the
      answer must be extractable (``<answer>`` tag or ``\\boxed{}``);
    * ``accuracy_lenient``: the same, falling back to the last number in the text;
    * ``cons_at_k``: share of problems whose majority answer (equivalent answers one vote,
      see :func:`vote`) is correct;
    * ``pass_at_k``: the unbiased pass@k (:func:`pass_at_k`) averaged over problems; ``k``
      defaults to the number of samples per problem (then: share of problems with any correct
      sample);
    * ``think_rate``, ``answer_tag_rate``, ``format_rate`` (exactly the R1 format, by the
      format reward), ``mean_chars``: per sample;
    * ``language``: language consistency, the language reward's share of ``language`` words
      in the chain of thought (1.0 for a thought with no words), averaged over samples;
    * ``reasoning_chars`` (and ``reasoning_tokens`` when ``count_tokens`` is given): mean
      length of the text inside ``<think>`` over the samples that have one (0 when none do);
    * ``problems``, ``samples_per_problem``;
    * ``per_problem``: one dict per problem, ``{prompt, answer, samples: [{completion,
      extracted, correct, cluster, format_ok}], n_correct, majority, majority_correct,
      votes}`` where ``votes`` lists each distinct answer (up to equivalence) with its
      ``count``, largest first, and a sample's ``cluster`` is the index of its vote there
      (0 = the majority; None = no answer, no vote).
    """
    n_problems = len(problems)
    if len(completions) != n_problems:
        raise ValueError(f"{n_problems} problems but {len(completions)} lists of completions")
    samples = sum(len(outs) for outs in completions)
    if k is None:
        k = max((len(outs) for outs in completions), default=1) or 1
    pass1 = lenient_pass1 = cons = pass_k = 0.0
    think = tagged = formatted = total_chars = 0
    language_sum = 0.0
    reasoning_chars = reasoning_tokens = reasoned = 0
    per_problem = []
    for problem, outs in zip(problems, completions):
        outs = list(outs)
        extracted = [extract_answer(text) for text in outs]
        verdicts: dict[str, bool] = {}  # samples often repeat an answer: check each spelling once
        correct = [a is not None and _cached_match(verdicts, a, problem.answer) for a in extracted]
        # lenient_answer is the extracted answer when there is one: only the others are re-read
        lenient = [c if a is not None else answers_match(lenient_answer(text), problem.answer)
                   for text, a, c in zip(outs, extracted, correct)]
        formats = format_reward([problem.prompt] * len(outs), outs) if outs else []
        votes = vote(extracted)
        cluster_of = {i: c for c, v in enumerate(votes) for i in v["samples"]}
        # None only for a language the reward does not score (refused at config time)
        # A problem's own target language wins (the two-script task names it per prompt).
        meta = problem.meta or {}
        language_sum += sum(x for x in language_consistency(
            [problem.prompt] * len(outs), outs, meta.get("language") or language,
            digit_language=meta.get("digit_language")) if x is not None)
        for text in outs:
            thought, _ = split_think_answer(text)
            if thought is not None and THINK_OPEN in text:
                reasoned += 1
                reasoning_chars += len(thought)
                if count_tokens is not None:
                    reasoning_tokens += count_tokens(thought)
        majority = votes[0]["answer"] if votes else None
        majority_correct = bool(votes) and correct[votes[0]["samples"][0]]
        n_correct = sum(correct)
        if outs:
            pass1 += n_correct / len(outs)
            lenient_pass1 += sum(lenient) / len(outs)
            pass_k += pass_at_k(len(outs), n_correct, k)
        cons += majority_correct
        think += sum(THINK_OPEN in text and THINK_CLOSE in text for text in outs)
        tagged += sum(a is not None for a in extracted)
        formatted += sum(f == 1.0 for f in formats)
        total_chars += sum(len(text) for text in outs)
        per_problem.append({
            "prompt": problem.prompt,
            "answer": problem.answer,
            "samples": [{"completion": text, "extracted": a, "correct": c,
                         "cluster": cluster_of.get(i), "format_ok": f == 1.0}
                        for i, (text, a, c, f) in enumerate(zip(outs, extracted, correct,
                                                                formats))],
            "n_correct": n_correct,
            "majority": majority,
            "majority_correct": majority_correct,
            "votes": [{"answer": v["answer"], "count": v["count"],
                       "correct": correct[v["samples"][0]]} for v in votes],
        })
    per_sample = max(samples, 1)
    per_problem_count = max(n_problems, 1)
    return {
        "accuracy": pass1 / per_problem_count,
        "accuracy_lenient": lenient_pass1 / per_problem_count,
        "cons_at_k": cons / per_problem_count,
        "pass_at_k": pass_k / per_problem_count,
        "think_rate": think / per_sample,
        "answer_tag_rate": tagged / per_sample,
        "format_rate": formatted / per_sample,
        "mean_chars": total_chars / per_sample,
        "language": language_sum / per_sample,
        "reasoning_chars": reasoning_chars / reasoned if reasoned else 0.0,
        **({"reasoning_tokens": reasoning_tokens / reasoned if reasoned else 0.0}
           if count_tokens is not None else {}),
        "problems": n_problems,
        "samples_per_problem": samples // per_problem_count,
        "per_problem": per_problem,
    }


def evaluate(model, tokenizer, problems: Sequence[Problem], *, max_new_tokens: int,
             temperature: float = 0.0, k: int = 1, seed: int = 0, top_p: float = 1.0,
             language: str = "en") -> dict:
    """Generate ``k`` completions per problem (greedy when ``temperature == 0``; nucleus
    sampling with ``top_p``) and score them with :func:`score_completions` (pass@k for this
    ``k``, reasoning length in this tokenizer's tokens). ``examples``: the first five problems
    with their first completion, for a quick look."""
    outs = generate(model, tokenizer, [p.prompt for p in problems], max_new_tokens=max_new_tokens,
                    temperature=temperature, num_samples=k, seed=seed, top_p=top_p)
    result = score_completions(
        problems, outs, k=k, language=language,
        count_tokens=lambda text: len(tokenizer(text, add_special_tokens=False)["input_ids"]))
    result["examples"] = [
        {"prompt": p.prompt, "answer": p.answer, "completion": o[0]}
        for p, o in list(zip(problems, outs))[:5]
    ]
    return result


def problem_outcomes(samples: Sequence) -> list[dict]:
    """Per problem, from the stored samples of one model x template (``records.EvalSample``,
    any order): ``{problem_index, prompt, reference, greedy_answer, greedy_correct,
    n_correct, k, majority, majority_correct, failed, no_answer, votes}``, by problem index.

    ``votes`` are the vote clusters the stage recorded (equivalent answers one vote), largest
    first: ``{cluster, answer (its most common spelling), count, correct, samples}``. A
    problem ``failed`` when its majority vote is wrong or no sample gave an answer: what
    cons@k counts against it."""
    by_problem: dict[int, list] = {}
    for sample in samples:
        by_problem.setdefault(sample.problem_index, []).append(sample)
    out = []
    for index in sorted(by_problem):
        rows = by_problem[index]
        greedy = next((s for s in rows if s.greedy), None)
        sampled = sorted((s for s in rows if not s.greedy), key=lambda s: s.sample_index)
        clusters: dict[int, list] = {}
        for s in sampled:
            if s.cluster is not None:
                clusters.setdefault(s.cluster, []).append(s)
        votes = []
        for cluster in sorted(clusters):
            members = clusters[cluster]
            spellings = Counter(s.extracted for s in members)
            votes.append({"cluster": cluster, "answer": spellings.most_common(1)[0][0],
                          "count": len(members), "correct": any(s.correct for s in members),
                          "samples": [s.sample_index for s in members]})
        majority_correct = bool(votes) and votes[0]["correct"]
        first = rows[0]
        out.append({
            "problem_index": index, "prompt": first.prompt, "reference": first.reference,
            "greedy_answer": greedy.extracted if greedy else None,
            "greedy_correct": bool(greedy and greedy.correct),
            "n_correct": sum(s.correct for s in sampled), "k": len(sampled),
            "majority": votes[0]["answer"] if votes else None,
            "majority_correct": majority_correct, "failed": not majority_correct,
            "no_answer": sum(s.cluster is None for s in sampled), "votes": votes,
        })
    return out
