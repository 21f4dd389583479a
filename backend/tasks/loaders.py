"""Load real problem sets (prompts with verifiable answers) from files, folders or the HF Hub.

``load_problems(source)`` accepts

* a ``.jsonl`` / ``.ndjson`` file (one JSON object per line),
* a ``.json`` file: a list of objects, JSON lines, an object holding one list of records
  (``{"version": ..., "data": [...]}``), or a dict of equal-length columns,
* a ``.parquet`` or ``.csv`` file (CSV cells are read as text, so ``007`` stays ``007``),
* a folder written by ``Dataset.save_to_disk`` or ``DatasetDict.save_to_disk`` (``split``
  picks the split of a DatasetDict),
* a folder of data files (``.jsonl`` / ``.json`` / ``.parquet`` / ``.csv``), its splits found
  by ``datasets``' own rules, as ``load_dataset(folder)`` would: ``train.jsonl`` and
  ``test.jsonl``, hub-style shards ``data/train-00000-of-00001.parquet``, ``data/test/*.csv``,
  ``dev.jsonl`` as ``validation``; a folder without split names is one ``train`` split.
  :func:`available_splits` lists them;
* otherwise a Hugging Face Hub dataset id, ``load_dataset(source, split=split)``; write
  ``"owner/name:config"`` to pick a config (``"openai/gsm8k:main"``). This is the only case
  that needs the network.

Every problem with the input raises :class:`DatasetError` with a message that says what to
fix; no raw traceback from ``datasets`` / ``pyarrow`` gets through.

Answers are reduced to the bare final answer (``answer_format``): GSM8K's text after the last
``####``, the content of the last ``\\boxed{...}``, or the value itself. When the answer was
extracted from a longer solution, the solution is kept in ``Problem.meta["solution"]``. Other
columns with plain JSON values (str, int, float, bool, None) are kept in ``meta`` under their
own names.
"""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from backend.rewards.extract import last_boxed
from backend.tasks.problem import Problem, prompt_key

if TYPE_CHECKING:  # datasets is imported lazily: it is slow to import and not always needed
    import datasets

__all__ = [
    "ANSWER_FORMATS",
    "DatasetError",
    "available_splits",
    "Problem",
    "extract_boxed",
    "extract_gsm8k_answer",
    "load_problems",
    "normalize_answer",
    "problems_to_hf_dataset",
    "save_problems_jsonl",
]

ANSWER_FORMATS = ("auto", "gsm8k", "plain", "boxed")
JSONL_SUFFIXES = (".jsonl", ".ndjson")
FILE_SUFFIXES = (*JSONL_SUFFIXES, ".json", ".parquet", ".csv")
# Extensions looked for, in order of preference, when a folder is given.
_SPLIT_FILE_EXTS = ("jsonl", "ndjson", "json", "parquet", "csv")
_PROMPT_GUESSES = ("question", "problem", "prompt", "input", "query", "instruction")
_ANSWER_GUESSES = ("answer", "final_answer", "solution", "target", "output", "label")
_TRUE = {"1", "ON", "YES", "TRUE"}


class DatasetError(ValueError):
    """A problem set could not be loaded; the message says what to fix."""


# ----------------------------------------------------------------------------- answers


def extract_gsm8k_answer(text: str) -> str | None:
    """Text after the last ``####``, commas removed, stripped; ``None`` if there is no ``####``."""
    if "####" not in text:
        return None
    return text.rsplit("####", 1)[1].replace(",", "").strip()


def extract_boxed(text: str) -> str | None:
    """Content of the last ``\\boxed{...}`` whose braces balance, stripped; ``None`` if there
    is none. The same reading the rewards use, so data and grading agree."""
    content = last_boxed(text)
    return None if content is None else content.strip()


def _check_answer_format(answer_format: str) -> None:
    if answer_format not in ANSWER_FORMATS:
        raise DatasetError(
            f"unknown answer_format={answer_format!r}; use one of {', '.join(map(repr, ANSWER_FORMATS))}"
        )


def detect_answer_format(text: str) -> str:
    """What ``answer_format="auto"`` reads a raw answer as: gsm8k, boxed or plain."""
    return "gsm8k" if "####" in text else "boxed" if "\\boxed{" in text else "plain"


