"""Loading real problem sets: every supported source kind, GSM8K, and clear errors."""

from __future__ import annotations

import json
import time
from pathlib import Path

import datasets
import pandas as pd
import pytest

from backend.tasks.loaders import (
    DatasetError,
    available_splits,
    load_problems,
    normalize_answer,
    problems_to_hf_dataset,
    save_problems_jsonl,
)
from backend.tasks.problem import Problem, without_prompts
from tests.conftest import GSM8K_SAMPLE, choose_gsm8k_dir

ROWS = [
    {"question": "What is 2+3?", "answer": "2+3=5\n#### 5", "level": 1},
    {"question": "Half of one?", "answer": "It is \\boxed{\\frac{1}{2}}.", "level": 2},
    {"question": "How many grams in 1 kg?", "answer": "1,000 grams\n#### 1,000", "level": 3},
]
EXPECTED = [("What is 2+3?", "5"), ("Half of one?", "\\frac{1}{2}"), ("How many grams in 1 kg?", "1000")]


@pytest.fixture(autouse=True)
def _private_hf_cache(tmp_path, monkeypatch):
    """Keep datasets' arrow cache out of the user's ~/.cache."""
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "hf_cache")


def _write_jsonl(path: Path, rows) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


# Each writer puts ROWS under tmp_path and returns (source, extra load_problems kwargs).
def _jsonl(d):
    return _write_jsonl(d / "p.jsonl", ROWS), {}


def _jsonl_blank_lines(d):
    text = "\n" + "\n\n".join(json.dumps(r) for r in ROWS) + "\n\n"
    (d / "p.jsonl").write_text(text, encoding="utf-8")
    return d / "p.jsonl", {}


def _json_list(d):
    (d / "p.json").write_text(json.dumps(ROWS, indent=2), encoding="utf-8")
    return d / "p.json", {}


def _json_data_field(d):
    (d / "p.json").write_text(json.dumps({"version": "1.0", "data": ROWS}), encoding="utf-8")
    return d / "p.json", {}


def _json_columns(d):
    columns = {k: [r[k] for r in ROWS] for k in ROWS[0]}
    (d / "p.json").write_text(json.dumps(columns), encoding="utf-8")
    return d / "p.json", {}


def _parquet(d):
    pd.DataFrame(ROWS).to_parquet(d / "p.parquet", index=False)
    return d / "p.parquet", {}


def _csv(d):
    pd.DataFrame(ROWS).to_csv(d / "p.csv", index=False)
    return d / "p.csv", {}


def _saved_dataset(d):
    datasets.Dataset.from_list(ROWS).save_to_disk(str(d / "saved"))
    return d / "saved", {}


def _saved_dataset_dict(d):
    other = [{"question": "unused", "answer": "0", "level": 0}]
    datasets.DatasetDict(
        {"train": datasets.Dataset.from_list(other), "test": datasets.Dataset.from_list(ROWS)}
    ).save_to_disk(str(d / "saved"))
    return d / "saved", {"split": "test"}


def _folder_of_splits(d):
    folder = d / "ds"
    folder.mkdir()
    _write_jsonl(folder / "train.jsonl", [{"question": "unused", "answer": "0"}])
    _write_jsonl(folder / "test.jsonl", ROWS)
    return folder, {"split": "test"}


def _hub_style_folder(d):
    (d / "repo" / "data").mkdir(parents=True)
    pd.DataFrame(ROWS).to_parquet(d / "repo" / "data" / "train-00000-of-00001.parquet", index=False)
    return d / "repo", {}


def _renamed_columns(d):
    rows = [{"problem": r["question"], "solution": r["answer"], "level": r["level"]} for r in ROWS]
    return _write_jsonl(d / "p.jsonl", rows), {"prompt_column": "problem", "answer_column": "solution"}


WRITERS = [
    _jsonl, _jsonl_blank_lines, _json_list, _json_data_field, _json_columns, _parquet, _csv,
    _saved_dataset, _saved_dataset_dict, _folder_of_splits, _hub_style_folder, _renamed_columns,
]


