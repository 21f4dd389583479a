"""Run comparison: the evaluated models of several runs as one table, the way the R1 paper
reports its results (rows = models, columns = metrics, the best value of each column marked),
and the training curves of those runs overlaid.

The metrics are read from what each evaluation stored (``Workbench.eval_summary``: per model
and prompt template, a dict of figures), not from a fixed list: every numeric figure becomes a
column, the ones the paper reports first (:data:`KNOWN_METRICS`), the rest after them by name.
Only columns whose direction is known (a pass rate: higher is better) get a "best" mark; a
length or a setting (k, problems) is shown unmarked.

Pure functions over ``storage.records``; the pages reach them through ``backend.api``.
"""
from __future__ import annotations

import io
import re
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Optional

from storage import records as r

# (pattern of the key, column label, a 0-1 share?, which way is better), in the paper's order
KNOWN_METRICS: list[tuple[str, str, bool, Optional[str]]] = [
    (r"greedy_pass@1", "greedy pass@1", True, "higher"),
    (r"pass@1", "pass@1", True, "higher"),
    (r"cons@k", "cons@k", True, "higher"),
    (r"pass@k", "pass@k", True, "higher"),
    (r"format", "format", True, "higher"),
    (r"greedy_format", "format (greedy)", True, "higher"),
    (r"language", "language consistency", True, "higher"),
    (r"think_rate", "uses <think>", True, "higher"),
    (r"sampled_think_rate", "uses <think> (sampled)", True, "higher"),
    (r"greedy_lenient", "lenient (last number)", True, "higher"),
    (r"reasoning_tokens", "reasoning (tokens)", False, None),
    (r"reasoning_chars", "reasoning (chars)", False, None),
    (r"mean_chars", "answer length (chars)", False, None),
    (r"k", "k", False, None),
    (r"n_problems", "problems", False, None),
]
# Other spellings of the same figure, as older evaluations stored them: one column each.
ALIASES = [(r"sampled_pass@1", "pass@1"), (r"cons@\d+", "cons@k"), (r"pass@(?!1$)\d+", "pass@k"),
           (r"problems", "n_problems")]
# Keys of a model's results that are settings or text, not figures of the model.
NOT_METRICS = {"model_path", "examples", "per_problem", "seed", "temperature", "top_p",
               "max_new_tokens", "few_shot", "gain_points", "accuracy"}


@dataclass(frozen=True)
class MetricColumn:
    name: str  # the key in the evaluation's results, also the CSV header
    label: str  # what the table shows
    share: bool  # a 0-1 share, shown as a percentage
    better: Optional[str]  # "higher" | "lower" | None (not ranked)


@dataclass
class EvalEntry:
    """One evaluated model: which run and stage scored it, under which label, and its
    numbers (``metrics``: every numeric result, keyed as the evaluation stored them)."""

    run_id: int
    run_name: str
    stage_id: int
    stage_name: str
    label: str  # "final", "base", a checkpoint's name
    metrics: dict[str, float]
    dataset: str = ""  # what it was scored on ("synthetic addition · heldout")
    # Whether the name must say which stage scored it: a run with several evaluation stages
    # (recipe distill: teacher and three students) has a "final" row per stage.
    name_stage: bool = False

    @property
    def name(self) -> str:
        stage = f" · {self.stage_name}" if self.name_stage else ""
        return f"#{self.run_id} {self.run_name}{stage} · {self.label}"


