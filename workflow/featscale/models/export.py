"""Write a trained `featscale.models.gpt.GPT` as a Hugging Face `transformers` GPT-2 checkpoint.

The folder (config.json + model.safetensors) loads with
`transformers.GPT2LMHeadModel.from_pretrained(folder)` and gives our logits, so the
models can be shared and probed with the usual tools. Only `safetensors` is needed here:
the config is written by hand, every key that changes GPT-2's computation set explicitly.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file
from tokenizers import Tokenizer

from featscale.data.tokenizer import eot_id
from featscale.io import write_atomically, write_safetensors
from featscale.models.gpt import GPT, INIT_STD, LAYER_NORM_EPS, load_model


def hf_config(model: GPT, eos_token_id: int | None = None) -> dict[str, Any]:
    """config.json of the checkpoint: GPT2Config's keys, pinned so nothing differs from ours."""
    c = model.config
    dtype = str(next(model.parameters()).dtype).removeprefix("torch.")
    return {
        "architectures": ["GPT2LMHeadModel"],
        "model_type": "gpt2",
        "vocab_size": c.vocab_size,
        "n_positions": c.context,
        "n_embd": c.width,
        "n_layer": c.n_layers,
        "n_head": c.n_heads,
        "n_inner": None,  # 4 * n_embd, as ours
        "activation_function": "gelu",  # exact erf GELU, as our nn.GELU(); not GPT-2's "gelu_new"
        "layer_norm_epsilon": LAYER_NORM_EPS,
        "initializer_range": INIT_STD,
        # we train without dropout; GPT2Config defaults to 0.1 everywhere
        "resid_pdrop": 0.0,
        "embd_pdrop": 0.0,
        "attn_pdrop": 0.0,
        "summary_first_dropout": 0.0,
        "scale_attn_weights": True,  # scores / sqrt(head_size), as SDPA's default scale
        "scale_attn_by_inverse_layer_idx": False,
        "reorder_and_upcast_attn": False,
        "add_cross_attention": False,
        "tie_word_embeddings": True,
        # the end-of-text id depends on the tokenizer (0 for our BPE, 50256 for GPT-2's)
        "bos_token_id": eos_token_id,
        "eos_token_id": eos_token_id,
        "pad_token_id": None,
        "use_cache": True,
        "dtype": dtype,
    }


def hf_state_dict(model: GPT) -> dict[str, torch.Tensor]:
    """Our weights under GPT-2's names. GPT-2's Conv1D stores (in, out): nn.Linear's transpose.

    The LM head is left out: it is the token embedding, which tie_word_embeddings restores.
    """

    def conv1d(linear: torch.nn.Linear, prefix: str) -> dict[str, torch.Tensor]:
        return {f"{prefix}.weight": linear.weight.t(), f"{prefix}.bias": linear.bias}

    def layer_norm(norm: torch.nn.LayerNorm, prefix: str) -> dict[str, torch.Tensor]:
        return {f"{prefix}.weight": norm.weight, f"{prefix}.bias": norm.bias}

    tensors = {"transformer.wte.weight": model.wte.weight, "transformer.wpe.weight": model.wpe.weight}
    for i, block in enumerate(model.blocks):
        h = f"transformer.h.{i}"
        tensors |= layer_norm(block.ln_1, f"{h}.ln_1")
        tensors |= conv1d(block.attn.qkv, f"{h}.attn.c_attn")  # q, k, v in the same order as ours
        tensors |= conv1d(block.attn.proj, f"{h}.attn.c_proj")
        tensors |= layer_norm(block.ln_2, f"{h}.ln_2")
        tensors |= conv1d(block.mlp.fc, f"{h}.mlp.c_fc")
        tensors |= conv1d(block.mlp.proj, f"{h}.mlp.c_proj")
    tensors |= layer_norm(model.ln_f, "transformer.ln_f")
    # safetensors wants contiguous, unshared CPU tensors
    return {name: t.detach().to("cpu", copy=True).contiguous() for name, t in tensors.items()}


def export_hf(model: GPT, out_dir: str | Path, *, eos_token_id: int | None = None) -> Path:
    """Write `model` to `out_dir` as a GPT-2 checkpoint, replacing any folder there, atomically."""

    def write(folder: Path) -> None:
        folder.mkdir()
        (folder / "config.json").write_text(json.dumps(hf_config(model, eos_token_id), indent=2) + "\n")
        tensors = hf_state_dict(model)
        # its SHA-256 and config.json's recorded beside "format" (which transformers reads), as for our own weights
        write_safetensors(folder / "model.safetensors", lambda path, metadata: save_file(tensors, path, metadata=metadata),
                          metadata={"format": "pt"}, config=folder / "config.json")

    return write_atomically(out_dir, write)


def run_export_hf(weights: str | Path, config: str | Path, tokenizer: str | Path, out: str | Path) -> Path:
    """Rule export_hf: the trained model (weights, config.json) as a GPT-2 checkpoint in `out`."""
    eot = eot_id(Tokenizer.from_file(str(tokenizer)))
    return export_hf(load_model(weights, config), out, eos_token_id=eot)
