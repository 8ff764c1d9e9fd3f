"""Three figures drawn from what the DAG already makes (config `report.figures`, settings in benchmarks/workflow/paper_figures.py).

Each writes `reports/<name>.md`, the plotted numbers as `reports/figures/<name>.csv` and the figure as
`reports/figures/<name>.png` and `.svg` (`nndiff figure <name> INPUTS... --config C --out reports/<name>.md`),
with the provenance footer of every report. Intervals are the 95% t-intervals of `benchmarks.evaluate.summarize`
over tasks, as in the tables.

- `training-curve`: Tina's training loss vs step for each fitted label of a dataset and arch (the base fit and
  its fit-seed refits), read from the fit's state (`<workdir>/state.pt`: the mean loss of each window of
  `log_every` steps, as the fit logs it) beside its `fit.json`; inputs: those `fit.json` files.
- `samplers`: p-Acc (mean ± 95% CI over the tasks of a split, OOD by default) vs sampling steps, one line per
  sampler (ddpm, ddim, dpm-solver), and p-Acc vs seconds per generated p-Model (the generate job's wall time,
  from the `.timing.json` sidecar of `generated/<split>.pt`, else its Snakemake benchmark TSV); sampler and
  steps come from the config (the variants' options and the method's defaults), not from label strings.
- `fig6c` (Tina Fig. 6c): Tina trained on class names, prompted at test time with names or with natural-language
  descriptions of the classes (Table 7's rows `tina` and `tina@desc`), ID and OOD, beside the paper's numbers.
"""
from __future__ import annotations

import math
import re
from pathlib import Path

import pandas as pd
import yaml

from benchmarks import artifacts, plotting
from benchmarks import workflow as wf
from benchmarks.evaluate import paired, summarize
from benchmarks.report import load_results

RESULT = re.compile(r"data/(?P<dataset>[^/]+)/(?P<arch>[^/]+)/results/(?P<label>[^/]+)/(?P<split>[^/]+)\.csv$")
FIT = re.compile(r"data/(?P<dataset>[^/]+)/(?P<arch>[^/]+)/methods/(?P<label>[^/]+)/fit\.json$")
SAMPLER_ORDER = ("ddpm", "ddim", "dpm-solver")
# Tina Fig. 6c draws Table 7's class-name-trained rows (CNN on CIFAR-100; PROTOCOL.md): names -> names and
# names -> descriptions. An ablation's `paper:` for those labels overrides these.
PAPER_FIG6C = {"names": {"id": 67.27, "ood": 67.21}, "descriptions": {"id": 46.93, "ood": 46.77}}
PAPER_FIG6C_SOURCE = "Tina Table 7 (the numbers of Fig. 6c's bars), CNN on CIFAR-100"

# ----------------------------------------------------------------------------- helpers


def _config(config: str | None, figure: str) -> dict:
    if not config:
        raise ValueError(f"{figure}: give --config: the figure reads its labels, samplers and steps from it")
    return yaml.safe_load(Path(config).read_text()) or {}


def _match(pattern: re.Pattern, path, figure: str, expected: str) -> re.Match:
    m = pattern.search(str(Path(path)).replace("\\", "/"))
    if not m:
        raise ValueError(f"{figure}: {path} does not match {expected}")
    return m


def _given(paths, pattern: re.Pattern, figure: str, expected: str) -> dict[tuple, Path]:
    """(dataset, arch, label[, split]) -> the given path, each checked to exist (one line naming it if not)."""
    out = {}
    for p in paths:
        key = _match(pattern, p, figure, expected).groups()
        if not Path(p).is_file():
            raise FileNotFoundError(f"{figure}: {p}: no such file")
        out[key] = Path(p)
    return out


def _require(given: dict, key: tuple, path: str, figure: str, what: str) -> Path:
    if key not in given:
        raise FileNotFoundError(f"{figure}: {path}: not given ({what}); build it first (`snakemake {path}`)")
    return given[key]


