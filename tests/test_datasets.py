"""Loaders read tiny files written in each dataset's real on-disk format; synthetic data is learnable."""
from __future__ import annotations

import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from benchmarks.datasets import (DATASETS, NOUNS, ImageData, MissingDataError, prepare, resolve_root,
                                 split_per_class)

REPO = Path(__file__).resolve().parent.parent
SHARED = Path(os.environ.get("NNDIFF_SHARED_DATASETS", REPO.parent / "shared" / "datasets"))


# ---------------------------------------------------------------------------------------------------------
# Tiny files in the real formats
# ---------------------------------------------------------------------------------------------------------


def write_cifar100(root: Path, n_train: int = 12, n_test: int = 6) -> dict:
    """The official `cifar-100-python` trio with 3 fine classes in 2 coarse classes."""
    rng = np.random.default_rng(0)
    fine_names, coarse_names = ["apple", "maple_tree", "oak_tree"], ["fruit_and_vegetables", "trees"]
    coarse_of = [0, 1, 1]
    folder = root / "cifar-100-python"
    folder.mkdir(parents=True)
    arrays = {}
    for name, n in (("train", n_train), ("test", n_test)):
        data = rng.integers(0, 256, size=(n, 3072), dtype=np.uint8)
        fine = [i % 3 for i in range(n)]
        entry = {"data": data, "fine_labels": fine, "coarse_labels": [coarse_of[f] for f in fine],
                 "filenames": [f"img_{i}.png" for i in range(n)], "batch_label": name}
        with open(folder / name, "wb") as f:
            pickle.dump(entry, f)
        arrays[name] = (data, fine)
    with open(folder / "meta", "wb") as f:
        pickle.dump({"fine_label_names": fine_names, "coarse_label_names": coarse_names}, f)
    return arrays


def write_png(path: Path, size: tuple[int, int], colour: tuple[int, int, int], mode: str = "RGB") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, colour).convert(mode).save(path)


def write_imagefolder(root: Path, test_name: str = "test", tsv: bool = True) -> None:
    wnids = {"n02000001": "house_finch", "n01000001": "green_mamba", "n03000001": "iPod"}
    for k, wnid in enumerate(sorted(wnids)):
        colour = (40 * k, 100, 200 - 40 * k)
        for i in range(3):
            size = (32, 32) if i else (84, 60)  # some images need a resize
            write_png(root / "train" / wnid / f"{wnid}_{i}.png", size, colour, "L" if k == 2 and i else "RGB")
        write_png(root / test_name / wnid / f"{wnid}_t.png", (32, 32), colour)
    if tsv:
        lines = ["wnid\tname\tfewshot_split"] + [f"{w}\t{n}\ttrain" for w, n in wnids.items()]
        (root / "classes.tsv").write_text("\n".join(lines) + "\n")


CALTECH_COUNTS = {"Faces": 10, "accordion": 5, "brain": 7, "yin_yang": 1}


def write_caltech(root: Path) -> None:
    """torchvision's layout: <root>/caltech101/101_ObjectCategories/<cat>/image_0001.jpg, with background."""
    cats = root / "caltech101" / "101_ObjectCategories"
    for cat, n in {**CALTECH_COUNTS, "BACKGROUND_Google": 4}.items():
        for i in range(1, n + 1):
            path = cats / cat / f"image_{i:04d}.jpg"
            path.parent.mkdir(parents=True, exist_ok=True)
            # Different sizes, one grayscale, and a per-image colour so the split can be traced.
            Image.new("RGB", (40 + i, 30), (i * 20 % 256, len(cat) * 10, 50)).convert(
                "L" if cat == "brain" else "RGB").save(path, quality=95)


def check_shapes(d: ImageData) -> None:
    assert d.train_x.dtype == torch.uint8 and d.test_x.dtype == torch.uint8
    assert d.train_x.shape[1:] == (3, 32, 32) and d.test_x.shape[1:] == (3, 32, 32)
    assert d.train_y.dtype == torch.int64 and d.test_y.dtype == torch.int64
    assert len(d.train_y) == len(d.train_x) == d.meta["n_train"]
    assert len(d.test_y) == len(d.test_x) == d.meta["n_test"]
    assert int(d.train_y.max()) < len(d.classes) and len(set(d.classes)) == len(d.classes)


# ---------------------------------------------------------------------------------------------------------
# CIFAR-100
# ---------------------------------------------------------------------------------------------------------


