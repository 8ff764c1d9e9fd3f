"""Raw datasets -> uint8 32x32 images with class names (and superclasses); reproduces Tina Appendix A.1.

Tina (A.1, data preparation) trains on CIFAR-100, Mini-ImageNet and Caltech-101, every image at 32x32:
CIFAR-100 uses its official train/test split (and its 20 coarse superclasses for the OOD tasks),
Mini-ImageNet its 500/100 images per class, and Caltech-101, which has no official split, is split 8:2
per class. Every loader returns the same `ImageData`: uint8 `[N, 3, 32, 32]` images, int64 labels that
index `classes`, and human-readable class names (text encoders condition on them).

Loaders never special-case a machine's folders: they read the official on-disk format (CIFAR-100
pickles, torchvision's Caltech-101 layout, an ImageFolder tree), found through `resolve_root`.
"""
from __future__ import annotations

import csv
import inspect
import math
import os
import pickle
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from benchmarks.artifacts import load_torch, save_torch

SIZE = 32  # Tina A.1: every dataset at 32x32
SPLIT_TRAIN_FRACTION = 0.8  # Tina A.1: Caltech-101 split 8:2 per class


# ---------------------------------------------------------------------------------------------------------
# Errors and the container
# ---------------------------------------------------------------------------------------------------------


class MissingDataError(FileNotFoundError):
    """A dataset's files are not where the config points; the message shows the layout expected."""


@dataclass
class ImageData:
    """One dataset at 32x32: train and test images, labels, class names (+ superclass per class)."""

    train_x: torch.Tensor  # uint8 [N, 3, 32, 32]
    train_y: torch.Tensor  # int64 [N], index into classes
    test_x: torch.Tensor  # uint8 [M, 3, 32, 32]
    test_y: torch.Tensor  # int64 [M]
    classes: list[str]  # human-readable, unique; label i means classes[i]
    superclasses: list[str] | None = None  # superclasses[i] = superclass of class i (CIFAR-100 coarse)
    meta: dict = field(default_factory=dict)  # {"kind", "root", "n_train", "n_test", ...}, JSON-able

    def __post_init__(self) -> None:
        self.classes = [str(c) for c in self.classes]
        if self.superclasses is not None:
            self.superclasses = [str(s) for s in self.superclasses]
        _validate(self)

    def __repr__(self) -> str:
        return (f"ImageData(kind={self.meta.get('kind')!r}, classes={len(self.classes)}, "
                f"train={tuple(self.train_x.shape)}, test={tuple(self.test_x.shape)}, "
                f"superclasses={None if self.superclasses is None else len(set(self.superclasses))})")

    def save(self, path: str | os.PathLike) -> None:
        """Atomic; plain tensors, lists and dicts so `torch.load(weights_only=True)` reads it back."""
        save_torch({"train_x": self.train_x, "train_y": self.train_y, "test_x": self.test_x,
                    "test_y": self.test_y, "classes": list(self.classes),
                    "superclasses": None if self.superclasses is None else list(self.superclasses),
                    "meta": dict(self.meta)}, path)

    @classmethod
    def load(cls, path: str | os.PathLike) -> ImageData:
        state = load_torch(path, what="an images file from `nndiff prepare`",
                           keys=("train_x", "train_y", "test_x", "test_y", "classes", "superclasses", "meta"))
        return cls(train_x=state["train_x"], train_y=state["train_y"], test_x=state["test_x"],
                   test_y=state["test_y"], classes=state["classes"], superclasses=state["superclasses"],
                   meta=state["meta"])

    def class_index(self) -> dict[str, int]:
        """Class name -> label."""
        return {name: i for i, name in enumerate(self.classes)}


