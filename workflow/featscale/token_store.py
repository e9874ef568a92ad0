"""The token store: one zarr v3 group, a 1-D array of token ids per split.

This module is the one home of its format. Layout of `tokens.zarr/`:

    train, val, analysis   1-D arrays (dimension "token") of the smallest unsigned dtype
                           that holds the vocabulary; documents joined by end-of-text;
                           zstd-compressed chunks grouped into shards (few files on disk)
    attrs                  format, source settings, seed, split fractions, tokenizer hash,
                           vocab size, end-of-text id, tokens and documents per split,
                           documents dropped as empty or duplicate
"""

from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import zarr
from tokenizers import Tokenizer
from tqdm import tqdm
from zarr.codecs import ZstdCodec

from featscale.config import SPLITS
from featscale.splits import split_documents
from featscale.tokenizer import eot_id, file_sha256

FORMAT = "featscale.tokens/1"
log = logging.getLogger(__name__)


def token_dtype(vocab_size: int) -> np.dtype:
    """The smallest unsigned integer dtype that holds every id below `vocab_size`."""
    for dtype in (np.uint8, np.uint16, np.uint32):
        if vocab_size - 1 <= np.iinfo(dtype).max:
            return np.dtype(dtype)
    return np.dtype(np.uint64)


def open_split(store: str | Path, split: str) -> zarr.Array:
    """One split of a token store, read-only."""
    group = zarr.open_group(str(store), mode="r")
    if group.attrs.get("format") != FORMAT:
        raise ValueError(f"{store} is not a token store of format {FORMAT}")
    return group[split]


class _SplitWriter:
    """Appends token ids to one split, writing whole shards so no shard is written twice."""

    def __init__(self, group: zarr.Group, split: str, dtype: np.dtype, cap: int | None, chunk: int, shard: int):
        self.array = group.create_array(
            split, shape=(0,), dtype=dtype, chunks=(chunk,), shards=(shard,),
            compressors=ZstdCodec(level=3), dimension_names=["token"],
        )
        self.cap, self.shard = cap, shard
        self.pending: list[np.ndarray] = []
        self.n_pending = self.n_written = self.documents = 0

    @property
    def tokens(self) -> int:
        return self.n_written + self.n_pending

    @property
    def full(self) -> bool:
        return self.cap is not None and self.tokens >= self.cap

    def append(self, ids: np.ndarray, documents: int) -> None:
        if self.cap is not None:
            ids = ids[: self.cap - self.tokens]
        self.pending.append(ids)
        self.n_pending += len(ids)
        self.documents += documents
        if self.n_pending >= self.shard:
            self._write(whole_shards_only=True)

    def close(self) -> None:
        self._write(whole_shards_only=False)

    def _write(self, whole_shards_only: bool) -> None:
        data = np.concatenate(self.pending) if self.pending else np.empty(0, self.array.dtype)
        n = len(data) - len(data) % self.shard if whole_shards_only else len(data)
        if n:
            self.array.resize((self.n_written + n,))
            self.array[self.n_written : self.n_written + n] = data[:n]
            self.n_written += n
        rest = data[n:]
        self.pending, self.n_pending = ([rest] if len(rest) else []), len(rest)


def build_token_store(
    data: Mapping[str, Any],
    seed: int,
    tokenizer_path: str | Path,
    out: str | Path,
    archive: Path | None = None,
    check: Callable[[Mapping[str, int]], None] | None = None,
    batch_documents: int = 512,
) -> dict[str, int]:
    """Tokenize the configured corpus into the store `out`; return the tokens per split.

    The store is built under a temporary name and moved into place only when complete
    and when `check(tokens per split)` (the config's needs) has passed, so a failure
    leaves nothing at `out`.
    """
    tokenizer = Tokenizer.from_file(str(tokenizer_path))
    eot, vocab_size = eot_id(tokenizer), tokenizer.get_vocab_size()
    dtype = token_dtype(vocab_size)
    pretokenized = data["source"] == "hub" and data["hub"]["token_field"] is not None
    chunk = data["chunk_tokens"]
    out = Path(out)
    partial = out.with_name(out.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    try:
        group = zarr.open_group(str(partial), mode="w")
        writers = {
            split: _SplitWriter(group, split, dtype, data["max_tokens"][split], chunk, chunk * data["shard_chunks"])
            for split in SPLITS
        }
        texts: dict[str, list[str]] = {split: [] for split in SPLITS}

        def encode(split: str) -> None:
            # one call per batch: the Rust tokenizer spreads a batch over its threads
            encodings = tokenizer.encode_batch_fast(texts[split], add_special_tokens=False)
            ids = np.fromiter((i for e in encodings for i in (*e.ids, eot)), dtype=np.int64)
            writers[split].append(ids.astype(dtype), documents=len(encodings))
            texts[split].clear()

        stats: dict[str, int] = {}
        progress = tqdm(split_documents(data, seed, archive, stats), desc="documents", unit="doc", mininterval=10)
        for split, document in progress:
            if writers[split].full:
                if all(writer.full for writer in writers.values()):
                    break  # every split is capped and full: the rest of the corpus is not needed
                continue
            if pretokenized:
                # packed rows already hold their end-of-text tokens: concatenated as they are
                ids = np.asarray(document, dtype=np.int64)
                if len(ids) and (ids.min() < 0 or ids.max() >= vocab_size):
                    raise ValueError(
                        f"data.hub.token_field {data['hub']['token_field']!r} holds ids outside "
                        f"[0, {vocab_size}): it was not made with this tokenizer"
                    )
                writers[split].append(ids.astype(dtype), documents=1)
            else:
                texts[split].append(document)
                if len(texts[split]) >= batch_documents:
                    encode(split)
        for split in SPLITS:
            if texts[split]:
                encode(split)
            writers[split].close()
        tokens = {split: writers[split].n_written for split in SPLITS}
        log.info("tokens per split: %s (documents kept and dropped: %s)", tokens, stats)
        if check is not None:
            check(tokens)
        group.attrs.update(
            {
                "format": FORMAT,
                "source": dict(data),
                "seed": seed,
                "tokenizer_sha256": file_sha256(tokenizer_path),
                "vocab_size": vocab_size,
                "eot_id": eot,
                "tokens": tokens,
                "documents": {split: writers[split].documents for split in SPLITS},
                "dropped": {"empty": stats.get("empty", 0), "duplicates": stats.get("duplicates", 0)},
            }
        )
        shutil.rmtree(out, ignore_errors=True)
        os.replace(partial, out)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    return tokens
