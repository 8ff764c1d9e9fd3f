"""Tina Table 5 (memorization) over every task of a split: are generated p-Models copies or new solutions?

The paper (Table 5, appendix B) shows two OOD tasks, CNN on CIFAR-100: the p-Model fine-tuned on the task
("Finetune", the oracle), two p-Models Tina generates from the class names ("Tina_name" 1 and 2), one it generates
from class descriptions with the same names-trained fit ("Tina_des."), the average of their accuracies, the
accuracy of "ensembling the four models (1 Finetune, 2 Tina_name, 1 Tina_des.) during inference", and Euclidean
distances between the parameter vectors. Its reading: the generated p-Models are far from the fine-tuned one and
from each other, and the ensemble beats the best member, so Tina generalizes rather than memorizes.

Here, for one dataset and arch (config `report.table5`), over *all* tasks of the split (default `ood`):

- members: the fine-tuned p-Model (label `oracle`), one p-Model per `names` label (e.g. `tina` and a sampler
  variant as the second sample) and per `descriptions` label (e.g. Table 7's row `tina@desc`, the names fit
  prompted with descriptions); only the tasks every member has are compared, so every difference is paired;
- p-Acc of each member (mean ± 95% t-interval over tasks, `benchmarks.evaluate.summarize`), the average of the
  individual accuracies (the paper's "Avg."), the best member per task, the paper's ensemble (all members) and
  the ensemble of the generated members only, each with its paired difference to the fine-tuned p-Model on the
  same tasks (`benchmarks.evaluate.paired`). Ensemble: the mean of the members' softmax probabilities, argmax
  (the paper does not say which is averaged; `ensemble: logits` averages logits instead);
- L2 distances of the flat parameter vectors, raw and after hidden-unit matching (`benchmarks.novelty`: the
  Hungarian matching of conv units layer by layer; head-only and LoRA archs have nothing to match, so both are
  equal): every pair of members on a task (the same classes in the same order, so heads align row by row), each
  member to its nearest zoo p-Model, and the zoo's own nearest-neighbour distances (each of the first
  `reference_size` zoo p-Models to its nearest other one) as the yardstick of "close";
- the paper's numbers beside ours where they map: its accuracies and its (raw) distances.

`nndiff figure table5 <inputs> --config C --out reports/table5.md` (Snakemake rule `table5`,
benchmarks/rules/memorization.smk): the inputs are the files of `benchmarks.workflow.table5_inputs(config)`, which
this module resolves again from the config and requires among the given paths. Writes reports/table5.md, the
figure reports/figures/table5.{png,svg} and the plotted numbers reports/figures/table5.csv.
"""
from __future__ import annotations

import dataclasses
import math
import os
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd
import torch
import yaml
from torch import Tensor

from benchmarks import artifacts, plotting
from benchmarks import workflow as wf
from benchmarks.evaluate import paired, summarize
from benchmarks.novelty import Candidates, align_units, distances, nearest, unit_chain
from benchmarks.pmodels import Layout, PModelArch, get_arch, pmodel_logits
from benchmarks.train import task_data

FINETUNED = "fine-tuned"
AVERAGE = "average of the individuals"
BEST = "best individual"
ENSEMBLE = "ensemble (all)"
ENSEMBLE_GEN = "ensemble (generated only)"
ENSEMBLES = ("probs", "logits")
ZOO = "zoo → nearest other zoo"

# The paper's Table 5 (CNN, CIFAR-100, two OOD tasks): task 1 / task 2. Distances are plain Euclidean (no matching).
PAPER_ACC = {FINETUNED: (75.3, 51.2), "names": (74.9, 51.3), "names 2": (74.9, 51.0), "descriptions": (58.9, 34.1),
             AVERAGE: (71.0, 46.9), ENSEMBLE: (76.2, 52.9)}
PAPER_DIST = {("names", FINETUNED): (4.11, 3.41), ("descriptions", FINETUNED): (11.41, 11.95),
              ("names", "descriptions"): (10.72, 11.35)}

# ----------------------------------------------------------------------------- members, ensembles


