"""Hypernet: a deterministic text -> weights regressor, one forward pass, no diffusion (a yardstick).

The idea of Text-to-LoRA (Charakorn et al. 2025): a network maps a task's text straight to the weights, trained
by regression on a zoo of fine-tuned weights. It asks how much of a diffusion generator's result a plain
regressor of the same data gets, at a fraction of the cost. Here, at CPU scale:
- the task's class names are embedded with the benchmark's text encoder, centred on the zoo's mean class
  embedding (`centred_zoo_embeddings` of the method API) and scaled to unit RMS, as methods/tina.py does;
- classifier rows: each class's embedding -> a shared MLP (-> optional pre-LN transformer layers across the
  task's classes, without positions) -> its row and bias. Shared weights and no positions make the map
  permutation-equivariant: permuting the prompt permutes the generated rows (up to float rounding);
- body (every personalized parameter before the head): the zoo-mean body + a residual predicted by an MLP from
  the mean of the task's class embeddings (a permutation-invariant summary);
- parameters z-scored per coordinate on the zoo, as Tina's default (head statistics per column, shared by
  every row); the output layers start at zero, so the untrained net is `zoo-mean` with every row moved by
  the zoo's mean shift from its classifier-selection row (default `head_init: cs`), and training adds what the
  text predicts beyond that;
- MSE to the zoo's p-Models, classifier augmentation (prompt classes and rows permuted together), AdamW,
  warm-up + cosine; every random draw of step s comes from (seed, s), so a fit is reproducible bit for bit on CPU.
"""
from __future__ import annotations

import dataclasses
import logging
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from methods.base import (ENCODERS, Bench, Method, Tasks, centred_zoo_embeddings, class_embeddings, derive_seed, option,
                          warmup_cosine)

log = logging.getLogger(__name__)

HEAD_INITS = ("cs", "none")
LOSSES = ("blocks", "plain")
STD_FLOOR = 1e-8  # a coordinate constant across the zoo normalizes to 0 and is generated as its mean


@dataclass
class HyperNetConfig:
    text_dim: int
    row_dim: int  # d + 1: a classifier row and its bias
    n_body: int
    width: int = 128
    layers: int = 1
    heads: int = 4
    body_hidden: int = 128
    dropout: float = 0.0


class HyperNet(nn.Module):
    """[B, k, D] centred class embeddings -> (body residual [B, n_body], rows [B, k, d+1]), in z-score units."""

    def __init__(self, cfg: HyperNetConfig):
        super().__init__()
        self.cfg = cfg
        w = cfg.width
        self.row_in = nn.Sequential(nn.Linear(cfg.text_dim, w), nn.GELU(), nn.Linear(w, w))
        self.mixer = nn.TransformerEncoder(
            nn.TransformerEncoderLayer(w, cfg.heads, 2 * w, cfg.dropout, activation="gelu", batch_first=True,
                                       norm_first=True),
            cfg.layers, enable_nested_tensor=False) if cfg.layers else None
        self.row_out = nn.Sequential(nn.LayerNorm(w), nn.Linear(w, w), nn.GELU(), nn.Linear(w, cfg.row_dim))
        self.body = nn.Sequential(nn.Linear(cfg.text_dim, cfg.body_hidden), nn.GELU(),
                                  nn.Linear(cfg.body_hidden, cfg.body_hidden), nn.GELU(),
                                  nn.Linear(cfg.body_hidden, cfg.n_body)) if cfg.n_body else None
        for last in (self.row_out[-1], self.body[-1] if self.body is not None else None):
            if last is not None:  # start at the residual's zero: the untrained net is the zoo mean (+ CS rows)
                nn.init.zeros_(last.weight)
                nn.init.zeros_(last.bias)

    def forward(self, text: Tensor) -> tuple[Tensor, Tensor]:
        h = self.row_in(text)  # [B, k, w], one token per class, shared weights
        if self.mixer is not None:
            h = self.mixer(h)  # no positional embedding: equivariant to the class order
        rows = self.row_out(h)  # [B, k, d+1]
        body = self.body(text.mean(1)) if self.body is not None else text.new_zeros(len(text), 0)
        return body, rows

    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())


