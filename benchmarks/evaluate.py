"""The evaluation engine: parameter vectors + tasks -> per-task accuracy (p-Acc, Tina 3.1).

Every method, the zoo and the oracle are judged by this one function on the same test images.
A vector's output i means class `task[i]` (output space "task"), or, for the generic model and the
paper's classifier selection, output c means dataset class c (output space "all").
"""
from __future__ import annotations

import logging
import math

import pandas as pd
import torch
import torch.nn.functional as F
from torch import Tensor

from benchmarks.pmodels import pmodel_logits
from benchmarks.train import Generic, derive_seed, task_data

OUTPUT_SPACES = ("task", "all")
log = logging.getLogger("nndiff.evaluate")


def check_vectors(theta: Tensor, n_tasks: int, n_params: int, *, method: str, task_ids: list[str]) -> None:
    """Reject wrong shapes and non-finite parameters, naming the method and the first bad task."""
    if theta.ndim != 2 or tuple(theta.shape) != (n_tasks, n_params):
        raise ValueError(f"method {method!r} returned shape {tuple(theta.shape)}; expected [{n_tasks}, {n_params}] "
                         "(one vector per task in the p-Model's flat layout)")
    bad = (~torch.isfinite(theta)).any(dim=1).nonzero().flatten().tolist()
    if bad:
        raise ValueError(f"method {method!r} generated NaN/inf parameters for {len(bad)} task(s), first: "
                         f"{task_ids[bad[0]]!r}; nothing was written")


@torch.no_grad()
def evaluate(generic: Generic, test_x: Tensor, test_y: Tensor, tasks: list[dict], theta: Tensor, *,
             output_space: str = "task", features: Tensor | None = None, method: str = "?",
             batch_size: int = 1000, device: torch.device = torch.device("cpu"), arch=None) -> pd.DataFrame:
    """Accuracy of each task's p-Model on the test images of the task's classes.

    Args:
        test_x: uint8 [M, 3, 32, 32] test images; test_y: int64 [M] dataset labels.
        tasks: [{"id", "classes"}]; theta: [n_tasks, n_params] in the layout of `output_space`.
        features: frozen test features [M, d] for head-only archs (else images go through the net).
        arch: the p-Model architecture (default: the generic model's own).
    Returns:
        one row per task: task_id, classes ("|"-joined), n_images, correct, accuracy (in %).
    """
    if output_space not in OUTPUT_SPACES:
        raise ValueError(f"output_space must be one of {OUTPUT_SPACES}, got {output_space!r}")
    index = {c: i for i, c in enumerate(generic.classes)}
    unknown = sorted({c for t in tasks for c in t["classes"] if c not in index})
    if unknown:
        raise ValueError(f"tasks name classes the dataset lacks: {unknown[:10]}")
    arch = arch or generic.arch
    ks = {len(t["classes"]) for t in tasks}
    k_out = len(generic.classes) if output_space == "all" else (ks.pop() if len(ks) == 1 else None)
    if k_out is None:
        raise ValueError("tasks of different sizes need separate evaluate() calls (one layout per call)")
    layout = arch.layout(k_out)
    check_vectors(theta, len(tasks), layout.n_params, method=method, task_ids=[t["id"] for t in tasks])
    params = layout.unflatten(theta.float())
    model = generic.module(k_out, arch).to(device).eval()  # frozen (non-personalized) weights from the generic model
    rows = []
    for i, task in enumerate(tasks):
        idx = [index[c] for c in task["classes"]]
        source = features if arch.head_only else test_x
        x, y = task_data(source, test_y, idx)  # y: position in the task
        if output_space == "all":
            y = torch.tensor(idx)[y]  # the dataset label: the model answers among all classes
        p = {n: t[i].to(device) for n, t in params.items()}
        correct = 0
        for j in range(0, len(x), batch_size):
            logits = pmodel_logits(model, p, x[j:j + batch_size].to(device), arch.head_only)
            correct += (logits.argmax(1).cpu() == y[j:j + batch_size]).sum().item()
        rows.append({"task_id": task["id"], "classes": "|".join(task["classes"]), "n_images": len(x),
                     "correct": correct, "accuracy": 100.0 * correct / max(len(x), 1)})
    return pd.DataFrame(rows)


