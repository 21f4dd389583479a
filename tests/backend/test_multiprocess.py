"""Many processes, one stage (launcher=accelerate): the launch command, the settings refused
before anything starts, and, on 2 CPU processes over gloo, each group written once and whole
with TRL's advantages, steering applied by both ranks at the same step, kill -9 of one rank."""
from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from backend import launch
from backend.stages import common
from backend.api import Workbench
from backend.runner import start_pipeline
from backend.stages.common import ConfigError
from backend.stages.grpo import GRPOStageConfig
from storage import StageSpec, Store
from tests.conftest import wait_for

HERE = Path(__file__).resolve().parent


def _grpo(**values) -> GRPOStageConfig:
    return GRPOStageConfig.from_dict(values)


# --------------------------------------------------------------------------- the command
def test_one_process_is_the_plain_worker():
    cmd = launch.launch_command(_grpo(), ["_worker", "--stage", "7"])
    assert cmd == [sys.executable, "-m", "backend", "_worker", "--stage", "7"]


def test_ddp_command_uses_trls_config_and_the_stage_counts():
    cmd = launch.launch_command(_grpo(launcher="accelerate", num_processes=2),
                                ["_worker", "--stage", "7"], port=29611)
    line = launch.show_command(cmd)
    assert Path(cmd[0]).name == "accelerate" and cmd[1] == "launch"
    config = Path(cmd[cmd.index("--config_file") + 1])
    assert config.name == "multi_gpu.yaml" and config.parent.name == "accelerate_configs"
    assert config.is_file()
    assert "--num_processes 2 --num_machines 1 --machine_rank 0 --main_process_port 29611" in line
    assert "--mixed_precision no" in line  # fp32, as the one-process stage computes
    assert line.endswith("-m backend _worker --stage 7")


@pytest.mark.parametrize("name, yaml", [("zero2", "zero2.yaml"), ("zero3", "zero3.yaml"),
                                        ("fsdp", "fsdp2.yaml")])
def test_gpu_configs_name_trls_files(name, yaml):
    # Built from the stored config (a GPU machine validated it; this one has no GPU).
    cmd = launch.launch_command({"launcher": "accelerate", "num_processes": 4,
                                 "accelerate_config": name}, ["_worker", "--stage", "1"])
    assert Path(cmd[cmd.index("--config_file") + 1]).name == yaml
    assert cmd[cmd.index("--num_processes") + 1] == "4"


def test_two_machines_name_machine_zero_and_each_machine_rank():
    config = {"launcher": "accelerate", "num_processes": 4, "num_machines": 2,
              "main_process_ip": "10.0.0.5", "main_process_port": 29555}
    first = launch.show_command(launch.launch_command(config, ["_worker", "--stage", "1"]))
    second = launch.show_command(launch.launch_command(config, ["_worker", "--stage", "1"],
                                                       machine_rank=1))
    assert ("--num_processes 4 --num_machines 2 --machine_rank 0 --main_process_port 29555 "
            "--main_process_ip 10.0.0.5") in first
    assert first.replace("--machine_rank 0", "--machine_rank 1") == second


def test_own_yaml_keeps_its_mixed_precision(tmp_path):
    own = tmp_path / "mine.yaml"
    own.write_text("distributed_type: MULTI_GPU\nmixed_precision: bf16\n")
    cmd = launch.launch_command({"launcher": "accelerate", "num_processes": 2,
                                 "accelerate_config": str(own)}, ["_worker"])
    assert cmd[cmd.index("--config_file") + 1] == str(own.resolve())
    assert "--mixed_precision" not in cmd


