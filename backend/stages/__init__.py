"""One module per stage kind, and the one table that declares each kind's contract.

``STAGE_KINDS[kind]`` says what a stage kind is: its config dataclass, the inputs it consumes
and the outputs it produces (typed, see ``backend.contract``), the live parameters a user may
change while it runs (``backend.steering``), and the function that runs it. Recipes, the API,
the worker and the pages all read this table; nothing else lists stage kinds or parameters.

Importing this package never imports torch: stage modules import it inside ``run``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from backend import steering
from backend.contract import DATASET, EVAL_RESULTS, MODEL, PROBLEMS, REWARD_MODEL, Port
from backend.stages import evaluate, grpo, judge, pretrain, rejection
from backend.stages import distill, reward_model, sft
from backend.stages.common import StageConfig


@dataclass(frozen=True)
class StageKind:
    name: str
    config: type[StageConfig]
    run: Callable
    inputs: dict[str, Port]
    outputs: dict[str, str]  # output name -> artifact type
    live: tuple[steering.LiveParam, ...] = ()
    # Saves checkpoints it can resume from, so it answers a checkpoint-now request.
    checkpoints: bool = True

    def live_param(self, name: str) -> steering.LiveParam:
        return {p.name: p for p in self.live}[name]


STAGE_KINDS: dict[str, StageKind] = {k.name: k for k in (
    StageKind(
        "pretrain", pretrain.PretrainConfig, pretrain.run,
        inputs={},
        outputs={"model": MODEL, "problems": PROBLEMS},
        live=steering.TRAINER_PARAMS,
    ),
    StageKind(
        "grpo", grpo.GRPOStageConfig, grpo.run,
        inputs={
            "model": Port(MODEL, "the policy to train", config_field="model_path"),
            "problems": Port(PROBLEMS, "prompts with verifiable answers (and a held-out split)",
                             optional=True, config_field="dataset"),
            # Needed when reward_funcs names the aspect (checked when the run is created).
            "helpfulness_rm": Port(REWARD_MODEL, "the helpfulness reward model",
                                   optional=True, config_field="helpfulness_model_path",
                                   needed_when=grpo.reward_model_needed("helpfulness")),
            "harmlessness_rm": Port(REWARD_MODEL, "the harmlessness reward model",
                                    optional=True, config_field="harmlessness_model_path",
                                    needed_when=grpo.reward_model_needed("harmlessness")),
        },
        outputs={"model": MODEL, "problems": PROBLEMS},
        live=steering.GRPO_PARAMS,
    ),
    StageKind(
        "evaluate", evaluate.EvaluateConfig, evaluate.run,
        inputs={
            "model": Port(MODEL, "the model to evaluate", config_field="model_path"),
            "base_model": Port(MODEL, "the model it started from, scored alike", optional=True),
            # Unwired: the dataset setting, else the synthetic task setting names the problems.
            "problems": Port(PROBLEMS, "whose held-out split is scored", optional=True,
                             config_field="dataset", needed_when=evaluate.problems_needed),
        },
        outputs={"results": EVAL_RESULTS},
        checkpoints=False,
    ),
    StageKind(
        "judge", judge.JudgeStageConfig, judge.run,
        inputs={
            "model": Port(MODEL, "the model taught to give verdicts (the base)",
                          config_field="model_path"),
            "problems": Port(PROBLEMS, "a synthetic source sets the verdicts' digits",
                             optional=True),
        },
        outputs={"model": MODEL},
        live=steering.TRAINER_PARAMS,
    ),
    StageKind(
        "rejection", rejection.RejectionConfig, rejection.run,
        inputs={
            "model": Port(MODEL, "the policy that samples the candidates",
                          config_field="model_path"),
            "problems": Port(PROBLEMS, "the prompts (their training split)",
                             config_field="dataset"),
            "judge": Port(MODEL, "a generative judge (or judge_model_path / judge_endpoint)",
                          optional=True, config_field="judge_model_path"),
        },
        outputs={"dataset": DATASET},
        live=(steering.TEMPERATURE,),
    ),
    StageKind(
        "sft", sft.SFTStageConfig, sft.run,
        inputs={
            "model": Port(MODEL, "the model to fine-tune", config_field="model_path"),
            "dataset": Port(DATASET, "curated rows: the stage waits until the dataset is "
                            "marked ready, then trains on a frozen snapshot of the accepted "
                            "ones; unwired = cold start", optional=True, config_field="dataset"),
            "problems": Port(PROBLEMS, "held-out problems (scored at the end, never trained "
                             "on); a synthetic source sets the cold-start examples' digits",
                             optional=True),
        },
        outputs={"model": MODEL, "dataset": DATASET},
        live=steering.TRAINER_PARAMS,
    ),
    StageKind(
        "distill", distill.DistillConfig, distill.run,
        inputs={
            "model": Port(MODEL, "the student (trained)", config_field="model_path"),
            "teacher": Port(MODEL, "the teacher whose next-token distributions are the target "
                            "(same vocabulary as the student)", config_field="teacher_path"),
            "problems": Port(PROBLEMS, "the prompts the student samples on (and a held-out "
                             "split)", optional=True, config_field="dataset"),
        },
        outputs={"model": MODEL},
        live=(steering.TEMPERATURE, steering.LEARNING_RATE),
    ),
    StageKind(
        "reward_model", reward_model.RewardModelConfig, reward_model.run,
        inputs={
            "model": Port(MODEL, "the model the reward model starts from (a score head is "
                          "added)", config_field="model_path"),
            "problems": Port(PROBLEMS, "a synthetic source sets the generated pairs' digits",
                             optional=True),
        },
        outputs={"reward_model": REWARD_MODEL},
        live=steering.TRAINER_PARAMS,
    ),
)}

# Kept for callers that only need the config classes (forms, --set validation).
STAGE_CONFIGS: dict[str, type[StageConfig]] = {k: v.config for k, v in STAGE_KINDS.items()}
