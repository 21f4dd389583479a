"""The Curation page, driven through Streamlit's AppTest against datasets the tests build
directly in the store (rows with the rejection stage's provenance): no training, nothing
started in the background."""
from __future__ import annotations

from html.parser import HTMLParser
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from storage import Store
from storage.records import StageSpec
from tests.pages.imports import training_libs_imported

APP = str(Path(__file__).resolve().parents[2] / "app.py")
XSS = '<script>document.title="pwned"</script><img src=x onerror="alert(1)">'


def candidate(prompt: str, rollout: int, correct: bool, *, length: int = 40,
              completion: str | None = None, judge: str = "correct", pass_count: int = 2,
              finish: str = "stop") -> dict:
    """One rejection-sampled row as backend/stages/rejection.py writes it."""
    text = completion or (f"<think>Add the digits of {prompt}, rollout {rollout}.</think>\n"
                          f"Summary: done.\n<answer>{7 if correct else 8}</answer>")
    return {"prompt": prompt, "completion": text, "answer": "7", "source": "reasoning",
            "status": "pending",
            "meta": {"run_id": 1, "stage_id": 3, "checkpoint": "ckpt/checkpoint-40", "step": 40,
                     "rollout": rollout, "rule_scores": {"accuracy": float(correct),
                                                         "format": 1.0},
                     "rule_correct": correct, "judge_verdict": judge,
                     "judge_correct": judge == "correct",
                     "judge_rationale": ("The final answer matches the reference."
                                         if judge == "correct" else
                                         "The final answer differs from the reference."),
                     "finish_reason": finish, "is_reasoning_complete": finish == "stop",
                     "pass_count": pass_count, "n_candidates": 4, "pass_rate": pass_count / 4,
                     "length": length, "language_mixing": 0.0, "duplicate_of": None,
                     "reject_reasons": []}}


def sample_rows() -> list[dict]:
    """Three prompts, four candidates each: 8 right by the rule, 4 wrong (rows 2, 3, 6, 7)."""
    rows = []
    for p, prompt in enumerate(["3+4=", "2+5=", "1+6="]):
        for k in range(4):
            correct = not (p < 2 and k >= 2)
            rows.append(candidate(prompt, k, correct, length=20 + 10 * k,
                                  judge="correct" if correct else "incorrect",
                                  pass_count=2 if p < 2 else 4))
    return rows


@pytest.fixture
def store(home, monkeypatch) -> Store:
    # A fresh data home (conftest's ``home``); nothing is ever started.
    monkeypatch.setattr("backend.runner.start_pipeline", lambda store, run_id: 0)
    return Store()


@pytest.fixture
def dataset(store) -> int:
    return store.create_dataset("rejection sampled", "rejection", sample_rows())


def page(dataset_id: int | None = None, **params: str) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=30)
    if dataset_id is not None:
        at.query_params["dataset"] = str(dataset_id)
    for key, value in params.items():
        at.query_params[key] = value
    at.switch_page("pages/curation.py")
    return at.run()


def texts(elements) -> str:
    return "\n".join(str(e.value) for e in elements)


def queue_labels(at: AppTest) -> list[str]:
    return at.segmented_control(key="queue").options


def focus(at: AppTest) -> AppTest:
    at.segmented_control(key="view").set_value("Focus")
    return at.run()


def row_html(at: AppTest) -> str:
    return "\n".join(h.value for h in at.get("html"))


def test_queues_show_their_counts(store, dataset):
    store.edit_row(store.query_rows(dataset)[0].id, "status", "accepted")
    store.edit_row(store.query_rows(dataset)[1].id, "status", "rejected")
    store.edit_row(store.query_rows(dataset)[2].id, "completion", "<answer>7</answer>")
    at = page(dataset)
    assert not at.exception
    assert queue_labels(at) == ["Pending · 10", "Accepted · 1", "Rejected · 1", "Edited · 1",
                                "All · 12"]
    assert [m.value for m in at.metric] == ["10", "1", "1", "1", "12"]
    table = at.dataframe[0].value  # the pending queue by default
    assert len(table) == 10 and set(table["status"]) == {"⏳ pending"}
    at.segmented_control(key="queue").set_value("edited").run()
    table = at.dataframe[0].value
    assert list(table["row"]) == [2] and list(table["edited"]) == ["✏️"]


