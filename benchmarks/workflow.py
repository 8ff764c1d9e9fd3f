"""The workflow's reading of a config: its labels, what each label fits and generates with, the result files
a report needs, and `check_config`, which checks a whole config before any job starts.

`benchmarks/rules/common.smk` takes its names from here and `nndiff check-config` runs `check_config`, so
`snakemake -n` and the CLI reject the same configs with the same one-line messages, each naming a key path.

Labels (the {method} wildcard, a row of the tables):
- `methods:` keys: each its own fit of a registered method (`method:` names it when it differs from the label);
- `variants:` keys: generate with their `of` label's fit and change generate-time options only (e.g. the
  sampler), so a sampler sweep costs no extra fit;
- rows of `ablations.<name>.rows`: their own fit of the base label's options with `options` changed;
- `oracle` (`report: {oracle: true}`, the default): fine-tuned p-Models, no method.
"""
from __future__ import annotations

import re

from benchmarks.config import MethodSpec, method_specs, validate_config

SPLIT_PATTERN = r"zoo|id|ood|padded|padded-\d+|unseen-zoo|unseen-\d+"  # tasks.py's splits; "lora-id" is no split
SPLITS_HELP = "zoo, id, ood, padded, unseen-zoo, unseen-<int>, padded-<classes>"
DEFAULT_SPLITS = ["id", "ood"]
ORACLE = "oracle"

# ----------------------------------------------------------------------------- labels


def specs(cfg: dict) -> dict[str, MethodSpec]:
    """Method label -> its `methods:` entry."""
    return {s.label: s for s in method_specs(cfg)}


def method_labels(cfg: dict) -> list[str]:
    return list(specs(cfg))


def oracle_labels(cfg: dict) -> list[str]:
    return [ORACLE] if (cfg.get("report") or {}).get("oracle", True) else []


def variants(cfg: dict) -> dict[str, dict]:
    return cfg.get("variants") or {}


def ablations(cfg: dict) -> dict[str, dict]:
    return cfg.get("ablations") or {}


def ablation_rows(cfg: dict) -> dict[str, dict]:
    """Row label -> its row, with the ablation's `base` label added."""
    return {label: {**row, "base": ab["base"]} for ab in ablations(cfg).values() for label, row in ab["rows"].items()}


def evaluated(cfg: dict) -> list[str]:
    """Every label a result CSV can be made for."""
    return [*method_labels(cfg), *oracle_labels(cfg), *variants(cfg), *ablation_rows(cfg)]


def evaluated_splits(cfg: dict) -> list[str]:
    """The task splits every label is evaluated on."""
    return (cfg.get("evaluate") or {}).get("splits", DEFAULT_SPLITS)


def base_label(cfg: dict, label: str) -> str:
    """The configured method label behind a label: itself, a variant's `of`, or an ablation row's base."""
    rows = ablation_rows(cfg)
    if label in rows:
        return rows[label]["base"]
    return variants(cfg).get(label, {}).get("of", label)


def fitted_label(cfg: dict, label: str) -> str:
    """The label whose fit a label uses: a variant's `of`, an ablation row's `of` (a generate-time setting of
    the base or of another row), else the label itself (an ablation row fits itself)."""
    row = ablation_rows(cfg).get(label, {})
    if row.get("of"):
        return fitted_label(cfg, row["of"])
    return variants(cfg).get(label, {}).get("of", label)


def method_options(cfg: dict, label: str) -> tuple[str, dict]:
    """(registry name, options) of a label: a variant's (or ablation row's) options override its base label's.
    A variant's condition `control` (benchmarks/controls.py) rides along; `nndiff generate` takes it out of the
    options before the method is built, so the generate rule's command stays the same for every label."""
    row = ablation_rows(cfg).get(label, {})
    if row.get("of"):  # generates with the fit of `of`: its options, the row's generate-time options changed
        name, options = method_options(cfg, row["of"])
        return name, {**options, **row.get("options", {})}
    spec = specs(cfg)[base_label(cfg, label)]
    extra = {k: v for k, v in variants(cfg).get(label, {}).items() if k != "of"}
    extra.update(ablation_rows(cfg).get(label, {}).get("options", {}))
    return spec.method, {**spec.options, **extra}


def runs_on(cfg: dict, label: str, arch: str) -> bool:
    """Whether a label runs on an arch: its base method's `archs` option decides (the oracle runs everywhere)."""
    spec = specs(cfg).get(base_label(cfg, label))
    return spec is None or spec.runs_on(arch)


def results(cfg: dict, datasets=None, archs=None, methods=None, splits=None) -> list[str]:
    """Result CSVs of every (dataset, arch, label, split) asked for (default: all of the config's), where the
    label runs on the arch."""
    datasets = list(cfg["datasets"]) if datasets is None else datasets
    archs = list(cfg["archs"]) if archs is None else archs
    methods = evaluated(cfg) if methods is None else methods
    splits = evaluated_splits(cfg) if splits is None else splits
    return [
        f"data/{d}/{a}/results/{m}/{s}.csv"
        for d in datasets
        for a in archs
        for m in methods
        if runs_on(cfg, m, a)
        for s in splits
    ]


