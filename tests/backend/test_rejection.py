"""Rejection sampling: the filters and duplicate checks as tables (no model), then the stage on
the tiny untrained model: rows with their provenance, the judge's verdicts and agreement, the
non-reasoning mix, a judge endpoint that fails mid-stage, and kill -9 then resume."""
from __future__ import annotations

import json
import os
import signal
import time
from collections import Counter
from pathlib import Path

import pytest

from backend.contract import ModelArtifact, ProblemSource
from backend.stages.rejection import (Candidate, DedupIndex, RejectionConfig, batch_metrics,
                                      decide_prompt, is_correct_by, is_reasoning_complete,
                                      judge_agreement, non_reasoning_needed, normalize_text,
                                      reject_reasons, similarity, summarize)
from storage import StageSpec, Store
from storage import records as r
from tests.backend.test_judge import StubServer
from tests.conftest import wait_for

RIGHT = "<think>2+5+0=7,1+3+0=4</think><answer>47</answer>"


def cfg(**values) -> RejectionConfig:
    return RejectionConfig.from_dict(values)


def cand(completion: str = RIGHT, *, answer: str = "47", rule_correct=True, judge=None,
         scores=None, length=20, finish="stop", mixing=0.0, rollout=0,
         prompt="12+35=") -> Candidate:
    return Candidate(prompt_index=0, rollout=rollout, prompt=prompt, answer=answer,
                     completion=completion, length=length, finish_reason=finish,
                     rule_scores=scores if scores is not None else {"accuracy": 1.0,
                                                                    "format": 1.0},
                     rule_correct=rule_correct, language_mixing=mixing,
                     judged=judge is not None, judge_correct=judge,
                     judge_rationale=None if judge is None else "r")


# ----------------------------------------------------------------------------- filters
@pytest.mark.parametrize("a, b", [
    ("<think>1+2=3</think> <answer>3</answer>", "<think>1+2=3</think><answer>3</answer>"),
    ("The  Answer\n is 5 .", "the answer is 5."),  # case, runs of whitespace, space before .
    ("ｆｕｌｌ　ｗｉｄｔｈ", "full width"),  # NFKC
])
def test_normalize_text_makes_equal(a, b):
    assert normalize_text(a) == normalize_text(b)


@pytest.mark.parametrize("a, b", [
    ("<answer>12</answer>", "<answer>1 2</answer>"),  # a space between digits is content
    ("x=1,y=2", "x=12"),
])
def test_normalize_text_keeps_apart(a, b):
    assert normalize_text(a) != normalize_text(b)


@pytest.mark.parametrize("text, complete", [
    (RIGHT, True),
    ("reasoning in the prompt's open think</think><answer>5</answer>", True),  # chat templates
    ("<think>1+2=3</think>\nSo: <answer>3</answer> done", True),  # a summary around is fine
    ("<think>1+2=3", False),  # cut off inside the thought
    ("<think>1+2=3</think>", False),  # no answer
    ("<think>1+2=3</think><answer>3", False),  # unclosed answer
    ("<think>1+2=3</think><answer> </answer>", False),  # empty answer
    ("<answer>3</answer>", False),  # no reasoning at all
    ("<answer>3</answer><think>x</think>", False),  # answer before the thought closes
])
def test_is_reasoning_complete(text, complete):
    assert is_reasoning_complete(text) is complete


@pytest.mark.parametrize("mode, rule, judge, correct", [
    ("rule", True, False, True),
    ("rule", False, True, False),
    ("judge", False, True, True),
    ("judge", True, None, False),  # no verdict is no pass when the judge decides
    ("rule_or_judge", False, True, True),  # the judge rescues what the rule missed
    ("rule_or_judge", False, None, False),
    ("rule_and_judge", True, True, True),
    ("rule_and_judge", True, False, False),  # the judge vetoes
    ("rule_and_judge", True, None, True),  # not judged: the rule alone
    ("rule_and_judge", None, True, False),  # no reference: nothing to check
])
def test_is_correct_by(mode, rule, judge, correct):
    assert is_correct_by(mode, rule, judge) is correct


