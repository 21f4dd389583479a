"""Curation: review the rejection-sampled dataset by hand before SFT trains on it.

Queues (pending / accepted / rejected / edited) with their counts; a table of rows with
selection and a focus view of one row, its ``<think>`` block collapsible and highlighted, with
keyboard shortcuts (A accept, X reject, J next, K previous); filters on every provenance field
in the sidebar, a keyword search highlighted in the text, sort; accept or reject everything a
filter matches after a confirmation that shows the count; edit a response in place with a diff
against the original, saved on the row's version so that a stale save from a second tab is
refused and the newer text shown; who changed what and when, undo; every candidate of one
prompt side by side; histograms of lengths and scores; the judge's agreement with the rule
check (a confusion matrix from the stored verdicts); duplicate clusters; mark the dataset
ready (a waiting SFT stage then trains on a frozen snapshot of the accepted rows); snapshots
with their content hash; export (the CLI's ``export-dataset``) and import as a new version.

Opens on ``?dataset=ID``, else the newest dataset of ``?run=ID``, else the dataset a stage is
waiting for, else the newest. Every action goes through ``backend.api`` (``Workbench``), the
same calls the CLI verbs make. Row text is model output: it is always escaped, never run.
"""
from __future__ import annotations

import html
import math
import re
from typing import Any, Callable, Optional

import pandas as pd
import plotly.graph_objects as go
import streamlit as st

from backend.api import (ACCEPTED, EDITED, PENDING, REJECTED, WAITING, EditConflict, StoreError,
                         Workbench, WorkbenchError)
from backend.rewards.extract import FORMAT_TAGS
from pages.common import (fmt_time, flash, local_time, query_int, show_flashes, status_badge,
                          workbench)

wb = workbench()

st.title("Curation")
show_flashes()

QUEUES = [PENDING, ACCEPTED, REJECTED, EDITED, "all"]
QUEUE_ICONS = {PENDING: "⏳", ACCEPTED: "✅", REJECTED: "🚫", EDITED: "✏️", "all": "📚"}
STATUS_COLOURS = {PENDING: "#9aa5b1", ACCEPTED: "#2ea043", REJECTED: "#da3633"}
TABLE_PAGE = 50
SECTIONS = ["Review", "Candidates of a prompt", "Histograms", "Judge vs rule", "Duplicates",
            "History", "Ready, snapshots, export"]
# Shown as their own sidebar filters, in this order; every other provenance field of the
# dataset sits in the "more fields" expander.
MAIN_FIELDS = ["rule_correct", "judge_verdict", "judge_correct", "is_reasoning_complete",
               "finish_reason", "pass_count", "length", "pass_rate", "language_mixing"]
# Histograms drawn first when the dataset has them.
DEFAULT_HISTOGRAMS = ["chars", "length", "pass_count", "pass_rate", "language_mixing"]
ANY = "any"
ALL_ROWS = "all"

CSS = """<style>
.cur-row{font-size:.9rem;line-height:1.45}
.cur-label{font-size:.72rem;color:#6b7280;text-transform:uppercase;letter-spacing:.04em;
  margin:.5rem 0 .15rem 0}
.cur-text{white-space:pre-wrap;word-break:break-word;font-family:ui-monospace,monospace;
  font-size:.84rem;background:#f7f8fa;border:1px solid #e5e7eb;border-radius:6px;padding:.5rem}
.cur-think{border-left:4px solid #5b8def;background:#eef4fe;border-radius:6px;margin:.3rem 0}
.cur-think>summary{cursor:pointer;padding:.3rem .5rem;color:#1d3f73;font-weight:600;
  font-size:.8rem}
.cur-think>div{white-space:pre-wrap;word-break:break-word;font-family:ui-monospace,monospace;
  font-size:.84rem;padding:0 .6rem .5rem .6rem;color:#1d3f73}
.cur-answer{background:#fff1b8;color:#5c4400;font-weight:600;border-radius:3px}
.cur-tag{color:#8a8a8a;font-size:.75rem}
.cur-warn{color:#b42318;font-size:.78rem;font-weight:600}
.cur-row mark{background:#ffd33d;color:inherit;padding:0 1px;border-radius:2px}
.cur-diff{white-space:pre-wrap;word-break:break-word;font-family:ui-monospace,monospace;
  font-size:.84rem;border:1px solid #e5e7eb;border-radius:6px;padding:.5rem}
.cur-diff del{background:#ffd7d5;color:#82071e}
.cur-diff ins{background:#ccffd8;color:#055d20;text-decoration:none}
</style>"""


# -- who is curating ---------------------------------------------------------------------------
def author() -> Optional[str]:
    """The name every change is recorded under (sidebar field; the OS user by default)."""
    name = (st.session_state.get("curation_author") or "").strip()
    return name or None


def author_field() -> None:
    st.session_state.setdefault("curation_author", Workbench.default_author())
    st.sidebar.text_input(
        "Your name", key="curation_author",
        help="Recorded with every change you make here (the OS user by default).")


# -- rendering a row (always escaped: a row may hold HTML or script text) -----------------------
_TAGS = re.compile("(" + "|".join(re.escape(tag) for tag in FORMAT_TAGS) + ")")


def marked(text: str, keyword: Optional[str]) -> str:
    """``text`` escaped, with the keyword's matches in ``<mark>``."""
    return "".join(f"<mark>{html.escape(piece)}</mark>" if hit else html.escape(piece)
                   for piece, hit in wb.highlight_spans(text, keyword))


def render_completion(text: str, keyword: Optional[str], expanded: bool) -> str:
    """HTML of a completion: the ``<think>`` part in a collapsible block, the ``<answer>``
    part highlighted, the tags dimmed; every piece of model text escaped."""
    if not text:
        return '<div class="cur-text"><i>(empty)</i></div>'
    out: list[str] = []
    # R1's chat template may open <think> in the prompt: then the response starts inside the
    # reasoning and only closes it.
    close, open_ = text.find("</think>"), text.find("<think>")
    mode: Optional[str] = "think" if close >= 0 and not 0 <= open_ < close else None
    think: list[str] = []
    think_text: list[str] = []
    for part in _TAGS.split(text):
        if not part:
            continue
        if _TAGS.fullmatch(part):
            name = part.strip("</>")
            closing = part.startswith("</")
            if name == "think" and not closing:
                mode = "think"
                continue
            if name == "think" and closing:
                out.append(_think_block(think, think_text, keyword, expanded, closed=True))
                think, think_text, mode = [], [], None
                continue
            out.append(f'<span class="cur-tag">{html.escape(part)}</span>')
            mode = None if closing else name
            continue
        if mode == "think":
            think.append(marked(part, keyword))
            think_text.append(part)
        elif mode == "answer":
            out.append(f'<span class="cur-answer">{marked(part, keyword)}</span>')
        else:
            out.append(marked(part, keyword))
    if mode == "think":  # no </think>: cut off (finish_reason "length") or never closed
        out.append(_think_block(think, think_text, keyword, expanded, closed=False))
    return f'<div class="cur-text">{"".join(out)}</div>'


def _think_block(pieces: list[str], raw: list[str], keyword: Optional[str], expanded: bool,
                 closed: bool) -> str:
    body = "".join(pieces)
    text = "".join(raw)
    hits = sum(hit for _, hit in wb.highlight_spans(text, keyword)) if keyword else 0
    note = f" · {hits} match{'es' if hits != 1 else ''}" if hits else ""
    warn = "" if closed else ' <span class="cur-warn">no &lt;/think&gt;: cut off?</span>'
    is_open = " open" if expanded or hits else ""
    return (f'<details class="cur-think"{is_open}><summary>&lt;think&gt; reasoning · '
            f'{len(text)} chars{note}{warn}</summary><div>{body}</div></details>')


