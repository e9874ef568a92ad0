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
from tqdm import tqdm

from featscale.config import BudgetSettings, SAESpec
from featscale.data.sampler import heldout_windows
from featscale.data.token_store import open_split
from featscale.execution.devices import autocast, pick_device
from featscale.features.store import open_features, tokens_sha256
from featscale.io import recorded_sha256, write_frame
from featscale.models.gpt import GPT
from featscale.saes.base import SparseAutoencoder, load_model_and_sae
from featscale.seeds import stream_rng

log = logging.getLogger(__name__)


class Variant(NamedTuple):
    """One budget point: which latents may be active (None = the site is zero-ablated)."""

    kind: str  # clean | spliced | zero | top | random | frequent | keep
    percent: float  # ablation: percent of latents zeroed; else NaN
    n_features: int  # latents kept (may be active)
    draw: int  # random draws; else 0
    keep: np.ndarray | None  # (F,) bool, latents that may be active; None for clean / zero


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
    inputs: Mapping[str, str | Path], out: str | Path, *, model: str, spec: SAESpec, budget: BudgetSettings,
    run_seed: int, batch_size: int, device: str,
) -> pd.DataFrame:
    """Rule feature_budget: the budget table (CSV) of model `model`'s SAE on the first budget.tokens of
    val. `inputs`: tokens, model_weights, model_config, sae_weights, features (its feature
    store, whose importance and firing counts rank the latents)."""
    gpt, autoencoder = load_model_and_sae(inputs)
    store = open_features(inputs["features"])
    store.check_made_with(inputs["sae_weights"], recorded_sha256(inputs["sae_weights"]))
    variants = budget_variants(store.stat("importance"), store.stat("count"), budget, run_seed)
    windows = heldout_windows(open_split(inputs["tokens"], "val"), budget.tokens, gpt.config.context)
    table = feature_budget(gpt, autoencoder, windows, variants, layer=spec.layer, site=spec.site,
                           first_position=spec.first_position, batch_size=batch_size, device=pick_device(device))
    table.insert(0, "model", model)
    table["tokens_sha256"] = tokens_sha256(windows)  # the same val windows for every width
    write_frame(out, table)
    return table


@torch.no_grad()
def feature_budget(
    model: GPT,
    sae: SparseAutoencoder,
    windows: np.ndarray,
    variants: Sequence[Variant],
    *,
    layer: int,
    site: str,
    first_position: int,
    batch_size: int,
    device: torch.device,
) -> pd.DataFrame:
    """Mean next-token loss on `windows` (N, T + 1) for every variant: one row each.

    The blocks before `layer` run once per batch; each variant runs the rest with the
    site replaced by the SAE's reconstruction from its allowed latents (from
    `first_position` on; position 0 stays clean when the SAE was not trained on it).
    """
    model, sae = model.to(device).eval(), sae.to(device).eval()
    keeps = {i: torch.from_numpy(v.keep).to(device) for i, v in enumerate(variants) if v.keep is not None}
    totals = np.zeros(len(variants))
    count = 0
    for start in tqdm(range(0, len(windows), batch_size), desc="feature budget", mininterval=10):
        batch = torch.from_numpy(windows[start : start + batch_size]).to(device)
        inputs, targets = batch[:, :-1], batch[:, 1:]
        with autocast(device):
            resid = model.activations(inputs, layer, "resid_pre")  # (B, T, C), shared by every variant
        latents = {}

        def splice(acts: torch.Tensor, index: int) -> torch.Tensor:
            out = acts.clone()
            if index not in keeps:  # zero ablation
                out[:, first_position:] = 0
                return out
            if "codes" not in latents:  # the SAE's codes at this site, once per batch
                x = acts[:, first_position:].float().flatten(0, 1)  # (B·T', d)
                latents["codes"] = sae.encode(x)  # (B·T', F)
            codes = latents["codes"] * keeps[index]
            out[:, first_position:] = sae.decode(codes).view_as(acts[:, first_position:]).to(acts.dtype)
            return out

        for index, variant in enumerate(variants):
            interventions = {} if variant.kind == "clean" else {(layer, site): lambda a, i=index: splice(a, i)}
            with autocast(device):
                loss = model.forward_from(resid, layer, targets, interventions=interventions).loss
            totals[index] += float(loss) * targets.numel()
        count += targets.numel()
    rows = [
        {"kind": v.kind, "percent": v.percent, "n_features": v.n_features, "draw": v.draw, "loss": total / count}
        for v, total in zip(variants, totals)
    ]
    table = pd.DataFrame(rows)
    log.info("feature budget: %d variants on %d predictions; clean %.4f, spliced %.4f, zero %.4f",
             len(variants), count, *(table.loc[table.kind == k, "loss"].iloc[0] for k in ("clean", "spliced", "zero")))
    return table
