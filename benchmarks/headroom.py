"""Head-room: how far fine-tuning lifts a p-Model above classifier selection, per recipe and generic schedule.

Any generator that imitates the zoo gains at most what the zoo's p-Models gain over classifier selection
(CS, slice rule) on the same tasks. That head-room depends on the p-Model recipe (epochs, lr), which neither
Tina nor its code states, and on how the generic model was trained: a generic left at a constant learning
rate has an uncalibrated head, so a part of any "personalization gain" measured against its CS is only
recalibration. This module measures both, paired over the same tasks (reports/headroom.md).
"""
from __future__ import annotations

import logging
import time
from dataclasses import replace
from pathlib import Path

import pandas as pd
import torch
from tqdm.auto import tqdm

from benchmarks import artifacts, plotting
from benchmarks.config import FinetuneConfig
from benchmarks.evaluate import evaluate, summarize
from benchmarks.train import Generic, derive_seed, finetune_task

log = logging.getLogger("nndiff.headroom")

# ----------------------------------------------------------------------------- one cell of the sweep


def classifier_selection_theta(generic: Generic, class_idx: list[int], arch=None) -> torch.Tensor:
    """CS (slice rule): the generic model with its classifier rows cut to the task, in prompt order."""
    arch = arch or generic.arch
    return arch.initial_theta(generic.state, class_idx)


def measure_cell(generic: Generic, images, tasks: list[dict], recipe: FinetuneConfig, *, seed: int,
                 device: torch.device, arch=None, features: dict | None = None) -> tuple[pd.DataFrame, list[float]]:
    """Fine-tune each task with `recipe` and score it beside CS on the task's test images.

    Returns one row per task (task_id, cs, finetuned, gain in accuracy points) and the seconds each
    p-Model took to fine-tune (kept apart: timings differ from run to run, accuracies do not).
    """
    arch = arch or generic.arch
    index = {c: i for i, c in enumerate(generic.classes)}
    cs, ft, seconds = [], [], []
    for task in tqdm(tasks, desc=f"headroom {recipe.epochs} ep lr {recipe.lr:g}", unit="p-Model"):
        idx = [index[c] for c in task["classes"]]
        cs.append(classifier_selection_theta(generic, idx, arch))
        start = time.perf_counter()
        # The zoo's seed for the task: with the zoo's recipe, this cell reproduces the zoo's p-Models.
        theta, _ = finetune_task(generic, images.train_x, images.train_y, idx, recipe,
                                 seed=derive_seed(seed, "finetune", task["id"]), device=device, arch=arch,
                                 features=(features or {}).get("train"))
        seconds.append(time.perf_counter() - start)
        ft.append(theta)
    score = {name: evaluate(generic, images.test_x, images.test_y, tasks, torch.stack(thetas), device=device,
                            arch=arch, method=name, features=(features or {}).get("test"))["accuracy"]
             for name, thetas in (("cs", cs), ("finetuned", ft))}
    df = pd.DataFrame({"task_id": [t["id"] for t in tasks], "cs": score["cs"], "finetuned": score["finetuned"]})
    df["gain"] = df["finetuned"] - df["cs"]
    return df, seconds


def run_cell(images_path, generic_path, tasks_path, *, split: str, n_tasks: int, recipe: FinetuneConfig,
             seed: int, device: torch.device, out, arch=None, features_path=None) -> pd.DataFrame:
    """One (generic, recipe) cell: CSV of per-task accuracies at `out`, per-p-Model seconds beside it."""
    from benchmarks.datasets import ImageData
    from benchmarks.tasks import get_split, load_tasks
    images, generic = ImageData.load(images_path), Generic.load(generic_path)
    tasks = get_split(load_tasks(tasks_path), split)[:n_tasks]
    if len(tasks) < 2:
        raise ValueError(f"{tasks_path}: split {split!r} has {len(tasks)} task(s); head-room needs at least 2")
    features = artifacts.load_torch(features_path) if features_path else None  # head-only archs
    df, seconds = measure_cell(generic, images, tasks, recipe, seed=seed, device=device, arch=arch, features=features)
    with artifacts.atomic_path(out) as tmp:
        df.to_csv(tmp, index=False, float_format="%.4f")
    artifacts.write_json({"seconds_per_pmodel": seconds, "recipe": recipe.__dict__,
                          "generic_top1": generic.meta.get("test_top1")}, timing_path(out))
    return df


