"""Feature stores: every SAE's codes over the same analysis tokens, sparse, with per-latent stats.

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
    attrs        format, model, sae, n_tokens, n_latents, n_windows, context, positions,
                 split, window_seed, tokens_sha256 (of the token ids whose codes these are)

Every array carries `dimension_names` ("token_edge", "nonzero", "latent"), so
`xarray.open_zarr(path, consolidated=False)` reads the store as a Dataset. Which tokens count
is decided by the config alone (`windows`), so every model's store covers the same tokens.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np
import zarr
from zarr.codecs import ZstdCodec

from featscale.runtime import write_atomically

if TYPE_CHECKING:  # reading a store (the correlation's CPU environment) needs no torch
    import torch

    from featscale.model import GPT
    from featscale.sae import SparseAutoencoder

FORMAT = "featscale.features/1"
STAT_ARRAYS = ("max", "importance", "argmax", "sum", "sum_squares", "count", "decoder_norm")
CODE_CHUNK = 1 << 20  # nonzeros per chunk of indices / values
log = logging.getLogger(__name__)


# ---------------------------------------------------------------- which tokens


def analysis_windows(
    tokens: zarr.Array | np.ndarray, n_tokens: int, context: int, include_position_0: bool, random_seed: int | None
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
    starts = np.sort(np.random.default_rng([random_seed, 2**31]).integers(0, available - context + 1, n_windows))
    index = starts[:, None] + np.arange(context)
    if isinstance(tokens, np.ndarray):
        ids = tokens[index]
    else:
        ids = tokens.get_coordinate_selection(index.ravel()).reshape(index.shape)
    return ids.astype(np.int64)


def counted_tokens(windows: np.ndarray, include_position_0: bool, n_tokens: int) -> np.ndarray:
    """The token ids of the counted positions, row-major, cut to exactly `n_tokens`."""
    first = 0 if include_position_0 else 1
    return windows[:, first:].reshape(-1)[:n_tokens]


def tokens_sha256(token_ids: np.ndarray) -> str:
    """A fingerprint of the counted tokens: two stores correlate only if theirs agree."""
    return hashlib.sha256(np.ascontiguousarray(token_ids, dtype=np.int64).tobytes()).hexdigest()


# ---------------------------------------------------------------- encoding


class FeatureWriter:
    """Writes a feature store batch by batch into `path` (a temporary folder the caller renames).

    Codes go to disk as they come; per-latent statistics are kept in float64 (max in float32,
    as the stored values) on the codes' device. Memory does not grow with the token count.
    """

    def __init__(self, path: str | Path, n_latents: int, device: torch.device | str = "cpu"):
        import torch

        self.group = zarr.open_group(str(path), mode="w", zarr_format=3)
        self.codes = {
            name: self.group.create_array(
                name, shape=(0,), dtype=dtype, chunks=(CODE_CHUNK,), compressors=ZstdCodec(level=3),
                dimension_names=["nonzero"],
            )
            for name, dtype in (("indices", np.int32), ("values", np.float32))
        }
        self.indptr = [np.zeros(1, dtype=np.int64)]
        self.n_tokens = self.nnz = 0
        self.max = torch.zeros(n_latents, dtype=torch.float32, device=device)
        self.argmax = torch.full((n_latents,), -1, dtype=torch.int64, device=device)
        self.sum = torch.zeros(n_latents, dtype=torch.float64, device=device)
        self.sum_squares = torch.zeros(n_latents, dtype=torch.float64, device=device)
        self.count = torch.zeros(n_latents, dtype=torch.int64, device=device)

    def add(self, latents: torch.Tensor) -> None:
        """Append the codes (N, F) >= 0 of the next N tokens."""
        import torch

        latents = latents.detach().float()
        peak, where = latents.max(dim=0)  # (F,)
        better = peak > self.max
        self.max = torch.where(better, peak, self.max)
        self.argmax = torch.where(better, where + self.n_tokens, self.argmax)
        as64 = latents.double()
        self.sum += as64.sum(dim=0)
        self.sum_squares += as64.pow(2).sum(dim=0)
        self.count += (latents > 0).sum(dim=0)
        rows, columns = latents.nonzero(as_tuple=True)  # row-major: CSR order
        indices = columns.to(torch.int32).cpu().numpy()
        self.codes["indices"].append(indices)
        self.codes["values"].append(latents[rows, columns].cpu().numpy())
        per_row = torch.bincount(rows, minlength=latents.shape[0]).cpu().numpy()
        self.indptr.append(np.cumsum(per_row, dtype=np.int64) + self.nnz)
        self.nnz += len(indices)
        self.n_tokens += latents.shape[0]

    def finish(self, decoder_norm: torch.Tensor, attrs: Mapping[str, Any]) -> dict[str, Any]:
        """Write indptr, the per-latent arrays and attrs (n_tokens, nnz, l0 added); returns the attrs."""
        self.group.create_array(
            "indptr", data=np.concatenate(self.indptr), chunks=(CODE_CHUNK,), compressors=ZstdCodec(level=3),
            dimension_names=["token_edge"],
        )
        decoder_norm = decoder_norm.detach().float().to(self.max.device)
        values = {
            "max": self.max,
            "importance": self.max * decoder_norm,
            "argmax": self.argmax,
            "sum": self.sum,
            "sum_squares": self.sum_squares,
            "count": self.count,
            "decoder_norm": decoder_norm,
        }
        for name in STAT_ARRAYS:
            self.group.create_array(name, data=values[name].cpu().numpy(), dimension_names=["latent"])
        meta = {
            "format": FORMAT,
            **attrs,
            "n_tokens": self.n_tokens,
            "n_latents": len(self.max),
            "nnz": self.nnz,
            "l0": self.nnz / max(self.n_tokens, 1),
        }
        self.group.attrs.update(meta)
        return meta


def encode_features(
    model: GPT,
    sae: SparseAutoencoder,
    windows: np.ndarray,
    layer: int,
    site: str,
    include_position_0: bool,
    n_tokens: int,
    batch_size: int,
    device: torch.device,
    out: str | Path,
    attrs: Mapping[str, Any],
) -> dict[str, Any]:
    """Run model and SAE over `windows` (n_windows, context) and write the feature store `out`.

    Memory does not grow with the number of tokens: codes go to disk batch by batch and only
    per-latent statistics stay in memory. The store appears at `out` only when complete.
    Returns the store's attrs.
    """
    import torch
    from tqdm import tqdm

    from featscale.runtime import autocast

    if sae.config.d_in != model.config.width:
        raise ValueError(
            f"the SAE reads d_in = {sae.config.d_in} but the model's width is {model.config.width}: "
            "it was trained on another model"
        )
    model, sae = model.to(device).eval(), sae.to(device).eval()
    first = 0 if include_position_0 else 1
    token_ids = counted_tokens(windows, include_position_0, n_tokens)
    if len(token_ids) != n_tokens:
        raise ValueError(f"{len(windows)} windows hold {len(token_ids)} counted tokens, fewer than {n_tokens}")
    meta = {
        **attrs,
        "n_windows": int(len(windows)),
        "context": int(windows.shape[1]),
        "include_position_0": bool(include_position_0),
        "tokens_sha256": tokens_sha256(token_ids),
    }

    def write(path: Path) -> None:
        writer = FeatureWriter(path, sae.config.n_latents, device)
        with torch.no_grad(), tqdm(total=n_tokens, desc="encode", unit="tok", mininterval=10) as progress:
            for start in range(0, len(windows), batch_size):
                if writer.n_tokens >= n_tokens:
                    break
                batch = torch.from_numpy(windows[start : start + batch_size]).to(device)
                with autocast(device):
                    acts = model.activations(batch, layer, site)  # (B, T, d)
                x = acts[:, first:].float().reshape(-1, acts.shape[-1])[: n_tokens - writer.n_tokens]  # (N, d)
                writer.add(sae.encode(x))
                progress.update(len(x))
        meta.update(writer.finish(sae.decoder_norms() / sae.input_scale, meta))  # norms in original units
        log.info("%s: %d tokens, %d nonzeros (L0 %.1f), %d of %d latents ever active", out, writer.n_tokens,
                 writer.nnz, meta["l0"], int((writer.count > 0).sum()), sae.config.n_latents)

    write_atomically(out, write)
    return meta


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
        return self.group[name][:]

    def rows(self, start: int, stop: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """CSR (indptr from 0, indices, values) of tokens start .. stop - 1."""
        bounds = self.group["indptr"][start : stop + 1]
        lo, hi = int(bounds[0]), int(bounds[-1])
        return bounds - lo, self.group["indices"][lo:hi], self.group["values"][lo:hi]

    def dense(self, start: int = 0, stop: int | None = None) -> np.ndarray:
        """Codes of tokens start .. stop - 1 as a dense (tokens, n_latents) float32 array (small runs and tests)."""
        stop = self.n_tokens if stop is None else stop
        indptr, indices, values = self.rows(start, stop)
        out = np.zeros((stop - start, self.n_latents), dtype=np.float32)
        out[np.repeat(np.arange(stop - start), np.diff(indptr)), indices] = values
        return out


def open_features(path: str | Path) -> FeatureStore:
    """A feature store written by encode_features, read-only."""
    group = zarr.open_group(str(path), mode="r")
    attrs = dict(group.attrs)
    if attrs.get("format") != FORMAT:
        raise ValueError(f"{path} is not a feature store of format {FORMAT} (found {attrs.get('format')!r})")
    return FeatureStore(Path(path), attrs, group)
