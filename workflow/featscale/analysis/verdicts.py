"""Does this run reproduce the talk? One verdict per claim, decided by a criterion fixed in the config.

Each claim of the talk is restated as something this run measures, with an interval, and a
threshold from `verdicts` in the config, set before the data are seen:

    (a)  important latents are more universal, for every ordered pair of models
    (b)  r(importance, universality) rises with the source's width (the talk's table as printed)
    (b') r falls with the source's width (the same table as the authors' code computed it)
    (c)  a wider model's loss is lower at every number N of features kept, and the gap grows with N
    (d)  wider models store more features, compared at matched reconstruction

A claim is `reproduced` when its measured interval clears the threshold, `not reproduced` when
the interval lies on the wrong side of it, and `inconclusive` otherwise (or when what it needs was
not measured: no intervals, one width, no SAE at matched reconstruction). Every threshold can be
crossed either way: a test plants data on each side.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import NamedTuple

import numpy as np
import pandas as pd

from featscale.analysis.statistics import MIN_POINTS, pearson_r
from featscale.analysis.talk import TALK_R_AUTHORS, TALK_R_PRINTED, width_ranks
from featscale.config import VerdictSettings
from featscale.io import write_frame
from featscale.names import ordered, parse_model_name, width_of

REPRODUCED, NOT_REPRODUCED, INCONCLUSIVE = "reproduced", "not reproduced", "inconclusive"
NO_BUDGET = ("a planted family has no language model, so no next-token loss at N latents (the feature budget) "
             "was measured")
PASS, FAIL, UNCLEAR = "pass", "fail", "unclear"


class Verdict(NamedTuple):
    claim: str
    """(a), (b), (b'), (c) or (d)."""
    statement: str
    """The talk's claim, in words."""
    criterion: str
    """How it is decided here, with the thresholds of the config."""
    measured: str
    """What this run measured, with intervals."""
    verdict: str
    """reproduced, not reproduced or inconclusive."""
    detail: str = ""
    """Why: which pairs or widths decided it."""


def side(low: float, high: float, threshold: float) -> str:
    """pass when the interval lies above `threshold`, fail when below it, else unclear."""
    if math.isnan(low) or math.isnan(high):
        return UNCLEAR
    if low > threshold:
        return PASS
    if high < threshold:
        return FAIL
    return UNCLEAR


def combine(sides: Sequence[str]) -> str:
    """Every part passes: reproduced; any part fails: not reproduced; else inconclusive."""
    if sides and all(part == PASS for part in sides):
        return REPRODUCED
    if any(part == FAIL for part in sides):
        return NOT_REPRODUCED
    return INCONCLUSIVE


def _interval(value: float, low: float, high: float, digits: int = 3) -> str:
    if math.isnan(low) or math.isnan(high):
        return f"{value:.{digits}f}"
    return f"{value:.{digits}f} [{low:.{digits}f}, {high:.{digits}f}]"


# --- (a) -------------------------------------------------------------------------------------


def importance_claim(pairs: pd.DataFrame, settings: VerdictSettings) -> Verdict:
    """(a) on every ordered pair, masked latents: Spearman rho and the partial r given log firing
    frequency must both clear their thresholds with their whole bootstrap interval."""
    chosen = pairs[pairs["mask"] == "masked"]
    statement = "Important latents are more universal, for every ordered pair of models."
    criterion = (f"per ordered pair (collapsed clusters masked): Spearman ρ > {settings.min_rank_correlation} and "
                 f"the partial r given log firing frequency > {settings.min_partial_r}, each with its whole "
                 f"bootstrap interval; reproduced if every pair passes, not if any pair's interval lies below")
    columns = ("spearman_rho_low", "partial_r_given_log_frequency_low")
    if chosen.empty or not all(column in chosen for column in columns):
        return Verdict("(a)", statement, criterion, "no intervals (analysis.bootstrap_resamples is 0)", INCONCLUSIVE)
    sides, failed, empty = [], [], []
    for row in chosen.itertuples():
        if getattr(row, "n", MIN_POINTS) < MIN_POINTS:  # pairs.csv has n; a table made by hand may not
            empty.append(f"{row.source} → {row.target} (n = {row.n})")
        parts = (side(row.spearman_rho_low, row.spearman_rho_high, settings.min_rank_correlation),
                 side(row.partial_r_given_log_frequency_low, row.partial_r_given_log_frequency_high,
                      settings.min_partial_r))
        sides += parts
        if FAIL in parts:
            failed.append(f"{row.source} → {row.target}")
    rho, partial = chosen["spearman_rho"], chosen["partial_r_given_log_frequency"]
    measured = (f"ρ {rho.min():.3f} to {rho.max():.3f}, partial r {partial.min():.3f} to {partial.max():.3f} "
                f"over {len(chosen)} pairs; {sum(part == PASS for part in sides)} of {len(sides)} tests pass")
    detail = "; ".join(
        ([f"below the threshold: {', '.join(failed)}"] if failed else [])
        + ([f"too few latents outside collapsed clusters: {', '.join(empty)}"] if empty else [])
    )
    return Verdict("(a)", statement, criterion, measured, combine(sides), detail)


# --- (b) -------------------------------------------------------------------------------------


def row_slope(cells: Mapping[tuple[int, int], float]) -> float:
    """The slope of r against log2 of the source's width within each target's column, pooled:
    > 0 when rows rise with the source's width (the talk as printed), < 0 when they fall."""
    frame = pd.DataFrame([(s, t, r) for (s, t), r in cells.items() if s != t and np.isfinite(r)],
                         columns=["source", "target", "r"])
    if frame["source"].nunique() < 2:
        return math.nan
    frame["x"] = np.log2(frame["source"].astype(float))
    centred = frame[["x", "r"]] - frame.groupby("target")[["x", "r"]].transform("mean")
    spread = float((centred["x"] ** 2).sum())
    return float((centred["x"] * centred["r"]).sum() / spread) if spread > 0 else math.nan


def width_cells(values: Mapping[tuple[str, str], float]) -> dict[tuple[int, int], float]:
    """Per (source width, target width): the mean over model seeds of a per-pair value."""
    grouped: dict[tuple[int, int], list[float]] = {}
    for (source, target), value in values.items():
        grouped.setdefault((width_of(source), width_of(target)), []).append(value)
    return {key: float(np.mean(items)) for key, items in grouped.items()}


def _pair_samples(points: pd.DataFrame, resamples: int, seed: int) -> dict[tuple[str, str], np.ndarray]:
    """Per ordered pair, `resamples` bootstrap values of its masked Pearson r (latents resampled)."""
    rng = np.random.default_rng(seed)
    samples = {}
    for (source, target), group in points[~points["collapsed"]].groupby(["source", "target"], sort=False):
        if width_of(source) == width_of(target):
            continue
        x, y = group["relative_importance"].to_numpy(float), group["max_similarity"].to_numpy(float)
        take = rng.integers(0, len(x), size=(resamples, len(x)))  # (R, n)
        xs, ys = x[take], y[take]
        xs, ys = xs - xs.mean(1, keepdims=True), ys - ys.mean(1, keepdims=True)
        denominator = np.sqrt((xs**2).sum(1) * (ys**2).sum(1))
        samples[source, target] = np.where(denominator > 0, (xs * ys).sum(1) / np.maximum(denominator, 1e-300), np.nan)
    return samples


def row_pattern_claims(points: pd.DataFrame, settings: VerdictSettings, confidence: float, seed: int) -> list[Verdict]:
    """(b) and (b'): the pooled within-column slope of the masked r against log2 source width, with
    a bootstrap interval over latents, against +min_row_slope (rows rise) and −min_row_slope (fall)."""
    masked = points[~points["collapsed"]]
    values = {(s, t): pearson_r(g["relative_importance"], g["max_similarity"])
              for (s, t), g in masked.groupby(["source", "target"], sort=False) if width_of(s) != width_of(t)}
    slope = row_slope(width_cells(values))
    samples = _pair_samples(points, settings.resamples, seed)
    slopes = np.array([row_slope(width_cells({pair: draws[i] for pair, draws in samples.items()}))
                       for i in range(settings.resamples)])
    tail = (1 - confidence) / 2
    low, high = (np.nanquantile(slopes, [tail, 1 - tail]) if np.isfinite(slopes).any() else (math.nan, math.nan))
    measured = (f"slope of r per doubling of the source's width {_interval(slope, low, high)}; the talk's table "
                f"as printed {row_slope(TALK_R_PRINTED):+.3f}, as the authors computed it {row_slope(TALK_R_AUTHORS):+.3f}")
    threshold = settings.min_row_slope
    rises = side(low, high, threshold)
    falls = side(-high, -low, threshold)  # the mirror claim: −slope above the threshold
    few = width_of_count(points) < 3
    note = "fewer than three widths: a row has one other width to compare" if few else ""
    return [
        Verdict("(b)", "r rises with the source model's width (the talk's table as printed: 0.70 → 0.77 down "
                       "the rows).",
                f"the slope of r (masked) against log2 of the source's width, within each target's column, "
                f"> {threshold} with its whole {confidence:.0%} bootstrap interval; not reproduced if the "
                f"interval lies below", measured, INCONCLUSIVE if few else combine([rises]), note),
        Verdict("(b')", "r falls with the source model's width (the same table as the authors' code computed it: "
                        "the talk's row and column labels are reversed).",
                f"the same slope < −{threshold} with its whole interval", measured,
                INCONCLUSIVE if few else combine([falls]), note),
    ]


def width_of_count(points: pd.DataFrame) -> int:
    return len({width_of(model) for model in points["source"]})


# --- (c) -------------------------------------------------------------------------------------


def budget_claim(windows: pd.DataFrame | None, settings: VerdictSettings, confidence: float, seed: int) -> Verdict:
    """(c) per adjacent pair of widths (first seeds): ΔL(N) = L_narrow(N) − L_wide(N) on the same
    windows, bootstrapped over windows (paired); the wider model must be lower at every N (ΔL
    above min_budget_gap) and the gap must grow with N (slope of ΔL on ln N above min_gap_slope).
    `windows` None: no feature budget was measured (a planted family has no language model)."""
    statement = ("A wider model is better at every number N of features kept, and the gap grows as more "
                 "features are packed in.")
    criterion = (f"per adjacent pair of widths, on the keep-top-N curve (the same val windows): ΔL(N) = L_narrow − "
                 f"L_wide > {settings.min_budget_gap} nats at every N, and the slope of ΔL against ln N > "
                 f"{settings.min_gap_slope} nats, each with its whole {confidence:.0%} bootstrap interval over "
                 f"windows; not reproduced if either interval lies below")
    if windows is None:
        return Verdict("(c)", statement, criterion, "no feature budget in this run", INCONCLUSIVE, NO_BUDGET)
    keep = windows[windows["kind"] == "keep"]
    models = [model for model in ordered(keep["model"].unique()) if parse_model_name(model)[1] == 0]  # first seeds
    if len(models) < 2:
        return Verdict("(c)", statement, criterion, "fewer than two widths", INCONCLUSIVE)
    rng = np.random.default_rng(seed)
    sides, measured, failed = [], [], []
    tail = (1 - confidence) / 2
    for narrow, wide in zip(models, models[1:]):
        losses = {model: keep[keep["model"] == model].pivot(index="window", columns="n_features", values="loss")
                  for model in (narrow, wide)}
        gap = (losses[narrow] - losses[wide]).to_numpy()  # (windows, N)
        n = np.asarray(losses[narrow].columns, dtype=float)
        take = rng.integers(0, len(gap), size=(settings.resamples, len(gap)))
        gaps = gap[take].mean(axis=1)  # (R, N)
        log_n = np.log(n) - np.log(n).mean()
        slopes = (gaps - gaps.mean(1, keepdims=True)) @ log_n / (log_n @ log_n)
        slope = float((gap.mean(0) - gap.mean()) @ log_n / (log_n @ log_n))
        gap_low, gap_high = np.quantile(gaps, [tail, 1 - tail], axis=0)
        slope_low, slope_high = np.quantile(slopes, [tail, 1 - tail])
        worst = int(np.argmin(gap_low))
        parts = (side(float(gap_low[worst]), float(gap_high[worst]), settings.min_budget_gap),
                 side(float(slope_low), float(slope_high), settings.min_gap_slope))
        sides += parts
        if FAIL in parts:
            failed.append(f"{narrow} vs {wide}")
        measured.append(f"{narrow} vs {wide}: smallest ΔL {_interval(gap.mean(0)[worst], gap_low[worst], gap_high[worst])} "
                        f"at N = {int(n[worst])}, slope {_interval(slope, slope_low, slope_high)}")
    detail = f"fails for {', '.join(failed)}" if failed else ""
    return Verdict("(c)", statement, criterion, "; ".join(measured), combine(sides), detail)


# --- (d) -------------------------------------------------------------------------------------


def more_features_claim(widths: pd.DataFrame | None, matched: str | None, settings: VerdictSettings,
                        recovery: float) -> Verdict:
    """(d) from the widths table of an SAE spec at matched reconstruction (None: there is none):
    the top latents needed to recover `recovery` of the loss over mean ablation, and the live
    latents, must grow by min_feature_growth at every step in width (first seeds)."""
    statement = "Wider models store more features."
    growth = settings.min_feature_growth
    criterion = (f"on an SAE spec at matched reconstruction (TopK at one k for every width, named in "
                 f"verdicts.matched_spec): the top latents needed to recover {recovery:.0%} of the loss the full "
                 f"SAE recovers over mean ablation, and the live latents, each grow by ≥ {growth:.0%} at every step "
                 f"in width; not reproduced if either falls at some step")
    if widths is None or matched is None:
        return Verdict("(d)", statement, criterion, "no SAE spec at matched reconstruction in this run",
                       INCONCLUSIVE, "at one shared L1 coefficient, L0 and live latents grow with width mechanically "
                       "(inputs are scaled to norm √d); add a TopK spec and name it in verdicts.matched_spec")
    table = widths[[parse_model_name(model)[1] == 0 for model in widths["model"]]].sort_values("width")
    detail = ("N for recovery is missing at every width: no feature budget was measured (a planted family has no "
              "language model), or the full SAE recovers no loss" if table["n_for_recovery_mean"].isna().all() else "")
    sides, measured = [], []
    for column, label in (("n_for_recovery_mean", f"latents for {recovery:.0%} recovery"),
                          ("live_latents", "live latents")):
        values = table[column].to_numpy(dtype=float)
        ratios = values[1:] / values[:-1]
        for ratio in ratios:
            # growth by the margin passes; no growth at all (ratio <= 1) fails; in between is unclear
            sides.append(UNCLEAR if not np.isfinite(ratio) else PASS if ratio >= 1 + growth else FAIL if ratio <= 1
                         else UNCLEAR)
        measured.append(f"{label}: " + ", ".join(f"{m} {v:.0f}" for m, v in zip(table["model"], values)))
    return Verdict("(d)", statement, criterion, f"spec {matched}: " + "; ".join(measured), combine(sides), detail)


# --- the comparison with the talk's table ----------------------------------------------------


def talk_comparison(pairs: pd.DataFrame, controls: pd.DataFrame | None) -> pd.DataFrame:
    """Cell by cell (widths matched to the talk's by rank): the talk's r as printed and as the
    authors' code has it, this run's masked r (mean ± SD over model seeds), and, where the nulls
    and the SAE-seed ceiling ran, the mean max similarity normalised from the shifted null (0) to
    the source's SAE-seed ceiling (1)."""
    chosen = pairs[(pairs["mask"] == "masked") & (pairs["source"].map(width_of) != pairs["target"].map(width_of))]
    ranks = width_ranks(sorted({width_of(m) for m in (*chosen["source"], *chosen["target"])}))
    normalised = _normalised(controls) if controls is not None else {}
    rows = []
    for (source, target), group in chosen.groupby([chosen["source"].map(width_of), chosen["target"].map(width_of)]):
        talk = (ranks.get(source), ranks.get(target))
        r = group["pearson_r"].to_numpy(float)
        values = [normalised.get((row.source, row.target), np.nan) for row in group.itertuples()]
        rows.append({
            "source_width": source, "target_width": target,
            "talk_cell": f"{talk[0]} → {talk[1]}" if None not in talk else "-",
            "talk_r_printed": TALK_R_PRINTED.get(talk, np.nan), "talk_r_authors": TALK_R_AUTHORS.get(talk, np.nan),
            "r": float(r.mean()), "r_sd": float(r.std(ddof=1)) if len(r) > 1 else np.nan, "seeds": len(r),
            "normalised_universality": float(np.nanmean(values)) if np.isfinite(values).any() else np.nan,
        })
    return pd.DataFrame(rows)


def _normalised(controls: pd.DataFrame) -> dict[tuple[str, str], float]:
    """(source, target) -> (real − shifted null) / (source's SAE-seed ceiling − shifted null)."""
    ceilings = {row.source: row.real_mean for row in controls.itertuples() if row.kind == "sae_seed"}
    out = {}
    for row in controls[controls["kind"] != "sae_seed"].itertuples():
        span = ceilings.get(row.source, np.nan) - row.null_mean
        if np.isfinite(span) and span > 0:
            out[row.source, row.target] = (row.real_mean - row.null_mean) / span
    return out


# --- the rule --------------------------------------------------------------------------------


def run_verdicts(
    inputs: Mapping[str, Sequence[str] | str],
    outputs: Mapping[str, str],
    *,
    verdicts: VerdictSettings,
    matched: str | None,
    recovery: float,
    confidence: float,
    run_seed: int,
) -> pd.DataFrame:
    """Rule verdicts: the verdict on every claim of the talk for one SAE spec (outputs: verdicts,
    talk_comparison). `inputs`: pairs, points, controls, budget_windows (one CSV per model; none for
    a planted family), and matched_widths (the widths table of the spec at matched reconstruction;
    empty when none)."""
    pairs, points = pd.read_csv(inputs["pairs"]), pd.read_parquet(inputs["points"])
    budgets = inputs["budget_windows"]  # none for a planted family
    windows = pd.concat([pd.read_csv(path) for path in budgets], ignore_index=True) if budgets else None
    matched_widths = pd.read_csv(inputs["matched_widths"][0]) if inputs["matched_widths"] else None
    table = pd.DataFrame([
        importance_claim(pairs, verdicts),
        *row_pattern_claims(points, verdicts, confidence, run_seed),
        budget_claim(windows, verdicts, confidence, run_seed),
        more_features_claim(matched_widths, matched, verdicts, recovery),
    ])
    write_frame(outputs["verdicts"], table)
    write_frame(outputs["talk_comparison"], talk_comparison(pairs, pd.read_csv(inputs["controls"])))
    return table
