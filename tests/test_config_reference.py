"""config/README.md, where the Snakemake workflow catalog looks: every config and every key described."""

from __future__ import annotations

import yaml

from conftest import REPO
from featscale.config_reference import README, config_readme, schema_keys, shipped_configs

REGENERATE = "PYTHONPATH=workflow python -m featscale.config_reference"


def test_config_readme_is_what_the_schema_and_the_configs_generate():
    assert README == REPO / "config" / "README.md"
    assert README.read_text() == config_readme(), f"config/README.md is stale: run `{REGENERATE}`"


def test_every_key_of_the_schema_is_described_with_its_default():
    text = README.read_text()
    schema = yaml.safe_load((REPO / "workflow" / "schemas" / "config.schema.yaml").read_text())
    keys = dict(schema_keys())
    # the schema's own nesting, walked here again: every key, SAE spec keys as saes.<name>.<key>
    expected = set()
    for top, sub in schema["properties"].items():
        expected.add(top)
        for key, inner in sub.get("properties", {}).items():
            expected.add(f"{top}.{key}")
            expected |= {f"{top}.{key}.{deeper}" for deeper in inner.get("properties", {})}
        spec = sub.get("additionalProperties")
        if isinstance(spec, dict):  # saes: any number of named specs
            for key, inner in spec.get("properties", {}).items():
                expected.add(f"{top}.<name>.{key}")
                expected |= {f"{top}.<name>.{key}.{deeper}" for deeper in inner.get("properties", {})}
    assert set(keys) == expected
    for key, sub in keys.items():
        row = next((line for line in text.splitlines() if line.startswith(f"| `{key}` |")), None)
        assert row is not None, f"{key} is not described in config/README.md"
        if sub.get("description"):
            assert " ".join(sub["description"].split())[:40].replace("<", "&lt;") in row, key


def test_every_shipped_config_is_described():
    text = README.read_text()
    configs = {path.relative_to(REPO).as_posix() for path in shipped_configs()}
    assert configs == {"config.yaml"} | {p.relative_to(REPO).as_posix() for p in (REPO / "workflow" / "configs").glob("*.yaml")}
    for name in configs:
        run = yaml.safe_load((REPO / name).read_text())["run"]
        assert f"### `{name}`: run `{run}`" in text, name
