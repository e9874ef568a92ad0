"""Exact Pearson correlation of every latent of one SAE with every latent of another, from sparse codes.

Over n tokens, with per-latent sums s, sums of squares q and the co-occurrence sums
S = AᵀB (A, B the (n, F) code matrices),

    r_ij = (S_ij / n − μ_i μ_j) / (σ_i σ_j),   μ = s / n,   σ² = q / n − μ²,

so only S needs the codes, and S costs n · L0_A · L0_B multiply-adds instead of n · F_A · F_B
for dense codes. S is built one block of A's latents at a time, streaming both stores' codes
token chunk by token chunk: each (token, active A latent in the block, active B latent)
triple is one product, accumulated in float64 into the block's dense S, a sub-block at a
time so the accumulator stays in cache. Blocks run in separate processes (numpy holds the
GIL for this work), each writing its rows of the matrix; memory is bounded by the block and
chunk sizes, not by n.

Latents that fire on fewer than `min_count` tokens (the dead ones included) are excluded
from both sides and counted: their correlation is undefined (dead) or dominated by a few
coincidences (rare). Their rows and columns are absent, never filled with a sentinel.

This module is the one home of the output format, `correlations/{sae}/{a}__{b}.zarr/`:

    a/latent, b/latent            (n_counted,) int32   latent ids of the counted latents
    a/max_similarity, a/best_partner   for each counted A latent: its signed max r over the
                                  counted B latents and that B latent's id (and b/ the reverse)
    matrix                        (n_counted_a, n_counted_b) r, rows and columns in the order
                                  of a/latent and b/latent (absent when matrix dtype is "none")
    attrs                         format, models, n_tokens, min_count, counted and excluded
                                  (dead, rare) latents of each side, block sizes
"""

from __future__ import annotations

import logging
import multiprocessing
import os
from collections.abc import Mapping
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import zarr

from featscale.features import FeatureStore, open_features
from featscale.runtime import write_atomically

FORMAT = "featscale.correlations/1"
MATRIX_DTYPES = ("float16", "float32", "float64", "none")
SUB_BLOCK = 256  # A latents whose dense co-occurrence rows (x F_B float64) stay in cache together
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


def _chunk_csr(store: FeatureStore, start: int, stop: int, position: np.ndarray):
    """Codes of tokens start..stop-1 restricted to counted latents, relabelled: (indptr, columns, values)."""
    indptr, indices, values = store.rows(start, stop)
    columns = position[indices]
    keep = columns >= 0
    rows = np.repeat(np.arange(stop - start), np.diff(indptr))[keep]
    new_indptr = np.zeros(stop - start + 1, dtype=np.int64)
    np.cumsum(np.bincount(rows, minlength=stop - start), out=new_indptr[1:])
    return new_indptr, columns[keep], values[keep].astype(np.float64)


def accumulate_cooccurrence(
    tokens: np.ndarray,
    latents: np.ndarray,
    values: np.ndarray,
    b_rows: tuple[np.ndarray, np.ndarray, np.ndarray],
    out: np.ndarray,
    max_pairs: int,
) -> None:
    """out (rows, n_b) += the co-occurrence sums of A entries with B's codes of the same token.

    A's entries are (token, row of out, value) triples; for each, every active B latent j of
    that token adds value · b[token, j] to out[row, j]. At most `max_pairs` products are
    expanded at a time, so memory stays bounded whatever the entries' count.
    """
    b_indptr, b_columns, b_values = b_rows
    n_b = out.shape[1]
    flat_out = out.reshape(-1)
    partners = b_indptr[tokens + 1] - b_indptr[tokens]  # B latents active with each A entry
    ends = np.cumsum(partners)
    piece_start = 0
    while piece_start < len(tokens):
        # the longest run of entries whose products fit in max_pairs (at least one entry)
        limit = (ends[piece_start - 1] if piece_start else 0) + max_pairs
        piece_end = max(piece_start + 1, int(np.searchsorted(ends, limit, side="right")))
        t, i, v, k = (x[piece_start:piece_end] for x in (tokens, latents, values, partners))
        total = int(k.sum())
        if total:
            first = np.repeat(b_indptr[t] - (np.cumsum(k) - k), k) + np.arange(total)  # into B's entries
            target = np.repeat(i * n_b, k) + b_columns[first]
            flat_out += np.bincount(target, weights=np.repeat(v, k) * b_values[first], minlength=flat_out.size)
        piece_start = piece_end