def member_keys(names: Sequence[str], descriptions: Sequence[str]) -> dict[str, str]:
    """Member key -> label: `fine-tuned` (the oracle), `names`, `names 2`, ..., `descriptions`, ... in order."""
    keys = {FINETUNED: wf.ORACLE}
    for role, labels in (("names", names), ("descriptions", descriptions)):
        for i, label in enumerate(labels):
            keys[role if i == 0 else f"{role} {i + 1}"] = label
    return keys


def ensemble_scores(logits: Sequence[Tensor], how: str = "probs") -> Tensor:
    """The ensemble's class scores [B, K]: the mean of the members' softmax probabilities ("probs") or logits."""
    if how not in ENSEMBLES:
        raise ValueError(f"ensemble must be one of {ENSEMBLES}, got {how!r}")
    stacked = torch.stack([lg.float().softmax(-1) if how == "probs" else lg.float() for lg in logits])
    return stacked.mean(0)


def accuracy(scores: Tensor, y: Tensor) -> float:
    return 100.0 * (scores.argmax(1) == y).float().mean().item() if len(y) else math.nan


@torch.no_grad()
def task_logits(model, arch: PModelArch, layout: Layout, x: Tensor, theta: Tensor, batch_size: int = 1000) -> Tensor:
    """Logits [B, K] of one K-way p-Model (flat vector in `layout`) on x: the forward of the evaluation engine."""
    p = layout.unflatten(theta.float())
    return torch.cat([pmodel_logits(model, p, x[j:j + batch_size], arch.head_only) for j in range(0, len(x), batch_size)]
                     or [torch.zeros(0, layout.num_classes)])

# ----------------------------------------------------------------------------- distances


def pair_distance(arch: PModelArch, layout: Layout, a: Tensor, b: Tensor) -> tuple[float, float]:
    """(raw, matched) L2 distance of two p-Models of the same task: b's hidden units matched to a's by
    `benchmarks.novelty.align_units` (raw again where the arch has no permutable units)."""
    a, b = a.float(), b.float()
    raw = float((a - b).norm())
    chain = unit_chain(arch, layout)
    if chain is None:
        return raw, raw
    aligned = align_units(chain, layout, layout.unflatten(a), b.unsqueeze(0))[0]
    return raw, float((aligned - a).norm())


def nearest_zoo(cands: Candidates, vec: Tensor, layout: Layout, class_idx: list[int],
                exclude: int | None = None) -> dict:
    """The nearest zoo p-Model to vec, raw and matched (`benchmarks.novelty.distances`/`nearest`: heads aligned by
    class name over the shared classes; hidden units matched or not): {raw, matched: (index, distance)}."""
    out = {}
    for how, c in (("matched", cands), ("raw", dataclasses.replace(cands, chain=None))):
        d = distances(c, vec, layout, class_idx)
        j = nearest(d, exclude)
        out[how] = (j, float(d["total"][j]))
    return out

# ----------------------------------------------------------------------------- the per-task table


