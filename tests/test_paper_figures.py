"""Figures from results the DAG already makes (benchmarks/paper_figures.py): training-curve, samplers, fig6c."""
from __future__ import annotations

import copy
import json
import math
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml
from scipy import stats

from benchmarks import artifacts
from benchmarks import workflow as wf
from benchmarks.config import CONFIG_DIR
from benchmarks.figures import FIGURES
from benchmarks.paper_figures import fig6c, loss_history, samplers, training_curve

ROOT = Path(__file__).resolve().parent.parent
SMOKE, CPU = CONFIG_DIR / "smoke.yaml", CONFIG_DIR / "cpu.yaml"


def _csv(root: Path, label: str, split: str, acc: list[float], dataset="synthetic", arch="cnn-5k") -> str:
    p = root / "data" / dataset / arch / "results" / label / f"{split}.csv"
    p.parent.mkdir(parents=True, exist_ok=True)
    pd.DataFrame({"method": label, "split": split, "task_id": [f"t{i}" for i in range(len(acc))], "classes": "a|b|c|d|e",
                  "n_images": 100, "correct": [round(a) for a in acc], "accuracy": acc}).to_csv(p, index=False)
    return str(p)


def _fit(root: Path, label: str, losses: list[float], step: int, log_every: int, seconds: float | None = None) -> str:
    workdir = root / "data" / "synthetic" / "cnn-5k" / "methods" / label
    state = workdir / "state" / "state.pt"
    state.parent.mkdir(parents=True, exist_ok=True)
    artifacts.save_torch({"losses": losses, "step": step, "config": {"log_every": log_every, "seed": None}}, state)
    if seconds is not None:
        artifacts.write_timing(state, seconds=seconds)
    artifacts.write_json({"method": "tina", "options": {}}, workdir / "fit.json")
    return str(workdir / "fit.json")


def test_the_three_figures_are_registered():
    assert FIGURES["training-curve"] is training_curve and FIGURES["samplers"] is samplers
    assert FIGURES["fig6c"] is fig6c and "fig6b" in FIGURES

# ----------------------------------------------------------------------------- training curve


def test_training_curve_reads_a_known_loss_history_exactly(tmp_path):
    tina = [0.9, 0.5, 0.25, 0.125]  # 50-step windows, the last one 20 steps (170 steps)
    pad = [1.5, 0.75]
    fits = [_fit(tmp_path, "tina", tina, 170, 50, seconds=12.5), _fit(tmp_path, "tina-pad", pad, 100, 50)]
    out = tmp_path / "reports" / "training-curve.md"
    table = training_curve(fits, out, config=str(SMOKE))  # smoke: labels [tina, tina-pad]
    csv = pd.read_csv(tmp_path / "reports" / "figures" / "training-curve.csv")
    assert list(csv.columns) == ["label", "step", "loss"]
    assert csv[csv.label == "tina"]["step"].tolist() == [50, 100, 150, 170]
    assert csv[csv.label == "tina"]["loss"].tolist() == tina and csv[csv.label == "tina-pad"]["loss"].tolist() == pad
    assert csv[csv.label == "tina-pad"]["step"].tolist() == [50, 100] and len(table) == 6
    for ext in ("png", "svg"):
        assert (tmp_path / "reports" / "figures" / f"training-curve.{ext}").stat().st_size > 1000
    text = out.read_text()
    assert "![training-curve](figures/training-curve.png)" in text and "| tina " in text.replace("`", "")
    assert " 0.139 |" in text and "| 12 " in text  # last / first = 0.125 / 0.9; fit seconds 12.5
    assert "Config `" in text and "commit `" in text  # the provenance footer


def test_loss_history_spreads_entries_evenly_when_log_every_changed_on_resume():
    h = loss_history({"losses": [3.0, 2.0, 1.0, 0.5], "step": 100, "config": {"log_every": 50}})
    assert h["step"].tolist() == [25, 50, 75, 100] and h["loss"].tolist() == [3.0, 2.0, 1.0, 0.5]


def test_training_curve_without_a_fit_names_the_missing_fit_json(tmp_path):
    fits = [_fit(tmp_path, "tina", [1.0, 0.5], 100, 50)]
    with pytest.raises(FileNotFoundError, match=r"^training-curve: data/synthetic/cnn-5k/methods/tina-pad/fit\.json: "
                                                r"not given") as e:
        training_curve(fits, tmp_path / "training-curve.md", config=str(SMOKE))
    assert "\n" not in str(e.value)

# ----------------------------------------------------------------------------- samplers

SWEEP = {"tina": [60.0, 70, 65, 75], "tina@ddim-10": [62.0, 72, 66, 78], "tina@ddpm-20": [50.0, 55, 52, 57],
         "tina@dpm-solver-5": [64.0, 70, 68, 74]}


def _sweep(root: Path, labels=SWEEP) -> list[str]:
    return [_csv(root, label, "ood", acc) for label, acc in labels.items()]


