"""Configs checked in full before any job starts (benchmarks/workflow/checks.py, methods.base.option), one-line CLI
errors, and a failed `nndiff fit` that leaves the last complete state in place."""
from __future__ import annotations

import copy
import logging
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from benchmarks.config import PROFILES, load_config
from benchmarks.workflow import check_config
from methods.base import Method, option

ROOT = Path(__file__).resolve().parent.parent
SMOKE = ROOT / "benchmarks" / "configs" / "smoke.yaml"


@pytest.fixture(scope="module")
def smoke() -> dict:
    return load_config("smoke")


def _error(cfg: dict) -> str:
    with pytest.raises(ValueError) as err:
        check_config(cfg)
    message = str(err.value)
    assert "\n" not in message  # one line
    return message


@pytest.mark.parametrize("profile", PROFILES)
def test_shipped_profiles_pass(profile):
    check_config(load_config(profile))


def _set(path: str, value):
    """A change to the smoke config: `path` is dotted keys ('methods.tina.steps'); value None deletes."""
    def change(cfg):
        *parents, last = path.split(".")
        node = cfg
        for key in parents:
            node = node.setdefault(key, {})
        node[last] = value
    return change


# (change, fragments of the one-line message: the key path, the problem, the valid choices)
BAD = {
    "option typo": (_set("methods.tina.sampel_steps", 5),
                    ["methods.tina: unknown options ['sampel_steps']; valid: [", "'sample_steps'"]),
    "wrong type": (_set("methods.tina.steps", "many"), ["methods.tina: steps must be int or None, got 'many' (str)"]),
    "bool is no int": (_set("methods.tina.width", True), ["methods.tina: width must be int, got True (bool)"]),
    "negative steps": (_set("methods.tina.steps", -5), ["methods.tina: steps must be >= 1, got -5"]),
    "zero lr": (_set("methods.tina.lr", 0), ["methods.tina: lr must be > 0, got 0"]),
    "bad rule": (_set("methods.classifier-selection.rule", "foo"),
                 ["methods.classifier-selection: unknown rule 'foo'; valid: ['mask', 'slice']"]),
    "bad sampler": (_set("methods.cond-pdiff.sampler", "bogus"),
                    ["methods.cond-pdiff: unknown sampler 'bogus'; valid: ['ddpm', 'ddim', 'dpm-solver']"]),
    "bad list item": (_set("methods.cond-pdiff.unet_mults", [1, 0]), ["methods.cond-pdiff: unet_mults must be >= 1"]),
    "unknown method label": (_set("methods.foo", {}),
                             ["methods.foo: unknown method 'foo'; registered methods: [", "'tina'"]),
    "unknown registry name": (_set("methods.tina.method", "nosuch"),
                              ["methods.tina.method: unknown method 'nosuch'; registered methods: [", "'cond-pdiff'"]),
    "unknown method arch": (_set("methods.taper.archs", ["cnn-5x"]),
                            ["methods.taper.archs: unknown archs ['cnn-5x']; known: [", "'cnn-5k'"]),
    "variant refits": (_set("variants.tina@ddpm-20.steps", 3),
                       ["variants.tina@ddpm-20: ['steps'] are not generate-time options of 'tina'", "'sample_steps'"]),
    "variant typo": (_set("variants.tina@ddpm-20.sampel_steps", 3), ["variants.tina@ddpm-20: unknown options"]),
    "variant bad value": (_set("variants.tina@ddpm-20.sampler", "euler"),
                          ["variants.tina@ddpm-20: unknown sampler 'euler'; valid: ["]),
    "variant of unknown": (_set("variants.tina@ddpm-20.of", "tinaa"),
                           ["variants.tina@ddpm-20.of: unknown method label 'tinaa'; labels: [", "'tina'"]),
    "variant named like a method": (_set("variants.tina", {"of": "tina", "sampler": "ddpm"}),
                                    ["variants.tina: 'tina' is already a method label"]),
    "ablation bad option": (_set("ablations.condpdiff.rows.cpd-head.options.norm", "batch"),
                            ["ablations.condpdiff.rows.cpd-head.options: unknown norm 'batch'; valid: ["]),
    "ablation option typo": (_set("ablations.condpdiff.rows.cpd-head.options.nrom", "global"),
                             ["ablations.condpdiff.rows.cpd-head.options: unknown options ['nrom']"]),
    "ablation base": (_set("ablations.condpdiff.base", "cond-pdif"),
                      ["ablations.condpdiff.base: unknown base label 'cond-pdif'; labels: ["]),
    "ablation reference": (_set("ablations.condpdiff.references", ["classifier-selection-slise"]),
                           ["ablations.condpdiff.references: unknown references ['classifier-selection-slise']"]),
    "ablation dataset": (_set("ablations.condpdiff.dataset", "cifar"),
                         ["ablations.condpdiff.dataset: 'cifar' is not in the config's datasets: ['synthetic']"]),
    "table1 variant": (_set("report.table1_variants", ["cond-pdiff@frist"]),
                       ["report.table1_variants ['cond-pdiff@frist'] are not variant labels; variants: ["]),
    "efficiency label": (_set("report.efficiency.methods", ["tina", "oracle"]),
                         ["report.efficiency.methods ['oracle'] are not method or variant labels; labels: ["]),
    "evaluate split": (_set("evaluate.splits", ["id", "test"]),
                       ["evaluate.splits: ['test'] are not task splits; valid: zoo, id, ood, padded, unseen-zoo, "
                        "unseen-<int>"]),
    "ablation row split": (_set("ablations.condpdiff.rows.cpd-norm-task.splits", ["lora-id"]),
                           ["ablations.condpdiff.rows.cpd-norm-task.splits: ['lora-id'] are not task splits"]),
    "glue method option": (_set("glue", {"model": "m", "tasks": ["rte"], "method": {"sampler": "euler"}}),
                           ["glue.method: unknown sampler 'euler'"]),
    "schema first": (_set("finetune.epoch", 2), ["invalid config at 'finetune'", "epoch"]),
    "dataset arch": (_set("datasets.synthetic.archs", ["resnet20-head"]),
                     ["datasets.synthetic.archs: ['resnet20-head'] are not in the config's archs: ["]),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_config_fails_in_one_line_naming_the_key(smoke, case):
    change, fragments = BAD[case]
    cfg = copy.deepcopy(smoke)
    change(cfg)
    message = _error(cfg)
    for fragment in fragments:
        assert fragment in message, message


def test_good_values_pass(smoke):
    cfg = copy.deepcopy(smoke)
    cfg["methods"]["tina"].update(lr=1, sample_steps=None)  # an int for a float; None where None is allowed
    cfg["evaluate"]["splits"] = ["id", "ood", "padded", "unseen-40", "unseen-zoo", "zoo"]
    cfg["variants"]["tina@ema-off"] = {"of": "tina", "use_ema": False, "n_samples": 2}  # generate-time options
    cfg["variants"]["cs@slice"] = {"of": "classifier-selection", "rule": "slice"}
    cfg["ablations"]["condpdiff"]["rows"]["cpd-layers"] = {"factor": "layers", "options": {"layers": ["conv1", "fc"]}}
    check_config(cfg)

# ----------------------------------------------------------------------------- option() and Method


class Toy(Method):
    name = "toy"

    @dataclass
    class Config:
        steps: int | None = option(None, min=1)
        rate: float = option(0.5, above=0, max=1)
        mode: str = option("a", choices=("a", "b"), generate=True)
        sizes: tuple[int, ...] = option((1, 2), min=1)
        flag: bool = False
        names: list = option([])


def test_option_rules_by_type_choice_and_range():
    Toy({"steps": 3, "rate": 1, "mode": "b", "sizes": [4], "flag": True, "names": ["x"]})  # an int is a float
    for options, message in [({"steps": 2.0}, "steps must be int or None, got 2.0 (float)"),
                             ({"flag": 1}, "flag must be bool, got 1 (int)"),
                             ({"rate": 0}, "rate must be > 0, got 0"), ({"rate": 1.5}, "rate must be <= 1, got 1.5"),
                             ({"mode": "c"}, "unknown mode 'c'; valid: ['a', 'b']"),
                             ({"sizes": 3}, "sizes must be a list of int, got 3 (int)"),
                             ({"sizes": [1, 0]}, "sizes must be >= 1, got 0"),
                             ({"mdoe": "a"}, "unknown options ['mdoe']; valid: ['flag', 'mode', 'names', 'rate', "
                                             "'sizes', 'steps']")]:
        with pytest.raises(ValueError) as err:
            Toy.check_options(options, "methods.toy")
        assert str(err.value) == f"methods.toy: {message}"
        with pytest.raises(ValueError, match="method 'toy'"):  # the constructor runs the same check
            Toy(options)
    with pytest.raises(ValueError, match="steps must be >= 1"):  # a Config built in Python too
        Toy(Toy.Config(steps=0))
    assert Toy().config.names == [] and Toy().config.names is not Toy().config.names  # a mutable default is copied
    assert Toy.generate_options() == ("mode",)


def test_generate_options_of_the_shipped_methods():
    from methods.registry import get_method
    # the sets their fits ignore (Tina's fit_options, Cond P-Diff's checkpoint key): unchanged
    assert set(get_method("tina").generate_options()) == {"sampler", "sample_steps", "generate_text", "use_ema",
                                                          "n_samples", "checkpoint_every", "log_every",
                                                          "descriptions", "snap_to_known",  # Table 7's prompts
                                                          "generate_prompt", "image_shots", "image_align",  # Fig. 6a
                                                          "snapshot_steps", "at_step"}  # EMA snapshots (Fig. 4b)
    assert set(get_method("cond-pdiff").generate_options()) == {"sampler", "sample_steps", "n_candidates", "select",
                                                                "select_shots", "generate_batch", "log_every",
                                                                "checkpoint_every"}
    assert get_method("classifier-selection").generate_options() == ("rule",)
    assert get_method("retrieval").generate_options() == ("top_k",)
    assert get_method("taper").generate_options() == () and get_method("generic").generate_options() == ()

# ----------------------------------------------------------------------------- nndiff check-config and main()


def _write(tmp_path, cfg, name="bad.yaml") -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(cfg))
    return path