def render_row(row: Any, keyword: Optional[str], expanded: bool) -> str:
    answer = ("" if row.answer is None else
              f'<div class="cur-label">Reference answer</div>'
              f'<div class="cur-text">{marked(row.answer, keyword)}</div>')
    return (f'<div class="cur-row"><div class="cur-label">Prompt</div>'
            f'<div class="cur-text">{marked(row.prompt, keyword)}</div>{answer}'
            f'<div class="cur-label">Response</div>'
            f'{render_completion(row.completion, keyword, expanded)}</div>')


def render_diff(diff: Any) -> str:
    """A character diff against the original: deletions struck through, insertions green."""
    parts = []
    for op, text in diff.spans:
        piece = html.escape(text)
        parts.append(f"<del>{piece}</del>" if op == "delete" else
                     f"<ins>{piece}</ins>" if op == "insert" else piece)
    return f'<div class="cur-row"><div class="cur-diff">{"".join(parts)}</div></div>'


def short(text: Optional[str], width: int = 90) -> str:
    """One line of a text for a table cell or a label."""
    if text is None:
        return ""
    line = " ".join(text.split())
    return line if len(line) <= width else line[:width - 1] + "…"


def short_prompt(prompt: str, width: int = 70) -> str:
    """The question of a prompt (after the R1 template's last ``User:``), one line."""
    text = prompt.rsplit("User:", 1)[-1] if "User:" in prompt else prompt
    return short(text.removesuffix("Assistant:").strip(), width)


def shown_value(value: Any) -> str:
    if value is None:
        return "–"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, (list, tuple)):
        return "; ".join(str(v) for v in value) or "–"
    if isinstance(value, dict):
        return ", ".join(f"{k}={shown_value(v)}" for k, v in value.items()) or "–"
    return str(value)


# -- picking a dataset -------------------------------------------------------------------------
def dataset_label(ds: Any, waiting: set[int]) -> str:
    tail = " · ✅ ready" if ds.ready else " · 👀 SFT waiting" if ds.id in waiting else ""
    run = f" · run #{ds.run_id}" if ds.run_id is not None else ""
    return f"#{ds.id} · {ds.name} · {ds.kind}{run} · {ds.size} rows{tail}"


def waiting_datasets() -> set[int]:
    """Datasets a stage is waiting for (someone must review them)."""
    return {s.summary.get("waiting_for_dataset") for run in wb.list_runs()
            for s in run.stages if s.status == WAITING and s.summary}


def pick_dataset() -> Any:
    datasets = list(reversed(wb.datasets()))  # newest first
    if not datasets:
        st.info("No dataset to curate yet. The rejection-sampling stage of an `r1` run writes "
                "one (Runs → New run → recipe `r1`); or import a jsonl below.")
        import_form(None)
        st.stop()
    by_id = {ds.id: ds for ds in datasets}
    waiting = waiting_datasets()
    wanted = query_int("dataset")
    if wanted not in by_id:
        run_id = query_int("run")
        of_run = [ds for ds in datasets if run_id is not None and ds.run_id == run_id]
        pending = [ds for ds in datasets if ds.id in waiting]
        wanted = (of_run or pending or datasets)[0].id
    ids = list(by_id)
    chosen = st.selectbox("Dataset", ids, index=ids.index(wanted),
                          format_func=lambda i: dataset_label(by_id[i], waiting))
    st.query_params["dataset"] = str(chosen)
    st.query_params.pop("run", None)  # the dataset names its run
    return by_id[chosen]


@st.cache_data(ttl=60, max_entries=16, show_spinner=False)
def dataset_fields(db_url: str, dataset_id: int, size: int) -> Any:
    # Curation changes text and status, never provenance: the fields change only when rows
    # are added (the size, part of the key).
    return wb.dataset_fields(dataset_id)


# -- the dataset header: queues, ready, who trains on it ----------------------------------------
def header(ds: Any, counts: dict[str, int]) -> None:
    origin = []
    if ds.run_id is not None:
        origin.append(f"from run #{ds.run_id}" + (f", stage #{ds.stage_id}"
                                                 if ds.stage_id is not None else ""))
    if ds.parent_id is not None:
        origin.append(f"a new version of dataset #{ds.parent_id}")
    if ds.origin:
        origin.append(f"imported from `{ds.origin}`")
    st.caption(f"{ds.kind} dataset · created {fmt_time(ds.created_at)}"
               + (" · " + " · ".join(origin) if origin else ""))
    cols = st.columns(5)
    for col, queue in zip(cols, [PENDING, ACCEPTED, REJECTED, EDITED, "total"]):
        col.metric(f"{QUEUE_ICONS.get(queue, '📚')} {queue.capitalize()}", counts[queue])
    ready_box(ds, counts)


def ready_box(ds: Any, counts: dict[str, int]) -> None:
    consumers = wb.dataset_consumers(ds.id)
    with st.container(border=True):
        text_col, button_col = st.columns([3, 1], vertical_alignment="center")
        for stage in consumers:
            frozen = wb.snapshots(ds.id, stage_id=stage.id)
            what = (": waiting for this review; it trains on the accepted rows once you mark "
                    "the dataset ready" if stage.status == WAITING else
                    ": it will wait for this review when it starts" if stage.status == "queued"
                    else f", on snapshot {frozen[-1].id} ({frozen[-1].size} rows, "
                         f"`{frozen[-1].content_hash[:12]}`)" if frozen else "")
            text_col.markdown(f"Stage **{stage.name}** of run #{stage.run_id} "
                              f"{status_badge(stage.status)}{what}.")
            text_col.page_link("pages/stage.py", label=f"Open stage {stage.name}",
                               icon=":material/open_in_new:",
                               query_params={"run": str(stage.run_id),
                                             "stage": str(stage.id)})
        if ds.ready:
            text_col.success(f"Ready for training: marked by {ds.ready_by or 'someone'} at "
                             f"{fmt_time(ds.ready_at)}. Edits from now on change the dataset, "
                             f"never a snapshot a stage already froze.")
            button_col.button("Mark not ready", key="mark_unready", on_click=set_ready,
                              args=(ds.id, False), icon=":material/undo:", width="stretch",
                              help="Take the mark back: an SFT stage that has not started "
                                   "training yet waits again.")
            return
        accepted, pending = counts[ACCEPTED], counts[PENDING]
        if accepted == 0:
            text_col.warning("No row is accepted yet: SFT would have nothing to train on. "
                             "Accept rows first.")
        else:
            note = (f" {pending} pending rows are not trained on (only accepted ones are)."
                    if pending else "")
            text_col.markdown(f"Marking it ready lets SFT train on the **{accepted} accepted "
                              f"rows**, frozen as a snapshot when it starts.{note}")
        button_col.button("Mark ready for training", key="mark_ready", type="primary",
                          on_click=set_ready, args=(ds.id, True), disabled=accepted == 0,
                          icon=":material/check_circle:", width="stretch",
                          help="Review done: a waiting SFT stage starts training."
                          if accepted else "Accept at least one row first.")


def set_ready(dataset_id: int, ready: bool) -> None:
    try:
        ds = wb.mark_ready(dataset_id, ready, author=author())
    except (KeyError, StoreError) as exc:
        flash(f"Not changed: {exc}", icon="⚠️")
        return
    flash(f"Dataset #{ds.id} marked ready: a waiting SFT stage starts training."
          if ready else f"Dataset #{ds.id} is no longer marked ready.", icon="✅")


