"""Matching a prompt's classes to zoo tasks, shared by the text-conditioned baselines (retrieval, noised-neighbour).

- `match` / `rank_zoo`: score each zoo task against a query by the best one-to-one matching of query classes
  to zoo classes (Hungarian algorithm, maximizing the total cosine similarity), so prompt order does not
  matter; ties go to the matching that moves fewest rows, then to the earlier zoo model, so a query equal to
  a zoo task returns exactly that p-Model.
- `rank_tasks`: the same for the tasks of one size, from class names. Class names are embedded and centred
  on the zoo's mean class embedding (`class_embeddings`, `centred_zoo_embeddings` of the method API), since
  class-name embeddings share one direction (docs/design-notes.md §3).
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from methods.base import class_embeddings

TIE = 1e-6  # total similarities closer than this are a tie (float noise)


def match(sim: np.ndarray) -> tuple[float, np.ndarray]:
    """Best assignment of query classes (rows) to zoo classes (columns). sim [k_query, k_zoo], k_query <= k_zoo.
    Returns (total similarity, zoo column of each query class [k_query])."""
    from scipy.optimize import linear_sum_assignment  # here: scipy.optimize takes ~0.5 s to import
    r, c = linear_sum_assignment(sim, maximize=True)  # r comes back sorted: 0..k_query-1
    return float(sim[r, c].sum()), c


def rank_zoo(query: np.ndarray, zoo_vec: np.ndarray, top: int = 1) -> tuple[list[int], list[np.ndarray], list[float]]:
    """The `top` zoo tasks nearest to one query, best first.

    Args:
        query: [k, D] unit-norm (centred) embeddings of the query's classes, in prompt order.
        zoo_vec: [n_zoo, K, D] unit-norm (centred) embeddings of each zoo task's classes, k <= K.
    Returns: (zoo indices, matched zoo row of each query class [k] per index, total cosine similarity per index).
    """
    sim = np.einsum("qd,zkd->zqk", query, zoo_vec)  # [n_zoo, k, K]
    found = [match(s) for s in sim]
    totals = np.array([t for t, _ in found])
    moved = np.array([(c != np.arange(len(query))).sum() for _, c in found])
    order = np.lexsort((np.arange(len(found)), moved, -np.round(totals / TIE)))[:top].tolist()  # last key first
    return order, [found[z][1] for z in order], [found[z][0] for z in order]


def rank_tasks(encoder, classes: list[list[str]], centre: Tensor, zoo_vec: Tensor,
               top: int = 1) -> tuple[Tensor, Tensor, Tensor]:
    """`rank_zoo` for each task of one size. classes: each task's class names in prompt order; centre [D]: the
    zoo's mean class embedding; zoo_vec [n_zoo, K, D]: unit-norm centred zoo class embeddings.
    Returns (zoo index [n, top], matched zoo row of each query class [n, top, k], total similarity [n, top])."""
    names = sorted({n for cs in classes for n in cs})
    q = F.normalize(class_embeddings(encoder, names) - centre, dim=-1)
    index = {n: i for i, n in enumerate(names)}
    zoo = zoo_vec.numpy()
    top = min(top, len(zoo))
    best, cols, scores = [], [], []
    for cs in classes:
        order, matched, totals = rank_zoo(q[[index[n] for n in cs]].numpy(), zoo, top)
        best.append(order)
        cols.append(matched)
        scores.append(totals)
    k = len(classes[0]) if classes else 0
    return (torch.tensor(best, dtype=torch.long).view(len(classes), top),
            torch.tensor(np.array(cols), dtype=torch.long).view(len(classes), top, k),
            torch.tensor(scores, dtype=torch.float32).view(len(classes), top))
