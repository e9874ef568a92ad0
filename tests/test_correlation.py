"""Feature stores and the exact sparse correlation: every r equals numpy.corrcoef in float64."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import zarr
from scipy import sparse

from conftest import tiny
from featscale.analysis.correlation import accumulate_cooccurrence, correlate, open_correlations
from featscale.config import CorrelationSettings
from featscale.features.encode import FeatureWriter
from featscale.features.store import analysis_windows, counted_tokens, open_features, tokens_sha256


def correlation_settings(**changes) -> CorrelationSettings:
    """Correlation settings: the function's former defaults, with a test's own values."""
    defaults = {"min_count": 10, "block_latents": 2048, "token_chunk": 1 << 18, "matrix_dtype": "float16", "workers": 1}
    return tiny("correlation", **defaults | changes)


def random_codes(n_tokens: int, n_latents: int, l0: float, seed: int, dead: int = 0, rare: int = 0) -> np.ndarray:
    """Dense non-negative sparse codes (n_tokens, n_latents) float32 with Zipf-like firing rates.

    The first `dead` latents never fire; the next `rare` fire exactly twice.
    """
    rng = np.random.default_rng(seed)
    rate = 1.0 / np.arange(1, n_latents + 1) ** 0.7
    rate = rng.permutation(rate * (l0 / rate.sum()))
    codes = (rng.random((n_tokens, n_latents)) < rate).astype(np.float32)
    codes *= rng.exponential(1.0, size=codes.shape).astype(np.float32)
    codes[:, : dead + rare] = 0
    for j in range(dead, dead + rare):
        codes[rng.choice(n_tokens, 2, replace=False), j] = 1.5
    return codes


def write_store(path, codes: np.ndarray, name: str, token_ids: np.ndarray | None = None, batch: int = 97) -> None:
    """A feature store holding `codes`, written in uneven batches as encode_features does."""
    writer = FeatureWriter(path, codes.shape[1])
    for start in range(0, len(codes), batch):
        writer.add(torch.from_numpy(codes[start : start + batch]))
    ids = np.arange(len(codes)) if token_ids is None else token_ids
    writer.finish(torch.ones(codes.shape[1]) * 2, {"model": name, "sae": "main", "tokens_sha256": tokens_sha256(ids)})


def corrcoef_cross(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pearson r of every column of a with every column of b, by numpy.corrcoef in float64."""
    full = np.corrcoef(a.astype(np.float64), b.astype(np.float64), rowvar=False)
    return full[: a.shape[1], a.shape[1] :]


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    root = tmp_path_factory.mktemp("pair")
    a = random_codes(3000, 300, l0=12, seed=1, dead=5, rare=4)
    b = random_codes(3000, 260, l0=9, seed=2, dead=3, rare=0)
    b[:, 100] = a[:, 50] * 0.5 + b[:, 100]  # a planted partner
    write_store(root / "a.zarr", a, "w8")
    write_store(root / "b.zarr", b, "w16")
    return root, a, b


def test_store_round_trips_codes_and_stats(pair):
    root, a, _ = pair
    store = open_features(root / "a.zarr")
    assert store.n_tokens == 3000 and store.n_latents == 300
    np.testing.assert_array_equal(store.dense(), a)
    np.testing.assert_array_equal(store.dense(1000, 1500), a[1000:1500])
    np.testing.assert_allclose(store.stat("sum"), a.astype(np.float64).sum(0))
    np.testing.assert_allclose(store.stat("sum_squares"), (a.astype(np.float64) ** 2).sum(0))
    np.testing.assert_array_equal(store.stat("count"), (a > 0).sum(0))
    np.testing.assert_array_equal(store.stat("max"), a.max(0))
    fired = a.max(0) > 0
    np.testing.assert_array_equal(store.stat("argmax")[fired], a.argmax(0)[fired])
    assert (store.stat("argmax")[~fired] == -1).all()
    np.testing.assert_array_equal(store.stat("importance"), a.max(0) * 2)  # decoder norms of 2
    assert store.attrs["l0"] == pytest.approx((a > 0).sum() / 3000)
    group = zarr.open_group(str(root / "a.zarr"), mode="r")
    assert group["indptr"].dtype == np.int64 and group["indices"].dtype == np.int32
    assert group["values"].dtype == np.float32


