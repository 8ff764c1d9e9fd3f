"""Does a generator do more than retrieve? Generated p-Models against their nearest zoo p-Models.

After Zeng et al. 2025 ("Generative modeling of weights: generalization or memorization?", arXiv 2506.07998):
a weight generator that memorizes its training checkpoints writes near-copies of them. For every generated
p-Model of a split we find its nearest zoo p-Model and compare

- the distance to it with the zoo's own nearest-neighbour distances (each zoo p-Model to its nearest *other*
  zoo p-Model, the same alignment): the reference spacing of the zoo;
- which test images both get wrong (Jaccard of the sets of misclassified test images of the task), and the
  same overlap between each zoo p-Model and its own nearest neighbour, for reference;
- accuracy against distance.

Alignment. A p-Model's distance to a zoo p-Model is split into its body (everything before the classifier)
and its head (the classifier rows, one per class):

- body: for a plain chain of conv/linear layers whose parameters are all generated (the CNNs), permuting a
  layer's output units (weights and bias) together with the next layer's input channels leaves the function
  unchanged, so the zoo p-Model's hidden units are first matched to the generated one's, layer by layer from
  the input, with the Hungarian algorithm on the incoming weights (`scipy.optimize.linear_sum_assignment`
  on squared distances); the last hidden layer's permutation also reorders the classifier's input features.
  LoRA adapters (their units sit beside frozen weights) and head-only archs (a frozen shared backbone) are
  compared with a plain L2 distance, without matching;
- head: rows are aligned by class name over the classes both tasks share; the distance is the RMS row
  distance over the shared classes, scaled by sqrt(K) so it estimates the L2 distance of a whole K-row head.

The total distance is sqrt(body² + head²). The nearest zoo p-Model minimizes it among the zoo p-Models that
share at least one class with the task; when none does (e.g. fully unseen classes) it minimizes the body
distance and the head and total distances are left empty.

Wrong-prediction overlap: the neighbour is run as a K-way p-Model of the *evaluated* task: its own body, its
classifier rows for the classes it shares with the task, and the generic model's rows (classifier selection)
for the others, all in the task's class order. The same overlap against classifier selection of the task is
reported as a floor: every p-Model here starts from the generic model, so some shared errors are expected.
"""
from __future__ import annotations

import logging
import math
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import Tensor, nn
from torch.func import functional_call

from benchmarks import artifacts, plotting
from benchmarks.pmodels import Layout, PModelArch, to_float

log = logging.getLogger("nndiff.novelty")

# ----------------------------------------------------------------------------- hidden-unit matching


@dataclass(frozen=True)
class UnitChain:
    """The hidden layers of a plain conv/linear chain, input to output: (weight, bias or None) per layer."""

    layers: tuple[tuple[str, str | None], ...]
    head: str


def unit_chain(arch: PModelArch, layout: Layout) -> UnitChain | None:
    """The chain whose hidden units can be permuted, or None where matching does not apply: a head-only arch,
    an arch with frozen parameters beside the generated ones (LoRA), or layers that are not a plain chain of
    conv/linear layers (each layer's input width the previous layer's output width)."""
    if arch.head_only:
        return None
    model = arch.build(layout.num_classes)
    names = [n for n, _ in model.named_parameters()]
    if set(names) != {s.name for s in layout.segments}:
        return None  # frozen weights (LoRA): hidden units are not free to permute
    modules = list(dict.fromkeys(n.rsplit(".", 1)[0] for n in names))
    if modules[-1] != layout.head or any(n.rsplit(".", 1)[1] not in ("weight", "bias") for n in names):
        return None
    layers, width = [], None
    for m in modules:
        mod = model.get_submodule(m)
        if not isinstance(mod, (nn.Conv2d, nn.Linear)) or getattr(mod, "groups", 1) != 1:
            return None
        shape = layout.by_name[f"{m}.weight"].shape
        if width is not None and shape[1] != width:
            return None
        width = shape[0]
        if m != layout.head:
            layers.append((f"{m}.weight", f"{m}.bias" if f"{m}.bias" in layout.by_name else None))
    return UnitChain(tuple(layers), layout.head) if layers else None


