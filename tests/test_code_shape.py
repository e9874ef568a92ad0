"""The shape the code keeps: thin rule scripts, short signatures, one package function per rule."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from conftest import REPO

PACKAGE = REPO / "workflow" / "featscale"
SCRIPTS = sorted((REPO / "workflow" / "scripts").glob("*.py"))
MAX_SCRIPT_LINES = 25
MAX_POSITIONAL = 6
# torch.autograd.Function.apply passes its inputs positionally: forward and backward must take them so
EXEMPT = {"saes/gated.py:_GatedStep.forward", "saes/gated.py:_GatedStep.backward"}


def functions(path: Path):
    """(qualified name, node) of every function and method defined in a module."""
    tree = ast.parse(path.read_text())

    def walk(node, prefix):
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)):
                yield f"{prefix}{child.name}", child
                yield from walk(child, f"{prefix}{child.name}.")
            elif isinstance(child, ast.ClassDef):
                yield from walk(child, f"{prefix}{child.name}.")

    yield from walk(tree, "")


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda path: path.name)
def test_rule_scripts_are_short_translations_into_one_package_call(script):
    lines = script.read_text().splitlines()
    assert len(lines) <= MAX_SCRIPT_LINES, f"{script.name} has {len(lines)} lines"
    tree = ast.parse(script.read_text())
    # no function, class or loop of their own: the logic lives in the package, where tests reach it
    assert not [node for node in ast.walk(tree) if isinstance(node, (ast.FunctionDef, ast.ClassDef, ast.For,
                                                                      ast.While, ast.If))], script.name
    imported = [node for node in tree.body if isinstance(node, ast.ImportFrom)]
    assert all(node.module.startswith("featscale") for node in imported), script.name


def test_no_package_function_takes_more_than_six_positional_parameters():
    crowded = []
    for path in sorted(PACKAGE.rglob("*.py")):
        for name, node in functions(path):
            positional = [a.arg for a in node.args.posonlyargs + node.args.args if a.arg not in ("self", "cls")]
            where = f"{path.relative_to(PACKAGE).as_posix()}:{name}"
            if len(positional) > MAX_POSITIONAL and where not in EXEMPT:
                crowded.append(f"{where} takes {len(positional)}: {', '.join(positional)}")
    assert crowded == []
