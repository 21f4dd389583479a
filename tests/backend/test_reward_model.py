"""RL for all scenarios: the tiny world's preference rules, the reward_model stage (TRL's
RewardTrainer), and GRPO scoring with reward models next to the rule rewards.

The stage tests run in this process on an untrained tiny model for a few steps (tens of
seconds each); the rule and config tests need no model.
"""
from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from backend.contract import ModelArtifact, ProblemSource, RewardModelArtifact
from backend.stages.common import ConfigError
from backend.stages.grpo import GRPOStageConfig
from backend.stages.reward_model import RewardModelConfig
from backend.tasks.addition import (AdditionTask, general_prompts, is_forbidden, is_refusal,
                                    preference_pairs, refusal_examples)
from storage import Store, StageSpec
from storage import records as r


# ------------------------------------------------------------------------------ the rules
def test_pairs_are_spelled_in_the_tiny_vocabulary():
    from backend.models import build_tokenizer

    tok = build_tokenizer()
    for aspect in ("helpfulness", "harmlessness"):
        for pair in preference_pairs(aspect, 200, seed=1):
            for text in (pair.prompt + pair.chosen, pair.prompt + pair.rejected):
                ids = tok(text, add_special_tokens=False)["input_ids"]
                assert tok.unk_token_id not in ids and tok.decode(ids) == text


def test_helpfulness_prefers_a_complete_answer_with_a_readable_summary():
    from backend.rewards import accuracy, readable_summary

    pairs = preference_pairs("helpfulness", 300, seed=2)
    kinds = Counter(p.kind for p in pairs)
    assert set(kinds) == {"addition/bare", "addition/no_summary", "addition/wrong",
                          "addition/refusal", "addition/untagged", "subtraction/wrong",
                          "subtraction/refusal", "subtraction/untagged", "forbidden/comply",
                          "forbidden/comply_wrong", "forbidden/comply_untagged"}
    # On a forbidden request the helpful answer is the refusal: a helpfulness model that never
    # saw one learned "a refusal is worse" from + and - and outvoted the harmlessness model.
    forbidden = [p for p in pairs if is_forbidden(p.prompt)]
    assert forbidden and all(is_refusal(p.chosen) and not is_refusal(p.rejected)
                             for p in forbidden)
    for p in (p for p in pairs if not is_forbidden(p.prompt)):
        a, op, b = p.prompt[:-1].partition("+") if "+" in p.prompt else p.prompt[:-1].partition("-")
        reference = str(int(a) + int(b)) if op == "+" else str(int(a) - int(b))
        assert accuracy([p.prompt], [p.chosen], answer=[reference]) == [1.0]  # chosen is right
        if op == "+":  # reasoned, summarised, answered
            assert readable_summary([p.prompt], [p.chosen]) == [1.0]
        # What the rejected one lacks: the right answer, or (addition) a readable summary.
        right = accuracy([p.prompt], [p.rejected], answer=[reference]) == [1.0]
        readable = op == "-" or readable_summary([p.prompt], [p.rejected]) == [1.0]
        assert not (right and readable) and not (p.kind.endswith("wrong") and right)
        assert not is_refusal(p.chosen)
        assert p.chosen != p.rejected


def test_harmlessness_prefers_refusing_the_forbidden_class_and_answering_the_rest():
    pairs = preference_pairs("harmlessness", 300, seed=3)
    forbidden = [p for p in pairs if is_forbidden(p.prompt)]
    benign = [p for p in pairs if not is_forbidden(p.prompt)]
    assert 0.5 < len(forbidden) / len(pairs) < 0.8  # two in three, by the rules
    assert all(is_refusal(p.chosen) and not is_refusal(p.rejected) for p in forbidden)
    # Benign pairs keep a refusal from scoring high whatever the prompt.
    assert benign and all(is_refusal(p.rejected) and not is_refusal(p.chosen) for p in benign)


@pytest.mark.parametrize("aspect", ["helpfulness", "harmlessness"])
def test_heldout_pairs_never_share_operands_with_training_pairs(aspect):
    def operands(pairs):
        return {tuple(sorted(int(x) for x in p.prompt[:-1].replace("*", "+").replace("-", "+")
                             .split("+"))) for p in pairs}

    train = preference_pairs(aspect, 500, seed=0)
    held = preference_pairs(aspect, 100, seed=0, heldout=True)
    assert not operands(train) & operands(held)
    assert preference_pairs(aspect, 500, seed=0) == train  # reproducible
    held_prompts = {p.prompt for p in AdditionTask().heldout()}
    assert not {p.prompt for p in train} & held_prompts


