"""The checks a JSON Schema cannot express, and the names the config gives to things.

The schema (workflow/schemas/config.schema.yaml) is the one home of keys, types and
defaults; this module only relates keys to each other. Every problem is reported as one
line naming the key, the value and the fix, and all of them are reported at once.
"""

from __future__ import annotations

import glob
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import yaml

SPLITS = ("train", "val", "analysis")
GPT2_VOCAB_SIZE = 50257
MODEL_NAME = re.compile(r"^w(?P<width>[0-9]+)(?:-s(?P<seed>[0-9]+))?(?P<untrained>-init)?$")
UNTRAINED = "-init"  # w256-init: w256's architecture and initialisation, never trained (a control)
SAE_SEED_REPLICATE = "-seed1"  # main-seed1: spec main with seed + 1 (a control)


class ConfigError(ValueError):
    """A config that the workflow refuses before any job runs."""


def model_name(width: int, seed: int = 0) -> str:
    """`w256` for the first seed, `w256-s1` for a replicate."""
    return f"w{width}" if seed == 0 else f"w{width}-s{seed}"


def parse_model_name(name: str) -> tuple[int, int]:
    """(width, seed) of a model name made by `model_name` (or `untrained_model_name`)."""
    match = MODEL_NAME.match(name)
    if match is None:
        raise ValueError(f"{name!r} is not a model name (expected w<width>, w<width>-s<seed> or w<width>-init)")
    return int(match["width"]), int(match["seed"] or 0)


def untrained_model_name(width: int) -> str:
    """`w256-init`: the untrained null model of width 256 (w256's initialisation, zero steps)."""
    return f"w{width}{UNTRAINED}"


def is_untrained(name: str) -> bool:
    """Whether a model name names an untrained null model (`w256-init`), not a model of the study."""
    parse_model_name(name)  # refuses what is no model name
    return name.endswith(UNTRAINED)


def model_names(config: Mapping[str, Any]) -> list[str]:
    """The trained models of a run, narrowest first; a seed replicate follows its width's first seed."""
    replicated = set(config.get("controls", {}).get("seed_replicates", []))
    return [
        model_name(width, seed)
        for width in sorted(config["models"]["widths"])
        for seed in ((0, 1) if width in replicated else (0,))
    ]


def untrained_model_names(config: Mapping[str, Any]) -> list[str]:
    """The untrained null models of a run (one per width), when controls.untrained_null is on."""
    if not config.get("controls", {}).get("untrained_null", False):
        return []
    return [untrained_model_name(width) for width in sorted(config["models"]["widths"])]


def untrained_null_correlations(models: Iterable[str]) -> list[tuple[str, str]]:
    """(source, untrained model) correlations that give every ordered pair (source, target) of
    `models` its untrained null: the source against the untrained model of the target's width.
    Each once (w128 against w256 and w256-s1 needs w256-init once), in model order."""
    models = list(models)
    needed = {
        (source, untrained_model_name(parse_model_name(target)[0]))
        for source in models for target in models if target != source
    }
    return sorted(needed, key=lambda pair: (models.index(pair[0]), parse_model_name(pair[1])))


def sae_seed_replicate_name(sae: str) -> str:
    """`main-seed1`: the SAE-seed replicate of spec `main` (same spec, seed + 1)."""
    return f"{sae}{SAE_SEED_REPLICATE}"


def sae_spec(config: Mapping[str, Any], name: str) -> dict[str, Any]:
    """The SAE spec an `{sae}` wildcard names: a spec of config["saes"], or the SAE-seed replicate
    of one (`main-seed1`: main's spec with seed + 1), which is derived here and never added to
    config["saes"], so the study's analysis does not run for it."""
    saes = config["saes"]
    if name in saes:
        return dict(saes[name])
    base = name.removesuffix(SAE_SEED_REPLICATE)
    if base != name and base in saes:
        spec = dict(saes[base])
        return spec | {"seed": spec.get("seed", 0) + 1}
    raise KeyError(f"{name!r} is no SAE spec of config key `saes` ({', '.join(saes)}) nor an SAE-seed replicate of one")


def sae_seed_replicate_models(config: Mapping[str, Any]) -> list[str]:
    """The models (first seed of each width in controls.sae_seed_replicates) that get a second SAE seed."""
    return [model_name(width) for width in sorted(config.get("controls", {}).get("sae_seed_replicates", []))]


def describe_schema_error(error: Any) -> str:
    """One line for a jsonschema ValidationError: the key, the value, what is expected."""
    key = _key(error.absolute_path)
    if error.validator == "additionalProperties":
        known = ", ".join(sorted(error.schema.get("properties", {})))
        unknown = sorted(set(error.instance) - set(error.schema.get("properties", {})))
        return (
            f"config key `{key or '<top level>'}` has unknown key(s) {', '.join(map(repr, unknown))}: "
            f"fix the spelling; known keys are {known}."
        )
    expected = error.schema.get("description", "")
    expected = f" Expected: {' '.join(expected.split())}" if expected else ""
    return f"config key `{key}` = {error.instance!r} is invalid: {error.message}.{expected}"


