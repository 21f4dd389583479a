"""Curation behind the API and the CLI: filters, review by filter with a confirmation count,
edits refused on a stale version, undo, duplicates, histogram numbers, export to jsonl /
parquet / HF folders inside the data folder, and import back as a new version.

Fast: no model, no background process; CLI verbs run in-process with ``--db``.
"""
from __future__ import annotations

import json
import re

import pytest

from backend import curation
from backend.__main__ import main as cli
from backend.api import EditConflict, Workbench, WorkbenchError
from storage import ACCEPTED, EDITED, PENDING, REJECTED

SCRIPT = "<script>alert('x')</script> <b>bold</b>"


def candidate(i: int, prompt: str, completion: str, *, status: str = PENDING,
              source: str = "reasoning", **meta) -> dict:
    provenance = {"run_id": 1, "stage_id": 3, "checkpoint": "/runs/1/ckpt-40", "step": 40,
                  "rollout": i, "rule_scores": {"accuracy": 1.0, "format": 1.0},
                  "rule_correct": True, "judge_verdict": "correct", "judge_rationale": "ok",
                  "judge_correct": True, "finish_reason": "stop", "is_reasoning_complete": True,
                  "pass_count": 3, "n_candidates": 4, "length": 20 + i,
                  "language_mixing": 0.0, "duplicate_of": None}
    provenance.update(meta)
    return {"prompt": prompt, "completion": completion, "answer": "17", "source": source,
            "status": status, "meta": provenance}


ROWS = [
    candidate(0, "12+5=", "<think>2+5+0=7,1+0+0=1</think> 12+5=17<answer>17</answer>"),
    candidate(1, "12+5=", "<think>2+5+0=7,1+0+0=1</think>\n   12+5=17<answer>17</answer>"),
    candidate(2, "12+5=", "<THINK>2+5+0=7,1+0+0=1</THINK> 12+5=17<ANSWER>17</ANSWER>"),
    candidate(3, "12+5=", "<answer>18</answer>", rule_correct=False, judge_verdict="incorrect",
              rule_scores={"accuracy": 0.0, "format": 0.0}, length=5),
    candidate(4, "3+4=", "<think>3+4+0=7</think><answer>7</answer>", status=ACCEPTED),
    candidate(5, "3+4=", SCRIPT, source="non_reasoning", judge_verdict=None),
]


@pytest.fixture
def wb(db_url) -> Workbench:
    return Workbench(db_url)


@pytest.fixture
def ds(wb) -> int:
    return wb.store.create_dataset("rs", "rejection", ROWS)


def indexes(rows) -> list[int]:
    return [r.row_index for r in rows]


# ------------------------------------------------------------------------------ filters
@pytest.mark.parametrize("items,meta,ranges", [
    (["judge_verdict=correct"], {"judge_verdict": "correct"}, {}),
    (["rollout=1|3"], {"rollout": ["1", "3"]}, {}),
    (["length=10..25"], {}, {"length": (10.0, 25.0)}),
    (["length=..25", "pass_count=2.."], {}, {"length": (None, 25.0), "pass_count": (2.0, None)}),
    (["rule_scores.accuracy=1"], {"rule_scores.accuracy": "1"}, {}),
    ([" step = 40 "], {"step": "40"}, {}),
])
def test_parse_where(items, meta, ranges):
    assert curation.parse_where(items) == (meta, ranges)


@pytest.mark.parametrize("items,message", [
    (["length"], "expected key=value"),
    (["=3"], "expected key=value"),
    (["length=a..b"], "needs numbers"),
    (["length=.."], "at least one end"),
])
def test_parse_where_refuses_bad_conditions(items, message):
    with pytest.raises(curation.CurationError, match=message):
        curation.parse_where(items)


@pytest.mark.parametrize("kwargs,expected", [
    ({"where": ["status=pending", "source=reasoning"]}, [0, 1, 2, 3]),
    ({"where": ["rule_correct=false"]}, [3]),
    ({"where": ["judge_verdict=null"]}, [5]),
    ({"where": ["length=21..23"]}, [1, 2]),
    ({"search": "ALERT("}, [5]),
    ({"prompt": "3+4=", "status": [ACCEPTED, PENDING]}, [4, 5]),
])
def test_filters_through_the_api(wb, ds, kwargs, expected):
    flt = wb.make_filter(**kwargs)
    assert indexes(wb.curation_rows(ds, flt)) == expected
    assert wb.count_rows(ds, flt) == len(expected)


def test_unknown_status_is_refused(wb, ds):
    with pytest.raises(WorkbenchError, match="unknown status"):
        wb.make_filter(status="kept")


