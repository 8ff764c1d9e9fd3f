"""Table 3 of the Tina paper: zero-shot transfer to unseen classes (A.3), from per-task result CSVs.

The classes are cut into halves A and B (benchmarks/tasks.py, similar classes apart). The labels `<label>~unseen`
(config `unseen.methods`, benchmarks/workflow/unseen.py) are fitted on the p-Models of the `unseen-zoo` split only,
whose tasks hold classes of half A; every row is tested on the `unseen-<p>` splits, whose tasks take round(p% K)
classes from half B. `nndiff figure table3 RESULTS... --config C --out reports/table3.md` writes the table (mean
± 95% CI per row and level, the paper's numbers beside ours, paired differences to classifier selection on the
same tasks) and `figures/table3.{png,svg,csv}` (p-Acc vs % unseen).

What "unseen" means: stage 1 (the generic model) is trained on every class, half B included, so half B is
unseen by the *generators* only. `half_b_access` says what else of half B each row's p-Models are built from;
only a `~unseen` fit whose p-Models come from the class names alone (`text`) is an honest zero-shot number.
"""
from __future__ import annotations

import re
from pathlib import Path

import pandas as pd
import yaml

from benchmarks import artifacts, plotting
from benchmarks import workflow as wf
from benchmarks.evaluate import paired, summarize
from benchmarks.report import label_seconds, load_results

# The paper's Table 3 (CNN on CIFAR-100; None: "/", TAPER cannot serve 100% unseen classes), by registry name.
PAPER_TABLE3 = {
    "taper": {0: 60.27, 20: 51.94, 40: 42.48, 60: 31.45, 100: None},
    "tina": {0: 62.51, 20: 55.36, 40: 49.17, 60: 42.78, 100: 30.93},
}
PAPER_SOURCE = "Tina Table 3, CNN on CIFAR-100"

# How half B enters a row's p-Models besides its class names (stage 1 saw every class in all of them).
ACCESS = {
    "text": "class names only (a map fitted on half-A p-Models)",
    "stage1-rows": "stage-1 classifier rows (trained on half-B images)",
    "stage1-experts": "stage-1 rows + experts fine-tuned on shards of every class",
    "stage1": "the stage-1 model itself (every class)",
    "finetuned": "fine-tuned on the task's own images",
    "unclassified": "not classified (see the method's docs)",
}


def half_b_access(method: str, options: dict | None = None) -> str:
    """Key of `ACCESS`: what of half B, beyond the class names, a method's p-Models are built from."""
    options = options or {}
    if method in ("tina", "retrieval", "noised-neighbour"):
        return "text"
    if method == "hypernet":  # head_init cs: each row a residual to its stage-1 row; none: rows from text alone
        return "text" if options.get("head_init", "cs") == "none" else "stage1-rows"
    if method in ("classifier-selection", "zoo-mean"):
        return "stage1-rows"
    if method == "taper":
        return "stage1-experts"
    if method == "generic":
        return "stage1"
    if method == wf.ORACLE:
        return "finetuned"
    return "unclassified"


def level_of(split: str) -> int:
    """`unseen-40` -> 40."""
    m = re.fullmatch(r"unseen-(\d+)", split)
    if not m:
        raise ValueError(f"table3 reads results of the unseen-<p> splits, got split {split!r}")
    return int(m[1])


def row_info(cfg: dict, label: str) -> dict:
    """Registry name, half-B access, whether the row is an honest zero-shot number, and its paper row."""
    fitted_unseen = label.endswith(wf.UNSEEN_SUFFIX)
    if label == wf.ORACLE:
        method, options = wf.ORACLE, {}
    elif cfg.get("methods") and (label in wf.evaluated(cfg)):
        method, options = wf.method_options(cfg, label)
    else:  # no config: the label (less `~unseen`) stands for its method
        method, options = label.removesuffix(wf.UNSEEN_SUFFIX), {}
    access = half_b_access(method, options)
    return {"label": label, "method": method, "access": access, "zero_shot": fitted_unseen and access == "text",
            "paper": PAPER_TABLE3.get(method) if fitted_unseen else None}


def table3_table(df: pd.DataFrame, labels: list[str], levels: list[int], baseline: str | None,
                 cfg: dict | None = None) -> pd.DataFrame:
    """One row per (label, level): n, mean, std, 95% CI half-width over the level's tasks, the paper's value, the
    row's half-B access, and the paired difference to `baseline` on the tasks both evaluated (matched by task id).
    A label or level without results fails with one line naming it."""
    cfg = cfg or {}
    df = df.assign(level=df["split"].map(level_of))
    have = set(df["method"])
    missing = [m for m in [*labels, *([baseline] if baseline else [])] if m not in have]
    if missing:
        raise ValueError(f"table3: no results for {missing}; given: {sorted(have)}")
    for label in labels:
        got = set(df.loc[df.method == label, "level"])
        lacking = [p for p in levels if p not in got]
        if lacking:
            raise ValueError(f"table3: no results of level {lacking[0]}% unseen (split unseen-{lacking[0]}) for "
                             f"{label!r}; levels given: {sorted(got)}")
    rows = []
    for label in labels:
        info = row_info(cfg, label)
        for p in levels:
            g = df[(df.method == label) & (df.level == p)]
            row = {"label": label, "level": p, **summarize(g["accuracy"]), "access": info["access"],
                   "zero_shot": info["zero_shot"], "paper": (info["paper"] or {}).get(p)}
            if baseline and label != baseline:
                d = paired_on_tasks(g, df[(df.method == baseline) & (df.level == p)], label, baseline)
                row.update({"diff n": d["n"], "diff mean": d["mean"], "diff ci95": d["ci95"]})
            rows.append(row)
    return pd.DataFrame(rows)


