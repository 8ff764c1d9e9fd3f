"""The claims ledger: each claim of the two papers that the harness can test, with a measured verdict.

Every comparison is paired over the same tasks (method − other, 95% t-interval over tasks). A verdict is
- **confirmed**: the interval lies above zero, in the paper's direction;
- **refuted**: the interval lies below zero (the opposite of the claim, measured);
- **not shown at this scale**: the interval contains zero (the note says whether it excludes the paper's size).
Equivalence claims (sampler parity) are confirmed when the whole interval lies within ±`margin` points.
Next to each claim stands the strongest honest baseline on the same tasks: a margin over classifier
selection means little when a retrieved or zoo-averaged model gets as far (reports/headroom.md).
"""
from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from benchmarks import artifacts
from benchmarks.evaluate import paired
from benchmarks.paper_figures import PAPER_FIG6C
from benchmarks.report import PAPER_TABLE1, load_results
from benchmarks.unseen import PAPER_TABLE3

log = logging.getLogger("nndiff.claims")

CS = "classifier-selection-slice"  # the reading whose numbers match the paper's CS (README, "Baselines")
HONEST = ("classifier-selection-slice", "zoo-mean", "retrieval", "noised-neighbour", "hypernet", "taper")
VERDICTS = ("confirmed", "refuted", "not shown at this scale")


@dataclass
class Claim:
    claim: str  # in the paper's words, with its section
    where: str  # dataset / arch / split
    paper: str  # the paper's figure ("" where it gives none)
    ours: str  # our measurement with its interval
    baseline: str  # the strongest honest baseline beside it
    verdict: str
    note: str = ""


def verdict(lo: float, hi: float) -> str:
    return "confirmed" if lo > 0 else "refuted" if hi < 0 else "not shown at this scale"


def _fmt(d: dict) -> str:
    return f"{d['mean']:+.2f} ± {d['ci95']:.2f} (n={d['n']})"


class Ledger:
    """Results of every method on every split, and the claims checked against them."""

    def __init__(self, results: pd.DataFrame):
        self.df = results
        self.claims: list[Claim] = []

    def acc(self, method: str, ds: str, arch: str, split: str) -> pd.DataFrame:
        d = self.df
        return d[(d.method == method) & (d.dataset == ds) & (d.arch == arch) & (d.split == split)]

    def has(self, *methods: str, ds: str, arch: str, split: str) -> bool:
        return all(len(self.acc(m, ds, arch, split)) for m in methods)

    def strongest_honest(self, ds: str, arch: str, split: str, exclude: str) -> tuple[str, pd.DataFrame] | None:
        """The honest baseline with the highest mean p-Acc on these tasks."""
        best = None
        for m in HONEST:
            g = self.acc(m, ds, arch, split)
            if m != exclude and len(g) and (best is None or g["accuracy"].mean() > best[1]["accuracy"].mean()):
                best = (m, g)
        return best

    def beats(self, claim: str, method: str, other: str, ds: str, arch: str, split: str,
              paper: float | None = None) -> None:
        """Claim: `method` beats `other` on these tasks (paired)."""
        if not self.has(method, other, ds=ds, arch=arch, split=split):
            return
        g = self.acc(method, ds, arch, split)
        d = paired(g, self.acc(other, ds, arch, split))
        lo, hi = d["mean"] - d["ci95"], d["mean"] + d["ci95"]
        note = ""
        if paper is not None and not lo <= paper <= hi:
            note = f"the paper's {paper:+.2f} lies outside our interval"
        best = self.strongest_honest(ds, arch, split, exclude=method)
        baseline = ""
        if best:
            vs = paired(g, best[1])
            baseline = (f"{best[0]} {best[1]['accuracy'].mean():.2f}; {method} − it "
                        f"{vs['mean']:+.2f} ± {vs['ci95']:.2f}")
        self.claims.append(Claim(claim, f"{ds} / {arch} / {split.upper()}",
                                 "" if paper is None else f"{paper:+.2f}", _fmt(d), baseline, verdict(lo, hi), note))

    def parity(self, claim: str, a: str, b: str, ds: str, arch: str, split: str, margin: float) -> None:
        """Equivalence claim: `a` and `b` differ by less than `margin` points."""
        if not self.has(a, b, ds=ds, arch=arch, split=split):
            return
        d = paired(self.acc(a, ds, arch, split), self.acc(b, ds, arch, split))
        lo, hi = d["mean"] - d["ci95"], d["mean"] + d["ci95"]
        v = "confirmed" if -margin < lo and hi < margin else "refuted" if lo > margin or hi < -margin else \
            "not shown at this scale"
        self.claims.append(Claim(claim, f"{ds} / {arch} / {split.upper()}", "≈ 0", _fmt(d), "", v,
                                 f"equivalence margin ±{margin:g} points"))

