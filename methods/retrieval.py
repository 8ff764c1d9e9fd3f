"""Zoo retrieval: the zoo p-Model whose task is nearest in text space, rows reordered to the prompt (a yardstick).

Not in the papers. It asks how far a generator gets beyond looking up what it was trained on: a generative
method that does not beat retrieval on OOD tasks has learned little more than a nearest-neighbour table.
1. Embed every class name (the benchmark's text encoder); centre on the zoo's mean class embedding and
   normalize, since CLIP class-name embeddings share one direction (docs/design-notes.md §3).
2. Score each zoo task against the query by the best one-to-one matching of query classes to zoo classes
   (Hungarian algorithm, maximizing the total cosine similarity), so the order of the prompt does not matter.
3. Return the best zoo p-Model: its body as is, its head rows permuted so that output i is the zoo class
   matched to query class i. A query with fewer classes than the zoo's tasks keeps only the matched rows.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor

from methods.base import ENCODERS, Bench, Method, Tasks, centred_zoo_embeddings, option
from methods.matching import TIE, match, rank_tasks  # noqa: F401 (TIE, match re-exported)


class Retrieval(Method):
    """Nearest zoo task by matched class-name similarity; its p-Model with rows in prompt order."""

    name = "retrieval"

    @dataclass
    class Config:
        # None: the benchmark's text encoder; else an encoder name (clip, minilm)
        encoder: str | None = option(None, choices=ENCODERS)
        # >1: average the bodies and the (matched, reordered) head rows of the k best zoo models. Read by
        # generate() only (the fit keeps the whole zoo), so a variant may change it.
        top_k: int = option(1, min=1, generate=True)
        centre: bool = True  # subtract the mean class embedding before cosine (CLIP names share a direction)

    def fit(self, bench: Bench, workdir: Path) -> None:
        # Nothing to learn: embed the zoo's class names once and keep the zoo for generate().
        encoder = self.text_encoder_for(self.config.encoder)
        zoo_vec, centre, _ = centred_zoo_embeddings(encoder, bench.zoo.classes, self.config.centre)  # [n_zoo, K, d]
        self.save_state(theta=bench.zoo.theta, task_ids=list(bench.zoo.task_ids), zoo_vec=F.normalize(zoo_vec, dim=-1),
                        centre=centre, encoder=encoder.name)

    def ranking(self, tasks: Tasks) -> tuple[Tensor, Tensor, Tensor]:
        """Zoo models for each task, best first. Returns (zoo index [n, top_k], matched zoo row of each query
        class [n, top_k, k], total similarity [n, top_k])."""
        state = self.state
        if len({len(cs) for cs in tasks.classes}) > 1:
            raise ValueError("tasks of different sizes: generate each size separately")
        encoder = self.text_encoder_for(self.config.encoder, fitted=state["encoder"])
        k_zoo = state["zoo_vec"].shape[1]
        if tasks.classes and len(tasks.classes[0]) > k_zoo:
            raise ValueError(f"tasks of {len(tasks.classes[0])} classes, but zoo p-Models have {k_zoo} rows")
        # Best total first; ties to the matching that moves fewest rows, then to the earlier zoo model
        # (methods/matching.py), so a query equal to a zoo task returns exactly that p-Model.
        return rank_tasks(encoder, tasks.classes, state["centre"], state["zoo_vec"], self.config.top_k)

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