def paired_on_tasks(a: pd.DataFrame, b: pd.DataFrame, label: str, baseline: str) -> dict:
    """`paired` (a - b over the tasks both evaluated, matched by task id); a task id naming different classes in
    the two files (results of different task files) fails."""
    if "classes" in a and "classes" in b:
        both = a[["task_id", "classes"]].merge(b[["task_id", "classes"]], on="task_id")
        bad = both[both["classes_x"] != both["classes_y"]]
        if len(bad):
            raise ValueError(f"table3: task {bad['task_id'].iloc[0]!r} has other classes in the results of {label!r} "
                             f"than in those of {baseline!r}: results of different task files")
    return paired(a, b)


def plot_table3(table: pd.DataFrame, stem: Path, title: str) -> list[Path]:
    """p-Acc vs % unseen per row with 95% bands; zero-shot rows solid, references dashed; the paper's rows as
    hollow markers in their method's colour."""
    plt, sns = plotting.pyplot()
    labels = list(dict.fromkeys(table["label"]))
    colors = dict(zip(labels, sns.color_palette(n_colors=len(labels))))
    levels = sorted(set(table["level"]))
    fig, ax = plt.subplots(figsize=(7.5, 4.5))
    for label in labels:
        g = table[table.label == label].sort_values("level")
        zero_shot = bool(g["zero_shot"].iloc[0])
        sns.lineplot(x=g["level"], y=g["mean"], marker="o", color=colors[label], ls="-" if zero_shot else "--",
                     label=f"{label}{' (zero-shot)' if zero_shot else ''}", ax=ax)
        ci = g["ci95"].fillna(0.0)
        ax.fill_between(g["level"], g["mean"] - ci, g["mean"] + ci, color=colors[label], alpha=0.15, lw=0)
        paper = g.dropna(subset=["paper"])
        if len(paper):
            ax.plot(paper["level"], paper["paper"], ls=":", marker="s", mfc="none", color=colors[label],
                    label=f"paper: {row_name(label)}")
    ax.set(title=title, xlabel="% of the task's classes from the unseen half B", ylabel="p-Acc (%), 95% CI bands",
           xticks=levels, ylim=(0, 102))
    ax.legend(fontsize=7, loc="lower left")
    fig.tight_layout()
    return plotting.save_figure(fig, stem)


def row_name(label: str) -> str:
    """`tina~unseen` -> `tina`: the paper's row a label stands beside."""
    return label.removesuffix(wf.UNSEEN_SUFFIX)


def _cell(mean: float, ci: float, n: int, digits: int = 2, sign: bool = False) -> str:
    if pd.isna(mean):
        return "—"
    ci = 0.0 if pd.isna(ci) else ci
    return f"{mean:{'+' if sign else ''}.{digits}f} ± {ci:.{digits}f} (n={int(n)})"


def _halves(results: list[str], dataset: str) -> dict | None:
    """The tasks file's `unseen_halves` (beside the results' data folder), if it is there."""
    for p in results:
        m = re.search(r"(.*)data/[^/]+/[^/]+/results/", str(p))
        path = Path(m[1] if m else "") / "data" / dataset / "tasks.json"
        if path.is_file():
            return artifacts.read_json(path).get("unseen_halves")
    return None


def table3(results: list[str], out, *, config: str | None = None) -> pd.DataFrame:
    """reports/table3.md with reports/figures/table3.{csv,png,svg}. Rows and levels come from the config's
    `unseen` section and `tasks.unseen_levels`; without a config, every label and level of the results."""
    out = Path(out)
    df = load_results(results)
    for split in dict.fromkeys(df["split"]):
        level_of(split)
    cfg = (yaml.safe_load(Path(config).read_text()) or {}) if config else {}
    if wf.unseen(cfg):
        labels, levels, baseline = wf.unseen_rows(cfg), wf.unseen_levels(cfg), wf.unseen_baseline(cfg)
    else:
        labels = list(dict.fromkeys(df["method"]))
        levels = sorted(set(df["split"].map(level_of)))
        baseline = next((b for b in ("classifier-selection-slice", "classifier-selection") if b in labels), None)
    table = table3_table(df, labels, levels, baseline, cfg)
    stem = out.parent / "figures" / out.stem
    stem.parent.mkdir(parents=True, exist_ok=True)
    with artifacts.atomic_path(stem.with_suffix(".csv")) as tmp:
        table.to_csv(tmp, index=False, float_format="%.4f")
    where = " / ".join(dict.fromkeys(df["dataset"] + " / " + df["arch"]))
    plot_table3(table, stem, f"Unseen classes: p-Acc vs % of classes from half B, {where}")
    seconds = {label: label_seconds(cfg, results, label, [f"unseen-{p}" for p in levels]) for label in labels}
    artifacts.write_text(_markdown(table, labels, levels, baseline, where, _halves(results, df["dataset"].iloc[0]),
                                   stem, config, cfg, seconds), out)
    return table


