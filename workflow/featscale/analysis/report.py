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

from featscale.analysis.tables import pair_r_table
from featscale.config import ReportSettings
from featscale.io import write_text
from featscale.names import ordered, width_of

TALK_ALPHA = {"clean": 0.079, "spliced": 0.088}


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
        if "pearson_r_low" in chosen:
            excluded = int((chosen["pearson_r_low"] > 0).sum())
            text += f", and its bootstrap interval lies above 0 for {excluded}"
        rho = chosen["spearman_rho"]
        partial = chosen["partial_r_given_log_frequency"]
        text += (f". Spearman rho ranges from {rho.min():.3f} to {rho.max():.3f}; given log firing frequency, "
                 f"the partial r ranges from {partial.min():.3f} to {partial.max():.3f}")
        text += (" (frequency explains part of the relation)." if partial.abs().mean() < r.abs().mean()
                 else " (frequency does not explain it away).")
        lines.append(text)
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


def _pair(frame: pd.DataFrame, index: Any) -> str:
    return f"{frame.loc[index, 'source']} → {frame.loc[index, 'target']}"


def budget_findings(budget: pd.DataFrame, widths: pd.DataFrame, recovery: float) -> list[str]:
    """Sentences on feature budgets: is the wider model's loss lower at every N? top vs random ablation."""
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
    needed = widths.set_index("model")["n_for_recovery"]
    if needed.notna().any():
        lines.append(f"Latents needed to recover {recovery:.0%} of the full SAE's loss recovery: "
                     + ", ".join(f"{m} {needed[m]:.0f}" if not math.isnan(needed[m]) else f"{m} never"
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
        lines.append(f"This SAE is {architecture} with one sparsity penalty for every width, so L0 is free to grow "
                     "with width; a fixed latent count still caps live and non-collapsed latents.")
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


def scaling_findings(fits: Mapping[str, Mapping[str, float]]) -> list[str]:
    lines = []
    for name, fit in fits.items():
        lines.append(f"{name.capitalize()} loss: L = (N_c/N)^α with α = {fit['alpha']:.4f} "
                     f"(± {fit['alpha_error']:.4f}), N_c = {fit['n_c']:.3g}, R² = {fit['r_squared']:.3f}; "
                     f"the authors found α ≈ {TALK_ALPHA[name]}.")
    return lines or ["Fewer than two widths: no scaling fit."]


def deviations(settings: ReportSettings) -> pd.DataFrame:
    """Where this run differs from the authors' setup, and whether a config key switches it."""
    features, analysis = settings.features, settings.analysis
    rows = [
        ("tokens correlated", "2,560 random windows of 512 train tokens",
         f"{features.tokens:,} tokens of the {features.split} split"
         + (" (consecutive held-out windows)" if features.split == "analysis" else " (random windows)"),
         "yes: features.split, features.tokens"),
        ("position 0", "included", "included" if features.include_position_0 else "excluded",
         "yes: features.include_position_0"),
        ("dead latents", "correlated (running covariance started at 1: dead pairs at r = 1.0)",
         "excluded and counted (r undefined)", "no: r of a constant is undefined"),
        ("rare latents", "kept", f"latents active on < {settings.min_count} tokens excluded and counted",
         "yes: correlation.min_count (1 keeps all but the dead)"),
        ("collapsed-latent mask", "hand-picked clusters", f"automatic: cosine ≥ {analysis.collapsed_threshold} with "
         f"≥ {analysis.collapsed_min_neighbours} others; tables with and without",
         "yes: analysis.collapsed_threshold, analysis.collapsed_min_neighbours"),
        ("fit", "a(1 − e^(−b(x−c))), bounds, KDE weights, first converging start",
         "1 − e^(−b(x−c)), unweighted, best of several starts"
         + ("; the authors' fit alongside" if analysis.talk_compatible else ""),
         "yes: analysis.talk_compatible"),
        ("corpus and models", "OpenWebText, GPT-2 tokenizer, context 512, 8 layers",
         f"{settings.corpus_source} corpus, {settings.tokenizer_kind} tokenizer, context "
         f"{settings.models.context}, {settings.models.n_layers} layers",
         "yes: data, tokenizer, models"),
    ]
    return pd.DataFrame(rows, columns=["what", "authors", "this run", "switchable"])


def write_study_report(
    out: str | Path,
    settings: ReportSettings,
    tables: Mapping[str, Mapping[str, Path]],
) -> None:
    """report.md from each SAE spec's analysis tables (`tables[sae][name]` paths)."""
    out = Path(out)
    lines = [f"# How features change with width: run `{settings.run}`", ""]
    models, features = settings.models, settings.features
    lines += [f"Models: widths {', '.join(map(str, sorted(models.widths)))}, {models.n_layers} layers, "
              f"context {models.context}, {settings.training_tokens:,} training tokens each. "
              f"Features: {features.tokens:,} tokens of the {features.split} split.", ""]
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
        lines += ["### Importance against universality", "",
                  "Pearson r(relative importance, max similarity), rows: source, columns: target; "
                  "bootstrap intervals over latents. All counted latents:", "",
                  pair_r_table(pairs, "all").to_markdown(), "", "Collapsed clusters masked:", "",
                  pair_r_table(pairs, "masked").to_markdown(), ""]
        lines += [f"- {line}" for line in universality_findings(pairs)] + [""]
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
        lines += ["### Scaling", ""] + [f"- {line}" for line in scaling_findings(fits)] + [""]
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


TABLES = ("pairs", "census", "controls", "losses", "widths", "scaling_fits", "budget")


def run_study_report(inputs: Mapping[str, Sequence[str | Path]], out: str | Path, settings: ReportSettings) -> None:
    """Rule study_report: report.md from the tables of every SAE spec.

    `inputs`: for each of TABLES a list of paths, one per spec, each in the spec's own folder
    (analysis/{sae}/), and `figures`: a figure in each spec's figures folder (figures/{sae}/).
    """
    tables: dict[str, dict[str, Path]] = {sae: {} for sae in settings.saes}
    for name in TABLES:
        for path in map(Path, inputs[name]):
            tables[path.parent.name][name] = path
    for path in map(Path, inputs["figures"]):
        tables[path.parent.name]["figures"] = path.parent
    write_study_report(out, settings, tables)
