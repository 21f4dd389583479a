"""The run store: the dataclass API over SQLite (in memory and on disk), migrations, pragmas,
cascades, curated-data edit history and the read-only error a user sees.

Fast (a few seconds): every test opens its own fresh database.
"""
from __future__ import annotations

import dataclasses
import sqlite3
import threading
from pathlib import Path

import pytest
from sqlalchemy import text

from storage import (
    COMPLETED,
    FAILED,
    PAUSED,
    QUEUED,
    RUNNING,
    Checkpoint,
    Command,
    CuratedRow,
    Dataset,
    Event,
    Group,
    Metric,
    Rollout,
    Run,
    Stage,
    StageSpec,
    Store,
    StoreError,
)
from storage import models as orm

STAGES = [
    StageSpec("grpo", "R1-Zero RL", {"lr": 1e-5, "beta": 0.04}),
    StageSpec("rejection", "rejection sampling", {"samples": 4}),
    StageSpec("sft", "SFT", {"epochs": 2}),
]
REWARD_NAMES = ("accuracy", "format", "language")


# ------------------------------------------------------------------------------ fixtures
@pytest.fixture(params=["memory", "file"])
def store(request, tmp_path) -> Store:
    url = "sqlite://" if request.param == "memory" else f"sqlite:///{tmp_path / 'a.db'}"
    st = Store(url)
    yield st
    st.dispose()


@pytest.fixture
def file_url(tmp_path) -> str:
    return f"sqlite:///{tmp_path / 'runs.db'}"


def make_run(store: Store, name: str = "run") -> Run:
    return store.create_run(name, "r1", "tiny", {"seed": 1, "nested": {"a": [1, 2]}}, STAGES)


def make_group(gi: int, prompt: str = None, g: int = 4, *, shuffled: bool = True) -> Group:
    order = list(range(g))
    if shuffled:
        order = order[::-1]  # written out of order: the store must sort them
    rollouts = [
        Rollout(
            sample_index=j, completion=f"<think>g{gi} s{j}</think><answer>{j}</answer>",
            rewards={"accuracy": float(j % 2), "format": 1.0, "language": None},
            reward=float(j % 2) + 1.0, advantage=(j - (g - 1) / 2) / 1.5,
            length=10 + j, truncated=(j == g - 1),
        )
        for j in order
    ]
    return Group(step=0, group_index=gi, prompt=prompt or f"prompt {gi}", reference=str(gi),
                 reward_mean=1.5, reward_std=0.5, rollouts=rollouts)


def count(store: Store, table: str, where: str = "1=1", **params) -> int:
    with store.engine.connect() as conn:
        return conn.execute(text(f"SELECT COUNT(*) FROM {table} WHERE {where}"), params).scalar()


def head_revision() -> str:
    from alembic.script import ScriptDirectory

    from storage.migrate import alembic_config

    return ScriptDirectory.from_config(alembic_config()).get_current_head()


# ------------------------------------------------------------------------------ runs/stages
def test_create_run_returns_dataclasses(store):
    run = make_run(store)
    assert type(run) is Run and dataclasses.is_dataclass(run)
    assert [type(s) for s in run.stages] == [Stage, Stage, Stage]
    assert [s.position for s in run.stages] == [0, 1, 2]
    assert [s.kind for s in run.stages] == ["grpo", "rejection", "sft"]
    assert run.stages[0].config == {"lr": 1e-5, "beta": 0.04}
    assert run.config == {"seed": 1, "nested": {"a": [1, 2]}}
    assert all(s.status == QUEUED and s.step == 0 and s.checkpoint is None for s in run.stages)
    assert run.status == QUEUED

    again = store.get_run(run.id)
    assert again == run
    assert not isinstance(again, orm.Base)
    assert all(not isinstance(s, orm.Base) for s in again.stages)

    second = make_run(store, "second")
    listed = store.list_runs()
    assert [r.id for r in listed] == [second.id, run.id]  # newest first
    assert all(type(r) is Run for r in listed)
    assert store.get_stage(run.stages[1].id) == run.stages[1]

    with pytest.raises(KeyError):
        store.get_run(10_000)
    with pytest.raises(KeyError):
        store.get_stage(10_000)


