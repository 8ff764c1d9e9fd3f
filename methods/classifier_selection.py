"""Classifier selection (Tina 2.1.2, A.4): the generic model with only the task's classifier rows."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from methods.base import Bench, Method, Tasks, option

RULES = ("mask", "slice")


class ClassifierSelection(Method):
    """Keep the stage-1 rows of the task's classes. `mask` (paper A.4): an all-class head with the other
    rows and biases zeroed, so the model still answers among all classes; `slice`: a K-way head in prompt order."""

    name = "classifier-selection"

    @dataclass
    class Config:
        # paper A.4 zeroes the other rows; "slice" answers among the task's classes only. The fit (the generic
        # model's rows) is the same for both, so a variant may change the rule.
        rule: str = option("mask", choices=RULES, generate=True)

    def __init__(self, config=None):
        super().__init__(config)
        self.output_space = "all" if self.config.rule == "mask" else "task"

    def fit(self, bench: Bench, workdir: Path) -> None:
        # The |Y|-way start of a p-Model in the arch's layout (for a LoRA arch: adapters at B = 0).
        self.save_state(theta=bench.arch.initial_theta(bench.generic.state), classes=bench.class_names)

    def generate(self, tasks: Tasks) -> Tensor:
        theta, classes = self.state["theta"], self.state["classes"]
        rows = tasks.class_indices(classes)  # [n_tasks, K]
        full = self.bench.arch.layout(len(classes))
        if self.config.rule == "slice":
            return full.take_rows(theta, rows)  # [n_tasks, n_params(K)]
        keep = torch.zeros(len(tasks), len(classes), dtype=torch.bool)
        keep.scatter_(1, rows, True)
        head = full.head_rows(theta).expand(len(tasks), -1, -1) * keep.unsqueeze(-1)  # zero other rows
        return full.assemble(full.body(theta).expand(len(tasks), -1), head)  # [n_tasks, n_params(|Y|)]
