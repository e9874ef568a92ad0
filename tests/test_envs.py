"""Each rule's script imports only what its conda environment (envs/*.yaml) lists.

Two checks per rule: statically, every import anywhere in the script and in the featscale modules
it reaches (function-level imports included, `if TYPE_CHECKING:` blocks excluded) is the standard
library, featscale, or a package of the rule's environment; and at run time, the script's
featscale imports succeed in a fresh interpreter where every other known package is hidden
(an import finder that refuses them), as `--sdm conda` would have it.
"""

from __future__ import annotations

import ast
import json
import re
import subprocess
import sys
from collections.abc import Iterable, Mapping
from pathlib import Path

import pytest
import yaml

from conftest import REPO

PACKAGE = REPO / "workflow" / "featscale"
RULES = REPO / "workflow" / "rules"
# conda-forge package -> the name Python imports it by (None: not a Python import)
IMPORT_NAMES = {
    "python": None, "pip": None, "numpy": "numpy", "scipy": "scipy", "pandas": "pandas", "pyarrow": "pyarrow",
    "zarr": "zarr", "matplotlib": "matplotlib", "seaborn": "seaborn", "pyyaml": "yaml", "tqdm": "tqdm",
    "datasets": "datasets", "tokenizers": "tokenizers", "einops": "einops", "safetensors": "safetensors",
    "pytorch": "torch",
}
KNOWN = {name for name in IMPORT_NAMES.values() if name} | {"transformers", "transformer_lens", "sae_lens", "xarray", "snakemake"}


def env_imports(env: Path) -> set[str]:
    """The import names of the packages an environment file lists (version pins stripped)."""
    names = set()
    for dependency in yaml.safe_load(env.read_text())["dependencies"]:
        if isinstance(dependency, str):
            package = re.split(r"[=<>!\s]", dependency, maxsplit=1)[0]
            if package not in IMPORT_NAMES:
                raise AssertionError(f"{env.name} lists {package}, which IMPORT_NAMES does not know: add it")
            if IMPORT_NAMES[package]:
                names.add(IMPORT_NAMES[package])
    return names


def rule_scripts() -> dict[str, tuple[Path, Path]]:
    """rule -> (script, environment file) for every rule that declares both."""
    found = {}
    for smk in sorted(RULES.glob("*.smk")):
        for block in re.split(r"\n(?=rule |use rule )", smk.read_text()):
            name = re.match(r"(?:rule (\w+)|use rule \w+ as (\w+))", block)
            conda = re.search(r"conda:\s*\n\s*\"([^\"]+)\"", block)
            script = re.search(r"script:\s*\n\s*\"([^\"]+)\"", block)
            if name and conda and script:
                found[name[1] or name[2]] = ((smk.parent / script[1]).resolve(), (smk.parent / conda[1]).resolve())
    return found


def _imports(path: Path) -> Iterable[tuple[str, tuple[str, ...]]]:
    """(module, imported names) of every import statement, outside `if TYPE_CHECKING:` blocks, and
    the module a rule script's `run_rule(snakemake, "module:function")` imports by name."""
    text = path.read_text()
    for module in re.findall(r"run_rule\(snakemake, \"([\w.]+):\w+\"\)", text):
        yield module, ()
    tree = ast.parse(text)
    skipped = {id(node) for block in ast.walk(tree) if isinstance(block, ast.If)
               and "TYPE_CHECKING" in ast.unparse(block.test) for node in ast.walk(block)}
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, ()
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            yield node.module, tuple(alias.name for alias in node.names)


def _module_file(module: str) -> Path | None:
    parts = module.split(".")[1:]
    folder = PACKAGE.joinpath(*parts)
    if (folder / "__init__.py").exists():
        return folder / "__init__.py"
    file = PACKAGE.joinpath(*parts[:-1], f"{parts[-1]}.py") if parts else None
    return file if file is not None and file.exists() else None


