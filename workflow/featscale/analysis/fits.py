"""The talk's curve of universality against relative importance, and the authors' fit of it.

    fit_talk_curve          y = 1 - exp(-b(x - c)), plain least squares, several starts
    fit_talk_compatible     the authors' a(1 - exp(-b(x - c))), bounds, KDE weights
    bootstrap_talk_curve    percentile intervals of the talk's (b, c) over latents
    bootstrap_talk_compatible   ... of the authors' (a, b, c)
"""

from __future__ import annotations

import logging
import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import optimize, stats

from featscale.analysis.statistics import Interval, bootstrap_intervals

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
AUTHORS_MAXFEV = 2000  # their call's; scipy's bounded default allows 100 x 3 parameters = 300 evaluations

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
                authors_curve, x, y, p0=start, bounds=(lower, upper), sigma=sigma, maxfev=AUTHORS_MAXFEV
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