# ----------------------------------------------------------------------------- the papers' claims


def seed_labels(led: Ledger, method: str) -> list[str]:
    """The method's label and its refits with other seeds (labels `<method>-seed<N>`, e.g. an ablation's rows)."""
    return [method, *sorted(m for m in led.df["method"].unique() if re.fullmatch(rf"{re.escape(method)}-seed\d+", m))]


def across_seeds(led: Ledger, method: str, other: str, ds: str, arch: str, split: str) -> None:
    """The claim `method` beats `other` with the fit seed as a second source of variance: per-seed paired
    differences (their spread), and the seed-averaged p-Models' paired interval over tasks."""
    labels = [m for m in seed_labels(led, method) if led.has(m, ds=ds, arch=arch, split=split)]
    if len(labels) < 2 or not led.has(other, ds=ds, arch=arch, split=split):
        return
    base = led.acc(other, ds, arch, split)
    per_seed = [paired(led.acc(m, ds, arch, split), base)["mean"] for m in labels]
    pooled = pd.concat([led.acc(m, ds, arch, split) for m in labels]).groupby("task_id", as_index=False)["accuracy"].mean()
    d = paired(pooled, base)
    lo, hi = d["mean"] - d["ci95"], d["mean"] + d["ci95"]
    spread = pd.Series(per_seed)
    led.claims.append(Claim(
        f"{method} beats {other}, over {len(labels)} fit seeds", f"{ds} / {arch} / {split.upper()}", "",
        _fmt(d), "", verdict(lo, hi),
        f"per seed: {', '.join(f'{x:+.2f}' for x in per_seed)} (sd across seeds {spread.std(ddof=1):.2f})"))


def tina_claims(led: Ledger, ds: str, arch: str, split: str) -> None:
    """Tina Table 1: Tina > CS, TAPER, generic; the ranking Generic < CS < TAPER < Tina; more than retrieval."""
    def paper(a, b):
        pa, pb = PAPER_TABLE1.get((a, ds, arch, split)), PAPER_TABLE1.get((b, ds, arch, split))
        return None if pa is None or pb is None else pa - pb
    led.beats("Tina beats classifier selection (Tina Table 1)", "tina", CS, ds, arch, split,
              paper("tina", "classifier-selection"))
    across_seeds(led, "tina", CS, ds, arch, split)
    led.beats("Tina beats TAPER (Tina Table 1)", "tina", "taper", ds, arch, split, paper("tina", "taper"))
    across_seeds(led, "tina", "taper", ds, arch, split)
    led.beats("Tina beats the generic model (Tina Table 1)", "tina", "generic", ds, arch, split,
              paper("tina", "generic"))
    chain = [("generic", CS), (CS, "taper"), ("taper", "tina")]
    if all(led.has(a, b, ds=ds, arch=arch, split=split) for a, b in chain):
        steps = [paired(led.acc(b, ds, arch, split), led.acc(a, ds, arch, split)) for a, b in chain]
        los = [s["mean"] - s["ci95"] for s in steps]
        his = [s["mean"] + s["ci95"] for s in steps]
        v = "confirmed" if min(los) > 0 else "refuted" if min(his) < 0 else "not shown at this scale"
        led.claims.append(Claim(
            "Ranking Generic < CS < TAPER < Tina (Tina Table 1)", f"{ds} / {arch} / {split.upper()}",
            "each step > 0", "; ".join(f"{b} − {a} {s['mean']:+.2f} ± {s['ci95']:.2f}"
                                       for (a, b), s in zip(chain, steps)), "", v,
            "refuted: a step measured below zero" if v == "refuted" else ""))
    for honest in ("zoo-mean", "hypernet", "noised-neighbour", "retrieval"):
        led.beats(f"Diffusion adds something: Tina beats `{honest}` (beyond the paper)", "tina", honest, ds, arch,
                  split)
        across_seeds(led, "tina", honest, ds, arch, split)
    for control in ("tina@shuffled", "tina@null"):
        led.beats(f"Tina reads its prompt: it beats `{control}` (control, beyond the paper)", "tina", control, ds,
                  arch, split)
    led.parity("Few-step sampling is free: DDIM-10 ≈ DDPM-1000 (Tina 3.4)", "tina@ddim-10", "tina@ddpm-1000",
               ds, arch, split, margin=1.0)


