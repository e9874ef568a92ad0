"""The study's tables, from the stores: importance against universality per ordered pair, and
what each width does with its features. Pure reading and arithmetic; the fits and statistics
are featscale.analysis.statistics' and .fits', the figures featscale.analysis.figures'.

Ordered pair (source, target): x = relative importance of each counted source latent,
y = its signed max Pearson correlation with any counted target latent (universality).
Every statistic is given for all counted source latents ("all") and without the latents in
collapsed clusters of decoder directions ("masked"), the authors' hand-made mask made
automatic. The mask applies to the source side; a target's max runs over all its counted
latents.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

from featscale.analysis.correlation import R_TOLERANCE, counted_latents, open_correlations
from featscale.analysis.fits import bootstrap_talk_compatible, bootstrap_talk_curve, fit_talk_compatible, fit_talk_curve
from featscale.analysis.scaling import scaling_fits_json, scaling_table
from featscale.analysis.statistics import MIN_POINTS, Interval, bootstrap_intervals, pair_statistics, pearson_r
from featscale.analysis.universality import collapsed_latents, r_table, relative_importance
from featscale.config import AnalysisSettings, ControlSettings
from featscale.features.store import open_features
from featscale.io import ArtifactError, recorded_sha256, verify_safetensors, write_frame, write_json, write_text
from featscale.names import (
    SAE_CONFIG_FILENAME,
    SAE_RULE,
    ordered,
    parse_model_name,
    replicate_of,
    sae_seed_replicate_name,
    untrained_model_name,
    width_of,
)

log = logging.getLogger(__name__)
MASKS = ("all", "masked")
DENSE_FREQUENCY = 0.1  # a latent active on more than this share of tokens is dense (as in eval.json)
SHRUNK_DECODER = 0.1  # a decoder row below this share of the median live row has all but vanished


def decoder_directions(sae_weights: str | Path) -> np.ndarray:
    """W_dec (n_latents, d_in) of a saved SAE (SAELens layout), as float32 numpy; the file and its
    cfg.json are checked against the SHA-256s the weights record."""
    from safetensors.numpy import load_file

    verify_safetensors(sae_weights, SAE_RULE, config=Path(sae_weights).parent / SAE_CONFIG_FILENAME)
    return load_file(str(sae_weights))["W_dec"].astype(np.float32)


def latent_census(
    features: Mapping[str, str | Path],
    sae_weights: Mapping[str, str | Path],
    min_count: int,
    analysis: AnalysisSettings,
) -> tuple[pd.DataFrame, dict[str, np.ndarray]]:
    """Per model: how many latents are dead, rare, counted, collapsed; and each model's collapse mask."""
    rows, masks = [], {}
    for model in ordered(features):
        directions = decoder_directions(sae_weights[model])  # the weights verified first, then their hash used
        store = open_features(features[model])
        store.check_made_with(sae_weights[model], recorded_sha256(sae_weights[model]))
        counted = counted_latents(store, min_count)
        collapsed = collapsed_latents(directions, analysis.collapsed_threshold, analysis.collapsed_min_neighbours)
        masks[model] = collapsed.collapsed
        live = store.stat("count") > 0
        frequency = store.stat("count") / max(store.n_tokens, 1)
        rows.append({
            "model": model,
            "width": width_of(model),
            "n_latents": store.n_latents,
            "dead": counted.dead,
            "rare": counted.rare,
            "counted": len(counted.latents),
            "live": int(live.sum()),
            "collapsed": int(collapsed.collapsed.sum()),
            "collapsed_counted": int(collapsed.collapsed[counted.latents].sum()),
            "non_collapsed_live": int((live & ~collapsed.collapsed).sum()),
            "dense": int((frequency > DENSE_FREQUENCY).sum()),
            "shrunk_decoder": int((live & (decoder_norm_ratio(store) < SHRUNK_DECODER)).sum()),
            "l0": float(store.attrs["l0"]),
            "n_tokens": store.n_tokens,
        })
    return pd.DataFrame(rows), masks