@pytest.mark.parametrize("writer", WRITERS, ids=lambda w: w.__name__.strip("_"))
def test_every_source_kind_gives_the_same_problems(tmp_path, writer):
    source, kwargs = writer(tmp_path)
    problems = load_problems(str(source), **kwargs)
    assert [(p.prompt, p.answer) for p in problems] == EXPECTED
    assert all(isinstance(p, Problem) for p in problems)
    # the worked solution is kept; other plain columns ride along in meta
    assert problems[0].meta["solution"] == ROWS[0]["answer"]
    assert str(problems[2].meta["level"]) == "3"


def test_accepts_path_objects_and_limit(tmp_path):
    source, _ = _jsonl(tmp_path)
    problems = load_problems(source, limit=2)
    assert [p.answer for p in problems] == ["5", "\\frac{1}{2}"]


def test_json_file_with_one_object_per_line(tmp_path):
    (tmp_path / "one.json").write_text(json.dumps(ROWS[0]), encoding="utf-8")
    assert [p.answer for p in load_problems(tmp_path / "one.json")] == ["5"]
    (tmp_path / "many.json").write_text("\n".join(json.dumps(r) for r in ROWS), encoding="utf-8")
    assert [(p.prompt, p.answer) for p in load_problems(tmp_path / "many.json")] == EXPECTED


def test_csv_cells_stay_text(tmp_path):
    (tmp_path / "p.csv").write_text('question,answer,note\n"Pad it, please",007,\nq2,1/2,x\n', encoding="utf-8")
    problems = load_problems(tmp_path / "p.csv")
    assert [(p.prompt, p.answer) for p in problems] == [("Pad it, please", "007"), ("q2", "1/2")]


def test_numeric_and_mixed_type_answers_become_text(tmp_path):
    # a number in one row and text in another, with a blank line between (trips datasets' reader)
    text = '{"question": "a", "answer": 5}\n\n{"question": "b", "answer": "#### 6"}\n'
    (tmp_path / "p.jsonl").write_text(text, encoding="utf-8")
    assert [p.answer for p in load_problems(tmp_path / "p.jsonl")] == ["5", "6"]
    pd.DataFrame({"question": ["a", "b"], "answer": [5, 12]}).to_parquet(tmp_path / "p.parquet")
    assert [p.answer for p in load_problems(tmp_path / "p.parquet")] == ["5", "12"]


@pytest.mark.parametrize(
    "raw, fmt, answer, solution",
    [
        ("Work.\n#### 1,234 ", "auto", "1234", "Work.\n#### 1,234 "),
        ("a #### 1 #### 2", "gsm8k", "2", "a #### 1 #### 2"),
        ("so \\boxed{1} then \\boxed{\\frac{a}{b}}", "auto", "\\frac{a}{b}", "so \\boxed{1} then \\boxed{\\frac{a}{b}}"),
        ("\\boxed{\\{1,2\\}}", "boxed", "\\{1,2\\}", "\\boxed{\\{1,2\\}}"),
        ("\\boxed{7} and \\boxed{unclosed", "boxed", "7", "\\boxed{7} and \\boxed{unclosed"),
        ("  42 ", "auto", "42", None),
        ("1,000", "plain", "1,000", None),
        ("x #### 5", "plain", "x #### 5", None),
        (17, "auto", "17", None),
    ],
)
def test_answer_formats(raw, fmt, answer, solution):
    assert normalize_answer(raw, fmt) == (answer, solution)


def test_gsm8k_test_split(gsm8k_dir):
    lines = [line for line in (gsm8k_dir / "test.jsonl").read_text(encoding="utf-8").splitlines() if line.strip()]
    problems = load_problems(gsm8k_dir, split="test")
    assert len(problems) == len(lines)
    first = json.loads(lines[0])
    assert problems[0].prompt == first["question"]
    assert problems[0].answer == first["answer"].split("####")[-1].strip().replace(",", "")
    assert problems[0].meta["solution"] == first["answer"]
    assert all(p.answer and "####" not in p.answer and "," not in p.answer for p in problems)
    # the train split of the same folder, and the file itself
    assert len(load_problems(gsm8k_dir, split="train", limit=4)) == 4
    assert load_problems(gsm8k_dir / "test.jsonl", limit=1)[0] == problems[0]


