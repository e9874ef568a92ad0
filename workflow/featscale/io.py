"""Writing outputs so that a half-written one never appears, and fingerprints of what was written.

Every output of the workflow, file or folder (a zarr store, an SAE, a Hugging Face export), is
written under a temporary name beside its final path and renamed into place when complete: a
killed job leaves the previous output or none, never a partial one. No third-party imports, so
every environment can use it.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import shutil
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path

HASH_BLOCK = 1 << 20


def partial_path(path: str | Path) -> Path:
    """Where `write_atomically` builds `path`: a sibling, so the final rename stays on one filesystem."""
    path = Path(path)
    return path.with_name(path.name + ".partial")


def write_atomically(path: str | Path, write: Callable[[Path], None]) -> Path:
    """`write(temporary path)`, then rename it to `path` (a file or a folder); returns `path`.

    A folder replaces an existing one whole: the old one is moved aside first (a folder cannot
    be renamed over a non-empty one) and removed after, so `path` is never missing for longer
    than two renames. A temporary left by a killed run is removed first; one that fails is
    removed too.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = partial_path(path)
    remove(partial)
    try:
        write(partial)
        if path.is_dir() and not path.is_symlink():
            stale = path.with_name(f".{path.name}.stale-{uuid.uuid4().hex[:8]}")
            os.replace(path, stale)
            os.replace(partial, path)
            remove(stale)
        else:
            os.replace(partial, path)
    except BaseException:
        remove(partial)
        raise
    return path


def remove(path: str | Path) -> None:
    """Delete a file, link or folder tree if it exists."""
    path = Path(path)
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()


def write_json(path: str | Path, data: object) -> Path:
    return write_atomically(path, lambda p: p.write_text(json.dumps(data, indent=2)))


def write_text(path: str | Path, text: str) -> Path:
    return write_atomically(path, lambda p: p.write_text(text))


def write_csv(path: str | Path, rows: Iterable[Mapping[str, object]], fields: Sequence[str]) -> Path:
    def write(p: Path) -> None:
        with open(p, "w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=fields)
            writer.writeheader()
            writer.writerows(rows)

    return write_atomically(path, write)


def write_frame(path: str | Path, frame) -> Path:  # noqa: ANN001 (pandas is not imported here)
    """A pandas DataFrame as CSV (.csv) or Parquet (.parquet), by the path's suffix, without its index."""
    path = Path(path)
    if path.suffix == ".parquet":
        return write_atomically(path, lambda p: frame.to_parquet(p, index=False))
    return write_atomically(path, lambda p: frame.to_csv(p, index=False))


def file_sha256(path: str | Path) -> str:
    """SHA-256 of a file's bytes, read a block at a time."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(HASH_BLOCK), b""):
            digest.update(block)
    return digest.hexdigest()


def bytes_sha256(data: bytes | memoryview) -> str:
    return hashlib.sha256(data).hexdigest()
