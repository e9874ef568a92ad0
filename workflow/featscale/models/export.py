"""Write a trained `featscale.models.gpt.GPT` as a Hugging Face `transformers` GPT-2 checkpoint.

The folder `models/{model}/hf/` holds

    config.json              GPT2Config's keys, every one that changes GPT-2's computation set
                             explicitly, and `n_ctx` (TransformerLens reads the context from it)
    model.safetensors        the weights under GPT-2's names
    tokenizer.json           the run's tokenizer (data/tokenizer.json), unchanged
    tokenizer_config.json    what `AutoTokenizer` needs to load it: class, special tokens, context
    special_tokens_map.json  the special tokens again, for transformers versions that read them here
    README.md                a model card: data, the family's widths, training tokens, losses

It loads with `transformers.AutoModelForCausalLM.from_pretrained(folder)` (our logits) and
`AutoTokenizer.from_pretrained(folder)` (our token ids); docs/interop.md gives the TransformerLens
recipe. Only `safetensors` and `tokenizers` are needed here: the JSON files are written by hand.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file
from tokenizers import Tokenizer

from featscale.config import CorpusSettings
from featscale.data.tokenizer import EOT, eot_id
from featscale.io import write_atomically
from featscale.models.gpt import GPT, INIT_STD, LAYER_NORM_EPS, load_model

# the end-of-text token is GPT-2's bos, eos and unk token alike; there is no padding token
SPECIAL_TOKENS = {"bos_token": EOT, "eos_token": EOT, "unk_token": EOT}


def hf_config(model: GPT, eos_token_id: int | None = None) -> dict[str, Any]:
    """config.json of the checkpoint: GPT2Config's keys, pinned so nothing differs from ours."""
    c = model.config
    dtype = str(next(model.parameters()).dtype).removeprefix("torch.")
    return {
        "architectures": ["GPT2LMHeadModel"],
        "model_type": "gpt2",
        "vocab_size": c.vocab_size,
        "n_positions": c.context,
        "n_ctx": c.context,  # GPT2Config drops it, but TransformerLens reads the context from it
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


def tokenizer_config(tokenizer: Tokenizer, context: int) -> dict[str, Any]:
    """tokenizer_config.json: `AutoTokenizer` builds a fast tokenizer from tokenizer.json with these
    special tokens; texts longer than the context are the caller's to cut (model_max_length)."""
    eot_id(tokenizer)  # the special tokens below must exist
    return {
        "tokenizer_class": "PreTrainedTokenizerFast",
        **SPECIAL_TOKENS,
        "model_max_length": context,
        "clean_up_tokenization_spaces": False,  # decode gives back the text exactly
    }


def model_card(model: GPT, card: dict[str, Any]) -> str:
    """README.md of the export: what the model is, what it was trained on, how well it does.

    `card`: run, corpus (a CorpusSettings' data), widths (of the family), tokenizer_vocab, and
    final (the model's final.json: tokens, train_loss, val_loss, val_tokens).
    """
    c, final, corpus = model.config, card["final"], card["corpus"]
    source = corpus["source"]
    block = ", ".join(f"{key}: {value}" for key, value in (corpus.get(source) or {}).items())
    widths = ", ".join(str(width) for width in sorted(card["widths"]))
    eot_in_table = EOT.replace("|", "\\|")  # a pipe, even in a code span, would end the table cell
    return "\n".join([
        "---",
        "library_name: transformers",
        "tags: [featscale, gpt2, sparse-autoencoders]",
        "---",
        "",
        f"# featscale run `{card['run']}`: GPT-2 of width {c.width}",
        "",
        "A GPT-2-style model trained by featscale, a Snakemake workflow that asks how a transformer's "
        "SAE features change with its width: one of a family of the same depth, trained on the same "
        "tokens in the same order.",
        "",
        "| | |",
        "|---|---|",
        f"| architecture | GPT-2 (pre-LayerNorm, exact GELU, learned positions, tied embeddings), "
        f"{c.n_layers} layers, width {c.width}, {c.n_heads} heads of {c.head_size}, context {c.context} |",
        f"| non-embedding parameters | {c.non_embedding_params:,} |",
        f"| family (widths) | {widths} |",
        f"| data | `{source}` corpus{f' ({block})' if block else ''}, train split |",
        f"| tokenizer | the run's, {card['tokenizer_vocab']:,} tokens, `{eot_in_table}` as bos/eos; "
        "no BOS is prepended "
        "in training (windows start anywhere in the token stream) |",
        f"| training tokens | {final['tokens']:,} |",
        f"| loss (nats/token) | train {final['train_loss']:.4f}; validation {final['val_loss']:.4f} on "
        f"{final['val_tokens']:,} held-out tokens |",
        "",
        "```python",
        "from transformers import AutoModelForCausalLM, AutoTokenizer",
        "",
        "folder = \".\"  # the folder of this card",
        "model = AutoModelForCausalLM.from_pretrained(folder)",
        "tokenizer = AutoTokenizer.from_pretrained(folder)",
        "```",
        "",
        "TransformerLens, SAELens and xarray recipes: `docs/interop.md` of the featscale repository.",
        "",
    ])


def export_hf(
    model: GPT,
    out_dir: str | Path,
    *,
    tokenizer: Tokenizer | None = None,
    card: dict[str, Any] | None = None,
) -> Path:
    """Write `model` to `out_dir` as a GPT-2 checkpoint, replacing any folder there, atomically.

    With `tokenizer` (the run's), the folder also holds it for `AutoTokenizer` and its end-of-text
    id is the config's bos and eos id; with `card` (see `model_card`), a README.md.
    """
    eos_token_id = None if tokenizer is None else eot_id(tokenizer)

    def write(folder: Path) -> None:
        folder.mkdir()
        (folder / "config.json").write_text(json.dumps(hf_config(model, eos_token_id), indent=2) + "\n")
        save_file(hf_state_dict(model), folder / "model.safetensors", metadata={"format": "pt"})
        if tokenizer is not None:
            tokenizer.save(str(folder / "tokenizer.json"))
            (folder / "tokenizer_config.json").write_text(
                json.dumps(tokenizer_config(tokenizer, model.config.context), indent=2) + "\n")
            (folder / "special_tokens_map.json").write_text(json.dumps(SPECIAL_TOKENS, indent=2) + "\n")
        if card is not None:
            (folder / "README.md").write_text(model_card(model, card))

    return write_atomically(out_dir, write)


def run_export_hf(
    inputs: dict[str, str | Path],
    out: str | Path,
    *,
    run: str,
    corpus: CorpusSettings,
    widths: list[int],
) -> Path:
    """Rule export_hf: the trained model as a GPT-2 checkpoint in `out`, with the run's tokenizer and
    a model card. `inputs`: weights, config (the model's), final (its final.json), tokenizer."""
    tokenizer = Tokenizer.from_file(str(inputs["tokenizer"]))
    card = {"run": run, "corpus": corpus.to_dict(), "widths": list(widths),
            "tokenizer_vocab": tokenizer.get_vocab_size(), "final": json.loads(Path(inputs["final"]).read_text())}
    return export_hf(load_model(inputs["weights"], inputs["config"]), out, tokenizer=tokenizer, card=card)
