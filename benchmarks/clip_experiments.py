"""The CLIP experiments of the Tina paper from per-task result CSVs (config `clip:`, benchmarks/rules/clip.smk).

- `table2` (Tina Table 2): p-Models on the frozen CLIP ViT-B/32 image tower, only the linear head personalized and
  generated (arch `vit-b32-head`): classifier selection, TAPER, Tina (and the fine-tuned oracle), ID and OOD per
  dataset, the paper's numbers beside ours. -> reports/table2.md, reports/figures/table2.csv.
- `fig6a` (Tina Fig. 6a): Tina trained on class names, prompted at generate time with class names or with CLIP
  image embeddings of seeded train exemplars of each class (1 or a few per class, zero-shot: the generator never
  saw an image), beside the baselines and chance. -> reports/fig6a.md, reports/figures/fig6a.{csv,png,svg}.

Both read `clip.weights` from the config: with `random` (the smoke profile and the tests) the title says in
capitals that the numbers are no result. Called as `nndiff figure table2|fig6a RESULTS... --config C --out R`.
"""
from __future__ import annotations

from pathlib import Path

import pandas as pd
import yaml

from benchmarks import artifacts, plotting
from benchmarks import workflow as wf
from benchmarks.evaluate import paired, summarize
from benchmarks.report import load_results, paired_baseline

RANDOM_TITLE = "RANDOM CLIP WEIGHTS: NOT A RESULT (plumbing test only)"
RANDOM_NOTE = ("**These numbers come from a CLIP with random weights (`clip.weights: random`): they test the code "
               "path and mean nothing about CLIP or Tina.** Put OpenAI's ViT-B-32.pt at `<data_root>/clip/` "
               "(README, \"CLIP image experiments\") for a result.")
# Tina Table 2 (ViT-B/32 head): (paper method, dataset, split) -> p-Acc
PAPER_TABLE2 = {
    ("classifier-selection", "cifar100", "id"): 95.07, ("taper", "cifar100", "id"): 95.25, ("tina", "cifar100", "id"): 95.45,
    ("classifier-selection", "caltech101", "id"): 96.33, ("taper", "caltech101", "id"): 96.32,
    ("tina", "caltech101", "id"): 97.15,
    ("classifier-selection", "cifar100", "ood"): 94.78, ("taper", "cifar100", "ood"): 94.96,
    ("tina", "cifar100", "ood"): 95.15,
    ("classifier-selection", "caltech101", "ood"): 96.08, ("taper", "caltech101", "ood"): 96.15,
    ("tina", "caltech101", "ood"): 96.72,
}
SPLIT_NAMES = {"id": "ID", "ood": "OOD"}


def _config(config: str | None) -> dict:
    return (yaml.safe_load(Path(config).read_text()) or {}) if config else {}


def weights_line(cfg: dict) -> str:
    """Which CLIP made the numbers."""
    if not cfg:
        return "CLIP weights: unknown (no config given)."
    model = wf.clip(cfg).get("model", "ViT-B-32")
    if wf.clip_is_random(cfg):
        return f"CLIP: open_clip `{model}` with RANDOM weights (`clip.weights: random`)."
    return f"CLIP: open_clip `{model}`, OpenAI weights from `{wf.clip_weights(cfg)}`."


def title(text: str, cfg: dict) -> str:
    """The report's title; loud when the CLIP weights are random."""
    return f"# {text} — {RANDOM_TITLE}" if cfg and wf.clip_is_random(cfg) else f"# {text}"


def paper_method(cfg: dict, label: str) -> str | None:
    """The paper's row a label stands beside: TAPER and Tina by registry name; classifier selection for its slice
    rule (the reading whose numbers match the paper's, as in Table 1; benchmarks/report.py)."""
    if label == wf.ORACLE or not cfg:
        return None
    try:
        name, options = wf.method_options(cfg, label)
    except KeyError:
        return None
    if name == "classifier-selection":
        return name if options.get("rule") == "slice" else None
    return name if name in ("taper", "tina") else None


def _cell(s: dict) -> str:
    return "n/a" if not s["n"] else f"{s['mean']:.2f} ± {(s['ci95'] if s['n'] > 1 else 0.0):.2f} (n={s['n']})"

# ----------------------------------------------------------------------------- Table 2


def table2_table(df: pd.DataFrame, cfg: dict) -> pd.DataFrame:
    """Long table: one row per (dataset, split, label) with n, mean, std, ci95, the paper's value and the paired
    difference to the baseline (classifier selection) on the same tasks."""
    labels = list(dict.fromkeys(df["method"]))
    base = paired_baseline(labels)
    rows = []
    for (dataset, split), g in df.groupby(["dataset", "split"], sort=False):
        for label in labels:
            part = g[g.method == label]
            s = summarize(part["accuracy"])
            d = paired(part, g[g.method == base]) if base in labels and label != base else None
            pm = paper_method(cfg, label)
            rows.append({"dataset": dataset, "split": split, "method": label, **s,
                         "paper": PAPER_TABLE2.get((pm, dataset, split)) if pm else None,
                         f"delta_vs_{base}": d["mean"] if d else None, f"delta_vs_{base}_ci95": d["ci95"] if d else None})
    return pd.DataFrame(rows)