class Hypernet(Method):
    """Class-name embeddings -> p-Model in one forward pass, trained by regression on the zoo."""

    name = "hypernet"

    @dataclass
    class Config:
        # -- network: small enough to fit a 300-p-Model zoo in a minute or two on one CPU core
        width: int = option(128, min=1)  # class-token width
        layers: int = option(1, min=0)  # transformer layers across the task's classes (0: each row on its own)
        heads: int = option(4, min=1)
        body_hidden: int = option(128, min=1)  # hidden width of the body-residual MLP
        dropout: float = option(0.0, min=0, max=1)
        # "cs" (default): predict each row as a residual to the generic model's row of its class (classifier
        # selection), likely the strongest honest variant: it starts at CS and only learns the fine-tuning shift;
        # "none": rows from text alone (also serves class names the generic model lacks)
        head_init: str = option("cs", choices=HEAD_INITS)
        # -- data
        # None: the benchmark's text encoder (config `encoder`); else clip | minilm
        encoder: str | None = option(None, choices=ENCODERS)
        centre_text: bool = True  # subtract the zoo's mean class embedding (CLIP names share a direction)
        classifier_aug: bool = True  # permute prompt classes and rows together (a no-op up to float rounding for
        # this equivariant net, kept as Tina's recipe has it)
        # "blocks": body and head MSE weighted equally (the body has ~15x more coordinates and would otherwise
        # dominate); "plain": MSE over all coordinates
        loss: str = option("blocks", choices=LOSSES)
        # -- optimization
        # AdamW steps: ~55 ms each for a 300-p-Model cnn-5k zoo (K 10, 384-d text) on one busy CPU core: ~2 min
        steps: int = option(2000, min=1)
        batch_size: int = option(64, min=1)
        lr: float = option(1e-3, above=0)
        weight_decay: float = option(0.01, min=0)
        warmup_steps: int = option(100, min=0)  # capped at a fifth of the run
        grad_clip: float = option(1.0, above=0)
        seed: int | None = option(None, min=0)  # None: the benchmark's seed

    def __init__(self, config=None):
        super().__init__(config)
        c = self.config
        if c.layers and c.width % c.heads:
            raise ValueError(f"hypernet width {c.width} must be divisible by heads {c.heads}")
        self._net: HyperNet | None = None

    def setup(self, bench: Bench, workdir) -> "Hypernet":
        self._net = None
        return super().setup(bench, workdir)

    @property
    def seed(self) -> int:
        return self.config.seed if self.config.seed is not None else self.bench.seed

    def _generic_rows(self, bench: Bench) -> Tensor:
        """The generic model's classifier rows [|Y|, d+1], in `bench.class_names` order."""
        full = bench.arch.layout(len(bench.class_names))
        return full.head_rows(bench.arch.initial_theta(bench.generic.state)).float()

    # ------------------------------------------------------------------------- fit

    def fit(self, bench: Bench, workdir: Path) -> None:
        if self.bench is None or self.workdir != Path(workdir):
            self.setup(bench, workdir)
        c, layout, zoo = self.config, bench.layout, bench.zoo
        if len(zoo) == 0:
            raise ValueError("hypernet needs a non-empty zoo of p-Models to learn from")
        if zoo.theta.shape[1] != layout.n_params:
            raise ValueError(f"zoo vectors have {zoo.theta.shape[1]} parameters; arch {bench.arch.name} with "
                             f"K={bench.num_classes} has {layout.n_params}")
        encoder = self.text_encoder_for(self.config.encoder)
        text, centre, _ = centred_zoo_embeddings(encoder, zoo.classes, c.centre_text)  # [n, K, D]
        scale = text.pow(2).mean().sqrt().item()
        scale = scale if scale > 1e-6 else 1.0  # one class only: nothing to scale by
        text = text / scale
        theta = zoo.theta.float()
        body, rows = layout.body(theta), layout.head_rows(theta)  # [n, n_body], [n, K, d+1]
        generic_rows = self._generic_rows(bench)
        if c.head_init == "cs":
            index = {n: i for i, n in enumerate(bench.class_names)}
            base = generic_rows[torch.tensor([[index[n] for n in cs] for cs in zoo.classes])]  # [n, K, d+1]
        else:
            base = torch.zeros_like(rows)
        resid = (rows - base).reshape(-1, rows.shape[-1])
        body_mean = body.mean(0)
        body_std = body.std(0, correction=0).clamp_min(STD_FLOOR) if body.shape[1] else body.new_ones(0)
        row_mean, row_std = resid.mean(0), resid.std(0, correction=0).clamp_min(STD_FLOOR)
        body_z = (body - body_mean) / body_std
        rows_z = (rows - base - row_mean) / row_std

        torch.manual_seed(derive_seed(self.seed, "hypernet-init"))
        net_cfg = HyperNetConfig(text_dim=text.shape[-1], row_dim=rows.shape[-1], n_body=body.shape[1],
                                 width=c.width, layers=c.layers, heads=c.heads, body_hidden=c.body_hidden,
                                 dropout=c.dropout)
        net = HyperNet(net_cfg).to(bench.device)
        decay = [p for p in net.parameters() if p.dim() >= 2]
        no_decay = [p for p in net.parameters() if p.dim() < 2]
        opt = torch.optim.AdamW([{"params": decay, "weight_decay": c.weight_decay},
                                 {"params": no_decay, "weight_decay": 0.0}], lr=c.lr)
        warmup = min(c.warmup_steps, c.steps // 5)
        n, k = rows.shape[:2]
        losses, window = [], []
        net.train()
        tic = time.time()
        for step in range(c.steps):
            gen = torch.Generator().manual_seed(derive_seed(self.seed, "hypernet-step", step))
            idx = torch.randint(n, (c.batch_size,), generator=gen)
            t, b, r = text[idx], body_z[idx], rows_z[idx]
            if c.classifier_aug:  # the same class permutation for the prompt and the rows
                perm = torch.rand(len(idx), k, generator=gen).argsort(1)
                t = t.gather(1, perm[..., None].expand_as(t))
                r = r.gather(1, perm[..., None].expand_as(r))
            t, b, r = t.to(bench.device), b.to(bench.device), r.to(bench.device)
            pred_body, pred_rows = net(t)
            if c.loss == "blocks" and b.shape[1]:
                loss = 0.5 * (F.mse_loss(pred_body, b) + F.mse_loss(pred_rows, r))
            else:
                loss = F.mse_loss(torch.cat([pred_body, pred_rows.flatten(1)], 1), torch.cat([b, r.flatten(1)], 1))
            for group in opt.param_groups:
                group["lr"] = c.lr * warmup_cosine(step, c.steps, warmup)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(net.parameters(), c.grad_clip)
            opt.step()
            window.append(loss.item())
            if (step + 1) % 100 == 0 or step + 1 == c.steps:
                losses.append(sum(window) / len(window))
                log.info("hypernet step %d/%d: loss %.5f", step + 1, c.steps, losses[-1])
                window = []
        self.save_state(config=dataclasses.asdict(c), net_config=dataclasses.asdict(net_cfg),
                        model={k_: v.cpu() for k_, v in net.state_dict().items()}, losses=losses,
                        text_centre=centre, text_scale=scale, encoder=encoder.name,
                        body_mean=body_mean, body_std=body_std, row_mean=row_mean, row_std=row_std,
                        generic_rows=generic_rows, classes=list(bench.class_names), arch=bench.arch.name,
                        num_classes=k, n_zoo=n, net_params=net.num_params())
        self.save_timing(seconds=time.time() - tic)  # wall-clock beside the state, never in it
        log.info("hypernet: %d p-Models, %d steps in %.0fs, net %.2fM parameters", n, c.steps, time.time() - tic,
                 net.num_params() / 1e6)
        self._net = None

    # ------------------------------------------------------------------------- generate

    def _load(self) -> HyperNet:
        if self._net is None:
            state = self.state
            if state["arch"] != self.bench.arch.name:
                raise ValueError(f"hypernet state in {self.workdir} was fitted for arch {state['arch']!r}, this "
                                 f"benchmark's is {self.bench.arch.name!r}")
            net = HyperNet(HyperNetConfig(**state["net_config"]))
            net.load_state_dict(state["model"])
            self._net = net.to(self.bench.device).eval()
        return self._net

    @torch.no_grad()
    def generate(self, tasks: Tasks) -> Tensor:
        state, net = self.state, self._load()
        sizes = sorted({len(cs) for cs in tasks.classes})
        if len(sizes) > 1:
            raise ValueError(f"tasks of different sizes {sizes}: generate each size separately")
        k = sizes[0] if sizes else state["num_classes"]
        if k < 1:
            raise ValueError("hypernet needs prompts of at least one class")
        layout = self.bench.arch.layout(k)
        if not len(tasks):
            return torch.zeros(0, layout.n_params)
        if state["config"]["head_init"] == "cs":
            base = state["generic_rows"][tasks.class_indices(state["classes"])]  # [n, k, d+1]; unknown names fail
        else:
            base = torch.zeros(len(tasks), k, state["row_mean"].numel())
        encoder = self.text_encoder_for(self.config.encoder, fitted=state["encoder"])
        names = sorted({n for cs in tasks.classes for n in cs})
        index = {n: i for i, n in enumerate(names)}
        e = (class_embeddings(encoder, names) - state["text_centre"]) / state["text_scale"]
        text = e[torch.tensor([[index[n] for n in cs] for cs in tasks.classes])]  # [n, k, D]
        pred_body, pred_rows = net(text.to(self.bench.device))
        body = state["body_mean"] + state["body_std"] * pred_body.cpu()
        rows = base + state["row_mean"] + state["row_std"] * pred_rows.cpu()
        return layout.assemble(body, rows)  # [n_tasks, n_params(k)]
