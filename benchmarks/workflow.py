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
- `<label>~unseen` (keys of `unseen.methods`): their own fit of a method label on the `unseen-zoo` p-Models
  (tasks of class half A only), for Table 3.
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
    """Row label -> its row, with the ablation's `base` label added and, for a row with a fit of its own, the
    ablation's shared `options` (e.g. a sweep's shorter fit) under the row's own."""
    return {label: {**row, "base": ab["base"],
                    "options": {**({} if row.get("of") else ab.get("options", {})), **row.get("options", {})}}
            for ab in ablations(cfg).values() for label, row in ab["rows"].items()}


def evaluated(cfg: dict) -> list[str]:
    """Every label a result CSV can be made for."""
    return [*method_labels(cfg), *oracle_labels(cfg), *variants(cfg), *ablation_rows(cfg), *unseen_labels(cfg)]


def evaluated_splits(cfg: dict) -> list[str]:
    """The task splits every label is evaluated on."""
    return (cfg.get("evaluate") or {}).get("splits", DEFAULT_SPLITS)


def base_label(cfg: dict, label: str) -> str:
    """The configured method label behind a label: itself, a variant's `of`, an ablation row's base, or an
    unseen-class label's (`tina~unseen` -> `tina`)."""
    rows = ablation_rows(cfg)
    if label in rows:
        return rows[label]["base"]
    if label in unseen_labels(cfg):
        return label.removesuffix(UNSEEN_SUFFIX)
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
    extra.update(unseen_options(cfg, label))
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
    _check_table5(cfg)
    check_unseen(cfg)
    check_figures(cfg)
    check_scaling(cfg)
    check_clip(cfg)


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
    references = [*labels, *oracle_labels(cfg), *variants(cfg), *ablation_rows(cfg)]  # another ablation's row too
    rows_of: dict[str, str] = {}  # row label -> its ablation
    for name, ab in ablations(cfg).items():
        where = f"ablations.{name}"
        if ab["base"] not in methods:
            raise ValueError(f"{where}.base: unknown base label {ab['base']!r}; labels: {labels}")
        for key, known in (("dataset", list(cfg["datasets"])), ("arch", [*cfg["archs"], *scaling_archs(cfg)])):
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


RESERVED_REPORTS = {"table1", "zoo", "variants", "claims", "headroom", "fig6b", "index",  # and each paper target's:
                    "table3", "table5", "training-curve", "samplers", "fig6c", "fig4a", "fig4b", "fig5"}


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

# ----------------------------------------------------------------------------- figures from results the DAG makes
# `report.figures` (benchmarks/paper_figures.py): `training-curve`, `samplers`, `fig6c`. A list of names takes every
# default; a mapping gives each figure's settings, e.g. {samplers: {dataset: miniimagenet, arch: cnn-5k}}.

PAPER_FIGURES = ("training-curve", "samplers", "fig6c")
SAMPLER_KEYS = {"sampler", "sample_steps"}  # what a sampler variant may change (besides `of`)


def figures(cfg: dict) -> dict[str, dict]:
    """`report.figures` as {name: settings}, in the config's order; {} when the config asks for none."""
    spec = (cfg.get("report") or {}).get("figures") or {}
    return {name: {} for name in spec} if isinstance(spec, list) else {k: dict(v or {}) for k, v in spec.items()}


def _figure_place(cfg: dict, spec: dict, method: str) -> tuple[str, str]:
    """(dataset, arch) of a figure: its own, else the config's first dataset and first arch the method runs on."""
    dataset = spec.get("dataset") or next(iter(cfg["datasets"]))
    arch = spec.get("arch") or next((a for a in cfg["archs"] if runs_on(cfg, method, a)), cfg["archs"][0])
    return dataset, arch


def training_curve_spec(cfg: dict) -> dict:
    """{dataset, arch, method, labels}: the fitted labels whose loss history is drawn; default the method and the
    ablation rows of it on that dataset and arch that change only the fit seed (e.g. `tina-seed1`)."""
    spec = figures(cfg).get("training-curve", {})
    method = spec.get("method", "tina")
    dataset, arch = _figure_place(cfg, spec, method)
    labels = spec.get("labels")
    if labels is None:
        labels = [method] + [label for ab in ablations(cfg).values()
                             if ab["base"] == method and (ab["dataset"], ab["arch"]) == (dataset, arch)
                             for label, row in ab["rows"].items()
                             if not row.get("of") and set(row["options"]) == {"seed"}]
    return {"dataset": dataset, "arch": arch, "method": method, "labels": list(dict.fromkeys(labels))}


