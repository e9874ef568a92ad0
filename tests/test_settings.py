"""Typed settings: they mirror the schema, refuse what it does not know, and carry only what a rule uses."""

from __future__ import annotations

import dataclasses
import typing

import pytest
import yaml

from conftest import CONFIGS, SCHEMA, load_merged, settings_of
from featscale.config import ConfigError, SAESpec, Section, Settings, TrainingSettings, check_config, resolve_extends

SCHEMA_TREE = yaml.safe_load(SCHEMA.read_text())


def sections(cls: type, schema: dict, path: str = "config"):
    """(key path, Section class, schema object) of every section and sub-section."""
    yield path, cls, schema
    hints = {field.name: field.type for field in dataclasses.fields(cls)}
    for name in hints:
        sub = schema["properties"][name]
        child = _section_class(cls, name)
        if child is not None:
            if "additionalProperties" in sub and isinstance(sub["additionalProperties"], dict):
                yield from sections(child, sub["additionalProperties"], f"{path}.{name}.<name>")
            else:
                yield from sections(child, sub, f"{path}.{name}")


def _section_class(cls: type, name: str):
    import typing

    hint = typing.get_type_hints(cls)[name]
    for option in (typing.get_args(hint) or (hint,)) if typing.get_origin(hint) is not None else (hint,):
        candidate = option if isinstance(option, type) else None
        if typing.get_origin(option) is dict:
            candidate = typing.get_args(option)[1]
        if isinstance(candidate, type) and issubclass(candidate, Section):
            return candidate
    return None


def test_every_settings_class_has_exactly_the_keys_of_its_schema_section_typed_as_the_schema_types_them():
    checked = 0
    python = {"integer": int, "number": float, "boolean": bool, "string": str, "array": tuple, "null": type(None),
              "object": dict}
    for path, cls, schema in sections(Settings, SCHEMA_TREE):
        fields = {field.name: field.type for field in dataclasses.fields(cls)}
        keys = set(schema["properties"]) - {"extends"}  # an SAE spec's `extends` is resolved before
        assert set(fields) == keys, f"{path}: {cls.__name__} has {sorted(set(fields) ^ keys)} that the schema has not"
        for key in keys:
            kinds = schema["properties"][key].get("type", "string")
            if kinds == "object":
                continue
            expected = {python[kind] for kind in (kinds if isinstance(kinds, list) else [kinds])}
            typed = set(typing.get_args(fields[key])) or {fields[key]}
            assert typed == expected, f"{path}.{key}: {fields[key]} for JSON {kinds}"
        checked += 1
    assert checked >= 12


@pytest.mark.parametrize("name", CONFIGS)
def test_settings_round_trip_through_plain_data(name):
    settings = settings_of(name)
    assert Settings.from_dict(settings.to_dict()) == settings
    assert isinstance(settings.saes["main"], SAESpec) and isinstance(settings.models.widths, tuple)


def test_a_renamed_or_missing_key_is_refused_where_the_section_is_built():
    training = settings_of("tiny").training.to_dict()
    with pytest.raises(ConfigError, match=r"unknown keys \['learning_rate'\] and lacks \['lr'\]"):
        TrainingSettings.from_dict({"learning_rate" if key == "lr" else key: value for key, value in training.items()})


def test_settings_are_frozen():
    with pytest.raises(dataclasses.FrozenInstanceError):
        settings_of("tiny").training.lr = 1.0


def changed(name: str, **keys) -> Settings:
    """The shipped config `name` with dotted `keys` (models__context=16) changed."""
    config = load_merged(name)
    for dotted, value in keys.items():
        *parents, last = dotted.split("__")
        node = config
        for parent in parents:
            node = node.setdefault(parent, {})
        node[last] = value
    return settings_of(config)