@torch.no_grad()
def train_scores(bench, theta: Tensor, tasks, *, shots: int | None = None, key: tuple = (),
                 batch_size: int = 1000) -> tuple[Tensor, Tensor]:
    """Accuracy (a fraction) and mean cross-entropy of p-Model vectors on each task's TRAIN images: the service
    the harness injects into `methods.base.Bench` (`Bench.score_on_train`); the test split is never touched.

    Args:
        bench: the method's Bench (generic model, train images or frozen train features, arch, seed).
        theta: [n_tasks, P] or [n_tasks, n_candidates, P], each task's K-way layout (output i = class i).
        tasks: ids and class names (all dataset classes, one size).
        shots: None: every train image of the task's classes; n: n images per class, the first n of a
            permutation seeded by `derive_seed(bench.seed, *key, task id)`, drawn class after class.
    Returns:
        (accuracy, cross-entropy), each [n_tasks] or [n_tasks, n_candidates] as theta; NaN for a task whose
        classes have no train image. Per candidate: the same forward as `evaluate`, in batches of `batch_size`.
    """
    arch, dev = bench.arch, bench.device
    single = theta.dim() == 2
    theta = theta[:, None] if single else theta
    index = {c: i for i, c in enumerate(bench.class_names)}
    for tid, cs in zip(tasks.ids, tasks.classes):
        unknown = [c for c in cs if c not in index]
        if unknown:
            raise ValueError(f"score_on_train: task {tid!r} names {unknown[0]!r}, which has no train images "
                             "(not a dataset class)")
    sizes = {len(cs) for cs in tasks.classes}
    if len(sizes) > 1:
        raise ValueError("score_on_train: tasks of different sizes need separate calls (one layout per call)")
    k = sizes.pop() if sizes else bench.num_classes
    if arch.head_only and bench.train_features is None:
        raise ValueError(f"score_on_train: head-only arch {arch.name} needs frozen train features")
    source = bench.train_features.float() if arch.head_only else bench.train_x
    model = None if arch.head_only else bench.generic.module(k, arch).to(dev).eval()  # the frozen generic parts
    params = arch.layout(k).unflatten(theta.float())  # {name: [n_tasks, n_candidates, *shape]}
    acc, loss = torch.zeros(theta.shape[:2]), torch.zeros(theta.shape[:2])
    for i, (tid, cs) in enumerate(zip(tasks.ids, tasks.classes)):
        if shots is None:
            x, y = task_data(source, bench.train_y, [index[c] for c in cs])  # y: position in the task
        else:
            g = torch.Generator().manual_seed(derive_seed(bench.seed, *key, tid))
            picks, labels = [], []
            for pos, c in enumerate(cs):
                idx = (bench.train_y == index[c]).nonzero().flatten()
                picks.append(idx[torch.randperm(len(idx), generator=g)[:shots]])
                labels.append(torch.full((len(picks[-1]),), pos))
            x, y = source[torch.cat(picks)], torch.cat(labels)
        y = y.to(dev)
        if not len(y):  # no train image of these classes: nothing to score
            acc[i], loss[i] = float("nan"), float("nan")
            continue
        for j in range(theta.shape[1]):
            p = {n: t[i, j].to(dev) for n, t in params.items()}
            logits = torch.cat([pmodel_logits(model, p, x[b:b + batch_size].to(dev), arch.head_only)
                                for b in range(0, len(x), batch_size)])
            acc[i, j] = (logits.argmax(1) == y).float().mean().cpu()
            loss[i, j] = F.cross_entropy(logits, y).cpu()
    return (acc[:, 0], loss[:, 0]) if single else (acc, loss)


