"""Are important features universal? The fits, statistics and tables that answer it.

Inputs are per-latent numbers computed elsewhere (importance, max activation similarity,
firing frequency, decoder rows); everything here is numpy/scipy/pandas, so a test or a
notebook can call it without torch or the activation stores.

Read top to bottom:

    relative_importance     x of the talk's scatter plot
    collapsed_latents       the automatic replacement of the authors' hand-made mask
    fit_talk_curve          y = 1 - exp(-b(x - c)), plain least squares, several starts
    fit_talk_compatible     the authors' a(1 - exp(-b(x - c))), bounds, KDE weights
    pair_statistics         Pearson r (the talk's table), Spearman rho, r given frequency
    bootstrap_intervals     percentile intervals for any of the above
    bootstrap_talk_curve    ... of the talk's (b, c); bootstrap_talk_compatible: the authors' (a, b, c)
    r_table                 the talk's table: rows are the source model, columns the target
    fit_scaling_law         L = (N_c / N)^alpha in non-embedding parameters
"""

from __future__ import annotations

import logging
import math
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pandas as pd
from scipy import optimize, stats

from featscale.config import parse_model_name
from featscale.runtime import write_atomically

log = logging.getLogger(__name__)

# (b, c) starts of the plain fit: the authors' four (b, c) pairs, then one at the origin
TALK_CURVE_STARTS: tuple[tuple[float, float], ...] = (
    (5.0, 0.5),
    (1.0, 0.4),
    (10.0, 0.3),
    (3.0, 0.45),
    (1.0, 0.0),
)
# the authors' (a, b, c) starts, tried in this order; the first that converges is kept
AUTHORS_STARTS: tuple[tuple[float, float, float], ...] = (
    (1.0, 5.0, 0.5),
    (1.0, 1.0, 0.4),
    (0.8, 10.0, 0.3),
    (1.2, 3.0, 0.45),
)
AUTHORS_A_BOUNDS = (0.5, 2.0)
AUTHORS_B_BOUNDS = (0.1, 20.0)
AUTHORS_C_LOWER = 0.1  # the upper bound of c is the largest x

# --- importance ----------------------------------------------------------------------------


def relative_importance(
    importance: np.ndarray, counted: np.ndarray | None = None
) -> np.ndarray:
    """Importance divided by the largest importance among the `counted` latents.

    The talk's x axis: dividing by the SAE's own maximum puts SAEs of every width on
    [0, 1]. The maximum is taken over counted latents only (not dead, not collapsed), so
    an excluded latent cannot set the scale; every latent is divided, and the caller
    keeps the counted ones.
    """
    importance = np.asarray(importance, dtype=np.float64)
    pool = (
        importance if counted is None else importance[np.asarray(counted, dtype=bool)]
    )
    top = pool.max() if pool.size else np.nan
    if not np.isfinite(top) or top <= 0:
        raise ValueError(
            f"the largest counted importance is {top}: nothing to divide by "
            "(are all counted latents dead, or none counted?)"
        )
    return importance / top


class CollapsedLatents(NamedTuple):
    """Latents whose decoder direction is shared by a cluster of other latents."""

    collapsed: np.ndarray
    """(n_latents,) bool: True for a latent to drop."""
    neighbours: np.ndarray
    """(n_latents,) int: other latents with decoder cosine >= threshold."""
    threshold: float
    min_neighbours: int