@pytest.mark.parametrize("candidate, settings, pass_rate, reasons", [
    (cand(), {}, 1.0, []),  # right, well formed: kept
    (cand(rule_correct=False, scores={"accuracy": 0.0, "format": 1.0}), {}, 0.0,
     ["incorrect (rule)"]),
    (cand(judge=False), {}, 1.0, ["incorrect (judge)"]),  # default rule_and_judge: veto
    (cand(rule_correct=False, judge=True, scores={"accuracy": 0.0, "format": 1.0}),
     {"correct_by": "rule_or_judge"}, 1.0, []),  # rescued by the judge
    (cand(judge=None), {"correct_by": "judge"}, 1.0, ["no judge verdict"]),
    (cand("<think>x</think>47", scores={"accuracy": 0.0, "format": 0.0}), {}, 1.0,
     ["format 0 < 1", "reasoning incomplete"]),
    (cand(scores={"accuracy": 1.0, "format": 0.0}), {"min_rule_scores": [0.0, 0.0]}, 1.0, []),
    (cand("<think>2+5+0=7,1+3", finish="length", rule_correct=False,
          scores={"accuracy": 0.0, "format": 0.0}),
     {"correct_by": "rule_or_judge", "min_rule_scores": [0.0, 0.0]}, 0.5,
     ["incorrect (rule)", "reasoning incomplete", "truncated"]),
    (cand(finish="length"), {"drop_truncated": False}, 1.0, []),
    (cand(length=300), {"max_length": 256}, 1.0, ["too long (300 > 256 tokens)"]),
    (cand(length=300), {}, 1.0, []),  # no length limit by default
    (cand(mixing=0.4), {}, 1.0, ["language mixing 0.40 > 0.1"]),
    (cand(mixing=None), {}, 1.0, []),  # not scorable: not filtered
    (cand(), {"min_pass_rate": 0.25, "max_pass_rate": 0.75}, 1.0, ["pass rate 1.00 > 0.75"]),
    (cand(), {"min_pass_rate": 0.25, "max_pass_rate": 0.75}, 0.125, ["pass rate 0.12 < 0.25"]),
    (cand(), {"min_pass_rate": 0.25, "max_pass_rate": 0.75}, 0.75, []),  # bounds included
])
def test_reject_reasons(candidate, settings, pass_rate, reasons):
    assert reject_reasons(candidate, cfg(**settings), pass_rate) == reasons


def test_decide_prompt_counts_passes_and_drops_duplicates_of_kept_rows_only():
    wrong = "<think>2+5+0=7,1+3+0=5</think><answer>57</answer>"
    cands = [
        cand(wrong, rule_correct=False, rollout=0, scores={"accuracy": 0.0, "format": 1.0}),
        cand(RIGHT, rollout=1),
        cand(RIGHT.replace("><", "> <"), rollout=2),  # the same up to spacing
        cand(wrong, rule_correct=False, rollout=3, scores={"accuracy": 0.0, "format": 1.0}),
    ]
    dedup = DedupIndex(near=0.95)
    rows = decide_prompt(cands, cfg(), dedup, first_row=10, provenance={"run_id": 1})
    assert [r["status"] for r in rows] == ["rejected", "pending", "rejected", "rejected"]
    assert rows[2]["meta"]["duplicate_of"] == 11  # the row index of rollout 1
    assert rows[2]["meta"]["reject_reasons"] == ["duplicate of row 11"]
    # A rejected candidate is never "the original": the second wrong one is not a duplicate.
    assert rows[3]["meta"]["duplicate_of"] is None
    assert {r["meta"]["pass_count"] for r in rows} == {2}
    assert {r["meta"]["pass_rate"] for r in rows} == {0.5}
    assert [r["meta"]["rollout"] for r in rows] == [0, 1, 2, 3]
    # The same text for another prompt is not a duplicate.
    other = decide_prompt([cand(RIGHT, prompt="35+12=")], cfg(), dedup, 14, {})
    assert other[0]["status"] == "pending"


