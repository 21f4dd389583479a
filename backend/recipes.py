"""Recipes: ordered stages with their default configs, and presets that resize them.

A recipe names stage kinds in order; a preset overrides config fields per stage kind; ``--set``
overrides on top (``key=value`` for every stage that has the key, ``kind.key=value`` for one
stage kind, or ``stagekey.key=value`` for one stage). Every config is validated by its dataclass before a run is created, so a config
that cannot work is refused with a message instead of failing minutes later.

Each stage in a recipe has a key and says where its inputs come from (``"model":
"base.model"``: the ``model`` output of the stage keyed ``base``); ``backend.contract``
checks the wiring against each stage kind's declared inputs and outputs.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from backend.contract import WiringError, check_wiring
from backend.stages import STAGE_CONFIGS, STAGE_KINDS
from backend.stages.common import ConfigError, check_model_path
from storage.records import StageSpec


@dataclass(frozen=True)
class RecipeStage:
    key: str  # unique within the recipe; other stages' inputs name it ("base.model")
    kind: str
    name: str  # what the UI shows
    inputs: tuple[tuple[str, str], ...] = ()  # (input, "stage_key.output")
    # Settings this recipe gives the stage (its role: "reasoning RL" adds the language
    # reward); presets and --set still override them.
    settings: tuple[tuple[str, Any], ...] = ()


@dataclass(frozen=True)
class RecipeOption:
    """A recipe-level setting (``--set NAME=VALUE``) standing for an output of the recipe's own
    stages. Given, the stages in ``drops`` are left out, every stage wired to ``replaces``
    reads the value from the setting of that input instead (its ``config_field``), and an
    optional input wired to a dropped stage is left unwired."""

    name: str
    help: str
    replaces: str  # "teacher.model"
    drops: tuple[str, ...]  # stage keys not run when the option is given
    # Checks the value (ConfigError naming the option), before the stages' own checks.
    check: Callable[[str, str], None] = check_model_path


@dataclass(frozen=True)
class Recipe:
    name: str
    description: str
    stages: tuple[RecipeStage, ...]
    options: tuple[RecipeOption, ...] = ()


# Recipe "distill": 1-5 digit sums (accuracy follows the reasoning: the base model cannot
# recall such sums), a student of about a quarter of the teacher's parameters (head_dim 32),
# and the CPU seconds each student may train (time_budget_s, matched; eval_every=0 so that no
# student spends its budget on evaluations the others do not run). Sized for <= 30 minutes on
# 2 idle cores from CPU seconds measured per pre-training step on 1-5 digit sums (2026-12-01,
# on a machine loaded ~15-25, so pessimistic): teacher 1.44, student 0.51, plus ~34 s of start
# per stage; not yet confirmed by a whole run (docs/results.md, "Distillation vs RL").
_DISTILL_TOKENS = 80  # a 5-digit sum's worked columns and answer take about 70 tokens
_DISTILL_TASK = (("min_digits", 1), ("max_digits", 5), ("max_new_tokens", _DISTILL_TOKENS))
_STUDENT_SIZE = (("hidden_size", 64), ("num_layers", 2), ("num_heads", 2), ("num_kv_heads", 1),
                 ("intermediate_size", 256))
_STUDENT_BUDGET = (("time_budget_s", 180.0),)
_DISTILL_EVAL = (("max_new_tokens", _DISTILL_TOKENS), ("eval_problems", 200))

# r1's two SFT stages start from the tiny base; what decides their accuracy is how many rows
# they see (docs/results_r1.md, "SFT experiments"; held-out greedy pass@1 on 200 problems,
# 2026-12-01, base tiny-base-ab0c1300e15f: 10.5% as it answers, 75.5% when made to think).
# Cold start, 3 epochs of 300 worked examples: lr 2e-4 55.0%, 5e-4 62.5%, 2e-3 53.5% (run #24;
# the SFT wrote worse sums than the base itself); 2 epochs of 1,000 at 5e-4 81.0%, of 2,000 at
# 2e-3 87.5% (R1-Zero after 250 GRPO steps: 80.5%). The paper's cold start is "thousands" of
# examples, its SFT 2 epochs.
_R1_COLD = (("examples", 2000), ("epochs", 2.0), ("learning_rate", 2e-3))
# SFT on the curated rows (from the base, as the paper does): run #24's 299 rows (300 prompts x
# 4 candidates, mostly one distinct right text per prompt) gave 48.5% at 2e-3, 52.5% at 5e-4.
# Rows from 1,200 prompts x 2 candidates of the same RL model (738 reasoning rows), 2 epochs:
# 5e-4 66.0% but 0% refusals of forbidden prompts; 2e-3 57.0% (refusals 88%, of benign
# prompts 24% with 5% safety rows); 1e-3 with 10% safety rows 63.5%, refusing 98% of
# forbidden and 6% of benign prompts.
# A right worked solution is nearly one text per prompt, so deduplication keeps ~1 row per
# prompt: more prompts, fewer candidates each, for the same sampling cost.
# Whole run with 1,200 prompts (run #27, 500 held-out problems): cold start + reasoning RL
# 84.6% (R1-Zero, run #23: 77.6%), the final model 74.4%: SFT from the base on 1,024
# reasoning rows lost ~10 points of the RL model's 89.0% (200 problems). The same RL model
# resampled on 2,400 prompts x 2 (2,065 reasoning rows, 3,176 in all), SFT from the base at
# these settings: 90.0%, refusing 98% of forbidden and 0% of benign prompts.
_R1_SFT = (("epochs", 2.0), ("learning_rate", 1e-3))
_R1_REJECT = (("prompts", 2400), ("n_candidates", 2), ("safety_share", 0.10))

RECIPES: dict[str, Recipe] = {
    "pretrain-base": Recipe(
        "pretrain-base",
        "Pre-train the embedded tiny base model on synthetic addition and report its held-out "
        "accuracy (the demo's 'DeepSeek-V3-Base').",
        (RecipeStage("base", "pretrain", "pre-train base model"),),
    ),
    "r1-zero": Recipe(
        "r1-zero",
        "DeepSeek-R1-Zero: GRPO straight from the base model with rule rewards (accuracy + "
        "format), then a held-out evaluation of the base and the final model.",
        (RecipeStage("base", "pretrain", "base model (cached)"),
         RecipeStage("grpo", "grpo", "R1-Zero GRPO",
                     (("model", "base.model"), ("problems", "base.problems"))),
         RecipeStage("eval", "evaluate", "held-out evaluation",
                     (("model", "grpo.model"), ("base_model", "base.model"),
                      ("problems", "grpo.problems")))),
    ),
    "r1": Recipe(
        "r1",
        "DeepSeek-R1: cold-start SFT on worked examples with a readable summary, reasoning RL "
        "(accuracy + format + language consistency), rejection sampling judged by rules and a "
        "generative judge, hand curation (the run waits for review unless auto_accept=true), "
        "SFT on the curated snapshot, RL again, and a held-out evaluation against the base.",
        (RecipeStage("base", "pretrain", "base model (cached)"),
         RecipeStage("cold", "sft", "cold-start SFT",
                     (("model", "base.model"), ("problems", "base.problems")),
                     settings=_R1_COLD),
         RecipeStage("rl", "grpo", "reasoning RL",
                     (("model", "cold.model"), ("problems", "base.problems")),
                     settings=(("reward_funcs", ["accuracy", "format", "language_consistency"]),
                               ("reward_weights", [1.0, 0.5, 0.2]), ("steps", 100),
                               ("max_completion_length", 64))),
         RecipeStage("judge", "judge", "generative judge",
                     (("model", "base.model"), ("problems", "base.problems"))),
         RecipeStage("reject", "rejection", "rejection sampling",
                     (("model", "rl.model"), ("problems", "rl.problems"),
                      ("judge", "judge.model")),
                     settings=_R1_REJECT),
         RecipeStage("sft", "sft", "SFT on curated data",
                     (("model", "base.model"), ("dataset", "reject.dataset"),
                      ("problems", "base.problems")),
                     settings=_R1_SFT),
         RecipeStage("rm_help", "reward_model", "helpfulness reward model",
                     (("model", "base.model"), ("problems", "base.problems")),
                     settings=(("aspect", "helpfulness"),)),
         RecipeStage("rm_harm", "reward_model", "harmlessness reward model",
                     (("model", "base.model"), ("problems", "base.problems")),
                     settings=(("aspect", "harmlessness"),)),
         RecipeStage("final", "grpo", "RL for all scenarios",
                     (("model", "sft.model"), ("problems", "base.problems"),
                      ("helpfulness_rm", "rm_help.reward_model"),
                      ("harmlessness_rm", "rm_harm.reward_model")),
                     settings=(("reward_funcs", ["accuracy", "format", "readable_summary",
                                                 "helpfulness", "harmlessness"]),
                               ("reward_weights", [1.0, 0.5, 0.2, 0.5, 0.5]),
                               ("general_prompts", 0.25), ("steps", 100),
                               ("max_completion_length", 64))),
         RecipeStage("eval", "evaluate", "held-out evaluation",
                     (("model", "final.model"), ("base_model", "base.model"),
                      ("problems", "base.problems")),
                     settings=(("max_new_tokens", 64),))),
    ),
    # One stage, no wiring: the model and problems come from its settings (model_path, and
    # dataset or task). What `python -m backend eval CHECKPOINT` creates.
    "evaluate": Recipe(
        "evaluate",
        "Evaluate any checkpoint the way the R1 paper reports it (set model_path, and dataset "
        "or task): greedy pass@1, pass@1 over k samples, cons@k, pass@k, format, language "
        "consistency, reasoning length; zero-shot and few-shot side by side (few_shot=0,4).",
        (RecipeStage("eval", "evaluate", "evaluation", settings=(("task", "addition"),)),),
    ),
    "distill": Recipe(
        "distill",
        "Distillation vs RL at matched compute (the R1 paper's last finding): a teacher (R1-Zero "
        "GRPO on the base model, or teacher_path) and a smaller student pre-trained on the same "
        "corpus; the student is trained three ways for the same CPU seconds (time_budget_s): "
        "SFT on the teacher's rejection-sampled traces, on-policy logit distillation, and GRPO "
        "alone; the teacher and every student are evaluated alike. 1-5 digit sums, where "
        "reasoning decides accuracy.",
        (RecipeStage("teacher_base", "pretrain", "teacher base model (cached)",
                     settings=_DISTILL_TASK),
         RecipeStage("student_base", "pretrain", "student base model, smaller (cached)",
                     settings=_DISTILL_TASK + _STUDENT_SIZE),
         RecipeStage("teacher", "grpo", "teacher: R1-Zero GRPO",
                     (("model", "teacher_base.model"), ("problems", "teacher_base.problems")),
                     settings=(("max_completion_length", _DISTILL_TOKENS), ("steps", 150))),
         RecipeStage("traces", "rejection", "teacher traces (rejection sampling)",
                     (("model", "teacher.model"), ("problems", "student_base.problems")),
                     # Distillation data is the teacher's reasoning only, judged by the rule.
                     settings=(("non_reasoning_share", 0.0), ("safety_share", 0.0),
                               ("correct_by", "rule"),
                               ("prompts", 400), ("n_candidates", 2),
                               ("max_new_tokens", _DISTILL_TOKENS + 16))),
         RecipeStage("sft_student", "sft", "student: SFT on the teacher's traces",
                     (("model", "student_base.model"), ("dataset", "traces.dataset"),
                      ("problems", "student_base.problems")),
                     # Headless by default; auto_accept=false waits for review on Curation.
                     settings=(("auto_accept", True), ("steps", 5000), ("batch_size", 16),
                               ("max_new_tokens", _DISTILL_TOKENS)) + _STUDENT_BUDGET),
         RecipeStage("logit_student", "distill", "student: on-policy logit distillation",
                     (("model", "student_base.model"), ("teacher", "teacher.model"),
                      ("problems", "student_base.problems")),
                     settings=(("steps", 5000), ("max_completion_length", _DISTILL_TOKENS),
                               ("eval_every", 0)) + _STUDENT_BUDGET),
         RecipeStage("rl_student", "grpo", "student: GRPO alone",
                     (("model", "student_base.model"), ("problems", "student_base.problems")),
                     settings=(("steps", 5000), ("max_completion_length", _DISTILL_TOKENS),
                               ("eval_every", 0)) + _STUDENT_BUDGET),
         RecipeStage("eval_teacher", "evaluate", "evaluation: teacher",
                     (("model", "teacher.model"), ("base_model", "teacher_base.model"),
                      ("problems", "student_base.problems")), settings=_DISTILL_EVAL),
         RecipeStage("eval_sft", "evaluate", "evaluation: SFT-distilled student (and its base)",
                     (("model", "sft_student.model"), ("base_model", "student_base.model"),
                      ("problems", "student_base.problems")), settings=_DISTILL_EVAL),
         RecipeStage("eval_logit", "evaluate", "evaluation: logit-distilled student",
                     (("model", "logit_student.model"), ("problems", "student_base.problems")),
                     settings=_DISTILL_EVAL),
         RecipeStage("eval_rl", "evaluate", "evaluation: GRPO-only student",
                     (("model", "rl_student.model"), ("problems", "student_base.problems")),
                     settings=_DISTILL_EVAL)),
        options=(RecipeOption(
            "teacher_path", "the teacher's model folder (e.g. the final checkpoint of an r1 or "
            "r1-zero run; the student's tokenizer); empty = train one in the recipe",
            replaces="teacher.model", drops=("teacher_base", "teacher")),),
    ),
}

# Presets resize a recipe. "tiny" is the embedded default (minutes on a laptop CPU); "smoke"
# is seconds, for tests and for trying the UI.
PRESETS: dict[str, dict[str, dict[str, Any]]] = {
    # The evaluate stage's defaults are the R1 paper's (k=8 shown here as the CLI's); tiny
    # keeps 4 samples per problem so the r1 / r1-zero evaluations stay about a minute.
    "tiny": {"evaluate": {"k": 4}},
    "smoke": {
        "pretrain": {"steps": 40, "batch_size": 32, "hidden_size": 32, "num_layers": 1,
                     "num_heads": 1, "num_kv_heads": 1, "intermediate_size": 64,
                     "heldout_size": 100, "eval_problems": 50, "save_steps": 20,
                     "warmup_steps": 5},
        "grpo": {"steps": 6, "batch_size": 16, "num_generations": 4,
                 "max_completion_length": 24, "eval_every": 3, "eval_problems": 20,
                 "save_steps": 3},
        "evaluate": {"eval_problems": 20, "k": 2, "max_new_tokens": 24},
        "sft": {"examples": 32, "steps": 4, "batch_size": 8, "eval_problems": 10,
                "max_new_tokens": 24, "save_steps": 2},
        "judge": {"steps": 4, "batch_size": 16, "eval_examples": 16, "save_steps": 2},
        "rejection": {"prompts": 8, "chunk_prompts": 4, "n_candidates": 2,
                      "max_new_tokens": 24},
        "reward_model": {"steps": 4, "batch_size": 8, "pairs": 32},
        "distill": {"steps": 4, "batch_size": 8, "max_completion_length": 24, "eval_every": 2,
                    "eval_problems": 10, "save_steps": 2},
        # Recipe distill: a smoke teacher writes no correct trace, so auto-accepting would
        # leave nothing to train on; the run waits for review instead (accept rows by hand).
        "sft_student": {"auto_accept": False},
    },
}


def parse_sets(items: list[str]) -> dict[str, str]:
    out = {}
    for item in items:
        if "=" not in item:
            raise ConfigError(f"--set {item!r}: expected key=value")
        key, value = item.split("=", 1)
        out[key.strip()] = value.strip()
    return out


def default_config(recipe: str, preset: str) -> list[StageSpec]:
    # Not wiring-checked: the form these defaults fill may still need a setting (model_path).
    return build_stages(recipe, preset, {}, wiring=False)


def build_stages(recipe: str, preset: str, sets: dict[str, Any], *,
                 wiring: bool = True) -> list[StageSpec]:
    """The recipe's stages with preset and ``sets`` applied, each config validated;
    ``wiring=False`` leaves the wiring check to the caller (the UI form, which fills in
    settings such as the ``evaluate`` recipe's ``model_path`` before the run is created)."""
    if recipe not in RECIPES:
        raise ConfigError(f"unknown recipe {recipe!r}; choose one of {', '.join(RECIPES)}")
    if preset not in PRESETS:
        raise ConfigError(f"unknown preset {preset!r}; choose one of {', '.join(PRESETS)}")
    specs = []
    for stage in RECIPES[recipe].stages:
        values = dict(STAGE_CONFIGS[stage.kind]().to_dict())
        values.update(dict(stage.settings))
        # A preset sizes every stage of a kind, then (more specific) one stage by its key.
        values.update(PRESETS[preset].get(stage.kind, {}))
        values.update(PRESETS[preset].get(stage.key, {}))
        specs.append(StageSpec(kind=stage.kind, name=stage.name, config=values, key=stage.key,
                               inputs=dict(stage.inputs)))
    specs, sets = apply_options(RECIPES[recipe], specs, sets)
    return apply_sets(specs, sets, f"recipe {recipe!r}", wiring=wiring)


def apply_options(recipe: Recipe, specs: list[StageSpec],
                  sets: dict[str, Any]) -> tuple[list[StageSpec], dict[str, Any]]:
    """Apply the recipe options (:class:`RecipeOption`) given in ``sets``; returns the specs
    and the settings left for the stages."""
    given = {o.name: (o, sets[o.name]) for o in recipe.options if sets.get(o.name)}
    if not given:
        return specs, sets
    for option, value in given.values():
        option.check(option.name, value)
    dropped = {key for option, _ in given.values() for key in option.drops}
    out = []
    for spec in specs:
        if spec.key in dropped:
            continue
        config, inputs = dict(spec.config), dict(spec.inputs)
        for name, ref in spec.inputs.items():
            port = STAGE_KINDS[spec.kind].inputs[name]
            option = next((o for o, _ in given.values() if o.replaces == ref), None)
            if option is not None:
                if not port.config_field:
                    raise ConfigError(f"{option.name}: stage {spec.key!r} cannot read its "
                                      f"{name!r} input from a setting")
                config[port.config_field] = given[option.name][1]
                del inputs[name]
            elif ref.partition(".")[0] in dropped:
                if not port.optional:
                    raise ConfigError(f"stage {spec.key!r} needs {ref!r}, which does not run "
                                      f"when {', '.join(given)} is given")
                del inputs[name]
        out.append(StageSpec(kind=spec.kind, name=spec.name, config=config, key=spec.key,
                             inputs=inputs))
    return out, {k: v for k, v in sets.items() if k not in given}


def apply_sets(specs: list[StageSpec], sets: dict[str, Any], what: str, *,
               wiring: bool = True) -> list[StageSpec]:
    """Override settings (``key``, ``kind.key`` or ``stagekey.key``), validate every stage's
    config and the wiring; returns new specs or raises ConfigError saying what to fix."""
    used: set[str] = set()
    out = []
    for spec in specs:
        cls = STAGE_CONFIGS[spec.kind]
        values = dict(spec.config)
        fields = {f for f in cls().to_dict()}
        for key, value in sets.items():
            target, _, field_name = key.rpartition(".")
            if target and target not in (spec.kind, spec.key):
                continue
            if field_name in fields:
                values[field_name] = value
                used.add(key)
        try:
            config = cls.from_dict(values).to_dict()
        except ConfigError as exc:
            raise ConfigError(f"{spec.kind} stage: {exc}") from exc
        out.append(StageSpec(kind=spec.kind, name=spec.name, config=config, key=spec.key,
                             inputs=dict(spec.inputs)))
    unused = sorted(set(sets) - used)
    if unused:
        kinds = [s.kind for s in specs]
        known = sorted({f for kind in kinds for f in STAGE_CONFIGS[kind]().to_dict()})
        raise ConfigError(f"setting(s) {', '.join(unused)} match no stage of {what} "
                          f"(stages: {', '.join(kinds)}); known settings: {', '.join(known)}")
    if wiring:
        check_specs(out)
    return out


def check_specs(specs: list[StageSpec]) -> None:
    """Refuse stages whose inputs no earlier stage provides (ConfigError naming them)."""
    try:
        check_wiring([(s.key or s.kind, s.kind, s.inputs, s.config) for s in specs],
                     {k: (v.inputs, v.outputs) for k, v in STAGE_KINDS.items()})
    except WiringError as exc:
        raise ConfigError(str(exc)) from None
