"""Shared helpers: run the workflow as a user would, in a temporary working directory."""

from __future__ import annotations

import copy
import dataclasses
import functools
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from featscale.config import DataSettings, Settings, resolve_extends
from featscale.validation import validate_config

REPO = Path(__file__).resolve().parents[1]
SCHEMA = REPO / "workflow" / "schemas" / "config.schema.yaml"
# subprocesses (scripts, `python -c`) import this checkout's package too, as pytest itself does
os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, (str(REPO / "workflow"), os.environ.get("PYTHONPATH"))))
CONFIGS = {
    "paper": REPO / "config.yaml",
    "demo": REPO / "workflow" / "configs" / "demo.yaml",
    "tiny": REPO / "workflow" / "configs" / "tiny.yaml",
    "planted-positive": REPO / "workflow" / "configs" / "planted-positive.yaml",
    "planted-null": REPO / "workflow" / "configs" / "planted-null.yaml",
}


def snakemake(*args: str, cwd: Path, check: bool = True, timeout: int = 900,
              snakefile: Path = REPO / "Snakefile") -> subprocess.CompletedProcess:
    """`snakemake -s <repo>/Snakefile ARGS` in `cwd`, its outputs under cwd/results/ (`snakefile`:
    another entry point, such as the catalog's workflow/Snakefile).

    Targets go first: --configfile and --config take every word after them.
    """
    command = [sys.executable, "-m", "snakemake", "-s", str(snakefile), *args]
    done = subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=timeout)
    if check and done.returncode != 0:
        raise AssertionError(f"{' '.join(command)} failed:\n{done.stdout[-4000:]}\n{done.stderr[-4000:]}")
    return done


def load_merged(name: str) -> dict:
    """A shipped config merged over config.yaml the way --configfile merges it."""
    config = yaml.safe_load(CONFIGS["paper"].read_text())
    if name != "paper":
        _merge(config, yaml.safe_load(CONFIGS[name].read_text()))
    return config


def settings_of(config: dict | str) -> Settings:
    """The typed settings of a config (a shipped config's name, or a merged dict), as the Snakefile
    builds them: SAE specs' `extends` resolved, the schema's defaults filled, validated."""
    config = load_merged(config) if isinstance(config, str) else copy.deepcopy(config)
    resolve_extends(config)
    validate_config(config)
    return Settings.from_config(config)


def tiny(section: str, **changes):
    """One section of the tiny config's settings, with `changes` (a test's own values) applied."""
    return dataclasses.replace(getattr(_tiny_settings(), section), **changes)


def data_of(data: dict) -> DataSettings:
    """The data settings of the tiny config with `data` (a partial `data` section) merged over it."""
    config = load_merged("tiny")
    _merge(config["data"], copy.deepcopy(data))
    return settings_of(config).data


@functools.cache
def _tiny_settings() -> Settings:
    return settings_of("tiny")


def _merge(base: dict, update: dict) -> None:
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            _merge(base[key], value)
        else:
            base[key] = value


@pytest.fixture(scope="session")
def tiny_store(tmp_path_factory) -> Path:
    """The tiny config's token store, built once by the workflow itself."""
    workdir = tmp_path_factory.mktemp("tiny")
    store = workdir / "results" / "tiny" / "data" / "tokens.zarr"
    snakemake(str(store.relative_to(workdir)), "--cores", "2", "--configfile", str(CONFIGS["tiny"]), cwd=workdir)
    return store


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory) -> Path:
    """The whole tiny config, run once by the workflow itself: its working directory."""
    workdir = tmp_path_factory.mktemp("tiny-run")
    snakemake("--cores", "2", "--configfile", str(CONFIGS["tiny"]), cwd=workdir)
    return workdir


def _planted_run(tmp_path_factory, name: str) -> Path:
    workdir = tmp_path_factory.mktemp(name)
    snakemake("--cores", "2", "--configfile", str(CONFIGS[name]), cwd=workdir)
    return workdir / "results" / name


@pytest.fixture(scope="session")
def planted_positive(tmp_path_factory) -> Path:
    """The planted family whose sharing rises with importance, run once by the workflow: its results folder."""
    return _planted_run(tmp_path_factory, "planted-positive")


@pytest.fixture(scope="session")
def planted_null(tmp_path_factory) -> Path:
    """The planted null (sharing independent of importance), run once by the workflow: its results folder."""
    return _planted_run(tmp_path_factory, "planted-null")
