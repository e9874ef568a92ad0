"""The sparse autoencoders of featscale.saes: training, TopK/AuxK, Gated, scaling, save/load, SAELens."""

from __future__ import annotations

import dataclasses
import json
import math

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file

from featscale.saes.base import (
    DeadLatentTracker,
    SAEConfig,
    SparseAutoencoder,
    fraction_of_variance_unexplained,
    geometric_median,
    make_sae,
)
from featscale.saes.gated import GatedSAE
from featscale.saes.relu import ReluSAE
from featscale.saes.topk import TopKSAE

D_IN, N_LATENTS, K = 16, 64, 3
EXTRA = {"gated": {"l1_coefficient": 0.05}, "relu": {"l1_coefficient": 0.05}, "topk": {"k": K}}
ARCHS = list(EXTRA)
HOOK = {"model": "width128", "layer": 6, "site": "resid_pre"}


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    # tiny matmuls: thread start-up and contention with other jobs cost more than they save
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def config(arch: str, **overrides) -> SAEConfig:
    return SAEConfig(arch, D_IN, N_LATENTS, hook=dict(HOOK), **{**EXTRA[arch], **overrides})


@pytest.fixture(scope="module")
def data() -> torch.Tensor:
    """Sparse codes (3 of 32 true features per token) through a random unit-norm dictionary, off-centre."""
    g = torch.Generator().manual_seed(0)
    n, n_true, active = 2048, 32, 3
    dictionary = torch.randn(n_true, D_IN, generator=g)
    dictionary /= dictionary.norm(dim=1, keepdim=True)
    which = torch.rand(n, n_true, generator=g).argsort(dim=1)[:, :active]
    codes = torch.zeros(n, n_true).scatter(1, which, 0.5 + torch.rand(n, active, generator=g))
    return codes @ dictionary * 5.0 + 2.0  # (n, D_IN), mean norm far from sqrt(D_IN)