@pytest.mark.parametrize("sort,descending,expected", [
    ("length", True, [5, 4, 2, 1, 0, 3]),
    # completion characters 57, 60, 57, 19, 40, 39; ties keep row order
    ("chars", False, [3, 5, 4, 0, 2, 1]),
    ("judge_verdict", False, [0, 1, 2, 4, 3, 5]),  # rows without the field last
])
def test_sort(wb, ds, sort, descending, expected):
    got = indexes(wb.curation_rows(ds, sort=sort, descending=descending))
    assert got == expected
    assert indexes(wb.curation_rows(ds, sort=sort, descending=descending, limit=2,
                                    offset=1)) == expected[1:3]


def test_highlight_spans_are_plain_text_pieces():
    assert curation.highlight_spans("a <b>Think</b> think", "think") == [
        ("a <b>", False), ("Think", True), ("</b> ", False), ("think", True)]
    assert curation.highlight_spans("x+y", "+") == [("x", False), ("+", True), ("y", False)]
    assert curation.highlight_spans("abc", "") == [("abc", False)]


# ------------------------------------------------------------------------------ changes
def test_bulk_review_counts_first_then_applies_as_one_undoable_action(wb, ds):
    flt = wb.make_filter(where=["rule_correct=true"], source="reasoning")  # rows 0, 1, 2, 4
    preview = wb.bulk_review(ds, flt, ACCEPTED, dry_run=True)
    assert (preview.matched, preview.changing, preview.done) == (4, 3, False)
    assert "4 rows match; 3 would change" in preview.describe()
    assert wb.queue_counts(ds)[ACCEPTED] == 1  # a dry run changes nothing

    done = wb.bulk_review(ds, flt, ACCEPTED, author="ann")
    assert (done.matched, done.changing, done.done) == (4, 3, True)
    assert wb.queue_counts(ds)[ACCEPTED] == 4
    (action,) = wb.curation_history(ds)
    assert (action.kind, action.rows, action.author) == ("bulk", 3, "ann")
    assert "rule_correct=true" in action.description
    assert "3 rows restored" in wb.undo(ds, author="ben")
    assert wb.queue_counts(ds)[ACCEPTED] == 1
    assert wb.undo(ds) is None


def test_two_tabs_editing_one_row(wb, ds):
    tab_a = tab_b = wb.curation_rows(ds)[3]  # both opened at the same version
    wb.edit_row(tab_a.id, "completion", "<answer>17</answer>",
                expected_version=tab_a.version, author="tab A")
    with pytest.raises(EditConflict) as refused:
        wb.edit_row(tab_b.id, "completion", "<answer>seventeen</answer>",
                    expected_version=tab_b.version, author="tab B")
    assert refused.value.newer_value == "<answer>17</answer>"  # what tab B is shown
    assert wb.get_row(tab_a.id).completion == "<answer>17</answer>"
    # accept / reject is refused on a stale version the same way
    with pytest.raises(EditConflict):
        wb.review_row(tab_b.id, REJECTED, expected_version=tab_b.version)
    assert wb.get_row(tab_a.id).status == PENDING


def test_edit_fields_and_diff_against_the_original(wb, ds):
    row = wb.curation_rows(ds)[0]
    with pytest.raises(WorkbenchError, match="cannot be edited here"):
        wb.edit_row(row.id, "status", ACCEPTED, expected_version=None)
    first = wb.edit_row(row.id, "completion", row.completion.replace("12+5=17", "sum 17"),
                        expected_version=row.version, author="cat")
    wb.edit_row(row.id, "completion", first.completion + "!", expected_version=first.version)
    diff = wb.row_diff(row.id)
    assert diff.changed and diff.original == row.completion
    assert diff.current == first.completion + "!"
    assert "".join(t for op, t in diff.spans if op != "insert") == diff.original
    assert "".join(t for op, t in diff.spans if op != "delete") == diff.current
    assert ("insert", "!") in diff.spans
    assert diff.unified[0].startswith("--- original")
    assert [h["author"] for h in wb.row_history(row.id)][0] == "cat"
    assert wb.queue_counts(ds)[EDITED] == 1
    untouched = wb.row_diff(wb.curation_rows(ds)[1].id)
    assert not untouched.changed and untouched.spans == [("equal", untouched.current)]


def test_prompt_candidates_side_by_side(wb, ds):
    rows = wb.prompt_candidates(ds, "12+5=")
    assert indexes(rows)[-1] == 3  # the wrong one (lowest rule scores) last
    assert sorted(indexes(rows)) == [0, 1, 2, 3]


