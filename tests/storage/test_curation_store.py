"""Curation in the store: review queues, filters, edits that refuse stale versions, bulk
changes undone as one unit, the ready flag, and snapshots that later edits never reach.

Every test runs on an in-memory and on a file SQLite database.
"""
from __future__ import annotations

import getpass

import pytest

from storage import (
    ACCEPTED,
    EDITED,
    PENDING,
    REJECTED,
    EditConflict,
    RowFilter,
    Store,
    StoreError,
    content_hash,
)


@pytest.fixture(params=["memory", "file"])
def store(request, tmp_path) -> Store:
    url = "sqlite://" if request.param == "memory" else f"sqlite:///{tmp_path / 'c.db'}"
    st = Store(url)
    yield st
    st.dispose()


def candidate(i: int, prompt: str, completion: str, status: str = PENDING, **meta) -> dict:
    base = {"run_id": 1, "stage_id": 2, "checkpoint": "ckpt-40", "step": 40, "rollout": i,
            "rule_scores": {"accuracy": 1.0, "format": 1.0}, "rule_correct": True,
            "judge_verdict": "correct", "length": 20 + i, "pass_count": 2, "n_candidates": 4}
    base.update(meta)
    return {"prompt": prompt, "completion": completion, "answer": "7", "source": "reasoning",
            "status": status, "meta": base}


def make_dataset(store: Store) -> int:
    rows = [
        candidate(0, "3+4=", "<think>3+4+0=7</think><answer>7</answer>"),
        candidate(1, "3+4=", "<think>3+4+0=8</think><answer>8</answer>", status=REJECTED,
                  rule_correct=False, rule_scores={"accuracy": 0.0, "format": 1.0},
                  judge_verdict="incorrect"),
        candidate(2, "3+4=", "<answer>7</answer>", status=ACCEPTED,
                  rule_scores={"accuracy": 1.0, "format": 0.0}, length=5),
        candidate(3, "12+5=", "<think>2+5+0=7,1+0+0=1</think><answer>17</answer>"),
        {**candidate(4, "Hello 100%_sure?", "Plain answer, no reasoning."),
         "source": "non_reasoning", "answer": None},
    ]
    return store.create_dataset("rs", "rejection", rows)


def indexes(rows) -> list[int]:
    return [r.row_index for r in rows]


# ------------------------------------------------------------------------------ queues
def test_queues_count_statuses_and_the_derived_edited_queue(store):
    ds = make_dataset(store)
    assert store.status_counts(ds) == {PENDING: 3, ACCEPTED: 1, REJECTED: 1, EDITED: 0,
                                       "total": 5}
    row = store.query_rows(ds)[3]
    store.edit_row(row.id, "completion", "<think>fixed</think><answer>17</answer>")
    store.edit_row(row.id, "status", ACCEPTED)
    counts = store.status_counts(ds)
    # an edited row stays in its status queue and is also counted as edited
    assert (counts[PENDING], counts[ACCEPTED], counts[EDITED]) == (2, 2, 1)
    assert [r.edited for r in store.query_rows(ds)] == [False, False, False, True, False]
    # a status change alone does not make a row "edited"
    store.edit_row(store.query_rows(ds)[0].id, "status", REJECTED)
    assert store.status_counts(ds)[EDITED] == 1
    store.undo_last_edit(ds)
    store.undo_last_edit(ds)
    store.undo_last_edit(ds)  # the completion edit: no longer edited
    assert store.status_counts(ds)[EDITED] == 0


def test_legacy_kept_status_is_accepted_and_unknown_status_refused(store):
    ds = store.create_dataset("old", "rejection", [{"prompt": "q", "completion": "c",
                                                     "status": "kept"}])
    assert store.query_rows(ds)[0].status == ACCEPTED
    with pytest.raises(ValueError, match="status 'maybe'"):
        store.create_dataset("bad", "rejection", [{"prompt": "q", "status": "maybe"}])
    with pytest.raises(ValueError, match="not one of"):
        store.edit_row(store.query_rows(ds)[0].id, "status", "kept")


