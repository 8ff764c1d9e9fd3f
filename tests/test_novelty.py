"""Novelty panel (benchmarks/novelty.py), condition controls (benchmarks/controls.py), collapse alarm (report)."""
import logging

import numpy as np
import pandas as pd
import pytest
import torch
from torch.func import functional_call

from benchmarks import artifacts
from benchmarks.config import CONFIG_DIR
from benchmarks.controls import apply_control, derangement, generate_with_control, task_rng
from benchmarks.evaluate import evaluate
from benchmarks.novelty import (align_units, distances, nearest, novelty_table, unit_chain, verdict, write_report,
                                Candidates)
from benchmarks.pmodels import get_arch, to_float
from benchmarks.report import (COLLAPSE_MARK, IDENTICAL_MARK, generated_spread, write_ablation, write_table1)
from benchmarks.tasks import get_split, save_tasks
from methods.base import Method, Tasks


def _permute_units(arch, theta, gen, k=4):
    """A random hidden-unit permutation of one K-way CNN vector (each conv's outputs, the next layer's inputs)."""
    layout = arch.layout(k)
    p = {n: v.clone() for n, v in layout.unflatten(theta).items()}
    perm = None
    for w, _ in unit_chain(arch, layout).layers:
        if perm is not None:
            p[w] = p[w][:, perm]
        perm = torch.randperm(p[w].shape[0], generator=gen)
        p[w] = p[w][perm]
    p["fc.weight"] = p["fc.weight"][:, perm]
    return layout.flatten(p)


# ----------------------------------------------------------------------------- hidden-unit matching


def test_unit_chain_is_generic_over_the_layers_and_off_for_lora_and_heads():
    for name, layers in [("cnn-5k", ["conv1", "conv2"]), ("cnn-14k", ["conv1", "conv2", "conv3"])]:
        arch = get_arch(name)
        chain = unit_chain(arch, arch.layout(4))
        assert [w.rsplit(".", 1)[0] for w, _ in chain.layers] == layers and chain.head == "fc"
    for name in ["cnn-5k-lora", "resnet20-head"]:
        assert unit_chain(get_arch(name), get_arch(name).layout(4)) is None


@pytest.mark.parametrize("name", ["cnn-5k", "cnn-14k"])
def test_permuted_units_keep_the_function_and_align_back_to_distance_zero(name):
    arch, gen = get_arch(name), torch.Generator().manual_seed(0)
    layout = arch.layout(4)
    theta = torch.randn(layout.n_params, generator=gen) * 0.3
    permuted = _permute_units(arch, theta, gen)
    assert (permuted - theta).norm() > 1.0  # plain L2 sees a different vector ...
    x = torch.randint(0, 255, (6, 3, 32, 32), dtype=torch.uint8)
    model = arch.build(4).eval()
    with torch.no_grad():
        a, b = (functional_call(model, layout.unflatten(t), (to_float(x),)) for t in (theta, permuted))
    assert torch.allclose(a, b, atol=1e-4)  # ... the same function
    aligned = align_units(unit_chain(arch, layout), layout, layout.unflatten(theta), permuted.unsqueeze(0))
    assert torch.allclose(aligned[0], theta, atol=1e-6)  # matching undoes the permutation


def test_heads_are_aligned_by_class_name_over_shared_classes():
    arch = get_arch("cnn-5k")
    layout, names = arch.layout(3), ["a", "b", "c", "d", "e"]
    theta = torch.randn(layout.n_params)
    rows = layout.head_rows(theta)
    # zoo p-Model of classes (c, a, e): the same rows for the shared classes c and a, another row for e
    zoo_rows = torch.stack([rows[2], rows[0], torch.randn(rows.shape[1]) * 5])
    zoo = layout.assemble(layout.body(theta), zoo_rows)
    cands = Candidates.build(torch.stack([zoo, theta + 1.0]), [["c", "a", "e"], ["a", "b", "c"]], arch, names)
    d = distances(cands, theta, layout, [0, 1, 2])
    assert d["shared"].tolist() == [2, 3]
    assert d["body"][0] == pytest.approx(0, abs=1e-5) and d["head"][0] == pytest.approx(0, abs=1e-5)
    assert nearest(d) == 0 and nearest(d, exclude=0) == 1
    none = distances(cands, theta, layout, [3, 3, 3])  # a class ("d") no candidate has
    assert torch.isnan(none["head"]).all() and nearest(none) in (0, 1)


