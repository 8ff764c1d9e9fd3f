"""Tina: text-conditioned neural network diffusion for train-once-for-all personalization (Tina 2.2, A.5).

fit: a diffusion transformer (methods/tina_net.py) learns to denoise the zoo's p-Models (signal
prediction, paper eq. 1 and Algorithm 1) conditioned on the embeddings of their class texts, with
classifier augmentation (permute prompt classes and head rows together) and optional
classification-sequence padding. generate: sample one p-Model per prompt with a diffusers scheduler
(methods/diffusion.py); tasks may name classes the zoo never saw, since only their text is used.

Choices beyond the paper (sources in `Tina.Config`; §N = a section of docs/design-notes.md, what the project
measured and what the official code does):
- head tokens per class row, shared encoder, text added to its row (§3-4); "paper" keeps the chunked head;
- per-coordinate z-scores of the parameters (the official code normalizes nothing); head statistics are
  per column of a row and shared by all rows, so normalization commutes with permuting classes;
- class embeddings centred on the zoo's mean class embedding (§3) and scaled to unit RMS, so the
  text encoder's scale (raw CLIP vs unit-norm MiniLM) does not matter;
- every random draw of training step s comes from a generator seeded by (seed, s), so a resumed run
  equals an uninterrupted one exactly (on CPU; GPU kernels may add nondeterminism) and there is no RNG
  state to carry in the checkpoint;
- x_T of each generated p-Model is drawn per (seed, task id, class text), so a task's sample does not
  depend on its batch, and with row tokens and a deterministic sampler permuting a prompt permutes its rows.
"""
from __future__ import annotations

import copy
import dataclasses
import logging
import math
import re
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor
from tqdm.auto import tqdm

from methods.base import exemplar_embeddings
from methods.base import (ENCODERS, TEXT_KINDS, Bench, Layout, Method, Tasks, World, class_prompt, class_texts,
                          derive_seed, first_of_zoo, init_world, option, select_best, snap_to_known, warmup_cosine)
from methods.diffusion import SAMPLERS, DiffusionConfig, make_scheduler, noised, sample
from methods.tina_net import HEAD_TOKENS, TinaNet, TinaNetConfig

log = logging.getLogger(__name__)

PAD_TEXT = "<->"  # the padding class of classification-sequence padding (paper 2.2.3)
NORMALIZATIONS = ("zscore-per-coordinate", "per-layer", "none")
LOSSES = ("plain", "blocks")
TEXTS = TEXT_KINDS  # names, descriptions (A.2, Table 7), rewordings (beyond the paper; benchmarks/prompts.py)
PROMPTS = ("text", "image")  # a class as its text, or as CLIP image features of its train exemplars (Fig. 4c, 6a)
GENERATE_BATCH = 512  # p-Models denoised together in one sampling batch
STD_FLOOR = 1e-8  # a coordinate constant across the zoo normalizes to 0 and is generated as its mean

# ----------------------------------------------------------------------------- normalization


@dataclass
class Normalizer:
    """theta <-> unit-scale diffusion coordinates, on (body [.., n_body], rows [.., K, d+1])."""

    mode: str
    body_mean: Tensor  # [n_body]
    body_std: Tensor
    row_mean: Tensor  # [d+1], shared by every row: commutes with permuting classes, any K
    row_std: Tensor

    @classmethod
    def fit(cls, mode: str, body: Tensor, rows: Tensor, layout: Layout) -> "Normalizer":
        """Statistics over the zoo. body [n, n_body], rows [n, K, d+1]."""
        flat_rows = rows.reshape(-1, rows.shape[-1])  # every row of every p-Model
        if mode == "none":  # the official code: raw parameters
            bm, bs = torch.zeros(body.shape[1]), torch.ones(body.shape[1])
            rm, rs = torch.zeros(rows.shape[-1]), torch.ones(rows.shape[-1])
        elif mode == "zscore-per-coordinate":  # docs/design-notes.md §2
            bm, bs = body.mean(0), body.std(0, correction=0) if body.shape[1] else body.new_ones(0)
            rm, rs = flat_rows.mean(0), flat_rows.std(0, correction=0)
        elif mode == "per-layer":  # one scalar per layer, as p-diff v2's BaseDataset.preprocess
            bm, bs = torch.zeros(body.shape[1]), torch.ones(body.shape[1])
            for seg in layout.segments:
                if seg.stop <= body.shape[1]:
                    part = body[:, seg.offset:seg.stop]
                    bm[seg.offset:seg.stop], bs[seg.offset:seg.stop] = part.mean(), part.std(correction=0)
            w, b = flat_rows[:, :-1], flat_rows[:, -1]
            rm = torch.cat([w.mean().expand(w.shape[1]), b.mean().view(1)])
            rs = torch.cat([w.std(correction=0).expand(w.shape[1]), b.std(correction=0).view(1)])
        else:
            raise ValueError(f"normalization must be one of {NORMALIZATIONS}, got {mode!r}")
        return cls(mode, bm.float(), bs.float().clamp_min(STD_FLOOR), rm.float(), rs.float().clamp_min(STD_FLOOR))

    def normalize(self, body: Tensor, rows: Tensor) -> tuple[Tensor, Tensor]:
        body = (body - self.body_mean.to(body)) / self.body_std.to(body)
        return body, (rows - self.row_mean.to(rows)) / self.row_std.to(rows)

    def denormalize(self, body: Tensor, rows: Tensor) -> tuple[Tensor, Tensor]:
        body = body * self.body_std.to(body) + self.body_mean.to(body)
        return body, rows * self.row_std.to(rows) + self.row_mean.to(rows)

    def state(self) -> dict:
        return dataclasses.asdict(self)

