"""Training one model of the family: the same tokens, schedule and budget for every width.

AdamW with linear warmup and cosine decay, gradient clipping, gradient accumulation to a
batch size in tokens, bf16 autocast on CUDA and fp32 on the CPU, optional torch.compile.
Checkpoints (model, optimizer, step, RNG states, metrics so far) every N steps and on
SIGTERM make a killed job, rerun, end exactly where an uninterrupted one ends.
"""

from __future__ import annotations

import logging
import math
import random
import shutil
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from featscale.config import ModelSettings, TrainingSettings
from featscale.data.sampler import BatchSampler, heldout_windows
from featscale.data.token_store import open_split, token_attrs
from featscale.execution.checkpoints import Checkpoints
from featscale.execution.devices import autocast, pick_device
from featscale.execution.jobs import Stopped, StopRequested
from featscale.io import write_csv, write_json
from featscale.models.gpt import GPT, GPTConfig, save_model
from featscale.models.loss import mean_loss
from featscale.seeds import derive_seed

log = logging.getLogger(__name__)
METRICS = ("step", "tokens", "train_loss", "val_loss", "lr", "tokens_per_s")


def learning_rate(step: int, steps: int, training: TrainingSettings) -> float:
    """Linear warmup to `lr`, then cosine decay to `lr * min_lr_ratio` at the last step."""
    peak = training.lr
    warmup = max(1, round(training.warmup_fraction * steps))
    if step < warmup:
        return peak * (step + 1) / warmup
    progress = (step - warmup) / max(1, steps - 1 - warmup)
    floor = peak * training.min_lr_ratio
    return floor + 0.5 * (peak - floor) * (1 + math.cos(math.pi * min(1.0, progress)))


def train_model(
    model_config: GPTConfig,
    training: TrainingSettings,
    store: str | Path,
    outputs: Mapping[str, str | Path],
    *,
    run_seed: int,
    model_seed: int,
    evaluation_tokens: int,
    checkpoint_root: str | Path,
) -> dict[str, Any]:
    """Train one model on the token store and write `outputs` (weights, config, metrics, final).

    Returns the final summary (also written to outputs["final"]). With `training.tokens`
    below one batch no step is taken: the outputs hold the initialisation itself (the
    untrained null model, w<width>-init), evaluated like a trained model.
    """
    stop = StopRequested()
    device = pick_device(training.device)
    attrs = token_attrs(store)
    settings = {
        "model": model_config.to_dict(),
        "training": training.to_dict(),
        "run_seed": run_seed,
        "model_seed": model_seed,
        # the data, by identity: same tokenizer and same splits means same tokens
        "tokens": {key: attrs[key] for key in ("tokenizer_sha256", "tokens", "seed")},
    }
    checkpoints = Checkpoints(checkpoint_root, settings)

    context = model_config.context
    batch_size = training.batch_tokens // context
    micro_batch = training.micro_batch
    steps = training.tokens // training.batch_tokens
    sampler = BatchSampler(open_split(store, "train"), context, batch_size, seed=run_seed)
    val_windows = heldout_windows(open_split(store, "val"), training.eval_tokens, context)

    torch.manual_seed(derive_seed(run_seed, "model_init", model_seed))
    model = GPT(model_config).to(device)
    optimizer = _optimizer(model, training, device)
    step, rows = 0, []
    state = checkpoints.load()
    if state is not None:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        step, rows = state["step"], state["metrics"]
        _set_rng_state(state["rng"])
    forward = torch.compile(model) if training.compile else model

    def save_checkpoint() -> None:
        checkpoints.save(
            {"model": model.state_dict(), "optimizer": optimizer.state_dict(), "step": step,
             "metrics": rows, "rng": _rng_state()}
        )

    log.info(
        "training %s (%s non-embedding parameters) on %s for %d steps of %d tokens, from step %d",
        model_config, f"{model_config.non_embedding_params:,}", device, steps, training.batch_tokens, step,
    )
    model.train()
    last_time, last_tokens = time.perf_counter(), step * training.batch_tokens
    progress = tqdm(total=steps, initial=step, desc="steps", unit="step", mininterval=10)
    while step < steps:
        lr = learning_rate(step, steps, training)
        for group_ in optimizer.param_groups:
            group_["lr"] = lr
        batch = torch.from_numpy(sampler.batch(step)).to(device)  # (B, T+1)
        loss = torch.zeros((), device=device)
        for micro in batch.split(micro_batch):
            with autocast(device):
                micro_loss = forward(micro[:, :-1], micro[:, 1:]).loss
            (micro_loss * len(micro) / batch_size).backward()
            loss += micro_loss.detach() * len(micro) / batch_size
        train_loss = float(loss)
        if not math.isfinite(train_loss):
            optimizer.zero_grad(set_to_none=True)
            kept = f"the last good checkpoint ({checkpoints.path}) is kept" if checkpoints.path.exists() else "no checkpoint was written yet"
            raise FloatingPointError(
                f"training loss is {train_loss} at step {step}: training stopped and {kept}. "
                f"Lower `training.lr`, raise `training.warmup_fraction`, or check the token store."
            )
        torch.nn.utils.clip_grad_norm_(model.parameters(), training.grad_clip)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        step += 1
        progress.update(1)

        last = step == steps
        val_loss = float("nan")
        if step % training.eval_every == 0 or last:
            val_loss = mean_loss(forward, val_windows, micro_batch, device)
        now = time.perf_counter()
        tokens = step * training.batch_tokens
        rows.append(
            {"step": step, "tokens": tokens, "train_loss": train_loss, "val_loss": val_loss, "lr": lr,
             "tokens_per_s": (tokens - last_tokens) / max(now - last_time, 1e-9)}
        )
        last_time, last_tokens = now, tokens
        if not math.isnan(val_loss):
            log.info("step %d: train loss %.4f, val loss %.4f", step, train_loss, val_loss)
        if stop.requested:
            save_checkpoint()
            raise Stopped()
        if step % training.checkpoint_every == 0 and not last:
            save_checkpoint()
    progress.close()

    final_windows = heldout_windows(open_split(store, "val"), evaluation_tokens, context)
    summary = {
        "val_loss": mean_loss(model, final_windows, micro_batch, device),
        "val_tokens": int(final_windows[:, 1:].size),
        "train_loss": rows[-1]["train_loss"] if rows else float("nan"),
        "steps": steps,
        "tokens": steps * training.batch_tokens,
        "width": model_config.width,
        "n_layers": model_config.n_layers,
        "non_embedding_params": model_config.non_embedding_params,
    }
    log.info("final val loss %.4f on %d tokens", summary["val_loss"], summary["val_tokens"])
    _write_outputs(model, model_config, settings, rows, summary, outputs)
    shutil.rmtree(checkpoints.folder, ignore_errors=True)  # the outputs supersede it
    return summary


