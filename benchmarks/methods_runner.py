"""Fit and generate with one method (`nndiff fit`, `nndiff generate`): the Bench it sees, built from the DAG's
files, and the `<workdir>.partial` swap that keeps a failed fit away from the last complete state.

The harness reaches a method only through `methods.registry` and `methods.base` (tests/test_layering.py).
"""
from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable

import torch

from benchmarks import artifacts

log = logging.getLogger("nndiff.methods_runner")


@dataclass(frozen=True)
class BenchFiles:
    """The files (and encoder) a Bench is assembled from: the method's shared flags of `fit` and `generate`."""

    images: str | None
    generic: str
    zoo: str | None
    features: str | None = None
    encoder: dict | None = None  # text encoder spec, e.g. {"name": "minilm"}
    encoder_cache: str | None = None
    arch: str | None = None  # p-Model arch; None: the generic's

    def load(self, *, seed: int, device: torch.device):
        """The training side of the benchmark (methods.base.Bench) these files describe."""
        from benchmarks.datasets import ImageData
        from benchmarks.train import Generic, load_features, pmodel_arch
        from methods.base import Bench, Zoo
        data, generic = ImageData.load(self.images), Generic.load(self.generic)
        zoo = Zoo.load(self.zoo)
        return Bench(arch=pmodel_arch(generic, self.arch), generic=generic, zoo=zoo, train_x=data.train_x,
                     train_y=data.train_y, class_names=list(data.classes), num_classes=len(zoo.classes[0]),
                     train_features=load_features(self.features, "train"), seed=seed, device=device,
                     encoder_cache=Path(self.encoder_cache) if self.encoder_cache else None,
                     text_encoder_spec=self.encoder, dataset=data.meta.get("kind", ""))


def build(method: str, options: dict | None):
    """The registered method `method` with its Config from `options` (methods.registry)."""
    from methods.registry import build_method
    return build_method(method, options)

# ----------------------------------------------------------------------------- fit


def partial_workdir(workdir: Path) -> Path:
    """Where `fit` writes: `<workdir>.partial`, moved onto `workdir` only once the fit is complete
    (`put_in_place`), so a failed or killed fit leaves the last complete state where `generate` reads it.
    The partial dir outlives a failure, so a method's resume checkpoint in it serves the next try. It starts
    with the complete state's `state.pt`, hard-linked (`save_state` replaces files, never writes into them), so
    a method that finds itself fitted with these options already (Tina) does not train again."""
    partial, old = workdir.with_name(f"{workdir.name}.partial"), workdir.with_name(f"{workdir.name}.old")
    if old.is_dir() and not workdir.exists():  # a move cut between its two renames: `old` is the complete state
        old.rename(workdir)
    partial.mkdir(parents=True, exist_ok=True)
    for name in ("state.pt", f"state.pt{artifacts.TIMING_SUFFIX}"):
        src, dst = workdir / name, partial / name
        if src.is_file() and not dst.exists():
            try:
                os.link(src, dst)
            except FileExistsError:  # another torchrun rank linked it first
                pass
            except OSError:  # no hard links on this file system: a copy, put in place atomically
                artifacts.write_bytes(src.read_bytes(), dst)
    return partial


def put_in_place(partial: Path, workdir: Path) -> None:
    """Replace `workdir` by the complete `partial`; the previous state goes aside first and is removed last."""
    import shutil
    old = workdir.with_name(f"{workdir.name}.old")
    shutil.rmtree(old, ignore_errors=True)
    if workdir.exists():
        workdir.rename(old)
    partial.rename(workdir)
    shutil.rmtree(old, ignore_errors=True)


def fit(method: str, options: dict, files: BenchFiles, workdir, *, seed: int, device: torch.device,
        out=None) -> None:
    """`nndiff fit`: fit `method` in `<workdir>.partial`, then put it in place of `workdir`; rank 0 writes the
    marker `out` (default `<workdir>/fit.json`: method, options, provenance) and its timing sidecar."""
    bench, instance = files.load(seed=seed, device=device), build(method, options)
    start = time.perf_counter()
    workdir = Path(workdir)
    partial = partial_workdir(workdir)  # a failed fit never touches the complete state in `workdir`
    instance.setup(bench, partial)
    instance.fit(bench, partial)
    if int(os.environ.get("RANK", "0")) != 0:  # under torchrun, rank 0 writes
        return
    put_in_place(partial, workdir)
    seconds, out = time.perf_counter() - start, out or workdir / "fit.json"
    artifacts.write_timing(out, seconds=seconds)
    artifacts.write_json({"method": method, "options": options, **artifacts.provenance(options)}, out)
    log.info("fitted %s in %.1fs -> %s", method, seconds, workdir)

# ----------------------------------------------------------------------------- generate


