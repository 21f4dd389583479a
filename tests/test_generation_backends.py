"""Generation backends (``backend.generation``): hf and vllm give the same greedy completions,
sampling returns what rejection sampling records, and the faults a user can hit say what to do
(vLLM missing, a head size vLLM's CPU kernels reject, an unknown backend name).

The vLLM tests need vLLM installed (``requirements-vllm.txt``, which ``./test.sh`` installs);
they skip without it, except under CI (``CI`` set), where a missing vLLM is a failure."""
from __future__ import annotations

import json
import os
import sys

import pytest

from backend.generation import (GenerationBackendError, HFGenerator, VLLM_CPU_HEAD_SIZES,
                                check_generation_backend, generate_samples, open_generator,
                                vllm_installed)
from backend.stages.common import ConfigError


def _ci() -> bool:
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def _need_vllm() -> None:
    if vllm_installed():
        return
    if _ci():
        pytest.fail("CI is set but vLLM is not installed: ./test.sh installs "
                    "requirements-vllm.txt into .venv (scripts/setup.sh)")
    pytest.skip("vLLM is not installed (.venv/bin/pip install -r requirements-vllm.txt)")


def _prompts(n: int, seed: int = 1) -> list[str]:
    import random

    rng = random.Random(seed)
    return [f"{rng.randint(10, 99)}+{rng.randint(10, 99)}=" for _ in range(n)]


@pytest.fixture(scope="module")
def taught_model_dir(tmp_path_factory) -> str:
    """A tiny Qwen2 model (head_dim 32, 2 layers) taught in 50 steps (seconds on an idle
    CPU) to echo the first operand, ``a+b=`` -> ``a<eos>``: its completions end by emitting
    end-of-sequence (finish reason "stop"), and its greedy choices have clear margins, so two
    kernels agree on them."""
    import random

    import torch

    from backend.models import TinyModelSpec, build_tiny_model, build_tokenizer

    tok = build_tokenizer()
    model = build_tiny_model(TinyModelSpec(hidden_size=64, num_layers=2, num_heads=2,
                                           num_kv_heads=1, intermediate_size=128), tok, seed=0)
    rng = random.Random(0)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    model.train()
    for _ in range(50):
        # Two-digit operands: every text has the same length, so no padding is needed.
        texts = [f"{rng.randint(10, 99)}+{rng.randint(10, 99)}={rng.randint(10, 99)}"
                 for _ in range(32)]
        texts = [t[:6] + t[:2] + tok.eos_token for t in texts]
        ids = tok(texts, return_tensors="pt", add_special_tokens=False)["input_ids"]  # (32, 9)
        labels = ids.clone()
        labels[:, :6] = -100  # learn the completion only
        loss = model(input_ids=ids, labels=labels).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    out = tmp_path_factory.mktemp("taught_model")
    model.save_pretrained(out)
    tok.save_pretrained(out)
    return str(out)


def _config_folder(tmp_path, hidden: int, heads: int) -> str:
    folder = tmp_path / f"model_h{hidden}_n{heads}"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({
        "model_type": "qwen2", "hidden_size": hidden, "num_attention_heads": heads,
        "num_key_value_heads": 1, "num_hidden_layers": 1, "vocab_size": 22}))
    return str(folder)


# ------------------------------------------------------------------ faults, no vLLM needed
def test_unknown_backend_is_refused_with_the_choices():
    with pytest.raises(ValueError, match="hf, vllm"):
        check_generation_backend("tgi")


