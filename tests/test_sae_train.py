"""Training an SAE on a model's activations, resuming it, and scoring it when spliced in."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from featscale.config import Reading, SAESpec
from featscale.data.sampler import heldout_windows
from featscale.models.gpt import GPT, GPTConfig, save_model
from featscale.models.source import GPTSource
from featscale.saes.base import SparseAutoencoder
from featscale.saes.evaluate import evaluate_sae
from featscale.saes.train import ActivationBuffer, l1_coefficient, schedule

from conftest import settings_of

# The tiny config's own main spec (every key the schema knows, with its defaults) with this file's
# values: a key added to the schema cannot leave this spec behind.
SPEC = {
    **settings_of("tiny").saes["main"].to_dict(),
    "architecture": "gated", "n_latents": 64, "site": "resid_pre", "layer": 1, "l1_coefficient": 0.5, "k": None,
    "aux_k": None, "aux_coefficient": 1 / 32, "gated_aux_trains_decoder": False, "dead_after_tokens": 5000, "seed": 0, "tokens": 512 * 24,
    "batch_tokens": 512, "lr": 3e-3, "betas": [0.9, 0.999], "grad_clip": 1.0, "schedule": "authors", "lr_decay_fraction": 0.2,
    "lr_warmup_fraction": 0.05, "l1_warmup_fraction": 0.05, "bias_init": "geometric_median", "bias_init_tokens": 256,
    "buffer_sequences": 48, "harvest_batch": 16, "train_on_position_0": False, "checkpoint_every_buffers": 1,
    "log_every": 4, "decoder_init": "unit_normal", "decoder_init_norm": 1.0, "model_autocast": True,
    "fold_decoder_norm": "exact", "features": None, "encoder_rescale": None, "l1_reference_width": None,
    "lr_reference_width": None,
}
ARCH = {"vocab_size": 512, "context": 32, "width": 32, "n_layers": 2, "head_size": 8}

RUNNER = """
import json, sys, logging, torch
logging.basicConfig(level=logging.INFO)
torch.set_num_threads(1)
from featscale.config import SAESpec
from featscale.saes.train import train_sae
a = json.loads(sys.argv[1])
out = a["out"] + "/"
train_sae({"tokens": a["store"], "model_weights": a["weights"], "model_config": a["config"]},
          {"weights": out + "sae_weights.safetensors", "config": out + "cfg.json", "metrics": a["metrics"]},
          spec=SAESpec.from_dict(a["spec"]), model="w32", run_seed=0, checkpoints=a["checkpoints"],
          device="cpu")
