import subprocess

import pandas as pd
import pytest

from benchmarks.artifacts import git_commit, write_timing
from benchmarks.config import CONFIG_DIR
from benchmarks.report import PAPER_TABLE1, load_results, summary_table, write_ablation, write_table1


def _results(tmp_path, methods=("classifier-selection", "tina"), offsets=(0.0, 1.0)):
    paths = []
    for method, off in zip(methods, offsets):
        for split in ["id", "ood"]:
            p = tmp_path / "data" / "miniimagenet" / "cnn-5k" / "results" / method / f"{split}.csv"
            p.parent.mkdir(parents=True, exist_ok=True)
            pd.DataFrame({"method": method, "split": split, "task_id": [f"t{i}" for i in range(5)],
                          "classes": "a|b", "n_images": 100, "correct": 50,
                          "accuracy": [50.0 + i + off for i in range(5)]}).to_csv(p, index=False)
            paths.append(str(p))
    return paths


def test_paper_values_are_table1():
    assert PAPER_TABLE1[("tina", "miniimagenet", "cnn-5k", "ood")] == 53.31
    assert PAPER_TABLE1[("classifier-selection", "caltech101", "resnet20-head", "id")] == 74.75


def test_summary_has_ci_paper_and_paired_difference(tmp_path):
    summary = summary_table(load_results(_results(tmp_path)))
    tina = summary[(summary.method == "tina") & (summary.split == "ood")].iloc[0]
    assert tina["n"] == 5 and tina["mean"] == pytest.approx(53.0)
    assert tina["paper"] == 53.31
    assert tina["vs_cs"] == pytest.approx(1.0) and tina["vs_cs_ci95"] == pytest.approx(0.0)


def test_table1_markdown_and_csv(tmp_path):
    out = tmp_path / "reports" / "table1.md"
    write_table1(_results(tmp_path), str(out), config=str(CONFIG_DIR / "smoke.yaml"))
    text = out.read_text()
    assert "miniimagenet / cnn-5k / OOD" in text and "[paper 53.31]" in text
    assert "commit" in text and "profile: `smoke`" in text
    assert (tmp_path / "reports" / "table1.csv").exists()


def test_table1_rows_put_variants_after_their_method_and_the_oracle_last(tmp_path):
    methods = ("oracle", "tina@ddim-10", "my-method", "cond-pdiff@first", "tina", "cond-pdiff", "generic")
    out = tmp_path / "table1.md"
    write_table1(_results(tmp_path, methods, offsets=range(len(methods))), str(out),
                 config=str(CONFIG_DIR / "smoke.yaml"))
    cells = [line.split("|")[1].strip() for line in out.read_text().split("## Paired")[0].splitlines()
             if line.startswith("| ")]
    rows = cells[1:]  # below the header
    assert rows == ["generic", "tina", "tina@ddim-10", "cond-pdiff", "cond-pdiff@first", "my-method", "oracle"]


def test_bad_result_path_is_rejected(tmp_path):
    p = tmp_path / "x.csv"
    p.write_text("task_id,accuracy\n")
    with pytest.raises(ValueError, match="results"):
        load_results([str(p)])


def test_ablation_report_rows_paired_with_base_and_na_for_missing_splits(tmp_path):
    import yaml
    cfg = yaml.safe_load((CONFIG_DIR / "smoke.yaml").read_text())
    cfg["ablations"] = {"x": {"dataset": "miniimagenet", "arch": "cnn-5k", "base": "classifier-selection",
                              "references": ["generic"],
                              "rows": {"tina": {"factor": "model", "options": {"depth": 2}},
                                       "oracle": {"factor": "model", "options": {}, "splits": ["id"]}}}}
    config = tmp_path / "cfg.yaml"
    config.write_text(yaml.safe_dump(cfg, sort_keys=False))
    paths = _results(tmp_path) + [p for p in _results(tmp_path, ("oracle",), (2.0,)) if p.endswith("id.csv")]
    paths += _results(tmp_path, ("generic",), (-3.0,))
    out = tmp_path / "x_ablation.md"
    arch_dir = tmp_path / "data" / "miniimagenet" / "cnn-5k" / "methods"
    write_timing(arch_dir / "tina" / "fit.json", seconds=612.4)  # the jobs' sidecars: tina's fit and one generate
    write_timing(arch_dir / "tina" / "generated" / "ood.pt", seconds=34.2)
    table = write_ablation(paths, str(out), config=str(config), name="x")
    assert table[table.label == "`tina`"].iloc[0]["wall s"] == "fit 612 · ood 34"
    assert table[table.label == "`generic`"].iloc[0]["wall s"] == "fit —"  # no sidecar: said, not invented
    assert list(table["label"]) == ["`classifier-selection`", "`generic`", "`tina`", "`oracle`"]
    generic = table[table.label == "`generic`"].iloc[0]
    assert generic["factor"] == "reference" and generic["Δ ID"] == "-3.00 ± 0.00"
    tina = table[table.label == "`tina`"].iloc[0]
    assert tina["Δ OOD"] == "+1.00 ± 0.00" and tina["options"] == "depth=2"
    assert table[table.label == "`oracle`"].iloc[0]["OOD"] == "n/a"
    partial = write_ablation([p for p in paths if "/tina/" not in p], str(out), config=str(config), name="x")
    assert partial[partial.label == "`tina`"].iloc[0]["OOD"] == "not run"
    assert "commit" in out.read_text()
    with pytest.raises(ValueError, match="not in"):
        write_ablation(paths, str(out), config=str(config), name="y")


def test_commit_is_dirty_for_code_changes_but_not_for_rewritten_reports(tmp_path):
    def git(*args):
        subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", *args], cwd=tmp_path, check=True,
                       capture_output=True)

    (tmp_path / "reports").mkdir()
    (tmp_path / "reports" / "table1.md").write_text("old\n")
    (tmp_path / "code.py").write_text("x = 1\n")
    git("init", "-q")
    git("add", ".")
    git("commit", "-qm", "init")
    (tmp_path / "reports" / "table1.md").unlink()  # what Snakemake does before rewriting an output
    assert not git_commit(tmp_path).endswith("-dirty")
    (tmp_path / "code.py").write_text("x = 2\n")
    assert git_commit(tmp_path).endswith("-dirty")


def test_the_papers_cs_number_stands_beside_the_slice_row_not_the_mask_row():
    from benchmarks.report import table1_paper_value as paper
    assert paper("classifier-selection-slice", "miniimagenet", "cnn-5k", "ood") == 51.02
    assert paper("classifier-selection", "miniimagenet", "cnn-5k", "ood") is None
    assert paper("tina", "caltech101", "cnn-5k", "id") == 58.69