def counts(store: Store, dataset_id: int) -> dict[str, int]:
    return {k: v for k, v in store.status_counts(dataset_id).items() if k != "total"}


def test_reject_by_filter_asks_with_the_count_then_changes_the_queues(store, dataset):
    at = page(dataset)
    at.selectbox(key=f"f_{dataset}_rule_correct").select(False).run()
    assert "4 rows match" in texts(at.markdown)  # pending and wrong by the rule
    at.button(key="bulk_reject").click().run()
    # Asked, not done: the dry run's count is in the question.
    assert "4 rows match; 4 would change (reject); 0 already rejected" in texts(at.warning)
    assert counts(store, dataset)["rejected"] == 0
    at.button(key="bulk_yes").click().run()
    assert counts(store, dataset) == {"pending": 8, "accepted": 0, "rejected": 4, "edited": 0}
    assert {r.row_index for r in store.query_rows(dataset) if r.status == "rejected"} == \
        {2, 3, 6, 7}
    assert queue_labels(at)[:3] == ["Pending · 8", "Accepted · 0", "Rejected · 4"]
    assert "4 rows rejected" in texts(at.toast)
    at.button(key="undo").click().run()  # one undo reverts the whole action
    assert counts(store, dataset)["pending"] == 12


def test_a_bulk_confirmation_is_cancelled_and_one_whose_rows_moved_is_asked_again(store,
                                                                                 dataset):
    at = page(dataset)
    at.button(key="bulk_accept").click().run()
    at.button(key="bulk_no").click().run()
    assert "every row matching" not in texts(at.warning)
    assert counts(store, dataset)["accepted"] == 0
    at.button(key="bulk_accept").click().run()
    # Someone accepts a row elsewhere before the confirmation: the numbers shown are stale.
    store.edit_row(store.query_rows(dataset)[0].id, "status", "accepted")
    at.button(key="bulk_yes").click().run()
    assert "The rows changed since you asked" in texts(at.warning)
    assert "11 rows match; 11 would change (accept)" in texts(at.warning)
    assert counts(store, dataset)["accepted"] == 1
    at.button(key="bulk_yes").click().run()
    assert counts(store, dataset)["accepted"] == 12


def test_edit_in_place_shows_a_diff_and_undo_restores_the_original(store, dataset):
    at = focus(page(dataset))
    row = store.query_rows(dataset)[0]
    edited = row.completion.replace("Summary: done.", "Summary: 3 + 4 = 7.")
    at.sidebar.text_input(key="curation_author").input("Ada")
    at.text_area(key=f"edit_completion_{row.id}").input(edited)
    at.button(key=f"save_{row.id}").click().run()
    saved = store.get_row(row.id)
    assert saved.completion == edited and saved.edited and saved.version == 2
    assert store.row_edits(row.id)[-1]["author"] == "Ada"
    diff = [h.value for h in at.get("html") if 'class="cur-diff"' in h.value]
    assert diff and "<del>done</del>" in diff[0] and "<ins>3 + 4 = 7</ins>" in diff[0]
    assert queue_labels(at)[3] == "Edited · 1"
    at.button(key="undo").click().run()
    assert store.get_row(row.id).completion == row.completion
    assert not store.get_row(row.id).edited
    # The editor follows the undo (it held no unsaved typing).
    assert at.text_area(key=f"edit_completion_{row.id}").value == row.completion
    assert "completion restored" in texts(at.toast)


def test_a_saved_edit_outlives_the_ui(store, dataset):
    at = focus(page(dataset))
    row = store.query_rows(dataset)[0]
    at.text_area(key=f"edit_completion_{row.id}").input("fixed <answer>7</answer>")
    at.button(key=f"save_{row.id}").click().run()
    fresh = page(dataset)  # a new session: what a restarted UI or another browser sees
    fresh.segmented_control(key="queue").set_value("edited").run()
    fresh = focus(fresh)
    assert fresh.text_area(key=f"edit_completion_{row.id}").value == "fixed <answer>7</answer>"
    assert any('class="cur-diff"' in h.value for h in fresh.get("html"))