@pytest.mark.parametrize("near, second, duplicate", [
    (0.95, "<think>1+2+0=3,4+5+0=9,7+8+0=15,1+0+1=2</think><answer>2193</answer>", True),
    (1.0, "<think>1+2+0=3,4+5+0=9,7+8+0=15,1+0+1=2</think><answer>2193</answer>", False),
    (0.95, "<answer>2193</answer>", False),  # the same answer without the reasoning
])
def test_near_duplicates(near, second, duplicate):
    first = "<think>1+2+0=3,4+5+0=9,7+8+0=15,1+0+1=2</think><answer>2093</answer>"
    assert similarity(normalize_text(first), normalize_text(second)) < 1.0
    dedup = DedupIndex(near)
    dedup.add("741+852=", first, 0)
    found, what = dedup.find("741+852=", second)
    assert (found == 0) is duplicate
    assert what == ("near duplicate" if duplicate else "")


@pytest.mark.parametrize("kept_reasoning, kept_non_reasoning, share, needed", [
    (30, 0, 0.25, 10),  # R1: 600k reasoning + 200k non-reasoning
    (30, 10, 0.25, 0),
    (30, 12, 0.25, 0),  # already above: never removes
    (7, 1, 0.5, 6),
    (100, 0, 0.0, 0),  # no mix
])
def test_non_reasoning_needed(kept_reasoning, kept_non_reasoning, share, needed):
    assert non_reasoning_needed(kept_reasoning, kept_non_reasoning, share) == needed


def test_judge_agreement_counts_only_rows_both_scored():
    metas = [{"rule_correct": True, "judge_correct": True},
             {"rule_correct": False, "judge_correct": False},
             {"rule_correct": False, "judge_correct": True},
             {"rule_correct": True, "judge_correct": None},  # unparsed verdict
             {"rule_correct": None, "judge_correct": True}]  # no reference
    assert judge_agreement(metas) == {"both_scored": 3, "agreement": 2 / 3, "both_correct": 1,
                                      "both_incorrect": 1, "rule_only_correct": 0,
                                      "judge_only_correct": 1}


def test_html_in_a_completion_is_stored_as_text(db_url):
    script = "<think>x</think><answer><script>alert('x')</script><b>47</b></answer>"
    rows = decide_prompt([cand(script)], cfg(), DedupIndex(1.0), 0, {})
    store = Store(db_url)
    dataset_id = store.create_dataset("d", "rejection", rows)
    assert store.dataset_rows(dataset_id)[0].completion == script


# ----------------------------------------------------------------------------- the stage
def run_stage(db_url: str, tmp_path: Path, kind: str, config: dict, model: ModelArtifact,
              *, judge: ModelArtifact | None = None, store: Store | None = None,
              stage_id: int | None = None):
    """Run one stage in this process, wired to a completed stage ``base`` that provides
    ``model`` (and ``judge``) and the synthetic problems. Returns (stage record, outputs).
    With ``stage_id``: run that existing stage again (a restart)."""
    from backend.stages import STAGE_KINDS
    from backend.stages.context import StageContext

    store = store or Store(db_url)
    if stage_id is None:
        inputs = {"model": "base.model", "problems": "base.problems"}
        if judge is not None:
            inputs["judge"] = "base.judge"
        config = STAGE_KINDS[kind].config.from_dict(config).to_dict()
        run = store.create_run("t", "test", "smoke", {}, [
            StageSpec("pretrain", "base", {}, key="base"),
            StageSpec(kind, kind, config, key=kind, inputs=inputs)])
        base, stage = run.stages
        outputs = {"model": model.to_dict(), "problems": ProblemSource().to_dict()}
        if judge is not None:
            outputs["judge"] = judge.to_dict()
        store.update_stage(base.id, outputs=outputs)
        store.transition(base.id, [r.QUEUED], r.COMPLETED)
        store.update_stage(stage.id, output_dir=str(tmp_path / "out"))
        stage_id = stage.id
    stage = store.get_stage(stage_id)
    ctx = StageContext(store, stage, store.get_run(stage.run_id), STAGE_KINDS[kind])
    try:
        outputs = STAGE_KINDS[kind].run(ctx)
    finally:
        ctx.close()
    return store.get_stage(stage_id), outputs


