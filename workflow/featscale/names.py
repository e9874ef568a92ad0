"""The names the workflow gives to models, SAE specs and pairs: one home for every convention.

    w256        the model of width 256, first seed
    w256-s1     its seed replicate (controls.seed_replicates)
    w256-init   its initialisation, never trained: the untrained null (controls.untrained_null)
    main-seed1  SAE spec `main` with seed + 1: the SAE-seed replicate (controls.sae_seed_replicates)
    w128__w256  an unordered pair of models, narrower (then lower seed) first
"""

from __future__ import annotations

import re
from collections.abc import Iterable

MODEL_NAME = re.compile(r"^w(?P<width>[0-9]+)(?:-s(?P<seed>[0-9]+))?(?P<untrained>-init)?$")
UNTRAINED = "-init"
SAE_SEED_REPLICATE = "-seed1"
PAIR_SEPARATOR = "__"
# wildcard_constraints of the rules
MODEL_PATTERN = r"w[0-9]+(-s[0-9]+)?(-init)?"
TRAINED_MODEL_PATTERN = r"w[0-9]+(-s[0-9]+)?"
UNTRAINED_MODEL_PATTERN = r"w[0-9]+-init"
SAE_PATTERN = r"[A-Za-z0-9][A-Za-z0-9_-]*"
# an SAE's files, as SAELens names them (SAE_WEIGHTS_FILENAME, SAE_CFG_FILENAME)
SAE_WEIGHTS_FILENAME = "sae_weights.safetensors"
SAE_CONFIG_FILENAME = "cfg.json"
# the rules that write a model's and an SAE's files: an error about one names its rule
MODEL_RULE = "train_model"
SAE_RULE = "train_sae"


def model_name(width: int, seed: int = 0) -> str:
    """`w256` for the first seed, `w256-s1` for a replicate."""
    return f"w{width}" if seed == 0 else f"w{width}-s{seed}"


def parse_model_name(name: str) -> tuple[int, int]:
    """(width, seed) of a model name made by `model_name` (or `untrained_model_name`)."""
    match = MODEL_NAME.match(name)
    if match is None:
        raise ValueError(f"{name!r} is not a model name (expected w<width>, w<width>-s<seed> or w<width>-init)")
    return int(match["width"]), int(match["seed"] or 0)


def width_of(name: str) -> int:
    return parse_model_name(name)[0]


def ordered(models: Iterable[str]) -> list[str]:
    """Models narrowest first, then by seed: w96 before w128 before w128-s1 before w1024."""
    return sorted(models, key=parse_model_name)


def untrained_model_name(width: int) -> str:
    """`w256-init`: the untrained null model of width 256 (w256's initialisation, zero steps)."""
    return f"w{width}{UNTRAINED}"


def is_untrained(name: str) -> bool:
    """Whether a model name names an untrained null model (`w256-init`), not a model of the study."""
    parse_model_name(name)  # refuses what is no model name
    return name.endswith(UNTRAINED)


def model_names(widths: Iterable[int], seed_replicates: Iterable[int] = ()) -> list[str]:
    """The trained models of a run, narrowest first; a seed replicate follows its width's first seed."""
    replicated = set(seed_replicates)
    return [model_name(width, seed) for width in sorted(widths) for seed in ((0, 1) if width in replicated else (0,))]


def model_pairs(models: Iterable[str]) -> list[tuple[str, str]]:
    """Unordered pairs of models, each once, in the order of `models` (narrower first)."""
    models = list(models)
    return [(a, b) for i, a in enumerate(models) for b in models[i + 1 :]]


def pair_name(a: str, b: str) -> str:
    return f"{a}{PAIR_SEPARATOR}{b}"


def same_width_replicates(source: str, target: str) -> bool:
    """Two seeds of one width (w256 and w256-s1)."""
    (source_width, source_seed), (target_width, target_seed) = map(parse_model_name, (source, target))
    return source_width == target_width and source_seed != target_seed


def replicate_of(model: str, models: Iterable[str]) -> str | None:
    """The other seed of the same width among `models`, if there is one."""
    others = [m for m in models if width_of(m) == width_of(model) and m != model]
    return others[0] if others else None


def untrained_null_correlations(models: Iterable[str]) -> list[tuple[str, str]]:
    """(source, untrained model) correlations that give every ordered pair (source, target) of
    `models` its untrained null: the source against the untrained model of the target's width.
    Each once (w128 against w256 and w256-s1 needs w256-init once), in model order."""
    models = list(models)
    needed = {
        (source, untrained_model_name(width_of(target)))
        for source in models for target in models if target != source
    }
    return sorted(needed, key=lambda pair: (models.index(pair[0]), parse_model_name(pair[1])))


def sae_seed_replicate_name(sae: str) -> str:
    """`main-seed1`: the SAE-seed replicate of spec `main` (same spec, seed + 1)."""
    return f"{sae}{SAE_SEED_REPLICATE}"


def sae_seed_replicate_base(name: str) -> str | None:
    """`main` for `main-seed1`; None for a name that is no replicate's."""
    base = name.removesuffix(SAE_SEED_REPLICATE)
    return base if base != name else None
