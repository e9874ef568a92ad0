"""The scaling law of the models' losses: L = (N_c / N)^alpha in non-embedding parameters."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import pandas as pd

from featscale.config import non_embedding_params


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


def scaling_table(losses: pd.DataFrame, n_layers: int) -> tuple[pd.DataFrame, dict[str, ScalingLawFit]]:
    """N = 12·layers·width² per model, and L = (N_c/N)^α fitted to clean and spliced loss (when every
    model has one: a planted family has no loss, hence no fit)."""
    points = pd.DataFrame({
        "model": losses["model"],
        "n_params": [non_embedding_params(n_layers, w) for w in losses["width"]],
        "clean_loss": losses["clean"],
        "spliced_loss": losses["spliced"],
    })
    fits = {}
    if points["n_params"].nunique() >= 2 and np.isfinite(points[["clean_loss", "spliced_loss"]].to_numpy(float)).all():
        fits = {
            name: fit_scaling_law(points["n_params"].to_numpy(), points[f"{name}_loss"].to_numpy())
            for name in ("clean", "spliced")
        }
    return points, fits


def scaling_fits_json(fits: Mapping[str, ScalingLawFit]) -> dict[str, dict[str, float]]:
    """Every field of each fit, JSON-ready (`scaling_fits_from_json` reads it back)."""
    return {name: {key: float(value) for key, value in dataclasses.asdict(fit).items()} for name, fit in fits.items()}


def scaling_fits_from_json(data: Mapping[str, Mapping[str, float]]) -> dict[str, ScalingLawFit]:
    return {name: ScalingLawFit(**{**fields, "n": int(fields["n"])}) for name, fields in data.items()}
