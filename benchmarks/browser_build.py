"""Feature browser build at the paper's size: time, memory and disk of one feature_browser job.

Builds the inputs the rule reads, synthetic but at the paper's shape, then times
`featscale.browser.build_browser` on them in a fresh process (the whole call: reading the
stores and tables, the collapsed clusters, every latent's contexts and histogram, compressing
and writing the files), and prints wall time, CPU time, peak memory and the browser's size on disk
against the issue's budget (10 min on 2 cores, 1 GiB).

The paper's shape: 4 models (widths 128, 256, 512, 768), an SAE of 24,576 latents each, the
analysis windows of features.tokens = 1,310,720 counted tokens (2,566 windows of 512, position
0 left out), GPT-2's vocabulary size (50,257). Synthetic inputs:

  token store      Zipf-distributed ids in the token store's format (featscale.token_store)
  tokenizer.json   a byte-level BPE vocabulary of 50,257 random byte strings (+ end-of-text)
  feature stores   per token, --l0 draws (the authors' L0 per width: 22, 33, 49, 62) from
                   Zipf-like firing rates (∝ rank^-0.7, permuted), 2% of latents dead and 1%
                   rare, exponential values; written in featscale's store format by the sparse
                   writer of correlation_throughput.py
  SAE weights      random decoder rows, 0.5% of latents in planted clusters of 5 near-copies
                   (collapsed), saved as sae_weights.safetensors
  study tables     points.parquet (counted latents, relative importance and the collapsed flag as
                   the study computes them, random max similarity and best partner), latents.csv,
                   pairs.csv

The inputs are cached in --workdir and reused while their settings match (about 4 min to make).

    PYTHONPATH=workflow python benchmarks/browser_build.py                 # the paper's size
    PYTHONPATH=workflow python benchmarks/browser_build.py --latents 2048 --tokens 100000   # smoke, < 1 min
    PYTHONPATH=workflow python benchmarks/browser_build.py --open          # also time the page in Chromium
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
from correlation_throughput import _to_csr, sparse_writer  # the feature stores' fast synthetic writer

from featscale.analysis.correlation import counted_latents
from featscale.analysis.statistics import pearson_r
from featscale.analysis.tables import decoder_directions
from featscale.analysis.universality import collapsed_latents, relative_importance

# all that the benchmark takes from featscale, in one place
from featscale.browser import BrowserInputs, StudySettings, build_browser
from featscale.browser.vocabulary import _symbol_bytes
from featscale.data.token_store import FORMAT as TOKENS_FORMAT
from featscale.features.store import counted_tokens, open_features, tokens_sha256
from featscale.io import write_atomically

TARGET_SECONDS = 10 * 60
TARGET_BYTES = 1 << 30
GENERATOR = "featscale.bench.browser/1"  # bump when the generator changes: cached inputs are rebuilt
BATCH = 65536
SAE = "main"
MIN_COUNT = 10
THRESHOLD, MIN_NEIGHBOURS = 0.9, 3  # the paper config's analysis.collapsed_*


# ---------------------------------------------------------------- synthetic inputs


def make_inputs(args: argparse.Namespace) -> tuple[Path, float]:
    """The rule's inputs in workdir/inputs, generated unless cached: (folder, seconds)."""
    settings = {"generator": GENERATOR, **{k: getattr(args, k) for k in
                                           ("latents", "widths", "l0", "tokens", "context", "vocab", "seed")}}
    root = Path(args.workdir) / "inputs"
    done = root / "settings.json"
    if done.exists() and json.loads(done.read_text()) == settings:
        return root, 0.0
    start = time.perf_counter()
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    rng = np.random.default_rng(args.seed)
    windows = make_token_store(root / "tokens.zarr", args, rng)
    make_tokenizer(root / "tokenizer.json", args.vocab, rng)
    models = [f"w{w}" for w in args.widths]
    for model, width, l0 in zip(models, args.widths, args.l0):
        make_sae(root / "saes" / model / SAE / "sae_weights.safetensors", args.latents, width, rng)
        make_store(root / "features" / model / f"{SAE}.zarr", model, l0, windows, args, rng)
        print(f"  {model}: inputs made ({time.perf_counter() - start:.0f} s)", flush=True)
    make_tables(root, models, args, rng)
    done.write_text(json.dumps(settings))
    return root, time.perf_counter() - start


