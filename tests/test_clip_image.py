"""The CLIP experiments (Table 2: ViT-B/32 head; Fig. 6a: image prompts): missing weights fail at once naming the
file, image prompts come from seeded train exemplars, random-weight reports say they are no result, the smoke
targets' DAG, and (slow) one smoke build on the tiny random CLIP stand-in."""
from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch
import yaml

from benchmarks import workflow as wf
from benchmarks.encoders import TINY_CLIP, check_clip_weights, get_encoder
from benchmarks.pmodels import get_arch
from methods.base import Tasks, class_exemplars, exemplar_embeddings
from methods.tina import Tina

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
SMOKE = ROOT / "benchmarks" / "configs" / "smoke.yaml"
TINY_SPEC = {"name": "clip", "options": {"model": TINY_CLIP, "pretrained": None, "device": "cpu"}}


def snakemake(*args, check=True) -> subprocess.CompletedProcess:
    env = dict(os.environ, PATH=f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}", HF_HUB_OFFLINE="1")
    env.pop("NNDIFF_CLIP_WEIGHTS", None)
    env.pop("NNDIFF_CLIP_MODEL", None)
    cmd = [str(BIN / "snakemake"), "-s", str(ROOT / "Snakefile"), *args]
    out = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, env=env)
    if check and out.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed:\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}")
    return out


def smoke_config(tmp_path, **clip) -> Path:
    cfg = yaml.safe_load(SMOKE.read_text())
    cfg["clip"].update(clip)
    path = tmp_path / "smoke-clip.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path

# ----------------------------------------------------------------------------- weights


def test_missing_weights_fail_with_one_line_naming_the_file(tmp_path, monkeypatch):
    monkeypatch.delenv("NNDIFF_CLIP_WEIGHTS", raising=False)
    cfg = {"data_root": str(tmp_path / "data"), "clip": {"table2": {"datasets": ["x"], "methods": ["y"]}}}
    expected = tmp_path / "data" / "clip" / "ViT-B-32.pt"
    assert wf.clip_weights(cfg) == str(expected)  # the documented default: <data_root>/clip/ViT-B-32.pt
    with pytest.raises(FileNotFoundError) as err:
        wf.require_clip(cfg, "table2")
    message = str(err.value)
    assert "\n" not in message and str(expected) in message and "openaipublic" in message  # where to get it
    # no `clip:` section (the cpu profile): the same default file, the same message
    with pytest.raises(FileNotFoundError, match="ViT-B-32.pt"):
        wf.require_clip({"data_root": str(tmp_path / "data")}, "table2")
    # with the file in place, a profile without the section is told to enable it
    expected.parent.mkdir(parents=True)
    expected.write_bytes(b"")
    with pytest.raises(ValueError, match="clip.table2"):
        wf.require_clip({"data_root": str(tmp_path / "data")}, "table2")
    assert check_clip_weights("random") == "random"


@pytest.mark.slow  # two dry runs; the check itself: test_missing_weights_fail_with_one_line_naming_the_file
def test_dag_stops_at_once_without_weights(tmp_path):
    config = smoke_config(tmp_path, weights="clip/ViT-B-32.pt", model="ViT-B-32")
    cfg = yaml.safe_load(config.read_text())
    cfg["data_root"] = str(tmp_path / "root")
    config.write_text(yaml.safe_dump(cfg))
    out = snakemake("-n", "--cores", "1", "reports/smoke/table2.md", "--configfile", str(config), "--directory",
                    str(tmp_path / "work"), check=False)
    text = out.stdout + out.stderr
    assert out.returncode != 0
    assert f"CLIP weights missing: put OpenAI's CLIP ViT-B/32 checkpoint ViT-B-32.pt at {tmp_path}/root/clip/ViT-B-32.pt" in text
    assert "rule features" not in text  # nothing was scheduled
    # the profile's other targets still build their DAG
    snakemake("-n", "--cores", "1", "reports/smoke/table1.md", "--configfile", str(config), "--directory",
              str(tmp_path / "work"))


def test_tiny_stand_in_is_random_only_and_read_from_the_environment(monkeypatch):
    cfg = yaml.safe_load(SMOKE.read_text())
    cfg["clip"]["weights"] = "clip/ViT-B-32.pt"
    with pytest.raises(ValueError, match="random"):
        wf.check_clip(cfg)
    with pytest.raises(ValueError, match="random weights only"):
        get_encoder("clip", model=TINY_CLIP, weights="/nowhere/ViT-B-32.pt")
    monkeypatch.setenv("NNDIFF_CLIP_WEIGHTS", "random")
    monkeypatch.setenv("NNDIFF_CLIP_MODEL", TINY_CLIP)
    enc = get_encoder("clip", device="cpu")  # what backbone_features builds: no arguments
    assert enc.name == f"clip:{TINY_CLIP}:random-seed0" and enc.dim == 512
    z = enc.encode_image(torch.randint(0, 256, (3, 3, 32, 32), dtype=torch.uint8))
    assert z.shape == (3, 512) and torch.isfinite(z).all()

# ----------------------------------------------------------------------------- image prompts


