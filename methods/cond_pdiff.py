"""Cond P-Diff (Jin et al., "Conditional LoRA Parameter Generation"): conditional latent diffusion over p-Model vectors.

Pipeline (paper Sec. 3, Fig. 2), on the harness's flat layout (with `--arch cnn-5k-lora` the vector is the LoRA
adapters + task head of `benchmarks/lora.py`, the paper's setting; with `cnn-5k` it is the whole CNN):
  1. normalize each zoo vector (`norm`);
  2. train a 1D-conv autoencoder w -> z -> w_hat with Gaussian noise 0.001 on input and latent (eq. 6-7);
  3. standardize the latents (p-diff issue #13: exploded latents break diffusion) and train a conditional
     1D UNet epsilon-predictor on them (eq. 8; linear betas, T = 1000, through `methods.diffusion`);
  4. generate: sample `n_candidates` latents per task from noise given the task's condition, decode,
     de-normalize, and keep one candidate (`select`).

Conditions (`condition`; paper Table 4b):
  - "text": ONE pooled text embedding of the task (paper: CLIP text of a task-description string);
    `text_pool` "joined" encodes one description naming the classes in order, "mean" averages the
    class-name embeddings (order-blind, like Tina's "merged text embedding" ablation that collapses).
  - "class-tokens": per-class text embeddings in task order, cross-attended by the UNet with a learned
    slot embedding per position (our addition: pooling collapses in Tina's ablation).
  - "text+fewshot": pooled text + per-class mean penultimate features of `fewshot_shots` train images
    per class (the generic model's `features()`; frozen train features for head-only archs),
    concatenated in task order. The paper's few-shot examples are text (two-shot examples in the CLIP
    prompt); images are this benchmark's analogue. Shots are redrawn every training step.
  - "one-hot": a multi-hot vector of the task's dataset classes. An analysis condition (paper's
    "one-hot" row): it names the classes but not their order, so it cannot tell permuted tasks apart.
Every condition enters the UNet through FiLM (per-sample scale and shift in each ResBlock, added to the
timestep embedding); "class-tokens" also cross-attends. FiLM rather than the official concatenation along
the sequence axis, which makes the condition compete with parameter positions.

Normalization (`norm`): "per-layer" (default; a scalar mean/std per layout segment over the zoo, as p-diff v2:
available for any task at generation), "global" (one scalar mean/std), "none", and "task" — the paper's task
normalization, an ID-ONLY ORACLE: it de-normalizes with the task's own zoo checkpoint statistics, so it
exists only for tasks whose p-Model is in the zoo and fails for any other task. The official code z-scores
per task *per coordinate* over that task's 150-200 checkpoints; this zoo has one checkpoint per task, where
per-coordinate statistics degenerate (std 0, mean = the checkpoint itself), so "task" uses a scalar mean/std
per (task, layer).

Candidate selection (`select`), after the paper's "generate 20, keep the best on the training data" (4.1):
  - "first": the first candidate (a plain rule: no task data);
  - "mean": the average of the candidates in parameter space (plain rule: no task data);
  - "fewshot-acc": the paper's rule: the candidate with the best accuracy on `select_shots` TRAIN images per
    class of the task (ties: lower cross-entropy). It uses the task's train images, which data-free
    generators (Tina) do not: compare like with like.

Deviations from the official code (docs/design-notes.md §7), on purpose: per-sample timestep embedding (official:
`time[0]` for the whole batch); noise 0.001 on the latent (official 0.1); no tanh/clamp on the latent, which is
standardized instead; AdamW weight decay 2e-6 as the paper's configs (the official trainer hard-codes 1e-2);
no ReduceLROnPlateau (its patience of 5000 steps never fires at these budgets); DDIM-50 by default (official:
ancestral DDPM-1000; docs/design-notes.md §5: they measure equal on these tasks).

The paper's own experiments cannot run offline, so no numbers are claimed for them. GLUE (Table 1) would need
`bert-base-uncased`, `roberta-base` and `microsoft/deberta-v3-base` weights in the Hugging Face cache
(`$HF_HUB_CACHE`), the GLUE data (`datasets` cache of `nyu-mll/glue`: SST-2, RTE, MRPC, CoLA, QNLI, STS-B)
and CLIP ViT-B/32 text weights (`$NNDIFF_CLIP_WEIGHTS`); then LoRA (r=1/2/4, alpha 8, q/k/v/attention-output of
all 12 layers) fine-tuning, saving the last 150 steps per task, gives the zoo. The style-transfer table
(Table 2) would need PixArt-alpha weights (`PixArt-alpha/PixArt-XL-2-512x512` + its T5 text encoder, ~20 GB),
SemArt/WikiArt images, an ImageNet ResNet-18 for the style condition and an Inception network for FID.
Both would live in a separate `benchmarks/` task family; this module only needs their flat vectors.
"""
from __future__ import annotations

import dataclasses
import logging
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor
from tqdm.auto import tqdm

from methods.base import (Bench, Layout, Method, Tasks, class_prompt, config_hash, derive_seed, option, select_best,
                          to_float)