PROVENANCE = {"run_id", "stage_id", "stage_key", "source_stage", "checkpoint", "step",
              "judge_model", "temperature", "prompt_index", "rollout", "rule_scores",
              "rule_correct", "judge_verdict", "judge_correct", "judge_rationale",
              "finish_reason", "is_reasoning_complete", "pass_count", "n_candidates",
              "pass_rate", "length", "language_mixing", "duplicate_of", "reject_reasons",
              "write_step"}
SMALL = {"prompts": 6, "chunk_prompts": 4, "n_candidates": 3, "max_new_tokens": 12}


def _rows(store: Store, dataset_id: int):
    return store.dataset_rows(dataset_id)


def test_stage_writes_every_candidate_with_its_provenance_and_the_local_judges_verdict(
        tiny_model_dir, db_url, tmp_path):
    """The untrained model as policy and as (local, wired) judge: every candidate is a row,
    rejected with reasons (the model cannot add), judged, traceable to run, stage and model."""
    stage, outputs = run_stage(db_url, tmp_path, "rejection", SMALL,
                               ModelArtifact(path=tiny_model_dir),
                               judge=ModelArtifact(path=tiny_model_dir))
    store = Store(db_url)
    rows = _rows(store, outputs["dataset"].dataset_id)
    reasoning = [row for row in rows if row.source == "reasoning"]
    assert len(reasoning) == 6 * 3
    assert Counter(row.meta["prompt_index"] for row in reasoning) == {i: 3 for i in range(6)}
    for row in reasoning:
        assert PROVENANCE <= set(row.meta)
        meta = row.meta
        assert (meta["run_id"], meta["stage_id"]) == (stage.run_id, stage.id)
        assert meta["checkpoint"] == tiny_model_dir and meta["source_stage"] == "base"
        assert meta["judge_model"] == tiny_model_dir
        assert meta["judge_verdict"] in ("correct", "incorrect", "unparsed")
        assert isinstance(meta["judge_rationale"], str)
        assert meta["finish_reason"] in ("stop", "length") and 1 <= meta["length"] <= 12
        assert set(meta["rule_scores"]) == {"accuracy", "format"}
        assert row.answer == str(sum(map(int, row.prompt.rstrip("=").split("+"))))
        assert row.status == ("pending" if not meta["reject_reasons"] else "rejected")
    assert stage.summary["candidates"] == 18 and stage.summary["prompts"] == 6
    assert stage.summary["dataset_id"] == outputs["dataset"].dataset_id
    assert stage.step == 6 and stage.total_steps == 6


@pytest.mark.slow
def test_stage_samples_and_judges_with_two_vllm_engines(tiny_model_dir, db_url, tmp_path):
    """generation_backend=vllm and judge_generation_backend=vllm: the policy's engine and the
    judge's engine live in the one stage process; every candidate is sampled and judged. (That
    both backends give the same verdicts is tests/backend/test_judge.py's, on a taught judge:
    this untrained model's near-tied logits are no test of that.)"""
    from tests.test_generation_backends import _need_vllm

    _need_vllm()
    stage, outputs = run_stage(db_url, tmp_path, "rejection",
                               {**SMALL, "generation_backend": "vllm",
                                "judge_generation_backend": "vllm"},
                               ModelArtifact(path=tiny_model_dir),
                               judge=ModelArtifact(path=tiny_model_dir))
    rows = [row for row in _rows(Store(db_url), outputs["dataset"].dataset_id)
            if row.source == "reasoning"]
    assert len(rows) == 6 * 3 and stage.summary["candidates"] == 18
    events = [e.message for e in Store(db_url).events(stage.run_id)]
    assert any(f"with {tiny_model_dir} (vllm)" in m and f"judge: {tiny_model_dir} (vllm)" in m
               for m in events), events
    for row in rows:
        assert row.meta["judge_model"] == tiny_model_dir
        assert row.meta["judge_verdict"] in ("correct", "incorrect", "unparsed")
        assert isinstance(row.meta["judge_rationale"], str)
        assert 1 <= row.meta["length"] <= 12


