"""The diagnoses the UI and the CLI share (backend/analysis.py): per-completion verdicts of a
GRPO group, and the collapse rule, on hand-made groups and metric curves."""
from __future__ import annotations

from datetime import datetime

import pytest

from backend.analysis import (ALL_CORRECT, ALL_WRONG, MIXED, NO_ANSWER, NO_REFERENCE,
                              TRUNCATED, WRONG_REWARDED, ZERO_SPREAD, analyse_group,
                              analyse_step, collapse_warning, describe_command,
                              zero_signal_note)
from storage.records import Command, Group, Rollout

RIGHT = "<think>3+4=7</think><answer>7</answer>"
WRONG = "<think>3+4=8</think><answer>8</answer>"
NO_TAG = "<think>3+4=7</think> 7"


def ro(i: int, text: str, rewards: dict, advantage: float = 0.0, reward: float | None = None,
       truncated: bool = False) -> Rollout:
    total = sum(v for v in rewards.values() if v is not None) if reward is None else reward
    return Rollout(sample_index=i, completion=text, rewards=rewards, reward=total,
                   advantage=advantage, length=12, truncated=truncated)


def group(rollouts: list[Rollout], reference: str | None = "7") -> Group:
    return Group(step=1, group_index=0, prompt="3+4=", reference=reference, reward_mean=0.0,
                 reward_std=0.0, rollouts=rollouts)


# -- per completion ----------------------------------------------------------------------------
@pytest.mark.parametrize("rollout, reference, correct, answer, wrong_rewarded", [
    # the recorded accuracy reward decides, whatever the text says
    (ro(0, RIGHT, {"accuracy": 1.0, "format": 1.0}), "7", True, "7", False),
    (ro(0, RIGHT, {"accuracy": 0.0, "format": 1.0}), "7", False, "7", False),
    # a partial-credit accuracy counts above one half only
    (ro(0, RIGHT, {"accuracy": 0.6}), "7", True, "7", False),
    (ro(0, RIGHT, {"accuracy": 0.5}), "7", False, "7", False),
    # recorded None: the accuracy reward had no reference to compare with
    (ro(0, RIGHT, {"accuracy": None, "format": 1.0}), None, None, "7", False),
    # no accuracy reward in the stage: the accuracy reward is asked now
    (ro(0, RIGHT, {"format": 1.0}), "7", True, "7", False),
    (ro(0, WRONG, {"format": 1.0}), "7", False, "8", False),
    (ro(0, "<answer>5,600</answer>", {"format": 1.0}), "5600", True, "5,600", False),
    # no answer tag and no box: nothing to compare (unparseable), and wrong
    (ro(0, NO_TAG, {"accuracy": 0.0, "format": 0.0}), "7", False, None, False),
    # a wrong answer with a positive advantage: the format reward paid for it
    (ro(0, WRONG, {"accuracy": 0.0, "format": 1.0}, advantage=0.8), "7", False, "8", True),
    (ro(0, NO_TAG, {"accuracy": 0.0}, advantage=0.1), "7", False, None, True),
    # a right answer with a positive advantage, a wrong one with a negative: as intended
    (ro(0, RIGHT, {"accuracy": 1.0}, advantage=1.2), "7", True, "7", False),
    (ro(0, WRONG, {"accuracy": 0.0}, advantage=-0.4), "7", False, "8", False),
    # no reference: never "wrong", so never flagged
    (ro(0, WRONG, {"format": 1.0}, advantage=0.5), None, None, "8", False),
])
def test_rollout_verdicts(rollout, reference, correct, answer, wrong_rewarded):
    (verdict,) = analyse_group(group([rollout], reference)).verdicts
    assert verdict.correct is correct
    assert verdict.answer == answer
    assert verdict.unparseable is (answer is None)
    assert verdict.wrong_but_rewarded is wrong_rewarded


