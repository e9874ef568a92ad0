"""Training a model: the loss falls, and interruptions, stale checkpoints and NaNs are survived."""

from __future__ import annotations

import json
import math
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from featscale.config import TrainingSettings
from featscale.execution.checkpoints import Checkpoints
from featscale.models.gpt import GPTConfig
from featscale.models.train import learning_rate, train_model

TRAINING = {
    "tokens": 512 * 30, "batch_tokens": 512, "micro_batch": 8, "lr": 3e-3, "min_lr_ratio": 0.1,
    "warmup_fraction": 0.1, "weight_decay": 0.1, "betas": [0.9, 0.95], "grad_clip": 1.0,
    "eval_every": 10, "eval_tokens": 330, "checkpoint_every": 5, "compile": False, "device": "cpu",
}
ARCH = {"vocab_size": 512, "context": 32, "width": 32, "n_layers": 2, "head_size": 8}

RUNNER = """
import json, sys, logging, torch
logging.basicConfig(level=logging.INFO)
torch.set_num_threads(1)
from featscale.config import TrainingSettings
from featscale.models.gpt import GPTConfig
from featscale.models.train import train_model
args = json.loads(sys.argv[1])
train_model(GPTConfig(**args["arch"]), TrainingSettings.from_dict(args["training"]), args["store"], args["outputs"],
            run_seed=0, model_seed=0, evaluation_tokens=660, checkpoint_root=args["checkpoints"])
"""


def outputs(folder: Path) -> dict[str, Path]:
    return {key: folder / name for key, name in
            (("weights", "model.safetensors"), ("config", "config.json"), ("metrics", "metrics.csv"), ("final", "final.json"))}


def start(store: Path, folder: Path, training=TRAINING) -> subprocess.Popen:
    args = {"arch": ARCH, "training": training, "store": str(store), "outputs": {k: str(v) for k, v in outputs(folder).items()},
            "checkpoints": str(folder / "checkpoints")}
    return subprocess.Popen([sys.executable, "-c", RUNNER, json.dumps(args)], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)


def finish(process: subprocess.Popen) -> tuple[int, str]:
    out, _ = process.communicate(timeout=300)
    return process.returncode, out


def wait_for_checkpoint(folder: Path, process: subprocess.Popen) -> None:
    deadline = time.time() + 120
    while not list((folder / "checkpoints").glob("*/checkpoint.pt")):
        assert process.poll() is None, "training ended before its first checkpoint"
        assert time.time() < deadline
        time.sleep(0.05)