def universality_points(
    features: Mapping[str, str | Path],
    correlations: Mapping[tuple[str, str], str | Path],
    masks: Mapping[str, np.ndarray],
    min_count: int,
    nulls: Mapping[tuple[str, str], str | Path] | None = None,
    untrained: Mapping[tuple[str, str], str | Path] | None = None,
) -> pd.DataFrame:
    """One row per (source, target, counted source latent): x, y, partner, frequency, collapsed,
    and, when given, the latent's null max similarities: `nulls` holds the shifted-token null of
    each pair (a, b) of `correlations`; `untrained` the correlation of a source (side a) with an
    untrained model (side b), keyed (source, untrained model), and the pair (source, target)
    reads the one with the untrained model of the target's width."""
    stores = {model: open_features(path) for model, path in features.items()}
    frames = []
    for (a, b), path in correlations.items():
        store = _correlations_of(path, {"a": stores[a], "b": stores[b]})
        for source, target, side in ((a, b, "a"), (b, a, "b")):
            frame = _pair_points(source, target, stores[source], store.side(side), masks[source], min_count=min_count,
                                 path=path)
            latents = frame["latent"].to_numpy()
            frame["null_max_similarity"] = (
                _null_max_similarity(nulls[a, b], side, stores[source], latents, path) if nulls else np.nan
            )
            frame["untrained_max_similarity"] = np.nan
            if untrained:
                key = (source, untrained_model_name(width_of(target)))
                frame["untrained_max_similarity"] = _null_max_similarity(untrained[key], "a", stores[source], latents,
                                                                         path)
            frames.append(frame)
    return pd.concat(frames, ignore_index=True)


def sae_seed_points(
    features: Mapping[str, str | Path],
    correlations: Mapping[str, str | Path],
    masks: Mapping[str, np.ndarray],
    min_count: int,
    replicate: str,
    nulls: Mapping[str, str | Path] | None = None,
) -> pd.DataFrame:
    """The SAE-seed ceiling as points: per model of `correlations` ({model: the correlation of its
    SAE (side a) with the SAE-seed replicate `replicate` (side b)}), one row per counted latent of
    the model's SAE, target `<model>/<replicate>`, and its shifted null when `nulls` are given."""
    frames = []
    for model, path in correlations.items():
        store = open_features(features[model])
        frame = _pair_points(model, f"{model}/{replicate}", store, _correlations_of(path, {"a": store}).side("a"),
                             masks[model], min_count=min_count, path=path)
        latents = frame["latent"].to_numpy()
        frame["null_max_similarity"] = (_null_max_similarity(nulls[model], "a", store, latents, path) if nulls
                                        else np.nan)
        frame["untrained_max_similarity"] = np.nan
        frames.append(frame)
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def _pair_points(source: str, target: str, source_store: Any, values: Mapping[str, np.ndarray],
                 mask: np.ndarray, *, min_count: int, path: str | Path) -> pd.DataFrame:
    """x, y and the rest for the counted latents of `source` in one side of a correlation."""
    counted = counted_latents(source_store, min_count).latents
    if not np.array_equal(counted, values["latent"]):
        raise ValueError(
            f"{path} counts other latents of {source} than its feature store at min_count = "
            f"{min_count}: rerun the correlation with the current settings"
        )
    keep = np.zeros(source_store.n_latents, dtype=bool)
    keep[counted] = True
    importance = source_store.stat("importance")
    _check_fit_inputs(importance[counted], values, counted, pair=(source, target), paths=(source_store.path, path))
    return pd.DataFrame({
        "source": source,
        "target": target,
        "latent": counted,
        "relative_importance": relative_importance(importance, keep)[counted],
        "max_similarity": values["max_similarity"],
        "best_partner": values["best_partner"],
        "frequency": source_store.stat("count")[counted] / source_store.n_tokens,
        "decoder_norm_ratio": decoder_norm_ratio(source_store)[counted],
        "collapsed": mask[counted],
    })


def decoder_norm_ratio(store: Any) -> np.ndarray:
    """Each latent's decoder-row norm over the median of the live latents': a latent far below 1 keeps
    firing while its row has all but vanished (its importance, max x norm, then says little)."""
    norms = store.stat("decoder_norm").astype(np.float64)
    live = store.stat("count") > 0
    median = np.median(norms[live]) if live.any() else np.nan
    return norms / median if median > 0 else np.full_like(norms, np.nan)


