"""Helpers shared by the method tests: a tiny bench with a table text encoder, and fit/fresh instances."""
from __future__ import annotations

import dataclasses
import json

import torch

from methods.registry import build_method


def table_bench(bench, folder, names):
    """`bench` with a `table` text encoder of seeded random 16-d vectors for `names` (no model to load)."""
    gen = torch.Generator().manual_seed(0)
    path = folder / "names.json"
    path.write_text(json.dumps({n: torch.randn(16, generator=gen).tolist() for n in names}))
    return dataclasses.replace(bench, text_encoder_spec={"name": "table", "options": {"path": str(path)}})


def fitted(name, bench, workdir, options=None):
    method = build_method(name, options).setup(bench, workdir)
    method.fit(bench, workdir)
    return method


def fresh(name, bench, workdir, options=None):
    """A new instance that only has the workdir, as generate() runs in its own process."""
    return build_method(name, options).setup(bench, workdir)