# ----------------------------------------------------------------------------- the panel


def _zoo_dict(tiny):
    r = tiny.zoo_record
    return {"theta": r["theta"], "task_ids": list(r["task_ids"]), "classes": [list(c) for c in r["classes"]]}


def test_copies_of_the_zoo_read_as_memorization_and_noise_as_far(tiny, tmp_path):
    arch, gen = tiny.bench.arch, torch.Generator().manual_seed(1)
    zoo = _zoo_dict(tiny)
    tasks = [{"id": f"copy-{i}", "classes": zoo["classes"][i]} for i in range(4)]
    copies = torch.stack([_permute_units(arch, zoo["theta"][i], gen) for i in range(4)])
    table = novelty_table(tiny.generic, arch, tiny.images.test_x, tiny.images.test_y, tasks, copies, zoo,
                          reference_size=6)
    g = table[table.kind == "generated"]
    assert len(g) == 4 and (table.kind == "zoo").sum() == 6
    assert list(g["neighbour"]) == zoo["task_ids"][:4]
    assert (g["distance"] < 1e-4).all() and (g["jaccard neighbour"].dropna() == 1.0).all()
    assert (g["accuracy"] == g["neighbour accuracy"]).all()
    z = table[table.kind == "zoo"]
    assert (z["neighbour"] != z["task_id"]).all() and (z["distance"] > 0).all()
    assert "memorization" in verdict(table, "copies")
    noisy = copies + torch.randn(copies.shape, generator=gen) * 0.5
    far = novelty_table(tiny.generic, arch, tiny.images.test_x, tiny.images.test_y, tasks, noisy, zoo,
                        reference_size=6)
    assert far.loc[far.kind == "generated", "distance"].median() > z["distance"].median()
    out = tmp_path / "reports" / "novelty-x-synthetic-cnn-5k.md"
    write_report(far, out, label="x", arch=arch, split="ood", dataset="synthetic")
    text = out.read_text()
    assert "Verdict for `x`" in text and "Hungarian" in text
    assert (tmp_path / "reports" / "figures" / "novelty-x-synthetic-cnn-5k.png").stat().st_size > 0
    assert (tmp_path / "reports" / "figures" / "novelty-x-synthetic-cnn-5k.svg").stat().st_size > 0
    assert len(pd.read_csv(out.with_suffix(".csv"))) == len(far)


def _files(tiny, tmp_path):
    """The tiny bench as the files the CLI reads."""
    paths = {k: tmp_path / f"{k}.pt" for k in ("images", "generic", "zoo")}
    tiny.images.save(paths["images"])
    tiny.generic.save(paths["generic"])
    artifacts.save_torch(tiny.zoo_record, paths["zoo"])
    paths["tasks"] = tmp_path / "tasks.json"
    save_tasks(tiny.tasks, paths["tasks"])
    return {k: str(v) for k, v in paths.items()}