def _validate(data: ImageData) -> None:
    """Shapes, dtypes, label range and unique names; a ValueError says which one is off."""
    kind = data.meta.get("kind", "?")
    for split in ("train", "test"):
        x, y = getattr(data, f"{split}_x"), getattr(data, f"{split}_y")
        if not isinstance(x, torch.Tensor) or x.dtype != torch.uint8 or x.ndim != 4 \
                or tuple(x.shape[1:]) != (3, SIZE, SIZE):
            desc = f"{x.dtype} {tuple(x.shape)}" if isinstance(x, torch.Tensor) else type(x).__name__
            raise ValueError(f"{kind}: {split}_x must be uint8 [N, 3, {SIZE}, {SIZE}], got {desc}")
        if not isinstance(y, torch.Tensor) or y.dtype != torch.int64 or y.ndim != 1 or len(y) != len(x):
            desc = f"{y.dtype} {tuple(y.shape)}" if isinstance(y, torch.Tensor) else type(y).__name__
            raise ValueError(f"{kind}: {split}_y must be int64 [{len(x)}], got {desc}")
        if len(y) and (int(y.min()) < 0 or int(y.max()) >= len(data.classes)):
            raise ValueError(f"{kind}: {split}_y must lie in [0, {len(data.classes)}), "
                             f"got [{int(y.min())}, {int(y.max())}]")
    if len(data.train_x) == 0:
        raise ValueError(f"{kind}: no training images")
    if not data.classes or any(not c for c in data.classes):
        raise ValueError(f"{kind}: class names must be non-empty strings, got {data.classes[:5]}...")
    dup = sorted({c for c in data.classes if data.classes.count(c) > 1})
    if dup:
        raise ValueError(f"{kind}: class names must be unique; repeated: {dup}")
    if data.superclasses is not None and len(data.superclasses) != len(data.classes):
        raise ValueError(f"{kind}: need one superclass per class ({len(data.classes)}), "
                         f"got {len(data.superclasses)}")


def _finish(kind: str, root: Path | None, train_x: np.ndarray | torch.Tensor, train_y, test_x, test_y,
            classes: list[str], superclasses: list[str] | None = None, **meta) -> ImageData:
    """Wrap arrays into a validated ImageData with the common meta fields."""
    train_x, test_x = torch.as_tensor(train_x), torch.as_tensor(test_x)
    train_y = torch.as_tensor(np.asarray(train_y, dtype=np.int64)).reshape(-1)
    test_y = torch.as_tensor(np.asarray(test_y, dtype=np.int64)).reshape(-1)
    meta = {"kind": kind, "root": None if root is None else str(root), "n_train": len(train_x),
            "n_test": len(test_x), "n_classes": len(classes), **meta}
    return ImageData(train_x.contiguous(), train_y, test_x.contiguous(), test_y, list(classes),
                     superclasses, meta)


# ---------------------------------------------------------------------------------------------------------
# Where the data lives
# ---------------------------------------------------------------------------------------------------------


def resolve_root(data_root: str | None, root: str) -> Path:
    """`root` relative to data_root; env var NNDIFF_DATA_ROOT overrides data_root; absolute `root` used as is.

    With neither data_root nor NNDIFF_DATA_ROOT set, a relative `root` is relative to the working directory.
    """
    path = Path(root).expanduser()
    if path.is_absolute():
        return path
    base = os.environ.get("NNDIFF_DATA_ROOT") or data_root
    return Path(base).expanduser() / path if base else path


def _missing(what: str, path: Path, layout: str, hint: str) -> MissingDataError:
    return MissingDataError(f"{what}: {path} not found. Expected layout:\n{layout}\n{hint}")


# ---------------------------------------------------------------------------------------------------------
# Image decoding
# ---------------------------------------------------------------------------------------------------------


def _to_32(img: Image.Image) -> np.ndarray:
    """PIL image -> uint8 HWC [32, 32, 3]: RGB (Caltech has grayscale images), bicubic resize if needed."""
    img = img.convert("RGB")
    if img.size != (SIZE, SIZE):
        img = img.resize((SIZE, SIZE), Image.BICUBIC)
    return np.asarray(img, dtype=np.uint8)


def _load_32(path: str) -> np.ndarray:
    with Image.open(path) as img:
        return _to_32(img)


def _stack_chw(images: list[np.ndarray]) -> torch.Tensor:
    """List of HWC uint8 arrays -> uint8 [N, 3, 32, 32] with one transpose."""
    if not images:
        return torch.empty(0, 3, SIZE, SIZE, dtype=torch.uint8)
    return torch.from_numpy(np.ascontiguousarray(np.stack(images).transpose(0, 3, 1, 2)))