def test_cifar100_pickles(tmp_path):
    arrays = write_cifar100(tmp_path)
    d = prepare("cifar100", tmp_path)
    check_shapes(d)
    assert d.classes == ["apple", "maple_tree", "oak_tree"]
    assert d.superclasses == ["fruit_and_vegetables", "trees", "trees"]
    meta = (d.meta["kind"], d.meta["root"], d.meta["n_train"], d.meta["n_test"])
    assert meta == ("cifar100", str(tmp_path), 12, 6)
    data, fine = arrays["train"]
    # Row layout is 1024 R, 1024 G, 1024 B: pixel (row 1, col 2) of channel 2 is at 2048 + 32 + 2.
    assert int(d.train_x[5, 2, 1, 2]) == int(data[5, 2048 + 32 + 2])
    assert torch.equal(d.train_x.reshape(12, -1), torch.from_numpy(data))
    assert d.train_y.tolist() == fine


def test_cifar100_missing_names_files_and_download(tmp_path):
    with pytest.raises(MissingDataError) as err:
        prepare("cifar100", tmp_path / "nowhere")
    msg = str(err.value)
    assert str(tmp_path / "nowhere" / "cifar-100-python" / "train") in msg
    assert "meta" in msg and "download=True" in msg
    assert isinstance(err.value, FileNotFoundError)


# ---------------------------------------------------------------------------------------------------------
# ImageFolder / Mini-ImageNet
# ---------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["miniimagenet", "imagefolder"])
def test_imagefolder_with_classes_tsv(tmp_path, kind):
    write_imagefolder(tmp_path)
    d = prepare(kind, tmp_path)
    check_shapes(d)
    # Labels follow sorted folder names; names kept exactly as in classes.tsv (underscores, case).
    assert d.classes == ["green_mamba", "house_finch", "iPod"]
    assert d.meta["folders"] == ["n01000001", "n02000001", "n03000001"]
    assert d.meta["class_info"]["fewshot_split"] == ["train"] * 3
    assert d.superclasses is None and d.meta["kind"] == kind
    assert d.train_y.tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2] and d.test_y.tolist() == [0, 1, 2]
    # Resized 84x60 image keeps its colour; the grayscale class became 3 equal channels.
    assert d.train_x[3, :, 16, 16].tolist() == [40, 100, 160]
    gray = d.train_x[7].float()
    assert torch.equal(gray[0], gray[1]) and torch.equal(gray[1], gray[2])
    assert d.class_index()["house_finch"] == 1


def test_imagefolder_val_and_folder_names(tmp_path):
    write_imagefolder(tmp_path, test_name="val", tsv=False)
    d = prepare("imagefolder", tmp_path)
    assert d.classes == ["n01000001", "n02000001", "n03000001"] and d.meta["test_split"] == "val"


def test_imagefolder_missing_split(tmp_path):
    (tmp_path / "train" / "a").mkdir(parents=True)
    with pytest.raises(MissingDataError) as err:
        prepare("miniimagenet", tmp_path)
    assert str(tmp_path / "val") in str(err.value) and "train/<class>" in str(err.value)


# ---------------------------------------------------------------------------------------------------------
# Caltech-101
# ---------------------------------------------------------------------------------------------------------