# ----------------------------------------------------------------------------- helpers


def prompt_texts(classes: list[list[str]], kind: str, dataset: str = "", source: str | None = None) -> list[list[str]]:
    """Each task's class texts in prompt order: class names ("aquarium fish"), class descriptions (A.2) or
    rewordings ("sea cow" for dugong); `source` names another descriptions file (benchmarks/prompts.py)."""
    return class_texts(classes, kind, dataset, source)


def permute_neurons(theta: Tensor, layout: Layout, gen: torch.Generator) -> Tensor:
    """G.pt's permutation augmentation for the CNNs: permute each conv's output channels and the next
    layer's input channels alike (ReLU and average pooling act per channel, so every p-Model keeps its
    function). theta [B, n_params] -> [B, n_params], one random permutation per p-Model and layer."""
    convs = [s.name for s in layout.segments if not s.name.startswith(f"{layout.head}.")]
    if not convs or not all(re.fullmatch(r"conv\d+\.weight", name) for name in convs):
        raise ValueError(f"permutation_aug needs a body of plain conv layers (cnn-5k, cnn-14k); got {convs or 'none'}")
    p = dict(layout.unflatten(theta))
    b = theta.shape[0]

    def take(t: Tensor, dim: int, perm: Tensor) -> Tensor:  # t[i].index_select(dim - 1, perm[i]) for each i
        shape = [b] + [1] * (t.dim() - 1)
        shape[dim] = perm.shape[1]
        return t.gather(dim, perm.view(shape).expand_as(t))

    for i, name in enumerate(convs):
        perm = torch.rand(b, p[name].shape[1], generator=gen).argsort(1).to(theta.device)  # [B, C_out]
        nxt = convs[i + 1] if i + 1 < len(convs) else f"{layout.head}.weight"
        p[name], p[nxt] = take(p[name], 1, perm), take(p[nxt], 2, perm)
    return torch.cat([p[s.name].reshape(b, -1) for s in layout.segments], dim=1)


def batch_indices(step: int, n: int, batch_size: int, seed: int) -> Tensor:
    """Zoo indices of training step `step`: consecutive slices of a stream of per-epoch permutations, a
    function of (seed, step) only. An epoch is one pass over the zoo (official); a batch larger than the
    zoo spans several epochs."""
    out, pos = [], step * batch_size
    while pos < (step + 1) * batch_size:
        epoch, offset = divmod(pos, n)
        perm = torch.randperm(n, generator=torch.Generator().manual_seed(derive_seed(seed, "tina-epoch", epoch)))
        take = perm[offset: offset + (step + 1) * batch_size - pos]
        out.append(take)
        pos += len(take)
    return torch.cat(out)


def param_groups(net: torch.nn.Module, weight_decay: float) -> list[dict]:
    """AdamW groups as the official `configure_optimizers`: decay weight matrices, not biases, LayerNorms
    or position embeddings."""
    def decayed(name: str, p: Tensor) -> bool:
        return p.dim() >= 2 and not name.endswith(("pos_emb", "text_b"))
    named = list(net.named_parameters())
    return [{"params": [p for n, p in named if decayed(n, p)], "weight_decay": weight_decay},
            {"params": [p for n, p in named if not decayed(n, p)], "weight_decay": 0.0}]


def inherit_weights(net: torch.nn.Module, source: str | Path) -> dict[str, int]:
    """Parameter inheritance (Tina 2.2, Fig. 4b): copy into `net` every tensor of another fit's denoiser (its
    EMA weights) whose name and shape match; the rest keep their fresh initialization. `source` is a tina
    state.pt or the workdir holding one. Returns {"copied": n, "kept": m}."""
    path = Path(source)
    path = path if path.suffix == ".pt" else path / "state.pt"  # a workdir (the workflow passes the fit's state folder)
    if not path.exists():
        raise FileNotFoundError(f"tina init_from: no fitted state at {path}; fit the source first")
    state = torch.load(path, map_location="cpu", weights_only=False)
    weights = state.get("ema") or state.get("model") if isinstance(state, dict) else None
    if not weights:
        raise ValueError(f"tina init_from: {path} holds no denoiser weights (not a tina state)")
    own = net.state_dict()
    same = {k: v for k, v in weights.items() if k in own and tuple(v.shape) == tuple(own[k].shape)}
    if not same:
        raise ValueError(f"tina init_from: {path} shares no tensor of the same name and shape with this denoiser")
    net.load_state_dict({**own, **same})
    log.info("tina: inherited %d of %d denoiser tensors from %s", len(same), len(own), path)
    return {"copied": len(same), "kept": len(own) - len(same)}


def snapshot_path(workdir: str | Path, step: int) -> Path:
    return Path(workdir) / f"snapshot-{step}.pt"


def save_snapshot(workdir: str | Path, step: int, ema: torch.nn.Module) -> None:
    """The EMA denoiser after `step` training steps (`snapshot_steps`), for p-Acc vs training steps."""
    path = snapshot_path(workdir, step)
    tmp = path.with_name(path.name + ".tmp")
    torch.save({"step": step, "ema": ema.state_dict()}, tmp)
    tmp.replace(path)  # atomic: a killed fit leaves no half-written snapshot


def load_snapshot(workdir: str | Path, step: int) -> dict:
    path = snapshot_path(workdir, step)
    if not path.exists():
        raise FileNotFoundError(f"tina at_step={step}: no snapshot at {path}; fit with snapshot_steps including {step}")
    return torch.load(path, map_location="cpu", weights_only=False)["ema"]


