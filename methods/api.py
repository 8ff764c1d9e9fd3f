"""What a method may use beyond the contract types: shared helpers, harness services, optional capabilities.

`methods.base` re-exports every name here, so a method imports `from methods.base import ...` and nothing else
of this project (its own sibling modules aside). This module and `methods.base` are the only places where the
method side reaches into the harness (`benchmarks`); `tests/test_layering.py` keeps it that way.

- types a method sees: `Layout` (flat parameter layout), `PModelArch`, `Generic` (the stage-1 model);
- helpers: `derive_seed`, `to_float`, `pmodel_logits` (functional p-Model forward), `fit_model` / `augment` /
  `task_data` / `AUGMENTATIONS` (the zoo's training loop), text helpers (`class_prompt`, `describe`,
  `load_descriptions`, `class_texts` / `TEXT_KINDS` / `snap_to_known`, `ENCODERS`, `class_embeddings`,
  `centred_zoo_embeddings`), `warmup_cosine`,
  `config_hash`, `load_generated`, `first_of_zoo` (a zoo-size option), data parallelism (`World`, `init_world`);
- image prompts: `class_exemplars` (seeded train images per class), `exemplar_embeddings` (their CLIP features);
- best-of selection on train images: `select_best` (through `Bench.score_on_train`);
- capabilities the harness looks for with `isinstance`: `Candidates`, `Reconstructs`, `Promptable`.
"""
from __future__ import annotations

import dataclasses
import logging
import math
import os
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import torch
from torch import Tensor

from benchmarks.artifacts import config_hash, load_torch
from benchmarks.distributed import World
from benchmarks.distributed import init as init_world
from benchmarks.encoders import ENCODERS, class_prompt, describe, load_descriptions
from benchmarks.pmodels import Layout, PModelArch, pmodel_logits, to_float
from benchmarks.prompts import TEXT_KINDS, class_texts, snap_to_known
from benchmarks.train import AUGMENTATIONS, Generic, augment, derive_seed, task_data
from benchmarks.train import fit as fit_model

__all__ = [
    # types
    "Generic", "Layout", "PModelArch",
    # helpers
    "AUGMENTATIONS", "ENCODERS", "TEXT_KINDS", "World", "augment", "centred_zoo_embeddings", "class_embeddings",
    "class_prompt", "class_texts", "config_hash", "derive_seed", "describe", "first_of_zoo", "fit_model", "init_world",
    "load_descriptions", "load_generated", "pmodel_logits", "snap_to_known", "task_data", "to_float", "warmup_cosine",
    # image prompts
    "class_exemplars", "exemplar_embeddings",
    # selection and capabilities
    "Candidates", "Promptable", "Reconstructs", "Selection", "TIE_BREAKS", "select_best",
]

log = logging.getLogger(__name__)

# ----------------------------------------------------------------------------- text

# `class_prompt(name)`: "aquarium_fish" -> "aquarium fish"; `describe(classes, load_descriptions(dataset))`:
# each class's description (Tina A.2); `class_texts(classes, kind, dataset)`: each task's class texts of a
# `TEXT_KINDS` kind (names, descriptions, rewordings); `snap_to_known`: nearest known class name of a text;
# `ENCODERS`: the text encoder names a method option may take.


def class_embeddings(encoder, names: list[str]) -> Tensor:
    """Raw float embeddings [len(names), D] of class names, through `class_prompt` (aquarium_fish -> aquarium fish)."""
    return encoder.encode_text([class_prompt(n) for n in names]).float()


def centred_zoo_embeddings(encoder, zoo_classes: list[list[str]],
                           centre: bool = True) -> tuple[Tensor, Tensor, list[str]]:
    """The zoo's class names, embedded and centred on their mean over distinct names (class-name embeddings
    share one direction: docs/design-notes.md §3).

    Returns (centred embeddings [n_zoo, K, D] in each zoo task's class order, the centre [D] (zeros when
    `centre` is False), the distinct names in sorted order)."""
    names = sorted({n for cs in zoo_classes for n in cs})
    e = class_embeddings(encoder, names)  # [n_names, D]
    mean = e.mean(0) if centre else torch.zeros(e.shape[1])
    index = {n: i for i, n in enumerate(names)}
    rows = torch.tensor([[index[n] for n in cs] for cs in zoo_classes], dtype=torch.long)  # [n_zoo, K]
    return (e - mean)[rows], mean, names

