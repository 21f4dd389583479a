"""Plain dataclasses that ``storage`` returns: the rest of the code never sees ORM rows."""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Optional

# Stage states. "interrupted" = the worker died (kill -9, crash, reboot) without saying so.
QUEUED, RUNNING, PAUSED, COMPLETED, FAILED, STOPPED, INTERRUPTED = (
    "queued", "running", "paused", "completed", "failed", "stopped", "interrupted"
)
# A live worker that waits for a person (an SFT stage until its dataset is marked ready). It
# heartbeats like a running one, so the reaper and the runner treat it as alive, not stalled.
WAITING = "waiting"
ACTIVE_STATES = (RUNNING, PAUSED, WAITING)
TERMINAL_STATES = (COMPLETED, FAILED, STOPPED, INTERRUPTED)
RESUMABLE_STATES = (STOPPED, INTERRUPTED, FAILED)


@dataclass
class StageSpec:
    """What a recipe asks for: one stage, before it exists in the store."""

    kind: str
    name: str
    config: dict[str, Any]
    key: str = ""  # the stage's name within its recipe; defaults to its kind
    inputs: dict[str, str] = field(default_factory=dict)  # {"model": "base.model"}


@dataclass
class Stage:
    id: int
    run_id: int
    position: int
    kind: str
    name: str
    status: str
    config: dict[str, Any]
    step: int
    total_steps: Optional[int]
    pid: Optional[int]
    host: Optional[str]
    heartbeat_at: Optional[datetime]
    started_at: Optional[datetime]
    ended_at: Optional[datetime]
    attempt_started_step: int
    attempt_started_at: Optional[datetime]
    error: Optional[str]
    log_path: Optional[str]
    output_dir: Optional[str]
    outputs: dict[str, Any]
    summary: dict[str, Any]
    checkpoint: Optional[str] = None  # newest checkpoint path, filled by the store
    key: str = ""  # the stage's name within its recipe ("grpo"), used by other stages' inputs
    inputs: dict[str, str] = field(default_factory=dict)  # {"model": "base.model"}
    params: dict[str, Any] = field(default_factory=dict)  # effective live parameter values


@dataclass
class Run:
    id: int
    name: str
    recipe: str
    preset: str
    config: dict[str, Any]
    created_at: datetime
    runner_pid: Optional[int]
    stages: list[Stage] = field(default_factory=list)

    @property
    def status(self) -> str:
        """A run's status is derived from its stages, never stored twice."""
        states = [s.status for s in self.stages]
        if not states:
            return QUEUED
        for state in (FAILED, INTERRUPTED, STOPPED, RUNNING, PAUSED, WAITING):
            if state in states:
                return state
        if all(s == COMPLETED for s in states):
            return COMPLETED
        if COMPLETED in states:
            return RUNNING  # between two stages: the runner is about to start the next
        return QUEUED


@dataclass
class Metric:
    step: int
    name: str
    value: float


@dataclass
class Rollout:
    sample_index: int
    completion: str
    rewards: dict[str, Optional[float]]
    reward: float
    advantage: float
    length: int
    truncated: bool


@dataclass
class Group:
    step: int
    group_index: int
    prompt: str
    reference: Optional[str]
    reward_mean: float
    reward_std: float
    rollouts: list[Rollout] = field(default_factory=list)


@dataclass
class Checkpoint:
    id: int
    stage_id: int
    step: int
    path: str
    kind: str
    at: datetime


@dataclass
class Command:
    id: int
    stage_id: int
    kind: str
    payload: dict[str, Any]
    created_at: datetime
    applied_at: Optional[datetime]
    applied_step: Optional[int]
    result: Optional[str]
    error: Optional[str] = None  # the worker could not apply (part of) it

    @property
    def failed(self) -> bool:
        return self.error is not None


@dataclass
class Event:
    id: int
    run_id: int
    stage_id: Optional[int]
    step: Optional[int]
    level: str
    message: str
    at: datetime