def normalize_answer(value: Any, answer_format: str = "auto") -> tuple[str, str | None]:
    """``(final answer, full solution or None)`` for one raw answer value.

    ``"gsm8k"``: the text after the last ``####`` with commas removed; ``"boxed"``: the content
    of the last ``\\boxed{...}``; ``"plain"``: ``str(value).strip()``; ``"auto"``: gsm8k if the
    text has ``####``, boxed if it has ``\\boxed{``, else plain. Raises :class:`DatasetError`
    (without row context) when the format's marker is missing.
    """
    _check_answer_format(answer_format)
    text = value if isinstance(value, str) else str(value)
    fmt = detect_answer_format(text) if answer_format == "auto" else answer_format
    if fmt == "plain":
        return text.strip(), None
    if fmt == "gsm8k":
        answer = extract_gsm8k_answer(text)
        if answer is None:
            raise DatasetError(
                "the answer has no '####' marker, which answer_format='gsm8k' needs; "
                "use answer_format='auto' or 'plain'"
            )
        return answer, text
    answer = extract_boxed(text)
    if answer is None:
        raise DatasetError(
            "the answer has no balanced \\boxed{...}, which answer_format='boxed' needs; "
            "use answer_format='auto' or 'plain'"
        )
    return answer, text


# ----------------------------------------------------------------------------- reading


def _hf():
    try:
        import datasets
    except ImportError as exc:  # pragma: no cover - datasets is a hard requirement
        raise DatasetError("the 'datasets' package is needed to load problem sets: pip install datasets") from exc
    return datasets


def _one_line(exc: BaseException, limit: int) -> str:
    text = " ".join(line.strip() for line in str(exc).splitlines() if line.strip())
    if len(text) > limit:
        text = text[: limit - 3] + "..."
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _short(exc: BaseException, limit: int = 300) -> str:
    """``Type: message``, plus the innermost cause (datasets wraps the useful error in a
    generic ``DatasetGenerationError``)."""
    root, seen = exc, {id(exc)}
    while (nxt := root.__cause__ or root.__context__) is not None and id(nxt) not in seen:
        seen.add(id(nxt))
        root = nxt
    text = _one_line(exc, limit)
    if root is not exc:
        text += f" (caused by {_one_line(root, limit)})"
    return text


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        raise DatasetError(f"file {path} is not UTF-8 text ({exc.reason} at byte {exc.start})") from exc
    except OSError as exc:
        raise DatasetError(f"cannot read file {path}: {_short(exc)}") from exc


def _validate_jsonl(path: Path, text: str | None = None) -> tuple[list[int], list[dict]]:
    """Check every non-blank line is a JSON object; returns each row's 1-based line number and
    the parsed rows."""
    text = _read_text(path) if text is None else text
    line_numbers, rows = [], []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DatasetError(
                f"file {path} line {number} is not valid JSON: {exc.msg} (column {exc.colno}); "
                f"each line of a .jsonl file must be one JSON object"
            ) from exc
        if not isinstance(row, dict):
            raise DatasetError(
                f"file {path} line {number} is a JSON {type(row).__name__}, not an object; "
                f'each line of a .jsonl file must be one JSON object like {{"question": ..., "answer": ...}}'
            )
        line_numbers.append(number)
        rows.append(row)
    if not line_numbers:
        raise DatasetError(f"file {path} is empty: it has no JSON lines")
    return line_numbers, rows


def _dataset_from_rows(rows: list[dict]) -> datasets.Dataset:
    """Rows already parsed by us as a Dataset. Columns whose values mix types (a number in one
    row, text in another) become text, since Arrow needs one type per column."""
    kinds: dict[str, set[str]] = {}
    for row in rows:
        for key, value in row.items():
            kind = kinds.setdefault(key, set())
            if value is not None:
                kind.add("num" if isinstance(value, (int, float)) and not isinstance(value, bool) else type(value).__name__)
    mixed = {k for k, v in kinds.items() if len(v) > 1}

    def text(value):
        if value is None or isinstance(value, str):
            return value
        return json.dumps(value, ensure_ascii=False) if isinstance(value, (list, dict)) else str(value)

    columns = {k: [text(r.get(k)) if k in mixed else r.get(k) for r in rows] for k in kinds}
    return _hf().Dataset.from_dict(columns)


