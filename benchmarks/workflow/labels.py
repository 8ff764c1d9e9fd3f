"""Labels and the result files they make: what each label fits and generates with, which rows an ablation
adds, and the paths a report reads (the `{method}` wildcard of every rule)."""
from __future__ import annotations

from benchmarks.config import MethodSpec, method_specs


SPLIT_PATTERN = r"zoo|id|ood|padded|padded-\d+|unseen-zoo|unseen-\d+"  # tasks.py's splits; "lora-id" is no split
SPLITS_HELP = "zoo, id, ood, padded, unseen-zoo, unseen-<int>, padded-<classes>"
DEFAULT_SPLITS = ["id", "ood"]
ORACLE = "oracle"
UNSEEN_SUFFIX = "~unseen"
RESERVED_REPORTS = {"table1", "zoo", "variants", "claims", "headroom", "fig6b", "index",  # and each paper target's:
                    "table3", "table5", "training-curve", "samplers", "fig6c", "fig4a", "fig4b", "fig4c", "fig5"}


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


def dataset_archs(cfg: dict, dataset: str) -> list[str]:
    """The Table 1 archs built on a dataset: its own `archs:` (e.g. a costly backbone on one dataset only), else
    the config's `archs:`."""
    return list((cfg["datasets"].get(dataset) or {}).get("archs") or cfg["archs"])


def places(cfg: dict, datasets=None, archs=None) -> list[tuple[str, str]]:
    """The (dataset, arch) pairs asked for (default: all of the config's) that the config builds. An arch outside
    `archs:` (a scaling or CLIP arch, which its own section places) is kept as asked."""
    datasets = list(cfg["datasets"]) if datasets is None else datasets
    archs = list(cfg["archs"]) if archs is None else archs
    return [(d, a) for d in datasets for a in archs if a not in cfg["archs"] or a in dataset_archs(cfg, d)]


def results(cfg: dict, datasets=None, archs=None, methods=None, splits=None) -> list[str]:
    """Result CSVs of every (dataset, arch, label, split) asked for (default: all of the config's), where the
    dataset has the arch and the label runs on it."""
    methods = evaluated(cfg) if methods is None else methods
    splits = evaluated_splits(cfg) if splits is None else splits
    return [
        f"data/{d}/{a}/results/{m}/{s}.csv"
        for d, a in places(cfg, datasets, archs)
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


def check_place(cfg: dict, spec: dict, where: str, archs: list[str] | None = None) -> None:
    """A section's `dataset` and `arch` are the config's (`archs`: the archs it may use, default `archs:`)."""
    for key, known in (("dataset", list(cfg["datasets"])), ("arch", archs or list(cfg["archs"]))):
        if spec[key] not in known:
            raise ValueError(f"{where}.{key}: {spec[key]!r} is not in the config's {key}s: {known}")


def method_class(name: str, where: str):
    """The registered method class `name`; an unknown or broken entry fails naming `where`."""
    from methods.registry import get_method  # imports the method's module (torch): only when checking
    try:
        return get_method(name)
    except (ValueError, TypeError, ImportError) as e:
        raise ValueError(f"{where}: {e}") from None


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
