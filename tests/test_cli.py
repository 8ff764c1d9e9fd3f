"""`nndiff` stays a thin parser: each `cmd_<stage>` unpacks its flags and calls one function of its stage's module
(benchmarks/<stage>.py), so the work can be tested and reused without the CLI. Checked on the source (ast)."""
from __future__ import annotations

import argparse
import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CLI = ROOT / "benchmarks" / "cli.py"
MAX_STATEMENTS = 4  # e.g. one call, or a check, a call and a log line
STARTUP_IMPORTS = {"__future__", "argparse", "json", "logging", "sys", "torch"}  # `nndiff --help` stays fast


def commands() -> dict[str, ast.FunctionDef]:
    tree = ast.parse(CLI.read_text())
    return {f.name: f for f in tree.body if isinstance(f, ast.FunctionDef) and f.name.startswith("cmd_")}


def statements(func: ast.FunctionDef) -> int:
    """Statements of a function body, nested ones too, without imports and the docstring."""
    body = func.body[1:] if ast.get_docstring(func) else func.body
    return sum(1 for top in body for node in ast.walk(top)
               if isinstance(node, ast.stmt) and not isinstance(node, (ast.Import, ast.ImportFrom)))


def test_every_command_is_a_thin_dispatch():
    assert len(commands()) > 20
    fat = {name: statements(f) for name, f in commands().items() if statements(f) > MAX_STATEMENTS}
    assert fat == {}, f"move the work into the stage's module, leave the cmd_ one call: {fat}"


def test_the_cli_imports_stages_lazily():
    tree = ast.parse(CLI.read_text())
    top = {alias.name for node in tree.body if isinstance(node, ast.Import) for alias in node.names}
    top |= {node.module for node in tree.body if isinstance(node, ast.ImportFrom)}
    assert top <= STARTUP_IMPORTS


def subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    return next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices


def test_help_lists_every_subcommand_and_each_has_its_command():
    from benchmarks.cli import build_parser
    parser = build_parser()
    sub, text = subcommands(parser), parser.format_help()
    assert [name for name in sub if name not in text] == []
    assert {p.get_default("func").__name__ for p in sub.values()} == set(commands())  # none unreachable or left over
    for name, p in sub.items():
        assert p.format_help().startswith(f"usage: nndiff {name}")


def test_the_workflow_calls_only_existing_subcommands():
    from benchmarks.cli import build_parser
    sub = subcommands(build_parser())
    rules = [ROOT / "Snakefile", *sorted((ROOT / "benchmarks" / "rules").glob("*.smk"))]
    called = {m for path in rules for m in re.findall(r"\bnndiff ([a-z][a-z0-9-]+)", path.read_text())}
    assert called and called <= set(sub)


def test_finetune_offers_only_flags_of_one_job():
    """`finetune.shards` is the workflow's (how many jobs build a zoo); one job takes --shard/--n-shards."""
    from benchmarks.cli import build_parser
    text = build_parser()._subparsers._group_actions[0].choices["finetune"].format_help()
    assert "--n-shards" in text and "--shards" not in text
