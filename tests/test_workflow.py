"""The DAG: dry runs and lint (fast), the smoke profile end to end with a third-party plugin (slow),
and a zoo build killed with SIGKILL and rerun (slow)."""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

from tests.plugin_fixture import install_plugin

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
SMOKE = ROOT / "benchmarks" / "configs" / "smoke.yaml"


def _env(**extra) -> dict:
    env = dict(os.environ, PATH=f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}", HF_HUB_OFFLINE="1")
    env.update(extra)
    return env


def snakemake(*args, cwd=ROOT, env=None, check=True) -> subprocess.CompletedProcess:
    cmd = [str(BIN / "snakemake"), "-s", str(ROOT / "Snakefile"), *args]
    out = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, env=env or _env())
    if check and out.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed:\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}")
    return out


@pytest.mark.parametrize("profile", ["smoke", "cpu", "paper"])
def test_dry_run_builds_the_dag(profile, tmp_path):
    out = snakemake("-n", "--cores", "2", f"reports/{profile}/table1.md" if profile != "cpu" else "reports/table1.md", "--configfile",
                    str(ROOT / "benchmarks" / "configs" / f"{profile}.yaml"), "--directory", str(tmp_path))
    assert "table1" in out.stdout and "finetune" in out.stdout


def test_a_fresh_clone_rebuilds_and_republishes_rather_than_showing_the_shipped_numbers(tmp_path):
    """The DAG's own targets are never committed (reports/ is ignored but for reports/published/), and rule all
    rebuilds them and refreshes the committed copies even where those exist already."""
    ignored = subprocess.run(["git", "check-ignore", "-q", "reports/table1.md"], cwd=ROOT)
    kept = subprocess.run(["git", "check-ignore", "-q", "reports/published/table1.md"], cwd=ROOT)
    assert ignored.returncode == 0 and kept.returncode == 1
    cfg = yaml.safe_load(SMOKE.read_text())
    cfg["publish"] = "shipped"
    config = tmp_path / "publishing.yaml"
    config.write_text(yaml.safe_dump(cfg))
    (tmp_path / "shipped").mkdir()
    (tmp_path / "shipped" / "table1.md").write_text("numbers from another machine\n")
    out = snakemake("-n", "-p", "--cores", "1", "all", "--configfile", str(config), "--directory", str(tmp_path)).stdout
    assert "rule finetune:" in out and "nndiff publish reports/smoke/table1.md shipped/table1.md" in out


def test_table1_variants_are_rows_that_reuse_their_base_fit(tmp_path):
    out = snakemake("-n", "-p", "--cores", "1", "reports/smoke/table1.md", "--configfile", str(SMOKE),
                    "--directory", str(tmp_path)).stdout
    assert "results/cond-pdiff@first/ood.csv" in out and "results/tina@ddpm-20/" not in out
    assert "methods/cond-pdiff@first/fit.json" not in out  # a variant generates from its base's fit

    cfg = yaml.safe_load(SMOKE.read_text())
    cfg["report"]["table1_variants"] = ["cond-pdiff@frist"]
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(cfg))
    out = snakemake("-n", "--cores", "1", "reports/smoke/table1.md", "--configfile", str(bad), check=False)
    assert out.returncode != 0 and "['cond-pdiff@frist'] are not variant labels" in out.stdout + out.stderr


def test_ablation_rows_are_fits_of_the_base_with_changed_options(tmp_path):
    out = snakemake("-n", "-p", "--cores", "1", "reports/smoke/condpdiff_ablation.md", "--configfile", str(SMOKE),
                    "--directory", str(tmp_path)).stdout
    fits = [line for line in out.splitlines() if "nndiff fit" in line]
    head = next(line for line in fits if "methods/cpd-head/" in line)
    assert '"layers": ["fc"]' in head and '"ae_steps": 40' in head  # the base's options, one changed
    assert any("methods/cond-pdiff/" in line for line in fits)  # the base row is the base label's own fit
    assert "results/cpd-norm-task/id.csv" in out and "results/cpd-norm-task/ood.csv" not in out
    assert "results/classifier-selection-slice/ood.csv" in out  # a reference row: evaluated, not refitted
    assert not any("methods/classifier-selection-slice/" in line for line in fits if "cpd" in line)


@pytest.mark.slow  # the check itself: test_workflow_checks.py (unit)
@pytest.mark.parametrize("key, value, message", [
    ("base", "cond-pdif", "unknown base label 'cond-pdif'"),
    ("references", ["classifier-selection-slise"], "unknown references ['classifier-selection-slise']"),
])
def test_ablation_with_unknown_label_fails_before_any_job(tmp_path, key, value, message):
    cfg = yaml.safe_load(SMOKE.read_text())
    cfg["ablations"]["condpdiff"][key] = value
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(cfg))
    out = snakemake("-n", "--cores", "1", "reports/smoke/condpdiff_ablation.md", "--configfile", str(bad), check=False)
    assert out.returncode != 0 and message in out.stdout + out.stderr


@pytest.mark.slow  # two dry runs; GLUE is off in every shipped profile
def test_glue_rules_exist_only_with_a_glue_section(tmp_path):
    cfg = yaml.safe_load(SMOKE.read_text())
    out = snakemake("-n", "--cores", "1", "reports/smoke/glue.md", "--configfile", str(SMOKE), "--directory",
                    str(tmp_path), check=False)
    assert out.returncode != 0  # no `glue:`: no rule makes reports/smoke/glue.md
    cfg["glue"] = {"model": "/models/tiny-bert", "root": "/data/glue", "tasks": ["sst2", "rte"]}
    config = tmp_path / "glue.yaml"
    config.write_text(yaml.safe_dump(cfg))
    out = snakemake("-n", "-p", "--cores", "1", "reports/smoke/glue.md", "--configfile", str(config), "--directory",
                    str(tmp_path)).stdout
    assert "nndiff glue-zoo --model /models/tiny-bert --root /data/glue --tasks sst2 rte" in out
    assert "nndiff glue-run --zoo data/glue/zoo.pt" in out


