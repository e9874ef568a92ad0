"""results/{run}/report.md: the study's tables, fitted parameters and findings, stated from the numbers.

Every sentence that states a finding is computed from the tables it sits beside; nothing is
canned. The deviations table lists where this run differs from the authors' setup and which
config key switches it.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from featscale.analysis.tables import DENSE_FREQUENCY, SHRUNK_DECODER, pair_r_table
from featscale.analysis.talk import TALK_ALPHA
from featscale.analysis.verdicts import row_slope, width_cells
from featscale.config import FeatureSettings, PlantedSettings, ReportSettings, SAESpec, spec_features
from featscale.io import write_text
from featscale.names import ordered, width_of


def markdown_table(frame: pd.DataFrame, digits: int = 4) -> str:
    """A DataFrame as a Markdown table (numbers rounded), without extra dependencies."""

    def cell(value: Any) -> str:
        if isinstance(value, (float, np.floating)):
            if math.isnan(value):
                return "-"
            return f"{value:.{digits}g}" if abs(value) >= 1e4 or (value != 0 and abs(value) < 1e-3) else f"{value:.{digits}f}"
        return str(value)

    lines = ["| " + " | ".join(map(str, frame.columns)) + " |", "|" + "|".join("---" for _ in frame.columns) + "|"]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in frame.itertuples(index=False)]
    return "\n".join(lines) + "\n"


def _order(models: Sequence[str]) -> list[str]:
    return ordered(models)


def universality_findings(pairs: pd.DataFrame) -> list[str]:
    """Sentences on importance against universality, from the per-pair table."""
    lines = []
    for mask, label in (("all", "all counted latents"), ("masked", "collapsed clusters masked")):
        chosen = pairs[pairs["mask"] == mask]
        if chosen.empty:
            continue
        r = chosen["pearson_r"]
        positive = int((r > 0).sum())
        text = (f"With {label}, Pearson r(importance, universality) ranges from {r.min():.3f} "
                f"({_pair(chosen, r.idxmin())}) to {r.max():.3f} ({_pair(chosen, r.idxmax())}); "
                f"it is positive for {positive} of {len(r)} ordered pairs")
        rho = chosen["spearman_rho"]
        partial = chosen["partial_r_given_log_frequency"]
        opposite = int((np.sign(rho) != np.sign(r)).sum())
        text += (f". Spearman rho ranges from {rho.min():.3f} to {rho.max():.3f}, of the opposite sign to r for "
                 f"{opposite} pairs; given log firing frequency, the partial r ranges from {partial.min():.3f} "
                 f"to {partial.max():.3f} (verdict (a) decides with their intervals).")
        lines.append(text)
        lines += variant_findings(chosen, label)
    chosen = pairs[pairs["mask"] == "all"]
    if not chosen.empty:
        wider = [row for row in chosen.itertuples()
                 if width_of(row.target) > width_of(row.source)]
        narrower = [row for row in chosen.itertuples()
                    if width_of(row.target) < width_of(row.source)]
        if wider and narrower:
            lines.append(
                f"Matched into a wider model, latents reach a mean max similarity of "
                f"{np.mean([r.mean_max_similarity for r in wider]):.3f}; into a narrower one "
                f"{np.mean([r.mean_max_similarity for r in narrower]):.3f}."
            )
        failed = chosen[~chosen["fit_converged"].astype(bool)]
        if len(failed):
            lines.append(f"The talk's curve did not converge for {len(failed)} pairs: "
                         + "; ".join(f"{_pair(chosen, i)}: {chosen.loc[i, 'fit_reason']}" for i in failed.index))
    return lines


VARIANTS = {
    "pearson_r_rank": "importance as ranks",
    "pearson_r_clipped": "importance clipped at its 99th percentile",
    "pearson_r_without_dense": f"without dense latents (active on > {DENSE_FREQUENCY:.0%} of tokens)",
}


def variant_findings(chosen: pd.DataFrame, label: str) -> list[str]:
    """Each robust variant of r (featscale.analysis.tables.robust_variants) that changes the answer:
    flips r's sign for some pair, or reverses whether r rises or falls with the source's width."""
    lines = []
    base_slope = row_slope(width_cells(dict(zip(zip(chosen["source"], chosen["target"]), chosen["pearson_r"]))))
    for column, name in VARIANTS.items():
        if column not in chosen:
            continue
        values = chosen[column]
        flipped = int((np.sign(values) != np.sign(chosen["pearson_r"])).sum())
        slope = row_slope(width_cells(dict(zip(zip(chosen["source"], chosen["target"]), values))))
        reversed_rows = np.sign(slope) != np.sign(base_slope) and np.isfinite(slope * base_slope)
        if flipped or reversed_rows:
            changes = [f"r changes sign for {flipped} of {len(values)} pairs"] if flipped else []
            changes += [f"rows now {'rise' if slope > 0 else 'fall'} with the source's width (slope {slope:+.3f} "
                        f"against {base_slope:+.3f})"] if reversed_rows else []
            lines.append(f"Variant that changes the answer ({label}), {name}: r from {values.min():.3f} to "
                         f"{values.max():.3f}; " + "; ".join(changes) + ".")
    return lines


CLUSTER_IMPORTANCE, CLUSTER_SIMILARITY = 0.1, 0.9  # the low-importance, high-similarity corner of the scatter


def cluster_findings(points: pd.DataFrame) -> list[str]:
    """What the latents in the scatter's low-importance, high-similarity corner are, per source model:
    dense (active on > 10% of tokens), with a shrunk decoder row, collapsed; and their partners.

    Dense latents whose decoder rows have all but vanished keep firing on the same tokens in every
    model: they correlate with each other whatever they encode while their importance (max x
    decoder norm) is near 0, and they can set the sign of rho and the rows of r.
    """
    lines = []
    own = points.drop_duplicates(["source", "latent"]).set_index(["source", "latent"])
    corner = points[(points["relative_importance"] < CLUSTER_IMPORTANCE) & (points["max_similarity"] > CLUSTER_SIMILARITY)]
    for source in ordered(corner["source"].unique()):
        latents = corner[corner["source"] == source].drop_duplicates("latent")
        rows = corner[corner["source"] == source]
        partners = [own.loc[(target, partner)] for target, partner in zip(rows["target"], rows["best_partner"])
                    if (target, partner) in own.index]
        dense = (latents["frequency"] > DENSE_FREQUENCY).mean()
        shrunk = (latents["decoder_norm_ratio"] < SHRUNK_DECODER).mean() if "decoder_norm_ratio" in latents else np.nan
        text = (f"{source}: {len(latents)} latents sit at relative importance < {CLUSTER_IMPORTANCE} with a max "
                f"similarity > {CLUSTER_SIMILARITY}; {dense:.0%} of them dense (active on > {DENSE_FREQUENCY:.0%} of "
                f"tokens)")
        if np.isfinite(shrunk):
            text += f", {shrunk:.0%} with a decoder row below {SHRUNK_DECODER:g} of the median"
        text += f", {latents['collapsed'].mean():.0%} collapsed"
        if partners:
            partner_dense = np.mean([row["frequency"] > DENSE_FREQUENCY for row in partners])
            text += f"; their best partners are dense in {partner_dense:.0%} of cases"
        lines.append(text + ".")
    return lines


def _pair(frame: pd.DataFrame, index: Any) -> str:
    return f"{frame.loc[index, 'source']} → {frame.loc[index, 'target']}"


def budget_findings(budget: pd.DataFrame, widths: pd.DataFrame, recovery: float) -> list[str]:
    """Sentences on feature budgets: is the wider model's loss lower at every N? top vs random ablation."""
    if budget.empty:
        return [f"Not measured: {NO_LANGUAGE_MODEL}."]
    lines = []
    keep = budget[budget["kind"] == "keep"]
    models = _order(keep["model"].unique())
    for narrow, wide in zip(models, models[1:]):
        a = keep[keep.model == narrow].set_index("n_features")["loss"]
        b = keep[keep.model == wide].set_index("n_features")["loss"]
        shared = a.index.intersection(b.index)
        if len(shared) == 0:
            continue
        lower = int((b[shared] < a[shared]).sum())
        lines.append(f"Keeping the top N latents, {wide}'s loss is below {narrow}'s at {lower} of {len(shared)} "
                     f"shared N ({'every' if lower == len(shared) else 'not every'} N).")
    for column, baseline in (("n_for_recovery", "zero"), ("n_for_recovery_mean", "mean")):
        needed = widths.set_index("model")[column] if column in widths else pd.Series(dtype=float)
        if needed.notna().any():
            lines.append(f"Latents needed to recover {recovery:.0%} of the loss the full SAE recovers over {baseline} "
                         "ablation: " + ", ".join(f"{m} {needed[m]:.0f}" if not math.isnan(needed[m]) else f"{m} never"
                                                  for m in _order(needed.index)) + ".")
    ablation = budget[budget["kind"].isin(["top", "random"])]
    if not ablation.empty:
        mean = ablation.groupby(["model", "kind", "percent"])["loss"].mean().unstack("kind")
        worse = int((mean["top"] > mean["random"]).sum())
        lines.append(f"Zeroing the top p% of latents by importance costs more loss than zeroing as many random "
                     f"latents in {worse} of {len(mean)} (model, p) cases.")
    return lines


