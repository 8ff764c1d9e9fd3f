"""Zoo-mean body + classifier-selection head: what a task-independent shift of the body gives (a yardstick).

Not in the papers. Every generated p-Model gets the same body, the mean of the zoo's p-Model bodies (every
personalized parameter before the classifier: the convs of a CNN, the adapters of a LoRA arch, nothing for a
head-only arch), and the generic model's classifier rows of the task's classes in prompt order (classifier
selection, `rule: slice`). A generator whose body does no better than this has learned no task-specific body.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from torch import Tensor

from methods.base import Bench, Method, Tasks


class ZooMean(Method):
    """The mean zoo body with the generic model's rows of the task's classes (in prompt order)."""

    name = "zoo-mean"

    @dataclass
    class Config:
        pass  # nothing to choose: the mean is over the whole zoo, the head is classifier selection's (slice)

    def fit(self, bench: Bench, workdir: Path) -> None:
        if len(bench.zoo) == 0:
            raise ValueError("zoo-mean needs a non-empty zoo of p-Models")
        if bench.zoo.theta.shape[1] != bench.layout.n_params:
            raise ValueError(f"zoo vectors have {bench.zoo.theta.shape[1]} parameters; arch {bench.arch.name} with "
                             f"K={bench.num_classes} has {bench.layout.n_params}")
        generic = bench.arch.initial_theta(bench.generic.state)  # the |Y|-way start (classifier selection)
        body = bench.layout.body(bench.zoo.theta.float()).mean(0)  # [n_body]
        self.save_state(body=body, generic=generic, classes=list(bench.class_names))

    def generate(self, tasks: Tasks) -> Tensor:
        state = self.state
        if not len(tasks):
            return state["body"].new_zeros(0, self.layout.n_params)
        rows = tasks.class_indices(state["classes"])  # [n_tasks, k]; an unknown class name fails, listing it
        full = self.bench.arch.layout(len(state["classes"]))
        head = full.head_rows(state["generic"])[rows]  # [n_tasks, k, d+1]
        body = state["body"].expand(len(tasks), -1)
        return full.with_classes(rows.shape[1]).assemble(body, head).contiguous()  # [n_tasks, n_params(k)]