def test_gsm8k_sample_is_gsm8k_shaped():
    # the stand-in must read like the real thing: both splits, worked solutions kept, bare answers
    train = load_problems(GSM8K_SAMPLE, split="train")
    test = load_problems(GSM8K_SAMPLE, split="test")
    assert (len(train), len(test)) == (20, 11)
    assert all("####" in p.meta["solution"] and p.answer.replace(".", "").isdigit() for p in train + test)
    assert "1350" in [p.answer for p in test]  # "#### 1,350": the thousands comma is dropped


@pytest.mark.parametrize(
    "has_copy, ci, expected",
    [
        (True, None, "copy"),  # the full copy is always preferred
        (True, "true", "copy"),  # ... also under CI
        (False, None, "sample"),  # no copy, not CI: our own sample stands in
        (False, "false", "sample"),  # CI=false is not CI
        (False, "true", "fail"),  # no copy under CI: the test fails, never skips quietly
        (False, "1", "fail"),
    ],
)
def test_gsm8k_dir_choice(tmp_path, has_copy, ci, expected):
    shared = tmp_path / "gsm8k"
    if has_copy:
        shared.mkdir()
        for split in ("train", "test"):
            _write_jsonl(shared / f"{split}.jsonl", ROWS)
    if expected == "fail":
        with pytest.raises(pytest.fail.Exception, match="CI is set but the GSM8K copy is missing"):
            choose_gsm8k_dir(shared, ci)
    else:
        assert choose_gsm8k_dir(shared, ci) == {"copy": shared, "sample": GSM8K_SAMPLE}[expected]


def test_gsm8k_test_prompts_never_in_train_as_loaded(gsm8k_dir):
    test_prompts = [p.prompt for p in load_problems(gsm8k_dir, split="test")]
    train = load_problems(gsm8k_dir, split="train", exclude=test_prompts)
    assert not {p.prompt for p in train} & set(test_prompts)
    if gsm8k_dir == GSM8K_SAMPLE:  # our own sample has no overlap to begin with: nothing dropped
        assert len(train) == 20


def test_exclude_keeps_heldout_prompts_out(tmp_path):
    folder = tmp_path / "ds"
    folder.mkdir()
    test_rows = [{"question": "What is 2+3?", "answer": "#### 5"}, {"question": "What is 4+4?", "answer": "#### 8"}]
    train_rows = [
        {"question": "What is 1+1?", "answer": "#### 2"},
        {"question": "What  is 2+3?\n", "answer": "#### 5"},  # a held-out prompt, re-spaced
        {"question": "What is 3+3?", "answer": "#### 6"},
        {"question": "What is 4+4?", "answer": "#### 8"},  # a held-out prompt, verbatim
        {"question": "What is 5+5?", "answer": "#### 10"},
    ]
    _write_jsonl(folder / "train.jsonl", train_rows)
    _write_jsonl(folder / "test.jsonl", test_rows)
    heldout = [p.prompt for p in load_problems(folder, split="test")]
    assert len(load_problems(folder, split="train")) == 5  # without exclude both leak in
    kept = load_problems(folder, split="train", exclude=heldout)
    assert [p.answer for p in kept] == ["2", "6", "10"]
    # limit counts the problems kept, not the rows read
    assert [p.answer for p in load_problems(folder, split="train", exclude=heldout, limit=2)] == ["2", "6"]
    # the same rule for problems from anywhere (e.g. the synthetic task)
    assert [p.answer for p in without_prompts(load_problems(folder, split="train"), heldout)] == ["2", "6", "10"]
    with pytest.raises(DatasetError, match="every problem is in exclude"):
        load_problems(folder, split="test", exclude=heldout)
    with pytest.raises(DatasetError, match="not one string"):
        load_problems(folder, split="train", exclude="What is 2+3?")


