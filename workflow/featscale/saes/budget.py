"""Feature budgets: next-token loss when the spliced-in SAE may use only some of its latents.

Two views, on the same held-out windows for every width:
- the authors' ablation: zero the top p% of latents by importance, against the same count
  of random latents (several draws) and of the most frequently active ones;
- the talk's: keep only the top N latents by importance, N on a log grid up to all.
The baselines (clean, the full SAE spliced, the site zero-ablated) are measured on the
same windows, so p = 0 and N = all equal the spliced loss by construction.

The ranking (importance, firing counts) comes from the feature store, i.e. from the
analysis tokens, never from the windows the loss is measured on.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from tqdm import tqdm

from featscale.config import BudgetSettings, Reading, SAESpec
from featscale.data.sampler import heldout_windows
from featscale.data.token_store import open_split
from featscale.execution.devices import autocast, pick_device
from featscale.features.store import open_features, tokens_sha256
from featscale.io import recorded_sha256, write_frame
from featscale.models.gpt import GPT
from featscale.models.loss import mean_activation
from featscale.saes.base import SparseAutoencoder, load_source_and_sae
from featscale.seeds import stream_rng

log = logging.getLogger(__name__)
ABLATIONS = ("zero", "mean")  # the site replaced by zeros, or by its mean over the windows


class Variant(NamedTuple):
    """One budget point: which latents may be active (None: the clean model, or the site ablated)."""

    kind: str  # clean | spliced | zero | mean | top | random | frequent | keep
    percent: float  # ablation: percent of latents zeroed; else NaN
    n_features: int  # latents kept (may be active)
    draw: int  # random draws; else 0
    keep: np.ndarray | None  # (F,) bool, latents that may be active; None for clean / zero / mean


def keep_grid(n_latents: int, points: int) -> list[int]:
    """About `points` values of N from 1 to n_latents, evenly spaced in log N, all distinct."""
    grid = np.unique(np.round(np.geomspace(1, n_latents, points)).astype(int))
    return [int(n) for n in grid]


def budget_variants(importance: np.ndarray, count: np.ndarray, budget: BudgetSettings, run_seed: int) -> list[Variant]:
    """Every point of both views for one SAE; random draws are seeded, the same for every width."""
    n = len(importance)
    by_importance = np.argsort(-importance, kind="stable")  # most important first
    by_frequency = np.argsort(-count, kind="stable")
    everything = np.ones(n, dtype=bool)
    variants = [
        Variant("clean", np.nan, n, 0, None),
        Variant("spliced", 0.0, n, 0, everything),
        Variant("zero", np.nan, 0, 0, None),
        Variant("mean", np.nan, 0, 0, None),
    ]

    def without(order: np.ndarray) -> np.ndarray:
        keep = everything.copy()
        keep[order] = False
        return keep

    rng = stream_rng(run_seed, "budget_draws")
    for percent in budget.percents:
        removed = int(round(n * percent / 100))
        variants.append(Variant("top", percent, n - removed, 0, without(by_importance[:removed])))
        variants.append(Variant("frequent", percent, n - removed, 0, without(by_frequency[:removed])))
        for draw in range(budget.random_draws):
            variants.append(Variant("random", percent, n - removed, draw, without(rng.permutation(n)[:removed])))
    for kept in keep_grid(n, budget.keep_points):
        keep = np.zeros(n, dtype=bool)
        keep[by_importance[:kept]] = True
        variants.append(Variant("keep", np.nan, kept, 0, keep))
    return variants


def run_feature_budget(
    inputs: Mapping[str, str | Path], outputs: Mapping[str, str | Path], *, model: str, spec: SAESpec,
    budget: BudgetSettings, run_seed: int, batch_size: int, device: str,
) -> pd.DataFrame:
    """Rule feature_budget: model `model`'s budget table (outputs: table, its mean loss per variant;
    windows, the loss per variant and window) on the first budget.tokens of val. `inputs`: tokens,
    model_weights, model_config, sae_weights, features (its feature store, whose importance and
    firing counts rank the latents)."""
    source, autoencoder = load_source_and_sae(inputs, model)
    if not source.language_model:
        raise ValueError(f"{model} has no language model (a planted family): it has no feature budget")
    gpt = source.model
    store = open_features(inputs["features"])
    store.check_made_with(inputs["sae_weights"], recorded_sha256(inputs["sae_weights"]))
    variants = budget_variants(store.stat("importance"), store.stat("count"), budget, run_seed)
    windows = heldout_windows(open_split(inputs["tokens"], "val"), budget.tokens, gpt.config.context)
    per_window = feature_budget(gpt, autoencoder, windows, variants, spec.reading(), batch_size=batch_size,
                                device=pick_device(device))
    table = budget_table(per_window)
    for frame in (table, per_window):
        frame.insert(0, "model", model)
    table["tokens_sha256"] = tokens_sha256(windows)  # the same val windows for every width
    write_frame(outputs["windows"], per_window)
    write_frame(outputs["table"], table)
    return table


@torch.no_grad()
def feature_budget(
    model: GPT,
    sae: SparseAutoencoder,
    windows: np.ndarray,
    variants: Sequence[Variant],
    reading: Reading,
    *,
    batch_size: int,
    device: torch.device,
) -> pd.DataFrame:
    """Next-token loss of every window of `windows` (N, T + 1) under every variant: one row each
    (kind, percent, n_features, draw, window, loss: the window's mean over its T predictions).

    The blocks before the reading's layer run once per batch; each variant runs the rest with the
    site replaced by the SAE's reconstruction from its allowed latents, or ablated to zero or to
    the site's mean over these windows (from the reading's first position on; position 0 stays
    clean when the SAE was not trained on it). Per-window losses let the study bootstrap over
    windows, paired across widths, which see the same windows.
    """
    model, sae = model.to(device).eval(), sae.to(device).eval()
    layer, site, first = reading.layer, reading.site, reading.first_position
    mean = mean_activation(model, windows, reading, batch_size, device)  # (d,)
    keeps = {i: torch.from_numpy(v.keep).to(device) for i, v in enumerate(variants) if v.keep is not None}
    losses = np.zeros((len(variants), len(windows)))
    for start in tqdm(range(0, len(windows), batch_size), desc="feature budget", mininterval=10):
        batch = torch.from_numpy(windows[start : start + batch_size]).to(device)
        inputs, targets = batch[:, :-1], batch[:, 1:]
        with autocast(device, enabled=reading.autocast):
            resid = model.activations(inputs, layer, "resid_pre")  # (B, T, C), shared by every variant
        latents = {}

        def splice(acts: torch.Tensor, variant: Variant, index: int) -> torch.Tensor:
            out = acts.clone()
            if variant.kind in ABLATIONS:
                out[:, first:] = (mean if variant.kind == "mean" else torch.zeros_like(mean)).to(acts.dtype)
                return out
            if "codes" not in latents:  # the SAE's codes at this site, once per batch
                x = acts[:, first:].float().flatten(0, 1)  # (B·T', d)
                latents["codes"] = sae.encode(x)  # (B·T', F)
            codes = latents["codes"] * keeps[index]
            out[:, first:] = sae.decode(codes).view_as(acts[:, first:]).to(acts.dtype)
            return out

        for index, variant in enumerate(variants):
            interventions = ({} if variant.kind == "clean"
                             else {(layer, site): lambda a, v=variant, i=index: splice(a, v, i)})
            with autocast(device, enabled=reading.autocast):
                logits = model.forward_from(resid, layer, interventions=interventions).logits  # (B, T, V)
            per_token = F.cross_entropy(logits.float().flatten(0, 1), targets.flatten(), reduction="none")
            losses[index, start : start + len(batch)] = per_token.view(targets.shape).mean(1).cpu().numpy()
    table = pd.DataFrame([
        {"kind": v.kind, "percent": v.percent, "n_features": v.n_features, "draw": v.draw, "window": w,
         "loss": losses[i, w]}
        for i, v in enumerate(variants) for w in range(len(windows))
    ])
    log.info("feature budget: %d variants on %d windows; %s", len(variants), len(windows),
             ", ".join(f"{k} {losses[i].mean():.4f}" for i, k in enumerate(v.kind for v in variants)
                       if k in ("clean", "spliced", "zero", "mean")))
    return table


def budget_table(windows: pd.DataFrame) -> pd.DataFrame:
    """The mean loss of each variant over the windows (every window has as many predictions)."""
    keys = ["kind", "percent", "n_features", "draw"]
    return windows.groupby(keys, sort=False, dropna=False)["loss"].mean().reset_index()