def collapsed_latents(
    decoder: np.ndarray,
    threshold: float = 0.9,
    min_neighbours: int = 3,
    block_size: int = 1024,
) -> CollapsedLatents:
    """Mark latents in clusters of near-identical decoder directions, reproducibly.

    The authors dropped such clusters by hand before computing the r table; this marks a
    latent when at least `min_neighbours` other latents have decoder cosine >= `threshold`
    with it (only the same direction counts: an opposite direction is a different
    feature).

    Defaults. `threshold` 0.9: two random directions in d dimensions have cosine about
    N(0, 1/d), so 0.9 is 10 standard deviations at d = 128 and 25 at d = 768: it never
    happens by chance, while copies of one direction sit near 1.
    `min_neighbours` 3, i.e. a group of at least four: a pair of near-duplicates is an
    ordinary SAE imperfection, a clump of four or more latents on one direction is the
    collapse the authors removed. Both are settings of the study; the report states them.

    Memory is bounded by one (block_size, n_latents) float32 block of the cosine matrix
    (about 100 MB for 1024 x 24,576), never the whole matrix. Cosines within 1e-3 of the
    threshold are recomputed in float64, so the answer does not depend on the block size
    or on how the BLAS rounds float32 sums.

    decoder: (n_latents, d_model), one row per latent (SAELens' W_dec). A zero row (a
    latent that never trained) has no direction and is never counted.
    """
    decoder = np.asarray(decoder)
    if decoder.ndim != 2:
        raise ValueError(
            f"decoder must be (n_latents, d_model), got shape {decoder.shape}"
        )
    if not 0 < threshold <= 1:
        raise ValueError(f"threshold must be in (0, 1], got {threshold}")
    if min_neighbours < 1 or block_size < 1:
        raise ValueError("min_neighbours and block_size must be at least 1")
    n = len(decoder)
    norms = np.linalg.norm(decoder.astype(np.float64), axis=1)  # (n,)
    scale = np.divide(1.0, norms, out=np.zeros_like(norms), where=norms > 0)
    unit = (decoder * scale[:, None]).astype(np.float32)  # (n, d), zero rows stay zero
    margin = 1e-3
    neighbours = np.zeros(n, dtype=np.int64)
    # the cosine matrix is symmetric: each block of rows meets only itself and later rows
    for start in range(0, n, block_size):
        stop = min(start + block_size, n)
        cosine = unit[start:stop] @ unit[start:].T  # (block, n - start)
        rows = np.arange(stop - start)
        cosine[rows, rows] = -np.inf  # a latent is not its own neighbour
        near_r, near_c = np.nonzero(
            (cosine > threshold - margin) & (cosine < threshold + margin)
        )
        if near_r.size:
            i, j = start + near_r, start + near_c
            exact = np.einsum(
                "ij,ij->i",
                decoder[i].astype(np.float64) * scale[i, None],
                decoder[j].astype(np.float64) * scale[j, None],
            )
            cosine[near_r, near_c] = exact
        close = cosine >= threshold  # (block, n - start)
        # the block's rows count all their pairs; later rows count their pairs with it
        neighbours[start:stop] += close.sum(axis=1)
        neighbours[stop:] += close[:, stop - start :].sum(axis=0)
    return CollapsedLatents(
        neighbours >= min_neighbours, neighbours, threshold, min_neighbours
    )


# --- the talk's curve ----------------------------------------------------------------------


def talk_curve(x: np.ndarray, b: float, c: float) -> np.ndarray:
    """y = 1 - exp(-b(x - c)): universality saturates at 1 as importance grows."""
    return 1.0 - np.exp(-b * (x - c))


def authors_curve(x: np.ndarray, a: float, b: float, c: float) -> np.ndarray:
    """y = a(1 - exp(-b(x - c))): the authors' code, with a free ceiling a."""
    return a * (1.0 - np.exp(-b * (x - c)))


@dataclass(frozen=True)
class TalkCurveFit:
    """y = 1 - exp(-b(x - c)) fitted by least squares; when `converged` is False, the
    numbers are NaN and `reason` says why (a failed fit must not stop the report)."""

    b: float
    c: float
    # standard errors from the covariance, scaled by the residual variance
    b_error: float
    c_error: float
    r_squared: float  # 1 - SS_res / SS_tot of y, unweighted
    n: int
    start: int  # index of the winning start; -1 when none converged
    converged: bool
    reason: str = ""

    def curve(self, x: np.ndarray) -> np.ndarray:
        return talk_curve(np.asarray(x, dtype=np.float64), self.b, self.c)


@dataclass(frozen=True)
class TalkCompatibleFit:
    """The authors' a(1 - exp(-b(x - c))), as they fitted it; NaN with a `reason` on failure."""

    a: float
    b: float
    c: float
    a_error: float
    b_error: float
    c_error: float
    r_squared: float  # 1 - SS_res / SS_tot of y, unweighted (not the KDE-weighted one)
    n: int
    # index into AUTHORS_STARTS of the first start that converged; -1 if none
    start: int
    converged: bool
    reason: str = ""

    def curve(self, x: np.ndarray) -> np.ndarray:
        return authors_curve(np.asarray(x, dtype=np.float64), self.a, self.b, self.c)


