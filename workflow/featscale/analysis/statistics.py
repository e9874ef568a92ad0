"""Statistics of importance against universality: correlations and bootstrap intervals over latents."""

from __future__ import annotations

import logging
import math
import warnings
from collections.abc import Callable
from typing import NamedTuple

import numpy as np
from scipy import stats

log = logging.getLogger(__name__)


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


# The fewest latents a pair (and mask) needs for its statistics: r of two points is ±1 by construction.
MIN_POINTS = 3


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
