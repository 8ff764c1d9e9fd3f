"""The method contract, and with `methods.api` the whole public API of a method plugin (README, "Adding a method").

A method sees the training side of the benchmark only (`Bench`): the generic model, the p-Model zoo,
train images (and frozen train features for head-only archs), the p-Model architecture, the text/image
encoders and one service, `Bench.score_on_train`. `fit` learns and saves state under its workdir
(`save_state`, resumable `save_checkpoint`); `generate` returns one parameter vector per task in the
p-Model's flat layout. The harness evaluates the vectors, so every method is judged alike. Optional
capabilities (`Candidates`, `Reconstructs`, `Promptable`) and the shared helpers live in `methods.api`; every
name of it is re-exported here, so `from methods.base import ...` is a method's one import from this project.
"""
from __future__ import annotations

import copy
import dataclasses
import os
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, ClassVar

import torch
from torch import Tensor

from benchmarks import artifacts
from benchmarks.train import load_zoo
from methods.api import *  # noqa: F401,F403 (the public API: one import for a method)
from methods.api import Generic, Layout, PModelArch
from methods.api import __all__ as _api_names

__all__ = ["Bench", "Method", "OptionRule", "Tasks", "Zoo", "option", *_api_names]


@dataclass
class Zoo:
    """The fine-tuned p-Models a generative method learns from: (task, parameter vector, train accuracy)."""

    task_ids: list[str]
    classes: list[list[str]]  # per p-Model, its task's class names in output order
    theta: Tensor  # [n_models, n_params]
    train_acc: Tensor  # [n_models]

    def __len__(self) -> int:
        return len(self.task_ids)

    @classmethod
    def load(cls, path) -> "Zoo":
        """A fine-tuned record (benchmarks.train.save_zoo: the zoo file's one format)."""
        d = load_zoo(path)
        return cls(d["task_ids"], d["classes"], d["theta"], d["train_acc"])


@dataclass
class Tasks:
    """Task descriptions to generate for: ids and ordered class names (and optional descriptions)."""

    ids: list[str]
    classes: list[list[str]]

    def __len__(self) -> int:
        return len(self.ids)

    @classmethod
    def from_records(cls, records: list[dict]) -> "Tasks":
        return cls([r["id"] for r in records], [list(r["classes"]) for r in records])

    def class_indices(self, known: list[str]) -> Tensor:
        """[n_tasks, K] indices into `known`; a name not in `known` fails, listing every unknown one."""
        index = {c: i for i, c in enumerate(known)}
        unknown = sorted({c for cs in self.classes for c in cs if c not in index})
        if unknown:
            raise ValueError(f"unknown class names {unknown[:10]}{' ...' if len(unknown) > 10 else ''}: this method "
                             "can only use the dataset's classes")
        if len({len(cs) for cs in self.classes}) > 1:
            raise ValueError("tasks of different sizes: generate each size separately")
        return torch.tensor([[index[c] for c in cs] for cs in self.classes], dtype=torch.long)


@dataclass
class Bench:
    """The training side of one (dataset, arch) benchmark."""

    arch: PModelArch
    generic: Generic
    zoo: Zoo
    train_x: Tensor  # uint8 [N, 3, 32, 32]
    train_y: Tensor  # int64 [N], index into class_names
    class_names: list[str]
    num_classes: int = 10  # K of the p-Models
    train_features: Tensor | None = None  # [N, d] frozen features (head-only archs)
    seed: int = 0
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    encoder_cache: Path | None = None
    text_encoder_spec: dict = field(default_factory=lambda: {"name": "minilm"})  # the config's `encoder`
    dataset: str = ""
    # the harness's train-set scoring (`score_on_train`), injected; None: the evaluation engine's
    # (benchmarks.evaluate.train_scores). A signature (bench, theta, tasks, *, shots, key) -> (accuracy, loss).
    scorer: Callable | None = field(default=None, repr=False, compare=False)

    @property
    def layout(self) -> Layout:
        return self.arch.layout(self.num_classes)

    def encoder(self, name: str, **options):
        """A text/image encoder by name, cached per (encoder, text) under `encoder_cache`."""
        from benchmarks.encoders import get_encoder
        return get_encoder(name, cache_dir=self.encoder_cache, **options)

    def text_encoder(self, name: str | None = None):
        """A method's text encoder: `name` if given (a method option), else the benchmark's configured one
        (config key `encoder`: clip | minilm | table)."""
        if name:
            return self.encoder(name)
        spec = self.text_encoder_spec
        return self.encoder(spec["name"], **spec.get("options", {}))

    def score_on_train(self, theta: Tensor, tasks: "Tasks", *, shots: int | None = None, key: tuple = (),
                       loss: bool = False) -> Tensor | tuple[Tensor, Tensor]:
        """Accuracy (a fraction) of p-Model vectors on each task's TRAIN images, output i = class i of the task:
        [n_tasks] for theta [n_tasks, P], [n_tasks, n_candidates] for [n_tasks, n_candidates, P]. The test
        split is never touched. `shots`: None, every train image of the task's classes; n, n images per class
        drawn with `derive_seed(seed, *key, task id)`. `loss=True`: (accuracy, mean cross-entropy)."""
        scorer = self.scorer
        if scorer is None:
            from benchmarks.evaluate import train_scores as scorer
        acc, ce = scorer(self, theta, tasks, shots=shots, key=key)
        return (acc, ce) if loss else acc