def check_config(
    config: Mapping[str, Any],
    configfiles: Iterable[str | Path] = (),
    command_line: Mapping[str, Any] | None = None,
) -> None:
    """Raise ConfigError listing every cross-key problem of a schema-valid, merged config.

    `configfiles` are the files given with --configfile: each must set `run`, because a
    key it leaves out keeps the paper value, and a run named `paper` by accident would
    overwrite the paper's results. `command_line` is the --config dictionary.
    """
    problems = []
    problems += _check_run_names(configfiles, command_line or {})
    problems += _check_data(config)
    problems += _check_models(config)
    problems += _check_saes(config)
    problems += _check_training(config)
    if problems:
        raise ConfigError("\n".join(problems))


def feature_window_tokens(features: Mapping[str, Any], context: int) -> int:
    """Tokens the feature windows span: whole windows of `context`, position 0 counted or not."""
    per_window = context if features["include_position_0"] else context - 1
    return -(-features["tokens"] // max(per_window, 1)) * context


def check_split_sizes(
    tokens: Mapping[str, int], context: int, evaluation_tokens: int, features_tokens: int
) -> None:
    """Raise ConfigError if the token store's splits cannot hold what the config asks of them.

    Run once the corpus has been tokenized (its size is unknown before), and before the
    store is moved into place, so a too-small corpus leaves no output behind.
    """
    needs = {
        "train": (context + 1, "models.context", f"one training window of {context + 1} tokens"),
        "val": (evaluation_tokens, "evaluation.tokens", "the evaluation tokens"),
        "analysis": (features_tokens, "features.tokens", "the analysis tokens"),
    }
    problems = []
    for split, (needed, key, what) in needs.items():
        if tokens[split] < needed:
            problems.append(
                f"the {split} split holds {tokens[split]:,} tokens but `{key}` asks for {what} "
                f"({needed:,}): lower `{key}`, raise `data.split_fractions.{split}` or "
                f"`data.max_tokens.{split}`, or use a larger corpus."
            )
    if problems:
        raise ConfigError("\n".join(problems))


def _key(path: Iterable[Any]) -> str:
    return "".join(f"[{part}]" if isinstance(part, int) else f".{part}" for part in path).lstrip(".")


def _check_run_names(configfiles: Iterable[str | Path], command_line: Mapping[str, Any]) -> list[str]:
    if "run" in command_line:
        return []
    problems = []
    for path in configfiles:
        loaded = yaml.safe_load(Path(path).read_text()) or {}
        if "run" not in loaded:
            problems.append(
                f"config file {str(path)!r} does not set `run`: its outputs would mix with the "
                f"paper run's under results/paper/; add a line `run: <name>` to it."
            )
    return problems


def _check_data(config: Mapping[str, Any]) -> list[str]:
    data, problems = config["data"], []
    total = sum(data["split_fractions"][split] for split in SPLITS)
    if abs(total - 1.0) > 1e-9:
        fractions = {split: data["split_fractions"][split] for split in SPLITS}
        problems.append(
            f"config key `data.split_fractions` = {fractions} sums to {total:g}: "
            f"make train + val + analysis equal 1."
        )
    for split, key in (("val", "evaluation.tokens"), ("analysis", "features.tokens")):
        cap = data["max_tokens"][split]
        section, field = key.split(".")
        wanted = config[section][field]
        if cap is not None and wanted > cap:
            problems.append(
                f"config key `{key}` = {wanted:,} exceeds `data.max_tokens.{split}` = {cap:,}: "
                f"the {split} split would be too small; lower `{key}` or raise the cap."
            )
    if data["source"] == "files":
        paths = data["files"]["paths"]
        if not paths:
            problems.append(
                "config key `data.files.paths` is empty but `data.source` is files: "
                "list the corpus files (paths or globs)."
            )
        for pattern in paths:
            if not glob.glob(pattern):
                problems.append(
                    f"config key `data.files.paths` names {pattern!r}, which matches no file "
                    f"(relative to {Path.cwd()}): fix the path."
                )
    tokenizer = config["tokenizer"]
    token_field = data["hub"]["token_field"]
    if token_field is not None and data["source"] == "hub" and tokenizer["kind"] != "gpt2":
        problems.append(
            f"config key `tokenizer.kind` = {tokenizer['kind']!r}, but `data.hub.token_field` = "
            f"{token_field!r} reads GPT-2 token ids: set `tokenizer.kind: gpt2`."
        )
    if tokenizer["kind"] == "gpt2" and tokenizer["vocab_size"] != GPT2_VOCAB_SIZE:
        problems.append(
            f"config key `tokenizer.vocab_size` = {tokenizer['vocab_size']} but GPT-2's tokenizer "
            f"has {GPT2_VOCAB_SIZE}: set it to {GPT2_VOCAB_SIZE} or use `tokenizer.kind: bpe`."
        )
    return problems


def _check_models(config: Mapping[str, Any]) -> list[str]:
    models, problems = config["models"], []
    head_size = models["head_size"]
    for width in models["widths"]:
        if width % head_size:
            problems.append(
                f"config key `models.widths` has {width}, which is not divisible by "
                f"`models.head_size` = {head_size}: use widths that are multiples of {head_size} "
                f"or another head size."
            )
    for key in ("seed_replicates", "sae_seed_replicates"):
        for width in config.get("controls", {}).get(key, []):
            if width not in models["widths"]:
                problems.append(
                    f"config key `controls.{key}` has {width}, which is not in `models.widths` = "
                    f"{models['widths']}: a replicate is a second seed of a trained width; add it to models.widths."
                )
    if len(models["widths"]) < 2:
        problems.append(
            f"config key `models.widths` = {models['widths']} names one model, but universality "
            f"correlates features across models: give at least two widths."
        )
    return problems


def _check_training(config: Mapping[str, Any]) -> list[str]:
    training, context, problems = config["training"], config["models"]["context"], []
    batch = training["batch_tokens"]
    if batch % context:
        problems.append(
            f"config key `training.batch_tokens` = {batch:,} is not a multiple of `models.context` = "
            f"{context}: use a whole number of sequences, e.g. {max(1, batch // context) * context:,}."
        )
    if training["tokens"] < batch:
        problems.append(
            f"config key `training.tokens` = {training['tokens']:,} is less than one batch "
            f"(`training.batch_tokens` = {batch:,}): raise it."
        )
    for key, value in (("training.eval_tokens", training["eval_tokens"]), ("evaluation.tokens", config["evaluation"]["tokens"])):
        if value < context + 1:
            problems.append(
                f"config key `{key}` = {value:,} is less than one window of `models.context` + 1 = "
                f"{context + 1} tokens: raise it."
            )
    if training["eval_tokens"] > config["evaluation"]["tokens"]:
        problems.append(
            f"config key `training.eval_tokens` = {training['eval_tokens']:,} exceeds `evaluation.tokens` = "
            f"{config['evaluation']['tokens']:,}: the periodic validation uses part of the evaluation tokens; lower it."
        )
    return problems


def _check_saes(config: Mapping[str, Any]) -> list[str]:
    n_layers, problems = config["models"]["n_layers"], []
    if config.get("controls", {}).get("sae_seed_replicates"):
        for name in config["saes"]:
            base = name.removesuffix(SAE_SEED_REPLICATE)
            if base != name and base in config["saes"]:
                problems.append(
                    f"config key `saes.{name}` is also the name of spec {base}'s SAE-seed replicate, which "
                    f"`controls.sae_seed_replicates` trains: rename the spec."
                )
    for name, spec in config["saes"].items():
        key = f"saes.{name}"
        if spec["layer"] >= n_layers:
            problems.append(
                f"config key `{key}.layer` = {spec['layer']} but the models have "
                f"`models.n_layers` = {n_layers} blocks, counted from 0: use a layer below {n_layers}."
            )
        k = spec["k"]
        if spec["architecture"] == "topk":
            if k is None:
                problems.append(f"config key `{key}.k` is not set but `{key}.architecture` is topk: set k.")
            elif k >= spec["n_latents"]:
                problems.append(
                    f"config key `{key}.k` = {k} is not below `{key}.n_latents` = "
                    f"{spec['n_latents']}: choose k < n_latents."
                )
        elif k is not None:
            problems.append(
                f"config key `{key}.k` = {k} is set but `{key}.architecture` is "
                f"{spec['architecture']!r}, which has no k: remove k or use topk."
            )
        positions = config["models"]["context"] - (0 if spec["train_on_position_0"] else 1)
        buffer_tokens = spec["buffer_sequences"] * positions
        if buffer_tokens < spec["batch_tokens"]:
            problems.append(
                f"config key `{key}.buffer_sequences` = {spec['buffer_sequences']} gives a shuffle buffer of "
                f"{buffer_tokens:,} activations, less than one batch (`{key}.batch_tokens` = "
                f"{spec['batch_tokens']:,}): raise buffer_sequences."
            )
        if spec["bias_init_tokens"] > buffer_tokens:
            problems.append(
                f"config key `{key}.bias_init_tokens` = {spec['bias_init_tokens']:,} exceeds one shuffle buffer "
                f"({buffer_tokens:,} activations): lower it or raise `{key}.buffer_sequences`."
            )
        if spec["tokens"] < spec["batch_tokens"]:
            problems.append(
                f"config key `{key}.tokens` = {spec['tokens']:,} is less than one batch "
                f"(`{key}.batch_tokens` = {spec['batch_tokens']:,}): raise it."
            )
    return problems