# ------------------------------------------------------------------------------ filters
FILTER_CASES = [
    # (filter, row indexes it keeps)
    (RowFilter(), [0, 1, 2, 3, 4]),
    (RowFilter(status=PENDING), [0, 3, 4]),
    (RowFilter(status=[ACCEPTED, REJECTED]), [1, 2]),
    (RowFilter(source="non_reasoning"), [4]),
    (RowFilter(prompt="3+4="), [0, 1, 2]),  # every candidate of one prompt
    (RowFilter(search="THINK>2"), [3]),  # case-insensitive keyword in the text
    (RowFilter(search="100%_"), [4]),  # LIKE wildcards are matched literally
    (RowFilter(search="%"), [4]),
    (RowFilter(meta={"judge_verdict": "incorrect"}), [1]),
    (RowFilter(meta={"rule_correct": "false"}), [1]),  # typed on a command line
    (RowFilter(meta={"rule_correct": True}), [0, 2, 3, 4]),
    (RowFilter(meta={"rule_scores.format": 0}), [2]),  # dotted: a nested score
    (RowFilter(meta={"rollout": ["1", 3]}), [1, 3]),  # a list means any of them
    (RowFilter(meta={"no_such_field": 1}), []),  # absent field never matches
    (RowFilter(ranges={"length": (21, 23)}), [1, 3]),  # inclusive on both ends
    (RowFilter(ranges={"length": (None, 20)}), [0, 2]),  # open-ended
    (RowFilter(ranges={"rule_scores.accuracy": (0.5, None)}), [0, 2, 3, 4]),
    (RowFilter(ranges={"judge_verdict": (0, 1)}), []),  # not a number: no match
    (RowFilter(status=PENDING, meta={"step": "40"}, ranges={"length": (23, None)},
               search="<think>"), [3]),  # all conditions together
]


@pytest.mark.parametrize("flt,expected", FILTER_CASES)
def test_filters(store, flt, expected):
    ds = make_dataset(store)
    assert indexes(store.query_rows(ds, flt)) == expected
    assert store.count_rows(ds, flt) == len(expected)


def test_edited_filter_and_row_ids(store):
    ds = make_dataset(store)
    rows = store.query_rows(ds)
    store.edit_row(rows[2].id, "answer", "seven")
    assert indexes(store.query_rows(ds, RowFilter(status=EDITED))) == [2]
    assert indexes(store.query_rows(ds, RowFilter(status=[EDITED, REJECTED]))) == [1, 2]
    assert indexes(store.query_rows(ds, RowFilter(row_ids=[rows[4].id, rows[0].id]))) == [0, 4]
    with pytest.raises(ValueError, match="unknown status"):
        store.query_rows(ds, RowFilter(status="kept"))


@pytest.mark.parametrize("flt", [None, RowFilter(meta={"step": 40})])
def test_paging(store, flt):
    # Paging by SQL (no provenance filter) and after the provenance filter agree.
    ds = make_dataset(store)
    assert indexes(store.query_rows(ds, flt, limit=2)) == [0, 1]
    assert indexes(store.query_rows(ds, flt, limit=2, offset=2)) == [2, 3]
    assert indexes(store.query_rows(ds, flt, limit=2, offset=4)) == [4]


def test_unknown_dataset_and_row(store):
    for call in (lambda: store.query_rows(999), lambda: store.count_rows(999),
                 lambda: store.status_counts(999), lambda: store.get_row(999),
                 lambda: store.set_ready(999), lambda: store.snapshot_dataset(999),
                 lambda: store.set_status_where(999, None, ACCEPTED)):
        with pytest.raises(KeyError):
            call()


# ------------------------------------------------------------------------------ edits
def test_second_save_on_a_stale_version_is_refused_with_the_newer_text(store):
    ds = make_dataset(store)
    opened = store.query_rows(ds)[0]  # two browser tabs open the same row at version 1
    assert opened.version == 1
    first = store.edit_row(opened.id, "completion", "tab A's text",
                           expected_version=opened.version, author="alice")
    assert first.version == 2 and first.completion == "tab A's text"
    with pytest.raises(EditConflict) as err:
        store.edit_row(opened.id, "completion", "tab B's text", expected_version=opened.version,
                       author="bob")
    assert isinstance(err.value, StoreError)  # the CLI and pages handle it like any store error
    assert err.value.newer_value == "tab A's text"
    assert err.value.current.version == 2
    assert "tab A's text" in str(err.value) and "refused" in str(err.value)
    # nothing of tab B's save was written
    assert store.get_row(opened.id).completion == "tab A's text"
    assert [(h["new"], h["author"]) for h in store.row_edits(opened.id)] == [
        ("tab A's text", "alice")]
    # tab B reloads (version 2) and saves: accepted
    assert store.edit_row(opened.id, "completion", "tab B's text", expected_version=2,
                          author="bob").version == 3


