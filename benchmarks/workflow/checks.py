"""`check_config`: a whole config checked before any job starts, every message one line naming a key path
(the schema, each method label's options against the method's declared options, variants, ablations, reports)."""
from __future__ import annotations

import re

from benchmarks.config import validate_config
from benchmarks.workflow.clip import check_clip, clip_archs
from benchmarks.workflow.labels import (
    DEFAULT_SPLITS, RESERVED_REPORTS, SPLITS_HELP, SPLIT_PATTERN, ablation_report, ablation_rows, ablations,
    check_place, evaluated_splits, fig6b, method_class, method_labels, oracle_labels, runs_on, specs, variants,
)
from benchmarks.workflow.paper_figures import check_figures
from benchmarks.workflow.scaling import check_scaling, scaling_archs
from benchmarks.workflow.table5 import check_table5
from benchmarks.workflow.unseen import check_unseen


def check_config(cfg: dict) -> None:
    """Check a config in full; raise ValueError with one line that names the key path and the valid choices.

    First the schema (the harness's own keys), then what the schema cannot know: every method's options
    against its own `Config` (names, types, choices, ranges: `methods.base.option`), variants (generate-time
    options of their base only: a variant reuses its base's fit), ablations, the labels the reports name, and
    the task splits. Method classes are loaded through the registry, so plugins are checked alike."""
    validate_config(cfg)
    _check_datasets(cfg)
    _check_methods(cfg)
    _check_variants(cfg)
    _check_ablations(cfg)
    _check_reports(cfg)
    _check_splits(cfg)
    _check_glue(cfg)
    check_table5(cfg)
    check_unseen(cfg)
    check_figures(cfg)
    check_scaling(cfg)
    check_clip(cfg)


def _check_datasets(cfg: dict) -> None:
    for name, ds in cfg["datasets"].items():
        extra = [a for a in (ds or {}).get("archs") or [] if a not in cfg["archs"]]
        if extra:
            raise ValueError(f"datasets.{name}.archs: {extra} are not in the config's archs: {cfg['archs']}")


def _check_methods(cfg: dict) -> None:
    from benchmarks.pmodels import PMODELS
    for label, spec in specs(cfg).items():
        where = f"methods.{label}"
        named = "method" in ((cfg["methods"] or {}).get(label) or {})
        cls = method_class(spec.method, f"{where}.method" if named else where)
        cls.check_options(spec.options, where)
        unknown = sorted(set(spec.archs or []) - set(PMODELS))
        if unknown:
            raise ValueError(f"{where}.archs: unknown archs {unknown}; known: {sorted(PMODELS)}")


def _check_variants(cfg: dict) -> None:
    methods = specs(cfg)
    for label, variant in variants(cfg).items():
        where = f"variants.{label}"
        if label in methods:
            raise ValueError(f"{where}: {label!r} is already a method label; give the variant a label of its own")
        if variant["of"] not in methods:
            raise ValueError(f"{where}.of: unknown method label {variant['of']!r}; labels: {list(methods)}")
        spec = methods[variant["of"]]
        cls = method_class(spec.method, f"methods.{spec.label}")
        if "control" in variant:  # a condition control is the harness's (benchmarks/controls.py), not an option
            from benchmarks.controls import check_control
            try:
                check_control(variant["control"])
            except ValueError as e:
                raise ValueError(f"{where}.control: {e}") from None
        options = {k: v for k, v in variant.items() if k not in ("of", "control")}
        cls.check_options(options, where)
        free = cls.generate_options()
        refit = [k for k in options if k not in free]
        if refit:
            raise ValueError(f"{where}: {refit} are not generate-time options of {spec.method!r} (a variant reuses "
                             f"the fit of {spec.label!r}; an ablation row refits); generate-time: {list(free)}")