def _permute(t: Tensor, perm: Tensor, dim: int) -> Tensor:
    """t [n, ...] with dimension `dim` (>= 1) reordered per row by perm [n, size]."""
    moved = t.movedim(dim, 1)
    out = moved[torch.arange(t.shape[0]).unsqueeze(1), perm]
    return out.movedim(1, dim)


def align_units(chain: UnitChain, layout: Layout, ref: dict[str, Tensor], others: Tensor) -> Tensor:
    """`others` [n, n_params] (in `layout`) with their hidden units permuted to match `ref` (unflattened
    parameters of one p-Model; only its hidden layers are read). Layer by layer from the input: the previous
    permutation reorders this layer's input channels, then its output units are matched to ref's by the
    Hungarian algorithm on squared distances of their incoming weights (and bias)."""
    from scipy.optimize import linear_sum_assignment
    n = others.shape[0]
    p = {k: v.clone() for k, v in layout.unflatten(others).items()}
    perm = None
    for w, b in chain.layers:
        if perm is not None:
            p[w] = _permute(p[w], perm, 2)
        fo, fr = p[w].flatten(2), ref[w].flatten(1)
        if b is not None:
            fo, fr = torch.cat([fo, p[b].unsqueeze(-1)], -1), torch.cat([fr, ref[b].unsqueeze(-1)], -1)
        fo, fr = fo.double(), fr.double()  # squared distances [n, ref unit, other unit], as one matmul
        cost = (fr.pow(2).sum(-1)[None, :, None] + fo.pow(2).sum(-1)[:, None, :]
                - 2 * torch.einsum("if,njf->nij", fr, fo)).numpy()
        perm = torch.as_tensor(np.stack([linear_sum_assignment(c)[1] for c in cost]), dtype=torch.long)
        p[w] = _permute(p[w], perm, 1)
        if b is not None:
            p[b] = _permute(p[b], perm, 1)
    p[f"{chain.head}.weight"] = _permute(p[f"{chain.head}.weight"], perm, 2)
    return torch.cat([p[s.name].reshape(n, -1) for s in layout.segments], 1)

# ----------------------------------------------------------------------------- distances


@dataclass
class Candidates:
    """Zoo p-Models as candidates for nearest neighbours."""

    theta: Tensor  # [n, n_params]
    layout: Layout
    chain: UnitChain | None
    positions: Tensor  # [n, n_dataset_classes]: the row of each dataset class in p-Model j, -1 if absent

    @classmethod
    def build(cls, theta: Tensor, classes: list[list[str]], arch: PModelArch, names: list[str]) -> "Candidates":
        index = {c: i for i, c in enumerate(names)}
        pos = torch.full((len(classes), len(names)), -1, dtype=torch.long)
        for j, cs in enumerate(classes):
            for r, c in enumerate(cs):
                pos[j, index[c]] = r
        layout = arch.layout(len(classes[0]))
        return cls(theta.float(), layout, unit_chain(arch, layout), pos)


def distances(cands: Candidates, ref: Tensor, ref_layout: Layout, ref_idx: list[int]) -> dict[str, Tensor]:
    """Aligned distances of one p-Model (ref [n_params] in ref_layout, its classes as dataset indices) to
    every candidate: body, head (sqrt(K) x RMS over shared classes; NaN when none is shared), total, shared."""
    ref = ref.float()
    aligned = cands.theta
    if cands.chain is not None:
        aligned = align_units(cands.chain, cands.layout, ref_layout.unflatten(ref), cands.theta)
    body = (cands.layout.body(aligned) - ref_layout.body(ref)).norm(dim=1)
    rows_o, rows_r = cands.layout.head_rows(aligned), ref_layout.head_rows(ref)  # [n, K', d+1], [K, d+1]
    where = cands.positions[:, ref_idx]  # [n, K]: row of the task's class i in candidate j
    shared = where >= 0
    picked = rows_o[torch.arange(len(where)).unsqueeze(1), where.clamp(min=0)]  # [n, K, d+1]
    sq = (picked - rows_r).pow(2).sum(-1) * shared
    n_shared = shared.sum(1)
    head = (len(ref_idx) * sq.sum(1) / n_shared.clamp(min=1)).sqrt()
    head = torch.where(n_shared > 0, head, torch.full_like(head, math.nan))
    return {"body": body, "head": head, "total": (body.pow(2) + head.pow(2)).sqrt(), "shared": n_shared}


