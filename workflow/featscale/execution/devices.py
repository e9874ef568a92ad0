"""The device a GPU rule runs on, and the precision it runs in: the same code path on CPU and CUDA."""

from __future__ import annotations

import contextlib
import os

import torch

from featscale.config import ConfigError
from featscale.execution.gpus import claim_gpu


def pick_device(setting: str = "auto") -> torch.device:
    """`auto`: a GPU of this job's own when CUDA has one, else the CPU; `cuda`: the same, but
    never the CPU; anything else (`cpu`, `cuda:1`) as given. On CUDA also allow TF32 matmuls.

    Concurrent GPU jobs on one machine each claim a different GPU (featscale.execution.gpus); under SLURM
    the job keeps the GPU SLURM gave it.
    """
    if setting in ("auto", "cuda"):
        started = torch.cuda.is_initialized()  # then CUDA_VISIBLE_DEVICES can no longer narrow it
        claim = claim_gpu(narrow=not started)
        if claim is not None and torch.cuda.is_available():
            index = claim.position if started else 0
            torch.cuda.set_device(index)
            setting = f"cuda:{index}"
        elif setting == "auto":
            setting = "cpu"
        else:
            raise ConfigError(
                "config key `training.device` = 'cuda' but this job sees no usable CUDA GPU "
                f"(torch {torch.__version__}, CUDA_VISIBLE_DEVICES={os.environ.get('CUDA_VISIBLE_DEVICES')!r}): "
                "give the job a GPU (the cluster's GPU resources), or set `training.device: auto` or `cpu`."
            )
    device = torch.device(setting)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    return device


def autocast(device: torch.device, enabled: bool = True):
    """bf16 autocast on CUDA (unless not `enabled`); full fp32 elsewhere (the same code path either way)."""
    if device.type == "cuda" and enabled:
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()