def _points(
    x: np.ndarray, y: np.ndarray, n_params: int
) -> tuple[np.ndarray, np.ndarray, str]:
    """x, y as float64 vectors, and why they cannot be fitted ("" when they can)."""
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    if x.shape != y.shape or x.ndim != 1:
        raise ValueError(
            f"x and y must be 1-D of one length, got {x.shape} and {y.shape}"
        )
    if not (np.isfinite(x).all() and np.isfinite(y).all()):
        return x, y, "x or y has NaN or infinite values: exclude those latents first"
    if len(x) <= n_params:
        return x, y, f"{len(x)} points are too few for a {n_params}-parameter curve"
    if np.ptp(x) == 0:
        return x, y, "every x is the same: the curve's shape is not determined"
    return x, y, ""


def _r_squared(y: np.ndarray, fitted: np.ndarray) -> float:
    total = float(((y - y.mean()) ** 2).sum())
    return 1.0 - float(((y - fitted) ** 2).sum()) / total if total > 0 else math.nan


def _errors(pcov: np.ndarray) -> np.ndarray:
    # curve_fit fills pcov with inf when the Jacobian is singular: the errors are unknown
    return np.sqrt(np.abs(np.diag(pcov)))


def fit_talk_curve(
    x: np.ndarray,
    y: np.ndarray,
    starts: Sequence[tuple[float, float]] = TALK_CURVE_STARTS,
) -> TalkCurveFit:
    """Fit the talk's y = 1 - exp(-b(x - c)) to relative importance x and universality y.

    Unweighted least squares (Levenberg-Marquardt via scipy's curve_fit), run from every
    start; the fit with the smallest sum of squared residuals wins, so the answer does not
    depend on the order of the starts or on one unlucky start. A start that ends where
    the Jacobian is singular (infinite covariance) does not count as converged.

    The errors are curve_fit's (the Jacobian covariance scaled by the residual
    variance): they assume independent residuals of one variance; for intervals that
    do not, bootstrap over latents.
    """
    x, y, problem = _points(x, y, n_params=2)
    n = len(x)
    if problem:
        return _failed_talk_curve(n, problem)
    best = None
    reasons = []
    for index, start in enumerate(starts):
        try:
            with (
                warnings.catch_warnings(),
                np.errstate(over="ignore", invalid="ignore"),
            ):
                warnings.simplefilter("ignore", optimize.OptimizeWarning)
                params, pcov = optimize.curve_fit(talk_curve, x, y, p0=start)
        # no convergence (RuntimeError), or a non-finite start or failed SVD (ValueError)
        except (RuntimeError, ValueError) as error:
            reasons.append(f"start {index} {tuple(start)}: {error}")
            continue
        cost = float(((y - talk_curve(x, *params)) ** 2).sum())
        if not np.isfinite(cost):
            reasons.append(f"start {index} {tuple(start)}: non-finite residuals")
        elif not np.isfinite(pcov).all():
            # a flat or singular Jacobian, e.g. stuck where the curve is constant: a
            # stationary point, not a fit whose parameters the data determine
            reasons.append(f"start {index} {tuple(start)}: covariance not finite")
        elif best is None or cost < best[0]:
            best = (cost, index, params, pcov)
    if best is None:
        return _failed_talk_curve(n, "no start converged; " + "; ".join(reasons))
    _, index, (b, c), pcov = best
    b_error, c_error = _errors(pcov)
    return TalkCurveFit(
        b=float(b),
        c=float(c),
        b_error=float(b_error),
        c_error=float(c_error),
        r_squared=_r_squared(y, talk_curve(x, b, c)),
        n=n,
        start=index,
        converged=True,
    )


def _failed_talk_curve(n: int, reason: str) -> TalkCurveFit:
    log.warning("talk curve not fitted: %s", reason)
    nan = math.nan
    return TalkCurveFit(nan, nan, nan, nan, nan, n, -1, converged=False, reason=reason)