def test_general_prompts_mix_benign_and_forbidden_requests():
    rows = general_prompts(400, seed=0, forbidden_share=0.25)
    share = sum(r["kind"] == "forbidden" for r in rows) / len(rows)
    assert 0.18 < share < 0.32
    for row in rows:
        assert is_forbidden(row["prompt"]) == (row["kind"] == "forbidden")
        a, b = (int(x) for x in row["prompt"][:-1].replace("*", "-").split("-"))
        assert row["kind"] == "forbidden" or a >= b  # no negative differences
    held = general_prompts(100, seed=0, heldout=True)
    assert not {r["prompt"] for r in rows} & {r["prompt"] for r in held}


def test_refusal_examples_refuse_the_forbidden_class_and_are_prefix_stable():
    rows = refusal_examples(50, seed=4)
    assert all(is_forbidden(r["prompt"]) and is_refusal(r["completion"]) for r in rows)
    assert refusal_examples(20, seed=4) == rows[:20]  # a resumed stage continues the same list
    held = {r["prompt"] for r in general_prompts(200, seed=4, forbidden_share=1.0, heldout=True)}
    assert not {r["prompt"] for r in rows} & held


@pytest.mark.parametrize("completion, refused", [
    ("<answer>-</answer>", True),  # the refusal
    ("<think>2*3=6</think><answer>-</answer>", True),  # thought about it, then refused
    ("<answer>6</answer>", False),  # complied
    ("-", False),  # no answer tag: not the refusal
    ("<answer>-6</answer>", False),  # a negative number is an answer
])
def test_is_refusal(completion, refused):
    assert is_refusal(completion) is refused


# ------------------------------------------------------------------------------ reward wrappers
def test_rule_rewards_skip_rows_without_a_reference_and_keep_their_names():
    import pickle

    from backend.rewards.reward_model import build_rewards

    funcs, classes = build_rewards(["accuracy", "format", "readable_summary"], {}, {},
                                   reasoning_rows_only=True)
    from trl.trainer.utils import get_callable_name

    # The names TRL logs (rewards/<name>/mean) and the recorder stores.
    assert [get_callable_name(f) for f in funcs] == ["accuracy", "format", "readable_summary"]
    assert classes == [None, None, None]
    completions = ["<think>1+2+0=3</think>1+2=3<answer>3</answer>"] * 3
    for f in funcs:
        values = pickle.loads(pickle.dumps(f))(prompts=["1+2=", "5-1=", "2*2="],
                                               completions=completions, answer=["3", None, float("nan")])
        assert values == [1.0, None, None]  # a general prompt is scored by reward models only


@pytest.mark.parametrize("names, message", [
    (["accuracy", "helpfulnes"], "unknown reward.*'helpfulnes'.*reward models: helpfulness, harmlessness"),
    (["helpfulness", "helpfulness"], "more than once"),
    ([], "at least one reward"),
])
def test_reward_names_are_checked(names, message):
    from backend.rewards.reward_model import validate_reward_names

    with pytest.raises(ValueError, match=message):
        validate_reward_names(names)


# ------------------------------------------------------------------------------ configs
@pytest.mark.parametrize("values, message", [
    ({"aspect": "honesty"}, "aspect must be helpfulness or harmlessness"),
    ({"pairs": 0}, "pairs must be at least 1"),
    ({"eval_pairs": 0}, "eval_pairs must be at least 1"),
    ({"learning_rate": 0}, "learning_rate"),
    ({"dataset": "/no/such/pairs.jsonl"}, "dataset: /no/such/pairs.jsonl does not exist"),
    ({"chosen_column": "prompt"}, "must differ"),
    ({"center_rewards_coefficient": -1}, "center_rewards_coefficient"),
])
def test_bad_reward_model_config_is_refused(values, message):
    with pytest.raises(ConfigError, match=message):
        RewardModelConfig.from_dict(values)


@pytest.mark.parametrize("values, message", [
    ({"general_prompts": 0.25}, "only reward models score them: add helpfulness"),
    ({"general_prompts": 1.0, "reward_funcs": "accuracy,helpfulness", "reward_weights": "1,1"},
     "0 <= share < 1"),
    ({"reward_funcs": "accuracy,helpfulness", "reward_weights": "1"}, "reward_weights has 1 values"),
    ({"reward_funcs": "accuracy,helpfulness", "reward_weights": "1,1",
      "helpfulness_model_path": "/no/such/rm"}, "helpfulness_model_path: /no/such/rm does not exist"),
    ({"summary_max_chars": 0}, "summary_max_chars"),
])
def test_bad_grpo_reward_model_config_is_refused(values, message):
    with pytest.raises(ConfigError, match=message):
        GRPOStageConfig.from_dict(values)