# ----------------------------------------------------------------------------- method options

STATE, CHECKPOINT = "state.pt", "checkpoint.pt"  # files under a method's workdir

OPTION = "nndiff.option"  # dataclass field metadata key of an `OptionRule`


@dataclass(frozen=True)
class OptionRule:
    """What a method option accepts beyond its annotated type; read by `Method.check_options`, so a config is
    checked in full before any job starts (`nndiff check-config`, `snakemake -n`)."""

    choices: tuple | None = None  # the valid values (of each item, for a list option)
    min: float | None = None  # inclusive bounds (of each item, for a list option)
    max: float | None = None
    above: float | None = None  # exclusive lower bound: a learning rate must be > 0
    generate: bool = False  # the fit ignores it (sampling, selection, bookkeeping): a variant may change it
    help: str = ""


def option(default: Any = dataclasses.MISSING, *, choices=None, min=None, max=None, above=None,  # noqa: A002
           generate: bool = False, help: str = "") -> Any:
    """A `Config` field with its constraints, e.g. `lr: float = option(4e-4, above=0)` or
    `sampler: str = option("ddim", choices=SAMPLERS, generate=True)` (see `OptionRule`)."""
    rule = OptionRule(tuple(choices) if choices is not None else None, min, max, above, generate, help)
    if isinstance(default, (list, dict, set)):  # a mutable default: every Config gets its own copy
        return field(default_factory=lambda: copy.copy(default), metadata={OPTION: rule})
    return field(default=default, metadata={OPTION: rule})