def table2(results: list[str], out, *, config: str | None = None) -> pd.DataFrame:
    """reports/table2.md and reports/figures/table2.csv."""
    out, cfg = Path(out), _config(config)
    df = load_results(results)
    table = table2_table(df, cfg)
    csv = out.parent / "figures" / f"{out.stem}.csv"
    csv.parent.mkdir(parents=True, exist_ok=True)
    with artifacts.atomic_path(csv) as tmp:
        table.to_csv(tmp, index=False, float_format="%.4f")
    base = paired_baseline(list(dict.fromkeys(df["method"])))
    shown = {}
    for (dataset, split), g in table.groupby(["dataset", "split"], sort=False):
        col = f"{dataset} {SPLIT_NAMES.get(split, split)}"
        shown[col] = list(g.apply(lambda r: _cell(r) + (f" [paper {r['paper']:.2f}]" if pd.notna(r["paper"]) else ""),
                                  axis=1))
        delta = g[f"delta_vs_{base}"]
        shown[f"{col} Δ vs {base}"] = [f"{m:+.2f} ± {c:.2f}" if pd.notna(m) else "" for m, c in
                                       zip(delta, g[f"delta_vs_{base}_ci95"].fillna(0.0))]
    labels = list(dict.fromkeys(table["method"]))
    body = pd.DataFrame({"method": labels, **shown})
    k = (cfg.get("tasks") or {}).get("classes_per_task", 10)
    lines = [
        title("Table 2: ViT-B/32 (CLIP) p-Models, only the linear head personalized", cfg), "",
        *([RANDOM_NOTE, ""] if cfg and wf.clip_is_random(cfg) else []),
        f"The frozen CLIP image tower gives 512-d features of each 32x32 image (resized to CLIP's input); the p-Model "
        f"is a {k}-way linear head on them, fine-tuned per task (the zoo) and generated by each method. p-Acc: mean ± "
        "95% CI over tasks (n tasks); Δ: paired difference to the baseline on the same tasks. The paper's Table 2 "
        "numbers (CIFAR-100, Caltech-101) are in brackets beside the row they correspond to.", "",
        weights_line(cfg), "",
        body.to_markdown(index=False), "",
        f"Numbers: `figures/{csv.name}`. {artifacts.provenance_footer(config) if config else ''}", ""]
    artifacts.write_text("\n".join(lines), out)
    return table

# ----------------------------------------------------------------------------- Fig. 6a


def prompt_label(cfg: dict, label: str, text_label: str | None) -> str:
    """What prompted a row: class names, n exemplar image(s) per class, or a baseline."""
    if label == text_label:
        return "class names (text)"
    if not cfg or label == wf.ORACLE:
        return "baseline"
    name, options = wf.method_options(cfg, label)
    if name == "tina" and (options.get("generate_prompt") or options.get("prompt")) == "image":
        shots = options.get("image_shots", 1)
        align = "" if options.get("image_align", True) else ", raw (not aligned)"
        return f"{shots} exemplar image{'s' if shots > 1 else ''} per class{align}"
    return "baseline"


def fig6a_table(df: pd.DataFrame, text_label: str, cfg: dict) -> pd.DataFrame:
    """One row per (split, label): n, mean, std, ci95 and the paired difference to the text prompt."""
    rows = []
    for split, g in df.groupby("split", sort=False):
        for label in dict.fromkeys(df["method"]):
            part = g[g.method == label]
            d = paired(part, g[g.method == text_label]) if label != text_label else None
            rows.append({"split": split, "method": label, "prompt": prompt_label(cfg, label, text_label),
                         **summarize(part["accuracy"]), "delta_vs_text": d["mean"] if d else None,
                         "delta_vs_text_ci95": d["ci95"] if d else None})
    return pd.DataFrame(rows)


