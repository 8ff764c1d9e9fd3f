"""Diffusion over parameter vectors with diffusers' schedulers (shared by Tina and Cond P-Diff).

The denoiser and the scheduler never import each other: they meet here, in the training step
(`add_noise`) and in the sampling loop (`set_timesteps` / `step`), as in DiT's train.py and sample.py.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from torch import Tensor

# diffusers' scheduler of each sampler, imported when a scheduler is made: importing diffusers costs seconds
# (it loads torch._dynamo), which every `snakemake` call would pay when it checks the methods' options.
SAMPLERS = {"ddpm": "DDPMScheduler", "ddim": "DDIMScheduler", "dpm-solver": "DPMSolverMultistepScheduler"}
_SEEDED = ("ddpm", "ddim")  # schedulers whose step takes a generator (and that clip x0 unless told not to)


@dataclass
class DiffusionConfig:
    """Noise schedule and sampler. Defaults follow the official Tina code (docs/design-notes.md §6.4)."""

    train_steps: int = 1000  # T (paper: DDPM, 1000 steps)
    beta_schedule: str = "linear"  # linear beta 1e-4 -> 0.02, as Tina's / G.pt's create_diffusion
    beta_start: float = 1e-4
    beta_end: float = 0.02
    prediction: str = "sample"  # "sample": x0 prediction (Tina eq. 1); "epsilon" (Cond P-Diff)
    sampler: str = "ddim"  # ddpm | ddim | dpm-solver; DDIM-10 ~ DDPM-1000 on these tasks (docs/design-notes.md §5)
    sample_steps: int | None = None  # None: train_steps for ddpm (the paper's DDPM-1000), 50 for the fast samplers

    def steps_for(self, sampler: str) -> int:
        """Reverse steps of `sampler`: `sample_steps` when set (DDPM too: diffusers spaces its timesteps)."""
        return self.sample_steps or (self.train_steps if sampler == "ddpm" else 50)


def make_scheduler(cfg: DiffusionConfig, sampler: str | None = None):
    sampler = sampler or cfg.sampler
    if sampler not in SAMPLERS:
        raise ValueError(f"unknown sampler {sampler!r}; choose one of {sorted(SAMPLERS)}")
    kwargs = dict(num_train_timesteps=cfg.train_steps, beta_schedule=cfg.beta_schedule, beta_start=cfg.beta_start,
                  beta_end=cfg.beta_end, prediction_type=cfg.prediction)
    if sampler in _SEEDED:
        kwargs["clip_sample"] = False  # weights are not images in [-1, 1]
    import diffusers
    return getattr(diffusers, SAMPLERS[sampler])(**kwargs)


def noised(scheduler, x0: Tensor, generator: torch.Generator | None = None) -> tuple[Tensor, Tensor, Tensor]:
    """Forward process q(x_t | x_0) at uniformly drawn t. Returns (x_t, t [B], noise)."""
    b = x0.shape[0]
    t = torch.randint(0, scheduler.config.num_train_timesteps, (b,), generator=generator).to(x0.device)
    noise = torch.randn(x0.shape, generator=generator).to(x0.device)
    return scheduler.add_noise(x0, noise, t), t, noise


def target(cfg: DiffusionConfig, x0: Tensor, noise: Tensor) -> Tensor:
    """What the denoiser regresses: x0 for signal prediction, the noise for epsilon prediction."""
    return x0 if cfg.prediction == "sample" else noise


@torch.no_grad()
def sample(denoise: Callable[[Tensor, Tensor], Tensor], shape: tuple[int, ...], cfg: DiffusionConfig, *,
           sampler: str | None = None, steps: int | None = None, generator: torch.Generator | None = None,
           device: torch.device = torch.device("cpu"), noise: Tensor | None = None) -> Tensor:
    """Run the reverse process from pure noise. `denoise(x_t, t[B])` returns the model's prediction
    (x0 or epsilon, as `cfg.prediction`). Many tasks sample in one batch. `noise` ([*shape], unit
    Gaussian) fixes x_T, e.g. drawn per task so a task's sample does not depend on its batch; by default
    x_T is drawn from `generator`."""
    sampler = sampler or cfg.sampler
    scheduler = make_scheduler(cfg, sampler)
    scheduler.set_timesteps(steps or cfg.steps_for(sampler))
    if noise is not None and tuple(noise.shape) != tuple(shape):
        raise ValueError(f"noise has shape {tuple(noise.shape)}, expected {tuple(shape)}")
    x = (torch.randn(shape, generator=generator) if noise is None else noise).to(device) * scheduler.init_noise_sigma
    for t in scheduler.timesteps:
        tb = torch.full((shape[0],), int(t), device=device, dtype=torch.long)
        out = denoise(scheduler.scale_model_input(x, t), tb)
        kwargs = {"generator": generator} if sampler in _SEEDED else {}
        x = scheduler.step(out, t, x, **kwargs).prev_sample
    return x