@pytest.fixture(scope="module")
def uninterrupted(tiny_store, tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("uninterrupted")
    code, out = finish(start(tiny_store, folder))
    assert code == 0, out
    return folder


def assert_same_result(folder: Path, reference: Path) -> None:
    final, expected = (json.loads((f / "final.json").read_text()) for f in (folder, reference))
    assert final["val_loss"] == expected["val_loss"]  # the same to the last bit on CPU
    weights, expected_weights = load_file(str(folder / "model.safetensors")), load_file(str(reference / "model.safetensors"))
    for name, tensor in expected_weights.items():
        assert torch.equal(weights[name], tensor), name


def test_learning_rate_warms_up_then_decays_to_the_floor():
    lrs = [learning_rate(step, 100, TrainingSettings.from_dict(TRAINING)) for step in range(100)]
    assert lrs[0] == pytest.approx(3e-3 / 10) and lrs[9] == pytest.approx(3e-3)
    assert all(a >= b for a, b in zip(lrs[9:], lrs[10:]))
    assert lrs[-1] == pytest.approx(3e-4)


def test_the_loss_falls_and_every_output_is_written(uninterrupted):
    final = json.loads((uninterrupted / "final.json").read_text())
    assert final["val_loss"] < math.log(512) - 0.5  # well below a uniform guess
    assert final["non_embedding_params"] == 12 * 2 * 32**2 and final["tokens"] == 512 * 30
    lines = (uninterrupted / "metrics.csv").read_text().splitlines()
    assert lines[0] == "step,tokens,train_loss,val_loss,lr,tokens_per_s" and len(lines) == 31
    config = json.loads((uninterrupted / "config.json").read_text())
    assert GPTConfig.from_dict(config["model"]) == GPTConfig(**ARCH)
    assert not list((uninterrupted / "checkpoints").glob("*/checkpoint.pt"))  # removed once done


def test_a_killed_job_rerun_ends_where_an_uninterrupted_one_ends(tiny_store, uninterrupted, tmp_path):
    process = start(tiny_store, tmp_path)
    wait_for_checkpoint(tmp_path, process)
    process.kill()  # SIGKILL: no chance to checkpoint; the periodic one must do
    process.wait()
    assert not (tmp_path / "final.json").exists()
    code, out = finish(start(tiny_store, tmp_path))
    assert code == 0, out
    assert "resuming from checkpoint" in out
    assert_same_result(tmp_path, uninterrupted)


def test_sigterm_writes_a_checkpoint_and_the_retry_resumes_from_it(tiny_store, uninterrupted, tmp_path):
    slow = TRAINING | {"checkpoint_every": 1000}  # no periodic checkpoint: only SIGTERM's
    process = start(tiny_store, tmp_path, slow)
    for line in process.stdout:  # into the training loop: the validation loss of step 10
        if "step 10:" in line:
            break
    process.send_signal(signal.SIGTERM)
    code, out = finish(process)
    assert code == 128 + signal.SIGTERM, out
    assert "SIGTERM received" in out
    (saved,) = list((tmp_path / "checkpoints").glob("*/checkpoint.pt"))
    assert 10 <= torch.load(saved, weights_only=False)["state"]["step"] < 30
    assert not (tmp_path / "final.json").exists()
    code, out = finish(start(tiny_store, tmp_path, slow))
    assert code == 0 and "resuming from checkpoint" in out, out
    assert_same_result(tmp_path, uninterrupted)


def _checkpoint_of(store: Path, folder: Path, training=TRAINING) -> Checkpoints:
    import zarr

    attrs = zarr.open_group(str(store), mode="r").attrs
    settings = {"model": ARCH, "training": training, "run_seed": 0, "model_seed": 0,
                "tokens": {key: attrs[key] for key in ("tokenizer_sha256", "tokens", "seed")}}
    return Checkpoints(folder / "checkpoints", settings)


def test_corrupt_and_stale_checkpoints_are_never_loaded(tiny_store, uninterrupted, tmp_path, caplog):
    checkpoints = _checkpoint_of(tiny_store, tmp_path)
    checkpoints.save({"step": 3})
    # a truncated file (a job killed mid-write on a filesystem without atomic rename)
    checkpoints.path.write_bytes(checkpoints.path.read_bytes()[:100])
    assert checkpoints.load() is None
    assert "truncated or corrupt" in caplog.text
    # a checkpoint whose recorded settings are not this job's, at this job's path
    other = _checkpoint_of(tiny_store, tmp_path, TRAINING | {"lr": 1.0})
    other.folder = checkpoints.folder
    other.path, other.digest_path = checkpoints.path, checkpoints.digest_path
    other.save({"step": 25, "model": {}, "optimizer": {}, "metrics": [], "rng": {}})
    assert checkpoints.load() is None
    assert "records other settings" in caplog.text
    code, out = finish(start(tiny_store, tmp_path))
    assert code == 0, out
    assert "records other settings" in out and "resuming" not in out
    assert_same_result(tmp_path, uninterrupted)


def test_an_edited_config_starts_afresh_instead_of_resuming(tiny_store, tmp_path):
    assert _checkpoint_of(tiny_store, tmp_path).folder != _checkpoint_of(tiny_store, tmp_path, TRAINING | {"lr": 1e-3}).folder


def test_a_nan_loss_stops_training_with_a_clear_message_and_keeps_the_checkpoint(tiny_store, tmp_path, monkeypatch):
    from featscale.models import gpt as model_module

    real_forward = model_module.GPT.forward
    calls = {"n": 0}

    def poisoned(self, idx, targets=None, **kwargs):
        out = real_forward(self, idx, targets, **kwargs)
        if self.training and targets is not None:
            calls["n"] += 1
            if calls["n"] > 7 * 2:  # step 8 (2 micro-batches a step)
                return out._replace(loss=out.loss * float("nan"))
        return out

    monkeypatch.setattr(model_module.GPT, "forward", poisoned)
    with pytest.raises(FloatingPointError, match=r"training loss is nan at step 7.*last good checkpoint"):
        train_model(GPTConfig(**ARCH), TrainingSettings.from_dict(TRAINING), tiny_store, outputs(tmp_path), run_seed=0,
                    model_seed=0, evaluation_tokens=660, checkpoint_root=tmp_path / "checkpoints")
    assert _checkpoint_of(tiny_store, tmp_path).load()["step"] == 5
    assert not (tmp_path / "final.json").exists()