def plot_fig6a(table: pd.DataFrame, chance: float, stem: Path, suptitle: str) -> list[Path]:
    """Bars: p-Acc per prompt and split with 95% CI whiskers; chance dashed."""
    plt, sns = plotting.pyplot()
    labels, splits = list(dict.fromkeys(table["method"])), list(dict.fromkeys(table["split"]))
    fig, ax = plt.subplots(figsize=(1.6 + 1.4 * len(labels) * len(splits) / 2, 4))
    width = 0.8 / len(splits)
    for j, split in enumerate(splits):
        g = table[table.split == split].set_index("method").reindex(labels)
        xs = [i + (j - (len(splits) - 1) / 2) * width for i in range(len(labels))]
        ax.bar(xs, g["mean"], width, yerr=g["ci95"].fillna(0.0), capsize=3, label=SPLIT_NAMES.get(split, split))
    ax.axhline(chance, ls="--", color="0.5", lw=1, label=f"chance ({chance:.0f}%)")
    ax.set_xticks(range(len(labels)))
    ax.set_xticklabels([f"{m}\n({p})" for m, p in zip(labels, table.drop_duplicates("method")["prompt"])], fontsize=7)
    ax.set(ylabel="p-Acc (%), 95% CI", ylim=(0, 102), title="Text vs image prompts")
    ax.legend(fontsize=8)
    fig.suptitle(suptitle, fontsize=9)
    fig.tight_layout()
    return plotting.save_figure(fig, stem)


def fig6a(results: list[str], out, *, config: str | None = None, text: str | None = None) -> pd.DataFrame:
    """reports/fig6a.md with reports/figures/fig6a.{csv,png,svg}; the text label from `clip.fig6a.text`."""
    out, cfg = Path(out), _config(config)
    df = load_results(results)
    spec = wf.clip(cfg).get("fig6a") or {}
    text = text or spec.get("text") or next(iter(dict.fromkeys(df["method"])))
    if text not in set(df["method"]):
        raise ValueError(f"fig6a: no results for the text-prompted label {text!r}; given: {sorted(set(df['method']))}")
    table = fig6a_table(df, text, cfg)
    stem = out.parent / "figures" / out.stem
    stem.parent.mkdir(parents=True, exist_ok=True)
    with artifacts.atomic_path(stem.with_suffix(".csv")) as tmp:
        table.to_csv(tmp, index=False, float_format="%.4f")
    k = (cfg.get("tasks") or {}).get("classes_per_task", 10)
    chance = 100.0 / k
    where = " / ".join(dict.fromkeys(df["dataset"] + " / " + df["arch"]))
    random = bool(cfg) and wf.clip_is_random(cfg)
    plot_fig6a(table, chance, stem, f"{text}, {where}" + (" — RANDOM CLIP WEIGHTS, NOT A RESULT" if random else ""))
    shown = pd.DataFrame({"method": list(dict.fromkeys(table["method"]))})
    shown["prompt"] = list(table.drop_duplicates("method")["prompt"])
    for split, g in table.groupby("split", sort=False):
        name = SPLIT_NAMES.get(split, split)
        shown[name] = [_cell(r) for _, r in g.iterrows()]
        shown[f"{name} Δ vs text"] = [f"{m:+.2f} ± {c:.2f}" if pd.notna(m) else "" for m, c in
                                      zip(g["delta_vs_text"], g["delta_vs_text_ci95"].fillna(0.0))]
    images = table[table.prompt.str.contains("exemplar")]
    verdicts = []
    for _, r in images.iterrows():
        above = r["mean"] - r["ci95"] > chance if r["n"] > 1 else r["mean"] > chance
        verdicts.append(f"- `{r['method']}` ({SPLIT_NAMES.get(r['split'], r['split'])}): {r['mean']:.2f} vs chance "
                        f"{chance:.1f}: {'above chance (zero-shot image prompts work)' if above else 'not above chance'}; "
                        f"{r['delta_vs_text']:+.2f} ± {r['delta_vs_text_ci95'] if pd.notna(r['delta_vs_text_ci95']) else 0:.2f} "
                        "vs the class-name prompt.")
    lines = [
        title("Figure 6a: image prompts vs text prompts (Tina trained on class names)", cfg), "",
        *([RANDOM_NOTE, ""] if random else []),
        f"`{text}` is fitted on class-name prompts with the CLIP text encoder. At generate time each class of a task "
        "is given instead as the CLIP image embedding of exemplar TRAIN images of that class (seeded per class, the "
        "same in every task; several exemplars averaged), zero-shot: the generator never saw an image embedding. "
        "With `image_align` (default) the image embeddings are moved to the text embeddings' mean and RMS over the "
        "zoo's classes (CLIP's modality gap); the paper feeds raw features. The paper's few-shot point (Tina "
        "fine-tuned on image prompts) is not run here. p-Acc: mean ± 95% CI over tasks; Δ: paired difference to "
        f"the class-name prompt on the same tasks. {where}.", "",
        weights_line(cfg), "",
        shown.to_markdown(index=False), "",
        "The paper (Fig. 6a, a bar chart without numbers): text-trained Tina has zero-shot ability on image prompts, "
        "below the text prompt.", "",
        *verdicts, "",
        f"![fig6a](figures/{stem.name}.png)", "",
        f"Plotted numbers: `figures/{stem.name}.csv`. {artifacts.provenance_footer(config) if config else ''}", ""]
    artifacts.write_text("\n".join(lines), out)
    return table