def _markdown(table: pd.DataFrame, labels: list[str], levels: list[int], baseline: str | None, where: str,
              halves: dict | None, stem: Path, config: str | None, cfg: dict, seconds: dict[str, str]) -> str:
    cols = [f"{p}%" for p in levels]
    rows = []
    for label in labels:
        g = table[table.label == label].set_index("level")
        rows.append({"row": f"`{label}`", "half B enters through": ACCESS[g["access"].iloc[0]],
                     "zero-shot": "✓" if g["zero_shot"].iloc[0] else "",
                     **{c: _cell(g.at[p, "mean"], g.at[p, "ci95"], g.at[p, "n"]) for c, p in zip(cols, levels)},
                     "wall s": seconds[label]})
    for label in labels:  # the paper's rows, under ours
        paper = row_info(cfg, label)["paper"]
        if paper:
            rows.append({"row": f"paper: {row_name(label)}", "half B enters through": PAPER_SOURCE, "zero-shot": "",
                         **{c: (f"{paper[p]:.2f}" if paper.get(p) is not None else "n.a." if p in paper else "—")
                            for c, p in zip(cols, levels)}, "wall s": ""})
    shown = pd.DataFrame(rows)
    diffs = []
    if baseline:
        for label in [lab for lab in labels if lab != baseline]:
            g = table[table.label == label].set_index("level")
            diffs.append({"row": f"`{label}` − `{baseline}`",
                          **{c: _cell(g.at[p, "diff mean"], g.at[p, "diff ci95"], g.at[p, "diff n"], sign=True)
                             for c, p in zip(cols, levels)}})
    split_rule = (f" The halves: |A| = {len(halves['A'])}, |B| = {len(halves['B'])}; {halves['rule']}."
                  if halves else "")
    lines = [
        "# Table 3: unseen classes (zero-shot transfer to held-out classes)", "",
        f"Tina A.3 on {where}: the dataset's classes are cut into halves A and B, similar classes in different "
        f"halves.{split_rule} The `~unseen` rows are fitted on the p-Models of the `unseen-zoo` split only (tasks of "
        "half-A classes); every row is tested on the `unseen-<p>` splits, whose tasks take p% of their classes "
        "from half B and none of which is a class set of that zoo (so 0% is an OOD level over half A). p-Acc: "
        "mean ± 95% CI over the tasks of each level (n). `wall s`: the row's fit and its generate job per level, "
        "seconds, from the jobs' timing sidecars.", "",
        "**What \"unseen\" means here.** Stage 1 (the generic model: the start of every p-Model's fine-tuning, the "
        "source of classifier selection's rows, the frozen body of head-only archs) is trained on every class, "
        "half B included, as is the generic model of the paper's setup; half B is unseen *by the generators*: "
        "no p-Model of a task with a half-B class is in their training zoo, and at test time they read the class "
        "names. The column \"half B enters through\" says what else of half B a row's p-Models are built from. "
        "Only the rows marked zero-shot (✓: an `~unseen` fit whose p-Models come from the class names alone) are "
        "the honest comparison at 100%; the others are references: classifier selection cuts stage-1 rows "
        "trained on half-B images, TAPER mixes experts fine-tuned on shards of every class and cuts stage-1 rows "
        "(it therefore has a 100% row here, where the paper's TAPER has none), the generic model answers among "
        "all classes, and the oracle is fine-tuned on each task's own images.", "",
        shown.to_markdown(index=False), "",
        f"The paper's rows ({PAPER_SOURCE}) stand beside the fit of the same method; its dataset and scale differ "
        "from ours, so compare the fall from 0% to 100%, not the levels.", "",
    ]
    if diffs:
        lines += [f"## Paired differences to `{baseline}`", "",
                  "Difference of per-task p-Acc on the same tasks (matched by task id), mean ± 95% CI (n = tasks "
                  "both evaluated). At high levels the baseline reads stage-1 rows of half B, which the zero-shot "
                  "rows never see.", "",
                  pd.DataFrame(diffs).to_markdown(index=False), ""]
    lines += [f"![table3](figures/{stem.name}.png)", "",
              f"Plotted numbers: `figures/{stem.name}.csv`. {artifacts.provenance_footer(config)}", ""]
    return "\n".join(lines)
