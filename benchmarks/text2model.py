"""Text-to-model for end users: a prompt -> a standalone p-Model file -> predictions on image files (Tina 1, 2.2).

`generate_pmodel` asks a fitted generator (Tina, or any method with the `methods.base.Promptable` capability)
for the personalized parameters of one prompt (class names, their descriptions, or one image per class through
CLIP's image tower, Fig. 6a), puts them into the generic model's frozen parts and writes one torch file: the
p-Model's full state dict, its classes in output order, the arch name and a model card saying how it was made.
`classify` loads such a file (weights_only) and labels images. CLI: `nndiff generate --method tina --prompt
"apple, bear" ...` and `nndiff classify`. Methods are reached through the registry and the protocol only.
"""
from __future__ import annotations

import datetime
import hashlib
import logging
import os
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from benchmarks import artifacts
from benchmarks.encoders import class_prompt
from benchmarks.pmodels import get_arch, to_float
from benchmarks.prompts import snap_to_known
from benchmarks.train import Generic
from methods.base import Bench, Method, Promptable, Tasks, Zoo
from methods.registry import build_method, get_method

FORMAT = "nndiff-pmodel/1"
log = logging.getLogger(__name__)
IMAGE_SIZE = 32  # p-Models see 32x32 images, as every dataset here (benchmarks/datasets.py)
CLIP_PROMPT_SIZE = 224  # image prompts go to CLIP at its own input size


def parse_prompt(text: str) -> list[str]:
    """"apple, bear ,  cup" -> ["apple", "bear", "cup"]."""
    return [c.strip() for c in text.split(",") if c.strip()]


def load_images(paths: list[str | os.PathLike], size: int = IMAGE_SIZE) -> Tensor:
    """Image files -> uint8 [n, 3, size, size]: RGB, bicubic resize (as benchmarks.datasets prepares data).
    A path that is missing, a directory or no image PIL reads fails naming it."""
    arrays = []
    for path in paths:
        if not Path(path).exists():
            raise FileNotFoundError(f"{path}: no such image file")
        if Path(path).is_dir():
            raise ValueError(f"{path}: is a directory; name image files (PNG, JPEG, ...)")
        try:
            with Image.open(path) as img:
                img = img.convert("RGB")
                arrays.append(np.asarray(img.resize((size, size), Image.BICUBIC) if img.size != (size, size) else img,
                                         dtype=np.uint8))
        except (OSError, ValueError, Image.DecompressionBombError) as e:  # UnidentifiedImageError is an OSError
            reason = " ".join(str(e).splitlines()) or type(e).__name__
            raise ValueError(f"{path}: not an image file PIL can read ({reason})") from e
    return torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).contiguous()


def _promptable(method: str) -> type[Method]:
    """The registered method class, if it can generate from a prompt (`Promptable`)."""
    cls = get_method(method)
    if not issubclass(cls, Promptable):
        raise ValueError(f"method {method!r} cannot generate from a prompt: it lacks the Promptable capability "
                         "(methods.base.Promptable: generate_from_embeddings, prompt_encoder, ...); use --method tina")
    return cls


def load_bench(generic: str | os.PathLike | Generic, workdir: str | os.PathLike, *, encoder: dict | None = None,
               encoder_cache: str | os.PathLike | None = None, seed: int = 0,
               device: torch.device = torch.device("cpu"), method: str = "tina", fitted: dict | None = None) -> Bench:
    """A Bench for generation only: the generic model (the p-Model's frozen parts) and the text encoder the
    generator fitted in `workdir` was trained with (or `encoder`); no zoo and no images. `fitted`: the method's
    `fitted_bench(workdir)`, when the caller has read it already."""
    generic = generic if isinstance(generic, Generic) else Generic.load(generic)
    fitted = fitted or _promptable(method).fitted_bench(workdir)  # fails, naming the path, when nothing was fitted
    arch = get_arch(fitted["arch"])
    n_params = arch.layout(fitted["num_classes"]).n_params
    return Bench(arch=arch, generic=generic, zoo=Zoo([], [], torch.zeros(0, n_params), torch.zeros(0)),
                 train_x=torch.zeros(0, 3, IMAGE_SIZE, IMAGE_SIZE, dtype=torch.uint8),
                 train_y=torch.zeros(0, dtype=torch.long), class_names=list(generic.classes),
                 num_classes=fitted["num_classes"], seed=seed, device=device,
                 encoder_cache=Path(encoder_cache) if encoder_cache else None,
                 text_encoder_spec=encoder or fitted["encoder_spec"], dataset=fitted["dataset"])