def test_every_change_bumps_the_version(store):
    ds = make_dataset(store)
    row = store.query_rows(ds)[0]
    v = [row.version]
    v.append(store.edit_row(row.id, "status", ACCEPTED).version)
    store.set_status_where(ds, RowFilter(row_ids=[row.id]), REJECTED)
    v.append(store.get_row(row.id).version)
    store.undo_last_edit(ds)
    v.append(store.get_row(row.id).version)
    assert v == [1, 2, 3, 4]
    # a save that changes nothing leaves no history and no new version
    assert store.edit_row(row.id, "status", ACCEPTED).version == 4
    assert len(store.row_edits(row.id)) == 2


def test_author_defaults_to_the_os_user(store):
    ds = make_dataset(store)
    row = store.query_rows(ds)[0]
    store.edit_row(row.id, "prompt", "3 + 4 =")
    (action,) = store.curation_history(ds)
    assert action.author == getpass.getuser() == store.row_edits(row.id)[0]["author"]


# ------------------------------------------------------------------------------ bulk and undo
def test_bulk_by_filter_is_one_action_and_one_undo(store):
    ds = make_dataset(store)
    flt = RowFilter(meta={"rule_correct": True}, source="reasoning")  # rows 0, 2, 3
    assert store.set_status_where(ds, flt, ACCEPTED, author="carol") == 2  # 2 was accepted
    assert [r.status for r in store.query_rows(ds)] == [ACCEPTED, REJECTED, ACCEPTED,
                                                        ACCEPTED, PENDING]
    assert store.set_status_where(ds, flt, ACCEPTED) == 0  # nothing left to change
    history = store.curation_history(ds)
    assert [(a.kind, a.rows, a.author) for a in history] == [("bulk", 2, "carol")]
    assert [(e.row_index, e.old, e.new) for e in store.action_edits(history[0].id)] == [
        (0, PENDING, ACCEPTED), (3, PENDING, ACCEPTED)]

    row3 = store.query_rows(ds)[3]
    store.edit_row(row3.id, "completion", "edited after the bulk action")
    # newest first: the edit, then the whole bulk action at once
    assert store.undo_last_edit(ds, author="dave") == "row 3: completion restored"
    message = store.undo_last_edit(ds, author="dave")
    assert "2 rows restored" in message
    assert [r.status for r in store.query_rows(ds)] == [PENDING, REJECTED, ACCEPTED, PENDING,
                                                        PENDING]
    assert store.undo_last_edit(ds) is None
    assert [(a.undone, a.undone_by) for a in store.curation_history(ds)] == [
        (True, "dave"), (True, "dave")]


def test_bulk_on_many_rows(store):
    # more rows than one bounded IN list holds
    ds = store.create_dataset("big", "rejection", [
        {"prompt": f"{i}+1=", "completion": f"<answer>{i + 1}</answer>",
         "meta": {"length": i % 50}} for i in range(1203)])
    changed = store.set_status_where(ds, RowFilter(ranges={"length": (10, None)}), REJECTED)
    assert changed == sum(1 for i in range(1203) if i % 50 >= 10)
    assert store.status_counts(ds)[REJECTED] == changed
    store.undo_last_edit(ds)
    assert store.status_counts(ds)[PENDING] == 1203


def test_undo_is_per_dataset(store):
    a, b = make_dataset(store), make_dataset(store)
    store.edit_row(store.query_rows(a)[0].id, "completion", "in a")
    store.edit_row(store.query_rows(b)[0].id, "completion", "in b")
    assert store.undo_last_edit(a) == "row 0: completion restored"
    assert store.query_rows(b)[0].completion == "in b"


# ------------------------------------------------------------------------------ ready flag
def test_ready_flag(store):
    ds = make_dataset(store)
    assert store.get_dataset(ds).ready is False
    marked = store.set_ready(ds, author="erin")
    assert (marked.ready, marked.ready_by) == (True, "erin") and marked.ready_at is not None
    unmarked = store.set_ready(ds, False)
    assert (unmarked.ready, unmarked.ready_by, unmarked.ready_at) == (False, None, None)


