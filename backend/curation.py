"""Curation of a rejection-sampled (or any) dataset by hand, behind ``backend.api``.

What a reviewer does on the curation page or with the CLI, as plain functions of a
``storage.Store``: list and count rows through filters on every provenance field, accept or
reject one row or everything a filter matches (with a dry-run count to confirm first), edit a
response in place (a save made on a stale version is refused and the newer text returned),
undo newest first, read the history, see all candidates of one prompt side by side, find
exact and near duplicates, get the numbers behind the length and score histograms, export to
jsonl / parquet / an HF ``datasets`` folder, and import a jsonl back as a new version.

Nothing here trains or imports torch; the store keeps every change with its time and author.
"""
from __future__ import annotations

import difflib
import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Optional

from storage import Store, data_home
from storage import records as r
from storage.store import meta_value  # one definition of a field path (dotted keys)

# The provenance every rejection-sampled row carries in ``meta`` (open-r1's per-row filter
# fields, plus where the row came from). Exported as columns of their own.
PROVENANCE_FIELDS = (
    "run_id", "stage_id", "checkpoint", "step", "rollout", "rule_scores", "rule_correct",
    "judge_verdict", "judge_rationale", "judge_correct", "finish_reason",
    "is_reasoning_complete", "pass_count", "n_candidates", "length", "language_mixing",
    "duplicate_of",
    # also written by the rejection stage (backend/stages/rejection.py)
    "stage_key", "source_stage", "judge_model", "prompt_index", "pass_rate", "reject_reasons",
    "origin", "source_row",
)
CORE_COLUMNS = ("prompt", "completion", "answer", "source", "status")
# Written by an export to say where a row came from; an import keeps ``row_id`` as
# ``meta.parent_row_id`` and ignores the rest.
BOOKKEEPING_COLUMNS = ("row_id", "row_index", "version", "edited", "dataset_id", "snapshot_id",
                       "position", "parent_row_id")
EXPORT_FORMATS = ("jsonl", "parquet", "hf")
SORT_KEYS = ("row_index", "status", "version", "updated_at", "chars")
NEAR_DUPLICATE_RATIO = 0.9


class CurationError(ValueError):
    """A curation request that cannot be carried out; the message says what to fix."""


# ----------------------------------------------------------------------------- filters
def parse_where(items: Iterable[str]) -> tuple[dict[str, Any], dict[str, tuple]]:
    """``--where`` conditions: ``key=value`` (equality; ``a|b`` for any of them) or
    ``key=LOW..HIGH`` (inclusive range, either end may be left out: ``length=..200``).
    A dotted key reaches into a nested field (``rule_scores.accuracy=1``)."""
    equal: dict[str, Any] = {}
    ranges: dict[str, tuple] = {}
    for item in items:
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise CurationError(f"--where {item!r}: expected key=value or key=low..high")
        value = value.strip()
        if ".." in value:
            low, _, high = value.partition("..")
            try:
                bounds = tuple(float(x) if x.strip() else None for x in (low, high))
            except ValueError:
                raise CurationError(f"--where {item!r}: a range needs numbers, e.g. "
                                    f"{key}=0.2..0.8") from None
            if bounds == (None, None):
                raise CurationError(f"--where {item!r}: give at least one end of the range")
            ranges[key] = bounds
        else:
            equal[key] = value.split("|") if "|" in value else value
    return equal, ranges


def make_filter(status: Any = None, source: Optional[str] = None, prompt: Optional[str] = None,
                search: Optional[str] = None, where: Iterable[str] = (),
                meta: Optional[dict[str, Any]] = None,
                ranges: Optional[dict[str, tuple]] = None,
                row_ids: Optional[list[int]] = None) -> r.RowFilter:
    """A row filter from what a form or the CLI gives. ``where`` items naming a column
    (status, source, prompt) filter that column; every other key is a provenance field."""
    equal, parsed_ranges = parse_where(where)
    for column in ("status", "source", "prompt"):
        if column in equal:
            value = equal.pop(column)
            if column == "status":
                status = value
            elif column == "source":
                source = value
            else:
                prompt = value
    statuses = [status] if isinstance(status, str) else list(status or [])
    unknown = sorted(set(statuses) - set(r.ROW_STATUSES) - {r.EDITED})
    if unknown:
        raise CurationError(f"unknown status {', '.join(unknown)}; choose from "
                            f"{', '.join(r.ROW_STATUSES + (r.EDITED,))}")
    return r.RowFilter(status=status or None, source=source or None, prompt=prompt,
                       search=search or None, meta={**equal, **(meta or {})},
                       ranges={**parsed_ranges, **(ranges or {})}, row_ids=row_ids)