def test_run_status_is_derived_from_stages(store):
    run = make_run(store)
    ids = [s.id for s in run.stages]
    status = lambda: store.get_run(run.id).status  # noqa: E731

    assert status() == QUEUED
    assert store.transition(ids[0], [QUEUED], RUNNING)
    assert status() == RUNNING
    assert store.transition(ids[0], [RUNNING], PAUSED)
    assert status() == PAUSED
    assert store.transition(ids[0], [PAUSED], COMPLETED)
    assert status() == RUNNING  # between two stages
    for sid in ids[1:]:
        store.update_stage(sid, status=COMPLETED)
    assert status() == COMPLETED

    store.update_stage(ids[1], status=FAILED)
    store.update_stage(ids[2], status=RUNNING)
    assert status() == FAILED  # failed wins over running
    assert [s.status for s in store.list_runs()[0].stages] == [COMPLETED, FAILED, RUNNING]


def test_transition_is_compare_and_set(store):
    sid = make_run(store).stages[0].id
    assert store.transition(sid, [QUEUED], RUNNING, pid=123, host="box")
    # Somebody else already moved it: a second starter loses the race.
    assert store.transition(sid, [QUEUED], RUNNING, pid=456) is False
    stage = store.get_stage(sid)
    assert (stage.status, stage.pid, stage.host) == (RUNNING, 123, "box")
    assert store.transition(sid, ("running", "paused"), COMPLETED)
    assert store.get_stage(sid).status == COMPLETED
    assert store.transition(10_000, [QUEUED], RUNNING) is False


def test_update_stage_json_fields_and_heartbeat(store):
    sid = make_run(store).stages[0].id
    store.update_stage(sid, outputs={"model_path": "/m", "dataset_id": 3},
                       summary={"reward": 0.5}, config={"lr": 2e-5}, error="boom")
    store.heartbeat(sid, step=7, total_steps=100)
    stage = store.get_stage(sid)
    assert stage.outputs == {"model_path": "/m", "dataset_id": 3}
    assert stage.summary == {"reward": 0.5}
    assert stage.config == {"lr": 2e-5}
    assert (stage.step, stage.total_steps, stage.error) == (7, 100, "boom")
    assert stage.heartbeat_at is not None
    assert store.active_stages() == []
    store.transition(sid, [QUEUED], RUNNING)
    assert [s.id for s in store.active_stages()] == [sid]


# ------------------------------------------------------------------------------ metrics
def test_metrics_series_ordered_by_step(store):
    run = make_run(store)
    sid, other = run.stages[0].id, run.stages[1].id
    for step in (3, 1, 2, 0):  # written out of order
        store.add_metrics(sid, step, {"loss": 10.0 - step, "reward": step / 10, "kl": None})
    store.add_metrics(other, 0, {"other_metric": 1})
    store.add_metrics(sid, 9, {})  # nothing to write is fine

    steps, values = store.metric_series(sid, "loss")
    assert list(zip(steps, values)) == [(0, 10.0), (1, 9.0), (2, 8.0), (3, 7.0)]
    assert store.metric_names(sid) == ["loss", "reward"]  # None values are skipped
    assert store.metric_names(other) == ["other_metric"]
    assert store.metric_series(sid, "missing") == ([], [])
    both = store.metrics(sid)
    assert [m.step for m in both] == sorted(m.step for m in both) and len(both) == 8
    assert {m.name for m in store.metrics(sid, ["reward"])} == {"reward"}


