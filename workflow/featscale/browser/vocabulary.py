"""Each token id of the run's tokenizer as the text the page shows.

The run's tokenizer (README, "Data") is a byte-level BPE: a token is a string of symbols, one
per byte, in GPT-2's byte-to-symbol map. Mapped back to bytes and decoded as UTF-8, a token
shows its text; a token that holds part of a multi-byte character shows the bytes it holds
(`\\xe2\\x80`), since it is not text on its own.
"""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path


@cache
def _symbol_bytes() -> dict[str, int]:
    """GPT-2's byte-level map, reversed: symbol -> byte. Printable Latin-1 bytes stand for
    themselves; the other 68 bytes (controls, space, ...) take the code points from 256 on."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    symbols = {chr(b): b for b in printable}
    others = [b for b in range(256) if b not in symbols.values()]
    symbols.update({chr(256 + i): b for i, b in enumerate(others)})
    return symbols


def token_strings(tokenizer_json: str | Path) -> list[str]:
    """The display text of every id of a `tokenizers` JSON file (index = token id)."""
    spec = json.loads(Path(tokenizer_json).read_text(encoding="utf-8"))
    vocab: dict[str, int] = dict(spec["model"]["vocab"])
    special = {token["id"]: token["content"] for token in spec.get("added_tokens", [])}
    size = max([*vocab.values(), *special.keys()]) + 1
    decoder = (spec.get("decoder") or {}).get("type")
    if decoder != "ByteLevel":
        raise ValueError(
            f"{tokenizer_json}: the browser decodes byte-level BPE tokenizers (decoder ByteLevel), "
            f"this one's decoder is {decoder!r}"
        )
    symbols = _symbol_bytes()
    strings = [""] * size
    for text, token_id in vocab.items():
        try:
            raw = bytes(symbols[s] for s in text)
        except KeyError:  # not a byte-level symbol string: show it as it is
            strings[token_id] = text
            continue
        strings[token_id] = raw.decode("utf-8", errors="backslashreplace")
    for token_id, text in special.items():
        strings[token_id] = text
    return strings