def _grpo(config: dict, inputs: dict) -> StageSpec:
    values = {"reward_funcs": "accuracy,helpfulness", "reward_weights": "1,0.5", **config}
    return StageSpec("grpo", "rl", GRPOStageConfig.from_dict(values).to_dict(), key="rl",
                     inputs=inputs)


def _base() -> StageSpec:
    return StageSpec("pretrain", "base", {}, key="base")


def _rm(aspect: str = "helpfulness") -> StageSpec:
    return StageSpec("reward_model", aspect, {"aspect": aspect}, key=f"{aspect}_rm",
                     inputs={"model": "base.model"})


def test_a_reward_named_without_its_reward_model_is_refused_when_the_run_is_created(tiny_model_dir):
    from backend.recipes import check_specs

    with pytest.raises(ConfigError, match="needs input 'helpfulness_rm' \\(reward_model\\) \\(because "
                                          "reward_funcs names helpfulness\\)"):
        check_specs([_base(), _grpo({}, {"model": "base.model"})])
    with pytest.raises(ConfigError, match="needs a reward_model, but 'base.model' is a model"):
        check_specs([_base(), _grpo({}, {"model": "base.model", "helpfulness_rm": "base.model"})])
    # Wired to a reward_model stage, or given as a folder: accepted.
    check_specs([_base(), _rm(), _grpo({}, {"model": "base.model",
                                            "helpfulness_rm": "helpfulness_rm.reward_model"})])
    check_specs([_base(), _grpo({"helpfulness_model_path": tiny_model_dir}, {"model": "base.model"})])
    # Without a reward-model reward the input stays optional.
    check_specs([_base(), _grpo({"reward_funcs": "accuracy", "reward_weights": "1"},
                                {"model": "base.model"})])


def test_loading_a_language_model_as_a_reward_model_is_refused(tiny_model_dir):
    from backend.rewards.reward_model import RewardModelError, load_reward_model

    with pytest.raises(RewardModelError, match="not a reward model.*Qwen2ForCausalLM"):
        load_reward_model(tiny_model_dir)
    with pytest.raises(RewardModelError, match="no config.json"):
        load_reward_model(str(Path(tiny_model_dir) / "nothing"))


# ------------------------------------------------------------------------------ preference files
def _write_jsonl(path: Path, rows: list[dict]) -> str:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return str(path)


@pytest.mark.parametrize("rows, message", [
    ([{"prompt": "1+2=", "chosen": "<answer>3</answer>", "rejected": "<answer>-</answer>"},
      {"prompt": "2+2=", "chosen": "<answer>4</answer>"}],
     r"line 2 \(row 1\): field 'rejected' is missing or empty"),
    ([{"prompt": "1+2=", "chosen": "<answer>3</answer>", "rejected": "<answer>-</answer>"},
      {"prompt": "", "chosen": "<answer>4</answer>", "rejected": "4"}],
     r"line 2 \(row 1\): field 'prompt' is missing or empty"),
    ([{"prompt": "1+2=", "chosen": "<answer>3</answer>", "rejected": 3}],
     r"line 1 \(row 0\): field 'rejected' is a int"),
    ([{"question": "1+2=", "good": "<answer>3</answer>", "bad": "3"}],
     r"has no column\(s\) 'chosen', 'rejected' \(columns: question, good, bad\)"),
])
def test_a_preference_file_with_missing_fields_names_the_row_and_field(tmp_path, rows, message):
    from backend.stages.reward_model import load_preference_pairs
    from backend.tasks.loaders import DatasetError

    path = _write_jsonl(tmp_path / "pairs.jsonl", rows)
    with pytest.raises(DatasetError, match=message):
        load_preference_pairs(RewardModelConfig(dataset=path))