def test_cli_check_config_one_line_and_traceback_only_with_v(smoke, tmp_path, caplog):
    from benchmarks.cli import main
    cfg = copy.deepcopy(smoke)
    cfg["methods"]["tina"]["sampel_steps"] = 5
    path = _write(tmp_path, cfg)
    with caplog.at_level(logging.ERROR, logger="nndiff"):
        assert main(["check-config", str(path)]) == 2
    record = caplog.records[-1]
    assert record.getMessage().startswith(f"{path}: methods.tina: unknown options ['sampel_steps']")
    assert "\n" not in record.getMessage() and not record.exc_info
    caplog.clear()
    with caplog.at_level(logging.ERROR, logger="nndiff"):
        assert main(["-v", "check-config", str(path)]) == 2
    assert caplog.records[-1].exc_info  # -v: the traceback too
    assert main(["check-config", str(SMOKE)]) == 0


def test_cli_errors_print_as_one_line(tmp_path):
    """In a fresh process: broken YAML names the file and line; the message is the last and only error line."""
    broken = tmp_path / "broken.yaml"
    broken.write_text("profile: x\nseed: 0\nmethods:\n  tina: {steps: 5\n")
    proc = subprocess.run([sys.executable, "-m", "benchmarks.cli", "check-config", str(broken)], capture_output=True,
                          text=True, cwd=ROOT, timeout=300)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith(f"nndiff: error: {broken}, line 5, column 1: not valid YAML: while parsing a flow "
                               "mapping (line 4)"), lines[0]


