"""The study's figures, drawn from plain tables: one function per figure, PNG out.

Every figure has two functions: `build_<figure>(...)` draws it and returns the matplotlib
Figure (a test or a notebook can inspect it), and `<figure>(..., path)` builds it, writes
it as PNG under a temporary name in the same folder, renames it into place, closes it and
returns the path. A figure that fails to draw or save leaves nothing at `path` (and no
temporary file either).

Inputs are pandas DataFrames (or numpy arrays) with the columns each function names; a
missing column is a ValueError that names it. Models are named `w256` or `w256-s1`
(featscale.names.model_name) and always appear narrowest first, then by seed.

Read top to bottom:

    point_density                 colour of the scatter: Gaussian KDE, or a binned KDE when large
    universality_grid             the talk's grid: every ordered pair, source down, target across
    universality_pair             one pair as its own figure
    reconstructed_losses          clean, SAE-spliced and zero-ablated next-token loss per model
    feature_budget_curves         loss keeping only the top N features, one line per model
    ablation_curves               loss zeroing the top / random / most frequent p% of latents
    features_by_width             L0, live latents, ... against width
    scaling_law                   L = (N_c / N)^alpha, clean and spliced
    null_distributions            max similarity of real latents against a null
    training_curves               models' train and val loss, SAEs' loss, L0 and dead latents, by tokens
    not_measured                  a figure's place when the run could not measure it (no language model)
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, NamedTuple

import matplotlib

matplotlib.use("Agg")  # before pyplot: rules run on headless nodes

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.figure import Figure
from matplotlib.ticker import EngFormatter, FormatStrFormatter, LogFormatter
from scipy import ndimage, stats

from featscale.analysis.scaling import scaling_fits_from_json
from featscale.analysis.statistics import pearson_r
from featscale.io import write_atomically
from featscale.names import ordered, parse_model_name, width_of

log = logging.getLogger(__name__)

DPI = 150
# the exact Gaussian KDE costs O(n^2): 0.15 s at 2,000 points, 3 s at 10,000 (one core);
# above this the density is a KDE on a grid (a histogram smoothed by the same Gaussian)
EXACT_KDE_MAX_POINTS = 2_000
DENSITY_BINS = 256
PANEL_INCHES = 2.3  # one panel of the universality grid
X_LABEL = "relative importance"
Y_LABEL = "max similarity"
Y_LIMITS = (-0.2, 1.05)  # widened when the points go further
ABLATION_KINDS = ("top", "random", "frequent")
MEASURES = {
    "l0": "L0 (latents active per token)",
    "live_latents": "live latents",
    "non_collapsed_latents": "non-collapsed latents",
    "n_for_recovery": "top-N features that recover\nfeature_budget.recovery of the loss",
}
REPLICATE_MARKER = "†"  # as in the r table: same width, different seed

_STYLE = "whitegrid"
_CONTEXT = "paper"
_DENSITY_MAP = "mako_r"
_FIT_COLOUR = sns.color_palette("deep")[3]  # red
_REFERENCE_COLOUR = "0.35"
_LOSS_COLOURS = dict(zip(("clean", "spliced", "zero"), sns.color_palette("deep", 3), strict=True))
_KIND_COLOURS = {"top": sns.color_palette("deep")[3], "random": "0.45", "frequent": sns.color_palette("deep")[0]}
_SEED_DASHES = ("-", "--", ":", "-.")


# --- shared ------------------------------------------------------------------------------


def _require(frame: Any, columns: Iterable[str], what: str) -> pd.DataFrame:
    """`frame`, checked: a ValueError names the first required column it lacks."""
    if not isinstance(frame, pd.DataFrame):
        raise TypeError(f"{what} must be a pandas DataFrame, got {type(frame).__name__}")
    for column in columns:
        if column not in frame.columns:
            raise ValueError(f"{what} has no column {column!r} (it has {', '.join(map(str, frame.columns))})")
    return frame


def _ordered_models(names: Iterable[str]) -> list[str]:
    """Unique model names, narrowest first, then by seed (w96 < w128 < w128-s1)."""
    return ordered(set(names))


def _width_styles(models: Sequence[str]) -> dict[str, tuple[Any, str]]:
    """(colour, line style) per model: colour by width on a sequential palette, dashes by seed."""
    widths = sorted({width_of(m) for m in models})
    palette = sns.color_palette("crest", n_colors=max(len(widths), 2))[-len(widths) :]
    colour = dict(zip(widths, palette, strict=True))
    styles = {}
    for model in models:
        width, seed = parse_model_name(model)
        styles[model] = (colour[width], _SEED_DASHES[seed % len(_SEED_DASHES)])
    return styles


@contextmanager
def _new_figure(**subplots: Any):
    """plt.subplots in the house style (seaborn's, without changing global settings);
    the figure is closed if drawing fails, so a failed call leaks nothing."""
    with sns.axes_style(_STYLE), sns.plotting_context(_CONTEXT):
        figure, axes = plt.subplots(layout="constrained", **subplots)
    try:
        yield figure, axes
    except BaseException:
        plt.close(figure)
        raise


def save_figure(figure: Figure, path: str | Path) -> Path:
    """Write `figure` as PNG to `path` atomically, close it, return the path.

    Matplotlib draws the artists while saving, so a bad input can fail here, after the
    temporary file was opened: the temporary file is removed and `path` is untouched.
    The size is the figure's (no tight bounding box): inches times DPI pixels.
    """
    path = Path(path)

    def write(partial: Path) -> None:
        try:
            # the temporary name ends in .partial-<attempt>: say the format, do not let it be guessed
            figure.savefig(partial, format="png", dpi=DPI)
        except BaseException:
            partial.unlink(missing_ok=True)
            raise

    try:
        write_atomically(path, write)
    finally:
        plt.close(figure)
    return path


# --- density-coloured scatter ------------------------------------------------------------


def point_density(
    x: np.ndarray,
    y: np.ndarray,
    exact_max_points: int = EXACT_KDE_MAX_POINTS,
    bins: int = DENSITY_BINS,
) -> np.ndarray:
    """Gaussian KDE density (scipy, Scott's bandwidth) of the 2-D points, at each point.

    Up to `exact_max_points` the exact KDE; above, the same kernel on a `bins` x `bins`
    grid: the points whitened by their covariance, binned, smoothed by a round Gaussian of
    Scott's bandwidth and read back by bilinear interpolation (about 20 ms for 24,576
    points, within about 1% of the exact KDE). Points on a line or a single point have no
    2-D density for the exact KDE and take the grid, smoothed per axis. Only the colours
    of the scatter depend on it.
    """
    points = np.vstack([np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)])  # (2, n)
    n = points.shape[1]
    if n == 0:
        return np.empty(0)
    if n <= exact_max_points:
        try:
            return stats.gaussian_kde(points)(points)
        # a singular covariance (points on a line, one point)
        except (np.linalg.LinAlgError, ValueError):
            pass
    return _grid_density(points, bins)


def _grid_density(points: np.ndarray, bins: int) -> np.ndarray:
    n = points.shape[1]
    # scipy's kernel has the points' covariance times Scott's factor squared; whitened by
    # the covariance the kernel is round, so one isotropic Gaussian filter on a grid is it
    try:
        if n < 3:
            raise np.linalg.LinAlgError("too few points for a covariance")
        whiten = np.linalg.inv(np.linalg.cholesky(np.cov(points)))  # (2, 2)
    # points on a line or a single point: smooth each axis by its own spread instead
    except np.linalg.LinAlgError:
        spread = points.std(axis=1)
        whiten = np.diag(1.0 / np.where(spread > 0, spread, 1.0))
    whitened = whiten @ points  # (2, n)
    bandwidth = n ** (-1 / 6)  # Scott's factor in 2-D, n^(-1/(d+4)), in whitened units
    # a margin of three bandwidths keeps the smoothed mass near the edges on the grid
    low = whitened.min(axis=1) - 3 * bandwidth
    high = whitened.max(axis=1) + 3 * bandwidth
    step = (high - low) / bins  # (2,)
    counts, _, _ = np.histogram2d(whitened[0], whitened[1], bins=bins, range=list(zip(low, high, strict=True)))
    smooth = ndimage.gaussian_filter(counts, sigma=bandwidth / step, mode="constant")  # (bins, bins)
    centres = (whitened - low[:, None]) / step[:, None] - 0.5  # (2, n), bin centres at integers
    density = ndimage.map_coordinates(smooth, centres, order=1, mode="nearest") / (n * step.prod())
    return density * abs(np.linalg.det(whiten))  # back to the density of the points


def _density_scatter(ax: plt.Axes, x: np.ndarray, y: np.ndarray) -> None:
    density = point_density(x, y)
    order = np.argsort(density, kind="stable")  # densest on top
    ax.scatter(x[order], y[order], c=density[order], cmap=_DENSITY_MAP, s=3, linewidths=0, rasterized=True)


# --- universality ------------------------------------------------------------------------


class PanelFit(NamedTuple):
    """What a universality panel draws of its fit."""

    curve: Callable[[np.ndarray], np.ndarray] | None
    """y of the fitted curve at x; None when the fit failed (then no curve is drawn)."""
    pearson_r: float
    """r(x, y), shown in the panel's title."""


def _fit_from_row(fit: Any, what: str) -> PanelFit:
    """A row of the fits table (b, c, pearson_r; a for the authors' curve) as a PanelFit."""
    for key in ("b", "c", "pearson_r"):
        if key not in fit:
            raise ValueError(f"{what} has no {key!r}")
    a = float(fit["a"]) if "a" in fit else 1.0
    b, c = float(fit["b"]), float(fit["c"])
    r = float(fit["pearson_r"])
    if not all(map(math.isfinite, (a, b, c))):
        return PanelFit(None, r)
    return PanelFit(lambda x: a * (1.0 - np.exp(-b * (x - c))), r)


def draw_universality_panel(
    ax: plt.Axes,
    points: pd.DataFrame,
    fit: PanelFit,
    title: str = "",
    reference: float | None = None,
) -> None:
    """One scatter of max similarity against relative importance, with the fitted curve.

    The title is `title` (if any) over "r = 0.42", plus "fit failed" without a curve.
    `reference` draws a dashed horizontal line (e.g. the same-width seed-replicate ceiling).
    """
    x = points["relative_importance"].to_numpy(dtype=np.float64)
    y = points["max_similarity"].to_numpy(dtype=np.float64)
    finite = np.isfinite(x) & np.isfinite(y)
    if not finite.all():
        log.warning("%s: %d points with NaN or infinite x or y are not drawn", title or "panel", (~finite).sum())
        x, y = x[finite], y[finite]
    _density_scatter(ax, x, y)
    if fit.curve is not None:
        grid = np.linspace(0.0, 1.0, 201)
        ax.plot(grid, fit.curve(grid), color=_FIT_COLOUR, linewidth=1.5, label="fit")
    if reference is not None:
        ax.axhline(reference, color=_REFERENCE_COLOUR, linestyle="--", linewidth=1, label="reference")
    low = min(Y_LIMITS[0], float(y.min()) - 0.05) if y.size else Y_LIMITS[0]
    high = max(Y_LIMITS[1], float(y.max()) + 0.05) if y.size else Y_LIMITS[1]
    ax.set_ylim(low, high)
    ax.set_xlim(-0.02, 1.02)
    r = f"r = {fit.pearson_r:.2f}" if math.isfinite(fit.pearson_r) else "r = n/a"
    if fit.curve is None:
        r += ", fit failed"
    ax.set_title(f"{title}\n{r}" if title else r, fontsize="small")


class UniversalityGrid(NamedTuple):
    """The grid figure before it is saved."""

    figure: Figure
    axes: np.ndarray
    """(n, n) Axes: axes[i, j] is source models[i] against target models[j]; the
    diagonal is hidden."""
    models: tuple[str, ...]
    """Narrowest first, then by seed."""


def build_universality_grid(
    pairs: Mapping[tuple[str, str], pd.DataFrame],
    fits: pd.DataFrame,
    replicate_pairs: Iterable[tuple[str, str]] = (),
    reference_lines: Mapping[tuple[str, str], float] | None = None,
) -> UniversalityGrid:
    """The talk's grid: one panel per ordered pair, source models down, target models across.

    pairs: (source, target) -> DataFrame with columns relative_importance and
    max_similarity, one row per source latent; every ordered pair of the models named
    must be there. fits: DataFrame with columns source, target, b, c, pearson_r (and `a`
    for the authors' curve), one row per pair; NaN b, c (or a) means the fit failed: no curve,
    and the title says so. replicate_pairs: pairs marked † (same width, different seed).
    reference_lines: (source, target) -> y of a dashed horizontal line.
    """
    if not pairs:
        raise ValueError("pairs is empty: nothing to draw")
    fits = _require(fits, ("source", "target", "b", "c", "pearson_r"), "fits")
    for source, target in pairs:
        if source == target:
            raise ValueError(f"pairs has ({source!r}, {target!r}): the grid's diagonal is left blank")
    models = _ordered_models(name for pair in pairs for name in pair)
    missing = [(s, t) for s in models for t in models if s != t and (s, t) not in pairs]
    if missing:
        raise ValueError(f"pairs lacks the ordered pair(s) {missing}: every source must meet every target")
    fit_rows = {}
    for _, row in fits.iterrows():
        key = (row["source"], row["target"])
        if key in fit_rows:
            raise ValueError(f"fits has the pair {key[0]} -> {key[1]} twice")
        fit_rows[key] = row
    reference_lines = dict(reference_lines or {})
    replicate_pairs = set(map(tuple, replicate_pairs))
    for name, keys in (("reference_lines", reference_lines), ("replicate_pairs", replicate_pairs)):
        unknown = [key for key in keys if key not in pairs]
        if unknown:
            raise ValueError(f"{name} names pair(s) not in pairs: {unknown}")
    panels = {}
    for key, points in pairs.items():
        _require(points, ("relative_importance", "max_similarity"), f"pairs[{key[0]!r}, {key[1]!r}]")
        if key not in fit_rows:
            raise ValueError(f"fits has no row for the pair {key[0]} -> {key[1]}")
        panels[key] = _fit_from_row(fit_rows[key], f"fits row {key[0]} -> {key[1]}")

    n = len(models)
    with _new_figure(nrows=n, ncols=n, figsize=(PANEL_INCHES * n, PANEL_INCHES * n), squeeze=False) as (
        figure,
        axes,
    ):
        for i, source in enumerate(models):
            for j, target in enumerate(models):
                ax = axes[i, j]
                if i == j:
                    ax.set_visible(False)
                    continue
                marker = REPLICATE_MARKER if (source, target) in replicate_pairs else ""
                draw_universality_panel(
                    ax,
                    pairs[source, target],
                    panels[source, target],
                    title=f"{source} → {target}{marker}",
                    reference=reference_lines.get((source, target)),
                )
                # labels on the outer visible panels only: the lowest of each column, the
                # leftmost of each row (the hidden diagonal moves them one panel in)
                lowest = i == (n - 2 if j == n - 1 else n - 1)
                leftmost = j == (1 if i == 0 else 0)
                ax.set_xlabel(X_LABEL if lowest else "")
                ax.set_ylabel(Y_LABEL if leftmost else "")
                ax.tick_params(labelbottom=lowest, labelleft=leftmost)
        note = f"; {REPLICATE_MARKER} same width, different seed" if replicate_pairs else ""
        figure.suptitle(f"Universality against importance\n(rows: source model, columns: target model{note})")
    return UniversalityGrid(figure, axes, tuple(models))


def universality_grid(
    pairs: Mapping[tuple[str, str], pd.DataFrame],
    fits: pd.DataFrame,
    path: str | Path,
    replicate_pairs: Iterable[tuple[str, str]] = (),
    reference_lines: Mapping[tuple[str, str], float] | None = None,
) -> Path:
    """Draw `build_universality_grid` to `path` (PNG); return the path."""
    return save_figure(build_universality_grid(pairs, fits, replicate_pairs, reference_lines).figure, path)


def build_universality_pair(
    points: pd.DataFrame,
    fit: Any,
    title: str,
    reference: float | None = None,
) -> Figure:
    """One pair's panel as its own figure.

    points: DataFrame with columns relative_importance and max_similarity. fit: a row of
    the fits table (a Series or mapping with b, c, pearson_r, optionally a), or a fit
    object from featscale.analysis.fits (TalkCurveFit, TalkCompatibleFit), whose r is then
    computed from the finite points drawn.
    """
    _require(points, ("relative_importance", "max_similarity"), "points")
    if isinstance(fit, Mapping | pd.Series):
        panel_fit = _fit_from_row(fit, "fit")
    elif hasattr(fit, "curve") and hasattr(fit, "converged"):
        x = points["relative_importance"].to_numpy(dtype=np.float64)
        y = points["max_similarity"].to_numpy(dtype=np.float64)
        finite = np.isfinite(x) & np.isfinite(y)
        panel_fit = PanelFit(fit.curve if fit.converged else None, pearson_r(x[finite], y[finite]))
    else:
        raise TypeError(f"fit must be a fits-table row or a universality fit, got {type(fit).__name__}")
    with _new_figure(figsize=(4.5, 4.0)) as (figure, ax):
        draw_universality_panel(ax, points, panel_fit, title=title, reference=reference)
        ax.set_xlabel(X_LABEL)
        ax.set_ylabel(Y_LABEL)
    return figure


def universality_pair(
    points: pd.DataFrame,
    fit: Any,
    path: str | Path,
    title: str,
    reference: float | None = None,
) -> Path:
    """Draw `build_universality_pair` to `path` (PNG); return the path."""
    return save_figure(build_universality_pair(points, fit, title, reference), path)


# --- losses ------------------------------------------------------------------------------


def build_reconstructed_losses(losses: pd.DataFrame) -> Figure:
    """The talk's "Reconstructed Losses": grouped bars per model (narrowest first) of the
    clean, SAE-spliced and zero-ablated next-token loss (nats); each model's tick also
    shows the fraction of the loss recovered, (zero - spliced) / (zero - clean).

    losses: DataFrame with columns model, clean, spliced, zero; one row per model.
    """
    _require(losses, ("model", "clean", "spliced", "zero"), "losses")
    if losses["model"].duplicated().any():
        raise ValueError(f"losses has model(s) twice: {sorted(set(losses['model'][losses['model'].duplicated()]))}")
    table = losses.set_index("model").loc[_ordered_models(losses["model"])]
    kinds = ("clean", "spliced", "zero")
    positions = np.arange(len(table))
    width = 0.8 / len(kinds)
    with _new_figure(figsize=(max(4.5, 1.4 * len(table) + 2), 3.8)) as (figure, ax):
        for k, kind in enumerate(kinds):
            values = table[kind].to_numpy(dtype=np.float64)
            bars = ax.bar(positions + (k - 1) * width, values, width, color=_LOSS_COLOURS[kind], label=kind)
            ax.bar_label(bars, fmt="%.2f", fontsize="x-small", padding=1)
        with np.errstate(divide="ignore", invalid="ignore"):
            recovered = (table["zero"] - table["spliced"]) / (table["zero"] - table["clean"])
        ax.set_xticks(
            positions,
            [
                f"{model}\n{value:.1%} recovered" if math.isfinite(value) else model
                for model, value in recovered.items()
            ],
        )
        ax.set_ylabel("next-token loss (nats)")
        ax.set_title("Reconstructed losses")
        ax.legend(title="loss", fontsize="small")
    return figure


def reconstructed_losses(losses: pd.DataFrame, path: str | Path) -> Path:
    """Draw `build_reconstructed_losses` to `path` (PNG); return the path."""
    return save_figure(build_reconstructed_losses(losses), path)


def build_feature_budget_curves(budget: pd.DataFrame) -> Figure:
    """Loss keeping only the top N features by importance, against N (log axis), one line
    per model: colour by width (darker is wider), dashes by seed. Do wider models get
    more from the same number of features?

    budget: DataFrame with columns model, n_features, loss; optional full_sae_loss and
    clean_loss (one value per model, repeated on its rows) draw thin horizontal lines in
    the model's colour (dashed: all SAE latents; dotted: the clean model). Budgets of
    zero features cannot sit on a log axis and are left out.
    """
    _require(budget, ("model", "n_features", "loss"), "budget")
    models = _ordered_models(budget["model"])
    styles = _width_styles(models)
    positive = budget["n_features"] > 0
    if not positive.all():
        log.info("feature budget: %d rows with n_features <= 0 are not drawn on the log axis", (~positive).sum())
    with _new_figure(figsize=(6.0, 4.2)) as (figure, ax):
        for model in models:
            rows = budget[positive & (budget["model"] == model)].sort_values("n_features")
            colour, dashes = styles[model]
            ax.plot(rows["n_features"], rows["loss"], dashes, color=colour, marker="o", markersize=3, label=model)
            every = budget[budget["model"] == model]
            for column, style in (("full_sae_loss", (0, (4, 2))), ("clean_loss", (0, (1, 2)))):
                if column in budget.columns and every[column].notna().any():
                    ax.axhline(every[column].dropna().iloc[0], color=colour, linestyle=style, linewidth=0.8)
        ax.set_xscale("log")
        ax.set_xlabel("number of features kept (top N by importance)")
        ax.set_ylabel("next-token loss (nats)")
        ax.set_title("Loss at a fixed number of features")
        note = [
            name
            for column, name in (("full_sae_loss", "dashed: all latents"), ("clean_loss", "dotted: clean model"))
            if column in budget.columns
        ]
        ax.legend(title="model" + (f" ({'; '.join(note)})" if note else ""), fontsize="small", title_fontsize="small")
    return figure


def feature_budget_curves(budget: pd.DataFrame, path: str | Path) -> Path:
    """Draw `build_feature_budget_curves` to `path` (PNG); return the path."""
    return save_figure(build_feature_budget_curves(budget), path)


def build_ablation_curves(ablation: pd.DataFrame) -> Figure:
    """Loss against the percent of latents zeroed, one panel per model (narrowest first),
    a line per kind: the most important (top), random, and the most frequent latents.
    A kind with several draws at a percent (random) is drawn as the mean with a min-max band.

    ablation: DataFrame with columns model, percent, kind (top, random or frequent),
    draw (int), loss.
    """
    _require(ablation, ("model", "percent", "kind", "draw", "loss"), "ablation")
    unknown = sorted(set(ablation["kind"]) - set(ABLATION_KINDS))
    if unknown:
        raise ValueError(f"ablation has kind(s) {unknown}; expected {', '.join(ABLATION_KINDS)}")
    models = _ordered_models(ablation["model"])
    ncols = min(len(models), 4)
    nrows = math.ceil(len(models) / ncols)
    with _new_figure(
        nrows=nrows, ncols=ncols, figsize=(3.2 * ncols, 3.2 * nrows + 0.4), sharey=True, squeeze=False
    ) as (figure, axes):
        for ax in axes.flat[len(models) :]:
            ax.set_visible(False)
        for ax, model in zip(axes.flat, models, strict=False):
            rows = ablation[ablation["model"] == model]
            for kind in ABLATION_KINDS:
                summary = (
                    rows[rows["kind"] == kind].groupby("percent")["loss"].agg(["mean", "min", "max", "count"])
                )
                if summary.empty:
                    continue
                colour = _KIND_COLOURS[kind]
                draws = int(rows.loc[rows["kind"] == kind, "draw"].nunique())
                label = f"{kind} (mean, min-max of {draws})" if draws > 1 else kind
                ax.plot(summary.index, summary["mean"], color=colour, marker="o", markersize=3, label=label)
                if (summary["count"] > 1).any():
                    ax.fill_between(summary.index, summary["min"], summary["max"], color=colour, alpha=0.25)
            ax.set_title(model)
            ax.set_xlabel("latents zeroed (%)")
        for row in axes:
            row[0].set_ylabel("next-token loss (nats)")
        axes.flat[len(models) - 1].legend(fontsize="small")
        figure.suptitle("Zero-ablating latents")
    return figure


def ablation_curves(ablation: pd.DataFrame, path: str | Path) -> Path:
    """Draw `build_ablation_curves` to `path` (PNG); return the path."""
    return save_figure(build_ablation_curves(ablation), path)


# --- across widths -----------------------------------------------------------------------


def build_features_by_width(measures: pd.DataFrame) -> Figure:
    """Small multiples, one panel per measure, against width (log2 axis, a tick at each
    width): every model is a point, the line joins the mean over seeds of each width.

    measures: DataFrame with columns model, width, l0, live_latents,
    non_collapsed_latents, n_for_recovery (NaN where not measured). `width` must
    agree with the model's name.
    """
    _require(measures, ("model", "width", *MEASURES), "measures")
    for model, width in zip(measures["model"], measures["width"], strict=True):
        if width_of(model) != width:
            raise ValueError(f"measures says model {model} has width {width}, its name says {width_of(model)}")
    widths = sorted(set(measures["width"].astype(int)))
    with _new_figure(ncols=len(MEASURES), figsize=(3.0 * len(MEASURES), 3.2), squeeze=False) as (figure, axes):
        for ax, (column, label) in zip(axes[0], MEASURES.items(), strict=True):
            values = measures[["width", column]].dropna()
            if values.empty:
                ax.text(0.5, 0.5, "not measured", ha="center", va="center", transform=ax.transAxes, color="0.4")
            else:
                mean = values.groupby("width")[column].mean()
                ax.plot(mean.index, mean.to_numpy(), color="0.3", linewidth=1)
                ax.scatter(values["width"], values[column], color=sns.color_palette("deep")[0], s=18, zorder=3)
            ax.set_xscale("log", base=2)
            ax.set_xlim(widths[0] / 1.3, widths[-1] * 1.3)  # the same on every panel, measured or not
            ax.set_xticks(widths, [str(w) for w in widths])
            ax.minorticks_off()
            ax.set_xlabel("width (d_model)")
            ax.set_title(label, fontsize="small")
        figure.suptitle("SAE features by model width")
    return figure


def features_by_width(measures: pd.DataFrame, path: str | Path) -> Path:
    """Draw `build_features_by_width` to `path` (PNG); return the path."""
    return save_figure(build_features_by_width(measures), path)


def build_scaling_law(points: pd.DataFrame, fits: Mapping[str, Any]) -> Figure:
    """Clean and SAE-spliced loss against non-embedding parameters N, log-log, with the
    fitted L = (N_c / N)^alpha as lines and alpha in the legend.

    points: DataFrame with columns model, n_params, clean_loss, spliced_loss.
    fits: "clean" and/or "spliced" -> a ScalingLawFit (anything with alpha, n_c and
    loss(N)); a loss without a fit is drawn as points only.
    """
    _require(points, ("model", "n_params", "clean_loss", "spliced_loss"), "points")
    unknown = sorted(set(fits) - {"clean", "spliced"})
    if unknown:
        raise ValueError(f"fits has key(s) {unknown}; expected clean and/or spliced")
    order = points.set_index("model").loc[_ordered_models(points["model"])]
    n_params = order["n_params"].to_numpy(dtype=np.float64)
    span = np.geomspace(n_params.min() / 1.5, n_params.max() * 1.5, 100)
    colours = {"clean": _LOSS_COLOURS["clean"], "spliced": _LOSS_COLOURS["spliced"]}
    with _new_figure(figsize=(5.5, 4.2)) as (figure, ax):
        for kind in ("clean", "spliced"):
            colour = colours[kind]
            ax.scatter(n_params, order[f"{kind}_loss"], color=colour, s=25, zorder=3, label=f"{kind} loss")
            if kind in fits:
                fit = fits[kind]
                ax.plot(
                    span,
                    fit.loss(span),
                    color=colour,
                    linewidth=1.2,
                    label=f"{kind} fit: α = {fit.alpha:.3f}, N_c = {fit.n_c:.2g}",
                )
        for model, n, loss in zip(order.index, n_params, order["clean_loss"], strict=True):
            ax.annotate(model, (n, loss), textcoords="offset points", xytext=(4, 4), fontsize="x-small")
        ax.set_xscale("log")
        ax.set_yscale("log")
        # losses span less than a decade: label the minor ticks as plain numbers, not 4 x 10^0
        for axis_formatter in (ax.yaxis.set_major_formatter, ax.yaxis.set_minor_formatter):
            axis_formatter(FormatStrFormatter("%.3g"))
        ax.set_xlabel("non-embedding parameters N")
        ax.set_ylabel("next-token loss (nats)")
        ax.set_title("Scaling law: L = (N_c / N)^α")
        ax.legend(fontsize="small")
    return figure


def scaling_law(points: pd.DataFrame, fits: Mapping[str, Any], path: str | Path) -> Path:
    """Draw `build_scaling_law` to `path` (PNG); return the path."""
    return save_figure(build_scaling_law(points, fits), path)


# --- controls ----------------------------------------------------------------------------


def _max_similarity(values: Any, what: str) -> np.ndarray:
    if isinstance(values, pd.DataFrame):
        values = _require(values, ("max_similarity",), what)["max_similarity"]
    values = np.asarray(values, dtype=np.float64).ravel()
    return values[np.isfinite(values)]


def build_null_distributions(
    real: pd.DataFrame | np.ndarray,
    null: pd.DataFrame | np.ndarray | Mapping[str, pd.DataFrame | np.ndarray],
    title: str,
    ceiling: float | None = None,
) -> Figure:
    """Overlaid density histograms of max similarity: the real latents against a null
    (e.g. a shuffled or untrained model), on common bins; `ceiling` draws a dashed
    vertical line (e.g. the seed-replicate ceiling).

    real, null: arrays of max similarity, or DataFrames with a max_similarity column
    (several null draws may simply be stacked); NaNs are left out. Several nulls are given
    as {label: values} (e.g. the shifted-token and the untrained null), each drawn in its own
    shade of grey.
    """
    real_values = _max_similarity(real, "real")
    nulls = null if isinstance(null, Mapping) else {"null": null}
    null_values = {label: _max_similarity(values, label) for label, values in nulls.items()}
    both = np.concatenate([real_values, *null_values.values()])
    if both.size == 0:
        raise ValueError("real and null hold no finite max similarity")
    edges = np.histogram_bin_edges(both, bins=60)
    greys = ("0.5", "0.25", "0.7")
    with _new_figure(figsize=(5.5, 3.8)) as (figure, ax):
        drawn = [(values, label, greys[i % len(greys)]) for i, (label, values) in enumerate(null_values.items())]
        for values, label, colour in [*drawn, (real_values, "real", sns.color_palette("deep")[0])]:
            if values.size:
                ax.hist(values, bins=edges, density=True, histtype="stepfilled", alpha=0.35, color=colour)
                ax.hist(values, bins=edges, density=True, histtype="step", color=colour, label=f"{label} (n = {values.size:,})")
        if ceiling is not None:
            ax.axvline(ceiling, color=_REFERENCE_COLOUR, linestyle="--", linewidth=1, label=f"ceiling = {ceiling:.2f}")
        ax.set_xlabel(Y_LABEL)
        ax.set_ylabel("density")
        ax.set_title(title)
        ax.legend(fontsize="small")
    return figure


def null_distributions(
    real: pd.DataFrame | np.ndarray,
    null: pd.DataFrame | np.ndarray | Mapping[str, pd.DataFrame | np.ndarray],
    path: str | Path,
    title: str,
    ceiling: float | None = None,
) -> Path:
    """Draw `build_null_distributions` to `path` (PNG); return the path."""
    return save_figure(build_null_distributions(real, null, title, ceiling), path)


# --- training ----------------------------------------------------------------------------

MODEL_METRICS = ("model", "tokens", "train_loss", "val_loss")
SAE_METRICS = ("model", "tokens", "mse", "sparsity_loss", "aux_loss", "l0", "dead_fraction")


def build_training_curves(models: pd.DataFrame, saes: pd.DataFrame) -> Figure:
    """How every model and its SAE trained, against training tokens, one line per model (colour by
    width, dashes by seed): the model's train loss (thin) and validation loss (dots, every
    training.eval_every steps); the SAE's training loss (MSE + sparsity + auxiliary, in its scaled
    units), L0 and fraction of dead latents, as logged every log_every steps.

    models: DataFrame with columns model, tokens, train_loss, val_loss (NaN between evaluations),
    the models' metrics.csv stacked; saes: columns model (the model the SAE reads), tokens, mse,
    sparsity_loss, aux_loss, l0, dead_fraction, the SAEs' metrics.csv stacked. `models` empty (a
    planted family trains no model): the model-loss panel says so.
    """
    if len(models):
        _require(models, MODEL_METRICS, "models")
    _require(saes, SAE_METRICS, "saes")
    names = _ordered_models([*models["model"], *saes["model"]])
    styles = _width_styles(names)
    panels = ("model loss (nats/token)", "SAE training loss", "SAE L0 (latents active per token)",
              "SAE dead latents (fraction)")
    with _new_figure(ncols=len(panels), figsize=(3.4 * len(panels), 3.6), squeeze=False) as (figure, axes):
        loss, sae_loss, l0, dead = axes[0]
        for model in names:
            colour, dashes = styles[model]
            rows = models[models["model"] == model].sort_values("tokens")
            if len(rows):
                loss.plot(rows["tokens"], rows["train_loss"], dashes, color=colour, linewidth=0.7, alpha=0.6)
                val = rows.dropna(subset=["val_loss"])
                loss.plot(val["tokens"], val["val_loss"], dashes, color=colour, marker="o", markersize=3,
                          linewidth=1.2, label=model)
            rows = saes[saes["model"] == model].sort_values("tokens")
            if len(rows):
                total = rows["mse"] + rows["sparsity_loss"] + rows["aux_loss"]
                sae_loss.plot(rows["tokens"], total, dashes, color=colour, label=model)
                l0.plot(rows["tokens"], rows["l0"], dashes, color=colour, label=model)
                dead.plot(rows["tokens"], rows["dead_fraction"], dashes, color=colour, label=model)
        for ax, title in zip(axes[0], panels, strict=True):
            ax.set_title(title, fontsize="small")
            ax.set_xlabel("training tokens")
            ax.xaxis.set_major_formatter(EngFormatter(sep=""))  # 200k, 1M: one style on every panel
        for ax in (sae_loss, l0):  # both fall by orders of magnitude early on
            ax.set_yscale("log")
            # plain numbers (6, not 6 x 10^0); minor ticks labelled, some of them, when the axis spans
            # less than two decades, so that a short axis is not left with one label
            ax.yaxis.set_major_formatter(LogFormatter(minor_thresholds=(2, 0.5)))
            ax.yaxis.set_minor_formatter(LogFormatter(labelOnlyBase=False, minor_thresholds=(2, 0.5)))
        dead.set_ylim(-0.02, max(0.1, float(saes["dead_fraction"].max()) * 1.1) if len(saes) else 1.0)
        if len(models):
            loss.legend(title="model (thin: train; dots: val)", fontsize="x-small", title_fontsize="x-small")
        else:
            loss.text(0.5, 0.5, "no model trained\n(a planted family)", ha="center", va="center", color="0.4",
                      transform=loss.transAxes)
        sae_loss.legend(title="SAE of", fontsize="x-small", title_fontsize="x-small")
        figure.suptitle("Training curves")
    return figure


def training_curves(models: pd.DataFrame, saes: pd.DataFrame, path: str | Path) -> Path:
    """Draw `build_training_curves` to `path` (PNG); return the path."""
    return save_figure(build_training_curves(models, saes), path)


def stacked_metrics(paths: Iterable[str | Path], levels_up: int) -> pd.DataFrame:
    """metrics.csv files stacked, each row's `model` the name of the folder `levels_up` above the
    file: models/{model}/metrics.csv (1), saes/{model}/{sae}/metrics.csv (2)."""
    frames = [pd.read_csv(path).assign(model=Path(path).parents[levels_up - 1].name) for path in paths]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=["model", "tokens"])


