"""Every random stream of a run, derived from the run's seed in one place.

A stream has a name, so two uses of randomness never share one by accident, and a replicate
index (a model's or an SAE spec's seed), so a replicate draws afresh where it should (its
initialisation) and not where it should not (the models' training batches are the same for
every width and seed: they use the run seed itself).

    model_init       torch seed of a model's initialisation (replicate: the model's seed)
    sae_init         torch seed of an SAE's initialisation (replicate: the spec's seed)
    sae_activations  seed of an SAE's stream of training windows and their shuffling
    feature_windows  random train windows whose codes are stored (features.split: train)
    budget_draws     the random latents a feature-budget ablation zeroes
    planted_features a planted family's firing frequencies and importances
    planted_models   one planted model's holdings and directions (words: its width and seed)
    planted_latents  the feature activations of one token window, the same for every model
                     (words: the window's hash)
    planted_noise    one planted model's noise on one token window (words: the window's hash,
                     the model's width and seed)
"""

from __future__ import annotations

import numpy as np

_SPACING = 1_000_003  # a prime above any replicate index, so no two run seeds share a seed
_OFFSETS = {"model_init": 0, "sae_init": 0, "sae_activations": 7919}
_KEYS = {"feature_windows": 2**31, "budget_draws": 7, "planted_features": 11, "planted_models": 13,
         "planted_latents": 17, "planted_noise": 19}


def derive_seed(run_seed: int, stream: str, replicate: int = 0) -> int:
    """The integer seed of `stream` for replicate `replicate` (e.g. for torch.manual_seed)."""
    if stream not in _OFFSETS:
        raise KeyError(f"no integer seed stream {stream!r}: one of {', '.join(_OFFSETS)}")
    return run_seed * _SPACING + _OFFSETS[stream] + replicate


def stream_rng(run_seed: int, stream: str, *words: int) -> np.random.Generator:
    """A numpy generator of `stream`, the same for every model of the run; `words` (non-negative
    integers) pick one of its independent sub-streams (a model's, a token window's)."""
    if stream not in _KEYS:
        raise KeyError(f"no generator stream {stream!r}: one of {', '.join(_KEYS)}")
    return np.random.default_rng([run_seed, _KEYS[stream], *words])
