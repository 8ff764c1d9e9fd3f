"""Noised nearest neighbour: the retrieved zoo p-Model plus Gaussian noise of a set size (a yardstick).

Zeng et al. 2025 ("Generative modeling of weights: generalization or memorization?", arXiv 2506.07998) find
that weight generators largely reproduce their training checkpoints, and compare them with the simplest
memorizer: a training checkpoint plus noise, as far from it as the generated weights are. Here:
1. the nearest zoo p-Model by task text: the best one-to-one matching of centred class-name embeddings
   (methods/matching.py, shared with `retrieval`), its classifier rows reordered to the prompt;
2. plus a Gaussian noise vector of L2 norm exactly `distance` in parameter space, drawn per task from
   (seed, task id); `relative: true` counts `distance` in zoo gaps (the median distance of a zoo p-Model to
   its nearest other one). `match_vectors` sets the distance from a generator's output instead: the median
   L2 distance of its vectors to their nearest zoo p-Model, so the baseline is as far from the zoo as that
   generator is.
`distance: 0` is plain retrieval (top-1), bit for bit.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor

from methods.base import ENCODERS, Bench, Method, Tasks, centred_zoo_embeddings, derive_seed, load_generated, option
from methods.matching import rank_tasks

SHAPES = ("isotropic", "zoo-std")


def nearest_distance(vectors: Tensor, zoo: Tensor, chunk: int = 256) -> Tensor:
    """L2 distance of each vector [n, P] to its nearest zoo vector [N, P] -> [n] (float64, chunked)."""
    zoo = zoo.double()
    out = [torch.cdist(v.double(), zoo).min(1).values for v in vectors.split(chunk)]
    return torch.cat(out) if out else torch.zeros(0, dtype=torch.float64)


class NoisedNeighbour(Method):
    """Retrieval's nearest zoo p-Model (rows in prompt order) plus seeded Gaussian noise of L2 norm `distance`."""

    name = "noised-neighbour"

    @dataclass
    class Config:
        # L2 norm of the noise vector in parameter space; 0: plain retrieval. Read by generate() only (noise is
        # drawn there), so a variant may sweep it on one fit.
        distance: float = option(0.0, min=0, generate=True)
        # True: `distance` is in units of the zoo's median nearest-neighbour gap (each zoo p-Model's L2 distance
        # to its nearest other zoo p-Model), a scale that carries across archs and profiles; 0.5: halfway there
        relative: bool = option(False, generate=True)
        # a generated-vectors .pt ({"theta": [n, n_params]}, e.g. data/<ds>/<arch>/methods/tina/generated/ood.pt):
        # the median L2 distance of its vectors to their nearest zoo p-Model sets the noise norm (Zeng et al.'s
        # matched-distance comparison) and overrides `distance`. Read at fit; the DAG does not know the file,
        # so generate that method first.
        match_vectors: str | None = None
        # "isotropic": the same std on every coordinate; "zoo-std": shaped by the zoo's per-coordinate std (body
        # per coordinate, head per column shared by all rows), then scaled to the norm, i.e. noise along the
        # directions the zoo varies in (isotropic noise puts ~97% of its energy on the cnn-5k convs)
        noise: str = option("isotropic", choices=SHAPES, generate=True)
        # None: the benchmark's text encoder; else an encoder name (clip, minilm)
        encoder: str | None = option(None, choices=ENCODERS)
        centre: bool = True  # subtract the zoo's mean class embedding before cosine (as retrieval)
        # None: the benchmark's seed; the noise of a task comes from (seed, task id)
        seed: int | None = option(None, min=0, generate=True)

    def _match(self, bench: Bench) -> dict:
        """With `match_vectors`: the median nearest-zoo distance of those vectors (and each one's distance)."""
        if self.config.match_vectors is None:
            return {}
        path = Path(self.config.match_vectors)
        if not path.exists():
            raise FileNotFoundError(f"noised-neighbour match_vectors: {path} does not exist (generate that method's "
                                    "vectors first)")
        theta = load_generated(path)["theta"].float()
        if theta.ndim != 2 or theta.shape[1] != bench.zoo.theta.shape[1] or not len(theta):
            raise ValueError(f"noised-neighbour match_vectors: {path} holds vectors of shape {tuple(theta.shape)}; "
                             f"the zoo's p-Models have {bench.zoo.theta.shape[1]} parameters (a K-way method's "
                             "output is needed, not an all-class one)")
        d = nearest_distance(theta, bench.zoo.theta.float())
        return {"match_vectors": str(path), "match_distance": float(d.median()), "match_distances": d.float()}

    @property
    def distance(self) -> float:
        """The noise norm: the matched distance of `match_vectors`, else `distance` (x the zoo gap if relative)."""
        state, c = self.state, self.config
        if c.match_vectors is not None:
            if "match_distance" not in state:
                raise ValueError(f"noised-neighbour: match_vectors is set, but the fit in {self.workdir} had none; "
                                 "refit with match_vectors")
            return state["match_distance"]
        return c.distance * (state["zoo_gap"] if c.relative else 1.0)

    def fit(self, bench: Bench, workdir: Path) -> None:
        if len(bench.zoo) == 0:
            raise ValueError("noised-neighbour needs a non-empty zoo of p-Models")
        encoder = self.text_encoder_for(self.config.encoder)
        zoo_vec, centre, _ = centred_zoo_embeddings(encoder, bench.zoo.classes, self.config.centre)
        theta = bench.zoo.theta.float()
        layout = bench.arch.layout(zoo_vec.shape[1])
        body, rows = layout.body(theta), layout.head_rows(theta)
        # Noise shape (only read when noise == "zoo-std"): head statistics per column, shared by every row,
        # so the shape does not depend on the prompt's class order or size.
        body_std = body.std(0, correction=0) if body.shape[1] else body.new_zeros(0)
        row_std = rows.reshape(-1, rows.shape[-1]).std(0, correction=0)
        # The zoo's median nearest-neighbour gap: the unit of `relative` distances (0 for a zoo of one).
        gaps = torch.cdist(theta.double(), theta.double()).fill_diagonal_(float("inf")).min(1).values
        zoo_gap = float(gaps.median()) if len(theta) > 1 else 0.0
        self.save_state(theta=theta, task_ids=list(bench.zoo.task_ids), zoo_vec=F.normalize(zoo_vec, dim=-1),
                        centre=centre, encoder=encoder.name, body_std=body_std, row_std=row_std, zoo_gap=zoo_gap,
                        **self._match(bench))

    @property
    def seed(self) -> int:
        return self.config.seed if self.config.seed is not None else self.bench.seed

    def noise(self, task_id: str, k: int) -> Tensor:
        """The noise vector of one task: [n_params(k)], L2 norm exactly `self.distance`."""
        state = self.state
        layout = self.bench.arch.layout(k)
        g = torch.Generator().manual_seed(derive_seed(self.seed, "noised-neighbour", task_id))
        z = torch.randn(layout.n_params, generator=g, dtype=torch.float64)
        if self.config.noise == "zoo-std":
            scale = layout.assemble(state["body_std"].double(), state["row_std"].double().expand(k, -1))
            z = z * scale
        norm = z.norm()
        return (z * (self.distance / norm) if norm > 0 else z).float()

    @torch.no_grad()
    def generate(self, tasks: Tasks) -> Tensor:
        state = self.state
        encoder = self.text_encoder_for(self.config.encoder, fitted=state["encoder"])
        sizes = sorted({len(cs) for cs in tasks.classes})
        if len(sizes) > 1:
            raise ValueError(f"tasks of different sizes {sizes}: generate each size separately")
        k_zoo = state["zoo_vec"].shape[1]
        k = sizes[0] if sizes else k_zoo
        if not 1 <= k <= k_zoo:
            raise ValueError(f"tasks of {k} classes, but zoo p-Models have {k_zoo} rows")
        zoo_layout = self.bench.arch.layout(k_zoo)
        if not len(tasks):
            return state["theta"].new_zeros(0, zoo_layout.with_classes(k).n_params)
        best, cols, _ = rank_tasks(encoder, tasks.classes, state["centre"], state["zoo_vec"], top=1)
        theta = state["theta"][best[:, 0]]  # [n, n_params(K)]
        head = zoo_layout.head_rows(theta)  # [n, K, d+1]
        rows = torch.gather(head, 1, cols[:, 0, :, None].expand(-1, -1, head.shape[-1]))  # [n, k, d+1]: prompt order
        out = zoo_layout.with_classes(k).assemble(zoo_layout.body(theta), rows)  # [n, n_params(k)]
        if self.distance > 0:
            out = out + torch.stack([self.noise(t, k) for t in tasks.ids])
        return out