# ----------------------------------------------------------------------------- reading
def _sort_value(row: r.CuratedRow, key: str) -> Any:
    if key == "chars":
        return len(row.completion)
    if key in ("row_index", "status", "version", "updated_at"):
        return getattr(row, key)
    return meta_value(row.meta, key, None)


def list_rows(store: Store, dataset_id: int, flt: Optional[r.RowFilter] = None, *,
              sort: str = "row_index", descending: bool = False, limit: Optional[int] = None,
              offset: int = 0) -> list[r.CuratedRow]:
    """Rows matching ``flt``, sorted by a column (``SORT_KEYS``) or any provenance field
    (rows without it last), one page of them."""
    if sort == "row_index" and not descending:
        return store.query_rows(dataset_id, flt, limit=limit, offset=offset)
    rows = store.query_rows(dataset_id, flt)
    present = [row for row in rows if _sort_value(row, sort) is not None]
    missing = [row for row in rows if _sort_value(row, sort) is None]
    try:
        present.sort(key=lambda row: _sort_value(row, sort), reverse=descending)
    except TypeError:  # mixed types in one field: compare as text
        present.sort(key=lambda row: str(_sort_value(row, sort)), reverse=descending)
    ordered = present + missing
    return ordered[offset:offset + limit if limit is not None else None]


def queue_counts(store: Store, dataset_id: int) -> dict[str, int]:
    """pending / accepted / rejected / edited / total."""
    return store.status_counts(dataset_id)


def highlight_spans(text: str, keyword: Optional[str]) -> list[tuple[str, bool]]:
    """``text`` cut into (piece, matches keyword) for highlighting a search, case-insensitive.
    Pieces are plain text: a page must escape them (a row may hold HTML or script text)."""
    if not keyword:
        return [(text, False)] if text else []
    spans, pos = [], 0
    for match in re.finditer(re.escape(keyword), text, flags=re.IGNORECASE):
        if match.start() > pos:
            spans.append((text[pos:match.start()], False))
        spans.append((match.group(0), True))
        pos = match.end()
    if pos < len(text):
        spans.append((text[pos:], False))
    return spans


def prompt_candidates(store: Store, dataset_id: int, prompt: str) -> list[r.CuratedRow]:
    """Every candidate of one prompt, side by side (best rule score first, then by rollout)."""
    rows = store.query_rows(dataset_id, r.RowFilter(prompt=prompt))

    def score(row: r.CuratedRow) -> float:
        scores = row.meta.get("rule_scores") or {}
        return -sum(v for v in scores.values() if isinstance(v, (int, float)))
    return sorted(rows, key=lambda row: (score(row), row.row_index))


# ----------------------------------------------------------------------------- changes
@dataclass
class BulkResult:
    status: str
    matched: int  # rows the filter matches
    changing: int  # of which not already in ``status`` (what the action changes)
    done: bool  # False for a dry run

    def describe(self) -> str:
        verb = {r.ACCEPTED: "accept", r.REJECTED: "reject", r.PENDING: "reset to pending"}[
            self.status]
        if not self.done:
            return (f"{self.matched} rows match; {self.changing} would change ({verb}); "
                    f"{self.matched - self.changing} already {self.status}")
        return f"{self.changing} rows {self.status} ({self.matched} matched)"


def review_row(store: Store, row_id: int, status: str, *,
               expected_version: Optional[int] = None,
               author: Optional[str] = None) -> r.CuratedRow:
    """Accept, reject or reset one row (refused like an edit when made on a stale version)."""
    if status not in r.ROW_STATUSES:
        raise CurationError(f"status {status!r} is not one of {', '.join(r.ROW_STATUSES)}")
    return store.edit_row(row_id, "status", status, expected_version=expected_version,
                          author=author)


