"""A throwaway third-party method package, installed into a folder on PYTHONPATH through its entry point."""
from __future__ import annotations

from pathlib import Path

PLUGIN_SOURCE = '''
from dataclasses import dataclass

from methods.base import Method


class ZooMean(Method):
    """Toy plugin: the mean of the zoo's p-Models for every task."""

    name = "zoo-mean"

    @dataclass
    class Config:
        scale: float = 1.0

    def fit(self, bench, workdir):
        self.save_state(theta=bench.zoo.theta.mean(0) * self.config.scale)

    def generate(self, tasks):
        return self.load_state()["theta"].expand(len(tasks), -1).clone()
'''


def install_plugin(site: Path) -> Path:
    """Write module + dist-info (METADATA, entry_points.txt) so importlib.metadata finds `zoo-mean`."""
    site.mkdir(parents=True, exist_ok=True)
    (site / "toy_plugin.py").write_text(PLUGIN_SOURCE)
    info = site / "toy_plugin-0.1.dist-info"
    info.mkdir(exist_ok=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: toy-plugin\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[nndiff.methods]\nzoo-mean = toy_plugin:ZooMean\n")
    return site