def test_novelty_cli_writes_report_csv_and_figures(tiny, tmp_path):
    from benchmarks.cli import main
    f = _files(tiny, tmp_path)
    ood = get_split(tiny.tasks, "ood")
    theta = torch.stack([tiny.bench.arch.initial_theta(tiny.generic.state,
                                                       [tiny.generic.classes.index(c) for c in t["classes"]])
                         for t in ood])
    vectors = tmp_path / "data" / "synthetic" / "cnn-5k" / "methods" / "cs" / "generated" / "ood.pt"
    artifacts.save_torch({"method": "cs", "task_ids": [t["id"] for t in ood], "output_space": "task",
                          "theta": theta}, vectors)
    out = tmp_path / "reports" / "novelty-cs-synthetic-cnn-5k.md"
    rc = main(["novelty", "--images", f["images"], "--generic", f["generic"], "--tasks", f["tasks"], "--zoo", f["zoo"],
               "--generated", str(vectors), "--label", "cs", "--reference-size", "4", "--out", str(out)])
    assert rc == 0
    assert "Dataset `synthetic`, arch `cnn-5k`" in out.read_text()
    for suffix in (".png", ".svg"):
        assert (tmp_path / "reports" / "figures" / f"novelty-cs-synthetic-cnn-5k{suffix}").exists()
    csv = pd.read_csv(out.with_suffix(".csv"))
    assert set(csv.kind) == {"generated", "zoo"} and {"distance", "accuracy", "jaccard neighbour"} <= set(csv)


def test_lora_and_head_only_use_plain_l2(tiny, tmp_path):
    arch = get_arch("cnn-5k-lora")
    zoo = _zoo_dict(tiny)
    layout = arch.layout(4)
    zoo["theta"] = torch.randn(3, layout.n_params) * 0.1
    zoo["task_ids"], zoo["classes"] = zoo["task_ids"][:3], zoo["classes"][:3]
    tasks = [{"id": "t", "classes": zoo["classes"][0]}]
    table = novelty_table(tiny.generic, arch, tiny.images.test_x, tiny.images.test_y, tasks,
                          zoo["theta"][:1].clone(), zoo)
    assert table.iloc[0]["distance"] == pytest.approx(0, abs=1e-6) and table.iloc[0]["neighbour"] == zoo["task_ids"][0]
    out = tmp_path / "n.md"
    write_report(table, out, label="lora", arch=arch, split="ood")
    assert "LoRA" in out.read_text() and "plain L2" in out.read_text()

# ----------------------------------------------------------------------------- condition controls


def test_shuffle_is_a_seeded_derangement():
    for k in (2, 3, 5, 10):
        for seed in range(20):
            perm = derangement(k, np.random.default_rng(seed))
            assert sorted(perm) == list(range(k)) and all(p != i for i, p in enumerate(perm))
    tasks = Tasks([f"t{i}" for i in range(30)], [[f"c{i}-{j}" for j in range(5)] for i in range(30)])
    a, b, c = (apply_control(tasks, "shuffle", seed) for seed in (0, 0, 1))
    assert a.classes == b.classes and a.classes != c.classes  # deterministic per seed
    assert a.ids == tasks.ids and tasks.classes[0] == [f"c0-{j}" for j in range(5)]  # the input is untouched
    for shuffled, true in zip(a.classes, tasks.classes):
        assert sorted(shuffled) == sorted(true) and all(s != t for s, t in zip(shuffled, true))
    # one task's draw does not depend on the rest of the split
    alone = apply_control(Tasks(["t7"], [tasks.classes[7]]), "shuffle", 0)
    assert alone.classes[0] == a.classes[7]
    assert task_rng(0, "t7").permutation(5).tolist() == task_rng(0, "t7").permutation(5).tolist()
    with pytest.raises(ValueError, match="at least 2 classes"):
        apply_control(Tasks(["one"], [["x"]]), "shuffle", 0)
    with pytest.raises(ValueError, match="unknown condition control"):
        apply_control(tasks, "reverse", 0)


def test_null_control_gives_empty_names():
    tasks = Tasks(["a", "b"], [["x", "y", "z"], ["u", "v", "w"]])
    null = apply_control(tasks, "null", 0)
    assert null.ids == ["a", "b"] and null.classes == [["", "", ""], ["", "", ""]]
    assert apply_control(tasks, None, 0) is tasks