# ---------------------------------------------------------------------------------------------------------
# CIFAR-100 (official python pickles; torchvision downloads them)
# ---------------------------------------------------------------------------------------------------------

CIFAR_DIR = "cifar-100-python"
CIFAR_LAYOUT = f"""  <root>/
    {CIFAR_DIR}/
      train   pickle: data [50000, 3072] uint8, fine_labels, coarse_labels
      test    pickle: data [10000, 3072] uint8, fine_labels, coarse_labels
      meta    pickle: fine_label_names, coarse_label_names"""


def _read_pickle(path: Path) -> dict:
    with open(path, "rb") as f:
        entry = pickle.load(f, encoding="latin1")  # as torchvision: the official files are Python 2 pickles
    return {k.decode() if isinstance(k, bytes) else k: v for k, v in entry.items()}


def _names(values) -> list[str]:
    return [v.decode() if isinstance(v, bytes) else str(v) for v in values]


def load_cifar100(root: Path, *, seed: int = 0, download: bool = False) -> ImageData:
    """CIFAR-100, official split, 100 fine classes with their 20 coarse superclasses.

    torchvision's CIFAR100 only exposes fine labels, so after it downloads (and md5-checks) the archive we
    read the same official pickles ourselves to get the coarse labels too. `seed` is unused (fixed split).
    """
    root = Path(root)
    if download:
        import torchvision

        torchvision.datasets.CIFAR100(str(root), train=True, download=True)  # fetches + extracts all 3 files
    folder = root / CIFAR_DIR
    for name in ("train", "test", "meta"):
        if not (folder / name).is_file():
            raise _missing("cifar100", folder / name, CIFAR_LAYOUT,
                           "torchvision's CIFAR100 downloads it with download=True where a network exists.")
    meta = _read_pickle(folder / "meta")
    fine_names, coarse_names = _names(meta["fine_label_names"]), _names(meta["coarse_label_names"])

    splits = {}
    for name in ("train", "test"):
        entry = _read_pickle(folder / name)
        data = np.asarray(entry["data"], dtype=np.uint8)
        if data.ndim != 2 or data.shape[1] != 3 * SIZE * SIZE:
            raise ValueError(f"cifar100: {folder / name} data must be [N, 3072] uint8, got {data.shape}")
        # Rows are 1024 R, 1024 G, 1024 B values: a reshape gives CHW directly (torchvision then
        # transposes to HWC for PIL; we keep CHW), no per-image loop.
        x = data.reshape(-1, 3, SIZE, SIZE)
        splits[name] = (x, np.asarray(entry["fine_labels"]), np.asarray(entry["coarse_labels"]))

    # superclasses[i] = coarse name of fine class i; each fine class must map to one coarse class.
    fine = np.concatenate([splits["train"][1], splits["test"][1]])
    coarse = np.concatenate([splits["train"][2], splits["test"][2]])
    coarse_of = {}
    for f_label, c_label in set(zip(fine.tolist(), coarse.tolist())):
        if coarse_of.setdefault(f_label, c_label) != c_label:
            raise ValueError(f"cifar100: fine class {fine_names[f_label]!r} has several coarse labels")
    superclasses = [coarse_names[coarse_of[i]] if i in coarse_of else "" for i in range(len(fine_names))]
    if "" in superclasses:
        absent = [fine_names[i] for i, s in enumerate(superclasses) if not s]
        raise ValueError(f"cifar100: fine classes without any image: {absent}")

    (train_x, train_y, _), (test_x, test_y, _) = splits["train"], splits["test"]
    return _finish("cifar100", root, train_x, train_y, test_x, test_y, fine_names, superclasses)


# ---------------------------------------------------------------------------------------------------------
# ImageFolder trees (Mini-ImageNet-32 and user data)
# ---------------------------------------------------------------------------------------------------------

FOLDER_LAYOUT = """  <root>/
    classes.tsv          optional: wnid<TAB>name[<TAB>...] with a header row; else folder names are used
    train/<class>/*.png  (any PIL-readable image; resized to 32x32 if needed)
    test/<class>/*.png   (or val/)"""