def nearest(d: dict[str, Tensor], exclude: int | None = None) -> int:
    """The nearest candidate by total distance among those sharing a class (else by body distance)."""
    total, body = d["total"].clone(), d["body"].clone()
    if exclude is not None:
        total[exclude], body[exclude] = math.inf, math.inf
    ok = torch.isfinite(total)
    return int(torch.where(ok, total, torch.full_like(total, math.inf)).argmin()) if ok.any() else int(body.argmin())

# ----------------------------------------------------------------------------- predictions


@torch.no_grad()
def wrong_predictions(generic, arch: PModelArch, test_x: Tensor, test_y: Tensor, class_idx: list[int],
                      theta: Tensor, *, features: Tensor | None = None, batch_size: int = 1000) -> Tensor:
    """Bool [n_task_images]: which test images of the task's classes a K-way p-Model gets wrong (the same
    images, order and labels as the evaluation engine)."""
    from benchmarks.train import task_data
    k = len(class_idx)
    layout = arch.layout(k)
    p = layout.unflatten(theta.float())
    x, y = task_data(features if arch.head_only else test_x, test_y, class_idx)
    model = None if arch.head_only else generic.module(k, arch).eval()
    wrong = []
    for j in range(0, len(x), batch_size):
        xb = x[j:j + batch_size]
        logits = xb @ p["fc.weight"].T + p["fc.bias"] if arch.head_only else functional_call(model, p, (to_float(xb),))
        wrong.append(logits.argmax(1) != y[j:j + batch_size])
    return torch.cat(wrong) if wrong else torch.zeros(0, dtype=torch.bool)


def neighbour_pmodel(arch: PModelArch, generic, class_idx: list[int], zoo_theta: Tensor, zoo_layout: Layout,
                     zoo_pos: Tensor) -> tuple[Tensor, Tensor]:
    """(the neighbour as a K-way p-Model of the task, classifier selection of the task): the neighbour's body,
    its rows for the task's classes it has, the generic model's rows for the others, in task order."""
    cs = arch.initial_theta(generic.state, class_idx)
    layout = arch.layout(len(class_idx))
    rows = layout.head_rows(cs).clone()
    zoo_rows = zoo_layout.head_rows(zoo_theta.float())
    where = zoo_pos[class_idx]
    have = where >= 0
    rows[have] = zoo_rows[where[have]]
    return layout.assemble(zoo_layout.body(zoo_theta.float()), rows), cs


def jaccard(a: Tensor, b: Tensor) -> float:
    union = (a | b).sum().item()
    return (a & b).sum().item() / union if union else math.nan

# ----------------------------------------------------------------------------- the panel