@dataclass
class CompareTable:
    entries: list[EvalEntry]
    columns: list[MetricColumn]
    # column name -> indices (into ``entries``) of the rows holding its best value
    best: dict[str, set[int]] = field(default_factory=dict)

    def rows(self) -> list[dict[str, Any]]:
        """One dict per model: model, run_id, stage_id, dataset, then each metric (None where
        the model lacks it). Shares stay 0-1: the CSV keeps the stored numbers."""
        return [{"model": e.name, "run_id": e.run_id, "stage_id": e.stage_id,
                 "dataset": e.dataset, **{c.name: e.metrics.get(c.name) for c in self.columns}}
                for e in self.entries]

    def csv(self) -> str:
        """The table as CSV text (pandas), columns as :meth:`rows` names them."""
        import pandas as pd

        buf = io.StringIO()
        frame = pd.DataFrame(self.rows(), columns=["model", "run_id", "stage_id", "dataset",
                                                   *(c.name for c in self.columns)])
        frame.to_csv(buf, index=False)
        return buf.getvalue()


def metric_values(results: dict[str, Any]) -> dict[str, float]:
    """A model's numeric results under one name per figure (:data:`ALIASES`: an older
    ``cons@4`` is the ``cons@k`` column, next to a newer evaluation's ``cons@k`` at k=8; the
    ``k`` column says which k). Settings and text (:data:`NOT_METRICS`) are left out."""
    out: dict[str, float] = {}
    aliased: dict[str, float] = {}
    for key, value in results.items():
        if (key in NOT_METRICS or isinstance(value, bool)
                or not isinstance(value, (int, float)) or value != value):  # NaN: no value
            continue
        alias = next((name for pattern, name in ALIASES if re.fullmatch(pattern, key)), None)
        if alias is None:
            out[key] = float(value)
        else:
            aliased.setdefault(alias, float(value))
    for name, value in aliased.items():
        out.setdefault(name, value)  # the canonical key, when also stored, wins
    return out


def describe_column(name: str) -> MetricColumn:
    for pattern, label, share, better in KNOWN_METRICS:
        if re.fullmatch(pattern, name):
            return MetricColumn(name, label, share, better)
    # Unknown keys are shown as stored and never ranked: the direction of a new metric (a
    # refusal rate, a length) cannot be guessed from its name.
    return MetricColumn(name, name, False, None)


def _rank(name: str) -> tuple[int, str]:
    for i, (pattern, *_rest) in enumerate(KNOWN_METRICS):
        if re.fullmatch(pattern, name):
            return i, name
    return len(KNOWN_METRICS), name


def is_eval_stage(stage: r.Stage) -> bool:
    """An evaluate stage, or any stage that produced evaluation results."""
    return stage.kind == "evaluate" or any(
        isinstance(v, dict) and v.get("type") == "eval_results"
        for v in (stage.outputs or {}).values())


def eval_entries(runs: Iterable[r.Run],
                 results_of: Callable[[int], dict[str, dict[str, dict[str, Any]]]],
                 ) -> list[EvalEntry]:
    """Every model x prompt template that an evaluation stage of ``runs`` scored, in run and
    stage order. ``results_of(stage_id)`` is ``Workbench.eval_summary``: ``{model: {template:
    results}}``. A stage that scored one template labels its rows by model ("final"), one
    that scored several by both ("final · 4-shot")."""
    found = []
    for run in runs:
        evals = [stage for stage in run.stages if is_eval_stage(stage)]
        for stage in evals:
            results = results_of(stage.id) or {}
            several = any(len(templates) > 1 for templates in results.values())
            for model, templates in results.items():
                for template, values in templates.items():
                    metrics = metric_values(values)
                    if not metrics:
                        continue
                    where = " · ".join(str(values[k]) for k in ("dataset", "split")
                                       if values.get(k))
                    label = f"{model} · {template}" if several else model
                    found.append(EvalEntry(run.id, run.name, stage.id, stage.name, label,
                                           metrics, where, name_stage=len(evals) > 1))
    return found


