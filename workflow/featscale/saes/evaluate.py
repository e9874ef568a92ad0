"""How well an SAE stands for its model: losses with its reconstruction spliced in (a language model
only), FVU, L0, dead and dense latents (any activation source)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from featscale.config import Reading, SAESpec
from featscale.data.sampler import heldout_windows
from featscale.data.token_store import open_split
from featscale.execution.devices import autocast, pick_device
from featscale.io import write_json
from featscale.models.gpt import GPT
from featscale.models.loss import mean_activation
from featscale.models.source import ActivationSource
from featscale.saes.base import SparseAutoencoder, load_source_and_sae


class Reconstruction:
    """FVU, L0, dead and dense latents of an SAE, accumulated batch by batch."""

    def __init__(self, n_latents: int, device: torch.device):
        self.sq_error = self.l0 = 0.0
        self.n = 0
        self.act_sum = self.act_sq = None
        self.fired = torch.zeros(n_latents, dtype=torch.long, device=device)

    def add(self, x: Tensor, latents: Tensor, reconstruction: Tensor) -> None:
        """One batch: activations x (N, d), their codes (N, F) and reconstruction (N, d)."""
        x = x.double()
        self.sq_error += float(((x - reconstruction.double()) ** 2).sum())
        self.act_sum = x.sum(0) if self.act_sum is None else self.act_sum + x.sum(0)
        self.act_sq = (x**2).sum() if self.act_sq is None else self.act_sq + (x**2).sum()
        active = latents > 0
        self.l0 += float(active.sum())
        self.fired += active.sum(0)
        self.n += len(x)

    def result(self) -> dict[str, float]:
        variance = float(self.act_sq) - float((self.act_sum**2).sum()) / self.n  # Σ||x - mean||²
        return {
            "fvu": self.sq_error / variance,
            "l0": self.l0 / self.n,
            "dead_fraction": float((self.fired == 0).float().mean()),
            "dense_fraction": float((self.fired > 0.1 * self.n).float().mean()),
            "tokens": self.n,
        }


class SplicedLosses:
    """Next-token losses of a GPT clean, with an SAE's reconstruction spliced in at a reading's site,
    and with the site ablated to zero and to its mean; accumulated batch by batch."""

    def __init__(self, model: GPT, reading: Reading, mean: Tensor):
        self.model, self.reading, self.mean = model, reading, mean
        self.totals = dict.fromkeys(("ce_clean", "ce_sae", "ce_zero", "ce_mean", "kl_sae", "kl_zero", "kl_mean"), 0.0)
        self.n = 0

    def add(self, batch: Tensor, sae: SparseAutoencoder) -> tuple[Tensor, Tensor, Tensor]:
        """One batch of windows (B, T + 1); returns what the SAE saw at the site: activations
        (N, d), codes and reconstruction."""
        layer, site, first = self.reading.layer, self.reading.site, self.reading.first_position
        inputs, targets = batch[:, :-1], batch[:, 1:]
        seen = {}

        def splice(acts):
            x = acts[:, first:].float().flatten(0, 1)  # (B·T', d)
            latents = sae.encode(x)
            reconstruction = sae.decode(latents)
            seen.update(x=x, latents=latents, reconstruction=reconstruction)
            spliced = acts.clone()
            spliced[:, first:] = reconstruction.view_as(acts[:, first:]).to(acts.dtype)
            return spliced

        def ablate(value):
            def replace(acts):
                ablated = acts.clone()
                ablated[:, first:] = value.to(acts.dtype)
                return ablated
            return replace

        model = self.model
        with autocast(batch.device, enabled=self.reading.autocast):
            clean = model(inputs, targets)
            outs = {"sae": model(inputs, targets, interventions={(layer, site): splice}),
                    "zero": model(inputs, targets, interventions={(layer, site): ablate(torch.zeros_like(self.mean))}),
                    "mean": model(inputs, targets, interventions={(layer, site): ablate(self.mean)})}
        n = targets.numel()
        clean_logp = clean.logits.float().log_softmax(-1)
        for name, out in outs.items():
            self.totals[f"ce_{name}"] += float(out.loss) * n
            # KL(clean || intervened), summed over tokens
            self.totals[f"kl_{name}"] += float(
                torch.nn.functional.kl_div(out.logits.float().log_softmax(-1), clean_logp, log_target=True, reduction="sum")
            )
        self.totals["ce_clean"] += float(clean.loss) * n
        self.n += n
        return seen["x"], seen["latents"], seen["reconstruction"]

    def result(self) -> dict[str, float]:
        ce = {key: self.totals[key] / self.n for key in ("ce_clean", "ce_sae", "ce_zero", "ce_mean")}
        kl = {key: self.totals[key] / self.n for key in ("kl_sae", "kl_zero", "kl_mean")}
        return {
            **ce,
            "ce_loss_score": (ce["ce_zero"] - ce["ce_sae"]) / (ce["ce_zero"] - ce["ce_clean"]),
            "ce_loss_score_mean": (ce["ce_mean"] - ce["ce_sae"]) / (ce["ce_mean"] - ce["ce_clean"]),
            **kl,
            "kl_score": 1 - kl["kl_sae"] / kl["kl_zero"],
            "kl_score_mean": 1 - kl["kl_sae"] / kl["kl_mean"],
        }


@torch.no_grad()
def evaluate_sae(
    source: ActivationSource,
    sae: SparseAutoencoder,
    windows: np.ndarray,
    reading: Reading,
    *,
    batch_size: int,
    device: torch.device,
) -> dict[str, Any]:
    """How well an SAE stands for its model on held-out `windows` (N, T + 1).

    Any source: FVU about the mean, L0, and the fractions of latents dead (never active here) and
    dense (active on > 10% of tokens), from the reading's first position on. A language model
    (source.language_model) also gets its next-token loss clean, with the SAE's reconstruction
    spliced in at the reading's site, and with the site ablated, to zero and to its mean over these
    tokens (position 0 stays clean when the SAE was not trained on it). The CE-loss score
    (CE_ablated - CE_sae) / (CE_ablated - CE_clean) and its KL analogue 1 - KL_sae / KL_ablated
    against each ablation: zeroing a residual stream is a scale its decoder bias alone recovers
    much of, the mean is the stricter baseline. A source without a language model (a planted
    family) has no loss: those keys are absent and `language_model` is false.
    """
    source, sae = source.to(device), sae.to(device).eval()
    first = reading.first_position
    quality = Reconstruction(sae.config.n_latents, device)
    losses = None
    if source.language_model:
        losses = SplicedLosses(source.model, reading, mean_activation(source.model, windows, reading, batch_size, device))
    for start in range(0, len(windows), batch_size):
        batch = torch.from_numpy(windows[start : start + batch_size]).to(device)
        if losses is not None:
            quality.add(*losses.add(batch, sae))
        else:
            x = source.activations(batch[:, :-1], reading)[:, first:].float().flatten(0, 1)  # (B·T', d)
            latents = sae.encode(x)
            quality.add(x, latents, sae.decode(latents))
    spliced = losses.result() if losses is not None else {}
    return {**spliced, **quality.result(), "language_model": losses is not None,
            "predictions": losses.n if losses is not None else 0, "first_position": first}


def run_evaluate_sae(
    inputs: Mapping[str, str | Path],
    out: str | Path,
    *,
    spec: SAESpec,
    evaluation_tokens: int,
    batch_size: int,
    device: str,
    model: str,
    sae: str,
) -> dict[str, Any]:
    """Rule evaluate_sae: eval.json of the SAE `sae` of model `model` on the first `evaluation_tokens`
    of the val split, with both names in it, so the tables that read it know whose it is.

    `inputs`: tokens (the token store), sae_weights, and model_weights, model_config (a GPT) or
    truth (a planted family's truth store).
    """
    source, autoencoder = load_source_and_sae(inputs, model)
    windows = heldout_windows(open_split(inputs["tokens"], "val"), evaluation_tokens, source.context)
    result = evaluate_sae(source, autoencoder, windows, spec.reading(), batch_size=batch_size,
                          device=pick_device(device))
    result = {"model": model, "sae": sae, **result}
    write_json(out, result)
    return result
