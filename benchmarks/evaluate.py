"""The evaluation engine: parameter vectors + tasks -> per-task accuracy (p-Acc, Tina 3.1).

Every method, the zoo and the oracle are judged by this one function on the same test images.
A vector's output i means class `task[i]` (output space "task"), or, for the generic model and the
paper's classifier selection, output c means dataset class c (output space "all").
"""
from __future__ import annotations

import math

import pandas as pd
import torch
from torch import Tensor
from torch.func import functional_call

from benchmarks.pmodels import to_float
from benchmarks.train import Generic, task_data

OUTPUT_SPACES = ("task", "all")


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
            xb = x[j:j + batch_size].to(device)
            if arch.head_only:
                logits = xb @ p["fc.weight"].T + p["fc.bias"]
            else:
                logits = functional_call(model, p, (to_float(xb),))
            correct += (logits.argmax(1).cpu() == y[j:j + batch_size]).sum().item()
        rows.append({"task_id": task["id"], "classes": "|".join(task["classes"]), "n_images": len(x),
                     "correct": correct, "accuracy": 100.0 * correct / max(len(x), 1)})
    return pd.DataFrame(rows)


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
