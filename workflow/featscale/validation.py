"""The config as the workflow reads it before any job runs (workflow/rules/common.smk).

Merged config -> SAE specs' `extends` resolved -> the schema, with its defaults filled in ->
the typed settings -> the cross-key checks of featscale.config -> the device. Each stage reports
all its problems at once, one ConfigError line each, naming the key, the value and the fix.

Only the Snakefile imports this module: jsonschema, and torch for the device, belong to the
environment Snakemake runs in, not to the jobs' (tests/test_envs.py).

Snakemake reads --configfile files itself before the workflow starts, and says only "Config file
is not valid JSON or YAML" about one it cannot parse; `python -m featscale.validation FILE...`
checks config files as `snakemake --configfile FILE...` would, naming the file and the line.
"""

from __future__ import annotations

import copy
import functools
import os
import sys
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

import jsonschema

from featscale.config import (
    SCHEMA_PATH,
    ConfigError,
    Settings,
    check_config,
    describe_schema_error,
    read_config_file,
    resolve_extends,
    schema,
)
from featscale.execution.gpus import cuda_usable

# set to 1 to skip the check that `training.device: cuda` has a GPU here (README, "Validation")
SKIP_DEVICE_CHECK = "FEATSCALE_SKIP_DEVICE_CHECK"


def settings_from_config(
    config: dict[str, Any],
    configfiles: Iterable[str | Path] = (),
    command_line: Mapping[str, Any] | None = None,
    *,
    local: bool = False,
) -> Settings:
    """What the workflow does with the merged config before any job runs (workflow/rules/common.smk):
    resolve SAE specs' `extends`, check the config against the schema and fill in its defaults (in
    place), build the typed settings and run every cross-key check (`check_config`). `local`: the
    jobs run on this machine, so `training.device: cuda` needs a GPU here (a cluster's login node
    may have none while its compute nodes do: there the jobs check it).
    """
    validate_config(copy.deepcopy(config))  # as written: a mistake is named where it is, not in each spec extending it
    resolve_extends(config)
    validate_config(config)
    settings = Settings.from_config(config)
    problems = []
    try:
        check_config(settings, configfiles, command_line)
    except ConfigError as error:
        problems.append(str(error))
    if local:
        problems.extend(_check_device(settings))
    if problems:
        raise ConfigError("\n".join(problems))
    return settings


def validate_config(config: dict[str, Any]) -> None:
    """Fill in the schema's defaults (in place) and raise ConfigError listing every way `config` breaks
    the schema, one line each, all at once.

    Stricter than JSON Schema in one point: an integer key must hold an integer, not a float of
    integer value (JSON Schema counts 16.0 as an integer; the workflow would name a model `w16.0`).
    """
    errors = _validator()(schema()).iter_errors(config)
    problems = list(dict.fromkeys(describe_schema_error(error) for error in errors))
    if problems:
        raise ConfigError("\n".join(problems))


@functools.cache
def _validator() -> type:
    """The schema's JSON Schema validator with strict integers, filling in defaults as it validates."""
    base = jsonschema.validators.validator_for(schema())
    integers = base.TYPE_CHECKER.redefine(
        "integer", lambda checker, value: isinstance(value, int) and not isinstance(value, bool)
    )
    check_properties = base.VALIDATORS["properties"]

    def fill_defaults(validator: Any, properties: Mapping[str, Any], instance: Any, node: Any) -> Iterator[Any]:
        if isinstance(instance, dict):
            for name, sub in properties.items():
                if "default" in sub:
                    instance.setdefault(name, copy.deepcopy(sub["default"]))
        yield from check_properties(validator, properties, instance, node)

    return jsonschema.validators.extend(base, {"properties": fill_defaults}, type_checker=integers)


def _check_device(settings: Settings) -> Iterator[str]:
    if settings.training.device == "cuda" and not os.environ.get(SKIP_DEVICE_CHECK):
        usable, why = cuda_usable()
        if not usable:
            yield (
                f"config key `training.device` = 'cuda' but this machine cannot run a job on a GPU ({why}): set "
                f"`training.device: auto` (a GPU where there is one, else the CPU) or `cpu`, or run where a GPU is; "
                f"jobs sent to a cluster (--executor slurm) are not checked here, and {SKIP_DEVICE_CHECK}=1 skips it."
            )


def check_files(configfiles: Iterable[str | Path], *, local: bool = True) -> Settings:
    """The settings of `snakemake --configfile FILES...` (the files merged over the paper's config.yaml
    in order, as Snakemake merges them), or ConfigError naming every problem, a YAML mistake by file
    and line."""
    configfiles = list(configfiles)
    config = read_config_file(SCHEMA_PATH.parents[2] / "config.yaml")
    for path in configfiles:
        _merge(config, read_config_file(path))
    return settings_from_config(config, configfiles, local=local)


def _merge(base: dict[str, Any], update: Mapping[str, Any]) -> None:
    """Snakemake's update_config: mappings merged key by key, anything else replaced."""
    for key, value in update.items():
        if isinstance(value, Mapping) and isinstance(base.get(key), dict):
            _merge(base[key], value)
        else:
            base[key] = copy.deepcopy(value)


if __name__ == "__main__":
    try:
        settings = check_files(sys.argv[1:])
    except ConfigError as error:
        sys.exit(f"ConfigError:\n{error}")
    print(f"config of run {settings.run!r}: no problem found")
