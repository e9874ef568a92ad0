"""Sparse autoencoders (SAEs) on one activation site of a featscale GPT-2.

Three variants behind one interface, read top to bottom: the config, the output, the base
class (scaling, decoding, decoder-norm utilities, bias init, save/load), then

    GatedSAE  Rajamanoharan et al. 2024, the authors' choice and the default
    ReluSAE   ReLU encoder, L1 weighted by decoder-row norms (Anthropic, April 2024)
    TopKSAE   Gao et al. 2024: k largest pre-activations, AuxK loss for dead latents

Units. Inputs x are multiplied by `SAEConfig.input_scale` (s) before encoding, so that the
scaled input x̃ = s·x has expected norm sqrt(d_in) whatever the model's width; losses are in
these scaled units, reconstructions come back in the original units (x̂ = x̂̃ / s).

MSE convention: mean over tokens of the squared error summed over d_in,
    mse = mean_n ||x̃_n - x̂̃_n||²,
as in SAELens, so one l1_coefficient means the same trade-off at every d_in.

Saved SAEs load in SAELens 6.x (`sae_lens.SAE.load_from_disk(folder)`): the input scale is
folded into the weights, so SAELens reproduces our codes and reconstructions in original
units with `normalize_activations: "none"`.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import shutil
import uuid
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, NamedTuple

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

ARCHITECTURES = ("gated", "relu", "topk")
BIAS_INITS = ("zeros", "mean", "geometric_median")
WEIGHTS_FILENAME = "sae_weights.safetensors"  # SAELens' SAE_WEIGHTS_FILENAME
CONFIG_FILENAME = "cfg.json"  # SAELens' SAE_CFG_FILENAME
# SAELens rewrites configs whose metadata.sae_lens_version is below 6.0 as legacy ones; this
# declares the layout we write, not a version of SAELens we depend on
SAELENS_FORMAT_VERSION = "6.0.0"
_SAELENS_ARCHITECTURE = {"gated": "gated", "relu": "standard", "topk": "topk"}
_EPS = 1e-12


@dataclass
class SAEConfig:
    """What defines one SAE: its architecture, sizes, loss coefficients and input scale."""

    architecture: str  # "gated" | "relu" | "topk"
    d_in: int
    n_latents: int
    k: int | None = None  # topk only: latents active per token
    l1_coefficient: float | None = None  # gated and relu only
    aux_k: int | None = None  # topk only: dead latents used by AuxK; None -> d_in // 2
    aux_coefficient: float = 1 / 32  # topk only: weight of AuxK (Gao et al.)
    # gated only: the auxiliary loss also trains W_dec, b_dec (SAELens) instead of a frozen copy (the paper)
    gated_aux_trains_decoder: bool = False
    dead_after_tokens: int = 10_000_000  # a latent silent for this many tokens is dead
    input_scale: float = 1.0  # x̃ = input_scale · x; see SparseAutoencoder.input_scale_for
    hook: dict[str, Any] = field(default_factory=dict)  # what the SAE reads: model, layer, site

    def __post_init__(self) -> None:
        if self.architecture not in ARCHITECTURES:
            raise ValueError(
                f"unknown SAE architecture {self.architecture!r}: use one of {', '.join(ARCHITECTURES)}"
            )
        for name in ("d_in", "n_latents", "dead_after_tokens"):
            value = getattr(self, name)
            if not _is_int(value) or value < 1:
                raise ValueError(f"SAEConfig.{name} must be a positive integer, got {value!r}")
        if not _is_number(self.input_scale) or self.input_scale <= 0:
            raise ValueError(
                f"SAEConfig.input_scale must be a finite positive number, got {self.input_scale!r}; "
                "compute it with SparseAutoencoder.input_scale_for(sample)"
            )
        self.input_scale = float(self.input_scale)
        if not isinstance(self.hook, dict):
            raise ValueError(f"SAEConfig.hook must be a dict (model, layer, site), got {type(self.hook).__name__}")
        if not isinstance(self.gated_aux_trains_decoder, bool):
            raise ValueError(f"SAEConfig.gated_aux_trains_decoder must be true or false, got {self.gated_aux_trains_decoder!r}")
        if self.gated_aux_trains_decoder and self.architecture != "gated":
            raise ValueError("SAEConfig.gated_aux_trains_decoder is for 'gated' SAEs only: remove it")
        if self.architecture == "topk":
            self._check_topk()
        else:
            self._check_l1()

    def _check_topk(self) -> None:
        if self.k is None:
            raise ValueError("SAEConfig.k is not set but architecture is 'topk': set k (latents active per token)")
        if not _is_int(self.k) or not 1 <= self.k < self.n_latents:
            raise ValueError(
                f"SAEConfig.k = {self.k!r} must be an integer with 1 <= k < n_latents = {self.n_latents}: "
                "choose a smaller k or more latents"
            )
        if self.l1_coefficient is not None:
            raise ValueError(
                "SAEConfig.l1_coefficient is set but architecture 'topk' has no L1 penalty: "
                "remove l1_coefficient or use 'gated' / 'relu'"
            )
        if self.aux_k is None:
            self.aux_k = max(1, min(self.d_in // 2, self.n_latents))
        if not _is_int(self.aux_k) or not 1 <= self.aux_k <= self.n_latents:
            raise ValueError(
                f"SAEConfig.aux_k = {self.aux_k!r} must be an integer in [1, n_latents = {self.n_latents}]"
            )
        if not _is_number(self.aux_coefficient) or self.aux_coefficient < 0:
            raise ValueError(f"SAEConfig.aux_coefficient must be >= 0, got {self.aux_coefficient!r}")

    def _check_l1(self) -> None:
        if self.k is not None:
            raise ValueError(
                f"SAEConfig.k = {self.k} is set but architecture {self.architecture!r} has no k: "
                "remove k or use 'topk'"
            )
        if self.l1_coefficient is None:
            raise ValueError(
                f"SAEConfig.l1_coefficient is not set but architecture {self.architecture!r} needs it: "
                "set the sparsity penalty's weight"
            )
        if not _is_number(self.l1_coefficient) or self.l1_coefficient < 0:
            raise ValueError(f"SAEConfig.l1_coefficient must be a number >= 0, got {self.l1_coefficient!r}")
        self.l1_coefficient = float(self.l1_coefficient)

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable fields."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SAEConfig:
        """The inverse of to_dict; unknown keys are an error (a typo would otherwise be ignored)."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown SAEConfig keys {unknown}: the known keys are {sorted(known)}")
        return cls(**data)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


