"""The outputs in the field's tools: docs/interop.md's recipes, run as written on the tiny run's
outputs, give featscale's token ids, logits, activations, codes and correlations."""

from __future__ import annotations

import os
import re
import warnings

import numpy as np
import pytest
import torch

from conftest import REPO, tiny

pytestmark = pytest.mark.slow  # the tiny run

DOC = REPO / "docs" / "interop.md"
# the recipes' choice of outputs (the demo's), and the same choice on the tiny run
CHOICE = 'run, model, sae_name, pair = "demo", "w64", "main", "w32__w64"'
TINY_CHOICE = 'run, model, sae_name, pair = "tiny", "w32", "main", "w16__w32"'


def recipes() -> list[str]:
    """The Python blocks of docs/interop.md, in order."""
    return re.findall(r"```python\n(.*?)```", DOC.read_text(), flags=re.DOTALL)


@pytest.fixture(scope="module")
def recipe(tiny_run) -> dict:
    """What every recipe of docs/interop.md defines, run one after the other in the tiny run's directory."""
    for module in ("transformers", "transformer_lens", "sae_lens", "xarray"):
        pytest.importorskip(module)
    blocks = recipes()
    assert blocks[0].count(CHOICE) == 1, "docs/interop.md's first recipe must choose the outputs in one line"
    namespace: dict = {}
    here = os.getcwd()
    os.chdir(tiny_run)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # TransformerLens 3 points at its bridge
            for block in [blocks[0].replace(CHOICE, TINY_CHOICE), *blocks[1:]]:
                exec(compile(block, str(DOC), "exec"), namespace)
    finally:
        os.chdir(here)
    return namespace


@pytest.fixture(scope="module")
def ours(tiny_run):
    """featscale's own model w32 and its SAE, as the workflow's rules load them."""
    from featscale.models.gpt import load_model
    from featscale.saes.base import SparseAutoencoder

    results = tiny_run / "results" / "tiny"
    model = load_model(results / "models" / "w32" / "model.safetensors", results / "models" / "w32" / "config.json")
    return model.eval(), SparseAutoencoder.load(results / "saes" / "w32" / "main").eval()


def test_the_tokenizer_in_the_export_gives_the_runs_token_ids(recipe, tiny_run):
    from tokenizers import Tokenizer
    from transformers import AutoTokenizer

    runs = Tokenizer.from_file(str(tiny_run / "results" / "tiny" / "data" / "tokenizer.json"))
    assert recipe["ids"][0].tolist() == runs.encode(recipe["text"]).ids != []
    exported = AutoTokenizer.from_pretrained(tiny_run / "results" / "tiny" / "models" / "w16" / "hf")
    for text in ("hello world", "Once upon a time, a small dog found a red ball.", "  spaces\tand\nnewlines "):
        assert exported(text)["input_ids"] == runs.encode(text).ids != []
        assert exported.decode(exported(text)["input_ids"]) == text
    assert exported.eos_token == "<|endoftext|>" and exported.eos_token_id == runs.token_to_id("<|endoftext|>")


def test_the_model_card_states_data_widths_tokens_and_loss(tiny_run):
    import json

    models = tiny_run / "results" / "tiny" / "models"
    final = json.loads((models / "w32" / "final.json").read_text())
    card = (models / "w32" / "hf" / "README.md").read_text()
    for fact in ("run `tiny`", "width 32", "16, 32", "`synthetic` corpus (documents: 600)", f"{final['tokens']:,}",
                 f"validation {final['val_loss']:.4f}"):
        assert fact in card, fact


def test_transformers_gives_featscales_logits(recipe, ours):
    model, _ = ours
    with torch.no_grad():
        expected = model(recipe["ids"]).logits
    assert (recipe["hf_logits"] - expected).abs().max() < 1e-5