def width_findings(widths: pd.DataFrame, architecture: str) -> list[str]:
    lines = []
    ordered = widths.sort_values("width")
    for column, label in (("l0", "L0"), ("live_latents", "live latents"),
                          ("non_collapsed_latents", "live latents outside collapsed clusters")):
        values = ordered[column].to_numpy(dtype=float)
        if np.isnan(values).all():
            continue
        trend = ("grows with every step in width" if (np.diff(values) > 0).all()
                 else "falls with every step in width" if (np.diff(values) < 0).all() else "is not monotone in width")
        lines.append(f"{label} {trend}: " + ", ".join(f"{m} {v:.1f}" for m, v in zip(ordered["model"], values)) + ".")
    if architecture == "topk":
        lines.append("This SAE is TopK: L0 is fixed by k, so it cannot show whether wider models use more latents "
                     "per token; only live latents and the budget can.")
    else:
        lines.append(f"This SAE is {architecture} with one sparsity penalty for every width. Inputs are scaled to "
                     "norm √d, so at one L1 coefficient L0 rises with width even for identical features: L0 here is "
                     "no evidence that wider models store more features (verdict (d) compares at matched "
                     "reconstruction).")
    return lines


def control_findings(controls: pd.DataFrame, null_percentile: float) -> list[str]:
    """Where the real curves stand between the nulls (shifted tokens, untrained model) and the
    ceilings (same width and another model seed, same model and another SAE seed)."""
    percentile = f"{null_percentile:g}th percentile"
    lines = []
    kind = controls["kind"]
    has_null = controls["null_mean"].notna().any()
    has_untrained = controls["untrained_mean"].notna().any()
    has_ceiling = controls["ceiling_mean"].notna().any() or (kind == "sae_seed").any()
    if not (has_null or has_untrained or has_ceiling):
        return ["No controls ran: set controls.shifted_null, controls.untrained_null, controls.seed_replicates "
                "and/or controls.sae_seed_replicates."]
    cross = controls[kind == "pair"]
    real = f"{cross['real_mean'].min():.3f}–{cross['real_mean'].max():.3f}"
    for present, prefix, label in ((has_null, "null", "Shifted-token null"),
                                   (has_untrained, "untrained", "Untrained-model null (the SAE of an untrained "
                                                                "model of the target's width)")):
        if present and not cross.empty:
            above = cross[f"fraction_above_{prefix}"]
            lines.append(
                f"{label}: mean max similarity {cross[f'{prefix}_mean'].min():.3f}–{cross[f'{prefix}_mean'].max():.3f} "
                f"across pairs of different models, against {real} for the real codes; "
                f"{above.min():.1%}–{above.max():.1%} of latents beat the null's {percentile} at their firing frequency."
            )
    nulls = [(prefix, label) for present, prefix, label in (
        (has_null, "null", "shifted null"), (has_untrained, "untrained", "untrained null")) if present]

    def beaten(row: Any) -> str:
        """', 12.3% above the shifted null.' for the nulls that ran."""
        shares = [f"{share:.1%} above the {label}" for prefix, label in nulls
                  if not math.isnan(share := getattr(row, f"fraction_above_{prefix}"))]
        return (", " + ", ".join(shares) + ".") if shares else "."

    for row in controls[kind == "model_seed"].itertuples():
        lines.append(f"Ceiling {row.source} → {row.target} (same width, another seed): mean max similarity "
                     f"{row.real_mean:.3f}" + beaten(row))
    for row in controls[kind == "sae_seed"].itertuples():
        r = cross[cross["source"] == row.source]["pearson_r"]
        spread = f"{r.min():.3f}" if r.min() == r.max() else f"{r.min():.3f}–{r.max():.3f}"
        versus = f" (r {spread} against the other models)" if r.notna().any() else ""
        lines.append(f"SAE-seed ceiling {row.source} → {row.target} (the same model, an SAE that differs only in "
                     f"its seed): mean max similarity {row.real_mean:.3f}, r(importance, max similarity) "
                     f"{row.pearson_r:.3f}{versus}" + beaten(row))
    positioned = cross[cross["position_null_to_ceiling"].notna()]
    for row in positioned.itertuples():
        lines.append(f"{row.source} → {row.target}: mean max similarity {row.real_mean:.3f} lies "
                     f"{row.position_null_to_ceiling:.0%} of the way from the null ({row.null_mean:.3f}) to "
                     f"{row.source}'s ceiling ({row.ceiling_mean:.3f}).")
    return lines