def training_curve_fits(cfg: dict) -> list[str]:
    """The fit records (`fit.json`) of the training-curve labels; each fit's state sits beside it."""
    s = training_curve_spec(cfg)
    return [f"data/{s['dataset']}/{s['arch']}/methods/{label}/fit.json" for label in s["labels"]]


def sampler_labels(cfg: dict, method: str) -> list[str]:
    """The method label and its variants that change only the sampler and its steps (no condition control)."""
    return [method] + [label for label, v in variants(cfg).items()
                       if v["of"] == method and set(v) - {"of"} <= SAMPLER_KEYS and set(v) & SAMPLER_KEYS]


def sampler_steps(cfg: dict, label: str) -> tuple[str, int]:
    """(sampler, reverse steps) a label generates with, from its config options and the method's defaults
    (steps unset: 1000 for ddpm, 50 for the others, as Tina's and Cond P-Diff's `sample_steps` say)."""
    name, options = method_options(cfg, label)
    defaults = method_class(name, f"methods.{base_label(cfg, label)}").Config()
    sampler = options.get("sampler", getattr(defaults, "sampler", None))
    if sampler is None:
        raise ValueError(f"{label!r} ({name}) has no sampler option")
    steps = options.get("sample_steps", getattr(defaults, "sample_steps", None))
    return sampler, int(steps) if steps else (1000 if sampler == "ddpm" else 50)


def samplers_spec(cfg: dict) -> dict:
    """{dataset, arch, method, split, labels}: the sampler sweep drawn by the `samplers` figure."""
    spec = figures(cfg).get("samplers", {})
    method = spec.get("method", "tina")
    dataset, arch = _figure_place(cfg, spec, method)
    return {"dataset": dataset, "arch": arch, "method": method, "split": spec.get("split", "ood"),
            "labels": sampler_labels(cfg, method)}


def samplers_results(cfg: dict) -> list[str]:
    s = samplers_spec(cfg)
    return [f"data/{s['dataset']}/{s['arch']}/results/{label}/{s['split']}.csv" for label in s["labels"]]


def samplers_generated(cfg: dict) -> list[str]:
    """The generated vectors whose `.timing.json` sidecars time the sweep (seconds of each generate job)."""
    s = samplers_spec(cfg)
    return [f"data/{s['dataset']}/{s['arch']}/methods/{label}/generated/{s['split']}.pt" for label in s["labels"]]


def fig6c_spec(cfg: dict) -> dict:
    """{ablation, dataset, arch, names, descriptions, splits}: Tina trained on names, prompted with names (the
    ablation's base) and with descriptions (its row `of: base` with `generate_text: descriptions`)."""
    spec = figures(cfg).get("fig6c", {})
    name = spec.get("ablation") or next((n for n, ab in ablations(cfg).items() if ab.get("report") == "table7"), None)
    if name is None or name not in ablations(cfg):
        raise ValueError(f"report.figures.fig6c.ablation: {name!r} is not an ablation of the config; "
                         f"ablations: {list(ablations(cfg))}")
    ab = ablations(cfg)[name]
    names = spec.get("names", ab["base"])
    descriptions = spec.get("descriptions") or next(
        (label for label, row in ab["rows"].items()
         if row.get("of") == names and row["options"].get("generate_text") == "descriptions"), None)
    splits = [s for s in ab.get("splits", DEFAULT_SPLITS) if s in ("id", "ood")]
    return {"ablation": name, "dataset": ab["dataset"], "arch": ab["arch"], "names": names,
            "descriptions": descriptions, "splits": splits}


def fig6c_results(cfg: dict) -> list[str]:
    s = fig6c_spec(cfg)
    return [f"data/{s['dataset']}/{s['arch']}/results/{label}/{split}.csv"
            for label in (s["names"], s["descriptions"]) for split in s["splits"]]


def figure_reports(cfg: dict, reports: str) -> list[str]:
    """Every file of the figures the config asks for: `<reports>/<name>.md` and `figures/<name>.{png,svg,csv}`."""
    return [path for name in figures(cfg)
            for path in (f"{reports}{name}.md", *(f"{reports}figures/{name}.{ext}" for ext in ("png", "svg", "csv")))]