def _read_classes_tsv(path: Path) -> tuple[dict[str, str], dict[str, dict[str, str]]]:
    """classes.tsv -> (folder -> name, folder -> extra columns). Names kept as written ("house_finch")."""
    with open(path, newline="") as f:
        rows = list(csv.reader(f, delimiter="\t"))
    if not rows or len(rows[0]) < 2:
        raise ValueError(f"{path}: expected a header row 'wnid<TAB>name[<TAB>...]', got {rows[:1]}")
    header = [h.strip() for h in rows[0]]
    names, extra = {}, {}
    for row in rows[1:]:
        if not row or not row[0].strip():
            continue
        if len(row) < 2:
            raise ValueError(f"{path}: row {row} has no name column")
        names[row[0].strip()] = row[1].strip()
        extra[row[0].strip()] = {h: v.strip() for h, v in zip(header[2:], row[2:])}
    return names, extra


def _load_folder(root: Path, kind: str) -> ImageData:
    """`root/train/<class>/*` and `root/test/<class>/*` (or `val/`), class names from classes.tsv if present.

    Labels follow torchvision's ImageFolder: sorted folder names. Test folders must be a subset of the
    train folders.
    """
    from torchvision.datasets import ImageFolder

    root = Path(root)
    test_dir = root / "test" if (root / "test").is_dir() else root / "val"
    for split_dir in (root / "train", test_dir):
        if not split_dir.is_dir():
            raise _missing(kind, split_dir, FOLDER_LAYOUT, "Nothing to download: point `root` at the folder.")

    train = ImageFolder(str(root / "train"), loader=_load_32)
    test = ImageFolder(str(test_dir), loader=_load_32)
    unknown = sorted(set(test.classes) - set(train.classes))
    if unknown:
        raise ValueError(f"{kind}: {test_dir} has classes missing from {root / 'train'}: {unknown[:10]}")

    folders = train.classes
    extra_meta = {}
    tsv = root / "classes.tsv"
    if tsv.is_file():
        names, extra = _read_classes_tsv(tsv)
        missing = [c for c in folders if c not in names]
        if missing:
            raise ValueError(f"{kind}: {tsv} has no row for folders {missing[:10]}")
        classes = [names[c] for c in folders]
        columns = sorted({h for c in folders for h in extra[c]})
        if columns:  # e.g. Mini-ImageNet's fewshot_split, useful for unseen-class experiments
            extra_meta["class_info"] = {h: [extra[c].get(h, "") for c in folders] for h in columns}
    else:
        classes = list(folders)

    # One PIL decode per file (ImageFolder's loader hook): Mini-ImageNet-32's 60k PNGs take 10-16 s on 2 cores.
    train_x = _stack_chw([train.loader(p) for p, _ in train.samples])
    test_x = _stack_chw([test.loader(p) for p, _ in test.samples])
    test_map = [train.class_to_idx[c] for c in test.classes]  # test folder index -> train label
    train_y = [t for _, t in train.samples]
    test_y = [test_map[t] for _, t in test.samples]
    return _finish(kind, root, train_x, train_y, test_x, test_y, classes, None, folders=list(folders),
                   test_split=test_dir.name, **extra_meta)


def load_imagefolder(root: Path, *, seed: int = 0, download: bool = False) -> ImageData:
    """A user dataset in ImageFolder layout (see FOLDER_LAYOUT). The split is on disk (`seed` unused) and
    there is nothing to download (`download` ignored)."""
    return _load_folder(root, "imagefolder")


def load_miniimagenet(root: Path, *, seed: int = 0, download: bool = False) -> ImageData:
    """Mini-ImageNet at 32x32 in ImageFolder layout; names from classes.tsv, kept as written ("house_finch")
    so they match the CLIP anchor files. 500 train / 100 test images per class (Tina A.1)."""
    return _load_folder(root, "miniimagenet")


# ---------------------------------------------------------------------------------------------------------
# Caltech-101 (torchvision layout), split 8:2 per class
# ---------------------------------------------------------------------------------------------------------

CALTECH_LAYOUT = """  <root>/
    caltech101/
      101_ObjectCategories/
        BACKGROUND_Google/   (dropped by torchvision: not a class)
        accordion/image_0001.jpg, image_0002.jpg, ...
        ...                  101 category folders"""