def unknown_classes(prompt: list[str], trained: list[str] | None, encoder) -> list[tuple[str, str, float]]:
    """The prompt's class names the generator was not fitted on, each with its nearest trained class name and
    their cosine similarity (the encoder's text embeddings; `benchmarks.prompts.snap_to_known`). Such a prompt
    is what Table 7's `rewordings` rows measure (reports/table7.md). [] when the fit kept no class list."""
    if not trained:
        return []
    known = {class_prompt(c).lower() for c in trained}
    outside = [c for c in prompt if class_prompt(c).lower() not in known]
    if not outside:
        return []
    names = [class_prompt(c) for c in trained]
    nearest, sim = snap_to_known(outside, names, encoder)
    return [(c, names[j], float(sim[i, j])) for i, (c, j) in enumerate(zip(outside, nearest))]


def unknown_list(unknown: list[tuple[str, str, float]]) -> str:
    return "; ".join(f"{c!r} (nearest trained class {n!r}, cosine {sim:.2f})" for c, n, sim in unknown)


def _model_card(classes: list[str], arch: str, card: dict, state_path: Path, prompt_kind: str,
                n_params: int, n_generated: int, unknown: list[tuple[str, str, float]] = ()) -> str:
    digest = hashlib.sha256(state_path.read_bytes()).hexdigest()[:12]
    lines = [
        f"# p-Model: {', '.join(classes)}",
        "",
        f"- Classes, in output order: {'; '.join(f'{i} = {name}' for i, name in enumerate(classes))}",
        f"- Architecture: `{arch}`, {n_params:,} parameters, "
        + ("all generated" if n_generated == n_params else f"{n_generated:,} generated, the other "
           f"{n_params - n_generated:,} frozen from the generic (stage-1) model"),
        f"- Made by: {card['made_by']}, prompted with class {prompt_kind}",
        f"- Generator: `{state_path}` (sha256 {digest}), {card['trained']}",
        f"- Sampler: {card['sampling']}",
        f"- Date: {datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds')}",
        "- Input: RGB images resized to 32x32, scaled to [-1, 1] (`benchmarks.pmodels.to_float`)",
        "- Caveat: generated without training on these classes; its accuracy has not been measured.",
        *([f"- Outside the generator's training classes: {unknown_list(unknown)} (reports/table7.md measures "
           "prompts of other wordings)"] if unknown else []),
    ]
    return "\n".join(lines) + "\n"


def _check_prompt(prompt: list[str], fitted: dict, method: str, workdir: Path) -> None:
    """One output per class: no class twice; as many classes as the fitted generator serves."""
    duplicates = sorted({c for c in prompt if prompt.count(c) > 1}, key=prompt.index)
    if duplicates:
        raise ValueError(f"the prompt names {', '.join(repr(c) for c in duplicates)} more than once: name each class "
                         "once (output i is class i of the prompt)")
    counts = fitted.get("class_counts")
    if counts and len(prompt) not in counts:
        served = f"1 to {max(counts)}" if counts == list(range(1, max(counts) + 1)) and len(counts) > 1 else \
            " or ".join(map(str, counts))
        hint = (f"; a {method} fitted with `padding: true` serves 1 to {fitted['num_classes']} classes"
                if fitted.get("padding") is False else "")
        raise ValueError(f"the prompt names {len(prompt)} class{'es' if len(prompt) != 1 else ''}, but the {method} "
                         f"fitted in {workdir} serves {served}-class prompts{hint}")