ADAPTERS_ONLY = ("cond-pdiff-adapters", "cpd-adapters")  # Cond P-Diff with `layers` = the LoRA adapters only


def condpdiff_claims(led: Ledger, ds: str, arch: str, split: str) -> None:
    """Cond P-Diff on our tasks: it should at least match the classifier it starts from; and the adapters-only
    variant (head from CS) isolates the part the method generates faithfully."""
    led.beats("Cond P-Diff generates working LoRA p-Models: beats CS (Cond P-Diff Table 1, our tasks)",
              "cond-pdiff", CS, ds, arch, split)
    adapters = next((label for label in ADAPTERS_ONLY if led.has(label, ds=ds, arch=arch, split=split)), None)
    if adapters:  # Table 1's label where the config has it, else the ablation's row
        led.beats("Cond P-Diff adapters only (head from CS) beat CS", adapters, CS, ds, arch, split)


ABLATION_TRENDS = [  # (paper's claim, better label, worse label) from Cond P-Diff Tables 3 and 4
    ("Larger training set N helps (Cond P-Diff Table 3)", "cond-pdiff", "cpd-zoo50"),
    ("Task normalization beats no normalization (Cond P-Diff Table 4a)", "cpd-norm-task", "cpd-norm-none"),
    ("Task normalization beats batch normalization (Cond P-Diff Table 4a)", "cpd-norm-task", "cpd-norm-global"),
    ("Text + few-shot condition beats text only (Cond P-Diff Table 4b)", "cpd-fewshot", "cond-pdiff"),
    ("Generating all blocks beats a subset (Cond P-Diff Table 4c)", "cond-pdiff", "cpd-adapters"),
]


# The rest of the Tina paper, as (claim, better label, worse label, the paper's better − worse): a float, a
# {split: float} map, or None where the paper prints a plot only. Labels are the `cpu` profile's ablation rows
# (benchmarks/configs/cpu.yaml); a claim whose labels a config lacks is skipped. The paper's numbers come from
# the reports that print them (Table 3: benchmarks/unseen.py; Table 7: benchmarks/paper_figures.py); Table 6's
# Mini-ImageNet column (full 53.31, w/o classifier augmentation 32.45, merged 10.04, permutation 9.88) is also
# the config's `ablations.table6.paper`.
_TABLE3_TINA_MINUS_TAPER = {f"unseen-{p}": tina - PAPER_TABLE3["taper"][p] for p, tina in PAPER_TABLE3["tina"].items()
                            if PAPER_TABLE3["taper"][p] is not None}
_TABLE7_NAMES_MINUS_DESCRIPTIONS = {split: PAPER_FIG6C["names"][split] - PAPER_FIG6C["descriptions"][split]
                                    for split in ("id", "ood")}