def write_cell(images_path, generic_path, tasks_path, *, split: str, n_tasks: int, recipe: FinetuneConfig,
               seed: int, device: torch.device, out, arch_name: str | None = None, features_path=None) -> pd.DataFrame:
    """`nndiff headroom-cell`: `run_cell` with the p-Model arch `arch_name` (default the generic's), logged."""
    from benchmarks.train import pmodel_arch
    arch = pmodel_arch(Generic.load(generic_path), arch_name)
    df = run_cell(images_path, generic_path, tasks_path, split=split, n_tasks=n_tasks, recipe=recipe, seed=seed,
                  device=device, out=out, arch=arch, features_path=features_path)
    log.info("head-room %d epochs lr %g: fine-tuned - CS %+.2f over %d tasks -> %s", recipe.epochs, recipe.lr,
             df["gain"].mean(), len(df), out)
    return df


def timing_path(cell_csv) -> Path:
    """Timings live in a sidecar, so the cell's CSV is the same bytes on every run."""
    return Path(str(cell_csv)).with_suffix(".timing.json")

# ----------------------------------------------------------------------------- the report


def cell_label(epochs: int, lr: float) -> str:
    return f"e{epochs}-lr{lr:g}"


def summarize_cells(cells: list[dict]) -> pd.DataFrame:
    """cells: [{dataset, arch, schedule, epochs, lr, csv}] -> one row each: CS and fine-tuned p-Acc, the paired
    gain with its 95% CI, seconds per p-Model, and the gain against the *cosine* generic's CS on the same
    tasks (for a constant-lr generic: what is left after subtracting recalibration)."""
    frames = [pd.read_csv(c["csv"]) for c in cells]
    rows = []
    for c, df in zip(cells, frames):
        gain = summarize(df["gain"])
        secs = artifacts.read_json(timing_path(c["csv"]))["seconds_per_pmodel"]
        row = {"dataset": c["dataset"], "arch": c["arch"], "generic": c["schedule"], "epochs": c["epochs"],
               "lr": c["lr"], "tasks": gain["n"], "CS": df["cs"].mean(), "fine-tuned": df["finetuned"].mean(),
               "head-room": gain["mean"], "± 95% CI": gain["ci95"], "low": gain["mean"] - gain["ci95"],
               "s / p-Model": sum(secs) / len(secs)}
        ref = next((f for r, f in zip(cells, frames) if r["dataset"] == c["dataset"] and r["arch"] == c["arch"]
                    and r["schedule"] == "cosine"), None)
        if c["schedule"] != "cosine" and ref is not None:
            m = df.merge(ref[["task_id", "cs"]], on="task_id", suffixes=("", "_cosine"))
            vs = summarize(m["finetuned"] - m["cs_cosine"])
            row["vs cosine CS"] = f"{vs['mean']:+.2f} ± {vs['ci95']:.2f}"
        rows.append(row)
    return pd.DataFrame(rows)


def cheapest_clear(table: pd.DataFrame, dataset: str, arch: str, floor: float,
                   generic: str = "cosine") -> pd.Series | None:
    """The cheapest recipe (fewest epochs) on one generic whose head-room's lower 95% bound reaches
    `floor`; None when no recipe does."""
    t = table
    ok = t[(t.dataset == dataset) & (t.arch == arch) & (t.generic == generic) & (t.low >= floor)]
    # Cost = epochs (the same images per epoch whatever the lr); wall seconds only break ties, since they
    # depend on what else the machine was doing.
    return None if ok.empty else ok.sort_values(["epochs", "s / p-Model"]).iloc[0]


def strongest_generic(table: pd.DataFrame, dataset: str, arch: str) -> str:
    """The generic schedule whose classifier selection scores highest: the honest baseline to measure
    head-room against (a weaker CS would only inflate every method's margin)."""
    t = table[(table.dataset == dataset) & (table.arch == arch)]
    return t.groupby("generic")["CS"].mean().idxmax()


def choose(table: pd.DataFrame, dataset: str, arch: str, floor: float) -> tuple[str, pd.Series | None]:
    """The zoo recipe rule: the strongest CS's generic, then its cheapest recipe that clears `floor`."""
    generic = strongest_generic(table, dataset, arch)
    return generic, cheapest_clear(table, dataset, arch, floor, generic)


def plot(table: pd.DataFrame, out_stem: Path) -> list[Path]:
    """Head-room (with its CI) against the recipe's cost in epochs, one panel per (dataset, arch); the
    generic's schedule by colour, the lr by marker (wall seconds depend on the machine's load: in the table)."""
    plt, sns = plotting.pyplot()
    offset = {"cosine": -0.6, "constant": 0.0, "wsd": 0.6}  # side by side at the same epoch count
    t = table.assign(panel=table.dataset + " / " + table.arch, lr=[f"lr {lr:g}" for lr in table.lr],
                     x=[e + offset.get(g, 0) for e, g in zip(table.epochs, table.generic)])
    panels = list(dict.fromkeys(t.panel))
    fig, axes = plt.subplots(1, len(panels), figsize=(5.2 * len(panels), 4), squeeze=False)
    for ax, panel in zip(axes[0], panels):
        g = t[t.panel == panel]
        ax.errorbar(g["x"], g["head-room"], yerr=g["± 95% CI"], fmt="none", ecolor="0.6", zorder=0)
        sns.scatterplot(data=g, x="x", y="head-room", hue="generic", style="lr", s=70, ax=ax)
        ax.axhline(0, color="0.3", lw=0.8)
        ax.set(title=panel, xlabel="fine-tuning epochs per p-Model", ylabel="fine-tuned − CS (points, 95% CI)",
               xticks=sorted(set(g.epochs)))
        ax.legend(fontsize=7)
    fig.tight_layout()
    return plotting.save_figure(fig, out_stem)