"""


@pytest.fixture(scope="module")
def model_files(tmp_path_factory) -> tuple[Path, Path]:
    folder = tmp_path_factory.mktemp("model")
    torch.manual_seed(0)
    model = GPT(GPTConfig(**ARCH))
    save_model(model, folder / "model.safetensors", folder / "config.json", {"model": ARCH})
    return folder / "model.safetensors", folder / "config.json"


def start(model_files, store, folder: Path, spec=SPEC) -> subprocess.Popen:
    weights, config = model_files
    args = {"weights": str(weights), "config": str(config), "spec": spec, "store": str(store),
            "out": str(folder / "sae"), "metrics": str(folder / "sae" / "metrics.csv"), "checkpoints": str(folder / "ckpt")}
    return subprocess.Popen([sys.executable, "-c", RUNNER, json.dumps(args)], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)


def finish(process) -> tuple[int, str]:
    out, _ = process.communicate(timeout=300)
    return process.returncode, out


@pytest.fixture(scope="module")
def uninterrupted(model_files, tiny_store, tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("uninterrupted")
    code, out = finish(start(model_files, tiny_store, folder))
    assert code == 0, out
    return folder


def test_schedules_follow_their_definitions():
    lrs = [schedule(step, 100, SAESpec.from_dict(SPEC)) for step in range(100)]
    assert lrs[0] == (3e-3, pytest.approx(1 / 5)) and lrs[4][1] == 1.0  # penalty warm-up over 5%
    assert all(lr == 3e-3 for lr, _ in lrs[:80]) and lrs[90][0] == pytest.approx(3e-3 * 0.5)
    cosine = [schedule(step, 100, SAESpec.from_dict(SPEC | {"schedule": "cosine"}))[0] for step in range(100)]
    assert cosine[0] < cosine[4] and max(cosine) == pytest.approx(3e-3) and cosine[-1] < 1e-4


def test_one_l1_coefficient_for_every_width_or_one_scaled_with_the_square_root_of_the_width():
    spec = SAESpec.from_dict(SPEC)
    assert l1_coefficient(spec, 32) == l1_coefficient(spec, 128) == 0.5
    scaled = SAESpec.from_dict(SPEC | {"l1_reference_width": 128})
    assert l1_coefficient(scaled, 128) == 0.5 and l1_coefficient(scaled, 32) == pytest.approx(0.25)


def test_the_buffer_is_the_same_every_time_and_skips_position_0(model_files, tiny_store):
    import zarr

    from featscale.models.gpt import load_model

    model = load_model(*model_files)
    tokens = zarr.open_group(str(tiny_store), mode="r")["train"]
    buffer = ActivationBuffer(GPTSource(model), tokens, SAESpec.from_dict(SPEC), 0, torch.device("cpu"))
    first = buffer.fill(3)
    assert first.shape == (48 * 31, 32)
    assert torch.equal(first, ActivationBuffer(GPTSource(model), tokens, SAESpec.from_dict(SPEC), 0, torch.device("cpu")).fill(3))
    assert not torch.equal(first, buffer.fill(4))
    # position 0 (its activation is the same for a given first token) is left out
    with_0 = ActivationBuffer(GPTSource(model), tokens, SAESpec.from_dict(SPEC | {"train_on_position_0": True}), 0, torch.device("cpu"))
    assert with_0.tokens_per_buffer == 48 * 32


def test_training_improves_reconstruction_and_writes_a_saelens_folder(uninterrupted):
    rows = (uninterrupted / "sae" / "metrics.csv").read_text().splitlines()
    header = rows[0].split(",")
    fvu = [float(row.split(",")[header.index("fvu")]) for row in rows[1:]]
    assert fvu[-1] < 0.5 * fvu[0]
    saved = json.loads((uninterrupted / "sae" / "cfg.json").read_text())
    assert saved["architecture"] == "gated" and saved["d_in"] == 32 and saved["d_sae"] == 64
    sae = SparseAutoencoder.load(uninterrupted / "sae")
    assert sae.config.hook == {"model": "w32", "layer": 1, "site": "resid_pre"} and sae.input_scale != 1.0


def test_a_killed_sae_job_rerun_ends_where_an_uninterrupted_one_ends(model_files, tiny_store, uninterrupted, tmp_path):
    process = start(model_files, tiny_store, tmp_path)
    for line in process.stdout:
        if "step 12:" in line:  # past the checkpoints at the first buffer boundaries
            break
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert list((tmp_path / "ckpt").glob("*/checkpoint.pt")) and not (tmp_path / "sae" / "cfg.json").exists()
    code, out = finish(start(model_files, tiny_store, tmp_path))
    assert code == 0 and "resuming from checkpoint" in out, out
    ours, reference = (load_file(str(f / "sae" / "sae_weights.safetensors")) for f in (tmp_path, uninterrupted))
    for name, tensor in reference.items():
        assert torch.equal(ours[name], tensor), name


def test_sigterm_mid_buffer_checkpoints_and_the_retry_continues_the_same_stream(model_files, tiny_store, uninterrupted, tmp_path):
    spec = SPEC | {"checkpoint_every_buffers": 1000}  # only SIGTERM's checkpoint
    process = start(model_files, tiny_store, tmp_path, spec)
    for line in process.stdout:
        if "step 8:" in line:
            break
    process.send_signal(signal.SIGTERM)
    code, out = finish(process)
    assert code == 128 + signal.SIGTERM, out
    code, out = finish(start(model_files, tiny_store, tmp_path, spec))
    assert code == 0 and "resuming from checkpoint" in out, out
    ours, reference = (load_file(str(f / "sae" / "sae_weights.safetensors")) for f in (tmp_path, uninterrupted))
    for name, tensor in reference.items():
        assert torch.equal(ours[name], tensor), name


class _Oracle(torch.nn.Module):
    """A stand-in SAE whose reconstruction is perfect (or all zeros)."""

    def __init__(self, width: int, zero: bool):
        super().__init__()
        self.zero = zero
        self.config = type("C", (), {"n_latents": width})()

    def encode(self, x):
        return x.abs()

    def decode(self, latents):
        return torch.zeros_like(latents) if self.zero else self.kept

    def forward(self, x):
        raise NotImplementedError


class _Perfect(_Oracle):
    def encode(self, x):
        self.kept = x
        return x.abs()


def test_the_ce_loss_score_is_1_for_a_perfect_sae_and_0_for_zero_ablation(model_files, tiny_store):
    import zarr

    from featscale.models.gpt import load_model

    model = load_model(*model_files)
    windows = heldout_windows(zarr.open_group(str(tiny_store), mode="r")["val"], 33 * 8, 32)
    for site in ("resid_pre", "mlp_out", "resid_post"):
        perfect = evaluate_sae(GPTSource(model), _Perfect(32, zero=False), windows, Reading(1, site, 1, True), batch_size=4,
                               device=torch.device("cpu"))
        assert perfect["ce_loss_score"] == pytest.approx(1.0, abs=1e-6) and perfect["kl_sae"] == pytest.approx(0, abs=1e-6)
        # against mean ablation too; replacing the site by its mean is another baseline than zeros
        assert perfect["ce_loss_score_mean"] == pytest.approx(1.0, abs=1e-6)
        assert perfect["ce_mean"] != perfect["ce_zero"]
        assert perfect["fvu"] == pytest.approx(0.0, abs=1e-9)
        zero = evaluate_sae(GPTSource(model), _Oracle(32, zero=True), windows, Reading(1, site, 1, True), batch_size=4,
                            device=torch.device("cpu"))
        assert zero["ce_loss_score"] == pytest.approx(0.0, abs=1e-6) and zero["kl_score"] == pytest.approx(0.0, abs=1e-6)
        assert zero["ce_clean"] == perfect["ce_clean"] and zero["tokens"] == 8 * 31


def test_an_sae_whose_width_does_not_match_its_model_is_refused(model_files, tiny_store, uninterrupted):
    from featscale.models.gpt import load_model

    model = load_model(*model_files)
    sae = SparseAutoencoder.load(uninterrupted / "sae")
    wide = GPT(GPTConfig(**ARCH | {"width": 64}))
    windows = np.zeros((2, 33), dtype=np.int64)
    with pytest.raises(ValueError, match="d_in"):
        evaluate_sae(GPTSource(wide), sae, windows, Reading(1, "resid_pre", 1, True), batch_size=2, device=torch.device("cpu"))
    evaluate_sae(GPTSource(model), sae, windows, Reading(1, "resid_pre", 1, True), batch_size=2, device=torch.device("cpu"))
