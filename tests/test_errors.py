"""Bad input a new user meets: one `nndiff: error: <line naming the file or key>` on stderr, exit 2; -v adds the
traceback. In-process through `benchmarks.cli.main` (stderr captured), one fresh process for what only a real
stderr shows (torch's pickle warning)."""
from __future__ import annotations

import dataclasses
import json
import logging
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from benchmarks import artifacts
from benchmarks.cli import main
from benchmarks.tasks import save_tasks
from benchmarks.train import save_zoo
from methods.tina import Tina

ROOT = Path(__file__).resolve().parent.parent
SMOKE = ROOT / "benchmarks" / "configs" / "smoke.yaml"
TINA = dict(width=16, depth=1, heads=2, steps=3, sampler="ddpm", sample_steps=4)  # K = 4, fitted without padding


@pytest.fixture(scope="module")
def f(tiny, tmp_path_factory) -> dict:
    """Tiny inputs, good and bad, and a tiny Tina (table encoder, DDPM-4) with one p-Model file from it."""
    root = tmp_path_factory.mktemp("errors")
    p = {name: root / name for name in ("images.pt", "generic.pt", "zoo.pt", "tasks.json", "nan.pt", "bad.pt",
                                        "cut.pt", "notimg.png", "img.png", "adir", "pmodel.pt", "tina")}
    tiny.images.save(p["images.pt"])
    tiny.generic.save(p["generic.pt"])
    save_zoo(tiny.zoo_record, p["zoo.pt"])
    save_tasks(tiny.tasks, p["tasks.json"])
    theta = tiny.zoo_record["theta"].clone()
    theta[1, 3] = float("nan")
    artifacts.save_torch({"method": "oracle", "split": "zoo", "task_ids": tiny.zoo_record["task_ids"],
                          "output_space": "task", "theta": theta}, p["nan.pt"])
    with open(p["bad.pt"], "wb") as fh:
        pickle.dump({"a": object}, fh)  # a pickle, but of no weights: torch.load(weights_only) refuses it
    p["cut.pt"].write_bytes(p["generic.pt"].read_bytes()[:1000])  # a truncated checkpoint
    p["notimg.png"].write_text("not an image\n")
    Image.fromarray(tiny.images.test_x[0].permute(1, 2, 0).numpy().astype(np.uint8)).save(p["img.png"])
    p["adir"].mkdir()
    gen = torch.Generator().manual_seed(0)
    table = root / "table.json"
    table.write_text(json.dumps({c: torch.randn(8, generator=gen).tolist() for c in [*tiny.bench.class_names, "<->"]}))
    bench = dataclasses.replace(tiny.bench, text_encoder_spec={"name": "table", "options": {"path": str(table)}})
    Tina(TINA).setup(bench, p["tina"]).fit(bench, p["tina"])
    p["classes"] = list(tiny.bench.class_names)
    p["generate"] = ["generate", "--method", "tina", "--generic", str(p["generic.pt"]), "--workdir", str(p["tina"]),
                     "--device", "cpu"]
    assert main(p["generate"] + ["--prompt", ", ".join(p["classes"][:4]), "--out", str(p["pmodel.pt"])]) == 0
    return p


@pytest.fixture(autouse=True)
def in_tmp(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)  # relative outputs land in a fresh folder


def run(capsys, argv: list) -> tuple[int, str]:
    """`nndiff argv` in-process, logging to (captured) stderr as in a fresh process: main() installs its handler
    only on a root logger without one, so pytest's handlers step aside meanwhile. Returns (exit code, stderr)."""
    capsys.readouterr()
    saved, level = logging.root.handlers[:], logging.root.level
    logging.root.handlers.clear()
    try:
        rc = main([str(a) for a in argv])
    finally:
        logging.root.handlers[:] = saved
        logging.root.setLevel(level)
    return rc, capsys.readouterr().err


def fill(f: dict, argv: list[str]) -> list[str]:
    """"{images.pt}" -> the fixture's path of that name; "{nope}" -> a path that does not exist."""
    paths = {k: str(v) for k, v in f.items() if isinstance(v, Path)} | {"nope": "/nope/x.pt"}
    out = []
    for a in argv:
        for k, v in paths.items():
            a = a.replace("{" + k + "}", v)
        out.append(a)
    return out