from methods.cond_pdiff_net import CondUNet1D, ParamAutoencoder
from methods.diffusion import DiffusionConfig, SAMPLERS, make_scheduler, noised, sample

log = logging.getLogger(__name__)

CONDITIONS = ("text", "class-tokens", "text+fewshot", "one-hot")
NORMS = ("per-layer", "global", "task", "none")
SELECTS = ("first", "mean", "fewshot-acc")
TEXT_POOLS = ("joined", "mean")
# Config fields that shape the fitted networks and statistics; generate() must agree with fit() on them.
STRUCTURAL = ("condition", "text_pool", "fewshot_shots", "fewshot_pool", "norm", "fold", "ae_layers", "ae_width",
              "latent_channels", "unet_width", "unet_mults", "emb_dim", "layers", "zoo_size")


def _choice(what: str, value: str, valid: tuple[str, ...]) -> None:
    if value not in valid:
        raise ValueError(f"cond-pdiff: unknown {what} {value!r}; valid: {list(valid)}")

# ----------------------------------------------------------------------------- normalization (Sec. 3.2)


class Normalizer:
    """theta <-> normalized vectors: (theta - mean) / std with per-coordinate statistics [P], or per zoo task
    [n_keys, P] for the "task" oracle (statistics of layer segments, expanded to coordinates)."""

    def __init__(self, mode: str, mean: Tensor, std: Tensor, keys: list[str] | None = None,
                 key_classes: list[list[str]] | None = None):
        self.mode, self.mean, self.std = mode, mean, std
        self.keys, self.key_classes = keys or [], key_classes or []

    @classmethod
    def fit(cls, mode: str, theta: Tensor, layout: Layout, task_ids: list[str], classes: list[list[str]]) -> "Normalizer":
        """theta: zoo vectors [N, P]; task_ids/classes: the zoo task of each row."""
        _choice("norm", mode, NORMS)
        p = theta.shape[1]
        if mode == "none":
            return cls(mode, torch.zeros(p), torch.ones(p))
        if mode == "global":
            return cls(mode, theta.mean().expand(p).clone(), theta.std().clamp_min(1e-8).expand(p).clone())
        if mode == "per-layer":
            mean, std = torch.empty(p), torch.empty(p)
            for s in layout.segments:  # p-diff v2: a scalar z-score per layer
                block = theta[:, s.offset:s.stop]
                mean[s.offset:s.stop] = block.mean()
                std[s.offset:s.stop] = block.std().clamp_min(1e-8) if block.numel() > 1 else 1.0
            return cls(mode, mean, std)
        keys = list(dict.fromkeys(task_ids))  # "task": every checkpoint of one task shares its statistics
        mean, std = torch.empty(len(keys), p), torch.empty(len(keys), p)
        for k, key in enumerate(keys):
            rows = theta[[i for i, t in enumerate(task_ids) if t == key]]
            for s in layout.segments:
                block = rows[:, s.offset:s.stop]
                mean[k, s.offset:s.stop] = block.mean()
                std[k, s.offset:s.stop] = block.std().clamp_min(1e-8) if block.numel() > 1 else 1.0
        key_classes = [classes[task_ids.index(key)] for key in keys]
        return cls(mode, mean, std, keys, key_classes)

    def rows(self, ids: list[str], classes: list[list[str]]) -> Tensor | None:
        """For "task": the zoo task behind each requested task (same id and classes, else same ordered
        classes). Any other task has no statistics: the oracle is ID-only."""
        if self.mode != "task":
            return None
        by_id = {k: i for i, k in enumerate(self.keys)}
        by_classes = {tuple(c): i for i, c in enumerate(self.key_classes)}
        out = []
        for tid, cs in zip(ids, classes):
            i = by_id.get(tid)
            if i is None or list(self.key_classes[i]) != list(cs):
                i = by_classes.get(tuple(cs))
            if i is None:
                raise ValueError(f"cond-pdiff norm='task' is an ID-only oracle: task {tid!r} {list(cs)} has no p-Model "
                                 "in the zoo, so its per-task statistics do not exist; use norm 'per-layer' or "
                                 "'global' for new tasks")
            out.append(i)
        return torch.tensor(out, dtype=torch.long)

    def _stats(self, rows: Tensor | None, device) -> tuple[Tensor, Tensor]:
        if self.mode == "task":
            return self.mean[rows].to(device), self.std[rows].to(device)
        return self.mean.to(device), self.std.to(device)

    def forward(self, theta: Tensor, rows: Tensor | None = None) -> Tensor:
        mean, std = self._stats(rows, theta.device)
        return (theta - mean) / std

    def inverse(self, x: Tensor, rows: Tensor | None = None) -> Tensor:
        mean, std = self._stats(rows, x.device)
        return x * std + mean

    def state(self) -> dict:
        return {"mode": self.mode, "mean": self.mean, "std": self.std, "keys": self.keys,
                "key_classes": self.key_classes}

    @classmethod
    def from_state(cls, d: dict) -> "Normalizer":
        return cls(d["mode"], d["mean"], d["std"], list(d["keys"]), [list(c) for c in d["key_classes"]])

# ----------------------------------------------------------------------------- conditions (Sec. 3.3, Table 4b)


