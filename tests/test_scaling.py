"""Tina's scaling figures (benchmarks/scaling.py): zoo_size, init_from, snapshots, the figure tables, the DAG."""
from __future__ import annotations

import copy
import dataclasses

import pandas as pd
import pytest
import torch
import yaml

from benchmarks import workflow as wf
from benchmarks.scaling import scaling_figure, write_first_zoo_tasks
from benchmarks.tasks import load_tasks, save_tasks
from methods.base import first_of_zoo
from methods.tina import Tina, inherit_weights
from methods.tina_net import TinaNet
from tests.helpers import table_bench
from tests.test_workflow import SMOKE, snakemake

SMALL = dict(width=16, depth=1, heads=2, batch_size=8, log_every=1000, steps=4)


@pytest.fixture(scope="module")
def bench(tiny, tmp_path_factory):
    return table_bench(tiny.bench, tmp_path_factory.mktemp("table"), [*tiny.bench.class_names, "<->"])


def fit(bench, workdir, **options):
    tina = Tina({**SMALL, **options}).setup(bench, workdir)
    tina.fit(bench, workdir)
    return tina.load_state()


def same_weights(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)

# ----------------------------------------------------------------------------- zoo_size


def test_zoo_size_fits_on_exactly_the_first_n_pmodels(bench, tmp_path):
    n = 3
    data = Tina({**SMALL, "zoo_size": n}).setup(bench, tmp_path / "d")._training_data(bench)
    assert torch.equal(data["theta"], bench.zoo.theta[:n].float())
    sub = first_of_zoo(bench.zoo, n, "tina")
    assert sub.task_ids == bench.zoo.task_ids[:n] and sub.classes == bench.zoo.classes[:n]
    assert first_of_zoo(bench.zoo, None) is bench.zoo
    a, b, full = fit(bench, tmp_path / "a", zoo_size=n), fit(bench, tmp_path / "b", zoo_size=n), fit(bench, tmp_path / "c")
    assert a["n_zoo"] == n and full["n_zoo"] == len(bench.zoo)
    assert same_weights(a["model"], b["model"])  # same seed, same first N: the same fit
    assert not same_weights(a["model"], full["model"])  # other training data: another fit
    with pytest.raises(ValueError, match=f"zoo_size {len(bench.zoo) + 1} exceeds the zoo's {len(bench.zoo)}"):
        Tina({**SMALL, "zoo_size": len(bench.zoo) + 1}).setup(bench, tmp_path / "e")._training_data(bench)

# ----------------------------------------------------------------------------- init_from, snapshots


def test_init_from_copies_every_compatible_tensor_and_keeps_the_rest(bench, tmp_path):
    source = fit(bench, tmp_path / "src")
    cfg = Tina(SMALL).setup(bench, tmp_path / "x")._net_config(source["net_config"]["text_dim"], source["num_classes"])
    torch.manual_seed(123)
    fresh = TinaNet(cfg, bench.layout)
    assert not same_weights(fresh.state_dict(), source["ema"])  # a fresh initialization differs
    counts = inherit_weights(fresh, tmp_path / "src")  # a workdir (or its state.pt)
    assert counts == {"copied": len(source["ema"]), "kept": 0}
    assert same_weights(fresh.state_dict(), source["ema"])  # before training: the source's (EMA) tensors
    deeper = TinaNet(dataclasses.replace(cfg, depth=2), bench.layout)  # one more block: kept fresh
    before = copy.deepcopy(deeper.state_dict())
    counts = inherit_weights(deeper, tmp_path / "src" / "state.pt")
    own = deeper.state_dict()
    copied = [k for k in own if k in source["ema"] and own[k].shape == source["ema"][k].shape]
    assert counts["copied"] == len(copied) and counts["kept"] == len(own) - len(copied) > 0
    assert all(torch.equal(own[k], source["ema"][k]) for k in copied)
    assert all(torch.equal(own[k], before[k]) for k in own if k not in copied)