def bulk_review(store: Store, dataset_id: int, flt: Optional[r.RowFilter], status: str, *,
                author: Optional[str] = None, dry_run: bool = False) -> BulkResult:
    """Set ``status`` on every row ``flt`` matches, as one undoable action; ``dry_run`` only
    counts (what a confirmation shows before the action)."""
    if status not in r.ROW_STATUSES:
        raise CurationError(f"status {status!r} is not one of {', '.join(r.ROW_STATUSES)}")
    if dry_run:
        statuses = [row.status for row in store.query_rows(dataset_id, flt)]
        return BulkResult(status, len(statuses), sum(s != status for s in statuses),
                          done=False)
    matched = store.count_rows(dataset_id, flt)
    changed = store.set_status_where(dataset_id, flt, status, author=author,
                                     description=f"{status} rows where {_describe_filter(flt)}")
    return BulkResult(status, matched, changed, done=True)


def _describe_filter(flt: Optional[r.RowFilter]) -> str:
    if flt is None:
        return "any"
    parts = []
    if flt.statuses():
        parts.append("status=" + "|".join(flt.statuses()))
    if flt.source:
        parts.append(f"source={flt.source}")
    if flt.prompt is not None:
        parts.append(f"prompt={flt.prompt!r}")
    if flt.search:
        parts.append(f"text contains {flt.search!r}")
    parts += [f"{k}={v}" for k, v in flt.meta.items()]
    parts += [f"{k} in {'' if lo is None else lo}..{'' if hi is None else hi}"
              for k, (lo, hi) in flt.ranges.items()]
    if flt.row_ids is not None:
        parts.append(f"{len(flt.row_ids)} chosen rows")
    return ", ".join(parts) or "any"


def edit_row(store: Store, row_id: int, field_name: str, value: Optional[str], *,
             expected_version: Optional[int], author: Optional[str] = None) -> r.CuratedRow:
    """Edit a row's prompt, completion or answer in place. ``expected_version`` is the
    version the editor showed; if the row changed since, ``storage.EditConflict`` is raised
    with the newer row and nothing is written. ``None`` skips the check (scripts)."""
    if field_name not in r.TEXT_FIELDS:
        raise CurationError(f"{field_name!r} cannot be edited here; edit one of "
                            f"{', '.join(r.TEXT_FIELDS)} (accept / reject change the status)")
    return store.edit_row(row_id, field_name, value, expected_version=expected_version,
                          author=author)


def undo(store: Store, dataset_id: int, author: Optional[str] = None) -> Optional[str]:
    """Undo the dataset's newest action (a bulk action as a whole); None: nothing to undo."""
    return store.undo_last_edit(dataset_id, author=author)


# ----------------------------------------------------------------------------- diffs
@dataclass
class RowDiff:
    field: str
    original: Optional[str]  # before the first edit
    current: Optional[str]
    spans: list[tuple[str, str]] = field(default_factory=list)  # (equal|insert|delete, text)
    unified: list[str] = field(default_factory=list)

    @property
    def changed(self) -> bool:
        return self.original != self.current


def diff_spans(original: str, current: str) -> list[tuple[str, str]]:
    """Character-level diff as (equal | delete | insert, text) pieces, in reading order."""
    out: list[tuple[str, str]] = []
    matcher = difflib.SequenceMatcher(None, original, current, autojunk=False)
    for op, i1, i2, j1, j2 in matcher.get_opcodes():
        if op == "equal":
            out.append(("equal", original[i1:i2]))
            continue
        if op in ("delete", "replace"):
            out.append(("delete", original[i1:i2]))
        if op in ("insert", "replace"):
            out.append(("insert", current[j1:j2]))
    return out


def row_diff(store: Store, row_id: int, field_name: str = "completion") -> RowDiff:
    """A row's field against its original text (before any edit, undone ones included)."""
    row = store.get_row(row_id)
    current = getattr(row, field_name)
    edits = [e for e in store.row_edits(row_id) if e["field"] == field_name]
    original = edits[0]["old"] if edits else current
    a, b = original or "", current or ""
    return RowDiff(field=field_name, original=original, current=current,
                   spans=diff_spans(a, b),
                   unified=list(difflib.unified_diff(a.splitlines(), b.splitlines(),
                                                     "original", "edited", lineterm="")))


# ----------------------------------------------------------------------------- duplicates
@dataclass
class DuplicateCluster:
    kind: str  # exact | near
    prompt: str
    row_ids: list[int]
    row_indexes: list[int]
    similarity: float  # lowest ratio that joined the cluster (1.0 for exact)


def normalise(text: str) -> str:
    """Whitespace runs become one space, case is folded: how duplicates are compared."""
    return " ".join(text.split()).casefold()


