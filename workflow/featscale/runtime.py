"""What every rule's script does first: send its output to the rule's log, use its threads."""

from __future__ import annotations

import csv
import json
import logging
import os
import shutil
import signal
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # torch is imported lazily: the data rules never load it
    import torch


def log_to(path: str | Path) -> None:
    """Send logging, progress bars (stderr) and prints (stdout) of this job to its log file."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    stream = open(path, "a", buffering=1)  # line-buffered: a killed job leaves its last lines
    sys.stdout = sys.stderr = stream
    logging.basicConfig(
        stream=stream,
        level=logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        force=True,
    )


def set_threads(threads: int) -> None:
    """Make the job use exactly the cores Snakemake gave it.

    The Rust thread pool of `tokenizers` reads RAYON_NUM_THREADS once, on first use, so
    this must run before any tokenization; torch is told only if it is already loaded.
    """
    os.environ["RAYON_NUM_THREADS"] = str(threads)
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(threads)


class StopRequested:
    """Notes SIGTERM (what SLURM sends before preempting or timing out a job) instead of dying,
    so a training loop can write a checkpoint at its next step and then exit."""

    def __init__(self) -> None:
        self.requested = False
        signal.signal(signal.SIGTERM, self._note)

    def _note(self, signum: int, frame: object) -> None:
        logging.getLogger(__name__).warning("SIGTERM received: checkpointing and stopping")
        self.requested = True


class Stopped(SystemExit):
    """Raised after the checkpoint that a SIGTERM asked for: the job ends as failed (143),
    so Snakemake or SLURM retries it, and the retry resumes."""

    def __init__(self) -> None:
        super().__init__(128 + signal.SIGTERM)


def pick_device(setting: str = "auto") -> "torch.device":
    """`auto`: a GPU of this job's own when CUDA has one, else the CPU; `cuda`: the same, but
    never the CPU; anything else (`cpu`, `cuda:1`) as given. On CUDA also allow TF32 matmuls.

    Concurrent GPU jobs on one machine each claim a different GPU (featscale.gpus); under SLURM
    the job keeps the GPU SLURM gave it.
    """
    import torch

    from featscale.gpus import claim_gpu

    if setting in ("auto", "cuda"):
        started = torch.cuda.is_initialized()  # then CUDA_VISIBLE_DEVICES can no longer narrow it
        claim = claim_gpu(narrow=not started)
        if claim is not None and torch.cuda.is_available():
            index = claim.position if started else 0
            torch.cuda.set_device(index)
            setting = f"cuda:{index}"
        elif setting == "auto":
            setting = "cpu"
    device = torch.device(setting)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    return device


def autocast(device: "torch.device"):
    """bf16 autocast on CUDA; full fp32 elsewhere (the same code path either way)."""
    import contextlib

    import torch

    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def write_atomically(path: str | Path, write: "Callable[[Path], None]") -> None:
    """`write(temporary path)`, then rename into `path`: a half-written output never appears."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    _remove(partial)  # left by a killed run
    try:
        write(partial)
        if path.is_dir():  # a folder (a zarr store) cannot be renamed over a non-empty one
            _remove(path)
        os.replace(partial, path)
    except BaseException:
        _remove(partial)
        raise


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()


def write_json(path: str | Path, data: object) -> None:
    write_atomically(path, lambda p: p.write_text(json.dumps(data, indent=2)))


def write_csv(path: str | Path, rows: "Iterable[Mapping[str, object]]", fields: "Sequence[str]") -> None:
    def write(p: Path) -> None:
        with open(p, "w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=fields)
            writer.writeheader()
            writer.writerows(rows)

    write_atomically(path, write)