def with_intervals(pairs: pd.DataFrame, names: Sequence[str], digits: int = 4) -> pd.DataFrame:
    """`pairs` with each of `names` that has bootstrap bounds (`<name>_low`, `<name>_high`)
    written as text, `value [low, high]`, and the bound columns dropped."""

    def cell(value: float, low: float, high: float) -> str:
        if math.isnan(value):
            return "-"
        text = f"{value:.{digits}g}"
        return text if math.isnan(low) and math.isnan(high) else f"{text} [{low:.{digits}g}, {high:.{digits}g}]"

    shown = pairs.copy()
    for name in names:
        bounds = [f"{name}_low", f"{name}_high"]
        if name in shown and all(bound in shown for bound in bounds):
            shown[name] = [cell(*values) for values in zip(shown[name], *(shown[bound] for bound in bounds))]
            shown = shown.drop(columns=bounds)
    return shown


def scaling_findings(fits: Mapping[str, Mapping[str, float]], losses: pd.DataFrame) -> list[str]:
    if losses["clean"].isna().all():
        return [f"No scaling law: {NO_LANGUAGE_MODEL}."]
    lines = []
    for name, fit in fits.items():
        lines.append(f"{name.capitalize()} loss: L = (N_c/N)^α with α = {fit['alpha']:.4f} "
                     f"(± {fit['alpha_error']:.4f}), N_c = {fit['n_c']:.3g}, R² = {fit['r_squared']:.3f}; "
                     f"the authors found α ≈ {TALK_ALPHA[name]}.")
    return lines or ["Fewer than two widths: no scaling fit."]


