"""Exact Pearson correlation of every latent of one SAE with every latent of another, from sparse codes.

Over n tokens, with per-latent sums s, sums of squares q and the co-occurrence sums
S = AᵀB (A, B the (n, F) code matrices),

    r_ij = (S_ij / n − μ_i μ_j) / (σ_i σ_j),   μ = s / n,   σ² = q / n − μ²,

so only S needs the codes, and S costs n · L0_A · L0_B multiply-adds instead of n · F_A · F_B
for dense codes. S is built one block of A's latents at a time, streaming both stores' codes
token chunk by token chunk: each (token, active A latent in the block, active B latent)
triple is one product of scipy's compiled sparse product (AᵀB of the chunk), accumulated in
float64 into the block's dense S a sub-block at a time. Blocks run in separate processes
(scipy's product is single-threaded), each writing its rows of the matrix; memory is bounded
by the block and chunk sizes, not by n.

Latents that fire on fewer than `min_count` tokens (the dead ones included) are excluded
from both sides and counted: their correlation is undefined (dead) or dominated by a few
coincidences (rare). Their rows and columns are absent, never filled with a sentinel.

This module is the one home of the output format, `correlations/{sae}/{a}__{b}.zarr/`, a zarr v3
group of root arrays whose `dimension_names` make the latent ids coordinates, so that
`xarray.open_zarr(path, consolidated=False)` reads it as a Dataset with a labelled matrix:

    a_latent, b_latent            (n_counted,) int32   latent ids of the counted latents of
                                  each side: the coordinates of every other array
    a_max_similarity, a_best_partner   (a_latent) for each counted A latent its signed max r
                                  over the counted B latents (float64) and that B latent's id
                                  (int32); b_max_similarity, b_best_partner (b_latent) the reverse
    matrix                        (a_latent, b_latent) r, rows and columns in the order of
                                  a_latent and b_latent (absent when matrix dtype is "none")
    attrs                         format, a, b (the models), sae, n_tokens, min_count,
                                  a_counted, a_dead, a_rare, b_counted, b_dead, b_rare (latents
                                  counted and excluded on each side), block_latents, token_chunk,
                                  matrix_dtype, shift (0, or the shifted-token null's shift)

Format 1 (`featscale.correlations/1`) kept the per-latent arrays in subgroups a/ and b/
(`a/latent`, `a/max_similarity`, `a/best_partner`), where xarray sees no coordinates; it is
still read (`open_correlations`), and written no more.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import sys
from collections.abc import Mapping
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import zarr
from scipy import sparse

from featscale.config import CorrelationSettings
from featscale.features.store import FeatureStore, open_features
from featscale.io import write_atomically

FORMAT = "featscale.correlations/2"
FORMAT_1 = "featscale.correlations/1"  # per-latent arrays in subgroups a/ and b/: read, not written
SIDE_ARRAYS = ("latent", "max_similarity", "best_partner")  # each side's arrays, `{side}_{name}` at the root
MATRIX_DTYPES = ("float16", "float32", "float64", "none")
SUB_BLOCK = 256  # A latents per sparse product, whose dense rows (x F_B float64) are added at once
log = logging.getLogger(__name__)


class Counted(NamedTuple):
    """Which latents of one store take part, and their moments over the n tokens."""

    latents: np.ndarray  # (m,) int64 ids of counted latents
    mean: np.ndarray  # (m,) float64
    std: np.ndarray  # (m,) float64, population
    dead: int  # latents that never fire
    rare: int  # latents that fire on 1 .. min_count - 1 tokens


def counted_latents(store: FeatureStore, min_count: int) -> Counted:
    """The latents of `store` that fire on at least `min_count` tokens (and vary), with moments."""
    count = store.stat("count")
    n = store.n_tokens
    mean = store.stat("sum") / n
    variance = np.maximum(store.stat("sum_squares") / n - mean**2, 0.0)
    keep = (count >= max(min_count, 1)) & (variance > 0)  # a latent active on every token is constant too
    latents = np.flatnonzero(keep)
    return Counted(latents, mean[latents], np.sqrt(variance[latents]), int((count == 0).sum()),
                   int(((count > 0) & ~keep).sum()))


def _relabel(n_latents: int, latents: np.ndarray) -> np.ndarray:
    """Map latent id -> position among the counted (or -1)."""
    position = np.full(n_latents, -1, dtype=np.int64)
    position[latents] = np.arange(len(latents))
    return position


def _chunk_rows(store: FeatureStore, start: int, stop: int, shift: int = 0):
    """CSR (indptr, latent ids, values) of tokens (start + shift) .. (stop - 1 + shift), wrapping around the end."""
    n = store.n_tokens
    first = (start + shift) % n
    if first + (stop - start) <= n:
        return store.rows(first, first + (stop - start))
    head = store.rows(first, n)
    tail = store.rows(0, stop - start - (n - first))
    indptr = np.concatenate([head[0], tail[0][1:] + head[0][-1]])
    return indptr, np.concatenate([head[1], tail[1]]), np.concatenate([head[2], tail[2]])


def accumulate_cooccurrence(
    a_t: sparse.csr_array,
    b: sparse.csr_array,
    out: np.ndarray,
    buffer: np.ndarray | None = None,
    sub_block: int = SUB_BLOCK,
) -> None:
    """out (rows, n_b) += a_t @ b: the co-occurrence sums of one chunk of tokens.

    `a_t` (rows, tokens) holds the block's A codes latent-major, `b` (tokens, n_b) B's codes
    of the same tokens. scipy's compiled sparse product does the (token, A, B) triples; its
    result is added sub-block by sub-block through `buffer` (sub_block, n_b), so the dense
    temporary stays small and is reused.
    """
    rows, n_b = out.shape
    if buffer is None:
        buffer = np.empty((min(sub_block, rows), n_b))
    for lo in range(0, rows, sub_block):
        hi = min(rows, lo + sub_block)
        product = a_t[lo:hi] @ b
        if product.nnz:
            part = buffer[: hi - lo]
            product.toarray(out=part)
            out[lo:hi] += part


class _Job(NamedTuple):
    a_path: str
    b_path: str
    min_count: int
    lo: int  # rows lo..hi-1 of the counted A latents
    hi: int
    token_chunk: int
    matrix_path: str | None
    shift: int  # B's token t + shift is paired with A's token t (0: the real correlation)


def _correlate_block(job: _Job) -> tuple[int, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Rows lo..hi-1 of the correlation matrix: (lo, row max, row argmax, column max, column argmax).

    S is accumulated against every B latent id (B's codes are used as stored, no relabelling per
    chunk); the uncounted B columns are dropped when r is formed.
    """
    a, b = open_features(job.a_path), open_features(job.b_path)
    ca, cb = counted_latents(a, job.min_count), counted_latents(b, job.min_count)
    pa = _relabel(a.n_latents, ca.latents)
    n, n_b, rows = a.n_tokens, len(cb.latents), job.hi - job.lo
    # the block's latents are counted ids ca.latents[lo..hi-1]: one contiguous id range
    first_id, last_id = ca.latents[job.lo], ca.latents[job.hi - 1]
    s = np.zeros((rows, b.n_latents), dtype=np.float64)
    buffer = np.empty((min(SUB_BLOCK, rows), b.n_latents))
    for start in range(0, n, job.token_chunk):
        stop = min(n, start + job.token_chunk)
        a_indptr, a_ids, a_values = _chunk_rows(a, start, stop)
        # this block's A entries, transposed to (block latent, token)
        in_range = np.flatnonzero((a_ids >= first_id) & (a_ids <= last_id))
        row = pa[a_ids[in_range]] - job.lo
        keep = row >= 0  # counted (an uncounted id in the range maps below lo)
        tokens = (np.searchsorted(a_indptr, in_range, side="right") - 1)[keep]
        a_t = sparse.csr_array(
            (a_values[in_range[keep]].astype(np.float64), (row[keep], tokens)), shape=(rows, stop - start)
        )
        b_indptr, b_ids, b_values = _chunk_rows(b, start, stop, job.shift)
        b_codes = sparse.csr_array((b_values.astype(np.float64), b_ids, b_indptr), shape=(stop - start, b.n_latents))
        accumulate_cooccurrence(a_t, b_codes, s, buffer)
    # r = (S/n − μ_a μ_b) / (σ_a σ_b) = S · 1/(n σ_a) · 1/σ_b − (μ_a/σ_a)(μ_b/σ_b) in float64, a
    # sub-block of rows at a time over the counted B columns (no full-size temporaries), with each
    # row's best column and a running best row of each column (first index on ties, as argmax)
    scale_a, shift_a = 1.0 / (n * ca.std[job.lo : job.hi]), ca.mean[job.lo : job.hi] / ca.std[job.lo : job.hi]
    scale_b, shift_b = 1.0 / cb.std, cb.mean / cb.std
    every_b = n_b == b.n_latents  # then the counted columns are all columns, in order
    matrix = zarr.open_array(job.matrix_path, mode="r+") if job.matrix_path is not None else None
    r = np.empty((rows, n_b), dtype=matrix.dtype) if matrix is not None else None
    row_max, row_best = np.empty(rows), np.empty(rows, dtype=np.int64)
    col_max, col_best = np.full(n_b, -np.inf), np.zeros(n_b, dtype=np.int64)
    better = np.empty(n_b, dtype=bool)
    for lo in range(0, rows, SUB_BLOCK):
        hi = min(rows, lo + SUB_BLOCK)
        part = s[lo:hi] if every_b else s[lo:hi, cb.latents]
        part *= scale_a[lo:hi, None]
        part *= scale_b
        part -= shift_a[lo:hi, None] * shift_b
        row_best[lo:hi] = part.argmax(axis=1)
        row_max[lo:hi] = part[np.arange(hi - lo), row_best[lo:hi]]
        for i in range(hi - lo):
            np.greater(part[i], col_max, out=better)
            np.copyto(col_max, part[i], where=better)
            np.copyto(col_best, lo + i, where=better)
        if r is not None:
            r[lo:hi] = part
    if matrix is not None:
        matrix[job.lo : job.hi] = r
    return (job.lo, row_max, row_best, col_max, col_best + job.lo)