def test_store_reads_through_xarray(pair):
    xarray = pytest.importorskip("xarray")
    root, a, _ = pair
    ds = xarray.open_zarr(root / "a.zarr", consolidated=False)
    assert ds["max"].dims == ("latent",) and ds.sizes["latent"] == 300
    assert ds["indices"].dims == ("nonzero",) and ds["indptr"].dims == ("token_edge",)
    np.testing.assert_array_equal(ds["count"].values, (a > 0).sum(0))
    assert ds.attrs["model"] == "w8"


@pytest.mark.parametrize("workers, block, chunk", [(1, 1000, 100000), (1, 70, 701), (2, 90, 1024)])
def test_every_correlation_equals_numpy_corrcoef(pair, tmp_path, workers, block, chunk):
    root, a, b = pair
    correlate(root / "a.zarr", root / "b.zarr", tmp_path / "r.zarr", correlation_settings(min_count=3, block_latents=block, token_chunk=chunk, matrix_dtype="float64"), workers=workers)
    store = open_correlations(tmp_path / "r.zarr")
    ids_a, ids_b = store.side("a")["latent"], store.side("b")["latent"]
    count_a, count_b = (a > 0).sum(0), (b > 0).sum(0)
    np.testing.assert_array_equal(ids_a, np.flatnonzero(count_a >= 3))
    np.testing.assert_array_equal(ids_b, np.flatnonzero(count_b >= 3))
    expected = corrcoef_cross(a[:, ids_a], b[:, ids_b])
    np.testing.assert_allclose(store.group["matrix"][:], expected, atol=1e-6, rtol=0)
    side_a, side_b = store.side("a"), store.side("b")
    np.testing.assert_allclose(side_a["max_similarity"], expected.max(1), atol=1e-6, rtol=0)
    np.testing.assert_array_equal(side_a["best_partner"], ids_b[expected.argmax(1)])
    np.testing.assert_allclose(side_b["max_similarity"], expected.max(0), atol=1e-6, rtol=0)
    np.testing.assert_array_equal(side_b["best_partner"], ids_a[expected.argmax(0)])
    assert side_a["best_partner"][list(ids_a).index(50)] == 100  # the planted partner
    attrs = store.attrs
    assert (attrs["a_dead"], attrs["a_rare"], attrs["b_dead"], attrs["b_rare"]) == (5, 4, 3, 0)
    assert attrs["a_counted"] == len(ids_a) and attrs["n_tokens"] == 3000


def test_correlation_store_reads_through_xarray_as_a_labelled_matrix(pair, tmp_path):
    xarray = pytest.importorskip("xarray")
    root, a, b = pair
    correlate(root / "a.zarr", root / "b.zarr", tmp_path / "r.zarr", correlation_settings(min_count=3, matrix_dtype="float64"))
    ds = xarray.open_zarr(tmp_path / "r.zarr", consolidated=False)
    count_a, count_b = (a > 0).sum(0), (b > 0).sum(0)
    np.testing.assert_array_equal(ds["a_latent"].values, np.flatnonzero(count_a >= 3))  # coordinates: latent ids
    np.testing.assert_array_equal(ds["b_latent"].values, np.flatnonzero(count_b >= 3))
    assert ds["matrix"].dims == ("a_latent", "b_latent") and ds["a_max_similarity"].dims == ("a_latent",)
    assert ds["b_best_partner"].dims == ("b_latent",) and set(ds.coords) == {"a_latent", "b_latent"}
    # labelled: select by latent id, not by position
    r = ds["matrix"].sel(a_latent=50, b_latent=100).item()
    np.testing.assert_allclose(r, corrcoef_cross(a[:, [50]], b[:, [100]])[0, 0], atol=1e-6)
    assert ds["a_best_partner"].sel(a_latent=50).item() == 100  # the planted partner
    np.testing.assert_allclose(ds["matrix"].max("b_latent").values, ds["a_max_similarity"].values)
    np.testing.assert_array_equal(ds["b_latent"].values[ds["matrix"].argmax("b_latent").values],
                                  ds["a_best_partner"].values)
    assert ds.attrs["format"] == "featscale.correlations/2" and ds.attrs["a"] == "w8" and ds.attrs["b"] == "w16"