NO_LANGUAGE_MODEL = "a planted family has no language model, so no next-token loss (CE loss, feature budget)"


def models_deviation(settings: ReportSettings) -> str:
    """What this run's models are, against the authors' nanoGPT models."""
    models = settings.models
    if settings.planted is not None:
        return (f"a planted family of {settings.planted.features:,} known features (no language model: "
                f"docs/planted.md); the {settings.corpus_source} corpus's {settings.tokenizer_kind} tokens, windows "
                f"of {models.context}, only index its draws")
    return (f"{settings.corpus_source} corpus, {settings.tokenizer_kind} tokenizer, context {models.context}, "
            f"{models.n_layers} layers (with biases)")


def deviations(settings: ReportSettings) -> pd.DataFrame:
    """Where each SAE spec of this run differs from the authors' setup (their code and run logs, see
    featscale.analysis.talk), and the config key that switches it: one column per spec."""
    analysis, specs = settings.analysis, settings.saes

    def per_spec(describe) -> list[str]:  # noqa: ANN001
        return [describe(spec, spec_features(settings.features, spec)) for spec in specs.values()]

    def windows(spec: SAESpec, features: FeatureSettings) -> str:
        kind = "consecutive held-out windows" if features.split == "analysis" else "random windows"
        return f"{features.tokens:,} tokens of the {features.split} split ({kind})"

    rows = [
        ("tokens correlated", "random windows of 512 train tokens (seed 34; how many is not recorded)",
         per_spec(windows), "features (or saes.<spec>.features)"),
        ("position 0", "trained on and correlated",
         per_spec(lambda spec, f: f"{'trained on' if spec.train_on_position_0 else 'not trained on'}, "
                                  f"{'correlated' if f.include_position_0 else 'not correlated'}"),
         "saes.<spec>.train_on_position_0, features.include_position_0"),
        ("BOS token", "none prepended (pre-tokenized rows; SAELens's prepend_bos unused for them)",
         per_spec(lambda spec, f: "none prepended"), "-"),
        ("SAE L1 coefficient", "2 for every width",
         per_spec(lambda spec, f: "-" if spec.architecture == "topk" else
                  f"{spec.l1_coefficient:g} for every width" if spec.l1_reference_width is None else
                  f"{spec.l1_coefficient:g} at width {spec.l1_reference_width}, × √(width / {spec.l1_reference_width})"),
         "saes.<spec>.l1_coefficient, l1_reference_width"),
        ("SAE learning rate", "5e-5 for every width",
         per_spec(lambda spec, f: f"{spec.lr:g} for every width" if spec.lr_reference_width is None else
                  f"{spec.lr:g} at width {spec.lr_reference_width}, × {spec.lr_reference_width} / width"),
         "saes.<spec>.lr, lr_reference_width"),
        ("decoder init", "uniform on [0, 1) (all positive), rows at norm 0.1, encoder = its transpose",
         per_spec(lambda spec, f: f"{spec.decoder_init.replace('_', ' ')}, rows at norm "
                                  f"{1.0 if spec.architecture == 'topk' else spec.decoder_init_norm:g}"),
         "saes.<spec>.decoder_init, decoder_init_norm"),
        ("decoder bias init", "zeros", per_spec(lambda spec, f: spec.bias_init.replace("_", " ")),
         "saes.<spec>.bias_init"),
        ("gate's auxiliary loss", "trains the decoder too (SAELens 4.1.1)",
         per_spec(lambda spec, f: "-" if spec.architecture != "gated" else
                  ("trains the decoder" if spec.gated_aux_trains_decoder else "frozen decoder copy")),
         "saes.<spec>.gated_aux_trains_decoder"),
        ("model precision reading activations", "fp32",
         per_spec(lambda spec, f: "bf16 autocast on CUDA" if spec.model_autocast else "fp32"),
         "saes.<spec>.model_autocast"),
        ("codes and importance", "SAELens 4.1.1 fold_W_dec_norm (also scales the gated r_mag); importance = "
         "max of those codes",
         per_spec(lambda spec, f: "the 4.1.1 fold's codes; importance = their max"
                  if spec.fold_decoder_norm == "saelens_4_1_1" else "codes as encoded; importance = max × decoder norm"),
         "saes.<spec>.fold_decoder_norm"),
        ("relative importance", "divided by the largest importance of all latents, before masking",
         "divided by the largest among counted latents", "no"),
        ("dead latents", "correlated (running covariance started at 1: dead pairs at r = 1.0)",
         "excluded and counted (r undefined)", "no: r of a constant is undefined"),
        ("rare latents", "kept", f"latents active on < {settings.min_count} tokens excluded and counted",
         "correlation.min_count (1 keeps all but the dead)"),
        ("collapsed-latent mask", "hand-drawn UMAP cuts (4,483 / 1,040 / 253 / 261 latents)",
         f"automatic: cosine ≥ {analysis.collapsed_threshold} with ≥ {analysis.collapsed_min_neighbours} others; "
         "tables with and without", "analysis.collapsed_threshold, analysis.collapsed_min_neighbours"),
        ("fit", "a(1 − e^(−b(x−c))), bounds, KDE weights, maxfev 2,000, first converging start",
         "1 − e^(−b(x−c)), unweighted, best of several starts"
         + ("; the authors' fit alongside" if analysis.talk_compatible else ""), "analysis.talk_compatible"),
        ("SAE training tokens", "pre-tokenized OpenWebText rows, first 512 tokens each, in file order, "
         "SAELens's mixing buffer", "seeded random windows of the train split, shuffled buffers", "no"),
        ("corpus and models", "OpenWebText, GPT-2 tokenizer, context 512, 8 layers (nanoGPT: vocabulary 50,304, "
         "no biases)", models_deviation(settings), "data, tokenizer, models"),
        ("the talk's r table", "its row and column labels are reversed against the authors' figure",
         "compared with both readings", "-"),
    ]
    columns = ["what", "authors", *(f"`{name}`" for name in specs), "switch"]
    frame = [[what, authors, *(ours if isinstance(ours, list) else [ours] * len(specs)), switch]
             for what, authors, ours, switch in rows]
    return pd.DataFrame(frame, columns=columns)


