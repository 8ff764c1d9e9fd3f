"""Tina's Tables 6 and 7 and Fig. 6b as DAG targets: ablation tables with the paper's numbers, rows that generate
with another label's fit (`of:`), rewordings and the snapping baseline, padded-<k> splits and the figure."""
from __future__ import annotations

import dataclasses
import json
import math
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch
import yaml
from scipy import stats

from benchmarks import workflow as wf
from benchmarks.config import CONFIG_DIR
from benchmarks.datasets import NOUNS
from benchmarks.encoders import DESCRIPTIONS_DIR, TableEncoder, load_descriptions
from benchmarks.figures import fig6b
from benchmarks.prompts import class_texts, load_texts, snap_to_known
from benchmarks.report import write_ablation
from benchmarks.tasks import get_split

ROOT = Path(__file__).resolve().parent.parent
CPU, SMOKE = CONFIG_DIR / "cpu.yaml", CONFIG_DIR / "smoke.yaml"
TEN = "|".join("abcdefghij")  # a 10-class task: chance 10%


def _csv(root: Path, label: str, split: str, acc: list[float], classes: str = TEN, dataset="miniimagenet") -> str:
    p = root / "data" / dataset / "cnn-5k" / "results" / label / f"{split}.csv"
    p.parent.mkdir(parents=True, exist_ok=True)
    pd.DataFrame({"method": label, "split": split, "task_id": [f"t{i}" for i in range(len(acc))], "classes": classes,
                  "n_images": 100, "correct": [round(a) for a in acc], "accuracy": acc}).to_csv(p, index=False)
    return str(p)

# ----------------------------------------------------------------------------- Table 6


def test_table6_prints_the_paper_beside_ours_and_says_which_rows_collapse(tmp_path):
    out = tmp_path / "table6.md"
    paths = [_csv(tmp_path, "tina", "ood", [52.0, 54, 53, 55, 51]),
             _csv(tmp_path, "classifier-selection-slice", "ood", [50.0, 52, 51, 53, 49]),
             _csv(tmp_path, "tina-no-claug", "ood", [33.0, 31, 32, 34, 30]),
             _csv(tmp_path, "tina-permaug", "ood", [10.0, 9, 11, 10, 12]),  # collapsed, as the paper's
             _csv(tmp_path, "tina-merged", "ood", [40.0, 42, 41, 43, 39])]  # not collapsed, unlike the paper's
    table = write_ablation(paths, str(out), config=str(CPU), name="table6")
    text = out.read_text()
    for number in ("53.31", "32.45", "9.88", "10.04"):  # the paper's Mini-ImageNet column
        assert number in text
    rows = dict(zip(table["label"], table["paper OOD"]))
    assert rows["`tina-permaug`"] == "9.88" and rows["`classifier-selection-slice`"] == ""
    assert list(table.columns[table.columns.get_loc("OOD"):]) == ["OOD", "paper OOD", "Δ OOD", "wall s"]
    ours = dict(zip(table["label"], table["OOD"]))
    assert ours["`tina-pad`"] == "not run" and ours["`tina`"].startswith("53.00 ± ")
    lines = {line.split("`")[1]: line for line in text.splitlines() if line.startswith("- `")}
    assert "collapses (the interval reaches chance)" in lines["tina-permaug"] and "as in the paper" in lines["tina-permaug"]
    assert "no collapse" in lines["tina-merged"] and "unlike the paper" in lines["tina-merged"]
    assert "no collapse" in lines["tina-no-claug"] and "the paper's 32.45 is above chance (as in the paper)" in lines["tina-no-claug"]
    assert "chance 10.00%" in lines["tina"]

# ----------------------------------------------------------------------------- Table 7


def test_table7_has_id_and_ood_paper_columns_for_the_four_prompt_pairs(tmp_path):
    labels = {"tina": 66.0, "tina@desc": 45.0, "tina-desc": 65.0, "tina-desc@names": 41.0, "tina@rewordings": 50.0,
              "tina@snap": 60.0, "classifier-selection-slice": 64.0}
    paths = [_csv(tmp_path, label, split, [m - 1, m, m + 1], dataset="synthetic")
             for label, m in labels.items() for split in ("id", "ood")]
    out = tmp_path / "table7.md"
    table = write_ablation(paths, str(out), config=str(SMOKE), name="table7")
    by = table.set_index("label")
    assert by.loc["`tina`", "paper ID"] == "67.27" and by.loc["`tina`", "paper OOD"] == "67.21"
    assert by.loc["`tina@desc`", "paper ID"] == "46.93" and by.loc["`tina-desc@names`", "paper OOD"] == "42.58"
    assert by.loc["`tina-desc`", "paper OOD"] == "67.08" and by.loc["`tina@snap`", "paper ID"] == ""
    assert by.loc["`tina@desc`", "factor"] == "names -> descriptions"
    assert by.loc["`tina-desc@names`", "options"] == "fit of `tina-desc`; generate_text=names"
    assert by.loc["`tina@desc`", "Δ ID"].startswith("-21.00")  # paired with the base on the same tasks
    text = out.read_text()
    assert "Tina Table 7, CNN on CIFAR-100" in text and "the paper gives no number" in text