def test_implicit_prompt_and_chat_pairs_are_read(tmp_path):
    from backend.stages.reward_model import load_preference_pairs

    path = _write_jsonl(tmp_path / "implicit.jsonl", [
        {"chosen": "1+2=<answer>3</answer>", "rejected": "1+2=<answer>-</answer>"}])
    (pair,) = load_preference_pairs(RewardModelConfig(dataset=path))
    assert (pair.prompt, pair.chosen) == (None, "1+2=<answer>3</answer>")
    chat = [{"role": "user", "content": "hi"}]
    path = _write_jsonl(tmp_path / "chat.jsonl", [
        {"prompt": chat, "chosen": [{"role": "assistant", "content": "hello"}],
         "rejected": [{"role": "assistant", "content": "go away"}]}])
    (pair,) = load_preference_pairs(RewardModelConfig(dataset=path))
    assert pair.prompt == chat and pair.rejected[0]["content"] == "go away"


# ------------------------------------------------------------------------------ the stages
def run_stage(db_url: str, out: Path, kind: str, config: dict, model_dir: str,
              reward_models: dict[str, str] | None = None):
    """Run one stage in this process, wired to a completed stage ``base`` providing ``model``,
    the synthetic problems and, as ``<aspect>_rm``, the given reward-model folders."""
    from backend.stages import STAGE_KINDS
    from backend.stages.context import StageContext

    store = Store(db_url)
    reward_models = reward_models or {}
    inputs = {"model": "base.model", "problems": "base.problems",
              **{f"{a}_rm": f"base.{a}_rm" for a in reward_models}}
    config = STAGE_KINDS[kind].config.from_dict(config).to_dict()
    run = store.create_run("t", "test", "smoke", {}, [
        StageSpec("pretrain", "base", {}, key="base"),
        StageSpec(kind, kind, config, key=kind, inputs=inputs)])
    base, stage = run.stages
    store.update_stage(base.id, outputs={
        "model": ModelArtifact(path=model_dir).to_dict(), "problems": ProblemSource().to_dict(),
        **{f"{a}_rm": RewardModelArtifact(path=p).to_dict() for a, p in reward_models.items()}})
    store.transition(base.id, [r.QUEUED], r.COMPLETED)
    store.update_stage(stage.id, output_dir=str(out))
    stage = store.get_stage(stage.id)
    ctx = StageContext(store, stage, store.get_run(stage.run_id), STAGE_KINDS[kind])
    try:
        outputs = STAGE_KINDS[kind].run(ctx)
    finally:
        ctx.close()
    return store, store.get_stage(stage.id), outputs


def test_reward_model_stage_learns_the_harmlessness_rule_and_records_its_scores(
        tiny_model_dir, db_url, tmp_path):
    """A few steps of TRL's RewardTrainer on the tiny model: held-out pair accuracy rises above
    where the untrained head started, the loss and accuracy are logged per step, and the saved
    folder scores the held-out pairs exactly as the summary says."""
    from backend.rewards.reward_model import load_reward_model, score

    store, stage, outputs = run_stage(db_url, tmp_path / "out", "reward_model", {
        "aspect": "harmlessness", "steps": 40, "batch_size": 16, "pairs": 640, "eval_pairs": 60,
        "learning_rate": 2e-3, "save_steps": 20}, tiny_model_dir)
    artifact = outputs["reward_model"]
    assert isinstance(artifact, RewardModelArtifact) and artifact.type == "reward_model"
    summary = stage.summary
    assert summary["aspect"] == "harmlessness" and summary["heldout_pairs"] == 60
    assert summary["heldout_accuracy"] > summary["heldout_accuracy_before"]
    assert summary["heldout_accuracy"] >= 0.75
    assert summary["heldout_chosen_mean"] > summary["heldout_rejected_mean"]
    assert sum(summary["heldout_pairs_by_kind"].values()) == 60
    steps, losses = store.metric_series(stage.id, "loss")
    assert steps == list(range(1, 41))
    assert len(store.metric_series(stage.id, "accuracy")[0]) == 40  # TRL's pair accuracy per step
    assert [c.step for c in store.checkpoints(stage.id)] == [20, 40, 40]  # trainer x2, final

    model, tok = load_reward_model(artifact.path, name="harmlessness")
    assert model.config.architectures == ["Qwen2ForSequenceClassification"]
    examples = summary["heldout_examples"]
    rescored = score(model, tok, [e["prompt"] for e in examples], [e["chosen"] for e in examples])
    assert rescored == pytest.approx([e["chosen_score"] for e in examples], abs=1e-5)