class NameOracle(Method):
    """A perfect, name-keyed fake: for each class name the zoo p-Model's row of that class (its task's zoo
    p-Model when the prompt's class set is a zoo task), rows in prompt order."""

    name = "name-oracle"

    def fit(self, bench, workdir):
        pass

    def generate(self, tasks):
        zoo, layout = self.bench.zoo, self.bench.layout
        out = []
        for cs in tasks.classes:
            j = next((j for j, zc in enumerate(zoo.classes) if set(zc) == set(cs)), None)
            if j is None:
                raise ValueError(f"no zoo task has the classes {cs}")
            rows = layout.head_rows(zoo.theta[j])[[zoo.classes[j].index(c) for c in cs]]
            out.append(layout.assemble(layout.body(zoo.theta[j]), rows))
        return torch.stack(out)


def test_shuffle_control_drops_an_oracle_keyed_on_names_while_evaluation_keeps_the_true_order(tiny, tmp_path):
    records = get_split(tiny.tasks, "id")
    tasks = Tasks.from_records(records)
    method = NameOracle().setup(tiny.bench, tmp_path)
    acc = {}
    for control in (None, "shuffle"):
        theta = generate_with_control(method, tasks, control, seed=0, label="name-oracle")
        acc[control] = evaluate(tiny.generic, tiny.images.test_x, tiny.images.test_y, records, theta)["accuracy"]
    assert acc[None].mean() > 50 and acc["shuffle"].mean() < acc[None].mean() - 25
    assert (acc["shuffle"] < acc[None]).all()
    with pytest.raises(ValueError, match="name-oracle.*null"):
        generate_with_control(method, tasks, "null", seed=0, label="name-oracle")


def test_generate_cli_strips_the_control_from_the_options(tiny, tmp_path, caplog):
    from benchmarks.cli import main
    f = _files(tiny, tmp_path)
    common = ["--method", "classifier-selection", "--images", f["images"], "--generic", f["generic"], "--zoo",
              f["zoo"], "--tasks", f["tasks"], "--split", "id", "--workdir", str(tmp_path / "state"), "--threads", "1"]
    assert main(["fit", *common[:8], "--workdir", str(tmp_path / "state")]) == 0
    acc = {}
    for name, extra in [("plain", ["--options", '{"rule": "slice"}']),
                        ("shuffled", ["--options", '{"rule": "slice", "control": "shuffle"}']),
                        ("flag", ["--options", '{"rule": "slice"}', "--control", "shuffle"])]:
        out = tmp_path / f"{name}.pt"
        assert main(["generate", *common, *extra, "--out", str(out)]) == 0
        assert artifacts.load_torch(out)["task_ids"] == [t["id"] for t in get_split(tiny.tasks, "id")]
        csv = tmp_path / f"{name}.csv"
        assert main(["evaluate", "--images", f["images"], "--generic", f["generic"], "--tasks", f["tasks"], "--split",
                     "id", "--vectors", str(out), "--out", str(csv)]) == 0
        acc[name] = pd.read_csv(csv)["accuracy"].mean()
    assert acc["shuffled"] == acc["flag"] < acc["plain"] - 20
    assert artifacts.load_torch(tmp_path / "shuffled.pt")["control"] == "shuffle"
    caplog.clear()
    with caplog.at_level(logging.ERROR, logger="nndiff"):
        rc = main(["generate", *common, "--options", '{"rule": "slice", "control": "null"}', "--out",
                   str(tmp_path / "null.pt")])
    assert rc == 2 and "classifier-selection" in caplog.text and "null" in caplog.text
    assert not (tmp_path / "null.pt").exists()

# ----------------------------------------------------------------------------- collapse alarm


def _result(tmp_path, method, accuracies, k=5, extra=None):
    p = tmp_path / "data" / "synthetic" / "cnn-5k" / "results" / method / "ood.csv"
    p.parent.mkdir(parents=True, exist_ok=True)
    df = pd.DataFrame({"method": method, "split": "ood", "task_id": [f"t{i}" for i in range(len(accuracies))],
                       "classes": "|".join("abcdefghij"[:k]), "n_images": 100, "correct": 0,
                       "accuracy": accuracies, **(extra or {})})
    df.to_csv(p, index=False)
    return str(p)


