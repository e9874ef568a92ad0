"""The GPT of featscale.models.gpt and its export to Hugging Face's GPT-2."""

from __future__ import annotations

import json
import math

import pytest
import torch
import torch.nn.functional as F

from featscale.models.gpt import GPT, SITES, GPTConfig

SMALL = GPTConfig(vocab_size=300, context=32, width=64, n_layers=2, head_size=16)


@pytest.fixture(scope="module")
def model() -> GPT:
    torch.manual_seed(0)
    return GPT(SMALL).eval()


@pytest.fixture(scope="module")
def idx() -> torch.Tensor:
    return torch.randint(0, SMALL.vocab_size, (3, SMALL.context), generator=torch.Generator().manual_seed(1))


def capture(store: dict, key: str):
    """An identity intervention that records what it saw."""

    def fn(x: torch.Tensor) -> torch.Tensor:
        store[key] = x.detach().clone()
        return x

    return fn


# --- config ---------------------------------------------------------------------------


def test_heads_and_non_embedding_params():
    config = GPTConfig(vocab_size=50257, context=1024, width=768, n_layers=12, head_size=64)
    assert config.n_heads == 12
    assert config.non_embedding_params == 84_934_656  # GPT-2 small's ~85M
    # N counts exactly the weight matrices of the blocks (no biases, gains, embeddings)
    model = GPT(SMALL)
    matrices = sum(p.numel() for name, p in model.blocks.named_parameters() if p.ndim == 2)
    assert SMALL.non_embedding_params == matrices


def test_width_not_divisible_by_head_size_raises():
    with pytest.raises(ValueError, match="not divisible by head_size"):
        GPTConfig(vocab_size=10, context=8, width=100, n_layers=1, head_size=16)


def test_config_round_trips_through_json():
    assert GPTConfig.from_dict(json.loads(json.dumps(SMALL.to_dict()))) == SMALL
    with pytest.raises(ValueError, match="unknown GPTConfig keys"):
        GPTConfig.from_dict(SMALL.to_dict() | {"dropout": 0.1})


# --- forward ----------------------------------------------------------------------------


def test_shapes_and_loss(model, idx):
    out = model(idx)
    assert out.logits.shape == (3, SMALL.context, SMALL.vocab_size)
    assert out.loss is None
    targets = torch.randint(0, SMALL.vocab_size, idx.shape)
    out = model(idx, targets)
    assert out.loss.shape == ()
    expected = F.cross_entropy(out.logits.reshape(-1, SMALL.vocab_size), targets.reshape(-1))
    torch.testing.assert_close(out.loss, expected)
    # small init: the untrained model is close to uniform over the vocabulary
    assert abs(out.loss.item() - math.log(SMALL.vocab_size)) < 0.1
    # shorter sequences than the context are fine, longer ones are refused
    assert model(idx[:, :5]).logits.shape == (3, 5, SMALL.vocab_size)
    with pytest.raises(ValueError, match="longer than the context"):
        model(torch.zeros(1, SMALL.context + 1, dtype=torch.long))


def test_causal(model, idx):
    changed = idx.clone()
    changed[:, 20:] = (changed[:, 20:] + 1) % SMALL.vocab_size
    with torch.no_grad():
        before, after = model(idx).logits, model(changed).logits
    torch.testing.assert_close(before[:, :20], after[:, :20], rtol=0, atol=1e-6)
    assert not torch.allclose(before[:, 20:], after[:, 20:])


def test_tied_weights_and_parameter_count():
    model = GPT(SMALL)
    assert model.lm_head is model.wte.weight
    V, T, C, L = SMALL.vocab_size, SMALL.context, SMALL.width, SMALL.n_layers
    # no separate LM head matrix: embeddings + blocks (12C² + 13C each) + final LayerNorm
    assert sum(p.numel() for p in model.parameters()) == V * C + T * C + L * (12 * C**2 + 13 * C) + 2 * C