def _accepts(hint: Any, value: Any) -> bool:
    """Whether `value` (as JSON/YAML gives it) fits a Config annotation. An int is a float; a bool is no int;
    a list is a tuple. Annotations this does not know are not checked."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is Any:
        return True
    if origin in (typing.Union, types.UnionType):
        return any(_accepts(a, value) for a in args)
    if hint is type(None):
        return value is None
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if origin is typing.Literal:
        return value in args
    if hint in (list, tuple) or origin in (list, tuple):
        items = [a for a in args if a is not Ellipsis]
        if not isinstance(value, (list, tuple)):
            return False
        if origin is tuple and items and Ellipsis not in args:  # tuple[int, str]: fixed length
            return len(value) == len(items) and all(_accepts(a, v) for a, v in zip(items, value))
        return all(_accepts(items[0] if items else Any, v) for v in value)
    if hint is dict or origin is dict:
        return isinstance(value, dict)
    return isinstance(value, hint) if isinstance(hint, type) else True


def _type_name(hint: Any) -> str:
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        return " or ".join(_type_name(a) for a in typing.get_args(hint))
    if hint is type(None):
        return "None"
    if typing.get_origin(hint) in (list, tuple):
        items = [a for a in typing.get_args(hint) if a is not Ellipsis]
        return f"a list of {_type_name(items[0])}" if items else "a list"
    return getattr(hint, "__name__", str(hint))


def _option_problem(name: str, value: Any, hint: Any, rule: OptionRule | None) -> str | None:
    """What is wrong with one option value, as the end of a one-line message; None if nothing."""
    if not _accepts(hint, value):
        return f"{name} must be {_type_name(hint)}, got {value!r} ({type(value).__name__})"
    if rule is None or value is None:
        return None
    for v in value if isinstance(value, (list, tuple)) else [value]:
        if rule.choices is not None and v not in rule.choices:
            return f"unknown {name} {v!r}; valid: {list(rule.choices)}"
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            continue
        if rule.min is not None and v < rule.min:
            return f"{name} must be >= {rule.min}, got {v!r}"
        if rule.max is not None and v > rule.max:
            return f"{name} must be <= {rule.max}, got {v!r}"
        if rule.above is not None and v <= rule.above:
            return f"{name} must be > {rule.above}, got {v!r}"
    return None


class Method:
    """Base class of every method plugin. Subclasses set `name`, a `Config` dataclass, `fit` and `generate`."""

    name: ClassVar[str] = ""
    output_space: ClassVar[str] = "task"  # "all": vectors answer among all dataset classes (generic model)

    @dataclass
    class Config:
        pass

    def __init__(self, config: dict | Any | None = None):
        where = f"method {self.name!r}"
        if config is None or isinstance(config, dict):
            self.check_options(config or {}, where)
            config = self.Config(**(config or {}))
        elif isinstance(config, self.Config):  # built in Python: the same checks as a config file's options
            self.check_options({f.name: getattr(config, f.name) for f in dataclasses.fields(config)}, where)
        self.config = config
        self.bench: Bench | None = None
        self.workdir: Path | None = None
        self._state: dict | None = None

    @classmethod
    def check_options(cls, options: dict, where: str) -> None:
        """Check options by name, type (the Config annotation) and `option()` rule, before anything runs.

        Raises ValueError with one line starting with `where` (a config key path, e.g. "methods.tina")."""
        fields = {f.name: f for f in dataclasses.fields(cls.Config)}
        unknown = sorted(set(options) - set(fields))
        if unknown:
            raise ValueError(f"{where}: unknown options {unknown}; valid: {sorted(fields)}")
        try:
            hints = typing.get_type_hints(cls.Config)
        except Exception:  # an annotation a plugin cannot resolve here: names and rules are still checked
            hints = {}
        for name, value in options.items():
            problem = _option_problem(name, value, hints.get(name, Any), fields[name].metadata.get(OPTION))
            if problem:
                raise ValueError(f"{where}: {problem}")

    @classmethod
    def generate_options(cls) -> tuple[str, ...]:
        """Options only `generate` reads (marked `option(..., generate=True)`): a variant may change them and
        still reuse its base's fit."""
        return tuple(f.name for f in dataclasses.fields(cls.Config) if f.metadata.get(OPTION, OptionRule()).generate)

    def setup(self, bench: Bench, workdir: str | Path) -> "Method":
        """Called by the harness before `fit` and before `generate` (which may run in a fresh process)."""
        self.bench, self.workdir = bench, Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self._state = None  # a new workdir: forget state kept from an earlier fit
        return self

    @property
    def layout(self) -> Layout:
        return self.bench.arch.layout(len(self.bench.class_names) if self.output_space == "all" else self.bench.num_classes)

    def text_encoder_for(self, name: str | None = None, *, fitted: str | None = None):
        """The method's text encoder: `name` (its `encoder` option) or the benchmark's configured one. With
        `fitted`, the encoder name its state was fitted with, any other encoder fails."""
        encoder = self.bench.text_encoder(name)
        if fitted is not None and encoder.name != fitted:
            raise ValueError(f"{self.name} was fitted with text encoder {fitted!r}, generating with "
                             f"{encoder.name!r}: use the same encoder")
        return encoder

    def fit(self, bench: Bench, workdir: Path) -> None:
        raise NotImplementedError

    def generate(self, tasks: Tasks) -> Tensor:
        """One parameter vector per task: [n_tasks, layout.n_params]."""
        raise NotImplementedError

    # -- state that `generate` reads back, possibly in another process
    def save_state(self, **state: Any) -> None:
        """Save tensors and plain values, no wall-clock times (`save_timing`): the same fit, the same bytes."""
        artifacts.save_torch(state, self.state_path)
        self._state = dict(state)  # generate() in this process needs no reload

    def save_timing(self, **timing: Any) -> None:
        """Wall-clock seconds of the fit (JSON-able), kept beside the state in `state.pt.timing.json`."""
        artifacts.write_timing(self.state_path, **timing)

    @property
    def state(self) -> dict:
        """The fitted state, read once from the workdir and kept."""
        if self._state is None:
            self._state = self.load_state()
        return self._state

    def load_state(self) -> dict:
        return self.read_state(self.workdir)

    @classmethod
    def read_state(cls, workdir: str | os.PathLike) -> dict:
        """The state a fit saved in `workdir` (no instance or Bench needed)."""
        path = Path(workdir) / STATE
        if not path.exists():
            raise FileNotFoundError(f"method {cls.name!r} has no fitted state at {path}; run fit first")
        return artifacts.load_torch(path, what=f"the state `nndiff fit --method {cls.name}` saves")

    @property
    def state_path(self) -> Path:
        """`<workdir>/state.pt`, what `save_state` writes."""
        return self.workdir / STATE

    def has_state(self) -> bool:
        return self.state_path.exists()

    # -- a resumable checkpoint of a long fit: `<workdir>/checkpoint.pt`, written atomically
    @property
    def checkpoint_path(self) -> Path:
        return self.workdir / CHECKPOINT

    def save_checkpoint(self, checkpoint: dict, **timing: Any) -> None:
        """Replace the checkpoint; wall-clock `timing` (JSON-able) goes to its sidecar, never into it."""
        if timing:
            artifacts.write_timing(self.checkpoint_path, **timing)
        artifacts.save_torch(checkpoint, self.checkpoint_path)

    def load_checkpoint(self) -> dict | None:
        """The checkpoint, or None when there is none."""
        return artifacts.load_torch(self.checkpoint_path) if self.checkpoint_path.exists() else None

    def checkpoint_timing(self) -> dict:
        """The checkpoint's wall-clock sidecar ({} when none)."""
        return artifacts.read_timing(self.checkpoint_path)

    def remove_checkpoint(self) -> None:
        """Drop the checkpoint and its sidecar (the final state supersedes them)."""
        self.checkpoint_path.unlink(missing_ok=True)
        artifacts.timing_path(self.checkpoint_path).unlink(missing_ok=True)