def test_stage_with_an_endpoint_judge_keeps_mixes_and_measures_agreement(
        tiny_model_dir, db_url, tmp_path):
    """An endpoint judge that calls everything correct, deciding alone: candidates are kept,
    non-reasoning rows are mixed in at their share, the judge disagrees with the rule on every
    candidate the rule found wrong, and that shows in the summary and the metrics."""
    with StubServer(lambda n, body: (200, "Looks fine.\nVERDICT: CORRECT")) as server:
        stage, outputs = run_stage(db_url, tmp_path, "rejection", {
            **SMALL, "correct_by": "judge", "require_reasoning_complete": False,
            "drop_truncated": False, "min_rule_scores": [0, 0], "max_language_mixing": 1,
            "near_duplicate_similarity": 1.0, "non_reasoning_share": 0.25,
            "judge_endpoint": server.url, "judge_api_model": "stub"},
            ModelArtifact(path=tiny_model_dir))
    assert len(server.requests) == 18
    store = Store(db_url)
    rows = _rows(store, outputs["dataset"].dataset_id)
    reasoning = [row for row in rows if row.source == "reasoning"]
    kept = [row for row in reasoning if row.status == "pending"]
    assert kept and all(row.meta["judge_rationale"] == "Looks fine.\nVERDICT: CORRECT"
                        for row in reasoning)
    for row in reasoning:  # only duplicates are rejected
        assert row.status == "pending" or row.meta["duplicate_of"] is not None
    mixed = [row for row in rows if row.source == "non_reasoning" and row.status == "pending"]
    # Both mixes are shares of all kept rows (the safety mix at its default 5%).
    assert len(mixed) == round(len(kept) * 0.25 / (1 - 0.25 - 0.05))
    assert all("<think>" not in row.completion for row in mixed)
    judge = stage.summary["judge"]
    wrong_by_rule = sum(row.meta["rule_correct"] is False for row in reasoning)
    assert judge["both_scored"] == 18 and judge["judge_only_correct"] == wrong_by_rule
    assert judge["agreement"] == pytest.approx((18 - wrong_by_rule) / 18)
    agreement = [m.value for m in store.metrics(stage.id, ["rejection/judge_agreement"])]
    assert len(agreement) == 2  # one per chunk (4 + 2 prompts)


def test_judge_endpoint_failing_mid_stage_keeps_the_scored_rows_and_resume_completes(
        tiny_model_dir, db_url, tmp_path):
    """The endpoint answers 7 requests then fails for good: the stage ends with a clear error,
    every prompt judged before the failure is written, and a resume (endpoint back) finishes
    without repeating or losing a candidate."""
    from backend.judge import JudgeError

    state = {"healthy": False}

    def behaviour(n, body):
        if n <= 7 or state["healthy"]:
            return 200, "VERDICT: INCORRECT"
        return 500, '{"error": "down"}'

    with StubServer(behaviour) as server:
        config = {**SMALL, "prompts": 8, "n_candidates": 2, "judge_endpoint": server.url,
                  "judge_api_model": "stub", "judge_retries": 1, "judge_backoff": 0.01,
                  "judge_concurrency": 1}
        with pytest.raises(JudgeError) as failure:
            run_stage(db_url, tmp_path, "rejection", config, ModelArtifact(path=tiny_model_dir))
        store = Store(db_url)
        dataset = store.datasets()[0]
        rows = _rows(store, dataset.id)
        # Chunk 1 (prompts 0-3, 8 requests) fails at request 8: prompts 0-2 are judged.
        assert sorted({row.meta["prompt_index"] for row in rows}) == [0, 1, 2]
        message = str(failure.value)
        assert "did not answer after 2 tries" in message and "6 rows" in message
        assert "resume continues after prompt 3" in message

        state["healthy"] = True
        stage, outputs = run_stage(db_url, tmp_path, "rejection", {}, None, store=store,
                                   stage_id=dataset.stage_id)
    rows = _rows(store, outputs["dataset"].dataset_id)
    assert outputs["dataset"].dataset_id == dataset.id
    seen = Counter((row.meta["prompt_index"], row.meta["rollout"]) for row in rows)
    assert seen == {(p, k): 1 for p in range(8) for k in range(2)}
    assert [row.row_index for row in rows] == list(range(len(rows)))
    assert stage.summary["candidates"] == 16