def _row(text, label):
    return next(line for line in text.splitlines() if line.startswith(f"| {label} "))


def test_collapse_flag_marks_a_chance_level_row_and_not_a_good_one(tmp_path, caplog):
    paths = [_result(tmp_path, "classifier-selection-slice", [60.0, 62, 58, 61, 63]),
             _result(tmp_path, "tina", [18.0, 22, 25, 15, 21]),  # chance is 20% for 5 classes
             _result(tmp_path, "tina@null", [10.0, 12, 8, 11, 9])]  # below chance
    out = tmp_path / "table1.md"
    with caplog.at_level(logging.WARNING, logger="nndiff.report"):
        summary = write_table1(paths, str(out), config=str(CONFIG_DIR / "smoke.yaml"))
    text = out.read_text()
    assert COLLAPSE_MARK in _row(text, "tina") and COLLAPSE_MARK in _row(text, "tina@null")
    assert COLLAPSE_MARK not in _row(text, "classifier-selection-slice")
    assert "reaches chance" in text  # the legend
    assert "WARNING" in caplog.text or "tina" in caplog.text
    assert summary.set_index("method")["chance"].eq(20.0).all()
    assert list(summary.set_index("method").loc[["classifier-selection-slice", "tina"], "collapse"]) == [False, True]
    clean = tmp_path / "clean.md"
    write_table1(paths[:1], str(clean), config=str(CONFIG_DIR / "smoke.yaml"))
    assert "reaches chance" not in clean.read_text()


def test_identical_generator_flag_and_spread(tiny, tmp_path):
    layout = tiny.bench.layout
    one = tiny.zoo_record["theta"][0]
    same = generated_spread(one.expand(5, -1), layout)
    assert same["gen_head_cos"] == pytest.approx(1.0) and same["gen_spread"] == pytest.approx(0.0, abs=1e-6)
    zoo = generated_spread(tiny.zoo_record["theta"], layout)
    assert zoo["gen_head_cos"] < 0.99
    paths = [_result(tmp_path, "tina", [60.0, 62, 58, 61, 63], extra={"gen_head_cos": 0.999}),
             _result(tmp_path, "cond-pdiff", [60.0, 62, 58, 61, 63], extra={"gen_head_cos": zoo["gen_head_cos"]})]
    out = tmp_path / "variants.md"
    write_table1(paths, str(out), config=str(CONFIG_DIR / "smoke.yaml"), title="Variants")
    text = out.read_text()
    assert IDENTICAL_MARK in _row(text, "tina") and IDENTICAL_MARK not in _row(text, "cond-pdiff")
    assert COLLAPSE_MARK not in _row(text, "tina")


def test_evaluate_logs_a_warning_for_identical_p_models(tiny, tmp_path, caplog):
    from benchmarks.cli import main
    f = _files(tiny, tmp_path)
    ood = get_split(tiny.tasks, "ood")
    vectors = tmp_path / "same.pt"
    artifacts.save_torch({"method": "same", "task_ids": [t["id"] for t in ood], "output_space": "task",
                          "theta": tiny.zoo_record["theta"][0].expand(len(ood), -1).clone()}, vectors)
    with caplog.at_level(logging.WARNING, logger="nndiff"):
        assert main(["evaluate", "--images", f["images"], "--generic", f["generic"], "--tasks", f["tasks"],
                     "--split", "ood", "--vectors", str(vectors), "--out", str(tmp_path / "same.csv")]) == 0
    assert "near-identical" in caplog.text
    assert pd.read_csv(tmp_path / "same.csv")["gen_head_cos"].iloc[0] == pytest.approx(1.0)