def test_init_from_starts_the_fit_from_the_source(bench, tmp_path, monkeypatch):
    fit(bench, tmp_path / "src")
    seen = {}
    original = Tina._train_step

    def first_step(self, net, *args, **kw):  # the weights the first training step starts from
        seen.setdefault("start", copy.deepcopy(net.state_dict()))
        return original(self, net, *args, **kw)
    monkeypatch.setattr(Tina, "_train_step", first_step)
    state = fit(bench, tmp_path / "user", init_from=str(tmp_path / "src"))
    assert same_weights(seen["start"], Tina.read_state(tmp_path / "src")["ema"])
    assert state["fit_options"]["init_from"] == str(tmp_path / "src")


def test_init_from_a_missing_source_fails_naming_the_file(bench, tmp_path):
    missing = tmp_path / "nowhere" / "state"
    with pytest.raises(FileNotFoundError) as e:
        fit(bench, tmp_path / "user", init_from=str(missing))
    message = str(e.value)
    assert "\n" not in message and str(missing / "state.pt") in message


def test_snapshots_generate_with_the_weights_of_that_step(bench, tmp_path):
    state = fit(bench, tmp_path / "w", steps=6, snapshot_steps=[2, 4])
    assert sorted(p.name for p in (tmp_path / "w").glob("snapshot-*.pt")) == ["snapshot-2.pt", "snapshot-4.pt"]
    at2 = Tina({**SMALL, "steps": 6, "snapshot_steps": [2, 4], "at_step": 2}).setup(bench, tmp_path / "w")
    end = Tina({**SMALL, "steps": 6, "snapshot_steps": [2, 4], "at_step": 6}).setup(bench, tmp_path / "w")
    assert not same_weights(at2._load()[1].state_dict(), state["ema"])
    assert same_weights(end._load()[1].state_dict(), state["ema"])  # the last step: the final state
    with pytest.raises(FileNotFoundError, match="snapshot-3.pt"):
        Tina({**SMALL, "at_step": 3}).setup(bench, tmp_path / "w")._load()
    # snapshots are bookkeeping: the same fit without them ends on the same weights, so neither option refits
    assert same_weights(fit(bench, tmp_path / "plain", steps=6)["ema"], state["ema"])
    assert {"at_step", "snapshot_steps"} <= set(Tina.generate_options())

# ----------------------------------------------------------------------------- the figures


def _smoke() -> dict:
    return yaml.safe_load(SMOKE.read_text())


@pytest.mark.parametrize("name", ["fig4a", "fig5", "fig4b", "fig4c"])
def test_figure_table_is_the_per_task_means(tmp_path, name):
    cfg = _smoke()
    config = tmp_path / "smoke.yaml"
    config.write_text(yaml.safe_dump(cfg, sort_keys=False))
    gen = torch.Generator().manual_seed(0)
    paths = []
    for path in wf.scaling_results(cfg, name):
        p = tmp_path / path
        p.parent.mkdir(parents=True, exist_ok=True)
        acc = (torch.rand(6, generator=gen) * 100).tolist()
        pd.DataFrame({"task_id": [f"ood-{i:05d}" for i in range(6)], "accuracy": acc}).to_csv(p, index=False)
        paths.append(str(p))
    out = tmp_path / "reports" / f"{name}.md"
    table = scaling_figure(name, paths, out, config=str(config))
    csv = pd.read_csv(tmp_path / "reports" / "figures" / f"{name}.csv")
    for _, row in csv.iterrows():
        src = tmp_path / f"data/synthetic/{row['arch']}/results/{row['label']}/ood.csv"
        assert row["mean"] == pytest.approx(pd.read_csv(src)["accuracy"].mean(), abs=1e-4)
    points = wf.scaling_points(cfg, name)
    assert list(table["label"][: len(points)]) == [p["label"] for p in points]
    assert list(csv["x"][: len(points)]) == [p["x"] for p in points]  # x: each label's option
    assert (tmp_path / "reports" / "figures" / f"{name}.png").stat().st_size > 0
    assert (tmp_path / "reports" / "figures" / f"{name}.svg").exists()
    md = out.read_text()
    assert "the paper" in md and "Config `" in md and f"figures/{name}.png" in md
    # fig4c runs on the CLIP head: the smoke config's random stand-in is named in the title, the others are not
    assert ("RANDOM CLIP WEIGHTS" in md.splitlines()[0]) == (name == "fig4c")


