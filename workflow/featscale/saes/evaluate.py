"""How well an SAE stands for its model: losses with its reconstruction spliced in, FVU, L0, dead and dense latents."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from featscale.config import Reading, SAESpec
from featscale.data.sampler import heldout_windows
from featscale.data.token_store import open_split
from featscale.execution.devices import autocast, pick_device
from featscale.io import write_json
from featscale.models.gpt import GPT
from featscale.models.loss import mean_activation
from featscale.saes.base import SparseAutoencoder, load_model_and_sae


@torch.no_grad()
def evaluate_sae(
    model: GPT,
    sae: SparseAutoencoder,
    windows: np.ndarray,
    reading: Reading,
    *,
    batch_size: int,
    device: torch.device,
) -> dict[str, float]:
    """How well an SAE stands for its model on held-out `windows` (N, T + 1).

    Next-token loss clean, with the SAE's reconstruction spliced in at the reading's site, and
    with the site ablated, to zero and to its mean over these tokens (all from the reading's
    first position on: position 0 stays clean when the SAE was not trained on it). The CE-loss
    score (CE_ablated - CE_sae) / (CE_ablated - CE_clean) and its KL analogue 1 - KL_sae /
    KL_ablated against each ablation: zeroing a residual stream is a scale its decoder bias
    alone recovers much of, the mean is the stricter baseline. FVU about the mean, L0, and the
    fractions of latents dead (never active here) and dense (active on > 10% of tokens).
    """
    model, sae = model.to(device).eval(), sae.to(device).eval()
    layer, site, first = reading.layer, reading.site, reading.first_position
    mean = mean_activation(model, windows, reading, batch_size, device)  # (d,)
    totals = {key: 0.0 for key in ("ce_clean", "ce_sae", "ce_zero", "ce_mean", "kl_sae", "kl_zero", "kl_mean",
                                   "sq_error", "l0")}
    n_predictions = n_acts = 0
    act_sum = act_sq = None
    fired = torch.zeros(sae.config.n_latents, dtype=torch.long, device=device)
    for start in range(0, len(windows), batch_size):
        batch = torch.from_numpy(windows[start : start + batch_size]).to(device)
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

        with autocast(device, enabled=reading.autocast):
            clean = model(inputs, targets)
            outs = {"sae": model(inputs, targets, interventions={(layer, site): splice}),
                    "zero": model(inputs, targets, interventions={(layer, site): ablate(torch.zeros_like(mean))}),
                    "mean": model(inputs, targets, interventions={(layer, site): ablate(mean)})}
        n = targets.numel()
        clean_logp = clean.logits.float().log_softmax(-1)
        for name, out in outs.items():
            totals[f"ce_{name}"] += float(out.loss) * n
            # KL(clean || intervened), summed over tokens
            totals[f"kl_{name}"] += float(
                torch.nn.functional.kl_div(out.logits.float().log_softmax(-1), clean_logp, log_target=True, reduction="sum")
            )
        totals["ce_clean"] += float(clean.loss) * n
        n_predictions += n
        x, latents = seen["x"].double(), seen["latents"]
        totals["sq_error"] += float(((x - seen["reconstruction"].double()) ** 2).sum())
        act_sum = x.sum(0) if act_sum is None else act_sum + x.sum(0)
        act_sq = (x**2).sum() if act_sq is None else act_sq + (x**2).sum()
        active = latents > 0
        totals["l0"] += float(active.sum())
        fired += active.sum(0)
        n_acts += len(x)
    variance = float(act_sq) - float((act_sum**2).sum()) / n_acts  # Σ||x - mean||²
    ce = {key: totals[key] / n_predictions for key in ("ce_clean", "ce_sae", "ce_zero", "ce_mean")}
    kl = {key: totals[key] / n_predictions for key in ("kl_sae", "kl_zero", "kl_mean")}
    return {
        **ce,
        "ce_loss_score": (ce["ce_zero"] - ce["ce_sae"]) / (ce["ce_zero"] - ce["ce_clean"]),
        "ce_loss_score_mean": (ce["ce_mean"] - ce["ce_sae"]) / (ce["ce_mean"] - ce["ce_clean"]),
        **kl,
        "kl_score": 1 - kl["kl_sae"] / kl["kl_zero"],
        "kl_score_mean": 1 - kl["kl_sae"] / kl["kl_mean"],
        "fvu": totals["sq_error"] / variance,
        "l0": totals["l0"] / n_acts,
        "dead_fraction": float((fired == 0).float().mean()),
        "dense_fraction": float((fired > 0.1 * n_acts).float().mean()),
        "tokens": n_acts,
        "predictions": n_predictions,
        "first_position": first,
    }


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

    `inputs`: tokens (the token store), model_weights, model_config, sae_weights.
    """
    gpt, autoencoder = load_model_and_sae(inputs)
    windows = heldout_windows(open_split(inputs["tokens"], "val"), evaluation_tokens, gpt.config.context)
    result = evaluate_sae(gpt, autoencoder, windows, spec.reading(), batch_size=batch_size, device=pick_device(device))
    result = {"model": model, "sae": sae, **result}
    write_json(out, result)
    return result