@pytest.mark.parametrize("hidden, heads, refused", [
    (48, 3, True),    # head_dim 16: vLLM's CPU attention has no kernel for it
    (72, 3, True),    # head_dim 24: likewise
    (96, 3, False),   # head_dim 32: the tiny preset's shape
    (128, 2, False),  # head_dim 64
])
def test_head_dim_vllm_cpu_cannot_run_is_refused_at_create_time(tmp_path, monkeypatch, hidden,
                                                                heads, refused):
    import backend.generation as generation

    # What a CPU machine decides, whichever build (or none) is installed here.
    monkeypatch.setattr(generation, "vllm_installed", lambda: "vllm-cpu")
    monkeypatch.setattr(generation, "_nvidia_gpu", lambda: False)
    folder = _config_folder(tmp_path, hidden, heads)
    if refused:
        with pytest.raises(ValueError, match=rf"head size is {hidden // heads}.*"
                                             r"generation_backend=hf"):
            check_generation_backend("vllm", folder)
    else:
        check_generation_backend("vllm", folder)
    check_generation_backend("hf", folder)  # the HF backend runs any head size


def test_rejection_stage_refuses_vllm_for_a_head_dim_it_cannot_run(tmp_path, monkeypatch):
    import backend.generation as generation
    from backend.stages.rejection import RejectionConfig

    monkeypatch.setattr(generation, "vllm_installed", lambda: "vllm-cpu")
    monkeypatch.setattr(generation, "_nvidia_gpu", lambda: False)
    folder = _config_folder(tmp_path, 48, 3)
    with pytest.raises(ConfigError, match="head size is 16"):
        RejectionConfig.from_dict({"model_path": folder, "generation_backend": "vllm"})
    with pytest.raises(ConfigError, match="generation_backend must be one of"):
        RejectionConfig.from_dict({"generation_backend": "fast"})
    assert RejectionConfig.from_dict({"model_path": folder}).generation_backend == "hf"


def test_missing_vllm_says_so_and_suggests_hf(monkeypatch, tiny_model_dir):
    monkeypatch.setitem(sys.modules, "vllm", None)  # import vllm now raises ImportError
    with pytest.raises(GenerationBackendError, match=r"vLLM is not installed.*"
                                                     r"generation_backend=hf"):
        open_generator("vllm", tiny_model_dir)


def test_hf_generator_counts_tokens_and_finish_reasons(taught_model_dir):
    with open_generator("hf", taught_model_dir) as gen:
        rows = gen.samples(["12+30=", "75+51="], max_new_tokens=8)
        cut = gen.samples(["12+30="], max_new_tokens=1)
    assert [r[0].text for r in rows] == ["12", "75"]
    assert all(r[0].finish_reason == "stop" and r[0].tokens == len(r[0].text) + 1 for r in rows)
    assert cut[0][0].finish_reason == "length" and cut[0][0].tokens == 1


# --------------------------------------------------------------------------- with vLLM
@pytest.fixture(scope="module")
def vllm_generator(taught_model_dir):
    _need_vllm()
    gen = open_generator("vllm", taught_model_dir, seed=0)
    yield gen
    gen.close()


@pytest.mark.slow
def test_hf_and_vllm_give_the_same_greedy_completions(taught_model_dir, vllm_generator):
    from backend.models import load_model

    model, tokenizer = load_model(taught_model_dir)
    # vLLM's own "auto" would run this float32 checkpoint in bfloat16 on CPU, and greedy
    # answers of the pre-trained tiny base then differed on 1 of 20 problems.
    assert vllm_generator.dtype == "float32"
    prompts = _prompts(24)
    hf = HFGenerator(model, tokenizer).samples(prompts, max_new_tokens=12)
    fast = vllm_generator.samples(prompts, max_new_tokens=12)
    assert [r[0] for r in fast] == [r[0] for r in hf]  # text, token count, finish reason
    assert {r[0].finish_reason for r in fast} == {"stop"}
    # Cut off: both stop at the budget and say so.
    short_hf = HFGenerator(model, tokenizer).samples(prompts[:4], max_new_tokens=2)
    short = vllm_generator.samples(prompts[:4], max_new_tokens=2)
    assert short == short_hf and {r[0].finish_reason for r in short} == {"length"}


