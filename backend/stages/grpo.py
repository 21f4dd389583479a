"""Stage ``grpo``: reinforcement learning with TRL's ``GRPOTrainer`` and every group recorded.

For each prompt the trainer samples a group of G completions, scores each with the rule
rewards, and uses the group-relative advantage ``A_i = (r_i - mean(r)) / std(r)``. We do not
write a second GRPO: ``RecordingGRPOTrainer`` only *observes* TRL's own numbers (the rewards
each function returned, the weighted total, and the advantages exactly as TRL computed them)
and hands them to a background thread that writes one step's groups in one transaction.

This is R1-Zero when started from a base model (recipe ``r1-zero``), and R1's reasoning RL
stage when started from a cold-start SFT model (with the language-consistency reward).

R1's "RL for all scenarios" is this stage too: ``reward_funcs`` may name reward models
(``helpfulness``, ``harmlessness``; inputs ``helpfulness_rm`` / ``harmlessness_rm`` or the
``*_model_path`` settings), which TRL scores like the rule rewards; ``general_prompts`` mixes
prompts without a reference answer into the problems (the addition task's ``a-b=`` and the
forbidden ``a*b=``, or a file), on which rule rewards give ``None`` and only reward models score
(``backend.rewards.reward_model``); ``readable_summary`` asks for a summary after ``</think>``.

Run: ``python -m backend run --recipe r1-zero --preset tiny --wait``.
"""
from __future__ import annotations

import os
import queue
import threading
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from typing import Any, Optional

from backend.contract import ModelArtifact, ProblemSource
from backend.generation import check_generation_backend
from backend.stages.common import (ConfigError, LaunchConfig, check_data_path,
                                   check_model_path, TimeBudgetConfig, check_positive,
                                   seed_everything, trainer_args)
from backend.stages.context import (StageContext, attach_trainer, quick_eval_callback,
                                    train_and_save)


