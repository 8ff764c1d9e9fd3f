"""p-Model architectures and their flat parameter layouts (Tina 3.1, G.pt; docs/design-notes.md §6.1).

A p-Model is a classifier over one task's K classes. Its *personalized* parameters are the ones a
method generates: all of them for the CNNs, only the classifier `fc` for ResNet-20 and CLIP ViT-B/32.
`Layout` maps those parameters to one flat vector and back, with named per-layer segments that the
generative methods use for tokenization.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call

# ----------------------------------------------------------------------------- layout


@dataclass(frozen=True)
class Segment:
    """One named parameter tensor inside the flat vector."""

    name: str
    shape: tuple[int, ...]
    offset: int

    @property
    def numel(self) -> int:
        return math.prod(self.shape)

    @property
    def stop(self) -> int:
        return self.offset + self.numel


class Layout:
    """Flat layout of a p-Model's personalized parameters, in module registration order."""

    def __init__(self, shapes: dict[str, tuple[int, ...]], head: str = "fc"):
        self.segments: list[Segment] = []
        offset = 0
        for name, shape in shapes.items():
            self.segments.append(Segment(name, tuple(shape), offset))
            offset += math.prod(shape)
        self.n_params = offset
        self.head = head
        self.by_name = {s.name: s for s in self.segments}

    def __repr__(self) -> str:
        return f"Layout({self.n_params} params: " + ", ".join(f"{s.name}{list(s.shape)}" for s in self.segments) + ")"

    @property
    def num_classes(self) -> int:
        return self.by_name[f"{self.head}.weight"].shape[0]

    def flatten(self, params: dict[str, Tensor]) -> Tensor:
        """Dict of named tensors (a state dict is fine) -> [n_params]."""
        missing = [s.name for s in self.segments if s.name not in params]
        if missing:
            raise KeyError(f"parameters missing for layout: {missing}")
        return torch.cat([params[s.name].detach().reshape(-1).float() for s in self.segments])

    def unflatten(self, theta: Tensor) -> dict[str, Tensor]:
        """[..., n_params] -> {name: [..., *shape]} (views, batch dims kept)."""
        if theta.shape[-1] != self.n_params:
            raise ValueError(f"expected vectors of {self.n_params} parameters, got {theta.shape[-1]}")
        lead = theta.shape[:-1]
        return {s.name: theta[..., s.offset:s.stop].reshape(*lead, *s.shape) for s in self.segments}

    # -- the classifier head, row by row: row i <-> class i of the task
    def head_rows(self, theta: Tensor) -> Tensor:
        """[..., n_params] -> [..., K, d+1]: weight row i and bias i of class i."""
        p = self.unflatten(theta)
        w, b = p[f"{self.head}.weight"], p[f"{self.head}.bias"]
        return torch.cat([w, b.unsqueeze(-1)], dim=-1)

    def body(self, theta: Tensor) -> Tensor:
        """Everything before the head: [..., n_body]."""
        return theta[..., : self.by_name[f"{self.head}.weight"].offset]

    def assemble(self, body: Tensor, rows: Tensor) -> Tensor:
        """Inverse of (body, head_rows): body [..., n_body], rows [..., K, d+1] -> [..., n_params].

        Requires the head to be the last two segments (weight, then bias), as in every p-Model here.
        """
        w, b = rows[..., :-1], rows[..., -1]
        return torch.cat([body, w.reshape(*w.shape[:-2], -1), b], dim=-1)

    def with_classes(self, num_classes: int) -> "Layout":
        """The same architecture with a K-row head."""
        shapes = {s.name: s.shape for s in self.segments}
        w = shapes[f"{self.head}.weight"]
        shapes[f"{self.head}.weight"] = (num_classes, *w[1:])
        shapes[f"{self.head}.bias"] = (num_classes,)
        return Layout(shapes, self.head)

    def take_rows(self, theta: Tensor, rows: Tensor) -> Tensor:
        """Select head rows per task. theta [n_params] (a |Y|-way model), rows [n_tasks, K] -> [n_tasks, n_params(K)]."""
        body = self.body(theta).expand(rows.shape[0], -1)
        return self.with_classes(rows.shape[1]).assemble(body, self.head_rows(theta)[rows])

