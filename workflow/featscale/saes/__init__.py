"""Sparse autoencoders: the variants behind one interface, their training, evaluation and budgets.

The code of the torch environment (envs/torch.yaml). Importing the package registers every
variant, so `make_sae` and `SparseAutoencoder.load` know them all.
"""

from featscale.saes import gated, relu, topk  # noqa: F401 (registers the variants)
from featscale.saes.base import (
    CONFIG_FILENAME,
    WEIGHTS_FILENAME,
    SAEConfig,
    SparseAutoencoder,
    make_sae,
)

__all__ = ["CONFIG_FILENAME", "WEIGHTS_FILENAME", "SAEConfig", "SparseAutoencoder", "make_sae"]
