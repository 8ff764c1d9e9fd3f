"""The training-curve, samplers and Fig. 6c figures: which fits and results each reads (`figures:` in a config)."""
from __future__ import annotations

import re

from benchmarks.workflow.labels import (
    DEFAULT_SPLITS, SPLITS_HELP, SPLIT_PATTERN, ablation_rows, ablations, base_label, check_place, method_class,
    method_labels, method_options, runs_on, specs, variants,
)

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
        check_place(cfg, s, where)
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

