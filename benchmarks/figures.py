"""Figures of the Tina paper from per-task result CSVs: one function per figure, listed in `FIGURES`.

Each writes `reports/<name>.md`, the plotted numbers as `reports/figures/<name>.csv` and the figure as
`reports/figures/<name>.png` and `.svg` (`nndiff figure <name> RESULTS... --config C --out reports/<name>.md`).
Intervals are the 95% t-intervals of `benchmarks.evaluate.summarize` over tasks, the same as every table's,
drawn as bands, so a figure and its CSV and the tables agree to the digit.

- `fig6b` (Tina Fig. 6b): p-Acc vs the number of classes 1..K of one Tina fitted with classification-sequence
  padding, on the `padded-<k>` splits, beside classifier selection on the same tasks and chance (100/k). The
  paper: "the generated p-Models reach higher p-Accs when the number of classes is fewer".
"""
from __future__ import annotations

import re
from pathlib import Path

import pandas as pd
import yaml

from benchmarks import artifacts, paper_figures, plotting
from benchmarks.evaluate import paired, summarize
from benchmarks.report import load_results, paired_baseline

# ----------------------------------------------------------------------------- helpers


def _footer(config: str | None) -> str:
    cfg = yaml.safe_load(Path(config).read_text()) if config else None
    prov = artifacts.provenance(cfg)
    profile = f"Profile `{cfg.get('profile')}` (config `{config}`, hash `{prov['config_hash']}`), seed {cfg.get('seed')}, " \
        if cfg else ""
    return f"{profile}commit `{prov['commit']}`, {prov['hardware']}."

# ----------------------------------------------------------------------------- Fig. 6b: number of classes


def padded_size(split: str) -> int:
    """`padded-3` -> 3."""
    m = re.fullmatch(r"padded-(\d+)", split)
    if not m:
        raise ValueError(f"fig6b reads results of the padded-<k> splits, got split {split!r}")
    return int(m[1])


def fig6b_table(df: pd.DataFrame, method: str, baselines: list[str]) -> pd.DataFrame:
    """One row per class count k: chance (100/k), then per label n, mean, std and the 95% CI half-width over
    the padded tasks of k classes, and `method`'s paired difference to the first baseline on the same tasks."""
    df = df.assign(classes=df["split"].map(padded_size))
    labels = [method, *baselines]
    missing = sorted(set(labels) - set(df["method"]))
    if missing:
        raise ValueError(f"fig6b: no results for {missing}; given: {sorted(set(df['method']))}")
    rows = []
    for k, g in df.groupby("classes", sort=True):
        row = {"classes": int(k), "chance": 100.0 / k}
        for label in labels:
            s = summarize(g.loc[g.method == label, "accuracy"])
            row.update({f"{label} n": s["n"], f"{label} mean": s["mean"], f"{label} std": s["std"],
                        f"{label} ci95": s["ci95"]})
        if baselines:
            d = paired(g[g.method == method], g[g.method == baselines[0]])
            row.update({f"{method} - {baselines[0]} mean": d["mean"], f"{method} - {baselines[0]} ci95": d["ci95"]})
        rows.append(row)
    return pd.DataFrame(rows)


def trend(df: pd.DataFrame, label: str) -> dict | None:
    """Slope of per-task p-Acc on the number of classes k (tasks of k >= 2), points per class, with its 95%
    t-interval; None with fewer than two class counts."""
    from scipy import stats
    g = df[(df.method == label)].assign(classes=lambda d: d["split"].map(padded_size))
    g = g[g.classes >= 2]
    if g["classes"].nunique() < 2:
        return None
    fit = stats.linregress(g["classes"], g["accuracy"])
    half = float(stats.t.ppf(0.975, len(g) - 2) * fit.stderr) if len(g) > 2 else float("nan")
    return {"slope": float(fit.slope), "ci95": half, "n": len(g)}


def trend_sentence(df: pd.DataFrame, label: str) -> str:
    t = trend(df, label)
    if t is None:
        return f"`{label}`: fewer than two class counts of k >= 2: no trend to measure."
    lo, hi = t["slope"] - t["ci95"], t["slope"] + t["ci95"]
    verdict = ("falls as k grows (as in the paper)" if hi < 0 else "rises as k grows (unlike the paper)" if lo > 0
               else "no clear trend (the interval contains 0)")
    return f"`{label}`: {t['slope']:+.2f} ± {t['ci95']:.2f} points per class (n={t['n']} tasks): {verdict}."


def plot_fig6b(table: pd.DataFrame, method: str, baselines: list[str], stem: Path, title: str) -> list[Path]:
    """Left: p-Acc vs classes with 95% bands and chance; right: the paired difference to the first baseline."""
    plt, sns = plotting.pyplot()
    labels = [method, *baselines]
    long = pd.concat([pd.DataFrame({"classes": table["classes"], "p-Acc": table[f"{m} mean"],
                                    "ci": table[f"{m} ci95"].fillna(0.0), "method": m}) for m in labels])
    fig, axes = plt.subplots(1, 2 if baselines else 1, figsize=(11 if baselines else 5.5, 4), squeeze=False)
    ax = axes[0][0]
    colors = dict(zip(labels, sns.color_palette(n_colors=len(labels))))
    sns.lineplot(data=long, x="classes", y="p-Acc", hue="method", hue_order=labels, palette=colors, marker="o",
                 errorbar=None, ax=ax)
    for m in labels:
        g = long[long.method == m]
        ax.fill_between(g["classes"], g["p-Acc"] - g["ci"], g["p-Acc"] + g["ci"], color=colors[m], alpha=0.2, lw=0)
    ax.plot(table["classes"], table["chance"], ls="--", color="0.5", lw=1, label="chance (100/k)")
    ax.set(title="p-Acc vs number of classes", xlabel="classes in the task (k)", ylabel="p-Acc (%), 95% CI bands",
           xticks=list(table["classes"]), ylim=(0, 102))  # a band of few tasks may reach past 0-100: clipped
    ax.legend(fontsize=8)
    if baselines:
        ax = axes[0][1]
        diff = f"{method} - {baselines[0]}"
        sns.lineplot(x=table["classes"], y=table[f"{diff} mean"], marker="o", color=colors[method], ax=ax)
        ci = table[f"{diff} ci95"].fillna(0.0)
        ax.fill_between(table["classes"], table[f"{diff} mean"] - ci, table[f"{diff} mean"] + ci,
                        color=colors[method], alpha=0.2, lw=0)
        ax.axhline(0, color="0.3", lw=0.8)
        ax.set(title=f"{method} − {baselines[0]} (paired, same tasks)", xlabel="classes in the task (k)",
               ylabel="difference (points), 95% CI band", xticks=list(table["classes"]))
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return plotting.save_figure(fig, stem)


