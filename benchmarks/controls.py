"""Condition controls: what a text-conditioned generator makes of a prompt that no longer names the task.

A generator that reads its prompt must fall towards chance (100/K) when the prompt is scrambled. The controls
are applied by the harness (`nndiff generate --control`, config `variants: {tina@shuffled: {of: tina,
control: shuffle}}`), never by a method, and only to what the method sees: the evaluation keeps each task's
true class order, so the generated vectors are judged against the classes they should have served.

- `shuffle`: each task's class names are permuted by a seeded derangement (no class keeps its position),
  drawn per (seed, task id), so a task's control does not depend on the other tasks of the split;
- `null`: every class name becomes the empty string "".
"""
from __future__ import annotations

import zlib

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # importable without torch by the config checks (benchmarks/workflow/checks.py)
    from torch import Tensor

    from methods.base import Tasks

CONTROLS = ("shuffle", "null")


def check_control(control: str | None) -> str | None:
    if control is not None and control not in CONTROLS:
        raise ValueError(f"unknown condition control {control!r}; choose one of {list(CONTROLS)} (in YAML, quote "
                         "\"null\")")
    return control


def derangement(k: int, rng: np.random.Generator) -> list[int]:
    """A uniformly drawn permutation of range(k) without fixed points (rejection: ~e draws on average)."""
    if k < 2:
        raise ValueError(f"a derangement needs at least 2 items, got {k}")
    while True:
        perm = rng.permutation(k)
        if (perm != np.arange(k)).all():
            return perm.tolist()


def task_rng(seed: int, task_id: str) -> np.random.Generator:
    """The generator of one task's control: the same for a (seed, task id) whatever the rest of the split."""
    return np.random.default_rng([int(seed), zlib.crc32(task_id.encode())])


def apply_control(tasks: "Tasks", control: str | None, seed: int = 0) -> "Tasks":
    """The prompts a method sees under `control` (None: the tasks unchanged). Task ids stay the same."""
    from methods.base import Tasks
    if check_control(control) is None:
        return tasks
    if control == "null":
        return Tasks(list(tasks.ids), [[""] * len(cs) for cs in tasks.classes])
    classes = []
    for tid, cs in zip(tasks.ids, tasks.classes):
        if len(cs) < 2:
            raise ValueError(f"the shuffle control needs at least 2 classes per task; task {tid!r} has {len(cs)}")
        perm = derangement(len(cs), task_rng(seed, tid))
        classes.append([cs[j] for j in perm])
    return Tasks(list(tasks.ids), classes)


def generate_with_control(method, tasks: "Tasks", control: str | None, *, seed: int = 0, label: str = "?") -> "Tensor":
    """`method.generate` on the controlled prompts; vectors stay in the order of `tasks` (the true one).
    A method that cannot take the controlled prompts (e.g. classifier selection: no empty class name) fails
    naming the method and the control."""
    prompts = apply_control(tasks, control, seed)
    if control is None:
        return method.generate(prompts)
    try:
        return method.generate(prompts)
    except (ValueError, KeyError) as e:
        raise ValueError(f"method {label!r} cannot generate under the {control!r} condition control"
                         f"{' (empty class names)' if control == 'null' else ''}: {e}") from e
