"""Training loops: the stage-1 generic model and p-Model fine-tuning (Tina A.4).

Data stay in memory as uint8 tensors; conversion and augmentation happen per batch on tensors,
so there is no per-image Python work. Every random choice draws from an explicit generator seeded
from (seed, task id), which makes a p-Model independent of which shard or resumed run trained it.
"""
from __future__ import annotations

import hashlib
import math
import logging
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm.auto import tqdm

from benchmarks import artifacts
from benchmarks.config import FinetuneConfig, Stage1Config
from benchmarks.pmodels import Layout, PModelArch, to_float

log = logging.getLogger(__name__)

# ----------------------------------------------------------------------------- helpers


def resolve_device(name: str = "auto") -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("device 'cuda' requested but torch sees no GPU; use device: cpu or auto")
    return torch.device(name)


def derive_seed(seed: int, *keys: object) -> int:
    """A stable 63-bit seed from a base seed and names (independent of PYTHONHASHSEED)."""
    blob = "/".join([str(seed), *map(str, keys)]).encode()
    return int.from_bytes(hashlib.sha256(blob).digest()[:8], "little") >> 1


AUGMENTATIONS = ("none", "flip", "crop-flip")
SCHEDULES = ("cosine", "constant", "wsd")
WSD_DECAY = 0.2  # "wsd": warm-up-stable-decay (MiniCPM, Hu et al. 2024) without warm-up: the last 20% anneal


def lr_factor(schedule: str, steps: int):
    """Step -> lr multiplier. cosine: from 1 to 0 over `steps`; constant: 1; wsd: 1, then a cosine to 0 over
    the last WSD_DECAY of the steps (the high lr trains longer, the short anneal still calibrates the head)."""
    if schedule not in SCHEDULES:
        raise ValueError(f"schedule must be one of {SCHEDULES}, got {schedule!r}")
    stable = 0 if schedule == "cosine" else steps if schedule == "constant" else int(steps * (1 - WSD_DECAY))

    def factor(step: int) -> float:
        if step < stable:
            return 1.0
        return 0.5 * (1 + math.cos(math.pi * min(step - stable, steps - stable) / max(steps - stable, 1)))
    return factor


def augment(x: Tensor, gen: torch.Generator, mode: str = "crop-flip", pad: int = 4) -> Tensor:
    """Horizontal flip, optionally after a random crop with zero padding; batched. x: float [B, C, H, W]."""
    if mode not in AUGMENTATIONS:
        raise ValueError(f"augmentation must be one of {AUGMENTATIONS}, got {mode!r}")
    if mode == "none":
        return x
    b, _, h, w = x.shape
    flip = (torch.rand(b, generator=gen) < 0.5).to(x.device)
    if mode == "flip":
        return torch.where(flip[:, None, None, None], x.flip(3), x)
    xp = F.pad(x, (pad, pad, pad, pad))
    dy = torch.randint(0, 2 * pad + 1, (b,), generator=gen)
    dx = torch.randint(0, 2 * pad + 1, (b,), generator=gen)
    rows = (dy[:, None] + torch.arange(h)).to(x.device)  # [B, H]
    cols = (dx[:, None] + torch.arange(w)).to(x.device)  # [B, W]
    bidx = torch.arange(b, device=x.device)[:, None, None]
    out = xp.permute(0, 2, 3, 1)[bidx, rows[:, :, None], cols[:, None, :]].permute(0, 3, 1, 2)
    return torch.where(flip[:, None, None, None], out.flip(3), out)


