"""Class-name text helpers shared by the text-conditioned baselines (retrieval, noised-neighbour, hypernet).

- `class_embeddings`: raw text embeddings of class names (`class_prompt` of each name), one per name.
- `centred_zoo_embeddings`: the zoo's class names embedded and centred on the zoo's mean class embedding
  (CLIP class-name embeddings share one direction, FINDINGS 3), as methods/tina.py and methods/retrieval.py do.
- `match` / `rank_zoo`: score each zoo task against a query by the best one-to-one matching of query classes
  to zoo classes (Hungarian algorithm, maximizing the total cosine similarity), so prompt order does not
  matter; ties go to the matching that moves fewest rows, then to the earlier zoo model, so a query equal to
  a zoo task returns exactly that p-Model.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from scipy.optimize import linear_sum_assignment
from torch import Tensor

from benchmarks.encoders import class_prompt

TIE = 1e-6  # total similarities closer than this are a tie (float noise)


def class_embeddings(encoder, names: list[str]) -> Tensor:
    """Raw float embeddings [len(names), D] of class names, through `class_prompt` (aquarium_fish -> aquarium fish)."""
    return encoder.encode_text([class_prompt(n) for n in names]).float()


def centred_zoo_embeddings(encoder, zoo_classes: list[list[str]],
                           centre: bool = True) -> tuple[Tensor, Tensor, list[str]]:
    """The zoo's class names, embedded and centred on their mean (over distinct names).

    Returns (centred embeddings [n_zoo, K, D] in each zoo task's class order, the centre [D] (zeros when
    `centre` is False), the distinct names in sorted order)."""
    names = sorted({n for cs in zoo_classes for n in cs})
    e = class_embeddings(encoder, names)  # [n_names, D]
    mean = e.mean(0) if centre else torch.zeros(e.shape[1])
    index = {n: i for i, n in enumerate(names)}
    rows = torch.tensor([[index[n] for n in cs] for cs in zoo_classes], dtype=torch.long)  # [n_zoo, K]
    return (e - mean)[rows], mean, names


def match(sim: np.ndarray) -> tuple[float, np.ndarray]:
    """Best assignment of query classes (rows) to zoo classes (columns). sim [k_query, k_zoo], k_query <= k_zoo.
    Returns (total similarity, zoo column of each query class [k_query])."""
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
