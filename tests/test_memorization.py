"""Tina Table 5 (benchmarks/memorization.py): ensembles, matched distances, paired differences, inputs, the DAG."""
from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch
import yaml

from benchmarks import workflow as wf
from benchmarks.config import CONFIG_DIR
from benchmarks.memorization import (FINETUNED, Candidates, accuracy_table, ensemble_scores, member_keys,
                                     nearest_zoo, pair_distance)
from benchmarks.novelty import unit_chain
from benchmarks.pmodels import get_arch

ROOT = Path(__file__).resolve().parent.parent
SMOKE = CONFIG_DIR / "smoke.yaml"
SNAKEMAKE = str(Path(sys.executable).parent / "snakemake")


def _permuted(arch, layout, theta, gen):
    """theta with the hidden units of every conv layer permuted (and the next layer's inputs alike): the same
    function, another vector."""
    p = {n: v.clone() for n, v in layout.unflatten(theta).items()}
    perm = None
    for w, b in unit_chain(arch, layout).layers:
        if perm is not None:
            p[w] = p[w][:, perm]
        perm = torch.randperm(p[w].shape[0], generator=gen)
        p[w] = p[w][perm]
        if b is not None:
            p[b] = p[b][perm]
    p["fc.weight"] = p["fc.weight"][:, perm]
    return layout.flatten(p)

# ----------------------------------------------------------------------------- ensemble


def test_ensemble_of_two_models_is_the_mean_of_their_probabilities():
    a = torch.tensor([[2.0, 0.0], [0.0, 1.0]])
    b = torch.tensor([[0.0, 3.0], [0.0, 0.5]])
    sa = torch.tensor([[1 / (1 + torch.e ** -2), 1 / (1 + torch.e ** 2)], [1 / (1 + torch.e), 1 / (1 + torch.e ** -1)]])
    sb = torch.tensor([[1 / (1 + torch.e ** 3), 1 / (1 + torch.e ** -3)], [1 / (1 + torch.e ** 0.5), 1 / (1 + torch.e ** -0.5)]])
    hand = (sa + sb) / 2  # image 0: (0.46, 0.54) -> class 1, though model a says class 0
    got = ensemble_scores([a, b], "probs")
    assert torch.allclose(got, hand, atol=1e-6)
    assert got.argmax(1).tolist() == [1, 1]
    # averaging logits instead: image 0 -> (1.0, 1.5) -> class 1; image 1 -> (0, 0.75)
    assert torch.allclose(ensemble_scores([a, b], "logits"), torch.tensor([[1.0, 1.5], [0.0, 0.75]]))
    with pytest.raises(ValueError, match="ensemble must be one of"):
        ensemble_scores([a, b], "votes")


def test_members_are_the_fine_tuned_then_names_then_descriptions():
    assert member_keys(["tina", "tina@ddpm"], ["tina@desc"]) == {
        FINETUNED: "oracle", "names": "tina", "names 2": "tina@ddpm", "descriptions": "tina@desc"}

# ----------------------------------------------------------------------------- distances


def test_a_permuted_zoo_vector_has_matched_distance_zero_and_raw_distance_above_zero():
    arch, gen = get_arch("cnn-5k"), torch.Generator().manual_seed(0)
    layout = arch.layout(3)
    names = ["a", "b", "c", "d", "e"]
    zoo_theta = torch.randn(3, layout.n_params, generator=gen) * 0.3
    classes = [["a", "b", "c"], ["c", "d", "e"], ["b", "d", "a"]]
    cands = Candidates.build(zoo_theta, classes, arch, names)
    generated = _permuted(arch, layout, zoo_theta[1], gen)  # zoo p-Model 1 in another unit order
    nb = nearest_zoo(cands, generated, layout, [2, 3, 4])  # the task (c, d, e): zoo p-Model 1's classes
    assert nb["matched"][0] == 1 and nb["matched"][1] == pytest.approx(0, abs=1e-4)
    assert nb["raw"][1] > 1.0
    raw, matched = pair_distance(arch, layout, zoo_theta[1], generated)
    assert raw > 1.0 and matched == pytest.approx(0, abs=1e-4)
    assert raw == pytest.approx(float((zoo_theta[1] - generated).norm()), rel=1e-6)
    lora = get_arch("cnn-5k-lora")  # nothing to permute beside frozen weights: matched = raw
    t = torch.randn(2, lora.layout(3).n_params, generator=gen)
    assert pair_distance(lora, lora.layout(3), t[0], t[1]) == pytest.approx((float((t[0] - t[1]).norm()),) * 2)

# ----------------------------------------------------------------------------- paired differences


def test_paired_differences_use_matching_tasks_whatever_their_order():
    ft = pd.DataFrame({"task_id": ["t0", "t1", "t2"], "accuracy": [50.0, 60.0, 70.0]})
    names = pd.DataFrame({"task_id": ["t2", "t0"], "accuracy": [71.0, 52.0]})  # other order, t1 missing
    table = accuracy_table({FINETUNED: ft, "names": names}, paper={}).set_index("p-Model")
    assert table.loc["names", "delta"] == pytest.approx(1.5)  # (71 - 70 + 52 - 50) / 2, not row by row
    assert "(n=2)" in table.loc["names", "Δ vs fine-tuned (paired)"]
    assert table.loc[FINETUNED, "Δ vs fine-tuned (paired)"] == "—"
    assert table.loc["names", "mean"] == pytest.approx(61.5)