def test_a_stale_save_is_refused_with_the_newer_text(store, dataset):
    at = focus(page(dataset))
    row = store.query_rows(dataset)[0]
    at.text_area(key=f"edit_completion_{row.id}").input("my version")
    at.run()
    # Another tab (or the CLI) saves first, behind this page's back.
    store.edit_row(row.id, "completion", "their version <answer>7</answer>",
                   expected_version=row.version, author="Bob")
    at.button(key=f"save_{row.id}").click().run()
    assert store.get_row(row.id).completion == "their version <answer>7</answer>"
    message = texts(at.error)
    assert "changed by someone else" in message and "their version" in message
    assert [c.value for c in at.code][0] == "their version <answer>7</answer>"
    # Nothing typed is lost: the editor still holds this tab's text.
    assert at.text_area(key=f"edit_completion_{row.id}").value == "my version"
    at.button(key=f"drop_mine_{row.id}").click().run()
    assert at.text_area(key=f"edit_completion_{row.id}").value.startswith("their version")
    assert not at.error


def test_saving_over_a_newer_version_is_possible_after_seeing_it(store, dataset):
    at = focus(page(dataset))
    row = store.query_rows(dataset)[0]
    at.text_area(key=f"edit_completion_{row.id}").input("mine")
    at.run()
    store.edit_row(row.id, "completion", "theirs", author="Bob")
    at.button(key=f"save_{row.id}").click().run()
    at.button(key=f"save_anyway_{row.id}").click().run()
    assert store.get_row(row.id).completion == "mine"
    assert [e["new"] for e in store.row_edits(row.id)] == ["theirs", "mine"]


class Rendered(HTMLParser):
    """What a browser would make of an HTML body: its elements, and the text it shows
    (without the page's own ``<summary>`` labels of think blocks)."""

    def __init__(self, body: str):
        super().__init__(convert_charrefs=True)
        self.tags: set[str] = set()
        self.attributes: set[str] = set()
        self.text = ""
        self._in_summary = False
        self.feed(body)

    def handle_starttag(self, tag, attrs):
        self.tags.add(tag)
        self.attributes |= {name for name, _ in attrs}
        self._in_summary = self._in_summary or tag == "summary"

    def handle_endtag(self, tag):
        self._in_summary = self._in_summary and tag != "summary"

    def handle_data(self, data):
        if not self._in_summary:
            self.text += data


@pytest.mark.parametrize("text", [
    XSS,                                                   # script and an event handler
    "<b>bold</b> & <i>not</i> markup",                      # plain markup
    '"><svg onload=alert(1)> </think> <answer>7</answer>',  # breaks out of an attribute
    "<think><style>*{display:none}</style></think>",       # inside the think block
])
def test_html_in_a_row_is_shown_as_text(store, text):
    ds = store.create_dataset("hostile", "rejection",
                              [candidate("<h1>3+4=</h1>", 0, True, completion=text)])
    at = focus(page(ds))
    row = Rendered(next(h.value for h in at.get("html") if "Prompt</div>" in h.value))
    # Only the page's own elements and attributes; the row's text reads as typed.
    assert row.tags <= {"div", "span", "details", "summary", "mark", "i"}
    assert row.attributes <= {"class", "open"}
    # (think tags become the collapsible block around the reasoning)
    assert text.replace("<think>", "").replace("</think>", "") in row.text
    assert "<h1>3+4=</h1>" in row.text
    assert text in at.text_area[0].value  # the editor holds it verbatim