# ----------------------------------------------------------------------------- networks


class CNN(nn.Module):
    """The G.pt CNN (Peebles et al. 2022): conv3x3/s2 -> ReLU -> conv3x3 -> ReLU [-> conv3x3 -> ReLU] -> GAP -> fc."""

    def __init__(self, num_classes: int = 10, n_convs: int = 2):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 16, 3, stride=2, padding=1, bias=False)
        self.conv2 = nn.Conv2d(16, 32, 3, stride=1, padding=1, bias=False)
        # ConvNet10k of the official code: one more 32->32 conv ("CNN-14K" of Fig. 4a).
        self.conv3 = nn.Conv2d(32, 32, 3, stride=1, padding=1, bias=False) if n_convs == 3 else None
        self.fc = nn.Linear(32, num_classes)

    def features(self, x: Tensor) -> Tensor:
        x = F.relu(self.conv2(F.relu(self.conv1(x))))
        if self.conv3 is not None:
            x = F.relu(self.conv3(x))
        return x.mean(dim=(2, 3))

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(self.features(x))


class BasicBlock(nn.Module):
    """CIFAR ResNet block with the parameter-free 'option A' shortcut (He et al. 2016), as ResNet-20's 0.27M count assumes."""

    def __init__(self, c_in: int, c_out: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.pad = c_out - c_in if (stride != 1 or c_in != c_out) else 0

    def forward(self, x: Tensor) -> Tensor:
        out = self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x)))))
        short = x
        if self.pad:
            short = F.pad(x[:, :, ::2, ::2], (0, 0, 0, 0, self.pad // 2, self.pad - self.pad // 2))
        return F.relu(out + short)


class ResNet20(nn.Module):
    """ResNet-20 for 32x32 images: 3 stages x 3 blocks, widths 16/32/64, global pool, fc 64->K."""

    def __init__(self, num_classes: int = 10):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 16, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        layers, c = [], 16
        for width, stride in [(16, 1), (32, 2), (64, 2)]:
            for i in range(3):
                layers.append(BasicBlock(c, width, stride if i == 0 else 1))
                c = width
        self.layers = nn.Sequential(*layers)
        self.fc = nn.Linear(64, num_classes)

    def features(self, x: Tensor) -> Tensor:
        return self.layers(F.relu(self.bn1(self.conv1(x)))).mean(dim=(2, 3))

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(self.features(x))


class ClipViTHead(nn.Module):
    """CLIP ViT-B/32 image tower (frozen) + a linear classifier on its 512-d features (Tina Table 2)."""

    def __init__(self, num_classes: int = 10, visual: nn.Module | None = None, dim: int = 512):
        super().__init__()
        self.visual = visual  # set by the arch's backbone loader; None until then
        self.fc = nn.Linear(dim, num_classes)

    def features(self, x: Tensor) -> Tensor:
        if self.visual is None:
            raise RuntimeError("ClipViTHead has no image tower: build it through PMODELS['vit-b32-head'].load_backbone")
        return self.visual(x)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(self.features(x))

# ----------------------------------------------------------------------------- specs


def to_float(x: Tensor) -> Tensor:
    """uint8 images -> float in [-1, 1] (Normalize(0.5, 0.5), as the official eval code does for CIFAR)."""
    return x.float().div_(127.5).sub_(1.0)


def pmodel_logits(model: nn.Module | None, params: dict[str, Tensor], x: Tensor, head_only: bool) -> Tensor:
    """Logits of one p-Model given by its personalized parameters `params` ({name: tensor}, `Layout.unflatten`).

    A head-only arch is its linear head `fc` on frozen features x [B, d]; otherwise `model` (the frozen
    generic weights) runs with `params` swapped in (torch.func.functional_call), on images x (uint8 are
    scaled by `to_float`; float ones, e.g. augmented, are used as they are). Differentiable in `params`."""
    if head_only:
        return x @ params["fc.weight"].T + params["fc.bias"]
    return functional_call(model, params, (to_float(x) if x.dtype == torch.uint8 else x,))


@dataclass(frozen=True)
class PModelArch:
    """What the harness needs to know about one p-Model architecture."""

    name: str
    build_fn: Callable[[int], nn.Module]
    head_only: bool  # True: only `fc` is personalized; features come from the frozen generic backbone
    train_backbone_in_stage1: bool = True  # False for CLIP: its tower is pretrained and frozen
    description: str = ""
    generic_arch: str | None = None  # the arch whose stage-1 model this one starts from (default: itself)

    @property
    def base(self) -> str:
        return self.generic_arch or self.name

    def build(self, num_classes: int) -> nn.Module:
        return self.build_fn(num_classes)

    def layout(self, num_classes: int = 10) -> Layout:
        model = self.build(num_classes)
        named = dict(model.named_parameters())
        return Layout({n: tuple(named[n].shape) for n in self.personalized_names(model)})

    def personalized_names(self, model: nn.Module) -> list[str]:
        """Parameters a method generates, in flat-layout order; the head (fc.weight, fc.bias) comes last."""
        return ["fc.weight", "fc.bias"] if self.head_only else [n for n, _ in model.named_parameters()]

    def from_generic(self, state: dict[str, Tensor], class_idx: list[int] | None = None) -> nn.Module:
        """A p-Model initialised from the stage-1 `state`: every non-head weight copied, the head cut to the
        rows `class_idx` in task order (None: the full |Y|-way head)."""
        k = len(class_idx) if class_idx is not None else state["fc.weight"].shape[0]
        model = self.build(k)
        model.load_state_dict({n: t for n, t in state.items() if not n.startswith("fc.")}, strict=False)
        rows = torch.as_tensor(class_idx) if class_idx is not None else slice(None)
        with torch.no_grad():
            model.fc.weight.copy_(state["fc.weight"][rows])
            model.fc.bias.copy_(state["fc.bias"][rows])
        return model

    def initial_theta(self, state: dict[str, Tensor], class_idx: list[int] | None = None) -> Tensor:
        """Flat personalized parameters of `from_generic(state, class_idx)`: where fine-tuning starts
        (classifier selection; for a LoRA arch the adapters start at B = 0)."""
        model = self.from_generic(state, class_idx)
        return self.layout(model.fc.out_features).flatten(dict(model.named_parameters()))


def _clip_vit(num_classes: int) -> nn.Module:
    return ClipViTHead(num_classes)


PMODELS: dict[str, PModelArch] = {
    "cnn-5k": PModelArch("cnn-5k", lambda k: CNN(k, 2), head_only=False,
                         description="G.pt CNN, 5,370 parameters at K=10, all generated"),
    "cnn-14k": PModelArch("cnn-14k", lambda k: CNN(k, 3), head_only=False,
                          description="three-conv sibling, 14,586 parameters at K=10 (Fig. 4a/5)"),
    "resnet20-head": PModelArch("resnet20-head", ResNet20, head_only=True,
                                description="ResNet-20 (~272K), only the 64->K classifier generated"),
    "vit-b32-head": PModelArch("vit-b32-head", _clip_vit, head_only=True, train_backbone_in_stage1=False,
                               description="CLIP ViT-B/32 image tower, frozen; only the 512->K classifier generated"),
}


def get_arch(name: str) -> PModelArch:
    if name not in PMODELS:
        raise ValueError(f"unknown p-Model architecture {name!r}; choose one of {sorted(PMODELS)}")
    return PMODELS[name]


# LoRA variants (benchmarks/lora.py: "cnn-5k-lora", ...) add themselves to PMODELS; imported last because
# lora.py builds on this module.
import benchmarks.lora  # noqa: E402,F401
