"""Which GPU a GPU job uses, when several jobs share one machine.

Snakemake runs at most `gpu` GPU jobs at once (common.smk sets it to the number of visible
GPUs), but does not tell a job which GPU to take, so each job claims one itself: it locks a
file per GPU, takes the first that no other process holds (waiting when all are taken), keeps
the lock until it exits (the kernel releases it however the process ends), and shows CUDA only
that GPU. The lock files live in one folder per machine (FEATSCALE_GPU_LOCKS, or the system's
temporary folder), so two Snakemake runs on one workstation do not share a GPU either.

Under SLURM the GPUs in CUDA_VISIBLE_DEVICES are the ones SLURM gave this job: a single one is
taken as it is; several (an allocation running a local Snakemake) are shared out among the
job's processes with locks of that job's own.
"""

from __future__ import annotations

import fcntl
import logging
import os
import re
import tempfile
import time
from collections.abc import Mapping, MutableMapping
from pathlib import Path
from typing import NamedTuple

log = logging.getLogger(__name__)

LOCKS_ENV = "FEATSCALE_GPU_LOCKS"


def visible_gpus(environ: Mapping[str, str] = os.environ) -> list[str]:
    """The GPUs this process may use, named as CUDA_VISIBLE_DEVICES names them (indices or UUIDs).

    Where CUDA_VISIBLE_DEVICES is set, its entries up to the first invalid one (CUDA ignores the
    rest; an empty value or -1 hides every GPU); otherwise one per NVIDIA device file
    (/dev/nvidia0, /dev/nvidia1, ...), as indices. Needs neither torch nor a CUDA driver.
    """
    value = environ.get("CUDA_VISIBLE_DEVICES")
    if value is None:
        devices = [p for p in Path("/dev").glob("nvidia*") if re.fullmatch(r"nvidia\d+", p.name)]
        return [str(index) for index in range(len(devices))]
    gpus = []
    for entry in value.split(","):
        entry = entry.strip()
        if not entry or entry.startswith("-"):
            break
        gpus.append(entry)
    return gpus


def gpu_slots(environ: Mapping[str, str] = os.environ) -> int:
    """How many GPU jobs may run at once: one per visible GPU, and at least one, so that a
    machine without a GPU still runs the GPU rules (on its CPU, one at a time)."""
    return max(1, len(visible_gpus(environ)))


def cuda_usable(environ: Mapping[str, str] = os.environ) -> tuple[bool, str]:
    """Whether a job started here could run on a GPU, and if not, why: a visible NVIDIA GPU, and the
    torch of this Python (where it has one) built with CUDA and seeing it. A job run in another
    environment (--sdm conda) has its own torch, which is not asked here."""
    if not visible_gpus(environ):
        hidden = "CUDA_VISIBLE_DEVICES hides every GPU" if "CUDA_VISIBLE_DEVICES" in environ else "no /dev/nvidia* device"
        return False, f"no NVIDIA GPU is visible: {hidden}"
    try:
        import torch
    except ImportError:
        return True, ""
    if not torch.cuda.is_available():
        return False, f"torch {torch.__version__} sees no CUDA device (a CPU-only build, or no driver)"
    return True, ""


class GpuClaim(NamedTuple):
    gpu: str
    """The GPU, as CUDA_VISIBLE_DEVICES named it before the claim."""
    position: int
    """Its CUDA device index among the GPUs visible before the claim."""
    lock: Path | None
    """The lock file held until this process exits (None: the GPU is this SLURM job's alone)."""


_claimed: GpuClaim | None = None  # at most one claim per process; its lock's descriptor stays open


def claim_gpu(environ: MutableMapping[str, str] = os.environ, narrow: bool = True, poll_seconds: float = 2.0) -> GpuClaim | None:
    """Claim one visible GPU for this process, waiting while all are taken; None if none is visible.

    With `narrow`, CUDA_VISIBLE_DEVICES is then set to that GPU alone, so it is CUDA device 0:
    this works only before CUDA starts in this process (it reads the variable once).
    Claiming again returns the first claim.
    """
    global _claimed
    if _claimed is not None:
        return _claimed
    gpus = visible_gpus(environ)
    if not gpus:
        return None
    job = environ.get("SLURM_JOB_ID")
    if job and len(gpus) == 1:
        claim = GpuClaim(gpus[0], 0, None)
    else:
        claim = _lock_one(gpus, _lock_folder(environ, job), poll_seconds)
    if narrow:
        environ["CUDA_VISIBLE_DEVICES"] = claim.gpu
    log.info("GPU %s of the visible %s is this job's%s", claim.gpu, ",".join(gpus),
             f" (lock {claim.lock})" if claim.lock else "")
    _claimed = claim
    return claim


def _lock_folder(environ: Mapping[str, str], slurm_job: str | None) -> Path:
    folder = Path(environ.get(LOCKS_ENV) or Path(tempfile.gettempdir()) / "featscale-gpu-locks")
    if slurm_job:  # the GPUs are this job's: its indices may name other GPUs in other jobs
        folder = folder / f"slurm-{slurm_job}"
    if not folder.exists():
        folder.mkdir(parents=True, exist_ok=True)
        try:
            folder.chmod(0o1777)  # every user's jobs lock here (sticky: nobody deletes another's)
        except PermissionError:
            pass
    return folder


def _lock_one(gpus: list[str], folder: Path, poll_seconds: float) -> GpuClaim:
    waiting = False
    while True:
        for position, gpu in enumerate(gpus):
            path = folder / f"gpu-{re.sub(r'[^A-Za-z0-9_.-]', '_', gpu)}.lock"
            # read-only is enough for flock, so a lock file another user made still works
            fd = os.open(path, os.O_RDONLY | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                continue
            return GpuClaim(gpu, position, path)  # fd stays open: the lock lasts as long as the process
        if not waiting:
            log.info("all %d visible GPUs are taken by other jobs (locks in %s): waiting", len(gpus), folder)
            waiting = True
        time.sleep(poll_seconds)