def test_stop_takes_effect_between_chunks_and_a_restart_finishes(tiny_model_dir, db_url,
                                                                  tmp_path):
    """A stop command ends the stage after a whole chunk (StageStopped, the rows of every
    prompt started are written); running it again continues to the end."""
    from backend.stages.context import TICK_SECONDS, StageStopped

    store = Store(db_url)
    real_add_checkpoint = store.add_checkpoint

    def stop_after_first_chunk(stage_id, step, path, kind="trainer"):
        real_add_checkpoint(stage_id, step, path, kind)
        if step == 4 and not store.commands(stage_id):
            store.add_command(stage_id, "stop")
            # The worker fetches commands every TICK_SECONDS in the background: let it see
            # this one before the next chunk (a fast machine finishes 40 prompts sooner).
            time.sleep(4 * TICK_SECONDS)

    store.add_checkpoint = stop_after_first_chunk
    config = {**SMALL, "prompts": 40, "n_candidates": 2}
    with pytest.raises(StageStopped):
        run_stage(db_url, tmp_path, "rejection", config, ModelArtifact(path=tiny_model_dir),
                  store=store)
    dataset = store.datasets()[0]
    prompts = Counter(row.meta["prompt_index"] for row in _rows(store, dataset.id))
    assert len(prompts) == 4 and set(prompts.values()) == {2}  # the boundary after chunk 1
    stop = store.commands(dataset.stage_id)[0]
    assert stop.applied_step == len(prompts)  # applied at the chunk boundary it stopped at
    stage, _ = run_stage(db_url, tmp_path, "rejection", {}, None, store=store,
                         stage_id=dataset.stage_id)
    prompts = Counter(row.meta["prompt_index"] for row in _rows(store, dataset.id)
                      if row.source == "reasoning")
    assert prompts == {i: 2 for i in range(40)} and stage.step == 40


def test_safety_rows_refuse_the_forbidden_class_at_their_share_with_provenance(
        tiny_model_dir, db_url, tmp_path):
    """The tiny task's safety data next to the kept candidates: a*b= requests answered with
    the refusal, at safety_share of the kept rows, never on a held-out operand pair, each row
    saying where it came from; the summary counts them."""
    from backend.tasks.addition import REFUSAL, AdditionTask, is_forbidden

    with StubServer(lambda n, body: (200, "VERDICT: CORRECT")) as server:
        stage, outputs = run_stage(db_url, tmp_path, "rejection", {
            **SMALL, "prompts": 8, "correct_by": "judge", "require_reasoning_complete": False,
            "drop_truncated": False, "min_rule_scores": [0, 0], "max_language_mixing": 1,
            "near_duplicate_similarity": 1.0, "non_reasoning_share": 0.25,
            "safety_share": 0.25, "judge_endpoint": server.url, "judge_api_model": "stub"},
            ModelArtifact(path=tiny_model_dir))
    rows = _rows(Store(db_url), outputs["dataset"].dataset_id)
    kept = sum(row.source == "reasoning" and row.status == "pending" for row in rows)
    safety = [row for row in rows if row.source == "safety"]
    non_reasoning = [row for row in rows if row.source == "non_reasoning"]
    assert kept >= 8 and len(safety) == len(non_reasoning) == round(kept * 0.25 / 0.5)
    pairs = AdditionTask()._heldout_pairs
    held = {f"{a}*{b}=" for a, b in pairs} | {f"{b}*{a}=" for a, b in pairs}
    for i, row in enumerate(safety):
        assert is_forbidden(row.prompt) and row.completion == REFUSAL and row.answer == "-"
        assert row.prompt not in held and row.status == "pending"
        assert row.meta["origin"].startswith("synthetic refusals")
        assert row.meta["source_row"] == i and row.meta["stage_id"] == stage.id
    assert stage.summary["safety_kept"] == len(safety)
    assert stage.summary["non_reasoning_kept"] == len(non_reasoning)