def memorization_table(generic, arch: PModelArch, test_x: Tensor, test_y: Tensor, tasks: list[dict],
                       members: dict[str, Tensor], zoo: dict, *, features: Tensor | None = None,
                       ensemble: str = "probs", reference_size: int = 100) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(per-task table, zoo yardstick). `members`: key -> [n_tasks, P] vectors aligned with `tasks` (the first
    key the fine-tuned p-Model). Per task: accuracy of each member, their average and best, both ensembles; raw
    and matched distances of every pair of members and of each member to its nearest zoo p-Model. The yardstick:
    each of the first `reference_size` zoo p-Models to its nearest other zoo p-Model, raw and matched."""
    names = list(generic.classes)
    index = {c: i for i, c in enumerate(names)}
    zoo_classes = [list(c) for c in zoo["classes"]]
    cands = Candidates.build(zoo["theta"], zoo_classes, arch, names)
    keys = list(members)
    generated = keys[1:]
    rows = []
    for i, task in enumerate(tasks):
        idx = [index[c] for c in task["classes"]]
        layout = arch.layout(len(idx))
        model = None if arch.head_only else generic.module(len(idx), arch).eval()
        x, y = task_data(features if arch.head_only else test_x, test_y, idx)
        logits = {k: task_logits(model, arch, layout, x, members[k][i]) for k in keys}
        row = {"task_id": task["id"], "n images": len(y)}
        for k in keys:
            row[f"acc {k}"] = accuracy(logits[k], y)
        row[f"acc {AVERAGE}"] = float(np.mean([row[f"acc {k}"] for k in keys]))
        row[f"acc {BEST}"] = max(row[f"acc {k}"] for k in keys)
        row[f"acc {ENSEMBLE}"] = accuracy(ensemble_scores([logits[k] for k in keys], ensemble), y)
        row[f"acc {ENSEMBLE_GEN}"] = accuracy(ensemble_scores([logits[k] for k in generated], ensemble), y)
        for a_i, a in enumerate(keys):
            for b in keys[a_i + 1:]:
                raw, matched = pair_distance(arch, layout, members[b][i], members[a][i])
                row[f"raw {b} ↔ {a}"], row[f"matched {b} ↔ {a}"] = raw, matched
        for k in keys:
            nb = nearest_zoo(cands, members[k][i], layout, idx)
            for how in ("raw", "matched"):
                j, dist = nb[how]
                row[f"{how} {k} → zoo"], row[f"{how} {k} → zoo id"] = dist, zoo["task_ids"][j]
        rows.append(row)
    ref = []
    for j in range(min(reference_size, len(zoo_classes))):
        idx = [index[c] for c in zoo_classes[j]]
        nb = nearest_zoo(cands, cands.theta[j], cands.layout, idx, exclude=j)
        ref.append({"task_id": zoo["task_ids"][j], "raw": nb["raw"][1], "matched": nb["matched"][1],
                    "neighbour": zoo["task_ids"][nb["matched"][0]]})
    return pd.DataFrame(rows), pd.DataFrame(ref, columns=["task_id", "raw", "matched", "neighbour"])

# ----------------------------------------------------------------------------- summaries


def _fmt(s: dict, signed: bool = False) -> str:
    if not s["n"]:
        return "n/a"
    ci = f" ± {s['ci95']:.2f}" if np.isfinite(s["ci95"]) else ""
    return f"{s['mean']:{'+' if signed else ''}.2f}{ci}"


def accuracy_table(acc: dict[str, pd.DataFrame], *, reference: str = FINETUNED,
                   paper: dict | None = None) -> pd.DataFrame:
    """One row per label of `acc` (label -> per-task frame with `task_id` and `accuracy`): n, mean ± 95% CI, and
    the paired difference to `reference` over the tasks both have (matched by task id, whatever the order)."""
    paper = PAPER_ACC if paper is None else paper
    rows = []
    for label, df in acc.items():
        s = summarize(df["accuracy"])
        d = paired(df, acc[reference]) if label != reference else None
        p = paper.get(label)
        rows.append({"p-Model": label, "n": s["n"], "p-Acc": _fmt(s),
                     f"Δ vs {reference} (paired)": "—" if d is None else f"{_fmt(d, True)} (n={d['n']})",
                     "paper (task 1 / task 2)": f"{p[0]:.1f} / {p[1]:.1f}" if p else "—",
                     "mean": s["mean"], "ci95": s["ci95"], "delta": math.nan if d is None else d["mean"],
                     "delta ci95": math.nan if d is None else d["ci95"]})
    return pd.DataFrame(rows)


def accuracy_frames(per_task: pd.DataFrame, keys: Sequence[str]) -> dict[str, pd.DataFrame]:
    """Row label -> per-task frame (task_id, accuracy) for the members, their average and best, both ensembles."""
    labels = [*keys, AVERAGE, BEST, ENSEMBLE, ENSEMBLE_GEN]
    return {label: pd.DataFrame({"task_id": per_task["task_id"], "accuracy": per_task[f"acc {label}"]})
            for label in labels}


def distance_pairs(keys: Sequence[str]) -> list[tuple[str, str]]:
    """(b, a) member pairs in the order of the table: every generated member to the fine-tuned one, then the
    generated members to each other."""
    return [(b, a) for i, a in enumerate(keys) for b in keys[i + 1:]]


def distance_table(per_task: pd.DataFrame, ref: pd.DataFrame, keys: Sequence[str]) -> pd.DataFrame:
    """Raw and matched L2 distances: median and mean ± 95% CI over tasks, the ratio of the matched median to the
    zoo's nearest-neighbour median, and the paper's value (raw) where one maps."""
    zoo_med = float(ref["matched"].median()) if len(ref) else math.nan
    rows = []

    def add(label, raw, matched, paper=None):
        sr, sm = summarize(raw), summarize(matched)
        med = float(matched.median()) if len(matched) else math.nan
        rows.append({"distance": label, "n": sr["n"], "raw median": float(raw.median()) if len(raw) else math.nan,
                     "raw mean": _fmt(sr), "matched median": med, "matched mean": _fmt(sm),
                     "matched median / zoo spacing": med / zoo_med if zoo_med > 0 else math.nan,
                     "paper, raw (task 1 / task 2)": f"{paper[0]:.2f} / {paper[1]:.2f}" if paper else "—"})

    for b, a in distance_pairs(keys):
        add(f"{b} ↔ {a}", per_task[f"raw {b} ↔ {a}"], per_task[f"matched {b} ↔ {a}"],
            PAPER_DIST.get((b, a), PAPER_DIST.get((a, b))))
    for k in keys:
        add(f"{k} → nearest zoo p-Model", per_task[f"raw {k} → zoo"], per_task[f"matched {k} → zoo"])
    add(f"{ZOO} (yardstick)", ref["raw"], ref["matched"])
    return pd.DataFrame(rows)


def verdict(per_task: pd.DataFrame, ref: pd.DataFrame, keys: Sequence[str], frames: dict[str, pd.DataFrame]) -> list[str]:
    """Sentences: copies of the fine-tuned p-Model? of zoo p-Models? functionally diverse (ensemble gain)?"""
    from scipy import stats
    out = []
    zoo = ref["matched"].dropna()
    if zoo.empty or not zoo.median() > 0:
        return ["No verdict: the zoo yardstick is empty or zero."]
    zmed = float(zoo.median())
    for k in keys[1:]:
        to_ft = per_task[f"matched {k} ↔ {FINETUNED}"].dropna()
        to_zoo = per_task[f"matched {k} → zoo"].dropna()
        p = float(stats.mannwhitneyu(to_zoo, zoo, alternative="less").pvalue) if len(to_zoo) > 1 and len(zoo) > 1 \
            else math.nan
        r_ft, r_zoo = float(to_ft.median()) / zmed, float(to_zoo.median()) / zmed
        call = ("near-copies of zoo p-Models" if r_zoo < 0.5 else "closer to the zoo than its own spacing (retrieval "
                "or interpolation)" if r_zoo < 1 else "new p-Models, at least as far from the zoo as zoo p-Models "
                "are from each other")
        out.append(f"`{k}`: matched distance to the fine-tuned p-Model {to_ft.median():.3g} ({r_ft:.2f}× the zoo "
                   f"spacing {zmed:.3g}), to its nearest zoo p-Model {to_zoo.median():.3g} ({r_zoo:.2f}×; one-sided "
                   f"Mann-Whitney p = {p:.2g} that it lies closer than zoo neighbours): {call}.")
    for label in (ENSEMBLE, ENSEMBLE_GEN):
        for base in (BEST, AVERAGE):
            d = paired(frames[label], frames[base])
            if not d["n"]:
                continue
            lo, hi = d["mean"] - (d["ci95"] if np.isfinite(d["ci95"]) else math.inf), \
                d["mean"] + (d["ci95"] if np.isfinite(d["ci95"]) else math.inf)
            call = "higher" if lo > 0 else "lower" if hi < 0 else "no clear difference"
            out.append(f"{label} − {base}: {_fmt(d, True)} points (paired, n={d['n']}): {call}.")
    return out

# ----------------------------------------------------------------------------- figure


def plot_long(per_task: pd.DataFrame, ref: pd.DataFrame, keys: Sequence[str]) -> pd.DataFrame:
    """The plotted numbers, long: panel, quantity, alignment, task_id, value."""
    parts = []
    for label in [*keys, AVERAGE, BEST, ENSEMBLE, ENSEMBLE_GEN]:
        parts.append(pd.DataFrame({"panel": "p-Acc", "quantity": label, "alignment": "",
                                   "task_id": per_task["task_id"], "value": per_task[f"acc {label}"]}))
    for label in [k for k in keys[1:]] + [ENSEMBLE, ENSEMBLE_GEN]:
        parts.append(pd.DataFrame({"panel": "paired difference", "quantity": f"{label} − {FINETUNED}",
                                   "alignment": "", "task_id": per_task["task_id"],
                                   "value": per_task[f"acc {label}"] - per_task[f"acc {FINETUNED}"]}))
    parts.append(pd.DataFrame({"panel": "paired difference", "quantity": f"{ENSEMBLE} − {BEST}", "alignment": "",
                               "task_id": per_task["task_id"],
                               "value": per_task[f"acc {ENSEMBLE}"] - per_task[f"acc {BEST}"]}))
    for how in ("raw", "matched"):
        for b, a in distance_pairs(keys):
            parts.append(pd.DataFrame({"panel": "L2 distance", "quantity": f"{b} ↔ {a}", "alignment": how,
                                       "task_id": per_task["task_id"], "value": per_task[f"{how} {b} ↔ {a}"]}))
        for k in keys:
            parts.append(pd.DataFrame({"panel": "L2 distance", "quantity": f"{k} → zoo", "alignment": how,
                                       "task_id": per_task["task_id"], "value": per_task[f"{how} {k} → zoo"]}))
        parts.append(pd.DataFrame({"panel": "L2 distance", "quantity": ZOO, "alignment": how,
                                   "task_id": ref["task_id"], "value": ref[how]}))
    return pd.concat(parts, ignore_index=True)


def plot(long: pd.DataFrame, stem: Path, title: str) -> list[Path]:
    """Three panels: p-Acc per p-Model (tasks as dots, mean ± 95% t-interval), paired differences, distances."""
    plt, sns = plotting.pyplot()
    fig, axes = plt.subplots(1, 3, figsize=(17, 4.8))
    for ax, panel, xlabel in ((axes[0], "p-Acc", "p-Acc (%) per task; mean ± 95% CI"),
                              (axes[1], "paired difference", "points, same tasks; mean ± 95% CI")):
        d = long[long.panel == panel]
        order = list(dict.fromkeys(d["quantity"]))
        sns.stripplot(data=d, x="value", y="quantity", order=order, color="0.6", size=3, alpha=0.6, jitter=0.2, ax=ax)
        stats = [summarize(d.loc[d.quantity == q, "value"]) for q in order]
        ax.errorbar([s["mean"] for s in stats], range(len(order)), xerr=[np.nan_to_num(s["ci95"]) for s in stats],
                    fmt="o", color="C3", capsize=3, zorder=5)
        if panel == "paired difference":
            ax.axvline(0, color="0.3", lw=0.8)
        ax.set(title=panel, xlabel=xlabel, ylabel="")
    ax = axes[2]
    d = long[long.panel == "L2 distance"].dropna(subset=["value"])
    if len(d):
        order = list(dict.fromkeys(d["quantity"]))
        sns.boxplot(data=d, x="value", y="quantity", hue="alignment", order=order, hue_order=["raw", "matched"],
                    fliersize=2, ax=ax)
        zoo = d.loc[(d.quantity == ZOO) & (d.alignment == "matched"), "value"].median()
        if np.isfinite(zoo):
            ax.axvline(zoo, color="0.3", ls="--", lw=1)
    ax.set(title="L2 distances", xlabel="L2 distance (dashed: zoo spacing, matched median)", ylabel="")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return plotting.save_figure(fig, stem)

# ----------------------------------------------------------------------------- inputs and the report


def resolve_inputs(given: Sequence[str], cfg: dict) -> dict:
    """The files of `benchmarks.workflow.table5_inputs(cfg)`, each required among `given` (the rule's inputs, so
    Snakemake tracks every one) and on disk; either failure is one line naming the file."""
    expected = wf.table5_inputs(cfg)
    if not expected:
        raise ValueError("table5: the config has no report.table5 (dataset, arch, names, descriptions)")
    have = {os.path.normpath(p) for p in given}
    for role, paths in expected.items():
        for path in [paths] if isinstance(paths, str) else paths:
            if os.path.normpath(path) not in have:
                raise ValueError(f"table5: {path} (the {role}) is not among the given inputs; give every file of "
                                 "benchmarks.workflow.table5_inputs(config)")
            if not os.path.isfile(path):
                raise FileNotFoundError(f"{path}: no such file; table5 reads it as the {role}")
    return expected


def _load_members(inputs: dict, keys: dict[str, str]) -> dict[str, dict]:
    paths = [inputs["finetuned"], *inputs["names"], *inputs["descriptions"]]
    out = {}
    for (key, label), path in zip(keys.items(), paths):
        v = artifacts.load_torch(path, what="vectors from `nndiff generate` or `nndiff oracle`", keys=("task_ids", "theta"))
        if v.get("output_space", "task") != "task":
            raise ValueError(f"{path}: table5 compares task-space p-Models; `{label}` answers among all classes")
        out[key] = v
    return out


def table5(results: list[str], out, *, config: str | None = None) -> pd.DataFrame:
    """reports/table5.md with reports/figures/table5.{csv,png,svg}; `results` are the rule's inputs (the files of
    `benchmarks.workflow.table5_inputs`), `config` the profile's config (it names the labels)."""
    from benchmarks.datasets import ImageData
    from benchmarks.tasks import get_split, load_tasks
    from benchmarks.train import Generic, load_zoo
    if not config:
        raise ValueError("table5: give --config (report.table5 names the dataset, arch and labels)")
    cfg = yaml.safe_load(Path(config).read_text()) or {}
    spec = wf.table5(cfg)
    inputs = resolve_inputs(results, cfg)
    keys = member_keys(spec["names"], spec["descriptions"])
    arch = get_arch(spec["arch"])
    data, generic = ImageData.load(inputs["images"]), Generic.load(inputs["generic"])
    if arch.base != generic.arch.name:
        raise ValueError(f"{inputs['generic']}: arch {arch.name!r} starts from a {arch.base!r} generic model, got "
                         f"{generic.arch.name!r}")
    zoo = load_zoo(inputs["zoo"])
    features = None
    if inputs.get("features"):
        features = artifacts.load_torch(inputs["features"], what="backbone features from `nndiff features`",
                                        keys=("train", "test"))["test"]
    vectors = _load_members(inputs, keys)
    split_tasks = get_split(load_tasks(inputs["tasks"]), spec["split"])
    have = [set(v["task_ids"]) for v in vectors.values()]
    tasks = [t for t in split_tasks if all(t["id"] in h for h in have)]
    if not tasks:
        raise ValueError(f"table5: no task of split {spec['split']!r} is in every member's vectors "
                         f"({', '.join(f'{k}: {len(h)}' for k, h in zip(keys, have))})")
    members = {}
    for key, v in vectors.items():
        pos = {t: i for i, t in enumerate(v["task_ids"])}
        members[key] = v["theta"][[pos[t["id"]] for t in tasks]].float()
    per_task, ref = memorization_table(generic, arch, data.test_x, data.test_y, tasks, members, zoo,
                                       features=features, ensemble=spec["ensemble"],
                                       reference_size=spec["reference_size"])
    write_report(per_task, ref, out, keys=keys, spec=spec, n_split=len(split_tasks),
                 n_members={k: len(h) for k, h in zip(keys, have)}, arch=arch, config=config)
    return per_task


