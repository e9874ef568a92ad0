"""The token store's format: exact round trips, caps, atomic writes, pre-tokenized sources."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import zarr
from tokenizers import Tokenizer

from conftest import data_of, tiny
from featscale.config import SPLITS, ConfigError, StoreSettings
from featscale.data.build import build_token_store, build_tokenizer
from featscale.data.splits import document_split, split_documents
from featscale.data.token_store import open_split, token_dtype
from featscale.data.tokenizer import eot_id

SYNTHETIC_DATA = {
    "source": "synthetic",
    "synthetic": {"documents": 300},
    "split_fractions": {"train": 0.6, "val": 0.2, "analysis": 0.2},
    "max_tokens": {"train": None, "val": None, "analysis": None},
    "chunk_tokens": 1024,
    "shard_chunks": 2,
}
SYNTHETIC = data_of(SYNTHETIC_DATA).store()


def hub_store(path) -> StoreSettings:
    """SYNTHETIC's store settings with a local parquet dataset of GPT-2-style token ids as the source."""
    hub = {"path": str(path), "name": None, "revision": None, "split": "train", "text_field": "text",
           "token_field": "input_ids", "streaming": False}
    return data_of(SYNTHETIC_DATA | {"source": "hub", "hub": hub}).store()


@pytest.fixture(scope="module")
def tokenizer_path(tmp_path_factory):
    path = tmp_path_factory.mktemp("tok") / "tokenizer.json"
    build_tokenizer(SYNTHETIC.corpus, tiny("tokenizer", kind="bpe", vocab_size=400, train_documents=1000), run_seed=0, out=path)
    return path


def test_dtype_is_the_smallest_that_holds_the_vocabulary():
    assert token_dtype(256) == np.uint8
    assert token_dtype(257) == np.uint16
    assert token_dtype(65536) == np.uint16
    assert token_dtype(50257) == np.uint16
    assert token_dtype(65537) == np.uint32


def test_each_split_is_its_documents_encoded_and_joined_by_end_of_text(tokenizer_path, tmp_path):
    out = tmp_path / "tokens.zarr"
    tokens = build_token_store(SYNTHETIC, 0, tokenizer_path, out, batch_documents=7)
    tokenizer = Tokenizer.from_file(str(tokenizer_path))
    eot = eot_id(tokenizer)
    expected = {split: [] for split in SPLITS}
    for split, document in split_documents(SYNTHETIC.corpus, 0):
        expected[split] += tokenizer.encode(document, add_special_tokens=False).ids + [eot]
    for split in SPLITS:
        stored = open_split(out, split)
        # several shards of 2 chunks of 1024: shard boundaries must not lose or repeat tokens
        assert stored.shape[0] > 3 * 2048 or split != "train"
        np.testing.assert_array_equal(stored[:], np.asarray(expected[split]))
        assert tokens[split] == len(expected[split])
    assert tokenizer.decode(open_split(out, "val")[:50].tolist()) in "".join(
        d for s, d in split_documents(SYNTHETIC.corpus, 0) if s == "val"
    )


def test_caps_keep_exactly_that_many_tokens(tokenizer_path, tmp_path):
    capped = data_of(SYNTHETIC_DATA | {"max_tokens": {"train": 5000, "val": 777, "analysis": 1}}).store()
    tokens = build_token_store(capped, 0, tokenizer_path, tmp_path / "t.zarr")
    assert tokens == {"train": 5000, "val": 777, "analysis": 1}
    full = build_token_store(SYNTHETIC, 0, tokenizer_path, tmp_path / "full.zarr")
    for split in SPLITS:  # a cap is a prefix of the uncapped split
        np.testing.assert_array_equal(open_split(tmp_path / "t.zarr", split)[:], open_split(tmp_path / "full.zarr", split)[: tokens[split]])
        assert full[split] >= tokens[split]


def test_splits_too_small_for_the_configs_needs_leave_nothing_behind(tokenizer_path, tmp_path):
    out = tmp_path / "tokens.zarr"
    needs = {"context": 32, "evaluation_tokens": 10**9, "features_tokens": 10}
    with pytest.raises(ConfigError, match="the val split holds"):
        build_token_store(SYNTHETIC, 0, tokenizer_path, out, needs=needs)
    assert list(tmp_path.iterdir()) == []


def test_pretokenized_rows_are_concatenated_as_they_are(tokenizer_path, tmp_path):
    rows = [[1, 2, 3, 0], [4, 5, 0], [], [1, 2, 3, 0], [7, 8, 9, 10, 0]] + [[i % 300, 0] for i in range(1, 60)]
    hub = tmp_path / "hub"
    hub.mkdir()
    pq.write_table(pa.table({"input_ids": rows}), hub / "part.parquet")
    data = hub_store(hub)
    tokens = build_token_store(data, 0, tokenizer_path, tmp_path / "t.zarr")
    kept = {split: [] for split in SPLITS}
    seen = set()
    for row in rows:
        if row and tuple(row) not in seen:  # the empty row and the duplicate are dropped
            seen.add(tuple(row))
            kept[document_split(row, 0, data.corpus.split_fractions)] += row
    for split in SPLITS:
        np.testing.assert_array_equal(open_split(tmp_path / "t.zarr", split)[:], np.asarray(kept[split]))
    group = zarr.open_group(str(tmp_path / "t.zarr"), mode="r")
    assert group.attrs["dropped"] == {"empty": 1, "duplicates": 1}
    assert sum(tokens.values()) == sum(len(v) for v in kept.values())


def test_ids_outside_the_vocabulary_are_refused(tokenizer_path, tmp_path):
    hub = tmp_path / "hub"
    hub.mkdir()
    pq.write_table(pa.table({"input_ids": [[1, 2, 50000]] * 1 + [[3, 4]]}), hub / "part.parquet")
    data = hub_store(hub)
    with pytest.raises(ValueError, match="outside"):
        build_token_store(data, 0, tokenizer_path, tmp_path / "t.zarr")
    assert not (tmp_path / "t.zarr").exists()