# ------------------------------------------------------------------------------ duplicates, stats
@pytest.mark.parametrize("threshold,expected", [
    # rows 0, 1, 2 differ in whitespace runs and case only: exact after normalising; the
    # wrong answer (row 3) is far from them
    (0.9, [("exact", [0, 1, 2])]),
    # loose enough to pull row 3 in (a near cluster around the exact one), and to join the
    # two unrelated candidates of the other prompt
    (0.2, [("near", [0, 1, 2, 3]), ("exact", [0, 1, 2]), ("near", [4, 5])]),
])
def test_duplicate_clusters(wb, ds, threshold, expected):
    clusters = wb.duplicate_clusters(ds, threshold=threshold)
    assert [(c.kind, c.row_indexes) for c in clusters] == expected
    for c in clusters:  # never across prompts
        assert {ROWS[i]["prompt"] for i in c.row_indexes} == {c.prompt}


def test_near_duplicates_within_a_prompt(wb):
    base = "<think>" + ",".join(f"{i}+{i}+0={2 * i}" for i in range(9)) + "</think><answer>1</answer>"
    ds = wb.store.create_dataset("near", "rejection", [
        {"prompt": "p", "completion": base},
        {"prompt": "p", "completion": base.replace("8+8+0=16", "8+8+0=15")},  # one digit off
        {"prompt": "p", "completion": "<answer>completely different</answer>"},
        {"prompt": "q", "completion": base},  # same text, other prompt: not a duplicate
    ])
    (cluster,) = wb.duplicate_clusters(ds)  # one digit off: near, not exact
    assert (cluster.kind, cluster.row_indexes) == ("near", [0, 1])
    assert 0.9 <= cluster.similarity < 1
    with pytest.raises(WorkbenchError, match="threshold"):
        wb.duplicate_clusters(ds, threshold=0)


def test_stats_for_histograms(wb, ds):
    numbers = wb.dataset_stats(ds)
    assert numbers["chars"] == [float(len(r["completion"])) for r in ROWS]
    assert numbers["length"] == [20.0, 21.0, 22.0, 5.0, 24.0, 25.0]
    assert numbers["rule_scores.accuracy"] == [1.0, 1.0, 1.0, 0.0, 1.0, 1.0]
    assert numbers["rule_correct"] == [1.0, 1.0, 1.0, 0.0, 1.0, 1.0]  # booleans as 0/1
    assert "judge_verdict" not in numbers  # text is not histogrammed
    only = wb.dataset_stats(ds, wb.make_filter(status=ACCEPTED))
    assert only["length"] == [24.0]


# ------------------------------------------------------------------------------ export / import
@pytest.mark.parametrize("fmt", ["jsonl", "parquet", "hf"])
def test_export_then_import_round_trip(wb, ds, home, fmt):
    wb.bulk_review(ds, None, ACCEPTED)
    wb.review_row(wb.curation_rows(ds)[3].id, REJECTED)
    result = wb.export_dataset(ds, f"curated.{fmt}", fmt=fmt)
    assert result.path == (home / "exports" / f"curated.{fmt}").resolve()
    assert result.rows == 5  # the accepted rows only

    from datasets import Dataset, load_from_disk
    exported = (load_from_disk(str(result.path)) if fmt == "hf"
                else Dataset.from_parquet(str(result.path)) if fmt == "parquet"
                else Dataset.from_json(str(result.path)))
    # provenance flattened into columns of their own
    assert {"prompt", "completion", "status", "run_id", "checkpoint", "rollout",
            "rule_scores.accuracy", "judge_verdict", "row_id"} <= set(exported.column_names)
    assert exported[0]["checkpoint"] == "/runs/1/ckpt-40"

    child = wb.import_dataset(str(result.path), "rs v2", parent=ds)
    assert (child.parent_id, child.size, child.kind) == (ds, 5, "rejection")
    originals = wb.curation_rows(ds, wb.make_filter(status=ACCEPTED))
    imported = wb.curation_rows(child.id)
    for a, b in zip(originals, imported):
        assert (b.prompt, b.completion, b.answer, b.source, b.status) == (
            a.prompt, a.completion, a.answer, a.source, ACCEPTED)
        assert {k: v for k, v in b.meta.items() if k != "parent_row_id"} == a.meta
        assert b.meta["parent_row_id"] == a.id
    assert imported[-1].completion == SCRIPT  # markup is data, kept as written


