"""One contract between the harness and its methods, checked on the source (ast, nothing imported to check it).

- A module under methods/ reaches the harness (`benchmarks`) only through the public API (`methods.base`,
  which re-exports `methods.api`); it never imports another method's module or anyone's private names.
- A module under benchmarks/ reaches methods only through `methods.base` / `methods.api` (types, capability
  protocols) and `methods.registry` (get_method, build_method), never a concrete method module.
"""
from __future__ import annotations

import ast
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
API = {"methods.base", "methods.api"}  # the method's public API: the one door into the harness
HARNESS_MAY_IMPORT = API | {"methods", "methods.registry"}


def method_modules() -> set[str]:
    """Modules that hold a registered method (the entry points of pyproject.toml), e.g. methods.tina."""
    eps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["entry-points"]["nndiff.methods"]
    return {target.split(":")[0] for target in eps.values()}


def imports(source: str, module: str) -> list[tuple[int, str, list[str]]]:
    """Every import of `source`, nested ones too (lazy imports inside functions count): (line, absolute module
    imported from, names). `from package import sub` also yields (line, "package.sub", []) for each name, since
    it may be a module; `importlib.import_module("x")` / `__import__("x")` with a literal count as importing x."""
    out = []
    package = module.rsplit(".", 1)[0]
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            out += [(node.lineno, alias.name, []) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: from .x import y inside package `methods`
                parts = package.split(".")
                base = ".".join(parts[:len(parts) - node.level + 1] + ([base] if base else []))
            names = [alias.name for alias in node.names]
            out.append((node.lineno, base, names))
            if (ROOT / base.replace(".", "/")).is_dir():  # from a package: the names may be its modules
                out += [(node.lineno, f"{base}.{name}", []) for name in names if name != "*"]
        elif (isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant)
              and isinstance(node.args[0].value, str)
              and (getattr(node.func, "attr", None) == "import_module" or getattr(node.func, "id", None) in
                   ("import_module", "__import__"))):
            out.append((node.lineno, node.args[0].value, []))
    return out


def _within(name: str, package: str) -> bool:
    return name == package or name.startswith(package + ".")


def _private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def method_side_problems(source: str, module: str, methods: set[str]) -> list[str]:
    """What a module under methods/ imports that the layering forbids."""
    problems = []
    for line, target, names in imports(source, module):
        if _within(target, "benchmarks") and module not in API:
            problems.append(f"{module}:{line} imports {target} (reach the harness through methods.base)")
        if _within(target, "methods") and target not in (module, "methods"):
            owner = next((m for m in methods if _within(target, m)), None)
            if owner is not None and owner != module:
                problems.append(f"{module}:{line} imports {target}, another method's module (share code through "
                                "the API or a helper module)")
            private = [n for n in names if _private(n)]
            if private:
                problems.append(f"{module}:{line} imports private names {private} from {target}")
    return problems


def harness_side_problems(source: str, module: str) -> list[str]:
    """What a module under benchmarks/ imports from methods/ beyond the API and the registry."""
    return [f"{module}:{line} imports {target} (use methods.registry and the protocols of methods.base)"
            for line, target, _ in imports(source, module)
            if _within(target, "methods") and target not in HARNESS_MAY_IMPORT]


def modules(folder: str) -> list[tuple[str, Path]]:
    return [(".".join(p.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__"), p)
            for p in sorted((ROOT / folder).rglob("*.py"))]


@pytest.mark.parametrize("module,path", modules("methods"), ids=lambda x: str(x))
def test_methods_reach_the_harness_only_through_the_api(module, path):
    assert method_side_problems(path.read_text(), module, method_modules()) == []


@pytest.mark.parametrize("module,path", modules("benchmarks"), ids=lambda x: str(x))
def test_harness_reaches_methods_only_through_registry_and_api(module, path):
    assert harness_side_problems(path.read_text(), module) == []


def test_the_checks_catch_each_kind_of_violation():
    methods = {"methods.tina", "methods.cond_pdiff"}
    lazy = "def f():\n    from benchmarks.evaluate import evaluate\n"
    assert method_side_problems(lazy, "methods.tina", methods)  # a lazy import counts
    assert method_side_problems("import benchmarks.train\n", "methods.taper", methods)
    assert method_side_problems("from benchmarks import artifacts\n", "methods.taper", methods)
    assert method_side_problems("import importlib\nimportlib.import_module('benchmarks.train')\n", "methods.taper",
                                methods)
    assert method_side_problems("from methods.tina import Tina\n", "methods.cond_pdiff", methods)
    assert method_side_problems("from .tina import Tina\n", "methods.cond_pdiff", methods)
    assert method_side_problems("from methods import tina\n", "methods.cond_pdiff", methods)
    assert method_side_problems("from methods.matching import _helper\n", "methods.taper", methods)
    assert not method_side_problems("from methods.base import derive_seed, select_best\n"
                                    "from methods.matching import rank_tasks\nfrom methods.tina_net import TinaNet\n",
                                    "methods.tina", methods)
    assert not method_side_problems("from benchmarks.train import derive_seed\n", "methods.api", methods)
    assert harness_side_problems("from methods.tina import Tina\n", "benchmarks.text2model")
    assert harness_side_problems("def f():\n    from methods.cond_pdiff import CondPDiff\n", "benchmarks.glue")
    assert harness_side_problems("from methods.diffusion import DiffusionConfig\n", "benchmarks.text2model")
    assert harness_side_problems("from methods import tina\n", "benchmarks.cli")
    assert not harness_side_problems("from methods.base import Bench, Reconstructs\n"
                                     "from methods.registry import build_method\n", "benchmarks.cli")


def test_base_re_exports_the_whole_api_and_methods_declare_their_capabilities():
    import methods.api
    import methods.base
    from methods.base import Candidates, Promptable, Reconstructs
    from methods.registry import get_method
    assert set(methods.api.__all__) <= set(methods.base.__all__)
    assert all(getattr(methods.base, name) is getattr(methods.api, name) for name in methods.api.__all__)
    assert {"Bench", "Method", "Tasks", "Zoo", "option"} <= set(methods.base.__all__)
    assert issubclass(get_method("tina"), Promptable)
    assert issubclass(get_method("cond-pdiff"), Candidates) and issubclass(get_method("cond-pdiff"), Reconstructs)
    assert not issubclass(get_method("classifier-selection"), (Candidates, Reconstructs, Promptable))
