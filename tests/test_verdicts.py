"""Every verdict of the report can come out either way: data planted on each side of its criterion."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from conftest import tiny
from featscale.analysis.talk import TALK_R_AUTHORS, TALK_R_PRINTED
from featscale.analysis.verdicts import (
    INCONCLUSIVE,
    NOT_REPRODUCED,
    REPRODUCED,
    budget_claim,
    importance_claim,
    more_features_claim,
    row_pattern_claims,
    row_slope,
    talk_comparison,
)

SETTINGS = tiny("verdicts", resamples=100)


def test_the_talks_table_is_kept_as_printed_and_as_the_authors_figure_has_it():
    assert TALK_R_PRINTED[128, 256] == 0.7002 and TALK_R_PRINTED[768, 512] == 0.7735
    # the talk's labels reversed: its row "128" is width 768's; 0.6646 is the figure's 0.6446
    assert TALK_R_AUTHORS[768, 512] == 0.7002 and TALK_R_AUTHORS[128, 256] == 0.7735
    assert TALK_R_AUTHORS[256, 128] == 0.6446 and 0.6646 not in TALK_R_AUTHORS.values()
    assert row_slope(TALK_R_PRINTED) > 0 > row_slope(TALK_R_AUTHORS)  # rows rise as printed, fall as computed


# --- (a) -------------------------------------------------------------------------------------


def pairs_with(rho: list[tuple[float, float, float]], partial: list[tuple[float, float, float]]) -> pd.DataFrame:
    """A pairs table: per pair (value, low, high) of Spearman rho and of the partial r, masked."""
    rows = []
    for i, ((r, r_lo, r_hi), (p, p_lo, p_hi)) in enumerate(zip(rho, partial)):
        rows.append({"source": f"w{8 * (i + 1)}", "target": "w64", "mask": "masked", "spearman_rho": r,
                     "spearman_rho_low": r_lo, "spearman_rho_high": r_hi, "partial_r_given_log_frequency": p,
                     "partial_r_given_log_frequency_low": p_lo, "partial_r_given_log_frequency_high": p_hi})
    return pd.DataFrame(rows)


@pytest.mark.parametrize("rho, partial, expected", [
    ([(0.5, 0.4, 0.6), (0.3, 0.2, 0.4)], [(0.4, 0.3, 0.5), (0.3, 0.15, 0.45)], REPRODUCED),
    # one pair's rho interval lies below 0.1: importance does not rank universality there
    ([(0.5, 0.4, 0.6), (-0.2, -0.3, -0.1)], [(0.4, 0.3, 0.5), (0.3, 0.2, 0.4)], NOT_REPRODUCED),
    # rho clears it, but given log frequency nothing is left: the relation was frequency's
    ([(0.5, 0.4, 0.6), (0.5, 0.4, 0.6)], [(0.4, 0.3, 0.5), (0.0, -0.05, 0.05)], NOT_REPRODUCED),
    ([(0.5, 0.4, 0.6), (0.12, 0.05, 0.2)], [(0.4, 0.3, 0.5), (0.3, 0.2, 0.4)], INCONCLUSIVE),
])
def test_claim_a_needs_every_pairs_rho_and_partial_r_above_the_threshold(rho, partial, expected):
    verdict = importance_claim(pairs_with(rho, partial), SETTINGS)
    assert verdict.verdict == expected, verdict
    if expected == NOT_REPRODUCED:
        assert "w16 → w64" in verdict.detail


def test_claim_a_without_intervals_is_inconclusive_not_reproduced():
    pairs = pairs_with([(0.9, 0.8, 1.0)], [(0.9, 0.8, 1.0)]).drop(columns=["spearman_rho_low", "spearman_rho_high"])
    assert importance_claim(pairs, SETTINGS).verdict == INCONCLUSIVE


# --- (b) -------------------------------------------------------------------------------------


def points_with_rows(rising: bool, n: int = 600, seed: int = 0) -> pd.DataFrame:
    """Three widths; r(importance, max similarity) planted to rise (or fall) with the source's width."""
    rng = np.random.default_rng(seed)
    widths = (32, 64, 128)
    strength = dict(zip(widths, (0.2, 0.5, 0.8) if rising else (0.8, 0.5, 0.2)))
    frames = []
    for source in widths:
        for target in widths:
            if source == target:
                continue
            x = rng.random(n)
            y = strength[source] * x + (1 - strength[source]) * rng.random(n)
            frames.append(pd.DataFrame({"source": f"w{source}", "target": f"w{target}", "relative_importance": x,
                                        "max_similarity": y, "collapsed": False}))
    return pd.concat(frames, ignore_index=True)


@pytest.mark.parametrize("rising", [True, False])
def test_claims_b_and_b_prime_follow_the_planted_row_pattern(rising):
    printed, computed = row_pattern_claims(points_with_rows(rising), SETTINGS, confidence=0.95, seed=0)
    assert printed.claim == "(b)" and computed.claim == "(b')"
    assert printed.verdict == (REPRODUCED if rising else NOT_REPRODUCED)
    assert computed.verdict == (NOT_REPRODUCED if rising else REPRODUCED)


def test_a_flat_row_pattern_is_inconclusive_both_ways():
    points = points_with_rows(True)
    points["max_similarity"] = np.random.default_rng(1).random(len(points))  # no relation anywhere
    printed, computed = row_pattern_claims(points, SETTINGS, confidence=0.95, seed=0)
    assert printed.verdict == computed.verdict == INCONCLUSIVE


# --- (c) -------------------------------------------------------------------------------------