def generation_options(options: dict | None, *, control: str | None = None, sampler: str | None = None,
                       sample_steps: int | None = None) -> tuple[dict, str | None]:
    """The method's options and the condition control of a `generate`. A control (config variants' `control`,
    benchmarks/controls.py) is the harness's, never the method's: taken out of the options before the method is
    built (the workflow passes it in the options); `control` must agree with it. `sampler` / `sample_steps` set the
    method's options of those names."""
    from benchmarks.controls import check_control
    options = dict(options or {})
    in_options = check_control(options.pop("control", None))
    if control and in_options and control != in_options:
        raise ValueError(f"--control {control!r} contradicts the options' control {in_options!r}")
    for key, value in (("sampler", sampler), ("sample_steps", sample_steps)):
        if value is not None:
            options[key] = value
    return options, control or in_options


def generate(method: str, options: dict | None, files: BenchFiles, workdir, *, out, setup_device: Callable,
             tasks: str | None = None, split: str | None = None, control: str | None = None,
             sampler: str | None = None, sample_steps: int | None = None, prompt: str | None = None,
             image_prompt: list[str] | None = None, descriptions: bool = False, seed: int = 0) -> None:
    """`nndiff generate`: vectors of a task split, or with `prompt` / `image_prompt` one standalone p-Model file.
    `setup_device()` gives the device; it is called once the flags are known to fit, so a bad flag fails first."""
    options, control = generation_options(options, control=control, sampler=sampler, sample_steps=sample_steps)
    if prompt is not None or image_prompt:
        if control:
            raise ValueError("condition controls apply to task splits (--tasks/--split), not to --prompt")
        return generate_pmodel(method, options, files, workdir, out=out, setup_device=setup_device, prompt=prompt,
                               image_prompt=image_prompt, descriptions=descriptions, seed=seed)
    flags = {"--images": files.images, "--zoo": files.zoo, "--tasks": tasks, "--split": split}
    missing = [flag for flag, value in flags.items() if value is None]
    if missing:
        raise ValueError(f"generate needs {' '.join(missing)} (or --prompt for one standalone p-Model)")
    files = replace(files, encoder=files.encoder or {"name": "minilm"})
    generate_split(method, options, files, workdir, tasks, split, out=out, control=control, seed=seed,
                   device=setup_device())


def generate_split(method: str, options: dict, files: BenchFiles, workdir, tasks_path, split: str, *, out,
                   control: str | None, seed: int, device: torch.device) -> None:
    """The vectors of every task of `split`, in the split's order, checked (shape, finite) and saved with the
    generation seconds as the timing sidecar; a condition control changes the prompts, never the task order."""
    from benchmarks.controls import generate_with_control
    from benchmarks.evaluate import check_vectors
    from benchmarks.tasks import get_split, load_tasks
    from methods.base import Tasks
    bench, generator = files.load(seed=seed, device=device), build(method, options)
    generator.setup(bench, workdir)
    tasks = Tasks.from_records(get_split(load_tasks(tasks_path), split))
    start = time.perf_counter()
    theta = generate_with_control(generator, tasks, control, seed=seed, label=method)  # tasks: true order
    seconds = time.perf_counter() - start
    k = len(tasks.classes[0]) if len(tasks) and generator.output_space == "task" else None  # padded-<k>: k-class
    n_params = generator.bench.arch.layout(k).n_params if k else generator.layout.n_params
    check_vectors(theta, len(tasks), n_params, method=method, task_ids=tasks.ids)
    artifacts.write_timing(out, seconds=seconds)
    artifacts.save_torch({"method": method, "split": split, "task_ids": tasks.ids,
                          "output_space": generator.output_space, "theta": theta.detach().cpu().float(),
                          **({"control": control} if control else {})}, out)
    log.info("generated %d p-Models with %s%s in %.2fs -> %s", len(tasks), method,
             f" under the {control!r} condition control" if control else "", seconds, out)


def generate_pmodel(method: str, options: dict, files: BenchFiles, workdir, *, out, setup_device: Callable,
                    prompt: str | None, image_prompt: list[str] | None, descriptions: bool, seed: int) -> None:
    """`generate --prompt`: one standalone p-Model file from a text or image prompt (benchmarks/text2model.py).
    The encoder defaults to the one the method was fitted with."""
    from benchmarks import text2model
    if method != "tina":
        raise ValueError(f"--prompt and --image-prompt generate with --method tina, got {method!r}")
    device = setup_device()
    fitted = text2model._promptable(method).fitted_bench(workdir)  # its encoder, class counts and sampler
    bench = text2model.load_bench(files.generic, workdir, encoder=files.encoder, encoder_cache=files.encoder_cache,
                                  seed=seed, device=device, fitted=fitted)
    path = text2model.generate_pmodel(workdir, bench, text2model.parse_prompt(prompt or ""), out, fitted=fitted,
                                      image_prompt=image_prompt, descriptions=descriptions, options=options)
    log.info("generated a p-Model with tina -> %s", path)
