"""The study's language model: a GPT-2 of fixed depth whose width is the variable.

One file, read top to bottom: the config, attention, MLP, block, then the model with the
three activation sites where a sparse autoencoder reads or is spliced in:

    resid_pre   the residual stream entering block `layer`
    mlp_out     the output of block `layer`'s MLP, before it is added to the residual
    resid_post  the residual stream leaving block `layer` (= resid_pre of block layer + 1)

The architecture is exactly Hugging Face's `GPT2LMHeadModel` with exact GELU and no
dropout, so `featscale.models.export` can write a checkpoint that GPT-2 tools load and that
computes the same logits. Training lives elsewhere.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from einops import rearrange
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from featscale.config import Record, non_embedding_params
from featscale.io import verify_safetensors, write_json, write_safetensors
from featscale.names import MODEL_RULE

SITES = ("resid_pre", "mlp_out", "resid_post")
LAYER_NORM_EPS = 1e-5  # GPT-2's value; hf_export writes it into the checkpoint's config
INIT_STD = 0.02

Intervention = Callable[[Tensor], Tensor]


@dataclass
class GPTConfig(Record):
    vocab_size: int
    context: int  # the most positions the model has embeddings for
    width: int  # d_model
    n_layers: int
    head_size: int

    def __post_init__(self) -> None:
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"GPTConfig.{field.name} must be a positive integer, got {value!r}")
        _ = self.n_heads  # raises now rather than at the first forward

    @property
    def n_heads(self) -> int:
        if self.width % self.head_size:
            raise ValueError(
                f"width {self.width} is not divisible by head_size {self.head_size}; "
                f"pick a width that is a multiple of {self.head_size}"
            )
        return self.width // self.head_size

    @property
    def non_embedding_params(self) -> int:
        """The N of the scaling laws (featscale.config.non_embedding_params)."""
        return non_embedding_params(self.n_layers, self.width)


class ModelOutput(NamedTuple):
    logits: Tensor
    """(B, T, vocab_size) scores for the token that follows each position."""
    loss: Tensor | None
    """Mean next-token cross-entropy over all positions; None when no targets were given."""


class CausalSelfAttention(nn.Module):
    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.n_heads = config.n_heads
        self.qkv = nn.Linear(config.width, 3 * config.width)  # one matmul for q, k and v
        self.proj = nn.Linear(config.width, config.width)

    def forward(self, x: Tensor) -> Tensor:
        qkv = self.qkv(x)  # (B, T, 3C)
        # Split on the last axis, then view each as heads: no copies, and backward can write
        # the three gradients straight into one (B, T, 3C) tensor with a single concatenation.
        q, k, v = (rearrange(z, "b t (nh hs) -> b nh t hs", nh=self.n_heads) for z in qkv.chunk(3, dim=-1))
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)  # (B, nh, T, hs); scale 1/sqrt(hs)
        y = rearrange(y, "b nh t hs -> b t (nh hs)")  # (B, T, C)
        return self.proj(y)


class MLP(nn.Module):
    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.fc = nn.Linear(config.width, 4 * config.width)
        self.gelu = nn.GELU()  # exact erf GELU, as HF's "gelu"; GPT-2's original used the tanh form
        self.proj = nn.Linear(4 * config.width, config.width)

    def forward(self, x: Tensor) -> Tensor:
        return self.proj(self.gelu(self.fc(x)))  # (B, T, 4C) inside, (B, T, C) out


class Block(nn.Module):
    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.ln_1 = nn.LayerNorm(config.width, eps=LAYER_NORM_EPS)
        self.attn = CausalSelfAttention(config)
        self.ln_2 = nn.LayerNorm(config.width, eps=LAYER_NORM_EPS)
        self.mlp = MLP(config)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """(residual after attention, MLP output): the caller adds them, so mlp_out can be spliced."""
        x = x + self.attn(self.ln_1(x))
        return x, self.mlp(self.ln_2(x))


class GPT(nn.Module):
    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.config = config
        self.wte = nn.Embedding(config.vocab_size, config.width)
        self.wpe = nn.Embedding(config.context, config.width)
        self.blocks = nn.ModuleList(Block(config) for _ in range(config.n_layers))
        self.ln_f = nn.LayerNorm(config.width, eps=LAYER_NORM_EPS)
        self.apply(self._init_weights)
        # Two residual writes per block (attention, MLP): shrink them so the stream's
        # variance at init does not grow with depth (GPT-2 paper, section 2.3).
        for block in self.blocks:
            for proj in (block.attn.proj, block.mlp.proj):
                nn.init.normal_(proj.weight, mean=0.0, std=INIT_STD / math.sqrt(2 * config.n_layers))

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, mean=0.0, std=INIT_STD)
        if isinstance(module, nn.Linear) and module.bias is not None:
            nn.init.zeros_(module.bias)
        # nn.LayerNorm already starts at weight 1, bias 0

    @property
    def lm_head(self) -> Tensor:
        """The unembedding: tied to the token embedding, as in GPT-2 (one tensor, not a copy)."""
        return self.wte.weight

    def forward(
        self,
        idx: Tensor,
        targets: Tensor | None = None,
        *,
        interventions: Mapping[tuple[int, str], Intervention] | None = None,
    ) -> ModelOutput:
        """Logits for `idx` (B, T) and, given `targets` (B, T) of next tokens, their loss.

        `interventions` maps (layer, site) to a function that replaces the activation there
        with its output: an SAE's reconstruction, or `torch.zeros_like` to ablate.
        """
        x = self._run(idx, interventions or {})  # (B, T, C)
        logits = F.linear(self.ln_f(x), self.lm_head)  # (B, T, V)
        loss = None
        if targets is not None:
            loss = F.cross_entropy(logits.flatten(0, 1), targets.flatten())
        return ModelOutput(logits, loss)

    def activations(self, idx: Tensor, layer: int, site: str) -> Tensor:
        """(B, T, C) activation at (layer, site) for `idx` (B, T); later blocks are not run.

        Gradients follow the caller's mode: wrap in `torch.no_grad()` to harvest for an SAE.
        """
        return self._run(idx, {}, stop_at=(layer, site))

    def _check_site(self, layer: Any, site: Any) -> None:
        n = self.config.n_layers
        if isinstance(layer, bool) or not isinstance(layer, int) or not 0 <= layer < n or site not in SITES:
            raise ValueError(
                f"no activation site ({layer!r}, {site!r}): layer must be an int in 0..{n - 1} "
                f"and site one of {', '.join(SITES)}"
            )

    def _run(
        self,
        idx: Tensor,
        interventions: Mapping[tuple[int, str], Intervention],
        stop_at: tuple[int, str] | None = None,
    ) -> Tensor:
        """The residual stream after the last block, or the activation at `stop_at`."""
        for layer, site in interventions:
            self._check_site(layer, site)
        if stop_at is not None:
            self._check_site(*stop_at)
        if idx.ndim != 2:
            raise ValueError(f"idx must be (batch, time) token ids, got shape {tuple(idx.shape)}")
        T = idx.shape[1]
        if T > self.config.context:
            raise ValueError(f"sequence of {T} tokens is longer than the context of {self.config.context}")

        def splice(layer: int, site: str, value: Tensor) -> Tensor:
            fn = interventions.get((layer, site))
            return value if fn is None else fn(value)

        pos = torch.arange(T, device=idx.device)
        x = self.wte(idx) + self.wpe(pos)  # (B, T, C); (T, C) positions broadcast over batch
        return self._blocks(x, 0, splice, stop_at)

    def forward_from(
        self,
        resid_pre: Tensor,
        layer: int,
        targets: Tensor | None = None,
        *,
        interventions: Mapping[tuple[int, str], Intervention] | None = None,
    ) -> ModelOutput:
        """forward() from the residual stream entering block `layer` (B, T, C), e.g. from activations().

        Many interventions at one site share the blocks before it: run those once, then this.
        """
        interventions = interventions or {}
        self._check_site(layer, "resid_pre")
        for where in interventions:
            self._check_site(*where)
            if where[0] < layer:
                raise ValueError(f"an intervention at {where} comes before layer {layer}, where this run starts")

        def splice(layer: int, site: str, value: Tensor) -> Tensor:
            fn = interventions.get((layer, site))
            return value if fn is None else fn(value)

        x = self._blocks(resid_pre, layer, splice, None)
        logits = F.linear(self.ln_f(x), self.lm_head)  # (B, T, V)
        loss = None if targets is None else F.cross_entropy(logits.flatten(0, 1), targets.flatten())
        return ModelOutput(logits, loss)

    def _blocks(self, x: Tensor, first: int, splice: Callable[[int, str, Tensor], Tensor],
                stop_at: tuple[int, str] | None) -> Tensor:
        """Blocks first.. on the residual stream x entering block `first`."""
        for layer in range(first, len(self.blocks)):
            block = self.blocks[layer]
            x = splice(layer, "resid_pre", x)
            if stop_at == (layer, "resid_pre"):
                return x
            x, mlp_out = block(x)
            mlp_out = splice(layer, "mlp_out", mlp_out)
            if stop_at == (layer, "mlp_out"):
                return mlp_out
            x = splice(layer, "resid_post", x + mlp_out)
            if stop_at == (layer, "resid_post"):
                return x
        return x


def save_model(model: GPT, weights: str | Path, config: str | Path, record: Mapping[str, Any]) -> None:
    """Write config.json (`record`: the architecture under "model", and what else the trainer records),
    then the weights, whose safetensors metadata records their SHA-256 and config.json's."""
    write_json(config, dict(record))
    state = {name: tensor.detach().cpu().contiguous() for name, tensor in model.state_dict().items()}
    write_safetensors(weights, lambda path, metadata: save_file(state, str(path), metadata=metadata), config=config)


def load_model(weights: str | Path, config: str | Path) -> GPT:
    """A trained model from its safetensors weights and its config.json (save_model writes both), both
    checked against the SHA-256s the weights record."""
    verify_safetensors(weights, MODEL_RULE, config=config)
    model = GPT(GPTConfig.from_dict(json.loads(Path(config).read_text())["model"]))
    model.load_state_dict(load_file(str(weights)))
    return model