def fails(capsys, argv: list, *names) -> str:
    """Run `nndiff argv`: exit 2 and exactly one stderr line, `nndiff: error: ...`, naming each of `names`."""
    rc, err = run(capsys, argv)
    lines = err.strip().splitlines()
    assert rc == 2 and len(lines) == 1 and lines[0].startswith("nndiff: error: "), lines
    for name in names:
        assert str(name) in lines[0], (name, lines[0])
    return lines[0]

# ----------------------------------------------------------------------------- 1. classify


@pytest.mark.parametrize("image, says", [("notimg.png", "not an image file"), ("adir", "is a directory"),
                                         ("missing.png", "no such image file")])
def test_classify_bad_image(f, capsys, image, says):
    path = f["img.png"].with_name(image)
    assert says in fails(capsys, ["classify", f["pmodel.pt"], f["img.png"], path], path)


@pytest.mark.parametrize("pmodel, says", [
    ("bad.pt", "weights_only loading refuses it"), ("cut.pt", "truncated or not a torch file"),
    ("adir", "is a directory"), ("missing.pt", "no such file"), ("images.pt", "is not a p-Model file")])
def test_classify_bad_pmodel(f, capsys, recwarn, pmodel, says):
    path = f["img.png"].with_name(pmodel)
    line = fails(capsys, ["classify", path, f["img.png"]], path, says)
    assert pmodel == "images.pt" or "expected a p-Model file (nndiff-pmodel/1)" in line
    assert not [w for w in recwarn if "pickle protocol" in str(w.message)]  # no second line from torch


def test_good_classify_still_works(f, capsys):
    capsys.readouterr()
    assert main(["classify", str(f["pmodel.pt"]), str(f["img.png"])]) == 0
    path, name, _ = capsys.readouterr().out.strip().split("\t")
    assert path == str(f["img.png"]) and name in f["classes"][:4]

# ----------------------------------------------------------------------------- 2. check-config


@pytest.mark.parametrize("change, says", [
    (None, "not valid YAML"),
    ("many", "methods.tina: steps must be int or None, got 'many'"),
    (-5, "methods.tina: steps must be >= 1, got -5")])
def test_check_config(tmp_path, capsys, change, says):
    path = tmp_path / "bad.yaml"
    if change is None:
        path.write_text("profile: x\nseed: 0\nmethods:\n  tina: {steps: 5\n")
    else:
        cfg = yaml.safe_load(SMOKE.read_text())
        cfg["methods"]["tina"]["steps"] = change
        path.write_text(yaml.safe_dump(cfg))
    assert says in fails(capsys, ["check-config", path], path)

# ----------------------------------------------------------------------------- 3. generate --prompt


def test_prompt_names_a_class_twice(f, capsys):
    a, b = f["classes"][:2]
    line = fails(capsys, f["generate"] + ["--prompt", f"{a}, {a}, {b}", "--out", f["pmodel.pt"].with_name("x.pt")], a)
    assert "more than once" in line and repr(b) not in line


@pytest.mark.parametrize("k", [1, 5])
def test_prompt_of_another_class_count_on_an_unpadded_fit(f, capsys, k):
    line = fails(capsys, f["generate"] + ["--prompt", ", ".join(f["classes"][:k]), "--out", "x.pt"], f["tina"],
                 "serves 4-class prompts", "`padding: true` serves 1 to 4 classes")
    assert f"names {k} class" in line
    assert not Path("x.pt").exists()


@pytest.mark.parametrize("flags, sampling", [([], "ddpm, 4 steps"),  # the fit's sampler and steps
                                             (["--sample-steps", "2"], "ddpm, 2 steps"),
                                             (["--sampler", "ddim"], "ddim, 50 steps"),  # another sampler: its steps
                                             (["--sampler", "ddim", "--sample-steps", "3"], "ddim, 3 steps")])
def test_prompt_samples_as_fitted_unless_told(f, tmp_path, flags, sampling):
    out = tmp_path / "pm.pt"
    assert main(f["generate"] + ["--prompt", ", ".join(f["classes"][4:8]), "--out", str(out), *flags]) == 0
    assert f"- Sampler: {sampling}, seed 0" in artifacts.load_torch(out)["model_card"]

# ----------------------------------------------------------------------------- 4. missing or wrong input files