def fit(model: nn.Module, x: Tensor, y: Tensor, *, epochs: int, lr: float, weight_decay: float,
        batch_size: int, augment_images: str, gen: torch.Generator, params=None,
        desc: str | None = None, schedule: str = "cosine") -> float:
    """Adam with a cosine schedule over `epochs` (or `schedule` constant | wsd); x is uint8 images or float features.
    Returns train accuracy of the last epoch."""
    device = next(model.parameters()).device
    params = list(params if params is not None else model.parameters())
    opt = torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)
    steps = epochs * -(-len(x) // batch_size)
    sched = (torch.optim.lr_scheduler.CosineAnnealingLR(opt, max(steps, 1)) if schedule == "cosine"  # the zoo's
             else torch.optim.lr_scheduler.LambdaLR(opt, lr_factor(schedule, max(steps, 1))))
    images = x.dtype == torch.uint8
    model.train()
    correct = total = 0
    for _ in tqdm(range(epochs), desc=desc, disable=desc is None, leave=False):
        perm = torch.randperm(len(x), generator=gen)
        correct = total = 0
        for i in range(0, len(x), batch_size):
            idx = perm[i:i + batch_size]
            xb, yb = x[idx].to(device), y[idx].to(device)
            if images:
                xb = to_float(xb)
                xb = augment(xb, gen, augment_images)
            logits = model(xb)
            loss = F.cross_entropy(logits, yb)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            correct += (logits.argmax(1) == yb).sum().item()
            total += len(yb)
    model.eval()
    return correct / max(total, 1)


@torch.no_grad()
def predict(model: nn.Module, x: Tensor, batch_size: int = 1000) -> Tensor:
    """Logits for uint8 images or float features, in batches."""
    device = next(model.parameters()).device
    model.eval()
    out = []
    for i in range(0, len(x), batch_size):
        xb = x[i:i + batch_size].to(device)
        out.append(model(to_float(xb) if xb.dtype == torch.uint8 else xb).cpu())
    return torch.cat(out)

# ----------------------------------------------------------------------------- generic model


@dataclass
class Generic:
    """The stage-1 model: a |Y|-way network over all classes of the dataset."""

    arch: PModelArch
    classes: list[str]
    state: dict[str, Tensor]
    meta: dict

    def module(self, num_classes: int | None = None, arch: PModelArch | None = None) -> nn.Module:
        """The network (of `arch`, default the generic's own) with the generic weights and a head of
        `num_classes` rows (default all; a K-row head starts as the first K rows)."""
        k = num_classes or len(self.classes)
        return (arch or self.arch).from_generic(self.state, list(range(k)))

    def flat(self) -> Tensor:
        """Personalized parameters of the |Y|-way model, [n_params(|Y|)]."""
        return self.arch.layout(len(self.classes)).flatten(self.state)

    @property
    def layout(self) -> Layout:
        return self.arch.layout(len(self.classes))

    def save(self, path) -> None:
        artifacts.save_torch({"arch": self.arch.name, "classes": self.classes, "state": self.state,
                              "meta": self.meta}, path)

    @classmethod
    def load(cls, path) -> "Generic":
        from benchmarks.pmodels import get_arch
        d = artifacts.load_torch(path, what="a generic model from `nndiff stage1`",
                                 keys=("arch", "classes", "state", "meta"))
        return cls(get_arch(d["arch"]), list(d["classes"]), d["state"], d["meta"])


def train_generic(arch: PModelArch, images, cfg: Stage1Config, *, seed: int, device: torch.device,
                  features: Tensor | None = None) -> Generic:
    """Stage 1: train on every class of the train split. Head-only archs with a frozen pretrained
    backbone (CLIP) train just the classifier on precomputed `features`."""
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    model = arch.build(len(images.classes)).to(device)
    if arch.train_backbone_in_stage1:
        x, trained = images.train_x, model
    else:
        if features is None:
            raise ValueError(f"{arch.name}: stage 1 trains only the head and needs backbone features")
        x, trained = features, model.fc
    acc = fit(trained, x, images.train_y, epochs=cfg.epochs, lr=cfg.lr, weight_decay=cfg.weight_decay,
              batch_size=cfg.batch_size, augment_images=cfg.augment, gen=gen, desc="stage1", schedule=cfg.schedule)
    state = {n: t.detach().cpu() for n, t in model.state_dict().items()}
    meta = {"train_acc": acc, "seed": seed, "config": cfg.__dict__}  # no wall time: the caller's timing sidecar
    return Generic(arch, list(images.classes), state, meta)

@torch.no_grad()
def backbone_features(arch: PModelArch, x: Tensor, device: torch.device, generic: Generic | None = None,
                      batch_size: int = 500) -> Tensor:
    """Frozen features [N, d] that a head-only p-Model classifies (computed once per dataset and arch).
    ResNet-20 uses the trained generic backbone; CLIP ViT-B/32 its pretrained image tower."""
    if arch.train_backbone_in_stage1:
        if generic is None:
            raise ValueError(f"{arch.name}: features come from the trained generic model; pass it")
        model = generic.module().to(device).eval()
        feats = [model.features(to_float(x[i:i + batch_size].to(device))).cpu() for i in range(0, len(x), batch_size)]
        return torch.cat(feats)
    from benchmarks.encoders import get_encoder  # CLIP image tower: the same weights as the text encoder
    return get_encoder("clip").encode_image(x)

# ----------------------------------------------------------------------------- p-Models


def task_data(images_x: Tensor, images_y: Tensor, class_idx: list[int]) -> tuple[Tensor, Tensor]:
    """Rows of the task's classes, labels remapped to their position in the task (prompt order)."""
    lookup = torch.full((int(images_y.max()) + 1,), -1, dtype=torch.long)
    lookup[torch.tensor(class_idx)] = torch.arange(len(class_idx))
    y = lookup[images_y]
    keep = y >= 0
    return images_x[keep], y[keep]


def init_pmodel(generic: Generic, class_idx: list[int], device: torch.device,
                arch: PModelArch | None = None) -> nn.Module:
    """The generic model with its classifier cut to the task's rows, in task order."""
    return (arch or generic.arch).from_generic(generic.state, class_idx).to(device)


def finetune_task(generic: Generic, x: Tensor, y: Tensor, class_idx: list[int], cfg: FinetuneConfig, *,
                  seed: int, device: torch.device, features: Tensor | None = None,
                  arch: PModelArch | None = None) -> tuple[Tensor, float]:
    """Fine-tune one p-Model's personalized parameters (the others stay frozen). Returns
    (theta [n_params(K)], train accuracy of the last epoch). Head-only archs train `fc` on precomputed
    backbone `features` (no augmentation: features are fixed)."""
    arch = arch or generic.arch
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    model = init_pmodel(generic, class_idx, device, arch)
    names = arch.personalized_names(model)
    for n, p in model.named_parameters():
        p.requires_grad_(n in names)
    trained = dict(model.named_parameters())
    if arch.head_only:
        if features is None:
            raise ValueError(f"{arch.name}: fine-tuning the head needs backbone features")
        xt, yt = task_data(features, y, class_idx)
        acc = fit(model.fc, xt, yt, epochs=cfg.epochs, lr=cfg.lr, weight_decay=cfg.weight_decay,
                  batch_size=cfg.batch_size, augment_images="none", gen=gen)
    else:
        xt, yt = task_data(x, y, class_idx)
        acc = fit(model, xt, yt, epochs=cfg.epochs, lr=cfg.lr, weight_decay=cfg.weight_decay,
                  batch_size=cfg.batch_size, augment_images=cfg.augment, gen=gen, params=[trained[n] for n in names])
    theta = arch.layout(len(class_idx)).flatten(dict(model.cpu().named_parameters()))
    return theta, acc


def finetune_tasks(generic: Generic, images, tasks: list[dict], cfg: FinetuneConfig, *, seed: int,
                   device: torch.device, parts_dir: Path, features: Tensor | None = None,
                   arch: PModelArch | None = None) -> dict:
    """Fine-tune a list of tasks, one atomic part file per task under `parts_dir`; finished parts are
    skipped, so a killed run resumes where it stopped (and `save_zoo` then writes the same bytes as an
    uninterrupted run). Returns the assembled zoo record (`zoo_record`)."""
    arch = arch or generic.arch
    index = {c: i for i, c in enumerate(generic.classes)}
    parts_dir.mkdir(parents=True, exist_ok=True)
    thetas, accs, secs = [], [], []
    for task in tqdm(tasks, desc="finetune", unit="p-Model"):
        part = parts_dir / f"{task['id']}.pt"
        if not part.exists():
            start = time.perf_counter()
            idx = [index[c] for c in task["classes"]]
            theta, acc = finetune_task(generic, images.train_x, images.train_y, idx, cfg,
                                       seed=derive_seed(seed, "finetune", task["id"]), device=device,
                                       features=features, arch=arch)
            if not torch.isfinite(theta).all():
                raise FloatingPointError(f"fine-tuning task {task['id']} produced NaN/inf weights; lower the lr")
            artifacts.write_timing(part, seconds=time.perf_counter() - start)  # before the part: it marks done
            artifacts.save_torch({"theta": theta, "train_acc": acc}, part)
        rec = artifacts.load_torch(part)
        thetas.append(rec["theta"])
        accs.append(rec["train_acc"])
        secs.append(artifacts.read_timing(part).get("seconds", rec.get("seconds", float("nan"))))
    return zoo_record(arch.name, [t["id"] for t in tasks], [t["classes"] for t in tasks],
                      torch.stack(thetas) if thetas else torch.zeros(0, arch.layout(10).n_params), accs,
                      config=dict(cfg.__dict__), seconds=secs)

# ----------------------------------------------------------------------------- the zoo record: its one format
# A fine-tuned record (a shard, a merged split, the zoo) is made, merged, saved and loaded only here.
# The file holds ZOO_FIELDS and nothing that varies from run to run; the per-p-Model wall-clock seconds
# live in memory as `seconds` and on disk in the `<file>.timing.json` sidecar.

ZOO_FIELDS = ("arch", "config", "task_ids", "classes", "theta", "train_acc")


def zoo_record(arch: str | None, task_ids: list[str], classes: list[list[str]], theta: Tensor, train_acc, *,
               config: dict | None = None, seconds=None) -> dict:
    """theta [n, n_params]; train_acc and seconds one per p-Model (seconds may be None: unknown)."""
    return {"arch": arch, "config": config, "task_ids": list(task_ids), "classes": [list(c) for c in classes],
            "theta": theta, "train_acc": torch.as_tensor(train_acc, dtype=torch.float64),
            "seconds": None if seconds is None else torch.as_tensor(seconds, dtype=torch.float64)}


def save_zoo(record: dict, path) -> None:
    """The record's ZOO_FIELDS to `path` (byte-reproducible), its seconds to `<path>.timing.json`."""
    if record.get("seconds") is not None:
        artifacts.write_timing(path, seconds=[float(s) for s in record["seconds"]])
    else:  # unknown: no stale sidecar of an earlier build may speak for this one
        artifacts.timing_path(path).unlink(missing_ok=True)
    artifacts.save_torch({k: record.get(k) for k in ZOO_FIELDS}, path)


def load_zoo(path) -> dict:
    """A record written by `save_zoo`, with `seconds` from its sidecar (None if it has none; a file written
    before sidecars existed keeps the seconds it holds)."""
    d = artifacts.load_torch(path, what="a p-Model zoo from `nndiff finetune` or `nndiff merge`",
                             keys=("task_ids", "classes", "theta", "train_acc"))
    seconds = artifacts.read_timing(path).get("seconds", d.get("seconds"))
    return zoo_record(d.get("arch"), d["task_ids"], d["classes"], d["theta"], d["train_acc"], config=d.get("config"),
                      seconds=seconds)


def merge_zoo(records: list[dict]) -> dict:
    """Concatenate records (shards) in order; they must share the arch. Seconds are kept if every one has them."""
    if not records:
        raise ValueError("nothing to merge: give at least one fine-tuned record")
    archs = list(dict.fromkeys(r["arch"] for r in records))
    if len(archs) > 1:
        raise ValueError(f"cannot merge records of different archs {archs}")
    secs = [r.get("seconds") for r in records]
    return zoo_record(archs[0], [t for r in records for t in r["task_ids"]], [c for r in records for c in r["classes"]],
                      torch.cat([r["theta"] for r in records]), torch.cat([r["train_acc"] for r in records]),
                      config=records[0].get("config"),
                      seconds=None if any(s is None for s in secs) else torch.cat(secs))

# ----------------------------------------------------------------------------- stages (`nndiff stage1`, `features`,
# `finetune`, `merge`, `oracle`)


def pmodel_arch(generic: Generic, name: str | None = None) -> PModelArch:
    """The p-Model arch: `name` when given (e.g. a LoRA variant of the generic's arch), else the generic's."""
    from benchmarks.pmodels import get_arch
    arch = get_arch(name) if name else generic.arch
    if arch.base != generic.arch.name:
        raise ValueError(f"p-Model arch {arch.name!r} starts from a {arch.base!r} generic model, got {generic.arch.name!r}")
    return arch


def load_features(path, split: str) -> Tensor | None:
    """The `split` ("train" or "test") of a file of `nndiff features`; None without a file (a full-network arch)."""
    return artifacts.load_torch(path, what="backbone features from `nndiff features`", keys=("train", "test"))[split] \
        if path else None


def run_stage1(images_path, arch_name: str, cfg: Stage1Config, *, seed: int, device: torch.device, out) -> Generic:
    """`nndiff stage1`: train the generic model, score it on the test split, save it with its timing sidecar."""
    from benchmarks.datasets import ImageData
    from benchmarks.pmodels import get_arch
    data, arch = ImageData.load(images_path), get_arch(arch_name)
    feats = None if arch.train_backbone_in_stage1 else backbone_features(arch, data.train_x, device)
    start = time.perf_counter()
    generic = train_generic(arch, data, cfg, seed=seed, device=device, features=feats)
    seconds = time.perf_counter() - start
    model = generic.module().to(device)
    test = data.test_x if arch.train_backbone_in_stage1 else backbone_features(arch, data.test_x, device)
    logits = predict(model if arch.train_backbone_in_stage1 else model.fc, test)
    generic.meta["test_top1"] = 100.0 * (logits.argmax(1) == data.test_y).float().mean().item()
    artifacts.write_timing(out, seconds=seconds)
    generic.save(out)
    log.info("generic %s: train acc %.2f%%, test top-1 over %d classes %.2f%% (%.0fs) -> %s", arch.name,
             100 * generic.meta["train_acc"], len(data.classes), generic.meta["test_top1"], seconds, out)
    return generic


def write_features(images_path, generic_path, *, device: torch.device, out) -> dict[str, Tensor]:
    """`nndiff features`: the frozen backbone features of the train and test images, for a head-only arch."""
    from benchmarks.datasets import ImageData
    data, generic = ImageData.load(images_path), Generic.load(generic_path)
    feats = {"train": backbone_features(generic.arch, data.train_x, device, generic),
             "test": backbone_features(generic.arch, data.test_x, device, generic)}
    artifacts.save_torch(feats, out)
    log.info("features %s: train %s, test %s -> %s", generic.arch.name, tuple(feats["train"].shape),
             tuple(feats["test"].shape), out)
    return feats


def run_finetune(images_path, generic_path, tasks_path, cfg: FinetuneConfig, *, split: str, shard: int, n_shards: int,
                 seed: int, device: torch.device, out, features_path=None, arch_name: str | None = None) -> dict:
    """`nndiff finetune`: one shard (every `n_shards`-th task from `shard`) of a split into p-Models. Finished
    p-Models wait in `<out>.parts` until the shard is whole, so a killed run resumes where it stopped."""
    import shutil

    from benchmarks.datasets import ImageData
    from benchmarks.tasks import get_split, load_tasks
    data, generic = ImageData.load(images_path), Generic.load(generic_path)
    tasks = get_split(load_tasks(tasks_path), split)[shard::n_shards]
    parts = Path(str(out) + ".parts")
    start = time.time()
    record = finetune_tasks(generic, data, tasks, cfg, seed=seed, device=device, parts_dir=parts,
                            features=load_features(features_path, "train"), arch=pmodel_arch(generic, arch_name))
    save_zoo(record, out)  # seconds per p-Model go to <out>.timing.json
    shutil.rmtree(parts, ignore_errors=True)
    n = len(tasks)
    log.info("fine-tuned %d p-Models in %.1fs (%.1f per minute); mean train acc %.2f%% -> %s", n,
             time.time() - start, 60 * n / max(time.time() - start, 1e-9),
             100 * record["train_acc"].mean().item() if n else float("nan"), out)
    return record


def merge_shards(paths: list, out) -> dict:
    """`nndiff merge`: the shards of `nndiff finetune`, concatenated in order, as one zoo file."""
    merged = merge_zoo([load_zoo(p) for p in paths])
    save_zoo(merged, out)
    log.info("merged %d shards: %d p-Models -> %s", len(paths), len(merged["task_ids"]), out)
    return merged


def write_oracle(finetuned, tasks_path, split: str, out) -> None:
    """`nndiff oracle`: the fine-tuned p-Models of a split as vectors for the evaluation engine (the upper bound),
    with their mean fine-tuning seconds as the timing sidecar."""
    from benchmarks.tasks import get_split, load_tasks
    rec = load_zoo(finetuned)
    wanted = [t["id"] for t in get_split(load_tasks(tasks_path), split)]
    pos = {t: i for i, t in enumerate(rec["task_ids"])}
    missing = [t for t in wanted if t not in pos]
    if missing:
        raise ValueError(f"{len(missing)} task(s) of split {split!r} were not fine-tuned, e.g. {missing[:3]}")
    rows = [pos[t] for t in wanted]
    if rec["seconds"] is not None:  # fine-tuning seconds per p-Model of these tasks, mean
        artifacts.write_timing(out, seconds=float(rec["seconds"][rows].mean()) if rows else 0.0)
    artifacts.save_torch({"method": "oracle", "split": split, "task_ids": wanted, "output_space": "task",
                          "theta": rec["theta"][rows]}, out)
