"""Generic model baseline (Tina 2.1.3): the stage-1 model as is, answering among all classes."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from torch import Tensor

from methods.base import Bench, Method, Tasks


class Generic(Method):
    """No personalization: the same |Y|-way model for every task; correct if it names the right class."""

    name = "generic"
    output_space = "all"

    @dataclass
    class Config:
        pass

    def fit(self, bench: Bench, workdir: Path) -> None:
        # Nothing to learn; keep what generate() needs so it also runs in a fresh process.
        self.save_state(theta=bench.arch.initial_theta(bench.generic.state), classes=bench.class_names)

    def generate(self, tasks: Tasks) -> Tensor:
        tasks.class_indices(self.state["classes"])  # an unknown class name fails here, listing it
        return self.state["theta"].expand(len(tasks), -1).clone()  # [n_tasks, n_params(|Y|)]
