"""A config is checked before anything runs; a bad one is refused with one clear message."""

from __future__ import annotations

import jsonschema
import pytest
import yaml

from conftest import CONFIGS, REPO, load_merged, settings_of, snakemake
from featscale.config import ConfigError, check_config, check_split_sizes, describe_schema_error
from featscale.names import model_name, model_names, parse_model_name

SCHEMA_PATH = REPO / "workflow" / "schemas" / "config.schema.yaml"
SCHEMA = yaml.safe_load(SCHEMA_PATH.read_text())


def _walk(schema, path="config"):
    for key, sub in schema.get("properties", {}).items():
        yield f"{path}.{key}", sub
        yield from _walk(sub, f"{path}.{key}")
    extra = schema.get("additionalProperties")
    if isinstance(extra, dict):
        yield from _walk(extra, f"{path}.<name>")


# keys without a default by design: an SAE spec's `extends` is resolved before defaults are filled
NO_DEFAULT = {"config.saes.<name>.extends"} | {  # a spec's own features: overrides of the run's, no defaults
    f"config.saes.<name>.features.{key}" for key in ("tokens", "split", "include_position_0", "batch_windows")
}


def test_every_schema_key_has_a_default_and_a_description():
    for key, sub in _walk(SCHEMA):
        assert "description" in sub, f"{key} has no description"
        assert "default" in sub or key in NO_DEFAULT, f"{key} has no default"


@pytest.mark.parametrize("name", CONFIGS)
def test_shipped_configs_are_valid(name):
    check_config(settings_of(name))


def test_paper_config_is_the_authors_setup():
    config = load_merged("paper")
    assert config["models"] == {"widths": [128, 256, 512, 768], "n_layers": 8, "head_size": 64, "context": 512}
    main = config["saes"]["main"]
    assert (main["architecture"], main["n_latents"], main["site"], main["layer"], main["l1_coefficient"]) == (
        "gated", 24576, "resid_pre", 6, 2.0,
    )
    assert config["tokenizer"]["kind"] == "gpt2" and config["data"]["source"] == "hub"


def test_model_names_carry_width_and_seed():
    assert model_names([256, 128]) == ["w128", "w256"]
    assert parse_model_name(model_name(256, 1)) == (256, 1)
    assert parse_model_name("w768") == (768, 0)
    with pytest.raises(ValueError):
        parse_model_name("w12x")


def test_all_problems_are_reported_at_once():
    config = load_merged("tiny")
    config["models"]["widths"] = [12]
    config["saes"]["main"]["layer"] = 5
    with pytest.raises(ConfigError) as refused:
        check_config(settings_of(config))
    lines = str(refused.value).splitlines()
    assert len(lines) == 3  # width 12 vs head 8, a single model, layer 5 of 2


def test_schema_errors_name_the_key_and_the_value():
    validator = jsonschema.Draft202012Validator(SCHEMA)
    config = load_merged("tiny")
    config["models"]["n_layers"] = "two"
    message = describe_schema_error(next(validator.iter_errors(config)))
    assert "`models.n_layers`" in message and "'two'" in message and "Number of transformer blocks" in message


def test_split_sizes_are_checked_against_what_the_config_asks():
    check_split_sizes({"train": 100, "val": 50, "analysis": 50}, context=32, evaluation_tokens=50, features_tokens=50)
    with pytest.raises(ConfigError, match=r"analysis split holds 49 tokens but `features.tokens`"):
        check_split_sizes({"train": 100, "val": 50, "analysis": 49}, context=32, evaluation_tokens=50, features_tokens=50)
    with pytest.raises(ConfigError, match=r"train split .* `models.context`"):
        check_split_sizes({"train": 32, "val": 50, "analysis": 50}, context=32, evaluation_tokens=50, features_tokens=50)