def split_per_class(y: torch.Tensor, n_classes: int, seed: int,
                    train_fraction: float = SPLIT_TRAIN_FRACTION) -> tuple[torch.Tensor, torch.Tensor]:
    """Deterministic per-class split: permute each class's indices, first ceil(fraction * n) to train.

    Args:
        y: int64 [N] labels.
    Returns:
        (train_idx, test_idx), each int64 and sorted, together a partition of range(N).
    """
    g = torch.Generator().manual_seed(seed)
    train_idx, test_idx = [], []
    for c in range(n_classes):  # class order fixed, so one generator gives the same split every time
        idx = torch.nonzero(y == c).flatten()
        perm = idx[torch.randperm(len(idx), generator=g)]
        n_train = math.ceil(train_fraction * len(idx))
        train_idx.append(perm[:n_train])
        test_idx.append(perm[n_train:])
    return torch.cat(train_idx).sort().values, torch.cat(test_idx).sort().values


def load_caltech101(root: Path, *, seed: int = 0, download: bool = False) -> ImageData:
    """Caltech-101 through torchvision (101 categories), RGB at 32x32, split 8:2 per class seeded by `seed`."""
    import torchvision

    root = Path(root)
    categories_dir = root / "caltech101" / "101_ObjectCategories"  # torchvision appends "caltech101"
    if not download and not categories_dir.is_dir():
        # Checked before torchvision, which would create <root>/caltech101 as a side effect.
        raise _missing("caltech101", categories_dir, CALTECH_LAYOUT,
                       "torchvision's Caltech101 downloads it with download=True where a network exists.")
    ds = torchvision.datasets.Caltech101(str(root), target_type="category", download=download)
    images, labels = [], []
    for i in range(len(ds)):
        img, label = ds[i]  # PIL image as stored (some are grayscale)
        images.append(_to_32(img))
        img.close()
        labels.append(label)
    x = _stack_chw(images)  # [N, 3, 32, 32]
    y = torch.tensor(labels, dtype=torch.int64)
    train_idx, test_idx = split_per_class(y, len(ds.categories), seed)
    return _finish("caltech101", root, x[train_idx], y[train_idx], x[test_idx], y[test_idx],
                   list(ds.categories), None, split_seed=seed, split="8:2 per class",
                   n_images=len(y))


# ---------------------------------------------------------------------------------------------------------
# Synthetic (project-made, no files): tests and the smoke profile
# ---------------------------------------------------------------------------------------------------------

# Distinct common nouns, so text encoders see meaningful class names.
NOUNS = (
    "apple", "bicycle", "castle", "dolphin", "elephant", "forest", "guitar", "hammer", "island", "jacket",
    "kettle", "lantern", "mountain", "notebook", "orange", "piano", "quilt", "rabbit", "sunflower", "tractor",
    "umbrella", "violin", "whale", "yacht", "zebra", "anchor", "bridge", "camel", "desk", "eagle",
    "feather", "giraffe", "helmet", "igloo", "jellyfish", "kangaroo", "ladder", "mushroom", "necklace", "owl",
    "pumpkin", "rocket", "scissors", "tiger", "volcano", "windmill", "balloon", "candle", "drum", "envelope",
    "fountain", "glove", "honey", "kite", "lemon", "mirror", "nest", "octopus", "parrot", "rainbow",
    "saddle", "teapot", "tulip", "wagon", "bottle", "cactus", "dragonfly", "fence", "garden", "harbor",
    "lighthouse", "lobster", "motorcycle", "oak", "penguin", "river", "shark", "snail", "spider", "squirrel",
    "strawberry", "telescope", "tomato", "train", "turtle", "whistle", "wolf", "bread", "chair", "clock",
    "cloud", "crab", "crown", "diamond", "fox", "frog", "horse", "leaf", "lion", "mouse",
)