def test_dataset_versions_record_their_parent(store):
    ds = make_dataset(store)
    child = store.create_dataset("rs v2", "import", [{"prompt": "q", "completion": "c"}],
                                 parent_id=ds, origin="/data/rs.jsonl")
    got = store.get_dataset(child)
    assert (got.parent_id, got.origin, got.size) == (ds, "/data/rs.jsonl", 1)
    with pytest.raises(KeyError):
        store.create_dataset("orphan", "import", [], parent_id=999)


# ------------------------------------------------------------------------------ snapshots
def test_snapshot_freezes_exactly_the_accepted_rows(store):
    ds = make_dataset(store)
    store.set_status_where(ds, RowFilter(status=PENDING, source="reasoning"), ACCEPTED)
    accepted = store.query_rows(ds, RowFilter(status=ACCEPTED))
    assert indexes(accepted) == [0, 2, 3]
    snap_id, digest = store.snapshot_dataset(ds, stage_id=None)
    rows = store.snapshot_rows(snap_id)
    assert [(r.row_id, r.prompt, r.completion, r.meta) for r in rows] == [
        (a.id, a.prompt, a.completion, a.meta) for a in accepted]
    # the hash is the sha256 of the rows' canonical JSON, recomputable from the copy
    assert digest == content_hash([{"prompt": r.prompt, "completion": r.completion,
                                    "answer": r.answer, "source": r.source, "meta": r.meta}
                                   for r in rows])
    assert len(digest) == 64
    snap = store.get_snapshot(snap_id)
    assert (snap.dataset_id, snap.size, snap.content_hash) == (ds, 3, digest)

    # later edits, rejections and undos never reach the snapshot
    store.edit_row(accepted[0].id, "completion", "changed after the snapshot")
    store.set_status_where(ds, RowFilter(row_ids=[accepted[1].id]), REJECTED)
    store.undo_last_edit(ds)
    assert store.snapshot_rows(snap_id) == rows
    assert store.get_snapshot(snap_id).content_hash == digest
    # a new snapshot sees the change and hashes differently; the same content, the same hash
    second_id, second = store.snapshot_dataset(ds)
    assert second != digest
    assert store.snapshot_rows(second_id)[0].completion == "changed after the snapshot"
    store.undo_last_edit(ds)
    assert store.snapshot_dataset(ds)[1] == digest
    assert [s.id for s in store.snapshots(ds)] == [snap_id, second_id, second_id + 1]


def test_snapshot_of_nothing_accepted_is_empty(store):
    ds = store.create_dataset("none", "rejection", [{"prompt": "q", "completion": "c"}])
    snap_id, digest = store.snapshot_dataset(ds)
    assert store.snapshot_rows(snap_id) == [] and digest == content_hash([])


def test_snapshots_by_stage_and_cascade_with_the_run(store):
    from storage import StageSpec

    run = store.create_run("r", "r1", "tiny", {}, [StageSpec("sft", "SFT", {})])
    sid = run.stages[0].id
    ds = store.create_dataset("rs", "rejection", [candidate(0, "q", "c", status=ACCEPTED)],
                              run_id=run.id)
    snap_id, _ = store.snapshot_dataset(ds, stage_id=sid)
    store.snapshot_dataset(ds)
    assert [s.id for s in store.snapshots(stage_id=sid)] == [snap_id]
    store.edit_row(store.query_rows(ds)[0].id, "completion", "x")
    store.delete_run(run.id)
    assert store.datasets() == [] and store.snapshots() == []
    with pytest.raises(KeyError):
        store.snapshot_rows(snap_id)


@pytest.mark.parametrize("a,b,same", [
    ([{"x": 1, "y": "é"}], [{"y": "é", "x": 1}], True),  # key order does not matter
    ([{"x": 1}], [{"x": 1.5}], False),
    ([{"x": "a"}, {"x": "b"}], [{"x": "b"}, {"x": "a"}], False),  # row order does
    ([], [], True),
])
def test_content_hash(a, b, same):
    assert (content_hash(a) == content_hash(b)) is same