def test_samplers_groups_steps_by_sampler_and_the_csv_holds_the_per_task_means(tmp_path):
    paths = _sweep(tmp_path)
    arch = tmp_path / "data" / "synthetic" / "cnn-5k"
    artifacts.write_timing(arch / "methods" / "tina" / "generated" / "ood.pt", seconds=2.0)
    artifacts.write_timing(arch / "methods" / "tina@ddim-10" / "generated" / "ood.pt", seconds=4.0)
    tsv = tmp_path / "data" / "benchmarks" / "generate" / "synthetic-cnn-5k-tina@ddpm-20-ood.tsv"
    tsv.parent.mkdir(parents=True)
    tsv.write_text("s\th:m:s\tmax_rss\n8.0\t0:00:08\t100\n")  # no sidecar: Snakemake's benchmark file
    out = tmp_path / "reports" / "samplers.md"
    samplers(paths, out, config=str(SMOKE))
    csv = pd.read_csv(tmp_path / "reports" / "figures" / "samplers.csv")
    # ddpm first, then ddim by steps (tina: the profile's ddim, 5 steps), then dpm-solver; from the config
    assert list(zip(csv["sampler"], csv["steps"], csv["label"])) == [
        ("ddpm", 20, "tina@ddpm-20"), ("ddim", 5, "tina"), ("ddim", 10, "tina@ddim-10"), ("dpm-solver", 5, "tina@dpm-solver-5")]
    row = csv.set_index("label")
    for label, acc in SWEEP.items():
        assert row.loc[label, "mean"] == pytest.approx(sum(acc) / 4, abs=1e-6)
        half = stats.t.ppf(0.975, 3) * pd.Series(acc).std() / 2
        assert row.loc[label, "ci95"] == pytest.approx(half, rel=1e-5) and row.loc[label, "n"] == 4
    assert row.loc["tina", "seconds per p-Model"] == pytest.approx(0.5)  # 2 s over 4 tasks
    assert row.loc["tina@ddim-10", "seconds per p-Model"] == pytest.approx(1.0)
    assert row.loc["tina@ddpm-20", "seconds per p-Model"] == pytest.approx(2.0) and row.loc["tina@ddpm-20", "timing"] == "benchmark tsv"
    assert math.isnan(row.loc["tina@dpm-solver-5", "seconds per p-Model"]) and row.loc["tina@dpm-solver-5", "timing"] == "none"
    for ext in ("png", "svg"):
        assert (tmp_path / "reports" / "figures" / f"samplers.{ext}").stat().st_size > 1000
    text = out.read_text()
    assert "| ddim " in text and "67.50 ±" in text and "![samplers](figures/samplers.png)" in text
    assert "Best mean: `tina@ddim-10` (ddim, 10 steps), +2.00 ± " in text


def test_samplers_reads_sampler_and_steps_from_the_config_not_the_label():
    cfg = yaml.safe_load(SMOKE.read_text())
    cfg["variants"]["tina@ddpm-999"] = {"of": "tina", "sampler": "ddim", "sample_steps": 7}
    cfg["variants"]["tina@default-ddpm"] = {"of": "tina", "sampler": "ddpm"}  # steps unset: the method's default
    cfg["methods"]["tina"].pop("sample_steps")
    assert wf.sampler_steps(cfg, "tina@ddpm-999") == ("ddim", 7)
    assert wf.sampler_steps(cfg, "tina@default-ddpm") == ("ddpm", 1000) and wf.sampler_steps(cfg, "tina") == ("ddim", 50)
    labels = wf.samplers_spec(cfg)["labels"]
    assert "tina@ddpm-999" in labels and "tina@shuffled" not in labels and "tina@null" not in labels  # no controls


def test_a_missing_variant_result_fails_with_one_line_naming_the_file(tmp_path):
    paths = _sweep(tmp_path, {k: v for k, v in SWEEP.items() if k != "tina@ddim-10"})
    with pytest.raises(FileNotFoundError) as e:
        samplers(paths, tmp_path / "samplers.md", config=str(SMOKE))
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith("samplers: data/synthetic/cnn-5k/results/tina@ddim-10/ood.csv: not given")
    assert "ddim, 10 steps" in msg
    gone = tmp_path / "data" / "synthetic" / "cnn-5k" / "results" / "nope" / "ood.csv"
    with pytest.raises(FileNotFoundError, match=rf"^samplers: {gone}: no such file$"):
        samplers([*paths, str(gone)], tmp_path / "samplers.md", config=str(SMOKE))


def test_the_cli_prints_one_error_line_for_a_missing_result(tmp_path, caplog):
    from benchmarks.cli import main
    paths = _sweep(tmp_path, {k: v for k, v in SWEEP.items() if k != "tina@ddpm-20"})
    assert main(["figure", "samplers", *paths, "--config", str(SMOKE), "--out", str(tmp_path / "s.md")]) == 2
    errors = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert len(errors) == 1 and "results/tina@ddpm-20/ood.csv" in errors[0] and "\n" not in errors[0]