def build_table(entries: list[EvalEntry]) -> CompareTable:
    """The comparison table of ``entries``: a column per metric any of them has (known ones
    first, in the paper's order), and per ranked column the rows holding its best value
    (every row tied for it; none when fewer than two rows have a value, or all are equal)."""
    names = sorted({name for e in entries for name in e.metrics}, key=_rank)
    columns = [describe_column(name) for name in names]
    best: dict[str, set[int]] = {}
    for column in columns:
        if column.better is None:
            continue
        present = [(i, e.metrics[column.name]) for i, e in enumerate(entries)
                   if column.name in e.metrics]
        if len(present) < 2:
            continue
        pick = max if column.better == "higher" else min
        top = pick(value for _, value in present)
        tied = {i for i, value in present if abs(value - top) <= 1e-12}
        if len(tied) < len(present):  # every model alike: marking all of them says nothing
            best[column.name] = tied
    return CompareTable(entries, columns, best)


# -- training curves ---------------------------------------------------------------------------
# Each chart and the metric names it draws, first found wins (a GRPO stage logs "reward", its
# quick held-out eval "eval/accuracy", TRL the completion length).
CURVES: dict[str, tuple[str, ...]] = {
    "reward": ("reward",),
    "held-out accuracy": ("eval/accuracy",),
    "completion length": ("completions/mean_length",),
}
TRAINING_KINDS = ("grpo", "sft", "distill", "pretrain", "judge", "reward_model")


@dataclass
class Curve:
    run_id: int
    stage_id: int
    label: str  # "#3 r1-zero · GRPO"
    metric: str
    steps: list[int]
    values: list[float]
    seconds: Optional[list[float]] = None  # training time at each step, when known


def wall_seconds(steps: list[int], step_time: tuple[list[int], list[float]],
                 ) -> Optional[list[float]]:
    """Seconds of training at each of ``steps``, from TRL's ``step_time`` metric (seconds per
    optimizer step, averaged over each logging window): the running sum of each logged value
    times the steps since the previous log, read at each step (None without ``step_time``).
    Time spent outside training steps (loading, quick evals) is not counted: the curves of
    runs that evaluate at different rates stay comparable."""
    logged_steps, per_step = step_time
    if not logged_steps:
        return None
    cumulative, total, previous = [], 0.0, 0
    for step, seconds in zip(logged_steps, per_step):
        total += seconds * max(1, step - previous)
        previous = step
        cumulative.append((step, total))
    out, j = [], 0
    for step in steps:
        while j + 1 < len(cumulative) and cumulative[j + 1][0] <= step:
            j += 1
        logged, at = cumulative[j]
        # Between two logs (or past the last): the newest per-step time carries on.
        rate = per_step[min(j + 1, len(per_step) - 1)] if step > logged else 0.0
        out.append(at + rate * (step - logged) if step >= logged else
                   at * step / max(1, logged))
    return out


def curves(runs: Iterable[r.Run],
           table_of: Callable[[int, list[str]], dict[str, tuple[list[int], list[float]]]],
           series_of: Callable[[int, str], tuple[list[int], list[float]]],
           ) -> dict[str, list[Curve]]:
    """Per chart of :data:`CURVES`, one curve per training stage of ``runs`` that logged it.
    ``table_of`` is ``Store.metric_table`` (bucket means for long stages), ``series_of``
    ``Store.metric_series`` (every ``step_time`` value, for the time axis)."""
    out: dict[str, list[Curve]] = {chart: [] for chart in CURVES}
    wanted = sorted({name for names in CURVES.values() for name in names})
    for run in runs:
        for stage in run.stages:
            if stage.kind not in TRAINING_KINDS or stage.status == r.QUEUED:
                continue
            table = table_of(stage.id, wanted)
            if not table:
                continue
            step_time = series_of(stage.id, "step_time")
            label = f"#{run.id} {run.name} · {stage.name}"
            for chart, names in CURVES.items():
                name = next((n for n in names if table.get(n, ((), ()))[0]), None)
                if name is None:
                    continue
                steps, values = table[name]
                out[chart].append(Curve(run.id, stage.id, label, name, list(steps),
                                        list(values), wall_seconds(list(steps), step_time)))
    return out
