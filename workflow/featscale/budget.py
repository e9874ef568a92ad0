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
from collections.abc import Sequence
from typing import NamedTuple

import numpy as np
import pandas as pd
import torch
from tqdm import tqdm

from featscale.model import GPT
from featscale.runtime import autocast
from featscale.sae import SparseAutoencoder

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


def budget_variants(
    importance: np.ndarray,
    count: np.ndarray,
    percents: Sequence[float],
    random_draws: int,
    keep_points: int,
    seed: int,
) -> list[Variant]:
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

    rng = np.random.default_rng([seed, 7])
    for percent in percents:
        removed = int(round(n * percent / 100))
        variants.append(Variant("top", percent, n - removed, 0, without(by_importance[:removed])))
        variants.append(Variant("frequent", percent, n - removed, 0, without(by_frequency[:removed])))
        for draw in range(random_draws):
            variants.append(Variant("random", percent, n - removed, draw, without(rng.permutation(n)[:removed])))
    for kept in keep_grid(n, keep_points):
        keep = np.zeros(n, dtype=bool)
        keep[by_importance[:kept]] = True
        variants.append(Variant("keep", np.nan, kept, 0, keep))
    return variants


@torch.no_grad()
def feature_budget(
    model: GPT,
    sae: SparseAutoencoder,
    windows: np.ndarray,
    layer: int,
    site: str,
    first_position: int,
    variants: Sequence[Variant],
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


def features_for_recovery(table: pd.DataFrame, share: float) -> float:
    """The smallest N whose loss recovers `share` of the full SAE's recovery over zero ablation.

    Recovery of N = (L_zero − L_N) / (L_zero − L_spliced); N is interpolated linearly in
    log N between grid points. NaN if the full SAE recovers nothing.
    """
    zero = float(table.loc[table.kind == "zero", "loss"].iloc[0])
    full = float(table.loc[table.kind == "spliced", "loss"].iloc[0])
    if not zero > full:
        return float("nan")
    keep = table[table.kind == "keep"].sort_values("n_features")
    n = keep["n_features"].to_numpy(dtype=float)
    recovery = (zero - keep["loss"].to_numpy()) / (zero - full)
    above = np.flatnonzero(recovery >= share)
    if len(above) == 0:
        return float("nan")
    i = above[0]
    if i == 0:
        return float(n[0])
    # between grid points i - 1 (below share) and i (at or above): interpolate in log N
    fraction = (share - recovery[i - 1]) / (recovery[i] - recovery[i - 1])
    return float(np.exp(np.log(n[i - 1]) + fraction * (np.log(n[i]) - np.log(n[i - 1]))))