def novelty_table(generic, arch: PModelArch, test_x: Tensor, test_y: Tensor, tasks: list[dict], theta: Tensor,
                  zoo: dict, *, features: Tensor | None = None, reference_size: int | None = None) -> pd.DataFrame:
    """One row per generated p-Model (kind "generated") and per zoo p-Model of the reference (kind "zoo"):
    its nearest zoo p-Model, the distances to it, accuracy, and the wrong-prediction overlaps."""
    names = list(generic.classes)
    index = {c: i for i, c in enumerate(names)}
    zoo_classes = [list(c) for c in zoo["classes"]]
    cands = Candidates.build(zoo["theta"], zoo_classes, arch, names)
    rows = []

    def one(kind, task_id, classes, vec, exclude=None):
        idx = [index[c] for c in classes]
        layout = arch.layout(len(idx))
        d = distances(cands, vec, layout, idx)
        j = nearest(d, exclude)
        wrong = wrong_predictions(generic, arch, test_x, test_y, idx, vec, features=features)
        nb, cs = neighbour_pmodel(arch, generic, idx, cands.theta[j], cands.layout, cands.positions[j])
        wrong_nb = wrong_predictions(generic, arch, test_x, test_y, idx, nb, features=features)
        wrong_cs = wrong_predictions(generic, arch, test_x, test_y, idx, cs, features=features)
        n = max(len(wrong), 1)
        rows.append({"kind": kind, "task_id": task_id, "neighbour": zoo["task_ids"][j],
                     "shared classes": int(d["shared"][j]), "distance": float(d["total"][j]),
                     "body distance": float(d["body"][j]), "head distance": float(d["head"][j]),
                     "accuracy": 100.0 * (1 - wrong.float().sum().item() / n),
                     "neighbour accuracy": 100.0 * (1 - wrong_nb.float().sum().item() / n),
                     "jaccard neighbour": jaccard(wrong, wrong_nb), "jaccard cs": jaccard(wrong, wrong_cs),
                     "n images": len(wrong)})

    for i, task in enumerate(tasks):
        one("generated", task["id"], task["classes"], theta[i])
    n_ref = len(zoo_classes) if reference_size is None else min(reference_size, len(zoo_classes))
    for j in range(n_ref):
        one("zoo", zoo["task_ids"][j], zoo_classes[j], cands.theta[j], exclude=j)
    return pd.DataFrame(rows)


def summary(table: pd.DataFrame) -> pd.DataFrame:
    """Medians of the distances and means of accuracy and overlaps, per kind."""
    out = []
    labels = {"generated": "generated → nearest zoo p-Model", "zoo": "zoo → nearest other zoo p-Model"}
    for kind in ("generated", "zoo"):
        g = table[table.kind == kind]
        out.append({"p-Models": labels[kind], "n": len(g), "median distance": g["distance"].median(),
                    "median body": g["body distance"].median(), "median head": g["head distance"].median(),
                    "mean shared classes": g["shared classes"].mean(), "p-Acc": g["accuracy"].mean(),
                    "neighbour p-Acc": g["neighbour accuracy"].mean(),
                    "wrong-set Jaccard with neighbour": g["jaccard neighbour"].mean(),
                    "with classifier selection": g["jaccard cs"].mean()})
    return pd.DataFrame(out)


def verdict(table: pd.DataFrame, label: str) -> str:
    """One paragraph: the median generated-to-zoo distance against the median zoo-to-zoo distance."""
    from scipy import stats
    gen = table.loc[table.kind == "generated", "distance"].dropna()
    ref = table.loc[table.kind == "zoo", "distance"].dropna()
    if gen.empty or ref.empty:
        return (f"No verdict for `{label}`: no distances could be computed (no zoo p-Model shares a class with "
                "the tasks); see the body distances in the CSV.")
    mg, mz = float(gen.median()), float(ref.median())
    ratio = mg / mz if mz > 0 else math.inf
    p = float(stats.mannwhitneyu(gen, ref, alternative="less").pvalue) if len(gen) > 1 and len(ref) > 1 else math.nan
    jg = table.loc[table.kind == "generated", "jaccard neighbour"].mean()
    jz = table.loc[table.kind == "zoo", "jaccard neighbour"].mean()
    if ratio < 0.5:
        call = ("**memorization**: they sit much closer to a zoo p-Model than zoo p-Models sit to one another, "
                "i.e. near-copies of their training set")
    elif ratio < 1:
        call = ("**close to the zoo**: nearer to their nearest zoo p-Model than the zoo's own spacing, which is "
                "what retrieval or interpolation between zoo p-Models gives")
    elif ratio <= 2:
        call = ("**new p-Models at the zoo's spacing**: as far from their nearest zoo p-Model as zoo p-Models are "
                "from each other, so not copies")
    else:
        call = ("**far from every zoo p-Model** (more than twice the zoo's spacing): novel, but novelty only "
                "counts where the accuracy holds; far-off p-Models at low accuracy are noise, not generalization")
    return (f"Verdict for `{label}`: the median distance of a generated p-Model to its nearest zoo p-Model is "
            f"{mg:.3g}, against a median zoo-to-zoo nearest-neighbour distance of {mz:.3g} (ratio {ratio:.2f}; "
            f"one-sided Mann-Whitney p = {p:.2g} that generated p-Models lie closer): {call}. Their wrong "
            f"predictions overlap their neighbour's with a mean Jaccard of {jg:.2f}, against {jz:.2f} between zoo "
            "p-Models and their neighbours; the accuracy-versus-distance panel shows whether the accurate ones are "
            "the copies.")


