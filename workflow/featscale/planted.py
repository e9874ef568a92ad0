"""Planted families: models whose features are known, so the measurement can be scored against the truth.

A planted family (models.kind planted; settings in `planted`, docs/planted.md) has K ground-truth
features. Feature k is the k-th axis of a K-dimensional feature space. On each token it fires with
probability p_k, a power law over a random order of the features (p = max_frequency · r^(−exponent)
at frequency rank r), and then with magnitude importance_k · g, g uniform on [1 − spread,
1 + spread]; importance_k, its typical magnitude, is drawn log-uniformly from importance_range,
independently of p_k.

The model of width d holds n_d of the features (planted.held), each embedded by a fixed random unit
direction u_{m,k} in R^d (superposition once n_d > d), and adds Gaussian noise:

    x = Σ_{k held by m} a_k · u_{m,k} + ε,   ε ~ N(0, noise² I_d)          (one token)

Which features a model holds: the n_d of largest score σ·z_k + √(1 − σ²)·e_{m,k}, z the
standardised log importance, e_{m,k} ~ N(0, 1) drawn per model, σ = planted.sharing_strength.
σ = 0: every model holds a random subset, so whether two models share a feature is independent of
its importance (the null); σ = 1: every model holds the most important features.

Every model reads the same feature activations a on the same token window: they are drawn from
a generator keyed by a hash of the window's token ids (the tokens only index draws, any corpus
will do), so a shared feature fires on the same tokens in every model, and the windows that
train_sae, evaluate_sae and encode_features read line up across widths. The noise is drawn per
model and window. A token's activations depend on its window (two overlapping windows draw
afresh), which the study never needs to be otherwise.

No torch here: the activation source (featscale.models.source) and the truth scoring
(featscale.analysis.truth) both read a family. This module is the one home of the truth store's
format, `planted/truth.zarr/`:

    frequency          (n_features,) float64            firing probability per token
    importance         (n_features,) float64            mean magnitude when firing
    held               (n_models, n_features) bool      which model holds which feature (rows: attrs models)
    directions/<model> (n_features, width) float32      unit rows for the features it holds, zero rows elsewhere
    attrs              format, models, context, run_seed, settings (the planted section), n_features
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import zarr

from featscale.config import PlantedSettings
from featscale.io import write_atomically
from featscale.names import ordered, parse_model_name, width_of
from featscale.seeds import stream_rng

FORMAT = "featscale.planted/1"
log = logging.getLogger(__name__)


@dataclass(frozen=True, eq=False)
class PlantedFamily:
    """The truth of a planted family, and the activations its models read."""

    frequency: np.ndarray
    """(K,) firing probability of each feature per token."""
    importance: np.ndarray
    """(K,) each feature's mean magnitude when it fires."""
    models: tuple[str, ...]
    """The family's models, narrowest first."""
    held: np.ndarray
    """(n_models, K) bool: which model holds which feature, rows in the order of `models`."""
    directions: Mapping[str, np.ndarray]
    """model -> (K, width) float32: unit rows for the features it holds, zero rows elsewhere."""
    settings: PlantedSettings
    context: int
    """Positions of the token windows the models read (models.context)."""
    run_seed: int

    @property
    def n_features(self) -> int:
        return len(self.frequency)

    def holds(self, model: str) -> np.ndarray:
        """(K,) bool: the features `model` holds."""
        return self.held[self.models.index(model)]

    def width(self, model: str) -> int:
        return self.directions[model].shape[1]

    def latent_activations(self, windows: np.ndarray) -> np.ndarray:
        """(B, T, K) float32 feature activations of token windows (B, T): the same for every model."""
        spread = self.settings.magnitude_spread
        out = np.zeros((*windows.shape, self.n_features), dtype=np.float32)
        for i, key in enumerate(window_keys(windows)):
            draw = stream_rng(self.run_seed, "planted_latents", key).random(out.shape[1:])  # (T, K)
            fires = draw < self.frequency
            # given that the feature fires, draw / p is uniform on [0, 1): the same draw sets the magnitude
            magnitude = self.importance * (1 - spread + 2 * spread * draw / self.frequency)
            out[i] = np.where(fires, magnitude, 0.0)
        return out

    def activations(self, model: str, windows: np.ndarray) -> np.ndarray:
        """(B, T, width) float32: what `model` holds of the feature activations, plus its own noise."""
        width, seed = parse_model_name(model)
        directions = self.directions[model]  # (K, d)
        out = self.latent_activations(windows) @ directions  # (B, T, d)
        if self.settings.noise > 0:
            for i, key in enumerate(window_keys(windows)):
                rng = stream_rng(self.run_seed, "planted_noise", key, width, seed)
                out[i] += self.settings.noise * rng.standard_normal(out.shape[1:], dtype=np.float32)
        return out