def _load_files(builder: str, files: list[Path], split: str = "train", **kwargs) -> datasets.Dataset:
    """``load_dataset(builder, data_files={split: files}, split=split)`` with its errors turned
    into DatasetError. (A lone file is datasets' "train" split.)"""
    hf = _hf()
    shown = str(files[0]) if len(files) == 1 else f"{files[0].parent} ({len(files)} {builder} files)"
    try:
        return hf.load_dataset(builder, data_files={split: [str(f) for f in files]}, split=split, **kwargs)
    except Exception as exc:  # datasets/pyarrow raise many types; none should escape raw
        hint = {
            "parquet": "is it a valid parquet file?",
            "csv": "is it a valid CSV file with a header row?",
            "json": "do all rows give each column the same type (e.g. not a number in one row and text in another)?",
        }[builder]
        raise DatasetError(f"could not read {shown} as {builder}: {_short(exc)}; {hint}") from exc


def _load_jsonl(files: list[Path], split: str = "train") -> tuple[datasets.Dataset, list[str]]:
    """Validated JSON lines; returns the dataset and a "file line N" locator per row."""
    locators, rows = [], []
    for path in files:
        numbers, file_rows = _validate_jsonl(path)
        locators += [f"file {path} line {n}" for n in numbers]
        rows += file_rows
    try:
        return _load_files("json", files, split), locators
    except DatasetError as exc:
        # datasets' JSON reader trips on some valid files (e.g. a column of mixed types next to
        # blank lines); every line parsed above, so build the table from those rows instead.
        try:
            return _dataset_from_rows(rows), locators
        except Exception:
            raise exc from None


def _load_json(path: Path, split: str = "train") -> tuple[datasets.Dataset, list[str] | None]:
    text = _read_text(path)
    if not text.strip():
        raise DatasetError(f"file {path} is empty")
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        if exc.msg == "Extra data":  # several top-level values: JSON lines in a .json file
            return _load_jsonl([path], split)
        raise DatasetError(
            f"file {path} is not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}"
        ) from exc
    if isinstance(data, list):
        bad = next((i for i, row in enumerate(data) if not isinstance(row, dict)), None)
        if bad is not None:
            raise DatasetError(
                f"file {path}: item {bad} of the top-level list is a JSON {type(data[bad]).__name__}, "
                f"not an object; expected a list of objects like {{\"question\": ..., \"answer\": ...}}"
            )
        if not data:
            raise DatasetError(f"file {path} holds an empty list: it has no problems")
        return _load_files("json", [path], split), [f"file {path} item {i}" for i in range(len(data))]
    if isinstance(data, dict) and not any(isinstance(v, list) for v in data.values()):
        return _load_jsonl([path], split)  # a single JSON line: one row
    if not isinstance(data, dict):
        raise DatasetError(f"file {path} holds a JSON {type(data).__name__}; expected a list of objects")
    record_keys = [
        k for k, v in data.items() if isinstance(v, list) and v and all(isinstance(r, dict) for r in v)
    ]
    if len(record_keys) == 1 or "data" in record_keys:
        key = "data" if "data" in record_keys else record_keys[0]
        ds = _load_files("json", [path], split, field=key)
        return ds, [f"file {path} {key}[{i}]" for i in range(len(data[key]))]
    lengths = {len(v) for v in data.values() if isinstance(v, list)}
    if data and all(isinstance(v, list) for v in data.values()) and len(lengths) == 1:
        try:  # columnar: {"question": [...], "answer": [...]}
            return _hf().Dataset.from_dict(data), None
        except Exception as exc:
            raise DatasetError(f"could not read the columns of {path}: {_short(exc)}") from exc
    raise DatasetError(
        f"file {path} holds a JSON object with keys {sorted(data)} but no single list of records; "
        f"expected a list of objects, {{\"data\": [objects]}}, or equal-length column lists"
    )