def plot(table: pd.DataFrame, out_stem: Path, title: str) -> list[Path]:
    """Three panels: nearest-zoo distances (generated vs zoo-to-zoo), accuracy vs distance, wrong-set overlap."""
    plt, sns = plotting.pyplot()
    t = table.assign(**{"p-Models": table.kind.map({"generated": "generated → zoo", "zoo": "zoo → zoo"})})
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    ax = axes[0]
    d = t.dropna(subset=["distance"])
    log_x = bool(len(d) and d["distance"].min() > 0 and d["distance"].max() / d["distance"].min() > 50)
    if len(d):
        sns.histplot(data=d, x="distance", hue="p-Models", hue_order=["generated → zoo", "zoo → zoo"],
                     stat="density", common_norm=False, element="step", bins=min(30, max(5, len(d) // 4)),
                     log_scale=log_x, ax=ax)
        for kind, color in zip(["generated → zoo", "zoo → zoo"], sns.color_palette()[:2]):
            med = d.loc[d["p-Models"] == kind, "distance"].median()
            if np.isfinite(med):
                ax.axvline(med, color=color, ls="--", lw=1)
    ax.set(title="distance to the nearest zoo p-Model",
           xlabel=f"aligned L2 distance{' (log)' if log_x else ''}; dashed: medians")
    ax = axes[1]
    sns.scatterplot(data=t, x="distance", y="accuracy", hue="p-Models", style="p-Models",
                    hue_order=["generated → zoo", "zoo → zoo"], s=30, alpha=0.8, ax=ax)
    if log_x:
        ax.set_xscale("log")
    ax.set(title="accuracy vs novelty", xlabel="distance to the nearest zoo p-Model", ylabel="p-Acc on the task (%)")
    ax = axes[2]
    j = pd.concat([
        pd.DataFrame({"overlap": t.loc[t.kind == "generated", "jaccard neighbour"], "pair": "generated vs neighbour"}),
        pd.DataFrame({"overlap": t.loc[t.kind == "generated", "jaccard cs"], "pair": "generated vs CS"}),
        pd.DataFrame({"overlap": t.loc[t.kind == "zoo", "jaccard neighbour"], "pair": "zoo vs neighbour"}),
    ]).dropna()
    if len(j):
        sns.histplot(data=j, x="overlap", hue="pair", stat="density", common_norm=False, element="step",
                     bins=20, binrange=(0, 1), ax=ax)
    ax.set(title="shared wrong predictions", xlabel="Jaccard of misclassified test images")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return plotting.save_figure(fig, out_stem)


def write_report(table: pd.DataFrame, out, *, label: str, arch: PModelArch, split: str, dataset: str = "?",
                 footer: str = "") -> pd.DataFrame:
    """reports/novelty-<method>-<dataset>-<arch>.md, the CSV of the plotted numbers beside it, and the figure
    under reports/figures/ (PNG and SVG)."""
    out = Path(out)
    with artifacts.atomic_path(out.with_suffix(".csv")) as tmp:
        table.to_csv(tmp, index=False, float_format="%.6g")
    figure = out.parent / "figures" / out.stem
    title = f"{label} on {dataset} / {arch.name}, {split} tasks"
    plot(table, figure, title)
    chain = unit_chain(arch, arch.layout(2))
    if chain is not None:
        how = ("hidden units matched layer by layer (" + ", ".join(w.rsplit(".", 1)[0] for w, _ in chain.layers)
               + ") with the Hungarian algorithm on incoming weights, the classifier's input features permuted "
               "alike, before any distance is taken")
    elif arch.head_only:
        how = "a head-only arch: plain L2 distances of the classifier rows (the backbone is frozen and shared)"
    else:
        how = ("plain L2 distances without hidden-unit matching (the generated parameters are LoRA adapters "
               "beside frozen weights, whose units are not free to permute)")
    gen = table[table.kind == "generated"]
    closest = gen.sort_values("distance").head(5)[["task_id", "neighbour", "shared classes", "distance",
                                                     "accuracy", "neighbour accuracy", "jaccard neighbour"]]
    lines = [
        f"# Novelty of `{label}`: generated p-Models vs their nearest zoo p-Models", "",
        f"Dataset `{dataset}`, arch `{arch.name}`, {len(gen)} generated p-Models of the `{split}` tasks against "
        f"{int((table.kind == 'zoo').sum())} zoo p-Models as the reference (each to its nearest *other* zoo "
        "p-Model). After Zeng et al. 2025 (arXiv 2506.07998): a generator that memorizes writes near-copies of "
        "its training p-Models.", "",
        f"- Alignment: {how}.",
        "- Distance = sqrt(body² + head²): body = everything before the classifier; head = the classifier rows of "
        "the classes both tasks share (aligned by class name), RMS row distance × sqrt(K). The nearest zoo "
        "p-Model minimizes it among those sharing a class (else the body distance; head left empty).",
        "- Wrong-set Jaccard: |A ∩ B| / |A ∪ B| of the task's misclassified test images. The neighbour runs as a "
        "K-way p-Model of the evaluated task: its body, its rows for the shared classes and the generic model's "
        "rows (classifier selection) for the rest, in the task's class order. `with classifier selection`: the "
        "same overlap with the task's classifier-selection p-Model, a floor (all p-Models start from the generic "
        "model).", "",
        summary(table).to_markdown(index=False, floatfmt=".3g"), "",
        verdict(table, label), "",
        f"![novelty](figures/{figure.name}.png)", "",
        "## The five generated p-Models closest to a zoo p-Model", "",
        closest.to_markdown(index=False, floatfmt=".3g") if len(closest) else "(none)", "",
        f"Per-p-Model numbers (the plotted ones): `{out.with_suffix('.csv').name}`. {footer}", ""]
    artifacts.write_text("\n".join(lines), out)
    return table


def dataset_of(path) -> str:
    m = re.search(r"data/(?P<dataset>[^/]+)/", str(path).replace("\\", "/"))
    return m["dataset"] if m else "?"


def run_novelty(images_path, generic_path, tasks_path, zoo_path, generated, *, split: str, out,
                label: str | None = None, reference_size: int | None = None, features_path=None,
                arch_name: str | None = None) -> pd.DataFrame:
    """`nndiff novelty`: the memorization panel of a method's generated task-space vectors on `split` against the
    zoo: markdown, CSV of the plotted numbers, PNG and SVG figure. `label` defaults to the vectors' method."""
    from benchmarks.datasets import ImageData
    from benchmarks.evaluate import load_vectors, vector_tasks
    from benchmarks.train import Generic, load_features, load_zoo, pmodel_arch
    data, generic = ImageData.load(images_path), Generic.load(generic_path)
    arch = pmodel_arch(generic, arch_name)
    gen, zoo = load_vectors(generated), load_zoo(zoo_path)
    if gen.get("output_space", "task") != "task":
        raise ValueError(f"{generated}: novelty compares task-space p-Models; these vectors answer among all classes")
    tasks = vector_tasks(gen, tasks_path, split)
    label = label or gen.get("method", "?")
    table = novelty_table(generic, arch, data.test_x, data.test_y, tasks, gen["theta"], zoo,
                          features=load_features(features_path, "test"), reference_size=reference_size)
    prov = artifacts.provenance()
    write_report(table, out, label=label, arch=arch, split=split, dataset=dataset_of(generated),
                 footer=f"Commit `{prov['commit']}`; {prov['hardware']}.")
    g = table[table.kind == "generated"]
    log.info("novelty of %s: median distance to the zoo %.4g vs zoo-to-zoo %.4g -> %s", label, g["distance"].median(),
             table.loc[table.kind == "zoo", "distance"].median(), out)
    return table