def _check_fit_inputs(importance: np.ndarray, values: Mapping[str, np.ndarray], latents: np.ndarray, *,
                      pair: tuple[str, str], paths: tuple[Path, str | Path]) -> None:
    """Stop at a fit input that cannot be: a non-finite importance (paths[0], the source's feature store),
    or a max similarity that is not finite or lies outside [-1, 1] beyond rounding (paths[1], the
    correlation store). `importance` and `values` are those of the counted `latents`."""
    similarity = values["max_similarity"]
    for what, value, bad, path in (
        ("importance", importance, ~np.isfinite(importance), paths[0]),
        ("max similarity", similarity, ~(np.abs(similarity) <= 1 + R_TOLERANCE), paths[1]),
    ):
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise ArtifactError(
                f"pair ({pair[0]}, {pair[1]}): latent {latents[i]} of {pair[0]} has {what} {value[i]:.6g}, which "
                f"cannot be ({int(bad.sum())} such latent{'s' if bad.sum() > 1 else ''} in all): {path} is corrupt. "
                f"Delete it and let its rule make it again: rm -rf '{path}' && snakemake '{path}' (with this run's "
                "--configfile), then rerun the workflow."
            )


def _correlations_of(path: str | Path, sides: Mapping[str, Any]) -> Any:
    """The correlation store at `path`, checked to have been computed from the feature stores `sides`
    ({'a': store, 'b': store}; a side whose store is not at hand is left out)."""
    store = open_correlations(path)
    for side, features in sides.items():
        store.check_computed_from(side, features)
    return store


def _null_max_similarity(path: str | Path, side: str, source_store: Any, latents: np.ndarray,
                         real: str | Path) -> np.ndarray:
    """One side's max similarity in a null's correlation, for the same latents as the real one."""
    values = _correlations_of(path, {side: source_store}).side(side)
    if not np.array_equal(values["latent"], latents):
        raise ValueError(f"{path} counts other latents than {real}: rerun both with one min_count")
    return values["max_similarity"]


def pair_table(points: pd.DataFrame, analysis: AnalysisSettings, seed: int) -> pd.DataFrame:
    """Per ordered pair and mask: r, rho, partial r (given log frequency), both fits, intervals.

    Bootstrap intervals over latents: `analysis.bootstrap_resamples` for r, rho and the talk's
    (b, c) (`*_low`, `*_high`), `analysis.bootstrap_fit_resamples` for the authors' (a, b, c),
    whose KDE weights make each resample as slow as the fit itself.
    """
    resamples, confidence = analysis.bootstrap_resamples, analysis.confidence
    rows = []
    for (source, target), group in points.groupby(["source", "target"], sort=False):
        for mask in MASKS:
            chosen = group if mask == "all" else group[~group["collapsed"]]
            if len(chosen) < MIN_POINTS:  # e.g. every counted latent in a collapsed cluster
                log.warning("%s -> %s (%s): %d latents, fewer than %d: no statistics", source, target, mask,
                            len(chosen), MIN_POINTS)
                rows.append({"source": source, "target": target, "mask": mask, "n": len(chosen)})
                continue
            x = chosen["relative_importance"].to_numpy()
            y = chosen["max_similarity"].to_numpy()
            statistics = pair_statistics(x, y, chosen["frequency"].to_numpy())
            talk = fit_talk_curve(x, y)
            frequency = chosen["frequency"].to_numpy()
            row: dict[str, Any] = {
                "source": source, "target": target, "mask": mask, "n": statistics.n,
                "pearson_r": statistics.pearson_r, "spearman_rho": statistics.spearman_rho,
                "partial_r_given_log_frequency": statistics.partial_r,
                **robust_variants(x, y, frequency),
                "b": talk.b, "c": talk.c, "b_error": talk.b_error, "c_error": talk.c_error,
                "r_squared": talk.r_squared, "fit_converged": talk.converged, "fit_reason": talk.reason,
                "mean_max_similarity": float(np.mean(y)),
            }
            if resamples:
                with_frequency = np.column_stack([y, frequency])  # resampled as rows, with their latent's x
                partial = bootstrap_intervals(
                    x, with_frequency, lambda u, v: pair_statistics(u, v[:, 0], v[:, 1]).partial_r,
                    resamples, confidence, seed,
                )
                row.update(partial_r_given_log_frequency_low=partial.low, partial_r_given_log_frequency_high=partial.high)
                r_interval = bootstrap_intervals(x, y, pearson_r, resamples, confidence, seed)
                rho_interval = bootstrap_intervals(
                    x, y, lambda u, v: float(pd.Series(u).corr(pd.Series(v), method="spearman")),
                    resamples, confidence, seed,
                )
                row.update(pearson_r_low=r_interval.low, pearson_r_high=r_interval.high,
                           spearman_rho_low=rho_interval.low, spearman_rho_high=rho_interval.high)
                fit_interval = bootstrap_talk_curve(x, y, talk, resamples, confidence, seed)
                row.update({f"{name}_{end}": float(bound[i]) for i, name in enumerate(("b", "c"))
                            for end, bound in (("low", fit_interval.low), ("high", fit_interval.high))})
            if analysis.talk_compatible:
                authors = fit_talk_compatible(x, y)
                row.update(authors_a=authors.a, authors_b=authors.b, authors_c=authors.c,
                           authors_a_error=authors.a_error, authors_b_error=authors.b_error,
                           authors_c_error=authors.c_error, authors_r_squared=authors.r_squared,
                           authors_converged=authors.converged, authors_reason=authors.reason)
                if analysis.bootstrap_fit_resamples:
                    interval = (bootstrap_talk_compatible(x, y, analysis.bootstrap_fit_resamples, confidence, seed)
                                if authors.converged
                                else Interval(np.full(3, np.nan), np.full(3, np.nan)))
                    row.update({f"authors_{name}_{end}": float(bound[i]) for i, name in enumerate(("a", "b", "c"))
                                for end, bound in (("low", interval.low), ("high", interval.high))})
            rows.append(row)
            log.info("%s -> %s (%s): n %d, r %.4f, b %.3g, c %.3g", source, target, mask, statistics.n,
                     statistics.pearson_r, talk.b, talk.c)
    return pd.DataFrame(rows)  # a pair with too few latents: NaN in every column but n