# -- filters (sidebar) ------------------------------------------------------------------------
def field_filter(box: Any, field: Any, ds_id: int, meta: dict, ranges: dict) -> None:
    """One widget for one provenance field; what it asks for goes into ``meta`` (equality,
    any of several values) or ``ranges`` (inclusive)."""
    key = f"f_{ds_id}_{field.name}"
    help_text = f"Provenance field `{field.name}`, carried by {field.rows} rows."
    if field.kind == "bool":
        options = [ANY] + field.values
        value = box.selectbox(field.name, options, key=key, help=help_text,
                              format_func=lambda v: v if v is ANY else
                              "not set" if v is None else "yes" if v else "no")
        if value is not ANY:
            meta[field.name] = value
    elif field.kind == "choice":
        picked = box.multiselect(field.name, field.values, key=key, help=help_text,
                                 placeholder="any", format_func=lambda v: "not set"
                                 if v is None else str(v))
        if picked:
            meta[field.name] = picked
    elif field.kind == "number":
        if field.low is None or field.low == field.high:
            box.caption(f"{field.name}: always {shown_value(field.low)}")
            return
        if field.integer:
            low, high, step = int(field.low), int(field.high), 1
        else:
            low, high = float(field.low), float(field.high)
            step = float(f"{(high - low) / 100:.2g}") or None
        chosen = box.slider(field.name, low, high, (low, high), step=step, key=key,
                            help=help_text + " Rows without it are left out once you narrow "
                                             "the range.")
        if tuple(chosen) != (low, high):
            ranges[field.name] = (chosen[0], chosen[1])
    elif field.kind == "text":
        value = box.text_input(f"{field.name} equals", key=key, help=help_text)
        if value.strip():
            meta[field.name] = value.strip()


def clear_filters(ds_id: int) -> None:
    for key in list(st.session_state):
        if isinstance(key, str) and (key.startswith(f"f_{ds_id}_") or key in (
                f"search_{ds_id}", f"source_{ds_id}", f"where_{ds_id}")):
            del st.session_state[key]


def sidebar_filters(ds: Any, fields: Any) -> dict[str, Any]:
    """What the sidebar asks for, as ``make_filter`` arguments (the queue adds the status)."""
    sb = st.sidebar
    sb.subheader("Filter")
    search = sb.text_input("Keyword", key=f"search_{ds.id}", placeholder="in prompt, response, "
                           "answer", help="Case-insensitive; matches are highlighted.")
    sources = [ANY] + fields.sources
    source = sb.selectbox("Source", sources, key=f"source_{ds.id}",
                          format_func=lambda s: "not set" if s is None else s,
                          help="reasoning (sampled candidates), non_reasoning (answered "
                               "directly) or safety (refusals of forbidden requests)")
    meta: dict[str, Any] = {}
    ranges: dict[str, tuple] = {}
    by_name = {f.name: f for f in fields.fields}
    for name in MAIN_FIELDS:
        if name in by_name:
            field_filter(sb, by_name[name], ds.id, meta, ranges)
    rest = [f for f in fields.fields if f.name not in MAIN_FIELDS and f.kind != "list"]
    if rest:
        with sb.expander(f"More provenance fields ({len(rest)})"):
            for field in rest:
                field_filter(st, field, ds.id, meta, ranges)
    where = sb.text_input(
        "Conditions", key=f"where_{ds.id}", placeholder="rule_scores.accuracy=1, step=10..20",
        help="Any field, comma-separated: key=value, key=a|b (either), key=low..high. The "
             "same syntax as the CLI's --where.")
    sb.button("Clear filters", on_click=clear_filters, args=(ds.id,),
              icon=":material/filter_alt_off:")
    return {"search": search.strip() or None,
            "source": None if source is ANY else source,
            "meta": meta, "ranges": ranges,
            "where": [w.strip() for w in where.split(",") if w.strip()]}


def make_filter(parts: dict[str, Any], status: Optional[str]) -> Any:
    """The row filter of the sidebar plus a queue; a bad condition is shown and left out."""
    try:
        return wb.make_filter(status=None if status in (None, ALL_ROWS) else status, **parts)
    except WorkbenchError as exc:
        st.sidebar.error(f"Condition ignored: {exc}")
        return wb.make_filter(status=None if status in (None, ALL_ROWS) else status,
                              **{**parts, "where": []})


def sort_controls(fields: Any) -> tuple[str, bool]:
    numeric = [f.name for f in fields.fields if f.kind in ("number", "bool")]
    keys = list(Workbench.SORT_KEYS) + [n for n in numeric if n not in Workbench.SORT_KEYS]
    names = {"row_index": "row order", "chars": "response length (chars)",
             "updated_at": "last changed", "version": "number of changes"}
    st.sidebar.subheader("Sort")
    sort = st.sidebar.selectbox("Sort by", keys, key="sort", label_visibility="collapsed",
                                format_func=lambda k: names.get(k, k))
    descending = st.sidebar.toggle("Descending", key="descending")
    return sort, descending


# -- actions (callbacks: they run before the page is drawn again, with what was shown) ---------
def review(row_id: int, version: int, status: str, advance: bool = False) -> None:
    """Accept / reject / reset one row, on the version the reviewer saw. Unsaved edits of
    the row are saved first (accepting a row you just fixed accepts the fix)."""
    if has_unsaved(row_id):
        st.session_state["_saving_for_review"] = True
        try:
            saved = save_edit(row_id)
        finally:
            st.session_state.pop("_saving_for_review", None)
        if saved is None:
            return
        version = saved
    try:
        row = wb.review_row(row_id, status, expected_version=version, author=author())
    except EditConflict as exc:
        flash(f"Not {status}: {exc}", icon="⚠️")
        return
    except (WorkbenchError, StoreError, KeyError) as exc:
        flash(f"Not {status}: {exc}", icon="⚠️")
        return
    flash(f"Row {row.row_index} {status}", icon=QUEUE_ICONS.get(status))
    if advance:
        st.session_state.setdefault("focus", {})["after"] = row_id


def review_many(dataset_id: int, row_ids: list[int], status: str) -> None:
    """Set the status of chosen rows as one undoable action."""
    try:
        done = wb.bulk_review(dataset_id, wb.make_filter(row_ids=row_ids), status,
                              author=author())
    except (WorkbenchError, StoreError, KeyError) as exc:
        flash(f"Nothing changed: {exc}", icon="⚠️")
        return
    flash(done.describe(), icon=QUEUE_ICONS.get(status))
    st.session_state["table_generation"] = st.session_state.get("table_generation", 0) + 1


def undo(dataset_id: int) -> None:
    result = wb.undo(dataset_id, author=author())
    flash(f"Undone: {result}" if result and not result.startswith("undone") else
          (result or "Nothing to undo"), icon="↩️")


def ask_bulk(dataset_id: int, flt: Any, status: str) -> None:
    try:
        preview = wb.bulk_review(dataset_id, flt, status, dry_run=True)
    except (WorkbenchError, StoreError) as exc:
        flash(str(exc), icon="⚠️")
        return
    st.session_state["bulk_ask"] = {"dataset": dataset_id, "filter": flt, "status": status,
                                    "matched": preview.matched, "changing": preview.changing,
                                    "preview": preview.describe()}


def confirm_bulk() -> None:
    ask = st.session_state.pop("bulk_ask", None)
    if not ask:
        return
    # The count shown must be the count changed: if rows moved meanwhile (another tab, the
    # CLI), show the new numbers and ask again rather than act on a number nobody saw.
    now = wb.bulk_review(ask["dataset"], ask["filter"], ask["status"], dry_run=True)
    if (now.matched, now.changing) != (ask["matched"], ask["changing"]):
        st.session_state["bulk_ask"] = {**ask, "matched": now.matched,
                                        "changing": now.changing, "preview": now.describe(),
                                        "moved": True}
        return
    try:
        done = wb.bulk_review(ask["dataset"], ask["filter"], ask["status"], author=author())
    except (WorkbenchError, StoreError) as exc:
        flash(f"Nothing changed: {exc}", icon="⚠️")
        return
    flash(f"{done.describe()} — one Undo reverts it", icon=QUEUE_ICONS.get(ask["status"]))


# -- editing in place --------------------------------------------------------------------------
EDIT_FIELDS = ("completion", "answer")