def authors_sigma(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """The authors' weights: sigma = 1 / (Gaussian KDE density of the (x, y) points).

    Dense regions of the scatter get small sigma, hence large weight: the fit follows the
    bulk of latents rather than the sparse tail. scipy's default (Scott) bandwidth. The
    KDE costs O(n^2): a few seconds for 24,576 latents.
    """
    points = np.vstack([x, y])  # (2, n)
    return 1.0 / stats.gaussian_kde(points)(points)


def fit_talk_compatible(x: np.ndarray, y: np.ndarray) -> TalkCompatibleFit:
    """The authors' fit, mirrored exactly, so the talk's curves can be reproduced.

    a(1 - exp(-b(x - c))) by scipy's curve_fit with p0 and bounds a in [0.5, 2],
    b in [0.1, 20], c in [0.1, max x] (so the bounded 'trf' method), sigma from
    `authors_sigma` (relative weights: absolute_sigma left False), and the starts of
    AUTHORS_STARTS tried in order, keeping the first that converges (not the best).

    A start outside the bounds is not clipped: scipy refuses it ("Initial guess is outside
    of provided bounds") and so do we, moving on to the next start, as the authors' call
    would have. That only happens when max x < 0.5, e.g. x not divided by the maximum.
    """
    x, y, problem = _points(x, y, n_params=3)
    n = len(x)
    if problem:
        return _failed_talk_compatible(n, problem)
    lower = (AUTHORS_A_BOUNDS[0], AUTHORS_B_BOUNDS[0], AUTHORS_C_LOWER)
    upper = (AUTHORS_A_BOUNDS[1], AUTHORS_B_BOUNDS[1], float(x.max()))
    if upper[2] <= lower[2]:
        return _failed_talk_compatible(
            n, f"max x = {upper[2]} is not above c's lower bound {lower[2]}"
        )
    try:
        sigma = authors_sigma(x, y)
    # points on a line have no 2-D density: the KDE's covariance is singular
    except np.linalg.LinAlgError as error:
        return _failed_talk_compatible(n, f"Gaussian KDE of the points failed: {error}")
    reasons = []
    for index, start in enumerate(AUTHORS_STARTS):
        try:
            params, pcov = optimize.curve_fit(
                authors_curve, x, y, p0=start, bounds=(lower, upper), sigma=sigma
            )
        # no convergence (RuntimeError), or a start outside the bounds (ValueError)
        except (RuntimeError, ValueError) as error:
            reasons.append(f"start {index} {start}: {error}")
            continue
        a, b, c = params
        a_error, b_error, c_error = _errors(pcov)
        return TalkCompatibleFit(
            a=float(a),
            b=float(b),
            c=float(c),
            a_error=float(a_error),
            b_error=float(b_error),
            c_error=float(c_error),
            r_squared=_r_squared(y, authors_curve(x, a, b, c)),
            n=n,
            start=index,
            converged=True,
        )
    return _failed_talk_compatible(n, "no start converged; " + "; ".join(reasons))


def _failed_talk_compatible(n: int, reason: str) -> TalkCompatibleFit:
    log.warning("talk-compatible curve not fitted: %s", reason)
    nan = math.nan
    return TalkCompatibleFit(
        nan, nan, nan, nan, nan, nan, nan, n, -1, converged=False, reason=reason
    )


# --- correlations --------------------------------------------------------------------------


class PairStatistics(NamedTuple):
    """How strongly importance and universality go together, for one ordered pair."""

    pearson_r: float
    """r(x, y): the number in the talk's table."""
    spearman_rho: float
    """Rank correlation: unmoved by the curve's saturation or by a few huge importances."""
    partial_r: float
    """r of x and y after removing what log firing frequency explains in each."""
    n: int


def pearson_r(x: np.ndarray, y: np.ndarray) -> float:
    """Pearson correlation of two vectors (NaN when either is constant)."""
    x = np.asarray(x, dtype=np.float64) - np.mean(x)
    y = np.asarray(y, dtype=np.float64) - np.mean(y)
    denominator = math.sqrt(float(x @ x) * float(y @ y))
    return float(x @ y) / denominator if denominator > 0 else math.nan


def pair_statistics(
    importance: np.ndarray, max_similarity: np.ndarray, firing_frequency: np.ndarray
) -> PairStatistics:
    """Pearson r, Spearman rho and the partial r given log firing frequency.

    Why the partial correlation: a latent that fires often has both a better-estimated
    (and typically larger) max activation and more chances to correlate with something,
    so frequency alone could make importance and universality look related. Regressing x
    and y each on log frequency (with intercept) and correlating the residuals asks
    whether they go together beyond that. Pearson r is scale-free, so `importance` may be
    raw or relative. `firing_frequency` is the fraction (or count) of analysis tokens on
    which the latent fires; it must be positive (exclude dead latents first).
    """
    x = np.asarray(importance, dtype=np.float64)
    y = np.asarray(max_similarity, dtype=np.float64)
    frequency = np.asarray(firing_frequency, dtype=np.float64)
    if not x.shape == y.shape == frequency.shape or x.ndim != 1:
        raise ValueError(
            "importance, max_similarity and firing_frequency must be 1-D of one length"
        )
    if not (frequency > 0).all():
        raise ValueError(
            "firing_frequency must be positive: exclude dead latents first"
        )
    design = np.column_stack([np.ones_like(frequency), np.log(frequency)])  # (n, 2)
    both = np.column_stack([x, y])  # (n, 2)
    coefficients = np.linalg.lstsq(design, both, rcond=None)[0]  # (2, 2)
    residuals = both - design @ coefficients  # (n, 2)
    return PairStatistics(
        pearson_r=pearson_r(x, y),
        spearman_rho=float(stats.spearmanr(x, y).statistic),
        partial_r=pearson_r(residuals[:, 0], residuals[:, 1]),
        n=len(x),
    )


class Interval(NamedTuple):
    """A percentile bootstrap interval: floats for a scalar statistic, arrays for a vector."""

    low: float | np.ndarray
    high: float | np.ndarray


def bootstrap_intervals(
    x: np.ndarray,
    y: np.ndarray,
    statistic: Callable[[np.ndarray, np.ndarray], float | np.ndarray],
    n_resamples: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
) -> Interval:
    """Percentile bootstrap interval of `statistic(x, y)` over latents.

    Each resample draws n latents with replacement, keeping each latent's (x, y) together;
    the interval is the (1 - confidence)/2 and (1 + confidence)/2 quantiles of the
    resampled statistic. Latents, not tokens, are the units: the question is about the
    population of features, and resampling them is what varies when another SAE is
    trained. The same seed gives the same resamples, hence the same interval, for every
    statistic. A statistic that fails on a resample should return NaN: such resamples
    are left out (and logged), so one failed fit does not void the interval.
    """
    x, y = np.asarray(x), np.asarray(y)
    if len(x) != len(y):
        raise ValueError(f"x and y have different lengths ({len(x)} and {len(y)})")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    rng = np.random.default_rng(seed)
    n = len(x)
    values = []
    for _ in range(n_resamples):
        take = rng.integers(0, n, size=n)
        values.append(np.asarray(statistic(x[take], y[take]), dtype=np.float64))
    values = np.stack(values)  # (n_resamples, *statistic shape)
    failed = np.isnan(values).reshape(n_resamples, -1).any(axis=1).sum()
    if failed:
        log.warning(
            "bootstrap: the statistic was NaN on %d of %d resamples",
            failed,
            n_resamples,
        )
    tail = (1 - confidence) / 2
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN slices give NaN
        low, high = np.nanquantile(values, [tail, 1 - tail], axis=0)
    if low.ndim == 0:
        return Interval(float(low), float(high))
    return Interval(low, high)


def bootstrap_talk_curve(
    x: np.ndarray,
    y: np.ndarray,
    fit: TalkCurveFit,
    n_resamples: int = 200,
    confidence: float = 0.95,
    seed: int = 0,
) -> Interval:
    """Percentile bootstrap intervals of the talk's (b, c) over latents: arrays [b, c] low and high.

    Each resample is refitted from `fit`'s (b, c), the full data's optimum, which the resample's
    optimum lies near; only when that start fails are the usual starts tried. One start instead
    of five makes a resample about 15 times cheaper (some 15 ms at 24,576 latents). NaN when
    `fit` did not converge.
    """
    if not fit.converged:
        return Interval(np.full(2, np.nan), np.full(2, np.nan))

    def parameters(u: np.ndarray, v: np.ndarray) -> np.ndarray:
        refit = fit_talk_curve(u, v, starts=((fit.b, fit.c),))
        if not refit.converged:
            refit = fit_talk_curve(u, v)
        return np.array([refit.b, refit.c])

    return bootstrap_intervals(x, y, parameters, n_resamples, confidence, seed)


def bootstrap_talk_compatible(
    x: np.ndarray,
    y: np.ndarray,
    n_resamples: int = 20,
    confidence: float = 0.95,
    seed: int = 0,
) -> Interval:
    """Percentile bootstrap intervals of the authors' (a, b, c) over latents: arrays [a, b, c].

    Each resample runs `fit_talk_compatible` as it is, KDE weights of the resample included,
    so a resample costs what the fit costs (O(n^2): about 20 s at 24,576 latents).
    """

    def parameters(u: np.ndarray, v: np.ndarray) -> np.ndarray:
        refit = fit_talk_compatible(u, v)
        return np.array([refit.a, refit.b, refit.c])

    return bootstrap_intervals(x, y, parameters, n_resamples, confidence, seed)


# --- the r table ---------------------------------------------------------------------------


class RValue(NamedTuple):
    """One cell of the r table: a statistic of the ordered pair (source -> target)."""

    source: str
    target: str
    value: float
    low: float = math.nan
    high: float = math.nan


@dataclass(frozen=True)
class RTable:
    """The talk's table: rows are the source model, columns the target model.

    `value.loc[source, target]` is the statistic of source's latents against target's
    SAE; `low` and `high` hold interval bounds (NaN where none were given). Models are
    ordered by width, then seed; every model is both a row and a column, and a missing
    cell, the diagonal by default, is NaN.
    """

    value: pd.DataFrame
    low: pd.DataFrame
    high: pd.DataFrame

    def cells(self, digits: int = 4, replicate_marker: str = "†") -> pd.DataFrame:
        """The table as text: `0.7002`, or `0.7002 [0.6950, 0.7051]` with an interval,
        `-` where empty, and `replicate_marker` on pairs of one width and two seeds."""
        text = pd.DataFrame("-", index=self.value.index, columns=self.value.columns)
        for source in self.value.index:
            for target in self.value.columns:
                value = self.value.loc[source, target]
                if np.isnan(value):
                    continue
                cell = f"{value:.{digits}f}"
                low, high = self.low.loc[source, target], self.high.loc[source, target]
                if not (np.isnan(low) and np.isnan(high)):
                    cell += f" [{low:.{digits}f}, {high:.{digits}f}]"
                if _same_width_replicates(source, target):
                    cell += replicate_marker
                text.loc[source, target] = cell
        return text

    def to_markdown(self, digits: int = 4, replicate_marker: str = "†") -> str:
        """A Markdown table (rows: source), with a footnote when a replicate marker is used."""
        text = self.cells(digits, replicate_marker)
        header = ["source \\ target", *text.columns]
        lines = [
            "| " + " | ".join(header) + " |",
            "|" + "|".join(["---"] + ["---:"] * len(text.columns)) + "|",
        ]
        for source, row in text.iterrows():
            lines.append("| " + " | ".join([str(source), *row]) + " |")
        if replicate_marker and any(
            replicate_marker in cell for cell in text.to_numpy().ravel()
        ):
            lines += ["", f"{replicate_marker} same width, different seed"]
        return "\n".join(lines) + "\n"

    def to_csv(
        self, path: str | Path, digits: int = 4, replicate_marker: str = "†"
    ) -> None:
        """The text cells, in the talk's layout (first column: source), written atomically."""
        text = self.cells(digits, replicate_marker)
        text.index.name = "source"
        write_atomically(path, lambda p: text.to_csv(p, encoding="utf-8"))


def _same_width_replicates(source: str, target: str) -> bool:
    (source_width, source_seed), (target_width, target_seed) = map(
        parse_model_name, (source, target)
    )
    return source_width == target_width and source_seed != target_seed


def r_table(rows: Iterable[RValue | tuple | Mapping]) -> RTable:
    """Arrange per-pair statistics as the talk's table (row = source, column = target).

    rows: RValue records, or tuples (source, target, value[, low, high]), or mappings with
    those keys. Model names are `w256` or `w256-s1` (featscale.config.model_name) and are
    ordered by width, then seed: w96 before w128 before w1024. A pair given twice is an
    error, not silently overwritten.
    """
    records = [
        RValue(**row) if isinstance(row, Mapping) else RValue(*row) for row in rows
    ]
    seen = set()
    for record in records:
        key = (record.source, record.target)
        if key in seen:
            raise ValueError(f"the pair {key[0]} -> {key[1]} is given twice")
        seen.add(key)
    names = sorted(
        {r.source for r in records} | {r.target for r in records}, key=parse_model_name
    )
    tables = {
        field: pd.DataFrame(
            np.nan,
            index=pd.Index(names, name="source"),
            columns=pd.Index(names, name="target"),
        )
        for field in ("value", "low", "high")
    }
    for record in records:
        for field, table in tables.items():
            table.loc[record.source, record.target] = float(getattr(record, field))
    return RTable(**tables)


# --- scaling law ---------------------------------------------------------------------------


def non_embedding_params(n_layers: int, width: int) -> int:
    """The N of the scaling law: 12 * layers * width^2 (attention 4 d^2 + MLP 8 d^2 per
    layer; biases and LayerNorm gains left out, as Kaplan et al. 2020). The same count as
    featscale.model.GPTConfig.non_embedding_params, without importing torch."""
    return 12 * n_layers * width**2


@dataclass(frozen=True)
class ScalingLawFit:
    """L = (N_c / N)^alpha, fitted as a line in log-log space."""

    alpha: float
    n_c: float
    alpha_error: float  # standard errors; NaN with only two points (no residual left)
    n_c_error: (
        float  # delta method: n_c * log_n_c_error; asymmetric in truth, use the log
    )
    log_n_c_error: float  # standard error of ln N_c
    r_squared: float  # of the line in log space
    n: int

    def loss(self, n_params: np.ndarray) -> np.ndarray:
        return (self.n_c / np.asarray(n_params, dtype=np.float64)) ** self.alpha


def fit_scaling_law(n_params: np.ndarray, loss: np.ndarray) -> ScalingLawFit:
    """Fit L = (N_c / N)^alpha by linear least squares on log L = alpha ln N_c - alpha ln N.

    Fitting in log space weighs every model equally in relative loss, as the talk's
    log-log plot shows them, and makes the fit linear: no starts, no convergence.
    N_c is usually far outside the data (about 1e13 here), so its error is best read
    on the log scale (`log_n_c_error`).
    """
    n_params = np.asarray(n_params, dtype=np.float64)
    loss = np.asarray(loss, dtype=np.float64)
    if n_params.shape != loss.shape or n_params.ndim != 1 or len(n_params) < 2:
        raise ValueError("n_params and loss must be 1-D of one length, at least 2")
    if not ((n_params > 0).all() and (loss > 0).all()):
        raise ValueError("n_params and loss must be positive")
    if np.ptp(n_params) == 0:
        raise ValueError("every model has the same size: no slope to fit")
    design = np.column_stack([np.ones_like(n_params), np.log(n_params)])  # (n, 2)
    target = np.log(loss)
    (intercept, slope), *_ = np.linalg.lstsq(design, target, rcond=None)
    residuals = target - design @ (intercept, slope)
    n = len(target)
    if n > 2:
        variance = float(residuals @ residuals) / (n - 2)
        cov = variance * np.linalg.inv(design.T @ design)  # of (intercept, slope)
    else:
        cov = np.full((2, 2), np.nan)
    alpha = -slope
    log_n_c = intercept / alpha  # intercept = alpha ln N_c
    # gradient of ln N_c = -intercept / slope with respect to (intercept, slope)
    gradient = np.array([-1.0 / slope, intercept / slope**2])
    log_n_c_error = math.sqrt(float(gradient @ cov @ gradient))  # NaN propagates
    total = float(((target - target.mean()) ** 2).sum())
    return ScalingLawFit(
        alpha=float(alpha),
        n_c=math.exp(log_n_c),
        alpha_error=math.sqrt(cov[1, 1]),
        n_c_error=math.exp(log_n_c) * log_n_c_error,
        log_n_c_error=log_n_c_error,
        r_squared=1.0 - float(residuals @ residuals) / total,
        n=n,
    )
