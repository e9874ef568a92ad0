"""Training an SAE on one site of a trained model, on activations made on the fly.

The model (an activation source: a GPT, run only as far as the SAE's site, or a model of a
planted family) reads train-split windows (the same windows for every width, from the
run's seed); a buffer of many sequences' activations is
shuffled and served in batches, so no activation ever touches the disk. Buffer b's
content is a function of b alone, which makes checkpoints small: a resumed job rebuilds
the buffer it was in and continues the same token stream.
"""

from __future__ import annotations

import logging
import math
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from featscale.config import SAESpec
from featscale.data.sampler import BatchSampler
from featscale.data.token_store import TokenSplit, open_split
from featscale.execution.checkpoints import Checkpoints
from featscale.execution.devices import pick_device
from featscale.execution.jobs import Stopped, StopRequested
from featscale.io import write_csv
from featscale.models.source import ActivationSource, load_source
from featscale.saes.base import (
    DeadLatentTracker,
    SAEConfig,
    SparseAutoencoder,
    fraction_of_variance_unexplained,
    make_sae,
)
from featscale.seeds import derive_seed

log = logging.getLogger(__name__)
METRICS = ("step", "tokens", "mse", "fvu", "l0", "dead_fraction", "sparsity_loss", "aux_loss", "lr", "l1_factor")


def sae_config_from_spec(
    spec: SAESpec, d_in: int, hook: Mapping[str, Any], provenance: Mapping[str, Any] | None = None
) -> SAEConfig:
    """The SAE architecture of a config spec (`saes.<name>`) for a model of width d_in; `provenance`
    (see SAEConfig) is recorded for SAELens."""
    topk = spec.architecture == "topk"
    return SAEConfig(
        architecture=spec.architecture,
        d_in=d_in,
        n_latents=spec.n_latents,
        k=spec.k,
        l1_coefficient=None if topk else l1_coefficient(spec, d_in),
        aux_k=spec.aux_k if topk else None,
        aux_coefficient=spec.aux_coefficient,
        gated_aux_trains_decoder=spec.gated_aux_trains_decoder if spec.architecture == "gated" else False,
        dead_after_tokens=spec.dead_after_tokens,
        decoder_init=spec.decoder_init,
        decoder_init_norm=spec.decoder_init_norm,
        encoder_rescale=spec.encoder_rescale,
        hook=dict(hook),
        provenance=dict(provenance or {}),
    )


def l1_coefficient(spec: SAESpec, d_in: int) -> float:
    """The spec's L1 coefficient at width d_in: as given, or, with l1_reference_width, scaled by
    √(d_in / that width). Inputs are scaled to norm √d, so the squared error grows like d while the
    sparsity penalty grows like √d: one coefficient penalises narrow SAEs relatively more (their L0
    falls, a wide one's rises, for the same features); the √d scaling keeps the trade-off alike."""
    if spec.l1_reference_width is None:
        return spec.l1_coefficient
    return spec.l1_coefficient * math.sqrt(d_in / spec.l1_reference_width)


def peak_lr(spec: SAESpec, d_in: int) -> float:
    """The spec's learning rate at width d_in: as given, or, with lr_reference_width, scaled by
    (that width / d_in), as the updates of a wider dictionary's rows add up over more dimensions."""
    if spec.lr_reference_width is None:
        return spec.lr
    return spec.lr * spec.lr_reference_width / d_in


def schedule(step: int, steps: int, spec: SAESpec, d_in: int | None = None) -> tuple[float, float]:
    """(learning rate, sparsity-penalty factor) at `step`.

    `authors`: constant lr, linear decay to 0 over the last `lr_decay_fraction` of steps.
    `cosine`: linear warmup over `lr_warmup_fraction`, then cosine decay to 0.
    Both warm the sparsity penalty up linearly over `l1_warmup_fraction` of the steps.
    """
    lr, progress = (spec.lr if d_in is None else peak_lr(spec, d_in)), step / steps
    if spec.schedule == "authors":
        decay_start = 1 - spec.lr_decay_fraction
        factor = 1.0 if progress < decay_start else (1 - progress) / spec.lr_decay_fraction
    else:
        warmup = spec.lr_warmup_fraction
        if progress < warmup:
            factor = (step + 1) / max(1, round(warmup * steps))
        else:
            factor = 0.5 * (1 + math.cos(math.pi * (progress - warmup) / (1 - warmup)))
    l1_warmup = spec.l1_warmup_fraction
    l1_factor = 1.0 if l1_warmup == 0 else min(1.0, (step + 1) / max(1, round(l1_warmup * steps)))
    return lr * factor, l1_factor


