"""Byte-reproducible artifacts: equal inputs, config and seed give equal sha256, resumed runs included;
wall-clock timings live in `<file>.timing.json` sidecars; files get the umask's permissions."""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import stat

import pytest
import torch

from benchmarks import artifacts
from benchmarks.cli import main
from benchmarks.config import FinetuneConfig
from benchmarks.tasks import get_split, save_tasks
from benchmarks.train import finetune_tasks, load_zoo, merge_zoo, save_zoo
from methods.tina import Tina
from tests.helpers import table_bench

CPU = torch.device("cpu")
TINA = dict(width=16, depth=1, heads=4, batch_size=16, log_every=1000, steps=8, checkpoint_every=4,
            classifier_aug=True, padding=True)  # log_every > steps: losses averaged across the checkpoint


def sha256(path) -> str:
    return hashlib.sha256(open(path, "rb").read()).hexdigest()


@pytest.fixture
def umask_022():
    old = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(old)


def mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)

# ----------------------------------------------------------------------------- save_torch and friends


def test_save_torch_is_byte_deterministic_and_honours_the_umask(tmp_path, umask_022):
    obj = {"theta": torch.arange(12.0).view(3, 4), "ids": ["a", "b"], "acc": 0.5, "nested": {"k": [1, 2]}}
    artifacts.save_torch(obj, tmp_path / "one.pt")
    artifacts.save_torch({k: v for k, v in obj.items()}, tmp_path / "sub" / "other-name.pt")
    assert sha256(tmp_path / "one.pt") == sha256(tmp_path / "sub" / "other-name.pt")
    assert mode(tmp_path / "one.pt") == 0o644
    artifacts.write_json({"x": 1}, tmp_path / "r.json")
    artifacts.write_text("# report\n", tmp_path / "r.md")
    with artifacts.atomic_path(tmp_path / "r.csv") as tmp:
        tmp.write_text("a,b\n")
    assert {mode(tmp_path / n) for n in ("r.json", "r.md", "r.csv")} == {0o644}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["one.pt", "r.csv", "r.json", "r.md", "sub"]  # no temp left
    assert torch.equal(artifacts.load_torch(tmp_path / "one.pt")["theta"], obj["theta"])


def test_umask_077_gives_private_files(tmp_path):
    old = os.umask(0o077)
    try:
        artifacts.save_torch({"x": torch.zeros(1)}, tmp_path / "x.pt")
    finally:
        os.umask(old)
    assert mode(tmp_path / "x.pt") == 0o600


def test_failed_write_leaves_nothing(tmp_path):
    with pytest.raises(RuntimeError), artifacts.atomic_path(tmp_path / "x.csv") as tmp:
        tmp.write_text("half")
        raise RuntimeError("killed")
    assert list(tmp_path.iterdir()) == []


def test_timing_sidecar(tmp_path):
    assert artifacts.timing_path(tmp_path / "zoo.pt") == tmp_path / "zoo.pt.timing.json"
    assert artifacts.read_timing(tmp_path / "zoo.pt") == {}
    artifacts.write_timing(tmp_path / "zoo.pt", seconds=[1.5, 2.0])
    assert artifacts.read_timing(tmp_path / "zoo.pt") == {"seconds": [1.5, 2.0]}

# ----------------------------------------------------------------------------- the zoo


def test_zoo_shard_is_byte_identical_built_twice_or_resumed(tiny, tmp_path):
    tasks = get_split(tiny.tasks, "ood") + get_split(tiny.tasks, "id")
    cfg = FinetuneConfig(epochs=1, batch_size=32)

    def build(name: str, todo=tasks) -> str:
        rec = finetune_tasks(tiny.generic, tiny.images, todo, cfg, seed=3, device=CPU, parts_dir=tmp_path / f"{name}.parts")
        save_zoo(rec, tmp_path / f"{name}.pt")
        return sha256(tmp_path / f"{name}.pt")

    once = build("once")
    assert build("twice") == once
    rec = artifacts.load_torch(tmp_path / "once.pt")
    assert "seconds" not in rec and sorted(rec) == sorted(["arch", "config", "task_ids", "classes", "theta", "train_acc"])
    timing = artifacts.read_timing(tmp_path / "once.pt")["seconds"]
    assert len(timing) == len(tasks) and all(s > 0 for s in timing)
    assert load_zoo(tmp_path / "once.pt")["seconds"].tolist() == timing

    # killed after 2 p-Models (a prefix of the tasks done, a temp file left behind), then rerun
    build("killed", tasks[:2])
    (tmp_path / "killed.pt").unlink()  # the shard file never appears before all its parts exist
    (tmp_path / "killed.parts" / ".zoo-x.pt.123.abcd.tmp").write_bytes(b"half-written")
    assert build("killed") == once
    # the final file and some parts deleted: only those are retrained
    parts = sorted((tmp_path / "once.parts").glob("*.pt"))
    for p in parts[1::2]:
        p.unlink()
    (tmp_path / "once.pt").unlink()
    assert build("once") == once