def test_gpt2_init():
    torch.manual_seed(0)
    config = GPTConfig(vocab_size=1000, context=64, width=256, n_layers=8, head_size=64)
    model = GPT(config)
    block = model.blocks[3]
    assert block.attn.qkv.weight.std().item() == pytest.approx(0.02, rel=0.02)
    assert model.wte.weight.std().item() == pytest.approx(0.02, rel=0.02)
    for proj in (block.attn.proj, block.mlp.proj):
        assert proj.weight.std().item() == pytest.approx(0.02 / math.sqrt(2 * config.n_layers), rel=0.03)
    assert all(not m.bias.any() for m in model.modules() if isinstance(m, torch.nn.Linear))


# --- activation sites -------------------------------------------------------------------


@pytest.mark.parametrize("site", SITES)
@pytest.mark.parametrize("layer", [0, 1])
def test_activations_equal_what_an_intervention_sees(model, idx, layer, site):
    seen: dict = {}
    with torch.no_grad():
        model(idx, interventions={(layer, site): capture(seen, "x")})
        act = model.activations(idx, layer, site)
    assert act.shape == (3, SMALL.context, SMALL.width)
    torch.testing.assert_close(act, seen["x"], rtol=0, atol=0)


def test_sites_relate_as_the_residual_stream_does(model, idx):
    with torch.no_grad():
        post0 = model.activations(idx, 0, "resid_post")
        torch.testing.assert_close(post0, model.activations(idx, 1, "resid_pre"), rtol=0, atol=0)
        # ablating the MLP removes exactly its output from the residual leaving the block
        seen: dict = {}
        model(idx, interventions={(0, "mlp_out"): torch.zeros_like, (0, "resid_post"): capture(seen, "post")})
        expected = post0 - model.activations(idx, 0, "mlp_out")
    torch.testing.assert_close(seen["post"], expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(("layer", "site", "blocks_run"), [(0, "resid_pre", []), (0, "mlp_out", [0]), (0, "resid_post", [0]), (1, "resid_pre", [0])])
def test_activations_run_only_the_blocks_needed(model, idx, layer, site, blocks_run):
    ran: list[int] = []
    handles = [b.register_forward_pre_hook(lambda _m, _a, i=i: ran.append(i)) for i, b in enumerate(model.blocks)]
    try:
        with torch.no_grad():
            model.activations(idx, layer, site)
    finally:
        for handle in handles:
            handle.remove()
    assert ran == blocks_run


def test_identity_intervention_changes_nothing_and_zero_ablation_does(model, idx):
    with torch.no_grad():
        clean = model(idx).logits
        identity = {(layer, site): (lambda x: x) for layer in range(SMALL.n_layers) for site in SITES}
        torch.testing.assert_close(model(idx, interventions=identity).logits, clean, rtol=0, atol=0)
        ablated = model(idx, interventions={(1, "mlp_out"): torch.zeros_like}).logits
    assert (ablated - clean).abs().max() > 1e-3


def test_interventions_carry_gradients(idx):
    """An SAE spliced in trains through the model's loss (the model itself frozen or not)."""
    torch.manual_seed(0)
    model = GPT(SMALL)
    scale = torch.ones((), requires_grad=True)
    loss = model(idx, idx, interventions={(1, "resid_pre"): lambda x: x * scale}).loss
    loss.backward()
    assert scale.grad is not None and scale.grad != 0


@pytest.mark.parametrize(("layer", "site"), [(2, "resid_pre"), (-1, "mlp_out"), (0, "attn_out"), ("0", "resid_pre")])
def test_bad_site_raises(model, idx, layer, site):
    with pytest.raises(ValueError, match=r"0\.\.1 and site one of resid_pre, mlp_out, resid_post"):
        model.activations(idx, layer, site)
    with pytest.raises(ValueError, match="no activation site"):
        model(idx, interventions={(layer, site): torch.zeros_like})


# --- training ---------------------------------------------------------------------------


def test_overfits_a_fixed_batch():
    torch.manual_seed(0)
    config = GPTConfig(vocab_size=64, context=16, width=32, n_layers=2, head_size=16)
    model = GPT(config)
    data = torch.randint(0, config.vocab_size, (4, config.context + 1))
    x, y = data[:, :-1], data[:, 1:]
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(30):
        loss = model(x, y).loss
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[0] == pytest.approx(math.log(config.vocab_size), abs=0.1)
    assert losses[-1] < 0.5 * losses[0]


# --- Hugging Face export ----------------------------------------------------------------


def small_tokenizer():
    """A byte-level BPE of SMALL's vocabulary, end-of-text id 0, as the workflow trains one."""
    from featscale.data.tokenizer import train_bpe

    return train_bpe(["the cat sat on the mat", "a dog ran in the park", "hello world"] * 20, SMALL.vocab_size)


@pytest.mark.parametrize("attn_implementation", ["sdpa", "eager"])
def test_hf_export_gives_the_same_logits(idx, tmp_path, attn_implementation):
    transformers = pytest.importorskip("transformers")
    from featscale.models.export import export_hf

    torch.manual_seed(0)
    model = GPT(SMALL).eval()
    with torch.no_grad():  # as after training: LayerNorm gains and biases away from 1 and 0,
        for p in model.parameters():  # activations large enough that GELU's form matters
            p.add_(0.1 * torch.randn_like(p))
    out = tmp_path / "hf"
    export_hf(model, out)
    export_hf(model, out, tokenizer=small_tokenizer())  # replaces the folder in place
    assert sorted(p.name for p in tmp_path.iterdir()) == ["hf"]  # no temporary folder left
    assert sorted(p.name for p in out.iterdir()) == ["config.json", "model.safetensors", "special_tokens_map.json",
                                                     "tokenizer.json", "tokenizer_config.json"]
    config = json.loads((out / "config.json").read_text())
    assert config["activation_function"] == "gelu" and config["eos_token_id"] == 0
    assert config["n_ctx"] == config["n_positions"] == SMALL.context  # TransformerLens reads n_ctx

    hf = transformers.GPT2LMHeadModel.from_pretrained(out, attn_implementation=attn_implementation).eval()
    assert hf.lm_head.weight.data_ptr() == hf.transformer.wte.weight.data_ptr()  # tied on load
    with torch.no_grad():
        ours, theirs = model(idx).logits, hf(idx).logits
    assert (ours - theirs).abs().max().item() < 1e-5


def test_hf_export_holds_the_runs_tokenizer_and_a_model_card(tmp_path):
    transformers = pytest.importorskip("transformers")
    from featscale.models.export import export_hf

    tokenizer = small_tokenizer()
    final = {"tokens": 12_288, "train_loss": 4.5, "val_loss": 4.75, "val_tokens": 1024}
    card = {"run": "unit", "corpus": {"source": "synthetic", "synthetic": {"documents": 60}}, "widths": [64, 32],
            "tokenizer_vocab": tokenizer.get_vocab_size(), "final": final}
    out = export_hf(GPT(SMALL), tmp_path / "hf", tokenizer=tokenizer, card=card)
    theirs = transformers.AutoTokenizer.from_pretrained(out)
    for text in ("hello world", "the cat ran in the park", " Ünïcode, bytes & spaces  "):
        assert theirs(text)["input_ids"] == tokenizer.encode(text).ids != []
        assert theirs.decode(theirs(text)["input_ids"]) == text
    assert theirs.eos_token == theirs.bos_token == "<|endoftext|>" and theirs.eos_token_id == 0
    assert theirs.model_max_length == SMALL.context
    readme = (out / "README.md").read_text()
    for fact in ("`unit`", "width 64", "32, 64", "`synthetic` corpus (documents: 60)", "12,288", "4.7500",
                 "1,024 held-out tokens", f"{SMALL.non_embedding_params:,}"):
        assert fact in readme, fact