def test_exemplars_are_seeded_train_images_of_each_class(tiny):
    b = tiny.bench
    names = b.class_names[:3]
    idx = class_exemplars(b.train_y, b.class_names, names, shots=2, seed=0)
    assert idx.shape == (3, 2)
    for row, name in zip(idx, names):
        assert all(b.class_names[int(b.train_y[i])] == name for i in row) and len(set(row.tolist())) == 2
    assert torch.equal(idx, class_exemplars(b.train_y, b.class_names, names, shots=2, seed=0))
    assert not torch.equal(idx, class_exemplars(b.train_y, b.class_names, names, shots=2, seed=1))
    # a class's exemplars do not depend on which other classes are asked for
    assert torch.equal(idx[1], class_exemplars(b.train_y, b.class_names, [names[1]], shots=2, seed=0)[0])
    with pytest.raises(ValueError, match="not a dataset class"):
        class_exemplars(b.train_y, b.class_names, ["no-such-class"], 1, 0)
    with pytest.raises(ValueError, match="fewer than"):
        class_exemplars(b.train_y, b.class_names, names, 10_000, 0)
    enc = get_encoder(**{"name": "clip", **TINY_SPEC["options"]})
    z = exemplar_embeddings(enc, b.train_x, b.train_y, b.class_names, names, shots=2, seed=0)
    assert z.shape == (3, 512)
    assert torch.allclose(z[0], enc.encode_image(b.train_x[idx[0]]).mean(0), atol=1e-5)


@pytest.fixture(scope="module")
def clip_tina(tiny, tmp_path_factory):
    """A tiny text-prompted Tina on the CLIP head arch (random zoo, tiny random CLIP): (bench, options, workdir)."""
    arch = get_arch("vit-b32-head")
    b = tiny.bench
    theta = torch.randn(len(b.zoo), arch.layout(b.num_classes).n_params, generator=torch.Generator().manual_seed(0))
    bench = dataclasses.replace(b, arch=arch, zoo=dataclasses.replace(b.zoo, theta=theta), text_encoder_spec=TINY_SPEC,
                                encoder_cache=tmp_path_factory.mktemp("enc-clip"))
    options = dict(width=32, depth=2, heads=4, batch_size=16, log_every=1000, steps=3, sampler="ddim", sample_steps=3)
    workdir = tmp_path_factory.mktemp("tina-clip")
    Tina(options).setup(bench, workdir).fit(bench, workdir)
    return bench, options, workdir


def test_image_prompt_condition_follows_the_exemplars(clip_tina):
    bench, options, workdir = clip_tina
    classes = [bench.class_names[:4], bench.class_names[4:8]]
    image = dict(options, generate_prompt="image", image_shots=2)

    def condition(b, opts):
        tina = Tina(opts).setup(b, workdir)
        return tina.encode_image_prompts(classes, tina._load()[0])

    first = condition(bench, image)
    assert first.shape == (2, 4, 512)
    assert torch.equal(first, condition(bench, image))  # same seed: identical
    assert not torch.allclose(first, condition(bench, dict(image, seed=1)))  # other exemplars drawn
    # other pixels in the exemplar images -> another condition, for that class only
    idx = class_exemplars(bench.train_y, bench.class_names, [classes[0][0]], 2, 0)[0]
    x = bench.train_x.clone()
    x[idx] = 255 - x[idx]
    other = dataclasses.replace(bench, train_x=x)
    assert not torch.allclose(condition(other, image)[0, 0], first[0, 0])
    raw = dict(image, image_align=False)  # aligned, every class moves a little (the zoo's image mean moves)
    before, after = condition(bench, raw), condition(other, raw)
    assert not torch.allclose(after[0, 0], before[0, 0]) and torch.equal(after[0, 1:], before[0, 1:])
    # generation: image prompts differ from text prompts and repeat exactly
    tasks = Tasks(["a", "b"], classes)
    by_image = Tina(image).setup(bench, workdir).generate(tasks)
    assert by_image.shape == (2, bench.layout.n_params)
    assert torch.equal(by_image, Tina(image).setup(bench, workdir).generate(tasks))
    assert not torch.allclose(by_image, Tina(options).setup(bench, workdir).generate(tasks))


def test_image_prompted_training(clip_tina, tmp_path):
    """Fig. 4c's other arm: fit on exemplar-image conditions; it then generates from images by default."""
    bench, options, _ = clip_tina
    opts = dict(options, prompt="image")
    tina = Tina(opts).setup(bench, tmp_path)
    tina.fit(bench, tmp_path)
    theta = Tina(opts).setup(bench, tmp_path).generate(Tasks(["a"], [bench.class_names[:4]]))
    assert theta.shape == (1, bench.layout.n_params) and torch.isfinite(theta).all()

# ----------------------------------------------------------------------------- reports


def fake_results(tmp_path, labels, dataset="synthetic", arch="vit-b32-head") -> list[str]:
    paths = []
    for i, label in enumerate(labels):
        for split in ("id", "ood"):
            path = tmp_path / "data" / dataset / arch / "results" / label / f"{split}.csv"
            path.parent.mkdir(parents=True, exist_ok=True)
            pd.DataFrame({"task_id": [f"t{j}" for j in range(4)], "accuracy": [50.0 + i + j for j in range(4)]}
                         ).to_csv(path, index=False)
            paths.append(str(path))
    return paths


