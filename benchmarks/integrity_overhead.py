"""What the integrity checks cost on the demo: each check the jobs make on what they write and read,
timed with it (on) and without it (off) on the demo's own artifacts, and summed over the demo's DAG.

    PYTHONPATH=workflow python benchmarks/integrity_overhead.py --results results/demo [--repeats 5]

--results: the results of a demo run (of any featscale version: arrays are read with zarr, weights
with safetensors). In --workdir every artifact is written twice from the same data, with the same
chunking: "on" as the workflow writes it (zstd chunks with their checksum, every chunk on disk;
weights by write_safetensors, which records their SHA-256) and "off" (the same zstd level without
the checksum; weights by plain save_file). Then, the minimum over --repeats of:

  write        writing each store and each weights file (zstd's checksum; hashing the weights and
               patching the hash in)
  load         loading each model and SAE as the jobs do (verify_safetensors, then load_file)
               against load_file alone
  tokens       the jobs' reads of the token store: the train split whole, 65,536 val tokens, the
               analysis windows; through open_split (checked) against plain zarr (off copy)
  features     open_features and every statistic read, as feature_budget and universality read them
  correlate    one demo pair, the whole correlate() call (it reads both stores once per block) with
               the demo's settings on one worker: on stores against off stores (the range and sums
               checks run in both; they are timed on their own below)
  correlations open_correlations and both sides read, as universality reads them

Each difference is multiplied by how often the demo's jobs do it (--models, --pairs) and summed; the
demo's own time is --demo-seconds (README: 14 min 11 s on this project's 2-core machine).
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import zarr
from safetensors.torch import load_file, save_file
from zarr.codecs import ZstdCodec

from featscale.analysis import correlation
from featscale.analysis.correlation import _check_range, correlate, counted_latents, open_correlations
from featscale.config import CorrelationSettings
from featscale.data import token_store
from featscale.data.token_store import open_split
from featscale.features import store as feature_store
from featscale.features.store import STAT_ARRAYS, open_features
from featscale.io import checked_array_options, verify_safetensors, write_safetensors


def best(run: Callable[[], object], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return min(times)


def copy_store(source: Path, target: Path, checksum: bool, attrs: dict, repeats: int = 1) -> float:
    """`source`'s arrays rewritten under `target` with or without zstd checksums: the fastest of
    `repeats` writes, in seconds. Arrays in subgroups (`a/latent`, a correlation store of format 1)
    are written at the root (`a_latent`), as the current format has them."""
    group = zarr.open_group(str(source), mode="r")
    arrays = [(name, member) for name, member in group.members(max_depth=None) if isinstance(member, zarr.Array)]
    data = {name: member[:] for name, member in arrays}  # read before the clock starts
    options = checked_array_options() if checksum else {"compressors": ZstdCodec(level=3, checksum=False)}

    def write() -> None:
        shutil.rmtree(target, ignore_errors=True)
        out = zarr.open_group(str(target), mode="w", zarr_format=3)
        for name, member in arrays:
            out.create_array(name.replace("/", "_"), data=data[name], chunks=member.chunks, shards=member.shards,
                             dimension_names=member.metadata.dimension_names, **options)
        out.attrs.update({**dict(group.attrs), **attrs})

    return best(write, repeats)


def copy_weights(weights: Path, config: Path, target: Path, checksum: bool, repeats: int = 1) -> float:
    """A weights file and its config under `target`, written with or without the recorded SHA-256: the
    fastest of `repeats` writes, in seconds."""
    target.mkdir(parents=True, exist_ok=True)
    shutil.copy(config, target / config.name)
    tensors = load_file(str(weights))
    if checksum:
        return best(lambda: write_safetensors(target / weights.name, lambda path, metadata: save_file(
            tensors, str(path), metadata=metadata), config=target / config.name), repeats)
    return best(lambda: save_file(tensors, str(target / weights.name)), repeats)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--results", default="results/demo")
    parser.add_argument("--workdir", default="/tmp/featscale-integrity-bench")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--models", type=int, default=4)
    parser.add_argument("--pairs", type=int, default=6)
    parser.add_argument("--demo-seconds", type=float, default=851.0)
    args = parser.parse_args()
    warnings.filterwarnings("ignore", message=".*snakemake_timestamp")  # Snakemake marks its directory outputs
    results, work = Path(args.results), Path(args.workdir)
    models = sorted((results / "models").glob("w*/model.safetensors"))
    saes = sorted((results / "saes").glob("w*/main/sae_weights.safetensors"))
    features = sorted((results / "features").glob("w*/main.zarr"))
    correlations = sorted((results / "correlations" / "main").glob("*.zarr"))
    if not (models and saes and len(features) >= 2 and correlations):
        sys.exit(f"{results} lacks the demo's models, SAEs, feature stores or correlations: run the demo first")
    rows: dict[str, tuple[float, float, int]] = {}  # what -> (on, off, times per DAG)

    def record(what: str, on: float, off: float, count: int) -> None:
        rows[what] = (on, off, count)

    # ---- weights: writing and loading
    for kind, files, config_name, loads in (("model", models, "config.json", 5), ("sae", saes, "cfg.json", 4)):
        written, on_loads, off_loads = [], [], []
        for weights in files:
            config = weights.parent / config_name
            folder = work / kind / weights.parent.name
            written.append((copy_weights(weights, config, folder / "on", True, args.repeats),
                            copy_weights(weights, config, folder / "off", False, args.repeats)))
            on_loads.append(best(lambda f=folder: (verify_safetensors(f / "on" / weights.name, "bench",
                                                                      config=f / "on" / config_name),
                                                   load_file(str(f / "on" / weights.name))), args.repeats))
            off_loads.append(best(lambda f=folder: load_file(str(f / "off" / weights.name)), args.repeats))
        size = weights.stat().st_size / 2**20
        record(f"write {kind} weights ({size:.1f} MiB each)", statistics.mean(w[0] for w in written),
               statistics.mean(w[1] for w in written), len(files))
        record(f"load {kind} weights (verify + load)", statistics.mean(on_loads), statistics.mean(off_loads),
               loads * len(files))

    # ---- the token store
    tokens = {}
    for variant, checksum in (("on", True), ("off", False)):
        tokens[variant] = work / variant / "tokens.zarr"
        seconds = copy_store(results / "data" / "tokens.zarr", tokens[variant], checksum,
                             {"format": token_store.FORMAT}, args.repeats)
        tokens[f"write {variant}"] = seconds
    record("write token store", tokens["write on"], tokens["write off"], 1)
    plain = zarr.open_group(str(tokens["off"]), mode="r")
    for what, split, stop, count in (("train split whole", "train", None, 2 * args.models),
                                     ("65,536 val tokens", "val", 65536, 4 * args.models),
                                     ("analysis windows", "analysis", 40000, args.models)):
        on = best(lambda s=split, e=stop: open_split(tokens["on"], s)[:e], args.repeats)
        off = best(lambda s=split, e=stop: plain[s][:e], args.repeats)
        record(f"read tokens: {what}", on, off, count)

    # ---- feature stores
    stores = {}
    for index, path in enumerate(features):
        attrs = {"format": feature_store.FORMAT, "sae_sha256": f"sae{index}", "model_sha256": f"model{index}"}
        for variant, checksum in (("on", True), ("off", False)):
            stores[variant, index] = work / variant / "features" / f"{index}.zarr"
            stores["write", variant, index] = copy_store(path, stores[variant, index], checksum, attrs, args.repeats)
    n = len(features)
    record("write feature store", statistics.mean(stores["write", "on", i] for i in range(n)),
           statistics.mean(stores["write", "off", i] for i in range(n)), args.models)

    def read_stats(store: Path, checked: bool) -> None:
        if checked:
            opened = open_features(store)
            for name in STAT_ARRAYS:
                opened.stat(name)
            counted_latents(opened, 10)
        else:
            group = zarr.open_group(str(store), mode="r")
            for name in STAT_ARRAYS:
                group[name][:]

    record("read feature store statistics", best(lambda: read_stats(stores["on", 0], True), args.repeats),
           best(lambda: read_stats(stores["off", 0], False), args.repeats), 2 * args.models)

    settings = CorrelationSettings(min_count=10, block_latents=512, token_chunk=65536, workers=1, matrix_dtype="float16")
    times = {"on": [], "off": []}
    for _ in range(args.repeats):  # alternating, so a slow spell of a shared machine hits both sides
        for variant in ("on", "off"):
            out = work / variant / "r.zarr"
            times[variant].append(best(lambda v=variant, o=out: correlate(stores[v, 0], stores[v, 1], o, settings), 1))
    times = {variant: min(values) for variant, values in times.items()}
    record("correlate one pair (write included)", times["on"], times["off"], args.pairs)

    # ---- correlation stores
    pairs = {}
    for variant, checksum in (("on", True), ("off", False)):
        pairs[variant] = work / variant / "correlations.zarr"
        pairs["write", variant] = copy_store(correlations[0], pairs[variant], checksum, {"format": correlation.FORMAT})

    def read_sides(path: Path, checked: bool) -> None:
        if checked:
            opened = open_correlations(path)
            opened.side("a"), opened.side("b")
        else:
            group = zarr.open_group(str(path), mode="r")
            for side in ("a", "b"):
                for name in ("latent", "max_similarity", "best_partner"):
                    group[f"{side}_{name}"][:]

    record("read correlation store", best(lambda: read_sides(pairs["on"], True), args.repeats),
           best(lambda: read_sides(pairs["off"], False), args.repeats), args.pairs)

    # ---- the range check alone (it runs in both correlate timings)
    opened = [open_features(stores["on", i]) for i in (0, 1)]
    r = np.random.default_rng(0).uniform(-1, 1, (256, opened[1].n_latents))
    latents = np.arange(max(256, opened[1].n_latents))
    check = best(lambda: _check_range(r, latents, latents, *opened), args.repeats)
    blocks = -(-opened[0].n_latents // 256)  # sub-blocks of 256 rows, each checked once
    record("range check of r (per pair)", check * blocks, 0.0, args.pairs)

    print(f"integrity overhead on {results} (min of {args.repeats}; torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads)\n")
    print("| what | on (s) | off (s) | per demo DAG | overhead per DAG (s) |")
    print("|---|---|---|---|---|")
    total = ceiling = 0.0
    for what, (on, off, count) in rows.items():
        total += (on - off) * count
        ceiling += max(on - off, 0.0) * count
        print(f"| {what} | {on:.4f} | {off:.4f} | {count} | {(on - off) * count:+.2f} |")
    # differences below the machine's noise come out negative too: the sum of the positive ones bounds the cost
    print(f"\nnet: {total:+.2f} s; sum of the positive differences: {ceiling:.2f} s, on a demo of "
          f"{args.demo_seconds:.0f} s: at most {100 * ceiling / args.demo_seconds:.2f}%")
    print(json.dumps({"net_seconds": total, "positive_seconds": ceiling, "demo_seconds": args.demo_seconds}))


if __name__ == "__main__":
    main()