@pytest.mark.slow
def test_vllm_sampling_gives_n_seeded_samples_per_prompt(vllm_generator):
    prompts = _prompts(6, seed=2)
    first = vllm_generator.samples(prompts, max_new_tokens=10, temperature=1.5, top_p=0.95,
                                   num_samples=5, seed=3)
    again = vllm_generator.samples(prompts, max_new_tokens=10, temperature=1.5, top_p=0.95,
                                   num_samples=5, seed=3)
    other = vllm_generator.samples(prompts, max_new_tokens=10, temperature=1.5, top_p=0.95,
                                   num_samples=5, seed=4)
    assert [len(r) for r in first] == [5] * 6
    assert first == again  # a resumed stage draws the same candidates
    assert first != other
    assert len({s.text for r in first for s in r}) > 6  # sampled, not 5 copies of greedy
    for row in first:
        for s in row:
            assert 1 <= s.tokens <= 10 and s.finish_reason in ("stop", "length")
            assert (s.finish_reason == "stop") == (s.tokens == len(s.text) + 1)


@pytest.mark.slow
def test_evaluation_scores_the_same_with_either_backend(taught_model_dir, vllm_generator):
    from backend.evaluation import evaluate
    from backend.models import load_model
    from backend.tasks.problem import Problem

    model, tokenizer = load_model(taught_model_dir)
    problems = [Problem(p, p[:2]) for p in _prompts(20, seed=5)]  # the taught answer
    hf = evaluate(model, tokenizer, problems, max_new_tokens=8)
    fast = evaluate(vllm_generator, vllm_generator.tokenizer, problems, max_new_tokens=8)
    assert hf["accuracy_lenient"] > 0.5  # the taught model echoes the operand
    assert fast["accuracy_lenient"] == hf["accuracy_lenient"]
    assert fast["examples"] == hf["examples"]


@pytest.mark.slow
def test_head_sizes_match_the_installed_vllm():
    _need_vllm()
    if vllm_installed() != "vllm-cpu":
        pytest.skip("a GPU build of vLLM: its CPU head sizes do not apply")
    from vllm.v1.attention.backends.cpu_attn import CPUAttentionBackend

    assert tuple(CPUAttentionBackend.get_supported_head_sizes()) == VLLM_CPU_HEAD_SIZES


def test_generate_samples_accepts_a_generator_in_place_of_a_model(taught_model_dir):
    from backend.models import load_model

    model, tokenizer = load_model(taught_model_dir)
    gen = HFGenerator(model, tokenizer)
    assert generate_samples(gen, tokenizer, ["3+4="], max_new_tokens=4) == \
        generate_samples(model, tokenizer, ["3+4="], max_new_tokens=4)


def test_grpo_generation_backend_maps_to_trl_vllm_colocate(tmp_path):
    from backend.stages.grpo import GRPOStageConfig, grpo_args

    fast = grpo_args(GRPOStageConfig.from_dict({"generation_backend": "vllm"}), tmp_path)
    assert fast.use_vllm and fast.vllm_mode == "colocate"
    assert not grpo_args(GRPOStageConfig.from_dict({}), tmp_path).use_vllm


def test_grpo_without_vllm_says_so_and_suggests_hf(monkeypatch):
    import backend.generation as generation

    monkeypatch.setattr(generation, "vllm_installed", lambda: None)
    with pytest.raises(GenerationBackendError, match=r"not installed.*generation_backend=hf"):
        generation.require_vllm()


def test_grpo_vllm_engine_that_fails_to_start_says_so_and_suggests_hf(monkeypatch):
    """TRL builds the colocated engine itself; whatever it raises while starting becomes one
    GenerationBackendError with the hf hint, and TRL's own LLM is put back afterwards."""
    _need_vllm()
    import trl.generation.vllm_generation as trl_vllm
    from transformers import PretrainedConfig

    from backend.stages.grpo import trl_vllm_engine

    seen = {}

    def failing_llm(**kwargs):
        seen.update(kwargs)
        raise RuntimeError("Engine core initialization failed")

    monkeypatch.setattr(trl_vllm, "LLM", failing_llm)
    with pytest.raises(GenerationBackendError, match=r"could not start for /m: RuntimeError: "
                                                     r"Engine core.*generation_backend=hf"):
        with trl_vllm_engine(PretrainedConfig(dtype="float32")):
            trl_vllm.LLM(model="/m", gpu_memory_utilization=0.3)
    assert trl_vllm.LLM is failing_llm
    # What TRL has no setting for: float32 stays float32; eager on a machine without CUDA.
    assert seen["dtype"] == "float32" and seen["gpu_memory_utilization"] == 0.3
    import torch
    assert seen.get("enforce_eager") is (None if torch.cuda.is_available() else True)


