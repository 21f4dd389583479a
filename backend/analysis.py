"""Diagnoses the UI and the CLI share: what a GRPO group says, and whether the curves of a
stage look like a collapse.

Group analysis answers "why is my reward 0" for one step: per completion whether its answer is
correct (the accuracy reward's own verdict), whether it gave no answer to compare, whether it
hit the length limit, and whether it was a wrong answer that still got a positive advantage
(another reward, usually format, paid for it); per group whether every completion got the same
reward (zero spread: every advantage is 0, the group teaches nothing) and its outcome (all
correct / mixed / all wrong).

The collapse rule reads the metric curves a GRPO stage logs (``eval/accuracy``,
``rewards/<name>/mean``) and words a warning, or returns ``None``. Both are plain functions of
store records, so ``backend.api`` serves them to the pages and to ``python -m backend status``.
Nothing here imports torch.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping, Optional, Sequence

from backend.rewards.accuracy import accuracy
from backend.rewards.extract import extract_answer

# A recorded accuracy reward above this counts as correct. The accuracy reward gives 1.0 or 0.0;
# the midpoint also reads a variant that gives partial credit the way a person would.
CORRECT_ABOVE = 0.5
EPS = 1e-9

ALL_CORRECT, MIXED, ALL_WRONG, NO_REFERENCE = "all correct", "mixed", "all wrong", "no reference"
OUTCOMES = (ALL_CORRECT, MIXED, ALL_WRONG, NO_REFERENCE)

# Flags a group can carry (the inspector filters on them).
ZERO_SPREAD, TRUNCATED, NO_ANSWER, WRONG_REWARDED = (
    "zero variance", "truncated", "no answer", "wrong answer rewarded")
FLAGS = (ZERO_SPREAD, TRUNCATED, NO_ANSWER, WRONG_REWARDED)


# -- group analysis ----------------------------------------------------------------------------
@dataclass(frozen=True)
class RolloutVerdict:
    """What one completion of a group amounts to."""

    correct: Optional[bool]  # None: the group has no reference answer to compare with
    answer: Optional[str]  # the extracted final answer; None = nothing to compare (unparseable)
    truncated: bool  # hit max_completion_length
    advantage: float  # TRL's, as recorded

    @property
    def unparseable(self) -> bool:
        return self.answer is None

    @property
    def wrong_but_rewarded(self) -> bool:
        """A wrong (or missing) answer pushed up by a positive advantage: another reward
        (usually format) paid more than the accuracy reward took away."""
        return self.correct is False and self.advantage > EPS


@dataclass
class GroupAnalysis:
    """One group (a prompt and its completions) and the verdict on each completion, in the
    group's own rollout order."""

    group: Any  # storage.records.Group
    verdicts: list[RolloutVerdict]

    @property
    def rollouts(self) -> list[Any]:
        return self.group.rollouts

    @property
    def spread(self) -> float:
        rewards = [r.reward for r in self.rollouts]
        return max(rewards) - min(rewards) if rewards else 0.0

    @property
    def zero_spread(self) -> bool:
        """Every completion got the same total reward: every advantage is 0."""
        return self.spread < EPS

    @property
    def n_correct(self) -> int:
        return sum(v.correct is True for v in self.verdicts)

    @property
    def n_truncated(self) -> int:
        return sum(v.truncated for v in self.verdicts)

    @property
    def n_unparseable(self) -> int:
        return sum(v.unparseable for v in self.verdicts)

    @property
    def n_wrong_rewarded(self) -> int:
        return sum(v.wrong_but_rewarded for v in self.verdicts)

    @property
    def outcome(self) -> str:
        known = [v.correct for v in self.verdicts if v.correct is not None]
        if not known:
            return NO_REFERENCE
        if all(known):
            return ALL_CORRECT
        return MIXED if any(known) else ALL_WRONG

    def flags(self) -> set[str]:
        out = set()
        if self.zero_spread:
            out.add(ZERO_SPREAD)
        if self.n_truncated:
            out.add(TRUNCATED)
        if self.n_unparseable:
            out.add(NO_ANSWER)
        if self.n_wrong_rewarded:
            out.add(WRONG_REWARDED)
        return out

    def to_dict(self) -> dict[str, Any]:
        g = self.group
        return {"step": g.step, "group_index": g.group_index, "prompt": g.prompt,
                "reference": g.reference, "reward_mean": g.reward_mean,
                "reward_std": g.reward_std, "outcome": self.outcome,
                "flags": sorted(self.flags()), "correct": self.n_correct,
                "completions": len(self.verdicts)}


