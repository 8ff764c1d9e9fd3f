"""TAPER, train-once-for-all personalization by mixing expert weights (Chen et al. 2023; Tina 2.1.2, A.4).

Three stages, as Tina A.4 sets TAPER up:
1. Stage 1 is the benchmark's generic model (shared by every method).
2. Experts: the generic |Y|-way model fine-tuned for 5 epochs on each of 2 class shards of the train set.
3. Mixer: an MLP maps the task's text embedding (TAPER merges the class embeddings into one) to per-layer
   mixing weights over the experts; it is trained for 5 epochs on the zoo's tasks with the experts frozen,
   and is frozen at test. The personalized model is the weighted sum of the experts' *weights* (not of their
   predictions), its classifier cut to the task's rows in prompt order (classifier selection).
A class without a classifier row (not a dataset class) cannot be served: TAPER has no 100%-unseen row (Table 3).
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from methods.base import (AUGMENTATIONS, ENCODERS, Bench, Layout, Method, Tasks, augment, centred_zoo_embeddings,
                          class_embeddings, derive_seed, fit_model, option, pmodel_logits, task_data, to_float)

log = logging.getLogger(__name__)

MIXINGS = ("softmax", "free")
HEADS = ("select",)
TEXTS = ("mean",)

# ----------------------------------------------------------------------------- helpers


def layer_index(layout: Layout, per_layer: bool = True) -> Tensor:
    """Index of each flat coordinate's layer (module) [n_params]; all zeros when mixing is global.
    `fc.weight` and `fc.bias` are one layer: a mixing weight belongs to a module, as in TAPER's per-block mixing."""
    idx = torch.zeros(layout.n_params, dtype=torch.long)
    if per_layer:
        modules = list(dict.fromkeys(s.name.rsplit(".", 1)[0] for s in layout.segments))  # registration order
        for s in layout.segments:
            idx[s.offset:s.stop] = modules.index(s.name.rsplit(".", 1)[0])
    return idx


def mix(w: Tensor, experts: Tensor, layer_of: Tensor) -> Tensor:
    """theta = sum_e w_e(layer) * theta_e.  w [n, n_layers, E], experts [n, E, n_params], layer_of [n_params]
    -> [n, n_params]."""
    return torch.einsum("npe,nep->np", w[:, layer_of, :], experts)


class Mixer(nn.Module):
    """MLP: task text embedding [n, d] -> mixing weights [n, n_layers, n_experts]."""

    def __init__(self, dim: int, hidden: int, n_layers: int, n_experts: int, mixing: str):
        super().__init__()
        self.n_layers, self.n_experts, self.mixing = n_layers, n_experts, mixing
        self.net = nn.Sequential(nn.Linear(dim, hidden), nn.ReLU(), nn.Linear(hidden, n_layers * n_experts))
        # Zero last layer: training starts from the plain average of the experts (uniform weights), a sane model.
        nn.init.zeros_(self.net[-1].weight)
        nn.init.zeros_(self.net[-1].bias)

    def forward(self, z: Tensor) -> Tensor:
        a = self.net(z).view(-1, self.n_layers, self.n_experts)
        # softmax: a convex combination per layer; free: unconstrained weights around the average.
        return a.softmax(-1) if self.mixing == "softmax" else a + 1.0 / self.n_experts

# ----------------------------------------------------------------------------- the method