def ablation_results(cfg: dict, name: str) -> list[str]:
    """Result CSVs of an ablation: its base label, its references and every row, on the splits each can produce."""
    ab = ablations(cfg)[name]
    ss = ab.get("splits", DEFAULT_SPLITS)
    rows = {ab["base"]: ss, **{label: ss for label in ab.get("references", [])},
            **{label: row.get("splits", ss) for label, row in ab["rows"].items()}}
    return [f"data/{ab['dataset']}/{ab['arch']}/results/{label}/{s}.csv" for label, sp in rows.items() for s in sp]



def ablation_report(cfg: dict, name: str) -> str:
    """The file stem of an ablation's report: its `report` (a paper table, e.g. `table6`), else `<name>_ablation`."""
    return ablations(cfg)[name].get("report") or f"{name}_ablation"


def ablation_tables(cfg: dict) -> dict[str, str]:
    """Report stem -> ablation name, for the ablations written as a paper table (`report: table6`)."""
    return {ab["report"]: name for name, ab in ablations(cfg).items() if ab.get("report")}


def padded_sizes(cfg: dict) -> list[int]:
    """The class counts of the padded tasks (split `padded-<k>` holds those of k classes)."""
    from benchmarks.tasks import TasksConfig
    return list((cfg.get("tasks") or {}).get("padded_sizes") or TasksConfig().padded_sizes)


def fig6b(cfg: dict) -> dict:
    """`report.fig6b`: p-Acc vs number of classes (Tina Fig. 6b); {} when the config asks for none."""
    return (cfg.get("report") or {}).get("fig6b") or {}


def fig6b_results(cfg: dict) -> list[str]:
    """Result CSVs of Fig. 6b: its method and baselines on each `padded-<k>` split."""
    spec = fig6b(cfg)
    if not spec:
        return []
    labels = [spec["method"], *spec.get("baselines", [])]
    return results(cfg, [spec["dataset"]], [spec["arch"]], labels, [f"padded-{k}" for k in padded_sizes(cfg)])

# ----------------------------------------------------------------------------- checks


def check_config(cfg: dict) -> None:
    """Check a config in full; raise ValueError with one line that names the key path and the valid choices.

    First the schema (the harness's own keys), then what the schema cannot know: every method's options
    against its own `Config` (names, types, choices, ranges: `methods.base.option`), variants (generate-time
    options of their base only: a variant reuses its base's fit), ablations, the labels the reports name, and
    the task splits. Method classes are loaded through the registry, so plugins are checked alike."""
    validate_config(cfg)
    _check_methods(cfg)
    _check_variants(cfg)
    _check_ablations(cfg)
    _check_reports(cfg)
    _check_splits(cfg)
    _check_glue(cfg)


def method_class(name: str, where: str):
    """The registered method class `name`; an unknown or broken entry fails naming `where`."""
    from methods.registry import get_method  # imports the method's module (torch): only when checking
    try:
        return get_method(name)
    except (ValueError, TypeError, ImportError) as e:
        raise ValueError(f"{where}: {e}") from None


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
    references = [*labels, *oracle_labels(cfg), *variants(cfg)]
    rows_of: dict[str, str] = {}  # row label -> its ablation
    for name, ab in ablations(cfg).items():
        where = f"ablations.{name}"
        if ab["base"] not in methods:
            raise ValueError(f"{where}.base: unknown base label {ab['base']!r}; labels: {labels}")
        for key, known in (("dataset", list(cfg["datasets"])), ("arch", list(cfg["archs"]))):
            if ab[key] not in known:
                raise ValueError(f"{where}.{key}: {ab[key]!r} is not in the config's {key}s: {known}")
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
        for label, row in ab["rows"].items():
            cls.check_options(row["options"], f"{where}.rows.{label}.options")
            if row.get("of"):  # a generate-time setting of a fit in this ablation (e.g. Table 7's test prompts)
                if row["of"] not in fitting:
                    raise ValueError(f"{where}.rows.{label}.of: {row['of']!r} is neither the base nor a fitted row "
                                     f"of this ablation; choices: {fitting}")
                free = cls.generate_options()
                refit = [k for k in row["options"] if k not in free]
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


RESERVED_REPORTS = {"table1", "zoo", "variants", "claims", "headroom", "fig6b", "index"}


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
        for key, known in (("dataset", list(cfg["datasets"])), ("arch", list(cfg["archs"]))):
            if spec[key] not in known:
                raise ValueError(f"report.fig6b.{key}: {spec[key]!r} is not in the config's {key}s: {known}")
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