# -- per group ---------------------------------------------------------------------------------
@pytest.mark.parametrize("rollouts, reference, outcome, flags", [
    # one right answer among three wrong ones, advantages as TRL gives them
    ([ro(0, RIGHT, {"accuracy": 1.0}, 1.5), ro(1, WRONG, {"accuracy": 0.0}, -0.5),
      ro(2, WRONG, {"accuracy": 0.0}, -0.5)], "7", MIXED, set()),
    # every completion wrong in the same way: same reward, no learning signal
    ([ro(i, WRONG, {"accuracy": 0.0, "format": 1.0}) for i in range(4)], "7", ALL_WRONG,
     {ZERO_SPREAD}),
    ([ro(i, RIGHT, {"accuracy": 1.0}) for i in range(4)], "7", ALL_CORRECT, {ZERO_SPREAD}),
    # a truncated completion and one without an answer
    ([ro(0, RIGHT, {"accuracy": 1.0}, 1.4),
      ro(1, "<think>3+4=7,3+4=7,3+", {"accuracy": 0.0}, -0.7, truncated=True),
      ro(2, NO_TAG, {"accuracy": 0.0}, -0.7)], "7", MIXED, {TRUNCATED, NO_ANSWER}),
    # the format reward outweighs accuracy: a wrong answer in form beats a right one without
    ([ro(0, WRONG, {"accuracy": 0.0, "format": 1.0}, 0.7, reward=1.0),
      ro(1, "7", {"accuracy": 1.0, "format": 0.0}, -0.7, reward=0.5)], "7", MIXED,
     {WRONG_REWARDED, NO_ANSWER}),
    ([ro(i, RIGHT, {"format": 1.0}) for i in range(2)], None, NO_REFERENCE, {ZERO_SPREAD}),
])
def test_group_outcome_and_flags(rollouts, reference, outcome, flags):
    analysis = analyse_group(group(rollouts, reference))
    assert analysis.outcome == outcome
    assert analysis.flags() == flags
    assert analysis.zero_spread is (ZERO_SPREAD in flags)


def test_step_totals():
    groups = [group([ro(0, RIGHT, {"accuracy": 1.0}, 1.0), ro(1, WRONG, {"accuracy": 0.0}, -1.0)]),
              group([ro(i, WRONG, {"accuracy": 0.0}, truncated=i == 0) for i in range(2)]),
              group([ro(0, NO_TAG, {"accuracy": 0.0}, 0.5, reward=0.5),
                     ro(1, WRONG, {"accuracy": 0.0}, -0.5, reward=0.0)])]
    step = analyse_step(3, 7, groups)
    assert (step.stage_id, step.step, len(step.groups), step.n_rollouts) == (3, 7, 3, 6)
    assert step.correct_share == pytest.approx(1 / 6)
    assert step.zero_spread_share == pytest.approx(1 / 3)
    assert step.truncated_share == pytest.approx(1 / 6)
    assert step.unparseable_share == pytest.approx(1 / 6)
    assert step.n_wrong_rewarded == 1
    summary = step.to_dict()
    assert summary["outcomes"] == {ALL_CORRECT: 0, MIXED: 1, ALL_WRONG: 2, NO_REFERENCE: 0}
    assert summary["wrong_answers_rewarded"] == 1


# -- the collapse rule -------------------------------------------------------------------------
def curve(values: list[float], start: int = 1) -> tuple[list[int], list[float]]:
    return list(range(start, start + len(values))), list(values)


def evals(points: dict[int, float]) -> tuple[list[int], list[float]]:
    return list(points), list(points.values())


def cmd(payload: dict, step: int | None) -> Command:
    at = datetime(2026, 1, 1)
    return Command(id=1, stage_id=1, kind="set", payload=payload, created_at=at,
                   applied_at=at if step is not None else None, applied_step=step, result="ok")


FLAT = [0.5] * 12
RISING = [0.3 + 0.05 * i for i in range(12)]
FALLING = [0.9] * 6 + [0.1] * 6  # 0.8 down, over more than SMOOTH_STEPS steps