def correlate(
    a_path: str | Path,
    b_path: str | Path,
    out: str | Path,
    settings: CorrelationSettings,
    *,
    workers: int = 1,
    shift: int = 0,
    attrs: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Exact Pearson correlations between the latents of two feature stores, written to `out`.

    `settings`: min_count, block and chunk sizes, the matrix dtype ("none": only each latent's
    max and partner are stored). `shift` > 0 pairs A's token t with B's token (t + shift) mod n:
    a null that keeps every latent's firing count and temporal structure but breaks the token
    correspondence.
    """
    min_count, block_latents, token_chunk = settings.min_count, settings.block_latents, settings.token_chunk
    matrix_dtype = settings.matrix_dtype
    if matrix_dtype not in MATRIX_DTYPES:
        raise ValueError(f"matrix dtype {matrix_dtype!r}: use one of {', '.join(MATRIX_DTYPES)}")
    a, b = open_features(a_path), open_features(b_path)
    if a.attrs["tokens_sha256"] != b.attrs["tokens_sha256"] or a.n_tokens != b.n_tokens:
        raise ValueError(
            f"{a_path} and {b_path} hold codes of different tokens ({a.n_tokens} vs {b.n_tokens} tokens, "
            "fingerprints differ): rebuild both feature stores with the same features settings"
        )
    ca, cb = counted_latents(a, min_count), counted_latents(b, min_count)
    if len(ca.latents) == 0 or len(cb.latents) == 0:
        raise ValueError(
            f"no latent fires on at least min_count = {min_count} tokens in "
            f"{a_path if len(ca.latents) == 0 else b_path}: lower correlation.min_count or use more tokens"
        )
    n_a, n_b = len(ca.latents), len(cb.latents)
    meta = {
        "format": FORMAT,
        **(attrs or {}),
        "a": a.attrs.get("model"),
        "b": b.attrs.get("model"),
        "sae": a.attrs.get("sae"),
        "n_tokens": a.n_tokens,
        "min_count": int(min_count),
        "a_counted": n_a, "a_dead": ca.dead, "a_rare": ca.rare,
        "b_counted": n_b, "b_dead": cb.dead, "b_rare": cb.rare,
        "block_latents": int(block_latents),
        "token_chunk": int(token_chunk),
        "matrix_dtype": matrix_dtype,
        "shift": int(shift),
    }

    def write(path: Path) -> None:
        group = zarr.open_group(str(path), mode="w", zarr_format=3)
        matrix_path = None
        if matrix_dtype != "none":
            group.create_array(
                "matrix", shape=(n_a, n_b), dtype=matrix_dtype,
                chunks=(min(block_latents, n_a), min(4096, n_b)), dimension_names=["a_latent", "b_latent"],
            )
            matrix_path = str(path / "matrix")
        jobs = [
            _Job(str(a_path), str(b_path), min_count, lo, min(n_a, lo + block_latents), token_chunk, matrix_path,
                 shift % a.n_tokens)
            for lo in range(0, n_a, block_latents)
        ]
        a_max, a_best = np.empty(n_a), np.empty(n_a, dtype=np.int64)
        b_max, b_best = np.full(n_b, -np.inf), np.zeros(n_b, dtype=np.int64)
        log.info("correlating %d x %d counted latents over %d tokens in %d blocks on %d workers",
                 n_a, n_b, a.n_tokens, len(jobs), workers)
        for done, (lo, row_max, row_best, col_max, col_best) in enumerate(_run(jobs, workers), start=1):
            a_max[lo : lo + len(row_max)], a_best[lo : lo + len(row_max)] = row_max, row_best
            better = col_max > b_max
            b_max[better], b_best[better] = col_max[better], col_best[better]
            log.info("block %d/%d done", done, len(jobs))
        for side, latents, best_max, best, partners in (
            ("a", ca.latents, a_max, a_best, cb.latents),
            ("b", cb.latents, b_max, b_best, ca.latents),
        ):
            values = {"latent": latents.astype(np.int32), "max_similarity": best_max,
                      "best_partner": partners[best].astype(np.int32)}
            for name in SIDE_ARRAYS:  # `{side}_latent` is the dimension, so xarray makes it the coordinate
                group.create_array(f"{side}_{name}", data=values[name], dimension_names=[f"{side}_latent"])
        group.attrs.update(meta)

    write_atomically(out, write)
    return meta


def run_correlate(
    a: str | Path,
    b: str | Path,
    out: str | Path,
    correlation: CorrelationSettings,
    *,
    workers: int,
    shift_fraction: float = 0.0,
) -> dict[str, Any]:
    """Rules correlate and its controls: `correlate` of the stores `a` and `b`, with the shifted-token
    null's shift given as a fraction of the tokens (0: the real correlation)."""
    shift = int(shift_fraction * open_features(a).n_tokens)
    return correlate(a, b, out, correlation, workers=workers, shift=shift)


def _run(jobs: list[_Job], workers: int):
    """Results of the jobs, in completion order; processes started by spawn, never fork."""
    if workers <= 1 or len(jobs) == 1:
        yield from map(_correlate_block, jobs)
        return
    context = multiprocessing.get_context("spawn")  # fork after torch / zarr threads can deadlock
    env = {"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    saved = {key: os.environ.get(key) for key in env}
    os.environ.update(env)
    try:
        with ProcessPoolExecutor(max_workers=min(workers, len(jobs)), mp_context=context) as pool:
            with _main_module_hidden():  # map submits every job, so every worker starts here
                results = pool.map(_correlate_block, jobs)
            yield from results
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


@contextmanager
def _main_module_hidden():
    """Spawned workers start without running the caller's __main__ module again.

    spawn re-runs the main script in each worker (as __mp_main__) unless it has no file. A
    Snakemake `script:` is that main script, with `__file__` pointing at the workflow's script,
    which without the preamble has no `snakemake` object: every worker died on start
    (BrokenProcessPool). The workers need nothing from __main__, so it is hidden while they start.
    """
    main = sys.modules.get("__main__")
    if main is None:
        yield
        return
    saved = {key: main.__dict__[key] for key in ("__file__", "__spec__") if key in main.__dict__}
    main.__dict__.pop("__file__", None)
    main.__spec__ = None
    try:
        yield
    finally:
        main.__dict__.pop("__spec__", None)
        main.__dict__.update(saved)


class SimilarityStore(NamedTuple):
    """An open correlation store (format 2, or format 1 read as it was)."""

    attrs: dict[str, Any]
    group: zarr.Group

    def side(self, name: str) -> dict[str, np.ndarray]:
        """'a' or 'b': latent ids, max_similarity and best_partner of each counted latent."""
        if self.attrs["format"] == FORMAT_1:
            return {key: self.group[name][key][:] for key in SIDE_ARRAYS}
        return {key: self.group[f"{name}_{key}"][:] for key in SIDE_ARRAYS}


def open_correlations(path: str | Path) -> SimilarityStore:
    """The correlation store at `path`; one of another format is refused, naming both formats."""
    group = zarr.open_group(str(path), mode="r")
    attrs = dict(group.attrs)
    if attrs.get("format") not in (FORMAT, FORMAT_1):
        raise ValueError(
            f"{path} has format {attrs.get('format')!r}, not a correlation store this featscale reads "
            f"({FORMAT}, or the older {FORMAT_1}): delete it and run its correlation again"
        )
    return SimilarityStore(attrs, group)
