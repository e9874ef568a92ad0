"""Next-token loss on held-out windows, with or without interventions at activation sites."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import torch
from torch import Tensor

from featscale.config import Reading
from featscale.execution.devices import autocast
from featscale.models.gpt import GPT, Intervention


@torch.no_grad()
def mean_loss(
    model: GPT,
    windows: np.ndarray,
    batch_size: int,
    device: torch.device,
    interventions: Mapping[tuple[int, str], Intervention] | None = None,
) -> float:
    """Mean cross-entropy of every next-token prediction in `windows` (N, T + 1)."""
    was_training = model.training
    model.eval()
    total, count = 0.0, 0
    for start in range(0, len(windows), batch_size):
        batch = torch.from_numpy(windows[start : start + batch_size]).to(device)
        with autocast(device):
            loss = model(batch[:, :-1], batch[:, 1:], interventions=interventions).loss
        n = batch[:, 1:].numel()
        total += float(loss) * n
        count += n
    model.train(was_training)
    return total / count


@torch.no_grad()
def mean_activation(model: GPT, windows: np.ndarray, reading: Reading, batch_size: int, device: torch.device) -> Tensor:
    """(d,) the mean activation at the reading's site over `windows` (N, T + 1), from its first
    position on: what mean ablation puts there."""
    total, count = None, 0
    for start in range(0, len(windows), batch_size):
        batch = torch.from_numpy(windows[start : start + batch_size, :-1]).to(device)
        with autocast(device, enabled=reading.autocast):
            acts = model.activations(batch, reading.layer, reading.site)[:, reading.first_position :]  # (B, T', d)
        acts = acts.double().flatten(0, 1)
        total = acts.sum(0) if total is None else total + acts.sum(0)
        count += len(acts)
    return (total / count).float()