def _edit_key(field: str, row_id: int) -> str:
    return f"edit_{field}_{row_id}"


def editor_base(row: Any) -> dict[str, Any]:
    """The version and text the editor of ``row`` started from. A change made elsewhere
    (another tab, the CLI, an undo) replaces the editor's text only while it holds no unsaved
    typing; otherwise the typing stays, and saving it is refused with the newer text."""
    editors = st.session_state.setdefault("editors", {})
    base = editors.get(row.id)
    fresh = {"version": row.version, "completion": row.completion, "answer": row.answer or ""}
    keys = {f: _edit_key(f, row.id) for f in EDIT_FIELDS}
    missing = any(k not in st.session_state for k in keys.values())
    if base is None or missing or (row.version != base["version"] and not has_unsaved(row.id)):
        editors[row.id] = base = fresh
        for field, key in keys.items():
            st.session_state[key] = fresh[field]
    return base


def has_unsaved(row_id: int) -> bool:
    base = st.session_state.get("editors", {}).get(row_id)
    if base is None:
        return False
    return any(_edit_key(f, row_id) in st.session_state
               and st.session_state[_edit_key(f, row_id)] != base[f] for f in EDIT_FIELDS)


def save_edit(row_id: int) -> Optional[int]:
    """Save the editor's text on the version it was opened on; returns the row's new version,
    or None when refused (a conflict is kept to be shown with the newer text)."""
    base = st.session_state.get("editors", {}).get(row_id)
    if base is None:
        return None
    version, changed = base["version"], []
    try:
        for field in EDIT_FIELDS:
            text = st.session_state.get(_edit_key(field, row_id), base[field])
            if text == base[field]:
                continue
            value = text if field == "completion" else (text.strip() or None)
            row = wb.edit_row(row_id, field, value, expected_version=version, author=author())
            version = row.version
            changed.append(field)
    except EditConflict as exc:
        st.session_state.setdefault("conflicts", {})[row_id] = {
            "message": str(exc), "field": exc.field, "newer": exc.newer_value,
            "version": exc.current.version}
        return None
    except (WorkbenchError, StoreError, KeyError) as exc:
        flash(f"Not saved: {exc}", icon="⚠️")
        return None
    st.session_state.get("conflicts", {}).pop(row_id, None)
    if changed:
        row = wb.get_row(row_id)
        st.session_state["editors"][row_id] = {"version": row.version,
                                               "completion": row.completion,
                                               "answer": row.answer or ""}
        flash(f"Row {row.row_index}: {' and '.join(changed)} saved (version {row.version})",
              icon="💾")
    elif not st.session_state.get("_saving_for_review"):
        flash("Nothing to save: the text is as it was", icon="ℹ️")
    return version


def drop_mine(row_id: int) -> None:
    """After a conflict: load the newer text, dropping this tab's typing."""
    st.session_state.get("conflicts", {}).pop(row_id, None)
    st.session_state.get("editors", {}).pop(row_id, None)
    for field in EDIT_FIELDS:
        st.session_state.pop(_edit_key(field, row_id), None)


def save_mine_anyway(row_id: int) -> None:
    """After a conflict, seen and decided: save this tab's text over the newer version."""
    conflict = st.session_state.get("conflicts", {}).get(row_id)
    base = st.session_state.get("editors", {}).get(row_id)
    if conflict is None or base is None:
        return
    row = wb.get_row(row_id)
    base.update(version=conflict["version"], completion=row.completion,
                answer=row.answer or "")
    save_edit(row_id)


def editor(row: Any) -> None:
    base = editor_base(row)
    conflict = st.session_state.get("conflicts", {}).get(row.id)
    unsaved = has_unsaved(row.id)
    with st.expander("✏️ Edit this row", expanded=bool(conflict or unsaved or row.edited)):
        if conflict:
            st.error(f"Not saved. {conflict['message']}")
            st.markdown(f"**The newer {conflict['field']}** (version {conflict['version']}), "
                        f"as saved by someone else. Your text is still in the editor below.")
            st.code(conflict["newer"] if conflict["newer"] is not None else "(empty)",
                    language=None, wrap_lines=True)
            left, right = st.columns(2)
            left.button("Load the newer text (drop mine)", key=f"drop_mine_{row.id}",
                        on_click=drop_mine, args=(row.id,), width="stretch")
            right.button("Save mine over it", key=f"save_anyway_{row.id}",
                         on_click=save_mine_anyway, args=(row.id,), width="stretch")
        elif unsaved and row.version != base["version"]:
            st.warning(f"This row changed since you started editing (now version "
                       f"{row.version}); saving will be refused and show the newer text.")
        st.text_area("Response", key=_edit_key("completion", row.id), height=260,
                     help="Edited in place; the original stays in the history and the diff.")
        st.text_input("Reference answer", key=_edit_key("answer", row.id))
        save_col, info_col = st.columns([1, 3], vertical_alignment="center")
        # Never disabled: text typed in the browser reaches the page only with the click.
        save_col.button("Save edit", key=f"save_{row.id}", type="primary", on_click=save_edit,
                        args=(row.id,), icon=":material/save:", width="stretch")
        info_col.caption(f"Editing version {base['version']}"
                         + (" · unsaved changes" if unsaved else ""))
    diff = wb.row_diff(row.id)
    if diff.changed:
        with st.expander("Diff against the original response", expanded=True):
            st.html(render_diff(diff))
            st.code("\n".join(diff.unified), language="diff")


# -- the review section: queue, bulk action, table or focus view ------------------------------
class Matches:
    """The rows of one queue and filter in the chosen order, counted and paged. Column
    filters in row order are counted and paged by the database; provenance filters and
    other orders need every matching row anyway (matched in Python, sorted), so those are
    read once per page run and sliced (a 20,000-row dataset: one read, not two)."""

    def __init__(self, dataset_id: int, flt: Any, sort: str, descending: bool):
        self.dataset_id, self.flt, self.sort, self.descending = (dataset_id, flt, sort,
                                                                 descending)
        self._all: Optional[list[Any]] = None
        self._count: Optional[int] = None
        self.read_all = bool(flt.meta or flt.ranges) or sort != "row_index" or descending

    def _rows(self) -> list[Any]:
        if self._all is None:
            self._all = wb.curation_rows(self.dataset_id, self.flt, sort=self.sort,
                                         descending=self.descending)
        return self._all

    def count(self) -> int:
        if self._count is None:
            self._count = (len(self._rows()) if self.read_all
                           else wb.count_rows(self.dataset_id, self.flt))
        return self._count

    def slice(self, offset: int, limit: int) -> list[Any]:
        if self.read_all:
            return self._rows()[offset:offset + limit]
        return wb.curation_rows(self.dataset_id, self.flt, limit=limit, offset=offset)


def queue_and_view(counts: dict[str, int]) -> tuple[str, str]:
    left, right = st.columns([4, 1], vertical_alignment="bottom")
    shown_counts = {**counts, "all": counts["total"]}
    queue = left.segmented_control(
        "Queue", QUEUES, key="queue", default=PENDING, required=True,
        format_func=lambda q: f"{QUEUE_ICONS[q]} {q.capitalize()} · {shown_counts[q]}",
        help="Edited: rows with a text edit that is not undone, whatever their status.")
    view = right.segmented_control("View", ["Table", "Focus"], key="view", default="Table",
                                   required=True)
    return queue, view