def robust_variants(x: np.ndarray, y: np.ndarray, frequency: np.ndarray) -> dict[str, float]:
    """Pearson r of importance and universality when a few outlying importances cannot carry it:
    x as ranks (`pearson_r_rank`), x divided by its 99th percentile and clipped at 1
    (`pearson_r_clipped`), and without dense latents (`pearson_r_without_dense`, with `n_dense`).
    Dividing x by any constant (its max, a quantile) leaves r itself unchanged: only the clip or the
    ranks take the outliers' weight away."""
    dense = frequency > DENSE_FREQUENCY
    rest = ~dense
    return {
        "pearson_r_rank": pearson_r(stats.rankdata(x), y),
        "pearson_r_clipped": pearson_r(np.minimum(x / np.quantile(x, 0.99), 1.0), y) if np.quantile(x, 0.99) > 0 else np.nan,
        "pearson_r_without_dense": pearson_r(x[rest], y[rest]) if rest.sum() > 2 else np.nan,
        "n_dense": int(dense.sum()),
    }


def pair_r_table(pairs: pd.DataFrame, mask: str):
    """The talk's r table (rows: source) for one mask, with bootstrap intervals when present."""
    chosen = pairs[pairs["mask"] == mask]
    has_interval = "pearson_r_low" in chosen
    return r_table(
        {
            "source": row.source, "target": row.target, "value": row.pearson_r,
            "low": row.pearson_r_low if has_interval else np.nan,
            "high": row.pearson_r_high if has_interval else np.nan,
        }
        for row in chosen.itertuples()
    )


def control_table(points: pd.DataFrame, controls: ControlSettings, sae_seed: pd.DataFrame | None = None) -> pd.DataFrame:
    """Where each ordered pair's universality stands between chance and the ceilings.

    One row per ordered pair of `points` (`kind` pair, or model_seed for the same width's seed
    replicate), and one per model of `sae_seed` (`sae_seed_points`: kind sae_seed, the ceiling
    that a second SAE seed on the same model reaches). Per row: Pearson r(importance, max
    similarity) as in pairs.csv, the mean max similarity of the source's latents (real), and for
    each null that ran, its mean and the fraction of latents whose real max similarity exceeds
    the null's `controls.null_percentile` among latents of similar firing frequency (quantile bins of log
    count: a rarely firing latent's max over many partners is large by chance): the
    shifted-token null (`null_*`) and the untrained model of the target's width
    (`untrained_*`). When the source has a seed replicate: the ceiling (its latents' mean max
    similarity in the replicate) and where the real mean lies from the shifted null (0) to the
    ceiling (1).
    """
    rows = []
    models = ordered(set(points["source"]))
    ceiling = {}
    for model in models:
        replicate = replicate_of(model, models)
        if replicate is not None:
            chosen = points[(points["source"] == model) & (points["target"] == replicate)]
            ceiling[model] = float(chosen["max_similarity"].mean())
    groups = [("pair", key, group) for key, group in points.groupby(["source", "target"], sort=False)]
    if sae_seed is not None and len(sae_seed):
        groups += [("sae_seed", key, group) for key, group in sae_seed.groupby(["source", "target"], sort=False)]
    for kind, (source, target), group in groups:
        same_width = kind == "pair" and replicate_of(source, models) == target
        real = group["max_similarity"].to_numpy()
        row: dict[str, Any] = {
            "kind": "model_seed" if same_width else kind,
            "source": source, "target": target, "n": len(group),
            "same_width_replicate": same_width,
            "pearson_r": pearson_r(group["relative_importance"].to_numpy(), real),
            "real_mean": float(real.mean()),
        }
        for prefix, column in (("null", "null_max_similarity"), ("untrained", "untrained_max_similarity")):
            null = group[column].to_numpy(dtype=float) if column in group else np.full(len(group), np.nan)
            row[f"{prefix}_mean"] = float(np.nanmean(null)) if np.isfinite(null).any() else np.nan
            row[f"fraction_above_{prefix}"] = fraction_above_null(
                real, null, group["frequency"].to_numpy(), controls.null_percentile, controls.frequency_bins)
        row["untrained_model"] = (untrained_model_name(width_of(target))
                                  if kind == "pair" and np.isfinite(row["untrained_mean"]) else "")
        row["ceiling_mean"] = ceiling.get(source, np.nan) if kind == "pair" else np.nan
        span = row["ceiling_mean"] - row["null_mean"]
        row["position_null_to_ceiling"] = (row["real_mean"] - row["null_mean"]) / span if span > 0 else np.nan
        rows.append(row)
    return pd.DataFrame(rows)


