"""Figures are byte-reproducible: the same numbers drawn twice give the same PNG and SVG files."""
from __future__ import annotations

from benchmarks import plotting


def draw(stem):
    plt, sns = plotting.pyplot()
    fig, ax = plt.subplots(figsize=(3, 2))
    sns.lineplot(x=[1, 2, 3], y=[3.0, 1.0, 2.0], marker="o", ax=ax)
    ax.set(title="same numbers", xlabel="x")
    return plotting.save_figure(fig, stem)


def test_the_same_figure_twice_is_the_same_bytes(tmp_path):
    first, again = draw(tmp_path / "a" / "fig"), draw(tmp_path / "b" / "fig")
    assert [p.suffix for p in first] == [".png", ".svg"]
    for a, b in zip(first, again):
        assert a.read_bytes() == b.read_bytes(), a.name
    assert b"<dc:date>" not in first[1].read_bytes()  # no creation date in the SVG
