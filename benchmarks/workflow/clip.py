"""The CLIP experiments (Tina Table 2, Fig. 6a): the `clip:` section, its weights and its reports."""
from __future__ import annotations

from benchmarks.workflow.labels import (
    RESERVED_REPORTS, ablation_rows, method_labels, method_options, oracle_labels, results, runs_on, variants,
)

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