# --- what a run could not measure ------------------------------------------------------------


def build_not_measured(title: str, why: str) -> Figure:
    """A figure's title and, in its place, why this run has nothing to draw."""
    with _new_figure(figsize=(5.5, 2.0)) as (figure, ax):
        ax.set_axis_off()
        ax.set_title(title)
        ax.text(0.5, 0.5, why, ha="center", va="center", wrap=True, color="0.4", transform=ax.transAxes)
    return figure


def not_measured(path: str | Path, title: str, why: str) -> Path:
    """Draw `build_not_measured` to `path` (PNG); return the path."""
    return save_figure(build_not_measured(title, why), path)


# --- the rule --------------------------------------------------------------------------------

NO_LOSS = "not measured: a planted family has no language model,\nso no next-token loss"


def run_figures(inputs: Mapping[str, Any], outputs: Mapping[str, str | Path]) -> None:
    """Rule figures: every figure of one SAE spec from its tables (`inputs`: points, pairs, controls,
    losses, budget, widths, scaling, scaling_fits, and the lists model_metrics and sae_metrics, the
    models' and this spec's SAEs' metrics.csv; `outputs`: one path per figure, and the folders
    pairs and nulls)."""
    points = pd.read_parquet(inputs["points"])
    pairs = pd.read_csv(inputs["pairs"])
    controls = pd.read_csv(inputs["controls"])
    # the same-width seed replicate's mean max similarity: a ceiling line in the source's other panels
    ceilings = {(row.source, row.target): row.ceiling_mean for row in controls.itertuples()
                if not row.same_width_replicate and np.isfinite(row.ceiling_mean)}
    replicates = [(row.source, row.target) for row in controls.itertuples() if row.same_width_replicate]
    for mask, name in (("all", "grid"), ("masked", "grid_masked")):
        chosen = points if mask == "all" else points[~points["collapsed"]]
        # every ordered pair gets its panel, an empty one where the mask leaves no latent
        groups = dict(list(chosen.groupby(["source", "target"], sort=False)))
        panels = {pair: groups.get(pair, chosen.iloc[:0])
                  for pair in points[["source", "target"]].drop_duplicates().itertuples(index=False, name=None)}
        universality_grid(panels, pairs[pairs["mask"] == mask], outputs[name], replicate_pairs=replicates,
                          reference_lines=ceilings)
    write_atomically(outputs["nulls"], lambda folder: _null_figures(points, ceilings, folder))
    write_atomically(outputs["pairs"], lambda folder: _pair_figures(points, pairs, ceilings, folder))
    features_by_width(pd.read_csv(inputs["widths"]), outputs["widths"])
    training_curves(stacked_metrics(inputs["model_metrics"], 1), stacked_metrics(inputs["sae_metrics"], 2),
                    outputs["training"])
    losses = pd.read_csv(inputs["losses"])
    if losses["clean"].isna().all():  # no language model: no loss, no budget, no scaling law
        for name, title in (("losses", "Reconstructed losses"), ("budget", "Loss at a fixed number of features"),
                            ("ablation", "Zero-ablating latents"), ("scaling", "Scaling law: L = (N_c / N)^α")):
            not_measured(outputs[name], title, NO_LOSS)
        return
    reconstructed_losses(losses, outputs["losses"])
    budget = pd.read_csv(inputs["budget"])
    keep = budget[budget["kind"] == "keep"].copy()
    baselines = budget[budget["kind"].isin(["spliced", "clean"])].pivot(index="model", columns="kind", values="loss")
    keep["full_sae_loss"] = keep["model"].map(baselines["spliced"])
    keep["clean_loss"] = keep["model"].map(baselines["clean"])
    feature_budget_curves(keep, outputs["budget"])
    ablation_curves(budget[budget["kind"].isin(ABLATION_KINDS)], outputs["ablation"])
    fits = scaling_fits_from_json(json.loads(Path(inputs["scaling_fits"]).read_text()))
    scaling_law(pd.read_csv(inputs["scaling"]), fits, outputs["scaling"])