def planted_section(planted: PlantedSettings, tables: Mapping[str, Mapping[str, Path]]) -> list[str]:
    """The measurement of a planted family against its truth (rule score_truth), spec by spec: verdict
    (a) against the planted relation, SAE recovery, universality, and the count of features per width."""
    strength = planted.sharing_strength
    relation = ("sharing rises with importance" if strength > 0 else "sharing is independent of importance")
    lowest = planted.max_frequency * planted.features ** -planted.frequency_exponent
    low, high = planted.importance_range
    lines = ["## Planted features: the measurement against the truth", "",
             f"This run's models are a planted family (docs/planted.md): {planted.features:,} known features, each "
             f"firing with probability {lowest:.3g} to {planted.max_frequency:g} per token (a power law of exponent "
             f"{planted.frequency_exponent:g}) with a magnitude around its importance (log-uniform in [{low:g}, "
             f"{high:g}], ± {planted.magnitude_spread:.0%}), each model holding some of them in superposition plus "
             f"noise of {planted.noise:g} per dimension. Planted: **{relation}** (sharing strength σ = {strength:g}). "
             "The chain from train_sae to the verdicts ran as for trained models; here it meets the truth.", ""]
    for sae, paths in tables.items():
        summary = json.loads(Path(paths["truth_summary"]).read_text())
        pairs, widths = pd.read_csv(paths["truth_pairs"]), pd.read_csv(paths["truth_widths"])
        bins = pd.read_csv(paths["truth_recovery_bins"])
        rho, partial, r = (summary[key] for key in ("spearman_rho", "partial_r", "pearson_r"))
        lines += [f"### SAE spec `{sae}`", "",
                  f"**Claim (a) against the truth.** Planted: {relation}; over each source's features, the planted "
                  f"Spearman ρ of importance and being held by the target runs from {summary['planted_rho'][0]:.3f} "
                  f"to {summary['planted_rho'][1]:.3f}. Measured (collapsed clusters masked): r {r[0]:.3f} to "
                  f"{r[1]:.3f}, ρ {rho[0]:.3f} to {rho[1]:.3f}, partial r {partial[0]:.3f} to {partial[1]:.3f}. "
                  f"The report's verdict (a): **{summary['verdict']}** ({summary['verdict_measured']}): "
                  f"**{summary['assessment']}**.", ""]
        lines += ["- Pair by pair, each decided as verdict (a) decides it (ρ and partial r against their thresholds): "
                  + "; ".join(f"{row.source} → {row.target} {row.criterion} ({row.against_truth})"
                              for row in pairs.itertuples()) + "."]
        lines += [f"- Where the measured relation comes from: within latents whose feature the target holds, "
                  f"ρ(importance, max similarity) runs from {pairs['rho_within_shared'].min():.3f} to "
                  f"{pairs['rho_within_shared'].max():.3f}; within latents whose feature it does not hold, from "
                  f"{pairs['rho_within_not_shared'].min():.3f} to {pairs['rho_within_not_shared'].max():.3f}; "
                  f"between importance and being shared, from {pairs['rho_importance_shared'].min():.3f} to "
                  f"{pairs['rho_importance_shared'].max():.3f}.", ""]
        shares = summary["recovered_share"]
        counts = widths.set_index("model")
        lines += ["**SAE recovery.** A planted feature is recovered when some decoder row has cosine ≥ "
                  f"{_threshold(paths)} with its direction: " + ", ".join(
                      f"{model} {shares[model]:.0%} ({counts.loc[model, 'recovered']:.0f} of "
                      f"{counts.loc[model, 'planted']:.0f})" for model in counts.index) + ". By quantile bin of "
                  "the family's firing frequency and importance (lowest first), the share recovered:", ""]
        for binned_by in ("frequency", "importance"):
            chosen = bins[bins["binned_by"] == binned_by].sort_values("bin", kind="stable")
            ranges = {row.bin: f"{binned_by} {row.low:.3g}–{row.high:.3g}" for row in chosen.itertuples()}
            table = chosen.pivot(index="model", columns="bin", values="share_recovered").rename(columns=ranges)
            table = table.loc[list(dict.fromkeys(bins["model"])), [ranges[b] for b in sorted(ranges)]]
            lines += [markdown_table(table.reset_index(), digits=2), ""]
        lines += ["**Universality against the truth.** Each counted source latent stands for the planted feature its "
                  "decoder row matches (cosine at the recovery threshold or more; `assigned` of `latents`); AUC: "
                  "the chance that a latent whose feature the target holds has a higher measured max similarity "
                  "than one whose feature it does not (1: universality separates them perfectly, 0.5: not at all); "
                  f"mean AUC {summary['auc_mean']:.3f}, lowest {summary['auc_min']:.3f}.", "",
                  markdown_table(with_intervals(pairs, ["auc", "spearman_rho", "partial_r"], digits=3)[[
                      "source", "target", "latents", "assigned", "shared", "not_shared", "auc",
                      "mean_max_similarity_shared", "mean_max_similarity_not_shared", "planted_rho", "spearman_rho",
                      "partial_r", "rho_within_shared"]], digits=3), ""]
        tracked = summary["tracks_planted_count"]
        lines += ["**More features with width.** The planted count per model beside every measure the report uses "
                  "(N for recovery needs a feature budget, hence a language model: `-`):", "",
                  markdown_table(widths), "",
                  "Orders the widths as the planted count does: " + ", ".join(
                      f"{column} {answer}" for column, answer in tracked.items()) + ".", ""]
    return lines