def generate_pmodel(workdir: str | os.PathLike, bench: Bench | str | os.PathLike, prompt: list[str],
                    out: str | os.PathLike, *, image_prompt: list[str | os.PathLike] | None = None,
                    descriptions: bool = False, options: dict | None = None, method: str = "tina",
                    fitted: dict | None = None) -> Path:
    """Generate one p-Model for `prompt` with the generator fitted in `workdir` and write it as a standalone file.

    Args:
        bench: the benchmark, or the path of the generic model (see `load_bench`).
        prompt: class names in output order (with `image_prompt`: their names; empty: the image file stems).
        image_prompt: one image per class, encoded by CLIP's image tower (needs a Tina fitted with clip).
        descriptions: prompt with the classes' descriptions (the dataset's shipped file) instead of names.
        options: the method's options for sampling (Tina: sampler, sample_steps, seed, use_ema, n_samples); the
            sampler and steps the generator was fitted with unless given (another sampler: its own default steps).
        method: a registered method with the `Promptable` capability.
        fitted: its `fitted_bench(workdir)`, when the caller has read it already.
    Returns:
        `out`, a torch file {format, arch, classes, state_dict, model_card, meta}.
    """
    workdir = Path(workdir)
    fitted = fitted or _promptable(method).fitted_bench(workdir)
    bench = bench if isinstance(bench, Bench) else load_bench(bench, workdir, method=method, fitted=fitted)
    prompt = [str(c).strip() for c in prompt if str(c).strip()]
    if image_prompt:
        prompt = prompt or [Path(p).stem for p in image_prompt]
        if len(prompt) != len(image_prompt):
            raise ValueError(f"{len(image_prompt)} prompt images but {len(prompt)} class names: "
                             "give one image per class")
    if not prompt:
        raise ValueError("empty prompt: name the p-Model's classes, e.g. --prompt \"apple, bear, cup\"")
    _check_prompt(prompt, fitted, method, workdir)
    options = dict(options or {})
    sampling = dict(fitted.get("sampling") or {})
    if "sampler" in options and options["sampler"] != sampling.get("sampler"):
        sampling.pop("sample_steps", None)  # another sampler than the fit's: its own default steps unless given
    options = {**sampling, **options}
    if descriptions:
        options["generate_text"] = "descriptions"
    generator = build_method(method, options).setup(bench, workdir)
    card = generator.generator_card()
    if image_prompt:  # Fig. 6a: CLIP aligns images with the texts the generator was trained on
        encoder = generator.prompt_encoder()  # the one it was fitted with
        if not encoder.name.startswith("clip"):
            raise ValueError(f"image prompts need a generator fitted with the clip encoder; this {method} uses "
                             f"{encoder.name!r}. Fit with encoder {{\"name\": \"clip\"}} (local ViT-B/32 weights)")
        emb = encoder.encode_image(load_images(image_prompt, CLIP_PROMPT_SIZE))[None]  # [1, K, D]
        theta = generator.generate_from_embeddings(emb, ["prompt"], [prompt], classes=[prompt])[0]
        kind = "images (" + ", ".join(Path(p).name for p in image_prompt) + ")"
    else:
        theta = generator.generate(Tasks(["prompt"], [prompt]))[0]  # [n_params(K)]
        kind = "descriptions" if descriptions else "names"
    unknown = [] if descriptions else unknown_classes(prompt, fitted.get("trained_classes"), generator.prompt_encoder())
    if unknown:
        log.warning("the prompt names classes the generator was not fitted on: %s", unknown_list(unknown))

    arch, k = bench.arch, len(prompt)
    layout = arch.layout(k)
    model = arch.from_generic(bench.generic.state, list(range(k)))  # frozen parts from the generic model
    generated = layout.unflatten(theta)
    unexpected = model.load_state_dict(generated, strict=False).unexpected_keys
    if unexpected:
        raise RuntimeError(f"generated parameters {unexpected} have no place in {arch.name}")
    state_dict = {n: t.detach().cpu().clone() for n, t in model.state_dict().items()}
    text = _model_card(prompt, arch.name, card, generator.state_path, kind, sum(t.numel() for t in model.parameters()),
                       layout.n_params, unknown)
    meta = {"method": method, "workdir": str(workdir), "prompt_kind": kind, **card["meta"],
            "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}
    artifacts.save_torch({"format": FORMAT, "arch": arch.name, "classes": prompt, "state_dict": state_dict,
                          "model_card": text, "meta": meta}, out)
    return Path(out)


@torch.no_grad()
def classify(pmodel_file: str | os.PathLike, image_paths: list[str | os.PathLike], *,
             device: torch.device = torch.device("cpu")) -> list[tuple[str, str, float]]:
    """Label images with a standalone p-Model file. Returns one (path, class, probability) per image."""
    d = artifacts.load_torch(pmodel_file, what=f"a p-Model file ({FORMAT}) from `nndiff generate --prompt`")
    if not isinstance(d, dict) or d.get("format") != FORMAT:
        raise ValueError(f"{pmodel_file} is not a p-Model file ({FORMAT}); make one with `nndiff generate --prompt`")
    if not image_paths:
        return []
    arch, classes = get_arch(d["arch"]), list(d["classes"])
    model = arch.build(len(classes))
    model.load_state_dict(d["state_dict"])
    model.to(device).eval()  # important: BatchNorm in eval mode
    x = load_images(image_paths)  # uint8 [n, 3, 32, 32]
    if arch.train_backbone_in_stage1:
        logits = model(to_float(x).to(device))
    else:  # CLIP ViT-B/32 head: the image tower is CLIP's own, not stored in the file
        from benchmarks.encoders import get_encoder
        logits = model.fc(get_encoder("clip").encode_image(x).to(device))
    prob, idx = logits.softmax(1).max(1)
    return [(str(p), classes[i], float(q)) for p, i, q in zip(image_paths, idx.tolist(), prob.tolist())]
