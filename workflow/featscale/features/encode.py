"""Writing a feature store: a model (an activation source) and its SAE run over the chosen windows, codes
to disk as they come."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
import zarr
from tqdm import tqdm

from featscale.config import FeatureSettings, Reading, SAESpec
from featscale.data.token_store import open_split
from featscale.execution.devices import pick_device
from featscale.features.store import CODE_CHUNK, FORMAT, STAT_ARRAYS, counted_tokens, feature_windows, tokens_sha256
from featscale.io import checked_array_options, recorded_sha256, write_atomically
from featscale.models.source import ActivationSource
from featscale.saes.base import SparseAutoencoder, load_source_and_sae
from featscale.saes.gated import GatedSAE

log = logging.getLogger(__name__)


class FeatureWriter:
    """Writes a feature store batch by batch into `path` (a temporary folder the caller renames).

    Codes go to disk as they come; per-latent statistics are kept in float64 (max in float32,
    as the stored values) on the codes' device. Memory does not grow with the token count.
    """

    def __init__(self, path: str | Path, n_latents: int, device: torch.device | str = "cpu"):
        self.group = zarr.open_group(str(path), mode="w", zarr_format=3)
        self.codes = {
            name: self.group.create_array(
                name, shape=(0,), dtype=dtype, chunks=(CODE_CHUNK,), dimension_names=["nonzero"],
                **checked_array_options(),
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
            "indptr", data=np.concatenate(self.indptr), chunks=(CODE_CHUNK,), dimension_names=["token_edge"],
            **checked_array_options(),
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
            self.group.create_array(name, data=values[name].cpu().numpy(), dimension_names=["latent"],
                                    **checked_array_options())
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
    source: ActivationSource,
    sae: SparseAutoencoder,
    windows: np.ndarray,
    out: str | Path,
    reading: Reading,
    *,
    n_tokens: int,
    batch_size: int,
    device: torch.device,
    attrs: Mapping[str, Any],
    fold: str = "exact",
) -> dict[str, Any]:
    """Run the source and its SAE over `windows` (n_windows, context) and write the feature store `out`.

    The codes of the positions from the reading's first on, the first `n_tokens` of them. `fold`
    (SAESpec.fold_decoder_norm): exact stores the codes as the SAE encodes them, with its
    decoder norms (importance = max x norm); saelens_4_1_1 stores the codes of the authors'
    SAELens 4.1.1 fold (GatedSAE.encode_saelens_4_1_1), whose decoder rows are unit after it.
    Memory does not grow with the number of tokens: codes go to disk batch by batch and only
    per-latent statistics stay in memory. The store appears at `out` only when complete.
    Returns the store's attrs.
    """
    if sae.config.d_in != source.width:
        raise ValueError(
            f"the SAE reads d_in = {sae.config.d_in} but the model's width is {source.width}: "
            "it was trained on another model"
        )
    source, sae = source.to(device), sae.to(device).eval()
    first = reading.first_position
    token_ids = counted_tokens(windows, first == 0, n_tokens)
    if len(token_ids) != n_tokens:
        raise ValueError(f"{len(windows)} windows hold {len(token_ids)} counted tokens, fewer than {n_tokens}")
    if fold == "exact":
        encode, norms = sae.encode, sae.decoder_norms() / sae.input_scale  # norms in original units
    elif fold == "saelens_4_1_1" and isinstance(sae, GatedSAE):
        encode, norms = sae.encode_saelens_4_1_1, torch.ones(sae.config.n_latents, device=device)
    else:
        raise ValueError(f"fold {fold!r} is exact, or saelens_4_1_1 for a gated SAE; this SAE is {sae.architecture}")
    meta = {
        **attrs,
        "n_windows": int(len(windows)),
        "context": int(windows.shape[1]),
        "include_position_0": first == 0,
        "fold_decoder_norm": fold,
        "tokens_sha256": tokens_sha256(token_ids),
    }

    def write(path: Path) -> None:
        writer = FeatureWriter(path, sae.config.n_latents, device)
        with torch.no_grad(), tqdm(total=n_tokens, desc="encode", unit="tok", mininterval=10) as progress:
            for start in range(0, len(windows), batch_size):
                if writer.n_tokens >= n_tokens:
                    break
                batch = torch.from_numpy(windows[start : start + batch_size]).to(device)
                acts = source.activations(batch, reading)  # (B, T, d)
                x = acts[:, first:].float().reshape(-1, acts.shape[-1])[: n_tokens - writer.n_tokens]  # (N, d)
                writer.add(encode(x))
                progress.update(len(x))
        meta.update(writer.finish(norms, meta))
        log.info("%s: %d tokens, %d nonzeros (L0 %.1f), %d of %d latents ever active", out, writer.n_tokens,
                 writer.nnz, meta["l0"], int((writer.count > 0).sum()), sae.config.n_latents)

    write_atomically(out, write)
    return meta


def run_encode_features(
    inputs: Mapping[str, str | Path],
    out: str | Path,
    *,
    spec: SAESpec,
    features: FeatureSettings,
    run_seed: int,
    device: str,
    model: str,
    sae: str,
) -> dict[str, Any]:
    """Rule encode_features: the store `out` of the codes of SAE `sae` of model `model` over the
    feature windows. `inputs`: tokens (the token store), sae_weights, and model_weights, model_config
    (a GPT) or truth (a planted family's truth store)."""
    source, autoencoder = load_source_and_sae(inputs, model)
    windows = feature_windows(open_split(inputs["tokens"], features.split), features, source.context, run_seed)
    return encode_features(
        source, autoencoder, windows, out, spec.reading(features.include_position_0), n_tokens=features.tokens,
        batch_size=features.batch_windows, device=pick_device(device), fold=spec.fold_decoder_norm,
        attrs={"model": model, "sae": sae, "split": features.split,
               # which weights made these codes (verified as they were loaded): consumers check they match;
               # a planted model has no weights, its family's fingerprint stands for them
               "model_sha256": (recorded_sha256(inputs["model_weights"]) if "model_weights" in inputs
                                else source.fingerprint),
               "sae_sha256": recorded_sha256(inputs["sae_weights"])},
    )