# --------------------------------------------------------------------------- refused
@pytest.mark.parametrize("values, message", [
    ({"num_processes": 0}, "num_processes must be at least 1"),
    ({"num_processes": 2}, "need launcher=accelerate"),
    ({"launcher": "slurm"}, "launcher must be local or accelerate"),
    ({"launcher": "accelerate", "num_processes": 2, "batch_size": 9, "num_generations": 3},
     "must be divisible by num_processes"),
    ({"launcher": "accelerate", "num_processes": 2, "num_machines": 2},
     "needs main_process_ip"),
    ({"launcher": "accelerate", "num_processes": 3, "num_machines": 2, "batch_size": 12,
      "num_generations": 4, "main_process_ip": "h"}, "divisible by num_machines"),
    ({"launcher": "accelerate", "num_processes": 2, "accelerate_config": "/no/such.yaml"},
     "does not exist"),
    ({"launcher": "accelerate", "num_processes": 2, "accelerate_config": "zero9"},
     "must be ddp, zero2, zero3, fsdp or a path"),
])
def test_bad_launch_settings_are_refused(values, message):
    with pytest.raises(ConfigError, match=message):
        _grpo(**values)


@pytest.mark.parametrize("name", ["zero2", "zero3", "fsdp"])
def test_gpu_only_configs_refused_on_a_cpu_machine(name, monkeypatch):
    monkeypatch.setattr(common, "gpu_count", lambda: 0)  # what validation asks
    with pytest.raises(ConfigError, match="has none; on CPU use accelerate_config=ddp"):
        _grpo(launcher="accelerate", num_processes=2, accelerate_config=name)


def test_zero_needs_deepspeed(monkeypatch):
    import importlib.util

    monkeypatch.setattr(common, "gpu_count", lambda: 2)  # what validation asks
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda n, *a: None if n == "deepspeed" else real(n, *a))
    with pytest.raises(ConfigError, match="pip install deepspeed"):
        _grpo(launcher="accelerate", num_processes=2, accelerate_config="zero2")


def test_more_processes_than_gpus_refused(monkeypatch):
    monkeypatch.setattr(common, "gpu_count", lambda: 2)  # what validation asks
    with pytest.raises(ConfigError, match="4 processes per machine but 2 GPU"):
        _grpo(launcher="accelerate", num_processes=4)


def test_set_reaches_the_grpo_stage_only():
    from backend.recipes import build_stages

    specs = build_stages("r1-zero", "smoke", {"launcher": "accelerate", "num_processes": "2"})
    grpo = [s for s in specs if s.kind == "grpo"]
    assert grpo and all(s.config["launcher"] == "accelerate" and s.config["num_processes"] == 2
                        for s in grpo)
    assert all("launcher" not in s.config for s in specs if s.kind != "grpo")


# --------------------------------------------------------------------------- 2 processes
def _accelerate(script_args: list[str]) -> list[str]:
    """accelerate launch of a script (not ``-m backend``) the way launch_command builds it."""
    cmd = launch.launch_command({"launcher": "accelerate", "num_processes": 2}, [],
                                port=launch.free_port())
    return cmd[:-2] + script_args  # drop "-m backend"


