"""Text-to-model: a prompt -> a standalone p-Model file -> labels for image files (API and CLI)."""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from benchmarks import artifacts
from benchmarks.text2model import FORMAT, classify, generate_pmodel, parse_prompt, unknown_classes
from methods.tina import Tina

@pytest.fixture(scope="module")
def fitted(tiny, tmp_path_factory):
    """A tiny Tina fitted on the tiny bench with a table text encoder: (bench, workdir, generic path)."""
    root = tmp_path_factory.mktemp("t2m")
    gen = torch.Generator().manual_seed(0)
    table = root / "table.json"
    vectors = {c: torch.randn(16, generator=gen) for c in [*tiny.bench.class_names, "<->"]}
    # a wording no fit sees, next to the first class's vector (as "sea cow" to "dugong")
    vectors["sea cow"] = vectors[tiny.bench.class_names[0]] + 0.05 * torch.randn(16, generator=gen)
    table.write_text(json.dumps({c: v.tolist() for c, v in vectors.items()}))
    bench = dataclasses.replace(tiny.bench, text_encoder_spec={"name": "table", "options": {"path": str(table)}})
    workdir = root / "tina"
    tina = Tina(dict(width=32, depth=2, heads=4, steps=30, batch_size=16, padding=True)).setup(bench, workdir)
    tina.fit(bench, workdir)
    generic = root / "generic.pt"
    tiny.generic.save(generic)
    return bench, workdir, generic


def write_pngs(tiny, folder: Path, n: int = 3) -> list[Path]:
    paths = []
    for i in range(n):
        path = folder / f"img{i}.png"
        Image.fromarray(tiny.images.test_x[i].permute(1, 2, 0).numpy().astype(np.uint8)).save(path)
        paths.append(path)
    return paths


def test_parse_prompt():
    assert parse_prompt(" apple, bear ,, cup ") == ["apple", "bear", "cup"]


def test_prompt_to_pmodel_file_to_labels(tiny, fitted, tmp_path):
    bench, workdir, generic = fitted
    prompt = bench.class_names[:3]
    out = generate_pmodel(workdir, generic, prompt, tmp_path / "pmodel.pt")  # from paths: a fresh bench
    d = artifacts.load_torch(out)  # weights_only
    assert d["format"] == FORMAT and d["arch"] == "cnn-5k" and d["classes"] == prompt
    assert d["state_dict"]["fc.weight"].shape == (3, 32) and "sampler: ddim" in d["model_card"].lower()
    assert "Tina" in d["model_card"] and str(workdir) in d["model_card"]
    same = generate_pmodel(workdir, bench, prompt, tmp_path / "again.pt")  # from the Bench: the same model
    assert torch.equal(artifacts.load_torch(same)["state_dict"]["fc.weight"], d["state_dict"]["fc.weight"])
    images = write_pngs(tiny, tmp_path)
    labels = classify(out, images)
    assert [p for p, _, _ in labels] == [str(p) for p in images]
    assert all(c in prompt and 0.0 <= q <= 1.0 for _, c, q in labels)


def test_a_prompt_class_outside_the_fit_is_named_with_its_nearest(fitted, tmp_path, caplog):
    bench, workdir, generic = fitted
    trained = Tina.fitted_bench(workdir)["trained_classes"]
    assert trained and set(trained) <= set(bench.class_names) and bench.class_names[0] in trained
    prompt = [trained[1], "sea cow", trained[2]]
    with caplog.at_level("WARNING"):
        out = generate_pmodel(workdir, bench, prompt, tmp_path / "p.pt")
    card = artifacts.load_torch(out)["model_card"]
    flagged = card.split("Outside the generator's training classes:")[1]
    assert f"'sea cow' (nearest trained class {bench.class_names[0].replace('_', ' ')!r}" in flagged
    assert repr(trained[1]) not in flagged and repr(trained[2]) not in flagged  # trained names are not flagged
    assert "'sea cow'" in caplog.text
    quiet = generate_pmodel(workdir, bench, trained[:3], tmp_path / "q.pt")
    assert "Outside the generator" not in artifacts.load_torch(quiet)["model_card"]
    assert unknown_classes(["sea cow"], None, encoder=None) == []  # a state fitted before the list was kept


def test_errors(tiny, fitted, tmp_path):
    bench, workdir, generic = fitted
    with pytest.raises(ValueError, match="empty prompt"):
        generate_pmodel(workdir, bench, [" ", ""], tmp_path / "x.pt")
    with pytest.raises(ValueError, match="clip"):  # image prompts need CLIP's image tower
        generate_pmodel(workdir, bench, [], tmp_path / "x.pt", image_prompt=write_pngs(tiny, tmp_path, 2))
    with pytest.raises(ValueError, match="descriptions"):  # the synthetic dataset has none
        generate_pmodel(workdir, bench, bench.class_names[:2], tmp_path / "x.pt", descriptions=True)
    artifacts.save_torch({"theta": torch.zeros(3)}, tmp_path / "vectors.pt")
    with pytest.raises(ValueError, match="not a p-Model file"):
        classify(tmp_path / "vectors.pt", write_pngs(tiny, tmp_path, 1))
    assert not (tmp_path / "x.pt").exists()


def test_image_prompt_through_clip(tiny, tmp_path):
    """Plumbing only: CLIP's real architecture with random weights (no weights can be downloaded here)."""
    bench = dataclasses.replace(tiny.bench, encoder_cache=tmp_path / "cache",
                                text_encoder_spec={"name": "clip", "options": {"pretrained": None}})
    tina = Tina(dict(width=32, depth=1, heads=4, steps=2, padding=True))  # padding: a 2-class prompt at K = 4
    tina.setup(bench, tmp_path / "tina").fit(bench, tmp_path / "tina")
    images = write_pngs(tiny, tmp_path, 2)
    out = generate_pmodel(tmp_path / "tina", bench, [], tmp_path / "pm.pt", image_prompt=images,
                          options={"sample_steps": 5})
    d = artifacts.load_torch(out)
    assert d["classes"] == ["img0", "img1"] and "images (img0.png, img1.png)" in d["model_card"]
    assert len(classify(out, images)) == 2


def test_cli_prompt_and_classify(tiny, fitted, tmp_path, capsys, caplog):
    from benchmarks.cli import main
    bench, workdir, generic = fitted
    out = tmp_path / "pm.pt"
    base = ["generate", "--method", "tina", "--generic", str(generic), "--workdir", str(workdir)]
    assert main(base + ["--prompt", ", ".join(bench.class_names[3:7]), "--out", str(out),
                        "--options", '{"sample_steps": 10}']) == 0
    assert artifacts.load_torch(out)["classes"] == bench.class_names[3:7]
    images = write_pngs(tiny, tmp_path, 2)
    capsys.readouterr()
    assert main(["classify", str(out), *map(str, images)]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    path, name, prob = lines[0].split("\t")
    assert len(lines) == 2 and path == str(images[0]) and name in bench.class_names[3:7] and 0 <= float(prob) <= 1
    # DAG mode still needs its inputs; --prompt "" is an empty prompt
    assert main(base + ["--out", "y.pt"]) == 2
    assert "--tasks" in caplog.text
    assert main(base + ["--out", "y.pt", "--prompt", ""]) == 2
