"""The run's tokenizer: a byte-level BPE learned offline on the train split, or GPT-2's."""

from __future__ import annotations

import hashlib
import itertools
import logging
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

from featscale.runtime import write_atomically
from featscale.splits import split_documents

EOT = "<|endoftext|>"
log = logging.getLogger(__name__)


def train_bpe(texts: Iterable[str], vocab_size: int) -> Tokenizer:
    """A byte-level BPE of `vocab_size` tokens (end-of-text included) learned from `texts`."""
    tokenizer = Tokenizer(models.BPE())
    # GPT-2's scheme: every byte is a symbol, so no text is ever out of vocabulary
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[EOT],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(texts, trainer=trainer)
    return tokenizer


def gpt2_tokenizer() -> Tokenizer:
    """GPT-2's tokenizer from the Hugging Face hub (needs the network)."""
    try:
        return Tokenizer.from_pretrained("gpt2")
    except Exception as error:  # the hub client raises many kinds of error when offline
        raise RuntimeError(
            "could not load GPT-2's tokenizer from the Hugging Face hub "
            f"({type(error).__name__}: {error}); without network use `tokenizer.kind: bpe`"
        ) from error


def eot_id(tokenizer: Tokenizer) -> int:
    token_id = tokenizer.token_to_id(EOT)
    if token_id is None:
        raise ValueError(f"the tokenizer has no end-of-text token {EOT!r}")
    return token_id


def file_sha256(path: str | Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def build_tokenizer(
    data: Mapping[str, Any],
    tokenizer_config: Mapping[str, Any],
    seed: int,
    out: str | Path,
    archive: Path | None = None,
) -> None:
    """Make the run's tokenizer and save it as `out` (tokenizer.json), written atomically."""
    if tokenizer_config["kind"] == "gpt2":
        tokenizer = gpt2_tokenizer()
    else:
        limit = tokenizer_config["train_documents"]
        texts = (
            document
            for split, document in split_documents(data, seed, archive)
            if split == "train"  # val and analysis stay unseen, by the tokenizer too
        )
        tokenizer = train_bpe(itertools.islice(texts, limit), tokenizer_config["vocab_size"])
        log.info("trained a BPE of %d tokens on at most %d train documents", tokenizer.get_vocab_size(), limit)
    eot_id(tokenizer)  # refuse a tokenizer without end-of-text before saving it
    write_atomically(out, lambda partial: tokenizer.save(str(partial)))