class Conditioner:
    """Task (ordered class names) -> (cond [n, cond_dim], tokens [n, K, d] or None), standardized with
    statistics fitted on the zoo (a centred, isotropically scaled text space keeps its geometry)."""

    def __init__(self, mode: str, bench: Bench, cfg, stats: dict | None = None):
        _choice("condition", mode, CONDITIONS)
        _choice("text_pool", cfg.text_pool, TEXT_POOLS)
        self.mode, self.bench, self.cfg = mode, bench, cfg
        self.classes = list(bench.class_names)
        self.index = {c: i for i, c in enumerate(self.classes)}
        self.stats = stats or {}
        self._pools: Tensor | None = None
        self._encoder = None

    # -- text
    def _encode(self, texts: list[str]) -> Tensor:
        if self._encoder is None:  # built once: a model load per call would dominate small runs
            self._encoder = self.bench.text_encoder()
        encoder = self._encoder
        try:
            return encoder.encode_text(texts).float()
        except KeyError as e:
            raise ValueError(f"cond-pdiff: text encoder {encoder.name!r} cannot encode {texts[0]!r} ({e}); "
                             "a table encoder knows class names only: use text_pool 'mean' or condition "
                             "'class-tokens'") from None

    @staticmethod
    def description(classes: list[str]) -> str:
        """The task-description string of text_pool 'joined' (classes in output order)."""
        return "A classifier of " + ", ".join(class_prompt(c) for c in classes) + "."

    def _pooled_raw(self, classes: list[list[str]]) -> Tensor:  # [n, D]
        if self.cfg.text_pool == "joined":
            return self._encode([self.description(cs) for cs in classes])
        names = sorted({c for cs in classes for c in cs})
        table = dict(zip(names, self._encode([class_prompt(c) for c in names])))
        return torch.stack([torch.stack([table[c] for c in cs]).mean(0) for cs in classes])

    def _tokens_raw(self, classes: list[list[str]]) -> Tensor:  # [n, K, D]
        names = sorted({c for cs in classes for c in cs})
        table = dict(zip(names, self._encode([class_prompt(c) for c in names])))
        return torch.stack([torch.stack([table[c] for c in cs]) for cs in classes])

    # -- few-shot image features
    @torch.no_grad()
    def pools(self) -> Tensor:
        """[n_classes, fewshot_pool, d]: standardized penultimate features of a seeded pool of train images per
        class (drawn with replacement where a class has fewer images)."""
        if self._pools is not None:
            return self._pools
        b, n = self.bench, self.cfg.fewshot_pool
        picks = []
        for c in range(len(self.classes)):
            idx = (b.train_y == c).nonzero().flatten()
            if len(idx) == 0:
                raise ValueError(f"cond-pdiff text+fewshot: class {self.classes[c]!r} has no train images")
            g = torch.Generator().manual_seed(derive_seed(b.seed, "cond-pdiff", "fewshot-pool", c))
            order = torch.randperm(len(idx), generator=g)
            picks.append(idx[order.repeat(-(-n // len(idx)))[:n]])
        flat = torch.cat(picks)
        feats = image_features(b, flat)  # [n_classes * n, d]
        mean, std = feats.mean(0), feats.std(0).mean().clamp_min(1e-8)
        self._pools = ((feats - mean) / std).view(len(self.classes), n, -1)
        return self._pools

    def _fewshot(self, class_idx: Tensor, gen: torch.Generator | list[torch.Generator]) -> Tensor:
        """class_idx [n, K] -> mean features of `fewshot_shots` pool images per class, [n, K * d]."""
        pools = self.pools()
        n, k = class_idx.shape
        shots = self.cfg.fewshot_shots
        if isinstance(gen, list):  # one generator per task: generation is reproducible task by task
            pick = torch.stack([torch.randint(0, pools.shape[1], (k, shots), generator=g) for g in gen])
        else:
            pick = torch.randint(0, pools.shape[1], (n, k, shots), generator=gen)
        feats = pools[class_idx[..., None], pick]  # [n, K, shots, d]
        return feats.mean(2).flatten(1)

    # -- the condition
    def fit(self, classes: list[list[str]]) -> "Conditioner":
        """Statistics over the zoo tasks (text) or the dataset's class names (tokens)."""
        if self.mode in ("text", "text+fewshot"):
            e = self._pooled_raw(classes)
            self.stats = {"text_mean": e.mean(0), "text_std": e.std(0).pow(2).mean().sqrt().clamp_min(1e-8)
                          if len(e) > 1 else torch.tensor(1.0)}
        elif self.mode == "class-tokens":
            e = self._tokens_raw([self.classes])[0]  # every class name of the dataset: [n_classes, D]
            self.stats = {"text_mean": e.mean(0), "text_std": e.std(0).pow(2).mean().sqrt().clamp_min(1e-8)}
        return self

    def build(self, classes: list[list[str]], fewshot_gen=None) -> tuple[Tensor, Tensor | None]:
        """Conditions of tasks `classes` (fixed; the few-shot part is drawn with `fewshot_gen`)."""
        if self.mode == "one-hot":
            multi = torch.zeros(len(classes), len(self.classes))
            for i, cs in enumerate(classes):
                multi[i, [self._class(c) for c in cs]] = 1.0
            return multi, None
        if self.mode == "class-tokens":
            tok = (self._tokens_raw(classes) - self.stats["text_mean"]) / self.stats["text_std"]  # [n, K, D]
            return tok.mean(1), tok
        text = self.text(classes)  # [n, D]
        if self.mode == "text":
            return text, None
        return torch.cat([text, self._fewshot(self.class_idx(classes), fewshot_gen)], dim=1), None

    def text(self, classes: list[list[str]]) -> Tensor:
        """The pooled task text, centred and scaled by the zoo's statistics: [n, D]."""
        return (self._pooled_raw(classes) - self.stats["text_mean"]) / self.stats["text_std"]

    def fewshot_part(self, class_idx: Tensor, gen) -> Tensor:
        return self._fewshot(class_idx, gen)

    def _class(self, c: str) -> int:
        if c not in self.index:
            raise ValueError(f"cond-pdiff condition {self.mode!r} needs dataset classes; {c!r} is not one "
                             f"(known: {self.classes[:10]} ...)")
        return self.index[c]

    def class_idx(self, classes: list[list[str]]) -> Tensor:
        return torch.tensor([[self._class(c) for c in cs] for cs in classes], dtype=torch.long)


@torch.no_grad()
def image_features(bench: Bench, idx: Tensor, batch_size: int = 500) -> Tensor:
    """Penultimate features [len(idx), d] of train images: frozen train features of head-only archs, else the
    generic model's `features()` (for a LoRA arch that is the frozen body the adapters start from)."""
    if bench.train_features is not None:
        return bench.train_features[idx].float()
    model = bench.generic.module().to(bench.device).eval()
    if not hasattr(model, "features"):
        raise ValueError(f"cond-pdiff: generic {bench.generic.arch.name} has no features(); give train features")
    out = [model.features(to_float(bench.train_x[idx[i:i + batch_size]].to(bench.device))).cpu()
           for i in range(0, len(idx), batch_size)]
    return torch.cat(out).float()

# ----------------------------------------------------------------------------- the method


class CondPDiff(Method):
    """Cond P-Diff: parameter autoencoder + conditional latent diffusion, several candidates per task."""

    name = "cond-pdiff"

    @dataclass
    class Config:
        # condition (paper 3.3, Table 4b)
        # text | class-tokens | text+fewshot | one-hot (see module docstring)
        condition: str = option("text", choices=CONDITIONS)
        # joined: one task-description string (paper); mean: mean of class names
        text_pool: str = option("joined", choices=TEXT_POOLS)
        fewshot_shots: int = option(2, min=1)  # paper: "two-shot examples"
        fewshot_pool: int = option(64, min=1)  # train images per class the shots are drawn from
        # normalization (paper 3.2, Table 4a)
        norm: str = option("per-layer", choices=NORMS)  # per-layer | global | task (ID-only oracle, paper) | none
        # what is generated (paper Table 4c, 3a)
        layers: tuple[str, ...] = ()  # layer names (e.g. ["fc"] or ["conv2", "fc"]); empty: every personalized
        # layer. Layers left out come from classifier selection (generic head rows, LoRA B = 0).
        zoo_size: int = option(0, min=0)  # fit on the first N zoo p-Models (0: all); the zoo-size ablation
        # autoencoder (paper 3.2; official: fold 5, 4 levels = 625x, which leaves 2 latent positions for 1.2k params)
        # Latent = latent_channels * n / fold**ae_layers. This zoo holds ONE p-Model per task, so it is about
        # N-dimensional (Caltech LoRA zoo, 303 x 1,206: PCA needs 76 dims for 79% of the variance, 200 for 98%),
        # unlike the paper's 150-200 near-identical checkpoints per task. Measured AE reconstruction MSE after
        # 1k steps (normalized units): fold 4 / 3 levels (76 dims) 0.20, and the zoo p-Models lose 16 points
        # of accuracy through it; fold 4 / 2 levels (304 dims) 0.096; fold 2 / 3 levels (604 dims) 0.053.
        fold: int = option(2, min=2)
        ae_layers: int = option(3, min=1)
        ae_width: int = option(32, min=1)  # hidden channels
        latent_channels: int = option(4, min=1)  # official: 4
        input_noise: float = option(1e-3, min=0)  # paper 4.1: Gaussian noise amplitude 0.001
        latent_noise: float = option(1e-3, min=0)  # paper 4.1 (the official code uses 0.1)
        ae_steps: int = option(3000, min=0)  # official: 10k epochs over the checkpoints; CPU-scale default
        # converges ~2x faster than 1e-3 at these budgets (measured with the numbers above)
        ae_lr: float = option(3e-3, above=0)
        # conditional denoiser (paper 3.3: 1D-conv UNet, epsilon prediction)
        unet_width: int = option(64, min=1)  # official channels 64..512 without down-sampling; ours: 2 levels
        unet_mults: tuple[int, ...] = option((1, 2), min=1)
        emb_dim: int = option(128, min=1)
        diffusion_steps: int = option(6000, min=0)  # official: 12k epochs; CPU-scale default
        # optimization (paper's configs; the official code: docs/design-notes.md §7)
        batch_size: int = option(64, min=1)  # official 256; zoos here are ~1000 vectors
        lr: float = option(1e-3, above=0)  # the denoiser's
        # paper's configs; the official trainer hard-codes AdamW wd 1e-2 instead
        weight_decay: float = option(2e-6, min=0)
        grad_clip: float = option(1.0, above=0)  # not in the paper; guards the first steps of a fresh UNet
        # sampling and selection (paper 4.1: 20 candidates, best on training data)
        # ddpm | ddim | dpm-solver (official: ancestral DDPM-1000); `sample_steps` sets the reverse steps of each.
        # Measured on the smoke LoRA zoo with a short fit (1.2k denoiser steps): DDIM/DPM-solver samples drifted
        # off the zoo's latents while ancestral DDPM-1000 landed on them.
        # generate=True: read by generate() only, so a variant may change it and reuse the fit (and a resumed
        # fit ignores it, `_ckpt_key`)
        sampler: str = option("ddim", choices=SAMPLERS, generate=True)
        sample_steps: int = option(50, min=1, generate=True)
        n_candidates: int = option(5, min=1, generate=True)
        # first | mean (no task data) | fewshot-acc (paper; uses train images)
        select: str = option("fewshot-acc", choices=SELECTS, generate=True)
        select_shots: int = option(10, min=1, generate=True)  # train images per class for "fewshot-acc"
        generate_batch: int = option(256, min=1, generate=True)  # latents per sampling batch
        # bookkeeping
        checkpoint_every: int = option(500, min=0, generate=True)  # steps between atomic resume checkpoints (0: never)
        log_every: int = option(100, min=1, generate=True)

    def __init__(self, config=None):
        super().__init__(config)
        c = self.config  # choices and ranges: checked by Method.__init__ (the option() rules above)
        c.unet_mults = tuple(int(m) for m in c.unet_mults)  # JSON gives a list
        c.layers = tuple(str(name) for name in c.layers)
        self.history: dict[str, list[float]] = {"ae": [], "diffusion": []}
        self.last_selection: dict | None = None
        self._fitted: dict | None = None

    # -- pieces shared by fit and generate
    def _diffusion(self) -> DiffusionConfig:
        # Linear betas 1e-4 -> 0.02, T = 1000, epsilon prediction (paper eq. 8; official ddpm.py).
        return DiffusionConfig(prediction="epsilon", sampler=self.config.sampler, sample_steps=self.config.sample_steps)

    def _networks(self, n_params: int, cond_dim: int, token_dim: int, n_tokens: int):
        c = self.config
        ae = ParamAutoencoder(n_params, fold=c.fold, layers=c.ae_layers, width=c.ae_width,
                              latent_channels=c.latent_channels, input_noise=c.input_noise,
                              latent_noise=c.latent_noise)
        den = CondUNet1D(c.latent_channels, ae.latent_length, cond_dim, width=c.unet_width, mults=c.unet_mults,
                         emb_dim=c.emb_dim, token_dim=token_dim, n_tokens=n_tokens)
        return ae, den

    def _check_zoo(self, bench: Bench, layout: Layout) -> None:
        zoo = bench.zoo
        if len(zoo) == 0:
            raise ValueError("cond-pdiff: the zoo is empty; fine-tune p-Models first")
        if zoo.theta.ndim != 2 or zoo.theta.shape[1] != layout.n_params:
            raise ValueError(f"cond-pdiff: zoo vectors have shape {tuple(zoo.theta.shape)}, but arch "
                             f"{bench.arch.name!r} at K={bench.num_classes} has {layout.n_params} parameters: was "
                             "the zoo built for another arch (e.g. cnn-5k vs cnn-5k-lora)?")
        bad = (~torch.isfinite(zoo.theta)).any(1).nonzero().flatten().tolist()
        if bad:
            raise ValueError(f"cond-pdiff: {len(bad)} zoo p-Model(s) hold NaN/inf, first: task {zoo.task_ids[bad[0]]!r}")
        sizes = [i for i, cs in enumerate(zoo.classes) if len(cs) != bench.num_classes]
        if sizes:
            raise ValueError(f"cond-pdiff: zoo task {zoo.task_ids[sizes[0]]!r} has {len(zoo.classes[sizes[0]])} "
                             f"classes, the p-Models have K={bench.num_classes}")

    def _mask(self, layout: Layout) -> Tensor:
        """Which coordinates of the layout are generated: the segments of `layers` (all when empty)."""
        if not self.config.layers:
            return torch.ones(layout.n_params, dtype=torch.bool)
        known = list(dict.fromkeys(s.name.split(".")[0] for s in layout.segments))
        unknown = [name for name in self.config.layers if name not in known]
        if unknown:
            raise ValueError(f"cond-pdiff: layers {unknown} are not personalized layers of {self.bench.arch.name!r}; "
                             f"layers that are: {known}")
        mask = torch.zeros(layout.n_params, dtype=torch.bool)
        for s in layout.segments:
            if s.name.split(".")[0] in self.config.layers:
                mask[s.offset:s.stop] = True
        return mask

    def _zoo(self, bench: Bench) -> tuple[Tensor, list[str], list[list[str]]]:
        """The zoo vectors, task ids and classes the fit uses (the first `zoo_size`, or all)."""
        zoo, n = bench.zoo, self.config.zoo_size or len(bench.zoo)
        if n > len(zoo):
            raise ValueError(f"cond-pdiff: zoo_size {n} exceeds the zoo's {len(zoo)} p-Models")
        return zoo.theta[:n].float(), list(zoo.task_ids[:n]), [list(cs) for cs in zoo.classes[:n]]

    def _ckpt_key(self, bench: Bench, n_params: int) -> str:
        free = self.generate_options()  # sampling, selection, bookkeeping: no part of the fit
        fields = {k: v for k, v in dataclasses.asdict(self.config).items() if k not in free}
        return config_hash({**fields, "n_params": n_params, "zoo": list(bench.zoo.task_ids),
                                      "seed": bench.seed, "arch": bench.arch.name})

    # -- fit (paper 3.2 then 3.3)
    def fit(self, bench: Bench, workdir: Path) -> None:
        """Train the autoencoder, then the conditional latent diffusion model; save what generate() needs.
        Resumes from `<workdir>/checkpoint.pt` (written atomically every `checkpoint_every` steps)."""
        if self.bench is None:
            self.setup(bench, workdir)
        c, dev = self.config, bench.device
        layout = self.layout
        self._check_zoo(bench, layout)
        theta, task_ids, classes = self._zoo(bench)
        mask, n_params = self._mask(layout), layout.n_params
        start = time.time()

        # 1. normalization (Sec. 3.2) and conditions of the zoo tasks (Sec. 3.3)
        norm = Normalizer.fit(c.norm, theta, layout, task_ids, classes)
        x_all = norm.forward(theta, norm.rows(task_ids, classes))[:, mask].to(dev)  # [N, generated]
        conditioner = Conditioner(c.condition, bench, c).fit(classes)
        if c.condition == "text+fewshot":  # the text part is fixed, the shots are redrawn every step
            text_part, zoo_class_idx = conditioner.text(classes), conditioner.class_idx(classes)
            cond_all, tokens_all = None, None
            cond_dim = text_part.shape[1] + bench.num_classes * conditioner.pools().shape[2]
        else:
            cond_all, tokens_all = conditioner.build(classes)
            cond_dim = cond_all.shape[1]
        token_dim = tokens_all.shape[2] if tokens_all is not None else 0
        n_tokens = bench.num_classes if tokens_all is not None else 0

        torch.manual_seed(derive_seed(bench.seed, "cond-pdiff", "init"))
        ae, den = self._networks(int(mask.sum()), cond_dim, token_dim, n_tokens)
        ae, den = ae.to(dev), den.to(dev)
        ae_opt = torch.optim.AdamW(ae.parameters(), lr=c.ae_lr, weight_decay=c.weight_decay)
        den_opt = torch.optim.AdamW(den.parameters(), lr=c.lr, weight_decay=c.weight_decay)
        gen = torch.Generator().manual_seed(derive_seed(bench.seed, "cond-pdiff", "fit"))
        key = self._ckpt_key(bench, n_params)
        phase, step = "ae", 0
        ck = self.load_checkpoint()
        if ck is not None:
            if ck.get("key") == key:
                for obj, name in ((ae, "ae"), (den, "den"), (ae_opt, "ae_opt"), (den_opt, "den_opt")):
                    obj.load_state_dict(ck[name])
                gen.set_state(ck["gen"])
                phase, step, self.history = ck["phase"], ck["step"], ck["history"]
                log.info("cond-pdiff: resuming %s at step %d from %s", phase, step, self.checkpoint_path)
            else:
                log.warning("cond-pdiff: ignoring %s (written for another config or zoo)", self.checkpoint_path)

        def checkpoint(phase_now: str, step_now: int) -> None:
            self.save_checkpoint({"key": key, "phase": phase_now, "step": step_now, "ae": ae.state_dict(),
                                  "den": den.state_dict(), "ae_opt": ae_opt.state_dict(),
                                  "den_opt": den_opt.state_dict(), "gen": gen.get_state(),
                                  "history": self.history})

        n = len(theta)
        # 2. autoencoder: MSE(w, D(E(w + xi_w) + xi_z)) (eq. 6-7)
        def update(net, opt, loss, name: str, step: int, total: int, bar) -> None:
            """One clipped optimizer step, logged; a resumable checkpoint every `checkpoint_every` steps."""
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(net.parameters(), c.grad_clip)
            opt.step()
            self._log(name, step, loss.item(), bar)
            if c.checkpoint_every and (step + 1) % c.checkpoint_every == 0 and step + 1 < total:
                checkpoint(name, step + 1)

        if phase == "ae":
            ae.train()
            bar = tqdm(range(step, c.ae_steps), desc="cond-pdiff AE", initial=step, total=c.ae_steps)
            for step in bar:
                idx = torch.randint(0, n, (c.batch_size,), generator=gen)
                w = x_all[idx.to(dev)]
                update(ae, ae_opt, F.mse_loss(ae(w, gen), w), "ae", step, c.ae_steps, bar)
            phase, step = "diffusion", 0
            if c.checkpoint_every:
                checkpoint(phase, step)
        ae.eval()
        with torch.no_grad():
            recon = F.mse_loss(ae(x_all), x_all).item()  # no noise: the reconstruction generate() relies on
            z_all = torch.cat([ae.encode(x_all[i:i + 256]) for i in range(0, n, 256)])  # [N, C, L]
        # Standardize per latent channel (p-diff #13: exploded latents break diffusion).
        lat_mean = z_all.mean(dim=(0, 2), keepdim=True)
        lat_std = z_all.std(dim=(0, 2), keepdim=True).clamp_min(1e-6) if z_all.numel() > z_all.shape[1] else \
            torch.ones_like(lat_mean)
        z_all = (z_all - lat_mean) / lat_std
        t_ae = time.time() - start
        log.info("cond-pdiff: autoencoder reconstruction MSE %.3g (normalized units), latent %s", recon,
                 tuple(z_all.shape[1:]))

        # 3. conditional latent diffusion: MSE(eps, eps_theta(z_t, t, c)) (eq. 8), one t per sample
        dcfg = self._diffusion()
        scheduler = make_scheduler(dcfg, "ddpm")
        den.train()
        bar = tqdm(range(step, c.diffusion_steps), desc="cond-pdiff diffusion", initial=step, total=c.diffusion_steps)
        for step in bar:
            idx = torch.randint(0, n, (c.batch_size,), generator=gen)
            if c.condition == "text+fewshot":  # shots redrawn every step
                cond = torch.cat([text_part[idx], conditioner.fewshot_part(zoo_class_idx[idx], gen)], dim=1)
                tokens = None
            else:
                cond, tokens = cond_all[idx], (tokens_all[idx] if tokens_all is not None else None)
            z0 = z_all[idx.to(dev)]
            zt, t, eps = noised(scheduler, z0, gen)
            pred = den(zt, t, cond.to(dev), None if tokens is None else tokens.to(dev))
            update(den, den_opt, F.mse_loss(pred, eps), "diffusion", step, c.diffusion_steps, bar)
        den.eval()

        # 4. everything generate() needs, also in a fresh process
        self.save_state(config=dataclasses.asdict(c), arch=bench.arch.name, n_params=n_params, mask=mask,
                        num_classes=bench.num_classes, class_names=list(bench.class_names),
                        cond_dim=cond_dim, token_dim=token_dim, n_tokens=n_tokens, norm=norm.state(),
                        cond_stats=conditioner.stats, ae=ae.state_dict(), den=den.state_dict(),
                        lat_mean=lat_mean.cpu(), lat_std=lat_std.cpu(), recon_mse=recon, history=self.history)
        self.save_timing(ae=t_ae, total=time.time() - start)  # wall time beside the state, not in it
        self.remove_checkpoint()
        log.info("cond-pdiff: fitted in %.1fs (autoencoder %.1fs)", time.time() - start, t_ae)

    def _log(self, phase: str, step: int, loss: float, bar) -> None:
        if step % self.config.log_every == 0 or step == 0:
            self.history[phase].append(loss)
            bar.set_postfix(loss=f"{loss:.4g}")
            log.debug("cond-pdiff %s step %d loss %.5g", phase, step, loss)

    # -- generate (paper 4.1, "Inference procedures")
    def _load(self) -> dict:
        if self._fitted is not None:
            return self._fitted
        st = self.load_state()
        fitted = st["config"]
        def same(a, b) -> bool:
            return tuple(a) == tuple(b) if isinstance(a, (list, tuple)) else a == b

        changed = {k: (fitted[k], getattr(self.config, k)) for k in STRUCTURAL if not same(fitted[k], getattr(self.config, k))}
        if changed:
            raise ValueError(f"cond-pdiff: options {changed} (fitted, asked) differ from the fitted state in "
                             f"{self.workdir}; refit with these options")
        if st["arch"] != self.bench.arch.name or st["n_params"] != self.layout.n_params:
            raise ValueError(f"cond-pdiff: state was fitted for arch {st['arch']!r} ({st['n_params']} params), "
                             f"asked for {self.bench.arch.name!r} ({self.layout.n_params})")
        st.setdefault("mask", torch.ones(st["n_params"], dtype=torch.bool))  # states fitted before `layers`
        ae, den = self._networks(int(st["mask"].sum()), st["cond_dim"], st["token_dim"], st["n_tokens"])
        ae.load_state_dict(st["ae"])
        den.load_state_dict(st["den"])
        dev = self.bench.device
        st["ae_net"], st["den_net"] = ae.to(dev).eval(), den.to(dev).eval()
        st["normalizer"] = Normalizer.from_state(st["norm"])
        st["conditioner"] = Conditioner(self.config.condition, self.bench, self.config, st["cond_stats"])
        self._fitted = st
        return st

    def generate(self, tasks: Tasks) -> Tensor:
        """[n_tasks, n_params] in bench.layout: n_candidates samples per task, one kept by `select`."""
        return self._select(self.candidates(tasks), tasks)

    @torch.no_grad()
    def candidates(self, tasks: Tasks) -> Tensor:
        """[n_tasks, n_candidates, n_params]: every sample, before selection."""
        st, c, dev = self._load(), self.config, self.bench.device
        k = st["num_classes"]
        wrong = [i for i, cs in enumerate(tasks.classes) if len(cs) != k]
        if wrong:
            raise ValueError(f"cond-pdiff generates {k}-class p-Models; task {tasks.ids[wrong[0]]!r} has "
                             f"{len(tasks.classes[wrong[0]])} classes")
        if len(tasks) == 0:
            return torch.zeros(0, c.n_candidates, st["n_params"])
        norm_rows = st["normalizer"].rows(tasks.ids, tasks.classes)  # fails for non-zoo tasks under norm="task"
        cond_obj = st["conditioner"]
        gens = [torch.Generator().manual_seed(derive_seed(self.bench.seed, "cond-pdiff", "fewshot", t))
                for t in tasks.ids]
        cond, tokens = cond_obj.build(tasks.classes, fewshot_gen=gens)

        # n_candidates latents per task from noise (DDIM-50 by default), decoded and de-normalized
        nc = c.n_candidates
        cond = cond.repeat_interleave(nc, 0)
        tokens = tokens.repeat_interleave(nc, 0) if tokens is not None else None
        shape = (st["den_net"].channels, st["den_net"].length)
        gen = torch.Generator().manual_seed(derive_seed(self.bench.seed, "cond-pdiff", "generate"))
        out = []
        for i in range(0, len(cond), c.generate_batch):
            cb = cond[i:i + c.generate_batch].to(dev)
            tb = tokens[i:i + c.generate_batch].to(dev) if tokens is not None else None
            z = sample(lambda x, t: st["den_net"](x, t, cb, tb), (len(cb), *shape), self._diffusion(),
                       generator=gen, device=dev)
            z = z * st["lat_std"].to(dev) + st["lat_mean"].to(dev)
            out.append(st["ae_net"].decode(z).cpu())
        rows = norm_rows.repeat_interleave(nc) if norm_rows is not None else None
        x = self._fill(torch.cat(out), st, tasks, rows)  # [n_tasks * nc, P]
        theta = st["normalizer"].inverse(x, rows).view(len(tasks), nc, -1)  # [n_tasks, nc, P]
        bad = (~torch.isfinite(theta)).flatten(1).any(1).nonzero().flatten().tolist()
        if bad:
            raise FloatingPointError(f"cond-pdiff generated NaN/inf parameters for {len(bad)} task(s), first: "
                                     f"{tasks.ids[bad[0]]!r}; check the fit (loss history in state.pt)")
        return theta

    @torch.no_grad()
    def reconstruct(self, theta: Tensor, tasks: Tasks) -> Tensor:
        """Zoo vectors [n, P] of `tasks` through the fitted autoencoder (no noise): the best a sample of the latent
        diffusion can be. Layers outside `layers` are kept as they are."""
        st = self._load()
        norm, mask = st["normalizer"], st["mask"]
        rows = norm.rows(tasks.ids, tasks.classes)
        x = norm.forward(theta.float(), rows)
        x[:, mask] = st["ae_net"](x[:, mask].to(self.bench.device)).cpu()
        return norm.inverse(x, rows)

    def _fill(self, generated: Tensor, st: dict, tasks: Tasks, rows: Tensor | None) -> Tensor:
        """Normalized generated coordinates [n * nc, G] -> full vectors [n * nc, P]; layers left out of
        `layers` take their classifier-selection values (generic head rows of the task, LoRA B = 0)."""
        mask = st["mask"]
        if bool(mask.all()):
            return generated
        full = self.bench.arch.layout(len(self.bench.class_names))
        base = full.take_rows(self.bench.arch.initial_theta(self.bench.generic.state),
                              tasks.class_indices(self.bench.class_names))  # [n, P]
        x = st["normalizer"].forward(base.repeat_interleave(self.config.n_candidates, 0), rows)
        x[:, mask] = generated
        return x

    def _select(self, theta: Tensor, tasks: Tasks) -> Tensor:
        """theta [n_tasks, nc, P] -> [n_tasks, P] by the `select` rule."""
        rule = self.config.select
        if rule == "first":
            return theta[:, 0].contiguous()
        if rule == "mean":
            return theta.mean(1)
        # the paper's rule: best accuracy on `select_shots` train images per class (drawn per task id); among
        # equals, the lower cross-entropy
        chosen = select_best(theta, tasks, self.bench, shots=self.config.select_shots, key=("cond-pdiff", "select"),
                             tie_break="loss", label="cond-pdiff select='fewshot-acc'")
        best, acc = chosen.index, chosen.accuracy
        self.last_selection = {"task_ids": list(tasks.ids), "chosen": best, "fewshot_acc": acc}
        log.info("cond-pdiff fewshot-acc: chosen candidates score %.1f%% on %d train shots/class (first: %.1f%%)",
                 100 * acc[torch.arange(len(best)), best].mean().item(), self.config.select_shots,
                 100 * acc[:, 0].mean().item())
        return chosen.theta