def test_x_values_come_from_the_labels_options():
    cfg = _smoke()
    assert [p["x"] for p in wf.scaling_points(cfg, "fig4a") if p["arch"] == "cnn-5k"] == [16, 32]
    assert [p["x"] for p in wf.scaling_points(cfg, "fig4b") if p["line"] == "inherited"] == [5, 10, 20]
    assert [p["x"] for p in wf.scaling_points(cfg, "fig5") if p["arch"] == "cnn-14k"] == [4, 8]
    # fig4c: EMA snapshots of each fit, then its last step (tina-clip's `steps`)
    assert [(p["line"], p["x"]) for p in wf.scaling_points(cfg, "fig4c")] == \
        [("text", 10), ("text", 20), ("text", 30), ("image", 10), ("image", 20), ("image", 30)]


def test_scaling_config_errors_are_one_line(tmp_path):
    cfg = _smoke()
    bad = copy.deepcopy(cfg)
    bad["ablations"]["scaling-5k"]["rows"]["tina-inherit"]["options"]["init_from"] = "elsewhere:tina"
    with pytest.raises(ValueError, match=r"^tina-inherit: init_from 'elsewhere:tina' must be <dataset>:<label>"):
        wf.check_scaling(bad)
    bad = copy.deepcopy(cfg)
    bad["report"]["fig4a"]["lines"]["CNN-5K"]["labels"].append("nope")
    with pytest.raises(ValueError, match=r"report.fig4a.lines.CNN-5K: 'nope' is not"):
        wf.check_scaling(bad)


def test_first_zoo_tasks_keeps_the_other_splits(tiny, tmp_path):
    tasks = {"version": None, "splits": {"zoo": [{"id": f"zoo-{i:05d}"} for i in range(5)], "ood": [{"id": "o"}]}}
    src = tmp_path / "tasks.json"
    save_tasks({**tasks, "version": __import__("benchmarks.tasks", fromlist=["VERSION"]).VERSION}, src)
    write_first_zoo_tasks(src, 2, tmp_path / "first.json")
    first = load_tasks(tmp_path / "first.json")
    assert [t["id"] for t in first["splits"]["zoo"]] == ["zoo-00000", "zoo-00001"]
    assert first["splits"]["ood"] == [{"id": "o"}]
    with pytest.raises(ValueError, match="zoo_tasks 9 exceeds the 5 zoo tasks"):
        write_first_zoo_tasks(src, 9, tmp_path / "x.json")

# ----------------------------------------------------------------------------- the DAG


@pytest.mark.slow
def test_dry_run_plans_the_inheritance_source_before_its_user(tmp_path):
    out = snakemake("-n", "-p", "--cores", "1", "reports/smoke/fig4b.md", "reports/smoke/fig4a.md",
                    "--configfile", str(SMOKE), "--directory", str(tmp_path)).stdout
    jobs = out.split("\nrule ")
    user = next(j for j in jobs if j.startswith("fit:") and "methods/tina-inherit/fit.json" in j.split("output:")[1])
    source = "data/synthetic/cnn-5k/methods/tina/fit.json"
    assert source in user.split("output:")[0]  # the source's fit is an input of its user's fit ...
    assert any(j.startswith("fit:") and f"output: {source}" in j for j in jobs)  # ... and planned as a job
    assert '"init_from": "data/synthetic/cnn-5k/methods/tina/state"' in user  # the label resolved to its state
    # the scaling arch: its own generic model and a zoo of the first zoo tasks
    assert "data/synthetic/cnn-14k/zoo-tasks.json" in out and "output: data/synthetic/cnn-14k/generic.pt" in out
