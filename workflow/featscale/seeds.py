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
"""

from __future__ import annotations

import numpy as np

_SPACING = 1_000_003  # a prime above any replicate index, so no two run seeds share a seed
_OFFSETS = {"model_init": 0, "sae_init": 0, "sae_activations": 7919}
_KEYS = {"feature_windows": 2**31, "budget_draws": 7}


def derive_seed(run_seed: int, stream: str, replicate: int = 0) -> int:
    """The integer seed of `stream` for replicate `replicate` (e.g. for torch.manual_seed)."""
    if stream not in _OFFSETS:
        raise KeyError(f"no integer seed stream {stream!r}: one of {', '.join(_OFFSETS)}")
    return run_seed * _SPACING + _OFFSETS[stream] + replicate


def stream_rng(run_seed: int, stream: str) -> np.random.Generator:
    """A numpy generator of `stream`, the same for every model of the run."""
    if stream not in _KEYS:
        raise KeyError(f"no generator stream {stream!r}: one of {', '.join(_KEYS)}")
    return np.random.default_rng([run_seed, _KEYS[stream]])
