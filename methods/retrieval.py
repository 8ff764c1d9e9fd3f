"""Zoo retrieval: the zoo p-Model whose task is nearest in text space, rows reordered to the prompt (a yardstick).

Not in the papers. It asks how far a generator gets beyond looking up what it was trained on: a generative
method that does not beat retrieval on OOD tasks has learned little more than a nearest-neighbour table.
1. Embed every class name (the benchmark's text encoder); centre on the zoo's mean class embedding and
   normalize, since CLIP class-name embeddings share one direction (FINDINGS 3).
2. Score each zoo task against the query by the best one-to-one matching of query classes to zoo classes
   (Hungarian algorithm, maximizing the total cosine similarity), so the order of the prompt does not matter.
3. Return the best zoo p-Model: its body as is, its head rows permuted so that output i is the zoo class
   matched to query class i. A query with fewer classes than the zoo's tasks keeps only the matched rows.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from scipy.optimize import linear_sum_assignment
from torch import Tensor

from benchmarks.encoders import class_prompt
from methods.base import Bench, Method, Tasks

TIE = 1e-6  # total similarities closer than this are a tie (float noise)


def match(sim: np.ndarray) -> tuple[float, np.ndarray]:
    """Best assignment of query classes (rows) to zoo classes (columns). sim [k_query, k_zoo], k_query <= k_zoo.
    Returns (total similarity, zoo column of each query class [k_query])."""
    r, c = linear_sum_assignment(sim, maximize=True)  # r comes back sorted: 0..k_query-1
    return float(sim[r, c].sum()), c


class Retrieval(Method):
    """Nearest zoo task by matched class-name similarity; its p-Model with rows in prompt order."""

    name = "retrieval"

    @dataclass
    class Config:
        encoder: str | None = None  # None: the benchmark's text encoder; else an encoder name (clip, minilm)
        top_k: int = 1  # >1: average the bodies and the (matched, reordered) head rows of the k best zoo models
        centre: bool = True  # subtract the mean class embedding before cosine (CLIP names share a direction)

    def __init__(self, config=None):
        super().__init__(config)
        if self.config.top_k < 1:
            raise ValueError(f"retrieval top_k must be >= 1, got {self.config.top_k}")

    def _encoder(self):
        return self.bench.text_encoder(self.config.encoder)

    def fit(self, bench: Bench, workdir: Path) -> None:
        # Nothing to learn: embed the zoo's class names once and keep the zoo for generate().
        encoder = self._encoder()
        names = sorted({n for cs in bench.zoo.classes for n in cs})
        e = encoder.encode_text([class_prompt(n) for n in names]).float()  # [n_names, d]
        centre = e.mean(0) if self.config.centre else torch.zeros(e.shape[1])
        vec = F.normalize(e - centre, dim=-1)
        index = {n: i for i, n in enumerate(names)}
        zoo_rows = torch.tensor([[index[n] for n in cs] for cs in bench.zoo.classes])  # [n_zoo, K]
        self.save_state(theta=bench.zoo.theta, task_ids=list(bench.zoo.task_ids), zoo_vec=vec[zoo_rows],
                        centre=centre, encoder=encoder.name)

    def ranking(self, tasks: Tasks) -> tuple[Tensor, Tensor, Tensor]:
        """Zoo models for each task, best first. Returns (zoo index [n, top_k], matched zoo row of each query
        class [n, top_k, k], total similarity [n, top_k])."""
        state = self.state
        if len({len(cs) for cs in tasks.classes}) > 1:
            raise ValueError("tasks of different sizes: generate each size separately")
        encoder = self._encoder()
        if encoder.name != state["encoder"]:
            raise ValueError(f"retrieval was fitted with text encoder {state['encoder']!r}, generating with "
                             f"{encoder.name!r}: use the same encoder")
        k_zoo = state["zoo_vec"].shape[1]
        if tasks.classes and len(tasks.classes[0]) > k_zoo:
            raise ValueError(f"tasks of {len(tasks.classes[0])} classes, but zoo p-Models have {k_zoo} rows")
        names = sorted({n for cs in tasks.classes for n in cs})
        q = F.normalize(encoder.encode_text([class_prompt(n) for n in names]).float() - state["centre"], dim=-1)
        index = {n: i for i, n in enumerate(names)}
        zoo_vec = state["zoo_vec"].numpy()  # [n_zoo, K, d]
        top = min(self.config.top_k, len(zoo_vec))
        best, cols, scores = [], [], []
        for cs in tasks.classes:
            sim = np.einsum("qd,zkd->zqk", q[[index[n] for n in cs]].numpy(), zoo_vec)  # [n_zoo, k, K]
            found = [match(s) for s in sim]
            # Best total first; ties go to the matching that moves fewest rows, then to the earlier zoo model,
            # so a query equal to a zoo task returns exactly that p-Model.
            totals = np.array([t for t, _ in found])
            moved = np.array([(c != np.arange(len(cs))).sum() for _, c in found])
            order = np.lexsort((np.arange(len(found)), moved, -np.round(totals / TIE)))[:top].tolist()  # last key first
            best.append(order)
            cols.append([found[z][1] for z in order])
            scores.append([found[z][0] for z in order])
        return torch.tensor(best), torch.tensor(np.array(cols)), torch.tensor(scores)

    @torch.no_grad()
    def generate(self, tasks: Tasks) -> Tensor:
        state = self.state
        best, cols, _ = self.ranking(tasks)  # [n, top_k], [n, top_k, k]
        layout = self.bench.arch.layout(state["zoo_vec"].shape[1])
        theta = state["theta"][best]  # [n, top_k, n_params(K)]
        head = layout.head_rows(theta)  # [n, top_k, K, d+1]
        rows = torch.gather(head, 2, cols[..., None].expand(-1, -1, -1, head.shape[-1]))  # [n, top_k, k, d+1]
        out = layout.with_classes(cols.shape[-1]).assemble(layout.body(theta), rows)  # [n, top_k, n_params(k)]
        return out[:, 0].clone() if out.shape[1] == 1 else out.mean(1)  # top_k = 1: a bit-exact copy
