"""How well an SAE stands for its model: losses with its reconstruction spliced in, FVU, L0, dead and dense latents."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from featscale.config import SAESpec
from featscale.data.sampler import heldout_windows
from featscale.data.token_store import open_split
from featscale.execution.devices import autocast, pick_device
from featscale.io import write_json
from featscale.models.gpt import GPT
from featscale.saes.base import SparseAutoencoder, load_model_and_sae


@torch.no_grad()
def evaluate_sae(
    model: GPT,
    sae: SparseAutoencoder,
    windows: np.ndarray,
    *,
    layer: int,
    site: str,
    first_position: int,
    batch_size: int,
    device: torch.device,
) -> dict[str, float]:
    """How well an SAE stands for its model on held-out `windows` (N, T + 1).

    Next-token loss clean, with the SAE's reconstruction spliced in at (layer, site), and
    with the site zero-ablated (both from `first_position` on: position 0 stays clean when
    the SAE was not trained on it); the CE-loss score (CE_zero - CE_sae) / (CE_zero -
    CE_clean) and its KL analogue 1 - KL_sae / KL_zero; FVU about the mean, L0, and the
    fractions of latents dead (never active here) and dense (active on > 10% of tokens).
    """
    model, sae = model.to(device).eval(), sae.to(device).eval()
    totals = {key: 0.0 for key in ("ce_clean", "ce_sae", "ce_zero", "kl_sae", "kl_zero", "sq_error", "l0")}
    n_predictions = n_acts = 0
    act_sum = act_sq = None
    fired = torch.zeros(sae.config.n_latents, dtype=torch.long, device=device)
    for start in range(0, len(windows), batch_size):
        batch = torch.from_numpy(windows[start : start + batch_size]).to(device)
        inputs, targets = batch[:, :-1], batch[:, 1:]
        seen = {}

        def record(acts):
            seen["acts"] = acts
            return acts

        def splice(acts):
            x = acts[:, first_position:].float().flatten(0, 1)  # (B·T', d)
            latents = sae.encode(x)
            reconstruction = sae.decode(latents)
            seen.update(x=x, latents=latents, reconstruction=reconstruction)
            spliced = acts.clone()
            spliced[:, first_position:] = reconstruction.view_as(acts[:, first_position:]).to(acts.dtype)
            return spliced

        def ablate(acts):
            ablated = acts.clone()
            ablated[:, first_position:] = 0
            return ablated

        with autocast(device):
            clean = model(inputs, targets, interventions={(layer, site): record})
            spliced = model(inputs, targets, interventions={(layer, site): splice})
            zeroed = model(inputs, targets, interventions={(layer, site): ablate})
        n = targets.numel()
        clean_logp = clean.logits.float().log_softmax(-1)
        for name, out in (("sae", spliced), ("zero", zeroed)):
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
    ce = {key: totals[key] / n_predictions for key in ("ce_clean", "ce_sae", "ce_zero")}
    kl = {key: totals[key] / n_predictions for key in ("kl_sae", "kl_zero")}
    return {
        **ce,
        "ce_loss_score": (ce["ce_zero"] - ce["ce_sae"]) / (ce["ce_zero"] - ce["ce_clean"]),
        **kl,
        "kl_score": 1 - kl["kl_sae"] / kl["kl_zero"],
        "fvu": totals["sq_error"] / variance,
        "l0": totals["l0"] / n_acts,
        "dead_fraction": float((fired == 0).float().mean()),
        "dense_fraction": float((fired > 0.1 * n_acts).float().mean()),
        "tokens": n_acts,
        "predictions": n_predictions,
        "first_position": first_position,
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
    result = evaluate_sae(gpt, autoencoder, windows, layer=spec.layer, site=spec.site,
                          first_position=spec.first_position, batch_size=batch_size, device=pick_device(device))
    result = {"model": model, "sae": sae, **result}
    write_json(out, result)
    return result