BROKEN = {
    "replicate_of_an_untrained_width": (
        {"controls": {"seed_replicates": [64]}},
        "`controls.seed_replicates` has 64, which is not in `models.widths`",
    ),
    "sae_seed_replicate_of_an_untrained_width": (
        {"controls": {"sae_seed_replicates": [64]}},
        "`controls.sae_seed_replicates` has 64, which is not in `models.widths`",
    ),
    "spec_named_like_an_sae_seed_replicate": (
        {"saes": {"main-seed1": {"layer": 1}}, "sae_specs": ["main", "main-seed1"], "controls": {"sae_seed_replicates": [16]}},
        "`saes.main-seed1` is also the name of spec main's SAE-seed replicate",
    ),
    "width_not_divisible_by_head": (
        {"models": {"widths": [16, 20]}},
        "has 20, which is not divisible by `models.head_size` = 8",
    ),
    "hook_layer_beyond_depth": ({"saes": {"main": {"layer": 2}}}, "`saes.main.layer` = 2 but the models have"),
    "k_not_below_latents": (
        {"saes": {"main": {"architecture": "topk", "k": 128}}},
        "`saes.main.k` = 128 is not below `saes.main.n_latents` = 128",
    ),
    "topk_without_k": ({"saes": {"main": {"architecture": "topk"}}}, "`saes.main.k` is not set"),
    "k_on_gated": ({"saes": {"main": {"k": 8}}}, "`saes.main.k` = 8 is set but"),
    "single_model": ({"models": {"widths": [16]}}, "give at least two widths"),
    "fractions_do_not_sum_to_one": ({"data": {"split_fractions": {"train": 0.9}}}, "sums to 1.1"),
    "analysis_cap_below_features": (
        {"data": {"max_tokens": {"analysis": 1000}}},
        "`features.tokens` = 2,048 exceeds `data.max_tokens.analysis` = 1,000",
    ),
    "misspelt_key": ({"models": {"widht": [16, 32]}}, "unknown key(s) 'widht'"),
    "wrong_type": ({"models": {"n_layers": "two"}}, "`models.n_layers` = 'two' is invalid"),
    "unknown_source": ({"data": {"source": "web"}}, "`data.source` = 'web' is invalid"),
    "token_ids_with_bpe": (
        {"data": {"source": "hub", "hub": {"token_field": "input_ids"}}},
        "set `tokenizer.kind: gpt2`",
    ),
    "gpt2_with_other_vocab": ({"tokenizer": {"kind": "gpt2", "vocab_size": 1000}}, "GPT-2's tokenizer has 50257"),
    "missing_corpus_files": (
        {"data": {"source": "files", "files": {"paths": ["no/such/*.txt"]}}},
        "'no/such/*.txt', which matches no file",
    ),
    "run_name_with_slash": ({"run": "../paper"}, "`run` = '../paper' is invalid"),
}


@pytest.mark.parametrize("case", BROKEN)
def test_broken_config_is_refused_by_a_dry_run(case, tmp_path):
    override, expected = BROKEN[case]
    broken = tmp_path / "broken.yaml"
    broken.write_text(yaml.safe_dump({"run": "broken"} | override))
    done = snakemake("-n", "--configfile", str(CONFIGS["tiny"]), str(broken), cwd=tmp_path, check=False)
    assert done.returncode != 0
    output = done.stdout + done.stderr
    assert "ConfigError" in output and expected in output, output[-3000:]
    assert "Failed validating" not in output  # one message, not a schema dump
    assert not (tmp_path / "results").exists()


def test_config_file_without_run_is_refused(tmp_path):
    mine = tmp_path / "mine.yaml"
    mine.write_text(yaml.safe_dump({"models": {"widths": [128, 256]}}))
    done = snakemake("-n", "--configfile", str(mine), cwd=tmp_path, check=False)
    assert done.returncode != 0
    assert "does not set `run`" in done.stderr + done.stdout
    # naming the run on the command line is as good
    done = snakemake("-n", "--configfile", str(mine), "--config", "run=mine", cwd=tmp_path)
    assert "results/mine/" in done.stdout


def test_a_planted_family_is_checked_for_what_it_needs_and_not_for_what_it_lacks():
    config = load_merged("tiny")
    config["models"] |= {"kind": "planted", "widths": [12, 20]}  # no attention heads: any width will do
    config["training"]["eval_tokens"] = 10**9  # nothing is trained: the training keys are not checked
    config["planted"] = {"features": 64, "held": [16, 24]}
    check_config(settings_of(config))
    config["planted"] = {"features": 64, "held": [16, 24, 32, 100], "importance_range": [2.0, 1.0]}
    config["controls"] = {"untrained_null": True}
    with pytest.raises(ConfigError) as refused:
        check_config(settings_of(config))
    lines = str(refused.value).splitlines()
    assert len(lines) == 4, lines
    assert "`planted.held` = [16, 24, 32, 100] has 4 entries but `models.widths` = [12, 20] has 2" in lines[0]
    assert "`planted.held` has 100, more than the family's `planted.features` = 64" in lines[1]
    assert "`planted.importance_range` = [2.0, 1.0]" in lines[2]
    assert "`controls.untrained_null` is true but `models.kind` is planted" in lines[3]