def _threshold(paths: Mapping[str, Path]) -> str:
    return f"{json.loads(Path(paths['truth_summary']).read_text())['recovered_cosine']:g}"


VERDICT_MARK = {"reproduced": "✅ reproduced", "not reproduced": "❌ not reproduced", "inconclusive": "❔ inconclusive"}


def reproduction_section(sae: str, verdicts: pd.DataFrame, comparison: pd.DataFrame, fits: Mapping) -> list[str]:
    """The report's first section for one spec: the verdict on each claim, then the talk's numbers
    beside this run's."""
    lines = [f"### SAE spec `{sae}`", "",
             "| claim | the talk says | verdict | this run measured | criterion (set in the config before the data) |",
             "|---|---|---|---|---|"]
    for row in verdicts.itertuples():
        detail = f" ({row.detail})" if isinstance(row.detail, str) and row.detail else ""
        lines.append(f"| {row.claim} | {row.statement} | {VERDICT_MARK[row.verdict]} | {row.measured}{detail} "
                     f"| {row.criterion} |")
    lines += ["", "The talk's r (collapsed clusters masked) beside this run's, widths matched by rank; the talk prints "
              "its table with the labels reversed against the authors' figure, so both readings are shown. "
              "Normalised universality: the mean max similarity from the shifted-token null (0) to the source's "
              "SAE-seed ceiling (1), where both ran.", "", markdown_table(comparison, digits=3), ""]
    alphas = [f"{name} α = {fit['alpha']:.3f} (the talk: {TALK_ALPHA[name]})" for name, fit in fits.items()]
    if alphas:
        lines += ["Scaling exponent of the loss in non-embedding parameters: " + "; ".join(alphas) + ".", ""]
    return lines


