"""The TopK SAE (Gao et al. 2024): k active latents per token, AuxK for the dead ones."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from featscale.saes.base import EPS, SparseAutoencoder


class TopKSAE(SparseAutoencoder):
    """TopK SAE (Gao et al. 2024): the k largest of (x̃ - b_dec) W_enc + b_enc, after ReLU.

    Decoding goes through the k active rows only. AuxK: the top aux_k pre-activations among
    dead latents reconstruct the main reconstruction's error e, loss
        aux_coefficient · Σ||e - ê||² / Σ||e - mean(e)||²,
    and 0 when no latent is dead. Gao et al. keep decoder rows unit norm: call
    remove_parallel_gradient before and normalize_decoder after each optimiser step.
    """

    architecture = "topk"

    def _topk(self, pre: Tensor) -> tuple[Tensor, Tensor]:
        values, indices = pre.topk(self.config.k, dim=-1, sorted=False)  # (N, k), (N, k)
        return F.relu(values), indices

    def _pre_activations(self, x_scaled: Tensor) -> Tensor:
        return torch.addmm(self.b_enc, self._centered(x_scaled), self.W_enc)  # (N, F), bias fused

    def encode_sparse(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """(values (N, k), indices (N, k)) of the active latents of inputs in original units."""
        return self._topk(self._pre_activations(self._scale_input(x)))

    def _sparse_rows(self, values: Tensor, indices: Tensor) -> Tensor:
        # Σ_j values[n, j] · W_dec[indices[n, j]] without an (N, F) @ (F, d_in) matmul
        return F.embedding_bag(indices, self.W_dec, per_sample_weights=values, mode="sum")  # (N, d_in)

    def decode_sparse(self, values: Tensor, indices: Tensor) -> Tensor:
        """The reconstruction (N, d_in) in original units of sparse codes (N, k)."""
        return (self._sparse_rows(values, indices) + self.b_dec) / self.input_scale

    def _dense(self, values: Tensor, indices: Tensor) -> Tensor:
        latents = values.new_zeros(values.shape[0], self.config.n_latents)
        return latents.scatter(1, indices, values)  # (N, F)

    def _encode_scaled(self, x_scaled: Tensor) -> Tensor:
        return self._dense(*self._topk(self._pre_activations(x_scaled)))

    def _forward_scaled(self, x_scaled: Tensor, dead_mask: Tensor | None) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        pre = self._pre_activations(x_scaled)  # (N, F)
        values, indices = self._topk(pre)  # (N, k)
        recon = self._sparse_rows(values, indices) + self.b_dec  # (N, d_in)
        zero = recon.new_zeros(())
        dead = None if dead_mask is None else dead_mask.nonzero().squeeze(1)  # (n_dead,)
        # AuxK only when some latent is dead: most steps of a healthy run skip it entirely
        aux = zero if dead is None or len(dead) == 0 else self._auxk(pre, dead, (x_scaled - recon).detach())
        return self._dense(values, indices), recon, zero, aux

    def _fit_encoder_scale(self, x_scaled: Tensor) -> None:
        # TopK only: on the gated demo SAEs the same rescaling left 21-60% of latents dead (against
        # about 5% without it), so the L1 variants keep the plain W_dec-transpose start
        self._least_squares_encoder_scale(x_scaled)

    def _auxk(self, pre: Tensor, dead: Tensor, error: Tensor) -> Tensor:
        # the top aux_k pre-activations among the dead latents' columns only
        k_aux = min(self.config.aux_k, len(dead))
        aux_values, aux_positions = pre[:, dead].topk(k_aux, dim=-1, sorted=False)  # (N, k_aux)
        error_hat = self._sparse_rows(F.relu(aux_values), dead[aux_positions])  # (N, d_in), no bias: e has none
        # normalised by the error's variance so the loss does not fade as the main error shrinks
        variance = (error - error.mean(dim=0)).pow(2).sum().clamp_min(EPS)
        return self.config.aux_coefficient * (error_hat - error).pow(2).sum() / variance
