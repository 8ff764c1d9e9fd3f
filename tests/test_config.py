import dataclasses

import pytest
import yaml

from benchmarks.config import (PROFILES, FinetuneConfig, Stage1Config, load_config, load_schema, method_specs,
                               stage_config, validate_config)
from benchmarks.tasks import TasksConfig


@pytest.mark.parametrize("profile", PROFILES)
def test_profiles_validate(profile):
    cfg = load_config(profile)
    assert cfg["profile"] == profile
    # every section builds its dataclass
    stage_config(Stage1Config, cfg["stage1"])
    stage_config(FinetuneConfig, {k: v for k, v in cfg["finetune"].items() if k != "archs"})
    for override in cfg["finetune"].get("archs", {}).values():  # per-arch recipes (the workflow's map)
        stage_config(FinetuneConfig, override)
    stage_config(TasksConfig, cfg["tasks"])


@pytest.mark.parametrize("section,cls", [("stage1", Stage1Config), ("finetune", FinetuneConfig),
                                         ("tasks", TasksConfig)])
def test_schema_keys_equal_dataclass_fields(section, cls):
    schema_keys = set(load_schema()["properties"][section]["properties"]) - {"archs"}  # per-arch map: workflow's
    assert schema_keys == {f.name for f in dataclasses.fields(cls)}


def test_typo_is_rejected_with_its_path():
    cfg = load_config("smoke")
    cfg["finetune"]["epoch"] = 3
    with pytest.raises(ValueError, match="finetune"):
        validate_config(cfg)


def test_wrong_type_and_unknown_arch_rejected():
    cfg = load_config("smoke")
    cfg["stage1"]["lr"] = "fast"
    with pytest.raises(ValueError, match="stage1/lr"):
        validate_config(cfg)
    cfg = load_config("smoke")
    cfg["archs"] = ["vgg"]
    with pytest.raises(ValueError, match="archs"):
        validate_config(cfg)


def test_unknown_profile_lists_profiles():
    with pytest.raises(ValueError, match="smoke"):
        load_config("tiny")


def test_stage_config_unknown_key_lists_valid():
    with pytest.raises(ValueError, match="epochs"):
        stage_config(Stage1Config, {"epohcs": 1})


def test_method_specs_label_and_registry_name():
    specs = {s.label: s for s in method_specs(load_config("smoke"))}
    assert specs["classifier-selection-slice"].method == "classifier-selection"
    assert specs["classifier-selection-slice"].options == {"rule": "slice"}


def test_cli_check_config(tmp_path):
    from benchmarks.cli import main
    bad = yaml.safe_load(open(load_config.__globals__["CONFIG_DIR"] / "smoke.yaml"))
    bad["seed"] = -1
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(bad))
    assert main(["check-config", str(path)]) == 2
    assert main(["check-config", "smoke"]) == 0
