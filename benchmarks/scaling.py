"""The Tina paper's scaling figures from per-task result CSVs (registered in `benchmarks.figures.FIGURES`).

- `fig4a` (Tina Fig. 4a): p-Acc vs the denoiser's hidden size (Tina option `width`), one line per p-Model size
  (CNN-5K, CNN-14K);
- `fig5` (Tina Fig. 5): p-Acc vs the number of training p-Models (Tina option `zoo_size`: the first N of the
  zoo), one line per p-Model size;
- `fig4b` (Tina Fig. 4b): p-Acc vs training steps, Tina started from scratch vs from the denoiser of a Tina
  fitted on the other dataset (option `init_from`, parameter inheritance), read off EMA snapshots of one fit
  (options `snapshot_steps` / `at_step`);
- `fig4c` (Tina Fig. 4c): p-Acc vs training steps, Tina trained on text prompts vs on image prompts (option
  `prompt: image`: each class as the CLIP image embedding of one train exemplar), same snapshots; it needs the
  CLIP encoder, so it runs where the CLIP experiments run (`clip:`, rules/clip.smk).

The config's `report.<fig>` names the lines and their labels (`benchmarks.workflow.scaling_points`); each label
is its own fit (an ablation row of Tina), and the x of a point is the label's option, read from the config.
Every point is the mean p-Acc over the same tasks (default: the OOD split) with its 95% t-interval
(`benchmarks.evaluate.summarize`), so the figure, its CSV and the ablation tables agree to the digit. The
paper prints these figures as plots only: its text gives the axis ranges and the findings, which the report
sets beside a paired test of ours on the same tasks.
"""
from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pandas as pd
import yaml

from benchmarks import artifacts, plotting
from benchmarks import workflow as wf
from benchmarks.evaluate import paired, summarize
from benchmarks.report import label_seconds, load_results

TITLES = {
    "fig4a": "Figure 4a: scaling the denoiser (p-Acc vs hidden size)",
    "fig5": "Figure 5: scaling the training data (p-Acc vs number of training p-Models)",
    "fig4b": "Figure 4b: parameter inheritance (p-Acc vs training steps)",
    "fig4c": "Figure 4c: image- vs text-prompted training (p-Acc vs training steps)",
}
XLABELS = {"fig4a": "denoiser hidden size (width)", "fig5": "training p-Models (first N of the zoo)",
           "fig4b": "training steps", "fig4c": "training steps"}
# What the paper's text says of each figure (the plotted values are not printed in the paper).
PAPER = {
    "fig4a": ("hidden size 32 (152M parameters) to 2048 (789M), CNN-5K and CNN-14K, CIFAR-100",
              "\"when Tina is small, it fails to generalize, especially when the p-Model has a higher parameter "
              "dimension. The intelligence emerges when scaling Tina at large sizes (e.g., 1024 or 2048 hidden "
              "sizes), but the scaling effect is saturated\" (Sec. 3.3)"),
    "fig5": ("number of training p-Models for CNN p-Models of two sizes, CIFAR-100",
             "\"a larger input dimension is harder to learn and requires larger sizes of training data to converge "
             "and generalize. The generalization of Tina can benefit from larger training data, but it has "
             "diminishing marginal returns\" (Sec. 3.3)"),
    "fig4b": ("training epochs, with vs without weights inherited from G.pt's pretrained checkpoint (bert2BERT-like)",
              "\"parameter inheritance from pretrained models can help Tina to converge faster, but the final "
              "p-Accs are similar\" (Sec. 3.3)"),
    "fig4c": ("training epochs, Tina trained with one random image per class as its prompt (CLIP image encoder) vs "
              "with the class texts",
              "\"text-prompted Tina converges faster than the image-prompted, though the final p-Accs are similar\" "
              "(Sec. 3.3)"),
}


def write_first_zoo_tasks(tasks_path, n: int | None, out) -> None:
    """A tasks file whose zoo split is the first `n` zoo tasks (the other splits as they are): the zoo of a
    scaling arch (`scaling.archs.<arch>.zoo_tasks`), fewer rounds than the profile's zoo at the same tasks."""
    from benchmarks.tasks import load_tasks, save_tasks
    n = None if n in (None, "None") else int(n)  # from the command line too (rule scaling_zoo_tasks)
    tasks = load_tasks(tasks_path)
    zoo = tasks["splits"]["zoo"]
    if n is not None and n > len(zoo):
        raise ValueError(f"scaling zoo_tasks {n} exceeds the {len(zoo)} zoo tasks of {tasks_path}")
    save_tasks({**tasks, "splits": {**tasks["splits"], "zoo": zoo[:n]}}, out)