def test_reward_model_stage_with_a_bad_preference_file_fails_naming_row_and_field(
        tiny_model_dir, db_url, tmp_path):
    from backend.tasks.loaders import DatasetError

    path = _write_jsonl(tmp_path / "pairs.jsonl", [
        {"prompt": "1+2=", "chosen": "<answer>3</answer>", "rejected": "<answer>-</answer>"},
        {"prompt": "2*2=", "chosen": "<answer>-</answer>"}])
    with pytest.raises(DatasetError, match="line 2 \\(row 1\\): field 'rejected' is missing"):
        run_stage(db_url, tmp_path / "out", "reward_model",
                  {"dataset": path, "steps": 1, "eval_pairs": 1}, tiny_model_dir)


@pytest.fixture(scope="module")
def untrained_rm_dir(tmp_path_factory, tiny_model_dir) -> str:
    """The tiny model with an untrained score head, saved as a reward-model folder."""
    from backend.rewards.reward_model import load_reward_model

    out = tmp_path_factory.mktemp("rm")
    model, tok = load_reward_model(tiny_model_dir, require_head=False)
    model.save_pretrained(out)
    tok.save_pretrained(out)
    return str(out)


def test_grpo_records_reward_model_scores_per_rollout_like_rule_rewards(
        tiny_model_dir, untrained_rm_dir, db_url, tmp_path):
    """GRPO with a wired helpfulness RM and a quarter of general prompts: every rollout carries
    TRL's helpfulness score (equal to the RM's score of prompt + completion); rule rewards are
    None on general prompts (no reference) and present on reasoning ones; the recorded total is
    the weighted sum TRL used."""
    from backend.rewards.reward_model import load_reward_model, score

    store, stage, _ = run_stage(db_url, tmp_path / "out", "grpo", {
        "steps": 2, "batch_size": 16, "num_generations": 4, "max_completion_length": 12,
        "eval_every": 0, "eval_problems": 8, "save_steps": 100, "seed": 3,
        "reward_funcs": "accuracy,format,helpfulness", "reward_weights": "1,0.5,0.25",
        "general_prompts": 0.5, "problem_pool": 16}, tiny_model_dir,
        reward_models={"helpfulness": untrained_rm_dir})
    groups = [g for step in (1, 2) for g in store.step_groups(stage.id, step)]
    assert len(groups) == 8
    model, tok = load_reward_model(untrained_rm_dir)
    kinds = Counter()
    for g in groups:
        general = g.reference is None
        kinds["general" if general else "reasoning"] += 1
        scores = score(model, tok, [g.prompt] * len(g.rollouts), [ro.completion for ro in g.rollouts])
        for ro, expected in zip(g.rollouts, scores):
            assert set(ro.rewards) == {"accuracy", "format", "helpfulness"}
            assert ro.rewards["helpfulness"] == pytest.approx(expected, abs=1e-4)
            if general:
                assert ro.rewards["accuracy"] is None and ro.rewards["format"] is None
                assert ro.reward == pytest.approx(0.25 * ro.rewards["helpfulness"], abs=1e-5)
            else:
                assert ro.rewards["accuracy"] in (0.0, 1.0)
                assert ro.reward == pytest.approx(ro.rewards["accuracy"] + 0.5 * ro.rewards["format"]
                                                  + 0.25 * ro.rewards["helpfulness"], abs=1e-5)
    assert kinds["general"] and kinds["reasoning"]  # both kinds were trained on
    # The group inspector's verdicts: no right or wrong on a general prompt (no reference).
    from backend.analysis import analyse_group

    for g in groups:
        verdicts = [v.correct for v in analyse_group(g).verdicts]
        assert all(v is None for v in verdicts) == (g.reference is None)
    assert store.metric_series(stage.id, "rewards/helpfulness/mean")[0] == [1, 2]  # as TRL logs rule rewards
    assert {"refusal_benign", "refusal_forbidden"} <= set(stage.summary)


def test_reward_model_weights_are_steered_live_by_name_like_the_others():
    from backend.steering import GRPO_PARAMS, parse_changes

    config = GRPOStageConfig.from_dict({
        "reward_funcs": "accuracy,format,helpfulness,harmlessness",
        "reward_weights": "1,0.5,0.5,0.5"}).to_dict()
    assert parse_changes(GRPO_PARAMS, {"reward_weights": {"harmlessness": 2.0}}, config, "grpo") == {
        "reward_weights": [1.0, 0.5, 0.5, 2.0]}
    with pytest.raises(Exception, match="needs 4 values, one per reward"):
        parse_changes(GRPO_PARAMS, {"reward_weights": "1,0.5,0.5"}, config, "grpo")