def check_figures(cfg: dict) -> None:
    """`report.figures`: known names, datasets and archs of the config, labels the config fits or generates."""
    figs = figures(cfg)
    unknown = sorted(set(figs) - set(PAPER_FIGURES))
    if unknown:
        raise ValueError(f"report.figures: unknown figures {unknown}; choose from {list(PAPER_FIGURES)}")
    for name in ("training-curve", "samplers"):
        if name not in figs:
            continue
        where = f"report.figures.{name}"
        s = training_curve_spec(cfg) if name == "training-curve" else samplers_spec(cfg)
        for key, known in (("dataset", list(cfg["datasets"])), ("arch", list(cfg["archs"]))):
            if s[key] not in known:
                raise ValueError(f"{where}.{key}: {s[key]!r} is not in the config's {key}s: {known}")
        if s["method"] not in specs(cfg):
            raise ValueError(f"{where}.method: {s['method']!r} is not a method label; labels: {method_labels(cfg)}")
        fitted = [s["method"], *(label for label, row in ablation_rows(cfg).items() if not row.get("of"))]
        for label in s["labels"]:
            if name == "training-curve" and label not in fitted:
                raise ValueError(f"{where}.labels: {label!r} is not a fitted label (a method or an ablation row "
                                 f"without `of`); fitted: {fitted}")
            if not runs_on(cfg, label, s["arch"]):
                raise ValueError(f"{where}: {label!r} does not run on arch {s['arch']!r} (its `archs`)")
        if name == "samplers":
            if not re.fullmatch(SPLIT_PATTERN, s["split"]):
                raise ValueError(f"{where}.split: {s['split']!r} is not a task split; valid: {SPLITS_HELP}")
            for label in s["labels"]:
                try:
                    sampler_steps(cfg, label)
                except ValueError as e:
                    raise ValueError(f"{where}: {e}") from None
    if "fig6c" in figs:
        s = fig6c_spec(cfg)
        labels = {ablations(cfg)[s["ablation"]]["base"], *ablations(cfg)[s["ablation"]]["rows"]}
        for key in ("names", "descriptions"):
            if s[key] not in labels:
                raise ValueError(f"report.figures.fig6c.{key}: {s[key]!r} is not a label of ablation "
                                 f"{s['ablation']!r}; labels: {sorted(labels)}")
        if not s["splits"]:
            raise ValueError(f"report.figures.fig6c: ablation {s['ablation']!r} has neither id nor ood split")

# ----------------------------------------------------------------------------- Table 5 (memorization)

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


def _check_table5(cfg: dict) -> None:
    """`report.table5`: dataset and arch of the config, generated labels that run on the arch, each once, the
    oracle on (it supplies the fine-tuned p-Models), a task split, and no ablation report of the same name."""
    spec = table5(cfg)
    if not spec:
        return
    for key, known in (("dataset", list(cfg["datasets"])), ("arch", list(cfg["archs"]))):
        if spec[key] not in known:
            raise ValueError(f"report.table5.{key}: {spec[key]!r} is not in the config's {key}s: {known}")
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

# ----------------------------------------------------------------------------- Table 3 (unseen classes)
# `unseen:` (benchmarks/unseen.py, benchmarks/rules/unseen.smk, Tina A.3): each key of `unseen.methods` is refitted
# on the p-Models of the `unseen-zoo` split (tasks of class half A only) as the label `<key>~unseen`, with the key's
# options and the section's overrides; these labels and `unseen.references` (labels whose fit reads no zoo: the
# generic model, classifier selection, the oracle) are evaluated on every `unseen-<p>` split.

UNSEEN_SUFFIX = "~unseen"
UNSEEN_ZOO = "unseen-zoo"
ZOO_FREE_METHODS = ("generic", "classifier-selection")  # registry names whose fit reads no p-Model zoo


def unseen(cfg: dict) -> dict:
    """The `unseen:` section; {} when the config asks for no Table 3."""
    return cfg.get("unseen") or {}


def unseen_labels(cfg: dict) -> list[str]:
    """`<label>~unseen` for every key of `unseen.methods`: fits of their own on the unseen-class zoo."""
    return [f"{label}{UNSEEN_SUFFIX}" for label in unseen(cfg).get("methods") or {}]


def unseen_options(cfg: dict, label: str) -> dict:
    """The option overrides of an unseen-class label (`unseen.methods.<base>`); {} for any other label."""
    if label not in unseen_labels(cfg):
        return {}
    return dict(unseen(cfg)["methods"][label.removesuffix(UNSEEN_SUFFIX)] or {})


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
    for key, known in (("dataset", list(cfg["datasets"])), ("arch", list(cfg["archs"]))):
        if u[key] not in known:
            raise ValueError(f"unseen.{key}: {u[key]!r} is not in the config's {key}s: {known}")
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