def test_ablation_table_flags_a_chance_row(tmp_path):
    import yaml
    cfg = yaml.safe_load((CONFIG_DIR / "smoke.yaml").read_text())
    cfg["ablations"] = {"x": {"dataset": "synthetic", "arch": "cnn-5k", "base": "tina", "splits": ["ood"],
                              "rows": {"tina-bad": {"factor": "model", "options": {"depth": 1}}}}}
    config = tmp_path / "cfg.yaml"
    config.write_text(yaml.safe_dump(cfg, sort_keys=False))
    paths = [_result(tmp_path, "tina", [60.0, 62, 58, 61, 63]), _result(tmp_path, "tina-bad", [20.0, 21, 19, 24, 17])]
    table = write_ablation(paths, str(tmp_path / "x_ablation.md"), config=str(config), name="x")
    ood = dict(zip(table["label"], table["OOD"]))
    assert COLLAPSE_MARK in ood["`tina-bad`"] and COLLAPSE_MARK not in ood["`tina`"]
    assert "reaches chance" in (tmp_path / "x_ablation.md").read_text()


@pytest.mark.parametrize("control", ["shuffle", "null"])
def test_tina_generates_under_both_controls(tiny, tmp_path, control):
    from methods.registry import build_method
    options = {"width": 32, "depth": 2, "heads": 2, "steps": 5, "sample_steps": 3}
    method = build_method("tina", options).setup(tiny.bench, tmp_path)
    method.fit(tiny.bench, tmp_path)
    tasks = Tasks.from_records(get_split(tiny.tasks, "ood"))
    theta = generate_with_control(method, tasks, control, seed=0, label="tina")
    assert theta.shape == (len(tasks), method.layout.n_params) and torch.isfinite(theta).all()

# ----------------------------------------------------------------------------- workflow (dry runs)


def test_workflow_wires_novelty_reports_and_control_variants(tmp_path):
    import subprocess
    import sys
    from pathlib import Path
    root = Path(__file__).resolve().parent.parent
    cmd = [str(Path(sys.executable).parent / "snakemake"), "-s", str(root / "Snakefile"), "-n", "-p", "--cores", "1",
           "reports/smoke/novelty-tina-synthetic-cnn-5k.md", "reports/smoke/novelty-cond-pdiff-synthetic-cnn-5k-lora.md",
           "data/synthetic/cnn-5k/results/tina@shuffled/ood.csv", "data/synthetic/cnn-5k/results/tina@null/ood.csv",
           "--configfile", str(CONFIG_DIR / "smoke.yaml"), "--directory", str(tmp_path)]
    out = subprocess.run(cmd, capture_output=True, text=True, cwd=root)
    text = out.stdout + out.stderr
    assert out.returncode == 0, text[-3000:]
    assert "nndiff novelty" in text and "--generated data/synthetic/cnn-5k/methods/tina/generated/ood.pt" in text
    assert "reports/smoke/figures/novelty-cond-pdiff-synthetic-cnn-5k-lora.svg" in text
    assert '"control": "shuffle"' in text and '"control": "null"' in text  # stripped by `nndiff generate`
    assert "methods/tina@shuffled/fit.json" not in text  # a control variant reuses tina's fit
    all_ = subprocess.run([*cmd[:6], "all", *cmd[-4:]], capture_output=True, text=True, cwd=root)
    assert "reports/smoke/novelty-tina-synthetic-cnn-5k.md" in all_.stdout


def test_config_check_rejects_an_unknown_control():
    import yaml

    from benchmarks import workflow
    cfg = yaml.safe_load((CONFIG_DIR / "smoke.yaml").read_text())
    workflow.check_config(cfg)
    assert cfg["variants"]["tina@null"]["control"] == "null"  # quoted in YAML: not None
    cfg["variants"]["tina@x"] = {"of": "tina", "control": "reverse"}
    with pytest.raises(ValueError, match="control"):
        workflow.check_config(cfg)