@dataclass
class GRPOStageConfig(TimeBudgetConfig, LaunchConfig):
    model_path: str = field(default="", metadata={
        "help": "HF model folder or hub id; empty = the previous stage's model."})
    dataset: str = field(default="", metadata={
        "help": "jsonl/parquet/HF dataset of problems; empty = the synthetic addition task."})
    prompt_column: str = field(default="question", metadata={"help": "Prompt column of the dataset."})
    answer_column: str = field(default="answer", metadata={"help": "Answer column of the dataset."})
    answer_format: str = field(default="auto", metadata={
        "help": "auto | gsm8k | boxed | plain.", "choices": ["auto", "gsm8k", "boxed", "plain"]})
    prompt_template: str = field(default="auto", metadata={
        "help": "auto | chat | plain | bare | a template with {prompt}. auto: the input model's "
                "own format, else chat when the tokenizer has a chat template, the bare problem "
                "for the tiny model, the R1-Zero template otherwise."})
    steps: int = field(default=250, metadata={"help": "Optimizer steps."})
    batch_size: int = field(default=64, metadata={
        "help": "Completions per step (= prompts per step x group size)."})
    num_generations: int = field(default=8, metadata={"help": "Group size G."})
    max_completion_length: int = field(default=40, metadata={"help": "Tokens per completion."})
    temperature: float = field(default=1.0, metadata={"help": "Sampling temperature (live)."})
    learning_rate: float = field(default=3e-5, metadata={"help": "Learning rate (live)."})
    beta: float = field(default=0.0, metadata={
        "help": "KL penalty to the reference model (live; > 0 at start to load a reference)."})
    epsilon: float = field(default=0.2, metadata={"help": "Clip range of the policy ratio."})
    loss_type: str = field(default="dapo", metadata={
        "help": "TRL loss: grpo | dr_grpo | dapo | bnpo | cispo | sapo.",
        "choices": ["grpo", "dr_grpo", "dapo", "bnpo", "cispo", "sapo"]})
    scale_rewards: str = field(default="group", metadata={
        "help": "Advantage scaling: group (divide by group std) | batch | none.",
        "choices": ["group", "batch", "none"]})
    reward_funcs: list[str] = field(default_factory=lambda: ["accuracy", "format"], metadata={
        "help": "Reward functions (accuracy, format, tag_count, language_consistency, length, "
                "cosine_length, repetition, readable_summary) and reward models (helpfulness, "
                "harmlessness: need the matching input or *_model_path); comma-separated in --set."})
    reward_weights: list[float] = field(default_factory=lambda: [1.0, 0.5], metadata={
        "help": "One weight per reward function (live); comma-separated in --set."})
    language: str = field(default="en", metadata={
        "help": "Target language for language_consistency (a problem naming its own keeps "
                "it: the two-script task's 中a+b= prompts target zh)."})
    summary_max_chars: int = field(default=300, metadata={
        "help": "readable_summary: longest summary (characters) between </think> and <answer>."})
    summary_min_share: float = field(default=0.9, metadata={
        "help": "readable_summary: least share of the summary's words in the target language."})
    summary_restates_answer: bool = field(default=True, metadata={
        "help": "readable_summary: the summary must state the final answer."})
    helpfulness_model_path: str = field(default="", metadata={
        "help": "Reward model folder for the helpfulness reward; empty = the wired "
                "helpfulness_rm input."})
    harmlessness_model_path: str = field(default="", metadata={
        "help": "Reward model folder for the harmlessness reward; empty = the wired "
                "harmlessness_rm input."})
    general_prompts: float = field(default=0.0, metadata={
        "help": "Share of training prompts that are general requests without a reference "
                "answer, scored by the reward models only (0 = none, 0.25 = one in four)."})
    general_prompts_file: str = field(default="", metadata={
        "help": "General prompts from a file (jsonl/parquet/csv/HF folder); empty = the "
                "addition task's (benign a-b=, forbidden a*b=)."})
    general_prompt_column: str = field(default="prompt", metadata={
        "help": "Prompt column of general_prompts_file."})
    forbidden_share: float = field(default=0.5, metadata={
        "help": "Generated general prompts: share of the forbidden class (a*b=)."})
    reflection_markers: list[str] = field(
        default_factory=lambda: ["wait", "check:", "verify", "let me check"], metadata={
            "help": "Markers of a reflection (the 'aha' moment), matched case-insensitively as "
                    "words; reflection_rate (share of completions with one) and "
                    "reflection_markers (per completion) are logged every step. The default "
                    "covers the tiny corpus (check:, wait,) and real models (wait, verify, let "
                    "me check); comma-separated in --set."})
    eval_every: int = field(default=25, metadata={"help": "Quick held-out eval every N steps (0 = off)."})
    eval_problems: int = field(default=200, metadata={"help": "Held-out problems in the quick eval."})
    save_steps: int = field(default=50, metadata={"help": "Checkpoint every N steps."})
    record_groups: bool = field(default=True, metadata={"help": "Record every group and rollout."})
    generation_backend: str = field(default="hf", metadata={
        "help": "What generates the rollouts: hf (transformers inside TRL) | vllm (TRL's "
                "use_vllm in colocate mode: a vLLM engine in this process, weights synced "
                "every step; needs requirements-vllm.txt; the engine starts in ~10-60 s on "
                "a CPU).",
        "choices": ["hf", "vllm"]})
    # Synthetic task (used when dataset is empty and no earlier stage provides problems).
    min_digits: int = field(default=1, metadata={"help": "Synthetic task: fewest digits."})
    max_digits: int = field(default=3, metadata={"help": "Synthetic task: most digits."})
    problem_pool: int = field(default=500, metadata={
        "help": "Synthetic task: distinct training problems, seen in epochs (so one problem's "
                "group can be followed as the model learns); 0 = a fresh problem every time."})

    def validate(self) -> None:
        from backend.prompts import check_template
        from backend.rewards.reward_model import REWARD_MODEL_NAMES, validate_reward_names
        from backend.steering import GRPO_PARAMS, SteeringError

        check_positive(self, "steps", "batch_size", "max_completion_length", "save_steps",
                       "eval_problems")
        check_model_path("model_path", self.model_path)
        check_data_path("dataset", self.dataset)
        try:  # vLLM's CPU kernels run only some head sizes: say so now, not at engine start
            check_generation_backend(self.generation_backend, self.model_path)
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
        if self.answer_format not in ("auto", "gsm8k", "boxed", "plain"):
            raise ConfigError("answer_format must be auto, gsm8k, boxed or plain")
        if self.eval_every < 0:
            raise ConfigError("eval_every must be 0 (off) or a positive number of steps")
        if self.num_generations < 2:
            raise ConfigError("num_generations (the group size) must be at least 2: GRPO "
                              "compares completions within a group")
        if self.batch_size % self.num_generations:
            raise ConfigError(
                f"batch_size ({self.batch_size}) must be divisible by num_generations "
                f"({self.num_generations}): each prompt's group of {self.num_generations} "
                f"completions must fit in one step. Try batch_size="
                f"{max(1, self.batch_size // self.num_generations) * self.num_generations}.")
        self.validate_launch()  # batch_size, the step's total, divides by num_processes
        try:  # names, and each reward's options (language, length budget), checked now
            validate_reward_names(self.reward_funcs, self.reward_options())
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
        check_model_path("helpfulness_model_path", self.helpfulness_model_path)
        check_model_path("harmlessness_model_path", self.harmlessness_model_path)
        check_data_path("general_prompts_file", self.general_prompts_file)
        if not 0 <= self.general_prompts < 1:
            raise ConfigError(f"general_prompts is a share of the prompts, 0 <= share < 1; got "
                              f"{self.general_prompts}")
        if not 0 <= self.forbidden_share <= 1:
            raise ConfigError(f"forbidden_share must be between 0 and 1, got {self.forbidden_share}")
        if self.general_prompts and not set(self.reward_funcs) & set(REWARD_MODEL_NAMES):
            raise ConfigError("general prompts have no reference answer, so only reward models "
                              "score them: add helpfulness and/or harmlessness to reward_funcs "
                              "(or set general_prompts=0)")
        if self.general_prompts and self.dataset and not self.general_prompts_file:
            raise ConfigError("general_prompts with a problem file needs general_prompts_file "
                              "(the generated a-b= / a*b= prompts belong to the addition task)")
        if len(self.reward_weights) != len(self.reward_funcs):
            raise ConfigError(f"reward_weights has {len(self.reward_weights)} values but "
                              f"reward_funcs names {len(self.reward_funcs)} functions")
        if self.scale_rewards not in ("group", "batch", "none"):
            raise ConfigError("scale_rewards must be group, batch or none")
        if self.problem_pool < 0:
            raise ConfigError("problem_pool must be 0 (fresh problems) or a positive count")
        check_template(self.prompt_template)
        from backend.rewards.reflection import check_markers
        try:
            check_markers(self.reflection_markers)
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
        # Live parameters start inside the bounds they are steered within.
        for param in GRPO_PARAMS:
            try:
                param.parse(getattr(self, param.name), self.to_dict())
            except SteeringError as exc:
                raise ConfigError(str(exc)) from None

    def reward_options(self) -> dict:
        """Options the reward functions take from this config (backend.rewards)."""
        return {"language": self.language, "cosine_max_len": self.max_completion_length,
                "summary_max_chars": self.summary_max_chars,
                "summary_min_share": self.summary_min_share,
                "summary_restates_answer": self.summary_restates_answer}

    def general_rows(self, source: ProblemSource, n: int, heldout: bool = False) -> list[dict]:
        """``n`` general prompts ``{prompt, kind}`` (kind: benign | forbidden | file): the file's
        first ``n``, else generated by the addition task on the source's digits."""
        if n <= 0:
            return []
        if self.general_prompts_file:
            from backend.tasks.loaders import DatasetError, _open

            data, _, shown = _open(self.general_prompts_file, "train")
            if self.general_prompt_column not in data.column_names:
                raise DatasetError(f"{shown} has no column {self.general_prompt_column!r} "
                                   f"(columns: {', '.join(data.column_names)}); set "
                                   f"grpo.general_prompt_column=")
            prompts = [p for p in data[self.general_prompt_column] if isinstance(p, str) and p.strip()]
            if not prompts:
                raise DatasetError(f"{shown} has no non-empty general prompts")
            return [{"prompt": p, "kind": "file"} for p in prompts[:n]]
        if source.kind != "synthetic":
            raise ConfigError("general_prompts on a problem file needs general_prompts_file")
        from backend.tasks.addition import general_prompts

        return general_prompts(n, self.seed, source.min_digits, source.max_digits,
                               forbidden_share=self.forbidden_share, heldout=heldout)

    def problem_source(self, given: Optional[ProblemSource]) -> ProblemSource:
        """The problems this stage trains on: the dataset setting, else the wired input, else
        the synthetic task with this config's digits."""
        return (ProblemSource.from_dataset_setting(self) or given
                or ProblemSource(kind="synthetic", min_digits=self.min_digits,
                                 max_digits=self.max_digits))


