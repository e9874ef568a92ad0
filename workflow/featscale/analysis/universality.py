"""Are important features universal? Importance on the talk's scale, the automatic collapse mask,
and the talk's table of r per ordered pair.

Inputs are per-latent numbers computed elsewhere (importance, max activation similarity,
decoder rows); everything here is numpy/pandas, so a test or a notebook can call it without
torch or the activation stores.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pandas as pd

from featscale.io import write_atomically
from featscale.names import ordered, same_width_replicates


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
                if same_width_replicates(source, target):
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
    names = ordered({r.source for r in records} | {r.target for r in records})
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