# ----------------------------------------------------------------------------- Fig. 6c


def test_fig6c_puts_names_and_descriptions_beside_the_papers_values(tmp_path):
    acc = {("tina", "id"): [70.0, 80, 75], ("tina", "ood"): [60.0, 70, 65],
           ("tina@desc", "id"): [40.0, 50, 48], ("tina@desc", "ood"): [30.0, 44, 41]}
    paths = [_csv(tmp_path, label, split, a) for (label, split), a in acc.items()]
    out = tmp_path / "reports" / "fig6c.md"
    fig6c(paths, out, config=str(SMOKE))
    csv = pd.read_csv(tmp_path / "reports" / "figures" / "fig6c.csv")
    assert list(zip(csv["split"], csv["prompt"], csv["label"])) == [
        ("id", "names", "tina"), ("id", "descriptions", "tina@desc"), ("ood", "names", "tina"),
        ("ood", "descriptions", "tina@desc")]
    assert csv["mean"].round(4).tolist() == [75.0, 46.0, 65.0, 38.3333]
    assert csv["paper"].tolist() == [67.27, 46.93, 67.21, 46.77]  # smoke table7's `paper:` = PROTOCOL's Table 7
    ood = csv[(csv.split == "ood") & (csv.prompt == "descriptions")].iloc[0]
    assert ood["vs names mean"] == pytest.approx(38.3333 - 65.0, abs=1e-3)
    for ext in ("png", "svg"):
        assert (tmp_path / "reports" / "figures" / f"fig6c.{ext}").stat().st_size > 1000
    text = out.read_text()
    assert "| ID " in text and "46.93" in text and "- OOD: descriptions − names -26.67 points here, -20.44 in the paper." in text


def test_fig6c_without_the_descriptions_result_names_it(tmp_path):
    paths = [_csv(tmp_path, "tina", s, [50.0, 60]) for s in ("id", "ood")] + [_csv(tmp_path, "tina@desc", "id", [40.0])]
    with pytest.raises(FileNotFoundError, match=r"^fig6c: data/synthetic/cnn-5k/results/tina@desc/ood\.csv: not given"):
        fig6c(paths, tmp_path / "fig6c.md", config=str(SMOKE))

# ----------------------------------------------------------------------------- config and DAG


def test_figures_config_list_form_and_checks():
    cfg = yaml.safe_load(CPU.read_text())
    assert wf.training_curve_spec(cfg)["labels"] == ["tina", "tina-seed1", "tina-seed2"]  # the fit-seed rows
    assert wf.fig6c_spec(cfg)["descriptions"] == "tina@desc"
    listed = copy.deepcopy(cfg)
    listed["report"]["figures"] = ["samplers", "fig6c"]
    wf.check_config(listed)
    assert wf.figure_reports(listed, "reports/")[:2] == ["reports/samplers.md", "reports/figures/samplers.png"]
    bad = copy.deepcopy(cfg)
    bad["report"]["figures"] = {"training-curve": {"labels": ["tina@ddim-10"]}}
    with pytest.raises(ValueError, match=r"report.figures.training-curve.labels: 'tina@ddim-10' is not a fitted label"):
        wf.check_figures(bad)
    bad["report"]["figures"] = {"fig6c": {"ablation": "table9"}}
    with pytest.raises(ValueError, match=r"report.figures.fig6c.ablation: 'table9' is not an ablation"):
        wf.check_figures(bad)
    bad["report"]["figures"] = ["samplrs"]
    with pytest.raises(ValueError, match="report/figures"):
        wf.check_config(bad)


def test_smoke_dry_run_plans_the_three_figures(tmp_path):
    cmd = [str(Path(sys.executable).parent / "snakemake"), "-s", str(ROOT / "Snakefile"), "-n", "-p", "--cores", "1",
           "all", "--configfile", str(SMOKE), "--directory", str(tmp_path)]
    out = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    text = out.stdout + out.stderr
    assert out.returncode == 0, text[-3000:]
    for name in ("training-curve", "samplers", "fig6c"):
        for target in (f"reports/smoke/{name}.md", *(f"reports/smoke/figures/{name}.{e}" for e in ("png", "svg", "csv"))):
            assert target in text, target
    assert ("nndiff figure training-curve data/synthetic/cnn-5k/methods/tina/fit.json "
            "data/synthetic/cnn-5k/methods/tina-pad/fit.json") in text
    assert "nndiff figure samplers data/synthetic/cnn-5k/results/tina/ood.csv" in text
    assert "results/tina@ddim-10/ood.csv" in text and "nndiff figure fig6c " in text
    fits = [line for line in text.splitlines() if "nndiff fit " in line]
    assert not any("methods/tina@" in f for f in fits)  # the sampler variants and tina@desc only generate