def _config(config) -> dict:
    return (yaml.safe_load(Path(config).read_text()) or {}) if config else {}


def scaling_table(df: pd.DataFrame, points: list[dict], reference: str | None = None) -> pd.DataFrame:
    """One row per plotted point: line, arch, label, x, n, mean, std and ci95 of per-task p-Acc (in %) on the
    figure's split; then the reference label (drawn flat) on each line's arch, x empty."""
    rows = []
    for p in points:
        acc = df.loc[(df.method == p["label"]) & (df.arch == p["arch"]), "accuracy"]
        if acc.empty:
            raise ValueError(f"no results for {p['label']!r} on {p['arch']}; given: {sorted(set(df['method']))}")
        s = summarize(acc)
        rows.append({"line": p["line"], "arch": p["arch"], "label": p["label"], "x": p["x"], "n": s["n"],
                     "mean": s["mean"], "std": s["std"], "ci95": s["ci95"]})
    if reference:
        for arch in dict.fromkeys(p["arch"] for p in points):
            acc = df.loc[(df.method == reference) & (df.arch == arch), "accuracy"]
            if not acc.empty:
                s = summarize(acc)
                rows.append({"line": f"{reference} ({arch})", "arch": arch, "label": reference, "x": None,
                             "n": s["n"], "mean": s["mean"], "std": s["std"], "ci95": s["ci95"]})
    return pd.DataFrame(rows)


def _paired(df: pd.DataFrame, arch: str, a: str, b: str) -> dict:
    return paired(df[(df.method == a) & (df.arch == arch)], df[(df.method == b) & (df.arch == arch)])


def findings(name: str, df: pd.DataFrame, table: pd.DataFrame) -> list[str]:
    """Our side of the paper's finding: paired differences (same tasks) between the points that decide it."""
    pts = table[table.x.notna()]
    out = []

    def diff(arch, a, b, what):
        d = _paired(df, arch, a, b)
        verdict = ("higher" if d["mean"] - d["ci95"] > 0 else "lower" if d["mean"] + d["ci95"] < 0
                   else "no clear difference")
        return f"{what}: {d['mean']:+.2f} ± {d['ci95']:.2f} points (n={d['n']} paired tasks): {verdict}."

    if name in ("fig4a", "fig5"):
        for line, g in pts.groupby("line", sort=False):
            if len(g) < 2:
                continue
            lo, hi = g.iloc[0], g.iloc[-1]
            out.append(diff(lo["arch"], hi["label"], lo["label"],
                            f"`{line}`: {XLABELS[name].split(' (')[0]} {hi['x']:g} − {lo['x']:g}"))
        lines = list(dict.fromkeys(pts["line"]))
        if len(lines) == 2:  # the larger p-Model is the harder one: compare the smallest-x points' shortfall
            a, b = (pts[pts.line == ln] for ln in lines)
            out.append(f"Gap `{lines[0]}` − `{lines[1]}` at the smallest x: {a.iloc[0]['mean'] - b.iloc[0]['mean']:+.2f}"
                       f"; at the largest: {a.iloc[-1]['mean'] - b.iloc[-1]['mean']:+.2f} points (unpaired: other "
                       "p-Models).")
    else:  # fig4b, fig4c: the second line - the first at the first and the last common step
        lines = list(dict.fromkeys(pts["line"]))
        if len(lines) >= 2:
            a, b = (pts[pts.line == ln].set_index("x") for ln in lines[:2])
            common = sorted(set(a.index) & set(b.index))
            for x in ([common[0], common[-1]] if len(common) > 1 else common):
                out.append(diff(a.loc[x, "arch"], b.loc[x, "label"], a.loc[x, "label"],
                                f"`{lines[1]}` − `{lines[0]}` at step {x:g}"))
    return out


def plot_scaling(name: str, table: pd.DataFrame, stem: Path, title: str) -> list[Path]:
    """p-Acc vs x per line with 95% bands (log2 x for width and zoo size); references as dashed lines."""
    plt, sns = plotting.pyplot()
    pts, refs = table[table.x.notna()], table[table.x.isna()]
    lines = list(dict.fromkeys(pts["line"]))
    colors = dict(zip(lines, sns.color_palette(n_colors=max(len(lines), 1))))
    fig, ax = plt.subplots(figsize=(6, 4))
    sns.lineplot(data=pts.assign(x=pts.x.astype(float)), x="x", y="mean", hue="line", hue_order=lines,
                 palette=colors, marker="o", errorbar=None, ax=ax)
    for line in lines:
        g = pts[pts.line == line]
        ci = g["ci95"].fillna(0.0)
        ax.fill_between(g["x"].astype(float), g["mean"] - ci, g["mean"] + ci, color=colors[line], alpha=0.2, lw=0)
    by_arch = {g["arch"].iloc[0]: colors[ln] for ln, g in pts.groupby("line", sort=False)}
    for _, r in refs.iterrows():
        ax.axhline(r["mean"], ls="--", lw=1, color=by_arch.get(r["arch"], "0.5"), label=r["line"])
    if name in ("fig4a", "fig5"):
        ax.set_xscale("log", base=2)
    xs = sorted(set(pts["x"].astype(float)))
    ax.set_xticks(xs, [f"{x:g}" for x in xs])
    ax.set(title=textwrap.fill(title, 60), xlabel=XLABELS[name], ylabel="p-Acc (%), 95% CI bands")  # fits the axes
    ax.legend(fontsize=8)
    fig.tight_layout()
    return plotting.save_figure(fig, stem)