# Review queues of a curated row. "edited" is not stored: a row is edited while one of its
# text edits (prompt, completion, answer) is not undone, whatever its status.
PENDING, ACCEPTED, REJECTED, EDITED = "pending", "accepted", "rejected", "edited"
ROW_STATUSES = (PENDING, ACCEPTED, REJECTED)
TEXT_FIELDS = ("prompt", "completion", "answer")


@dataclass
class Dataset:
    id: int
    run_id: Optional[int]
    stage_id: Optional[int]
    name: str
    kind: str
    created_at: datetime
    size: int = 0
    ready: bool = False
    ready_at: Optional[datetime] = None
    ready_by: Optional[str] = None
    parent_id: Optional[int] = None  # the dataset this one is a new version of (an import)
    origin: Optional[str] = None  # where its rows came from, e.g. the imported file


@dataclass
class CuratedRow:
    id: int
    dataset_id: int
    row_index: int
    prompt: str
    completion: str
    answer: Optional[str]
    source: Optional[str]
    status: str
    meta: dict[str, Any]
    updated_at: datetime
    version: int = 1  # bumped by every change; edits name the version they were made on
    edited: bool = False  # a text edit that is not undone


@dataclass
class RowFilter:
    """Which rows of a dataset: every given condition must hold (all None = every row).

    ``meta`` and ``ranges`` name provenance fields; a dotted name reaches into a nested dict
    (``rule_scores.accuracy``). ``ranges`` are inclusive, either end may be None. ``search``
    is a case-insensitive keyword in the prompt, completion or answer. ``status`` may be
    "edited" (the derived queue) or a list of statuses."""

    status: Optional[Any] = None  # str or list[str]
    source: Optional[str] = None
    prompt: Optional[str] = None  # exact prompt: all candidates of one question
    search: Optional[str] = None
    meta: dict[str, Any] = field(default_factory=dict)
    ranges: dict[str, tuple[Optional[float], Optional[float]]] = field(default_factory=dict)
    row_ids: Optional[list[int]] = None

    def statuses(self) -> list[str]:
        if self.status is None:
            return []
        return [self.status] if isinstance(self.status, str) else list(self.status)


@dataclass
class RowEdit:
    """One field change of one row, with the old value (so undo is exact)."""

    id: int
    row_id: int
    row_index: int
    field: str
    old: Optional[str]
    new: Optional[str]
    at: datetime
    author: Optional[str]
    undone: bool
    action_id: int


@dataclass
class CurationAction:
    """One curation action (possibly many row edits, undone as one unit)."""

    id: int
    dataset_id: int
    kind: str  # edit | status | bulk
    description: str
    author: Optional[str]
    at: datetime
    rows: int
    undone: bool
    undone_at: Optional[datetime] = None
    undone_by: Optional[str] = None


@dataclass
class Snapshot:
    """An immutable copy of a dataset's accepted rows, frozen when a stage started on them."""

    id: int
    dataset_id: int
    stage_id: Optional[int]
    content_hash: str
    size: int
    created_at: datetime


@dataclass
class SnapshotRow:
    position: int
    row_id: Optional[int]  # the curated row it was copied from
    prompt: str
    completion: str
    answer: Optional[str]
    source: Optional[str]
    meta: dict[str, Any]


@dataclass
class EvalSample:
    """One completion an evaluate stage scored (``Store.eval_samples``)."""

    id: int
    stage_id: int
    model: str  # "base" | "final"
    template: str  # "0-shot", "4-shot"
    problem_index: int
    prompt: str
    reference: Optional[str]
    greedy: bool  # the greedy answer; else sample ``sample_index`` of the k
    sample_index: int
    completion: str
    extracted: Optional[str]
    correct: bool
    cluster: Optional[int]  # index of its vote, 0 = the majority; None = no answer
    format_ok: bool
