"""bench/gpu_check.sh, the one-command GPU check (docs/benchmarks.md): no machine this project is
developed on has a GPU, so its code is checked here with ``--cpu`` (the same lines on a
2-layer model and a small workload): every step runs and reports its figures."""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.test_generation_backends import _need_vllm

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "bench" / "gpu_check.sh"


@pytest.mark.skipif(shutil.which("nvidia-smi") is not None, reason="this machine has a GPU")
def test_without_a_gpu_it_says_so_and_names_the_cpu_check():
    proc = subprocess.run([str(SCRIPT)], capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert proc.returncode == 2
    assert "needs an NVIDIA GPU (or --cpu to check the script)" in proc.stderr


@pytest.mark.slow
def test_cpu_check_runs_every_step_and_reports_its_figures():
    _need_vllm()
    proc = subprocess.run([str(SCRIPT), "--cpu"], capture_output=True, text=True, timeout=600,
                          cwd=ROOT, env={**os.environ, "PYTHON": str(ROOT / ".venv/bin/python")})
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    report = json.loads(proc.stdout[proc.stdout.rindex("\n{"):])
    assert report["params"] > 0 and report["vllm_start_s"] > 0
    assert report["gen_hf_tok_s"] > 0 and report["gen_vllm_tok_s"] > 0
    for name in ("grpo_hf", "grpo_vllm colocate"):
        assert report[name]["median_step_s"] > 0
        assert report[name]["completion_tokens_per_s"] > 0
    assert re.search(r"GRPO \(vllm colocate\): median step [\d.]+ s", proc.stdout)
