"""The token store: one zarr v3 group, a 1-D array of token ids per split.

This module is the one home of its format. Layout of `tokens.zarr/`:

    train, val, analysis   1-D arrays (dimension "token") of the smallest unsigned dtype
                           that holds the vocabulary; documents joined by end-of-text;
                           zstd-compressed chunks with their checksums, grouped into
                           shards (few files on disk)
    attrs                  format, source (the settings it was built with: corpus, split
                           fractions, caps, chunking), seed, tokenizer_sha256, vocab_size,
                           eot_id, tokens (per split), documents (per split), dropped
                           (documents dropped as empty or duplicate)
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import zarr

from featscale.io import check_chunks, checked_array_options, open_store, reading

# /2: chunks carry zstd checksums and every chunk is on disk (a /1 store is refused: rebuild it)
FORMAT = "featscale.tokens/2"
PRODUCER = "tokenize_corpus"


def token_dtype(vocab_size: int) -> np.dtype:
    """The smallest unsigned integer dtype that holds every id below `vocab_size`."""
    for dtype in (np.uint8, np.uint16, np.uint32):
        if vocab_size - 1 <= np.iinfo(dtype).max:
            return np.dtype(dtype)
    return np.dtype(np.uint64)


def token_attrs(store: str | Path) -> dict[str, Any]:
    """A token store's attrs (its format checked: a store of another format is refused, naming the fix)."""
    return open_store(store, "token store", FORMAT, PRODUCER)[1]


def open_split(store: str | Path, split: str) -> TokenSplit:
    """One split of a token store, read-only; its chunks are checked as they are read."""
    group, _ = open_store(store, "token store", FORMAT, PRODUCER)
    with reading(store, PRODUCER):
        array = group[split]
    check_chunks(array, store, PRODUCER)
    return TokenSplit(array, Path(store))


class TokenSplit:
    """A split's token ids as a read-only array (shape, dtype, slices, coordinate selections) whose
    failed reads (a chunk that fails its checksum) name the store and how to rebuild it."""

    def __init__(self, array: zarr.Array, store: Path):
        self.array, self.store = array, store
        self.shape, self.dtype, self.metadata = array.shape, array.dtype, array.metadata

    def __getitem__(self, selection: Any) -> np.ndarray:
        with reading(self.store, PRODUCER):
            return self.array[selection]

    def get_coordinate_selection(self, index: np.ndarray) -> np.ndarray:
        with reading(self.store, PRODUCER):
            return self.array.get_coordinate_selection(index)


class SplitWriter:
    """Appends token ids to one split, writing whole shards so no shard is written twice."""

    def __init__(self, group: zarr.Group, split: str, dtype: np.dtype, cap: int | None, chunk: int, shard: int):
        self.array = group.create_array(
            split, shape=(0,), dtype=dtype, chunks=(chunk,), shards=(shard,), dimension_names=["token"],
            **checked_array_options(),
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