def _splits_folder(d):
    (d / "ds").mkdir()
    for name in ("train.jsonl", "test.jsonl", "README.md"):
        _write_jsonl(d / "ds" / name, ROWS)
    return d / "ds"


def _sharded_folder(d):
    (d / "repo" / "data").mkdir(parents=True)
    for name in ("train-00000-of-00002", "train-00001-of-00002", "test-00000-of-00001"):
        pd.DataFrame(ROWS).to_parquet(d / "repo" / "data" / f"{name}.parquet", index=False)
    return d / "repo"


def _dev_named_folder(d):
    (d / "ds").mkdir()
    _write_jsonl(d / "ds" / "train.jsonl", ROWS)
    _write_jsonl(d / "ds" / "dev.jsonl", ROWS)
    return d / "ds"


def _split_subfolders(d):
    for split in ("train", "test"):
        (d / "ds" / "data" / split).mkdir(parents=True)
        _write_jsonl(d / "ds" / "data" / split / "part-a.jsonl", ROWS[:2])
        _write_jsonl(d / "ds" / "data" / split / "part-b.jsonl", ROWS[2:])
    return d / "ds"


def _unnamed_file_in_folder(d):
    (d / "ds").mkdir()
    _write_jsonl(d / "ds" / "problems.jsonl", ROWS)
    return d / "ds"


def _saved_dict(d):
    datasets.DatasetDict({"train": datasets.Dataset.from_list(ROWS), "test": datasets.Dataset.from_list(ROWS)}
                         ).save_to_disk(str(d / "saved"))
    return d / "saved"


def _single_file(d):
    return _write_jsonl(d / "p.jsonl", ROWS)


SPLITS = [
    (_splits_folder, ["train", "test"]),  # {train,test}.jsonl; README.md is not data
    (_sharded_folder, ["train", "test"]),  # hub shards data/{split}-0000N-of-0000M.parquet
    (_dev_named_folder, ["train", "validation"]),  # datasets' keywords: dev.jsonl is validation
    (_split_subfolders, ["train", "test"]),  # data/{split}/*.jsonl
    (_unnamed_file_in_folder, ["train"]),  # no split names: the whole folder is train
    (_saved_dict, ["train", "test"]),  # DatasetDict.save_to_disk
    (_single_file, ["train"]),  # one file is one split (datasets calls it train)
]


@pytest.mark.parametrize("writer, splits", SPLITS, ids=[w.__name__.strip("_") for w, _ in SPLITS])
def test_available_splits_and_every_split_loads(tmp_path, writer, splits):
    source = writer(tmp_path)
    assert available_splits(source) == splits
    for split in splits:  # every shard of the split is read, once
        assert [(p.prompt, p.answer) for p in load_problems(source, split=split)][:3] == EXPECTED


def test_sharded_split_reads_every_shard(tmp_path):
    assert len(load_problems(_sharded_folder(tmp_path), split="train")) == 2 * len(ROWS)


def test_available_splits_of_a_missing_path(tmp_path):
    with pytest.raises(DatasetError, match="does not exist"):
        available_splits(tmp_path / "nope")


def test_config_subfolders_are_not_mixed(tmp_path):
    # the hub layout of GSM8K: two configs, each with its own train split
    for config in ("main", "socratic"):
        (tmp_path / "gsm8k" / config).mkdir(parents=True)
        pd.DataFrame(ROWS).to_parquet(tmp_path / "gsm8k" / config / "train-00000-of-00001.parquet")
    with pytest.raises(DatasetError, match="several subfolders .*main.*socratic"):
        load_problems(tmp_path / "gsm8k")
    assert len(load_problems(tmp_path / "gsm8k" / "main")) == len(ROWS)