@pytest.mark.parametrize("metrics, commands, expected", [
    # healthy: accuracy climbs, format high
    ({"eval/accuracy": evals({0: 0.3, 5: 0.6, 10: 0.9}),
      "rewards/format/mean": curve([1.0] * 12), "rewards/accuracy/mean": curve(RISING)},
     [], None),
    # accuracy fell 67 points while format stayed at 100%: the classic collapse
    ({"eval/accuracy": evals({0: 0.4, 3: 0.97, 6: 0.30}),
      "rewards/format/mean": curve([1.0] * 6)}, [],
     "Accuracy fell from 97% (step 3) to 30% (step 6) while format stayed at 100%: policy "
     "collapse? Lower the learning rate live below."),
    # exactly 15 points is enough; 14 is noise
    ({"eval/accuracy": evals({0: 0.90, 5: 0.75}), "rewards/format/mean": curve([1.0] * 6)},
     [], "Accuracy fell from 90% (step 0) to 75% (step 5)"),
    ({"eval/accuracy": evals({0: 0.90, 5: 0.76}), "rewards/format/mean": curve([1.0] * 6)},
     [], None),
    # accuracy fell but format is low and every reward rises: not this rule, not the other
    ({"eval/accuracy": evals({0: 0.4, 3: 0.97, 6: 0.30}),
      "rewards/format/mean": curve([0.2] * 12), "rewards/accuracy/mean": curve(RISING)},
     [], None),
    # no format reward: the answer-tag rate of the eval stands in for it
    ({"eval/accuracy": evals({0: 0.8, 5: 0.2}), "eval/answer_tag_rate": evals({0: 1, 5: 0.95})},
     [], "while the answer-tag rate stayed at 95%"),
    # the newest eval is the peak: nothing fell
    ({"eval/accuracy": evals({0: 0.2, 5: 0.9}), "rewards/format/mean": curve([1.0] * 6)},
     [], None),
    # the learning rate was already lowered after the peak: say so instead of asking again
    ({"eval/accuracy": evals({0: 0.4, 3: 0.97, 6: 0.30}),
      "rewards/format/mean": curve([1.0] * 6)}, [cmd({"learning_rate": 1e-5}, 4)],
     "The learning rate was set to 1e-05 at step 4: watch whether the next held-out evals "
     "recover."),
    # every reward fell together (a learning rate of 10): named, with the change before it
    ({"eval/accuracy": evals({0: 0.92, 6: 0.92, 12: 0.0}),
      "rewards/accuracy/mean": curve(FALLING), "rewards/format/mean": curve(FALLING)},
     [cmd({"learning_rate": 10.0}, 7), cmd({"reward_weights": {"format": -5.0}}, 7)],
     "It began after the live changes learning_rate=10 (step 7), reward_weights=format:-5 "
     "(step 7): undo them below"),
    ({"rewards/accuracy/mean": curve(FALLING), "rewards/format/mean": curve(FALLING)}, [],
     "Every reward fell (accuracy 0.90 → 0.10 (peak at step 5), format 0.90 → 0.10 (peak at "
     "step 5), means over 5 steps): training is undoing what the model knew. Lower the "
     "learning rate live below"),
    # one reward falls while another holds: a trade-off, not a collapse
    ({"rewards/accuracy/mean": curve(FALLING), "rewards/format/mean": curve([1.0] * 12)}, [],
     None),
    # a single bad step does not decide (means over five steps)
    ({"rewards/accuracy/mean": curve(FLAT[:6] + [0.0] + FLAT[:5]),
      "rewards/format/mean": curve(FLAT[:6] + [0.0] + FLAT[:5])}, [], None),
    # too few steps to smooth
    ({"rewards/accuracy/mean": curve([0.9, 0.1]), "rewards/format/mean": curve([0.9, 0.1])},
     [], None),
    ({}, [], None),
])
def test_collapse_warning(metrics, commands, expected):
    warning = collapse_warning(metrics, commands)
    if expected is None:
        assert warning is None
    else:
        assert warning is not None and expected in warning, warning


@pytest.mark.parametrize("zero_share, accuracy, expected", [
    (0.25, 0.5, None),
    (0.95, 0.98, "Nearly every answer is right"),
    (0.95, 0.02, "Nearly every answer is wrong, so there is nothing to reinforce"),
    (0.95, 0.50, "a higher temperature gives more varied groups"),
])
def test_zero_signal_note(zero_share, accuracy, expected):
    note = zero_signal_note({"frac_reward_zero_std": curve([zero_share] * 6),
                             "rewards/accuracy/mean": curve([accuracy] * 6)})
    if expected is None:
        assert note is None
    else:
        assert note is not None and expected in note and f"{zero_share:.0%}" in note, note


@pytest.mark.parametrize("kind, payload, text", [
    ("pause", {}, "pause"),
    ("set", {"temperature": 0.7}, "temperature=0.7"),
    ("set", {"reward_weights": {"format": 0.0}}, "reward_weights=format:0"),
    ("set", {"reward_weights": [1.0, 0.5]}, "reward_weights=1,0.5"),
    ("checkpoint", {"tag": "x"}, "checkpoint tag=x"),
])
def test_describe_command(kind, payload, text):
    command = cmd(payload, 3)
    command.kind = kind
    assert describe_command(command) == text