def test_jsonl_export_reads_as_plain_json_lines(wb, ds):
    wb.bulk_review(ds, None, ACCEPTED)
    result = wb.export_dataset(ds, "sub/all.jsonl", status=None)
    lines = [json.loads(line) for line in result.path.read_text("utf-8").splitlines()]
    assert [line["completion"] for line in lines] == [r["completion"] for r in ROWS]
    assert lines[0]["rule_scores.format"] == 1.0 and lines[0]["duplicate_of"] is None


@pytest.mark.parametrize("out", ["/etc/curated.jsonl", "../../outside.jsonl", "~/curated.jsonl"])
def test_export_outside_the_data_folder_is_refused(wb, ds, out):
    with pytest.raises(WorkbenchError, match="outside the data folder"):
        wb.export_dataset(ds, out)


def test_export_snapshot_keeps_the_frozen_rows(wb, ds):
    wb.bulk_review(ds, None, ACCEPTED)
    snap_id, digest = wb.store.snapshot_dataset(ds)
    wb.edit_row(wb.curation_rows(ds)[0].id, "completion", "changed later",
                expected_version=None)
    for ref in (str(snap_id), digest[:10]):
        result = wb.export_dataset(ds, f"snap-{ref}.jsonl", snapshot=ref)
        first = json.loads(result.path.read_text("utf-8").splitlines()[0])
        assert first["completion"] == ROWS[0]["completion"] and first["snapshot_id"] == snap_id
    with pytest.raises(WorkbenchError, match="no snapshot"):
        wb.export_dataset(ds, "x.jsonl", snapshot="ffffffffff")


@pytest.mark.parametrize("content,message", [
    (b'{"prompt": "q", "completion": "c", "score": 1}\n', "unknown column(s) score"),
    (b'{"prompt": "q", "completion": "c"}\n{"prompt": "\xff\xfe", "completion": "c"}\n',
     "line 2: not UTF-8 text"),
    (b'{"prompt": "q", "completion": "c"}\n{"prompt": \n', "line 2: not valid JSON"),
    (b'{"prompt": "q"}\n', "no completion column"),
    (b'{"prompt": "q", "completion": 3}\n', "completion must be text"),
    (b'{"prompt": "q", "completion": "c", "status": "maybe"}\n', "status 'maybe'"),
    (b'["q", "c"]\n', "JSON object"),
    (b"\n\n", "no rows"),
])
def test_bad_import_files_are_refused_clearly(wb, tmp_path, content, message):
    path = tmp_path / "in.jsonl"
    path.write_bytes(content)
    with pytest.raises(WorkbenchError, match=re.escape(message)):
        wb.import_dataset(str(path), "bad")
    assert wb.datasets() == []  # nothing half-imported


def test_a_new_version_may_carry_its_parents_own_fields(wb, tmp_path):
    parent = wb.store.create_dataset("custom", "rejection", [
        {"prompt": "q", "completion": "c", "status": ACCEPTED,
         "meta": {"grader": {"name": "mine", "score": 0.5}, "reject_reasons": []}}])
    result = wb.export_dataset(parent, "custom.jsonl")
    with pytest.raises(WorkbenchError, match=re.escape("unknown column(s) grader.name")):
        wb.import_dataset(str(result.path), "no parent")
    child = wb.import_dataset(str(result.path), "v2", parent=parent)
    assert wb.curation_rows(child.id)[0].meta["grader"] == {"name": "mine", "score": 0.5}


def test_import_extra_columns_when_asked_and_utf8_text(wb, tmp_path):
    path = tmp_path / "in.jsonl"
    path.write_text('\ufeff{"prompt": "3+4=", "completion": "sieben ✓", "score": 1,'
                    ' "rule_scores.accuracy": 1}\n', encoding="utf-8")
    child = wb.import_dataset(str(path), "extra", allow_extra=True)
    (row,) = wb.curation_rows(child.id)
    assert (row.completion, row.status) == ("sieben ✓", PENDING)
    assert row.meta == {"score": 1, "rule_scores": {"accuracy": 1}}
    with pytest.raises(KeyError):
        wb.import_dataset(str(path), "orphan", parent=999)


def test_export_rollouts_has_the_same_content_as_the_store(wb):
    from tests.storage.test_store import STAGES, make_group

    run = wb.store.create_run("r", "r1", "tiny", {}, STAGES)
    wb.store.add_groups(run.stages[0].id, 1, [make_group(0), make_group(1, prompt="é/ü")])
    out = wb.store.url  # any path works for rollouts; write next to the database
    path = out.replace("sqlite:///", "").replace("workbench.db", "rollouts.jsonl")
    assert wb.export_rollouts(run.id, path) == 8
    written = [json.loads(line) for line in open(path, encoding="utf-8")]
    stored = list(wb.store.iter_rollouts(run.id))
    assert len(written) == len(stored)
    for w, s in zip(written, stored):  # the same records; floats to 15 significant digits
        assert set(w) == set(s)
        for key, value in s.items():
            if isinstance(value, float):
                assert w[key] == pytest.approx(value, rel=1e-14), key
            elif key != "rewards":
                assert w[key] == value, key
        assert w["rewards"] == {k: v if v is None else pytest.approx(v)
                                for k, v in s["rewards"].items()}


