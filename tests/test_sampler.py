"""Training batches: the same for every model given the seed, resumable at any step."""

from __future__ import annotations

import numpy as np
import pytest
import zarr

from featscale.data.sampler import BatchSampler


@pytest.fixture()
def tokens(tmp_path):
    ids = np.random.default_rng(0).integers(0, 60000, 50_000).astype(np.uint16)
    array = zarr.create_array(str(tmp_path / "t.zarr"), shape=ids.shape, dtype=ids.dtype, chunks=(4096,))
    array[:] = ids
    return ids, array


def test_windows_are_contiguous_slices_with_their_next_token_targets(tokens):
    ids, array = tokens
    sampler = BatchSampler(array, context=16, batch_size=8, seed=3)
    batch = sampler.batch(5)
    assert batch.shape == (8, 17) and batch.dtype == np.int64
    for row, start in zip(batch, sampler.starts(5)):
        np.testing.assert_array_equal(row, ids[start : start + 17])


def test_a_batch_depends_only_on_seed_and_step(tokens):
    ids, array = tokens
    first = BatchSampler(array, context=16, batch_size=8, seed=3)
    # another model's sampler, built later, reading the store batch by batch from disk
    second = BatchSampler(array, context=16, batch_size=8, seed=3, in_memory_bytes=0)
    assert not isinstance(second.tokens, np.ndarray)
    np.testing.assert_array_equal(first.batch(41), second.batch(41))
    resumed = second.iter_from(40)
    stream = iter(first)
    for _ in range(40):
        next(stream)
    for _ in range(3):
        np.testing.assert_array_equal(next(stream), next(resumed))
    other_seed = BatchSampler(array, context=16, batch_size=8, seed=4)
    assert not np.array_equal(first.batch(41), other_seed.batch(41))
    assert not np.array_equal(first.batch(41), first.batch(42))


def test_every_start_is_reachable_and_no_window_runs_off_the_end():
    ids = np.arange(20, dtype=np.uint16)
    sampler = BatchSampler(ids, context=4, batch_size=64, seed=0)
    starts = np.concatenate([sampler.starts(step) for step in range(50)])
    assert starts.min() == 0 and starts.max() == 20 - 5
    with pytest.raises(ValueError, match="cannot fill one window"):
        BatchSampler(ids[:4], context=4, batch_size=1, seed=0)