# ----------------------------------------------------------------------------- training and files


def warmup_cosine(step: int, total: int, warmup: int) -> float:
    """Learning-rate factor per iteration: linear warm-up from 0, then cosine to 0 (the official Tina code's
    `update_lr` / `lr_fun_cos`)."""
    if step < warmup:
        return (step + 1) / warmup
    return 0.5 * (1.0 + math.cos(math.pi * (step - warmup) / max(total - warmup, 1)))


def first_of_zoo(zoo, n: int | None, method: str = "method"):
    """The first `n` p-Models of a zoo (None: all of it), as a zoo of the same type: a zoo-size option (Tina
    Fig. 5). Deterministic: the zoo's own order (its task ids), so the same `n` fits on the same p-Models and a
    larger `n` on a superset. More than the zoo holds fails naming both sizes."""
    if n is None:
        return zoo
    if n > len(zoo):
        raise ValueError(f"{method}: zoo_size {n} exceeds the zoo's {len(zoo)} p-Models")
    return dataclasses.replace(zoo, task_ids=list(zoo.task_ids[:n]), classes=list(zoo.classes[:n]),
                               theta=zoo.theta[:n], train_acc=zoo.train_acc[:n])


# ----------------------------------------------------------------------------- image prompts (Tina Fig. 4c, 6a)


def class_exemplars(train_y: Tensor, class_names: list[str], names: list[str], shots: int, seed: int) -> Tensor:
    """Indices [len(names), shots] of TRAIN images: `shots` distinct images of each named class, drawn with
    `derive_seed(seed, "exemplars", name)`, so a class has the same exemplars in every task and for the same seed.
    A name that is no dataset class, or has fewer than `shots` train images, fails naming it."""
    index = {c: i for i, c in enumerate(class_names)}
    out = []
    for name in names:
        if name not in index:
            raise ValueError(f"image prompts need train images of each class; {name!r} is not a dataset class")
        pool = (train_y == index[name]).nonzero().flatten()  # [n_c], in dataset order
        if len(pool) < shots:
            raise ValueError(f"class {name!r} has {len(pool)} train images, fewer than the {shots} exemplars asked for")
        g = torch.Generator().manual_seed(derive_seed(seed, "exemplars", name))
        out.append(pool[torch.randperm(len(pool), generator=g)[:shots]])
    return torch.stack(out) if out else torch.zeros(0, shots, dtype=torch.long)


def exemplar_embeddings(encoder, train_x: Tensor, train_y: Tensor, class_names: list[str], names: list[str],
                        shots: int = 1, seed: int = 0) -> Tensor:
    """Image prompts: raw `encoder.encode_image` features [len(names), D] of each class's `class_exemplars`
    (uint8 train images), averaged over the shots. Needs an image encoder (clip)."""
    idx = class_exemplars(train_y, class_names, names, shots, seed)  # [n, shots]
    z = encoder.encode_image(train_x[idx.flatten()]).float()  # [n shots, D]
    return z.view(len(names), shots, -1).mean(1)


def load_generated(path: str | os.PathLike) -> dict:
    """A file of `nndiff generate`: {"theta": [n_tasks, n_params], "task_ids", "method", "split", ...}."""
    return load_torch(path)

# ----------------------------------------------------------------------------- capabilities


@runtime_checkable
class Candidates(Protocol):
    """Samples several p-Models per task and keeps one in `generate`; the GLUE run (benchmarks/glue.py)
    scores every candidate itself."""

    def candidates(self, tasks) -> Tensor:
        """[n_tasks, n_candidates, n_params]: every sample, before selection."""


@runtime_checkable
class Reconstructs(Protocol):
    """Has a parameter autoencoder: `nndiff diagnose-autoencoder` (benchmarks/diagnostics.py) compares the zoo's
    p-Models with their reconstructions and with generated ones."""

    def reconstruct(self, theta: Tensor, tasks) -> Tensor:
        """Zoo vectors [n, P] of `tasks` through the fitted autoencoder (no noise): the best a sample can be."""


