"""Feature stores: every SAE's codes over the same analysis tokens, sparse, with per-latent stats.

Reading a store and choosing its tokens; no torch (featscale.features.encode writes stores).

This module is the one home of the format. Layout of `features/{model}/{sae}.zarr/`:

    indptr       (n_tokens + 1,) int64    CSR row pointers, one row per counted token
    indices      (nnz,) int32              active latents of each token, row by row
    values       (nnz,) float32            their activations (> 0)
    max          (n_latents,) float32      each latent's largest activation
    importance   (n_latents,) float32      max × its decoder row's norm (the study's importance)
    argmax       (n_latents,) int64        the token (row) where it peaks; -1 if it never fires
    sum, sum_squares  (n_latents,) float64 Σ a and Σ a² over all tokens (zeros included)
    count        (n_latents,) int64        tokens where it is active
    decoder_norm (n_latents,) float32      ||W_dec,i|| in the model's units
    attrs        format, model, sae, split, n_windows, context, include_position_0, fold_decoder_norm,
                 tokens_sha256 (of the token ids whose codes these are), model_sha256,
                 sae_sha256 (the SHA-256s the model's and the SAE's weights record: which
                 model and SAE made the codes), n_tokens, n_latents, nnz, l0

Every array carries `dimension_names` ("token_edge", "nonzero", "latent"), so
`xarray.open_zarr(path, consolidated=False)` reads the store as a Dataset. Which tokens count
is decided by the config alone (`windows`), so every model's store covers the same tokens.
Every chunk carries zstd's checksum, checked on every read; `open_features` checks the format,
that every chunk is on disk and that the arrays' lengths agree with the attrs, and a failed
read names the store (featscale.io.ArtifactError).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import zarr

from featscale.config import FeatureSettings
from featscale.data.token_store import TokenSplit
from featscale.io import artifact_error, bytes_sha256, check_chunks, open_store, reading
from featscale.seeds import stream_rng

# /2: checksummed chunks, every chunk on disk, model_sha256 and sae_sha256 (a /1 store is refused: rebuild it)
FORMAT = "featscale.features/2"
PRODUCER = "encode_features"
CODE_ARRAYS = ("indptr", "indices", "values")
STAT_ARRAYS = ("max", "importance", "argmax", "sum", "sum_squares", "count", "decoder_norm")
CODE_CHUNK = 1 << 20  # nonzeros per chunk of indices / values
log = logging.getLogger(__name__)


# ---------------------------------------------------------------- which tokens


def analysis_windows(
    tokens: TokenSplit | np.ndarray, n_tokens: int, context: int, include_position_0: bool, random_seed: int | None
) -> np.ndarray:
    """The windows (n_windows, context) int64 whose codes are stored, the same for every model.

    n_windows is the fewest windows that give `n_tokens` counted positions (all `context`
    positions, or all but position 0). `random_seed` None: consecutive windows from the
    split's start (the held-out analysis split); an int: windows at seeded random offsets
    (the authors' random train windows).
    """
    per_window = context if include_position_0 else context - 1
    if per_window < 1:
        raise ValueError("a context of 1 token with position 0 excluded leaves no token to count")
    n_windows = -(-n_tokens // per_window)
    available = tokens.shape[0]
    if random_seed is None:
        if n_windows * context > available:
            raise ValueError(
                f"features.tokens = {n_tokens} needs {n_windows} windows of {context} tokens "
                f"({n_windows * context}) but the split holds {available}: lower features.tokens"
            )
        return np.asarray(tokens[: n_windows * context], dtype=np.int64).reshape(n_windows, context)
    if available < context:
        raise ValueError(f"the split holds {available} tokens, fewer than one window of {context}")
    starts = np.sort(stream_rng(random_seed, "feature_windows").integers(0, available - context + 1, n_windows))
    index = starts[:, None] + np.arange(context)
    if isinstance(tokens, np.ndarray):
        ids = tokens[index]
    else:
        ids = tokens.get_coordinate_selection(index.ravel()).reshape(index.shape)
    return ids.astype(np.int64)


def feature_windows(tokens: TokenSplit | np.ndarray, features: FeatureSettings, context: int, run_seed: int) -> np.ndarray:
    """The windows of the configured split whose codes every model's store holds
    (`features.split`: train takes seeded random windows, as the authors did)."""
    random_seed = run_seed if features.split == "train" else None
    return analysis_windows(tokens, features.tokens, context, features.include_position_0, random_seed)


def counted_tokens(windows: np.ndarray, include_position_0: bool, n_tokens: int) -> np.ndarray:
    """The token ids of the counted positions, row-major, cut to exactly `n_tokens`."""
    first = 0 if include_position_0 else 1
    return windows[:, first:].reshape(-1)[:n_tokens]


def tokens_sha256(token_ids: np.ndarray) -> str:
    """A fingerprint of the counted tokens: two stores correlate only if theirs agree."""
    return bytes_sha256(np.ascontiguousarray(token_ids, dtype=np.int64).tobytes())


# ---------------------------------------------------------------- reading


class FeatureStore(NamedTuple):
    """An open feature store: its attrs and its arrays (zarr, read lazily)."""

    path: Path
    attrs: dict[str, Any]
    group: zarr.Group

    @property
    def n_tokens(self) -> int:
        return int(self.attrs["n_tokens"])

    @property
    def n_latents(self) -> int:
        return int(self.attrs["n_latents"])

    def stat(self, name: str) -> np.ndarray:
        """One per-latent array, read whole."""
        if name not in STAT_ARRAYS:
            raise KeyError(f"no per-latent array {name!r}: the store has {', '.join(STAT_ARRAYS)}")
        with reading(self.path, PRODUCER):
            return self.group[name][:]

    def rows(self, start: int, stop: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """CSR (indptr from 0, indices, values) of tokens start .. stop - 1."""
        with reading(self.path, PRODUCER):
            bounds = self.group["indptr"][start : stop + 1]
            lo, hi = int(bounds[0]), int(bounds[-1])
            if not 0 <= lo <= hi <= int(self.attrs["nnz"]):
                raise artifact_error(self.path, f"has row pointers {lo}..{hi} outside its {self.attrs['nnz']} "
                                                f"nonzeros at tokens {start}..{stop}", PRODUCER)
            return bounds - lo, self.group["indices"][lo:hi], self.group["values"][lo:hi]

    def check_made_with(self, sae_weights: str | Path, sae_sha256: str) -> None:
        """Raise ArtifactError unless these codes are those of the SAE whose weights record `sae_sha256`."""
        if self.attrs["sae_sha256"] != sae_sha256:
            raise artifact_error(self.path, f"holds the codes of another SAE than {sae_weights} (it records SAE "
                                            f"SHA-256 {self.attrs['sae_sha256'][:16]}..., the SAE records "
                                            f"{sae_sha256[:16]}...)", PRODUCER)

    def dense(self, start: int = 0, stop: int | None = None) -> np.ndarray:
        """Codes of tokens start .. stop - 1 as a dense (tokens, n_latents) float32 array (small runs and tests)."""
        stop = self.n_tokens if stop is None else stop
        indptr, indices, values = self.rows(start, stop)
        out = np.zeros((stop - start, self.n_latents), dtype=np.float32)
        out[np.repeat(np.arange(stop - start), np.diff(indptr)), indices] = values
        return out


def open_features(path: str | Path) -> FeatureStore:
    """A feature store written by encode_features, read-only: its format, that every chunk of every
    array is on disk and that the arrays' lengths agree with its attrs are checked here, each chunk's
    checksum when it is read."""
    group, attrs = open_store(path, "feature store", FORMAT, PRODUCER)
    with reading(path, PRODUCER):
        lengths = {"indptr": attrs["n_tokens"] + 1, "indices": attrs["nnz"], "values": attrs["nnz"]}
        for name in (*CODE_ARRAYS, *STAT_ARRAYS):
            array = group[name]
            expected = lengths.get(name, attrs["n_latents"])
            if array.shape != (expected,):
                raise artifact_error(path, f"has an array {name!r} of shape {array.shape}, not ({expected},) as its "
                                           f"attrs say", PRODUCER)
            check_chunks(array, path, PRODUCER)
    return FeatureStore(Path(path), attrs, group)