def test_format_1_stores_are_still_read_and_unknown_formats_refused(pair, tmp_path):
    root, *_ = pair
    correlate(root / "a.zarr", root / "b.zarr", tmp_path / "r.zarr", correlation_settings(min_count=3))
    now = open_correlations(tmp_path / "r.zarr")
    # the same store as format 1 wrote it: the per-latent arrays in subgroups a/ and b/
    old = zarr.open_group(str(tmp_path / "old.zarr"), mode="w", zarr_format=3)
    for side in ("a", "b"):
        for name, values in now.side(side).items():
            old.require_group(side).create_array(name, data=values)
    old.create_array("matrix", data=now.group["matrix"][:])
    old.attrs.update(now.attrs | {"format": "featscale.correlations/1"})
    for side in ("a", "b"):
        for name, values in open_correlations(tmp_path / "old.zarr").side(side).items():
            np.testing.assert_array_equal(values, now.side(side)[name])
    zarr.open_group(str(tmp_path / "old.zarr"), mode="r+").attrs["format"] = "featscale.correlations/9"
    with pytest.raises(ValueError, match=r"has format 'featscale.correlations/9'.*featscale.correlations/2.*run its"):
        open_correlations(tmp_path / "old.zarr")


def test_dead_and_rare_latents_are_excluded_never_filled(pair, tmp_path):
    root, a, b = pair
    correlate(root / "a.zarr", root / "b.zarr", tmp_path / "r.zarr", correlation_settings(min_count=1, matrix_dtype="float32"))
    store = open_correlations(tmp_path / "r.zarr")
    ids_a = store.side("a")["latent"]
    assert not set(range(5)) & set(ids_a)  # dead: absent
    assert set(range(5, 9)) <= set(ids_a)  # rare, but min_count 1 keeps them
    matrix = store.group["matrix"][:]
    assert np.isfinite(matrix).all() and np.abs(matrix).max() <= 1.0 + 1e-6
    assert store.group["matrix"].dtype == np.float32
    assert (store.attrs["a_dead"], store.attrs["a_rare"]) == (5, 0)


def test_matrix_can_be_switched_off_and_float16_is_the_default(pair, tmp_path):
    root, *_ = pair
    correlate(root / "a.zarr", root / "b.zarr", tmp_path / "none.zarr", correlation_settings(matrix_dtype="none"))
    assert "matrix" not in zarr.open_group(str(tmp_path / "none.zarr"), mode="r")
    correlate(root / "a.zarr", root / "b.zarr", tmp_path / "half.zarr", correlation_settings())
    assert zarr.open_group(str(tmp_path / "half.zarr"), mode="r")["matrix"].dtype == np.float16


def test_stores_of_different_tokens_are_refused_and_nothing_is_written(pair, tmp_path):
    root, a, _ = pair
    write_store(tmp_path / "other.zarr", a, "w32", token_ids=np.arange(len(a)) + 1)
    with pytest.raises(ValueError, match="different tokens"):
        correlate(root / "a.zarr", tmp_path / "other.zarr", tmp_path / "r.zarr", correlation_settings())
    assert not (tmp_path / "r.zarr").exists() and not (tmp_path / "r.zarr.partial").exists()


def test_cooccurrence_adds_every_sub_block_into_what_is_there():
    # sub-blocks of 1, 3 and all rows (7), onto a non-zero accumulator: the sums must not change
    rng = np.random.default_rng(0)
    b = (rng.random((40, 30)) < 0.2) * rng.random((40, 30))
    a_t = (rng.random((7, 40)) < 0.3) * rng.random((7, 40))
    start = rng.random((7, 30))
    for sub_block in (1, 3, 7, 100):
        out = start.copy()
        accumulate_cooccurrence(sparse.csr_array(a_t), sparse.csr_array(b), out, sub_block=sub_block)
        np.testing.assert_allclose(out, start + a_t @ b)