def test_transformer_lens_gives_featscales_logits_and_activation_at_the_saes_layer(recipe, ours):
    model, sae = ours
    hook = sae.config.hook
    assert recipe["meta"].hook_name == f"blocks.{hook['layer']}.hook_{hook['site']}" == "blocks.1.hook_resid_pre"
    with torch.no_grad():
        logits = model(recipe["ids"]).logits
        activation = model.activations(recipe["ids"], hook["layer"], hook["site"])
    assert (recipe["tl_logits"] - logits).abs().max() < 1e-4
    torch.testing.assert_close(recipe["acts"], activation, rtol=1e-5, atol=1e-5)
    for site in ("resid_pre", "mlp_out", "resid_post"):  # every site's hook is TransformerLens's spelling
        with torch.no_grad():
            theirs = recipe["cache"][f"blocks.0.hook_{site}"]
            torch.testing.assert_close(theirs, model.activations(recipe["ids"], 0, site), rtol=1e-5, atol=1e-5)


def test_saelens_metadata_resolve_to_the_export_and_give_featscales_codes(recipe, ours, tiny_run):
    model, sae = ours
    meta = recipe["meta"]
    assert meta.model_name == "results/tiny/models/w32/hf" and (tiny_run / meta.model_name / "config.json").is_file()
    assert meta.context_size == model.config.context and meta.prepend_bos is False
    assert list(meta.seqpos_slice) == [1, None] and meta.dataset_path == "results/tiny/data/tokens.zarr"
    with torch.no_grad():
        expected = sae.encode(model.activations(recipe["ids"], 1, "resid_pre")[0, 1:])
    assert (expected > 0).any()
    torch.testing.assert_close(recipe["codes"][0], expected, rtol=1e-4, atol=1e-5)
    # attached to the model its metadata name, the SAE computes the same codes at every position
    torch.testing.assert_close(recipe["attached_codes"][0, 1:], expected, rtol=1e-4, atol=1e-5)


def test_transformer_lens_and_saelens_reproduce_the_feature_store(recipe, tiny_run):
    """The stored codes of the first analysis windows, from the export and the SAE alone."""
    from featscale.data.token_store import open_split
    from featscale.features.store import feature_windows, open_features

    results = tiny_run / "results" / "tiny"
    tl_model, sae = recipe["tl_model"], recipe["sae"]
    context = recipe["meta"].context_size
    windows = feature_windows(open_split(results / "data" / "tokens.zarr", "analysis"), tiny("features"), context, 0)
    windows = torch.from_numpy(windows[:4])
    with torch.no_grad():
        _, cache = tl_model.run_with_cache(windows, names_filter=recipe["meta"].hook_name)
        codes = sae.encode(cache[recipe["meta"].hook_name][:, slice(*recipe["meta"].seqpos_slice)])
    codes = codes.reshape(-1, codes.shape[-1]).numpy()  # (4 x (context - 1), d_sae), the store's row order
    store = open_features(results / "features" / "w32" / "main.zarr")
    indptr, indices, values = store.rows(0, len(codes))
    stored = np.zeros_like(codes)
    stored[np.repeat(np.arange(len(codes)), np.diff(indptr)), indices] = values
    assert (stored > 0).sum() > 0
    np.testing.assert_allclose(codes, stored, rtol=1e-4, atol=1e-5)


def test_xarray_reads_a_labelled_correlation_matrix_and_the_feature_store(recipe, tiny_run):
    from featscale.analysis.correlation import open_correlations
    from featscale.features.store import open_features

    results = tiny_run / "results" / "tiny"
    store = open_correlations(results / "correlations" / "main" / "w16__w32.zarr")
    side_a, side_b = store.side("a"), store.side("b")
    matrix = store.group["matrix"][:]
    assert recipe["r"] == pytest.approx(float(matrix[0, 0]))
    assert recipe["matrix"].dims == ("a_latent", "b_latent")
    np.testing.assert_array_equal(recipe["matrix"]["a_latent"], side_a["latent"])
    np.testing.assert_array_equal(recipe["matrix"]["b_latent"], side_b["latent"])
    order = np.argsort(-side_b["max_similarity"], kind="stable")[:10]
    np.testing.assert_array_equal(recipe["best"]["b_latent"], side_b["latent"][order])
    np.testing.assert_array_equal(recipe["partners"], side_b["best_partner"][order])
    np.testing.assert_array_equal(recipe["importance"], open_features(results / "features" / "w32" / "main.zarr")
                                  .stat("importance"))
    assert recipe["correlations"].attrs["b"] == "w32" and recipe["features"].attrs["model"] == "w32"