def test_editing_an_unused_source_or_a_plotting_key_leaves_upstream_params_alone():
    base, edited = settings_of("demo"), changed("demo", data__hub__path="other/dataset", analysis__confidence=0.9)
    assert base.data.corpus().to_dict() == edited.data.corpus().to_dict()  # train_tokenizer's params
    assert base.data.store().to_dict() == edited.data.store().to_dict()  # tokenize_corpus's
    assert base.training.to_dict() == edited.training.to_dict() and base.saes == edited.saes
    assert base.report().to_dict() != edited.report().to_dict()  # the report states the confidence


def test_the_report_depends_on_what_it_states_and_not_on_the_rest_of_the_config():
    base = settings_of("tiny").report().to_dict()
    assert changed("tiny", training__lr=0.01, correlation__workers=1, correlation__token_chunk=512,
                   feature_budget__random_draws=5).report().to_dict() == base
    assert changed("tiny", correlation__min_count=4).report().to_dict() != base


def test_an_sae_spec_extends_another_and_overrides_only_what_it_sets():
    config = load_merged("demo")
    config["saes"]["small"] = {"extends": "main", "n_latents": 512}
    config["sae_specs"] = ["main", "small"]
    settings = settings_of(config)
    small, main = settings.saes["small"].to_dict(), settings.saes["main"].to_dict()
    assert {key for key in small if small[key] != main[key]} == {"n_latents"}
    for broken, message in (({"extends": "nope"}, "names no spec"), ({"extends": "loop"}, "makes a cycle")):
        config = {"saes": {"main": {}, "loop": broken}}
        with pytest.raises(ConfigError, match=message):
            resolve_extends(config)


def test_the_sae_size_sweep_leaves_the_demos_main_spec_as_the_demo_sets_it():
    demo = settings_of("demo")
    config = load_merged("demo")
    sweep = yaml.safe_load((CONFIGS["demo"].parent / "demo-sae-sweep.yaml").read_text())
    config["saes"].update(sweep["saes"])
    config["sae_specs"] = sweep["sae_specs"]
    swept = settings_of(config)
    assert swept.saes["main"] == demo.saes["main"]
    assert swept.saes["latents2048"] == dataclasses.replace(demo.saes["main"], n_latents=2048)


def test_features_that_include_position_0_need_an_sae_trained_on_it():
    with pytest.raises(ConfigError, match="`features.include_position_0` is true but `saes.main.train_on_position_0` is false"):
        check_config(changed("tiny", features__include_position_0=True))
    check_config(changed("tiny", features__include_position_0=True, saes__main__train_on_position_0=True))
    check_config(changed("tiny", saes__main__train_on_position_0=True))  # trained on it, not stored: allowed


def test_a_run_studies_the_specs_it_names_and_a_layer_cannot_inherit_the_papers_by_accident(tmp_path):
    paper = settings_of("paper")
    assert list(paper.saes) == ["main", "authors", "topk"] and list(settings_of("demo").saes) == ["main"]
    # the authors' spec is main's, with each of their differences
    authors, main = paper.saes["authors"], paper.saes["main"]
    assert (authors.decoder_init, authors.decoder_init_norm, authors.bias_init) == ("positive_uniform", 0.1, "zeros")
    assert authors.gated_aux_trains_decoder and authors.train_on_position_0 and not authors.model_autocast
    assert authors.fold_decoder_norm == "saelens_4_1_1" and paper.features_for("authors").split == "train"
    assert (authors.n_latents, authors.l1_coefficient, authors.lr) == (main.n_latents, main.l1_coefficient, main.lr)
    config = load_merged("tiny")
    config["sae_specs"] = ["main", "nope"]
    with pytest.raises(ConfigError, match="`sae_specs` = \\['main', 'nope'\\] names 'nope'"):
        settings_of(config)
    # a layer over config.yaml with specs of its own but no sae_specs would also run the paper's
    layer = tmp_path / "mine.yaml"
    layer.write_text(yaml.safe_dump({"run": "mine", "saes": {"small": {"n_latents": 64}}}))
    merged = load_merged("paper")
    merged["saes"]["small"] = {"n_latents": 64}
    with pytest.raises(ConfigError, match="'main', 'authors', 'topk' would run with the paper's settings"):
        check_config(settings_of(merged), configfiles=[layer])