class SAEOutput(NamedTuple):
    """What one forward pass returns; losses are scalars in scaled units."""

    reconstruction: Tensor
    """(N, d_in) reconstruction in the original input units."""
    latents: Tensor
    """(N, F) non-negative codes, dense, zero where a latent is inactive."""
    loss: Tensor
    """Total training loss: mse + sparsity_loss + aux_loss."""
    mse: Tensor
    """Mean over tokens of the squared error summed over d_in, in scaled units."""
    sparsity_loss: Tensor
    """The weighted L1 penalty including l1_coefficient; 0 for topk."""
    aux_loss: Tensor
    """AuxK (topk, weighted), the gated auxiliary reconstruction loss (gated), else 0."""


def fraction_of_variance_unexplained(x: Tensor, x_hat: Tensor) -> Tensor:
    """Σ||x - x̂||² / Σ||x - mean(x)||², the mean taken over tokens: 0 is perfect, 1 is the mean."""
    x, x_hat = x.reshape(-1, x.shape[-1]).float(), x_hat.reshape(-1, x_hat.shape[-1]).float()
    return (x - x_hat).pow(2).sum() / (x - x.mean(dim=0)).pow(2).sum().clamp_min(_EPS)


@torch.no_grad()
def geometric_median(points: Tensor, max_iter: int = 50, tol: float = 1e-6) -> Tensor:
    """The point minimising the summed Euclidean distance to `points` (N, d), by Weiszfeld.

    Stops when an update moves the estimate by less than `tol` times the points' spread.
    """
    x = points.reshape(-1, points.shape[-1]).double()
    median = x.mean(dim=0)
    scale = (x - median).norm(dim=1).mean().clamp_min(_EPS)
    for _ in range(max_iter):
        # weights 1/distance; the clamp keeps a point sitting on the estimate from dividing by 0
        weights = 1.0 / (x - median).norm(dim=1).clamp_min(_EPS * scale)  # (N,)
        updated = (weights[:, None] * x).sum(dim=0) / weights.sum()
        moved = (updated - median).norm()
        median = updated
        if moved <= tol * scale:
            break
    return median.to(points.dtype)


