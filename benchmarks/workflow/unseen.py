"""Tina Table 3 (unseen classes): `<label>~unseen` fits on the `unseen-zoo` p-Models and their results."""
from __future__ import annotations

from benchmarks.workflow.labels import (
    ORACLE, UNSEEN_SUFFIX, ablation_rows, ablation_tables, base_label, check_place, method_class, method_labels,
    oracle_labels, runs_on, specs, unseen, unseen_labels, variants,
)

# `unseen:` (benchmarks/unseen.py, benchmarks/rules/unseen.smk, Tina A.3): each key of `unseen.methods` is refitted
# on the p-Models of the `unseen-zoo` split (tasks of class half A only) as the label `<key>~unseen`, with the key's
# options and the section's overrides; these labels and `unseen.references` (labels whose fit reads no zoo: the
# generic model, classifier selection, the oracle) are evaluated on every `unseen-<p>` split.

UNSEEN_ZOO = "unseen-zoo"
ZOO_FREE_METHODS = ("generic", "classifier-selection")  # registry names whose fit reads no p-Model zoo


def zoo_split(cfg: dict, label: str) -> str:
    """The fine-tuned split a label fits and generates with (`data/<d>/<a>/finetuned/<split>.pt`): `unseen-zoo`
    for an unseen-class label, else `zoo`."""
    return UNSEEN_ZOO if label in unseen_labels(cfg) else "zoo"


def unseen_levels(cfg: dict) -> list[int]:
    """The % of half-B classes per test task (`tasks.unseen_levels`, else tasks.py's default)."""
    from benchmarks.tasks import TasksConfig
    levels = (cfg.get("tasks") or {}).get("unseen_levels")
    return list(TasksConfig().unseen_levels if levels is None else levels)


def unseen_rows(cfg: dict) -> list[str]:
    """Table 3's labels in order: the unseen-class fits, then the references."""
    return [*unseen_labels(cfg), *(unseen(cfg).get("references") or [])]


def unseen_baseline(cfg: dict) -> str | None:
    """The reference the generators are paired with: `unseen.baseline`, else classifier selection (slice first)."""
    refs = unseen(cfg).get("references") or []
    if unseen(cfg).get("baseline"):
        return unseen(cfg)["baseline"]
    return next((r for r in ("classifier-selection-slice", "classifier-selection") if r in refs), None)


def unseen_results(cfg: dict) -> list[str]:
    """Result CSVs of Table 3: every row on every `unseen-<p>` split."""
    u = unseen(cfg)
    if not u:
        return []
    return [f"data/{u['dataset']}/{u['arch']}/results/{label}/unseen-{p}.csv"
            for label in unseen_rows(cfg) for p in unseen_levels(cfg)]


def check_unseen(cfg: dict) -> None:
    """`unseen:`: dataset and arch of the config; `methods` keys are method labels that run on the arch and read
    the zoo (a zoo-free method belongs in `references`), their overrides valid options, their `~unseen` labels
    free; `references` are zoo-free labels (else their fit saw tasks of half B) or the oracle; levels exist."""
    u = unseen(cfg)
    if not u:
        return
    check_place(cfg, u, "unseen")
    methods, taken = specs(cfg), {*method_labels(cfg), *variants(cfg), *ablation_rows(cfg)}
    for label, overrides in u["methods"].items():
        where = f"unseen.methods.{label}"
        if label not in methods:
            raise ValueError(f"{where}: unknown method label {label!r}; labels: {list(methods)}")
        if methods[label].method in ZOO_FREE_METHODS:
            raise ValueError(f"{where}: {methods[label].method!r} fits without the zoo, so a refit changes nothing; "
                             "list it under unseen.references")
        if f"{label}{UNSEEN_SUFFIX}" in taken:
            raise ValueError(f"{where}: {label + UNSEEN_SUFFIX!r} is already a method, variant or ablation-row label")
        if not methods[label].runs_on(u["arch"]):
            raise ValueError(f"{where}: {label!r} does not run on arch {u['arch']!r} (its `archs`)")
        method_class(methods[label].method, where).check_options(overrides or {}, where)
    known = [*method_labels(cfg), *variants(cfg), *oracle_labels(cfg)]
    for label in u.get("references") or []:
        where = f"unseen.references: {label!r}"
        if label not in known:
            raise ValueError(f"{where} is not a method, variant or oracle label; labels: {known}")
        if label != ORACLE and specs(cfg)[base_label(cfg, label)].method not in ZOO_FREE_METHODS:
            raise ValueError(f"{where} fits on the full zoo, whose tasks hold half-B classes; list its base under "
                             f"unseen.methods to refit it on the unseen-zoo p-Models (zoo-free: {list(ZOO_FREE_METHODS)}"
                             ", oracle)")
        if not runs_on(cfg, label, u["arch"]):
            raise ValueError(f"{where} does not run on arch {u['arch']!r} (its `archs`)")
    baseline = u.get("baseline")
    if baseline and baseline not in (u.get("references") or []):
        raise ValueError(f"unseen.baseline: {baseline!r} is not one of unseen.references {u.get('references') or []}")
    if not unseen_levels(cfg):
        raise ValueError("tasks.unseen_levels: empty; Table 3 needs at least one level of unseen classes")
    if "table3" in ablation_tables(cfg):
        raise ValueError(f"ablations.{ablation_tables(cfg)['table3']}.report: 'table3' is the unseen section's report")