def test_user_errors_and_bugs():
    from benchmarks.cli import _user_error
    assert _user_error(ValueError("bad\nthing")) == "bad thing"
    assert _user_error(FileNotFoundError("no such file: x.pt")) == "no such file: x.pt"
    assert _user_error(KeyError("3 classes have no description: ['a']")) == "3 classes have no description: ['a']"
    assert _user_error(KeyError("theta")) is None  # a failed lookup: a bug, keeps its traceback
    assert _user_error(TypeError("unsupported operand")) is None
    assert _user_error(yaml.YAMLError("x")) == "x"

# ----------------------------------------------------------------------------- a failed fit keeps the last state


@pytest.fixture()
def fit_args(tiny, tmp_path):
    from benchmarks.train import save_zoo
    tiny.images.save(tmp_path / "images.pt")
    tiny.generic.save(tmp_path / "generic.pt")
    save_zoo(tiny.zoo_record, tmp_path / "zoo.pt")
    workdir = tmp_path / "cs" / "state"
    return workdir, ["fit", "--method", "classifier-selection", "--options", '{"rule": "slice"}', "--images",
                     str(tmp_path / "images.pt"), "--generic", str(tmp_path / "generic.pt"), "--zoo",
                     str(tmp_path / "zoo.pt"), "--workdir", str(workdir), "--device", "cpu", "--out",
                     str(tmp_path / "cs" / "fit.json")]