def test_save_jsonl_roundtrip_and_hf_dataset(tmp_path):
    problems = [Problem("1+1=", "2", {"a": 1, "b": 1}), Problem("Ünïcode?", "\\frac{1}{2}", {"solution": "x #### y"})]
    path = save_problems_jsonl(problems, tmp_path / "out" / "p.jsonl")
    first = json.loads(path.read_text(encoding="utf-8").splitlines()[0])
    assert first == {"prompt": "1+1=", "answer": "2", "a": 1, "b": 1}
    back = load_problems(path, prompt_column="prompt")
    assert [(p.prompt, p.answer) for p in back] == [(p.prompt, p.answer) for p in problems]
    assert back[1].meta["solution"] == "x #### y"

    ds = problems_to_hf_dataset(problems)
    assert ds.column_names == ["prompt", "answer"]
    assert ds[1] == {"prompt": "Ünïcode?", "answer": "\\frac{1}{2}"}
    assert problems_to_hf_dataset([]).column_names == ["prompt", "answer"]


def test_save_rejects_unserialisable_meta(tmp_path):
    with pytest.raises(DatasetError, match="problem 0"):
        save_problems_jsonl([Problem("q", "a", {"x": object()})], tmp_path / "p.jsonl")


# ----------------------------------------------------------------------------- bad input


def _bad_jsonl_line(d):
    (d / "p.jsonl").write_text('{"question": "a", "answer": "1"}\n\n{"question": "b", answer: 2}\n', encoding="utf-8")
    return d / "p.jsonl", {}


def _non_object_line(d):
    (d / "p.jsonl").write_text('{"question": "a", "answer": "1"}\n[1, 2]\n', encoding="utf-8")
    return d / "p.jsonl", {}


def _empty_jsonl(d):
    (d / "p.jsonl").write_text("", encoding="utf-8")
    return d / "p.jsonl", {}


def _blank_jsonl(d):
    (d / "p.jsonl").write_text("\n  \n", encoding="utf-8")
    return d / "p.jsonl", {}


def _empty_csv(d):
    (d / "p.csv").write_text("", encoding="utf-8")
    return d / "p.csv", {}


def _empty_json_list(d):
    (d / "p.json").write_text("[]", encoding="utf-8")
    return d / "p.json", {}


def _zero_row_parquet(d):
    pd.DataFrame({"question": pd.Series([], dtype=str), "answer": pd.Series([], dtype=str)}).to_parquet(d / "p.parquet")
    return d / "p.parquet", {}


def _garbage_parquet(d):
    (d / "p.parquet").write_bytes(b"this is not parquet at all")
    return d / "p.parquet", {}


def _not_utf8(d):
    (d / "p.jsonl").write_bytes(b'{"question": "\xff\xfe", "answer": "1"}\n')
    return d / "p.jsonl", {}


def _missing_prompt_column(d):
    return _write_jsonl(d / "p.jsonl", [{"problem": "a", "answer": "1"}]), {}


def _missing_answer_column(d):
    return _write_jsonl(d / "p.jsonl", [{"question": "a", "solution": "1"}]), {}


def _empty_prompt(d):
    return _write_jsonl(d / "p.jsonl", [{"question": "a", "answer": "1"}, {"question": "  ", "answer": "2"}]), {}


def _null_answer(d):
    # the blank line must not shift the reported line number
    rows = [{"question": "a", "answer": "1"}, {"question": "b", "answer": "2"}, {"question": "c", "answer": None}]
    (d / "p.jsonl").write_text("\n".join(json.dumps(r) for r in rows[:2]) + "\n\n" + json.dumps(rows[2]) + "\n")
    return d / "p.jsonl", {}


def _no_hashes(d):
    return _write_jsonl(d / "p.jsonl", [{"question": "a", "answer": "#### 1"}, {"question": "b", "answer": "2"}]), {
        "answer_format": "gsm8k"
    }


def _no_box(d):
    return _write_jsonl(d / "p.jsonl", [{"question": "a", "answer": "2"}]), {"answer_format": "boxed"}


def _empty_after_extraction(d):
    return _write_jsonl(d / "p.jsonl", [{"question": "a", "answer": "work ####  "}]), {}


def _missing_split_in_dataset_dict(d):
    datasets.DatasetDict({"train": datasets.Dataset.from_list(ROWS)}).save_to_disk(str(d / "saved"))
    return d / "saved", {"split": "validation"}