def _stem(out: Path) -> Path:
    stem = out.parent / "figures" / out.stem
    stem.parent.mkdir(parents=True, exist_ok=True)
    return stem


def _write_csv(table: pd.DataFrame, stem: Path) -> None:
    with artifacts.atomic_path(stem.with_suffix(".csv")) as tmp:
        table.to_csv(tmp, index=False, float_format="%.6g")


def _fmt(mean: float, ci: float, n: int | None = None) -> str:
    ci = 0.0 if ci is None or math.isnan(ci) else ci
    return f"{mean:.2f} ± {ci:.2f}" + (f" (n={n})" if n is not None else "")

# ----------------------------------------------------------------------------- training curve


def loss_history(state: dict) -> pd.DataFrame:
    """A fit's saved loss history as (step, loss): `losses[i]` is the mean training loss of the steps since the
    previous entry, logged every `log_every` steps and at the last step (methods/tina.py). When the count does not
    fit that schedule (a resumed fit that changed `log_every`), the entries are spread evenly over the steps."""
    losses = [float(x) for x in state["losses"]]
    total, every = int(state["step"]), int((state.get("config") or {}).get("log_every") or 0)
    if every and len(losses) == math.ceil(total / every):
        steps = [min((i + 1) * every, total) for i in range(len(losses))]
    else:
        steps = [round(total * (i + 1) / len(losses)) for i in range(len(losses))]
    return pd.DataFrame({"step": steps, "loss": losses})


def read_state(path: Path, label: str) -> dict:
    """A fit's state, memory-mapped (a paper-scale denoiser's weights are never read in full for its losses);
    a missing or broken file fails with one line naming it."""
    import torch
    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception:  # not a zip archive, truncated, missing: artifacts says which, naming the file
        return artifacts.load_torch(path, what=f"the state of the fit of {label!r} (`nndiff fit`)")