def load_synthetic(root: Path | None = None, *, seed: int = 0, download: bool = False, n_classes: int = 20,
                   n_train: int = 60, n_test: int = 20, n_superclasses: int = 4) -> ImageData:
    """Seeded class templates + noise; a tiny CNN (or nearest class mean) learns it in a few epochs.

    Each superclass has a base colour; each class shifts it and adds a low-frequency spatial pattern
    (a random 4x4 RGB grid upsampled to 32x32); an image is its class template plus pixel noise and a
    per-image brightness offset, clipped to uint8. Classes in one superclass share a colour, so the
    superclass structure is visible in the pixels. `n_train` / `n_test` are per class.

    Args:
        n_superclasses: 0 gives superclasses=None; class i belongs to group i % n_superclasses.
    """
    if not 1 <= n_classes <= len(NOUNS):
        raise ValueError(f"synthetic: n_classes must be in [1, {len(NOUNS)}], got {n_classes}")
    if n_train < 1 or n_test < 0 or n_superclasses < 0:
        raise ValueError(f"synthetic: need n_train >= 1, n_test >= 0, n_superclasses >= 0; "
                         f"got {n_train}, {n_test}, {n_superclasses}")
    g = torch.Generator().manual_seed(seed)
    groups = torch.arange(n_classes) % max(n_superclasses, 1)
    base = 60 + 136 * torch.rand(max(n_superclasses, 1), 3, 1, 1, generator=g)  # group colour in [60, 196]
    # Amplitudes chosen so the G.pt CNN (GAP head) reaches ~50-70% test accuracy on 20 classes in 10
    # epochs (chance 5%) while nearest class mean on raw pixels is ~100%: learnable, not instant.
    shift = 60 * (2 * torch.rand(n_classes, 3, 1, 1, generator=g) - 1)  # class colour within the group
    grid = torch.randn(n_classes, 3, 4, 4, generator=g)
    pattern = 60 * F.interpolate(grid, size=(SIZE, SIZE), mode="bilinear", align_corners=False)
    templates = base[groups] + shift + pattern  # [n_classes, 3, 32, 32]

    def sample(per_class: int) -> tuple[torch.Tensor, torch.Tensor]:
        y = torch.arange(n_classes).repeat_interleave(per_class)  # [n]
        noise = 30 * torch.randn(len(y), 3, SIZE, SIZE, generator=g)
        brightness = 15 * torch.randn(len(y), 1, 1, 1, generator=g)
        x = (templates[y] + noise + brightness).round().clamp(0, 255).to(torch.uint8)
        return x, y

    train_x, train_y = sample(n_train)
    test_x, test_y = sample(n_test)
    superclasses = [f"group-{int(k)}" for k in groups] if n_superclasses else None
    return _finish("synthetic", None if root is None else Path(root), train_x, train_y, test_x, test_y,
                   list(NOUNS[:n_classes]), superclasses, seed=seed, n_superclasses=n_superclasses)


# ---------------------------------------------------------------------------------------------------------
# Registry
# ---------------------------------------------------------------------------------------------------------

DATASETS: dict[str, Callable[..., ImageData]] = {
    "cifar100": load_cifar100,
    "miniimagenet": load_miniimagenet,
    "caltech101": load_caltech101,
    "imagefolder": load_imagefolder,
    "synthetic": load_synthetic,
}


def prepare(kind: str, root: Path | None, *, seed: int = 0, download: bool = False, **options) -> ImageData:
    """Load dataset `kind` from `root` (see `resolve_root`) as validated 32x32 uint8 `ImageData`.

    Args:
        kind: a key of DATASETS.
        root: the dataset's folder; unused by "synthetic".
        seed: split seed (Caltech-101) or generator seed (synthetic); fixed-split datasets ignore it.
        download: let torchvision download CIFAR-100 / Caltech-101 where a network exists.
        options: loader-specific keyword options (e.g. synthetic n_classes).
    """
    if kind not in DATASETS:
        raise ValueError(f"unknown dataset kind {kind!r}; choose one of {sorted(DATASETS)}")
    params = inspect.signature(DATASETS[kind]).parameters
    valid = sorted(n for n, p in params.items() if p.kind == p.KEYWORD_ONLY and n not in ("seed", "download"))
    unknown = sorted(set(options) - set(valid))
    if unknown:
        raise ValueError(f"{kind}: unknown options {unknown}; valid options: {valid or 'none'}")
    return DATASETS[kind](None if root is None else Path(root), seed=seed, download=download, **options)