def randomised(sae: SparseAutoencoder, seed: int = 0) -> SparseAutoencoder:
    """Perturb every parameter, biases included, so no check passes because something is 0."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in sae.parameters():
            p.add_(0.2 * torch.randn(p.shape, generator=g))
    return sae


def train(sae: SparseAutoencoder, x: torch.Tensor, dead_mask: torch.Tensor | None = None) -> None:
    """200 Adam steps on batches of 256 tokens."""
    opt = torch.optim.Adam(sae.parameters(), lr=1e-2)
    g = torch.Generator().manual_seed(1)
    unit_decoder = isinstance(sae, TopKSAE)  # Gao et al.'s recipe
    for _ in range(200):
        batch = x[torch.randint(0, len(x), (256,), generator=g)]
        out = sae(batch, dead_mask=dead_mask)
        opt.zero_grad()
        out.loss.backward()
        if unit_decoder:
            sae.remove_parallel_gradient()
        opt.step()
        if unit_decoder:
            sae.normalize_decoder()


# --- training ---------------------------------------------------------------------------


@pytest.mark.parametrize("arch", ARCHS)
def test_training_reduces_unexplained_variance(arch, data):
    torch.manual_seed(0)
    sae = make_sae(config(arch, input_scale=SparseAutoencoder.input_scale_for(data)))
    sae.init_from_data(data, "geometric_median")
    with torch.no_grad():
        before = fraction_of_variance_unexplained(data, sae(data).reconstruction).item()
    train(sae, data)
    with torch.no_grad():
        out = sae(data)
    after = fraction_of_variance_unexplained(data, out.reconstruction).item()
    assert after < 0.2 and after < before / 3, (before, after)
    assert (out.latents >= 0).all()
    # the reported MSE is in scaled units: the original-unit error times s²
    s = sae.input_scale
    expected_mse = ((out.reconstruction - data) * s).pow(2).sum(dim=1).mean()
    assert torch.allclose(out.mse, expected_mse, rtol=1e-4)
    assert torch.allclose(out.loss, out.mse + out.sparsity_loss + out.aux_loss)


# --- TopK and AuxK ----------------------------------------------------------------------


def test_topk_keeps_k_latents_and_decodes_through_their_rows(data):
    torch.manual_seed(0)
    sae = randomised(make_sae(config("topk", input_scale=0.3)))
    with torch.no_grad():
        sae.b_enc.fill_(10.0)  # every pre-activation positive: ReLU cannot silence a chosen latent
        latents = sae.encode(data)
        values, indices = sae.encode_sparse(data)
        pre = (data * 0.3 - sae.b_dec) @ sae.W_enc + sae.b_enc
    assert ((latents > 0).sum(dim=1) == K).all()
    assert values.shape == indices.shape == (len(data), K)
    # the kept latents are the k largest pre-activations
    kth_largest = pre.topk(K, dim=1).values[:, -1:]
    assert (pre.gather(1, indices) >= kth_largest).all()
    assert torch.equal(latents.gather(1, indices), values)
    torch.testing.assert_close(sae.decode_sparse(values, indices), sae.decode(latents), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(sae(data).reconstruction, sae.decode(latents), rtol=1e-5, atol=1e-5)


def test_topk_never_keeps_more_than_k_with_negative_pre_activations(data):
    sae = randomised(make_sae(config("topk")))
    with torch.no_grad():
        sae.b_enc.fill_(-3.0)
        active = (sae.encode(data) > 0).sum(dim=1)
    assert (active <= K).all() and (active < K).any()


@pytest.mark.parametrize(("aux_coefficient", "revived"), [(1 / 32, True), (0.0, False)])
def test_auxk_revives_dead_latents(aux_coefficient, revived, data):
    torch.manual_seed(0)
    scale = SparseAutoencoder.input_scale_for(data)
    sae = make_sae(config("topk", input_scale=scale, aux_coefficient=aux_coefficient))
    sae.init_from_data(data, "geometric_median")
    dead = torch.zeros(N_LATENTS, dtype=torch.bool)
    dead[:16] = True
    with torch.no_grad():
        sae.W_enc[:, dead] *= 0.01  # pre-activations near 0: they never reach the top k
        assert not (sae.encode(data)[:, dead] > 0).any()
    train(sae, data, dead_mask=dead)
    with torch.no_grad():
        fired = (sae.encode(data)[:, dead] > 0).any(dim=0)  # (16,)
    if revived:
        assert fired.sum() >= 12, f"only {int(fired.sum())} of 16 dead latents fire again"
    else:
        assert not fired.any()


def test_auxk_is_zero_without_dead_latents(data):
    sae = randomised(make_sae(config("topk")))
    none_dead = torch.zeros(N_LATENTS, dtype=torch.bool)
    assert sae(data[:64]).aux_loss == 0
    assert sae(data[:64], dead_mask=none_dead).aux_loss == 0
    some_dead = none_dead.clone()
    some_dead[:5] = True
    out = sae(data[:64], dead_mask=some_dead)
    assert out.aux_loss > 0
    out.aux_loss.backward()
    # AuxK trains only dead latents: live encoder columns and decoder rows get no gradient from it
    assert sae.W_enc.grad[:, ~some_dead].abs().max() == 0 and sae.W_enc.grad[:, some_dead].abs().max() > 0
    assert sae.W_dec.grad[~some_dead].abs().max() == 0


def test_dead_latent_tracker():
    tracker = DeadLatentTracker(n_latents=3, dead_after_tokens=10)
    codes = torch.tensor([[1.0, 0.0, 0.0], [0.0, 0.0, 0.0]])  # latent 0 fires, 1 and 2 do not
    for _ in range(5):
        tracker.update(codes)
    assert tracker.dead_mask.tolist() == [False, True, True]
    tracker.update(torch.tensor([[0.0, 0.0, 2.0]]))
    assert tracker.tokens_since_fired.tolist() == [1, 11, 0]
    restored = DeadLatentTracker(3, 1)
    restored.load_state_dict(tracker.state_dict())
    assert torch.equal(restored.dead_mask, tracker.dead_mask)


# --- Gated ------------------------------------------------------------------------------


def test_gated_paths_match_a_hand_computed_example():
    sae = make_sae(SAEConfig("gated", d_in=2, n_latents=3, l1_coefficient=0.5))
    with torch.no_grad():
        sae.W_enc.copy_(torch.tensor([[1.0, 0.0, 1.0], [0.0, 1.0, -1.0]]))
        sae.b_dec.copy_(torch.tensor([0.5, 0.0]))
        sae.b_gate.copy_(torch.tensor([0.0, -1.5, 0.1]))
        sae.r_mag.copy_(torch.tensor([0.0, math.log(2.0), 0.0]))
        sae.b_mag.copy_(torch.tensor([0.2, 0.0, -1.0]))
        sae.W_dec.copy_(torch.tensor([[1.0, 0.0], [0.0, 2.0], [1.0, 1.0]]))
    x = torch.tensor([[1.5, 1.0], [0.25, 3.0]])
    # token 0: x - b_dec = (1, 1);      x W = (1, 1, 0)
    #   π_gate = (1, -0.5, 0.1)  -> gates open, closed, open
    #   π_mag  = (1·1 + 0.2, 1·2 + 0, 0·1 - 1) = (1.2, 2, -1) -> f = (1.2, 0, 0)
    # token 1: x - b_dec = (-0.25, 3);  x W = (-0.25, 3, -3.25)
    #   π_gate = (-0.25, 1.5, -3.15) -> closed, open, closed
    #   π_mag  = (-0.05, 6, -4.25) -> f = (0, 6, 0)
    expected = torch.tensor([[1.2, 0.0, 0.0], [0.0, 6.0, 0.0]])
    torch.testing.assert_close(sae.encode(x), expected)
    out = sae(x)
    torch.testing.assert_close(out.latents, expected)
    # x̂ = f W_dec + b_dec = (1.7, 0), (0.5, 12)
    torch.testing.assert_close(out.reconstruction, torch.tensor([[1.7, 0.0], [0.5, 12.0]]))
    torch.testing.assert_close(out.mse, torch.tensor((0.04 + 1.0 + 0.0625 + 81.0) / 2))
    # L1 on ReLU(π_gate) weighted by decoder norms (1, 2, √2): (1 + 0.1√2) and (1.5·2)
    torch.testing.assert_close(out.sparsity_loss, torch.tensor(0.5 * (1.0 + 0.1 * math.sqrt(2) + 3.0) / 2))
    # via the gate: ReLU(π_gate) W_dec + b_dec = (1.6, 0.1) and (0.5, 3)
    torch.testing.assert_close(out.aux_loss, torch.tensor((0.01 + 0.81 + 0.0625) / 2))


@pytest.mark.parametrize("aux_trains_decoder", [False, True])
def test_gated_hand_written_backward_equals_autograd_of_the_definition(data, aux_trains_decoder):
    # the fused training step must give the gradients autograd gives for the docstring's formulas
    torch.manual_seed(3)
    sae = randomised(make_sae(config("gated", gated_aux_trains_decoder=aux_trains_decoder))).double()
    with torch.no_grad():
        sae.r_mag.normal_(0, 0.3)
        sae.b_mag.normal_(0, 0.3)
        sae.W_dec.mul_(torch.rand(sae.W_dec.shape[0], 1, dtype=torch.float64) + 0.5)  # rows of unequal norm
    x = data[:96].double()
    out = sae(x)
    (out.mse + out.sparsity_loss + out.aux_loss).backward()
    fused = {name: p.grad.clone() for name, p in sae.named_parameters()}

    params = {name: p.detach().clone().requires_grad_() for name, p in sae.named_parameters()}
    W_enc, b_gate, r_mag, b_mag, W_dec, b_dec = (
        params[n] for n in ("W_enc", "b_enc", "r_mag", "b_mag", "W_dec", "b_dec")
    )
    xs = x * sae.input_scale
    centered = xs - b_dec
    pi_gate = centered @ W_enc + b_gate
    pi_mag = centered @ (W_enc * r_mag.exp()) + b_mag
    f = (pi_gate > 0).double() * F.relu(pi_mag)
    mse = (f @ W_dec + b_dec - xs).pow(2).sum(-1).mean()
    sparsity = sae.config.l1_coefficient * (F.relu(pi_gate) * W_dec.norm(dim=1)).sum(-1).mean()
    aux_W, aux_b = (W_dec, b_dec) if aux_trains_decoder else (W_dec.detach(), b_dec.detach())
    aux = (F.relu(pi_gate) @ aux_W + aux_b - xs).pow(2).sum(-1).mean()
    torch.testing.assert_close(out.latents, f, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(out.mse + out.sparsity_loss + out.aux_loss, mse + sparsity + aux)
    (mse + sparsity + aux).backward()
    for name, p in params.items():
        torch.testing.assert_close(fused[name], p.grad, rtol=1e-9, atol=1e-9, msg=lambda m, n=name: f"{n}: {m}")


def test_gated_auxiliary_loss_does_not_train_the_decoder(data):
    sae = randomised(make_sae(config("gated")))
    sae(data[:64]).aux_loss.backward()
    assert sae.W_dec.grad is None or sae.W_dec.grad.abs().max() == 0
    assert sae.b_dec.grad.abs().max() > 0  # through the encoder's centring, not the frozen decoder bias
    assert sae.W_enc.grad.abs().max() > 0 and sae.b_gate.grad.abs().max() > 0


# --- input scale, save and load -----------------------------------------------------------


@pytest.mark.parametrize("arch", ARCHS)
def test_input_scale_is_undone(arch, data):
    s = 2.5
    sae = randomised(make_sae(config(arch, input_scale=s)))
    unscaled = make_sae(dataclasses.replace(sae.config, input_scale=1.0))
    unscaled.load_state_dict(sae.state_dict())
    x = data[:128]
    with torch.no_grad():
        latents = sae.encode(x)
        torch.testing.assert_close(latents, unscaled.encode(s * x), rtol=1e-6, atol=1e-6)
        torch.testing.assert_close(sae.decode(latents), unscaled.decode(latents) / s, rtol=1e-6, atol=1e-6)
        torch.testing.assert_close(sae(x).reconstruction, sae.decode(latents), rtol=1e-6, atol=1e-6)


def test_input_scale_for_gives_expected_norm_sqrt_d_in(data):
    s = SparseAutoencoder.input_scale_for(data)
    assert (s * data).norm(dim=1).mean().item() == pytest.approx(math.sqrt(D_IN), rel=1e-5)


@pytest.mark.parametrize("scale", [1.0, 0.37])
@pytest.mark.parametrize("arch", ARCHS)
def test_save_load_round_trip(arch, scale, data, tmp_path):
    sae = randomised(make_sae(config(arch, input_scale=scale)))
    folder = sae.save(tmp_path / "sae")
    sae.save(folder)  # overwriting an existing SAE works and leaves no temporary folders
    assert sorted(p.name for p in tmp_path.iterdir()) == ["sae"]
    assert sorted(p.name for p in folder.iterdir()) == ["cfg.json", "sae_weights.safetensors"]
    loaded = SparseAutoencoder.load(folder)
    assert type(loaded) is type(sae) and loaded.config == sae.config
    x = data[:128]
    with torch.no_grad():
        pairs = [(loaded.encode(x), sae.encode(x)), (loaded(x).reconstruction, sae(x).reconstruction)]
    for got, want in pairs:
        if scale == 1.0:  # nothing folded: bit-identical
            assert torch.equal(got, want)
        else:  # the scale is folded on save and unfolded on load: float32 rounding, no more
            assert (got - want).abs().max() <= 1e-6 * want.abs().max()


@pytest.mark.parametrize("arch", ARCHS)
def test_saved_layout_is_saelens(arch, tmp_path):
    sae = randomised(make_sae(config(arch, input_scale=2.0)))
    folder = sae.save(tmp_path / "sae")
    cfg = json.loads((folder / "cfg.json").read_text())
    weights = load_file(str(folder / "sae_weights.safetensors"))
    biases = {"gated": {"b_gate", "b_mag", "r_mag"}}.get(arch, {"b_enc"})
    assert set(weights) == {"W_enc", "W_dec", "b_dec"} | biases
    assert cfg["architecture"] == {"gated": "gated", "relu": "standard", "topk": "topk"}[arch]
    assert (cfg["d_in"], cfg["d_sae"], cfg["normalize_activations"]) == (D_IN, N_LATENTS, "none")
    assert cfg["input_scale"] == 2.0 and cfg["featscale"]["input_scale"] == 2.0
    assert cfg["metadata"]["hook_name"] == "blocks.6.hook_resid_pre"
    # the scale is folded in: W_enc·s, W_dec/s, b_dec/s
    torch.testing.assert_close(weights["W_enc"], sae.W_enc.detach() * 2.0)
    torch.testing.assert_close(weights["W_dec"], sae.W_dec.detach() / 2.0)
    torch.testing.assert_close(weights["b_dec"], sae.b_dec.detach() / 2.0)
    if arch == "topk":
        assert cfg["k"] == K and cfg["rescale_acts_by_decoder_norm"] is False


@pytest.mark.parametrize("first_position", [0, 1])
def test_saelens_metadata_name_the_model_export_hook_context_positions_and_tokens(first_position, tmp_path):
    sae_lens = pytest.importorskip("sae_lens")
    provenance = {"model_path": "results/r/models/width128/hf", "context_size": 512,
                  "first_position": first_position, "dataset_path": "results/r/data/tokens.zarr"}
    folder = make_sae(config("gated", provenance=provenance)).save(tmp_path / "sae")
    metadata = sae_lens.SAE.load_from_disk(folder).cfg.metadata
    assert metadata.model_name == "results/r/models/width128/hf" and metadata.model_class_name == "HookedTransformer"
    assert metadata.hook_name == "blocks.6.hook_resid_pre" and metadata.hook_head_index is None
    assert metadata.context_size == 512 and metadata.prepend_bos is False
    assert list(metadata.seqpos_slice) == [first_position, None]  # slice(1, None): position 0 left out
    assert metadata.dataset_path == "results/r/data/tokens.zarr"
    assert SparseAutoencoder.load(folder).config.provenance == provenance  # read back by featscale too
    # without provenance (an SAE saved outside the workflow) the model is named as featscale names it
    bare = json.loads((make_sae(config("relu")).save(tmp_path / "bare") / "cfg.json").read_text())["metadata"]
    assert bare["model_name"] == "width128" and bare["context_size"] is None and bare["seqpos_slice"] is None


@pytest.mark.parametrize("arch", ARCHS)
def test_saelens_reproduces_codes_and_reconstructions(arch, data, tmp_path):
    sae_lens = pytest.importorskip("sae_lens")
    sae = randomised(make_sae(config(arch, input_scale=SparseAutoencoder.input_scale_for(data))), seed=3)
    theirs = sae_lens.SAE.load_from_disk(sae.save(tmp_path / "sae"))
    assert type(theirs).__name__ == {"gated": "GatedSAE", "relu": "StandardSAE", "topk": "TopKSAE"}[arch]
    x = data[:256]
    with torch.no_grad():
        ours_codes, their_codes = sae.encode(x), theirs.encode(x)
        assert (ours_codes > 0).any()
        torch.testing.assert_close(their_codes, ours_codes, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(theirs.decode(their_codes), sae.decode(ours_codes), rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(theirs(x), sae(x).reconstruction, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("cls", [GatedSAE, ReluSAE, TopKSAE])
def test_load_dispatches_and_checks_the_class(cls, tmp_path):
    arch = cls.architecture
    folder = make_sae(config(arch)).save(tmp_path / "sae")
    assert type(SparseAutoencoder.load(folder)) is cls
    assert type(cls.load(folder)) is cls
    other = next(c for c in (GatedSAE, ReluSAE, TopKSAE) if c is not cls)
    with pytest.raises(ValueError, match="SparseAutoencoder.load"):
        other.load(folder)


# --- decoder norms, bias init, FVU ----------------------------------------------------------


def test_initial_decoder_is_unit_norm_and_tied():
    sae = make_sae(config("relu"))
    torch.testing.assert_close(sae.decoder_norms(), torch.ones(N_LATENTS))
    assert torch.equal(sae.W_enc, sae.W_dec.T)


def test_decoder_norm_utilities(data):
    sae = randomised(make_sae(config("relu")))
    sae.normalize_decoder()
    torch.testing.assert_close(sae.decoder_norms(), torch.ones(N_LATENTS))
    sae(data[:64]).loss.backward()
    sae.remove_parallel_gradient()
    parallel = (sae.W_dec.grad * sae.W_dec.detach()).sum(dim=1)
    assert parallel.abs().max() < 1e-5 * sae.W_dec.grad.abs().max()


def test_geometric_median_resists_outliers():
    g = torch.Generator().manual_seed(0)
    centre = torch.tensor([3.0, -2.0, 1.0, 0.5])
    inliers = centre + 0.1 * torch.randn(900, 4, generator=g)
    outliers = centre + 100.0 + torch.randn(100, 4, generator=g)  # 10% far away
    sample = torch.cat([inliers, outliers])
    median, mean = geometric_median(sample), sample.mean(dim=0)
    assert (median - centre).norm() < 0.1
    assert (mean - centre).norm() > 10.0


@pytest.mark.parametrize("bias_init", ["zeros", "mean", "geometric_median"])
def test_init_from_data_sets_b_dec_in_scaled_units(bias_init, data):
    sae = make_sae(config("relu", input_scale=0.5))
    sae.init_from_data(data, bias_init)
    expected = {
        "zeros": torch.zeros(D_IN),
        "mean": 0.5 * data.mean(dim=0),
        "geometric_median": 0.5 * geometric_median(data),
    }[bias_init]
    torch.testing.assert_close(sae.b_dec.detach(), expected, rtol=1e-5, atol=1e-5)


def test_fraction_of_variance_unexplained(data):
    assert fraction_of_variance_unexplained(data, data).item() == 0
    mean = data.mean(dim=0).expand_as(data)
    assert fraction_of_variance_unexplained(data, mean).item() == pytest.approx(1.0, rel=1e-5)


# --- bad input ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"architecture": "jumprelu"}, "unknown SAE architecture"),
        ({"architecture": "topk", "k": None}, "k is not set"),
        ({"architecture": "topk", "k": N_LATENTS}, "k < n_latents"),
        ({"architecture": "topk", "k": 0}, "1 <= k"),
        ({"architecture": "topk", "k": K, "l1_coefficient": 1.0}, "remove l1_coefficient"),
        ({"architecture": "gated", "k": K}, "remove k or use 'topk'"),
        ({"architecture": "relu", "l1_coefficient": None}, "needs it"),
        ({"architecture": "relu", "l1_coefficient": -1.0}, ">= 0"),
        ({"architecture": "relu", "d_in": 0}, "d_in must be a positive integer"),
        ({"architecture": "relu", "input_scale": 0.0}, "input_scale_for"),
        ({"architecture": "topk", "k": K, "aux_k": N_LATENTS + 1}, "aux_k"),
    ],
)
def test_bad_configs_raise(overrides, message):
    arch = overrides["architecture"] if overrides["architecture"] in EXTRA else "relu"
    fields = {"d_in": D_IN, "n_latents": N_LATENTS, **EXTRA[arch], **overrides}
    with pytest.raises(ValueError, match=message):
        SAEConfig(**fields)


def test_unknown_config_keys_raise():
    data = config("relu").to_dict()
    assert SAEConfig.from_dict(data) == config("relu")
    with pytest.raises(ValueError, match="unknown SAEConfig keys"):
        SAEConfig.from_dict({**data, "l1_coeff": 1.0})


@pytest.mark.parametrize("arch", ARCHS)
def test_wrong_input_width_raises(arch):
    sae = make_sae(config(arch))
    with pytest.raises(ValueError, match=r"d_in = 16.*same model width"):
        sae(torch.randn(4, D_IN + 1))
    with pytest.raises(ValueError, match="reshape"):
        sae.encode(torch.randn(2, 4, D_IN))
    with pytest.raises(ValueError, match="dead_mask"):
        sae(torch.randn(4, D_IN), dead_mask=torch.zeros(N_LATENTS))


def test_variant_refuses_a_config_of_another_architecture():
    with pytest.raises(ValueError, match="make_sae"):
        TopKSAE(config("relu"))
    with pytest.raises(ValueError, match="bias_init"):
        make_sae(config("relu")).init_from_data(torch.randn(8, D_IN), "median")


# --- the authors' recipe ---------------------------------------------------------------------


def test_the_positive_uniform_decoder_init_puts_every_row_in_the_positive_orthant_at_its_norm():
    torch.manual_seed(0)
    sae = make_sae(config("gated", decoder_init="positive_uniform", decoder_init_norm=0.1))
    assert (sae.W_dec > 0).all() and torch.allclose(sae.decoder_norms(), torch.full((N_LATENTS,), 0.1))
    assert torch.equal(sae.W_enc, sae.W_dec.T)
    # two such rows are far from orthogonal (cosine near 0.75 for uniform entries), unlike Gaussian ones
    unit = sae.W_dec / sae.decoder_norms()[:, None]
    assert (unit @ unit.T).mean() > 0.6
    torch.manual_seed(0)
    default = make_sae(config("gated"))
    assert torch.allclose(default.decoder_norms(), torch.ones(N_LATENTS)) and (default.W_dec < 0).any()
    # TopK keeps unit rows whatever the init norm says
    assert torch.allclose(make_sae(config("topk", decoder_init_norm=0.1)).decoder_norms(), torch.ones(N_LATENTS))


def saelens_4_1_1_fold(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """SAELens 4.1.1's GatedSAE.fold_W_dec_norm applied to saved (original-unit) weights, as its code does it."""
    norms = tensors["W_dec"].norm(dim=-1)
    folded = dict(tensors)
    folded["W_dec"] = tensors["W_dec"] / norms[:, None]
    folded["W_enc"] = tensors["W_enc"] * norms
    for name in ("r_mag", "b_gate", "b_mag"):  # r_mag too: the step the exact fold leaves out
        folded[name] = tensors[name] * norms
    return folded