# ----------------------------------------------------------------------------- scaling figures (Tina Fig. 4a, 4b, 5)
# `report.<fig>`: {dataset, split, reference, lines: {<line>: {arch, labels}}}. Each label is a fit (ablation rows
# of Tina with the figure's factor changed, or an `of` row generating with a snapshot of one); the x of a point is
# the label's option (SCALING_X), read from its options, so the config states each value once.
SCALING_X = {"fig4a": ("width",), "fig5": ("zoo_size",), "fig4b": ("at_step", "steps")}


def scaling_archs(cfg: dict) -> dict[str, dict]:
    """`scaling.archs`: p-Model archs built only for the scaling figures (not in `archs`, so no table runs on
    them) -> {zoo_tasks: the first N zoo tasks their zoo fine-tunes (None: all)}."""
    return {a: dict(s or {}) for a, s in ((cfg.get("scaling") or {}).get("archs") or {}).items()}


def scaling_figures(cfg: dict) -> list[str]:
    """The scaling figures the config asks for (`report.fig4a`, `report.fig4b`, `report.fig5`)."""
    return [name for name in SCALING_X if (cfg.get("report") or {}).get(name)]


def scaling_spec(cfg: dict, name: str) -> dict:
    return (cfg.get("report") or {}).get(name) or {}


def scaling_x(cfg: dict, name: str, label: str):
    """The x of a label in a scaling figure: its first option of SCALING_X[name] that is set."""
    import dataclasses
    method, options = method_options(cfg, label)
    defaults = {f.name: f.default for f in dataclasses.fields(method_class(method, f"report.{name}").Config)}
    for key in SCALING_X[name]:
        value = options[key] if options.get(key) is not None else defaults.get(key)
        if value is not None and value is not dataclasses.MISSING:
            return value  # set by the label, else the method's default (e.g. Tina's width 256)
    raise ValueError(f"report.{name}: {label!r} sets none of {list(SCALING_X[name])} (the figure's x)")


def scaling_points(cfg: dict, name: str) -> list[dict]:
    """Every point of a scaling figure: {line, arch, label, x, csv}, lines in config order, points by x."""
    spec = scaling_spec(cfg, name)
    split = spec.get("split", "ood")
    points = []
    for line, ln in spec["lines"].items():
        pts = [{"line": line, "arch": ln["arch"], "label": label, "x": scaling_x(cfg, name, label),
                "csv": f"data/{spec['dataset']}/{ln['arch']}/results/{label}/{split}.csv"} for label in ln["labels"]]
        points += sorted(pts, key=lambda p: p["x"])
    return points


def scaling_results(cfg: dict, name: str) -> list[str]:
    """Result CSVs of a scaling figure: its points, then the reference label on each line's arch."""
    spec = scaling_spec(cfg, name)
    refs = [f"data/{spec['dataset']}/{a}/results/{spec['reference']}/{spec.get('split', 'ood')}.csv"
            for a in dict.fromkeys(ln["arch"] for ln in spec["lines"].values())] if spec.get("reference") else []
    return list(dict.fromkeys([p["csv"] for p in scaling_points(cfg, name)] + refs))


def init_source(cfg: dict, label: str) -> tuple[str, str] | None:
    """(dataset, fitted label) of a label's `init_from: <dataset>:<label>` option (parameter inheritance), or None."""
    if label not in evaluated(cfg) or label == ORACLE:
        return None
    value = method_options(cfg, label)[1].get("init_from")
    if not value:
        return None
    dataset, _, source = str(value).partition(":")
    return dataset, fitted_label(cfg, source)


def init_from_input(cfg: dict, label: str, arch: str) -> list[str]:
    """The fit a label inherits from, as a DAG input (its fit.json), so the source is built first."""
    src = init_source(cfg, label)
    return [f"data/{src[0]}/{arch}/methods/{src[1]}/fit.json"] if src else []


def resolve_init_from(cfg: dict, label: str, arch: str, options: dict) -> dict:
    """The options a job passes: `init_from: <dataset>:<label>` becomes that fit's state folder on `arch`."""
    src = init_source(cfg, label)
    if not src:
        return options
    return {**options, "init_from": f"data/{src[0]}/{arch}/methods/{src[1]}/state"}


