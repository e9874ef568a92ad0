"""What the page shows of each latent's activations, from its column of the codes.

A feature store's rows are the counted tokens of the analysis windows, in order: row r is
position `first + r % per_window` of window `r // per_window`, where `first` is 1 when position
0 is left out (`include_position_0: false`) and per_window = context - first. So a row maps back
to its window and position through the store's own attrs, and its neighbours in the window are
the rows around it, up to the window's edges (the model saw nothing beyond them).

Per latent (pure numpy, no store access):

    top examples      the `top` rows with the largest activation, largest first (ties: earliest
                      row first, so the first is the store's argmax)
    sampled examples  one row drawn at random from each of `sampled` equal-count bands of the
                      other activations' ranks (band 0 lowest): what the latent does below its top
    context           each example's activations at positions peak - radius .. peak + radius of
                      its window, as uint8 shades: ceil(255 · a / max), so that any activation
                      stays visible; 0 where the latent is silent or the position is no counted row
    histogram         counts of its activations in `bins` equal bins of (0, max]
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np


class Windows(NamedTuple):
    """How the rows of a feature store sit in its windows."""

    context: int
    """Tokens per window."""
    first: int
    """The first counted position: 0, or 1 when position 0 is left out."""
    n_tokens: int
    """Counted rows of the store (the last window may be counted in part)."""

    @property
    def per_window(self) -> int:
        return self.context - self.first

    def neighbours(self, rows: np.ndarray, radius: int) -> tuple[np.ndarray, np.ndarray]:
        """(E, 2·radius + 1) rows around each row of `rows` in its window, and whether each is a
        counted row (inside the window, not position 0 when it is left out, below n_tokens)."""
        rows = np.asarray(rows, dtype=np.int64)
        window, offset = np.divmod(rows, self.per_window)
        position = (self.first + offset)[:, None] + np.arange(-radius, radius + 1)  # (E, 2R+1)
        around = window[:, None] * self.per_window + position - self.first
        counted = (position >= self.first) & (position < self.context) & (around < self.n_tokens)
        return np.where(counted, around, 0), counted


class ExampleSettings(NamedTuple):
    """How much of each latent the page shows (the feature browser's issue fixes these)."""

    top: int = 20
    sampled: int = 10
    radius: int = 16
    bins: int = 24


class Examples(NamedTuple):
    """The examples of a range of latents, concatenated latent by latent."""

    offsets: np.ndarray
    """(L + 1,) uint32: latent i's examples are offsets[i] .. offsets[i + 1] - 1."""
    rows: np.ndarray
    """(E,) uint32: the store row of each example's peak token."""
    values: np.ndarray
    """(E,) float32: the activation at the peak, exact."""
    band: np.ndarray
    """(E,) uint8: 0 for a top example; 1 + the band of a sampled one (1 = the lowest)."""
    shades: np.ndarray
    """(E, 2·radius + 1) uint8: ceil(255 · activation / max) around the peak, 0 where silent."""
    histogram: np.ndarray
    """(L, bins) uint32: activations in equal bins of (0, max]."""


def latent_examples(
    indptr: np.ndarray,
    rows: np.ndarray,
    values: np.ndarray,
    *,
    latents: range,
    maxima: np.ndarray,
    windows: Windows,
    settings: ExampleSettings,
    seed: int,
) -> Examples:
    """Examples of `latents` from CSC codes: column j holds rows[indptr[j]:indptr[j + 1]] (ascending)
    and their values. `maxima`: each latent's largest activation (the store's `max`)."""
    width = 2 * settings.radius + 1
    draws = np.random.default_rng([seed, latents.start]).random((len(latents), settings.sampled))
    offsets = np.zeros(len(latents) + 1, dtype=np.uint32)
    histogram = np.zeros((len(latents), settings.bins), dtype=np.uint32)
    parts: list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]] = []
    total = 0
    for i, latent in enumerate(latents):
        lo, hi = int(indptr[latent]), int(indptr[latent + 1])
        k = hi - lo
        if k:
            column_rows, column_values = rows[lo:hi], values[lo:hi]
            top_max = float(maxima[latent])
            picked, band = _pick(column_rows, column_values, settings, draws[i])
            peaks = column_rows[picked]
            around, counted = windows.neighbours(peaks, settings.radius)
            where = np.minimum(np.searchsorted(column_rows, around), k - 1)
            active = counted & (column_rows[where] == around)
            shades = np.where(active, np.ceil(255 * column_values[where] / top_max), 0)
            bins = np.minimum((column_values / top_max * settings.bins).astype(np.int64), settings.bins - 1)
            histogram[i] = np.bincount(bins, minlength=settings.bins)
            parts.append((peaks, column_values[picked], band, np.clip(shades, 0, 255).astype(np.uint8)))
            total += len(picked)
        offsets[i + 1] = total
    if parts:
        peaks, peak_values, bands, shades = (np.concatenate(p) for p in zip(*parts))
    else:
        peaks, peak_values, bands = np.zeros(0, np.int64), np.zeros(0, np.float32), np.zeros(0, np.uint8)
        shades = np.zeros((0, width), dtype=np.uint8)
    return Examples(offsets, peaks.astype(np.uint32), peak_values.astype(np.float32), bands.astype(np.uint8),
                    shades.reshape(-1, width), histogram)


def _pick(column_rows: np.ndarray, column_values: np.ndarray, settings: ExampleSettings,
          draws: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Positions in one latent's column of its top examples (largest first) and of one random
    activation per rank band below them (lowest band first), with each one's band."""
    k = len(column_values)
    n_top = min(settings.top, k)
    rest = k - n_top  # activations ranked below the top ones
    # a band [lo, hi) of ascending ranks among the rest; empty bands (fewer activations than bands) are skipped
    edges = (np.arange(settings.sampled + 1) * rest) // settings.sampled
    lo, hi = edges[:-1], edges[1:]
    full = hi > lo
    ranks = (lo + (draws * (hi - lo)).astype(np.int64))[full]
    if rest:
        order = np.argpartition(column_values, np.r_[ranks, rest])
    else:
        order = np.arange(k)
    top = order[rest:]
    top = top[np.lexsort((column_rows[top], -column_values[top]))]
    sampled = order[ranks]
    band = np.r_[np.zeros(n_top, dtype=np.uint8), (np.flatnonzero(full) + 1).astype(np.uint8)]
    return np.r_[top, sampled], band