def test_caltech_layout_split_and_seed(tmp_path):
    write_caltech(tmp_path)
    d = prepare("caltech101", tmp_path, seed=0)
    check_shapes(d)
    assert d.classes == sorted(CALTECH_COUNTS)  # BACKGROUND_Google dropped, torchvision's names kept
    assert d.meta["split_seed"] == 0 and d.meta["n_images"] == sum(CALTECH_COUNTS.values())
    for c, name in enumerate(d.classes):  # 8:2 per class, rounding up the train side
        n = CALTECH_COUNTS[name]
        assert int((d.train_y == c).sum()) == -(-8 * n // 10)
        assert int((d.test_y == c).sum()) == n - -(-8 * n // 10)

    again = prepare("caltech101", tmp_path, seed=0)
    assert torch.equal(again.train_x, d.train_x) and torch.equal(again.test_y, d.test_y)
    other = prepare("caltech101", tmp_path, seed=1)
    assert other.meta["split_seed"] == 1
    assert not torch.equal(other.train_x, d.train_x)
    assert torch.equal(torch.bincount(other.train_y), torch.bincount(d.train_y))  # same sizes, other images


def test_split_per_class_is_a_partition():
    y = torch.tensor([0, 1, 0, 2, 1, 0, 0, 2, 2, 2, 2])
    tr, te = split_per_class(y, 3, seed=3)
    assert sorted(tr.tolist() + te.tolist()) == list(range(len(y)))
    assert torch.bincount(y[tr]).tolist() == [4, 2, 4]


def test_caltech_missing_does_not_create_folders(tmp_path):
    with pytest.raises(MissingDataError) as err:
        prepare("caltech101", tmp_path / "c")
    assert str(tmp_path / "c" / "caltech101" / "101_ObjectCategories") in str(err.value)
    assert "BACKGROUND_Google" in str(err.value) and "download=True" in str(err.value)
    assert not (tmp_path / "c").exists()


# ---------------------------------------------------------------------------------------------------------
# Synthetic
# ---------------------------------------------------------------------------------------------------------


def test_synthetic_deterministic_and_seeded():
    a, b = prepare("synthetic", None, seed=0), prepare("synthetic", None, seed=0)
    check_shapes(a)
    assert a.train_x.shape == (20 * 60, 3, 32, 32) and a.test_x.shape == (20 * 20, 3, 32, 32)
    assert torch.equal(a.train_x, b.train_x) and torch.equal(a.test_x, b.test_x)
    assert a.classes == list(NOUNS[:20])
    assert a.superclasses[:5] == ["group-0", "group-1", "group-2", "group-3", "group-0"]
    assert not torch.equal(prepare("synthetic", None, seed=1).train_x, a.train_x)
    small = prepare("synthetic", None, n_classes=5, n_train=3, n_test=2, n_superclasses=0)
    assert small.superclasses is None and small.train_x.shape[0] == 15 and small.test_x.shape[0] == 10


def test_synthetic_learnable_by_nearest_class_mean():
    d = prepare("synthetic", None, seed=0)
    x_tr, x_te = d.train_x.flatten(1).float(), d.test_x.flatten(1).float()
    means = torch.stack([x_tr[d.train_y == c].mean(0) for c in range(len(d.classes))])
    acc = (torch.cdist(x_te, means).argmin(1) == d.test_y).float().mean().item()
    assert acc > 0.8  # chance is 0.05


def test_nouns_are_distinct_words():
    assert len(set(NOUNS)) == len(NOUNS) == 100


# ---------------------------------------------------------------------------------------------------------
# Container, registry, roots
# ---------------------------------------------------------------------------------------------------------


def test_save_load_round_trip(tmp_path):
    d = prepare("synthetic", None, n_classes=4, n_train=3, n_test=2)
    d.save(tmp_path / "d.pt")
    raw = torch.load(tmp_path / "d.pt", weights_only=True)
    assert set(raw) >= {"train_x", "classes", "superclasses", "meta"}
    e = ImageData.load(tmp_path / "d.pt")
    for name in ("train_x", "train_y", "test_x", "test_y"):
        assert torch.equal(getattr(e, name), getattr(d, name))
    assert (e.classes, e.superclasses, e.meta) == (d.classes, d.superclasses, d.meta)


def test_validation_errors():
    d = prepare("synthetic", None, n_classes=3, n_train=2, n_test=1)
    with pytest.raises(ValueError, match="unique"):
        ImageData(d.train_x, d.train_y, d.test_x, d.test_y, ["a", "a", "b"])
    with pytest.raises(ValueError, match=r"train_y must lie in \[0, 2\)"):
        ImageData(d.train_x, d.train_y, d.test_x, d.test_y, ["a", "b"])
    with pytest.raises(ValueError, match="uint8"):
        ImageData(d.train_x.float(), d.train_y, d.test_x, d.test_y, d.classes)
    with pytest.raises(ValueError, match="one superclass per class"):
        ImageData(d.train_x, d.train_y, d.test_x, d.test_y, d.classes, ["g"])


def test_prepare_rejects_unknown_kind_and_options():
    assert set(DATASETS) == {"cifar100", "miniimagenet", "caltech101", "imagefolder", "synthetic"}
    with pytest.raises(ValueError, match="caltech101"):
        prepare("cifar10", Path("."))
    with pytest.raises(ValueError, match="n_classes"):
        prepare("synthetic", None, n_clases=3)


def test_resolve_root(monkeypatch, tmp_path):
    monkeypatch.delenv("NNDIFF_DATA_ROOT", raising=False)
    assert resolve_root("../shared/datasets", "caltech101-32") == Path("../shared/datasets/caltech101-32")
    assert resolve_root(None, "x") == Path("x")
    assert resolve_root("/data", str(tmp_path)) == tmp_path
    monkeypatch.setenv("NNDIFF_DATA_ROOT", "/env/root")
    assert resolve_root("../shared/datasets", "caltech101-32") == Path("/env/root/caltech101-32")


# ---------------------------------------------------------------------------------------------------------
# The real offline copy (skipped where it is absent)
# ---------------------------------------------------------------------------------------------------------


@pytest.mark.skipif(not (SHARED / "caltech101-32").is_dir(), reason=f"no offline datasets at {SHARED}")
def test_real_caltech101(monkeypatch):
    monkeypatch.setenv("NNDIFF_DATA_ROOT", str(SHARED))
    d = prepare("caltech101", resolve_root(None, "caltech101-32"), seed=0)
    check_shapes(d)
    assert len(d.classes) == 101 and "BACKGROUND_Google" not in d.classes
    assert d.meta["n_train"] + d.meta["n_test"] == 8677
    assert 0.79 < d.meta["n_train"] / 8677 < 0.82