class DeadLatentTracker:
    """Counts, per latent, the tokens seen since it last fired; dead = silent for long enough."""

    def __init__(self, n_latents: int, dead_after_tokens: int, device: torch.device | str | None = None):
        self.dead_after_tokens = dead_after_tokens
        self.tokens_since_fired = torch.zeros(n_latents, dtype=torch.long, device=device)

    @torch.no_grad()
    def update(self, latents: Tensor) -> None:
        """Account for one batch of codes (N, F)."""
        fired = latents.amax(dim=0) > 0  # (F,); codes are >= 0, one pass instead of two
        self.tokens_since_fired += latents.shape[0]
        self.tokens_since_fired.masked_fill_(fired, 0)

    @property
    def dead_mask(self) -> Tensor:
        """(F,) bool: True for latents silent for at least dead_after_tokens tokens."""
        return self.tokens_since_fired >= self.dead_after_tokens

    def state_dict(self) -> dict[str, Any]:
        return {"tokens_since_fired": self.tokens_since_fired.clone(), "dead_after_tokens": self.dead_after_tokens}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.tokens_since_fired.copy_(state["tokens_since_fired"])
        self.dead_after_tokens = int(state["dead_after_tokens"])


class SparseAutoencoder(nn.Module, ABC):
    """The shared interface: encode, decode, forward with losses, decoder-norm tools, save/load.

    Parameters: W_enc (d_in, F), b_enc (F), W_dec (F, d_in), b_dec (d_in). All variants
    subtract b_dec from the scaled input before encoding (SAELens' apply_b_dec_to_input).
    """

    architecture: ClassVar[str]

    def __init__(self, config: SAEConfig):
        super().__init__()
        if config.architecture != self.architecture:
            raise ValueError(
                f"{type(self).__name__} is the {self.architecture!r} SAE but the config asks for "
                f"{config.architecture!r}: build it with make_sae(config)"
            )
        self.config = config
        d_in, n_latents = config.d_in, config.n_latents
        # random unit-norm decoder rows, encoder tied to the decoder's transpose at init (Gao et al.)
        W_dec = torch.randn(n_latents, d_in)
        W_dec /= W_dec.norm(dim=1, keepdim=True)
        self.W_dec = nn.Parameter(W_dec)  # (F, d_in)
        self.W_enc = nn.Parameter(W_dec.T.clone().contiguous())  # (d_in, F)
        self.b_enc = nn.Parameter(torch.zeros(n_latents))
        self.b_dec = nn.Parameter(torch.zeros(d_in))

    @property
    def input_scale(self) -> float:
        return self.config.input_scale

    # ---- the variant's own part ----

    @abstractmethod
    def _encode_scaled(self, x_scaled: Tensor) -> Tensor:
        """Codes (N, F) of scaled inputs."""

    @abstractmethod
    def _forward_scaled(self, x_scaled: Tensor, dead_mask: Tensor | None) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """(latents, scaled reconstruction, sparsity_loss, aux_loss) of scaled inputs."""

    # ---- shared ----

    def _scale_input(self, x: Tensor) -> Tensor:
        if x.ndim != 2 or x.shape[1] != self.config.d_in:
            raise ValueError(
                f"the SAE expects inputs of shape (N, d_in = {self.config.d_in}), got {tuple(x.shape)}: "
                f"flatten batch and position with x.reshape(-1, {self.config.d_in}) and check that the "
                "SAE reads the same model width as these activations"
            )
        return x.to(self.W_enc.dtype) * self.input_scale

    def _centered(self, x_scaled: Tensor) -> Tensor:
        return x_scaled - self.b_dec

    def _decode_scaled(self, latents: Tensor) -> Tensor:
        return latents @ self.W_dec + self.b_dec

    def encode(self, x: Tensor) -> Tensor:
        """Codes (N, F) of inputs (N, d_in) in original units."""
        return self._encode_scaled(self._scale_input(x))

    def decode(self, latents: Tensor) -> Tensor:
        """The reconstruction (N, d_in) in original units of codes (N, F)."""
        if latents.ndim != 2 or latents.shape[1] != self.config.n_latents:
            raise ValueError(
                f"decode expects codes of shape (N, n_latents = {self.config.n_latents}), "
                f"got {tuple(latents.shape)}"
            )
        return self._decode_scaled(latents) / self.input_scale

    def forward(self, x: Tensor, dead_mask: Tensor | None = None) -> SAEOutput:
        """Codes, reconstruction and losses for inputs (N, d_in); dead_mask (F,) feeds TopK's AuxK."""
        n_latents = self.config.n_latents
        if dead_mask is not None and (dead_mask.shape != (n_latents,) or dead_mask.dtype != torch.bool):
            raise ValueError(
                f"dead_mask must be a bool tensor of shape (n_latents = {n_latents},), "
                f"got {dead_mask.dtype} {tuple(dead_mask.shape)}: use DeadLatentTracker.dead_mask"
            )
        x_scaled = self._scale_input(x)
        latents, recon_scaled, sparsity_loss, aux_loss = self._forward_scaled(x_scaled, dead_mask)
        mse = (recon_scaled - x_scaled).pow(2).sum(dim=-1).mean()
        return SAEOutput(
            reconstruction=recon_scaled / self.input_scale,
            latents=latents,
            loss=mse + sparsity_loss + aux_loss,
            mse=mse,
            sparsity_loss=sparsity_loss,
            aux_loss=aux_loss,
        )

    def decoder_norms(self) -> Tensor:
        """(F,) the norm of each decoder row."""
        return self.W_dec.norm(dim=1)

    @torch.no_grad()
    def normalize_decoder(self) -> None:
        """Rescale decoder rows to unit norm (call after each optimiser step where a method asks for it)."""
        self.W_dec /= self.decoder_norms().clamp_min(_EPS)[:, None]

    @torch.no_grad()
    def remove_parallel_gradient(self) -> None:
        """Drop the part of W_dec's gradient along each decoder row (call before the optimiser step).

        With unit-norm rows that component would only change the norms, which
        normalize_decoder undoes; removing it keeps Adam's state about real direction changes.
        """
        if self.W_dec.grad is None:
            return
        directions = self.W_dec / self.decoder_norms().clamp_min(_EPS)[:, None]  # (F, d_in)
        parallel = (self.W_dec.grad * directions).sum(dim=1, keepdim=True)  # (F, 1)
        self.W_dec.grad -= parallel * directions

    @torch.no_grad()
    def init_from_data(self, sample: Tensor, bias_init: str) -> None:
        """Set b_dec (scaled units) from a sample (N, d_in) of activations in original units."""
        if bias_init not in BIAS_INITS:
            raise ValueError(f"unknown bias_init {bias_init!r}: use one of {', '.join(BIAS_INITS)}")
        x_scaled = self._scale_input(sample)
        if bias_init == "zeros":
            centre = torch.zeros_like(self.b_dec)
        elif bias_init == "mean":
            centre = x_scaled.mean(dim=0)
        else:
            centre = geometric_median(x_scaled)
        self.b_dec.copy_(centre)
        self._fit_encoder_scale(x_scaled)

    def _fit_encoder_scale(self, x_scaled: Tensor) -> None:
        """Hook for a variant's data-dependent encoder init (TopK's); the others start as W_decᵀ."""

    @torch.no_grad()
    def _least_squares_encoder_scale(self, x_scaled: Tensor) -> None:
        """Scale W_enc so the sample's first reconstructions have the least-squares magnitude.

        With unit-norm decoder rows and W_enc = W_decᵀ, a random start overshoots: every
        latent whose projection is positive (or the k largest) adds a whole unit row, so the
        first reconstructions are far longer than the inputs (FVU well above 1) and the first
        steps are spent shrinking them. With zero encoder biases, which latents fire does not
        change under a positive scale of W_enc and the codes scale with it, so multiplying W_enc
        by α = <x̃ - b_dec, r> / <r, r>, r the sample's reconstructions less b_dec, removes the
        overshoot before the first step.
        """
        rows = self._encode_scaled(x_scaled) @ self.W_dec  # (N, d_in), no bias
        power = rows.pow(2).sum()
        if power > 0:
            self.W_enc.mul_((self._centered(x_scaled) * rows).sum().clamp_min(0) / power)

    @staticmethod
    def input_scale_for(sample: Tensor) -> float:
        """sqrt(d_in) / mean ||x|| over a sample (N, d_in): scaled inputs then have mean norm sqrt(d_in)."""
        mean_norm = float(sample.float().norm(dim=-1).mean())
        if not math.isfinite(mean_norm) or mean_norm <= 0:
            raise ValueError(f"the sample's mean norm is {mean_norm}: it must be finite and positive")
        return math.sqrt(sample.shape[-1]) / mean_norm

    # ---- save and load, in SAELens' layout ----

    def _saelens_tensors(self) -> dict[str, Tensor]:
        """Weights under SAELens' names with the input scale folded in (original units in and out)."""
        s = self.input_scale
        with torch.no_grad():
            tensors = {
                "W_enc": self.W_enc.double() * s,
                "W_dec": self.W_dec.double() / s,
                "b_dec": self.b_dec.double() / s,
                "b_enc": self.b_enc.double(),
            }
        return {name: t.to(self.W_enc.dtype).contiguous() for name, t in tensors.items()}

    def _unfold_saelens_tensors(self, tensors: dict[str, Tensor]) -> dict[str, Tensor]:
        """The inverse of _saelens_tensors: our parameters in scaled units."""
        s = self.input_scale
        ours = {
            "W_enc": tensors["W_enc"].double() / s,
            "W_dec": tensors["W_dec"].double() * s,
            "b_dec": tensors["b_dec"].double() * s,
            "b_enc": tensors["b_enc"].double(),
        }
        return {name: t.to(tensors["W_enc"].dtype) for name, t in ours.items()}

    def _saelens_config(self) -> dict[str, Any]:
        config = self.config
        hook = config.hook
        hook_name = None
        if "layer" in hook and "site" in hook:
            # our sites are TransformerLens' hook names: resid_pre, mlp_out, resid_post
            hook_name = f"blocks.{hook['layer']}.hook_{hook['site']}"
        return {
            "architecture": _SAELENS_ARCHITECTURE[config.architecture],
            "d_in": config.d_in,
            "d_sae": config.n_latents,
            "dtype": str(self.W_enc.dtype).removeprefix("torch."),
            "device": "cpu",
            "apply_b_dec_to_input": True,
            # the scale is folded into the weights, so SAELens must not normalise again
            "normalize_activations": "none",
            "reshape_activations": "none",
            **({"k": config.k, "rescale_acts_by_decoder_norm": False} if config.architecture == "topk" else {}),
            "metadata": {
                "sae_lens_version": SAELENS_FORMAT_VERSION,
                "sae_lens_training_version": None,  # trained by featscale, not SAELens
                "model_name": hook.get("model"),
                "hook_name": hook_name,
                "hook_head_index": None,
            },
            "input_scale": config.input_scale,  # provenance: already folded into the weights
            "featscale": config.to_dict(),  # our own config, read back by load
        }

    def save(self, folder: str | Path) -> Path:
        """Write sae_weights.safetensors and cfg.json to `folder`, atomically; returns the folder."""
        folder = Path(folder)
        folder.parent.mkdir(parents=True, exist_ok=True)
        partial = folder.with_name(f".{folder.name}.partial-{uuid.uuid4().hex[:8]}")
        partial.mkdir()
        try:
            tensors = {name: t.detach().cpu() for name, t in self._saelens_tensors().items()}
            save_file(tensors, str(partial / WEIGHTS_FILENAME))
            (partial / CONFIG_FILENAME).write_text(json.dumps(self._saelens_config(), indent=2))
            if folder.exists():
                # a directory cannot be renamed over a non-empty one: move the old one aside first
                stale = folder.with_name(f".{folder.name}.stale-{uuid.uuid4().hex[:8]}")
                os.replace(folder, stale)
                os.replace(partial, folder)
                shutil.rmtree(stale, ignore_errors=True)
            else:
                os.replace(partial, folder)
        except BaseException:
            shutil.rmtree(partial, ignore_errors=True)
            raise
        return folder

    @classmethod
    def load(cls, folder: str | Path, device: torch.device | str = "cpu") -> SparseAutoencoder:
        """The SAE saved in `folder`, as the subclass its config names, in scaled units again."""
        folder = Path(folder)
        saved = json.loads((folder / CONFIG_FILENAME).read_text())
        if "featscale" not in saved:
            raise ValueError(
                f"{folder / CONFIG_FILENAME} has no 'featscale' block: not written by SparseAutoencoder.save"
            )
        config = SAEConfig.from_dict(saved["featscale"])
        sae = make_sae(config)
        if not isinstance(sae, cls):
            raise ValueError(
                f"{folder} holds a {config.architecture!r} SAE, not a {cls.__name__}: use SparseAutoencoder.load"
            )
        tensors = load_file(str(folder / WEIGHTS_FILENAME))
        sae.load_state_dict(sae._unfold_saelens_tensors(tensors))
        return sae.to(device)


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
            (gate_acts.sum(dim=0) * penalty_per_token / norms.clamp_min(_EPS))[:, None] * W_dec,
            latents.T,
            grad_recon,
        )  # (F, d_in)
        grad_b_dec = grad_recon.sum(dim=0) - grad_centered.sum(dim=0)
        if ctx.aux_trains_decoder:
            grad_W_dec.addmm_(gate_acts.T, grad_via)
            grad_b_dec += grad_via.sum(dim=0)
        return grad_centered, grad_W_enc, grad_b_gate, grad_r_mag, grad_b_mag, grad_W_dec, grad_b_dec, None


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
        variance = (error - error.mean(dim=0)).pow(2).sum().clamp_min(_EPS)
        return self.config.aux_coefficient * (error_hat - error).pow(2).sum() / variance


_VARIANTS: dict[str, type[SparseAutoencoder]] = {cls.architecture: cls for cls in (GatedSAE, ReluSAE, TopKSAE)}


def make_sae(config: SAEConfig) -> SparseAutoencoder:
    """A freshly initialised SAE of the architecture `config` names."""
    return _VARIANTS[config.architecture](config)