def run_train_model(
    tokens: str | Path,
    outputs: Mapping[str, str | Path],
    *,
    models: ModelSettings,
    width: int,
    training: TrainingSettings,
    run_seed: int,
    model_seed: int,
    evaluation_tokens: int,
    checkpoints: str | Path,
) -> dict[str, Any]:
    """Rule train_model: the model of `width` (and seed `model_seed`) of the family `models`, its
    vocabulary that of the token store."""
    vocab_size = token_attrs(tokens)["vocab_size"]
    architecture = GPTConfig(vocab_size=vocab_size, context=models.context, width=width, n_layers=models.n_layers,
                             head_size=models.head_size)
    return train_model(architecture, training, tokens, outputs, run_seed=run_seed, model_seed=model_seed,
                       evaluation_tokens=evaluation_tokens, checkpoint_root=checkpoints)


def _optimizer(model: GPT, training: TrainingSettings, device: torch.device) -> torch.optim.AdamW:
    # weight decay on matrices and embeddings only, not on biases and LayerNorm gains
    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    return torch.optim.AdamW(
        [{"params": decay, "weight_decay": training.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=training.lr,
        betas=tuple(training.betas),
        fused=device.type == "cuda",
    )


def _rng_state() -> dict[str, Any]:
    state = {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: Mapping[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _write_outputs(
    model: GPT,
    model_config: GPTConfig,
    settings: Mapping[str, Any],
    rows: list[dict[str, float]],
    summary: Mapping[str, Any],
    outputs: Mapping[str, str | Path],
) -> None:
    """Each output under a temporary name, then renamed: a half-written file never appears."""
    config = settings | {
        "n_heads": model_config.n_heads,
        "non_embedding_params": model_config.non_embedding_params,
    }
    save_model(model, outputs["weights"], outputs["config"], config)
    write_csv(outputs["metrics"], rows, METRICS)
    write_json(outputs["final"], summary)
