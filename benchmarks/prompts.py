"""Class texts of a prompt: names, descriptions (Tina A.2, Table 7, Fig. 6c) and rewordings (beyond the paper),
and the snapping baseline that maps a free wording back to the nearest class the generator knows.

A *rewording* is another wording of the same class that a user would type: a synonym, a common name or a short
paraphrase ("sea cow" for a dugong, "daddy longlegs" for a harvestman). Where descriptions test whether a
generator reads what a class *is*, rewordings test whether it survives the everyday vocabulary drift between
the names it was trained on and what a user writes. The *snapping* baseline (`snap_to_known`) is what a
careful engineer would put in front of a name-conditioned generator: replace each prompt text by the nearest
known class name (cosine similarity of the text encoder's embeddings), then generate for the names.

Shipped files (class name -> text, JSON) under `benchmarks/descriptions/`:
- `<dataset>.json`: descriptions (cifar100, miniimagenet, caltech101; `encoders.load_descriptions`);
- `<dataset>_rewordings.json`: rewordings (miniimagenet; synthetic, for the smoke profile);
- `synthetic_descriptions.json`: descriptions of the synthetic dataset's nouns. The synthetic dataset itself
  ships none (tests rely on that); the smoke profile names this file with Tina's option `descriptions`.
"""
from __future__ import annotations

import re

import torch
from torch import Tensor

from benchmarks.encoders import DESCRIPTIONS_DIR, class_prompt, describe, load_descriptions

TEXT_KINDS = ("names", "descriptions", "rewordings")  # what a class's text in a prompt is


def shipped_texts() -> list[str]:
    """Stems of the shipped class-text files, e.g. ['caltech101', 'miniimagenet', 'miniimagenet_rewordings']."""
    return sorted(p.stem for p in DESCRIPTIONS_DIR.glob("*.json"))


def load_texts(kind: str, dataset: str, source: str | None = None) -> dict[str, str]:
    """Class name -> text of `kind` ("descriptions" or "rewordings") for `dataset`.

    Args:
        source: a shipped stem (`synthetic_descriptions`) or a JSON path; None: the dataset's own file
            (`<dataset>.json` for descriptions, `<dataset>_rewordings.json` for rewordings).
    Raises:
        ValueError naming the kind, the dataset and the shipped files when there is none.
    """
    if kind not in TEXT_KINDS[1:]:
        raise ValueError(f"class texts are one of {list(TEXT_KINDS[1:])}, got {kind!r}")
    name = source or (dataset if kind == "descriptions" else f"{dataset}_rewordings")
    if re.fullmatch(r"[\w.-]+", str(name)) and (DESCRIPTIONS_DIR / f"{name}.json").is_file():
        name = DESCRIPTIONS_DIR / f"{name}.json"  # a shipped stem
    try:
        return load_descriptions(name)
    except FileNotFoundError as e:
        raise ValueError(f"text={kind!r} needs class {kind} for dataset {dataset!r}: {e}; shipped files: "
                         f"{shipped_texts()}") from None


def class_texts(classes: list[list[str]], kind: str, dataset: str = "",
                source: str | None = None) -> list[list[str]]:
    """Each task's class texts in prompt order: names ("aquarium fish"), descriptions or rewordings."""
    if kind not in TEXT_KINDS:
        raise ValueError(f"text must be one of {TEXT_KINDS}, got {kind!r}")
    if kind == "names":
        return [[class_prompt(c) for c in cs] for cs in classes]
    texts = load_texts(kind, dataset, source)
    try:
        return [describe(cs, texts) for cs in classes]
    except KeyError as e:
        raise ValueError(f"text={kind!r} for dataset {dataset!r}: {e.args[0]}") from None


@torch.no_grad()
def snap_to_known(texts: list[str], known: list[str], encoder) -> tuple[list[int], Tensor]:
    """The nearest known class name of each text, by cosine similarity of `encoder`'s text embeddings.

    Args:
        texts: n free wordings ("sea cow"); known: m class names the generator was trained on ("dugong").
        encoder: anything with `encode_text(list[str]) -> [n, dim]` (benchmarks.encoders).
    Returns:
        (index into `known` per text, the similarity matrix [n, m]).
    """
    if not known:
        raise ValueError("snap_to_known needs at least one known class name")
    if not texts:
        return [], torch.zeros(0, len(known))
    z = torch.nn.functional.normalize(encoder.encode_text(list(texts)).float(), dim=1)  # [n, D]
    k = torch.nn.functional.normalize(encoder.encode_text(list(known)).float(), dim=1)  # [m, D]
    sim = z @ k.T  # [n, m]
    return sim.argmax(1).tolist(), sim
