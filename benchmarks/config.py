"""Typed settings of each stage, with the paper's values as defaults, and the config schema at the door.

Profiles (`benchmarks/configs/{smoke,cpu,paper}.yaml`) only change numbers; the JSON Schema
`config.schema.yaml` rejects unknown keys and wrong types before any job starts.
"""
from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jsonschema
import yaml

CONFIG_DIR = Path(__file__).resolve().parent / "configs"
SCHEMA_PATH = CONFIG_DIR / "config.schema.yaml"
PROFILES = ("smoke", "cpu", "paper")


@dataclass
class Stage1Config:
    """Generic model on all classes (Tina A.4: 50 epochs). Optimizer and augmentation are unstated: ours."""

    epochs: int = 50  # paper A.4
    lr: float = 6e-3  # Adam; measured on Mini-ImageNet-32 CNN (README, "Recipe")
    weight_decay: float = 0.0
    batch_size: int = 128  # 15 epochs on Mini-ImageNet-32: top-1 16.8% at 128 / 6e-3 vs 7.5%->13% at 256 / 3e-3
    augment: str = "flip"  # none | flip | crop-flip; crops made the 5K CNN underfit (README, "Recipe")
    schedule: str = "cosine"  # cosine (annealed to 0) | constant | wsd (constant, the last 20% annealed);
    # an un-annealed head can inflate a method's margin over classifier selection (reports/headroom.md)


@dataclass
class FinetuneConfig:
    """p-Model = generic fine-tuned on one task (Tina A.4: 10 epochs, labels remapped to task order)."""

    epochs: int = 10  # paper A.4
    lr: float = 1e-3  # Adam; not stated by the paper or its code
    weight_decay: float = 0.0
    batch_size: int = 128
    augment: str = "flip"  # none | flip | crop-flip
    shards: int = field(default=4, metadata={"cli": False})  # the zoo is built in this many independent jobs: the
    # workflow's setting (`nndiff finetune --shard/--n-shards` run one of them), not a flag of one job


@dataclass
class EvalConfig:
    batch_size: int = 1000  # test images per forward pass


def stage_config(cls: type, section: dict | None) -> Any:
    """Build a stage dataclass from a config section; unknown keys fail naming the valid ones."""
    section = dict(section or {})
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(section) - names)
    if unknown:
        raise ValueError(f"unknown {cls.__name__} keys {unknown}; valid keys: {sorted(names)}")
    return cls(**section)


def load_schema() -> dict:
    return yaml.safe_load(SCHEMA_PATH.read_text())


def validate_config(cfg: dict) -> dict:
    """Validate against the JSON Schema; the error names the offending key path."""
    try:
        jsonschema.validate(cfg, load_schema())
    except jsonschema.ValidationError as e:
        where = "/".join(str(p) for p in e.absolute_path) or "<top level>"
        raise ValueError(f"invalid config at '{where}': {e.message}") from None
    return cfg


def profile_path(profile: str) -> Path:
    if profile not in PROFILES and not Path(profile).exists():
        if "/" in profile or profile.endswith((".yaml", ".yml")):
            raise FileNotFoundError(f"{profile}: no such config file; give a YAML path or a profile {list(PROFILES)}")
        raise ValueError(f"unknown profile {profile!r}; choose one of {list(PROFILES)} or give a YAML path")
    return Path(profile) if Path(profile).exists() else CONFIG_DIR / f"{profile}.yaml"


def load_config(profile_or_path: str) -> dict:
    cfg = yaml.safe_load(profile_path(profile_or_path).read_text())
    return validate_config(cfg)


def data_root(cfg: dict) -> str | None:
    """Raw data root: $NNDIFF_DATA_ROOT overrides the config's `data_root`."""
    return os.environ.get("NNDIFF_DATA_ROOT") or cfg.get("data_root")


@dataclass
class MethodSpec:
    """One entry of the config's `methods` map: a label (the {method} wildcard), a registry name, options."""

    label: str
    method: str
    options: dict = field(default_factory=dict)
    archs: list[str] | None = None  # run only on these p-Model archs (None: every arch of the config)

    def runs_on(self, arch: str) -> bool:
        return self.archs is None or arch in self.archs


def method_specs(cfg: dict) -> list[MethodSpec]:
    specs = []
    for label, opts in (cfg.get("methods") or {}).items():
        opts = dict(opts or {})
        specs.append(MethodSpec(label, opts.pop("method", label), opts, opts.pop("archs", None)))
    return specs


def method_spec(cfg: dict, label: str) -> MethodSpec:
    for spec in method_specs(cfg):
        if spec.label == label:
            return spec
    raise ValueError(f"method {label!r} is not in the config; configured: {[s.label for s in method_specs(cfg)]}")
