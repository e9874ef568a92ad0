"""Feature budgets: the ablation at p = 0 and the budget at N = all equal the spliced loss."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from conftest import tiny
from featscale.analysis.tables import features_for_recovery
from featscale.config import BudgetSettings, Reading
from featscale.models.gpt import GPT, GPTConfig
from featscale.models.source import GPTSource
from featscale.saes.base import SAEConfig, make_sae
from featscale.saes.budget import budget_table, budget_variants, feature_budget, keep_grid
from featscale.saes.evaluate import evaluate_sae

LAYER, SITE = 1, "resid_pre"


@pytest.fixture(scope="module")
def setup():
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=64, width=32, n_layers=2, head_size=8, context=16)).eval()
    sae = make_sae(SAEConfig("relu", d_in=32, n_latents=48, l1_coefficient=0.1))
    with torch.no_grad():
        sae.b_enc.fill_(0.05)  # many latents active, so masks matter
    windows = np.random.default_rng(0).integers(0, 64, size=(12, 17))
    return model, sae, windows


def run(setup, variants, first_position=1):
    """The budget's mean loss per variant (feature_budget gives one row per window)."""
    model, sae, windows = setup
    per_window = feature_budget(model, sae, windows, variants, Reading(LAYER, SITE, first_position, True),
                                batch_size=5, device=torch.device("cpu"))
    assert len(per_window) == len(variants) * len(windows)
    return budget_table(per_window)


def budget(percents, random_draws, keep_points) -> BudgetSettings:
    return tiny("feature_budget", percents=tuple(percents), random_draws=random_draws, keep_points=keep_points)


def test_p0_and_all_latents_equal_the_spliced_loss_of_evaluate_sae(setup):
    model, sae, windows = setup
    n = sae.config.n_latents
    variants = budget_variants(np.random.default_rng(1).random(n), np.arange(n), budget([0, 10], 2, 4), run_seed=0)
    table = run(setup, variants)
    reference = evaluate_sae(GPTSource(model), sae, windows, Reading(LAYER, SITE, 1, True), batch_size=5,
                             device=torch.device("cpu"))
    spliced = table.loc[table.kind == "spliced", "loss"].item()
    assert spliced == pytest.approx(reference["ce_sae"], rel=1e-6)
    assert table.loc[table.kind == "clean", "loss"].item() == pytest.approx(reference["ce_clean"], rel=1e-6)
    assert table.loc[table.kind == "zero", "loss"].item() == pytest.approx(reference["ce_zero"], rel=1e-6)
    assert table.loc[table.kind == "mean", "loss"].item() == pytest.approx(reference["ce_mean"], rel=1e-6)
    at_zero = table[(table.kind.isin(["top", "random", "frequent"])) & (table.percent == 0)]
    assert len(at_zero) == 4 and np.allclose(at_zero["loss"], spliced, rtol=1e-6)
    everything = table[(table.kind == "keep") & (table.n_features == n)]
    assert everything["loss"].item() == pytest.approx(spliced, rel=1e-6)
    ablated = table[(table.kind == "top") & (table.percent == 10)]["loss"].item()
    assert ablated != pytest.approx(spliced, rel=1e-6)  # removing latents changes the loss


def test_variants_rank_by_importance_and_frequency_and_random_draws_are_seeded():
    importance = np.array([0.1, 5.0, 3.0, 0.2, 4.0, 1.0, 0.3, 0.4, 0.5, 0.6])
    count = np.array([9, 0, 1, 8, 2, 7, 3, 4, 5, 6])
    variants = budget_variants(importance, count, budget([20], 3, 4), run_seed=0)
    by_kind = {(v.kind, v.draw): v for v in variants if v.kind in ("top", "random", "frequent")}
    assert set(np.flatnonzero(~by_kind["top", 0].keep)) == {1, 4}  # the two most important
    assert set(np.flatnonzero(~by_kind["frequent", 0].keep)) == {0, 3}  # the two most frequent
    draws = [frozenset(np.flatnonzero(~by_kind["random", d].keep)) for d in range(3)]
    assert all(len(d) == 2 for d in draws) and len(set(draws)) > 1
    again = budget_variants(importance, count, budget([20], 3, 4), run_seed=0)
    assert all(np.array_equal(a.keep, b.keep) for a, b in zip(variants, again) if a.keep is not None)
    kept = [v for v in variants if v.kind == "keep"]
    assert [v.n_features for v in kept] == keep_grid(10, 4) and kept[-1].n_features == 10
    assert set(np.flatnonzero(kept[1].keep)) == set(np.argsort(-importance)[: kept[1].n_features])


def test_keep_grid_is_log_spaced_distinct_and_ends_at_all():
    grid = keep_grid(24576, 16)
    assert grid[0] == 1 and grid[-1] == 24576 and grid == sorted(set(grid))
    assert keep_grid(3, 16) == [1, 2, 3]


def test_features_for_recovery_interpolates_in_log_n():
    rows = [("zero", 0, 10.0), ("spliced", 100, 4.0)]
    rows += [("keep", n, loss) for n, loss in ((1, 9.0), (10, 7.0), (100, 4.0))]
    table = pd.DataFrame(rows, columns=["kind", "n_features", "loss"])
    # recovery: N=10 -> 0.5, N=100 -> 1.0; 0.9 lies 80% of the way in log N from 10 to 100
    assert features_for_recovery(table, 0.9) == pytest.approx(10 ** 1.8)
    assert features_for_recovery(table, 0.1) == pytest.approx(1.0)
    flat = table.assign(loss=[10.0, 10.0, 10.0, 10.0, 10.0])
    assert np.isnan(features_for_recovery(flat, 0.9))