def training_curve_table(histories: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """Long table (label, step, loss) in the order given."""
    return pd.concat([h.assign(label=label)[["label", "step", "loss"]] for label, h in histories.items()],
                     ignore_index=True)


def training_curve(results: list[str], out, *, config: str | None = None) -> pd.DataFrame:
    """reports/training-curve.md with figures/training-curve.{csv,png,svg}; `results` are the fits' `fit.json`
    (data/<dataset>/<arch>/methods/<label>/fit.json), each fit's state in `state/state.pt` beside it."""
    out, figure = Path(out), "training-curve"
    cfg = _config(config, figure)
    spec = wf.training_curve_spec(cfg)
    given = _given(results, FIT, figure, "data/<dataset>/<arch>/methods/<label>/fit.json")
    histories, rows = {}, []
    for label in spec["labels"]:
        path = f"data/{spec['dataset']}/{spec['arch']}/methods/{label}/fit.json"
        fit = _require(given, (spec["dataset"], spec["arch"], label), path, figure, f"the fit of {label!r}")
        state_path = fit.parent / "state" / "state.pt"
        state = read_state(state_path, label)
        if not state.get("losses"):
            raise ValueError(f"{figure}: {state_path}: holds no loss history (`losses`); refit {label!r}")
        h = histories[label] = loss_history(state)
        seconds = artifacts.read_timing(state_path).get("seconds")
        options = (state.get("config") or {})
        rows.append({"label": label, "seed": options.get("seed"), "steps": int(state["step"]),
                     "log every": options.get("log_every"), "first": h["loss"].iloc[0], "min": h["loss"].min(),
                     "last": h["loss"].iloc[-1], "last / first": h["loss"].iloc[-1] / h["loss"].iloc[0],
                     "fit seconds": seconds})
    table = training_curve_table(histories)
    stem = _stem(out)
    _write_csv(table, stem)
    where = f"{spec['dataset']} / {spec['arch']}"
    plt, sns = plotting.pyplot()
    fig, ax = plt.subplots(figsize=(6.5, 4))
    sns.lineplot(data=table, x="step", y="loss", hue="label", hue_order=list(histories), marker="." if
                 len(table) < 400 else None, errorbar=None, ax=ax)
    ax.set(yscale="log", xlabel="training step", ylabel="training loss (window mean, log scale)",
           title=f"{spec['method']} training loss, {where}")
    fig.tight_layout()
    plotting.save_figure(fig, stem)
    summary = pd.DataFrame(rows)
    summary["seed"] = summary["seed"].map(lambda s: "profile's" if s is None or s != s else str(int(s)))
    summary["fit seconds"] = summary["fit seconds"].map(lambda s: "n/a" if s is None or s != s else f"{s:.0f}")
    for col in ("first", "min", "last"):
        summary[col] = summary[col].map("{:.4g}".format)
    summary["last / first"] = summary["last / first"].map("{:.3f}".format)
    lines = [
        f"# Training curve: {spec['method']} on {where}", "",
        f"Training loss of each fit vs step: the mean loss of each window of `log every` steps, as the fit logs it "
        f"and keeps it in its state (`data/{spec['dataset']}/{spec['arch']}/methods/<label>/state/state.pt`, key "
        "`losses`). " + ("The labels are those of the config's `report.figures.training-curve.labels`." if
                          (wf.figures(cfg).get("training-curve") or {}).get("labels") else
                          "The labels are the base fit and its refits that change only the fit seed (ablation rows "
                          "`{seed: N}`)."), "",
        summary.to_markdown(index=False), "",
        f"![training-curve](figures/{stem.name}.png)", "",
        f"Plotted numbers: `figures/{stem.name}.csv` (label, step, loss). {artifacts.provenance_footer(config)}", ""]
    artifacts.write_text("\n".join(lines), out)
    return table

# ----------------------------------------------------------------------------- samplers


def generate_seconds(result: Path, label: str, split: str) -> tuple[float, str]:
    """Wall seconds of the generate job behind a result CSV and where they come from: the `.timing.json` sidecar
    of `generated/<split>.pt` (method time only), else the Snakemake benchmark TSV of the job (whole process)."""
    arch_dir = result.parent.parent.parent  # data/<dataset>/<arch>
    timing = artifacts.read_timing(arch_dir / "methods" / label / "generated" / f"{split}.pt")
    if "seconds" in timing:
        return float(timing["seconds"]), "sidecar"
    tsv = arch_dir.parent.parent / "benchmarks" / "generate" / f"{arch_dir.parent.name}-{arch_dir.name}-{label}-{split}.tsv"
    if tsv.is_file():
        return float(pd.read_csv(tsv, sep="\t")["s"].iloc[-1]), "benchmark tsv"
    return math.nan, "none"


def samplers_table(df: pd.DataFrame, sampling: dict[str, tuple[str, int]],
                   seconds: dict[str, tuple[float, str]] | None = None) -> pd.DataFrame:
    """One row per label, grouped by sampler (ddpm, ddim, dpm-solver, then others) and sorted by steps: n, mean,
    std and 95% CI of p-Acc over the tasks, and the generate job's seconds per p-Model."""
    rows = []
    for label, (sampler, steps) in sampling.items():
        s = summarize(df.loc[df.method == label, "accuracy"])
        total, source = (seconds or {}).get(label, (math.nan, "none"))
        rows.append({"sampler": sampler, "steps": steps, "label": label, "n": s["n"], "mean": s["mean"],
                     "std": s["std"], "ci95": s["ci95"], "seconds": total,
                     "seconds per p-Model": total / s["n"] if s["n"] else math.nan, "timing": source})
    order = {name: i for i, name in enumerate(SAMPLER_ORDER)}
    table = pd.DataFrame(rows)
    table["_o"] = table["sampler"].map(lambda x: order.get(x, len(order)))
    return table.sort_values(["_o", "sampler", "steps", "label"], kind="stable").drop(columns="_o").reset_index(drop=True)


def plot_samplers(table: pd.DataFrame, stem: Path, title: str) -> list[Path]:
    """Left: p-Acc vs steps, one line per sampler, 95% CI bars; right: p-Acc vs seconds per p-Model."""
    plt, sns = plotting.pyplot()
    from matplotlib.ticker import NullFormatter, ScalarFormatter
    hue = list(dict.fromkeys(table["sampler"]))
    colors = dict(zip(hue, sns.color_palette(n_colors=len(hue))))
    timed = table["seconds per p-Model"].notna().any()
    fig, axes = plt.subplots(1, 2 if timed else 1, figsize=(11 if timed else 5.5, 4), squeeze=False)
    panels = [("steps", "sampling steps (log scale)")] + ([("seconds per p-Model", "seconds per generated p-Model "
                                                           "(log scale)")] if timed else [])
    for ax, (x, xlabel) in zip(axes[0], panels):
        data = table[table[x].notna()]
        sns.lineplot(data=data, x=x, y="mean", hue="sampler", hue_order=hue, palette=colors, marker="o",
                     errorbar=None, ax=ax)
        for sampler, g in data.groupby("sampler", sort=False):
            ax.errorbar(g[x], g["mean"], yerr=g["ci95"].fillna(0.0), fmt="none", ecolor=colors[sampler], capsize=3)
        ax.set(xscale="log", xlabel=xlabel, ylabel="p-Acc (%), mean ± 95% CI")
        if x == "steps":  # plain numbers on the log axis: the step counts themselves
            ax.xaxis.set_minor_formatter(NullFormatter())
            ax.xaxis.set_major_formatter(ScalarFormatter())
            ax.set_xticks(sorted(set(data["steps"])))
    axes[0][0].set_title("p-Acc vs sampling steps")
    if timed:
        axes[0][1].set_title("p-Acc vs generation time")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return plotting.save_figure(fig, stem)


def samplers(results: list[str], out, *, config: str | None = None) -> pd.DataFrame:
    """reports/samplers.md with figures/samplers.{csv,png,svg}: the method and its sampler variants (config
    `report.figures.samplers`) on one split."""
    out, figure = Path(out), "samplers"
    cfg = _config(config, figure)
    spec = wf.samplers_spec(cfg)
    given = _given(results, RESULT, figure, "data/<dataset>/<arch>/results/<label>/<split>.csv")
    sampling, paths, seconds = {}, [], {}
    for label in spec["labels"]:
        sampler, steps = sampling[label] = wf.sampler_steps(cfg, label)
        path = f"data/{spec['dataset']}/{spec['arch']}/results/{label}/{spec['split']}.csv"
        p = _require(given, (spec["dataset"], spec["arch"], label, spec["split"]), path, figure,
                     f"the result of {label!r}: {sampler}, {steps} steps")
        paths.append(str(p))
        seconds[label] = generate_seconds(p, label, spec["split"])
    df = load_results(paths)
    table = samplers_table(df, sampling, seconds)
    stem = _stem(out)
    _write_csv(table, stem)
    where = f"{spec['dataset']} / {spec['arch']}, {spec['split']} tasks"
    plot_samplers(table, stem, f"{spec['method']}: samplers and steps, {where}")
    shown = pd.DataFrame({
        "sampler": table["sampler"], "steps": table["steps"], "label": table["label"].map("`{}`".format),
        "p-Acc": [_fmt(m, c, n) for m, c, n in zip(table["mean"], table["ci95"], table["n"])],
        "s / p-Model": table["seconds per p-Model"].map(lambda s: "n/a" if s != s else f"{s:.4f}"),
        "timing": table["timing"]})
    best = table.loc[table["mean"].idxmax()]
    ref = next((label for label in spec["labels"] if label == spec["method"]), None)
    notes = []
    if ref is not None and ref != best["label"]:
        d = paired(df[df.method == best["label"]], df[df.method == ref])
        notes.append(f"Best mean: `{best['label']}` ({best['sampler']}, {best['steps']} steps), "
                     f"{d['mean']:+.2f} ± {0.0 if d['ci95'] != d['ci95'] else d['ci95']:.2f} points vs `{ref}` "
                     f"on the same tasks (paired, n={d['n']}).")
    elif ref is not None:
        notes.append(f"Best mean: `{ref}` itself ({best['sampler']}, {best['steps']} steps).")
    lines = [
        f"# Samplers: p-Acc vs sampling steps and generation time ({spec['method']})", "",
        f"One fit of `{spec['method']}`, generated with each sampler and step count of the config (`{spec['method']}` "
        f"and its variants that change only `sampler` / `sample_steps`), {where}. p-Acc: mean ± 95% CI over the "
        "tasks. Seconds per p-Model: the generate job's wall time over the split divided by its tasks (`sidecar`: "
        "the method's own time, `generated/<split>.pt.timing.json`; `benchmark tsv`: the whole job, Snakemake's "
        "benchmark file).", "",
        shown.to_markdown(index=False), "", *notes, *([""] if notes else []),
        f"![samplers](figures/{stem.name}.png)", "",
        f"Plotted numbers: `figures/{stem.name}.csv`. {artifacts.provenance_footer(config)}", ""]
    artifacts.write_text("\n".join(lines), out)
    return table

# ----------------------------------------------------------------------------- Fig. 6c


def fig6c_table(df: pd.DataFrame, names: str, descriptions: str, splits: list[str],
                paper: dict[str, dict[str, float]] | None = None) -> pd.DataFrame:
    """One row per (split, prompt): n, mean, std, 95% CI and the paper's value; the descriptions rows carry the
    paired difference to names on the same tasks."""
    paper = paper or PAPER_FIG6C
    rows = []
    for split in splits:
        g = df[df.split == split]
        for prompt, label in (("names", names), ("descriptions", descriptions)):
            s = summarize(g.loc[g.method == label, "accuracy"])
            row = {"split": split, "prompt": prompt, "label": label, "n": s["n"], "mean": s["mean"], "std": s["std"],
                   "ci95": s["ci95"], "paper": paper.get(prompt, {}).get(split, math.nan)}
            if prompt == "descriptions":
                d = paired(g[g.method == descriptions], g[g.method == names])
                row.update({"vs names mean": d["mean"], "vs names ci95": d["ci95"]})
            rows.append(row)
    return pd.DataFrame(rows)


def _fig6c_paper(ab: dict, names: str, descriptions: str) -> tuple[dict, str]:
    values = {k: dict(v) for k, v in PAPER_FIG6C.items()}
    cfg_paper = ab.get("paper") or {}
    for prompt, label in (("names", names), ("descriptions", descriptions)):
        if isinstance(cfg_paper.get(label), dict):
            values[prompt].update(cfg_paper[label])
    return values, ab.get("paper_source") or PAPER_FIG6C_SOURCE


def plot_fig6c(table: pd.DataFrame, stem: Path, title: str, source: str = PAPER_FIG6C_SOURCE) -> list[Path]:
    """Bars of p-Acc per split, names vs descriptions: ours with 95% CI, and the paper's."""
    plt, sns = plotting.pyplot()
    long = pd.concat([table.assign(source="ours", value=table["mean"]),
                      table.assign(source="paper", value=table["paper"], ci95=math.nan)])
    long["split"] = long["split"].str.upper()
    fig, axes = plt.subplots(1, 2, figsize=(10, 4), sharey=True)
    paper_source = source.removeprefix("Tina ")
    for ax, kind in zip(axes, ("ours", "paper")):
        g = long[long.source == kind]
        sns.barplot(data=g, x="split", y="value", hue="prompt", hue_order=["names", "descriptions"], errorbar=None,
                    ax=ax)
        containers = list(ax.containers)  # one per prompt, bars in split order
        for bars in containers:
            ax.bar_label(bars, fmt="%.1f", fontsize=8, padding=2)
        if kind == "ours":
            for bars, prompt in zip(containers, ["names", "descriptions"]):
                sub = g[g.prompt == prompt]
                xs = [b.get_x() + b.get_width() / 2 for b in bars]
                ax.errorbar(xs, sub["value"], yerr=sub["ci95"].fillna(0.0), fmt="none", ecolor="0.2", capsize=4)
        ax.set(title="ours (mean ± 95% CI)" if kind == "ours" else f"paper ({paper_source})",
               xlabel="tasks", ylabel="p-Acc (%)", ylim=(0, 105))
        ax.legend(title="test prompt", fontsize=8)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return plotting.save_figure(fig, stem)


def fig6c(results: list[str], out, *, config: str | None = None) -> pd.DataFrame:
    """reports/fig6c.md with figures/fig6c.{csv,png,svg}: the Table 7 ablation's names -> names and
    names -> descriptions rows (config `report.figures.fig6c`), ID and OOD."""
    out, figure = Path(out), "fig6c"
    cfg = _config(config, figure)
    spec = wf.fig6c_spec(cfg)
    given = _given(results, RESULT, figure, "data/<dataset>/<arch>/results/<label>/<split>.csv")
    paths = []
    for label in (spec["names"], spec["descriptions"]):
        for split in spec["splits"]:
            path = f"data/{spec['dataset']}/{spec['arch']}/results/{label}/{split}.csv"
            paths.append(str(_require(given, (spec["dataset"], spec["arch"], label, split), path, figure,
                                      f"the {split} result of {label!r}")))
    df = load_results(paths)
    paper, source = _fig6c_paper(wf.ablations(cfg)[spec["ablation"]], spec["names"], spec["descriptions"])
    table = fig6c_table(df, spec["names"], spec["descriptions"], spec["splits"], paper)
    stem = _stem(out)
    _write_csv(table, stem)
    where = f"{spec['dataset']} / {spec['arch']}"
    plot_fig6c(table, stem, f"Tina trained on class names, prompted with names or descriptions, {where}", source)
    shown = pd.DataFrame({
        "tasks": table["split"].str.upper(), "test prompt": table["prompt"], "label": table["label"].map("`{}`".format),
        "ours": [_fmt(m, c, n) for m, c, n in zip(table["mean"], table["ci95"], table["n"])],
        "paper": table["paper"].map(lambda v: "n/a" if v != v else f"{v:.2f}"),
        "descriptions − names (paired)": [
            "" if p == "names" else f"{m:+.2f} ± {0.0 if c != c else c:.2f}" for p, m, c in
            zip(table["prompt"], table.get("vs names mean", pd.Series(math.nan, index=table.index)),
                table.get("vs names ci95", pd.Series(math.nan, index=table.index)))]})
    gaps = []
    for split in spec["splits"]:
        t = table[table.split == split].set_index("prompt")
        ours, ppr = t.loc["descriptions", "vs names mean"], t.loc["descriptions", "paper"] - t.loc["names", "paper"]
        gaps.append(f"- {split.upper()}: descriptions − names {ours:+.2f} points here, {ppr:+.2f} in the paper.")
    lines = [
        "# Figure 6c: natural-language descriptions as zero-shot prompts", "",
        f"Tina trained on class names (`{spec['names']}`), prompted at test time with the names or, zero-shot, with "
        f"natural-language descriptions of the classes (`{spec['descriptions']}`: same fit, `generate_text: "
        f"descriptions`), {where}; rows of the ablation `{spec['ablation']}`. Mean ± 95% CI over the tasks; the "
        "difference is paired on the same tasks. The paper (Fig. 6c): descriptions reach lower p-Accs than names "
        f"but far above chance. Paper's numbers: {source}.", "",
        shown.to_markdown(index=False), "", *gaps, "",
        f"![fig6c](figures/{stem.name}.png)", "",
        f"Plotted numbers: `figures/{stem.name}.csv`. {artifacts.provenance_footer(config)}", ""]
    artifacts.write_text("\n".join(lines), out)
    return table