def test_metric_table_exact_when_short_bucket_means_when_long(store):
    sid = make_run(store).stages[0].id
    for step in range(10):
        store.add_metrics(sid, step, {"loss": float(step), "lr": 1e-5 if step < 7 else 2e-5})
    store.add_metrics(sid, 5, {"eval/accuracy": 0.4})
    store.add_metrics(sid, 5, {"eval/accuracy": 0.5})  # logged twice at a step: newest wins
    exact = store.metric_table(sid, max_points=100)
    assert exact["loss"] == (list(range(10)), [float(s) for s in range(10)])
    assert exact["eval/accuracy"] == ([5], [0.5])
    # 10 steps into at most 4 points: buckets of 3 steps, each at its last step, means.
    coarse = store.metric_table(sid, ["loss"], max_points=4)
    assert list(coarse) == ["loss"]
    assert coarse["loss"] == ([2, 5, 8, 9], [1.0, 4.0, 7.0, 9.0])
    assert store.metric_table(make_run(store, "empty").stages[0].id) == {}
    # What a stage runs with now is exact, whatever the chart's buckets average.
    assert store.latest_metrics(sid, ["lr", "loss", "missing"]) == {"lr": 2e-5, "loss": 9.0}


# ------------------------------------------------------------------------------ groups
def test_groups_and_rollouts_roundtrip(store):
    sid = make_run(store).stages[0].id
    store.add_groups(sid, 5, [make_group(2), make_group(0), make_group(1)])
    store.add_groups(sid, 1, [make_group(0)])

    groups = store.step_groups(sid, 5)
    assert all(type(g) is Group for g in groups)
    assert [g.group_index for g in groups] == [0, 1, 2]
    g0 = groups[0]
    assert (g0.step, g0.prompt, g0.reference, g0.reward_mean, g0.reward_std) == (
        5, "prompt 0", "0", 1.5, 0.5)
    assert [ro.sample_index for ro in g0.rollouts] == [0, 1, 2, 3]
    assert all(type(ro) is Rollout for ro in g0.rollouts)
    assert g0.rollouts[1].rewards == {"accuracy": 1.0, "format": 1.0, "language": None}
    assert [ro.truncated for ro in g0.rollouts] == [False, False, False, True]
    assert all(type(ro.truncated) is bool for ro in g0.rollouts)
    assert [ro.advantage for ro in g0.rollouts] == pytest.approx([-1.0, -1 / 3, 1 / 3, 1.0])
    assert [ro.length for ro in g0.rollouts] == [10, 11, 12, 13]
    assert g0.rollouts[2].completion == "<think>g0 s2</think><answer>2</answer>"

    assert store.group_steps(sid) == [1, 5]
    assert store.step_groups(sid, 99) == []
    assert store.group_steps(make_run(store, "x").stages[0].id) == []


def test_prompt_history_follows_one_prompt(store):
    sid = make_run(store).stages[0].id
    for step in (1, 2, 3):
        store.add_groups(sid, step, [make_group(0, "2+2?"), make_group(1, f"other {step}")])
    history = store.prompt_history(sid, "2+2?")
    assert [(g.step, g.group_index, g.prompt) for g in history] == [
        (1, 0, "2+2?"), (2, 0, "2+2?"), (3, 0, "2+2?")]
    assert all(len(g.rollouts) == 4 for g in history)
    assert store.prompt_history(sid, "never asked") == []


def test_prompt_history_same_prompt_twice_in_one_step(store):
    sid = make_run(store).stages[0].id
    store.add_groups(sid, 1, [make_group(0, "dup"), make_group(1, "dup")])
    store.add_groups(sid, 2, [make_group(0, "dup")])
    history = store.prompt_history(sid, "dup")
    assert [(g.step, g.group_index) for g in history] == [(1, 0), (1, 1), (2, 0)]