def summarize(acc: pd.Series) -> dict:
    """Mean, std and a 95% t-interval half-width over tasks."""
    from scipy import stats
    n = int(acc.count())
    mean = float(acc.mean()) if n else math.nan
    std = float(acc.std(ddof=1)) if n > 1 else math.nan
    half = float(stats.t.ppf(0.975, n - 1) * std / math.sqrt(n)) if n > 1 else math.nan
    return {"n": n, "mean": mean, "std": std, "ci95": half}


def paired(a: pd.DataFrame, b: pd.DataFrame) -> dict:
    """Paired difference a - b over the tasks both evaluated (method vs a baseline on the same tasks)."""
    m = a.merge(b, on="task_id", suffixes=("_a", "_b"))
    return summarize(m["accuracy_a"] - m["accuracy_b"])

# ----------------------------------------------------------------------------- `nndiff evaluate`


def load_vectors(path) -> dict:
    """A vectors file of `nndiff generate` or `nndiff oracle`; anything else fails naming it."""
    from benchmarks import artifacts
    return artifacts.load_torch(path, what="vectors from `nndiff generate` or `nndiff oracle`",
                                keys=("task_ids", "theta"))


def vector_tasks(vectors: dict, tasks_path, split: str) -> list[dict]:
    """The task records of `split` that the vectors name, in the vectors' order; a task outside the split fails."""
    from benchmarks.tasks import get_split, load_tasks
    by_id = {t["id"]: t for t in get_split(load_tasks(tasks_path), split)}
    missing = [t for t in vectors["task_ids"] if t not in by_id]
    if missing:
        raise ValueError(f"vectors name tasks not in split {split!r}: {missing[:5]}")
    return [by_id[t] for t in vectors["task_ids"]]


def run_evaluate(images_path, generic_path, tasks_path, vectors_path, *, split: str, out, device: torch.device,
                 features_path=None, label: str | None = None, arch_name: str | None = None) -> pd.DataFrame:
    """`nndiff evaluate`: per-task accuracy of a vectors file on its split, to a CSV with the collapse alarm's
    columns (benchmarks/report.py); logs p-Acc and warns of near-identical or chance-level p-Models."""
    from benchmarks import artifacts
    from benchmarks.datasets import ImageData
    from benchmarks.report import collapse_check
    from benchmarks.train import load_features, pmodel_arch
    data, generic = ImageData.load(images_path), Generic.load(generic_path)
    vec = load_vectors(vectors_path)
    tasks = vector_tasks(vec, tasks_path, split)
    df = evaluate(generic, data.test_x, data.test_y, tasks, vec["theta"], output_space=vec.get("output_space", "task"),
                  features=load_features(features_path, "test"), method=vec.get("method", "?"), device=device,
                  arch=pmodel_arch(generic, arch_name))
    df.insert(0, "split", split)
    df.insert(0, "method", label or vec.get("method", "?"))
    spread = collapse_check(df, vec, tasks, pmodel_arch(generic, arch_name))
    with artifacts.atomic_path(out) as tmp:
        df.to_csv(tmp, index=False)
    _log_evaluation(df, split, spread, out)
    return df


def _log_evaluation(df: pd.DataFrame, split: str, spread: dict, out) -> None:
    s = summarize(df["accuracy"])
    log.info("%s on %s: p-Acc %.2f +- %.2f (95%% CI, n=%d) -> %s", df["method"][0], split, s["mean"],
             s["ci95"], s["n"], out)
    if spread and spread["identical"]:
        log.warning("%s on %s: the generated p-Models are near-identical across tasks (mean pairwise cosine of "
                    "the heads %.4f > %g): collapsed generator", df["method"][0], split,
                    spread["gen_head_cos"], spread["limit"])
    if spread and spread["collapse"]:
        log.warning("%s on %s: p-Acc %.2f +- %.2f reaches chance (%.2f%%): collapse", df["method"][0], split,
                    s["mean"], s["ci95"], spread["chance"])
