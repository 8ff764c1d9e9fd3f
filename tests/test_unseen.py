"""Tina's Table 3 (unseen classes, A.3) as a DAG target: `<label>~unseen` fits on the half-A zoo, the config
checks of the `unseen:` section, the report (paper beside ours, paired differences on matching tasks, zero-shot
rows marked) and its figure, a dry run of the smoke target and (slow) its build."""
from __future__ import annotations

import copy
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

from benchmarks import workflow as wf
from benchmarks.config import CONFIG_DIR
from benchmarks.tasks import TasksConfig, get_split, make_tasks
from benchmarks.unseen import half_b_access, table3

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
SMOKE, CPU, PAPER = (CONFIG_DIR / f"{p}.yaml" for p in ("smoke", "cpu", "paper"))


def smoke() -> dict:
    return yaml.safe_load(SMOKE.read_text())


def _csv(root: Path, label: str, split: str, acc: list[float], ids: list[str] | None = None,
         classes: list[str] | None = None) -> str:
    p = root / "data" / "synthetic" / "cnn-5k" / "results" / label / f"{split}.csv"
    p.parent.mkdir(parents=True, exist_ok=True)
    ids = ids or [f"{split}-{i:05d}" for i in range(len(acc))]
    classes = classes or [f"c{i}|d{i}" for i in range(len(acc))]
    pd.DataFrame({"method": label, "split": split, "task_id": ids, "classes": classes, "n_images": 100,
                  "correct": [round(a) for a in acc], "accuracy": acc}).to_csv(p, index=False)
    return str(p)

# ----------------------------------------------------------------------------- labels and configs


def test_unseen_labels_fit_the_half_a_zoo_with_their_base_options_and_overrides():
    cfg = smoke()
    labels = wf.unseen_labels(cfg)
    assert labels == ["tina~unseen", "taper~unseen", "hypernet~unseen", "retrieval~unseen"]
    assert set(labels) <= set(wf.evaluated(cfg)) and not set(labels) & set(wf.method_labels(cfg))
    assert [wf.zoo_split(cfg, label) for label in ("tina~unseen", "tina", "classifier-selection-slice")] == [
        "unseen-zoo", "zoo", "zoo"]
    assert wf.fitted_label(cfg, "tina~unseen") == "tina~unseen"  # its own fit, not tina's
    assert wf.method_options(cfg, "tina~unseen") == wf.method_options(cfg, "tina")
    name, options = wf.method_options(cfg, "hypernet~unseen")
    assert name == "hypernet" and options == {**wf.method_options(cfg, "hypernet")[1], "head_init": "none"}
    assert wf.unseen_rows(cfg)[-3:] == ["classifier-selection-slice", "classifier-selection", "oracle"]
    assert wf.unseen_baseline(cfg) == "classifier-selection-slice"
    assert wf.unseen_results(cfg)[0] == "data/synthetic/cnn-5k/results/tina~unseen/unseen-0.csv"
    assert len(wf.unseen_results(cfg)) == 7 * 3  # rows x levels [0, 40, 100]


def test_the_zoo_of_an_unseen_label_holds_no_class_of_half_b():
    """The split `zoo_split` names for an unseen label is built from half A only, and every test level draws its
    half-B classes from the other half: the generator never trains on a task with a half-B class."""
    cfg = smoke()
    classes = [f"class{i:02d}" for i in range(20)]
    tasks_cfg = TasksConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in cfg["tasks"].items()})
    tasks = make_tasks(classes, [f"s{i % 5}" for i in range(20)], tasks_cfg, seed=0)  # the smoke profile's tasks
    a, b = set(tasks["unseen_halves"]["A"]), set(tasks["unseen_halves"]["B"])
    zoo = get_split(tasks, wf.zoo_split(cfg, "tina~unseen"))
    assert zoo and all(set(t["classes"]) <= a for t in zoo)
    assert any(set(t["classes"]) & b for t in get_split(tasks, "zoo"))  # what the full zoo would have taught it
    for p in wf.unseen_levels(cfg):
        assert all(len(set(t["classes"]) & b) == round(p / 100 * 5) for t in get_split(tasks, f"unseen-{p}"))