@dataclass
class StepAnalysis:
    """Every group of one step, analysed, with the step's totals."""

    stage_id: int
    step: int
    groups: list[GroupAnalysis] = field(default_factory=list)

    @property
    def n_rollouts(self) -> int:
        return sum(len(g.verdicts) for g in self.groups)

    def _share(self, count: int, of: int) -> float:
        return count / of if of else 0.0

    @property
    def mean_reward(self) -> float:
        rewards = [r.reward for g in self.groups for r in g.rollouts]
        return sum(rewards) / len(rewards) if rewards else 0.0

    @property
    def correct_share(self) -> float:
        return self._share(sum(g.n_correct for g in self.groups), self.n_rollouts)

    @property
    def zero_spread_share(self) -> float:
        return self._share(sum(g.zero_spread for g in self.groups), len(self.groups))

    @property
    def truncated_share(self) -> float:
        return self._share(sum(g.n_truncated for g in self.groups), self.n_rollouts)

    @property
    def unparseable_share(self) -> float:
        return self._share(sum(g.n_unparseable for g in self.groups), self.n_rollouts)

    @property
    def n_wrong_rewarded(self) -> int:
        return sum(g.n_wrong_rewarded for g in self.groups)

    def to_dict(self) -> dict[str, Any]:
        return {"stage_id": self.stage_id, "step": self.step, "groups": len(self.groups),
                "completions": self.n_rollouts, "mean_reward": self.mean_reward,
                "correct": self.correct_share, "zero_spread_groups": self.zero_spread_share,
                "truncated": self.truncated_share, "no_answer": self.unparseable_share,
                "wrong_answers_rewarded": self.n_wrong_rewarded,
                "outcomes": {o: sum(g.outcome == o for g in self.groups) for o in OUTCOMES}}


def _correctness(group: Any) -> list[Optional[bool]]:
    """Each completion's correctness as the accuracy reward judges it: its recorded
    ``rewards["accuracy"]`` when the stage used that reward, else the reward computed now."""
    scores: list[Optional[float]] = [r.rewards.get("accuracy") for r in group.rollouts]
    # A recorded None means the accuracy reward saw no reference; a missing key means the
    # stage did not use that reward, so ask it now.
    unscored = [i for i, r in enumerate(group.rollouts) if "accuracy" not in r.rewards]
    if unscored:
        computed = accuracy([group.prompt] * len(unscored),
                            [group.rollouts[i].completion for i in unscored],
                            answer=[group.reference] * len(unscored))
        for i, score in zip(unscored, computed):
            scores[i] = score
    return [None if score is None else float(score) > CORRECT_ABOVE for score in scores]


def analyse_group(group: Any) -> GroupAnalysis:
    """The verdicts on one ``storage.records.Group``."""
    correct = _correctness(group)
    return GroupAnalysis(group, [
        RolloutVerdict(correct=ok, answer=extract_answer(r.completion),
                       truncated=bool(r.truncated), advantage=float(r.advantage))
        for r, ok in zip(group.rollouts, correct)])


def analyse_step(stage_id: int, step: int, groups: Sequence[Any]) -> StepAnalysis:
    return StepAnalysis(stage_id, step, [analyse_group(g) for g in groups])