@pytest.mark.slow
def test_grpo_stage_with_vllm_rollouts_and_live_temperature(db_url):
    """generation_backend=vllm as a Workbench stage (r1-zero, smoke preset): TRL's colocated
    engine generates the rollouts, every step's groups are recorded, and a live temperature
    change reaches the engine's SamplingParams at the next step.

    The log-probs vLLM samples with (TRL asks for them after the temperature) must equal the
    ones the trainer computes with its current weights at its current temperature, at every
    step: they would not if the engine still sampled at the old temperature, or with stale
    weights (TRL's own weight sync fails on vLLM's CPU platform; measured with the sync off,
    the mean difference rose from 1e-7 to 3.6-7 nats after one update at this learning rate,
    and to 0.18-0.27 with only the tied LM head stale). The smoke base never earns the rule
    rewards in 24 tokens, so cosine_length (which varies with length) makes the first updates
    non-zero, and a high learning rate makes them large."""
    _need_vllm()
    from backend.api import Workbench
    from tests.conftest import wait_for

    wb = Workbench(db_url)
    steps = 30
    run = wb.create_run("r1-zero", "smoke", {
        "grpo.generation_backend": "vllm", "grpo.steps": str(steps),
        "grpo.reward_funcs": "accuracy,format,cosine_length", "grpo.reward_weights": "1,0.5,1",
        "grpo.learning_rate": "1e-2"})
    grpo = next(s for s in run.stages if s.kind == "grpo")
    wait_for(lambda: wb.get_stage(grpo.id).step >= 2, 1200, interval=0.5,
             what="2 GRPO steps with vLLM rollouts")
    wb.set_params(grpo.id, {"temperature": "0.5"})
    cmd = wait_for(lambda: (c := wb.commands(grpo.id)[-1]).applied_at and c, 300,
                   what="the temperature change to apply")
    wait_for(lambda: wb.get_run(run.id).status in ("completed", "failed"), 1200, interval=1.0,
             what="the run to end")
    stage = wb.get_stage(grpo.id)
    assert stage.status == "completed", stage.error
    assert cmd.error is None and cmd.applied_step < steps - 2, "the change must land early"
    events = [e.message for e in wb.events(run.id)]
    assert any("vLLM in colocate mode" in m for m in events)

    for step in range(1, steps + 1):  # smoke: 16 completions a step in groups of 4
        groups = wb.step_groups(grpo.id, step)
        assert [len(g.rollouts) for g in groups] == [4] * 4, step
    series = {name: dict(zip(*wb.metric_series(grpo.id, name))) for name in (
        "vllm/temperature", "sampling/sampling_logp_difference/mean", "grad_norm")}
    assert all(sorted(v) == list(range(1, steps + 1)) for v in series.values()), series
    assert all(t == (0.5 if s > cmd.applied_step else 1.0)
               for s, t in series["vllm/temperature"].items()), series["vllm/temperature"]
    # The weights moved (the policy soon learns to fill all 24 tokens, after which every group
    # ties and the updates stop), and the engine sampled with them at every later step.
    moved = [s for s, g in series["grad_norm"].items() if g > 0 and s < steps]
    assert len(moved) >= 2, series["grad_norm"]
    drift = series["sampling/sampling_logp_difference/mean"]
    assert max(drift.values()) < 1e-3, drift