@pytest.mark.parametrize("argv, path", [
    (["tasks", "--images", "{nope}", "--out", "t.json"], "{nope}"),
    (["stage1", "--images", "{nope}", "--arch", "cnn-5k", "--out", "g.pt"], "{nope}"),
    (["finetune", "--images", "{images.pt}", "--generic", "{generic.pt}", "--tasks", "{nope}", "--out", "z.pt"],
     "{nope}"),
    (["fit", "--method", "tina", "--images", "{images.pt}", "--generic", "{generic.pt}", "--zoo", "{nope}",
      "--workdir", "w"], "{nope}"),
    (["evaluate", "--images", "{images.pt}", "--generic", "{generic.pt}", "--tasks", "{tasks.json}", "--split", "zoo",
      "--vectors", "{nope}", "--out", "e.csv"], "{nope}"),
    (["merge", "{nope}", "--out", "m.pt"], "{nope}"),
    (["oracle", "--finetuned", "{nope}", "--tasks", "{tasks.json}", "--split", "zoo", "--out", "o.pt"], "{nope}"),
    (["generate", "--method", "tina", "--generic", "{nope}", "--workdir", "{tina}", "--prompt", "a", "--out", "x.pt"],
     "{nope}"),
    (["generate", "--method", "tina", "--generic", "{generic.pt}", "--workdir", "{nope}", "--prompt", "a", "--out",
      "x.pt"], "{nope}"),
    (["check-config", "{nope}.yaml"], "{nope}.yaml"),
    (["publish", "{nope}", "out.md"], "{nope}"),
])
def test_missing_input_names_its_path(f, capsys, argv, path):
    fails(capsys, fill(f, argv), *fill(f, [path]))


@pytest.mark.parametrize("flag, wrong, says", [("--images", "generic.pt", "expected an images file"),
                                               ("--generic", "zoo.pt", "expected a generic model"),
                                               ("--tasks", "images.pt", "not valid JSON")])
def test_a_file_of_another_kind_names_it(f, capsys, flag, wrong, says):
    argv = {"--images": f["images.pt"], "--generic": f["generic.pt"], "--tasks": f["tasks.json"]}
    argv[flag] = f[wrong]
    fails(capsys, ["finetune", *(x for kv in argv.items() for x in kv), "--out", "z.pt"], f[wrong], says)

# ----------------------------------------------------------------------------- 5. NaN weights


def test_nan_vectors_name_the_task(f, tiny, capsys, tmp_path):
    line = fails(capsys, ["evaluate", "--images", f["images.pt"], "--generic", f["generic.pt"], "--tasks",
                          f["tasks.json"], "--split", "zoo", "--vectors", f["nan.pt"], "--out", tmp_path / "e.csv"],
                 repr(tiny.zoo_record["task_ids"][1]), "NaN")
    assert "nothing was written" in line and not (tmp_path / "e.csv").exists()

# ----------------------------------------------------------------------------- -v: the traceback too


@pytest.mark.parametrize("argv", [["classify", "{bad.pt}", "{img.png}"], ["classify", "{pmodel.pt}", "{adir}"],
                                  ["tasks", "--images", "/nope/x.pt", "--out", "t.json"]])
def test_verbose_shows_the_traceback(f, capsys, argv):
    rc, err = run(capsys, ["-v", *fill(f, argv)])
    assert rc == 2 and "Traceback (most recent call last)" in err
    assert err.strip().splitlines()[-1].startswith("nndiff: error: ")


def test_one_line_in_a_fresh_process(f):
    """A real stderr: nothing else (torch's pickle-protocol warning included) before the error line."""
    script = ("import sys; from benchmarks.cli import main; "
              f"rc = main(['classify', {str(f['bad.pt'])!r}, {str(f['img.png'])!r}]); sys.exit(rc)")
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=ROOT, timeout=120)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1, proc.stderr
    assert lines[0].startswith(f"nndiff: error: {f['bad.pt']}: expected a p-Model file"), lines[0]


def test_os_errors_name_their_file():
    from benchmarks.cli import _user_error
    missing = FileNotFoundError(2, "No such file or directory", "/x/y.csv")
    assert _user_error(missing) == "/x/y.csv: No such file or directory"
    assert _user_error(PermissionError(13, "Permission denied", "/out.md")) == "/out.md: Permission denied"
    assert _user_error(OSError("no file named")) is None  # an OSError about no file: a bug, keeps its traceback
