"""What stages hand each other: typed artifacts, declared inputs and outputs, and the wiring check.

Every stage kind declares the inputs it consumes and the outputs it produces, each with a type
(:data:`ARTIFACT_TYPES`). A recipe wires each input to an earlier stage's output by name,
``{"model": "base.model"}`` ("the ``model`` output of the stage whose key is ``base``");
:func:`check_wiring` refuses, when a run is created, an input that nothing provides or whose
type does not match, naming the stage and the input.

At run time a stage reads its inputs as typed records (:class:`ModelArtifact`,
:class:`ProblemSource`, ...) and returns its outputs as such records; they are stored on the
stage row as JSON with their type (``{"model": {"type": "model", "path": ...}}``), which is what
``python -m backend status RUN --json`` shows.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar, Optional

from backend.prompts import PromptFormat

MODEL, PROBLEMS, DATASET, REWARD_MODEL, EVAL_RESULTS = (
    "model", "problems", "dataset", "reward_model", "eval_results")
ARTIFACT_TYPES = (MODEL, PROBLEMS, DATASET, REWARD_MODEL, EVAL_RESULTS)


class WiringError(ValueError):
    """A recipe whose stages cannot be connected; the message names the stage and input."""


@dataclass(frozen=True)
class Port:
    """One declared input of a stage kind."""

    type: str
    help: str
    optional: bool = False
    # A config setting that, when non-empty, provides this input instead of the wiring
    # (``model_path`` for a model, ``dataset`` for problems).
    config_field: Optional[str] = None
    # An optional input that some configs need: given the stage's config, the reason it is
    # needed ("reward_funcs names helpfulness"), or None. Checked when the run is created.
    needed_when: Optional[Callable[[dict[str, Any]], Optional[str]]] = None


# ----------------------------------------------------------------------------- artifacts
@dataclass
class Artifact:
    type: ClassVar[str] = ""

    def to_dict(self) -> dict[str, Any]:
        return {"type": self.type, **dataclasses.asdict(self)}

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "Artifact":
        values = {k: v for k, v in values.items() if k != "type"}
        return cls(**values)


@dataclass
class ModelArtifact(Artifact):
    """A model folder (HF format, tokenizer beside it) and how it expects its prompts."""

    type: ClassVar[str] = MODEL
    path: str = ""
    prompt_format: dict[str, str] = field(default_factory=lambda: PromptFormat().to_dict())

    @property
    def format(self) -> PromptFormat:
        return PromptFormat.from_dict(self.prompt_format)


@dataclass
class RewardModelArtifact(ModelArtifact):
    type: ClassVar[str] = REWARD_MODEL


@dataclass
class ProblemSource(Artifact):
    """Problems with verifiable answers, with a training split and a held-out split that never
    overlap: the synthetic addition task, or a dataset file / folder."""

    type: ClassVar[str] = PROBLEMS
    kind: str = "synthetic"  # synthetic | file
    # synthetic: the addition task's parameters
    min_digits: int = 1
    max_digits: int = 3
    heldout_size: int = 500
    # share of problems whose prompt asks for reasoning in the second script (addition.py)
    second_script_share: float = 0.0
    # file
    path: str = ""
    prompt_column: str = "question"
    answer_column: str = "answer"
    answer_format: str = "auto"
    train_split: str = "train"
    test_split: str = "test"
    # A dataset without a test split: its first N training rows are held out instead.
    heldout_from_train: int = 0

    @classmethod
    def from_dataset_setting(cls, config: Any) -> Optional["ProblemSource"]:
        """The problems of a stage config's ``dataset`` setting, read with its
        ``prompt_column``, ``answer_column`` and ``answer_format``; None when it is empty."""
        if not config.dataset:
            return None
        return cls(kind="file", path=config.dataset, prompt_column=config.prompt_column,
                   answer_column=config.answer_column, answer_format=config.answer_format)

    def _task(self):
        from backend.tasks.addition import AdditionTask
        return AdditionTask(min_digits=self.min_digits, max_digits=self.max_digits,
                            heldout_size=self.heldout_size,
                            second_script_share=self.second_script_share)

    def _load(self, split: str, limit: Optional[int] = None):
        from backend.tasks.loaders import load_problems
        return load_problems(self.path, prompt_column=self.prompt_column,
                             answer_column=self.answer_column, answer_format=self.answer_format,
                             split=split, limit=limit)

    def heldout(self, n: Optional[int] = None):
        """Held-out problems (evaluation only), the first ``n`` of them."""
        if self.kind == "synthetic":
            return self._task().heldout(n)
        if self.heldout_from_train:
            return self._load(self.train_split, limit=self.heldout_from_train)[:n]
        return self._load(self.test_split, limit=n)

    def train(self, n: int, seed: int = 0, distinct: bool = False):
        """Training problems, none of them held out: ``n`` drawn from the synthetic task, or
        every training row of a file (``n`` does not apply: a file is seen in epochs)."""
        if self.kind == "synthetic":
            return self._task().train_problems(n, seed=seed + 7, distinct=distinct)
        from backend.tasks.loaders import load_problems
        from backend.tasks.problem import without_prompts

        held = [p.prompt for p in self.heldout()]
        rows = load_problems(self.path, prompt_column=self.prompt_column,
                             answer_column=self.answer_column, answer_format=self.answer_format,
                             split=self.train_split)
        if self.heldout_from_train:
            rows = rows[self.heldout_from_train:]
        # Also drops a held-out problem that appears in the training split (up to spacing).
        return without_prompts(rows, held)

    def with_heldout(self, n: int) -> "ProblemSource":
        """This source with a held-out split that exists: a file without a ``test`` split holds
        out its first ``n`` training rows (and never trains on them)."""
        if self.kind != "file" or self.heldout_from_train:
            return self
        from backend.tasks.loaders import available_splits

        if self.test_split in available_splits(self.path):
            return self
        return dataclasses.replace(self, heldout_from_train=n)

    def describe(self) -> dict[str, Any]:
        """What an evaluation records about the problems it scored."""
        if self.kind == "synthetic":
            return {"dataset": f"synthetic addition ({self.min_digits}-{self.max_digits} digits)",
                    "split": "held-out", "answer_format": "plain"}
        split = (f"{self.train_split}[:{self.heldout_from_train}]" if self.heldout_from_train
                 else self.test_split)
        return {"dataset": self.path, "split": split, "answer_format": self.answer_format}


@dataclass
class DatasetArtifact(Artifact):
    """A dataset in the store; ``snapshot`` pins the exact rows a stage trained on."""

    type: ClassVar[str] = DATASET
    dataset_id: int = 0
    snapshot: str = ""


@dataclass
class EvalResults(Artifact):
    type: ClassVar[str] = EVAL_RESULTS
    summary: dict[str, Any] = field(default_factory=dict)


_ARTIFACTS: dict[str, type[Artifact]] = {
    cls.type: cls for cls in (ModelArtifact, RewardModelArtifact, ProblemSource,
                              DatasetArtifact, EvalResults)
}


def artifact_from_dict(values: dict[str, Any]) -> Artifact:
    kind = values.get("type")
    if kind not in _ARTIFACTS:
        raise WiringError(f"stored output of unknown type {kind!r}; known: "
                          f"{', '.join(_ARTIFACTS)}")
    return _ARTIFACTS[kind].from_dict(values)


# ----------------------------------------------------------------------------- wiring
def parse_source(ref: str) -> tuple[str, str]:
    """``"base.model"`` -> ``("base", "model")``."""
    stage_key, dot, output = ref.partition(".")
    if not dot or not stage_key or not output:
        raise WiringError(f"input source {ref!r} must read STAGE_KEY.OUTPUT, e.g. base.model")
    return stage_key, output


def check_wiring(stages: list[tuple[str, str, dict[str, str], dict[str, Any]]],
                 declared: dict[str, tuple[dict[str, Port], dict[str, str]]]) -> None:
    """Refuse a pipeline whose inputs cannot be resolved.

    ``stages``: (key, kind, wiring, config) in order; ``declared``: kind -> (inputs, outputs).
    """
    produced: dict[str, dict[str, str]] = {}  # stage key -> {output: type}
    for key, kind, wiring, config in stages:
        if key in produced:
            raise WiringError(f"two stages are named {key!r}; stage keys must be unique")
        inputs, outputs = declared[kind]
        unknown = sorted(set(wiring) - set(inputs))
        if unknown:
            raise WiringError(f"stage {key!r} ({kind}) has no input(s) {', '.join(unknown)}; "
                              f"its inputs: {', '.join(inputs) or 'none'}")
        for name, port in inputs.items():
            if port.config_field and config.get(port.config_field):
                continue  # given directly by a setting
            ref = wiring.get(name)
            if ref is None:
                reason = port.needed_when(config) if port.needed_when else None
                if port.optional and not reason:
                    continue
                hint = (f" or set {kind}.{port.config_field}" if port.config_field else "")
                because = f" (because {reason})" if reason else ""
                raise WiringError(f"stage {key!r} ({kind}) needs input {name!r} ({port.type})"
                                  f"{because}: no earlier stage provides it; wire it to an "
                                  f"earlier stage's {port.type} output{hint}")
            src_key, src_out = parse_source(ref)
            if src_key not in produced:
                raise WiringError(f"stage {key!r} ({kind}) input {name!r} <- {ref!r}: no "
                                  f"earlier stage is named {src_key!r} (earlier: "
                                  f"{', '.join(produced) or 'none'})")
            if src_out not in produced[src_key]:
                raise WiringError(f"stage {key!r} ({kind}) input {name!r} <- {ref!r}: stage "
                                  f"{src_key!r} has no output {src_out!r} (its outputs: "
                                  f"{', '.join(produced[src_key]) or 'none'})")
            if produced[src_key][src_out] != port.type:
                raise WiringError(f"stage {key!r} ({kind}) input {name!r} needs a {port.type}, "
                                  f"but {ref!r} is a {produced[src_key][src_out]}")
        produced[key] = dict(outputs)