@pytest.mark.parametrize("change, message", [
    (lambda u: u["references"].append("taper"), "unseen.references: 'taper' fits on the full zoo"),
    (lambda u: u["methods"].update({"classifier-selection-slice": {}}), "list it under unseen.references"),
    (lambda u: u["methods"].update({"tina-x": {}}), "unseen.methods.tina-x: unknown method label"),
    (lambda u: u["methods"].update({"cond-pdiff": {}}), "'cond-pdiff' does not run on arch 'cnn-5k'"),
    (lambda u: u["methods"]["tina"].update({"stepz": 3}), "unseen.methods.tina"),
    (lambda u: u.update({"baseline": "generic"}), "unseen.baseline: 'generic' is not one of unseen.references"),
    (lambda u: u.update({"arch": "resnet20-head"}), "unseen.arch: 'resnet20-head' is not in the config's archs"),
])
def test_a_bad_unseen_section_fails_in_one_line_naming_its_key(change, message):
    cfg = copy.deepcopy(smoke())
    change(cfg["unseen"])
    with pytest.raises(ValueError, match=message.replace(".", r"\.").replace("[", r"\[")) as e:
        wf.check_config(cfg)
    assert "\n" not in str(e.value)


def test_every_profile_passes_its_checks_and_the_schema_requires_methods():
    for path in (SMOKE, CPU, PAPER):
        cfg = yaml.safe_load(path.read_text())
        wf.check_config(cfg)
        assert wf.unseen_labels(cfg)[0] == "tina~unseen"
    cfg = smoke()
    del cfg["unseen"]["methods"]
    with pytest.raises(ValueError, match="invalid config at 'unseen'"):
        wf.check_config(cfg)
    cfg = smoke()
    del cfg["unseen"]
    assert wf.unseen_results(cfg) == [] and "tina~unseen" not in wf.evaluated(cfg)


def test_half_b_access_marks_only_text_generators_as_zero_shot():
    assert half_b_access("tina") == half_b_access("retrieval") == "text"
    assert half_b_access("hypernet") == "stage1-rows" and half_b_access("hypernet", {"head_init": "none"}) == "text"
    assert half_b_access("classifier-selection") == "stage1-rows" and half_b_access("taper") == "stage1-experts"
    assert half_b_access("oracle") == "finetuned" and half_b_access("some-plugin") == "unclassified"

# ----------------------------------------------------------------------------- the report


def _results(root: Path, skip: tuple = ()) -> list[str]:
    """Smoke rows on levels 0/40/100: tina~unseen 2 points above CS per task, CS's tasks in another order."""
    paths = []
    for p in (0, 40, 100):
        cs = [60.0 - p / 5 + i for i in range(4)]
        ids = [f"unseen-{p}-{i:05d}" for i in range(4)]
        classes = [f"a{i}|b{i}" for i in range(4)]
        for label in ("tina~unseen", "taper~unseen", "hypernet~unseen", "retrieval~unseen", "classifier-selection",
                      "oracle"):
            if (label, p) in skip:
                continue
            shift = {"tina~unseen": 2.0, "oracle": 20.0}.get(label, -1.0)
            paths.append(_csv(root, label, f"unseen-{p}", [a + shift for a in cs], ids, classes))
        # the baseline: same tasks in reverse order plus one task no other row has
        paths.append(_csv(root, "classifier-selection-slice", f"unseen-{p}", [*cs[::-1], 0.0],
                          [*ids[::-1], f"unseen-{p}-00099"], [*classes[::-1], "x|y"]))
    return paths


def test_table3_prints_the_paper_beside_ours_and_pairs_on_matching_tasks(tmp_path):
    out = tmp_path / "reports" / "table3.md"
    table = table3(_results(tmp_path), out, config=str(SMOKE))
    rows = table.set_index(["label", "level"])
    # paired on the 4 tasks both have (the baseline's 5th task and its order do not count): exactly +2
    assert rows.loc[("tina~unseen", 40), "diff n"] == 4 and rows.loc[("tina~unseen", 40), "diff mean"] == 2.0
    assert rows.loc[("tina~unseen", 40), "diff ci95"] == 0.0
    assert rows.loc[("classifier-selection-slice", 40), "n"] == 5
    assert bool(rows.loc[("tina~unseen", 100), "zero_shot"]) and bool(rows.loc[("hypernet~unseen", 100), "zero_shot"])
    assert not rows.loc[("taper~unseen", 100), "zero_shot"] and not rows.loc[("classifier-selection-slice", 0), "zero_shot"]
    assert rows.loc[("tina~unseen", 100), "paper"] == 30.93 and rows.loc[("taper~unseen", 40), "paper"] == 42.48
    text = out.read_text()
    assert "| paper: taper " in text and "| 60.27 " in text and "n.a." in text  # TAPER has no 100% row in the paper
    assert "| paper: tina " in text and "30.93" in text
    assert "`tina~unseen` − `classifier-selection-slice`" in text and "+2.00 ± 0.00 (n=4)" in text
    assert "Stage 1" in text and "unseen *by the generators*" in text and "Config `" in text
    csv = pd.read_csv(tmp_path / "reports" / "figures" / "table3.csv")
    assert {"label", "level", "mean", "ci95", "paper", "zero_shot", "diff mean"} <= set(csv.columns)
    assert sorted(set(csv["level"])) == [0, 40, 100] and len(csv) == 7 * 3
    for ext in ("png", "svg"):
        assert (tmp_path / "reports" / "figures" / f"table3.{ext}").stat().st_size > 1000