def _check_ablations(cfg: dict) -> None:
    methods, labels = specs(cfg), method_labels(cfg)
    references = [*labels, *oracle_labels(cfg), *variants(cfg), *ablation_rows(cfg)]  # another ablation's row too
    rows_of: dict[str, str] = {}  # row label -> its ablation
    for name, ab in ablations(cfg).items():
        where = f"ablations.{name}"
        if ab["base"] not in methods:
            raise ValueError(f"{where}.base: unknown base label {ab['base']!r}; labels: {labels}")
        check_place(cfg, ab, where, [*cfg["archs"], *scaling_archs(cfg), *clip_archs(cfg)])
        unknown = sorted(set(ab.get("references", [])) - set(references))
        if unknown:
            raise ValueError(f"{where}.references: unknown references {unknown}; labels: {references}")
        clash = sorted(set(ab["rows"]) & {*labels, *variants(cfg)})
        if clash:
            raise ValueError(f"{where}.rows: row labels {clash} are already method or variant labels")
        twice = sorted(set(ab["rows"]) & set(rows_of))
        if twice:
            raise ValueError(f"{where}.rows: row labels {twice} are rows of ablation {rows_of[twice[0]]!r} too")
        rows_of.update(dict.fromkeys(ab["rows"], name))
        spec = methods[ab["base"]]
        cls = method_class(spec.method, f"methods.{spec.label}")
        fitting = [ab["base"], *(label for label, row in ab["rows"].items() if not row.get("of"))]
        cls.check_options(ab.get("options", {}), f"{where}.options")
        for label, row in ab["rows"].items():
            cls.check_options(row.get("options", {}), f"{where}.rows.{label}.options")
            if row.get("of"):  # a generate-time setting of a fit in this ablation (e.g. Table 7's test prompts)
                if row["of"] not in fitting:
                    raise ValueError(f"{where}.rows.{label}.of: {row['of']!r} is neither the base nor a fitted row "
                                     f"of this ablation; choices: {fitting}")
                free = cls.generate_options()
                refit = [k for k in row.get("options", {}) if k not in free]
                if refit:
                    raise ValueError(f"{where}.rows.{label}.options: {refit} are not generate-time options of "
                                     f"{spec.method!r} (a row with `of` reuses that fit); generate-time: {list(free)}")
        _check_paper(ab, where)
    stems = [ablation_report(cfg, name) for name in ablations(cfg)]
    for name in ablations(cfg):
        stem = ablation_report(cfg, name)
        if stem in RESERVED_REPORTS or stems.count(stem) > 1 or (ablations(cfg)[name].get("report") or "").endswith("_ablation"):
            raise ValueError(f"ablations.{name}.report: {stem!r} names another report; reserved: "
                             f"{sorted(RESERVED_REPORTS)}, other ablations' and names ending in _ablation")


def _check_paper(ab: dict, where: str) -> None:
    """`paper:` maps labels of the ablation to the paper's value: a number (an ablation of one split) or
    {split: number}."""
    labels = {ab["base"], *ab.get("references", []), *ab["rows"]}
    splits = ab.get("splits", DEFAULT_SPLITS)
    for label, value in (ab.get("paper") or {}).items():
        if label not in labels:
            raise ValueError(f"{where}.paper.{label}: not a label of this ablation; labels: {sorted(labels)}")
        if isinstance(value, dict):
            unknown = sorted(set(value) - set(splits))
            if unknown:
                raise ValueError(f"{where}.paper.{label}: splits {unknown} are not the ablation's splits {splits}")
        elif len(splits) != 1:
            raise ValueError(f"{where}.paper.{label}: give {{split: value}} for an ablation of splits {splits}")


def _check_reports(cfg: dict) -> None:
    report, names = cfg.get("report") or {}, list(variants(cfg))
    unknown = sorted(set(report.get("table1_variants", [])) - set(names))
    if unknown:
        raise ValueError(f"report.table1_variants {unknown} are not variant labels; variants: {names}")
    timed = [*method_labels(cfg), *names]  # fitted labels, not the oracle or ablation rows
    unknown = sorted(set((report.get("efficiency") or {}).get("methods", [])) - set(timed))
    if unknown:
        raise ValueError(f"report.efficiency.methods {unknown} are not method or variant labels; labels: {timed}")
    spec = fig6b(cfg)
    if spec:  # generated per padded-<k> split: a method, variant or ablation-row label (not the oracle)
        check_place(cfg, spec, "report.fig6b")
        labels = [*method_labels(cfg), *names, *ablation_rows(cfg)]
        for label in [spec["method"], *spec.get("baselines", [])]:
            if label not in labels:
                raise ValueError(f"report.fig6b: {label!r} is not a method, variant or ablation-row label; "
                                 f"labels: {labels}")
            if not runs_on(cfg, label, spec["arch"]):
                raise ValueError(f"report.fig6b: {label!r} does not run on arch {spec['arch']!r} (its `archs`)")


def _check_splits(cfg: dict) -> None:
    lists = {"evaluate.splits": evaluated_splits(cfg)}
    for name, ab in ablations(cfg).items():
        lists[f"ablations.{name}.splits"] = ab.get("splits", [])
        for label, row in ab["rows"].items():
            lists[f"ablations.{name}.rows.{label}.splits"] = row.get("splits", [])
    if "split" in (cfg.get("headroom") or {}):
        lists["headroom.split"] = [cfg["headroom"]["split"]]
    for where, values in lists.items():
        bad = [s for s in values if not re.fullmatch(SPLIT_PATTERN, s)]
        if bad:
            raise ValueError(f"{where}: {bad} are not task splits; valid: {SPLITS_HELP}")


def _check_glue(cfg: dict) -> None:
    """The GLUE experiment's `method` options are Cond P-Diff's."""
    options = (cfg.get("glue") or {}).get("method")
    if options:
        method_class("cond-pdiff", "glue.method").check_options(options, "glue.method")