def _missing_split_in_folder(d):
    (d / "ds").mkdir()
    _write_jsonl(d / "ds" / "train.jsonl", ROWS)
    _write_jsonl(d / "ds" / "test.jsonl", ROWS)
    return d / "ds", {"split": "validation"}


def _folder_without_data(d):
    (d / "ds").mkdir()
    (d / "ds" / "README.md").write_text("nothing here", encoding="utf-8")
    return d / "ds", {}


def _unsupported_extension(d):
    (d / "p.txt").write_text("What is 1+1? 2\n", encoding="utf-8")
    return d / "p.txt", {}


def _missing_file(d):
    return d / "nope.jsonl", {}


def _missing_folder(d):
    return d / "no" / "such" / "folder", {}


def _unknown_answer_format(d):
    return _write_jsonl(d / "p.jsonl", ROWS), {"answer_format": "latex"}


def _zero_limit(d):
    return _write_jsonl(d / "p.jsonl", ROWS), {"limit": 0}


BAD = [
    (_bad_jsonl_line, ["line 3", "not valid JSON"]),
    (_non_object_line, ["line 2", "not an object"]),
    (_empty_jsonl, ["empty"]),
    (_blank_jsonl, ["empty"]),
    (_empty_csv, ["empty"]),
    (_empty_json_list, ["empty"]),
    (_zero_row_parquet, ["no rows"]),
    (_garbage_parquet, ["parquet"]),
    (_not_utf8, ["not UTF-8"]),
    (_missing_prompt_column, ["'question'", "available columns: problem, answer", "prompt_column=", "prompt_column='problem'"]),
    (_missing_answer_column, ["'answer'", "available columns: question, solution", "answer_column="]),
    (_empty_prompt, ["row 1", "line 2", "prompt", "empty"]),
    (_null_answer, ["row 2", "line 4", "answer", "missing"]),
    (_no_hashes, ["row 1", "####", "answer_format="]),
    (_no_box, ["row 0", "boxed"]),
    (_empty_after_extraction, ["row 0", "empty"]),
    (_missing_split_in_dataset_dict, ["'validation'", "available splits: train", "split="]),
    (_missing_split_in_folder, ["'validation'", "available splits: test, train", "split="]),
    (_folder_without_data, ["holds no dataset"]),
    (_unsupported_extension, ["'.txt'", ".jsonl"]),
    (_missing_file, ["nope.jsonl", "does not exist"]),
    (_missing_folder, ["does not exist"]),
    (_unknown_answer_format, ["answer_format", "'latex'"]),
    (_zero_limit, ["limit"]),
]


@pytest.mark.parametrize("writer, fragments", BAD, ids=[w.__name__.strip("_") for w, _ in BAD])
def test_bad_input_raises_a_clear_dataset_error(tmp_path, writer, fragments):
    source, kwargs = writer(tmp_path)
    with pytest.raises(DatasetError) as info:
        load_problems(str(source), **kwargs)
    message = str(info.value)
    for fragment in fragments:
        assert fragment in message, f"{fragment!r} not in {message!r}"
    assert isinstance(info.value, ValueError)


def test_unknown_hub_name_offline_fails_fast(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.chdir(tmp_path)
    start = time.monotonic()
    with pytest.raises(DatasetError) as info:
        load_problems("no-such-owner/no-such-dataset-r1wb")
    assert time.monotonic() - start < 5
    message = str(info.value)
    assert "does not exist" in message and "offline" in message


def test_unknown_hub_name_with_datasets_offline_flag(tmp_path, monkeypatch):
    """When datasets itself was imported offline, the hub lookup runs and its error is wrapped."""
    import huggingface_hub.constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub_cache"))
    monkeypatch.chdir(tmp_path)
    start = time.monotonic()
    with pytest.raises(DatasetError) as info:
        load_problems("no-such-owner/no-such-dataset-r1wb:main", split="test")
    assert time.monotonic() - start < 10
    message = str(info.value)
    assert "does not exist" in message and "offline" in message and "no-such-owner" in message