def closure(script: Path) -> tuple[set[str], set[str]]:
    """(featscale modules, third-party top-level packages) that `script` reaches by its imports."""
    modules, third_party, todo = set(), set(), [script]
    seen_files = set()
    while todo:
        path = todo.pop()
        if path in seen_files:
            continue
        seen_files.add(path)
        for module, imported in _imports(path):
            top = module.split(".")[0]
            if top == "featscale":
                candidates = [module] + [f"{module}.{name}" for name in imported]
                # a module's parent packages run their __init__ first
                parts = module.split(".")
                candidates += [".".join(parts[:i]) for i in range(1, len(parts))]
                for candidate in candidates:
                    file = _module_file(candidate)
                    if file is not None:
                        modules.add(candidate)
                        todo.append(file)
            elif top not in sys.stdlib_module_names and top != "__future__":
                third_party.add(top)
    return modules, third_party


def violations(scripts: Mapping[str, tuple[Path, Path]], envs: Mapping[Path, set[str]]) -> list[str]:
    """What each rule's script imports that its environment does not list."""
    problems = []
    for rule, (script, env) in sorted(scripts.items()):
        _, third_party = closure(script)
        for package in sorted(third_party - envs[env]):
            problems.append(f"rule {rule} ({script.name}) imports {package}, which {env.name} does not list")
    return problems


SCRIPTS = rule_scripts()
ENVS = {env: env_imports(env) for env in sorted({env for _, env in SCRIPTS.values()})}


def test_every_rule_with_a_script_has_an_environment_and_the_envs_are_the_three():
    assert len(SCRIPTS) >= 14 and {env.name for env in ENVS} == {"data.yaml", "torch.yaml", "analysis.yaml"}
    scripted = {path.name for path in (REPO / "workflow" / "scripts").glob("*.py")}
    assert {script.name for script, _ in SCRIPTS.values()} == scripted


def test_every_script_imports_only_what_its_environment_lists():
    assert violations(SCRIPTS, ENVS) == []


def test_the_check_fails_when_an_environment_loses_a_package_its_rules_use():
    analysis = next(env for env in ENVS if env.name == "analysis.yaml")
    torch_env = next(env for env in ENVS if env.name == "torch.yaml")
    for env, package, rule in ((analysis, "scipy", "correlate"), (torch_env, "torch", "train_model"),
                               (analysis, "safetensors", "universality")):
        reduced = dict(ENVS) | {env: ENVS[env] - {package}}
        found = violations(SCRIPTS, reduced)
        assert any(f"rule {rule} " in line and f"imports {package}," in line for line in found), found


def test_the_analysis_environment_needs_no_torch():
    for rule, (script, env) in SCRIPTS.items():
        if env.name in ("analysis.yaml", "data.yaml"):
            assert "torch" not in closure(script)[1], rule


RUNNER = """
import importlib, json, sys
hidden, modules = set(json.loads(sys.argv[1])), json.loads(sys.argv[2])

class Hidden:  # importing a hidden package fails, as in an environment without it
    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in hidden:
            raise ModuleNotFoundError(f"No module named {name!r} (not in this rule's environment)")

sys.meta_path.insert(0, Hidden())
for module in modules:
    importlib.import_module(module)
"""


@pytest.mark.parametrize("rule", sorted(SCRIPTS))
def test_each_scripts_modules_import_with_the_other_packages_hidden(rule):
    script, env = SCRIPTS[rule]
    modules, _ = closure(script)
    hidden = sorted(KNOWN - ENVS[env])
    done = subprocess.run([sys.executable, "-c", RUNNER, json.dumps(hidden), json.dumps(sorted(modules))],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, f"{rule} in {env.name} with {hidden} hidden:\n{done.stderr[-2000:]}"


def test_the_environments_pin_the_versions_ci_installs():
    from importlib.metadata import version

    lines = (REPO / "envs" / "pins.txt").read_text().splitlines()
    pins = dict(line.split("==") for line in lines if line and not line.startswith("#"))
    for env in ENVS:
        for dependency in yaml.safe_load(env.read_text())["dependencies"]:
            package, _, pinned = dependency.partition("=")
            if IMPORT_NAMES.get(package) is None:
                continue
            distribution = {"pytorch": "torch", "pyyaml": "PyYAML"}.get(package, package)
            assert pinned, f"{env.name}: {package} is not pinned"
            assert pins.get(distribution) == pinned, f"{env.name}: {package}={pinned}, envs/pins.txt: {pins.get(distribution)}"
            installed = version(distribution).split("+")[0]
            assert installed == pinned, f"{env.name}: {package}={pinned}, but this environment has {installed}"