def fraction_above_null(real: np.ndarray, null: np.ndarray, frequency: np.ndarray, percentile: float,
                        bins: int) -> float:
    """The share of latents whose real max similarity exceeds the null's `percentile` among the
    latents of similar firing frequency (`bins` quantile bins of log frequency); NaN without a
    null for every latent."""
    if not np.isfinite(null).all():
        return np.nan
    log_frequency = np.log(frequency)
    edges = np.quantile(log_frequency, np.linspace(0, 1, bins + 1)[1:-1])
    which = np.searchsorted(edges, log_frequency, side="right")  # bin of each latent
    above = np.zeros(len(real), dtype=bool)
    for b in np.unique(which):
        members = which == b
        above[members] = real[members] > np.percentile(null[members], percentile)
    return float(above.mean())


# ---------------------------------------------------------------- per width


LOSS_COLUMNS = {"clean": "ce_clean", "spliced": "ce_sae", "zero": "ce_zero", "mean": "ce_mean",
                "ce_loss_score": "ce_loss_score", "ce_loss_score_mean": "ce_loss_score_mean", "kl_score": "kl_score"}
BUDGET_COLUMNS = ("model", "kind", "percent", "n_features", "draw", "loss", "tokens_sha256")


def loss_table(evaluations: Sequence[str | Path]) -> pd.DataFrame:
    """Clean, SAE-spliced and zero-ablated val loss and the SAE's quality measures per model
    (each eval.json names its model). A model without a language model (a planted family) has no
    losses: NaN there."""
    results = [json.loads(Path(path).read_text()) for path in evaluations]
    rows = []
    for result in sorted(results, key=lambda result: parse_model_name(result["model"])):
        model = result["model"]
        rows.append({
            "model": model, "width": width_of(model),
            **{column: result.get(key, np.nan) for column, key in LOSS_COLUMNS.items()},
            "fvu": result["fvu"], "l0": result["l0"], "dead_fraction": result["dead_fraction"],
            "dense_fraction": result["dense_fraction"],
        })
    return pd.DataFrame(rows)


def features_for_recovery(table: pd.DataFrame, share: float, baseline: str = "zero") -> float:
    """The smallest N whose loss recovers `share` of the full SAE's recovery over an ablation.

    Recovery of N = (L_ablated − L_N) / (L_ablated − L_spliced), `baseline` the ablation (zero,
    or mean: the site replaced by its mean, the stricter scale); N is interpolated linearly in
    log N between grid points. NaN if the full SAE recovers nothing.
    """
    zero = float(table.loc[table.kind == baseline, "loss"].iloc[0])
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