def _null_figures(points: pd.DataFrame, ceilings: Mapping[tuple[str, str], float], folder: Path) -> None:
    folder.mkdir()
    columns = {"shifted-token null": "null_max_similarity", "untrained-model null": "untrained_max_similarity"}
    columns = {label: column for label, column in columns.items()
               if column in points and points[column].notna().any()}
    if not columns:
        (folder / "README.txt").write_text("controls.shifted_null and controls.untrained_null are off: "
                                           "no null was computed.\n")
        return
    for (source, target), group in points.groupby(["source", "target"]):
        title = f"{source} → {target}: real and {'nulls' if len(columns) > 1 else 'null'}"
        null_distributions(group["max_similarity"].to_numpy(),
                           {label: group[column].to_numpy() for label, column in columns.items()},
                           folder / f"{source}__{target}.png", title=title, ceiling=ceilings.get((source, target)))


def _pair_figures(points: pd.DataFrame, pairs: pd.DataFrame, ceilings: Mapping[tuple[str, str], float],
                  folder: Path) -> None:
    folder.mkdir()
    fits = pairs[pairs["mask"] == "all"].set_index(["source", "target"])
    for (source, target), group in points.groupby(["source", "target"]):
        universality_pair(group, fits.loc[(source, target)], folder / f"{source}__{target}.png",
                          title=f"{source} → {target}", reference=ceilings.get((source, target)))