# ----------------------------------------------------------------------------- the method


class Tina(Method):
    """Text-conditioned parameter diffusion: prompt (ordered class texts) -> p-Model (paper 2.2)."""

    name = "tina"

    @dataclass
    class Config:
        # -- denoiser (TinaNetConfig). Paper A.5: width 2048, depth 12, heads 16 (official cifar100: width
        # 512); the defaults are the CPU scale of docs/design-notes.md §4 (2-core CPU).
        width: int = option(256, min=1)
        depth: int = option(6, min=1)
        heads: int = option(8, min=1)
        chunk: int = option(576, min=1)  # M (paper A.5)
        # "rows": equivariant per-class row tokens (docs/design-notes.md §3); "paper": chunked head
        head_tokens: str = option("rows", choices=HEAD_TOKENS)
        merge_text: bool = False  # one averaged text token (TAPER-style; Table 6 ablation, collapses in the paper)
        max_classes: int | None = option(None, min=1)  # longest prompt; None: the zoo's K (paper: 10)
        time_freqs: int = option(128, min=1)  # G.pt's FrequencyEmbedder
        dropout: float = option(0.0, min=0, max=1)  # official
        input_norm: bool = True  # LayerNorm over the input tokens (official); False: an ablation lever
        # -- diffusion: linear beta 1e-4 -> 0.02, T = 1000, x0 prediction (DiffusionConfig, official code)
        # generate=True: sampling only, free to differ between fit and generate (a variant changes it; the DAG
        # passes both). Paper/official: ddpm (1000 steps); DDIM-10 ~ DDIM-50 ~ DDPM-1000 (docs/design-notes.md §5)
        sampler: str = option("ddim", choices=SAMPLERS, generate=True)
        sample_steps: int | None = option(None, min=1, generate=True)  # None: 1000 for ddpm, 50 otherwise
        # -- data
        # official: "none"; z-scores: conv std 0.01 vs head 0.34 across the zoo (docs/design-notes.md §2): unscaled,
        # the conv layers drown in the noise schedule's unit-variance noise
        normalization: str = option("zscore-per-coordinate", choices=NORMALIZATIONS)
        centre_text: bool = True  # subtract the zoo's mean class embedding (names share a direction: design-notes §3)
        # None: the benchmark's text encoder (config `encoder`); else clip | minilm
        encoder: str | None = option(None, choices=ENCODERS)
        # its options, e.g. {path: .../clip-text-anchors/miniimagenet_anchors.npy} for `table` (real CLIP vectors)
        encoder_options: dict | None = None
        # training prompts: class "names" (paper) or GPT-4 "descriptions" (Table 7)
        text: str = option("names", choices=TEXTS)
        # prompts at generate time; None: as trained (Table 7, Fig. 6c); "rewordings": another wording of each
        # class a user would type ("sea cow" for dugong; benchmarks/descriptions/<dataset>_rewordings.json)
        generate_text: str | None = option(None, choices=TEXTS, generate=True)
        # descriptions file for text/generate_text "descriptions": a shipped stem (synthetic_descriptions, for the
        # smoke profile) or a JSON path; None: the dataset's own (cifar100, miniimagenet, caltech101)
        descriptions: str | None = option(None, generate=True)
        # map each prompt text to the nearest class name of the zoo (cosine of the text embeddings), then generate
        # for those names: the baseline a name-conditioned generator needs against rewordings (Table 7 extension)
        snap_to_known: bool = option(False, generate=True)
        # image prompts (needs encoder clip): "image" conditions on each class's CLIP image embedding of
        # `image_shots` seeded TRAIN exemplars (mean over shots) instead of its text. `prompt`: the training
        # condition (Fig. 4c: image-prompted training); `generate_prompt`: at generate time, None = as trained
        # (Fig. 6a: a text-trained Tina prompted with images, zero-shot)
        prompt: str = option("text", choices=PROMPTS)
        generate_prompt: str | None = option(None, choices=PROMPTS, generate=True)
        image_shots: int = option(1, min=1, generate=True)
        # text-trained, image-prompted (with centre_text): map the image embeddings to the text ones' mean and RMS
        # over the zoo's classes (CLIP's modality gap); False feeds them raw, as the paper does
        image_align: bool = option(True, generate=True)
        classifier_aug: bool = True  # permute prompt classes and head rows together per sample (paper 2.2.3)
        permutation_aug: bool = False  # G.pt's neuron permutation (CNNs only); the paper says it hurts (Table 6)
        padding: bool = False  # train with 1..K classes, the rest '<->' + zero rows (paper 2.2.3, Fig. 6b)
        # "plain": MSE over all parameters (paper eq. 1); "blocks": conv body and head weighted alike (design-notes §2)
        loss: str = option("plain", choices=LOSSES)
        # -- optimization (official: AdamW (0.9, 0.999), lr 4e-4, wd 0.1, clip 0.1, batch 64, warm-up + cosine)
        # passes over the zoo (official 300-400 on 1000 p-Models; 500 on 300 p-Models gives the ~2.4k steps of
        # docs/design-notes.md §4)
        epochs: int = option(500, min=1)
        steps: int | None = option(None, min=1)  # training iterations; overrides `epochs` when set
        batch_size: int = option(64, min=1)  # paper A.5
        lr: float = option(4e-4, above=0)  # paper A.5
        weight_decay: float = option(0.1, min=0)  # official, not on biases, LayerNorms, positions
        warmup_steps: int = option(100, min=0)  # official: 5 epochs (~75 steps); capped at a fifth of the run
        grad_clip: float = option(0.1, above=0)  # paper A.5
        # official 0.9999 without warm-up keeps ~64% of the random init after 4.5k steps (the official evaluation
        # uses the raw weights); ours warms up as min(decay, (1+s)/(10+s))
        ema_decay: float = option(0.999, min=0, max=1)
        use_ema: bool = option(True, generate=True)  # generate with the EMA weights
        # bookkeeping, no part of the fitted state: generate=True, so a variant or a resumed fit may change it
        checkpoint_every: int = option(250, min=1, generate=True)  # steps between resumable checkpoints
        log_every: int = option(50, min=1, generate=True)
        seed: int | None = None  # None: the benchmark's seed
        # samples per task; > 1 keeps the one most accurate on the task's train images
        n_samples: int = option(1, min=1, generate=True)
        # -- scaling studies (Tina Fig. 4b, 5): fit on the first N zoo p-Models (None: all); start the denoiser
        # from another fit's state (a state.pt or its workdir), copying every shape-compatible tensor (parameter
        # inheritance); keep the EMA weights at these steps and generate with them (`at_step`; None: the end)
        zoo_size: int | None = option(None, min=1)
        init_from: str | None = None
        snapshot_steps: tuple[int, ...] = option((), generate=True)  # bookkeeping: the trajectory is the same
        at_step: int | None = option(None, min=1, generate=True)

    def __init__(self, config=None):
        super().__init__(config)
        self._loaded = None  # (state, net) cached by generate

    def setup(self, bench: Bench, workdir) -> "Tina":
        self._loaded = None  # a new workdir or bench: reload the denoiser
        return super().setup(bench, workdir)

    # -- small helpers
    def text_encoder(self, state: dict | None = None):
        """The encoder option (with `encoder_options`), else the one the state was fitted with, else the
        benchmark's."""
        name = self.config.encoder or (state["config"].get("encoder") if state else None)
        options = self.config.encoder_options or (state["config"].get("encoder_options") if state else None)
        return self.bench.encoder(name, **options) if name and options else self.bench.text_encoder(name)

    @property
    def seed(self) -> int:
        return self.config.seed if self.config.seed is not None else self.bench.seed

    def _changed_options(self, saved: dict | None, options: dict) -> list[str]:
        """The fit options that differ from a saved state's or checkpoint's. An option the saved dict lacks (one
        added to Config after it was written) counts at its default, so a new option does not void old fits."""
        if saved is None:
            return sorted(options)
        defaults = {f.name: f.default for f in dataclasses.fields(self.Config)}
        return sorted(k for k in options if saved.get(k, defaults.get(k)) != options[k])

    def _fit_options(self) -> dict:
        free = self.generate_options()  # sampling and bookkeeping: may differ between fit and generate
        return {k: v for k, v in dataclasses.asdict(self.config).items() if k not in free}

    def _net_config(self, text_dim: int, max_classes: int) -> TinaNetConfig:
        c = self.config
        return TinaNetConfig(width=c.width, depth=c.depth, heads=c.heads, chunk=c.chunk, text_dim=text_dim,
                             max_classes=max_classes, head_tokens=c.head_tokens, merge_text=c.merge_text,
                             time_freqs=c.time_freqs, dropout=c.dropout, input_norm=c.input_norm)

    # ------------------------------------------------------------------------- fit

    def _training_data(self, bench: Bench) -> dict:
        """The zoo as (body, rows) and its class texts as centred, unit-RMS embeddings."""
        layout, zoo = bench.layout, first_of_zoo(bench.zoo, self.config.zoo_size, "tina")
        if len(zoo) == 0:
            raise ValueError("tina needs a non-empty zoo of p-Models to learn from")
        if zoo.theta.shape[1] != layout.n_params:
            raise ValueError(f"zoo vectors have {zoo.theta.shape[1]} parameters; arch {bench.arch.name} with "
                             f"K={bench.num_classes} has {layout.n_params}")
        k = layout.num_classes
        max_classes = self.config.max_classes or k
        if max_classes < k:
            raise ValueError(f"max_classes={max_classes} is smaller than the zoo's {k} classes")
        encoder = self.text_encoder()
        texts = prompt_texts(zoo.classes, self.config.text, bench.dataset, self.config.descriptions)
        unique = list(dict.fromkeys(t for ts in texts for t in ts))
        if self.config.prompt == "image":  # Fig. 4c: each class as its exemplar images, keyed by class name
            texts = [list(cs) for cs in zoo.classes]
            unique = list(dict.fromkeys(t for ts in texts for t in ts))
            z = self.image_embeddings(encoder, unique)  # [n_unique, D]
        else:
            z = encoder.encode_text(unique).float()  # [n_unique, D]
        centre = z.mean(0) if self.config.centre_text else torch.zeros(z.shape[1])
        scale = (z - centre).pow(2).mean().sqrt().item()
        scale = scale if scale > 1e-6 else 1.0  # one class only: nothing to scale by
        try:
            pad = encoder.encode_text([PAD_TEXT])[0].float()
        except KeyError:  # a table encoder (e.g. clip-text-anchors) knows class names only
            log.info("text encoder %s cannot encode %r; padding uses the mean class embedding", encoder.name, PAD_TEXT)
            pad = z.mean(0)
        pos = {t: i for i, t in enumerate(unique)}
        raw = z[torch.tensor([[pos[t] for t in ts] for ts in texts])]  # [n, K, D]
        theta = zoo.theta.float()
        return {"theta": theta, "text": (raw - centre) / scale, "centre": centre, "scale": scale, "pad_raw": pad,
                "pad": (pad - centre) / scale, "encoder": encoder.name, "text_dim": z.shape[1], "k": k,
                "max_classes": max_classes, "classes": list(dict.fromkeys(c for cs in zoo.classes for c in cs)),
                "norm": Normalizer.fit(self.config.normalization, layout.body(theta), layout.head_rows(theta), layout)}

    def _batch(self, data: dict, step: int, device: torch.device) -> tuple[Tensor, Tensor, Tensor, torch.Generator]:
        """Training batch of step `step`: normalized (body, rows) and texts, augmented and padded."""
        c, layout = self.config, self.bench.layout
        gen = torch.Generator().manual_seed(derive_seed(self.seed, "tina-step", step))
        idx = batch_indices(step, len(data["theta"]), c.batch_size, self.seed)
        theta, text = data["theta"][idx], data["text"][idx]  # [B, P], [B, K, D]
        if c.permutation_aug:
            theta = permute_neurons(theta, layout, gen)
        body, rows = data["norm"].normalize(layout.body(theta), layout.head_rows(theta))
        b, k = rows.shape[:2]
        if c.classifier_aug:  # 1. same class permutation for the prompt and the head rows
            perm = torch.rand(b, k, generator=gen).argsort(1)  # [B, K]
            rows = rows.gather(1, perm[..., None].expand_as(rows))
            text = text.gather(1, perm[..., None].expand_as(text))
        width = data["max_classes"] if (c.padding or c.head_tokens == "paper") else k
        keep = torch.ones(b, width, dtype=torch.bool)
        keep[:, k:] = False
        if c.padding:  # 2. keep the first k_b of the (permuted) classes, 1 <= k_b <= K
            k_b = torch.randint(1, k + 1, (b,), generator=gen)
            keep &= torch.arange(width) < k_b[:, None]
        full_rows = rows.new_zeros(b, width, rows.shape[-1])  # '<->' classes get zero (normalized) rows
        full_rows[:, :k] = rows
        full_rows[~keep] = 0.0
        full_text = torch.where(keep[..., None], F.pad(text, (0, 0, 0, width - k)), data["pad"])
        return body.to(device), full_rows.to(device), full_text.to(device), gen

    def _train_step(self, net: torch.nn.Module, opt: torch.optim.Optimizer, scheduler, data: dict, step: int,
                    total: int, world: World = World()) -> float:
        """One AdamW step of Algorithm 1 (lines 5-14). Returns the loss (averaged over ranks).

        Under data parallelism every rank draws the same global batch and noise and keeps its share of the
        rows; DDP averages the gradients, so N processes take the same step as one (up to float rounding)."""
        c, device = self.config, self.bench.device
        body, rows, text, gen = self._batch(data, step, device)
        torch.manual_seed(derive_seed(self.seed, "tina-dropout", step))  # dropout draws, if any
        x0 = torch.cat([body, rows.flatten(1)], dim=1)  # [B, n_body + K (d+1)]
        xt, t, _ = noised(scheduler, x0, generator=gen)  # lines 7-8: j ~ U, theta^j ~ q(theta^j | theta)
        if world.size > 1:
            mine = world.share(len(x0))
            body, rows, text, x0, xt, t = body[mine], rows[mine], text[mine], x0[mine], xt[mine], t[mine]
        body_t, rows_t = xt[:, : body.shape[1]], xt[:, body.shape[1]:].view_as(rows)
        pred_body, pred_rows = net(body_t, rows_t, text, t.float() / scheduler.config.num_train_timesteps)
        if c.loss == "blocks" and body.shape[1]:  # conv body and head weighted equally (design-notes §2)
            loss = 0.5 * (F.mse_loss(pred_body, body) + F.mse_loss(pred_rows, rows))
        else:  # paper eq. 1 (mean over coordinates, as the official `training_losses`)
            loss = F.mse_loss(torch.cat([pred_body, pred_rows.flatten(1)], 1), x0)
        for group in opt.param_groups:
            group["lr"] = c.lr * warmup_cosine(step, total, min(c.warmup_steps, total // 5))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(net.parameters(), c.grad_clip)
        opt.step()
        return world.mean(loss.item())

    def fit(self, bench: Bench, workdir: Path) -> None:
        """Train the denoiser on the zoo (Algorithm 1); resumable from `workdir/checkpoint.pt`.

        Data parallel when started by torchrun (`init_world`): `batch_size` stays the global
        batch, split across processes, and the per-step draws are those of one process, so resuming stays exact.
        """
        if self.bench is None or self.workdir != Path(workdir):
            self.setup(bench, workdir)
        c, device = self.config, bench.device
        if c.permutation_aug:
            permute_neurons(torch.zeros(1, bench.layout.n_params), bench.layout, torch.Generator())  # arch check
        data = self._training_data(bench)
        n = len(data["theta"])
        total = c.steps if c.steps is not None else math.ceil(c.epochs * n / c.batch_size)
        options = self._fit_options()
        if self.has_state():
            done = self.load_state()
            if not self._changed_options(done.get("fit_options"), options) and done.get("step") == total:
                log.info("tina: already fitted (%d steps) in %s", total, self.workdir)
                return

        world = init_world(device)
        if world.size > 1:
            world.share(c.batch_size)  # fails early when the batch does not split evenly
        torch.manual_seed(self.seed)
        net = TinaNet(self._net_config(data["text_dim"], data["max_classes"]), bench.layout).to(device)
        if c.init_from:  # parameter inheritance (Fig. 4b); a resumed checkpoint below overrides it
            inherit_weights(net, c.init_from)
        ema = copy.deepcopy(net).requires_grad_(False)
        opt = torch.optim.AdamW(param_groups(net, c.weight_decay), lr=c.lr, betas=(0.9, 0.999))
        start, losses, window, seconds = 0, [], [], 0.0
        ckpt = self.load_checkpoint()
        if ckpt is not None:
            changed = self._changed_options(ckpt["fit_options"], options)
            if changed or ckpt["total"] != total:
                raise ValueError(f"{self.checkpoint_path} was trained with other options ({changed or 'steps'}); "
                                 "resume with the same options or use a fresh workdir")
            net.load_state_dict(ckpt["model"])
            ema.load_state_dict(ckpt["ema"])
            opt.load_state_dict(ckpt["optimizer"])
            start, losses, window = ckpt["step"], list(ckpt["losses"]), list(ckpt.get("window", []))
            seconds = self.checkpoint_timing().get("seconds", ckpt.get("seconds", 0.0))
            log.info("tina: resuming from step %d of %d (%s)", start, total, self.checkpoint_path)
        log.info("tina: %d p-Models, %d steps, denoiser %.2fM parameters, tokens %s + %s", n, total,
                 net.num_params() / 1e6, net.token_sizes(),
                 "row tokens" if c.head_tokens == "rows" else "class-text tokens")

        scheduler = make_scheduler(DiffusionConfig(), "ddpm")  # its add_noise: q(theta^j | theta)
        net.train()
        model = net
        if world.size > 1:  # gradients averaged across processes; `net` stays the unwrapped module
            from torch.nn.parallel import DistributedDataParallel
            model = DistributedDataParallel(net, device_ids=[device] if device.type == "cuda" else None)
        tic = time.perf_counter()
        bar = tqdm(range(start, total), desc="tina", initial=start, total=total, unit="step", disable=not world.main)
        for step in bar:
            window.append(self._train_step(model, opt, scheduler, data, step, total, world))
            with torch.no_grad():  # EMA of the weights, warmed up (as diffusers' EMAModel) so the init fades
                ema_decay = min(c.ema_decay, (1 + step) / (10 + step))
                for pe, p in zip(ema.parameters(), net.parameters()):
                    pe.lerp_(p, 1.0 - ema_decay)
            done = step + 1
            if done in c.snapshot_steps and done < total and world.main:
                save_snapshot(self.workdir, done, ema)
            if done % c.log_every == 0 or done == total:
                losses.append(sum(window) / len(window))
                bar.set_postfix(loss=f"{losses[-1]:.4f}")
                log.info("tina step %d/%d: loss %.5f", done, total, losses[-1])
                window = []
            if done % c.checkpoint_every == 0 and done < total and world.main:
                # the unlogged losses too: a resumed run averages the same ones. Wall time: a sidecar.
                self.save_checkpoint({"step": done, "total": total, "fit_options": options, "model": net.state_dict(),
                                      "ema": ema.state_dict(), "optimizer": opt.state_dict(), "losses": losses,
                                      "window": window}, seconds=seconds + time.perf_counter() - tic)
        seconds += time.perf_counter() - tic
        norm = data["norm"]
        if not world.main:  # rank 0 writes the state; the others wait for it
            world.barrier()
            return
        self.save_timing(seconds=seconds)  # beside the state (state.pt.timing.json): the state holds no wall time
        self.save_state(config=dataclasses.asdict(c), fit_options=options, step=total, losses=losses,
                        net_config=dataclasses.asdict(net.cfg), model=net.state_dict(), ema=ema.state_dict(),
                        norm=norm.state(), text_centre=data["centre"], text_scale=data["scale"], dataset=bench.dataset,
                        pad_text=data["pad_raw"], encoder=data["encoder"],
                        encoder_spec={"name": c.encoder} if c.encoder else dict(bench.text_encoder_spec),
                        arch=bench.arch.name, num_classes=data["k"], n_params=bench.layout.n_params,
                        n_body=norm.body_mean.numel(), row_dim=norm.row_mean.numel(), n_zoo=n,
                        denoiser_params=net.num_params(), trained_classes=data["classes"])
        self._loaded = None
        self.remove_checkpoint()  # the final state supersedes it (and it is 2x larger: AdamW moments)
        world.barrier()
        log.info("tina: fitted %d steps in %.0fs (%.3fs/step) -> %s", total - start, seconds,
                 seconds / max(total - start, 1), self.workdir)

    # ------------------------------------------------------------------------- generate

    def _load(self) -> tuple[dict, TinaNet]:
        """The fitted state and denoiser (EMA or raw weights), checked against this benchmark's arch."""
        if self._loaded is None:
            state = self.load_state()
            layout = self.bench.layout
            n_body = layout.body(torch.zeros(layout.n_params)).numel()
            row_dim = layout.head_rows(torch.zeros(layout.n_params)).shape[-1]
            if state["arch"] != self.bench.arch.name or (state["n_body"], state["row_dim"]) != (n_body, row_dim):
                raise ValueError(f"tina state in {self.workdir} was fitted for arch {state['arch']!r} "
                                 f"({state['n_params']} parameters at K={state['num_classes']}); this benchmark's arch "
                                 f"is {self.bench.arch.name!r} ({layout.n_params} at K={layout.num_classes}): "
                                 "fit tina for this arch first")
            net = TinaNet(TinaNetConfig(**state["net_config"]), layout).to(self.bench.device)
            net.load_state_dict(state["ema" if self.config.use_ema else "model"])
            if self.config.at_step not in (None, state["step"]):  # an EMA snapshot on the way (Fig. 4b)
                net.load_state_dict(load_snapshot(self.workdir, self.config.at_step))
            self._loaded = (state, net.eval())
        return self._loaded

    def prompt_encoder(self):
        """The encoder the fitted state reads prompts with: class texts, and images for clip (`Promptable`)."""
        state, _ = self._load()
        encoder = self.text_encoder(state)
        if encoder.name != state["encoder"]:
            raise ValueError(f"tina was fitted with text encoder {state['encoder']!r}; this benchmark's encoder is "
                             f"{encoder.name!r}: generate with the same encoder (config key `encoder`)")
        return encoder

    def encode_prompts(self, texts: list[list[str]]) -> Tensor:
        """Class texts -> raw embeddings [n_tasks, K, D] with the encoder the state was fitted with."""
        flat = self.prompt_encoder().encode_text([t for ts in texts for t in ts]).float()
        return flat.view(len(texts), len(texts[0]), -1)

    def image_embeddings(self, encoder, names: list[str]) -> Tensor:
        """Raw CLIP image embeddings [len(names), D] of each class's `image_shots` seeded train exemplars."""
        b = self.bench
        return exemplar_embeddings(encoder, b.train_x, b.train_y, b.class_names, names, self.config.image_shots,
                                   self.seed)

    def encode_image_prompts(self, classes: list[list[str]], state: dict) -> Tensor:
        """Image prompts [n_tasks, K, D]: each class's exemplar embedding (`image_embeddings`). A text-trained
        state with `image_align` gets them moved to the text embeddings' mean and RMS over the zoo's classes."""
        encoder = self.prompt_encoder()
        names = list(dict.fromkeys(n for cs in classes for n in cs))
        z = self.image_embeddings(encoder, names)  # [n_names, D]
        fitted = state["config"]
        if fitted.get("prompt", "text") == "text" and self.config.image_align and fitted.get("centre_text", True):
            zoo = self.image_embeddings(encoder, sorted({n for cs in self.bench.zoo.classes for n in cs}))
            centre = zoo.mean(0)
            scale = (zoo - centre).pow(2).mean().sqrt().clamp_min(1e-6)
            z = (z - centre) / scale * state["text_scale"] + state["text_centre"]
        index = {n: i for i, n in enumerate(names)}
        return z[torch.tensor([[index[n] for n in cs] for cs in classes])]

    @classmethod
    def fitted_bench(cls, workdir) -> dict:
        """The arch, K, text encoder and dataset the state in `workdir` was fitted on, the class counts it serves
        (1..max_classes with padding, else K) and its sampler (`Promptable`)."""
        state = cls.read_state(workdir)
        c, k = state["config"], state["num_classes"]
        padding = bool(c.get("padding"))
        return {"arch": state["arch"], "num_classes": k, "encoder_spec": state["encoder_spec"],
                "dataset": state["dataset"], "padding": padding,
                "class_counts": list(range(1, state["net_config"]["max_classes"] + 1)) if padding else [k],
                "sampling": {key: c[key] for key in ("sampler", "sample_steps") if key in c},
                "trained_classes": state.get("trained_classes")}  # None: a state fitted before it was kept

    def generator_card(self) -> dict:
        """How this generator was fitted and samples, for a generated p-Model's model card (`Promptable`)."""
        state, _ = self._load()
        c = self.config
        steps = c.sample_steps or DiffusionConfig().steps_for(c.sampler)
        return {"made_by": "Tina (text-conditioned neural network diffusion)",
                "trained": f"trained {state['step']} steps on {state['n_zoo']} p-Models of `{state['dataset'] or '?'}`, "
                           f"text encoder `{state['encoder']}`, {'EMA' if c.use_ema else 'raw'} weights",
                "sampling": f"{c.sampler}, {steps} steps, seed {self.seed}, {c.n_samples} sample(s)",
                "encoder": state["encoder"],
                "meta": {"sampler": c.sampler, "sample_steps": c.sample_steps, "seed": self.seed,
                         "encoder": state["encoder"]}}

    def generate(self, tasks: Tasks) -> Tensor:
        state, _ = self._load()
        k = self._check_prompts(tasks.ids, tasks.classes, state)
        source = self.config.descriptions or state["config"].get("descriptions")
        texts = prompt_texts(tasks.classes, self.config.generate_text or state["config"]["text"], state["dataset"], source)
        if self.config.snap_to_known:
            texts = self._snap_to_known(texts, tasks.classes, state, source)
        if (self.config.generate_prompt or state["config"].get("prompt", "text")) == "image":
            if self.config.snap_to_known:
                raise ValueError("tina: snap_to_known maps texts; it does not apply to image prompts")
            emb = self.encode_image_prompts(tasks.classes, state) if len(tasks) else \
                torch.zeros(0, k, state["text_centre"].numel())
        else:
            emb = self.encode_prompts(texts) if len(tasks) else torch.zeros(0, k, state["text_centre"].numel())
        return self.generate_from_embeddings(emb, tasks.ids, texts, classes=tasks.classes)

    def _snap_to_known(self, texts: list[list[str]], classes: list[list[str]], state: dict,
                       source: str | None) -> list[list[str]]:
        """Each prompt text -> the nearest class name of the zoo by text similarity (benchmarks/prompts.py), as
        the fitted Tina's own training text of that class. Logs how many land on their task's true class."""
        known = list(dict.fromkeys(c for cs in self.bench.zoo.classes for c in cs))  # the classes Tina was fitted on
        nearest, _ = snap_to_known([t for ts in texts for t in ts], [class_prompt(c) for c in known],
                                   self.text_encoder(state))
        it = iter(nearest)
        snapped = [[known[next(it)] for _ in ts] for ts in texts]
        hits = sum(s == c for ss, cs in zip(snapped, classes) for s, c in zip(ss, cs))
        log.info("tina snap_to_known: %d of %d prompt texts map to their own class (%.1f%%)", hits,
                 len(nearest), 100.0 * hits / max(len(nearest), 1))
        return prompt_texts(snapped, state["config"]["text"], state["dataset"], source)

    def _check_prompts(self, ids: list[str], classes: list[list[str]], state: dict) -> int:
        max_classes = state["net_config"]["max_classes"]
        for task_id, cs in zip(ids, classes):
            if not cs:
                raise ValueError(f"task {task_id!r} has an empty prompt: name 1 to {max_classes} classes")
            if len(cs) > max_classes:
                raise ValueError(f"task {task_id!r} names {len(cs)} classes; this tina was fitted for at most "
                                 f"{max_classes} (option max_classes)")
        sizes = sorted({len(cs) for cs in classes})
        if len(sizes) > 1:
            raise ValueError(f"tasks of different sizes {sizes}: generate each size separately (one layout per call)")
        return sizes[0] if sizes else state["num_classes"]

    @torch.no_grad()
    def generate_from_embeddings(self, emb: Tensor, ids: list[str], keys: list[list[str]],
                                 classes: list[list[str]] | None = None) -> Tensor:
        """Sample p-Models for prompts given as raw embeddings (text, or CLIP image features for image prompts).

        Args:
            emb: [n_tasks, K, D] raw class embeddings in prompt order.
            ids: task ids; keys: each task's class texts. x_T of a row is drawn from (seed, task id, its text),
                so a task's sample does not depend on its batch and, with a deterministic sampler (ddim,
                dpm-solver) and row tokens, permuting the prompt permutes the generated rows.
            classes: dataset class names, used to pick the best of `n_samples` on train images.
        Returns:
            [n_tasks, n_params(K)] de-normalized parameter vectors.
        """
        c = self.config
        state, net = self._load()
        n, k = emb.shape[:2]
        self._check_prompts(ids, [list(ks) for ks in keys], state)
        max_classes, paper = state["net_config"]["max_classes"], state["net_config"]["head_tokens"] == "paper"
        width = max_classes if (paper or state["config"]["padding"]) else k  # pad as in training
        if width > k and not state["config"]["padding"] and k < state["num_classes"]:
            log.warning("tina was not trained with padding; %d-class prompts are padded to %d regardless", k, width)
        norm = Normalizer(**{f: state["norm"][f] for f in ("mode", "body_mean", "body_std", "row_mean", "row_std")})
        centre, scale = state["text_centre"], state["text_scale"]
        pad = (state["pad_text"] - centre) / scale
        text = torch.cat([(emb.float() - centre) / scale, pad.expand(n, width - k, -1)], dim=1)  # [n, width, D]
        keys = [list(ks) + [PAD_TEXT] * (width - k) for ks in keys]
        n_body, row_dim = state["n_body"], state["row_dim"]
        s = c.n_samples
        # x_T per (task, sample): body from (seed, id, sample), row i from (seed, id, sample, text_i, occurrence)
        noise = []
        for task_id, ks in zip(ids, keys):
            for j in range(s):
                g = torch.Generator().manual_seed(derive_seed(self.seed, "tina-generate", task_id, j, "body"))
                parts, seen = [torch.randn(n_body, generator=g)], {}
                for key in ks:
                    seen[key] = seen.get(key, -1) + 1
                    g = torch.Generator().manual_seed(
                        derive_seed(self.seed, "tina-generate", task_id, j, key, seen[key]))
                    parts.append(torch.randn(row_dim, generator=g))
                noise.append(torch.cat(parts))
        noise = torch.stack(noise) if noise else torch.zeros(0, n_body + width * row_dim)  # [n s, n_body + width (d+1)]
        text = text.repeat_interleave(s, dim=0).to(self.bench.device)
        diffusion = DiffusionConfig(sampler=c.sampler)
        out = []
        for i in range(0, n * s, GENERATE_BATCH):
            tb = text[i:i + GENERATE_BATCH]

            def denoise(x: Tensor, t: Tensor) -> Tensor:
                body, rows = net(x[:, :n_body], x[:, n_body:].view(len(x), width, row_dim), tb,
                                 t.float() / diffusion.train_steps)
                return torch.cat([body, rows.flatten(1)], dim=1)

            x0 = sample(denoise, tuple(noise[i:i + GENERATE_BATCH].shape), diffusion, sampler=c.sampler,
                        steps=c.sample_steps, device=self.bench.device, noise=noise[i:i + GENERATE_BATCH],
                        generator=torch.Generator().manual_seed(derive_seed(self.seed, "tina-generate-steps", i)))
            out.append(x0.cpu())
        x0 = torch.cat(out) if out else noise
        body, rows = norm.denormalize(x0[:, :n_body], x0[:, n_body:].view(len(x0), width, row_dim)[:, :k])
        layout = self.bench.layout.with_classes(k)
        theta = layout.assemble(body, rows).view(n, s, -1)  # [n_tasks, n_samples, n_params(K)]
        bad = (~torch.isfinite(theta)).flatten(1).any(1).nonzero().flatten().tolist()
        if bad:
            raise ValueError(f"tina generated NaN/inf parameters for {len(bad)} task(s), first: {ids[bad[0]]!r}")
        if s == 1:
            return theta[:, 0]
        # of several samples per task, the most accurate on the task's train images (the earliest among equals)
        prompts = Tasks(list(ids), [list(cs) for cs in classes] if classes is not None else [[PAD_TEXT]] * n)
        return select_best(theta, prompts, self.bench, tie_break="first", unscorable="first", label="tina").theta
