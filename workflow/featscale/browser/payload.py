"""The browser's data files: scripts that hand the page their payload, since Chromium blocks
fetch() and XHR of file:// URLs but runs <script src> from the same folder.

Each file is one line of JavaScript, `featscaleBrowser.register(KEY, PAYLOAD)`:

    JSON payloads    a plain object (the manifest, the vocabulary)
    binary payloads  a base64 string of gzip bytes (the page inflates it with
                     DecompressionStream) holding a packed set of arrays:

        uint32 little-endian   n, the length of the header
        n bytes                header, UTF-8 JSON: {"arrays": {name: {"dtype", "shape",
                               "offset"}}, "meta": {...}}; offsets count from `data_offset`
        padding                to `data_offset` (a multiple of 8)
        arrays                 little-endian, C order, each at a multiple of 8 bytes, so the page
                               reads each as a typed-array view of the inflated buffer

Only the dtypes the page can view are allowed (DTYPES).
"""

from __future__ import annotations

import base64
import gzip
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

# numpy dtype -> the JavaScript typed array that views it (browser.js keeps the same table)
DTYPES = {"uint8": "Uint8Array", "uint16": "Uint16Array", "uint32": "Uint32Array", "int32": "Int32Array",
          "float32": "Float32Array", "float64": "Float64Array"}
ALIGN = 8


def pack_arrays(arrays: Mapping[str, np.ndarray], meta: Mapping[str, Any] | None = None) -> bytes:
    """The binary container above (before compression)."""
    layout, blobs, offset = {}, [], 0
    for name, array in arrays.items():
        array = np.ascontiguousarray(array)
        if array.dtype.name not in DTYPES:
            raise TypeError(f"array {name!r} has dtype {array.dtype}; the page reads only {', '.join(DTYPES)}")
        data = array.astype(array.dtype.newbyteorder("<"), copy=False).tobytes()
        layout[name] = {"dtype": array.dtype.name, "shape": list(array.shape), "offset": offset}
        padding = -len(data) % ALIGN
        blobs.append(data + b"\0" * padding)
        offset += len(data) + padding
    header = {"arrays": layout, "meta": dict(meta or {})}
    # the header's own length depends on data_offset's digits: settle it in two passes
    for _ in range(2):
        encoded = json.dumps(header, separators=(",", ":")).encode()
        header["data_offset"] = -(-(4 + len(encoded)) // ALIGN) * ALIGN
    encoded = json.dumps(header, separators=(",", ":")).encode()
    start = header["data_offset"]
    if 4 + len(encoded) > start:
        raise AssertionError("header outgrew its data offset")
    prefix = np.uint32(len(encoded)).astype("<u4").tobytes() + encoded
    return prefix + b"\0" * (start - len(prefix)) + b"".join(blobs)


def unpack_arrays(packed: bytes) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """The inverse of pack_arrays (what the page does), for tests and checks."""
    length = int(np.frombuffer(packed[:4], dtype="<u4")[0])
    header = json.loads(packed[4 : 4 + length])
    start = header["data_offset"]
    arrays = {}
    for name, spec in header["arrays"].items():
        dtype = np.dtype(spec["dtype"]).newbyteorder("<")
        count = int(np.prod(spec["shape"], dtype=np.int64))
        arrays[name] = np.frombuffer(packed, dtype=dtype, count=count, offset=start + spec["offset"]).reshape(
            spec["shape"])
    return arrays, header["meta"]


def _register(key: str, payload_js: str) -> str:
    return f"featscaleBrowser.register({json.dumps(key)}, {payload_js});\n"


def write_binary(path: Path, key: str, arrays: Mapping[str, np.ndarray], meta: Mapping[str, Any] | None = None,
                 level: int = 6) -> int:
    """Write packed, gzipped, base64 arrays as a data script; returns its size in bytes."""
    compressed = gzip.compress(pack_arrays(arrays, meta), compresslevel=level, mtime=0)
    text = _register(key, '"' + base64.b64encode(compressed).decode("ascii") + '"')
    path.write_text(text, encoding="ascii")
    return len(text)


def write_json(path: Path, key: str, payload: Any) -> int:
    """Write a JSON payload as a data script (no HTML-sensitive characters); returns its size in bytes."""
    body = json.dumps(payload, ensure_ascii=True, separators=(",", ":"), allow_nan=False)
    body = body.replace("<", "\\u003c").replace(">", "\\u003e")  # "</script>" in a token stays text
    text = _register(key, body)
    path.write_text(text, encoding="ascii")
    return len(text)


def read_binary(path: Path) -> tuple[str, dict[str, np.ndarray], dict[str, Any]]:
    """(key, arrays, meta) of a binary data script (tests and checks)."""
    text = Path(path).read_text()
    prefix = "featscaleBrowser.register("
    key_json, _, rest = text[len(prefix) :].partition(", ")
    packed = gzip.decompress(base64.b64decode(rest.strip().rstrip(");").strip('"')))
    return (json.loads(key_json), *unpack_arrays(packed))


def read_json(path: Path) -> tuple[str, Any]:
    """(key, payload) of a JSON data script (tests and checks)."""
    text = Path(path).read_text()
    prefix = "featscaleBrowser.register("
    key_json, _, rest = text[len(prefix) :].partition(", ")
    return json.loads(key_json), json.loads(rest.strip().removesuffix(";").removesuffix(")"))
