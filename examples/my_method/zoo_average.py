# my_method/zoo_average.py
from dataclasses import dataclass

from methods.base import Method


class ZooAverage(Method):
    """The mean of the zoo's p-Models, whatever the task."""

    name = "zoo-average"

    @dataclass
    class Config:
        scale: float = 1.0  # every option has a default; unknown options are rejected

    def fit(self, bench, workdir):
        # Save what generate() needs: it may run in a fresh process.
        self.save_state(theta=bench.zoo.theta.mean(0) * self.config.scale)

    def generate(self, tasks):
        theta = self.load_state()["theta"]
        return theta.expand(len(tasks), -1).clone()  # [n_tasks, bench.layout.n_params]