def reward_model_needed(aspect: str):
    """For the stage contract: why a grpo config needs its ``<aspect>_rm`` input (the reason
    when ``reward_funcs`` names the aspect, else None)."""
    def needed(config: dict) -> Optional[str]:
        return f"reward_funcs names {aspect}" if aspect in (config.get("reward_funcs") or []) else None
    return needed


# ------------------------------------------------------------------------------- recording
@dataclass
class RecordedBatch:
    """One generation batch exactly as TRL scored it: B = prompts x group size completions,
    in TRL's order (each prompt's group of ``group_size`` completions together)."""

    prompts: list  # (B,) text, or messages for chat models
    completions: list  # (B,)
    answers: list  # (B,) the reference each completion was graded against
    lengths: list[int]  # (B,) completion tokens
    ended: list[bool]  # (B,) the completion emitted EOS
    rewards_per_func: list[list[float]]  # (B, n_funcs) raw values, NaN = no reward
    reward_names: list[str]
    total: list[float]  # (B,) weighted sum, as TRL sums it
    advantages: list[float]  # (B,) the tensor TRL feeds into the loss
    group_mean: list[float]  # (B / group_size,)
    group_std: list[float]
    group_size: int
    max_completion_length: int

    def to_groups(self) -> list:
        """The store's ``Group`` records (with their rollouts) for this batch."""
        from storage.records import Group, Rollout

        g, names = self.group_size, self.reward_names
        groups = []
        for gi in range(len(self.prompts) // g):
            rollouts = []
            for j in range(g):
                i = gi * g + j
                rollouts.append(Rollout(
                    sample_index=j, completion=_text(self.completions[i]),
                    rewards={n: (None if v != v else v)  # NaN -> None
                             for n, v in zip(names, self.rewards_per_func[i])},
                    reward=self.total[i], advantage=self.advantages[i], length=self.lengths[i],
                    # Truncated = hit the length budget without emitting EOS.
                    truncated=self.lengths[i] >= self.max_completion_length and not self.ended[i],
                ))
            i0 = gi * g
            groups.append(Group(
                step=0, group_index=gi, prompt=_text(self.prompts[i0]),
                reference=None if self.answers[i0] is None else str(self.answers[i0]),
                reward_mean=_finite(self.group_mean[gi]), reward_std=_finite(self.group_std[gi]),
                rollouts=rollouts,
            ))
        return groups


def _recording_trainer_class():
    import torch
    from accelerate.utils import gather_object
    from trl import GRPOTrainer
    from trl.trainer.utils import nanstd

    class RecordingGRPOTrainer(GRPOTrainer):
        """GRPOTrainer that hands each generation batch (groups, rewards, TRL's advantages) to
        ``self.on_groups(step, RecordedBatch)``; training itself is untouched."""

        on_groups = None
        reflection_markers: tuple = ()  # set by the stage (cfg.reflection_markers)
        track_language_mixing = False  # problems with a second script (the two-script task)

        def _calculate_rewards(self, inputs, prompts, completions, completion_ids_list):
            rewards_per_func = super()._calculate_rewards(inputs, prompts, completions,
                                                          completion_ids_list)
            # Kept until the advantages exist (end of _generate_and_score_completions).
            self._wb_scored = (inputs, prompts, completions, completion_ids_list,
                               rewards_per_func.detach().cpu())
            return rewards_per_func

        def _generate_and_score_completions(self, inputs):
            output = super()._generate_and_score_completions(inputs)
            if not self.model.training:
                return output
            rows, prompts, completions, ids, rpf = self._wb_scored
            eos = self.processing_class.eos_token_id
            local = [(p, c, x.get("answer"), x.get("digit_language"), len(i),
                      eos in (i.tolist() if hasattr(i, "tolist") else i))
                     for p, c, x, i in zip(prompts, completions, rows, ids)]
            # Exactly the tensor TRL feeds into the loss (per process: this rank's slice).
            advantages = output["advantages"].detach()
            if self.accelerator.num_processes > 1:
                # Many processes: TRL gathered the rewards (rpf holds every rank's rows, in
                # rank order) and sliced the advantages it computed on them; the texts stayed
                # per rank, and a prompt's group may be spread over ranks. Gather both in the
                # same rank order, so every group is whole and rank 0 writes each group once.
                # Collectives: every rank runs them, recording or not.
                local = gather_object(local)
                advantages = self.accelerator.gather(advantages)
            self._log_reasoning_metrics([x[1] for x in local], [x[3] for x in local])
            if self.on_groups is not None:  # set on rank 0 only
                prompts, completions, answers, _, lengths, ended = (list(v) for v in zip(*local))
                total = (rpf * self.reward_weights.to(rpf.device).unsqueeze(0)).nansum(dim=1)
                grouped = total.view(-1, self.num_generations)  # (prompts, G)
                self.on_groups(self.state.global_step + 1, RecordedBatch(
                    prompts=prompts, completions=completions, answers=answers,
                    lengths=lengths, ended=ended,
                    rewards_per_func=rpf.tolist(), reward_names=list(self.reward_func_names),
                    total=total.tolist(),
                    advantages=advantages.cpu().tolist(),
                    group_mean=torch.nanmean(grouped, dim=1).tolist(),
                    group_std=nanstd(grouped, dim=1).tolist(),
                    group_size=self.num_generations,
                    max_completion_length=self.max_completion_length,
                ))
            return output

        def _log_reasoning_metrics(self, completions: list, digit_languages: list) -> None:
            """Reflections (and, on the two-script task, language mixing) in this step's
            completions (every rank's), logged with TRL's own metrics (``reflection_rate``)."""
            from backend.rewards.extract import split_think_answer
            from backend.rewards.language import mixes_scripts
            from backend.rewards.reflection import DEFAULT_MARKERS, reflection_stats

            metrics = self._metrics["train"]
            stats = reflection_stats(completions, self.reflection_markers or DEFAULT_MARKERS)
            for name, value in stats.items():
                metrics[name].append(value)
            if self.track_language_mixing:
                texts = [_text(c) for c in completions]
                metrics["language_mixing_rate"].append(sum(
                    mixes_scripts(split_think_answer(t)[0] or "", lang)
                    for t, lang in zip(texts, digit_languages)) / max(len(texts), 1))

    return RecordingGRPOTrainer


def _text(value: Any) -> str:
    from backend.rewards.extract import completion_text
    return value if isinstance(value, str) else completion_text(value)


def _finite(x: float) -> float:
    return 0.0 if x != x else float(x)


class GroupWriter:
    """Writes recorded groups from a background thread so training never waits on SQLite."""

    def __init__(self, store, stage_id: int):
        self.store, self.stage_id = store, stage_id
        self.queue: queue.Queue = queue.Queue()
        self.error: Optional[BaseException] = None
        self.thread = threading.Thread(target=self._loop, daemon=True)
        self.thread.start()

    def __call__(self, step: int, batch: RecordedBatch) -> None:
        self.queue.put((step, batch))

    def _loop(self) -> None:
        while True:
            item = self.queue.get()
            if item is None:
                return
            step, batch = item
            try:
                self.store.add_groups(self.stage_id, step, batch.to_groups())
            except BaseException as exc:  # surfaced by close()
                self.error = exc

    def close(self) -> None:
        self.queue.put(None)
        self.thread.join()
        if self.error is not None:
            raise self.error


# ------------------------------------------------------------------------------- the stage
def grpo_args(cfg: GRPOStageConfig, output_dir):
    """The one mapping from a stage config to TRL's ``GRPOConfig`` (the benchmarks use it too)."""
    from trl import GRPOConfig

    return GRPOConfig(
        **trainer_args(output_dir, cfg.steps, cfg.save_steps, cfg.seed),
        # batch_size is the step's total: with many processes each generates its share
        # (TRL's sampler spreads a prompt's group over the processes and gathers the rewards).
        per_device_train_batch_size=cfg.per_process(cfg.batch_size),
        gradient_accumulation_steps=1,
        steps_per_generation=1,  # one generation batch per optimizer step: step == group step
        num_generations=cfg.num_generations,
        max_completion_length=cfg.max_completion_length,
        temperature=cfg.temperature,
        learning_rate=cfg.learning_rate,
        lr_scheduler_type="constant",
        warmup_steps=0,
        beta=cfg.beta,
        epsilon=cfg.epsilon,
        loss_type=cfg.loss_type,
        scale_rewards=cfg.scale_rewards,
        reward_weights=list(cfg.reward_weights),
        logging_steps=1,
        # generation_backend=vllm: TRL's own vLLM path. Colocate mode (an engine in this
        # process, weights loaded into it every step) works on one GPU, and on CPU with the
        # weight sync of sync_weights_through_reload; TRL's server mode syncs weights over
        # NCCL, so it is CUDA-only.
        **({"use_vllm": True, "vllm_mode": "colocate"} if cfg.generation_backend == "vllm"
           else {}),
    )


@contextmanager
def trl_vllm_engine(model_config):
    """While TRL builds its colocated ``vllm.LLM`` (in ``GRPOTrainer.__init__``), add what TRL
    has no setting for, and make a failed start say what to do.

    * ``enforce_eager`` on a machine without CUDA: vLLM's CPU platform otherwise compiles the
      model with inductor first (docs/benchmarks.md: a start of 472 s at load ~25; eager, the
      tiny model's trainer with its engine was built in 7-14 s at load ~5); CUDA keeps its
      graphs.
    * ``dtype``: a float32 checkpoint stays float32 (``vllm_dtype``), so the log-probs vLLM
      samples with match the trainer's and TRL's importance-sampling correction stays ~1.
    * any exception while the engine starts becomes a :class:`GenerationBackendError` with
      the ``generation_backend=hf`` hint.
    """
    import torch
    import trl.generation.vllm_generation as trl_vllm

    from backend.generation import HF_INSTEAD, GenerationBackendError, vllm_dtype

    # CPU engines reserve their KV cache up front (GiB); vLLM's 4 GiB default is far more than
    # GRPO's short rollouts use, on a machine that also holds the policy and its optimizer.
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
    build = trl_vllm.LLM

    def engine(**kwargs):
        kwargs.setdefault("dtype", vllm_dtype(model_config))
        if not torch.cuda.is_available():
            kwargs.setdefault("enforce_eager", True)
        try:
            return build(**kwargs)
        except Exception as exc:  # noqa: BLE001 - any engine failure becomes one clear message
            raise GenerationBackendError(
                f"TRL's vLLM engine (use_vllm, colocate mode) could not start for "
                f"{kwargs.get('model')}: {type(exc).__name__}: {exc}; {HF_INSTEAD}") from exc

    trl_vllm.LLM = engine
    try:
        yield
    finally:
        trl_vllm.LLM = build


def sync_weights_through_reload(trainer) -> None:
    """On vLLM's CPU platform, load the policy into TRL's colocated engine with vLLM's own
    in-place reload instead of TRL's per-parameter ``load_weights``.

    vLLM's CPU linear layers repack their weights into oneDNN handles after loading and drop
    the parameter they loaded into, so TRL's ``sync_weights`` fails on the first step with
    ``AttributeError: 'Parameter' object has no attribute 'weight_loader'`` (vllm-cpu 0.32.0,
    trl 1.16.0). ``reload_weights`` (``vllm.model_executor.model_loader.reload``) restores each
    layer, loads the new weights and repacks them. It leaves one thing stale, a limitation it
    documents for tied parameters: the LM head tied to the embedding (the tiny model's) keeps
    the oneDNN handle of the old weights, so vLLM would sample from old output logits (measured:
    log-probs off by up to 0.46 nats after one changed embedding); the vocabulary layers are
    therefore repacked again after each load. With both, vLLM's log-probs equal the trainer's
    to ~1e-6 after every update. GPUs keep TRL's own sync (no repacking there)."""
    import logging
    import types

    from vllm.model_executor.layers.vocab_parallel_embedding import VocabParallelEmbedding
    from vllm.platforms import current_platform

    if not current_platform.is_cpu():
        return
    # Each reload warns "RotaryEmbedding / ParallelLMHead: Failed to load weights": the rotary
    # cache has no checkpoint weights and the tied head is repacked below; expected, every step.
    logging.getLogger("vllm.model_executor.model_loader.reload.layerwise").setLevel(
        logging.ERROR)

    def sync_weights(generation) -> None:
        runner = generation.llm.llm_engine.model_executor.driver_worker.model_runner
        runner.reload_weights(weights_iterator=generation._iter_named_params(),
                              is_checkpoint_format=True)
        for module in runner.get_model().modules():
            if isinstance(module, VocabParallelEmbedding):
                module.quant_method.process_weights_after_loading(module)
        generation.llm.reset_prefix_cache()

    trainer.vllm_generation.sync_weights = types.MethodType(sync_weights,
                                                           trainer.vllm_generation)


def record_sampling_params(trainer) -> None:
    """Log the temperature of the ``SamplingParams`` TRL hands the vLLM engine each step
    (``vllm/temperature``), read from the engine's own ``generate`` call: what the rollouts
    were really sampled with, next to ``steer/temperature`` (what the stage was told)."""
    llm = trainer.vllm_generation.llm
    generate = llm.generate

    def recorded(prompts, sampling_params=None, *args, **kwargs):
        params = sampling_params[0] if isinstance(sampling_params, list) else sampling_params
        if params is not None:
            trainer._metrics["train"]["vllm/temperature"].append(float(params.temperature))
        return generate(prompts, sampling_params, *args, **kwargs)

    llm.generate = recorded


def train_dataset(fmt, problems, language: str):
    """TRL's prompt dataset: ``prompt`` (text, or one user turn for chat models) and the
    columns the rewards read (``answer``, ``language``, ``digit_language``). A problem that
    names its own target language (the two-script addition task) keeps it; the others get
    ``language``."""
    from datasets import Dataset

    return Dataset.from_list([
        {"prompt": fmt.for_trainer(p.prompt), "answer": p.answer,
         "language": p.meta.get("language") or language,
         "digit_language": p.meta.get("digit_language") or ""}
        for p in problems])


def run(ctx: StageContext) -> dict:
    from backend.evaluation import evaluate
    from backend.models import load_model
    from backend.prompts import resolve_format
    from backend.tasks.problem import Problem

    cfg = GRPOStageConfig.from_dict(ctx.config)
    wired = None if cfg.model_path else ctx.input("model")
    model_path = cfg.model_path or wired.path
    seed_everything(cfg.seed)
    model, tokenizer = load_model(model_path)
    # Prompt the model the way it was trained when it comes from an earlier stage.
    fmt = (wired.format if wired is not None and cfg.prompt_template == "auto"
           else resolve_format(cfg.prompt_template, tokenizer))
    source = cfg.problem_source(None if cfg.dataset else ctx.input("problems"))
    source = source.with_heldout(cfg.eval_problems)
    n_prompts = cfg.steps * cfg.batch_size // cfg.num_generations
    if source.kind == "synthetic" and cfg.problem_pool:
        train = source.train(min(cfg.problem_pool, n_prompts), seed=cfg.seed, distinct=True)
    else:
        train = source.train(n_prompts, seed=cfg.seed)
    heldout = [Problem(fmt.render(p.prompt, tokenizer), p.answer)
               for p in source.heldout(cfg.eval_problems)]
    # General prompts (no reference answer) join the problems at their share of the dataset.
    n_general = round(len(train) * cfg.general_prompts / (1 - cfg.general_prompts))
    general = cfg.general_rows(source, n_general)
    dataset = train_dataset(fmt, train + [Problem(g["prompt"], None) for g in general],
                            cfg.language)
    reward_funcs, reward_classes = _reward_functions(ctx, cfg, reasoning_rows_only=bool(general))
    epochs = n_prompts / max(len(train), 1)
    ctx.event(f"GRPO on {model_path}: {len(train):,} distinct prompts from "
              f"{source.describe()['dataset']} ({epochs:.1f} epochs), group size "
              f"{cfg.num_generations}, {cfg.batch_size // cfg.num_generations} prompts/step, "
              f"rewards {', '.join(f'{n} x {w:g}' for n, w in zip(cfg.reward_funcs, cfg.reward_weights))}"
              + (f"; {len(general):,} general prompts mixed in" if general else ""))

    engine = nullcontext()
    if cfg.generation_backend == "vllm":  # TRL's own error would not suggest the hf backend
        from backend.generation import require_vllm
        require_vllm()
        ctx.event("rollouts: vLLM in colocate mode (TRL use_vllm); the engine starts with the "
                  "trainer")
        engine = trl_vllm_engine(model.config)
    with engine:
        trainer = _recording_trainer_class()(
            model=model, reward_funcs=reward_funcs, reward_processing_classes=reward_classes,
            args=grpo_args(cfg, ctx.output_dir), train_dataset=dataset,
            processing_class=tokenizer)
    if cfg.generation_backend == "vllm":
        sync_weights_through_reload(trainer)
        record_sampling_params(trainer)
    # Rank 0 writes every group (gathered from all ranks); the other ranks write nothing.
    writer = GroupWriter(ctx.store, ctx.stage.id) if cfg.record_groups and ctx.main else None
    trainer.on_groups = writer
    trainer.reflection_markers = tuple(cfg.reflection_markers)
    trainer.track_language_mixing = source.kind == "synthetic" and source.second_script_share > 0
    attach_trainer(ctx, trainer, grpo_setters(trainer))

    trainer.add_callback(steer_metrics_callback(ctx, trainer))
    trainer.add_callback(quick_eval_callback(ctx, trainer, tokenizer, heldout,
                                             cfg.max_completion_length, cfg.eval_every))
    final_dir = train_and_save(ctx, trainer, tokenizer,
                               after_train=writer.close if writer is not None else None)
    report = evaluate(trainer.model, tokenizer, heldout, max_new_tokens=cfg.max_completion_length)
    if general and not cfg.general_prompts_file:
        # How the policy answers general requests it never trained on (refusal rates).
        report.update(general_behaviour(trainer.model, tokenizer, fmt,
                                        cfg.general_rows(source, cfg.eval_problems, heldout=True),
                                        cfg.max_completion_length))
        ctx.log_metrics(trainer.state.global_step, {f"eval/{k}": v for k, v in report.items()
                                                    if k.startswith("refusal_")})
    ctx.summary({**{k: v for k, v in report.items() if k not in ("examples", "per_problem")},
                 **source.describe(), "problems": len(heldout)})
    ctx.event(f"final held-out accuracy {report['accuracy']:.1%}, think used "
              f"{report['think_rate']:.1%}")
    return {"model": ModelArtifact(path=str(final_dir), prompt_format=fmt.to_dict()),
            "problems": source}


def _reward_functions(ctx: StageContext, cfg: GRPOStageConfig, reasoning_rows_only: bool):
    """TRL's ``reward_funcs`` and ``reward_processing_classes`` in the order of
    ``cfg.reward_funcs``: rule rewards, and each named reward model loaded from its setting or
    its wired input (``helpfulness_rm`` ...)."""
    from backend.rewards.reward_model import REWARD_MODEL_NAMES, build_rewards, load_reward_model

    reward_models = {}
    for aspect in REWARD_MODEL_NAMES:
        if aspect not in cfg.reward_funcs:
            continue
        path = getattr(cfg, f"{aspect}_model_path")
        if not path:
            wired = ctx.input(f"{aspect}_rm")
            if wired is None:
                raise ConfigError(f"reward_funcs names {aspect} but no reward model is wired to "
                                  f"{aspect}_rm and {aspect}_model_path is empty")
            path = wired.path
        reward_models[aspect] = load_reward_model(path, name=aspect)
        ctx.event(f"{aspect} reward model: {path}")
    return build_rewards(cfg.reward_funcs, cfg.reward_options(), reward_models,
                         reasoning_rows_only=reasoning_rows_only)


def general_behaviour(model, tokenizer, fmt, rows: list[dict], max_new_tokens: int) -> dict:
    """Greedy answers to held-out general prompts: the share refused, per kind
    (``refusal_forbidden`` should rise, ``refusal_benign`` stay low)."""
    from backend.generation import generate
    from backend.tasks.addition import is_refusal

    completions = generate(model, tokenizer, [fmt.render(r["prompt"], tokenizer) for r in rows],
                           max_new_tokens=max_new_tokens)
    out = {}
    for kind in sorted({r["kind"] for r in rows}):
        refused = [is_refusal(c[0]) for r, c in zip(rows, completions) if r["kind"] == kind]
        out[f"refusal_{kind}"] = sum(refused) / len(refused)
    return out


def steer_metrics_callback(ctx: StageContext, trainer):
    """Logs the steerable values each step runs with (``steer/*``), so the curves show where a
    live change took effect (commands apply between steps)."""
    from transformers import TrainerCallback

    class SteerMetrics(TrainerCallback):
        def on_step_begin(self, args, state, control, **kw):
            values = {"steer/temperature": trainer.temperature, "steer/beta": trainer.beta}
            for name, w in zip(trainer.reward_func_names, trainer.reward_weights.tolist()):
                values[f"steer/weight/{name}"] = w
            ctx.log_metrics(state.global_step + 1, values)

    return SteerMetrics()


def set_logprob_temperature(trainer, temperature: float) -> None:
    """TRL divides the logits by the temperature inside a fused LM head it patches onto the
    model when the trainer is built; patch it again so the loss's log-probabilities use the
    same temperature as sampling (otherwise the policy ratio compares log-probs computed at
    two temperatures). Each patch wraps the previous forward, whose plain (unfused) path the
    new one calls through, so generation is unchanged."""
    from trl.trainer.utils import add_fused_lm_head

    policy = trainer.accelerator.unwrap_model(trainer.model)
    if hasattr(policy, "get_base_model"):  # PEFT: the head lives on the base model
        policy = policy.get_base_model()
    add_fused_lm_head(policy, temperature=temperature,
                      cast_lm_head_to_fp32=trainer.args.cast_lm_head_to_fp32,
                      outputs=("log_probs", "entropy"))
    if trainer.ref_model is not None:
        add_fused_lm_head(trainer.ref_model, temperature=temperature,
                          cast_lm_head_to_fp32=trainer.args.cast_lm_head_to_fp32)


def grpo_setters(trainer) -> dict:
    """How GRPO's declared live parameters (``backend.steering.GRPO_PARAMS``) are applied; the
    values arrive parsed and validated. A setter raises when it cannot apply its value."""
    import torch

    def set_temperature(t: float) -> str:
        trainer.temperature = t
        if getattr(trainer, "generation_config", None) is not None:
            trainer.generation_config.temperature = t
        if getattr(trainer, "generation_kwargs", None) is not None:
            trainer.generation_kwargs["temperature"] = t
        if getattr(trainer, "vllm_generation", None) is not None:
            trainer.vllm_generation.temperature = t
        set_logprob_temperature(trainer, t)
        return f"temperature = {t:g} (sampling and log-probs)"

    def set_beta(b: float) -> str:
        if b != 0 and trainer.ref_model is None:
            raise ValueError("this stage started with beta=0, so no reference model was loaded; "
                             "start the stage with a small beta to adjust KL live")
        trainer.beta = b
        return f"beta = {b:g}"

    def set_weights(weights: list[float]) -> str:
        if len(weights) != len(trainer.reward_func_names):
            raise ValueError(f"need {len(trainer.reward_func_names)} weights "
                             f"({', '.join(trainer.reward_func_names)})")
        trainer.reward_weights = torch.tensor(weights, dtype=torch.float32)
        return "reward weights = " + ", ".join(
            f"{n} {w:g}" for n, w in zip(trainer.reward_func_names, weights))

    return {"temperature": set_temperature, "beta": set_beta, "reward_weights": set_weights}
