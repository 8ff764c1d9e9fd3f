"""The one place figures are drawn from and written to: a headless pyplot with seaborn, and an atomic,
byte-stable save (PNG and SVG side by side; the SVG carries no date and its ids come from a fixed salt, so the
same numbers give the same bytes).
"""
from __future__ import annotations

from pathlib import Path

from benchmarks import artifacts


def pyplot():
    """(matplotlib.pyplot, seaborn) on the Agg backend: figures are built on machines without a display."""
    import matplotlib
    matplotlib.use("Agg")
    matplotlib.rcParams["svg.hashsalt"] = "nndiff"  # SVG element ids from a fixed salt, not random ones
    import matplotlib.pyplot as plt
    import seaborn as sns
    return plt, sns


def save_figure(fig, stem: Path) -> list[Path]:
    """Write `stem`.png and `stem`.svg atomically and close the figure; returns both paths."""
    plt, _ = pyplot()
    paths = [stem.with_suffix(".png"), stem.with_suffix(".svg")]
    for path in paths:
        path.parent.mkdir(parents=True, exist_ok=True)
        with artifacts.atomic_path(path) as tmp:
            fig.savefig(tmp, format=path.suffix[1:], dpi=110, metadata={"Date": None} if path.suffix == ".svg" else None)
    plt.close(fig)
    return paths
