"""The ReLU SAE: L1 penalty weighted by decoder-row norms (Anthropic, April 2024)."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from featscale.saes.base import SparseAutoencoder


class ReluSAE(SparseAutoencoder):
    """f = ReLU((x̃ - b_dec) W_enc + b_enc); loss = mse + λ Σ_i f_i ||W_dec,i||."""

    architecture = "relu"

    def _encode_scaled(self, x_scaled: Tensor) -> Tensor:
        return F.relu(self._centered(x_scaled) @ self.W_enc + self.b_enc)  # (N, F)

    def _forward_scaled(self, x_scaled: Tensor, dead_mask: Tensor | None) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        latents = self._encode_scaled(x_scaled)  # (N, F)
        recon = self._decode_scaled(latents)  # (N, d_in)
        # weighting by decoder norms stops the penalty being dodged by shrinking codes, growing rows
        sparsity = self.config.l1_coefficient * (latents * self.decoder_norms()).sum(dim=-1).mean()
        return latents, recon, sparsity, recon.new_zeros(())