def test_iter_rollouts_joins_prompt_and_reference(store):
    run = make_run(store)
    s0, s1 = run.stages[0].id, run.stages[1].id
    store.add_groups(s0, 1, [make_group(1, "p1"), make_group(0, "p0")])
    store.add_groups(s1, 1, [make_group(0, "q0", g=2)])
    other = make_run(store, "other").stages[0].id
    store.add_groups(other, 1, [make_group(0, "not mine")])

    rows = list(store.iter_rollouts(run.id))
    assert len(rows) == 4 + 4 + 2
    assert {r["prompt"] for r in rows} == {"p0", "p1", "q0"}
    keys = [(r["stage_id"], r["step"], r["group_id"], r["sample_index"]) for r in rows]
    assert keys == sorted(keys)
    first = rows[0]
    assert first["run_id"] == run.id and first["prompt"] == "p0" and first["reference"] == "0"
    assert first["rewards"] == {"accuracy": 0.0, "format": 1.0, "language": None}
    assert first["truncated"] is False and rows[3]["truncated"] is True
    assert set(first) >= {"completion", "reward", "advantage", "length"}


# ------------------------------------------------------------------------------ checkpoints
def test_checkpoints_and_newest_on_stage(store):
    run = make_run(store)
    sid = run.stages[0].id
    store.add_checkpoint(sid, 10, "/ck/10")
    store.add_checkpoint(sid, 30, "/ck/30", kind="final")
    store.add_checkpoint(sid, 20, "/ck/20")  # written later, but an older step
    cks = store.checkpoints(sid)
    assert all(type(c) is Checkpoint for c in cks)
    assert [(c.step, c.path) for c in cks] == [(10, "/ck/10"), (20, "/ck/20"), (30, "/ck/30")]
    assert cks[-1].kind == "final"
    assert store.get_stage(sid).checkpoint == "/ck/30"
    stages = store.get_run(run.id).stages
    assert stages[0].checkpoint == "/ck/30" and stages[1].checkpoint is None
    assert store.list_runs()[0].stages[0].checkpoint == "/ck/30"


# ------------------------------------------------------------------------------ commands/events
def test_commands_pending_then_applied(store):
    sid = make_run(store).stages[0].id
    a = store.add_command(sid, "pause")
    b = store.add_command(sid, "set", {"temperature": 0.7})
    pending = store.pending_commands(sid)
    assert all(type(c) is Command for c in pending)
    assert [(c.id, c.kind, c.payload) for c in pending] == [
        (a, "pause", {}), (b, "set", {"temperature": 0.7})]
    store.mark_command_applied(a, 12, "paused at step 12")
    assert [c.id for c in store.pending_commands(sid)] == [b]
    done = store.commands(sid)[0]
    assert (done.applied_step, done.result) == (12, "paused at step 12")
    assert done.applied_at is not None and done.applied_at >= done.created_at
    assert store.pending_commands(make_run(store, "x").stages[0].id) == []


def test_events_newest_first(store):
    run = make_run(store)
    sid = run.stages[0].id
    store.add_event(run.id, "first")
    store.add_event(run.id, "second", stage_id=sid, step=3, level="warning")
    events = store.events(run.id)
    assert all(type(e) is Event for e in events)
    assert [e.message for e in events][:2] == ["second", "first"]
    assert events[-1].message.startswith("run created")
    assert (events[0].stage_id, events[0].step, events[0].level) == (sid, 3, "warning")
    assert [e.message for e in store.events(run.id, stage_id=sid)] == ["second"]
    assert len(store.events(run.id, limit=1)) == 1


# ------------------------------------------------------------------------------ datasets
def _rows(n: int = 3) -> list[dict]:
    return [{"prompt": f"q{i}", "completion": f"c{i}", "answer": str(i), "source": "rule",
             "meta": {"score": i}} for i in range(n)]


