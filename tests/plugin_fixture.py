"""A throwaway third-party method package, installed into a folder on PYTHONPATH through its entry point
(fast: no pip; tests/test_plugin_example.py pip-installs the real example package)."""
from __future__ import annotations

from pathlib import Path

# The README's plugin, word for word (examples/my_method/zoo_average.py), here under another module name.
PLUGIN_SOURCE = (Path(__file__).resolve().parent.parent / "examples" / "my_method" / "zoo_average.py").read_text()


def install_plugin(site: Path) -> Path:
    """Write module + dist-info (METADATA, entry_points.txt) so importlib.metadata finds `zoo-average`."""
    site.mkdir(parents=True, exist_ok=True)
    (site / "toy_plugin.py").write_text(PLUGIN_SOURCE)
    info = site / "toy_plugin-0.1.dist-info"
    info.mkdir(exist_ok=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: toy-plugin\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[nndiff.methods]\nzoo-average = toy_plugin:ZooAverage\n")
    return site