def write_study_report(
    out: str | Path,
    settings: ReportSettings,
    tables: Mapping[str, Mapping[str, Path]],
) -> None:
    """report.md from each SAE spec's analysis tables (`tables[sae][name]` paths)."""
    out = Path(out)
    lines = [f"# How features change with width: run `{settings.run}`", ""]
    models, features = settings.models, settings.features
    if settings.planted is None:
        lines += [f"Models: widths {', '.join(map(str, sorted(models.widths)))}, {models.n_layers} layers, "
                  f"context {models.context}, {settings.training_tokens:,} training tokens each. "
                  f"Features: {features.tokens:,} tokens of the {features.split} split.", ""]
    else:
        lines += [f"Models: a planted family (`models.kind: planted`, docs/planted.md) of widths "
                  f"{', '.join(map(str, sorted(models.widths)))}, whose features are known: no language model is "
                  f"trained, so there is no CE loss, feature budget or scaling law. Features: {features.tokens:,} "
                  f"tokens of the {features.split} split.", ""]
    lines += ["## Does this run reproduce the talk?", "",
              "Each claim of the talk (S. Shehper, \"What Makes Larger Models Better? A Features' Perspective\", "
              "2025; code: github.com/shehper/feature_universality), decided by a criterion fixed in the config "
              "(`verdicts`) before the data: reproduced when the measured interval clears it, not reproduced when "
              "it lies on the wrong side, inconclusive otherwise.", ""]
    for sae, paths in tables.items():
        lines += reproduction_section(sae, pd.read_csv(paths["verdicts"]), pd.read_csv(paths["talk_comparison"]),
                                      json.loads(Path(paths["scaling_fits"]).read_text()))
    if settings.planted is not None:
        lines += planted_section(settings.planted, tables)
    for sae, paths in tables.items():
        spec = settings.saes[sae]
        pairs = pd.read_csv(paths["pairs"])
        losses = pd.read_csv(paths["losses"])
        widths = pd.read_csv(paths["widths"])
        census = pd.read_csv(paths["census"])
        budget = pd.read_csv(paths["budget"])
        fits = json.loads(Path(paths["scaling_fits"]).read_text())
        controls = pd.read_csv(paths["controls"])
        figures = Path(paths["figures"])
        rel = lambda name: (figures / name).relative_to(out.parent).as_posix()  # noqa: E731
        lines += [f"## SAE spec `{sae}`: {spec.architecture}, {spec.n_latents:,} latents at "
                  f"layer {spec.layer} {spec.site}", ""]
        lines += ["### SAE quality (held-out val tokens)", "", markdown_table(losses.drop(columns="width")), ""]
        if losses["clean"].isna().all():
            lines += [f"No CE loss or CE-loss score (`-`): {NO_LANGUAGE_MODEL}; FVU, L0, dead and dense are "
                      "measured as for a language model.", ""]
        lines += ["### Importance against universality", "",
                  "Pearson r(relative importance, max similarity), rows: source, columns: target; "
                  "bootstrap intervals over latents. All counted latents:", "",
                  pair_r_table(pairs, "all").to_markdown(), "", "Collapsed clusters masked:", "",
                  pair_r_table(pairs, "masked").to_markdown(), ""]
        lines += [f"- {line}" for line in universality_findings(pairs)]
        lines += [f"- {line}" for line in cluster_findings(pd.read_parquet(paths["points"]))] + [""]
        columns = ["source", "target", "mask", "n", "pearson_r", "spearman_rho", "partial_r_given_log_frequency",
                   "b", "b_error", "c", "c_error", "r_squared"]
        columns += [c for c in ("authors_a", "authors_b", "authors_c", "authors_r_squared") if c in pairs]
        fitted = with_intervals(pairs, ["spearman_rho", "b", "c", "authors_a", "authors_b", "authors_c"])
        lines += ["Fits per ordered pair (the talk's y = 1 − e^(−b(x−c)); authors_*: their weighted, bounded fit; "
                  "_error: the fit's standard error; [low, high]: "
                  f"{settings.analysis.confidence:.0%} bootstrap interval over latents):",
                  "", markdown_table(fitted[columns]), ""]
        lines += ["### Latents", "", markdown_table(census), ""]
        lines += ["### Feature budget", ""] + [f"- {line}" for line in
                                               budget_findings(budget, widths, settings.recovery)]
        lines += ["", "### Do wider models store more features?", "", markdown_table(widths), ""]
        lines += [f"- {line}" for line in width_findings(widths, spec.architecture)] + [""]
        lines += ["### Scaling", ""] + [f"- {line}" for line in scaling_findings(fits, losses)] + [""]
        lines += ["### Controls", "", "Per ordered pair (kind pair, or model_seed for a same-width seed "
                  "replicate): r, the real mean max similarity, the mean of each null (null_*: shifted tokens; "
                  "untrained_*: the SAE of an untrained model of the target's width) and the share of latents above "
                  "it at their firing frequency, the source's seed-replicate ceiling, and where the real mean lies "
                  "from the shifted null (0) to that ceiling (1). Kind sae_seed: a model's SAE against a second SAE "
                  "of the same spec but its seed, the ceiling that SAE training noise leaves.",
                  "", markdown_table(controls), ""]
        lines += [f"- {line}" for line in control_findings(controls, settings.null_percentile)] + [""]
        lines += ["### Figures", ""] + [f"![{name}]({rel(name)})" for name in (
            "universality_grid.png", "universality_grid_masked.png", "reconstructed_losses.png",
            "feature_budget.png", "ablation.png", "features_by_width.png", "scaling_law.png",
            "training_curves.png")] + [""]
    lines += ["## Deviations from the authors' setup", "", markdown_table(deviations(settings)), ""]
    write_text(out, "\n".join(lines))


TABLES = ("pairs", "points", "census", "controls", "losses", "widths", "scaling_fits", "budget", "verdicts",
          "talk_comparison")
# a planted family's (rule score_truth): absent from other runs' inputs
TRUTH_TABLES = ("truth_recovery_bins", "truth_pairs", "truth_widths", "truth_summary")


def run_study_report(inputs: Mapping[str, Sequence[str | Path]], out: str | Path, settings: ReportSettings) -> None:
    """Rule study_report: report.md from the tables of every SAE spec.

    `inputs`: for each of TABLES (and, for a planted family, TRUTH_TABLES) a list of paths, one per
    spec, each in the spec's own folder (analysis/{sae}/), and `figures`: a figure in each spec's
    figures folder (figures/{sae}/).
    """
    tables: dict[str, dict[str, Path]] = {sae: {} for sae in settings.saes}
    for name in (*TABLES, *TRUTH_TABLES):
        for path in map(Path, inputs.get(name, ())):
            tables[path.parent.name][name] = path
    for path in map(Path, inputs["figures"]):
        tables[path.parent.name]["figures"] = path.parent
    write_study_report(out, settings, tables)