def test_datasets_create_and_read(store):
    run = make_run(store)
    ds = store.create_dataset("rs", "rejection", _rows(), run_id=run.id,
                              stage_id=run.stages[1].id)
    empty = store.create_dataset("empty", "cold_start", [])
    listed = store.datasets()
    assert all(type(d) is Dataset for d in listed)
    assert [(d.id, d.size) for d in listed] == [(ds, 3), (empty, 0)]
    assert [d.id for d in store.datasets(run.id)] == [ds]
    rows = store.dataset_rows(ds)
    assert all(type(r) is CuratedRow for r in rows)
    assert [(r.row_index, r.prompt, r.completion, r.answer, r.status, r.meta) for r in rows] == [
        (i, f"q{i}", f"c{i}", str(i), "pending", {"score": i}) for i in range(3)]
    assert store.dataset_rows(empty) == []
    with pytest.raises(KeyError):
        store.dataset_rows(10_000)


def test_edit_history_and_exact_undo(store):
    ds = store.create_dataset("rs", "rejection", _rows())
    row = store.dataset_rows(ds)[1]
    store.edit_row(row.id, "completion", "first edit")
    store.edit_row(row.id, "completion", "second edit")
    store.edit_row(row.id, "status", "rejected")
    store.edit_row(row.id, "answer", None)
    store.edit_row(row.id, "answer", None)  # no change: no history entry
    edited = store.dataset_rows(ds)[1]
    assert (edited.completion, edited.status, edited.answer) == ("second edit", "rejected", None)
    assert store.dataset_rows(ds, status="rejected") == [edited]
    history = store.row_edits(row.id)
    assert [(h["field"], h["old"], h["new"]) for h in history] == [
        ("completion", "c1", "first edit"), ("completion", "first edit", "second edit"),
        ("status", "pending", "rejected"), ("answer", "1", None)]

    assert store.undo_last_edit(ds) == "row 1: answer restored"
    assert store.undo_last_edit(ds) == "row 1: status restored"
    assert store.dataset_rows(ds)[1].completion == "second edit"
    assert store.undo_last_edit(ds) is not None
    assert store.dataset_rows(ds)[1].completion == "first edit"
    assert store.undo_last_edit(ds) is not None
    restored = store.dataset_rows(ds)[1]
    assert (restored.prompt, restored.completion, restored.answer, restored.status,
            restored.meta) == (row.prompt, row.completion, row.answer, row.status, row.meta)
    assert store.undo_last_edit(ds) is None  # nothing left to undo
    assert all(h["undone"] for h in store.row_edits(row.id))
    assert store.dataset_rows(ds)[0] == store.dataset_rows(ds)[0]  # others untouched
    assert [r.completion for r in store.dataset_rows(ds)] == ["c0", "c1", "c2"]


def test_editable_fields_enforced(store):
    ds = store.create_dataset("rs", "rejection", _rows(1))
    row = store.dataset_rows(ds)[0]
    for field in ("source", "meta_json", "dataset_id", "row_index", "id", "updated_at"):
        with pytest.raises(ValueError, match="cannot be edited"):
            store.edit_row(row.id, field, "x")
    with pytest.raises(KeyError):
        store.edit_row(10_000, "prompt", "x")
    assert store.dataset_rows(ds)[0] == row
    assert store.row_edits(row.id) == []


# ------------------------------------------------------------------------------ deletes/purges
def _fill_run(store: Store, run: Run) -> None:
    sid = run.stages[0].id
    store.add_metrics(sid, 1, {"loss": 1.0})
    store.add_groups(sid, 1, [make_group(0), make_group(1)])
    store.add_checkpoint(sid, 1, "/ck")
    store.add_command(sid, "pause")
    store.add_event(run.id, "hello", stage_id=sid)
    ds = store.create_dataset("d", "rejection", _rows(2), run_id=run.id, stage_id=sid)
    store.edit_row(store.dataset_rows(ds)[0].id, "prompt", "edited")