def _load_csv(files: list[Path], split: str = "train") -> datasets.Dataset:
    hf = _hf()
    header: list[str] | None = None
    for path in files:
        text = _read_text(path)
        if not text.strip():
            raise DatasetError(f"file {path} is empty; a CSV file needs a header row and at least one row")
        try:
            first = next(csv.reader(text.splitlines()[:1] or [""]))
        except (csv.Error, StopIteration) as exc:
            raise DatasetError(f"file {path}: cannot read the CSV header row: {exc}") from exc
        dupes = sorted({c for c in first if first.count(c) > 1})
        if dupes:
            raise DatasetError(f"file {path}: the CSV header repeats column(s) {dupes}; give each column a unique name")
        if header is None:
            header = first
        elif first != header:
            raise DatasetError(f"file {path} has columns {first}, but {files[0]} has {header}; shards must agree")
    # Every cell as text: answers like "007" or "1/2" must not become numbers.
    features = hf.Features({name: hf.Value("string") for name in header})
    return _load_files("csv", files, split, features=features)


def _check_parquet(files: list[Path]) -> None:
    """Read the parquet footers: a clear error for a non-parquet file, and for zero rows
    (which datasets' parquet reader fails on with an unrelated message)."""
    import pyarrow.parquet as pq

    rows = 0
    for path in files:
        try:
            rows += pq.ParquetFile(path).metadata.num_rows
        except Exception as exc:
            raise DatasetError(f"file {path} is not a valid parquet file: {_short(exc)}") from exc
    if rows == 0:
        shown = files[0] if len(files) == 1 else f"{files[0].parent} ({len(files)} parquet files)"
        raise DatasetError(f"{shown} has no rows")


def _load_data_files(files: list[Path], split: str = "train") -> tuple[datasets.Dataset, list[str] | None]:
    """One split's data files (all of one type) as a Dataset, with row locators where known."""
    suffix = files[0].suffix.lower()
    if suffix in JSONL_SUFFIXES:
        return _load_jsonl(files, split)
    if suffix == ".json":
        if len(files) == 1:
            return _load_json(files[0], split)
        return _load_jsonl(files, split)  # shards of JSON lines
    if suffix == ".parquet":
        _check_parquet(files)
        return _load_files("parquet", files, split), None
    if suffix == ".csv":
        return _load_csv(files, split), None
    raise DatasetError(
        f"file {files[0]} has an unsupported extension {suffix!r}; use one of {', '.join(FILE_SUFFIXES)}"
    )


def _is_saved_dataset(folder: Path) -> bool:
    return (folder / "dataset_dict.json").is_file() or (folder / "state.json").is_file()


def _load_saved(folder: Path):
    try:
        return _hf().load_from_disk(str(folder))
    except Exception as exc:
        raise DatasetError(f"could not load the saved dataset in {folder}: {_short(exc)}") from exc


def _folder_splits(folder: Path) -> dict[str, list[Path]]:
    """Split name -> the data files of that split in ``folder``, found by ``datasets``' own
    rules (what ``load_dataset(folder)`` would use): ``data/{split}-00000-of-00001.*`` shards,
    folders or files named after a split (``train``/``training``; ``validation``/``valid``/
    ``dev``/``val``; ``test``/``testing``/``eval``/``evaluation``, e.g. ``train.jsonl``,
    ``test_0.csv``, ``data/train/part1.parquet``), else every data file as ``train``. Hidden
    files and ``README.md`` are ignored. Only files we can read are kept; when a split has
    several file types, the first of ``_SPLIT_FILE_EXTS`` wins (``train.jsonl`` over
    ``train.parquet``), since mixing them would read the same rows twice."""
    _hf()  # a clear error if datasets is missing
    from datasets.data_files import DataFilesDict, EmptyDatasetError, get_data_patterns

    base = folder.expanduser().resolve().as_posix()
    try:
        patterns = get_data_patterns(base)
        resolved = DataFilesDict.from_patterns(
            patterns, base_path=base, allowed_extensions=[f".{e}" for e in _SPLIT_FILE_EXTS]
        )
    except (EmptyDatasetError, FileNotFoundError):
        return {}
    except Exception as exc:  # e.g. a shard name datasets refuses as a split name
        raise DatasetError(f"could not work out the splits of folder {folder}: {_short(exc)}") from exc
    splits: dict[str, list[Path]] = {}
    for split, names in resolved.items():
        files = [Path(f) for f in names if Path(f).suffix.lower().lstrip(".") in _SPLIT_FILE_EXTS]
        if not files:
            continue
        ext = min((f.suffix.lower().lstrip(".") for f in files), key=_SPLIT_FILE_EXTS.index)
        splits[str(split)] = sorted(f for f in files if f.suffix.lower().lstrip(".") == ext)
    return splits