@pytest.mark.slow  # snakemake --lint over the whole workflow
def test_lint_is_clean():
    out = snakemake("--lint", "--configfile", str(SMOKE), check=False)
    assert out.returncode == 0, out.stdout + out.stderr


@pytest.mark.slow  # the check itself: test_workflow_checks.py; the dry-run wiring: its option-typo test
def test_malformed_config_fails_before_any_job(tmp_path):
    cfg = yaml.safe_load(SMOKE.read_text())
    cfg["finetune"]["epoch"] = 2  # typo
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(cfg))
    out = snakemake("-n", "--cores", "1", "reports/smoke/table1.md", "--configfile", str(bad), check=False)
    assert out.returncode != 0 and "epoch" in out.stdout + out.stderr


@pytest.mark.slow
def test_smoke_profile_end_to_end_with_plugin(tmp_path):
    site = install_plugin(tmp_path / "site")
    cfg = yaml.safe_load(SMOKE.read_text())
    cfg["methods"]["zoo-average"] = {"scale": 1.0}
    config = tmp_path / "smoke-plugin.yaml"
    config.write_text(yaml.safe_dump(cfg))
    work = tmp_path / "work"
    env = _env(PYTHONPATH=str(site))
    snakemake("--cores", "2", "reports/smoke/table1.md", "--configfile", str(config), "--directory", str(work), env=env)
    table = (work / "reports" / "smoke" / "table1.md").read_text()
    for row in ["generic", "classifier-selection", "oracle", "zoo-average"]:
        assert f"| {row} " in table
    import pandas as pd
    summary = pd.read_csv(work / "reports" / "smoke" / "table1.csv")
    cs = summary[(summary.method == "classifier-selection-slice") & (summary.split == "ood")
                 & (summary.arch == "cnn-5k")]["mean"].item()
    assert cs > 100 / cfg["tasks"]["classes_per_task"]  # personalization beats chance
    # a second run has nothing to do
    again = snakemake("-n", "--cores", "2", "reports/smoke/table1.md", "--configfile", str(config), "--directory",
                      str(work), env=env)
    assert "Nothing to be done" in again.stdout + again.stderr
    # diagnostics reuse the fitted generators
    reports = ["reports/smoke/diagnose-tina-synthetic-cnn-5k-ood.md", "reports/smoke/diagnose-cond-pdiff-synthetic-cnn-5k-lora-id.md",
               "reports/smoke/autoencoder-cond-pdiff-synthetic-cnn-5k-lora.md"]
    out = snakemake("--cores", "2", *reports, "--configfile", str(config), "--directory", str(work), env=env)
    assert "rule fit" not in out.stdout + out.stderr
    assert "| generated body + CS head" in (work / reports[1]).read_text()
    assert "| zoo p-Model through the autoencoder" in (work / reports[2]).read_text()


@pytest.mark.slow
def test_killed_zoo_build_reruns_to_identical_result(tmp_path):
    """kill -9 in the middle of `nndiff finetune`, rerun: only missing p-Models are trained, result bit-identical."""
    nd = [str(BIN / "nndiff")]
    subprocess.run(nd + ["prepare", "--kind", "synthetic", "--options", '{"n_classes": 12, "n_train": 60}',
                         "--out", str(tmp_path / "images.pt")], check=True, env=_env())
    subprocess.run(nd + ["tasks", "--images", str(tmp_path / "images.pt"), "--tasks-config",
                         '{"classes_per_task": 4, "zoo_rounds": 3, "n_ood": 2, "n_id_eval": 2, "unseen_levels": [0],'
                         ' "n_unseen_eval": 1, "unseen_zoo_rounds": 2, "padded_sizes": [4], "n_padded_per_size": 1}',
                         "--out", str(tmp_path / "tasks.json")], check=True, env=_env())
    subprocess.run(nd + ["stage1", "--images", str(tmp_path / "images.pt"), "--arch", "cnn-5k", "--epochs", "1",
                         "--out", str(tmp_path / "generic.pt")], check=True, env=_env())
    finetune = nd + ["finetune", "--images", str(tmp_path / "images.pt"), "--generic", str(tmp_path / "generic.pt"),
                     "--tasks", str(tmp_path / "tasks.json"), "--epochs", "3", "--device", "cpu"]
    subprocess.run(finetune + ["--out", str(tmp_path / "full.pt")], check=True, env=_env())

    out = tmp_path / "killed.pt"
    parts = Path(f"{out}.parts")
    proc = subprocess.Popen(finetune + ["--out", str(out)], env=_env(), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline and len(list(parts.glob("*.pt"))) < 2:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done_before = {p.name for p in parts.glob("*.pt")}
    assert not out.exists() and 2 <= len(done_before) < 9
    subprocess.run(finetune + ["--out", str(out)], check=True, env=_env())
    full, resumed = torch.load(tmp_path / "full.pt"), torch.load(out)
    assert torch.equal(full["theta"], resumed["theta"]) and full["task_ids"] == resumed["task_ids"]
    assert (tmp_path / "full.pt").read_bytes() == out.read_bytes()  # the same sha256; seconds in the sidecars
    assert not parts.exists()
    shutil.rmtree(tmp_path, ignore_errors=True)