# -- the collapse rule -------------------------------------------------------------------------
# How far held-out accuracy must fall from its peak, with format still high, to call it a
# collapse. The tiny preset at lr 5e-4 goes 32% -> 15% -> 3% in its first 20 steps with format
# at 100%, and once every group answers the same wrong number no group has reward spread, so
# nothing can pull it back: the warning has to come at the first falling eval (15 points is
# far outside the noise of a 200-problem eval), while lowering the learning rate still helps
# (bench/collapse_rescue.py, docs/results.md).
COLLAPSE_DROP = 0.15
FORMAT_HIGH = 0.80
# Steps averaged on both sides of "every reward fell": one noisy step decides nothing. A tiny
# step's 64 completions put about +-0.06 of noise on a reward mean; five steps +-0.03.
SMOOTH_STEPS = 5
# Share of zero-spread groups that means "almost no learning signal", and the accuracy levels
# that say which way (all right / all wrong).
ZERO_STD_HIGH = 0.90
MOSTLY_RIGHT, MOSTLY_WRONG = 0.90, 0.10

Series = tuple[Sequence[int], Sequence[float]]


def describe_command(cmd: Any) -> str:
    """Short text of a steering command: ``pause``, ``temperature=0.7``,
    ``reward_weights=format:0``."""
    def fmt(value: Any) -> str:
        if isinstance(value, float):
            return f"{value:g}"
        if isinstance(value, dict):
            return ",".join(f"{k}:{fmt(v)}" for k, v in value.items())
        if isinstance(value, (list, tuple)):
            return ",".join(fmt(v) for v in value)
        return str(value)

    items = ", ".join(f"{k}={fmt(v)}" for k, v in (cmd.payload or {}).items())
    if cmd.kind == "set" and items:
        return items
    return f"{cmd.kind} {items}" if items else cmd.kind


def _points(metrics: Mapping[str, Series], name: str) -> list[tuple[int, float]]:
    steps, values = metrics.get(name, ((), ()))
    return [(int(s), float(v)) for s, v in zip(steps, values) if v == v]  # drop NaN


def _smoothed(points: list[tuple[int, float]]) -> list[tuple[int, float]]:
    """Trailing means over SMOOTH_STEPS points, placed at each window's last step."""
    n = SMOOTH_STEPS
    return [(points[i][0], sum(v for _, v in points[i - n + 1:i + 1]) / n)
            for i in range(n - 1, len(points))]


def _applied_since(commands: Sequence[Any], step: int) -> list[Any]:
    return [c for c in commands if c.kind == "set" and c.applied_step is not None
            and c.applied_step >= step]


def _accuracy_fell_format_high(metrics: Mapping[str, Series],
                               commands: Sequence[Any]) -> Optional[str]:
    """Held-out accuracy fell by COLLAPSE_DROP from its peak while the format reward (else the
    answer-tag rate) stayed high: the model still answers in form, but wrongly."""
    acc = _points(metrics, "eval/accuracy")
    if len(acc) < 2:
        return None
    peak_step, peak = max(acc, key=lambda p: p[1])  # the first step that reached the peak
    last_step, last = acc[-1]
    if peak_step == last_step or peak - last < COLLAPSE_DROP - EPS:
        return None
    fmt = _points(metrics, "rewards/format/mean")
    what = "format"
    if fmt:
        recent = fmt[-SMOOTH_STEPS:]  # a few steps: one noisy step does not decide
        level = sum(v for _, v in recent) / len(recent)
    else:
        tags = _points(metrics, "eval/answer_tag_rate")
        if not tags:
            return None
        level, what = tags[-1][1], "the answer-tag rate"
    if level < FORMAT_HIGH:
        return None
    text = (f"Accuracy fell from {peak:.0%} (step {peak_step}) to {last:.0%} "
            f"(step {last_step}) while {what} stayed at {level:.0%}: policy collapse? ")
    lowered = [c for c in _applied_since(commands, peak_step)
               if "learning_rate" in (c.payload or {})]
    if lowered:
        c = lowered[-1]
        return text + (f"The learning rate was set to {c.payload['learning_rate']} at step "
                       f"{c.applied_step}: watch whether the next held-out evals recover.")
    return text + "Lower the learning rate live below."