TINA_TRENDS = [
    ("Classifier augmentation helps (Tina Table 6)", "tina-1k", "tina-no-claug", 53.31 - 32.45),
    ("A text embedding per class beats one merged embedding (Tina Table 6)", "tina-1k", "tina-merged", 53.31 - 10.04),
    ("G.pt's permutation augmentation hurts (Tina Table 6)", "tina-1k", "tina-permaug", 53.31 - 9.88),
    ("Names at test beat zero-shot descriptions (Tina Table 7, Fig. 6c)", "tina", "tina@desc",
     _TABLE7_NAMES_MINUS_DESCRIPTIONS),
    ("A wider denoiser is better: width 256 beats 32 (Tina Fig. 4a, CNN-5K)", "tina-w256", "tina-w32", None),
    ("A wider denoiser is better: width 256 beats 32 (Tina Fig. 4a, CNN-14K)", "tina-14k-w256", "tina-14k-w32", None),
    ("More training p-Models are better: 300 beat 25 (Tina Fig. 5, CNN-5K)", "tina-w128", "tina-w128-z25", None),
    ("More training p-Models are better: all beat 25 (Tina Fig. 5, CNN-14K)", "tina-14k", "tina-14k-z25", None),
    ("Parameter inheritance converges faster: ahead at step 100 (Tina 3.3, Fig. 4b)", "tina-inherit@100",
     "tina-w256@100", None),
    ("Tina beats TAPER on tasks with unseen classes (Tina Table 3; our TAPER cuts stage-1 rows of half B)",
     "tina~unseen", "taper~unseen", _TABLE3_TINA_MINUS_TAPER),
    ("Tina generalizes beyond text retrieval on unseen classes (beyond the paper)", "tina~unseen",
     "retrieval~unseen", None),
    ("Tina generalizes beyond a text-to-weights regressor on unseen classes (beyond the paper)", "tina~unseen",
     "hypernet~unseen", None),
]
TINA_PARITY = [  # (claim, label, label): equivalent within ±1 point
    ("Training on descriptions is as good as on names (Tina Table 7)", "tina-desc", "tina-1k"),
    ("Inherited and scratch fits end at the same p-Acc (Tina 3.3, Fig. 4b)", "tina-inherit", "tina-w256"),
]


def tina_trend_claims(led: Ledger, ds: str, arch: str, split: str) -> None:
    """Tables 3, 6, 7 and Figs. 4a, 4b, 5 of the Tina paper, each a paired claim between two of its labels."""
    for claim, better, worse, paper in TINA_TRENDS:
        led.beats(claim, better, worse, ds, arch, split, paper.get(split) if isinstance(paper, dict) else paper)
    for claim, a, b in TINA_PARITY:
        led.parity(claim, a, b, ds, arch, split, margin=1.0)


def efficiency_claims(led: Ledger, efficiency: list[str], headroom: str | None) -> None:
    """Tina's model card: generating a p-Model is faster than fine-tuning one (94.35 s vs 4.88 s); and, at equal
    accuracy, how many seconds of fine-tuning reach what the generator reaches."""
    generate_seconds = {}  # "<dataset>-<arch>" -> Tina's seconds to generate one p-Model
    for path in efficiency:
        if not Path(path).exists():
            continue
        e = pd.read_csv(path)
        single = e[e["mode"] == "single"].set_index("method")["seconds per model"]
        if "fine-tune" not in single or "tina" not in single:
            continue
        ratio = single["fine-tune"] / single["tina"]
        where = Path(path).stem.removeprefix("efficiency-")
        generate_seconds[where] = float(single["tina"])
        led.claims.append(Claim(
            "Generating a p-Model is faster than fine-tuning one (Tina model card)", where,
            "94.35 s vs 4.88 s (19x)", f"{single['fine-tune']:.2f} s vs {single['tina']:.2f} s ({ratio:.1f}x)",
            "classifier selection: no training at all", "confirmed" if ratio > 1 else "refuted",
            "per model, one task per call; equal accuracy below"))
    if headroom and Path(headroom).exists() and len(led.df):
        equal_accuracy_claims(led, pd.read_csv(headroom), generate_seconds)


