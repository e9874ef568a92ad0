"""The Gated SAE (Rajamanoharan et al. 2024), the authors' choice: its encoder and a fused training step."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from featscale.saes.base import EPS, SAEConfig, SparseAutoencoder


class GatedSAE(SparseAutoencoder):
    """Gated SAE (Rajamanoharan et al. 2024); b_enc is the paper's gate bias b_gate.

    π_gate = (x̃ - b_dec) W_enc + b_gate,  π_mag = (x̃ - b_dec)(W_enc ⊙ exp(r_mag)) + b_mag,
    f = 1[π_gate > 0] ⊙ ReLU(π_mag).
    loss = mse + λ Σ_i ReLU(π_gate)_i ||W_dec,i||            (SAELens' decoder-norm weighting)
               + ||x̃ - (ReLU(π_gate) W_dec' + b_dec')||²   (W_dec', b_dec' detached, as the paper;
                                                          trained, as SAELens, with gated_aux_trains_decoder)
    The gate's step has no gradient: the gate learns only through the last two terms.
    """

    architecture = "gated"

    def __init__(self, config: SAEConfig):
        super().__init__(config)
        self.r_mag = nn.Parameter(torch.zeros(config.n_latents))
        self.b_mag = nn.Parameter(torch.zeros(config.n_latents))

    @property
    def b_gate(self) -> nn.Parameter:
        return self.b_enc

    def _pre_activations(self, x_scaled: Tensor) -> tuple[Tensor, Tensor]:
        # one matmul serves both paths: x (W ⊙ e) = (x W) ⊙ e for a per-column factor e
        shared = self._centered(x_scaled) @ self.W_enc  # (N, F)
        pi_gate = shared + self.b_enc
        pi_mag = torch.addcmul(self.b_mag, shared, self.r_mag.exp())  # one fused pass
        return pi_gate, pi_mag

    def _encode_scaled(self, x_scaled: Tensor) -> Tensor:
        pi_gate, pi_mag = self._pre_activations(x_scaled)
        return (pi_gate > 0).to(pi_mag.dtype) * F.relu(pi_mag)  # (N, F)

    def encode_saelens_4_1_1(self, x: Tensor) -> Tensor:
        """The codes (N, F) the authors analysed: those of SAELens 4.1.1's fold_W_dec_norm.

        That fold divides each decoder row by its norm n (in original units) and multiplies the
        encoder's column, b_gate and b_mag by n, which is exact, but also r_mag, a log-scale
        parameter, which is not: the folded code is n · 1[π_gate > 0] · ReLU(lin · e^(n·r_mag) + b_mag)
        with lin = (x̃ − b_dec) W_enc, where the exact fold gives n · f.
        """
        x_scaled = self._scale_input(x)
        norms = self.decoder_norms() / self.input_scale  # (F,) n
        shared = self._centered(x_scaled) @ self.W_enc  # (N, F)
        pi_mag = torch.addcmul(self.b_mag, shared, (norms * self.r_mag).exp())
        return norms * (shared + self.b_enc > 0).to(pi_mag.dtype) * F.relu(pi_mag)

    def _forward_scaled(self, x_scaled: Tensor, dead_mask: Tensor | None) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        # one autograd node with a hand-written backward: the (N, F) elementwise passes, not
        # the matmuls, dominate a step, and autograd would make about three times as many
        latents, recon, gate_penalty, via_gate = _GatedStep.apply(
            x_scaled, self.W_enc, self.b_enc, self.r_mag, self.b_mag, self.W_dec, self.b_dec,
            self.config.gated_aux_trains_decoder,
        )
        sparsity = self.config.l1_coefficient * gate_penalty
        aux = (via_gate - x_scaled).pow(2).sum(dim=-1).mean()
        return latents, recon, sparsity, aux

    def _saelens_tensors(self) -> dict[str, Tensor]:
        tensors = super()._saelens_tensors()
        # the gate and magnitude biases are in pre-activation units, which folding leaves alone
        tensors["b_gate"] = tensors.pop("b_enc")
        tensors["b_mag"] = self.b_mag.detach().clone()
        tensors["r_mag"] = self.r_mag.detach().clone()
        return tensors

    def _unfold_saelens_tensors(self, tensors: dict[str, Tensor]) -> dict[str, Tensor]:
        ours = super()._unfold_saelens_tensors({**tensors, "b_enc": tensors["b_gate"]})
        ours["b_mag"], ours["r_mag"] = tensors["b_mag"], tensors["r_mag"]
        return ours


def _where_positive(values: Tensor, mask_source: Tensor) -> Tensor:
    """`values` where `mask_source` > 0, else 0, in one pass.

    This is the kernel ReLU's backward uses; torch.where, masked_fill_ or a product with a
    bool mask each take two to five times as long on CPU (bool masks, type conversions).
    """
    return torch.ops.aten.threshold_backward(values, mask_source, 0)


class _GatedStep(torch.autograd.Function):
    """The Gated SAE's differentiable part, forward and backward by hand.

    Returns latents f (N, F), recon = f W_dec + b_dec (N, d_in), the gate penalty
    mean_n Σ_i ReLU(π_gate)_ni ||W_dec,i|| (a scalar) and via_gate = ReLU(π_gate) W_dec' + b_dec'
    (N, d_in) with W_dec', b_dec' treated as constants unless `aux_trains_decoder`. Gradients are those autograd gives for
    these formulas (the Heaviside gate passes none); a test checks them against autograd.
    """

    @staticmethod
    def forward(ctx, x_scaled, W_enc, b_gate, r_mag, b_mag, W_dec, b_dec, aux_trains_decoder):  # noqa: ANN001, ANN205
        centered = x_scaled - b_dec  # (N, d_in)
        shared = centered @ W_enc  # (N, F): x (W ⊙ e) = (x W) ⊙ e serves both paths
        magnitude_scale = r_mag.exp()  # (F,)
        gate_acts = (shared + b_gate).relu_()  # (N, F); π_gate > 0 exactly where gate_acts > 0
        # ReLU(π_mag) where the gate is open
        latents = _where_positive(torch.addcmul(b_mag, shared, magnitude_scale).relu_(), gate_acts)
        norms = W_dec.norm(dim=1)  # (F,)
        recon = torch.addmm(b_dec, latents, W_dec)  # (N, d_in)
        via_gate = torch.addmm(b_dec, gate_acts, W_dec)  # (N, d_in)
        gate_penalty = (gate_acts @ norms).mean()
        ctx.save_for_backward(centered, shared, magnitude_scale, gate_acts, latents, norms, W_enc, W_dec)
        ctx.mark_non_differentiable(latents)
        ctx.aux_trains_decoder = aux_trains_decoder
        return latents, recon, gate_penalty, via_gate

    @staticmethod
    def backward(ctx, _grad_latents, grad_recon, grad_penalty, grad_via):  # noqa: ANN001, ANN205
        centered, shared, magnitude_scale, gate_acts, latents, norms, W_enc, W_dec = ctx.saved_tensors
        n = centered.shape[0]
        if grad_recon is None:
            grad_recon = torch.zeros_like(centered)
        if grad_via is None:
            grad_via = torch.zeros_like(centered)
        if grad_penalty is None:
            grad_penalty = torch.zeros((), dtype=centered.dtype, device=centered.device)
        penalty_per_token = grad_penalty / n
        # magnitude path: dL/dπ_mag where the latent is active
        d_mag = _where_positive(grad_recon @ W_dec.T, latents)  # (N, F)
        # gate path: the auxiliary reconstruction and the penalty, where the gate is open
        d_gate = _where_positive(torch.addmm(norms * penalty_per_token, grad_via, W_dec.T), gate_acts)
        grad_b_gate = d_gate.sum(dim=0)
        grad_b_mag = d_mag.sum(dim=0)
        grad_r_mag = (d_mag * shared).sum(dim=0) * magnitude_scale
        d_shared = d_gate.addcmul_(d_mag, magnitude_scale)  # (N, F), reuses d_gate's memory
        grad_W_enc = centered.T @ d_shared  # (d_in, F)
        grad_centered = d_shared @ W_enc.T  # (N, d_in)
        # W_dec: through recon, and through the norms in the penalty (via_gate holds it constant)
        grad_W_dec = torch.addmm(
            (gate_acts.sum(dim=0) * penalty_per_token / norms.clamp_min(EPS))[:, None] * W_dec,
            latents.T,
            grad_recon,
        )  # (F, d_in)
        grad_b_dec = grad_recon.sum(dim=0) - grad_centered.sum(dim=0)
        if ctx.aux_trains_decoder:
            grad_W_dec.addmm_(gate_acts.T, grad_via)
            grad_b_dec += grad_via.sum(dim=0)
        return grad_centered, grad_W_enc, grad_b_gate, grad_r_mag, grad_b_mag, grad_W_dec, grad_b_dec, None
