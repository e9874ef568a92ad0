"""Cross-model correlation throughput: the exact sparse method against dense streaming, same CPU, same run.

Both sides compute the Pearson r of every latent of SAE A with every latent of SAE B over the
same n tokens, from the same feature stores (featscale.features format):

  sparse   featscale.analysis.correlation.correlate(a, b, out, settings) with its defaults (min_count 10,
           blocks of 2048 A latents, token chunks of 2^18: --block-latents, --token-chunk) and
           workers = all cores, the whole call timed: reading the stores, co-occurrence, r,
           row/column best partners, writing the store. Timed with matrix_dtype "float16" (the
           default, the one the ratio uses) and "none" (no matrix written).
  dense    what peers do: stream the codes as dense (chunk, F) float32 matrices and accumulate
           S += A_chunkᵀ B_chunk (torch addmm, torch threads = all cores) with float32 sums and
           sums of squares, then r = (S/n − μ_a μ_b) / (σ_a σ_b) and row/column maxima, in float32.
           Reading a chunk from the store and densifying it is timed with it; nothing is written.
           Where that would take hours, one untimed warm-up chunk is followed by --dense-chunks
           timed chunks spread evenly over the n tokens, and the time is extrapolated linearly in
           tokens: n × (median chunk seconds / chunk tokens) + the measured finalisation (r and
           maxima over the full F_A × F_B matrix, done once on the slice's S). The table marks
           extrapolated figures with "~"; when n ≤ (--dense-chunks + 1) chunks the whole run is timed.

Each measurement runs in a fresh subprocess, so one side's memory does not pollute the other's.
Time is wall time and CPU time (user + system of the child and its waited-for workers; all torch
threads on the dense side, extrapolated the same way): on a shared machine other jobs stretch wall
time far more than CPU time, so the ratio is printed both ways.
Peak memory is reported two ways: the largest single process (getrusage ru_maxrss of the child
itself and of its waited-for children, i.e. the sparse side's workers), and the peak sum of RSS
over the child's process tree, sampled every 0.1 s (shared pages count once per process). The
dense side's memory does not grow with n, so the slice's peak is the full run's.

Synthetic codes: F latents with Zipf-like firing rates (∝ rank^-0.7, randomly permuted); each token
draws --l0 latent ids from those rates (duplicates merged, so ~0.4 fewer active) with exponential
values. B has partners of A's latents: half of each token's B draws are A's ids through a fixed random
map (value × U(0.5, 1.5)), the other half independent draws from B's own rates.
Token batches are seeded by their index, so every store is a prefix of the same stream. Stores are
written by a sparse fast path that fills a featscale FeatureWriter without densifying (checked,
array by array, against FeatureWriter.add on the verification slice) and are cached in --workdir,
reused when their generator settings match.

Correctness check (before the timings): the first --verify-latents latents of each side over the
first --verify-tokens tokens, stored with FeatureWriter.add; correlate() with a float64 matrix
against the dense float32 streaming r (must agree to 1e-3) and a float64 dense reference.

On a shared machine timings are noisy: with --repeats > 1 every measurement is repeated, the side
that goes first alternating, and the median is reported with its range.

    PYTHONPATH=workflow python benchmarks/correlation_throughput.py --repeats 2
        # 100k, 1M, 1.3M tokens: 30-50 min on 2 shared cores (+2 min to generate the stores once)
    PYTHONPATH=workflow python benchmarks/correlation_throughput.py --latents 4096 --tokens 20000 100000 \\
        --paper-tokens 0 --verify-tokens 5000 --workdir /tmp/featscale-bench-smoke      # smoke, 1-3 min
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Self

import numpy as np

TARGET_RATIO = 100.0  # dense / sparse at 1M tokens
TARGET_PAPER_SECONDS = 15 * 60  # one paper-scale pair
RATIO_AT = 1_000_000
GENERATOR = "featscale.bench.synthetic/1"  # bump when the generator changes: cached stores are rebuilt
BATCH = 65536  # tokens per generated batch


# ---------------------------------------------------------------- synthetic codes


class Synthetic:
    """A deterministic stream of correlated sparse codes for SAEs A and B, batch by batch."""

    def __init__(self, n_latents: int, l0: int, seed: int, zipf: float):
        self.n_latents, self.l0, self.seed = n_latents, l0, seed
        rng = np.random.default_rng([seed, 0])
        rate = 1.0 / np.arange(1, n_latents + 1) ** zipf
        self.cdf_a = np.cumsum(rng.permutation(rate / rate.sum()))
        self.cdf_b = np.cumsum(rng.permutation(rate / rate.sum()))
        self.a_to_b = rng.permutation(n_latents)  # which B latent a shared draw of an A latent lands on

    def _draw(self, rng: np.random.Generator, cdf: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
        return np.minimum(np.searchsorted(cdf, rng.random(shape) * cdf[-1], side="right"), self.n_latents - 1)

    def batch(self, index: int, size: int) -> tuple[tuple[np.ndarray, ...], tuple[np.ndarray, ...]]:
        """CSR (indptr, indices int32, values float32) of A and of B for tokens index·BATCH ...+size."""
        rng = np.random.default_rng([self.seed, 1, index])
        shared = self.l0 // 2
        a_ids = self._draw(rng, self.cdf_a, (size, self.l0))
        a_values = rng.exponential(1.0, (size, self.l0))
        b_ids = np.concatenate([self.a_to_b[a_ids[:, :shared]], self._draw(rng, self.cdf_b, (size, self.l0 - shared))],
                               axis=1)
        b_values = np.concatenate([a_values[:, :shared] * rng.uniform(0.5, 1.5, (size, shared)),
                                   rng.exponential(1.0, (size, self.l0 - shared))], axis=1)
        return _to_csr(a_ids, a_values, self.n_latents), _to_csr(b_ids, b_values, self.n_latents)


def _to_csr(ids: np.ndarray, values: np.ndarray, n_latents: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Row-wise (size, k) draws -> CSR, columns ascending per row, duplicate draws summed."""
    size = ids.shape[0]
    key = (np.arange(size, dtype=np.int64)[:, None] * n_latents + ids).ravel()
    order = np.argsort(key, kind="stable")
    key, flat = key[order], values.ravel()[order]
    first = np.flatnonzero(np.r_[True, key[1:] != key[:-1]])
    key, summed = key[first], np.add.reduceat(flat, first).astype(np.float32)
    keep = summed > 0
    key, summed = key[keep], summed[keep]
    indptr = np.zeros(size + 1, dtype=np.int64)
    np.cumsum(np.bincount(key // n_latents, minlength=size), out=indptr[1:])
    return indptr, (key % n_latents).astype(np.int32), summed


def restrict(csr: tuple[np.ndarray, ...], n_keep: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The codes of latents 0 .. n_keep-1 only (ids unchanged)."""
    indptr, indices, values = csr
    keep = indices < n_keep
    rows = np.repeat(np.arange(len(indptr) - 1), np.diff(indptr))[keep]
    new = np.zeros_like(indptr)
    np.cumsum(np.bincount(rows, minlength=len(indptr) - 1), out=new[1:])
    return new, indices[keep], values[keep]


def dense_of(csr: tuple[np.ndarray, ...], n_latents: int) -> np.ndarray:
    indptr, indices, values = csr
    out = np.zeros((len(indptr) - 1, n_latents), dtype=np.float32)
    out[np.repeat(np.arange(len(indptr) - 1), np.diff(indptr)), indices] = values
    return out


def sparse_writer(path: Path, n_latents: int):
    """A FeatureWriter (same arrays, same finish) fed CSR batches without densifying."""
    import torch

    from featscale.features.encode import FeatureWriter

    class SparseFeatureWriter(FeatureWriter):
        def add_csr(self, indptr: np.ndarray, indices: np.ndarray, values: np.ndarray) -> None:
            """What FeatureWriter.add does for the dense codes of this CSR batch (values > 0)."""
            size = len(indptr) - 1
            rows = np.repeat(np.arange(size), np.diff(indptr))
            order = np.lexsort((rows, -values, indices))  # per latent: the largest value, earliest token first
            first = order[np.r_[True, indices[order][1:] != indices[order][:-1]]]
            peak = np.zeros(n_latents, dtype=np.float32)
            where = np.zeros(n_latents, dtype=np.int64)
            peak[indices[first]], where[indices[first]] = values[first], rows[first]
            peak_t, where_t = torch.from_numpy(peak), torch.from_numpy(where)
            better = peak_t > self.max
            self.max = torch.where(better, peak_t, self.max)
            self.argmax = torch.where(better, where_t + self.n_tokens, self.argmax)
            as64 = values.astype(np.float64)
            self.sum += torch.from_numpy(np.bincount(indices, weights=as64, minlength=n_latents))
            self.sum_squares += torch.from_numpy(np.bincount(indices, weights=as64 * as64, minlength=n_latents))
            self.count += torch.from_numpy(np.bincount(indices, minlength=n_latents))
            self.codes["indices"].append(indices)
            self.codes["values"].append(values)
            self.indptr.append(indptr[1:] + self.nnz)
            self.nnz += len(indices)
            self.n_tokens += size

    return SparseFeatureWriter(path, n_latents)


def ensure_stores(args: argparse.Namespace, n_tokens: int) -> tuple[Path, Path, float]:
    """Stores of A and B over the first n_tokens of the stream, generated unless cached: (a, b, seconds)."""
    import torch

    from featscale.features.store import open_features, tokens_sha256
    from featscale.io import write_atomically

    settings = {"generator": GENERATOR, "n_latents": args.latents, "l0": args.l0, "seed": args.seed,
                "zipf": args.zipf, "n_tokens": n_tokens}
    root = Path(args.workdir) / "stores"
    paths = tuple(root / f"{side}-F{args.latents}-l0{args.l0}-s{args.seed}-n{n_tokens}.zarr" for side in "ab")
    try:
        if all(open_features(p).attrs.get("synthetic") == settings for p in paths):
            return *paths, 0.0
    except (FileNotFoundError, ValueError, KeyError):
        pass
    start = time.perf_counter()
    synthetic = Synthetic(args.latents, args.l0, args.seed, args.zipf)
    attrs = {"sae": "bench", "tokens_sha256": tokens_sha256(np.arange(n_tokens)), "synthetic": settings,
             "model_sha256": "synthetic", "sae_sha256": "synthetic"}
    temporary = [p.with_name(p.name + ".tmp") for p in paths]
    writers = [sparse_writer(p, args.latents) for p in temporary]
    for index in range(-(-n_tokens // BATCH)):
        for writer, csr in zip(writers, synthetic.batch(index, min(BATCH, n_tokens - index * BATCH))):
            writer.add_csr(*csr)
    for writer, path, tmp, name in zip(writers, paths, temporary, ("A", "B")):
        writer.finish(torch.ones(args.latents), {**attrs, "model": name})
        write_atomically(path, lambda p, tmp=tmp: os.replace(tmp, p))
    return *paths, time.perf_counter() - start


# ---------------------------------------------------------------- memory


def _tree_rss_kib(root: int) -> int:
    """Sum of VmRSS over `root` and its descendants (KiB), from /proc."""
    parents: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
                parents.setdefault(int(stat.rsplit(")", 1)[1].split()[1]), []).append(int(entry))
            except OSError:
                continue
    total, stack = 0, [root]
    while stack:
        pid = stack.pop()
        stack.extend(parents.get(pid, []))
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except OSError:
            continue
    return total


class TreeMemory:
    """Samples the RSS sum of this process and its descendants in a thread; .peak in bytes."""

    def __init__(self, every: float = 0.1):
        self.peak, self.every, self._stop = 0, every, threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, _tree_rss_kib(os.getpid()) * 1024)
            self._stop.wait(self.every)

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def _cpu_seconds() -> float:
    """User + system CPU seconds of this process and its waited-for children (all threads)."""
    import resource

    return sum(u.ru_utime + u.ru_stime for u in (resource.getrusage(resource.RUSAGE_SELF),
                                                  resource.getrusage(resource.RUSAGE_CHILDREN)))


def _max_rss() -> int:
    """Largest single-process peak RSS (bytes) of this process and its waited-for children."""
    import resource

    return 1024 * max(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
                      resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)


# ---------------------------------------------------------------- the two sides (run in a child each)


def worker_sparse(args: argparse.Namespace) -> dict[str, Any]:
    import logging

    from featscale.analysis.correlation import correlate
    from featscale.config import CorrelationSettings

    logging.basicConfig(level=logging.WARNING)
    out = Path(args.workdir) / "out" / f"sparse-{os.getpid()}.zarr"
    with TreeMemory() as memory:
        load, cpu, start = os.getloadavg()[0], _cpu_seconds(), time.perf_counter()
        settings = CorrelationSettings(min_count=10, block_latents=args.block_latents, token_chunk=args.token_chunk,
                                       workers=args.workers, matrix_dtype=args.matrix_dtype)
        meta = correlate(args.a, args.b, out, settings, workers=args.workers)
        seconds, cpu = time.perf_counter() - start, _cpu_seconds() - cpu
    shutil.rmtree(out, ignore_errors=True)
    return {"seconds": seconds, "cpu": cpu, "load": load, "counted": [meta["a_counted"], meta["b_counted"]],
            "max_rss": _max_rss(), "tree_rss": memory.peak}


def dense_stream(a, b, starts: list[int], chunk: int, latents: int | None, timed: list[dict[str, float]] | None):
    """S = Σ AᵀB, sums, sums of squares over the chunks at `starts`, float32 (torch), from the stores.

    The first chunk is a warm-up when `timed` is given (its times are not recorded).
    """
    import torch

    f_a, f_b = (latents, latents) if latents else (a.n_latents, b.n_latents)
    s = torch.zeros(f_a, f_b, dtype=torch.float32)
    sums = [torch.zeros(f, dtype=torch.float32) for f in (f_a, f_b)]
    squares = [torch.zeros(f, dtype=torch.float32) for f in (f_a, f_b)]
    for i, start in enumerate(starts):
        stop = min(start + chunk, a.n_tokens)
        t0, c0 = time.perf_counter(), time.process_time()
        xa = torch.from_numpy(a.dense(start, stop)[:, :f_a])
        xb = torch.from_numpy(b.dense(start, stop)[:, :f_b])
        t1 = time.perf_counter()
        s.addmm_(xa.T, xb)
        for x, total, square in ((xa, sums[0], squares[0]), (xb, sums[1], squares[1])):
            total += x.sum(0)
            square += (x * x).sum(0)
        t2, c2 = time.perf_counter(), time.process_time()
        if timed is not None and i > 0:
            timed.append({"tokens": stop - start, "read": t1 - t0, "matmul": t2 - t1, "cpu": c2 - c0})
    return s, sums, squares


def dense_finish(s, sums, squares, n: int):
    """r in place in s (float32), with each row's and column's max and argmax, as the sparse side returns."""
    mean = [x / n for x in sums]
    std = [(q / n - m * m).clamp_min(0).sqrt() for q, m in zip(squares, mean)]
    s.div_(n).addr_(mean[0], mean[1], alpha=-1)
    s.div_(std[0][:, None]).div_(std[1][None, :])
    return s, s.max(dim=1), s.max(dim=0)


def worker_dense(args: argparse.Namespace) -> dict[str, Any]:
    import torch

    from featscale.features.store import open_features

    torch.set_num_threads(args.workers)
    a, b = open_features(args.a), open_features(args.b)
    n, chunk = a.n_tokens, args.dense_chunk
    full = n <= (args.dense_chunks + 1) * chunk
    if full:
        starts = list(range(0, n, chunk))
    else:  # a warm-up chunk, then chunks spread evenly over the tokens
        starts = [0] + [int(x) // chunk * chunk for x in np.linspace(chunk, n - chunk, args.dense_chunks)]
    with TreeMemory() as memory:
        timed: list[dict[str, float]] = []
        load, cpu, start = os.getloadavg()[0], time.process_time(), time.perf_counter()
        s, sums, squares = dense_stream(a, b, starts, chunk, None, None if full else timed)
        t_finish, c_finish = time.perf_counter(), time.process_time()
        dense_finish(s, sums, squares, n)
        end, c_end = time.perf_counter(), time.process_time()
    result = {"full": full, "finish": end - t_finish, "max_rss": _max_rss(), "tree_rss": memory.peak,
              "threads": torch.get_num_threads(), "chunks": timed, "load": load}
    if full:
        result["seconds"], result["cpu"] = end - start, c_end - cpu
    else:
        per_token = statistics.median((c["read"] + c["matmul"]) / c["tokens"] for c in timed)
        result["seconds"] = n * per_token + result["finish"]
        result["cpu"] = n * statistics.median(c["cpu"] / c["tokens"] for c in timed) + (c_end - c_finish)
        result["read_share"] = sum(c["read"] for c in timed) / sum(c["read"] + c["matmul"] for c in timed)
    return result


def worker_verify(args: argparse.Namespace) -> dict[str, Any]:
    """The first verify_latents latents over the first verify_tokens tokens: sparse vs dense r."""
    import torch

    from featscale.analysis.correlation import correlate, open_correlations
    from featscale.config import CorrelationSettings
    from featscale.features.encode import FeatureWriter
    from featscale.features.store import open_features, tokens_sha256

    torch.set_num_threads(args.workers)
    n, f = args.verify_tokens, args.verify_latents
    root = Path(args.workdir) / "verify"
    shutil.rmtree(root, ignore_errors=True)
    synthetic = Synthetic(args.latents, args.l0, args.seed, args.zipf)
    batches = [synthetic.batch(i, min(BATCH, n - i * BATCH)) for i in range(-(-n // BATCH))]
    attrs = {"sae": "bench", "tokens_sha256": tokens_sha256(np.arange(n))}
    for side, name in enumerate("ab"):
        # the reference path, FeatureWriter.add on dense batches, and the fast path the timed stores use
        reference, fast = FeatureWriter(root / f"{name}.zarr", f), sparse_writer(root / f"{name}-fast.zarr", f)
        for pair in batches:
            csr = restrict(pair[side], f)
            dense = dense_of(csr, f)
            for lo in range(0, len(dense), 4096):
                reference.add(torch.from_numpy(dense[lo : lo + 4096]))
            fast.add_csr(*csr)
        for writer in (reference, fast):
            writer.finish(torch.ones(f), {**attrs, "model": name})
        want, got = open_features(root / f"{name}.zarr").group, open_features(root / f"{name}-fast.zarr").group
        for key in ("indptr", "indices", "values", "max", "argmax", "count"):
            np.testing.assert_array_equal(got[key][:], want[key][:], err_msg=f"fast store writer: {key}")
        for key in ("sum", "sum_squares"):
            np.testing.assert_allclose(got[key][:], want[key][:], rtol=1e-12, err_msg=f"fast store writer: {key}")
    a, b = open_features(root / "a.zarr"), open_features(root / "b.zarr")
    matrices = {}
    for dtype in ("float64", "float16"):
        settings = CorrelationSettings(min_count=10, block_latents=2048, token_chunk=1 << 18, workers=args.workers,
                                       matrix_dtype=dtype)
        correlate(root / "a.zarr", root / "b.zarr", root / f"r-{dtype}.zarr", settings, workers=args.workers)
        store = open_correlations(root / f"r-{dtype}.zarr")
        ids_a, ids_b = store.side("a")["latent"], store.side("b")["latent"]
        matrices[dtype] = store.group["matrix"][:].astype(np.float64)
    r32 = dense_finish(*dense_stream(a, b, list(range(0, n, args.dense_chunk)), args.dense_chunk, f, None), n)[0]
    r32 = r32.numpy()[np.ix_(ids_a, ids_b)].astype(np.float64)
    xa, xb = a.dense().astype(np.float64)[:, ids_a], b.dense().astype(np.float64)[:, ids_b]
    xa, xb = (xa - xa.mean(0)) / xa.std(0), (xb - xb.mean(0)) / xb.std(0)
    r64 = xa.T @ xb / n
    shutil.rmtree(root, ignore_errors=True)
    return {
        "counted": [len(ids_a), len(ids_b)],
        "sparse64_vs_dense32": float(np.abs(matrices["float64"] - r32).max()),
        "sparse64_vs_dense64": float(np.abs(matrices["float64"] - r64).max()),
        "dense32_vs_dense64": float(np.abs(r32 - r64).max()),
        "sparse16_vs_dense64": float(np.abs(matrices["float16"] - r64).max()),
        "max_r": float(np.abs(r64).max()),
    }


WORKERS = {"sparse": worker_sparse, "dense": worker_dense, "verify": worker_verify}


def measure(kind: str, args: argparse.Namespace, **extra: Any) -> dict[str, Any]:
    """One measurement in a fresh process; its JSON result."""
    command = [sys.executable, __file__, "--worker", kind, "--workdir", args.workdir, "--workers", str(args.workers),
               "--latents", str(args.latents), "--l0", str(args.l0), "--seed", str(args.seed),
               "--zipf", str(args.zipf), "--dense-chunk", str(args.dense_chunk),
               "--dense-chunks", str(args.dense_chunks), "--verify-tokens", str(args.verify_tokens),
               "--verify-latents", str(args.verify_latents), "--block-latents", str(args.block_latents),
               "--token-chunk", str(args.token_chunk)]
    for key, value in extra.items():
        command += [f"--{key.replace('_', '-')}", str(value)]
    done = subprocess.run(command, check=False, capture_output=True, text=True)
    if done.returncode != 0:
        sys.stderr.write(done.stdout + done.stderr)
        raise RuntimeError(f"{kind} measurement failed ({done.returncode})")
    return json.loads(done.stdout.strip().splitlines()[-1])


# ---------------------------------------------------------------- report


def _gib(n_bytes: float) -> str:
    return f"{n_bytes / 2**30:.2f}"


def _spread(values: list[float]) -> str:
    return f"{statistics.median(values):,.1f}" if len(values) == 1 else \
        f"{statistics.median(values):,.1f} ({min(values):,.0f}-{max(values):,.0f})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tokens", type=int, nargs="+", default=[100_000, 1_000_000], help="token counts")
    parser.add_argument("--paper-tokens", type=int, default=1_300_000,
                        help="the paper-scale pair, sparse side against the 15-minute target (0: skip)")
    parser.add_argument("--latents", type=int, default=24576, help="latents of each SAE")
    parser.add_argument("--l0", type=int, default=32, help="draws per token (active latents, before merging)")
    parser.add_argument("--zipf", type=float, default=0.7, help="firing rate ∝ rank^-zipf")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1,
                        help="sparse workers and dense torch threads (default: all cores)")
    parser.add_argument("--matrix-dtypes", nargs="+", default=["float16", "none"],
                        help="sparse runs; the first is the one the ratio uses")
    parser.add_argument("--block-latents", type=int, default=2048, help="sparse: correlate()'s block_latents")
    parser.add_argument("--token-chunk", type=int, default=1 << 18, help="sparse: correlate()'s token_chunk")
    parser.add_argument("--dense-chunk", type=int, default=2048, help="tokens per dense chunk")
    parser.add_argument("--dense-chunks", type=int, default=3, help="timed dense chunks after the warm-up one")
    parser.add_argument("--repeats", type=int, default=1, help="rounds of every measurement, order alternating")
    parser.add_argument("--verify-tokens", type=int, default=20000)
    parser.add_argument("--verify-latents", type=int, default=2048)
    parser.add_argument("--workdir", default="/tmp/featscale-bench", help="cached stores and scratch output")
    parser.add_argument("--worker", choices=sorted(WORKERS), help=argparse.SUPPRESS)
    parser.add_argument("--a", help=argparse.SUPPRESS)
    parser.add_argument("--b", help=argparse.SUPPRESS)
    parser.add_argument("--matrix-dtype", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(WORKERS[args.worker](args)))
        return

    sizes = sorted(set(args.tokens) | ({args.paper_tokens} if args.paper_tokens else set()))
    print(f"{args.workers} workers (sparse processes, dense torch threads) on {os.cpu_count()} cores; "
          f"{args.latents:,} x {args.latents:,} latents, {args.l0} draws per token; workdir {args.workdir}")
    from featscale.features.store import open_features

    stores = {}
    for n in sizes:
        a, b, seconds = ensure_stores(args, n)
        sa, sb = open_features(a), open_features(b)
        la, lb = np.diff(sa.group["indptr"][:]), np.diff(sb.group["indptr"][:])
        triples = int((la * lb).sum())
        stores[n] = (a, b, triples)
        print(f"stores of {n:,} tokens: L0 {sa.attrs['l0']:.2f} (A) {sb.attrs['l0']:.2f} (B), "
              f"{triples:,} (token, active A, active B) triples; "
              + (f"generated in {seconds:.0f} s" if seconds else "cached"), flush=True)

    check = measure("verify", args)
    print(f"\ncheck, {check['counted'][0]} x {check['counted'][1]} counted latents (of the first "
          f"{args.verify_latents}) over {args.verify_tokens:,} tokens, stores written by FeatureWriter.add "
          f"(the fast writer matched it array by array); max |r| {check['max_r']:.3f}:")
    ok = check["sparse64_vs_dense32"] <= 1e-3
    print(f"  max |sparse (float64 matrix) - dense float32| = {check['sparse64_vs_dense32']:.2e}  "
          f"({'OK' if ok else 'FAILS'}, tolerance 1e-3)")
    print(f"  max |sparse (float64 matrix) - dense float64| = {check['sparse64_vs_dense64']:.2e}")
    print(f"  max |dense float32 - dense float64|          = {check['dense32_vs_dense64']:.2e}")
    print(f"  max |sparse (float16 matrix) - dense float64| = {check['sparse16_vs_dense64']:.2e}  "
          "(float16 storage rounding)\n", flush=True)

    sides = [f"sparse-{d}" for d in args.matrix_dtypes] + ["dense"]
    results: dict[tuple[int, str], list[dict[str, Any]]] = {(n, s): [] for n in sizes for s in sides}
    turn = 0
    for r in range(args.repeats):
        for n in sizes:
            order = sides if turn % 2 == 0 else list(reversed(sides))
            turn += 1
            a, b, _ = stores[n]
            for side in order:
                if side == "dense":
                    result = measure("dense", args, a=a, b=b)
                else:
                    result = measure("sparse", args, a=a, b=b, matrix_dtype=side.removeprefix("sparse-"))
                results[(n, side)].append(result)
                mark = "" if result.get("full", True) else " (extrapolated from a slice)"
                print(f"  round {r + 1} {n:>9,} tokens {side:<15} {result['seconds']:>9,.1f} s wall "
                      f"{result['cpu']:>9,.1f} s CPU  (load average {result['load']:.1f} at start){mark}", flush=True)

    main_side = sides[0]

    def median(n: int, side: str, key: str = "seconds") -> float:
        return statistics.median(x[key] for x in results[(n, side)])

    print(f"\nsparse: featscale.analysis.correlation.correlate, {args.workers} workers, blocks of {args.block_latents} latents, "
          f"token chunks of {args.token_chunk}, whole call, one column per matrix dtype; dense: float32 addmm streaming, {args.workers} torch threads, chunks of {args.dense_chunk} tokens")
    print("~ = extrapolated linearly in tokens from a measured slice (a warm-up chunk, then "
          f"{args.dense_chunks} timed chunks spread over the tokens, + the measured finalisation)")
    print(f"wall seconds: median of {args.repeats} run(s)" + (" (min-max)" if args.repeats > 1 else "")
          + "; ratio = dense / sparse (" + main_side + "), by wall time and by CPU time (CPU time is less "
          "sensitive to other jobs on a shared machine)")
    print("ns/triple = sparse CPU seconds / (token, active A, active B) triples; "
          "RSS: largest single process / peak sum over the process tree, GiB\n")
    width = 24 if args.repeats > 1 else 14
    print(f"{'tokens':>9} " + " ".join(f"{s + ' s':>{width}}" for s in sides)
          + f" {'ratio wall':>10} {'ratio CPU':>9} {'ns/triple':>9} {'sparse RSS':>11} {'dense RSS':>11}")
    for n in sizes:
        cells = []
        for side in sides:
            runs = results[(n, side)]
            cells.append(("~" if not runs[0].get("full", True) else "") + _spread([x["seconds"] for x in runs]))
        ratio_wall = median(n, "dense") / median(n, main_side)
        ratio_cpu = median(n, "dense", "cpu") / median(n, main_side, "cpu")
        ns = median(n, main_side, "cpu") / stores[n][2] * 1e9
        rss = {side: _gib(max(x["max_rss"] for x in results[(n, side)])) + "/"
               + _gib(max(x["tree_rss"] for x in results[(n, side)])) for side in (main_side, "dense")}
        print(f"{n:>9,} " + " ".join(f"{c:>{width}}" for c in cells)
              + f" {ratio_wall:>9,.0f}x {ratio_cpu:>8,.0f}x {ns:>9.1f} {rss[main_side]:>11} {rss['dense']:>11}")
    print()
    for n in sizes:
        for d in results[(n, "dense")]:
            if not d["full"]:
                per_chunk = [c["read"] + c["matmul"] for c in d["chunks"]]
                print(f"dense {n:,}: timed chunks {', '.join(f'{x:.1f}' for x in per_chunk)} s "
                      f"({d['read_share']:.0%} reading + densifying), finalisation {d['finish']:.1f} s")
    if RATIO_AT in sizes:
        ratio = median(RATIO_AT, "dense") / median(RATIO_AT, main_side)
        ratio_cpu = median(RATIO_AT, "dense", "cpu") / median(RATIO_AT, main_side, "cpu")
        print(f"\nat {RATIO_AT:,} tokens: sparse is {ratio:,.0f}x faster than dense streaming by wall time "
              f"({ratio_cpu:,.0f}x by CPU time): {'meets' if ratio >= TARGET_RATIO else 'misses'} the "
              f">= {TARGET_RATIO:.0f}x target (dense extrapolated where marked ~)")
    if args.paper_tokens:
        seconds = median(args.paper_tokens, main_side)
        verdict = "meets" if seconds <= TARGET_PAPER_SECONDS else "misses"
        print(f"paper-scale pair ({args.latents:,}^2 latents, {args.paper_tokens:,} tokens): sparse ({main_side}) "
              f"{seconds:,.0f} s = {seconds / 60:.1f} min wall: {verdict} the <= {TARGET_PAPER_SECONDS // 60}-minute "
              "target")
    if not ok:
        sys.exit(f"the check failed: sparse and dense float32 r differ by {check['sparse64_vs_dense32']:.2e} > 1e-3")

if __name__ == "__main__":
    main()
