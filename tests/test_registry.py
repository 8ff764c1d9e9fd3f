import subprocess
import sys

import pytest

from methods.base import Method
from methods.registry import available, get_method
from tests.plugin_fixture import install_plugin


def test_in_repo_methods_registered_by_entry_point():
    names = available()
    assert {"generic", "classifier-selection"} <= set(names)
    assert issubclass(get_method("generic"), Method)


def test_unknown_method_lists_registered_ones():
    with pytest.raises(ValueError) as err:
        get_method("tina-v9")
    assert "classifier-selection" in str(err.value) and "nndiff.methods" in str(err.value)


def test_third_party_plugin_found_through_entry_point(tmp_path):
    site = install_plugin(tmp_path / "site")
    code = ("from methods.registry import get_method; cls = get_method('zoo-average'); "
            "print(cls.name, cls.__module__)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env={"PYTHONPATH": str(site), "PATH": ""}, check=True)
    assert out.stdout.split() == ["zoo-average", "toy_plugin"]


def test_cli_lists_methods(capsys):
    from benchmarks.cli import main
    assert main(["methods"]) == 0
    assert "classifier-selection" in capsys.readouterr().out