# ----------------------------------------------------------------------------- inputs


def _cli(*args):
    from benchmarks.cli import main
    return main(list(args))


def test_a_missing_input_fails_with_one_line_naming_the_file(tmp_path, monkeypatch, caplog):
    monkeypatch.chdir(tmp_path)
    cfg = yaml.safe_load(SMOKE.read_text())
    inputs = wf.table5_inputs(cfg)
    files = [inputs["images"], inputs["generic"], inputs["tasks"], inputs["zoo"], inputs["finetuned"],
             *inputs["names"], *inputs["descriptions"]]
    missing = inputs["descriptions"][0]
    for f in files:
        if f != missing:
            Path(f).parent.mkdir(parents=True, exist_ok=True)
            Path(f).write_bytes(b"")
    with caplog.at_level(logging.ERROR, logger="nndiff"):
        rc = _cli("figure", "table5", *files, "--config", str(SMOKE), "--out", "reports/table5.md")
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert rc == 2 and len(errors) == 1 and "\n" not in errors[0]
    assert missing in errors[0] and "descriptions" in errors[0]
    caplog.clear()
    with caplog.at_level(logging.ERROR, logger="nndiff"):  # a file of the config left out of the arguments
        rc = _cli("figure", "table5", *[f for f in files if f != inputs["zoo"]], "--config", str(SMOKE),
                  "--out", "reports/table5.md")
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert rc == 2 and len(errors) == 1 and inputs["zoo"] in errors[0] and "not among the given inputs" in errors[0]
    assert not Path("reports/table5.md").exists()


def test_config_checks_name_the_key(tmp_path):
    cfg = yaml.safe_load(SMOKE.read_text())
    cfg["report"]["table5"]["descriptions"] = "tina-nope"
    with pytest.raises(ValueError, match=r"report\.table5\.descriptions: 'tina-nope' is not a method"):
        wf.check_config(cfg)
    cfg["report"]["table5"].update(descriptions="tina@desc", arch="cnn-5k-lora")
    with pytest.raises(ValueError, match=r"report\.table5\.names: 'tina' does not run on arch 'cnn-5k-lora'"):
        wf.check_config(cfg)

# ----------------------------------------------------------------------------- the DAG


def test_smoke_dry_run_plans_table5_from_existing_fits(tmp_path):
    cmd = [SNAKEMAKE, "-s", str(ROOT / "Snakefile"), "-n", "-p", "--cores", "1", "reports/smoke/table5.md",
           "--configfile", str(SMOKE), "--directory", str(tmp_path)]
    out = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    text = out.stdout + out.stderr
    assert out.returncode == 0, text[-3000:]
    assert "nndiff figure table5 data/synthetic/images.pt data/synthetic/cnn-5k/generic.pt" in text
    for path in ("methods/oracle/generated/ood.pt", "methods/tina/generated/ood.pt",
                 "methods/tina@ddpm-20/generated/ood.pt", "methods/tina@desc/generated/ood.pt", "finetuned/zoo.pt"):
        assert f"data/synthetic/cnn-5k/{path}" in text
    fits = [line for line in text.splitlines() if "nndiff fit " in line]
    assert len(fits) == 1 and "methods/tina/state" in fits[0]  # the variant and the row only generate
    assert "reports/smoke/figures/table5.svg" in text and "reports/smoke/figures/table5.csv" in text
    assert "rule evaluate" not in text  # accuracies come from the vectors themselves


@pytest.mark.slow
def test_smoke_build_writes_table5_figure_and_csv(tmp_path):
    work = tmp_path / "work"
    cmd = [SNAKEMAKE, "-s", str(ROOT / "Snakefile"), "--cores", "1", "reports/smoke/table5.md", "--configfile",
           str(SMOKE), "--directory", str(work)]
    out = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env={**os.environ, "HF_HUB_OFFLINE": "1",
                         "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"})
    assert out.returncode == 0, (out.stdout + out.stderr)[-3000:]
    reports = work / "reports" / "smoke"
    text = (reports / "table5.md").read_text()
    for row in ("| fine-tuned ", "| names 2 ", "| descriptions ", "| ensemble (all) ", "| ensemble (generated only) ",
                "| names ↔ fine-tuned ", "| zoo → nearest other zoo (yardstick) "):
        assert row in text
    assert "75.3 / 51.2" in text and "4.11 / 3.41" in text and "10.72 / 11.35" in text and "Config `" in text and "commit `" in text
    long = pd.read_csv(reports / "figures" / "table5.csv")
    assert set(long["panel"]) == {"p-Acc", "paired difference", "L2 distance"}
    n_tasks = yaml.safe_load(SMOKE.read_text())["tasks"]["n_ood"]
    acc = long[(long.panel == "p-Acc") & (long.quantity == "fine-tuned")]
    assert len(acc) == n_tasks and acc["value"].between(0, 100).all()
    d = long[long.panel == "L2 distance"]
    assert set(d["alignment"]) == {"raw", "matched"} and (d["value"].dropna() >= 0).all()
    for ext in ("png", "svg"):
        assert (reports / "figures" / f"table5.{ext}").stat().st_size > 1000
    shutil.rmtree(work / "data" / "cache", ignore_errors=True)