def _every_reward_fell(metrics: Mapping[str, Series],
                       commands: Sequence[Any]) -> Optional[str]:
    """Every reward function's mean fell by COLLAPSE_DROP from its (smoothed) peak: the model
    is being destroyed, not just gaming one reward (a learning rate of 10 took accuracy and
    format from 92% to 0% together)."""
    names = sorted(n for n in metrics if n.startswith("rewards/") and n.endswith("/mean"))
    falls = []
    for name in names:
        smooth = _smoothed(_points(metrics, name))
        if len(smooth) < 2:
            return None
        peak_step, peak = max(smooth, key=lambda p: p[1])
        now_step, now = smooth[-1]
        if peak_step == now_step or peak - now < COLLAPSE_DROP - EPS:
            return None
        falls.append((name.split("/")[1], peak_step, peak, now))
    if not falls:
        return None
    parts = ", ".join(f"{name} {peak:.2f} → {now:.2f} (peak at step {step})"
                      for name, step, peak, now in falls)
    since = min(step for _, step, _, _ in falls)
    text = (f"Every reward fell ({parts}, means over {SMOOTH_STEPS} steps): training is "
            f"undoing what the model knew. ")
    changes = _applied_since(commands, since - SMOOTH_STEPS)
    if changes:
        listed = ", ".join(f"{describe_command(c)} (step {c.applied_step})" for c in changes)
        return text + (f"It began after the live change{'s' if len(changes) > 1 else ''} "
                       f"{listed}: undo {'them' if len(changes) > 1 else 'it'} below, or "
                       f"stop and resume from an earlier checkpoint.")
    return text + ("Lower the learning rate live below, or stop and resume from an earlier "
                   "checkpoint.")


def collapse_warning(metrics: Mapping[str, Series],
                     commands: Sequence[Any] = ()) -> Optional[str]:
    """Text of a collapse warning for a GRPO stage's curves, or ``None`` when they look
    healthy. ``metrics``: ``{name: (steps, values)}`` as ``Store.metric_table`` returns it
    (``eval/accuracy``, ``eval/answer_tag_rate``, ``rewards/<name>/mean``); ``commands``: the
    stage's steering commands (a live change after the peak is named in the text).

    Fires when held-out accuracy fell by at least COLLAPSE_DROP from its peak while the format
    reward stayed high, or when every reward fell by that much together."""
    return (_accuracy_fell_format_high(metrics, commands)
            or _every_reward_fell(metrics, commands))


def zero_signal_note(metrics: Mapping[str, Series]) -> Optional[str]:
    """A note when nearly every group of the recent steps had no reward spread (no learning
    signal), saying which way: all right (nothing left to learn on these problems) or all
    wrong (nothing to reinforce)."""
    share = _points(metrics, "frac_reward_zero_std")
    if len(share) < 3:
        return None
    recent = share[-SMOOTH_STEPS:]
    level = sum(v for _, v in recent) / len(recent)
    if level < ZERO_STD_HIGH:
        return None
    text = (f"{level:.0%} of the groups in the last {len(recent)} steps gave every completion "
            f"the same reward: almost no learning signal. ")
    acc = _points(metrics, "rewards/accuracy/mean")[-SMOOTH_STEPS:]
    acc_level = sum(v for _, v in acc) / len(acc) if acc else None
    if acc_level is not None and acc_level >= MOSTLY_RIGHT:
        return text + ("Nearly every answer is right: these problems have nothing left to "
                       "teach (harder problems would).")
    if acc_level is not None and acc_level <= MOSTLY_WRONG:
        return text + ("Nearly every answer is wrong, so there is nothing to reinforce. If this "
                       "began after a live change, undo it; otherwise easier problems or a "
                       "better starting model give groups a right answer to learn from.")
    return text + ("See why in the Group inspector; a higher temperature gives more varied "
                   "groups.")