def _check_one_folder(folder: Path, split: str, files: list[Path]) -> None:
    """Refuse a split whose files sit in sibling folders that are not shards of one split, e.g.
    the hub layout of GSM8K (``main/train-*.parquet`` and ``socratic/train-*.parquet``): they
    are different configs, and reading both would mix them."""
    parents = sorted({f.parent for f in files})
    if len(parents) < 2:
        return
    # Files under a folder named after the split (data/train/a.csv, data/train/more/b.csv) are
    # shards of that split wherever they sit below it.
    if all(split in f.relative_to(folder).parts[:-1] for f in files):
        return
    listing = ", ".join(str(p.relative_to(folder)) or "." for p in parents)
    raise DatasetError(
        f"folder {folder} has {split!r} files in several subfolders ({listing}); "
        f"pass the subfolder you mean (e.g. {parents[-1]}) as the source"
    )


def available_splits(source: str | os.PathLike) -> list[str]:
    """The split names ``load_problems(source, split=...)`` accepts.

    A saved ``DatasetDict``: its splits; a folder of data files: the splits ``datasets`` finds
    there (see :func:`_folder_splits`); a single file or a saved ``Dataset``: ``["train"]``
    (one split, which is what ``datasets`` calls it; ``split`` is then ignored, so such a
    source has no held-out split of its own). A hub id asks the Hub (network needed).
    Raises :class:`DatasetError` when the source does not exist or holds no data.
    """
    path = Path(os.fspath(source).strip()).expanduser()
    if path.is_file():
        return ["train"]
    if path.is_dir():
        if _is_saved_dataset(path):
            loaded = _load_saved(path)
            return list(loaded) if isinstance(loaded, _hf().DatasetDict) else ["train"]
        splits = _folder_splits(path)
        if not splits:
            raise DatasetError(_no_dataset_message(path, "train"))
        return list(splits)
    text = os.fspath(source).strip()
    if isinstance(source, os.PathLike) or _looks_like_path(text):
        raise DatasetError(f"{text!r} does not exist ({path.resolve()}); check the path")
    hf = _hf()
    name, _, config = text.partition(":")
    if _hub_offline():
        raise DatasetError(f"{text!r} is not a local path and the Hugging Face Hub is offline; "
                           f"download the dataset and pass its folder")
    try:
        return list(hf.get_dataset_split_names(name, config or None))
    except Exception as exc:
        raise DatasetError(f"could not list the splits of hub dataset {text!r}: {_short(exc)}") from exc


def _no_dataset_message(folder: Path, split: str) -> str:
    return (
        f"folder {folder} holds no dataset: expected a Dataset/DatasetDict.save_to_disk folder or "
        f"data files ({', '.join('.' + e for e in _SPLIT_FILE_EXTS)}), e.g. {split}.jsonl"
    )


def _load_folder(folder: Path, split: str) -> tuple[datasets.Dataset, list[str] | None, str]:
    hf = _hf()
    if _is_saved_dataset(folder):
        loaded = _load_saved(folder)
        if isinstance(loaded, hf.DatasetDict):
            if split not in loaded:
                raise DatasetError(
                    f"saved DatasetDict {folder} has no split {split!r}; available splits: "
                    f"{', '.join(loaded)} (set split=...)"
                )
            return loaded[split], None, f"{folder} [{split}]"
        return loaded, None, str(folder)
    splits = _folder_splits(folder)
    if not splits:
        raise DatasetError(_no_dataset_message(folder, split))
    if split not in splits:
        raise DatasetError(
            f"folder {folder} has no {split!r} split; available splits: {', '.join(sorted(splits))} "
            f"(set split=...)"
        )
    files = splits[split]
    _check_one_folder(folder, split, files)
    shown = str(files[0]) if len(files) == 1 else f"{files[0].parent} [{split}, {len(files)} files]"
    ds, locators = _load_data_files(files, split)
    return ds, locators, shown