def duplicate_clusters(store: Store, dataset_id: int, flt: Optional[r.RowFilter] = None, *,
                       threshold: float = NEAR_DUPLICATE_RATIO) -> list[DuplicateCluster]:
    """Duplicates among the candidates of each prompt: ``exact`` clusters (completions equal
    after :func:`normalise`) and ``near`` clusters (exact groups joined because a pair of
    their completions is at least ``threshold`` similar by ``difflib`` ratio; such a cluster
    lists every member, so it may contain an exact one). Largest clusters first."""
    if not 0 < threshold <= 1:
        raise CurationError("the near-duplicate threshold must be in (0, 1], e.g. 0.9")
    by_prompt: dict[str, list[r.CuratedRow]] = {}
    for row in store.query_rows(dataset_id, flt):
        by_prompt.setdefault(normalise(row.prompt), []).append(row)
    clusters = []
    for rows in by_prompt.values():
        exact: dict[str, list[r.CuratedRow]] = {}
        for row in rows:
            exact.setdefault(normalise(row.completion), []).append(row)
        texts = list(exact)
        for members in exact.values():
            if len(members) > 1:
                clusters.append(_cluster("exact", members, 1.0))
        # Near: union-find over the exact groups, joined by any similar enough pair.
        parent = list(range(len(texts)))
        lowest = [1.0] * len(texts)

        def find(i: int) -> int:
            while parent[i] != i:
                parent[i] = parent[parent[i]]
                i = parent[i]
            return i

        for i in range(len(texts)):
            for j in range(i + 1, len(texts)):
                if find(i) == find(j):
                    continue
                matcher = difflib.SequenceMatcher(None, texts[i], texts[j], autojunk=False)
                # Cheap upper bounds first: most pairs are far apart.
                if matcher.real_quick_ratio() < threshold or matcher.quick_ratio() < threshold:
                    continue
                ratio = matcher.ratio()
                if ratio >= threshold:
                    root_i, root_j = find(i), find(j)
                    parent[root_j] = root_i
                    lowest[root_i] = min(lowest[root_i], lowest[root_j], ratio)
        groups: dict[int, list[int]] = {}
        for i in range(len(texts)):
            groups.setdefault(find(i), []).append(i)
        for root, members in groups.items():
            if len(members) > 1:
                clusters.append(_cluster("near", [row for i in members for row in exact[texts[i]]],
                                         round(lowest[root], 4)))
    clusters.sort(key=lambda c: (-len(c.row_ids), c.row_indexes[0], c.kind != "near"))
    return clusters


def _cluster(kind: str, rows: list[r.CuratedRow], similarity: float) -> DuplicateCluster:
    rows = sorted(rows, key=lambda row: row.row_index)
    return DuplicateCluster(kind=kind, prompt=rows[0].prompt, row_ids=[row.id for row in rows],
                            row_indexes=[row.row_index for row in rows], similarity=similarity)


