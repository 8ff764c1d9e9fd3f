"""LoRA p-Models: the generic CNN with peft LoRA adapters on its convs and a task head (Cond P-Diff 2.1, 3.2).

Cond P-Diff generates LoRA weights (W0 x + B(A x), eq. 1) rather than whole networks. Its "LoRA variant"
of personalization keeps the stage-1 CNN frozen, puts peft LoRA adapters on the conv layers and
personalizes the adapters plus the task head `fc` (which peft would freeze unless named in
`modules_to_save`; here `fc` simply stays a plain `nn.Linear` outside peft's wrapping). The flat layout:

    conv1.lora_A.default.weight [r, 3, 3, 3]    conv1.lora_B.default.weight [16, r, 1, 1]
    conv2.lora_A.default.weight [r, 16, 3, 3]   conv2.lora_B.default.weight [32, r, 1, 1]
    fc.weight [K, 32]                           fc.bias [K]          (head last, as Layout needs)

Segment names are the module's own parameter names (peft's `<layer>.lora_{A,B}.default.weight`), so
`functional_call(model, layout.unflatten(theta))` works unchanged in the evaluation engine.

Two choices, both so that a generator sees the zoo's adapters in one coordinate frame:
- B starts at zero (standard LoRA), so a fresh p-Model equals classifier selection exactly.
- A starts from ONE fixed-seed draw shared by every task (peft's kaiming-uniform init, `init_seed`), not a
  per-task random draw: otherwise each adapter lives in its own random basis (BA is invariant under
  A -> GA, B -> BG^-1), which a generative model of the zoo would have to untangle.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from benchmarks.pmodels import PMODELS, PModelArch

ADAPTER = "default"  # peft's adapter name; it appears in the segment names
LORA_ALPHA = 8.0  # official Cond-PDiff scripts (docs/design-notes.md §7) and peft's default
LORA_DROPOUT = 0.0  # official 0.1 is for BERT; a 2-conv CNN on 32x32 images fine-tunes without it

# ----------------------------------------------------------------------------- helpers


def adaptable_layers(model: nn.Module, head: str = "fc") -> dict[str, nn.Module]:
    """Conv and linear layers LoRA may target: every Conv2d/Linear except the head (personalized in full)."""
    return {n: m for n, m in model.named_modules()
            if isinstance(m, (nn.Conv2d, nn.Linear)) and n and n != head and not n.startswith(head + ".")}


def full_rank(layer: nn.Module) -> int:
    """The largest meaningful LoRA rank of a layer: min(out, in * kernel area / groups)."""
    if isinstance(layer, nn.Conv2d):
        return min(layer.out_channels, layer.in_channels // layer.groups * math.prod(layer.kernel_size))
    return min(layer.out_features, layer.in_features)


def check_lora(model: nn.Module, rank: int, targets: tuple[str, ...], *, arch: str = "?") -> None:
    """Reject a rank or target list that does not fit `model`, naming the layers that do exist."""
    layers = adaptable_layers(model)
    if isinstance(rank, bool) or not isinstance(rank, int) or rank < 1:
        raise ValueError(f"{arch}: LoRA rank must be a positive integer, got {rank!r}")
    if not targets:
        raise ValueError(f"{arch}: no LoRA target layers given; layers that exist: {sorted(layers)}")
    unknown = [t for t in targets if t not in layers]
    if unknown:
        raise ValueError(f"{arch}: LoRA target layers {unknown} do not exist (the head `fc` is personalized in "
                         f"full, not adapted); layers that exist: {sorted(layers)}")
    too_big = {t: full_rank(layers[t]) for t in targets if rank > full_rank(layers[t])}
    if too_big:
        raise ValueError(f"{arch}: LoRA rank {rank} exceeds the full rank of {too_big} (layer: max rank); "
                         "choose a rank <= the smallest of them")

# ----------------------------------------------------------------------------- the arch


@dataclass(frozen=True)
class LoRAArch(PModelArch):
    """A p-Model = generic `base` network + peft LoRA adapters on `targets`; adapters and head personalized."""

    rank: int = 4
    alpha: float = LORA_ALPHA  # peft scaling = alpha / rank
    targets: tuple[str, ...] = ("conv1", "conv2")
    init_seed: int = 0  # A's shared initial draw (see module docstring)

    def __post_init__(self) -> None:
        if self.head_only:
            raise ValueError(f"{self.name}: a LoRA arch adapts the body, it cannot be head-only")
        check_lora(self.build_fn(10), self.rank, tuple(self.targets), arch=self.name)

    def build(self, num_classes: int) -> nn.Module:
        """The base network with LoRA injected on `targets`, B = 0 and A = the shared fixed-seed draw."""
        from peft import LoraConfig, inject_adapter_in_model  # imported here: pmodels stays light to import

        model = self.build_fn(num_classes)
        cfg = LoraConfig(r=self.rank, lora_alpha=self.alpha, lora_dropout=LORA_DROPOUT,
                         target_modules=list(self.targets), bias="none")
        model = inject_adapter_in_model(cfg, model, adapter_name=ADAPTER)
        gen = torch.Generator().manual_seed(self.init_seed)
        with torch.no_grad():
            for target in self.targets:  # fixed order: the draw does not depend on the module walk
                layer = model.get_submodule(target)
                # peft's own init of A (kaiming-uniform, a=sqrt(5)), but from a generator we control
                nn.init.kaiming_uniform_(layer.lora_A[ADAPTER].weight, a=math.sqrt(5), generator=gen)
                nn.init.zeros_(layer.lora_B[ADAPTER].weight)
        names = set(self.personalized_names(model))
        for n, p in model.named_parameters():  # peft freezes everything but the adapters; fc is ours too
            p.requires_grad_(n in names)
        return model

    def personalized_names(self, model: nn.Module) -> list[str]:
        """LoRA A/B of every target in module order, then fc.weight, fc.bias (the head last)."""
        lora = [n for n, _ in model.named_parameters() if ".lora_A." in n or ".lora_B." in n]
        if not lora:
            raise ValueError(f"{self.name}: model has no LoRA parameters; build it with arch.build()")
        return [*lora, "fc.weight", "fc.bias"]

    def base_name(self, name: str) -> str:
        """A generic state-dict key -> its name in the LoRA model (wrapped layers keep W0 in `base_layer`)."""
        module, _, leaf = name.rpartition(".")
        return f"{module}.base_layer.{leaf}" if module in self.targets else name

    def from_generic(self, state: dict[str, Tensor], class_idx: list[int] | None = None) -> nn.Module:
        """The generic weights frozen in the base layers, fc cut to `class_idx` (task order), B = 0: the
        p-Model starts equal to classifier selection."""
        k = len(class_idx) if class_idx is not None else state["fc.weight"].shape[0]
        model = self.build(k)
        body = {self.base_name(n): t for n, t in state.items() if not n.startswith("fc.")}
        missing, unexpected = model.load_state_dict(body, strict=False)
        missing = [n for n in missing if ".lora_" not in n and not n.startswith("fc.")]
        if missing or unexpected:
            raise ValueError(f"{self.name}: generic state does not fit the {self.base!r} body "
                             f"(missing {missing}, unexpected {unexpected})")
        rows = torch.as_tensor(class_idx) if class_idx is not None else slice(None)
        with torch.no_grad():
            model.fc.weight.copy_(state["fc.weight"][rows])
            model.fc.bias.copy_(state["fc.bias"][rows])
        return model


def lora_arch(base: str, rank: int = 4, *, name: str | None = None, alpha: float = LORA_ALPHA,
              targets: tuple[str, ...] | None = None, init_seed: int = 0) -> LoRAArch:
    """A LoRA variant of a registered full-body arch (default targets: all its convs/linears but the head)."""
    if base not in PMODELS:
        raise ValueError(f"unknown base arch {base!r}; choose one of {sorted(PMODELS)}")
    b = PMODELS[base]
    if b.head_only:
        raise ValueError(f"{base} personalizes only its head; LoRA needs a full-body arch")
    targets = tuple(targets) if targets is not None else tuple(adaptable_layers(b.build(10)))
    return LoRAArch(name or f"{base}-lora{rank}", b.build_fn, head_only=False, generic_arch=base, rank=rank,
                    alpha=alpha, targets=targets, init_seed=init_seed,
                    description=f"{base} frozen + LoRA r={rank} (alpha {alpha:g}) on {', '.join(targets)}; "
                                "adapters and head generated")

# ----------------------------------------------------------------------------- registry

# A small set: the default rank 4 and the ends of the paper's rank sweep (Table 1: r = 1, 2, 4, 16).
LORA_ARCHS: dict[str, LoRAArch] = {
    "cnn-5k-lora": lora_arch("cnn-5k", 4, name="cnn-5k-lora"),
    "cnn-5k-lora1": lora_arch("cnn-5k", 1),
    "cnn-5k-lora8": lora_arch("cnn-5k", 8),
}
PMODELS.update(LORA_ARCHS)  # pmodels.py imports this module last, so `get_arch` and the CLI see them
