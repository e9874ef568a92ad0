"""Writing outputs so that a half-written one never appears, fingerprints of what was written, and
the checks that what a job reads is what its producer wrote.

Every output of the workflow, file or folder (a zarr store, an SAE, a Hugging Face export), is
written under a temporary name beside its final path and renamed into place when complete: a
killed job leaves the previous output or none, never a partial one. Each attempt writes under a
name of its own, so a process left over from a killed attempt cannot write into the next one's.

Integrity: a safetensors file records its own SHA-256 (and that of the JSON config written beside
it) in its metadata, checked whenever it is loaded (`verify_safetensors`); every zarr array is
written with zstd's checksum of each chunk, checked by the codec on every read, and with every
chunk on disk, so a missing chunk file is noticed when the store is opened (`check_chunks`).
A failure names the file, what was expected, and the fix (`ArtifactError`).

No third-party imports at module level, so every environment can use it.
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import json
import math
import os
import shutil
import struct
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

HASH_BLOCK = 1 << 20
PARTIAL = ".partial"
# safetensors metadata keys: the file's SHA-256 (its own 64 characters read as zeros) and its config's
SAFETENSORS_SHA256 = "featscale.sha256"
SAFETENSORS_CONFIG_SHA256 = "featscale.config_sha256"
_UNHASHED = "0" * 64
_MAX_HEADER = 100 << 20  # safetensors' own limit on the JSON header


class InputError(ValueError):
    """An input a job cannot use: a config the run refuses, a corpus file it cannot read, an
    artifact that is not what its producer wrote. The message is one line that names the key or
    the file, the problem and the fix; a job that raises it ends with that line on the console
    and the traceback in its log (featscale.execution.jobs.run_rule)."""


class ArtifactError(InputError):
    """An artifact that is not what its producer wrote: changed bytes, a missing chunk, an older format."""


def artifact_error(path: str | Path, problem: str, producer: str) -> ArtifactError:
    """The error for an artifact that cannot be trusted: its path, the problem, and how to make it again."""
    return ArtifactError(
        f"{path} {problem}: it cannot be trusted. Delete it and let rule {producer} make it again: "
        f"rm -rf '{path}' && snakemake '{path}' (with this run's --configfile), then rerun the workflow."
    )


def partial_path(path: str | Path) -> Path:
    """Where one attempt of `write_atomically` builds `path`: a sibling (the final rename stays on one
    filesystem) named for this attempt alone."""
    path = Path(path)
    return path.with_name(f"{path.name}{PARTIAL}-{uuid.uuid4().hex[:12]}")


def write_atomically(path: str | Path, write: Callable[[Path], None]) -> Path:
    """`write(temporary path)`, then rename it to `path` (a file or a folder); returns `path`.

    A folder replaces an existing one whole: the old one is moved aside first (a folder cannot
    be renamed over a non-empty one) and removed after, so `path` is never missing for longer
    than two renames. Temporaries of earlier attempts (a killed run's) are removed first; one
    that fails is removed too. Snakemake runs one attempt of a job at a time, so an earlier
    attempt's temporary belongs to no live job.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    for stale in path.parent.glob(f"{path.name}{PARTIAL}*"):
        remove(stale)
    partial = partial_path(path)
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


def file_sha256(path: str | Path, head: bytes = b"") -> str:
    """SHA-256 of a file's bytes, read a block at a time; with `head`, of the file with its first
    len(head) bytes read as `head` (a safetensors header whose recorded hash reads as zeros)."""
    digest = hashlib.sha256(head)
    with open(path, "rb") as handle:
        handle.seek(len(head))
        for block in iter(lambda: handle.read(HASH_BLOCK), b""):
            digest.update(block)
    return digest.hexdigest()


def bytes_sha256(data: bytes | memoryview) -> str:
    return hashlib.sha256(data).hexdigest()


# ---------------------------------------------------------------- safetensors


def write_safetensors(
    path: str | Path,
    save: Callable[[Path, dict[str, str]], None],
    *,
    metadata: Mapping[str, str] | None = None,
    config: str | Path | None = None,
) -> Path:
    """Write a safetensors file atomically with `save(temporary path, metadata)` (safetensors'
    save_file), its metadata recording the file's own SHA-256 and, with `config`, that of the JSON
    config beside it (written first), for `verify_safetensors`.

    The hash is taken with its own 64 characters read as zeros and then written into them in place,
    so the file is written and read once.
    """
    recorded = dict(metadata or {})
    if config is not None:
        recorded[SAFETENSORS_CONFIG_SHA256] = file_sha256(config)
    recorded[SAFETENSORS_SHA256] = _UNHASHED

    def write(partial: Path) -> None:
        save(partial, recorded)
        _sort_metadata(partial)
        slot = _hash_slot(_UNHASHED)
        at = _safetensors_header(partial).index(slot) + len(slot) - len(_UNHASHED) - 1
        digest = file_sha256(partial)
        with open(partial, "r+b") as handle:
            handle.seek(at)
            handle.write(digest.encode())

    return write_atomically(path, write)


def _sort_metadata(path: Path) -> None:
    """Rewrite a safetensors file's metadata with its keys sorted, in place: safetensors writes them
    in the order of a Rust HashMap, which differs from one process to the next, so the same tensors
    would give other bytes (and another SHA-256) on every run. The header keeps its length."""
    header = _safetensors_header(path)
    parsed = json.loads(header[8:])
    if len(parsed.get("__metadata__") or {}) < 2:
        return
    parsed["__metadata__"] = dict(sorted(parsed["__metadata__"].items()))
    text = json.dumps(parsed, separators=(",", ":"), ensure_ascii=False).encode()
    body = header[8:]
    if len(text) > len(body) or body[len(text):].strip(b" "):
        raise ValueError(f"{path}: its safetensors header cannot be rewritten in place")
    with open(path, "r+b") as handle:
        handle.seek(8)
        handle.write(text + b" " * (len(body) - len(text)))


def verify_safetensors(path: str | Path, producer: str, *, config: str | Path | None = None) -> str:
    """Raise ArtifactError unless the safetensors file `path` (and its `config`) hold exactly what
    `write_safetensors` wrote; return the SHA-256 it records (its identity, for provenance)."""
    try:
        header = _safetensors_header(path)
        metadata = json.loads(header[8:]).get("__metadata__") or {}
    except (OSError, ValueError, AttributeError) as error:
        raise artifact_error(path, f"is not a readable safetensors file ({error})", producer) from error
    recorded = metadata.get(SAFETENSORS_SHA256)
    if recorded is None:
        raise artifact_error(path, "records no SHA-256 of its content (written before featscale recorded one, "
                                   "or by another program)", producer)
    slot = _hash_slot(recorded)
    if header.count(slot) != 1:
        raise artifact_error(path, "has a damaged header", producer)
    computed = file_sha256(path, head=header.replace(slot, _hash_slot(_UNHASHED)))
    if computed != recorded:
        raise artifact_error(path, f"has changed since it was written: it records SHA-256 {recorded[:16]}... "
                                   f"but its bytes hash to {computed[:16]}...", producer)
    if config is not None:
        expected, actual = metadata.get(SAFETENSORS_CONFIG_SHA256), file_sha256(config)
        if actual != expected:
            raise artifact_error(config, f"is not the config written with {Path(path).name}: its SHA-256 is "
                                         f"{actual[:16]}..., {Path(path).name} records {str(expected)[:16]}...", producer)
    return recorded


def recorded_sha256(path: str | Path) -> str | None:
    """The SHA-256 a safetensors file records (read from its header, not checked: see verify_safetensors)."""
    return json.loads(_safetensors_header(path)[8:]).get("__metadata__", {}).get(SAFETENSORS_SHA256)


def _hash_slot(value: str) -> bytes:
    return f'"{SAFETENSORS_SHA256}":"{value}"'.encode()


def _safetensors_header(path: str | Path) -> bytes:
    """A safetensors file's first bytes: the header's length (8 bytes, little-endian) and the JSON header."""
    with open(path, "rb") as handle:
        start = handle.read(8)
        if len(start) < 8:
            raise ValueError("shorter than a safetensors header")
        (length,) = struct.unpack("<Q", start)
        if length > min(_MAX_HEADER, os.fstat(handle.fileno()).st_size - 8):
            raise ValueError(f"its header length {length} exceeds the file")
        return start + handle.read(length)


# ---------------------------------------------------------------- zarr stores


def checked_array_options(level: int = 3) -> dict[str, Any]:
    """Options of every zarr array the workflow writes (`group.create_array(..., **options)`): zstd
    chunks with their checksum, which the codec checks on every read, and every chunk written even
    when it holds only the fill value, so that a missing chunk file is noticed (`check_chunks`)."""
    from zarr.codecs import ZstdCodec  # only the environments that write stores need zarr

    return {"compressors": ZstdCodec(level=level, checksum=True), "config": {"write_empty_chunks": True}}


def open_store(path: str | Path, kind: str, format: str, producer: str) -> tuple[Any, dict[str, Any]]:
    """A zarr store that `producer` wrote, read-only, and its attrs: refused unless they record
    `format` (a store of another version, or no store at all). `kind` names it in the message."""
    import zarr  # only the environments that read stores need zarr

    with reading(path, producer):
        group = zarr.open_group(str(path), mode="r")
        attrs = dict(group.attrs)
    if attrs.get("format") != format:
        raise artifact_error(path, f"is not a {kind} of format {format} (it records {attrs.get('format')!r})", producer)
    return group, attrs


def check_chunks(array: Any, store: str | Path, producer: str) -> None:
    """Raise ArtifactError if a chunk file (or a shard file) of the zarr array of `store` is missing,
    which zarr would read as fill values. Counts the array's files on disk; reads none."""
    grid = array.shards or array.chunks  # what one file holds
    expected = math.prod(-(-size // step) for size, step in zip(array.shape, grid))
    folder = Path(store, array.path, "c")
    present = sum(1 for path in folder.rglob("*") if path.is_file()) if folder.is_dir() else 0
    if present < expected:
        raise artifact_error(store, f"lacks {expected - present} of the {expected} chunk files of its array "
                                    f"{array.path!r}", producer)


@contextlib.contextmanager
def reading(store: str | Path, producer: str) -> Iterator[None]:
    """Turn a failed read of `store` (a chunk that fails its checksum, an unreadable or truncated file)
    into an ArtifactError that names it."""
    try:
        yield
    except InputError:
        raise
    except (RuntimeError, ValueError, OSError, EOFError, KeyError) as error:
        raise artifact_error(store, f"cannot be read ({type(error).__name__}: {error})", producer) from error
