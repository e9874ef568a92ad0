"""The run's tokenizer: a byte-level BPE learned offline, or GPT-2's; its end-of-text token."""

from __future__ import annotations

import logging
from collections.abc import Iterable

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

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