class ActivationBuffer:
    """Shuffled activations of many sequences; buffer `index` is the same on every run."""

    def __init__(self, source: ActivationSource, tokens: TokenSplit | np.ndarray, spec: SAESpec, run_seed: int,
                 device: torch.device):
        context = source.context
        self.source, self.spec, self.device = source, spec, device
        self.reading = spec.reading()
        self.sequences = spec.buffer_sequences
        self.first = spec.first_position  # position 0 is unlike all others
        self.tokens_per_buffer = self.sequences * (context - self.first)
        self.seed = derive_seed(run_seed, "sae_activations", spec.seed)
        self.sampler = BatchSampler(tokens, context, spec.harvest_batch, seed=self.seed)
        self.steps_per_buffer = math.ceil(self.sequences / spec.harvest_batch)

    @torch.no_grad()
    def fill(self, index: int) -> torch.Tensor:
        """Buffer `index`: (tokens_per_buffer, d_in) activations in a seeded random order."""
        parts = []
        for i in range(self.steps_per_buffer):
            ids = torch.from_numpy(self.sampler.batch(index * self.steps_per_buffer + i)[:, :-1]).to(self.device)
            acts = self.source.activations(ids, self.reading)  # (B, T, d)
            parts.append(acts[:, self.first :].float().flatten(0, 1))
        acts = torch.cat(parts)[: self.tokens_per_buffer]
        order = torch.from_numpy(np.random.default_rng([self.seed, index]).permutation(len(acts)))
        return acts[order.to(acts.device)]