def test_merged_zoo_keeps_one_format(tiny, tmp_path):
    tasks = get_split(tiny.tasks, "ood")
    cfg = FinetuneConfig(epochs=1, batch_size=32)
    shards = [finetune_tasks(tiny.generic, tiny.images, tasks[i::2], cfg, seed=3, device=CPU,
                             parts_dir=tmp_path / f"p{i}") for i in range(2)]
    merged = merge_zoo(shards)
    assert merged["task_ids"] == shards[0]["task_ids"] + shards[1]["task_ids"]
    assert torch.equal(merged["theta"], torch.cat([shards[0]["theta"], shards[1]["theta"]]))
    assert len(merged["seconds"]) == len(tasks) and merged["config"] == dataclasses.asdict(cfg)
    with pytest.raises(ValueError, match="archs"):
        merge_zoo([shards[0], {**shards[1], "arch": "cnn-14k"}])
    # a record written before sidecars existed (seconds inside) still loads
    artifacts.save_torch({**{k: v for k, v in merged.items() if k != "seconds"}, "seconds": merged["seconds"]},
                         tmp_path / "legacy.pt")
    assert torch.equal(load_zoo(tmp_path / "legacy.pt")["seconds"], merged["seconds"])


def test_cli_stages_write_identical_bytes_and_timing_sidecars(tiny, tmp_path):
    """stage1, finetune shards, merge, oracle, fit and generate, each run twice: the same sha256; seconds only
    in the sidecars, and the zoo report reads them from there."""
    base = tmp_path / "in"
    base.mkdir()
    tiny.images.save(base / "images.pt")
    save_tasks(tiny.tasks, base / "tasks.json")
    common = ["--images", str(base / "images.pt")]
    tasks = ["--tasks", str(base / "tasks.json")]

    def run(d) -> dict:
        d.mkdir()
        assert main(["stage1", *common, "--arch", "cnn-5k", "--epochs", "1", "--out", str(d / "generic.pt")]) == 0
        generic = ["--generic", str(d / "generic.pt")]
        for shard in (0, 1):
            assert main(["finetune", *common, *generic, *tasks, "--split", "zoo", "--shard", str(shard), "--n-shards",
                         "2", "--epochs", "1", "--device", "cpu", "--out", str(d / f"shard-{shard}.pt")]) == 0
        assert main(["merge", str(d / "shard-0.pt"), str(d / "shard-1.pt"), "--out", str(d / "zoo.pt")]) == 0
        assert main(["oracle", "--finetuned", str(d / "zoo.pt"), *tasks, "--split", "id", "--out",
                     str(d / "oracle-id.pt")]) == 0
        method = ["--method", "classifier-selection", "--options", '{"rule": "slice"}', *generic, "--zoo",
                  str(d / "zoo.pt"), "--workdir", str(d / "cs"), "--device", "cpu"]
        assert main(["fit", *common, *method, "--out", str(d / "fit.json")]) == 0
        assert main(["generate", *common, *method, *tasks, "--split", "ood", "--out", str(d / "ood.pt")]) == 0
        return {p.name: sha256(p) for p in sorted(d.rglob("*")) if p.is_file() and ".timing." not in p.name}

    one, two = run(tmp_path / "a"), run(tmp_path / "b")
    assert one == two
    assert set(one) >= {"generic.pt", "shard-0.pt", "zoo.pt", "oracle-id.pt", "fit.json", "state.pt", "ood.pt"}
    a = tmp_path / "a"
    for name in ("generic.pt", "shard-0.pt", "zoo.pt", "oracle-id.pt", "fit.json", "ood.pt"):
        assert "seconds" in artifacts.read_timing(a / name), name
    assert "seconds" not in json.loads((a / "fit.json").read_text())
    assert "seconds" not in artifacts.load_torch(a / "generic.pt")["meta"]
    zoo_secs = artifacts.read_timing(a / "zoo.pt")["seconds"]
    assert zoo_secs == artifacts.read_timing(a / "shard-0.pt")["seconds"] + artifacts.read_timing(a / "shard-1.pt")["seconds"]

    from benchmarks.report import write_zoo_report
    (a / "data" / "synthetic" / "cnn-5k").mkdir(parents=True)
    acc = a / "data" / "synthetic" / "cnn-5k" / "zoo.csv"
    acc.write_text("accuracy\n50\n60\n")
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text("profile: test\nseed: 0\n")
    df = write_zoo_report([{"generic": a / "generic.pt", "zoo": a / "zoo.pt", "accuracy": acc}], tmp_path / "zoo.md",
                          config=str(cfg))
    assert df["seconds per p-Model"].item() == pytest.approx(sum(zoo_secs) / len(zoo_secs))