def test_delete_run_cascades_and_spares_other_runs(store):
    gone, kept = make_run(store, "gone"), make_run(store, "kept")
    _fill_run(store, gone)
    _fill_run(store, kept)
    before = {t: count(store, t) for t in ("stages", "metrics", "groups", "rollouts",
                                           "checkpoints", "commands", "events", "datasets",
                                           "dataset_rows", "row_edits")}
    store.delete_run(gone.id)

    with pytest.raises(KeyError):
        store.get_run(gone.id)
    assert [r.id for r in store.list_runs()] == [kept.id]
    gone_stages = [s.id for s in gone.stages]
    for table in ("metrics", "groups", "rollouts", "checkpoints", "commands"):
        assert count(store, table, f"stage_id IN ({','.join(map(str, gone_stages))})") == 0, table
    assert count(store, "stages", "run_id = :r", r=gone.id) == 0
    assert count(store, "events", "run_id = :r", r=gone.id) == 0
    assert count(store, "datasets", "run_id = :r", r=gone.id) == 0
    # Exactly half of every table is gone; the other run is intact.
    for table, n in before.items():
        assert count(store, table) == n // 2, table
    ks = kept.stages[0].id
    assert len(store.step_groups(ks, 1)) == 2
    assert store.metric_series(ks, "loss")[1] == [1.0]
    (kds,) = store.datasets(kept.id)
    assert kds.size == 2 and store.dataset_rows(kds.id)[0].prompt == "edited"
    assert store.undo_last_edit(kds.id) == "row 0: prompt restored"
    with pytest.raises(KeyError):
        store.delete_run(gone.id)


def test_purge_stage_records_after(store):
    run = make_run(store)
    sid, other = run.stages[0].id, run.stages[1].id
    for step in range(1, 6):
        store.add_metrics(sid, step, {"loss": float(step)})
        store.add_groups(sid, step, [make_group(0), make_group(1)])
    store.add_metrics(other, 9, {"loss": 9.0})
    store.add_groups(other, 9, [make_group(0)])

    store.purge_stage_records_after(sid, 3)
    assert store.metric_series(sid, "loss")[0] == [1, 2, 3]
    assert store.group_steps(sid) == [1, 2, 3]
    assert count(store, "rollouts", "stage_id = :s AND step > 3", s=sid) == 0
    assert count(store, "rollouts", "stage_id = :s", s=sid) == 3 * 2 * 4
    # Another stage's later steps are not touched.
    assert store.group_steps(other) == [9]
    assert store.metric_series(other, "loss")[0] == [9]
    # The replayed steps can be written again (no duplicate-key error).
    store.add_groups(sid, 4, [make_group(0)])
    assert store.group_steps(sid) == [1, 2, 3, 4]


def test_check_writable_on_a_writable_store(store):
    store.check_writable()
    assert count(store, "sqlite_master", "name = '_write_probe'") == 0


# ------------------------------------------------------------------------------ file database
def test_file_db_pragmas(file_url):
    st = Store(file_url)
    try:
        with st.engine.connect() as conn:
            assert conn.execute(text("PRAGMA journal_mode")).scalar().lower() == "wal"
            assert conn.execute(text("PRAGMA foreign_keys")).scalar() == 1
            assert conn.execute(text("PRAGMA busy_timeout")).scalar() >= 5000
            assert conn.execute(text("PRAGMA synchronous")).scalar() == 1  # NORMAL
            tables = {row[0] for row in conn.execute(
                text("SELECT name FROM sqlite_master WHERE type='table'"))}
        assert set(orm.Base.metadata.tables) <= tables
        # A raw connection with no pragmas still sees WAL: it is stored in the file.
        raw = sqlite3.connect(file_url.removeprefix("sqlite:///"))
        assert raw.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        raw.close()
    finally:
        st.dispose()


