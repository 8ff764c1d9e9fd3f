"""The README's plugin example ("Adding a method") is examples/my_method/ word for word, and it installs with
pip and runs through the `nndiff` commands as the README says (slow: a real pip install into this venv)."""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from benchmarks.tasks import get_split, save_tasks
from benchmarks.train import save_zoo

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "my_method"
BIN = Path(sys.executable).parent


def readme_files() -> dict[str, str]:
    """The README's code blocks that start with `# my_method/<file>`: file name -> text."""
    blocks = re.findall(r"^```[a-z]*\n(.*?)^```", (ROOT / "README.md").read_text(), re.S | re.M)
    return {m[1]: b for b in blocks if (m := re.match(r"# my_method/(\S+)\n", b))}


def test_readme_plugin_example_is_the_examples_folder():
    files = readme_files()
    assert sorted(files) == ["pyproject.toml", "zoo_average.py"]
    assert sorted(files) == sorted(p.name for p in EXAMPLE.iterdir() if p.suffix in (".py", ".toml"))
    for name, text in files.items():
        assert (EXAMPLE / name).read_text() == text, f"README's my_method/{name} differs from {EXAMPLE / name}"
    assert "pip install -e examples/my_method" in (ROOT / "README.md").read_text()


def test_example_imports_only_the_method_contract():
    imports = re.findall(r"^\s*(?:from|import) (\S+)", (EXAMPLE / "zoo_average.py").read_text(), re.M)
    assert set(imports) <= {"dataclasses", "methods.base", "torch"}, imports


def _pip(*args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, PIP_NO_INDEX="1", PIP_DISABLE_PIP_VERSION_CHECK="1")  # offline: nothing to download
    return subprocess.run([sys.executable, "-m", "pip", *args], capture_output=True, text=True, env=env, timeout=600)


@pytest.fixture
def installed_example():
    """`pip install -e examples/my_method` into this venv for the test; uninstalled afterwards, whatever happens."""
    try:
        out = _pip("install", "--no-deps", "--no-build-isolation", "-e", str(EXAMPLE))
        assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
        yield
    finally:
        _pip("uninstall", "-y", "my-method")
        for leftover in ("my_method.egg-info", "build"):
            shutil.rmtree(EXAMPLE / leftover, ignore_errors=True)


def nndiff(*args: str, cwd: Path) -> str:
    out = subprocess.run([str(BIN / "nndiff"), *args], capture_output=True, text=True, cwd=cwd, timeout=600,
                         env=dict(os.environ, HF_HUB_OFFLINE="1"))
    assert out.returncode == 0, f"nndiff {' '.join(args)} failed:\n{out.stdout[-2000:]}\n{out.stderr[-2000:]}"
    return out.stdout


@pytest.mark.slow
def test_pip_installed_example_fits_and_generates(installed_example, tiny, tmp_path):
    assert re.search(r"^zoo-average\s+zoo_average:ZooAverage$", nndiff("methods", cwd=tmp_path), re.M)
    tiny.images.save(tmp_path / "images.pt")
    tiny.generic.save(tmp_path / "generic.pt")
    save_zoo(tiny.zoo_record, tmp_path / "zoo.pt")
    save_tasks(tiny.tasks, tmp_path / "tasks.json")
    bench = ["--method", "zoo-average", "--options", '{"scale": 1.0}', "--images", "images.pt", "--generic", "generic.pt",
             "--zoo", "zoo.pt", "--workdir", "zoo-average", "--device", "cpu"]
    nndiff("fit", *bench, cwd=tmp_path)
    nndiff("generate", *bench, "--tasks", "tasks.json", "--split", "ood", "--out", "ood.pt", cwd=tmp_path)
    nndiff("evaluate", "--images", "images.pt", "--generic", "generic.pt", "--tasks", "tasks.json", "--split", "ood",
           "--vectors", "ood.pt", "--label", "zoo-average", "--device", "cpu", "--out", "ood.csv", cwd=tmp_path)
    vectors = torch.load(tmp_path / "ood.pt", weights_only=True)
    n_ood = len(get_split(tiny.tasks, "ood"))
    assert torch.equal(vectors["theta"], tiny.zoo_record["theta"].mean(0).float().expand(n_ood, -1))
    lines = (tmp_path / "ood.csv").read_text().splitlines()
    assert len(lines) == 1 + n_ood and all(",zoo-average," in f",{line}" for line in lines[1:])
