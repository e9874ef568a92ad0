"""Documents go to exactly one split by a seeded hash; the BPE is learned offline and is lossless."""

from __future__ import annotations

import json

import pytest

from conftest import data_of, tiny
from featscale.data.build import build_tokenizer
from featscale.data.corpus import synthetic_documents
from featscale.data.splits import document_split, split_documents
from featscale.data.tokenizer import EOT, eot_id, train_bpe

FRACTIONS = {"train": 0.8, "val": 0.1, "analysis": 0.1}


def test_split_of_a_document_is_deterministic_and_follows_the_fractions():
    documents = [f"document number {i}" for i in range(20_000)]
    splits = [document_split(d, 0, FRACTIONS) for d in documents]
    assert splits == [document_split(d, 0, FRACTIONS) for d in documents]
    for split, fraction in FRACTIONS.items():
        assert splits.count(split) / len(splits) == pytest.approx(fraction, abs=0.01)
    reseeded = [document_split(d, 1, FRACTIONS) for d in documents]
    assert 0.2 < sum(a != b for a, b in zip(splits, reseeded)) / len(splits) < 0.45
    assert document_split([1, 2, 3], 0, FRACTIONS) == document_split([1, 2, 3], 0, FRACTIONS)


def test_split_does_not_depend_on_corpus_order():
    data = data_of({"source": "synthetic", "synthetic": {"documents": 200}, "split_fractions": FRACTIONS}).corpus()
    forward = dict((doc, split) for split, doc in split_documents(data, 0))
    for doc, split in forward.items():
        assert document_split(doc, 0, FRACTIONS) == split


def test_bpe_is_lossless_has_end_of_text_and_the_asked_size():
    texts = synthetic_documents(300, seed=0)
    tokenizer = train_bpe(texts, vocab_size=600)
    assert tokenizer.get_vocab_size() == 600
    assert eot_id(tokenizer) == tokenizer.token_to_id(EOT)
    for text in texts[:20] + ["Unseen wörds, émoji 🙂 and\ttabs\n"]:
        ids = tokenizer.encode(text, add_special_tokens=False).ids
        assert tokenizer.decode(ids) == text


def test_tokenizer_sees_only_the_train_split(tmp_path):
    data = data_of({"source": "synthetic", "synthetic": {"documents": 400}, "split_fractions": FRACTIONS}).corpus()
    config = tiny("tokenizer", kind="bpe", vocab_size=500, train_documents=10_000)
    build_tokenizer(data, config, run_seed=0, out=tmp_path / "a.json")
    train_only = [doc for split, doc in split_documents(data, 0) if split == "train"]
    reference = train_bpe(train_only, 500)
    assert json.loads((tmp_path / "a.json").read_text())["model"] == json.loads(reference.to_str())["model"]
    # and it is the same tokenizer every time
    build_tokenizer(data, config, run_seed=0, out=tmp_path / "b.json")
    assert (tmp_path / "a.json").read_bytes() == (tmp_path / "b.json").read_bytes()