# ----------------------------------------------------------------------------- method state


@pytest.fixture(scope="module")
def bench(tiny, tmp_path_factory):
    """The tiny bench with a table text encoder (seeded random vectors: no model to load)."""
    return table_bench(tiny.bench, tmp_path_factory.mktemp("table"), [*tiny.bench.class_names, "<->"])


def test_tina_state_is_byte_identical_fitted_twice_or_resumed(bench, tmp_path, monkeypatch):
    def fit(name: str) -> str:
        Tina(TINA).setup(bench, tmp_path / name).fit(bench, tmp_path / name)
        return sha256(tmp_path / name / "state.pt")

    once = fit("once")
    assert fit("twice") == once
    assert "seconds" not in artifacts.load_torch(tmp_path / "once" / "state.pt")
    assert artifacts.read_timing(tmp_path / "once" / "state.pt")["seconds"] > 0

    original = Tina._train_step

    def killed_at_step_6(self, *args):
        if args[4] == 6:  # steps 0-5 done, the checkpoint (with its wall time beside it) holds 4
            raise KeyboardInterrupt
        return original(self, *args)

    monkeypatch.setattr(Tina, "_train_step", killed_at_step_6)
    with pytest.raises(KeyboardInterrupt):
        fit("resumed")
    ckpt = tmp_path / "resumed" / "checkpoint.pt"
    assert ckpt.exists() and "seconds" not in artifacts.load_torch(ckpt) and artifacts.read_timing(ckpt)
    monkeypatch.setattr(Tina, "_train_step", original)
    assert fit("resumed") == once
    assert not ckpt.exists() and not artifacts.timing_path(ckpt).exists()


@pytest.fixture(scope="module")
def lora_bench(tiny, tmp_path_factory):
    from benchmarks.pmodels import get_arch
    from methods.base import Zoo
    arch = get_arch("cnn-5k-lora")
    rec = finetune_tasks(tiny.generic, tiny.images, get_split(tiny.tasks, "zoo"), FinetuneConfig(epochs=1, batch_size=32),
                         seed=0, device=CPU, parts_dir=tmp_path_factory.mktemp("lora-parts"), arch=arch)
    return dataclasses.replace(tiny.bench, arch=arch, zoo=Zoo(rec["task_ids"], rec["classes"], rec["theta"],
                                                              rec["train_acc"]))


def test_cond_pdiff_state_is_byte_identical_fitted_twice_or_resumed(lora_bench, tmp_path, monkeypatch):
    from methods.cond_pdiff import CondPDiff
    options = dict(ae_steps=20, diffusion_steps=20, fold=4, ae_layers=2, ae_width=8, latent_channels=4, unet_width=16,
                   emb_dim=32, batch_size=8, condition="one-hot", checkpoint_every=8, log_every=3)

    def fit(name: str) -> str:
        CondPDiff(options).setup(lora_bench, tmp_path / name).fit(lora_bench, tmp_path / name)
        return sha256(tmp_path / name / "state.pt")

    once = fit("once")
    assert fit("twice") == once
    assert "seconds" not in artifacts.load_torch(tmp_path / "once" / "state.pt")
    assert set(artifacts.read_timing(tmp_path / "once" / "state.pt")) == {"ae", "total"}
    original = CondPDiff._log

    def killed(self, phase, step, *args):
        if phase == "diffusion" and step == 13:  # the checkpoint holds diffusion step 8
            raise KeyboardInterrupt
        return original(self, phase, step, *args)

    monkeypatch.setattr(CondPDiff, "_log", killed)
    with pytest.raises(KeyboardInterrupt):
        fit("resumed")
    assert artifacts.load_torch(tmp_path / "resumed" / "checkpoint.pt")["step"] == 8
    monkeypatch.setattr(CondPDiff, "_log", original)
    assert fit("resumed") == once
