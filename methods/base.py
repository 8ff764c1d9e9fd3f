"""The method contract: what a weight-generating method sees and what it must return (DESIGN.md).

A method sees the training side of the benchmark only (`Bench`): the generic model, the p-Model zoo,
train images (and frozen train features for head-only archs), the p-Model architecture and the text/image
encoders. `fit` learns and saves state under its workdir; `generate` returns one parameter vector per task
in the p-Model's flat layout. The harness evaluates the vectors, so every method is judged alike.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import Tensor

from benchmarks import artifacts
from benchmarks.pmodels import Layout, PModelArch
from benchmarks.train import Generic


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
        d = artifacts.load_torch(path)
        return cls(list(d["task_ids"]), [list(c) for c in d["classes"]], d["theta"], d["train_acc"])


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


class Method:
    """Base class of every method plugin. Subclasses set `name`, a `Config` dataclass, `fit` and `generate`."""

    name: ClassVar[str] = ""
    output_space: ClassVar[str] = "task"  # "all": vectors answer among all dataset classes (generic model)

    @dataclass
    class Config:
        pass

    def __init__(self, config: dict | Any | None = None):
        if config is None or isinstance(config, dict):
            fields = {f.name for f in dataclasses.fields(self.Config)}
            unknown = sorted(set(config or {}) - fields)
            if unknown:
                raise ValueError(f"method {self.name!r}: unknown options {unknown}; valid: {sorted(fields)}")
            config = self.Config(**(config or {}))
        self.config = config
        self.bench: Bench | None = None
        self.workdir: Path | None = None
        self._state: dict | None = None

    def setup(self, bench: Bench, workdir: str | Path) -> "Method":
        """Called by the harness before `fit` and before `generate` (which may run in a fresh process)."""
        self.bench, self.workdir = bench, Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self._state = None  # a new workdir: forget state kept from an earlier fit
        return self

    @property
    def layout(self) -> Layout:
        return self.bench.arch.layout(len(self.bench.class_names) if self.output_space == "all" else self.bench.num_classes)

    def fit(self, bench: Bench, workdir: Path) -> None:
        raise NotImplementedError

    def generate(self, tasks: Tasks) -> Tensor:
        """One parameter vector per task: [n_tasks, layout.n_params]."""
        raise NotImplementedError

    # -- state that `generate` reads back, possibly in another process
    def save_state(self, **state: Any) -> None:
        artifacts.save_torch(state, self.workdir / "state.pt")
        self._state = dict(state)  # generate() in this process needs no reload

    @property
    def state(self) -> dict:
        """The fitted state, read once from the workdir and kept."""
        if self._state is None:
            self._state = self.load_state()
        return self._state

    def load_state(self) -> dict:
        path = self.workdir / "state.pt"
        if not path.exists():
            raise FileNotFoundError(f"method {self.name!r} has no fitted state at {path}; run fit first")
        return artifacts.load_torch(path)