def equal_accuracy_claims(led: Ledger, headroom: pd.DataFrame, generate_seconds: dict | None = None) -> None:
    """How many seconds of fine-tuning reach what Tina reaches, read as gains over classifier selection: Tina's
    paired gain on a split against the head-room (fine-tuned − CS, paired) of each recipe of the sweep
    (reports/headroom.md) on the generic whose CS is strongest, the one the zoo is built from. A gain at or
    below zero is reached by classifier selection itself, with no fine-tuning at all. Where a recipe reaches it,
    its seconds a p-Model are set against Tina's seconds to generate one (`generate_seconds`, the efficiency
    reports'; the fit's cost is not amortized here)."""
    for (ds, arch), cells in headroom.groupby(["dataset", "arch"]):
        generic = cells.groupby("generic")["CS"].mean().idxmax()
        sweep = cells[cells.generic == generic].sort_values("s / p-Model")
        for split in ("ood", "id"):
            if not led.has("tina", CS, ds=ds, arch=arch, split=split):
                continue
            gain = paired(led.acc("tina", ds, arch, split), led.acc(CS, ds, arch, split))
            reach = sweep[sweep["head-room"] >= gain["mean"]]
            if gain["mean"] <= 0:
                ours, verdict = "classifier selection (0 s of fine-tuning) already reaches it", "refuted"
            elif len(reach):
                r = reach.iloc[0]
                ours = f"{r['s / p-Model']:.1f} s a p-Model ({int(r.epochs)} epochs, lr {r.lr:g}) reach it"
                tina_s = (generate_seconds or {}).get(f"{ds}-{arch}")
                verdict = ("not shown at this scale" if tina_s is None else
                           "confirmed" if tina_s < r["s / p-Model"] else "refuted")
                ours += f"; Tina generates one in {tina_s:.2f} s" if tina_s is not None else ""
            else:
                ours, verdict = "no recipe of the sweep reaches it", "confirmed"
            led.claims.append(Claim(
                "At equal accuracy, generating beats fine-tuning (Tina model card, read at equal accuracy)",
                f"{ds} / {arch} / {split.upper()}", "",
                f"Tina − CS {gain['mean']:+.2f} ± {gain['ci95']:.2f}: {ours}",
                f"head-room of the {generic} generic's recipes: "
                + ", ".join(f"{int(r.epochs)} ep {r.lr:g}: {r['head-room']:+.2f}" for _, r in sweep.iterrows()),
                verdict, "Tina's paired gain on this split against the sweep's paired head-room (zoo tasks)"))


def build(results: list[str], *, efficiency: list[str] = (), headroom: str | None = None) -> list[Claim]:
    df = load_results(results) if results else pd.DataFrame(columns=["method", "dataset", "arch", "split"])
    led = Ledger(df)
    for (ds, arch, split), _ in df.groupby(["dataset", "arch", "split"], sort=True):
        tina_claims(led, ds, arch, split)
        condpdiff_claims(led, ds, arch, split)
        tina_trend_claims(led, ds, arch, split)
        for claim, better, worse in ABLATION_TRENDS:
            led.beats(claim, better, worse, ds, arch, split)
    efficiency_claims(led, list(efficiency), headroom)
    return led.claims


def write_ledger(results: list[str], out, *, config: str | None = None, efficiency: list[str] = (),
                 headroom: str | None = None) -> pd.DataFrame:
    claims = build(results, efficiency=efficiency, headroom=headroom)
    table = pd.DataFrame([c.__dict__ for c in claims])
    if table.empty:
        raise ValueError("no claim could be checked: the results hold neither Tina nor Cond P-Diff beside a baseline")
    with artifacts.atomic_path(Path(out).with_suffix(".csv")) as tmp:
        table.to_csv(tmp, index=False)
    counts = table["verdict"].value_counts()
    scope = sorted({str(Path(r)).split("/results/")[0].removeprefix("data/") for r in results})
    text = "\n".join([
        "# Claims ledger", "",
        "Each claim of the Tina and Cond P-Diff papers that this harness can test. `ours`: paired difference over",
        "the same tasks, mean ± 95% CI (n tasks). Verdicts: **confirmed** (interval above zero), **refuted**",
        "(interval below zero), **not shown at this scale** (interval contains zero). `strongest honest baseline`:",
        "the best of classifier selection (slice), zoo-mean, retrieval, noised-neighbour, hypernet and TAPER on",
        "the same tasks. The paper's figure is its Tina − baseline difference (CS: the paper's Table 1 row, whose",
        "numbers match the slice rule).", "",
        "Verdicts: " + ", ".join(f"{v} {counts.get(v, 0)}" for v in VERDICTS) + ".", "",
        f"Built from {len(results)} per-task result files of {', '.join(scope)}.", "",
        table.to_markdown(index=False), "",
        artifacts.provenance_footer(config), ""])
    artifacts.write_text(text, out)
    return table


def write_claims(results: list[str], out, *, config: str | None = None, efficiency_reports: list[str] = (),
                 headroom: str | None = None) -> pd.DataFrame:
    """`nndiff claims`: `write_ledger`, reading the numbers of each efficiency report (reports/efficiency-*.md)
    from the CSV beside it; logs the count of each verdict."""
    table = write_ledger(results, out, config=config,
                         efficiency=[str(Path(p).with_suffix(".csv")) for p in efficiency_reports], headroom=headroom)
    log.info("claims ledger: %s -> %s", table["verdict"].value_counts().to_dict(), out)
    return table
