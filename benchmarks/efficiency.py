"""Time to get one personalized model (Tina model card: fine-tune 94.35 s, TAPER 18.10 s, Tina 4.88 s).

Everything is measured in one process on one machine: fine-tuning from the generic model with the zoo's
recipe, and each fitted method's `generate`, for one task alone and for a batch of tasks.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import torch

from benchmarks import artifacts
from benchmarks.config import FinetuneConfig
from benchmarks.train import derive_seed, finetune_task

# Tina's model card; its Tina samples with DDPM-1000 (the `tina` label of the paper profile).
PAPER_SECONDS = {"fine-tune": 94.35, "taper": 18.10, "tina": 4.88, "tina@ddpm-1000": 4.88}


@dataclass
class Timed:
    label: str
    mode: str  # "single" (one task per call) or "batched" (all tasks in one call)
    n_models: int
    seconds: float

    @property
    def per_model(self) -> float:
        return self.seconds / self.n_models


def time_finetune(generic, train_x, train_y, tasks: list[dict], cfg: FinetuneConfig, *, seed: int, device,
                  arch=None, features=None) -> Timed:
    index = {c: i for i, c in enumerate(generic.classes)}
    start = time.perf_counter()
    for t in tasks:
        finetune_task(generic, train_x, train_y, [index[c] for c in t["classes"]], cfg,
                      seed=derive_seed(seed, "finetune", t["id"]), device=device, arch=arch, features=features)
    return Timed("fine-tune", "single", len(tasks), time.perf_counter() - start)


def time_generate(label: str, method, tasks, n_single: int) -> list[Timed]:
    """`method` is set up on its fitted workdir. Single: one call per task; batched: one call for all."""
    from methods.base import Tasks
    method.generate(Tasks(tasks.ids[:1], tasks.classes[:1]))  # warm-up: loads state and encoders once
    start = time.perf_counter()
    for i in range(n_single):
        method.generate(Tasks(tasks.ids[i:i + 1], tasks.classes[i:i + 1]))
    single = Timed(label, "single", n_single, time.perf_counter() - start)
    start = time.perf_counter()
    method.generate(tasks)
    return [single, Timed(label, "batched", len(tasks), time.perf_counter() - start)]


def write_efficiency(rows: list[Timed], out: str, *, header: str) -> pd.DataFrame:
    df = pd.DataFrame([{"method": r.label, "mode": r.mode, "models": r.n_models, "seconds": r.seconds,
                        "seconds per model": r.per_model,
                        "paper (s)": PAPER_SECONDS.get(r.label, "") if r.mode == "single" else ""}
                       for r in rows])
    text = "\n".join(["# Efficiency: seconds to get one personalized model", "",
                      "Measured in one run on one machine. `single`: one task per call (what a user waits for);",
                      "`batched`: all tasks in one call, divided by their number. The paper's figures (model card)",
                      "were taken on a GPU with hardware unstated; compare the ordering, not the seconds.", "",
                      df.to_markdown(index=False, floatfmt=".3f"), "", header, ""])
    artifacts.write_text(text, out)
    with artifacts.atomic_path(Path(out).with_suffix(".csv")) as tmp:  # the numbers, for the claims ledger
        df.to_csv(tmp, index=False)
    return df


def run_efficiency(files, tasks_path, methods: list[dict], cfg: FinetuneConfig, *, split: str, n_single: int,
                   n_finetune: int, seed: int, device, out) -> pd.DataFrame:
    """`nndiff efficiency`: seconds per personalized model, all in this one process: fine-tuning `n_finetune`
    tasks of `split`, then each fitted method of `methods` ({"label", "method", "options", "workdir"}).
    `files`: the benchmark's files (benchmarks.methods_runner.BenchFiles)."""
    from benchmarks.methods_runner import build
    from benchmarks.tasks import get_split, load_tasks
    from methods.base import Tasks
    records = get_split(load_tasks(tasks_path), split)
    bench = files.load(seed=seed, device=device)
    rows = [time_finetune(bench.generic, bench.train_x, bench.train_y, records[:n_finetune], cfg, seed=seed,
                          device=device, arch=bench.arch, features=bench.train_features)]
    tasks = Tasks.from_records(records)
    for spec in methods:
        options = {k: v for k, v in spec.get("options", {}).items() if k != "control"}  # a control times alike
        method = build(spec["method"], options).setup(bench, spec["workdir"])
        rows += time_generate(spec["label"], method, tasks, n_single)
    prov = artifacts.provenance()
    return write_efficiency(rows, out, header=f"Split `{split}`, {len(tasks)} tasks, seed {seed}; "
                            f"{prov['hardware']}; commit `{prov['commit']}`.")