def check_scaling(cfg: dict) -> None:
    """`scaling.archs`, the scaling figures' labels and every `init_from: <dataset>:<label>`; one-line errors."""
    archs = [*cfg["archs"], *scaling_archs(cfg)]
    for name in scaling_figures(cfg):
        spec, where = scaling_spec(cfg, name), f"report.{name}"
        if spec["dataset"] not in cfg["datasets"]:
            raise ValueError(f"{where}.dataset: {spec['dataset']!r} is not in the config's datasets: {list(cfg['datasets'])}")
        labels = [*method_labels(cfg), *variants(cfg), *ablation_rows(cfg)]
        for line, ln in spec["lines"].items():
            if ln["arch"] not in archs:
                raise ValueError(f"{where}.lines.{line}.arch: {ln['arch']!r} is in neither `archs` nor `scaling.archs`: {archs}")
            for label in ln["labels"]:
                if label not in labels:
                    raise ValueError(f"{where}.lines.{line}: {label!r} is not a method, variant or ablation-row label")
                scaling_x(cfg, name, label)
        if spec.get("reference") and spec["reference"] not in [*labels, *oracle_labels(cfg)]:
            raise ValueError(f"{where}.reference: unknown label {spec['reference']!r}")
    for label in evaluated(cfg):
        if label == ORACLE:
            continue
        value = method_options(cfg, label)[1].get("init_from")
        if value is None:
            continue
        dataset, sep, source = str(value).partition(":")
        if not sep or dataset not in cfg["datasets"] or source not in evaluated(cfg) or source == ORACLE:
            raise ValueError(f"{label}: init_from {value!r} must be <dataset>:<label> of this config (datasets: "
                             f"{list(cfg['datasets'])}), the fit whose denoiser it inherits")

# ----------------------------------------------------------------------------- CLIP experiments (Table 2, Fig. 6a)
# Config `clip:` (benchmarks/rules/clip.smk, benchmarks/clip_experiments.py): the frozen CLIP ViT-B/32 image tower
# with a generated linear head (Table 2) and Tina prompted with exemplar images (Fig. 6a). `clip.weights` is the
# OpenAI checkpoint, relative to data_root (default clip/ViT-B-32.pt); `random` is for plumbing tests only.

CLIP_ARCH = "vit-b32-head"
CLIP_WEIGHTS_DEFAULT = "clip/ViT-B-32.pt"  # under data_root; benchmarks.encoders.CLIP_WEIGHTS_FILE


def clip(cfg: dict) -> dict:
    """The config's `clip:` section; {} when it has none."""
    return cfg.get("clip") or {}


def clip_archs(cfg: dict) -> list[str]:
    """The arch the CLIP experiments add to the DAG (not to `archs`: Table 1 and the other reports stay as they are)."""
    return [CLIP_ARCH] if clip(cfg) else []


def clip_weights(cfg: dict) -> str:
    """`random`, or the absolute path of the checkpoint: `clip.weights` (relative to data_root unless absolute),
    else $NNDIFF_CLIP_WEIGHTS, else <data_root>/clip/ViT-B-32.pt."""
    import os

    from benchmarks.config import data_root
    given = clip(cfg).get("weights") or os.environ.get("NNDIFF_CLIP_WEIGHTS") or CLIP_WEIGHTS_DEFAULT
    if given == "random":
        return given
    root = data_root(cfg)
    path = given if os.path.isabs(os.path.expanduser(given)) or not root else os.path.join(root, given)
    return os.path.abspath(os.path.expanduser(path))


def clip_is_random(cfg: dict) -> bool:
    return clip_weights(cfg) == "random"


def clip_env(cfg: dict) -> dict[str, str]:
    """What every job's CLIP reads (benchmarks.encoders.clip_defaults): {} without a `clip:` section."""
    if not clip(cfg):
        return {}
    return {"NNDIFF_CLIP_WEIGHTS": clip_weights(cfg), "NNDIFF_CLIP_MODEL": clip(cfg).get("model", "ViT-B-32")}


def require_clip(cfg: dict, report: str) -> None:
    """Before any job of a CLIP report: the weights (one line naming the file to put where), then the section."""
    from benchmarks.encoders import check_clip_weights
    check_clip_weights(clip_weights(cfg))
    if not clip(cfg).get(report):
        raise ValueError(f"{report}: the config has no `clip.{report}` section; enable it (see the commented "
                         "`clip:` block in benchmarks/configs/cpu.yaml)")