def test_a_problems_file_given_directly_never_samples_a_held_out_row(
        tiny_model_dir, db_url, tmp_path):
    """A problems file without a test split, given to the stage (not wired from GRPO): its
    first eval_problems rows are held out as GRPO and evaluate hold them out, and a held-out
    question repeated further down the file is dropped too."""
    path = tmp_path / "problems.jsonl"
    questions = [f"{i}+{i}=" for i in range(12)] + ["1+1="]  # row 12 repeats held-out row 1
    path.write_text("".join(json.dumps({"question": q, "answer": str(2 * int(q.split("+")[0]))})
                            + "\n" for q in questions))
    stage, outputs = run_stage(db_url, tmp_path, "rejection", {
        **SMALL, "prompts": 50, "n_candidates": 1, "dataset": str(path), "eval_problems": 5},
        ModelArtifact(path=tiny_model_dir))
    sampled = [row.prompt for row in _rows(Store(db_url), outputs["dataset"].dataset_id)]
    assert sampled == questions[5:12]
    assert stage.summary["split"] == "train"


def test_non_reasoning_file_rows_keep_html_as_text(tiny_model_dir, db_url, tmp_path):
    path = tmp_path / "chat.jsonl"
    html = "<img src=x onerror=alert(1)><script>alert('hi')</script>"
    path.write_text("\n".join(json.dumps({"prompt": f"say hi {i}", "completion": html})
                              for i in range(5)) + "\n")
    with StubServer(lambda n, body: (200, "VERDICT: CORRECT")) as server:
        stage, outputs = run_stage(db_url, tmp_path, "rejection", {
            **SMALL, "prompts": 2, "correct_by": "judge", "require_reasoning_complete": False,
            "drop_truncated": False, "min_rule_scores": [0, 0], "max_language_mixing": 1,
            "non_reasoning_share": 0.5, "non_reasoning_dataset": str(path),
            "judge_endpoint": server.url, "judge_api_model": "stub"},
            ModelArtifact(path=tiny_model_dir))
    rows = [row for row in _rows(Store(db_url), outputs["dataset"].dataset_id)
            if row.source == "non_reasoning"]
    assert rows and all(row.completion == html for row in rows)
    assert rows[0].meta["origin"] == str(path) and rows[0].meta["source_row"] == 0


def test_problems_from_a_file_keep_their_reference_and_mix_nothing_unasked(
        tiny_model_dir, gsm8k_dir, db_url, tmp_path):
    """GSM8K as the problems: each row has the question and the bare final answer; with no
    non-reasoning file the tiny subtraction family is not mixed into real data."""
    from backend.tasks.loaders import load_problems

    stage, outputs = run_stage(db_url, tmp_path, "rejection", {
        **SMALL, "prompts": 3, "n_candidates": 2, "dataset": str(gsm8k_dir)},
        ModelArtifact(path=tiny_model_dir))
    rows = _rows(Store(db_url), outputs["dataset"].dataset_id)
    train = load_problems(str(gsm8k_dir), split="train")[:3]
    assert [(row.prompt, row.answer) for row in rows[::2]] == [(p.prompt, p.answer)
                                                                for p in train]
    assert {row.source for row in rows} == {"reasoning"}
    assert stage.summary["dataset"] == str(gsm8k_dir)
    events = [e.message for e in Store(db_url).events(stage.run_id)]
    assert any("no non-reasoning data mixed in" in m for m in events)


@pytest.mark.parametrize("values, message", [
    ({"min_rule_scores": [1.0]}, "one minimum per rule reward"),
    ({"correct_by": "vote"}, "correct_by"),
    ({"min_pass_rate": 0.9, "max_pass_rate": 0.5}, "pass rates"),
    ({"temperature": 0}, "temperature"),
    ({"judge_endpoint": "127.0.0.1:8000", "judge_api_model": "m"}, "http://"),
    ({"judge_endpoint": "http://127.0.0.1:8000"}, "judge_api_model"),
    ({"judge_template": "grade {candidate}"}, "{reference}"),
    ({"non_reasoning_share": 1.0}, "non_reasoning_share"),
    ({"non_reasoning_share": 0.5, "safety_share": 0.5}, "non_reasoning_share \\+ safety_share"),
    ({"safety_share": -0.1}, "safety_share must be >= 0"),
    ({"safety_dataset": "/no/such.jsonl"}, "safety_dataset: /no/such.jsonl does"),
    ({"eval_problems": 0}, "eval_problems must be at least 1"),
    ({"judge_model_path": "/no/such/judge"}, "judge_model_path: /no/such/judge does not exist"),
    ({"non_reasoning_dataset": "/no/such.jsonl"}, "non_reasoning_dataset: /no/such.jsonl does"),
])
def test_config_that_cannot_work_is_refused(values, message):
    from backend.stages.common import ConfigError

    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace("{", r"\{")):
        RejectionConfig.from_dict(values)