def budget_windows(gap_at_few: float, gap_at_all: float, n_windows: int = 60, seed: int = 0) -> pd.DataFrame:
    """Per-window keep-top-N losses of w32 and w64; the gap L_w32 − L_w64 goes linearly in ln N."""
    rng = np.random.default_rng(seed)
    grid = np.array([1, 4, 16, 64, 256])
    gaps = np.interp(np.log(grid), [0, np.log(256)], [gap_at_few, gap_at_all])
    base = 5.0 - 0.2 * np.log(grid)
    rows = []
    for window in range(n_windows):
        noise = rng.normal(0, 0.05, len(grid))
        for model, losses in (("w64", base + noise), ("w32", base + noise + gaps + rng.normal(0, 0.02, len(grid)))):
            rows += [{"model": model, "kind": "keep", "percent": np.nan, "n_features": int(n), "draw": 0,
                      "window": window, "loss": float(loss)} for n, loss in zip(grid, losses)]
    return pd.DataFrame(rows)


@pytest.mark.parametrize("few, everything, expected", [
    (0.05, 0.3, REPRODUCED),  # lower at every N, the gap growing with N
    (0.3, 0.05, NOT_REPRODUCED),  # lower at every N, but the gap shrinks: the talk's "increases" fails
    (0.1, -0.2, NOT_REPRODUCED),  # the narrower model is better with all latents kept
])
def test_claim_c_needs_the_wider_model_lower_at_every_n_and_a_growing_gap(few, everything, expected):
    verdict = budget_claim(budget_windows(few, everything), SETTINGS, confidence=0.95, seed=0)
    assert verdict.verdict == expected, verdict.measured


# --- (d) -------------------------------------------------------------------------------------


def widths_with(needed: list[float], live: list[float]) -> pd.DataFrame:
    return pd.DataFrame({"model": ["w32", "w64", "w128"], "width": [32, 64, 128],
                         "n_for_recovery_mean": needed, "live_latents": live})


@pytest.mark.parametrize("needed, live, expected", [
    ([100, 150, 300], [500, 700, 900], REPRODUCED),
    ([300, 150, 100], [500, 700, 900], NOT_REPRODUCED),
    ([100, 150, 300], [900, 700, 500], NOT_REPRODUCED),
    ([100, 102, 300], [500, 700, 900], INCONCLUSIVE),  # grows, but by less than min_feature_growth at a step
])
def test_claim_d_counts_features_at_matched_reconstruction(needed, live, expected):
    verdict = more_features_claim(widths_with(needed, live), "topk", SETTINGS, recovery=0.9)
    assert verdict.verdict == expected


def test_claim_d_without_a_matched_spec_is_inconclusive_and_says_why():
    verdict = more_features_claim(None, None, SETTINGS, recovery=0.9)
    assert verdict.verdict == INCONCLUSIVE and "mechanically" in verdict.detail


def test_without_a_feature_budget_claims_c_and_d_are_inconclusive_and_say_why():
    budget = budget_claim(None, SETTINGS, confidence=0.95, seed=0)
    assert budget.verdict == INCONCLUSIVE and "no language model" in budget.detail
    widths = widths_with([np.nan] * 3, [500, 700, 900])  # a planted family: live latents, no N for recovery
    more = more_features_claim(widths, "main", SETTINGS, recovery=0.9)
    assert more.verdict == INCONCLUSIVE and "N for recovery is missing at every width" in more.detail


# --- the talk beside this run ----------------------------------------------------------------


def test_the_talk_comparison_matches_widths_by_rank_and_averages_seeds():
    pairs = pd.DataFrame([
        {"source": source, "target": target, "mask": "masked", "pearson_r": r}
        for source, target, r in (("w32", "w64", 0.5), ("w32", "w64-s1", 0.7), ("w64", "w32", 0.4),
                                  ("w64-s1", "w32", 0.2), ("w32", "w96", 0.1), ("w96", "w128", 0.3),
                                  ("w64", "w64-s1", 0.9))
    ])
    table = talk_comparison(pairs, None).set_index(["source_width", "target_width"])
    assert (64, 64) not in table.index  # same-width replicates are no cell of the talk's table
    cell = table.loc[(32, 64)]
    assert cell["r"] == pytest.approx(0.6) and cell["r_sd"] == pytest.approx(np.std([0.5, 0.7], ddof=1))
    assert cell["seeds"] == 2 and cell["talk_cell"] == "128 → 256" and cell["talk_r_printed"] == 0.7002
    assert table.loc[(96, 128), "talk_r_authors"] == TALK_R_AUTHORS[512, 768]


def test_the_report_says_what_the_low_importance_high_similarity_latents_are():
    from featscale.analysis.report import cluster_findings

    rows = []
    for latent, (x, y, frequency, ratio) in enumerate([(0.02, 0.95, 0.45, 0.001), (0.05, 0.97, 0.40, 0.002),
                                                        (0.03, 0.92, 0.01, 1.0), (0.8, 0.95, 0.02, 1.1)]):
        rows.append({"source": "w64", "target": "w32", "latent": latent, "relative_importance": x, "max_similarity": y,
                     "best_partner": latent, "frequency": frequency, "decoder_norm_ratio": ratio, "collapsed": False})
        rows.append({"source": "w32", "target": "w64", "latent": latent, "relative_importance": 0.5, "max_similarity": 0.5,
                     "best_partner": latent, "frequency": 0.5 if latent < 2 else 0.01, "decoder_norm_ratio": 1.0,
                     "collapsed": False})
    (line,) = cluster_findings(pd.DataFrame(rows))
    assert line.startswith("w64: 3 latents") and "67% of them dense" in line and "67% with a decoder row below" in line
    assert "dense in 67% of cases" in line