def test_keyword_search_filters_and_highlights_escaped(store):
    rows = sample_rows()
    rows[5]["completion"] = "<think>look: <script>x</script></think><answer>7</answer>"
    ds = store.create_dataset("d", "rejection", rows)
    at = page(ds)
    at.sidebar.text_input(key=f"search_{ds}").input("<SCRIPT>").run()
    assert list(at.dataframe[0].value["row"]) == [5]
    shown = row_html(focus(at))
    assert "<mark>&lt;script&gt;</mark>x" in shown
    assert "1 match" in shown  # the think block says where the match is


def test_every_provenance_field_has_a_filter(store, dataset):
    at = page(dataset)
    labels = {w.label for kind in ("selectbox", "multiselect", "slider", "text_input")
              for w in getattr(at.sidebar, kind)} | {c.value for c in at.sidebar.caption}
    meta = store.query_rows(dataset)[0].meta
    flat = [k for k, v in meta.items() if not isinstance(v, (dict, list))] + [
        f"rule_scores.{k}" for k in meta["rule_scores"]]
    missing = [name for name in flat
               if name not in labels and f"{name} equals" not in labels
               and not any(c.startswith(f"{name}: always") for c in labels)]
    assert missing == []


@pytest.mark.parametrize("field, value, expected_rows", [
    ("pass_count", (4, 4), [8, 9, 10, 11]),      # a range on a number
    ("length", (40, 50), [2, 3, 6, 7, 10, 11]),  # length range
    ("judge_verdict", ["incorrect"], [2, 3, 6, 7]),  # a choice
])
def test_sidebar_filters_narrow_the_table(store, dataset, field, value, expected_rows):
    at = page(dataset)
    widget = at.sidebar.get("slider" if isinstance(value, tuple) else "multiselect")
    widget = next(w for w in widget if w.key == f"f_{dataset}_{field}")
    widget.set_value(value).run()
    assert list(at.dataframe[0].value["row"]) == expected_rows


def test_focus_view_accepts_and_moves_on_recording_the_author(store, dataset):
    at = page(dataset)
    at.sidebar.text_input(key="curation_author").input("Ada")
    at = focus(at)
    assert "Row 0" in texts(at.markdown)
    at.button(key="focus_accept").click().run()
    assert store.query_rows(dataset)[0].status == "accepted"
    assert store.curation_history(dataset)[0].author == "Ada"
    assert "Row 1" in texts(at.markdown)  # the next pending row moved up
    at.button(key="focus_next").click().run()
    assert "Row 2" in texts(at.markdown)
    at.button(key="focus_reject").click().run()
    assert store.query_rows(dataset)[2].status == "rejected"
    at.button(key="focus_prev").click().run()
    assert "Row 1" in texts(at.markdown)


def test_focus_buttons_carry_keyboard_shortcuts(store, dataset):
    at = focus(page(dataset))
    shortcuts = {key: at.button(key=key).proto.shortcut.upper()
                 for key in ("focus_accept", "focus_reject", "focus_next", "focus_prev")}
    assert shortcuts == {"focus_accept": "A", "focus_reject": "X", "focus_next": "J",
                         "focus_prev": "K"}


def test_selected_table_rows_are_reviewed_as_one_action(store, dataset):
    at = page(dataset)
    at.session_state[f"rows_{dataset}_0"] = {"selection": {"rows": [0, 1, 2], "columns": [],
                                                           "cells": []}}
    at.run()
    at.button(key="sel_accept").click().run()
    assert counts(store, dataset)["accepted"] == 3
    assert store.curation_history(dataset)[0].rows == 3


def test_candidates_of_a_prompt_side_by_side(store, dataset):
    at = focus(page(dataset))
    at.button(key="focus_candidates").click().run()
    cards = [h.value for h in at.get("html") if 'class="cur-think"' in h.value]
    assert len(cards) == 4  # the four candidates of 3+4=
    assert "rollout 0" in cards[0] and "rollout 3" in "".join(cards)