def test_a_level_missing_from_the_results_fails_with_one_line_naming_it(tmp_path):
    paths = _results(tmp_path, skip=(("tina~unseen", 40),))
    with pytest.raises(ValueError, match=r"no results of level 40% unseen \(split unseen-40\) for 'tina~unseen'"):
        table3(paths, tmp_path / "table3.md", config=str(SMOKE))
    out = subprocess.run([str(BIN / "nndiff"), "figure", "table3", *paths, "--config", str(SMOKE), "--out",
                          str(tmp_path / "table3.md")], capture_output=True, text=True, cwd=ROOT)
    assert out.returncode != 0
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and "error" in lines[0] and "(split unseen-40) for 'tina~unseen'" in lines[0]


def test_results_of_other_task_files_are_not_paired(tmp_path):
    paths = _results(tmp_path)
    _csv(tmp_path, "tina~unseen", "unseen-0", [50.0] * 4, [f"unseen-0-{i:05d}" for i in range(4)],
         [f"other{i}|b{i}" for i in range(4)])
    with pytest.raises(ValueError, match="task 'unseen-0-00000' has other classes"):
        table3(paths, tmp_path / "table3.md", config=str(SMOKE))

# ----------------------------------------------------------------------------- the DAG


def snakemake(*args, cwd=ROOT, check=True) -> subprocess.CompletedProcess:
    cmd = [str(BIN / "snakemake"), "-s", str(ROOT / "Snakefile"), *args]
    env = dict(os.environ, PATH=f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}", HF_HUB_OFFLINE="1")
    out = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, env=env)
    if check and out.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed:\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}")
    return out


def test_smoke_dry_run_plans_unseen_fits_on_the_half_a_zoo(tmp_path):
    out = snakemake("-n", "-p", "--cores", "1", "reports/smoke/table3.md", "--configfile", str(SMOKE),
                    "--directory", str(tmp_path)).stdout
    fits = [line for line in out.splitlines() if "nndiff fit " in line]
    unseen_fits = [line for line in fits if "~unseen/" in line]
    assert len(unseen_fits) == 4  # tina, taper, hypernet, retrieval
    assert all("--zoo data/synthetic/cnn-5k/finetuned/unseen-zoo.pt" in line for line in unseen_fits)
    assert not any("finetuned/unseen-zoo.pt" in line for line in fits if "~unseen/" not in line)
    assert not any("methods/tina/" in line or "methods/taper/" in line for line in fits)  # no Table 1 fit needed
    assert "--split unseen-zoo" in out and '"head_init": "none"' in out
    for p in (0, 40, 100):
        assert f"results/tina~unseen/unseen-{p}.csv" in out and f"results/oracle/unseen-{p}.csv" in out
    assert "nndiff figure table3 data/synthetic/cnn-5k/results/tina~unseen/unseen-0.csv" in out


@pytest.mark.slow
def test_smoke_build_of_table3(tmp_path):
    """The whole smoke target from nothing; the zoo the unseen fits read holds half-A tasks only."""
    from benchmarks.train import load_zoo
    snakemake("--cores", "1", "reports/smoke/table3.md", "--configfile", str(SMOKE), "--directory", str(tmp_path))
    text = (tmp_path / "reports" / "smoke" / "table3.md").read_text()
    assert "`tina~unseen`" in text and "paper: tina" in text
    tasks = yaml.safe_load((tmp_path / "data" / "synthetic" / "tasks.json").read_text())
    a = set(tasks["unseen_halves"]["A"])
    zoo = load_zoo(tmp_path / "data" / "synthetic" / "cnn-5k" / "finetuned" / "unseen-zoo.pt")
    assert zoo["classes"] and all(set(cs) <= a for cs in zoo["classes"])
