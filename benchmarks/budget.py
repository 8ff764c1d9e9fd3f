"""What a target costs before it runs: the jobs `snakemake -n` plans, each priced by the seconds its benchmark
file (the rules' `benchmark:` directive, under data/benchmarks/) recorded the last time that job ran here.

A job never run here is priced at the median of the measured jobs most like it (the same rule, method label,
dataset and arch where there are some, else the same method under another label, e.g. an ablation row's Tina
refit like Tina's fits; marked `estimated`); a rule with no measured job at all is `unknown` and
left out of the sum, so the total is a floor. The seconds are wall seconds of jobs that ran beside others on the
same machine: the figure is what this machine really took."""
from __future__ import annotations

import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from benchmarks.artifacts import provenance_footer, write_text

_RULE = re.compile(r"^(?:local)?rule (\S+):$")
_FIELD = re.compile(r"^\s+(benchmark|output): (.*)$")


@dataclass(frozen=True)
class Job:
    rule: str
    output: str
    benchmark: str | None


def parse_dry_run(text: str) -> list[Job]:
    """The jobs of a `snakemake -n` listing: one per `rule NAME:` block, with its first output and benchmark."""
    jobs, rule, fields = [], None, {}

    def flush():
        if rule is not None:
            jobs.append(Job(rule, fields.get("output", "").split(", ")[0], fields.get("benchmark")))

    for line in text.splitlines():
        if m := _RULE.match(line):
            flush()
            rule, fields = m.group(1), {}
        elif rule is not None and (m := _FIELD.match(line)):
            fields.setdefault(m.group(1), m.group(2).strip())
        elif rule is not None and not line.strip():
            flush()
            rule, fields = None, {}
    flush()
    return jobs


def measured_seconds(path: str | None) -> float | None:
    """The wall seconds a Snakemake benchmark TSV recorded (its `s` column; the sum over repeats), or None."""
    if not path or not Path(path).is_file():
        return None
    try:
        seconds = pd.read_csv(path, sep="\t")["s"].astype(float)
    except (ValueError, KeyError, pd.errors.ParserError, pd.errors.EmptyDataError):
        return None  # a foreign file prices like a job never run
    return float(seconds.sum()) if len(seconds) and seconds.notna().all() else None  # half-written: likewise


def _place(output: str) -> str:
    """The part of an output path that sets a job's scale: data/<dataset>/<arch> (or the report's folder)."""
    return "/".join(Path(output).parts[:3])


def _label(output: str) -> str | None:
    """The method label of a method's or a result's path (data/<ds>/<arch>/methods/<label>/...), else None."""
    parts = Path(output).parts
    for i, part in enumerate(parts[:-1]):
        if part in ("methods", "results"):
            return parts[i + 1].split("@")[0]  # a variant generates like its base
    return None


def _measured(jobs: list[Job], method_of: dict[str, str]) -> pd.DataFrame:
    rows = [{"rule": j.rule, "output": j.output, "place": _place(j.output), "label": (label := _label(j.output)),
             "method": method_of.get(label, label), "seconds": measured_seconds(j.benchmark)} for j in jobs]
    df = pd.DataFrame(rows, columns=["rule", "output", "place", "label", "method", "seconds"])
    df["source"] = df["seconds"].notna().map({True: "measured", False: "unknown"})
    return df


def price(jobs: list[Job], reference: list[Job] | None = None, method_of: dict[str, str] | None = None) -> pd.DataFrame:
    """One row per job: its seconds and where they come from. A job not measured here is `estimated` at the median
    of the measured jobs most like it: the same rule, label (a variant counts as its base) and place (dataset and
    arch), else the same rule and label anywhere, else the same rule and method (`method_of`: label -> registry
    name) at that place, then anywhere, else the same rule and place, else the rule anywhere; it is `unknown` when
    its rule never ran here. `reference`: the jobs whose measurements price the others (default `jobs`
    themselves; for the jobs left to run, the whole plan, since those have no measurement yet)."""
    method_of = method_of or {}
    df = _measured(jobs, method_of)
    measured = df if reference is None else _measured(reference, method_of)  # each benchmark file read once
    measured = measured[measured["source"] == "measured"]
    keys = [["rule", "label", "place"], ["rule", "label"], ["rule", "method", "place"], ["rule", "method"],
            ["rule", "place"], ["rule"]]
    medians = [measured.dropna(subset=k).groupby(k)["seconds"].median() for k in keys]
    for i in df.index[df["source"] == "unknown"]:
        for key, median in zip(keys, medians):
            at = tuple(df.loc[i, key]) if len(key) > 1 else df.at[i, key[0]]
            if at in median.index:
                df.at[i, "seconds"], df.at[i, "source"] = float(median[at]), "estimated"
                break
    return df.drop(columns=["place", "label", "method"])


