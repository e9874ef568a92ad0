"""Resumable jobs: checkpoints keyed by the settings that shape the result.

A job's checkpoints live in `<root>/<hash of its settings>/`, outside its declared outputs
(Snakemake deletes those when a job fails). An edited config gives a new hash, so the job
starts afresh instead of resuming a stale state. A checkpoint is written under a temporary
name with its SHA-256 beside it and renamed into place; one that is truncated, corrupt, or
records other settings is never loaded: the log says why and the job starts afresh.
"""

from __future__ import annotations

import io
import json
import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from featscale.io import bytes_sha256, write_atomically, write_json, write_text

log = logging.getLogger(__name__)


def settings_hash(settings: Mapping[str, Any]) -> str:
    """A short, stable digest of JSON-serialisable settings (key order does not matter)."""
    text = json.dumps(settings, sort_keys=True, default=str)
    return bytes_sha256(text.encode())[:16]


class Checkpoints:
    """The latest checkpoint of one job with these `settings`."""

    def __init__(self, root: str | Path, settings: Mapping[str, Any]):
        self.settings = json.loads(json.dumps(settings, sort_keys=True, default=str))
        self.folder = Path(root) / settings_hash(self.settings)
        self.path = self.folder / "checkpoint.pt"
        self.digest_path = self.folder / "checkpoint.sha256"

    def save(self, state: Mapping[str, Any]) -> None:
        buffer = io.BytesIO()
        torch.save({"settings": self.settings, "state": dict(state)}, buffer)
        data = buffer.getvalue()
        self.folder.mkdir(parents=True, exist_ok=True)
        write_json(self.folder / "settings.json", self.settings)
        # the digest goes first: a checkpoint without its matching digest is never loaded
        write_text(self.digest_path, bytes_sha256(data))
        write_atomically(self.path, lambda partial: _write_synced(partial, data))

    def load(self) -> dict[str, Any] | None:
        """The saved state, or None (nothing saved, or not loadable: logged)."""
        if not self.path.exists():
            return None
        data = self.path.read_bytes()
        expected = self.digest_path.read_text().strip() if self.digest_path.exists() else None
        if bytes_sha256(data) != expected:
            log.warning("checkpoint %s is truncated or corrupt (SHA-256 mismatch): not loaded, starting afresh", self.path)
            return None
        try:
            saved = torch.load(io.BytesIO(data), map_location="cpu", weights_only=False)
        except Exception as error:  # any unpickling failure means the file cannot be trusted
            log.warning("checkpoint %s cannot be read (%s): not loaded, starting afresh", self.path, error)
            return None
        if saved.get("settings") != self.settings:
            log.warning("checkpoint %s records other settings than this job's: not loaded, starting afresh", self.path)
            return None
        log.info("resuming from checkpoint %s", self.path)
        return saved["state"]


def _write_synced(path: Path, data: bytes) -> None:
    with open(path, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
