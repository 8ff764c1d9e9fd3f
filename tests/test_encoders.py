"""Encoders share one interface and cache per (encoder, text); shipped class descriptions fit the datasets."""
from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # never wait on the network (docs/design-notes.md §8)

import re
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from benchmarks.encoders import (DESCRIBED_DATASETS, ENCODERS, CachedEncoder, Encoder, class_prompt,
                                 describe, get_encoder, load_descriptions)

REPO = Path(__file__).resolve().parent.parent
SHARED = Path(os.environ.get("NNDIFF_SHARED_DATASETS", REPO.parent / "shared" / "datasets"))
ANCHORS = SHARED / "clip-text-anchors"
CALTECH = SHARED / "caltech101-32" / "caltech101" / "101_ObjectCategories"


def cos(a: torch.Tensor, b: torch.Tensor) -> float:
    return torch.nn.functional.cosine_similarity(a, b, dim=0).item()


# ---------------------------------------------------------------------------------------------------------
# Class descriptions (Tina A.2)
# ---------------------------------------------------------------------------------------------------------


def dataset_classes(dataset: str) -> list[str]:
    """The dataset's exact class names, from the shared data; skip where it is absent."""
    if dataset == "caltech101":
        if not CALTECH.is_dir():
            pytest.skip(f"no Caltech-101 folders at {CALTECH}")
        return sorted(p.name for p in CALTECH.iterdir() if p.is_dir() and p.name != "BACKGROUND_Google")
    names = ANCHORS / {"cifar100": "cifarfs_classes.txt", "miniimagenet": "miniimagenet_classes.txt"}[dataset]
    if not names.is_file():
        pytest.skip(f"no class list at {names}")
    return [line.strip() for line in names.read_text().splitlines() if line.strip()]


def forbidden_words(name: str) -> set[str]:
    """Words (len >= 3) of a class name and their obvious singular/plural forms."""
    words = {w for w in re.split(r"[_\s-]+", name.lower()) if len(w) >= 3}
    forms = set()
    for w in words:
        forms |= {w, w + "s", w + "es"}
        if w.endswith("s"):
            forms.add(w[:-1])
        if w.endswith("ies"):
            forms.add(w[:-3] + "y")
    return forms


@pytest.mark.parametrize("dataset", DESCRIBED_DATASETS)
def test_descriptions_cover_exactly_the_classes(dataset):
    descriptions = load_descriptions(dataset)
    classes = dataset_classes(dataset)
    assert len(classes) == len(set(classes)) == (101 if dataset == "caltech101" else 100)
    assert set(descriptions) == set(classes)
    assert all(isinstance(d, str) and len(d.split()) >= 3 for d in descriptions.values())


@pytest.mark.parametrize("dataset", DESCRIBED_DATASETS)
def test_descriptions_do_not_name_their_class(dataset):
    leaks = {}
    for name, text in load_descriptions(dataset).items():
        text = text.lower()
        hits = [w for w in forbidden_words(name) if re.search(rf"\b{re.escape(w)}\b", text)]
        if re.search(rf"\b{re.escape(name.replace('_', ' ').lower())}\b", text) or hits:
            leaks[name] = hits
    assert not leaks, f"descriptions naming their class: {leaks}"


def test_describe_and_user_files(tmp_path):
    path = tmp_path / "mine.json"
    path.write_text('{"goblet": "a drinking glass with a base and stem"}')
    descriptions = load_descriptions(path)
    assert describe(["goblet"], descriptions) == ["a drinking glass with a base and stem"]
    with pytest.raises(KeyError, match="chiffonier"):
        describe(["goblet", "chiffonier"], descriptions)
    with pytest.raises(FileNotFoundError, match="cifar100"):
        load_descriptions(tmp_path / "absent.json")


def test_class_prompt():
    assert class_prompt("aquarium_fish") == "aquarium fish"
    assert class_prompt("maple_tree", "This is a photo of a {}") == "This is a photo of a maple tree"


# ---------------------------------------------------------------------------------------------------------
# table
# ---------------------------------------------------------------------------------------------------------


def test_table_npy_txt_pair(tmp_path):
    m = np.arange(12, dtype=np.float32).reshape(3, 4)
    np.save(tmp_path / "tiny_anchors.npy", m)
    (tmp_path / "tiny_classes.txt").write_text("aquarium_fish\nmaple_tree\nlion\n")
    enc = get_encoder("table", path=tmp_path / "tiny_anchors.npy")
    assert (enc.name, enc.dim) == ("table:tiny_anchors", 4)
    z = enc.encode_text(["lion", "aquarium_fish"])
    assert z.dtype == torch.float32 and torch.equal(z, torch.from_numpy(m[[2, 0]]))
    # Normalized lookup: case, "_" vs " ", extra spaces.
    assert torch.equal(enc.encode_text(["Aquarium Fish", " maple  tree"]), torch.from_numpy(m[[0, 1]]))
    assert enc.encode_text([]).shape == (0, 4)
    with pytest.raises(KeyError) as err:
        enc.encode_text(["lion", "goblet", "chiffonier"])
    assert "goblet" in str(err.value) and "chiffonier" in str(err.value) and "minilm" in str(err.value)
    with pytest.raises(NotImplementedError, match="clip"):
        enc.encode_image(torch.zeros(1, 3, 32, 32, dtype=torch.uint8))
    # Explicit names= file, and the dict formats.
    (tmp_path / "names.txt").write_text("a\nb\nc\n")
    assert torch.equal(get_encoder("table", path=tmp_path / "tiny_anchors.npy", names=tmp_path / "names.txt")
                       .encode_text(["b"]), torch.from_numpy(m[[1]]))
    (tmp_path / "t.json").write_text('{"goblet": [1, 2], "sea_horse": [3, 4]}')
    assert get_encoder("table", path=tmp_path / "t.json").encode_text(["sea horse"]).tolist() == [[3.0, 4.0]]
    torch.save({"goblet": torch.tensor([1.0, 2.0])}, tmp_path / "t.pt")
    assert get_encoder("table", path=tmp_path / "t.pt").encode_text(["goblet"]).tolist() == [[1.0, 2.0]]


