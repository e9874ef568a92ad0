"""Sparse autoencoders (SAEs) on one activation site of a featscale model (a GPT-2, or a planted family): the shared interface.

Read top to bottom: the config, the output, the base class (scaling, decoding, decoder-norm
utilities, bias init, save/load) and the registry of variants; each variant is a small
subclass in a module of its own:

    gated.GatedSAE  Rajamanoharan et al. 2024, the authors' choice and the default
    relu.ReluSAE    ReLU encoder, L1 weighted by decoder-row norms (Anthropic, April 2024)
    topk.TopKSAE    Gao et al. 2024: k largest pre-activations, AuxK loss for dead latents

Units. Inputs x are multiplied by `SAEConfig.input_scale` (s) before encoding, so that the
scaled input x̃ = s·x has expected norm sqrt(d_in) whatever the model's width; losses are in
these scaled units, reconstructions come back in the original units (x̂ = x̂̃ / s).

MSE convention: mean over tokens of the squared error summed over d_in,
    mse = mean_n ||x̃_n - x̂̃_n||²,
as in SAELens, so one l1_coefficient means the same trade-off at every d_in.

Saved SAEs load in SAELens 6.x (`sae_lens.SAE.load_from_disk(folder)`): the input scale is
folded into the weights, so SAELens reproduces our codes and reconstructions in original
units with `normalize_activations: "none"`. Their metadata say what the SAE reads in the
terms TransformerLens and SAELens use: the hook `blocks.{layer}.hook_{site}`, the model to load
(the model's Hugging Face export, `SAEConfig.provenance`), the context size, that no BOS is
prepended and which positions were used (`seqpos_slice`), and the token store it was trained on.
"""

from __future__ import annotations

import json
import math
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, NamedTuple

import torch
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from featscale.config import Record
from featscale.io import verify_safetensors, write_json, write_safetensors
from featscale.models.source import ActivationSource, load_source
from featscale.names import SAE_CONFIG_FILENAME, SAE_RULE, SAE_WEIGHTS_FILENAME

ARCHITECTURES = ("gated", "relu", "topk")
DECODER_INITS = ("unit_normal", "positive_uniform")
BIAS_INITS = ("zeros", "mean", "geometric_median")
WEIGHTS_FILENAME, CONFIG_FILENAME = SAE_WEIGHTS_FILENAME, SAE_CONFIG_FILENAME
# SAELens rewrites configs whose metadata.sae_lens_version is below 6.0 as legacy ones; this
# declares the layout we write, not a version of SAELens we depend on
SAELENS_FORMAT_VERSION = "6.0.0"
_SAELENS_ARCHITECTURE = {"gated": "gated", "relu": "standard", "topk": "topk"}
EPS = 1e-12


@dataclass
class SAEConfig(Record):
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
    # initial decoder rows: Gaussian or (SAELens 4.1.1's heuristic, the authors') uniform on [0, 1), at this norm
    decoder_init: str = "unit_normal"
    decoder_init_norm: float = 1.0
    # scale the encoder at init so the first reconstructions have the sample's magnitude; None: the
    # architecture's choice (TopK yes, the L1 variants no)
    encoder_rescale: bool | None = None
    input_scale: float = 1.0  # x̃ = input_scale · x; see SparseAutoencoder.input_scale_for
    hook: dict[str, Any] = field(default_factory=dict)  # what the SAE reads: model, layer, site
    # where its inputs came from, for SAELens' metadata: model_path (the model's Hugging Face export),
    # context_size, first_position (0, or 1 when position 0 was left out), dataset_path (the token store)
    provenance: dict[str, Any] = field(default_factory=dict)

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
        if self.decoder_init not in DECODER_INITS:
            raise ValueError(f"unknown decoder_init {self.decoder_init!r}: use one of {', '.join(DECODER_INITS)}")
        if not _is_number(self.decoder_init_norm) or self.decoder_init_norm <= 0:
            raise ValueError(f"SAEConfig.decoder_init_norm must be a positive number, got {self.decoder_init_norm!r}")
        if not isinstance(self.hook, dict):
            raise ValueError(f"SAEConfig.hook must be a dict (model, layer, site), got {type(self.hook).__name__}")
        if not isinstance(self.provenance, dict):
            raise ValueError(f"SAEConfig.provenance must be a dict, got {type(self.provenance).__name__}")
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
    return (x - x_hat).pow(2).sum() / (x - x.mean(dim=0)).pow(2).sum().clamp_min(EPS)


