"""Tina Table 5 (memorization): the generated and fine-tuned vectors and results `table5:` names."""
from __future__ import annotations

import re

from benchmarks.workflow.labels import (
    ORACLE, SPLITS_HELP, SPLIT_PATTERN, ablation_rows, ablation_tables, check_place, method_labels,
    oracle_labels, runs_on, variants,
)

TABLE5_DEFAULTS = {"split": "ood", "ensemble": "probs", "reference_size": 100}


def table5(cfg: dict) -> dict:
    """`report.table5` (Tina Table 5, benchmarks/memorization.py) with its defaults and `names`/`descriptions` as
    lists of labels; {} when the config asks for none."""
    spec = (cfg.get("report") or {}).get("table5") or {}
    if not spec:
        return {}
    as_list = lambda v: [v] if isinstance(v, str) else list(v)  # noqa: E731
    return {**TABLE5_DEFAULTS, **spec, "names": as_list(spec["names"]), "descriptions": as_list(spec["descriptions"])}


def table5_inputs(cfg: dict) -> dict:
    """Every file Table 5 reads, by role (the rule's named inputs; `nndiff figure table5` resolves the same from
    the config): images, generic, tasks, zoo, the fine-tuned (oracle) vectors, the generated vectors of each
    `names` and `descriptions` label on the split, and frozen features for a head-only arch."""
    from benchmarks.pmodels import get_arch
    spec = table5(cfg)
    if not spec:
        return {}
    d, a, s = spec["dataset"], spec["arch"], spec["split"]
    vectors = lambda label: f"data/{d}/{a}/methods/{label}/generated/{s}.pt"  # noqa: E731
    inputs = {"images": f"data/{d}/images.pt", "generic": f"data/{d}/{get_arch(a).base}/generic.pt",
              "tasks": f"data/{d}/tasks.json", "zoo": f"data/{d}/{a}/finetuned/zoo.pt", "finetuned": vectors(ORACLE),
              "names": [vectors(label) for label in spec["names"]],
              "descriptions": [vectors(label) for label in spec["descriptions"]]}
    if get_arch(a).head_only:
        inputs["features"] = f"data/{d}/{a}/features.pt"
    return inputs


def check_table5(cfg: dict) -> None:
    """`report.table5`: dataset and arch of the config, generated labels that run on the arch, each once, the
    oracle on (it supplies the fine-tuned p-Models), a task split, and no ablation report of the same name."""
    spec = table5(cfg)
    if not spec:
        return
    check_place(cfg, spec, "report.table5")
    labels = [*method_labels(cfg), *variants(cfg), *ablation_rows(cfg)]
    chosen = [*spec["names"], *spec["descriptions"]]
    for key in ("names", "descriptions"):
        if not spec[key]:
            raise ValueError(f"report.table5.{key}: give at least one label")
        for label in spec[key]:
            if label not in labels:
                raise ValueError(f"report.table5.{key}: {label!r} is not a method, variant or ablation-row label; "
                                 f"labels: {labels}")
            if not runs_on(cfg, label, spec["arch"]):
                raise ValueError(f"report.table5.{key}: {label!r} does not run on arch {spec['arch']!r} (its `archs`)")
    twice = sorted({label for label in chosen if chosen.count(label) > 1})
    if twice:
        raise ValueError(f"report.table5: labels {twice} are named twice in names/descriptions")
    if not oracle_labels(cfg):
        raise ValueError("report.table5: needs the fine-tuned p-Models; set report.oracle: true")
    if not re.fullmatch(SPLIT_PATTERN, spec["split"]):
        raise ValueError(f"report.table5.split: {spec['split']!r} is not a task split; valid: {SPLITS_HELP}")
    if "table5" in ablation_tables(cfg):
        raise ValueError(f"ablations.{ablation_tables(cfg)['table5']}.report: 'table5' is report.table5's report")