def _shifted_chunk_csr(store: FeatureStore, start: int, stop: int, position: np.ndarray, shift: int):
    """_chunk_csr of tokens (start + shift) .. (stop - 1 + shift), wrapping around the end."""
    n = store.n_tokens
    first = (start + shift) % n
    if shift == 0 or first + (stop - start) <= n:
        return _chunk_csr(store, first, first + (stop - start), position)
    head = _chunk_csr(store, first, n, position)
    tail = _chunk_csr(store, 0, stop - start - (n - first), position)
    indptr = np.concatenate([head[0], tail[0][1:] + head[0][-1]])
    return indptr, np.concatenate([head[1], tail[1]]), np.concatenate([head[2], tail[2]])


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
    """Rows lo..hi-1 of the correlation matrix: (lo, row max, row argmax, column max, column argmax)."""
    a, b = open_features(job.a_path), open_features(job.b_path)
    ca, cb = counted_latents(a, job.min_count), counted_latents(b, job.min_count)
    pa, pb = _relabel(a.n_latents, ca.latents), _relabel(b.n_latents, cb.latents)
    n, n_b, rows = a.n_tokens, len(cb.latents), job.hi - job.lo
    s = np.zeros((rows, n_b), dtype=np.float64)
    max_pairs = max(1 << 20, SUB_BLOCK * n_b)
    for start in range(0, n, job.token_chunk):
        stop = min(n, start + job.token_chunk)
        a_indptr, a_columns, a_values = _chunk_csr(a, start, stop, pa)
        b_rows = _shifted_chunk_csr(b, start, stop, pb, job.shift)
        # this block's A entries, latent-major, so each sub-block is one contiguous run
        in_block = (a_columns >= job.lo) & (a_columns < job.hi)
        tokens = np.repeat(np.arange(stop - start), np.diff(a_indptr))[in_block]
        columns = a_columns[in_block]
        order = np.argsort(columns, kind="stable")
        tokens, columns, values = tokens[order], columns[order] - job.lo, a_values[in_block][order]
        bounds = np.searchsorted(columns, np.arange(0, rows + SUB_BLOCK, SUB_BLOCK).clip(max=rows))
        for sub, (first, last) in enumerate(zip(bounds[:-1], bounds[1:])):
            if last > first:
                lo = sub * SUB_BLOCK
                accumulate_cooccurrence(tokens[first:last], columns[first:last] - lo, values[first:last],
                                        b_rows, s[lo : lo + SUB_BLOCK], max_pairs)
    # r = (S/n - μ_a μ_b) / (σ_a σ_b), in place, in float64
    s /= n
    s -= np.outer(ca.mean[job.lo : job.hi], cb.mean)
    s /= np.outer(ca.std[job.lo : job.hi], cb.std)
    if job.matrix_path is not None:
        matrix = zarr.open_array(job.matrix_path, mode="r+")
        matrix[job.lo : job.hi] = s.astype(matrix.dtype)
    row_best = s.argmax(axis=1)
    col_best = s.argmax(axis=0)
    return (job.lo, s[np.arange(rows), row_best], row_best, s[col_best, np.arange(n_b)], col_best + job.lo)


class Correlations(NamedTuple):
    """What correlate() returns besides the store: the attrs it wrote."""

    attrs: dict[str, Any]


def correlate(
    a_path: str | Path,
    b_path: str | Path,
    out: str | Path,
    min_count: int = 10,
    block_latents: int = 2048,
    token_chunk: int = 1 << 18,
    matrix_dtype: str = "float16",
    workers: int = 1,
    attrs: Mapping[str, Any] | None = None,
    shift: int = 0,
) -> dict[str, Any]:
    """Exact Pearson correlations between the latents of two feature stores, written to `out`.

    `shift` > 0 pairs A's token t with B's token (t + shift) mod n instead: a null that keeps
    every latent's firing count and temporal structure but breaks the token correspondence.
    """
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
            sub = group.require_group(side)
            sub.create_array("latent", data=latents.astype(np.int32), dimension_names=[f"{side}_latent"])
            sub.create_array("max_similarity", data=best_max, dimension_names=[f"{side}_latent"])
            sub.create_array("best_partner", data=partners[best].astype(np.int32), dimension_names=[f"{side}_latent"])
        group.attrs.update(meta)

    write_atomically(out, write)
    return meta


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
            yield from pool.map(_correlate_block, jobs)
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


class SimilarityStore(NamedTuple):
    """An open correlation store."""

    attrs: dict[str, Any]
    group: zarr.Group

    def side(self, name: str) -> dict[str, np.ndarray]:
        """'a' or 'b': latent ids, max_similarity and best_partner of each counted latent."""
        sub = self.group[name]
        return {key: sub[key][:] for key in ("latent", "max_similarity", "best_partner")}


def open_correlations(path: str | Path) -> SimilarityStore:
    group = zarr.open_group(str(path), mode="r")
    attrs = dict(group.attrs)
    if attrs.get("format") != FORMAT:
        raise ValueError(f"{path} is not a correlation store of format {FORMAT}")
    return SimilarityStore(attrs, group)