def write_report(per_task: pd.DataFrame, ref: pd.DataFrame, out, *, keys: dict[str, str], spec: dict, n_split: int,
                 n_members: dict[str, int], arch: PModelArch, config=None) -> None:
    out = Path(out)
    stem = out.parent / "figures" / out.stem
    long = plot_long(per_task, ref, list(keys))
    stem.parent.mkdir(parents=True, exist_ok=True)
    with artifacts.atomic_path(stem.with_suffix(".csv")) as tmp:
        long.to_csv(tmp, index=False, float_format="%.6g")
    where = f"`{spec['dataset']}` / `{arch.name}`, split `{spec['split']}`"
    plot(long, stem, f"Table 5 (memorization): {where.replace('`', '')}, {len(per_task)} tasks")
    frames = accuracy_frames(per_task, list(keys))
    acc = accuracy_table(frames)
    acc_shown = acc.drop(columns=["mean", "ci95", "delta", "delta ci95"])
    acc_shown.insert(1, "label", [f"`{keys[k]}`" if k in keys else "" for k in acc["p-Model"]])
    dist = distance_table(per_task, ref, list(keys))
    chain = unit_chain(arch, arch.layout(2))
    matching = ("hidden units matched layer by layer (" + ", ".join(w.rsplit(".", 1)[0] for w, _ in chain.layers)
                + ") with the Hungarian algorithm of `benchmarks.novelty`, the second p-Model's units aligned to the "
                "first's" if chain else "no hidden units to match here (head-only or LoRA arch): matched = raw")
    dropped = {k: n for k, n in n_members.items() if n != len(per_task)}
    members = ", ".join(f"{k} = `{label}`" for k, label in keys.items())
    ens = "softmax probabilities" if spec["ensemble"] == "probs" else "logits"
    lines = [
        "# Table 5: memorization (fine-tuned vs generated p-Models)", "",
        f"{where}: {len(per_task)} tasks (of {n_split} in the split; a task counts when every p-Model has it"
        + (f"; vectors per p-Model: {dropped}" if dropped else "") + f"). Members: {members} (the oracle is the "
        "p-Model fine-tuned on the task). The paper's Table 5 shows two OOD tasks of a CNN on CIFAR-100 (task 1 / "
        "task 2 beside our mean over all tasks); its two `Tina_name` are two samples from the names prompt, its "
        "`Tina_des.` the names-trained Tina prompted with descriptions.", "",
        f"- Ensemble: the mean of the members' {ens}, then argmax. `{ENSEMBLE}` is the paper's (\"ensembling the "
        f"four models (1 Finetune, 2 Tina_name, 1 Tina_des.)\": here every member above); `{ENSEMBLE_GEN}` leaves "
        f"the fine-tuned p-Model out. `{AVERAGE}`: the paper's \"Avg.\", the mean of the members' accuracies per "
        f"task; `{BEST}`: the best member per task.",
        "- p-Acc: mean ± 95% t-interval over tasks; Δ: paired difference to the fine-tuned p-Model on the same tasks.",
        f"- L2 distance of the flat parameter vectors: raw, and matched ({matching}). Pairs share the task's classes "
        "in order, so heads align row by row; to the nearest zoo p-Model the head is aligned by class name over the "
        "shared classes (RMS row distance × sqrt(K), as the novelty panel). Yardstick: each of the first "
        f"{len(ref)} zoo p-Models to its nearest other zoo p-Model. The paper's distances are raw.", "",
        "## p-Acc", "",
        acc_shown.to_markdown(index=False), "",
        "## L2 distances", "",
        dist.to_markdown(index=False, floatfmt=".3g"), "",
        "## Reading", "",
        "Copies would sit much closer to the fine-tuned or a zoo p-Model than zoo p-Models sit to one another "
        "(ratio ≪ 1), and an ensemble of copies would gain nothing over its best member.", "",
        *[f"- {s}" for s in verdict(per_task, ref, list(keys), frames)], "",
        f"![table5](figures/{stem.name}.png)", "",
        f"Plotted numbers (per task, long form): `figures/{stem.name}.csv`. {artifacts.provenance_footer(config)}", ""]
    artifacts.write_text("\n".join(lines), out)