class Taper(Method):
    """Experts fine-tuned on class shards, mixed per layer by a text-conditioned MLP (TAPER, Tina A.4)."""

    name = "taper"

    @dataclass
    class Config:
        n_experts: int = option(2, min=1)  # Tina A.4: two base models
        expert_epochs: int = option(5, min=0)  # Tina A.4
        expert_lr: float = option(1e-3, above=0)  # Adam, as the zoo's fine-tuning (not stated by either paper)
        mixer_epochs: int = option(5, min=0)  # Tina A.4
        mixer_lr: float = option(1e-3, above=0)  # Adam; not stated
        # None: each epoch sees all of a task's images; n: cap (CPU profiles)
        mixer_steps_per_task: int | None = option(None, min=1)
        # one hidden layer; TAPER's mixer is a small MLP, width not stated for this setup
        mixer_hidden: int = option(256, min=1)
        # softmax: convex weights per layer (TAPER); "free": unconstrained, init 1/E
        mixing: str = option("softmax", choices=MIXINGS)
        per_layer: bool = True  # TAPER mixes per layer/block; False: one weight per expert for the whole model
        # mixed |Y|-way head cut to the task's rows in prompt order (classifier selection)
        head: str = option("select", choices=HEADS)
        # TAPER merges class-name embeddings into one (Tina 3.2, Table 6): their mean
        text: str = option("mean", choices=TEXTS)
        centre: bool = True  # subtract the mean class embedding first: names share a direction (design-notes §3)
        # None: the benchmark's text encoder; else an encoder name (clip, minilm)
        encoder: str | None = option(None, choices=ENCODERS)
        # none | flip | crop-flip, for experts and mixer: the zoo's fine-tuning recipe
        augment: str = option("flip", choices=AUGMENTATIONS)
        batch_size: int = option(128, min=1)  # the zoo's fine-tuning batch

    # -- text
    def _class_vectors(self, encoder, names: list[str], centre: Tensor) -> Tensor:
        """Unit class-name embeddings [n, d], centred on the zoo's mean class embedding if asked."""
        return F.normalize(class_embeddings(encoder, names) - centre, dim=-1)

    def _task_vectors(self, encoder, classes: list[list[str]], centre: Tensor) -> Tensor:
        """One embedding per task [n_tasks, d]: the mean of its class vectors (TAPER's merged text)."""
        names = sorted({c for cs in classes for c in cs})
        vec = dict(zip(names, self._class_vectors(encoder, names, centre)))
        return torch.stack([torch.stack([vec[c] for c in cs]).mean(0) for cs in classes])

    # -- training
    def _train_experts(self, bench: Bench) -> tuple[Tensor, list[list[int]]]:
        """Stage 2: each expert = the generic |Y|-way model fine-tuned on one class shard. -> [E, n_params(|Y|)]."""
        c, arch, n_all = self.config, bench.arch, len(bench.class_names)
        gen = torch.Generator().manual_seed(derive_seed(bench.seed, "taper", "shards"))
        perm = torch.randperm(n_all, generator=gen)
        shards = [sorted(s.tolist()) for s in perm.chunk(c.n_experts)]  # disjoint class halves, by label
        experts = []
        for e, shard in enumerate(shards):
            seed = derive_seed(bench.seed, "taper", "expert", e)
            torch.manual_seed(seed)
            gen = torch.Generator().manual_seed(seed)
            model = arch.from_generic(bench.generic.state).to(bench.device)  # |Y|-way: labels stay dataset labels
            keep = torch.isin(bench.train_y, torch.tensor(shard))
            if arch.head_only:
                fit_model(model.fc, bench.train_features[keep], bench.train_y[keep], epochs=c.expert_epochs,
                    lr=c.expert_lr, weight_decay=0.0, batch_size=c.batch_size, augment_images="none", gen=gen)
            else:
                named = dict(model.named_parameters())
                params = [named[n] for n in arch.personalized_names(model)]
                fit_model(model, bench.train_x[keep], bench.train_y[keep], epochs=c.expert_epochs, lr=c.expert_lr,
                    weight_decay=0.0, batch_size=c.batch_size, augment_images=c.augment, gen=gen, params=params)
            experts.append(arch.layout(n_all).flatten(dict(model.cpu().named_parameters())))
        return torch.stack(experts), shards

    def _train_mixer(self, bench: Bench, experts: Tensor, z: Tensor, rows: Tensor) -> Mixer:
        """Stage 3: only the mixer learns; loss = cross-entropy of each zoo task's mixed p-Model on its train
        images. experts [E, n_params(|Y|)], z [n_zoo, d], rows [n_zoo, K] (dataset class of each output)."""
        c, arch, dev = self.config, bench.arch, bench.device
        seed = derive_seed(bench.seed, "taper", "mixer")
        torch.manual_seed(seed)
        gen = torch.Generator().manual_seed(seed)
        full = arch.layout(len(bench.class_names))
        layout = full.with_classes(rows.shape[1])  # every zoo p-Model has K rows
        layer_of = layer_index(layout, c.per_layer).to(dev)
        # Mixing commutes with row selection, so cut each expert to each task's rows once: [n_zoo, E, P(K)].
        ex = torch.stack([full.take_rows(t, rows) for t in experts], dim=1).to(dev)
        mixer = Mixer(z.shape[1], c.mixer_hidden, int(layer_of.max()) + 1, len(experts), c.mixing).to(dev)
        opt = torch.optim.Adam(mixer.parameters(), lr=c.mixer_lr)
        source = bench.train_features if arch.head_only else bench.train_x
        net = None if arch.head_only else bench.generic.module(rows.shape[1], arch).to(dev).eval()  # frozen rest
        z = z.to(dev)
        for epoch in range(c.mixer_epochs):
            total, steps = 0.0, 0
            for j in torch.randperm(len(rows), generator=gen).tolist():
                x, y = task_data(source, bench.train_y, rows[j].tolist())  # y: position in the task (prompt order)
                perm = torch.randperm(len(x), generator=gen)
                n = len(x) if c.mixer_steps_per_task is None else min(len(x), c.mixer_steps_per_task * c.batch_size)
                for i in range(0, n, c.batch_size):  # one optimizer step per task-batch
                    idx = perm[i:i + c.batch_size]
                    xb, yb = x[idx].to(dev), y[idx].to(dev)
                    p = layout.unflatten(mix(mixer(z[j:j + 1]), ex[j:j + 1], layer_of)[0])  # theta_j, differentiable
                    x_in = xb if arch.head_only else augment(to_float(xb), gen, c.augment)
                    logits = pmodel_logits(net, p, x_in, arch.head_only)
                    loss = F.cross_entropy(logits, yb)
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                    opt.step()
                    total, steps = total + loss.item(), steps + 1
            log.info("taper mixer epoch %d: loss %.4f", epoch, total / max(steps, 1))
        return mixer.cpu().eval()

    def fit(self, bench: Bench, workdir: Path) -> None:
        start = time.time()
        index = {n: i for i, n in enumerate(bench.class_names)}
        experts, shards = self._train_experts(bench)
        encoder = self.text_encoder_for(self.config.encoder)
        _, centre, _ = centred_zoo_embeddings(encoder, bench.zoo.classes, self.config.centre)  # [d]
        z = self._task_vectors(encoder, bench.zoo.classes, centre)  # [n_zoo, d]
        mixer = self._train_mixer(bench, experts, z, torch.tensor([[index[n] for n in cs] for cs in bench.zoo.classes]))
        self.save_state(experts=experts, shards=shards, mixer=mixer.state_dict(), classes=list(bench.class_names),
                        centre=centre, encoder=encoder.name, mixing=self.config.mixing,
                        dims=[z.shape[1], self.config.mixer_hidden, mixer.n_layers, len(experts)])
        self.save_timing(seconds=time.time() - start)  # wall time beside the state, not in it

    # -- generation
    def _mixer(self, state: dict) -> Mixer:
        dim, hidden, n_layers, n_experts = state["dims"]  # as fitted, whatever this instance's config says
        mixer = Mixer(dim, hidden, n_layers, n_experts, state["mixing"])
        mixer.load_state_dict(state["mixer"])
        return mixer.eval()

    def _state_for(self, tasks: Tasks) -> tuple[dict, object]:
        state = self.state
        known = set(state["classes"])
        unknown = sorted({n for cs in tasks.classes for n in cs if n not in known})
        if unknown:
            raise ValueError(f"TAPER cannot personalize for classes the dataset lacks: {unknown[:10]}. Its head is the "
                             "mixed model's classifier rows of the task's classes (head selection), so every class "
                             "needs a dataset class row; the paper notes TAPER cannot handle 100% unseen classes")
        encoder = self.text_encoder_for(self.config.encoder, fitted=state["encoder"])
        return state, encoder

    @torch.no_grad()
    def mixing_weights(self, tasks: Tasks) -> Tensor:
        """Mixing weights per task [n_tasks, n_layers, n_experts] (n_layers = 1 when per_layer is False)."""
        state, encoder = self._state_for(tasks)
        return self._mixer(state)(self._task_vectors(encoder, tasks.classes, state["centre"]))

    @torch.no_grad()
    def generate(self, tasks: Tasks) -> Tensor:
        state, encoder = self._state_for(tasks)
        rows = tasks.class_indices(state["classes"])  # [n_tasks, K]; also rejects tasks of different sizes
        w = self._mixer(state)(self._task_vectors(encoder, tasks.classes, state["centre"]))  # [n, L, E]
        full = self.bench.arch.layout(len(state["classes"]))
        experts = torch.stack([full.take_rows(t, rows) for t in state["experts"]], dim=1)  # [n, E, P(K)]
        layer_of = layer_index(full.with_classes(rows.shape[1]), per_layer=w.shape[1] > 1)
        return mix(w, experts, layer_of)  # [n_tasks, n_params(K)]