def test_rows_with_of_generate_with_that_fit_and_accept_generate_time_options_only():
    cfg = yaml.safe_load(SMOKE.read_text())
    assert wf.fitted_label(cfg, "tina@desc") == "tina" and wf.fitted_label(cfg, "tina-desc@names") == "tina-desc"
    name, options = wf.method_options(cfg, "tina-desc@names")
    assert name == "tina" and options["text"] == "descriptions" and options["generate_text"] == "names"
    assert wf.ablation_tables(cfg) == {"table6": "table6", "table7": "table7"}
    assert wf.ablation_report(cfg, "condpdiff") == "condpdiff_ablation"
    bad = yaml.safe_load(SMOKE.read_text())
    bad["ablations"]["table7"]["rows"]["tina@desc"]["options"]["depth"] = 1
    with pytest.raises(ValueError, match=r"\['depth'\] are not generate-time options"):
        wf.check_config(bad)
    bad = yaml.safe_load(SMOKE.read_text())
    bad["ablations"]["table7"]["rows"]["tina-desc@names"]["of"] = "tina@desc"
    with pytest.raises(ValueError, match="neither the base nor a fitted row"):
        wf.check_config(bad)
    bad = yaml.safe_load(SMOKE.read_text())
    bad["ablations"]["table7"]["paper"]["tina-typo"] = {"id": 1.0}
    with pytest.raises(ValueError, match="paper.tina-typo: not a label"):
        wf.check_config(bad)
    bad = yaml.safe_load(SMOKE.read_text())
    bad["ablations"]["table7"]["paper"]["tina"] = 67.0  # two splits: which one?
    with pytest.raises(ValueError, match="give {split: value}"):
        wf.check_config(bad)
    bad = yaml.safe_load(SMOKE.read_text())
    bad["report"]["fig6b"]["method"] = "tina-pda"
    with pytest.raises(ValueError, match="report.fig6b: 'tina-pda' is not"):
        wf.check_config(bad)

# ----------------------------------------------------------------------------- rewordings and snapping


def test_rewordings_cover_every_class_with_another_wording():
    mini = load_texts("rewordings", "miniimagenet")
    assert set(mini) == set(load_descriptions("miniimagenet")) and len(mini) == 100  # the 100 Mini-ImageNet classes
    assert mini["dugong"] == "sea cow" and mini["harvestman"] == "daddy longlegs"
    assert all(v.lower() != k.replace("_", " ").lower() for k, v in mini.items())
    assert len(set(mini.values())) == 100
    synthetic = load_texts("rewordings", "synthetic")
    assert list(synthetic) == list(NOUNS) and synthetic["violin"] == "fiddle"
    assert set(load_texts("descriptions", "synthetic", "synthetic_descriptions")) == set(NOUNS)
    assert class_texts([["dugong", "goose"]], "rewordings", "miniimagenet") == [["sea cow", "gander"]]
    with pytest.raises(ValueError, match="descriptions"):  # the synthetic dataset itself ships none
        class_texts([["apple"]], "descriptions", "synthetic")
    with pytest.raises(ValueError, match="rewordings.*caltech101"):
        class_texts([["airplanes"]], "rewordings", "caltech101")
    assert (DESCRIPTIONS_DIR / "miniimagenet_rewordings.json").is_file()


def _table(path: Path, vectors: dict[str, list[float]]) -> TableEncoder:
    path.write_text(json.dumps(vectors))
    return TableEncoder(path)


def test_snap_maps_sea_cow_to_dugong(tmp_path):
    encoder = _table(tmp_path / "t.json", {"dugong": [1.0, 0.1, 0.0], "goose": [0.0, 1.0, 0.0], "lion": [0.0, 0.0, 1.0],
                                           "sea cow": [0.9, 0.2, 0.1], "gander": [0.1, 0.8, 0.0],
                                           "big maned cat": [0.2, 0.1, 0.9]})
    nearest, sim = snap_to_known(["sea cow", "big maned cat", "gander"], ["dugong", "goose", "lion"], encoder)
    assert nearest == [0, 2, 1] and sim.shape == (3, 3)
    assert sim[0, 0] == pytest.approx(torch.nn.functional.cosine_similarity(
        torch.tensor([0.9, 0.2, 0.1]), torch.tensor([1.0, 0.1, 0.0]), dim=0).item())


