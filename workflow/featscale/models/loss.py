"""Next-token loss on held-out windows, with or without interventions at activation sites."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import torch

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
