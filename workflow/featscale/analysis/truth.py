"""A planted family's measurement scored against its truth: does the chain find what is there, and
invent nothing?

The study's chain (SAE, feature store, exact correlation, the r table and the verdicts) ran on a
planted family (featscale.planted) exactly as on trained GPTs; here its outputs meet the truth:

    recovery      per model and planted feature it holds: the best cosine of any decoder row with the
                  feature's direction, and whether that reaches truth.recovered_cosine
    recovery_bins the share recovered per quantile bin of firing frequency (and of importance)
    pairs         per ordered pair (source, target): each counted source latent stands for the planted
                  feature its decoder row matches at truth.recovered_cosine or more; the AUC of the
                  measured max similarity of latents whose feature the target holds against those whose
                  feature it does not; the planted rank correlation of importance and being shared beside
                  the measured r, rho and partial r
    widths        per model: the features planted, and every measure the report uses for "more features"
    summary       the planted sharing strength, verdict (a) of the report, and whether it is right

Everything is read from the tables the study wrote (points, pairs, widths, verdicts) and the SAEs'
decoders; nothing is recomputed differently for a planted run. No torch.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

from featscale.analysis.tables import decoder_directions, saes_by_model
from featscale.analysis.verdicts import INCONCLUSIVE, NOT_REPRODUCED, REPRODUCED, combine, side
from featscale.config import TruthSettings, VerdictSettings
from featscale.io import write_frame, write_json
from featscale.names import parse_model_name
from featscale.planted import PlantedFamily, read_truth

MEASURES = ("l0", "live_latents", "non_collapsed_latents", "n_for_recovery_mean")


def unit_rows(matrix: np.ndarray) -> np.ndarray:
    """Rows scaled to unit norm (a zero row stays zero)."""
    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    return np.divide(matrix, norms, out=np.zeros_like(matrix, dtype=np.float64), where=norms > 0)


def latent_features(decoder: np.ndarray, family: PlantedFamily, model: str) -> tuple[np.ndarray, np.ndarray]:
    """For each latent (decoder rows (F, d)): the planted feature of `model` its row is closest to in
    cosine, and that cosine. Only the features the model holds are candidates."""
    held = np.flatnonzero(family.holds(model))
    cosine = unit_rows(decoder.astype(np.float64)) @ unit_rows(family.directions[model][held]).T  # (F, n_held)
    best = cosine.argmax(axis=1)
    return held[best], cosine[np.arange(len(cosine)), best]


def recovery_table(family: PlantedFamily, decoders: Mapping[str, np.ndarray], threshold: float) -> pd.DataFrame:
    """Per model and planted feature it holds: the best decoder cosine, the latent that reaches it,
    and whether it is recovered (cosine >= threshold)."""
    frames = []
    for model in family.models:
        held = np.flatnonzero(family.holds(model))
        cosine = unit_rows(decoders[model].astype(np.float64)) @ unit_rows(family.directions[model][held]).T  # (F, n)
        frames.append(pd.DataFrame({
            "model": model, "feature": held, "frequency": family.frequency[held], "importance": family.importance[held],
            "best_cosine": cosine.max(axis=0), "best_latent": cosine.argmax(axis=0),
            "recovered": cosine.max(axis=0) >= threshold,
        }))
    return pd.concat(frames, ignore_index=True)


def recovery_bins(recovery: pd.DataFrame, family: PlantedFamily, bins: int) -> pd.DataFrame:
    """The share of each model's planted features recovered, per quantile bin of firing frequency and
    of importance (bin edges over all the family's features, the same for every model)."""
    rows = []
    for column in ("frequency", "importance"):
        values = getattr(family, column)
        edges = np.quantile(values, np.linspace(0, 1, bins + 1))
        which = np.clip(np.searchsorted(edges, recovery[column], side="right") - 1, 0, bins - 1)
        for (model, index), group in recovery.groupby([recovery["model"], which], sort=False):
            rows.append({"model": model, "binned_by": column, "bin": int(index) + 1, "low": edges[index],
                         "high": edges[index + 1], "features": len(group), "recovered": int(group["recovered"].sum()),
                         "share_recovered": float(group["recovered"].mean()),
                         "mean_best_cosine": float(group["best_cosine"].mean())})
    rank = {model: i for i, model in enumerate(family.models)}
    return (pd.DataFrame(rows).sort_values(["binned_by", "model", "bin"], kind="stable",
                                           key=lambda c: c.map(rank) if c.name == "model" else c)
            .reset_index(drop=True))


def auc(positive: np.ndarray, negative: np.ndarray) -> float:
    """P(a positive scores above a negative), ties counting half (Mann-Whitney); NaN without both."""
    if len(positive) == 0 or len(negative) == 0:
        return math.nan
    ranks = stats.rankdata(np.concatenate([positive, negative]))
    return float((ranks[: len(positive)].sum() - len(positive) * (len(positive) + 1) / 2) / (len(positive) * len(negative)))


def bootstrap_auc(shared: np.ndarray, y: np.ndarray, resamples: int, confidence: float, seed: int) -> tuple[float, float]:
    """Percentile interval of the AUC over latents resampled with replacement."""
    if resamples == 0 or shared.all() or not shared.any():
        return math.nan, math.nan
    rng = np.random.default_rng(seed)
    values = []
    for _ in range(resamples):
        take = rng.integers(0, len(y), len(y))
        values.append(auc(y[take][shared[take]], y[take][~shared[take]]))
    tail = (1 - confidence) / 2
    low, high = np.nanquantile(values, [tail, 1 - tail])
    return float(low), float(high)


def pair_scores(
    points: pd.DataFrame, pairs: pd.DataFrame, family: PlantedFamily, decoders: Mapping[str, np.ndarray],
    settings: Mapping[str, Any],
) -> pd.DataFrame:
    """Per ordered pair, collapsed clusters masked (the latents verdict (a) reads): universality against
    the truth, and the planted relation of importance and sharing beside the measured one.

    `settings`: threshold (truth.recovered_cosine), resamples, confidence, seed (the AUC's interval),
    and verdicts (VerdictSettings): each pair is also decided as verdict (a) decides it (`criterion`:
    reproduced, not reproduced or inconclusive for this pair alone) and that is set against the truth.
    """
    verdicts, strength = settings["verdicts"], family.settings.sharing_strength
    assigned = {model: latent_features(decoders[model], family, model) for model in family.models}
    measured = pairs[pairs["mask"] == "masked"].set_index(["source", "target"])
    rows = []
    for (source, target), group in points[~points["collapsed"]].groupby(["source", "target"], sort=False):
        feature, cosine = (values[group["latent"].to_numpy()] for values in assigned[source])
        stands = cosine >= settings["threshold"]
        shared = family.holds(target)[feature[stands]]
        y = group["max_similarity"].to_numpy()[stands]
        x = group["relative_importance"].to_numpy()[stands]
        held = family.holds(source)
        truth_shared = family.holds(target)[held]
        low, high = bootstrap_auc(shared, y, settings["resamples"], settings["confidence"], settings["seed"])
        row = measured.loc[(source, target)]
        rows.append({
            "source": source, "target": target, "latents": len(group), "assigned": int(stands.sum()),
            "shared": int(shared.sum()), "not_shared": int((~shared).sum()),
            "auc": auc(y[shared], y[~shared]), "auc_low": low, "auc_high": high,
            "mean_max_similarity_shared": float(y[shared].mean()) if shared.any() else math.nan,
            "mean_max_similarity_not_shared": float(y[~shared].mean()) if (~shared).any() else math.nan,
            # the planted relation: importance against being held by the target, over the source's features
            "planted_rho": _spearman(family.importance[held], truth_shared),
            "planted_share_shared": float(truth_shared.mean()),
            "pearson_r": row["pearson_r"], "spearman_rho": row["spearman_rho"],
            "spearman_rho_low": row.get("spearman_rho_low", math.nan),
            "spearman_rho_high": row.get("spearman_rho_high", math.nan),
            "partial_r": row["partial_r_given_log_frequency"],
            "partial_r_low": row.get("partial_r_given_log_frequency_low", math.nan),
            "partial_r_high": row.get("partial_r_given_log_frequency_high", math.nan),
            # where a measured relation comes from: within latents of shared features, and of the others
            "rho_within_shared": _spearman(x[shared], y[shared]),
            "rho_within_not_shared": _spearman(x[~shared], y[~shared]),
            "rho_importance_shared": _spearman(x, shared),
        })
        last = rows[-1]
        last["criterion"] = combine([
            side(last["spearman_rho_low"], last["spearman_rho_high"], verdicts.min_rank_correlation),
            side(last["partial_r_low"], last["partial_r_high"], verdicts.min_partial_r)])
        # a pair whose target holds every (or none) of the source's features cannot show the relation
        contrast = 0 < last["planted_share_shared"] < 1
        last["against_truth"] = assess(strength, last["criterion"]) if contrast else no_contrast(last["criterion"])
    return pd.DataFrame(rows)


def _spearman(x: np.ndarray, y: np.ndarray) -> float:
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    if len(x) < 3 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return math.nan
    return float(stats.spearmanr(x, y).statistic)


def width_scores(family: PlantedFamily, recovery: pd.DataFrame, widths: pd.DataFrame) -> pd.DataFrame:
    """Per model: the planted count beside the recovered count and every measure the report uses for
    "more features" (NaN where the run could not measure it: N for recovery needs a language model)."""
    table = pd.DataFrame({"model": list(family.models),
                          "width": [parse_model_name(m)[0] for m in family.models],
                          "planted": family.held.sum(axis=1)})
    table["recovered"] = table["model"].map(recovery.groupby("model")["recovered"].sum())
    measured = widths.set_index("model")
    for column in MEASURES:
        table[column] = table["model"].map(measured[column]) if column in measured else math.nan
    return table


def tracks(table: pd.DataFrame, column: str) -> str:
    """Whether a measure orders the widths (first seeds) as the planted count does."""
    first = table[[parse_model_name(m)[1] == 0 for m in table["model"]]].sort_values("width")
    values = first[column].to_numpy(dtype=float)
    if len(values) < 2 or not np.isfinite(values).all():
        return "not measured"
    planted = np.sign(np.diff(first["planted"].to_numpy(dtype=float)))
    return "yes" if (np.sign(np.diff(values)) == planted).all() else "no"


def assess(strength: float, verdict: str) -> str:
    """Whether verdict (a) of the report is right about the planted family: sharing rises with
    importance when the strength is above 0, and is independent of it at 0."""
    planted = strength > 0
    if verdict == REPRODUCED:
        return "right" if planted else "wrong: it claims a relation that was not planted"
    if verdict == NOT_REPRODUCED:
        return "wrong: it denies the planted relation" if planted else "right"
    if verdict == INCONCLUSIVE:
        return "inconclusive: it misses the planted relation" if planted else "right: it claims no relation"
    raise ValueError(f"unknown verdict {verdict!r}")


def no_contrast(verdict: str) -> str:
    """The truth of a pair whose target holds every (or none) of the source's features: sharing cannot
    rise with importance there, whatever was planted."""
    claim = "; it claims a relation all the same" if verdict == REPRODUCED else ""
    return f"no contrast: the target holds all or none of the source's features{claim}"


def summary(family: PlantedFamily, tables: Mapping[str, pd.DataFrame], verdicts: pd.DataFrame,
            threshold: float) -> dict[str, Any]:
    """The figures the report states first: recovery, AUC, the claim against the truth, the widths."""
    recovery, pairs, widths = tables["recovery"], tables["pairs"], tables["widths"]
    claim = verdicts.set_index("claim").loc["(a)"]
    strength = family.settings.sharing_strength
    return {
        "sharing_strength": strength,
        "recovered_cosine": threshold,
        "recovered_share": {model: float(group["recovered"].mean()) for model, group in recovery.groupby("model")},
        "recovered_share_all": float(recovery["recovered"].mean()),
        "auc": {f"{row.source}__{row.target}": row.auc for row in pairs.itertuples()},
        "auc_min": float(pairs["auc"].min()), "auc_mean": float(pairs["auc"].mean()),
        "planted_rho": [float(pairs["planted_rho"].min()), float(pairs["planted_rho"].max())],
        "pearson_r": [float(pairs["pearson_r"].min()), float(pairs["pearson_r"].max())],
        "spearman_rho": [float(pairs["spearman_rho"].min()), float(pairs["spearman_rho"].max())],
        "partial_r": [float(pairs["partial_r"].min()), float(pairs["partial_r"].max())],
        "verdict": claim["verdict"], "verdict_measured": claim["measured"], "assessment": assess(strength, claim["verdict"]),
        "pairs_against_truth": {f"{row.source} → {row.target}": row.against_truth for row in pairs.itertuples()},
        "tracks_planted_count": {column: tracks(widths, column) for column in ("recovered", *MEASURES)},
    }


def run_score_truth(
    inputs: Mapping[str, str | Path | Sequence[str | Path]],
    outputs: Mapping[str, str | Path],
    *,
    truth: TruthSettings,
    verdicts: VerdictSettings,
    resamples: int,
    confidence: float,
    run_seed: int,
) -> dict[str, Any]:
    """Rule score_truth: one SAE spec's measurement against the planted family's truth (outputs:
    truth_recovery, truth_recovery_bins, truth_pairs, truth_widths as CSV, truth_summary as JSON).
    `inputs`: truth (the truth store), saes (each model's SAE weights), points, pairs, widths and
    verdict_table (the study's tables; the settings `verdicts` decide each pair as verdict (a) does)."""
    family = read_truth(inputs["truth"])
    decoders = {model: decoder_directions(path) for model, path in saes_by_model(inputs["saes"]).items()}
    recovery = recovery_table(family, decoders, truth.recovered_cosine)
    settings = {"threshold": truth.recovered_cosine, "resamples": resamples, "confidence": confidence, "seed": run_seed,
                "verdicts": verdicts}
    tables = {
        "recovery": recovery,
        "recovery_bins": recovery_bins(recovery, family, truth.frequency_bins),
        "pairs": pair_scores(pd.read_parquet(inputs["points"]), pd.read_csv(inputs["pairs"]), family, decoders, settings),
        "widths": width_scores(family, recovery, pd.read_csv(inputs["widths"])),
    }
    for name, frame in tables.items():
        write_frame(outputs[f"truth_{name}"], frame)
    result = summary(family, tables, pd.read_csv(inputs["verdict_table"]), truth.recovered_cosine)
    write_json(outputs["truth_summary"], json.loads(json.dumps(result, default=float)))
    return result