def test_file_db_migrations_at_head_and_reopen_keeps_data(file_url):
    first = Store(file_url)
    run = make_run(first)
    first.add_groups(run.stages[0].id, 1, [make_group(0)])
    with first.engine.connect() as conn:
        revisions = conn.execute(text("SELECT version_num FROM alembic_version")).scalars().all()
    assert revisions == [head_revision()]

    # A second Store on the same file (another process, or the next start of the UI).
    second = Store(file_url)
    assert [r.id for r in second.list_runs()] == [run.id]
    assert len(second.step_groups(run.stages[0].id, 1)[0].rollouts) == 4
    first.dispose()
    second.dispose()

    # Reopening after closing: migrations are idempotent and the data is intact.
    third = Store(file_url)
    assert third.get_run(run.id) == run
    with third.engine.connect() as conn:
        assert conn.execute(text("SELECT version_num FROM alembic_version")).scalars().all() == [
            head_revision()]
    third.dispose()


def test_folder_is_created_and_a_folder_path_is_refused(tmp_path):
    deep = tmp_path / "a" / "b" / "runs.db"
    st = Store(f"sqlite:///{deep}")
    make_run(st)
    st.dispose()
    assert deep.is_file()
    with pytest.raises(StoreError, match="folder"):
        Store(f"sqlite:///{tmp_path / 'a'}")


@pytest.mark.parametrize("kind", [
    "file",
    "memory",
])
def test_writes_from_a_background_thread(kind, file_url):
    """The GRPO group writer records from a thread; the store must allow it."""
    st = Store(file_url if kind == "file" else "sqlite://")
    sid = make_run(st).stages[0].id
    errors = []

    def write():
        try:
            st.add_groups(sid, 1, [make_group(0)])
            st.add_metrics(sid, 1, {"loss": 1.0})
        except Exception as exc:  # pragma: no cover - shown by the assert
            errors.append(exc)

    thread = threading.Thread(target=write)
    thread.start()
    thread.join()
    assert errors == []
    assert len(st.step_groups(sid, 1)) == 1
    st.dispose()


def _readonly_url(path: Path) -> str:
    # pysqlite URI form: SQLAlchemy passes "file:...?mode=ro" to sqlite3 with uri=True.
    return f"sqlite:///file:{path}?mode=ro&uri=true"


def test_read_only_database_gives_a_clear_error(tmp_path):
    path = tmp_path / "ro.db"
    st = Store(f"sqlite:///{path}")
    run = make_run(st)
    st.dispose()

    ro = Store(_readonly_url(path))  # at head already: opening only reads
    try:
        assert [r.id for r in ro.list_runs()] == [run.id]  # reading still works
        with pytest.raises(StoreError) as info:
            ro.check_writable()
        message = str(info.value)
        assert "read-only" in message
        assert "writable" in message and "R1WB_DB_URL" in message  # says what to do
        with pytest.raises(StoreError, match="read-only"):
            make_run(ro, "never saved")
        with pytest.raises(StoreError, match="read-only"):
            ro.add_metrics(run.stages[0].id, 1, {"loss": 1.0})
    finally:
        ro.dispose()
    assert [r.name for r in Store(f"sqlite:///{path}").list_runs()] == ["run"]


def test_read_only_database_that_needs_migrating(tmp_path):
    path = tmp_path / "empty.db"
    sqlite3.connect(path).close()  # an empty database: migrations would have to write
    with pytest.raises(StoreError, match="read-only"):
        Store(_readonly_url(path))


def test_read_only_database_not_in_wal_mode_can_still_be_read(tmp_path):
    path = tmp_path / "copied.db"
    st = Store(f"sqlite:///{path}")
    run = make_run(st)
    st.dispose()
    raw = sqlite3.connect(path)  # e.g. a backup copy, or a file made by another tool
    raw.execute("PRAGMA journal_mode=DELETE")
    raw.close()
    ro = Store(_readonly_url(path))
    try:
        assert [r.id for r in ro.list_runs()] == [run.id]
        with pytest.raises(StoreError, match="read-only"):
            ro.check_writable()
    finally:
        ro.dispose()