def fig6b(results: list[str], out, *, config: str | None = None, method: str | None = None,
          baselines: list[str] | None = None) -> pd.DataFrame:
    """reports/fig6b.md with reports/figures/fig6b.{csv,png,svg}. The method and baselines come from the
    config's `report.fig6b` unless given; without either, the baseline is classifier selection and the
    method the other label."""
    out = Path(out)
    df = load_results(results)
    cfg = (yaml.safe_load(Path(config).read_text()) or {}) if config else {}
    spec = (cfg.get("report") or {}).get("fig6b") or {}
    labels = list(dict.fromkeys(df["method"]))
    if baselines is None:
        cs = paired_baseline(labels)
        baselines = spec.get("baselines", []) if spec else [cs] if cs in labels else []
    method = method or spec.get("method") or next(m for m in labels if m not in baselines)
    table = fig6b_table(df, method, list(baselines))
    stem = out.parent / "figures" / out.stem
    stem.parent.mkdir(parents=True, exist_ok=True)
    with artifacts.atomic_path(stem.with_suffix(".csv")) as tmp:
        table.to_csv(tmp, index=False, float_format="%.4f")
    where = " / ".join(dict.fromkeys(df["dataset"] + " / " + df["arch"]))
    plot_fig6b(table, method, list(baselines), stem, f"{method} with classification-sequence padding, {where}")
    shown = pd.DataFrame({"classes": table["classes"], "chance": table["chance"].map("{:.1f}".format)})
    for label in [method, *baselines]:
        shown[label] = [f"{m:.2f} ± {c:.2f} (n={n})" for m, c, n in
                        zip(table[f"{label} mean"], table[f"{label} ci95"].fillna(0.0), table[f"{label} n"])]
    if baselines:
        diff = f"{method} - {baselines[0]}"
        shown[f"Δ vs {baselines[0]}"] = [f"{m:+.2f} ± {c:.2f}" for m, c in
                                          zip(table[f"{diff} mean"], table[f"{diff} ci95"].fillna(0.0))]
    trends = [trend_sentence(df, label) for label in [method, *baselines]]
    lines = [
        "# Figure 6b: p-Acc vs number of classes (classification-sequence padding)", "",
        f"One `{method}` fitted with padding (`padding: true`: prompts of 1..K classes, the rest '<->' with zero "
        f"rows) generates p-Models for the padded tasks of each size k (split `padded-<k>`), {where}. Mean ± 95% "
        "CI over the tasks of each size; Δ: paired difference to the baseline on the same tasks. A 1-class task "
        "is always right (one output).", "",
        shown.to_markdown(index=False), "",
        "Trend (least-squares slope of per-task p-Acc on k over the tasks of k ≥ 2 classes, a 1-class task being "
        "always right; 95% interval). The paper: \"the generated p-Models reach higher p-Accs when the number of "
        "classes is fewer\". Chance falls as 1/k too, so the baseline's slope is the yardstick.", "",
        *[f"- {t}" for t in trends], "",
        f"![fig6b](figures/{stem.name}.png)", "",
        f"Plotted numbers: `figures/{stem.name}.csv`. {_footer(config)}", ""]
    artifacts.write_text("\n".join(lines), out)
    return table


def _on_use(module: str, name: str):
    """A figure of another module, imported when it is drawn (several import torch)."""
    import importlib
    return lambda results, out, **kw: getattr(importlib.import_module(module), name)(results, out, **kw)


FIGURES = {"table5": _on_use("benchmarks.memorization", "table5"),  # Tina Table 5 (memorization)
           "fig6b": fig6b,
           # Tina Table 2 (CLIP ViT-B/32 head) and Fig. 6a (image prompts)
           "table2": _on_use("benchmarks.clip_experiments", "table2"),
           "fig6a": _on_use("benchmarks.clip_experiments", "fig6a"),
           # Tina Fig. 4a, 5, 4b, 4c: the denoiser's width, the training p-Models, parameter inheritance, image prompts
           **{name: _on_use("benchmarks.scaling", name) for name in ("fig4a", "fig5", "fig4b", "fig4c")},
           "table3": _on_use("benchmarks.unseen", "table3"),  # Tina Table 3: unseen classes
           "training-curve": paper_figures.training_curve,  # Tina's training loss vs step (fit states)
           "samplers": paper_figures.samplers,  # p-Acc vs sampling steps and seconds per p-Model, per sampler
           "fig6c": paper_figures.fig6c}  # Tina Fig. 6c: description prompts vs class names, ID and OOD