def test_tina_snapping_rewordings_back_generates_what_the_names_do(tiny, tmp_path):
    """With an encoder that puts each rewording next to its class name, snapping recovers the names exactly, so
    the p-Models equal those of the names prompt (x_T is keyed by the text); unsnapped rewordings differ."""
    from methods.base import Tasks
    from methods.tina import Tina
    names = list(tiny.bench.class_names)
    reworded = load_texts("rewordings", "synthetic")
    g = torch.Generator().manual_seed(0)
    vectors = {}
    for c in names:
        v = torch.randn(8, generator=g)
        vectors[c] = v.tolist()
        vectors[reworded[c]] = (v + 0.05 * torch.randn(8, generator=g)).tolist()
    (tmp_path / "table.json").write_text(json.dumps(vectors))
    bench = dataclasses.replace(tiny.bench, dataset="synthetic", encoder_cache=tmp_path / "cache",
                                text_encoder_spec={"name": "table", "options": {"path": str(tmp_path / "table.json")}})
    options = {"width": 16, "depth": 1, "heads": 2, "steps": 2, "sample_steps": 3}
    work = tmp_path / "tina"
    Tina(options).setup(bench, work).fit(bench, work)
    tasks = Tasks.from_records(get_split(tiny.tasks, "ood"))
    plain = Tina(options).setup(bench, work).generate(tasks)
    snapped = Tina({**options, "generate_text": "rewordings", "snap_to_known": True}).setup(bench, work).generate(tasks)
    unsnapped = Tina({**options, "generate_text": "rewordings"}).setup(bench, work).generate(tasks)
    assert torch.equal(snapped, plain) and not torch.equal(unsnapped, plain)

# ----------------------------------------------------------------------------- Fig. 6b


def test_padded_splits_hold_the_tasks_of_one_size(tiny):
    assert {len(t["classes"]) for t in get_split(tiny.tasks, "padded-1")} == {1}
    assert len(get_split(tiny.tasks, "padded-4")) == 2
    with pytest.raises(ValueError, match=r"no padded tasks of 3 classes; sizes: \[1, 4\]"):
        get_split(tiny.tasks, "padded-3")


def test_fig6b_csv_has_one_row_per_class_count_with_mean_and_ci(tmp_path):
    acc = {1: [100.0, 100, 100], 2: [80.0, 70, 90], 3: [60.0, 66, 57]}
    cs = {1: [100.0, 100, 100], 2: [75.0, 70, 85], 3: [55.0, 60, 58]}
    paths = []
    for k in acc:
        classes = "|".join("abc"[:k])
        paths += [_csv(tmp_path, "tina-pad", f"padded-{k}", acc[k], classes),
                  _csv(tmp_path, "classifier-selection-slice", f"padded-{k}", cs[k], classes)]
    out = tmp_path / "reports" / "fig6b.md"
    fig6b(paths, out, config=str(SMOKE))
    csv = pd.read_csv(tmp_path / "reports" / "figures" / "fig6b.csv")
    assert list(csv["classes"]) == [1, 2, 3] and csv["chance"].round(2).tolist() == [100.0, 50.0, 33.33]
    row = csv.set_index("classes").loc[2]
    half = stats.t.ppf(0.975, 2) * pd.Series(acc[2]).std() / math.sqrt(3)
    assert row["tina-pad mean"] == pytest.approx(80.0) and row["tina-pad ci95"] == pytest.approx(half, abs=1e-4)
    assert row["tina-pad n"] == 3 and row["classifier-selection-slice mean"] == pytest.approx(76.6667, abs=1e-4)
    diff = pd.Series(acc[3]) - pd.Series(cs[3])
    assert csv.set_index("classes").loc[3, "tina-pad - classifier-selection-slice mean"] == pytest.approx(diff.mean(), abs=1e-4)
    for ext in ("png", "svg"):
        assert (tmp_path / "reports" / "figures" / f"fig6b.{ext}").stat().st_size > 1000
    text = out.read_text()
    assert "![fig6b](figures/fig6b.png)" in text and "80.00 ±" in text
    assert "- `tina-pad`: -19.00 ± " in text and "falls as k grows (as in the paper)" in text  # 80 -> 61, k 2 -> 3

# ----------------------------------------------------------------------------- the DAG


def test_smoke_dry_run_lists_tables_6_7_and_fig6b(tmp_path):
    cmd = [str(Path(sys.executable).parent / "snakemake"), "-s", str(ROOT / "Snakefile"), "-n", "-p", "--cores", "1",
           "all", "--configfile", str(SMOKE), "--directory", str(tmp_path)]
    out = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    text = out.stdout + out.stderr
    assert out.returncode == 0, text[-3000:]
    for target in ("reports/smoke/table6.md", "reports/smoke/table7.md", "reports/smoke/fig6b.md",
                   "reports/smoke/figures/fig6b.csv", "reports/smoke/figures/fig6b.svg"):
        assert target in text
    assert "results/tina-pad/padded-3.csv" in text and "results/classifier-selection-slice/padded-5.csv" in text
    fits = [line for line in text.splitlines() if "nndiff fit " in line]
    assert any("methods/tina-desc/state" in f for f in fits) and any("methods/tina-pad/state" in f for f in fits)
    assert not any("methods/tina@" in f or "tina-desc@names" in f for f in fits)  # `of:` rows only generate
    assert "nndiff figure fig6b data/synthetic/cnn-5k/results/tina-pad/padded-1.csv" in text