def bulk_bar(ds: Any, flt: Any, matched: int, queue: str) -> None:
    ask = st.session_state.get("bulk_ask")
    if ask and (ask["dataset"] != ds.id or ask["filter"] != flt):
        st.session_state.pop("bulk_ask")  # the filter changed: that question is void
        ask = None
    what = f"{matched} row{'s' if matched != 1 else ''} match{'es' if matched == 1 else ''}"
    text_col, accept_col, reject_col = st.columns([3, 1, 1], vertical_alignment="center")
    text_col.markdown(f"**{what}** this queue and filter ({wb.describe_filter(flt)}).")
    accept_col.button(f"Accept all {matched}…", key="bulk_accept", on_click=ask_bulk,
                      args=(ds.id, flt, ACCEPTED), disabled=matched == 0 or queue == ACCEPTED,
                      width="stretch", help="Asks for a confirmation with the count first.")
    reject_col.button(f"Reject all {matched}…", key="bulk_reject", on_click=ask_bulk,
                      args=(ds.id, flt, REJECTED), disabled=matched == 0 or queue == REJECTED,
                      width="stretch", help="Asks for a confirmation with the count first.")
    if ask:
        verb = "Accept" if ask["status"] == ACCEPTED else "Reject"
        with st.container(border=True):
            if ask.get("moved"):
                st.warning("The rows changed since you asked (another tab or the CLI): the "
                           "numbers below are new. Confirm again.")
            st.warning(f"**{verb} every row matching {wb.describe_filter(flt)}?** "
                       f"{ask['preview']}. One Undo reverts the whole action.")
            yes, no, _ = st.columns([1, 1, 2])
            yes.button(f"Yes, {verb.lower()} {ask['changing']} rows", key="bulk_yes",
                       type="primary", on_click=confirm_bulk, width="stretch",
                       disabled=ask["changing"] == 0)
            no.button("Cancel", key="bulk_no", width="stretch",
                      on_click=lambda: st.session_state.pop("bulk_ask", None))


def rows_frame(rows: list[Any]) -> pd.DataFrame:
    records = []
    for row in rows:
        meta = row.meta
        passes = meta.get("pass_count")
        records.append({
            "row": row.row_index,
            "status": f"{QUEUE_ICONS.get(row.status, '')} {row.status}",
            "edited": "✏️" if row.edited else "",
            "source": row.source,
            "prompt": short_prompt(row.prompt, 60),
            "response": short(row.completion, 120),
            "rule": meta.get("rule_correct"),
            "judge": meta.get("judge_verdict"),
            "passes": (f"{passes}/{meta.get('n_candidates', '?')}"
                       if passes is not None else None),
            "length": meta.get("length"),
            "finish": meta.get("finish_reason"),
            "step": meta.get("step"),
            "version": row.version,
            "changed": local_time(row.updated_at),
        })
    return pd.DataFrame(records)


ROW_COLUMNS = {
    "row": st.column_config.NumberColumn("Row", width="small"),
    "status": st.column_config.TextColumn("Status", width="small"),
    "edited": st.column_config.TextColumn("✎", width="small", help="Edited by hand"),
    "source": st.column_config.TextColumn("Source", width="small"),
    "prompt": st.column_config.TextColumn("Prompt", width="medium"),
    "response": st.column_config.TextColumn("Response", width="large"),
    "rule": st.column_config.CheckboxColumn("Rule ✓", width="small",
                                            help="rule_correct: the accuracy reward's verdict"),
    "judge": st.column_config.TextColumn("Judge", width="small", help="judge_verdict"),
    "passes": st.column_config.TextColumn("Passes", width="small",
                                          help="pass_count / n_candidates of the prompt"),
    "length": st.column_config.NumberColumn("Tokens", width="small"),
    "finish": st.column_config.TextColumn("Finish", width="small"),
    "step": st.column_config.NumberColumn("Step", width="small",
                                          help="Training step of the checkpoint sampled"),
    "version": st.column_config.NumberColumn("Ver.", width="small"),
    "changed": st.column_config.DatetimeColumn("Changed", format="MM-DD HH:mm:ss"),
}


def open_in_focus(position: int, signature: str) -> None:
    st.session_state["focus"] = {"sig": signature, "pos": position}
    st.session_state["view"] = "Focus"


def table_view(ds: Any, matches: Matches, signature: str) -> None:
    matched = matches.count()
    if matched == 0:
        st.info("No row in this queue matches the filter.")
        return
    pages = math.ceil(matched / TABLE_PAGE)
    page = st.pagination(pages, key=f"table_page_{ds.id}") if pages > 1 else 1
    page = min(max(page, 1), pages)
    offset = (page - 1) * TABLE_PAGE
    rows = matches.slice(offset, TABLE_PAGE)
    key = f"rows_{ds.id}_{st.session_state.get('table_generation', 0)}"
    picked = st.dataframe(rows_frame(rows), key=key, on_select="rerun",
                          selection_mode="multi-row", hide_index=True, placeholder="–",
                          column_config=ROW_COLUMNS, height=min(38 + 35 * len(rows), 560))
    st.caption(f"Rows {offset + 1}–{offset + len(rows)} of {matched}. Select rows to act on "
               f"them, or one to open it in the focus view.")
    chosen = [rows[i] for i in picked.selection.rows if i < len(rows)]
    if not chosen:
        return
    ids = [row.id for row in chosen]
    cols = st.columns(4)
    cols[0].button(f"Accept {len(ids)} selected", key="sel_accept", on_click=review_many,
                   args=(ds.id, ids, ACCEPTED), icon=":material/check:", width="stretch")
    cols[1].button(f"Reject {len(ids)} selected", key="sel_reject", on_click=review_many,
                   args=(ds.id, ids, REJECTED), icon=":material/block:", width="stretch")
    cols[2].button("Back to pending", key="sel_pending", on_click=review_many,
                   args=(ds.id, ids, PENDING), width="stretch")
    first = rows.index(chosen[0])
    cols[3].button(f"Open row {chosen[0].row_index} in focus", key="sel_focus",
                   on_click=open_in_focus, args=(offset + first, signature),
                   icon=":material/center_focus_strong:", width="stretch")


def move_focus(step: int, count: int) -> None:
    focus = st.session_state.setdefault("focus", {})
    focus["pos"] = min(max(focus.get("pos", 0) + step, 0), max(count - 1, 0))


def show_candidates(prompt: str) -> None:
    st.session_state["candidates_prompt"] = prompt
    st.session_state["section"] = SECTIONS[1]


