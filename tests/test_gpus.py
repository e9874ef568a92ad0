"""GPU slots and per-job GPUs on one machine: as many GPU jobs at once as visible GPUs (at least
one), each on a GPU of its own; under SLURM, the GPU that SLURM gave the job."""

from __future__ import annotations

import os
import re
import select
import subprocess
import sys

import pytest

from conftest import CONFIGS, snakemake
from featscale.execution import gpus as gpus
from featscale.execution.devices import pick_device
from featscale.execution.gpus import claim_gpu, gpu_slots, visible_gpus


@pytest.mark.parametrize("value, expected", [
    ("0,1", ["0", "1"]),
    ("2, 3", ["2", "3"]),
    ("GPU-8f6c1a2b,1", ["GPU-8f6c1a2b", "1"]),
    ("", []),
    ("-1", []),
    ("0,-1,2", ["0"]),  # CUDA ignores everything from the first invalid entry on
])
def test_visible_gpus_are_read_as_cuda_reads_cuda_visible_devices(value, expected):
    assert visible_gpus({"CUDA_VISIBLE_DEVICES": value}) == expected


def test_there_is_one_gpu_slot_per_visible_gpu_and_at_least_one():
    assert gpu_slots({"CUDA_VISIBLE_DEVICES": "0,1,2"}) == 3
    assert gpu_slots({"CUDA_VISIBLE_DEVICES": ""}) == 1  # a CPU-only machine still runs the GPU rules


HOLDER = """
import os, sys
from featscale.execution.gpus import claim_gpu
claim = claim_gpu(poll_seconds=0.05)
print(claim.gpu, os.environ["CUDA_VISIBLE_DEVICES"], flush=True)
sys.stdin.read()  # hold the GPU until the test closes stdin
"""


def _holder(env: dict[str, str]) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", HOLDER], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env)


def _answer(process: subprocess.Popen, timeout: float) -> str | None:
    ready, _, _ = select.select([process.stdout], [], [], timeout)
    return process.stdout.readline().strip() if ready else None


def test_concurrent_jobs_each_claim_a_gpu_of_their_own_and_wait_when_all_are_taken(tmp_path):
    env = {key: value for key, value in os.environ.items() if not key.startswith("SLURM_")}
    env |= {"CUDA_VISIBLE_DEVICES": "0,1", gpus.LOCKS_ENV: str(tmp_path)}
    first, second = _holder(env), _holder(env)
    third = None
    try:
        answers = {_answer(first, 120), _answer(second, 120)}
        assert answers == {"0 0", "1 1"}  # each sees only its own GPU
        third = _holder(env)  # started only now: it cannot win the race for a GPU
        assert _answer(third, 5.0) is None  # both GPUs taken: it waits
        first.stdin.close()
        first.wait(timeout=30)  # exiting releases its GPU, whichever it was
        assert _answer(third, 30) in answers
    finally:
        for process in (first, second, third):
            if process is not None:
                process.kill()
                process.wait()


def test_under_slurm_a_job_keeps_its_one_gpu_and_shares_several_only_among_its_own_processes(tmp_path, monkeypatch):
    monkeypatch.setattr(gpus, "_claimed", None)
    environ = {"CUDA_VISIBLE_DEVICES": "3", "SLURM_JOB_ID": "42", gpus.LOCKS_ENV: str(tmp_path)}
    assert claim_gpu(environ) == gpus.GpuClaim("3", 0, None)
    assert environ["CUDA_VISIBLE_DEVICES"] == "3" and not list(tmp_path.iterdir())  # no lock needed

    monkeypatch.setattr(gpus, "_claimed", None)
    environ = {"CUDA_VISIBLE_DEVICES": "0,1", "SLURM_JOB_ID": "43", gpus.LOCKS_ENV: str(tmp_path)}
    claim = claim_gpu(environ)
    assert claim.gpu == "0" and claim.lock == tmp_path / "slurm-43" / "gpu-0.lock"
    assert claim_gpu(environ) is claim  # one claim per process


def test_without_cuda_pick_device_runs_on_the_cpu_even_with_a_gpu_claimed(tmp_path, monkeypatch):
    monkeypatch.setattr(gpus, "_claimed", None)
    monkeypatch.delenv("SLURM_JOB_ID", raising=False)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0")
    monkeypatch.setenv(gpus.LOCKS_ENV, str(tmp_path))
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    assert pick_device("auto").type == "cpu"
    assert pick_device("cpu").type == "cpu"


@pytest.mark.parametrize("visible, extra, slots", [
    ("0,1", (), 2),                     # a two-GPU workstation
    ("", (), 1),                        # no GPU: one slot, so the GPU rules still run
    ("0,1", ("--resources", "gpu=3"), 3),  # the user's choice wins
])
def test_a_local_run_gets_one_gpu_slot_per_visible_gpu(visible, extra, slots, tmp_path, monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", visible)
    done = snakemake("results/tiny/data/tokenizer.json", "--cores", "2", *extra, "--configfile", str(CONFIGS["tiny"]),
                     cwd=tmp_path)
    assert re.search(rf'Provided resources: gpu=(Resource\("gpu", )?{slots}\b', done.stdout + done.stderr)