def scaling_figure(name: str, results: list[str], out, *, config: str | None = None) -> pd.DataFrame:
    """reports/<name>.md with reports/figures/<name>.{csv,png,svg}: the points of the config's `report.<name>`."""
    from benchmarks import clip_experiments
    out = Path(out)
    cfg = _config(config)
    spec = wf.scaling_spec(cfg, name)
    if not spec:
        raise ValueError(f"{name}: the config ({config}) has no `report.{name}`")
    df = load_results(results)
    df = df[df["split"] == spec.get("split", "ood")]
    points = wf.scaling_points(cfg, name)
    table = scaling_table(df, points, spec.get("reference"))
    stem = out.parent / "figures" / out.stem
    stem.parent.mkdir(parents=True, exist_ok=True)
    with artifacts.atomic_path(stem.with_suffix(".csv")) as tmp:
        table.to_csv(tmp, index=False, float_format="%.4f")
    where = f"{spec['dataset']}, split `{spec.get('split', 'ood')}`"
    plot_scaling(name, table, stem, f"{TITLES[name].split(': ', 1)[1]} ({where})")
    shown = pd.DataFrame({"line": table["line"], "arch": table["arch"], "label": table["label"].map("`{}`".format),
                          XLABELS[name]: [("—" if pd.isna(x) else f"{x:g}") for x in table["x"]],
                          "p-Acc": [f"{m:.2f} ± {c:.2f}" for m, c in zip(table["mean"], table["ci95"].fillna(0.0))],
                          "n": table["n"],
                          "wall s": [label_seconds(cfg, results, label, [spec.get("split", "ood")])
                                     for label in table["label"]]})
    axis, claim = PAPER[name]
    ours = findings(name, df, table)
    on_clip = bool(set(table["arch"]) & set(wf.clip_archs(cfg)))  # fig4c: say which CLIP, loudly when random
    lines = [
        clip_experiments.title(TITLES[name], cfg) if on_clip else f"# {TITLES[name]}", "",
        *([clip_experiments.weights_line(cfg), ""] if on_clip else []),
        *([clip_experiments.RANDOM_NOTE, ""] if on_clip and wf.clip_is_random(cfg) else []),
        f"{where}. Each point is its own Tina fit (rows of the config's ablations; options under each label) "
        "evaluated on the same tasks: mean p-Acc ± 95% CI over tasks." +
        (f" Dashed: `{spec['reference']}` on the same tasks." if spec.get("reference") else ""), "",
        shown.to_markdown(index=False), "",
        "## The paper beside ours", "",
        "| | the paper (Tina, Sec. 3.3) | ours |", "|---|---|---|",
        f"| axis | {axis} | {XLABELS[name]}: {', '.join(f'{x:g}' for x in sorted(set(table.x.dropna())))} |",
        f"| finding | {claim} | {'<br>'.join(ours) or 'fewer than two points per line: nothing to compare'} |", "",
        "The paper prints this figure as a plot only; its text gives no values, so the finding is what we compare "
        "(paired differences: the same tasks under both labels).", "",
        f"![{name}](figures/{stem.name}.png)", "",
        f"Plotted numbers: `figures/{stem.name}.csv`. Labels' options: "
        + json.dumps({p["label"]: p["x"] for p in points}) + ".", "",
        artifacts.provenance_footer(config), ""]
    artifacts.write_text("\n".join(lines), out)
    return table


def fig4a(results, out, *, config=None):
    return scaling_figure("fig4a", results, out, config=config)


def fig5(results, out, *, config=None):
    return scaling_figure("fig5", results, out, config=config)


def fig4b(results, out, *, config=None):
    return scaling_figure("fig4b", results, out, config=config)


def fig4c(results, out, *, config=None):
    return scaling_figure("fig4c", results, out, config=config)