def focus_view(matches: Matches, signature: str, keyword: Optional[str], queue: str) -> None:
    matched = matches.count()
    focus = st.session_state.setdefault("focus", {})
    if focus.get("sig") != signature:  # another queue, filter or sort: start at its top
        focus.clear()
        focus.update(sig=signature, pos=0)
    if matched == 0:
        if queue == PENDING:
            st.success("Nothing left to review in this queue for this filter.")
        else:
            st.info("No row in this queue matches the filter.")
        return
    pos = focus["pos"] = min(focus.get("pos", 0), matched - 1)
    rows = matches.slice(pos, 1)
    after = focus.pop("after", None)
    if rows and rows[0].id == after and pos + 1 < matched:
        # The row just reviewed is still in this queue (e.g. "all"): go on to the next one.
        # In the pending queue it left, and the next row has moved up to this place.
        pos = focus["pos"] = pos + 1
        rows = matches.slice(pos, 1)
    if not rows:
        st.info("No row here any more.")
        return
    row = rows[0]
    st.markdown(f"#### Row {row.row_index} · {QUEUE_ICONS.get(row.status, '')} {row.status}"
                + (" · ✏️ edited" if row.edited else "")
                + f"  \n:gray[{pos + 1} of {matched} in this queue · version {row.version} · "
                  f"changed {fmt_time(row.updated_at)}]")
    nav = st.columns([1, 1, 1, 1, 1, 1.4])
    nav[0].button("Previous", key="focus_prev", shortcut="K", on_click=move_focus,
                  args=(-1, matched), disabled=pos == 0, icon=":material/arrow_back:",
                  width="stretch", help="Previous row (K)")
    nav[1].button("Accept", key="focus_accept", shortcut="A", type="primary", on_click=review,
                  args=(row.id, row.version, ACCEPTED, True), icon=":material/check:",
                  width="stretch", disabled=row.status == ACCEPTED and not has_unsaved(row.id),
                  help="Accept and go to the next row (A). Unsaved edits are saved first.")
    nav[2].button("Reject", key="focus_reject", shortcut="X", on_click=review,
                  args=(row.id, row.version, REJECTED, True), icon=":material/block:",
                  width="stretch", disabled=row.status == REJECTED and not has_unsaved(row.id),
                  help="Reject and go to the next row (X; R is Streamlit's own rerun key).")
    nav[3].button("Next", key="focus_next", shortcut="J", on_click=move_focus,
                  args=(1, matched), disabled=pos + 1 >= matched,
                  icon=":material/arrow_forward:", width="stretch",
                  help="Next row without changing this one (J)")
    nav[4].button("Pending", key="focus_pending", on_click=review,
                  args=(row.id, row.version, PENDING, False), width="stretch",
                  disabled=row.status == PENDING, help="Put the row back in the pending queue")
    nav[5].button("All candidates", key="focus_candidates", on_click=show_candidates,
                  args=(row.prompt,), icon=":material/view_column:", width="stretch",
                  help="Every candidate of this prompt side by side")
    expanded = st.session_state.get("expand_think", True)
    text_col, meta_col = st.columns([3, 2])
    with text_col:
        st.html(render_row(row, keyword, expanded))
        editor(row)
    with meta_col:
        provenance(row)
        history = wb.row_history(row.id)
        if history:
            st.markdown("**Changes of this row**")
            # Text edits in words (the diff shows them in full); status changes as a move.
            st.dataframe(pd.DataFrame([{
                "when": local_time(h["at"]), "who": h["author"],
                "change": (f"{h['old']} → {h['new']}" if h["field"] == "status"
                           else f"{h['field']} edited"),
                "undone": "↩️" if h["undone"] else ""} for h in reversed(history)]),
                hide_index=True, width="stretch",
                column_config={"when": st.column_config.DatetimeColumn(
                    "When", format="MM-DD HH:mm:ss"), "who": "Who", "change": "Change",
                    "undone": st.column_config.TextColumn("Undone", width="small")})


def provenance(row: Any) -> None:
    """Where the row came from and how it was scored, as a two-column table (text cells:
    nothing in them is interpreted)."""
    meta = dict(row.meta)
    rationale = meta.pop("judge_rationale", None)
    reasons = meta.pop("reject_reasons", None)
    first = ["run_id", "stage_id", "checkpoint", "step", "rollout", "rule_correct",
             "rule_scores", "judge_verdict", "judge_correct", "pass_count", "n_candidates",
             "pass_rate", "finish_reason", "is_reasoning_complete", "length",
             "language_mixing", "duplicate_of"]
    ordered = [k for k in first if k in meta] + [k for k in meta if k not in first]
    st.markdown("**Provenance**", help="Where the candidate came from and how the rule "
                "rewards and the judge scored it as sampled (an edit changes the text, not "
                "these records).")
    frame = pd.DataFrame([{"field": "source", "value": shown_value(row.source)}]
                         + [{"field": k, "value": shown_value(meta[k])} for k in ordered])
    st.dataframe(frame, hide_index=True, width="stretch", height=min(38 + 35 * len(frame), 760))
    if reasons:
        st.markdown("**Rejected by the stage because**")
        st.text("\n".join(f"• {r}" for r in reasons))
    if rationale:
        st.markdown("**Judge's rationale**")
        st.text(rationale)


# -- other sections ----------------------------------------------------------------------------
def candidates_section(ds: Any, flt_all: Any, keyword: Optional[str]) -> None:
    rows = wb.curation_rows(ds.id, flt_all, limit=2000)
    prompts = list(dict.fromkeys(row.prompt for row in rows))
    wanted = st.session_state.get("candidates_prompt")
    if wanted and wanted not in prompts:
        prompts.insert(0, wanted)
    if not prompts:
        st.info("No row matches the filter.")
        return
    sizes = {p: 0 for p in prompts}
    for row in rows:
        sizes[row.prompt] = sizes.get(row.prompt, 0) + 1
    prompt = st.selectbox("Prompt", prompts, index=prompts.index(wanted) if wanted else 0,
                          format_func=lambda p: f"{short_prompt(p)} ({sizes.get(p, 0)} rows "
                                                f"in the filter)")
    candidates = wb.prompt_candidates(ds.id, prompt)
    st.caption(f"{len(candidates)} candidates of this prompt, best rule score first.")
    expanded = st.session_state.get("expand_think", True)
    per_line = min(4, len(candidates)) or 1
    for start in range(0, len(candidates), per_line):
        cols = st.columns(per_line)
        for col, row in zip(cols, candidates[start:start + per_line]):
            with col.container(border=True):
                meta = row.meta
                scores = ", ".join(f"{k} {shown_value(v)}"
                                   for k, v in (meta.get("rule_scores") or {}).items())
                col_md = (f"**Row {row.row_index}** · {QUEUE_ICONS.get(row.status, '')} "
                          f"{row.status}" + (" · ✏️" if row.edited else ""))
                st.markdown(col_md)
                st.caption(f"rollout {shown_value(meta.get('rollout'))} · rule "
                           f"{shown_value(meta.get('rule_correct'))} · judge "
                           f"{shown_value(meta.get('judge_verdict'))} · "
                           f"{shown_value(meta.get('length'))} tokens"
                           + (f" · {scores}" if scores else ""))
                st.html('<div class="cur-row">'
                        + render_completion(row.completion, keyword, expanded) + "</div>")
                a, r = st.columns(2)
                a.button("Accept", key=f"cand_accept_{row.id}", on_click=review,
                         args=(row.id, row.version, ACCEPTED), width="stretch",
                         disabled=row.status == ACCEPTED)
                r.button("Reject", key=f"cand_reject_{row.id}", on_click=review,
                         args=(row.id, row.version, REJECTED), width="stretch",
                         disabled=row.status == REJECTED)


def histogram(values: dict[str, list[float]], name: str) -> go.Figure:
    fig = go.Figure()
    for status, series in values.items():
        if series:
            fig.add_trace(go.Histogram(x=series, name=status, nbinsx=30,
                                       marker_color=STATUS_COLOURS[status], opacity=0.9))
    fig.update_layout(barmode="stack", height=260, margin=dict(l=10, r=10, t=30, b=10),
                      title=dict(text=name, font=dict(size=13)), legend_title_text="",
                      legend=dict(orientation="h", x=1, xanchor="right", y=1.02,
                                  yanchor="bottom"),
                      xaxis_title=None, yaxis_title="rows", bargap=0.05)
    return fig


def histograms_section(ds: Any, parts: dict[str, Any]) -> None:
    by_status = {status: wb.dataset_stats(ds.id, make_filter(parts, status))
                 for status in (PENDING, ACCEPTED, REJECTED)}
    names = list(dict.fromkeys(n for stats in by_status.values() for n in stats))
    if not names:
        st.info("No row matches the filter.")
        return
    # A field with one value everywhere (format 1.0 on every kept row) draws a single bar:
    # offered, not shown first.
    varied = {n for n in names
              if len({x for stats in by_status.values() for x in stats.get(n, [])}) > 1}
    default = [n for n in DEFAULT_HISTOGRAMS if n in varied] + [
        n for n in names if n in varied and (n.startswith("rule_scores.")
                                             or n == "judge_correct")]
    shown = st.multiselect("Show", names, default=default, key=f"hist_{ds.id}",
                           help="Response length in characters (chars) and every numeric "
                                "provenance field (yes/no as 1/0), stacked by queue.")
    st.caption("Stacked by queue: what you accepted against what you rejected, under the "
               "sidebar's filter.")
    for start in range(0, len(shown), 2):
        cols = st.columns(2)
        for col, name in zip(cols, shown[start:start + 2]):
            col.plotly_chart(histogram({s: v.get(name, []) for s, v in by_status.items()},
                                       name), key=f"histogram_{name}",
                             config={"displayModeBar": False})