def test_windows_are_shared_and_position_0_is_optional():
    tokens = np.arange(1000)
    windows = analysis_windows(tokens, n_tokens=70, context=8, include_position_0=False, random_seed=None)
    assert windows.shape == (10, 8) and (windows[:, 0] == np.arange(0, 80, 8)).all()
    counted = counted_tokens(windows, False, 70)
    assert len(counted) == 70 and 0 not in counted and 8 not in counted
    with_first = analysis_windows(tokens, n_tokens=70, context=8, include_position_0=True, random_seed=None)
    assert with_first.shape == (9, 8)
    random = analysis_windows(tokens, n_tokens=70, context=8, include_position_0=True, random_seed=3)
    again = analysis_windows(tokens, n_tokens=70, context=8, include_position_0=True, random_seed=3)
    np.testing.assert_array_equal(random, again)
    assert (np.diff(random, axis=1) == 1).all()  # whole windows of consecutive tokens
    with pytest.raises(ValueError, match="lower features.tokens"):
        analysis_windows(tokens, n_tokens=1000, context=8, include_position_0=False, random_seed=None)


@pytest.mark.parametrize("shift, chunk", [(1234, 100000), (2999, 700), (1500, 1024)])
def test_shifted_null_pairs_each_token_with_a_later_one_and_keeps_firing_counts(pair, tmp_path, shift, chunk):
    root, a, b = pair
    correlate(root / "a.zarr", root / "b.zarr", tmp_path / "null.zarr", correlation_settings(min_count=3, token_chunk=chunk, matrix_dtype="float64"), shift=shift)
    store = open_correlations(tmp_path / "null.zarr")
    ids_a, ids_b = store.side("a")["latent"], store.side("b")["latent"]
    shifted = np.roll(b, -shift, axis=0)  # row t of shifted is token t + shift of b
    assert ((shifted > 0).sum(0) == (b > 0).sum(0)).all()  # every latent keeps its firing count
    expected = corrcoef_cross(a[:, ids_a], shifted[:, ids_b])
    np.testing.assert_allclose(store.group["matrix"][:], expected, atol=1e-6, rtol=0)
    assert store.attrs["shift"] == shift


def test_latents_excluded_in_the_middle_of_a_block(pair, tmp_path):
    # dead and rare latents moved inside the id range of blocks of both sides
    _, a, b = pair
    a, b = np.roll(a, 150, axis=1), np.roll(b, 130, axis=1)
    write_store(tmp_path / "a.zarr", a, "w8")
    write_store(tmp_path / "b.zarr", b, "w16")
    correlate(tmp_path / "a.zarr", tmp_path / "b.zarr", tmp_path / "r.zarr", correlation_settings(min_count=3, block_latents=64, token_chunk=1000, matrix_dtype="float64"))
    store = open_correlations(tmp_path / "r.zarr")
    ids_a, ids_b = store.side("a")["latent"], store.side("b")["latent"]
    assert 150 not in ids_a and 130 not in ids_b and 149 in ids_a and 159 in ids_a
    expected = corrcoef_cross(a[:, ids_a], b[:, ids_b])
    np.testing.assert_allclose(store.group["matrix"][:], expected, atol=1e-6, rtol=0)
    np.testing.assert_array_equal(store.side("a")["best_partner"], ids_b[expected.argmax(1)])
    np.testing.assert_array_equal(store.side("b")["best_partner"], ids_a[expected.argmax(0)])


def test_worker_processes_do_not_run_the_calling_script_again(pair, tmp_path):
    # Snakemake runs a rule's script as __main__; spawn would run it again in every worker
    # (as __mp_main__), where a Snakemake script has no `snakemake` object and dies
    root, a, b = pair
    script = tmp_path / "script.py"
    script.write_text(
        "import sys\n"
        "if __name__ != '__main__':\n"
        "    raise SystemExit('the calling script ran again in a worker')\n"
        "from featscale.analysis.correlation import correlate\n"
        "from featscale.config import CorrelationSettings\n"
        f"settings = CorrelationSettings.from_dict({correlation_settings(min_count=3, block_latents=50, matrix_dtype='float64').to_dict()!r})\n"
        f"correlate({str(root / 'a.zarr')!r}, {str(root / 'b.zarr')!r}, {str(tmp_path / 'r.zarr')!r}, settings, workers=2)\n"
    )
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[1] / "workflow")}
    done = subprocess.run([sys.executable, str(script)], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    store = open_correlations(tmp_path / "r.zarr")
    ids_a, ids_b = store.side("a")["latent"], store.side("b")["latent"]
    np.testing.assert_allclose(store.group["matrix"][:], corrcoef_cross(a[:, ids_a], b[:, ids_b]), atol=1e-6, rtol=0)