@pytest.mark.parametrize("stem", ["cifarfs", "miniimagenet"])
def test_table_on_clip_text_anchors(stem):
    path = ANCHORS / f"{stem}_anchors.npy"
    if not path.is_file():
        pytest.skip(f"no anchors at {path}")
    m = np.load(path)
    names = (ANCHORS / f"{stem}_classes.txt").read_text().split()
    enc = get_encoder("table", path=path)
    assert enc.dim == 512 == m.shape[1]
    z = enc.encode_text([names[5], names[0]])
    assert z.shape == (2, 512) and torch.equal(z, torch.from_numpy(m[[5, 0]]).float())
    multi = next(n for n in names if "_" in n)
    assert torch.equal(enc.encode_text([class_prompt(multi).upper()]), enc.encode_text([multi]))
    with pytest.raises(KeyError, match="not a class"):
        enc.encode_text(["not a class"])


# ---------------------------------------------------------------------------------------------------------
# minilm
# ---------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def minilm():
    return get_encoder("minilm", device="cpu")


def test_minilm_shape_deterministic_and_meaningful(minilm):
    z = minilm.encode_text(["apple", "pear", "tractor"])
    assert minilm.name == "minilm" and z.shape == (3, 384) and z.dtype == torch.float32
    # The published all-MiniLM-L6-v2 pipeline ends in a Normalize module: unit norm even unasked.
    assert torch.allclose(z.norm(dim=1), torch.ones(3), atol=1e-4)
    assert torch.allclose(z, minilm.encode_text(["apple", "pear", "tractor"]), atol=1e-6)
    assert cos(z[0], z[1]) > cos(z[0], z[2])
    with pytest.raises(NotImplementedError, match="clip"):
        minilm.encode_image(torch.zeros(1, 3, 32, 32, dtype=torch.uint8))


# ---------------------------------------------------------------------------------------------------------
# clip
# ---------------------------------------------------------------------------------------------------------


def test_clip_random_weights_real_architecture():
    enc = get_encoder("clip", pretrained=None, device="cpu")
    assert enc.name == "clip:ViT-B-32:random-seed0" and enc.dim == 512
    z = enc.encode_text(["a photo of a goblet", "a photo of a chiffonier"])
    assert z.shape == (2, 512) and z.dtype == torch.float32
    images = torch.randint(0, 256, (2, 3, 32, 32), dtype=torch.uint8)
    assert enc.preprocess(images).shape == (2, 3, 224, 224)
    zi = enc.encode_image(images)
    assert zi.shape == (2, 512) and zi.dtype == torch.float32 and torch.isfinite(zi).all()


def test_clip_without_local_weights_fails_fast(tmp_path, monkeypatch):
    import huggingface_hub.constants

    monkeypatch.delenv("NNDIFF_CLIP_WEIGHTS", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))  # an empty ~/.cache/clip
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    start = time.monotonic()
    with pytest.raises(RuntimeError) as err:
        get_encoder("clip", pretrained="openai")
    assert time.monotonic() - start < 5
    message = str(err.value)
    assert "minilm" in message and "table" in message and "NNDIFF_CLIP_WEIGHTS" in message
    with pytest.raises(RuntimeError, match="nowhere.pt"):
        get_encoder("clip", weights=tmp_path / "nowhere.pt")
    with pytest.raises(ValueError, match="openai"):
        get_encoder("clip", pretrained="no-such-tag")


# ---------------------------------------------------------------------------------------------------------
# cache and registry
# ---------------------------------------------------------------------------------------------------------


class CountingEncoder(Encoder):
    """Deterministic fake encoder that records every text it is asked to encode."""

    def __init__(self):
        self.name, self.dim, self.seen = "counting:v1", 3, []

    def encode_text(self, texts):
        self.seen.append(list(texts))
        return torch.tensor([[len(t), t.count("a"), hash(t) % 7] for t in texts], dtype=torch.float32)


def test_cache_encodes_each_text_once_and_survives_reload(tmp_path, monkeypatch):
    monkeypatch.setitem(ENCODERS, "counting", CountingEncoder)
    enc = get_encoder("counting", cache_dir=tmp_path)
    assert isinstance(enc, CachedEncoder) and enc.name == "counting:v1"
    first = enc.encode_text(["apple", "pear", "apple"])
    assert enc.encoder.seen == [["apple", "pear"]]
    second = enc.encode_text(["pear", "tractor", "apple"])
    assert enc.encoder.seen == [["apple", "pear"], ["tractor"]]
    assert torch.equal(second[[0, 2]], first[[1, 0]])
    assert (tmp_path / "counting_v1.pt").is_file()

    reloaded = get_encoder("counting", cache_dir=tmp_path)
    again = reloaded.encode_text(["apple", "pear", "tractor"])
    assert reloaded.encoder.seen == [] and torch.equal(again, torch.cat([first[:2], second[1:2]]))


def test_get_encoder_unknown_name_lists_known():
    with pytest.raises(ValueError) as err:
        get_encoder("bert")
    assert all(name in str(err.value) for name in ("clip", "minilm", "table"))