def test_batch_metrics_and_summary_read_the_rows():
    rows = decide_prompt([cand(rollout=0), cand(RIGHT + " ", rollout=1),
                          cand(rule_correct=False, judge=True, rollout=2,
                               scores={"accuracy": 0.0, "format": 1.0})],
                         cfg(), DedupIndex(1.0), 0, {})
    metrics = batch_metrics(rows)
    assert metrics["rejection/keep_rate"] == pytest.approx(1 / 3)
    assert metrics["rejection/rule_pass_rate"] == pytest.approx(2 / 3)
    assert metrics["rejection/duplicate_rate"] == pytest.approx(1 / 3)
    assert metrics["rejection/judge_agreement"] == 0.0  # judged once, and disagreed
    summary = summarize(rows)
    assert summary["rejected_by"] == {"duplicate": 1, "incorrect": 1}
    assert summary["kept"] == 1 and summary["prompts_with_a_kept_row"] == 1


# ----------------------------------------------------------------------------- kill -9
@pytest.mark.slow
def test_kill_9_mid_stage_then_resume_loses_and_repeats_no_candidate(tiny_model_dir, db_url):
    """The real worker process, killed with SIGKILL after some chunks: marked interrupted;
    resume restarts after the last written prompt; in the end every prompt has exactly its
    n candidates, row indices run without a gap and no metric step is recorded twice."""
    from backend.api import Workbench
    from backend.runner import start_pipeline

    store = Store(db_url)
    config = RejectionConfig.from_dict({"prompts": 240, "chunk_prompts": 4, "n_candidates": 3,
                                        "max_new_tokens": 24}).to_dict()
    run = store.create_run("t", "test", "smoke", {}, [
        StageSpec("pretrain", "base", {}, key="base"),
        StageSpec("rejection", "rejection sampling", config, key="rs",
                  inputs={"model": "base.model", "problems": "base.problems"})])
    base, stage = run.stages
    store.update_stage(base.id, outputs={"model": ModelArtifact(path=tiny_model_dir).to_dict(),
                                         "problems": ProblemSource().to_dict()})
    store.transition(base.id, [r.QUEUED], r.COMPLETED)
    start_pipeline(store, run.id)
    wb = Workbench(db_url)

    def written():
        datasets = [d for d in store.datasets(run.id) if d.stage_id == stage.id]
        return datasets[0].size if datasets else 0

    wait_for(lambda: written() >= 4 * 3 * 3, 180, what="three chunks written")
    running = wb.get_stage(stage.id)
    assert running.status == "running" and written() < 240 * 3, "killed mid-stage"
    os.kill(running.pid, signal.SIGKILL)
    wait_for(lambda: wb.get_stage(stage.id).status == "interrupted", 30, what="interrupted")
    before = written()
    interrupted = wb.get_stage(stage.id)
    assert interrupted.checkpoint and "after-prompt" in interrupted.checkpoint
    message = wb.resume(stage.id)
    assert "checkpoint at step" in message
    wait_for(lambda: wb.get_run(run.id).status == "completed", 400, what="the resumed stage")

    dataset = next(d for d in store.datasets(run.id) if d.stage_id == stage.id)
    rows = store.dataset_rows(dataset.id)
    assert len(rows) > before
    seen = Counter((row.meta["prompt_index"], row.meta["rollout"]) for row in rows
                   if row.source == "reasoning")
    assert seen == {(p, k): 1 for p in range(240) for k in range(3)}
    assert [row.row_index for row in rows] == list(range(len(rows)))
    steps = [m.step for m in store.metrics(stage.id, ["rejection/keep_rate"])]
    assert steps == sorted(set(steps)) and steps[-1] == 240
    done = wb.get_stage(stage.id)
    assert done.outputs["dataset"]["dataset_id"] == dataset.id
    assert "continuing after prompt" in wb.log_tail(stage.id, 400)