def test_reports_from_random_weights_say_so_in_their_title(tmp_path):
    from benchmarks.figures import FIGURES
    results = fake_results(tmp_path, ["classifier-selection-slice", "taper-clip", "tina-clip", "tina-clip@image-1",
                                      "tina-clip@image-3", "oracle"])
    (tmp_path / "reports").mkdir()
    FIGURES["table2"]([r for r in results if "@" not in r], tmp_path / "reports" / "table2.md", config=str(SMOKE))
    FIGURES["fig6a"]([r for r in results if "tina-clip" in r or "slice" in r], tmp_path / "reports" / "fig6a.md",
                     config=str(SMOKE))
    for name in ("table2", "fig6a"):
        text = (tmp_path / "reports" / f"{name}.md").read_text()
        assert text.splitlines()[0].startswith("# ") and "RANDOM CLIP WEIGHTS: NOT A RESULT" in text.splitlines()[0]
    fig6a = (tmp_path / "reports" / "fig6a.md").read_text()
    assert "1 exemplar image per class" in fig6a and "3 exemplar images per class" in fig6a
    assert (tmp_path / "reports" / "figures" / "fig6a.png").is_file()
    # real weights: no warning, the paper's numbers beside the matching rows
    cfg = yaml.safe_load(SMOKE.read_text())
    cfg["clip"] = {"weights": "/models/ViT-B-32.pt", "table2": cfg["clip"]["table2"]}
    real = tmp_path / "real.yaml"
    real.write_text(yaml.safe_dump(cfg))
    caltech = fake_results(tmp_path, ["classifier-selection-slice", "tina-clip"], dataset="caltech101")
    FIGURES["table2"](caltech, tmp_path / "reports" / "table2.md", config=str(real))
    text = (tmp_path / "reports" / "table2.md").read_text()
    assert "RANDOM" not in text and "[paper 97.15]" in text and "[paper 96.08]" in text


def test_dry_run_of_the_smoke_targets(tmp_path):
    out = snakemake("-n", "-p", "--cores", "1", "reports/smoke/table2.md", "reports/smoke/fig6a.md",
                    "reports/smoke/fig4c.md", "--configfile", str(SMOKE), "--directory", str(tmp_path)).stdout
    for rule in ("features", "finetune", "fit", "generate", "evaluate", "clip_table2", "clip_fig6a"):
        assert f"rule {rule}:" in out
    assert "nndiff features --images data/synthetic/images.pt --generic data/synthetic/vit-b32-head/generic.pt" in out
    assert "nndiff figure table2" in out and "nndiff figure fig6a" in out
    assert "results/tina-clip@image-1/ood.csv" in out
    # Fig. 4c: an image-prompted fit of its own beside tina-clip, both read at their EMA snapshots
    assert "data/synthetic/vit-b32-head/methods/tina-clip-image/fit.json" in out and "nndiff figure fig4c" in out
    # enabled targets are in rule all; the cpu profile leaves them out
    assert "reports/smoke/table2.md" in snakemake("-n", "--cores", "1", "all", "--configfile", str(SMOKE),
                                                  "--directory", str(tmp_path)).stdout
    cfg = yaml.safe_load(SMOKE.read_text())
    assert wf.clip_reports(cfg, "r/") == ["r/table2.md", "r/fig6a.md", "r/figures/fig6a.png", "r/figures/fig6a.svg",
                                          "r/figures/fig6a.csv"]
    cpu = yaml.safe_load((ROOT / "benchmarks" / "configs" / "cpu.yaml").read_text())
    assert wf.clip_reports(cpu, "r/") == [] and wf.clip_archs(cpu) == []


@pytest.mark.slow
def test_smoke_build_of_the_clip_reports(tmp_path):
    work = tmp_path / "work"
    snakemake("--cores", "2", "reports/smoke/table2.md", "reports/smoke/fig6a.md", "reports/smoke/fig4c.md",
              "--configfile", str(SMOKE), "--directory", str(work))
    table2 = (work / "reports" / "smoke" / "table2.md").read_text()
    assert "RANDOM CLIP WEIGHTS: NOT A RESULT" in table2.splitlines()[0]
    for row in ("classifier-selection-slice", "taper-clip", "tina-clip", "oracle"):
        assert f"| {row} " in table2
    fig6a = (work / "reports" / "smoke" / "fig6a.md").read_text()
    assert "| tina-clip@image-1 " in fig6a and (work / "reports" / "smoke" / "figures" / "fig6a.svg").is_file()
    fig4c = (work / "reports" / "smoke" / "fig4c.md").read_text()
    assert "RANDOM CLIP WEIGHTS" in fig4c.splitlines()[0] and "`tina-clip-image@10`" in fig4c
    feats = torch.load(work / "data" / "synthetic" / "vit-b32-head" / "features.pt", weights_only=False)
    assert feats["train"].shape[1] == 512