RULE_LABELS = {"correct": "rule: correct", "incorrect": "rule: wrong"}
JUDGE_LABELS = {"correct": "judge: correct", "incorrect": "judge: wrong",
                "unparsed": "judge: no verdict"}


def agreement_figure(agreement: Any) -> go.Figure:
    """Rule verdict (rows) x judge verdict (columns): counts, and each cell's share of the
    rows in it; the diagonal is where they agree."""
    rules, judges = list(RULE_LABELS), list(JUDGE_LABELS)
    if not agreement.unparsed:
        judges = judges[:2]  # a column of zeros says nothing
    counts = [[agreement.count(a, b) for b in judges] for a in rules]
    total = sum(map(sum, counts)) or 1
    text = [[f"{n}<br>{n / total:.1%}" for n in row] for row in counts]
    fig = go.Figure(go.Heatmap(
        z=counts, x=[JUDGE_LABELS[b] for b in judges], y=[RULE_LABELS[a] for a in rules],
        text=text, texttemplate="%{text}", colorscale="Blues", showscale=False,
        hovertemplate="%{y}, %{x}: %{z} rows<extra></extra>"))
    title = ("judge and rule agree on "
             f"{agreement.agreement:.1%} of {agreement.both_scored} rows both scored"
             if agreement.agreement is not None else "no row was scored by both")
    fig.update_layout(height=280, margin=dict(l=10, r=10, t=40, b=10),
                      title=dict(text=title, font=dict(size=14)),
                      yaxis=dict(autorange="reversed"))
    return fig


def judge_section(ds: Any, flt_all: Any) -> None:
    agreement = wb.judge_agreement(ds.id, flt_all)
    if not agreement.cells:
        st.info("No row under the filter carries both a rule verdict (rule_correct) and a "
                "judge verdict (judge_verdict): a rejection stage without a judge, or "
                "non-reasoning rows only.")
        return
    if agreement.agreement is not None:
        c1, c2, c3 = st.columns(3)
        c1.metric("Agreement", f"{agreement.agreement:.1%}",
                  help="Rows where judge and rule give the same verdict, of the rows both "
                       "scored (a judge answer without a verdict is left out).")
        c2.metric("Judge says correct, rule says wrong",
                  agreement.count("incorrect", "correct"))
        c3.metric("Judge says wrong, rule says correct",
                  agreement.count("correct", "incorrect"))
    st.plotly_chart(agreement_figure(agreement), key="judge_agreement",
                    config={"displayModeBar": False})
    notes = []
    if agreement.unparsed:
        notes.append(f"{agreement.unparsed} judge answers had no readable verdict")
    if agreement.rule_only:
        notes.append(f"{agreement.rule_only} rows were not shown to the judge (judge_on)")
    if agreement.judge_only:
        notes.append(f"{agreement.judge_only} rows have no rule verdict (no reference)")
    st.caption("From the verdicts stored with each row when it was sampled, under the "
               "sidebar's filter" + ("; " + "; ".join(notes) if notes else "") + ".")
    cells = [(a, b) for a in RULE_LABELS for b in JUDGE_LABELS if agreement.count(a, b)]
    disagree = [c for c in cells if c[0] != c[1]]
    cell = st.selectbox("Rows of one cell", cells, index=cells.index(disagree[0])
                        if disagree else 0, key="judge_cell",
                        format_func=lambda c: f"{RULE_LABELS[c[0]]}, {JUDGE_LABELS[c[1]]} "
                                              f"({agreement.count(*c)} rows)")
    rows = wb.curation_rows(ds.id, wb.make_filter(row_ids=agreement.cells[cell][:TABLE_PAGE]))
    st.dataframe(pd.DataFrame([{
        "row": row.row_index, "status": row.status, "prompt": short_prompt(row.prompt, 40),
        "reference": row.answer, "response": short(row.completion, 80),
        "judge's rationale": short(row.meta.get("judge_rationale"), 80)} for row in rows]),
        hide_index=True, width="stretch")
    if agreement.count(*cell) > TABLE_PAGE:
        st.caption(f"The first {TABLE_PAGE} of {agreement.count(*cell)} rows.")


def duplicates_section(ds: Any, flt_all: Any) -> None:
    threshold = st.slider("Near-duplicate similarity", 0.5, 1.0, 0.9, 0.01, key="dup_threshold",
                          help="difflib ratio at which two responses of one prompt count as "
                               "near duplicates (1.0: exact only)")
    clusters = wb.duplicate_clusters(ds.id, flt_all, threshold=threshold)
    if not clusters:
        st.success("No duplicates among the rows the filter matches.")
        return
    exact = sum(c.kind == "exact" for c in clusters)
    st.markdown(f"**{len(clusters)} clusters** ({exact} exact, {len(clusters) - exact} near), "
                f"{sum(len(c.row_ids) for c in clusters)} rows in them.")
    for i, cluster in enumerate(clusters[:30]):
        label = (f"{cluster.kind} · {len(cluster.row_ids)} rows · similarity "
                 f"{cluster.similarity:.2f} · {short_prompt(cluster.prompt, 60)}")
        with st.expander(label, expanded=i == 0):
            rows = wb.curation_rows(ds.id, wb.make_filter(row_ids=cluster.row_ids))
            keep = next((r for r in rows if r.status == ACCEPTED), rows[0])
            others = [r.id for r in rows if r.id != keep.id and r.status != REJECTED]
            st.button(f"Keep row {keep.row_index}, reject the other {len(others)}",
                      key=f"dup_keep_{i}", on_click=review_many,
                      args=(ds.id, others, REJECTED), disabled=not others)
            cols = st.columns(min(len(rows), 4))
            for col, row in zip(cols * math.ceil(len(rows) / len(cols)), rows):
                with col:
                    st.caption(f"Row {row.row_index} · {row.status} · rollout "
                               f"{shown_value(row.meta.get('rollout'))}")
                    st.html('<div class="cur-row">'
                            + render_completion(row.completion, None,
                                                st.session_state.get("expand_think", True))
                            + "</div>")
    if len(clusters) > 30:
        st.caption(f"The 30 largest of {len(clusters)} clusters are shown.")


def history_section(ds: Any) -> None:
    actions = wb.curation_history(ds.id, limit=500)
    if not actions:
        st.info("No change yet.")
        return
    st.button("Undo the newest change", key="undo_history", on_click=undo, args=(ds.id,),
              icon=":material/undo:")
    picked = st.dataframe(pd.DataFrame([{
        "when": local_time(a.at), "who": a.author, "what": a.description, "rows": a.rows,
        "undone": (f"↩️ by {a.undone_by} at {fmt_time(a.undone_at)}" if a.undone else "")}
        for a in actions]), hide_index=True, width="stretch", key=f"history_{ds.id}",
        on_select="rerun", selection_mode="single-row",
        column_config={"when": st.column_config.DatetimeColumn("When",
                                                               format="YYYY-MM-DD HH:mm:ss"),
                       "who": st.column_config.TextColumn("Who"),
                       "what": st.column_config.TextColumn("What", width="large"),
                       "rows": st.column_config.NumberColumn("Rows"),
                       "undone": st.column_config.TextColumn("Undone")})
    chosen = [actions[i] for i in picked.selection.rows if i < len(actions)]
    if not chosen:
        st.caption("Select a change to see each row it changed.")
        return
    edits = wb.action_edits(chosen[0].id)
    st.markdown(f"**{chosen[0].description}**: {len(edits)} row change(s)")
    st.dataframe(pd.DataFrame([{
        "row": e.row_index, "field": e.field, "from": short(e.old, 80), "to": short(e.new, 80),
        "undone": "↩️" if e.undone else ""} for e in edits[:2000]]), hide_index=True,
        width="stretch")