@torch.no_grad()
def geometric_median(points: Tensor, max_iter: int = 50, tol: float = 1e-6) -> Tensor:
    """The point minimising the summed Euclidean distance to `points` (N, d), by Weiszfeld.

    Stops when an update moves the estimate by less than `tol` times the points' spread.
    """
    x = points.reshape(-1, points.shape[-1]).double()
    median = x.mean(dim=0)
    scale = (x - median).norm(dim=1).mean().clamp_min(EPS)
    for _ in range(max_iter):
        # weights 1/distance; the clamp keeps a point sitting on the estimate from dividing by 0
        weights = 1.0 / (x - median).norm(dim=1).clamp_min(EPS * scale)  # (N,)
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

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        _VARIANTS[cls.architecture] = cls

    def __init__(self, config: SAEConfig):
        super().__init__()
        if config.architecture != self.architecture:
            raise ValueError(
                f"{type(self).__name__} is the {self.architecture!r} SAE but the config asks for "
                f"{config.architecture!r}: build it with make_sae(config)"
            )
        self.config = config
        d_in, n_latents = config.d_in, config.n_latents
        # random decoder rows, encoder tied to the decoder's transpose at init (Gao et al.); TopK's rows
        # are kept at unit norm throughout, so only the L1 variants take another initial norm
        W_dec = torch.rand(n_latents, d_in) if config.decoder_init == "positive_uniform" else torch.randn(n_latents, d_in)
        W_dec /= W_dec.norm(dim=1, keepdim=True)
        if config.decoder_init_norm != 1.0 and config.architecture != "topk":
            W_dec *= config.decoder_init_norm
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
        self.W_dec /= self.decoder_norms().clamp_min(EPS)[:, None]

    @torch.no_grad()
    def remove_parallel_gradient(self) -> None:
        """Drop the part of W_dec's gradient along each decoder row (call before the optimiser step).

        With unit-norm rows that component would only change the norms, which
        normalize_decoder undoes; removing it keeps Adam's state about real direction changes.
        """
        if self.W_dec.grad is None:
            return
        directions = self.W_dec / self.decoder_norms().clamp_min(EPS)[:, None]  # (F, d_in)
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
        rescale = self.config.encoder_rescale
        if rescale is None:
            self._fit_encoder_scale(x_scaled)
        elif rescale:
            self._least_squares_encoder_scale(x_scaled)

    def _fit_encoder_scale(self, x_scaled: Tensor) -> None:
        """A variant's own data-dependent encoder init (TopK's), when the config leaves it to the
        variant; the others start as W_decᵀ."""

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
            "metadata": saelens_metadata(config.hook, config.provenance),
            "input_scale": config.input_scale,  # provenance: already folded into the weights
            "featscale": config.to_dict(),  # our own config, read back by load
        }

    def save(self, folder: str | Path) -> Path:
        """Write cfg.json, then sae_weights.safetensors, into `folder` (made if missing), each atomically; the
        weights' metadata records their SHA-256 and cfg.json's, which `load` checks."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        tensors = {name: t.detach().cpu() for name, t in self._saelens_tensors().items()}
        write_json(folder / CONFIG_FILENAME, self._saelens_config())
        write_safetensors(folder / WEIGHTS_FILENAME, lambda path, metadata: save_file(tensors, str(path), metadata=metadata),
                          config=folder / CONFIG_FILENAME)
        return folder

    @classmethod
    def load(cls, folder: str | Path, device: torch.device | str = "cpu") -> SparseAutoencoder:
        """The SAE saved in `folder`, as the subclass its config names, in scaled units again; its two files
        are checked against the SHA-256s the weights record."""
        folder = Path(folder)
        verify_safetensors(folder / WEIGHTS_FILENAME, SAE_RULE, config=folder / CONFIG_FILENAME)
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


_VARIANTS: dict[str, type[SparseAutoencoder]] = {}  # filled as each variant's module defines it


def saelens_metadata(hook: Mapping[str, Any], provenance: Mapping[str, Any]) -> dict[str, Any]:
    """cfg.json's `metadata`: what SAELens, TransformerLens and SAEDashboard read to run the SAE.

    `hook`: model (our name), layer, site; `provenance`: see SAEConfig. model_name is the path of
    the model's Hugging Face export when known (else our name): the model to load, by the recipe of
    docs/interop.md (TransformerLens does not load local paths by name).
    """
    hook_name = None
    if "layer" in hook and "site" in hook:
        # our sites are TransformerLens' hook names: resid_pre, mlp_out, resid_post
        hook_name = f"blocks.{hook['layer']}.hook_{hook['site']}"
    first = provenance.get("first_position")
    return {
        "sae_lens_version": SAELENS_FORMAT_VERSION,
        "sae_lens_training_version": None,  # trained by featscale, not SAELens
        "model_name": provenance.get("model_path", hook.get("model")),
        "model_class_name": "HookedTransformer",
        "hook_name": hook_name,
        "hook_head_index": None,
        "context_size": provenance.get("context_size"),
        # windows are cut anywhere in the token stream, never started with a BOS token
        "prepend_bos": False,
        # the positions of each window the SAE was trained on: position 0 is left out unless 0
        "seqpos_slice": None if first is None else [first, None],
        "exclude_special_tokens": False,
        "dataset_path": provenance.get("dataset_path"),
        "model_from_pretrained_kwargs": {},
    }


def make_sae(config: SAEConfig) -> SparseAutoencoder:
    """A freshly initialised SAE of the architecture `config` names."""
    return _VARIANTS[config.architecture](config)


def load_source_and_sae(inputs: Mapping[str, str | Path], model: str) -> tuple[ActivationSource, SparseAutoencoder]:
    """A rule's model `model` as an activation source (featscale.models.source.load_source: a GPT's
    inputs model_weights and model_config, or a planted family's truth) and its SAE (input sae_weights)."""
    sae = SparseAutoencoder.load(Path(inputs["sae_weights"]).parent)
    return load_source(inputs, model), sae
