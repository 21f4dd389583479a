"""Shared fixtures: every test gets its own data home (database, runs, model cache)."""
from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

SHARED_GSM8K = ROOT.parent / "shared" / "data" / "gsm8k"
# Our own GSM8K-format problems (tests/data/gsm8k_sample/README.md), for machines without the copy.
GSM8K_SAMPLE = ROOT / "tests" / "data" / "gsm8k_sample"


def choose_gsm8k_dir(shared: Path, ci: str | None) -> Path:
    """The full GSM8K copy ``shared`` ({train,test}.jsonl) when present; when it is missing and
    ``ci`` (the CI env var) is set, fail the test, so the real-data path is never skipped quietly
    in CI; elsewhere the small sample of problems we wrote ourselves stands in."""
    if all((shared / f"{split}.jsonl").is_file() for split in ("train", "test")):
        return shared
    if (ci or "").strip().lower() not in ("", "0", "false", "no"):
        pytest.fail(f"CI is set but the GSM8K copy is missing: expected {shared}/train.jsonl "
                    f"and test.jsonl (put GSM8K there, or unset CI to test on {GSM8K_SAMPLE})")
    return GSM8K_SAMPLE


@pytest.fixture(scope="session")
def gsm8k_dir() -> Path:
    """A GSM8K folder for tests of the real-data path (see :func:`choose_gsm8k_dir`)."""
    return choose_gsm8k_dir(SHARED_GSM8K, os.environ.get("CI"))


@pytest.fixture
def home(tmp_path, monkeypatch):
    """A fresh R1WB_HOME; subprocesses started by the code under test inherit it."""
    monkeypatch.setenv("R1WB_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("R1WB_DB_URL", raising=False)
    yield tmp_path / "home"
    _kill_background_processes(tmp_path / "home")


def _kill_background_processes(home: Path) -> None:
    """Runners and workers a test started outlive it (they are detached on purpose); a test
    that failed half-way must not leave a paused worker running for the rest of the suite."""
    import psutil

    marker = str(home)
    for proc in psutil.process_iter(["cmdline"]):
        try:
            cmdline = " ".join(proc.info["cmdline"] or [])
            if "-m backend _" in cmdline and marker in cmdline:
                proc.kill()
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            pass


@pytest.fixture
def db_url(home) -> str:
    return f"sqlite:///{home / 'workbench.db'}"


def wait_for(predicate, timeout: float, interval: float = 0.2, what: str = "condition"):
    """Poll ``predicate`` until it returns something truthy; fail after ``timeout`` s."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> str:
    """An untrained tiny model saved as an HF folder (no training: seconds)."""
    from backend.models import TinyModelSpec, build_tiny_model, build_tokenizer

    out = tmp_path_factory.mktemp("tiny_model")
    tok = build_tokenizer()
    model = build_tiny_model(TinyModelSpec(hidden_size=32, num_layers=1, num_heads=1,
                                           num_kv_heads=1, intermediate_size=64), tok)
    model.save_pretrained(out)
    tok.save_pretrained(out)
    return str(out)


def pytest_collection_modifyitems(config, items):
    # Keep slow tests last so a quick failure shows up first.
    items.sort(key=lambda item: 1 if item.get_closest_marker("slow") else 0)