@pytest.mark.slow
def test_two_processes_write_each_group_once_whole_with_trls_advantages(
        tiny_model_dir, db_url, tmp_path):
    store = Store(db_url)
    spec = StageSpec("grpo", "grpo", _grpo(model_path=tiny_model_dir).to_dict())
    stage_id = store.create_run("t", "r1-zero", "smoke", {}, [spec]).stages[0].id
    out = tmp_path / "trl_logged.json"
    proc = subprocess.run(
        _accelerate([str(HERE / "mp_grpo_record.py"), db_url, str(stage_id), tiny_model_dir,
                     str(out)]),
        capture_output=True, text=True, timeout=600, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    logged = json.loads(out.read_text())

    assert store.group_steps(stage_id) == [1, 2]
    for step in (1, 2):
        trl = logged[str(step)]
        assert trl["world"] == 2
        groups = store.step_groups(stage_id, step)
        # 2 processes x 6 completions = 3 groups of 4, each written once, in TRL's order.
        assert [g.group_index for g in groups] == [0, 1, 2]
        assert all([ro.sample_index for ro in g.rollouts] == [0, 1, 2, 3] for g in groups)
        rollouts = [ro for g in groups for ro in g.rollouts]
        assert [ro.completion for ro in rollouts] == trl["completion"]
        assert rollouts and [ro.advantage for ro in rollouts] == pytest.approx(
            trl["advantages"], abs=1e-6)
        # Whole: a group's 4 completions answer one prompt (group 1 spans both processes).
        for g in groups:
            assert {trl["prompt"][4 * g.group_index + j] for j in range(4)} == {g.prompt}
            assert sum(ro.advantage for ro in g.rollouts) == pytest.approx(0.0, abs=1e-4)


def _mp_stage(store: Store, model_dir: str, **overrides) -> tuple[int, int]:
    values = {"model_path": model_dir, "steps": 40, "batch_size": 8, "num_generations": 4,
              "max_completion_length": 12, "eval_every": 0, "eval_problems": 10,
              "save_steps": 2, "seed": 3, "launcher": "accelerate", "num_processes": 2,
              **overrides}
    run = store.create_run("mp", "r1-zero", "smoke", {},
                           [StageSpec("grpo", "grpo", _grpo(**values).to_dict())])
    start_pipeline(store, run.id)
    return run.id, run.stages[0].id


def _applied_steps(log: str, what: str) -> dict[int, list[int]]:
    """{rank: [steps]} at which each rank's log line says ``what`` was applied."""
    steps: dict[int, list[int]] = {}
    for rank, step in re.findall(rf"\[rank (\d)\] {what}.* applied at step (\d+)", log):
        steps.setdefault(int(rank), []).append(int(step))
    return steps


def _groups_whole_and_unique(store: Store, stage_id: int, per_step: int) -> None:
    for step in store.group_steps(stage_id):
        groups = store.step_groups(stage_id, step)
        assert [g.group_index for g in groups] == list(range(per_step)), step
        assert all(len(g.rollouts) == 4 for g in groups)


@pytest.mark.slow
def test_pause_resume_set_stop_reach_both_ranks_at_the_same_step(tiny_model_dir, db_url):
    wb = Workbench(db_url)
    run_id, stage_id = _mp_stage(wb.store, tiny_model_dir)
    stage = wait_for(lambda: (s := wb.get_stage(stage_id)).status == "running" and s.step >= 2
                     and s, 300, what="2 steps on 2 processes")
    import psutil

    ranks = psutil.Process(stage.pid).children()
    assert len(ranks) == 2, "the stage's pid is the launcher; its children are the 2 ranks"

    wb.pause(stage_id)
    paused = wait_for(lambda: (s := wb.get_stage(stage_id)).status == "paused" and s, 120,
                      what="paused")
    import time

    time.sleep(3)  # both ranks wait together: no step is taken while paused
    assert wb.get_stage(stage_id).step == paused.step
    wb.resume(stage_id)
    wait_for(lambda: wb.get_stage(stage_id).step >= paused.step + 2, 180, what="2 more steps")
    wb.set_params(stage_id, {"temperature": 0.7})
    wait_for(lambda: any(c.applied_step for c in wb.commands(stage_id) if c.kind == "set"),
             120, what="the temperature change applied")
    wb.stop(stage_id)
    wait_for(lambda: wb.get_stage(stage_id).status == "stopped", 180, what="stopped")

    log = wb.log_tail(stage_id, 2000)
    for what in ("pause", "resume", "set", "stop"):
        steps = _applied_steps(log, what)
        assert set(steps) == {0, 1} and steps[0] == steps[1], (what, steps)
    commands = {c.kind: c for c in wb.commands(stage_id)}
    assert _applied_steps(log, "set")[1] == [commands["set"].applied_step]
    assert "temperature = 0.7" in commands["set"].result
    stopped = wb.get_stage(stage_id)
    assert stopped.checkpoint.endswith(f"checkpoint-{commands['stop'].applied_step}")
    wait_for(lambda: not psutil.pid_exists(stage.pid) or
             psutil.Process(stage.pid).status() == psutil.STATUS_ZOMBIE, 60,
             what="the launcher to exit")
    assert not any(p.is_running() and p.status() != psutil.STATUS_ZOMBIE for p in ranks)
    _groups_whole_and_unique(wb.store, stage_id, per_step=2)
    assert wb.store.group_steps(stage_id)[-1] == commands["stop"].applied_step


@pytest.mark.slow
def test_kill_9_of_one_rank_interrupts_and_resume_completes(tiny_model_dir, db_url):
    import psutil

    wb = Workbench(db_url)
    run_id, stage_id = _mp_stage(wb.store, tiny_model_dir, steps=16)
    stage = wait_for(lambda: (s := wb.get_stage(stage_id)).checkpoint and s.step >= 3 and s,
                     300, what="a checkpoint on 2 processes")
    rank1 = next(p for p in psutil.Process(stage.pid).children()
                 if p.environ().get("RANK") == "1")
    os.kill(rank1.pid, signal.SIGKILL)
    # torchrun notices the lost rank, stops the others (SIGTERM, then a grace period) and
    # exits; rank 0 or the runner then marks the stage. Quiet: ~10 s; CI's whole suite on 2
    # busy cores once took over 60 s, so the bound is generous (it checks that, not speed).
    wait_for(lambda: wb.get_stage(stage_id).status == "interrupted", 240,
             what="the stage marked interrupted")
    interrupted = wb.get_stage(stage_id)
    assert "died" in interrupted.error or "killed" in interrupted.error

    wb.resume(stage_id)
    wait_for(lambda: wb.get_run(run_id).status == "completed", 600, what="the resumed stage")
    done = wb.get_stage(stage_id)
    assert done.step == 16
    assert f"resuming from {interrupted.checkpoint}" in wb.log_tail(stage_id, 2000)
    _groups_whole_and_unique(wb.store, stage_id, per_step=2)
    assert wb.store.group_steps(stage_id)[-1] == 16


def test_two_machines_on_a_sqlite_store_fail_with_the_reason(tiny_model_dir, db_url):
    """The other machines' processes read the stage from the store: a SQLite file on this
    machine cannot be it. The stage fails before anything is launched, saying so."""
    wb = Workbench(db_url)
    values = {"model_path": tiny_model_dir, "launcher": "accelerate", "num_processes": 2,
              "num_machines": 2, "main_process_ip": "127.0.0.1"}
    run = wb.store.create_run("mp", "r1-zero", "smoke", {},
                              [StageSpec("grpo", "grpo", _grpo(**values).to_dict())])
    start_pipeline(wb.store, run.id)
    failed = wait_for(lambda: (s := wb.get_stage(run.stages[0].id)).status == "failed" and s,
                      60, what="the stage to fail")
    assert "PostgreSQL" in failed.error and failed.pid is None


# --------------------------------------------------------------------------- SFT, 2 processes
def test_sft_batch_is_the_total_split_over_the_processes(tiny_model_dir):
    from backend.stages.sft import SFTStageConfig, sft_args

    cfg = SFTStageConfig.from_dict({"model_path": tiny_model_dir, "batch_size": 8,
                                    "launcher": "accelerate", "num_processes": 2})
    assert sft_args(cfg, "/tmp/x", 4).per_device_train_batch_size == 4
    with pytest.raises(ConfigError, match="divisible by num_processes"):
        SFTStageConfig.from_dict({"batch_size": 5, "launcher": "accelerate",
                                  "num_processes": 2})


def _mp_sft_run(wb: Workbench, tiny_model_dir: str) -> tuple[int, int, int]:
    """A curated SFT stage on 2 processes, wired to a dataset of pending rows (the
    rejection-sampling stage it waits on stands in, completed)."""
    from tests.backend.test_sft import _curated_run

    run_id, ds, _ = _curated_run(wb, tiny_model_dir, launcher="accelerate", num_processes=2)
    return run_id, ds, next(s.id for s in wb.get_run(run_id).stages if s.key == "sft")


@pytest.mark.slow
def test_sft_on_two_processes_waits_for_review_together_then_trains_on_one_snapshot(
        tiny_model_dir, db_url):
    import psutil

    from storage import ACCEPTED

    wb = Workbench(db_url)
    run_id, ds, stage_id = _mp_sft_run(wb, tiny_model_dir)
    stage = wait_for(lambda: (s := wb.get_stage(stage_id)).status == "waiting" and s, 300,
                     what="the 2-process SFT stage to wait for review")
    ranks = psutil.Process(stage.pid).children()
    assert len(ranks) == 2, "both ranks wait: the launcher's children"
    # Pause and resume while waiting reach both ranks at the same point.
    wb.pause(stage_id)
    wait_for(lambda: wb.get_stage(stage_id).status == "paused", 60, what="paused")
    wb.resume(stage_id)
    wait_for(lambda: wb.get_stage(stage_id).status == "waiting", 60, what="waiting again")

    wb.bulk_review(ds, wb.make_filter(where=["step=10"]), ACCEPTED, author="reviewer")
    wb.mark_ready(ds, author="reviewer")
    done = wait_for(lambda: (s := wb.get_stage(stage_id)).status in (
        "completed", "failed", "interrupted") and s, 300, what="SFT on 2 processes")
    assert done.status == "completed", done.error

    (snap,) = wb.snapshots(stage_id=stage_id)  # frozen once, by rank 0
    assert snap.size == 6 and done.summary["snapshot_hash"] == snap.content_hash
    # Each step's loss is recorded once (rank 0), and the stage took the steps it was set.
    assert [m.step for m in wb.metrics(stage_id, ["loss"])] == [1, 2, 3, 4]
    assert [c.kind for c in wb.store.checkpoints(stage_id)].count("final") == 1
    log = wb.log_tail(stage_id, 2000)
    for what in ("pause", "resume"):
        steps = _applied_steps(log, what)
        assert set(steps) == {0, 1} and steps[0] == steps[1], (what, steps)
    assert "rank 0 of 2" in log


@pytest.mark.slow
def test_sft_on_two_processes_fails_with_rank_zeros_message(tiny_model_dir, db_url):
    """An error rank 0 meets before training (here: no accepted rows) reaches the other rank,
    which ends quietly: the stage is failed with the message, not interrupted."""
    from storage import REJECTED

    wb = Workbench(db_url)
    run_id, ds, stage_id = _mp_sft_run(wb, tiny_model_dir)
    wait_for(lambda: wb.get_stage(stage_id).status == "waiting", 300, what="waiting")
    wb.bulk_review(ds, None, REJECTED)
    wb.mark_ready(ds)
    failed = wait_for(lambda: (s := wb.get_stage(stage_id)).status in (
        "completed", "failed", "interrupted") and s, 120, what="the stage to fail")
    assert failed.status == "failed"
    assert f"dataset {ds} has no accepted rows" in failed.error.splitlines()[0]
    assert "rank 0 failed: ConfigError" in wb.log_tail(stage_id, 2000)


# ------------------------------------------------- distill and reward_model, 2 processes
def _mp_single_stage(wb: Workbench, kind: str, config: dict) -> int:
    run = wb.store.create_run("mp", "custom", "smoke", {}, [StageSpec(kind, kind, config)])
    start_pipeline(wb.store, run.id)
    return run.stages[0].id


def _completed_once_per_step(wb: Workbench, stage_id: int, steps: int, what: str):
    done = wait_for(lambda: (s := wb.get_stage(stage_id)).status in (
        "completed", "failed", "interrupted") and s, 600, what=what)
    assert done.status == "completed", done.error
    assert done.step == steps
    # Each step's loss recorded once (rank 0); one final model.
    assert [m.step for m in wb.metrics(stage_id, ["loss"])] == list(range(1, steps + 1))
    assert [c.kind for c in wb.store.checkpoints(stage_id)].count("final") == 1
    assert "rank 0 of 2" in wb.log_tail(stage_id, 2000)
    return done


@pytest.mark.slow
def test_logit_distillation_on_two_processes(tiny_model_dir, db_url, tmp_path):
    from backend.stages.distill import DistillConfig, distill_args
    from tests.test_distill import _tiny

    teacher = _tiny(tmp_path / "teacher", seed=2, hidden=64)
    config = DistillConfig.from_dict({
        "model_path": tiny_model_dir, "teacher_path": teacher, "steps": 4, "batch_size": 4,
        "max_completion_length": 12, "eval_every": 2, "eval_problems": 8, "save_steps": 2,
        "min_digits": 1, "max_digits": 2, "launcher": "accelerate", "num_processes": 2})
    assert distill_args(config, tmp_path / "x").per_device_train_batch_size == 2
    wb = Workbench(db_url)
    stage_id = _mp_single_stage(wb, "distill", config.to_dict())
    done = _completed_once_per_step(wb, stage_id, 4, "logit distillation on 2 processes")
    # Rank 0 scored the final student on the held-out problems, as one process does.
    assert done.summary["problems"] == 8 and "accuracy" in done.summary
    assert {m.step for m in wb.metrics(stage_id, ["eval/accuracy"])} >= {0, 2, 4}


@pytest.mark.slow
def test_reward_model_on_two_processes(tiny_model_dir, db_url):
    from backend.stages.reward_model import RewardModelConfig

    config = RewardModelConfig.from_dict({
        "model_path": tiny_model_dir, "aspect": "harmlessness", "steps": 4, "batch_size": 8,
        "pairs": 64, "eval_pairs": 20, "save_steps": 2, "launcher": "accelerate",
        "num_processes": 2})
    wb = Workbench(db_url)
    stage_id = _mp_single_stage(wb, "reward_model", config.to_dict())
    done = _completed_once_per_step(wb, stage_id, 4, "the reward model on 2 processes")
    assert done.summary["heldout_pairs"] == 20 and "heldout_accuracy" in done.summary


@pytest.mark.slow
def test_grpo_with_vllm_rollouts_on_two_processes(tiny_model_dir, db_url):
    """generation_backend=vllm with launcher=accelerate: each process holds its own colocated
    engine and samples its share; the groups are still written once and whole, and after every
    update each engine samples with the trainer's weights (the log-probs agree)."""
    from tests.test_generation_backends import _need_vllm

    _need_vllm()
    wb = Workbench(db_url)
    run_id, stage_id = _mp_stage(
        wb.store, tiny_model_dir, steps=4, generation_backend="vllm", eval_problems=4,
        reward_funcs=["accuracy", "format", "cosine_length"], reward_weights=[1, 0.5, 1],
        learning_rate=1e-2)
    done = wait_for(lambda: (s := wb.get_stage(stage_id)).status in (
        "completed", "failed", "interrupted") and s, 900, what="GRPO with vLLM on 2 processes")
    assert done.status == "completed", done.error
    _groups_whole_and_unique(wb.store, stage_id, per_step=2)
    assert wb.store.group_steps(stage_id) == [1, 2, 3, 4]
    grad = dict(zip(*wb.metric_series(stage_id, "grad_norm")))
    drift = dict(zip(*wb.metric_series(stage_id, "sampling/sampling_logp_difference/mean")))
    assert sorted(drift) == [1, 2, 3, 4] and max(drift.values()) < 1e-3, (drift, grad)
    assert any(g > 0 for s, g in grad.items() if s < 4), grad  # the weights did move