def saelens_gated_codes(tensors: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    """SAELens's gated encoder on original-unit inputs (apply_b_dec_to_input)."""
    sae_in = x - tensors["b_dec"]
    gate = (sae_in @ tensors["W_enc"] + tensors["b_gate"]) > 0
    magnitude = sae_in @ (tensors["W_enc"] * tensors["r_mag"].exp()) + tensors["b_mag"]
    return gate * F.relu(magnitude)


def test_the_saelens_4_1_1_codes_are_those_of_its_fold_and_differ_from_the_exact_fold(data, tmp_path):
    sae = randomised(make_sae(config("gated")))
    sae.config.input_scale = SparseAutoencoder.input_scale_for(data)
    with torch.no_grad():
        sae.W_dec.mul_(torch.linspace(0.5, 2.0, N_LATENTS)[:, None])  # decoder norms far from 1
    sae.save(tmp_path)
    saved = load_file(str(tmp_path / "sae_weights.safetensors"))
    x = data[:256]
    with torch.no_grad():
        ours = sae.encode_saelens_4_1_1(x)
        norms = saved["W_dec"].norm(dim=-1)
        torch.testing.assert_close(ours, saelens_gated_codes(saelens_4_1_1_fold(saved), x), rtol=1e-4, atol=1e-5)
        exact = sae.encode(x) * norms  # the exact fold: n · f, r_mag left alone
        assert not torch.allclose(ours, exact, rtol=1e-3, atol=1e-4)
