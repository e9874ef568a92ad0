"""From the configured corpus to documents, each assigned to exactly one split.

A document's split is a seeded hash of its content, so the assignment is the same on
every machine and in every pass over the corpus (the tokenizer's and the token store's),
needs no memory of earlier documents, and can put no document in two splits.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Mapping
from pathlib import Path

import numpy as np

from featscale.config import SPLITS, CorpusSettings, SplitFractions
from featscale.data import corpus

Document = str | list[int]


def document_split(document: Document, seed: int, fractions: SplitFractions | Mapping[str, float]) -> str:
    """The split of one document: a uniform draw from its seeded hash, cut at the fractions."""
    if isinstance(document, str):
        content = document.encode("utf-8")
    else:
        content = np.asarray(document, dtype=np.int64).tobytes()
    digest = hashlib.blake2b(content, digest_size=8, key=seed.to_bytes(8, "little")).digest()
    u = int.from_bytes(digest, "little") / 2**64
    edge = 0.0
    for split in SPLITS:
        edge += fractions[split]
        if u < edge:
            return split
    return SPLITS[-1]  # fractions sum to 1 up to rounding


def corpus_documents(settings: CorpusSettings, archive: Path | None = None) -> Iterator[Document]:
    """The raw documents of the configured source (`archive`: the embedded corpus, fetched)."""
    source = settings.source
    if source == "synthetic":
        # the generator's seed is fixed: the corpus is data, the run's seed only splits it
        yield from corpus.synthetic_documents(settings.synthetic.documents, seed=0)
    elif source == "embedded":
        if archive is None:
            raise ValueError("the embedded corpus must be fetched first (rule fetch_corpus)")
        yield from corpus.embedded_documents(archive, unit=settings.embedded.unit)
    elif source == "files":
        files = settings.files
        yield from corpus.file_documents(list(files.paths), files.format, files.text_field)
    elif source == "hub":
        hub = settings.hub
        yield from corpus.hub_documents(
            hub.path, hub.name, hub.revision, hub.split, text_field=hub.text_field, token_field=hub.token_field,
            streaming=hub.streaming,
        )
    else:
        raise ValueError(f"unknown data.source {source!r}")


def split_documents(
    settings: CorpusSettings,
    seed: int,
    archive: Path | None = None,
    stats: dict[str, int] | None = None,
) -> Iterator[tuple[str, Document]]:
    """(split, document) for every non-empty, first-seen document of the corpus, in corpus order."""
    documents = corpus.clean_documents(corpus_documents(settings, archive), stats=stats)
    for document in documents:
        yield document_split(document, seed, settings.split_fractions), document
