"""Tina Figs. 4a, 5, 4b (scaling): the ablation rows each line plots and Tina's `init_from` sources."""
from __future__ import annotations

from benchmarks.workflow.clip import clip_archs
from benchmarks.workflow.labels import (
    ORACLE, ablation_rows, evaluated, fitted_label, method_class, method_labels, method_options, oracle_labels,
    variants,
)

# `report.<fig>`: {dataset, split, reference, lines: {<line>: {arch, labels}}}. Each label is a fit (ablation rows
# of Tina with the figure's factor changed, or an `of` row generating with a snapshot of one); the x of a point is
# the label's option (SCALING_X), read from its options, so the config states each value once.
SCALING_X = {"fig4a": ("width",), "fig5": ("zoo_size",), "fig4b": ("at_step", "steps"), "fig4c": ("at_step", "steps")}


def scaling_archs(cfg: dict) -> dict[str, dict]:
    """`scaling.archs`: p-Model archs built only for the scaling figures (not in `archs`, so no table runs on
    them) -> {zoo_tasks: the first N zoo tasks their zoo fine-tunes (None: all)}."""
    return {a: dict(s or {}) for a, s in ((cfg.get("scaling") or {}).get("archs") or {}).items()}


def scaling_figures(cfg: dict) -> list[str]:
    """The scaling figures the config asks for (`report.fig4a`, `fig4b`, `fig4c`, `fig5`)."""
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
    archs = [*cfg["archs"], *scaling_archs(cfg), *clip_archs(cfg)]  # fig4c runs on the CLIP head
    for name in scaling_figures(cfg):
        spec, where = scaling_spec(cfg, name), f"report.{name}"
        if spec["dataset"] not in cfg["datasets"]:
            raise ValueError(f"{where}.dataset: {spec['dataset']!r} is not in the config's datasets: {list(cfg['datasets'])}")
        labels = [*method_labels(cfg), *variants(cfg), *ablation_rows(cfg)]
        for line, ln in spec["lines"].items():
            if ln["arch"] not in archs:
                raise ValueError(f"{where}.lines.{line}.arch: {ln['arch']!r} is in none of `archs`, `scaling.archs` and the CLIP head: {archs}")
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