def clip_table2_results(cfg: dict) -> list[str]:
    """Result CSVs of Table 2: its methods (and the oracle) on the CLIP arch, per dataset and evaluated split."""
    spec = clip(cfg).get("table2") or {}
    labels = [*spec.get("methods", []), *oracle_labels(cfg)]
    return results(cfg, spec.get("datasets", []), [CLIP_ARCH], labels) if spec else []


def clip_fig6a_results(cfg: dict) -> list[str]:
    """Result CSVs of Fig. 6a: the text-prompted label, its image-prompted variants and the baselines."""
    spec = clip(cfg).get("fig6a") or {}
    if not spec:
        return []
    labels = [spec["text"], *spec["images"], *spec.get("baselines", [])]
    return results(cfg, [spec["dataset"]], [spec.get("arch", CLIP_ARCH)], labels)


def clip_reports(cfg: dict, reports: str) -> list[str]:
    """The CLIP reports the config enables (rule all's), under the profile's reports folder."""
    out = [f"{reports}table2.md"] if clip(cfg).get("table2") else []
    if clip(cfg).get("fig6a"):
        out += [f"{reports}fig6a.md", *(f"{reports}figures/fig6a.{ext}" for ext in ("png", "svg", "csv"))]
    return out


def check_clip(cfg: dict) -> None:
    """`clip:` labels, datasets and model; one-line errors naming the key (the weights are checked by the reports'
    jobs, `require_clip`, so a profile without them still builds its other targets)."""
    section = clip(cfg)
    if not section:
        return
    if section.get("model") == "nndiff-tiny-random" and section.get("weights") != "random":
        raise ValueError("clip.model: nndiff-tiny-random is the tests' tiny stand-in: it needs clip.weights: random")
    labels = [*method_labels(cfg), *variants(cfg), *ablation_rows(cfg)]
    spec = section.get("table2") or {}
    for dataset in spec.get("datasets", []):
        if dataset not in cfg["datasets"]:
            raise ValueError(f"clip.table2.datasets: {dataset!r} is not in the config's datasets: {list(cfg['datasets'])}")
    for label in spec.get("methods", []):
        if label not in labels:
            raise ValueError(f"clip.table2.methods: {label!r} is not a method, variant or ablation-row label; labels: {labels}")
        if not runs_on(cfg, label, CLIP_ARCH):
            raise ValueError(f"clip.table2.methods: {label!r} does not run on {CLIP_ARCH} (add it to its `archs`)")
    spec = section.get("fig6a") or {}
    if spec:
        arch = spec.get("arch", CLIP_ARCH)
        if spec["dataset"] not in cfg["datasets"]:
            raise ValueError(f"clip.fig6a.dataset: {spec['dataset']!r} is not in the config's datasets")
        if arch not in [*cfg["archs"], CLIP_ARCH]:
            raise ValueError(f"clip.fig6a.arch: {arch!r} is in neither `archs` nor {CLIP_ARCH}")
        for label in [spec["text"], *spec["images"], *spec.get("baselines", [])]:
            if label not in labels:
                raise ValueError(f"clip.fig6a: {label!r} is not a method, variant or ablation-row label")
            if not runs_on(cfg, label, arch):
                raise ValueError(f"clip.fig6a: {label!r} does not run on {arch!r} (its `archs`)")
        for label in spec["images"]:
            name, options = method_options(cfg, label)
            if name != "tina" or (options.get("generate_prompt") or options.get("prompt")) != "image":
                raise ValueError(f"clip.fig6a.images: {label!r} must be a tina label prompted with images "
                                 "(generate_prompt: image)")
            if (options.get("encoder") or (cfg.get("encoder") or {}).get("name")) != "clip":
                raise ValueError(f"clip.fig6a.images: {label!r} reads prompts with a text-only encoder; image "
                                 "prompts need encoder clip (option `encoder: clip` or the config's `encoder`)")


RESERVED_REPORTS.update({"table2", "fig6a"})  # written by benchmarks/rules/clip.smk, not by an ablation


def clip_report_inputs(cfg: dict, report: str) -> list[str]:
    """Result CSVs of a CLIP report (`table2`, `fig6a`), after `require_clip`: the rule's input, so a missing
    checkpoint stops the DAG before any job."""
    require_clip(cfg, report)
    return clip_table2_results(cfg) if report == "table2" else clip_fig6a_results(cfg)
