"""What an SAE reads: the activations of token windows at one reading, from a GPT or a planted family.

One small interface, two implementations, so that train_sae (its ActivationBuffer), evaluate_sae
and encode_features read a language model and a family with known features the same way:

    GPTSource      a trained GPT, run as far as the reading's site (layer, site, bf16 autocast on CUDA)
    PlantedSource  one model of a planted family (featscale.planted): the reading is ignored, there
                   is only one "site"

`language_model` says what else can be computed: only a GPT has next-token losses, so the CE-loss
scores of evaluate_sae and the feature budget need one; a planted source has none.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import Tensor

from featscale.config import Reading
from featscale.execution.devices import autocast
from featscale.io import bytes_sha256, file_sha256
from featscale.models.gpt import GPT, load_model
from featscale.planted import PlantedFamily, read_truth


class ActivationSource(ABC):
    """A model as an SAE sees it: activations of token windows, its width and context."""

    language_model: bool
    """Whether next-token losses can be computed (CE-loss scores, splicing, the feature budget)."""

    @property
    @abstractmethod
    def width(self) -> int:
        """d, the size of one activation vector."""

    @property
    @abstractmethod
    def context(self) -> int:
        """The longest token window it reads."""

    @property
    @abstractmethod
    def fingerprint(self) -> str:
        """What identifies it (a checkpoint made on another model is never resumed)."""

    @abstractmethod
    def activations(self, windows: Tensor, reading: Reading) -> Tensor:
        """(B, T, width) activations at `reading` for token windows `windows` (B, T), every position
        from 0, on the windows' device; gradients follow the caller's mode."""

    @abstractmethod
    def to(self, device: torch.device | str) -> ActivationSource:
        """Itself, on `device`."""


class GPTSource(ActivationSource):
    """A trained GPT, frozen and in eval mode."""

    language_model = True

    def __init__(self, model: GPT, fingerprint: str = ""):
        """`fingerprint`: what checkpoints record of it (load_source gives the weights' SHA-256)."""
        self.model = model.eval()
        for parameter in self.model.parameters():
            parameter.requires_grad_(False)
        self._fingerprint = fingerprint

    @property
    def width(self) -> int:
        return self.model.config.width

    @property
    def context(self) -> int:
        return self.model.config.context

    @property
    def fingerprint(self) -> str:
        return self._fingerprint

    def activations(self, windows: Tensor, reading: Reading) -> Tensor:
        with autocast(windows.device, enabled=reading.autocast):
            return self.model.activations(windows, reading.layer, reading.site)  # (B, T, d)

    def to(self, device: torch.device | str) -> GPTSource:
        self.model.to(device)
        return self


class PlantedSource(ActivationSource):
    """One model of a planted family: its features' activations embedded in its width, plus noise."""

    language_model = False

    def __init__(self, family: PlantedFamily, model: str):
        if model not in family.models:
            raise ValueError(f"the planted family has no model {model!r}: it has {', '.join(family.models)}")
        self.family, self.model = family, model

    @property
    def width(self) -> int:
        return self.family.width(self.model)

    @property
    def context(self) -> int:
        return self.family.context

    @property
    def fingerprint(self) -> str:
        family = self.family
        settings = repr((family.settings.to_dict(), family.run_seed)).encode()
        return bytes_sha256(family.directions[self.model].tobytes() + family.frequency.tobytes()
                            + family.importance.tobytes() + settings)

    def activations(self, windows: Tensor, reading: Reading) -> Tensor:
        acts = self.family.activations(self.model, windows.cpu().numpy())  # (B, T, d)
        return torch.from_numpy(acts).to(windows.device)

    def to(self, device: torch.device | str) -> PlantedSource:
        return self  # drawn on the CPU, moved to the windows' device


def load_source(inputs: Mapping[str, str | Path], model: str) -> ActivationSource:
    """The source a rule's inputs name: `truth` (a planted family's truth store: model `model` of it),
    or `model_weights` and `model_config` (a trained GPT)."""
    if "truth" in inputs:
        return PlantedSource(read_truth(inputs["truth"]), model)
    weights = inputs["model_weights"]
    return GPTSource(load_model(weights, inputs["model_config"]), file_sha256(weights))