def test_failed_fit_leaves_the_last_complete_state(fit_args, monkeypatch):
    from benchmarks.cli import main
    from methods.classifier_selection import ClassifierSelection
    workdir, args = fit_args
    fit_json = workdir.parent / "fit.json"
    assert main(args) == 0
    state, marker = (workdir / "state.pt").read_bytes(), fit_json.read_bytes()
    assert not workdir.with_name("state.partial").exists()

    def half_then_fail(self, bench, workdir):
        self.save_state(theta=bench.zoo.theta[0] * 0)  # a state that is no result
        raise ValueError("fit failed half-way")

    monkeypatch.setattr(ClassifierSelection, "fit", half_then_fail)
    assert main(args) == 2
    assert (workdir / "state.pt").read_bytes() == state and fit_json.read_bytes() == marker
    assert workdir.with_name("state.partial").is_dir()  # kept: a resume checkpoint in it serves the next try

    seen = []

    def already_fitted(self, bench, workdir):  # e.g. Tina: it finds the complete state with its options, returns
        seen.append((Path(workdir) / "state.pt").exists())

    monkeypatch.setattr(ClassifierSelection, "fit", already_fitted)
    (workdir.with_name("state.partial") / "state.pt").unlink()  # as a fit that failed before saving anything
    assert main(args) == 0 and seen == [True]
    assert (workdir / "state.pt").read_bytes() == state
    assert sorted(p.name for p in workdir.parent.iterdir()) == ["fit.json", "fit.json.timing.json", "state"]

# ----------------------------------------------------------------------------- snakemake


@pytest.mark.slow
def test_snakemake_dry_run_rejects_an_option_typo(tmp_path):
    cfg = yaml.safe_load(SMOKE.read_text())
    cfg["methods"]["tina"]["sampel_steps"] = 5
    path = _write(tmp_path, cfg, "typo.yaml")
    bin_dir = Path(sys.executable).parent
    out = subprocess.run([str(bin_dir / "snakemake"), "-s", str(ROOT / "Snakefile"), "-n", "--cores", "1",
                          "results/smoke/table1.md", "--configfile", str(path), "--directory", str(tmp_path)],
                         cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert out.returncode != 0
    assert "methods.tina: unknown options ['sampel_steps']" in out.stdout + out.stderr


def test_a_dataset_builds_only_its_own_archs(smoke):
    """`datasets.<name>.archs` leaves a costly arch off one dataset: its Table 1 results are not asked for, and
    an arch placed by its own section (a scaling arch) is kept as asked."""
    from benchmarks import workflow as wf
    cfg = copy.deepcopy(smoke)
    cfg["datasets"]["other"] = {"kind": "synthetic", "archs": ["cnn-5k"]}
    assert wf.places(cfg) == [("synthetic", "cnn-5k"), ("synthetic", "cnn-5k-lora"), ("other", "cnn-5k")]
    results = wf.results(cfg, methods=["oracle"], splits=["ood"])
    assert "data/other/cnn-5k/results/oracle/ood.csv" in results
    assert not any(r.startswith("data/other/cnn-5k-lora/") for r in results)
    assert wf.places(cfg, ["other"], ["cnn-14k"]) == [("other", "cnn-14k")]
    check_config(cfg)