# ------------------------------------------------------------------------------ CLI
def run_cli(db_url, *args) -> int:
    return cli([*args[:1], "--db", db_url, *args[1:]])


def test_cli_curation_verbs(db_url, wb, ds, capsys, monkeypatch):
    assert run_cli(db_url, "datasets") == 0
    assert "pending 5 accepted 1 rejected 0 edited 0\tin review" in capsys.readouterr().out

    assert run_cli(db_url, "rows", str(ds), "--where", "rule_correct=false", "--json") == 0
    (line,) = capsys.readouterr().out.splitlines()
    assert json.loads(line)["row_index"] == 3

    # review without --yes: the count, nothing changed, exit 2
    assert run_cli(db_url, "review", str(ds), "--reject", "--where", "judge_verdict=incorrect",
                   "--status", "pending") == 2
    assert "1 rows match; 1 would change" in capsys.readouterr().out
    assert wb.queue_counts(ds)[REJECTED] == 0
    assert run_cli(db_url, "review", str(ds), "--reject", "--where", "judge_verdict=incorrect",
                   "--yes", "--author", "cli") == 0
    assert wb.queue_counts(ds)[REJECTED] == 1

    row = wb.curation_rows(ds)[0]
    assert run_cli(db_url, "edit", str(row.id), "--completion", "fixed",
                   "--expect-version", str(row.version)) == 0
    # a second edit on the old version is refused, showing the newer text
    assert run_cli(db_url, "edit", str(row.id), "--completion", "other",
                   "--expect-version", str(row.version)) == 2
    err = capsys.readouterr().err
    assert "refused" in err and "'fixed'" in err
    monkeypatch.setattr("sys.stdin", __import__("io").StringIO("from stdin"))
    assert run_cli(db_url, "edit", str(row.id), "--completion", "-") == 0
    assert wb.get_row(row.id).completion == "from stdin"

    assert run_cli(db_url, "undo", str(ds)) == 0
    assert "completion restored" in capsys.readouterr().out
    assert run_cli(db_url, "mark-ready", str(ds)) == 0
    assert wb.get_dataset(ds).ready
    assert run_cli(db_url, "mark-ready", str(ds), "--unready") == 0
    assert not wb.get_dataset(ds).ready

    assert run_cli(db_url, "export-dataset", str(ds), "--out", "cli.parquet",
                   "--format", "parquet", "--status", "all") == 0
    out = capsys.readouterr().out
    assert "wrote 6 rows to" in out and out.strip().endswith("cli.parquet")
    exported = out.strip().rsplit(" ", 1)[1]
    assert run_cli(db_url, "import-dataset", exported, "--name", "again",
                   "--parent", str(ds)) == 0
    assert f"as a new version of dataset {ds}" in capsys.readouterr().out
    assert run_cli(db_url, "snapshots") == 0


@pytest.mark.parametrize("args,message", [
    (["rows", "999"], "dataset 999 does not exist"),
    (["rows", "{ds}", "--where", "length"], "expected key=value"),
    (["rows", "{ds}", "--status", "kept"], "unknown status"),
    (["review", "{ds}", "--accept", "--where", "x=..", "--yes"], "at least one end"),
    (["edit", "999", "--completion", "x"], "row 999 does not exist"),
    (["edit", "{row}"], "give --completion"),
    (["export-dataset", "{ds}", "--out", "/tmp/elsewhere.jsonl"], "outside the data folder"),
    (["export-dataset", "{ds}", "--out", "x.jsonl", "--status", "kept"], "not one of"),
    (["import-dataset", "/no/such/file.jsonl", "--name", "x"], "does not exist"),
    (["undo", "999"], "dataset 999 does not exist"),
    (["mark-ready", "999"], "dataset 999 does not exist"),
])
def test_cli_bad_input_exits_2_with_a_message(db_url, wb, ds, capsys, args, message):
    row = wb.curation_rows(ds)[0]
    args = [a.format(ds=ds, row=row.id) for a in args]
    assert run_cli(db_url, *args) == 2
    assert message in capsys.readouterr().err