def train_sae(
    inputs: Mapping[str, str | Path],
    outputs: Mapping[str, str | Path],
    *,
    spec: SAESpec,
    model: str,
    run_seed: int,
    checkpoints: str | Path,
    device: str = "auto",
    model_export: str | Path | None = None,
) -> SparseAutoencoder:
    """Rule train_sae: the SAE of spec `spec` on the model named `model`, written to `outputs`.

    `inputs`: tokens (the token store), and model_weights, model_config (a GPT) or truth (a planted
    family's truth store). `outputs`: weights and config (SAELens' two files, in one folder) and
    metrics (CSV). `model_export`: where the model's Hugging Face export is (rule export_hf), the
    model SAELens' metadata name (None for a planted family, which has no export).
    """
    stop = StopRequested()
    hook = {"model": model, "layer": spec.layer, "site": spec.site}
    device = pick_device(device)
    source = load_source(inputs, model).to(device)
    settings = {"spec": spec.to_dict(), "hook": hook, "run_seed": run_seed, "model_sha256": source.fingerprint}
    checkpoints = Checkpoints(checkpoints, settings)

    buffer = ActivationBuffer(source, open_split(inputs["tokens"], "train"), spec, run_seed, device)
    batch = spec.batch_tokens
    batches_per_buffer = buffer.tokens_per_buffer // batch
    steps = spec.tokens // batch
    if batches_per_buffer < 1:
        raise ValueError(
            f"a buffer of {buffer.tokens_per_buffer} tokens holds no batch of {batch}: "
            f"raise `buffer_sequences` or lower `batch_tokens` of this SAE spec"
        )

    torch.manual_seed(derive_seed(run_seed, "sae_init", spec.seed))
    provenance = {"context_size": source.context, "first_position": spec.first_position,
                  "dataset_path": str(inputs["tokens"])}
    if model_export is not None:
        provenance["model_path"] = str(model_export)
    sae = make_sae(sae_config_from_spec(spec, source.width, hook, provenance))
    first = buffer.fill(0)
    sae.config.input_scale = SparseAutoencoder.input_scale_for(first)
    sae.init_from_data(first[: spec.bias_init_tokens].cpu(), spec.bias_init)
    sae = sae.to(device)
    optimizer = torch.optim.Adam(sae.parameters(), lr=peak_lr(spec, sae.config.d_in), betas=tuple(spec.betas))
    dead = DeadLatentTracker(sae.config.n_latents, sae.config.dead_after_tokens, device=device)
    step, rows = 0, []
    state = checkpoints.load()
    if state is not None:
        sae.load_state_dict(state["sae"])
        optimizer.load_state_dict(state["optimizer"])
        dead.load_state_dict(state["dead"])
        step, rows = state["step"], state["metrics"]
    unit_decoder = sae.config.architecture == "topk"  # TopK keeps decoder rows at unit norm

    def save_checkpoint() -> None:
        checkpoints.save({"sae": sae.state_dict(), "optimizer": optimizer.state_dict(), "dead": dead.state_dict(),
                          "step": step, "metrics": rows})

    log.info("training %s SAE (%d latents) on %s of layer %d for %d steps of %d tokens, from step %d",
             sae.config.architecture, sae.config.n_latents, spec.site, spec.layer, steps, batch, step)
    progress = tqdm(total=steps, initial=step, desc="steps", unit="step", mininterval=10)
    acts, acts_index = (first, 0) if step // batches_per_buffer == 0 else (None, -1)
    while step < steps:
        index, position = divmod(step, batches_per_buffer)
        if index != acts_index:
            acts, acts_index = buffer.fill(index), index
            if position == 0 and step > 0 and index % spec.checkpoint_every_buffers == 0:
                save_checkpoint()  # at a buffer boundary
        x = acts[position * batch : (position + 1) * batch]
        lr, l1_factor = schedule(step, steps, spec, sae.config.d_in)
        for group_ in optimizer.param_groups:
            group_["lr"] = lr
        out = sae(x, dead_mask=dead.dead_mask)
        loss = out.mse + l1_factor * out.sparsity_loss + out.aux_loss
        if not torch.isfinite(loss):
            raise FloatingPointError(
                f"SAE loss is {float(loss)} at step {step}: training stopped; the last checkpoint is kept. "
                f"Lower this SAE spec's lr or check the model's activations."
            )
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if unit_decoder:
            sae.remove_parallel_gradient()
        if spec.grad_clip is not None:
            torch.nn.utils.clip_grad_norm_(sae.parameters(), spec.grad_clip)
        optimizer.step()
        if unit_decoder:
            sae.normalize_decoder()
        dead.update(out.latents)
        step += 1
        progress.update(1)
        if step % spec.log_every == 0 or step == steps:
            with torch.no_grad():
                rows.append({
                    "step": step, "tokens": step * batch, "mse": float(out.mse),
                    "fvu": float(fraction_of_variance_unexplained(x, out.reconstruction)),
                    "l0": float((out.latents > 0).sum(-1).float().mean()),
                    "dead_fraction": float(dead.dead_mask.float().mean()),
                    "sparsity_loss": float(out.sparsity_loss), "aux_loss": float(out.aux_loss),
                    "lr": lr, "l1_factor": l1_factor,
                })
            log.info("step %d: %s", step, {k: round(v, 4) for k, v in rows[-1].items() if k in ("mse", "fvu", "l0", "dead_fraction")})
        if stop.requested:
            save_checkpoint()
            raise Stopped()
    progress.close()

    sae = sae.cpu()
    folder = Path(outputs["weights"]).parent
    if Path(outputs["config"]).parent != folder:
        raise ValueError("an SAE's weights and config go in one folder (SAELens' layout)")
    sae.save(folder)
    write_csv(outputs["metrics"], rows, METRICS)
    shutil.rmtree(checkpoints.folder, ignore_errors=True)
    return sae