# ----------------------------------------------------------------------------- statistics
def flatten(meta: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested provenance as flat columns: ``{"rule_scores": {"accuracy": 1}}`` ->
    ``{"rule_scores.accuracy": 1}``."""
    out: dict[str, Any] = {}
    for key, value in meta.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            out.update(flatten(value, name + "."))
        else:
            out[name] = value
    return out


def stats(store: Store, dataset_id: int,
          flt: Optional[r.RowFilter] = None) -> dict[str, list[float]]:
    """The numbers behind the histograms: ``chars`` (completion length in characters) and
    every numeric provenance field (lengths, scores, pass counts; booleans as 0/1), each the
    values of the rows that have it."""
    columns: dict[str, list[float]] = {"chars": []}
    for row in store.query_rows(dataset_id, flt):
        columns["chars"].append(float(len(row.completion)))
        for key, value in flatten(row.meta).items():
            if isinstance(value, bool):
                value = float(value)
            if isinstance(value, (int, float)) and math.isfinite(value):
                columns.setdefault(key, []).append(float(value))
    return columns


# ----------------------------------------------------------------------------- judge vs rule
RULE_VERDICTS = ("correct", "incorrect")
JUDGE_VERDICTS = ("correct", "incorrect", "unparsed")


@dataclass
class JudgeAgreement:
    """The generative judge's verdicts against the rule check, from stored rows: a confusion
    matrix (rule verdict x judge verdict) with the row ids of each cell, and the agreement on
    the rows both scored (an unparsed verdict is shown, but is neither agreement nor not)."""

    cells: dict[tuple[str, str], list[int]]  # (rule, judge) -> row ids
    rule_only: int  # rows the rule scored and the judge did not see
    judge_only: int  # rows the judge scored and the rule could not (no reference)

    def count(self, rule: str, judge: str) -> int:
        return len(self.cells.get((rule, judge), []))

    @property
    def both_scored(self) -> int:
        return sum(self.count(a, b) for a in RULE_VERDICTS for b in RULE_VERDICTS)

    @property
    def agreement(self) -> Optional[float]:
        agree = self.count("correct", "correct") + self.count("incorrect", "incorrect")
        return agree / self.both_scored if self.both_scored else None

    @property
    def unparsed(self) -> int:
        return sum(self.count(a, "unparsed") for a in RULE_VERDICTS)


def _judge_verdict(meta: dict[str, Any]) -> Optional[str]:
    verdict = meta.get("judge_verdict")
    if verdict in JUDGE_VERDICTS:
        return verdict
    correct = meta.get("judge_correct")  # an imported row may carry only the boolean
    return None if correct is None else "correct" if correct else "incorrect"


def judge_agreement(store: Store, dataset_id: int,
                    flt: Optional[r.RowFilter] = None) -> JudgeAgreement:
    """How the judge's verdicts (``judge_verdict``) line up with the rule check
    (``rule_correct``) on the rows ``flt`` matches, as the rejection stage stored them."""
    cells: dict[tuple[str, str], list[int]] = {}
    rule_only = judge_only = 0
    for row in store.query_rows(dataset_id, flt):
        rule = row.meta.get("rule_correct")
        rule = None if rule is None else "correct" if rule else "incorrect"
        judge = _judge_verdict(row.meta)
        if rule and judge:
            cells.setdefault((rule, judge), []).append(row.id)
        elif rule:
            rule_only += 1
        elif judge:
            judge_only += 1
    return JudgeAgreement(cells, rule_only, judge_only)


# ----------------------------------------------------------------------------- export
@dataclass
class ExportResult:
    path: Path
    rows: int
    format: str


def resolve_export_path(out: str | Path) -> Path:
    """Where an export may write: inside the data folder. A relative path lands in
    ``<data folder>/exports/``; one that leads outside (absolute, ``..``, a link) is refused,
    so a page or script cannot be made to overwrite files elsewhere."""
    home = data_home()
    path = Path(out).expanduser()
    if not path.is_absolute():
        path = home / "exports" / path
    path = path.resolve()
    if not path.is_relative_to(home):
        raise CurationError(f"the export path {path} is outside the data folder {home}; "
                            f"exports are written inside it (a relative path such as "
                            f"'curated.jsonl' goes to {home / 'exports'}). Set R1WB_HOME to "
                            f"move the data folder.")
    return path


def _export_record(row: Any, *, status: Optional[str] = None) -> dict[str, Any]:
    record: dict[str, Any] = {
        "prompt": row.prompt, "completion": row.completion, "answer": row.answer,
        "source": row.source, "status": status or row.status,
        "row_id": row.id if isinstance(row, r.CuratedRow) else row.row_id,
    }
    if isinstance(row, r.CuratedRow):
        record.update(row_index=row.row_index, version=row.version, edited=row.edited)
    for key, value in flatten(row.meta).items():
        # A provenance field named like a column keeps its own column.
        record[key if key not in record else f"meta.{key}"] = value
    return record


def _uniform_columns(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Arrow needs one type per column: a field that is a number in one row and text in
    another (free-form provenance) is written as text."""
    kinds: dict[str, set] = {}
    for record in records:
        for key, value in record.items():
            if value is not None:
                kinds.setdefault(key, set()).add(
                    "number" if isinstance(value, (int, float)) and not isinstance(value, bool)
                    else type(value).__name__)
    mixed = {key for key, k in kinds.items() if len(k) > 1}
    if not mixed:
        return records
    return [{k: (v if k not in mixed or v is None or isinstance(v, str)
                 else json.dumps(v)) for k, v in record.items()} for record in records]


def write_records(records: list[dict[str, Any]], path: Path, fmt: str,
                  columns: Iterable[str] = CORE_COLUMNS) -> None:
    """Write records with ``datasets``: jsonl (``to_json``), parquet (``to_parquet``) or an
    HF dataset folder (``save_to_disk``), every record with the same columns."""
    import datasets
    from datasets import Dataset

    datasets.disable_progress_bars()  # a CLI verb or a page click, not a long job
    if fmt not in EXPORT_FORMATS:
        raise CurationError(f"unknown export format {fmt!r}; choose {', '.join(EXPORT_FORMATS)}")
    names: list[str] = list(columns)
    for record in records:
        names += [k for k in record if k not in names]
    names = list(dict.fromkeys(names))
    table = {name: [record.get(name) for record in _uniform_columns(records)] for name in names}
    dataset = Dataset.from_dict(table)
    path.parent.mkdir(parents=True, exist_ok=True)
    if fmt == "jsonl":
        # pandas writes floats with 10 digits and escapes non-ASCII unless told otherwise.
        dataset.to_json(str(path), lines=True, force_ascii=False, double_precision=15)
    elif fmt == "parquet":
        dataset.to_parquet(str(path))
    else:
        dataset.save_to_disk(str(path))


def export_rows(store: Store, dataset_id: int, out: str | Path, *, fmt: str = "jsonl",
                snapshot: Optional[int | str] = None,
                status: Optional[str] = r.ACCEPTED) -> ExportResult:
    """Write a dataset's rows (by default the accepted ones; ``status=None``: all), or a
    snapshot's frozen rows, with their provenance flattened into columns."""
    path = resolve_export_path(out)
    if fmt not in EXPORT_FORMATS:
        raise CurationError(f"unknown export format {fmt!r}; choose {', '.join(EXPORT_FORMATS)}")
    if snapshot is not None:
        snap = find_snapshot(store, dataset_id, snapshot)
        records = [{**_export_record(row, status=r.ACCEPTED), "snapshot_id": snap.id}
                   for row in store.snapshot_rows(snap.id)]
    else:
        if status is not None and status not in r.ROW_STATUSES + (r.EDITED,):
            raise CurationError(f"status {status!r} is not one of "
                                f"{', '.join(r.ROW_STATUSES + (r.EDITED,))} (or all)")
        rows = store.query_rows(dataset_id, r.RowFilter(status=status))
        records = [_export_record(row) for row in rows]
    write_records(records, path, fmt)
    return ExportResult(path=path, rows=len(records), format=fmt)


def find_snapshot(store: Store, dataset_id: Optional[int], ref: int | str) -> r.Snapshot:
    """A snapshot by id, or by its content hash (a prefix of at least 8 characters)."""
    text = str(ref).strip()
    if text.isdigit():
        snap = store.get_snapshot(int(text))
    else:
        if len(text) < 8:
            raise CurationError(f"snapshot {text!r}: give its id or at least 8 characters of "
                                f"its content hash")
        found = [s for s in store.snapshots(dataset_id) if s.content_hash.startswith(text)]
        if not found:
            raise CurationError(f"no snapshot of dataset {dataset_id} has a hash starting "
                                f"with {text!r}")
        snap = found[-1]
    if dataset_id is not None and snap.dataset_id != dataset_id:
        raise CurationError(f"snapshot {snap.id} belongs to dataset {snap.dataset_id}, not "
                            f"{dataset_id}")
    return snap


# ----------------------------------------------------------------------------- import
def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    """Rows of a jsonl file, with the line of any problem. Read here rather than with
    ``datasets``: its errors do not say which line is not UTF-8 or not JSON."""
    rows = []
    with open(path, "rb") as f:
        for number, raw in enumerate(f, start=1):
            if number == 1 and raw.startswith(b"\xef\xbb\xbf"):
                raw = raw[3:]  # a byte-order mark some editors write
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise CurationError(
                    f"{path}, line {number}: not UTF-8 text (byte {raw[exc.start]:#04x} at "
                    f"column {exc.start + 1}); save the file as UTF-8 and import it again"
                ) from None
            if not line.strip():
                continue
            try:
                value = json.loads(line)
            except ValueError as exc:
                raise CurationError(f"{path}, line {number}: not valid JSON ({exc})") from None
            if not isinstance(value, dict):
                raise CurationError(f"{path}, line {number}: each line must be a JSON object "
                                    f"with prompt and completion")
            rows.append(value)
    return rows


def _read_any(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        raise CurationError(f"{path} does not exist")
    if path.is_dir():
        from datasets import load_from_disk

        try:
            loaded = load_from_disk(str(path))
        except Exception as exc:  # noqa: BLE001 - any unreadable folder gets one message
            raise CurationError(f"{path} is not a dataset folder written by save_to_disk "
                                f"({exc})") from None
        if hasattr(loaded, "keys"):  # a DatasetDict: its train split
            if "train" not in loaded:
                raise CurationError(f"{path} has splits {', '.join(loaded)}; import needs "
                                    f"a train split or a single dataset")
            loaded = loaded["train"]
        return loaded.to_list()
    if path.suffix == ".parquet":
        from datasets import Dataset

        return Dataset.from_parquet(str(path)).to_list()
    return _read_jsonl(path)


def _known_column(name: str, parent_fields: set[str]) -> bool:
    if (name in CORE_COLUMNS or name in BOOKKEEPING_COLUMNS or name in PROVENANCE_FIELDS
            or name in parent_fields):
        return True
    head = name.split(".", 1)[0]
    return head == "meta" or ("." in name and head in PROVENANCE_FIELDS)


def unflatten(columns: dict[str, Any]) -> dict[str, Any]:
    """Inverse of :func:`flatten` (``meta.x`` columns, written for clashes, lose the prefix)."""
    out: dict[str, Any] = {}
    for name, value in columns.items():
        if name.startswith("meta."):
            name = name[len("meta."):]
        parts = name.split(".")
        node = out
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                break
        else:
            node[parts[-1]] = value
    return out


def import_rows(store: Store, path: str | Path, *, name: str, parent: Optional[int] = None,
                allow_extra: bool = False) -> int:
    """Import a jsonl (or parquet / HF folder) as a new dataset; ``parent``: the dataset it
    is a new version of. Columns: prompt and completion (required), answer, source, status
    (pending when absent), the provenance fields (flat, ``rule_scores.accuracy``; with a
    ``parent``, every field its rows carry) and the bookkeeping an export writes. Unknown columns are refused unless ``allow_extra`` (then
    kept in ``meta``). Returns the new dataset's id."""
    path = Path(path).expanduser()
    if not name.strip():
        raise CurationError("give the imported dataset a name (--name)")
    if parent is not None:
        store.get_dataset(parent)  # KeyError: "dataset N does not exist"
    rows = _read_any(path)
    if not rows:
        raise CurationError(f"{path} holds no rows")
    columns = list(dict.fromkeys(k for row in rows for k in row))
    missing = [c for c in ("prompt", "completion") if c not in columns]
    if missing:
        raise CurationError(f"{path} has no {' and no '.join(missing)} column; columns found: "
                            f"{', '.join(columns)}")
    # A new version of a dataset may carry every provenance field its parent's rows have.
    parent_fields = ({key for row in store.query_rows(parent, limit=2000)
                      for key in flatten(row.meta)} if parent is not None else set())
    unknown = [c for c in columns if not _known_column(c, parent_fields)]
    if unknown and not allow_extra:
        raise CurationError(
            f"{path} has unknown column(s) {', '.join(unknown)}. Known: "
            f"{', '.join(CORE_COLUMNS)}, the provenance fields {', '.join(PROVENANCE_FIELDS)} "
            f"(nested ones as rule_scores.NAME), and {', '.join(BOOKKEEPING_COLUMNS)}. Rename "
            f"them, or import with --allow-extra-columns to keep them as provenance.")
    out = []
    for number, row in enumerate(rows, start=1):
        for column in ("prompt", "completion"):
            if not isinstance(row.get(column), str):
                raise CurationError(f"{path}, row {number}: {column} must be text, got "
                                    f"{row.get(column)!r}")
        status = row.get("status") or r.PENDING
        if status == "kept":
            status = r.ACCEPTED
        if status not in r.ROW_STATUSES:
            raise CurationError(f"{path}, row {number}: status {status!r} is not one of "
                                f"{', '.join(r.ROW_STATUSES)}")
        answer = row.get("answer")
        provenance = {k: v for k, v in row.items()
                      if k not in CORE_COLUMNS and k not in BOOKKEEPING_COLUMNS}
        meta = unflatten(provenance)
        if row.get("parent_row_id") is not None or row.get("row_id") is not None:
            meta["parent_row_id"] = row.get("parent_row_id", row.get("row_id"))
        out.append({"prompt": row["prompt"], "completion": row["completion"],
                    "answer": None if answer is None else str(answer),
                    "source": row.get("source"), "status": status, "meta": meta})
    kind = store.get_dataset(parent).kind if parent is not None else "import"
    return store.create_dataset(name, kind, out, parent_id=parent, origin=str(path.resolve()))