def _file_part(text: str) -> str:
    return "".join(c if c.isalnum() or c in "-_" else "-" for c in text).strip("-") or "dataset"


def exporter(ds_id: int, fmt: str, status: Optional[str], snapshot: Optional[int]
             ) -> Callable[[], bytes]:
    """The bytes of ``export-dataset`` (the same call the CLI makes), written inside the
    data folder; made only when the download is clicked."""
    def make() -> bytes:
        what = f"snapshot-{snapshot}" if snapshot is not None else status or ALL_ROWS
        result = wb.export_dataset(ds_id, f"page-downloads/dataset-{ds_id}-{what}.{fmt}",
                                   fmt=fmt, status=status,
                                   snapshot=None if snapshot is None else str(snapshot))
        return result.path.read_bytes()
    return make


def write_hf_folder(ds_id: int, status: Optional[str], snapshot: Optional[int]) -> None:
    what = f"snapshot-{snapshot}" if snapshot is not None else status or ALL_ROWS
    try:
        result = wb.export_dataset(ds_id, f"dataset-{ds_id}-{what}-hf", fmt="hf", status=status,
                                   snapshot=None if snapshot is None else str(snapshot))
    except (WorkbenchError, StoreError, KeyError) as exc:
        flash(f"Not exported: {exc}", icon="⚠️")
        return
    flash(f"{result.rows} rows written as an HF datasets folder: {result.path}", icon="💾")


def export_section(ds: Any, counts: dict[str, int]) -> None:
    snapshots = wb.snapshots(ds.id)
    st.markdown("#### Snapshots")
    if snapshots:
        st.dataframe(pd.DataFrame([{
            "snapshot": s.id, "stage": s.stage_id, "rows": s.size, "content hash": s.content_hash,
            "frozen": local_time(s.created_at)} for s in snapshots]), hide_index=True,
            width="stretch",
            column_config={"content hash": st.column_config.TextColumn(width="large"),
                           "frozen": st.column_config.DatetimeColumn(
                               format="YYYY-MM-DD HH:mm:ss")})
        newest = snapshots[-1]
        st.caption(f"A snapshot is the exact copy of the accepted rows a stage trained on, "
                   f"named by the sha256 of their content: later edits never change it. "
                   f"Snapshot {newest.id}'s hash:")
        st.code(newest.content_hash, language=None)
    else:
        st.caption("No snapshot yet: an SFT stage freezes one when it starts training.")

    st.markdown("#### Export")
    options: list[tuple[str, Optional[str], Optional[int]]] = [
        (f"Accepted rows ({counts[ACCEPTED]})", ACCEPTED, None),
        (f"All rows ({counts['total']})", None, None)]
    options += [(f"Snapshot {s.id} ({s.size} rows, {s.content_hash[:12]})", None, s.id)
                for s in reversed(snapshots)]
    label = st.radio("Rows", [o[0] for o in options], key=f"export_rows_{ds.id}",
                     horizontal=True)
    _, status, snapshot = next(o for o in options if o[0] == label)
    what = f"snapshot-{snapshot}" if snapshot is not None else status or ALL_ROWS
    name = f"{_file_part(ds.name)}-{what}"
    cols = st.columns(3)
    cols[0].download_button("Download jsonl", exporter(ds.id, "jsonl", status, snapshot),
                            file_name=f"{name}.jsonl", mime="application/jsonl",
                            key="download_jsonl", icon=":material/download:", width="stretch",
                            on_click="ignore")
    cols[1].download_button("Download parquet", exporter(ds.id, "parquet", status, snapshot),
                            file_name=f"{name}.parquet",
                            mime="application/vnd.apache.parquet", key="download_parquet",
                            icon=":material/download:", width="stretch", on_click="ignore")
    cols[2].button("Write HF dataset folder", key="export_hf", on_click=write_hf_folder,
                   args=(ds.id, status, snapshot), icon=":material/folder:", width="stretch",
                   help="save_to_disk into the data folder's exports/")
    st.caption(f"The same file as `python -m backend export-dataset {ds.id}"
               + (f" --snapshot {snapshot}" if snapshot is not None else
                  " --status all" if status is None else "")
               + " --format jsonl|parquet|hf --out FILE`: every provenance field is a column "
                 "of its own.")
    st.markdown("#### Import")
    import_form(ds)


def import_form(ds: Optional[Any]) -> None:
    with st.form("import_form", border=ds is None):
        upload = st.file_uploader("A jsonl (or parquet) file with prompt and completion "
                                  "columns", type=["jsonl", "json", "parquet"], key="import_file")
        name = st.text_input("Name of the new dataset", key="import_name",
                             value=f"{ds.name} (edited)" if ds is not None else "")
        as_version = st.checkbox(f"A new version of dataset #{ds.id}" if ds is not None else
                                 "A new version", value=ds is not None, disabled=ds is None,
                                 key="import_as_version",
                                 help="Its rows may then carry every provenance field of "
                                      "this dataset's rows.")
        extra = st.checkbox("Keep unknown columns as provenance", key="import_extra")
        submitted = st.form_submit_button("Import", icon=":material/upload:")
    if not submitted:
        return
    if upload is None:
        st.error("Choose a file to import first.")
        return
    try:
        new = wb.import_upload(upload.name, upload.getvalue(), name.strip(),
                               parent=ds.id if ds is not None and as_version else None,
                               allow_extra=extra)
    except (WorkbenchError, StoreError, KeyError) as exc:
        st.error(f"Not imported. {exc}")
        return
    flash(f"Imported {new.size} rows as dataset #{new.id} ({new.name})", icon="📥")
    st.query_params["dataset"] = str(new.id)
    st.rerun()


# -- the page ----------------------------------------------------------------------------------
st.html(CSS)  # styles only: applied to the whole page, drawn nowhere
author_field()
undo_slot = st.sidebar.container()  # filled once the dataset is known
ds = pick_dataset()
fields = dataset_fields(wb.db_url, ds.id, ds.size)
counts = wb.queue_counts(ds.id)
header(ds, counts)

parts = sidebar_filters(ds, fields)
sort, descending = sort_controls(fields)
st.sidebar.subheader("Display")
st.sidebar.toggle("Show reasoning expanded", value=True, key="expand_think",
                  help="The <think> block of each response; collapsed, it shows its length.")
newest = next((a for a in wb.curation_history(ds.id, limit=20) if not a.undone), None)
undo_slot.button("Undo: " + short(newest.description, 40) if newest else "Undo",
                  key="undo", on_click=undo, args=(ds.id,), disabled=newest is None,
                  icon=":material/undo:",
                  help=(f"By {newest.author} at {fmt_time(newest.at)}" if newest
                        else "Nothing to undo"))
keyword = parts["search"]
flt_all = make_filter(parts, None)  # every queue: candidates, duplicates

tabs = st.tabs(SECTIONS, key="section", on_change="rerun")
with tabs[0]:
    if tabs[0].open is not False:
        queue, view = queue_and_view(counts)
        flt = make_filter(parts, queue)
        matches = Matches(ds.id, flt, sort, descending)
        signature = f"{ds.id}|{flt!r}|{sort}|{descending}"
        bulk_bar(ds, flt, matches.count(), queue)
        if view == "Table":
            table_view(ds, matches, signature)
        else:
            focus_view(matches, signature, keyword, queue)
with tabs[1]:
    if tabs[1].open:
        candidates_section(ds, flt_all, keyword)
with tabs[2]:
    if tabs[2].open:
        histograms_section(ds, parts)
with tabs[3]:
    if tabs[3].open:
        judge_section(ds, flt_all)
with tabs[4]:
    if tabs[4].open:
        duplicates_section(ds, flt_all)
with tabs[5]:
    if tabs[5].open:
        history_section(ds)
with tabs[6]:
    if tabs[6].open:
        export_section(ds, counts)