def summarize(priced: pd.DataFrame) -> pd.DataFrame:
    """Per rule: jobs, how many were measured, core-hours, and the longest job; costliest rule first."""
    g = priced.groupby("rule")
    out = pd.DataFrame({
        "jobs": g.size(),
        "measured": g["source"].apply(lambda s: int((s == "measured").sum())),
        "unknown": g["source"].apply(lambda s: int((s == "unknown").sum())),
        "core-hours": g["seconds"].sum() / 3600,
        "longest job (min)": g["seconds"].max() / 60,
    }).fillna(0.0)
    return out.sort_values("core-hours", ascending=False).reset_index()


def plan(targets: list[str], *, config: str | None = None, snakefile: str = "Snakefile", cores: int = 1,
         remaining: bool = False) -> list[Job]:
    """The jobs Snakemake plans for `targets`: all of them from scratch, or (`remaining`) only those left to run."""
    cmd = [sys.executable, "-m", "snakemake", "-n", "--cores", str(cores), "-s", snakefile,
           "--rerun-triggers=mtime"]
    if not remaining:
        cmd.append("--forceall")
    if config:
        cmd += ["--configfile", config]
    result = subprocess.run(cmd + ["--", *targets], capture_output=True, text=True)
    if result.returncode != 0:
        tail = [line for line in (result.stderr + result.stdout).splitlines() if line.strip()][-1:]
        raise RuntimeError(f"snakemake -n {' '.join(targets)} failed: {tail[0] if tail else result.returncode}")
    return parse_dry_run(result.stdout + "\n" + result.stderr)


def methods_of_labels(config: str | None) -> dict[str, str]:
    """Each method label of a config (ablation rows, unseen-class refits included) -> the registered method it
    runs; {} when the config cannot be read (pricing then falls back to rule and place)."""
    from benchmarks.config import load_config
    from benchmarks import workflow as wf
    try:
        cfg = load_config(config or "cpu")
        labels = [*wf.method_labels(cfg), *wf.ablation_rows(cfg), *wf.unseen_labels(cfg)]
        return {label: wf.method_options(cfg, label)[0] for label in labels}
    except (OSError, ValueError, KeyError):
        return {}


def budget_lines(priced: pd.DataFrame, *, targets: list[str], cores: int, remaining: bool) -> list[str]:
    total_h = priced["seconds"].sum() / 3600
    longest = (priced["seconds"].max() if priced["seconds"].notna().any() else 0.0) / 3600
    unknown = int((priced["source"] == "unknown").sum())
    scope = "left to run" if remaining else "from scratch"
    return [
        f"{len(priced)} jobs {scope} for `{' '.join(targets)}`: {total_h:.2f} core-hours"
        + (f" (+ {unknown} jobs of rules never run here, not priced)" if unknown else ""),
        f"on {cores} cores: at least {max(total_h / cores, longest):.2f} h of wall time "
        f"(the sum over the cores, or the longest job: {longest * 60:.0f} min)",
    ]


def write_budget(targets: list[str], out: str | None, *, config: str | None, cores: int,
                 snakefile: str = "Snakefile", remaining: bool = False) -> pd.DataFrame:
    """Price `targets` and print the per-rule table; also write it as markdown to `out` when given."""
    everything = plan(targets, config=config, snakefile=snakefile, cores=cores)
    jobs = plan(targets, config=config, snakefile=snakefile, cores=cores, remaining=True) if remaining else everything
    priced = price(jobs, everything, methods_of_labels(config))
    table = summarize(priced)
    head = budget_lines(priced, targets=targets, cores=cores, remaining=remaining)
    costliest = priced.sort_values("seconds", ascending=False).head(10)
    text = table.to_markdown(index=False, floatfmt=".2f")
    print("\n".join(head) + "\n\n" + text)
    if out:
        write_text("\n".join([
            f"# Budget: {' '.join(targets)}", "", *[f"- {line}" for line in head], "",
            "Seconds are those each job's benchmark file (data/benchmarks/) recorded when it last ran here; "
            "a job not yet run is priced at the median of the measured jobs most like it (`estimated`).", "", text, "",
            "The ten costliest jobs:", "", costliest.assign(minutes=costliest["seconds"] / 60)
            [["rule", "output", "minutes", "source"]].to_markdown(index=False, floatfmt=".1f"), "",
            provenance_footer(config), ""]), out)
    return table