def _hub_offline() -> bool:
    """Whether the Hub must not be contacted: the env vars (read now, not at import) or datasets' flag."""
    if any(os.environ.get(v, "").upper() in _TRUE for v in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE")):
        return True
    try:
        return bool(_hf().config.HF_HUB_OFFLINE)
    except AttributeError:  # pragma: no cover
        return False


def _looks_like_path(source: str) -> bool:
    return (
        source.startswith((".", "~", "/", "\\"))
        or os.path.isabs(source)
        or "\\" in source
        or source.count("/") > 1
        or source.lower().endswith(FILE_SUFFIXES)
    )


def _load_hub(source: str, split: str) -> datasets.Dataset:
    hf = _hf()
    where = Path(source).expanduser().resolve()
    name, _, config = source.partition(":")
    offline = _hub_offline()
    if offline and not hf.config.HF_HUB_OFFLINE:
        # The env var was set after `datasets` was imported, so datasets itself would still try
        # the network; honour it here instead.
        raise DatasetError(
            f"{source!r} does not exist as a local path ({where}), and the Hugging Face Hub is "
            f"offline (HF_HUB_OFFLINE / HF_DATASETS_OFFLINE is set), so it was not looked up there; "
            f"check the path, or download the dataset and pass its folder"
        )
    try:
        ds = hf.load_dataset(name, config or None, split=split)
    except Exception as exc:
        state = (
            "the Hugging Face Hub is offline (HF_HUB_OFFLINE / HF_DATASETS_OFFLINE is set) and it is not in the local cache"
            if offline
            else "loading it from the Hugging Face Hub failed (the hub may be unreachable from this machine, "
            "or the name, config or split is wrong)"
        )
        raise DatasetError(
            f"{source!r} does not exist as a local path ({where}), and {state}: {_short(exc)}"
        ) from exc
    if not isinstance(ds, hf.Dataset):  # e.g. an IterableDataset from a streaming-only builder
        raise DatasetError(f"hub dataset {source!r} split {split!r} did not load as a Dataset (got {type(ds).__name__})")
    return ds


def _open(source: str | os.PathLike, split: str) -> tuple[datasets.Dataset, list[str] | None, str]:
    """The dataset, an optional per-row locator ("file X line N"), and a name for messages."""
    if not isinstance(source, (str, os.PathLike)) or not str(source).strip():
        raise DatasetError(f"source must be a file, folder or hub dataset name, got {source!r}")
    text = os.fspath(source).strip()
    path = Path(text).expanduser()
    if path.is_file():
        ds, locators = _load_data_files([path])
        return ds, locators, str(path)
    if path.is_dir():
        return _load_folder(path, split)
    if path.exists():
        raise DatasetError(f"{path} is neither a regular file nor a folder")
    if isinstance(source, os.PathLike) or _looks_like_path(text):
        raise DatasetError(f"{text!r} does not exist ({path.resolve()}); check the path")
    return _load_hub(text, split), None, f"hub dataset {text!r} [{split}]"


# ----------------------------------------------------------------------------- public API


def _missing_column(name: str, setting: str, role: str, columns: list[str], shown: str, guesses) -> DatasetError:
    guess = next((c for c in guesses if c in columns and c != name), None)
    hint = f"; perhaps {setting}={guess!r}" if guess else ""
    return DatasetError(
        f"{shown} has no {role} column {name!r}; available columns: {', '.join(columns) or '(none)'}. "
        f"Set {setting}= to the column that holds the {role}{hint}"
    )


def _json_scalar(value: Any) -> bool:
    return value is None or isinstance(value, (str, int, float, bool))


def load_problems(
    source: str | os.PathLike,
    *,
    prompt_column: str = "question",
    answer_column: str = "answer",
    answer_format: str = "auto",
    split: str = "train",
    limit: int | None = None,
    exclude: Iterable[str] | None = None,
) -> list[Problem]:
    """Load problems with verifiable answers; see the module docstring for accepted sources.

    Raises :class:`DatasetError` for a missing path, unreadable file (with the line number for
    JSON lines), missing column (listing those that exist), an empty dataset, or a row with an
    empty prompt or missing answer (with its row index, and file line where known).
    ``exclude``: prompts that must not be returned (compared by
    :func:`~backend.tasks.problem.prompt_key`, so whitespace differences do not matter): pass
    the held-out prompts when loading training problems. ``limit`` keeps the first ``limit``
    problems that are not excluded.
    """
    _check_answer_format(answer_format)
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        raise DatasetError(f"limit must be a positive integer or None, got {limit!r}")

    ds, locators, shown = _open(source, split)
    columns = list(ds.column_names)
    if prompt_column not in columns:
        raise _missing_column(prompt_column, "prompt_column", "prompt", columns, shown, _PROMPT_GUESSES)
    if answer_column not in columns:
        raise _missing_column(answer_column, "answer_column", "answer", columns, shown, _ANSWER_GUESSES)
    if len(ds) == 0:
        raise DatasetError(f"{shown} has no rows")
    if isinstance(exclude, str):
        raise DatasetError("exclude must be a collection of prompts, not one string")
    excluded = {prompt_key(p) for p in exclude} if exclude else set()
    if limit is not None and limit < len(ds) and not excluded:
        ds = ds.select(range(limit))  # without exclusions the first `limit` rows are the answer

    rows = ds.to_dict()  # column -> list; fast, and decodes JSON-typed columns
    extra = [c for c in columns if c not in (prompt_column, answer_column, "prompt", "answer")]
    problems = []
    for i in range(len(ds)):
        if limit is not None and len(problems) >= limit:
            break
        where = f"{locators[i]} (row {i})" if locators and i < len(locators) else f"{shown} row {i}"
        prompt = rows[prompt_column][i]
        if not isinstance(prompt, str):
            if prompt is None:
                raise DatasetError(f"{where}: the prompt ({prompt_column!r}) is missing")
            raise DatasetError(
                f"{where}: the prompt ({prompt_column!r}) is a {type(prompt).__name__}, expected text"
            )
        if not prompt.strip():
            raise DatasetError(f"{where}: the prompt ({prompt_column!r}) is empty")
        if excluded and prompt_key(prompt) in excluded:
            continue
        raw = rows[answer_column][i]
        if raw is None or (isinstance(raw, float) and raw != raw):  # None or NaN
            raise DatasetError(f"{where}: the answer ({answer_column!r}) is missing")
        if isinstance(raw, (list, dict)):
            raise DatasetError(
                f"{where}: the answer ({answer_column!r}) is a {type(raw).__name__}, expected text or a number"
            )
        try:
            answer, solution = normalize_answer(raw, answer_format)
        except DatasetError as exc:
            raise DatasetError(f"{where}: {exc}") from None
        if not answer:
            raise DatasetError(f"{where}: the answer ({answer_column!r}) is empty after extraction from {raw!r}")
        meta = {c: rows[c][i] for c in extra if _json_scalar(rows[c][i])}
        meta["answer_format"] = (detect_answer_format(raw if isinstance(raw, str) else str(raw))
                                 if answer_format == "auto" else answer_format)
        if solution is not None:
            meta["solution"] = solution
        problems.append(Problem(prompt=prompt, answer=answer, meta=meta))
    if not problems:  # only possible when everything was excluded
        raise DatasetError(f"{shown}: every problem is in exclude (the held-out prompts); nothing is left to load")
    return problems


def save_problems_jsonl(problems: Iterable[Problem], path: str | os.PathLike) -> Path:
    """Write ``{"prompt", "answer", **meta}`` per line (UTF-8); returns the path.
    ``load_problems(path, prompt_column="prompt")`` reads it back."""
    path = Path(path).expanduser()
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = []
    for i, p in enumerate(problems):
        record = {"prompt": p.prompt, "answer": p.answer}
        record.update({k: v for k, v in p.meta.items() if k not in record})
        try:
            lines.append(json.dumps(record, ensure_ascii=False))
        except (TypeError, ValueError) as exc:
            raise DatasetError(f"problem {i}: its meta is not JSON-serialisable ({exc})") from exc
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    tmp.replace(path)
    return path


def problems_to_hf_dataset(problems: Iterable[Problem]) -> datasets.Dataset:
    """A ``datasets.Dataset`` with text columns ``prompt`` and ``answer`` (what TRL's GRPO
    trainer expects: it feeds ``prompt`` to the model and passes ``answer`` to reward
    functions as a keyword argument)."""
    hf = _hf()
    problems = list(problems)
    features = hf.Features({"prompt": hf.Value("string"), "answer": hf.Value("string")})
    return hf.Dataset.from_dict(
        {"prompt": [p.prompt for p in problems], "answer": [p.answer for p in problems]},
        features=features,
    )