@runtime_checkable
class Promptable(Protocol):
    """Generates from raw class embeddings, so a prompt may be class names, descriptions or one image per class
    (Tina Fig. 6a): `nndiff generate --prompt / --image-prompt` (benchmarks/text2model.py) writes a standalone
    p-Model with it."""

    @classmethod
    def fitted_bench(cls, workdir: str | os.PathLike) -> dict:
        """What the state in `workdir` was fitted on, enough for a generation-only Bench:
        {"arch": arch name, "num_classes": K, "encoder_spec": the text encoder's {"name", "options"},
        "dataset": name}; optionally "class_counts" (the prompt lengths it serves; others are refused, naming
        "padding" when it is False: a fit with padding serves more), and
        "sampling" (the generate-time options it was fitted with, e.g. {"sampler", "sample_steps"}: a prompt
        samples with them unless the caller gives its own), and "trained_classes" (the class names of the
        p-Models it was fitted on: a prompt naming another class is said to be outside them)."""

    def prompt_encoder(self):
        """The encoder the fitted state reads prompts with (`encode_text`; `encode_image` for clip)."""

    def generate_from_embeddings(self, emb: Tensor, ids: list[str], keys: list[list[str]],
                                 classes: list[list[str]] | None = None) -> Tensor:
        """[n_tasks, K, D] raw class embeddings in prompt order -> [n_tasks, n_params(K)]. keys: each task's
        class texts; classes: dataset class names (for best-of-n on train images) or None."""

    def generator_card(self) -> dict:
        """Facts for a generated p-Model's model card: {"made_by", "trained", "sampling", "encoder": str,
        "meta": {JSON-able settings}}."""

# ----------------------------------------------------------------------------- best-of selection

TIE_BREAKS = ("first", "loss")  # among equally accurate candidates: the earliest, or the lowest cross-entropy


@dataclass
class Selection:
    """What `select_best` chose."""

    theta: Tensor  # [n_tasks, n_params] the chosen candidates
    index: Tensor  # [n_tasks] which candidate of each task
    accuracy: Tensor  # [n_tasks, n_candidates] train accuracy (a fraction); NaN for tasks not scored


def select_best(candidates: Tensor, tasks, bench, *, shots: int | None = None, key: tuple = (),
                tie_break: str = "first", unscorable: str = "error", label: str = "best-of selection") -> Selection:
    """Keep, per task, the candidate most accurate on the task's train images (`bench.score_on_train`).

    Args:
        candidates: [n_tasks, n_candidates, n_params] in the tasks' K-way layout.
        shots / key: as `Bench.score_on_train` (None: all of the task's train images; n: n per class, drawn
            with `derive_seed(bench.seed, *key, task id)`).
        tie_break: "first" (the earliest best candidate) or "loss" (the lowest cross-entropy among the best).
        unscorable: a task naming a class without train images: "error", or "first" (it keeps candidate 0,
            with a warning).
        label: who selects, for messages.
    """
    if tie_break not in TIE_BREAKS:
        raise ValueError(f"tie_break must be one of {TIE_BREAKS}, got {tie_break!r}")
    n, c = candidates.shape[:2]
    known = set(bench.class_names)
    ok = [i for i, cs in enumerate(tasks.classes) if all(name in known for name in cs)]
    if len(ok) < n:
        if unscorable == "error":
            i = next(i for i in range(n) if i not in set(ok))
            name = next(name for name in tasks.classes[i] if name not in known)
            raise ValueError(f"{label} needs dataset classes (it scores candidates on their train images); task "
                             f"{tasks.ids[i]!r} names {name!r}")
        log.warning("%s: %d task(s) name classes without train images; they keep their first candidate", label,
                    n - len(ok))
    index, accuracy = torch.zeros(n, dtype=torch.long), torch.full((n, c), float("nan"))
    if ok:
        scored = type(tasks)([tasks.ids[i] for i in ok], [tasks.classes[i] for i in ok])
        acc, loss = bench.score_on_train(candidates[ok], scored, shots=shots, key=key, loss=True)
        if tie_break == "first":
            best = acc.argmax(1)
        else:  # the best accuracy; among equals, the lower cross-entropy
            best = loss.masked_fill(acc < acc.max(1, keepdim=True).values, float("inf")).argmin(1)
        index[ok], accuracy[ok] = best, acc
    return Selection(candidates[torch.arange(n), index], index, accuracy)