def width_table(census: pd.DataFrame, losses: pd.DataFrame, budgets: pd.DataFrame, recovery: float) -> pd.DataFrame:
    """Do wider models store more features? L0 and FVU, live and non-collapsed latents, and N for
    `recovery` of the loss the full SAE recovers over zero and over mean ablation."""
    table = census[["model", "width", "n_latents", "live", "non_collapsed_live", "counted"]].copy()
    table = table.rename(columns={"live": "live_latents", "non_collapsed_live": "non_collapsed_latents"})
    for column in ("l0", "fvu"):
        table[column] = table["model"].map(dict(zip(losses["model"], losses[column])))
    for column, baseline in (("n_for_recovery", "zero"), ("n_for_recovery_mean", "mean")):
        needed = {model: features_for_recovery(group, recovery, baseline) for model, group in budgets.groupby("model")}
        table[column] = table["model"].map(needed)  # recovery share: feature_budget.recovery
    return table


# ---------------------------------------------------------------- the rules


def by_model(feature_stores: Sequence[str | Path]) -> dict[str, Path]:
    """{model: path} of feature stores, each named by the model its attrs record."""
    return {open_features(path).attrs["model"]: Path(path) for path in feature_stores}


def saes_by_model(sae_weights: Sequence[str | Path]) -> dict[str, Path]:
    """{model: weights} of saved SAEs, each named by the model its cfg.json's hook records."""
    def model(path: str | Path) -> str:
        return json.loads((Path(path).parent / SAE_CONFIG_FILENAME).read_text())["featscale"]["hook"]["model"]

    return {model(path): Path(path) for path in sae_weights}


def correlations_by_pair(stores: Sequence[str | Path]) -> dict[tuple[str, str], Path]:
    """{(a, b): path} of correlation stores, each named by the models its attrs record."""
    keyed = {}
    for path in stores:
        attrs = open_correlations(path).attrs
        keyed[attrs["a"], attrs["b"]] = Path(path)
    return keyed


def run_universality(
    inputs: Mapping[str, Sequence[str | Path]],
    outputs: Mapping[str, str | Path],
    *,
    sae: str,
    min_count: int,
    analysis: AnalysisSettings,
    controls: ControlSettings,
    run_seed: int,
) -> None:
    """Rule universality: the points, pair, census, r and control tables of SAE spec `sae`.

    `inputs`: features (stores), saes (weights), correlations, and the controls' correlations
    (nulls, untrained, sae_seed, sae_seed_nulls; each empty when its switch is off). Each store
    is matched to its models by what it records, never by position.
    """
    features = by_model(inputs["features"])
    census, masks = latent_census(features, saes_by_model(inputs["saes"]), min_count, analysis)
    points = universality_points(features, correlations_by_pair(inputs["correlations"]), masks, min_count,
                                 correlations_by_pair(inputs["nulls"]), correlations_by_pair(inputs["untrained"]))
    pairs = pair_table(points, analysis, run_seed)
    # an SAE-seed ceiling correlates one model with itself: keyed by that model
    sae_seed = {a: path for (a, _), path in correlations_by_pair(inputs["sae_seed"]).items()}
    sae_seed_nulls = {a: path for (a, _), path in correlations_by_pair(inputs["sae_seed_nulls"]).items()}
    ceilings = sae_seed_points(features, sae_seed, masks, min_count, sae_seed_replicate_name(sae), sae_seed_nulls)
    write_frame(outputs["controls"], control_table(points, controls, ceilings))
    write_frame(outputs["census"], census)
    write_frame(outputs["points"], points)
    write_frame(outputs["pairs"], pairs)
    for mask, csv, markdown in (("all", "r_table", "r_table_md"), ("masked", "r_table_masked", "r_table_masked_md")):
        table = pair_r_table(pairs, mask)
        table.to_csv(outputs[csv])
        write_text(outputs[markdown], table.to_markdown())


def run_width_summary(
    inputs: Mapping[str, Sequence[str | Path] | str | Path],
    outputs: Mapping[str, str | Path],
    *,
    n_layers: int,
    recovery: float,
) -> None:
    """Rule width_summary: losses, budgets, per-width measures and the scaling law of one SAE spec.

    `inputs`: evaluations (eval.json per model), budgets (CSV per model; none for a planted family,
    which has no language model: the budget table is then empty), census (latents.csv).
    """
    losses = loss_table(inputs["evaluations"])
    frames = [pd.read_csv(path) for path in inputs["budgets"]]
    budget = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=BUDGET_COLUMNS)
    widths = width_table(pd.read_csv(inputs["census"]), losses, budget, recovery)
    scaling, fits = scaling_table(losses, n_layers)
    for name, frame in (("losses", losses), ("budget", budget), ("widths", widths), ("scaling", scaling)):
        write_frame(outputs[name], frame)
    write_json(outputs["scaling_fits"], scaling_fits_json(fits))