def test_mark_ready_needs_an_accepted_row_and_tells_the_waiting_stage(store, dataset):
    run = store.create_run("r1", "r1", "smoke", {}, [StageSpec("sft", "SFT on curated", {})])
    store.update_stage(run.stages[0].id, status="waiting",
                       summary={"waiting_for_dataset": dataset})
    at = page(dataset)
    assert at.button(key="mark_ready").disabled
    assert "nothing to train on" in texts(at.warning)
    assert "waiting for this review" in texts(at.markdown)
    store.edit_row(store.query_rows(dataset)[0].id, "status", "accepted")
    at.run()
    at.sidebar.text_input(key="curation_author").input("Ada")
    at.button(key="mark_ready").click().run()
    ds = store.get_dataset(dataset)
    assert ds.ready and ds.ready_by == "Ada"
    assert "marked by Ada" in texts(at.success)
    at.button(key="mark_unready").click().run()
    assert not store.get_dataset(dataset).ready


def test_opens_the_dataset_named_in_the_url_else_the_runs_else_the_newest(store, dataset):
    run = store.create_run("r1", "r1", "smoke", {}, [StageSpec("rejection", "reject", {})])
    of_run = store.create_dataset("of the run", "rejection", sample_rows()[:2], run_id=run.id)
    newest = store.create_dataset("imported", "import", sample_rows()[:1])
    assert page().selectbox[0].value == newest
    assert page(run=str(run.id)).selectbox[0].value == of_run
    at = page(dataset)
    assert at.selectbox[0].value == dataset
    assert at.query_params["dataset"] == str(dataset)  # kept in the URL for a bookmark


def test_no_dataset_says_where_one_comes_from(store):
    at = page()
    assert "rejection-sampling stage" in texts(at.info)


def import_file(at: AppTest, name: str, content: bytes) -> AppTest:
    at.file_uploader(key="import_file").set_value((name, content, "application/jsonl"))
    return at.button(key="FormSubmitter:import_form-Import").click().run()


@pytest.mark.parametrize("content, message", [
    (b'{"prompt": "1+1=", "completion": "2"}\n{"prompt": "caf\xe9"}\n',
     "line 2: not UTF-8"),                                    # Latin-1 bytes
    (b'{"prompt": "1+1=", "completion": "2", "score": 1}\n',
     "unknown column(s) score"),                               # a column nobody knows
    (b'{"prompt": "1+1="}\n', "has no completion column"),     # a required column missing
    (b'{"prompt": "1+1=", "completion": "2"\n', "line 1: not valid JSON"),
])
def test_a_bad_import_file_is_refused_with_what_to_fix(store, dataset, content, message):
    at = page(dataset)
    at.session_state["section"] = "Ready, snapshots, export"
    at.run()
    import_file(at, "bad.jsonl", content)
    assert message in texts(at.error)
    assert len(store.datasets()) == 1  # nothing half-imported


def test_import_a_jsonl_as_a_new_version_and_open_it(store, dataset):
    at = page(dataset)
    at.session_state["section"] = "Ready, snapshots, export"
    at.run()
    import_file(at, "fixed.jsonl", b'{"prompt": "1+1=", "completion": "<answer>2</answer>", '
                                   b'"rule_correct": true}\n')
    new = store.datasets()[-1]
    assert new.parent_id == dataset and new.size == 1
    assert store.query_rows(new.id)[0].meta["rule_correct"] is True
    assert at.query_params["dataset"] == str(new.id)
    assert at.selectbox[0].value == new.id


def test_snapshots_show_their_hash(store, dataset):
    store.edit_row(store.query_rows(dataset)[0].id, "status", "accepted")
    snap_id, digest = store.snapshot_dataset(dataset)
    at = page(dataset)
    at.session_state["section"] = "Ready, snapshots, export"
    at.run()
    table = at.dataframe[0].value
    assert list(table["content hash"]) == [digest] and list(table["rows"]) == [1]
    assert f"Snapshot {snap_id} (1 rows, {digest[:12]})" in at.radio[0].options


def test_the_page_renders_without_training_libraries(store, dataset):
    # The UI never trains: drawing the page (focus view, every section) imports no torch.
    run = store.create_run("r1", "r1", "smoke", {}, [StageSpec("rejection", "reject", {})])
    done = training_libs_imported(run.id, ["pages/curation.py"])
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip().splitlines()[-1] == "[]"