def window_keys(windows: np.ndarray) -> list[int]:
    """A 64-bit hash of each token window's ids (B, T): the key of its draws."""
    rows = np.ascontiguousarray(windows, dtype=np.int64)
    return [int.from_bytes(hashlib.blake2b(row.tobytes(), digest_size=8).digest(), "little") for row in rows]


def plant_family(
    settings: PlantedSettings, widths: Sequence[int], models: Sequence[str], *, context: int, run_seed: int
) -> PlantedFamily:
    """The family of `settings` for `models` (names w<width>[-s<seed>]; `widths` is models.widths,
    the order of planted.held).

    Frequencies and importances come from one stream; each model's holdings and directions from a
    sub-stream of its own (its width and seed), so a model does not change when others are added.
    """
    n = settings.features
    rng = stream_rng(run_seed, "planted_features")
    rank = rng.permutation(n) + 1.0  # frequency rank of each feature, in a random order
    frequency = settings.max_frequency * rank ** -settings.frequency_exponent
    low, high = np.log(settings.importance_range)
    importance = np.exp(rng.uniform(low, high, n))
    log_importance = np.log(importance)
    z = (log_importance - log_importance.mean()) / log_importance.std()
    strength = settings.sharing_strength
    held_by_width = settings.held_by_width(widths)
    models = tuple(ordered(models))
    held = np.zeros((len(models), n), dtype=bool)
    directions = {}
    for row, model in enumerate(models):
        width, seed = parse_model_name(model)
        own = stream_rng(run_seed, "planted_models", width, seed)
        score = strength * z + np.sqrt(1 - strength**2) * own.standard_normal(n)
        held[row, np.argsort(-score, kind="stable")[: held_by_width[width]]] = True
        unit = own.standard_normal((n, width))
        unit /= np.linalg.norm(unit, axis=1, keepdims=True)
        directions[model] = np.where(held[row, :, None], unit, 0.0).astype(np.float32)
    return PlantedFamily(frequency, importance, models, held, directions, settings, context, run_seed)


# ---------------------------------------------------------------- the truth store


def write_truth(path: str | Path, family: PlantedFamily) -> None:
    """The truth store at `path` (written whole under a temporary name, then renamed)."""

    def write(partial: Path) -> None:
        group = zarr.open_group(str(partial), mode="w", zarr_format=3)
        group.create_array("frequency", data=family.frequency, dimension_names=["feature"])
        group.create_array("importance", data=family.importance, dimension_names=["feature"])
        group.create_array("held", data=family.held, dimension_names=["model", "feature"])
        for model, directions in family.directions.items():
            group.create_array(f"directions/{model}", data=directions, dimension_names=["feature", "dimension"])
        group.attrs.update({"format": FORMAT, "models": list(family.models), "context": family.context,
                            "run_seed": family.run_seed, "settings": family.settings.to_dict(),
                            "n_features": family.n_features})

    write_atomically(path, write)


def read_truth(path: str | Path) -> PlantedFamily:
    """The planted family of a truth store written by `write_truth`."""
    group = zarr.open_group(str(path), mode="r")
    attrs = dict(group.attrs)
    if attrs.get("format") != FORMAT:
        raise ValueError(f"{path} is not a planted family's truth store of format {FORMAT} (found {attrs.get('format')!r})")
    models = tuple(attrs["models"])
    return PlantedFamily(
        frequency=group["frequency"][:], importance=group["importance"][:], models=models, held=group["held"][:],
        directions={model: group[f"directions/{model}"][:] for model in models},
        settings=PlantedSettings.from_dict(attrs["settings"]), context=int(attrs["context"]),
        run_seed=int(attrs["run_seed"]),
    )


def run_plant_family(
    out: str | Path, *, planted: PlantedSettings, widths: list[int], model_names: list[str], context: int,
    run_seed: int,
) -> PlantedFamily:
    """Rule plant_family: the truth store `out` of the run's planted family, whose models stand in
    for trained ones (the rules after train_model read it)."""
    family = plant_family(planted, widths, model_names, context=context, run_seed=run_seed)
    write_truth(out, family)
    for model, holds in zip(family.models, family.held):
        log.info("%s holds %d of %d features in %d dimensions", model, holds.sum(), family.n_features, width_of(model))
    return family