def make_token_store(path: Path, args: argparse.Namespace, rng: np.random.Generator) -> np.ndarray:
    import zarr

    per_window = args.context - 1
    n_windows = -(-args.tokens // per_window)
    rate = 1.0 / np.arange(1, args.vocab) ** 1.1  # the last id is end-of-text
    ids = np.searchsorted(np.cumsum(rate / rate.sum()), rng.random(n_windows * args.context), side="right")
    ids = np.minimum(ids, args.vocab - 2).astype(np.uint16)
    group = zarr.open_group(str(path), mode="w", zarr_format=3)
    group.attrs.update({"format": TOKENS_FORMAT, "vocab_size": args.vocab})
    group.create_array("analysis", data=ids, chunks=(1 << 20,), dimension_names=["token"])
    return ids.astype(np.int64).reshape(n_windows, args.context)


def make_tokenizer(path: Path, vocab: int, rng: np.random.Generator) -> None:
    """A byte-level BPE vocabulary (the symbols of GPT-2's byte map) of `vocab` ids, the last end-of-text."""
    symbol_of = {b: s for s, b in _symbol_bytes().items()}
    tokens = {symbol_of[b]: b for b in range(256)}
    letters = np.frombuffer(b"abcdefghijklmnopqrstuvwxyz", dtype=np.uint8)
    while len(tokens) < vocab - 1:
        word = bytes(rng.choice(letters, rng.integers(2, 9)))
        text = "".join(symbol_of[b] for b in (b" " + word if rng.random() < 0.6 else word))
        tokens.setdefault(text, len(tokens))
    spec = {"version": "1.0", "added_tokens": [{"id": vocab - 1, "content": "<|endoftext|>", "special": True}],
            "model": {"type": "BPE", "vocab": tokens, "merges": []}, "decoder": {"type": "ByteLevel"}}
    path.write_text(json.dumps(spec))


def make_sae(path: Path, n_latents: int, width: int, rng: np.random.Generator) -> None:
    from safetensors.numpy import save_file

    decoder = rng.standard_normal((n_latents, width)).astype(np.float32) / np.sqrt(width)
    planted = rng.permutation(n_latents)[: n_latents // 200 // 5 * 5].reshape(-1, 5)
    for cluster in planted:  # near-copies of one direction: cosine well above 0.9
        decoder[cluster] = decoder[cluster[0]] + 0.05 * rng.standard_normal((5, width)) / np.sqrt(width)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({"W_dec": decoder}, str(path))


def make_store(path: Path, model: str, l0: int, windows: np.ndarray, args: argparse.Namespace,
               rng: np.random.Generator) -> None:
    import torch
    from safetensors.numpy import load_file

    n = args.latents
    rate = rng.permutation(1.0 / np.arange(1, n + 1) ** 0.7)
    order = rng.permutation(n)
    rate[order[: n // 50]] = 0.0  # dead
    rate[order[n // 50 : n // 50 + n // 100]] = 3.0 / (args.tokens * l0)  # rare: a few firings each
    cdf = np.cumsum(rate)
    scale = rng.lognormal(0.0, 0.5, n)  # each latent's typical activation
    norms = np.linalg.norm(load_file(str(path.parents[2] / "saes" / model / SAE / "sae_weights.safetensors"))["W_dec"],
                           axis=1)

    def write(partial: Path) -> None:
        writer = sparse_writer(partial, n)
        for start in range(0, args.tokens, BATCH):
            size = min(BATCH, args.tokens - start)
            ids = np.minimum(np.searchsorted(cdf, rng.random((size, l0)) * cdf[-1], side="right"), n - 1)
            writer.add_csr(*_to_csr(ids, rng.exponential(1.0, (size, l0)) * scale[ids], n))
        writer.finish(torch.from_numpy(norms.astype(np.float32)), {
            "model": model, "sae": SAE, "split": "analysis", "n_windows": len(windows), "context": args.context,
            "include_position_0": False, "tokens_sha256": tokens_sha256(counted_tokens(windows, False, args.tokens)),
        })

    write_atomically(path, write)


def make_tables(root: Path, models: list[str], args: argparse.Namespace, rng: np.random.Generator) -> None:
    """points.parquet, latents.csv and pairs.csv as the universality rule writes them (random y)."""
    import pandas as pd

    stores = {m: open_features(root / "features" / m / f"{SAE}.zarr") for m in models}
    counted, collapsed, census = {}, {}, []
    for model, store in stores.items():
        found = counted_latents(store, MIN_COUNT)
        counted[model] = found.latents
        decoder = decoder_directions(root / "saes" / model / SAE / "sae_weights.safetensors")
        collapsed[model] = collapsed_latents(decoder, THRESHOLD, MIN_NEIGHBOURS).collapsed
        census.append({"model": model, "width": int(model[1:]), "n_latents": store.n_latents, "dead": found.dead,
                       "rare": found.rare, "counted": len(found.latents), "live": int((store.stat("count") > 0).sum()),
                       "collapsed": int(collapsed[model].sum()),
                       "collapsed_counted": int(collapsed[model][found.latents].sum()), "l0": store.attrs["l0"],
                       "n_tokens": store.n_tokens})
    frames, pairs = [], []
    for source in models:
        store, latents = stores[source], counted[source]
        keep = np.zeros(store.n_latents, dtype=bool)
        keep[latents] = True
        x = relative_importance(store.stat("importance"), keep)[latents]
        for target in models:
            if target == source:
                continue
            y = np.clip(1 - np.exp(-3 * (x + 0.1)) + rng.normal(0, 0.15, len(x)), -0.2, 1.0)
            frames.append(pd.DataFrame({
                "source": source, "target": target, "latent": latents, "relative_importance": x,
                "max_similarity": y, "best_partner": rng.choice(counted[target], len(x)).astype(np.int32),
                "frequency": store.stat("count")[latents] / store.n_tokens, "collapsed": collapsed[source][latents],
                "null_max_similarity": np.nan, "untrained_max_similarity": np.nan,
            }))
            for mask in ("all", "masked"):
                chosen = np.ones(len(x), bool) if mask == "all" else ~collapsed[source][latents]
                pairs.append({"source": source, "target": target, "mask": mask, "n": int(chosen.sum()),
                              "pearson_r": pearson_r(x[chosen], y[chosen]), "spearman_rho": np.nan,
                              "b": 3.0, "c": -0.1})
    analysis = root / "analysis" / SAE
    analysis.mkdir(parents=True, exist_ok=True)
    pd.concat(frames, ignore_index=True).to_parquet(analysis / "points.parquet", index=False)
    pd.DataFrame(census).to_csv(analysis / "latents.csv", index=False)
    pd.DataFrame(pairs).to_csv(analysis / "pairs.csv", index=False)


# ---------------------------------------------------------------- the measurement


def worker_build(args: argparse.Namespace) -> dict[str, Any]:
    """In a fresh process: build the browser, report wall and CPU time and peak memory."""
    root = Path(args.inputs)
    models = [f"w{w}" for w in args.widths]
    inputs = BrowserInputs(
        features={m: root / "features" / m / f"{SAE}.zarr" for m in models},
        sae_weights={m: root / "saes" / m / SAE / "sae_weights.safetensors" for m in models},
        tokens=root / "tokens.zarr", tokenizer=root / "tokenizer.json",
        points=root / "analysis" / SAE / "points.parquet", census=root / "analysis" / SAE / "latents.csv",
        pairs=root / "analysis" / SAE / "pairs.csv",
    )
    cpu = time.process_time()
    start = time.perf_counter()
    build_browser(args.out, inputs, StudySettings(MIN_COUNT, THRESHOLD, MIN_NEIGHBOURS, None), "bench", SAE)
    return {"seconds": time.perf_counter() - start, "cpu_seconds": time.process_time() - cpu,
            "max_rss_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}


def disk_usage(folder: Path) -> dict[str, Any]:
    files = [p for p in folder.rglob("*") if p.is_file()]
    sizes = {str(p.relative_to(folder)): p.stat().st_size for p in files}
    blocks = sum(p.stat().st_blocks * 512 for p in files)
    shards = [s for name, s in sizes.items() if "/shard-" in name]
    return {"files": len(files), "bytes": sum(sizes.values()), "allocated": blocks, "shards": len(shards),
            "largest_shard": max(shards, default=0), "index": sum(s for n, s in sizes.items() if n.endswith("index.js")),
            "tokens_vocab": sizes.get("data/tokens.js", 0) + sizes.get("data/vocab.js", 0)}


def open_in_chromium(index: Path, latent: str) -> dict[str, float]:
    """Seconds until the overview is drawn and until one latent's panel is shown (headless Chromium)."""
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.support.ui import WebDriverWait

    options = Options()
    options.binary_location = shutil.which("chromium") or ""
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1500,1000"):
        options.add_argument(argument)
    driver = webdriver.Chrome(service=Service(shutil.which("chromedriver")), options=options)
    try:
        start = time.perf_counter()
        driver.get(index.as_uri())
        WebDriverWait(driver, 120).until(lambda d: d.execute_script("return document.body.dataset.state") == "ready")
        ready = time.perf_counter() - start
        start = time.perf_counter()
        driver.execute_script(f"location.hash = '{latent}'")
        WebDriverWait(driver, 120).until(
            lambda d: d.execute_script("return document.getElementById('panel').dataset.state") == "ready")
        return {"overview_s": ready, "latent_s": time.perf_counter() - start}
    finally:
        driver.quit()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--latents", type=int, default=24576)
    parser.add_argument("--widths", type=int, nargs="+", default=[128, 256, 512, 768])
    parser.add_argument("--l0", type=int, nargs="+", default=[22, 33, 49, 62], help="draws per token, per width")
    parser.add_argument("--tokens", type=int, default=1_310_720, help="counted tokens (features.tokens)")
    parser.add_argument("--context", type=int, default=512)
    parser.add_argument("--vocab", type=int, default=50257)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--open", action="store_true", help="also time opening the page in headless Chromium")
    parser.add_argument("--workdir", default="/tmp/featscale-bench-browser", help="cached inputs and the output")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--inputs", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if len(args.l0) != len(args.widths):
        parser.error("give one --l0 per width")
    if args.worker:
        print(json.dumps(worker_build(args)))
        return

    print(f"{len(args.widths)} models × {args.latents:,} latents, {args.tokens:,} tokens, context {args.context}, "
          f"L0 {args.l0}, vocabulary {args.vocab:,}; {os.cpu_count()} CPUs", flush=True)
    inputs, made = make_inputs(args)
    print(f"inputs {'made in %.0f s' % made if made else 'reused'} ({inputs})", flush=True)
    out = Path(args.workdir) / "browser"
    shutil.rmtree(out, ignore_errors=True)
    command = [sys.executable, __file__, "--worker", "--inputs", str(inputs), "--out", str(out),
               "--latents", str(args.latents), "--widths", *map(str, args.widths), "--l0", *map(str, args.l0)]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode:
        sys.exit(f"the build failed:\n{done.stderr[-4000:]}")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    disk = disk_usage(out)
    mb = 1e6
    print(f"\nbuild: {result['seconds']:.1f} s wall, {result['cpu_seconds']:.1f} s CPU, "
          f"peak RSS {result['max_rss_kib'] / 2**20:.2f} GiB")
    print(f"disk: {disk['bytes'] / mb:.1f} MB in {disk['files']} files ({disk['allocated'] / mb:.1f} MB allocated): "
          f"{disk['shards']} shards (largest {disk['largest_shard'] / mb:.2f} MB), "
          f"indexes {disk['index'] / mb:.1f} MB, tokens + vocabulary {disk['tokens_vocab'] / mb:.1f} MB")
    print(f"budget: time {result['seconds']:.0f} s of {TARGET_SECONDS} s "
          f"({'met' if result['seconds'] <= TARGET_SECONDS else 'MISSED'}), disk {disk['allocated'] / 2**30:.3f} GiB "
          f"of 1 GiB ({'met' if disk['allocated'] <= TARGET_BYTES else 'MISSED'})")
    if args.open:
        latent = f"w{args.widths[-1]}/{args.latents // 2}"
        opened = open_in_chromium(out / "index.html", latent)
        print(f"page (headless Chromium): overview drawn after {opened['overview_s']:.1f} s, "
              f"latent {latent} shown {opened['latent_s']:.1f} s after it was asked for")


if __name__ == "__main__":
    main()