def write_report(cells: list[dict], out, *, config: str | None = None, floor: float = 1.0) -> pd.DataFrame:
    """reports/headroom.md, its CSV and figure."""
    out = Path(out)
    table = summarize_cells(cells)
    with artifacts.atomic_path(out.with_suffix(".csv")) as tmp:
        table.to_csv(tmp, index=False, float_format="%.4f")
    figure = out.parent / "figures" / out.stem
    plot(table, figure)
    verdicts = []
    for (ds, arch), _ in table.groupby(["dataset", "arch"], sort=False):
        generic, best = choose(table, ds, arch, floor)
        verdicts.append(f"- {ds} / {arch}: the strongest classifier selection comes from the `{generic}` generic; "
                        + (f"its cheapest recipe with a lower 95% bound ≥ +{floor:g}: {best.epochs} epochs, lr "
                           f"{best.lr:g} (+{best['head-room']:.2f} ± {best['± 95% CI']:.2f}, "
                           f"{best['s / p-Model']:.1f} s per p-Model)"
                           if best is not None else f"no recipe reaches a lower 95% bound of +{floor:g}"))
    shown = table.drop(columns=["low"]).assign(lr=[f"{lr:g}" for lr in table.lr])
    if "vs cosine CS" in shown:
        shown["vs cosine CS"] = shown["vs cosine CS"].fillna("")
    text = "\n".join([
        "# Head-room over classifier selection", "",
        "Fine-tuned p-Model − classifier selection (CS, slice rule), paired over the same tasks of the zoo split,",
        "for each p-Model recipe (Adam, cosine schedule, flips; initialised from the generic model with the task's",
        "rows) and each generic-model schedule (20 epochs at the profile's lr: `cosine` to zero, `constant`, `wsd`:",
        "constant then the last 20% annealed). It bounds what any generator that imitates the zoo can gain.",
        "Rule for the zoo: the generic whose CS is strongest (the honest baseline), then its cheapest recipe whose",
        "head-room's lower 95% bound clears the floor.",
        "`vs cosine CS`: the same fine-tuned p-Models against the CS of the cosine-annealed generic, so the part",
        "of a constant-lr generic's head-room that is recalibration, not personalization, is the difference.", "",
        shown.to_markdown(index=False, floatfmt=".2f"), "",
        *verdicts, "",
        f"![head-room vs cost](figures/{figure.name}.png)", "",
        f"Figure: `figures/{figure.name}.png` (and `.svg`); its numbers are `{out.stem}.csv`.", "",
        f"{artifacts.provenance_footer(config)} Seconds: wall time per p-Model in one single-threaded job, on a machine shared with other jobs (a cost "
        "indication only: the rule ranks recipes by epochs).", ""])
    artifacts.write_text(text, out)
    return table


def sweep_cells(cfg: dict) -> list[dict]:
    """The cells a config's `headroom:` section asks for (dataset, arch, schedule, epochs, lr)."""
    h = cfg.get("headroom") or {}
    cells = []
    for ds in h.get("datasets", list(cfg["datasets"])):
        for arch in h.get("archs", [cfg["archs"][0]]):
            for schedule, recipes in h.get("recipes", {}).items():
                for r in recipes:
                    cells.append({"dataset": ds, "arch": arch, "schedule": schedule, "epochs": int(r["epochs"]),
                                  "lr": float(r["lr"])})
    return cells


def recipe_from(base: FinetuneConfig, epochs: int, lr: float) -> FinetuneConfig:
    return replace(base, epochs=epochs, lr=lr)


def cells_from_specs(specs: list[str], csvs: list[str]) -> list[dict]:
    """The cells of `write_report` from `nndiff headroom-report`'s `--cell DATASET:ARCH:SCHEDULE:EPOCHS:LR`,
    one per CSV in the same order."""
    cells = [dict(zip(("dataset", "arch", "schedule", "epochs", "lr"), spec.split(":")), csv=csv)
             for spec, csv in zip(specs, csvs)]
    if len(specs) != len(csvs):
        raise ValueError("give one --cell DATASET:ARCH:SCHEDULE:EPOCHS:LR per CSV, in the same order")
    for c in cells:
        c["epochs"], c["lr"] = int(c["epochs"]), float(c["lr"])
    return cells
