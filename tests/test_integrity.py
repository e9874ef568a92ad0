"""Nothing wrong gets through: a changed byte in any artifact stops the job that reads it, naming the
file and how to make it again; values that cannot be stop the job naming the latent and the pair;
a killed correlate leaves no worker behind, and its rerun is identical."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import zarr
from safetensors.torch import save_file

from conftest import CONFIGS, data_of, settings_of, snakemake, tiny
from featscale.analysis.correlation import correlate, counted_latents
from featscale.analysis.tables import decoder_directions, universality_points
from featscale.config import CorrelationSettings
from featscale.data.build import build_token_store, build_tokenizer
from featscale.data.sampler import heldout_windows
from featscale.data.token_store import open_split
from featscale.features.encode import FeatureWriter
from featscale.features.store import open_features, tokens_sha256
from featscale.io import ArtifactError, partial_path, recorded_sha256, verify_safetensors, write_atomically
from featscale.models.export import export_hf
from featscale.models.gpt import GPT, GPTConfig, load_model, save_model
from featscale.saes.base import SparseAutoencoder, make_sae
from featscale.saes.train import sae_config_from_spec

SYNTHETIC = data_of({"source": "synthetic", "synthetic": {"documents": 300}, "chunk_tokens": 1024, "shard_chunks": 2,
                     "split_fractions": {"train": 0.6, "val": 0.2, "analysis": 0.2},
                     "max_tokens": {"train": None, "val": None, "analysis": None}}).store()
ARCH = {"vocab_size": 300, "context": 16, "width": 16, "n_layers": 1, "head_size": 8}


def flip(path: Path, at: int | None = None, count: int = 4) -> None:
    """Invert `count` bytes of a file, in its middle unless `at` says where."""
    data = bytearray(path.read_bytes())
    at = len(data) // 2 if at is None else at
    for i in range(at, at + count):
        data[i] ^= 0xFF
    path.write_bytes(bytes(data))


def chunk(store: Path, array: str, index: str = "0") -> Path:
    return store / array / "c" / index


def copy(store: Path, folder: Path) -> Path:
    target = folder / store.name
    shutil.copytree(store, target)
    return target


def names_fix(message: str, path: Path) -> bool:
    """The message names the artifact and the command that makes it again."""
    return str(path) in message and f"rm -rf '{path}' && snakemake '{path}'" in message


# ---- fixtures: one artifact of each kind ----------------------------------------------------------


@pytest.fixture(scope="module")
def token_store(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("tokens")
    tokenizer = folder / "tokenizer.json"
    build_tokenizer(SYNTHETIC.corpus, tiny("tokenizer", kind="bpe", vocab_size=300, train_documents=1000), 0, tokenizer)
    build_token_store(SYNTHETIC, 0, tokenizer, folder / "tokens.zarr")
    return folder / "tokens.zarr"


def write_codes(path: Path, model: str, seed: int, n_tokens: int = 2000, n_latents: int = 120, l0: float = 8,
                sae_sha256: str | None = None) -> Path:
    """A feature store of random sparse codes over tokens 0 .. n_tokens - 1, written in batches."""
    rng = np.random.default_rng(seed)
    rate = rng.uniform(0.2, 1.8, n_latents) * l0 / n_latents
    writer = FeatureWriter(path, n_latents)
    for start in range(0, n_tokens, 1000):
        rows = min(1000, n_tokens - start)
        codes = (rng.random((rows, n_latents)) < rate) * rng.exponential(1.0, (rows, n_latents))
        writer.add(torch.from_numpy(codes.astype(np.float32)))
    writer.finish(torch.ones(n_latents), {"model": model, "sae": "main", "tokens_sha256": tokens_sha256(np.arange(n_tokens)),
                                          "model_sha256": f"{model}-weights", "sae_sha256": sae_sha256 or f"{model}-sae"})
    return path


def correlation_settings(**changes):
    return tiny("correlation", **{"min_count": 3, "block_latents": 40, "token_chunk": 700, "matrix_dtype": "float32",
                                  "workers": 1} | changes)


@pytest.fixture(scope="module")
def stores(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("stores")
    a, b = write_codes(folder / "a.zarr", "w8", 1), write_codes(folder / "b.zarr", "w16", 2)
    correlate(a, b, folder / "r.zarr", correlation_settings())
    return {"a": a, "b": b, "r": folder / "r.zarr"}


@pytest.fixture(scope="module")
def model_files(tmp_path_factory) -> tuple[Path, Path]:
    folder = tmp_path_factory.mktemp("model")
    torch.manual_seed(0)
    save_model(GPT(GPTConfig(**ARCH)), folder / "model.safetensors", folder / "config.json", {"model": ARCH})
    return folder / "model.safetensors", folder / "config.json"


@pytest.fixture(scope="module")
def sae_folder(tmp_path_factory) -> Path:
    config = sae_config_from_spec(settings_of("tiny").saes["main"], 16, {"model": "w16", "layer": 0, "site": "resid_pre"})
    config.input_scale = 1.5
    torch.manual_seed(0)
    return make_sae(config).save(tmp_path_factory.mktemp("sae") / "main")


# ---- every array is checksummed, every final file records its hash ---------------------------------


def test_every_array_of_every_store_carries_zstd_checksums(token_store, stores):
    def arrays(group):
        for _, member in group.members(max_depth=None):
            if isinstance(member, zarr.Array):
                yield member

    for store in (token_store, *stores.values()):
        found = list(arrays(zarr.open_group(str(store), mode="r")))
        assert found
        for array in found:
            codecs = array.metadata.codecs
            inner = codecs[0].codecs if type(codecs[0]).__name__ == "ShardingCodec" else codecs
            zstd = [codec for codec in inner if type(codec).__name__ == "ZstdCodec"]
            assert zstd and zstd[0].checksum, (store, array.path, codecs)


def test_safetensors_files_record_their_hash_and_their_configs(model_files, sae_folder, tmp_path):
    weights, config = model_files
    assert verify_safetensors(weights, "train_model", config=config) == recorded_sha256(weights)
    assert len(recorded_sha256(sae_folder / "sae_weights.safetensors")) == 64
    exported = export_hf(load_model(weights, config), tmp_path / "hf")
    verify_safetensors(exported / "model.safetensors", "export_hf", config=exported / "config.json")


SAVE_IN_A_NEW_PROCESS = """
import sys, torch
from featscale.io import write_safetensors
from safetensors.torch import save_file
tensors = {"w": torch.arange(12.0).reshape(3, 4), "b": torch.zeros(3)}
write_safetensors(sys.argv[1], lambda path, metadata: save_file(tensors, str(path), metadata=metadata),
                  metadata={"format": "pt", "featscale.note": "x"}, config=sys.argv[2])
"""


def test_the_same_tensors_give_the_same_bytes_in_every_process(tmp_path):
    # safetensors writes metadata in a Rust HashMap's order, which changes from process to process
    config = tmp_path / "config.json"
    config.write_text("{}")
    files = [tmp_path / f"{i}.safetensors" for i in range(6)]
    for path in files:
        subprocess.run([sys.executable, "-c", SAVE_IN_A_NEW_PROCESS, str(path), str(config)], check=True,
                       env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[1] / "workflow")})
    assert len({path.read_bytes() for path in files}) == 1
    verify_safetensors(files[0], "train_model", config=config)


# ---- a changed byte in each kind of artifact: the consumer stops, naming it -----------------------


def test_a_changed_token_store_chunk_stops_its_reader(token_store, tmp_path):
    store = copy(token_store, tmp_path)
    flip(chunk(store, "val"), at=40)
    with pytest.raises(ArtifactError) as refused:
        heldout_windows(open_split(store, "val"), 1000, 16)  # what evaluate_sae and feature_budget read
    assert names_fix(str(refused.value), store) and "rule tokenize_corpus" in str(refused.value)


def test_a_missing_token_store_shard_is_noticed_when_the_split_is_opened(token_store, tmp_path):
    store = copy(token_store, tmp_path)
    chunk(store, "train").unlink()
    with pytest.raises(ArtifactError, match=r"lacks 1 of the \d+ chunk files of its array 'train'"):
        open_split(store, "train")


def test_a_changed_feature_store_values_chunk_stops_correlate(stores, tmp_path):
    store = copy(stores["a"], tmp_path)
    flip(chunk(store, "values"))
    for workers in (1, 2):
        with pytest.raises(ArtifactError) as refused:
            correlate(store, stores["b"], tmp_path / "r.zarr", correlation_settings(workers=workers, block_latents=20), workers=workers)
        assert names_fix(str(refused.value), store) and "Zstd" in str(refused.value)
    assert not list(tmp_path.glob("r.zarr*"))


def test_sums_that_no_codes_can_have_are_refused(stores, tmp_path):
    store = copy(stores["a"], tmp_path)
    group = zarr.open_group(str(store), mode="r+")
    squares = group["sum_squares"][:]
    squares[5] = 0  # below (sum / n)² · n: a negative variance
    group["sum_squares"][:] = squares
    with pytest.raises(ArtifactError, match="records sums for latent 5 that no codes can have"):
        counted_latents(open_features(store), 3)


def test_a_changed_feature_store_statistic_stops_its_reader(stores, tmp_path):
    store = copy(stores["a"], tmp_path)
    flip(chunk(store, "count"), at=20)
    with pytest.raises(ArtifactError) as refused:
        counted_latents(open_features(store), 3)
    assert names_fix(str(refused.value), store) and "rule encode_features" in str(refused.value)


def test_a_missing_feature_store_chunk_and_an_older_format_are_refused_on_opening(stores, tmp_path):
    missing = copy(stores["a"], tmp_path / "missing")
    chunk(missing, "indices").unlink()
    with pytest.raises(ArtifactError, match="lacks 1 of the 1 chunk files of its array 'indices'"):
        open_features(missing)
    older = copy(stores["a"], tmp_path / "older")
    zarr.open_group(str(older), mode="r+").attrs["format"] = "featscale.features/1"
    with pytest.raises(ArtifactError, match="is not a feature store of format featscale.features/2 "
                                            r"\(it records 'featscale.features/1'\)"):
        open_features(older)


def test_a_changed_correlation_store_chunk_stops_universality(stores, tmp_path):
    store = copy(stores["r"], tmp_path)
    flip(chunk(store, "a_max_similarity"), at=20)
    masks = {"w8": np.zeros(120, dtype=bool), "w16": np.zeros(120, dtype=bool)}
    with pytest.raises(ArtifactError) as refused:
        universality_points({"w8": stores["a"], "w16": stores["b"]}, {("w8", "w16"): store}, masks, min_count=3)
    assert names_fix(str(refused.value), store) and "rule correlate" in str(refused.value)


def test_a_changed_byte_in_a_model_stops_its_loader(model_files, tmp_path):
    weights, config = (shutil.copy(path, tmp_path) for path in model_files)
    weights, config = Path(weights), Path(config)
    flip(weights, at=weights.stat().st_size - 100)  # a weight
    with pytest.raises(ArtifactError) as refused:
        load_model(weights, config)
    message = str(refused.value)
    assert "has changed since it was written: it records SHA-256" in message and names_fix(message, weights)
    assert "rule train_model" in message


def test_a_changed_tensor_type_in_a_header_or_a_changed_config_stops_the_loader(model_files, tmp_path):
    weights, config = (Path(shutil.copy(path, tmp_path)) for path in model_files)
    weights.write_bytes(weights.read_bytes().replace(b'"F32"', b'"I32"', 1))  # still a readable file
    with pytest.raises(ArtifactError, match="has changed since it was written"):
        load_model(weights, config)
    weights, _ = (Path(shutil.copy(path, tmp_path)) for path in model_files)
    config.write_text(config.read_text().replace('"width": 16', '"width": 17'))
    with pytest.raises(ArtifactError, match=f"{config} is not the config written with model.safetensors"):
        load_model(weights, config)


def test_weights_without_a_recorded_hash_or_truncated_are_refused(model_files, tmp_path):
    _, config = model_files
    unrecorded = tmp_path / "model.safetensors"
    save_file(GPT(GPTConfig(**ARCH)).state_dict(), str(unrecorded))
    with pytest.raises(ArtifactError, match="records no SHA-256 of its content"):
        load_model(unrecorded, config)
    truncated = tmp_path / "truncated.safetensors"
    truncated.write_bytes(model_files[0].read_bytes()[:6])
    with pytest.raises(ArtifactError, match="is not a readable safetensors file"):
        load_model(truncated, config)


def test_a_changed_byte_in_an_sae_stops_every_reader(sae_folder, tmp_path):
    folder = Path(shutil.copytree(sae_folder, tmp_path / "main"))
    flip(folder / "sae_weights.safetensors", at=(folder / "sae_weights.safetensors").stat().st_size - 64)
    with pytest.raises(ArtifactError) as refused:
        SparseAutoencoder.load(folder)  # train_sae's consumers: evaluate_sae, encode_features, feature_budget
    assert names_fix(str(refused.value), folder / "sae_weights.safetensors") and "rule train_sae" in str(refused.value)
    with pytest.raises(ArtifactError):
        decoder_directions(folder / "sae_weights.safetensors")  # universality's reader


def test_an_edited_sae_config_is_refused(sae_folder, tmp_path):
    folder = Path(shutil.copytree(sae_folder, tmp_path / "main"))
    config = folder / "cfg.json"
    config.write_text(config.read_text().replace('"input_scale": 1.5', '"input_scale": 1.25'))
    with pytest.raises(ArtifactError, match="cfg.json is not the config written with sae_weights.safetensors"):
        SparseAutoencoder.load(folder)


# ---- values that cannot be, and artifacts of other inputs ----------------------------------------


def test_an_r_outside_minus_one_to_one_stops_correlate_naming_the_latents_and_the_pair(stores, tmp_path):
    store = copy(stores["a"], tmp_path)
    group = zarr.open_group(str(store), mode="r+")
    n, sums, squares = 2000, group["sum"][:], group["sum_squares"][:]
    mean = sums[17] / n
    squares[17] = n * (mean**2 + (squares[17] / n - mean**2) / 1e4)  # a 100x smaller spread than its codes have
    group["sum_squares"][:] = squares
    with pytest.raises(ArtifactError) as refused:
        correlate(store, stores["b"], tmp_path / "r.zarr", correlation_settings(min_count=1))
    message = str(refused.value)
    assert message.startswith("pair w8__w16: r = ") and "for latent 17 of w8 and latent" in message
    assert "outside [-1, 1]" in message and str(store) in message


def test_a_max_similarity_or_importance_that_cannot_be_stops_universality(stores, tmp_path):
    masks = {"w8": np.zeros(120, dtype=bool), "w16": np.zeros(120, dtype=bool)}
    correlations = copy(stores["r"], tmp_path)
    group = zarr.open_group(str(correlations), mode="r+")
    similarity = group["a_max_similarity"][:]
    similarity[3] = 1.5
    group["a_max_similarity"][:] = similarity
    latent = group["a_latent"][3]
    with pytest.raises(ArtifactError, match=rf"pair \(w8, w16\): latent {latent} of w8 has max similarity 1.5, "
                                            "which cannot be"):
        universality_points({"w8": stores["a"], "w16": stores["b"]}, {("w8", "w16"): correlations}, masks, min_count=3)
    features = copy(stores["a"], tmp_path / "features")
    group = zarr.open_group(str(features), mode="r+")
    importance = group["importance"][:]
    importance[latent] = np.inf
    group["importance"][:] = importance
    with pytest.raises(ArtifactError, match=rf"latent {latent} of w8 has importance inf"):
        universality_points({"w8": features, "w16": stores["b"]}, {("w8", "w16"): stores["r"]}, masks, min_count=3)


def test_stores_of_other_saes_are_refused(stores, tmp_path):
    with pytest.raises(ArtifactError, match="holds the codes of another SAE than"):
        open_features(stores["a"]).check_made_with(tmp_path / "sae_weights.safetensors", "f" * 64)
    other = write_codes(tmp_path / "a.zarr", "w8", 1, sae_sha256="another-sae")
    masks = {"w8": np.zeros(120, dtype=bool), "w16": np.zeros(120, dtype=bool)}
    with pytest.raises(ArtifactError, match=f"was computed from other codes than {other} holds now"):
        universality_points({"w8": other, "w16": stores["b"]}, {("w8", "w16"): stores["r"]}, masks, min_count=3)


# ---- each attempt writes its own temporary; a killed correlate leaves no worker --------------------


def test_each_attempt_writes_under_its_own_name_and_clears_earlier_ones(tmp_path):
    out = tmp_path / "r.zarr"
    assert partial_path(out) != partial_path(out)
    earlier = partial_path(out)
    earlier.mkdir()
    seen = []
    write_atomically(out, lambda partial: (seen.append(partial), partial.mkdir()))
    assert seen[0] != earlier and not earlier.exists() and out.is_dir()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.zarr"]


def children(pid: int) -> list[int]:
    """Every live process whose parent is `pid` (Linux /proc)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid and fields[0] != "Z":
            found.append(int(stat.parent.name))
    return found


def survivors(pids: list[int], seconds: float = 10) -> list[int]:
    """Those of `pids` still alive after waiting up to `seconds` for them to end."""
    deadline = time.monotonic() + seconds
    while any(alive(pid) for pid in pids) and time.monotonic() < deadline:
        time.sleep(0.1)
    return [pid for pid in pids if alive(pid)]


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


RUN_CORRELATE = """
import sys
from featscale.analysis.correlation import correlate
from featscale.config import CorrelationSettings
settings = CorrelationSettings.from_dict({settings!r})
correlate(sys.argv[1], sys.argv[2], sys.argv[3], settings, workers=2)
"""


@pytest.fixture(scope="module")
def long_pair(tmp_path_factory) -> tuple[Path, Path, dict]:
    """Two stores whose correlation takes seconds per block (many small token chunks)."""
    folder = tmp_path_factory.mktemp("long")
    a = write_codes(folder / "a.zarr", "w8", 3, n_tokens=12000, n_latents=300, l0=20)
    b = write_codes(folder / "b.zarr", "w16", 4, n_tokens=12000, n_latents=300, l0=20)
    return a, b, correlation_settings(block_latents=50, token_chunk=32, workers=2).to_dict()


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_a_killed_correlate_leaves_no_worker_and_its_rerun_is_identical(long_pair, tmp_path):
    a, b, settings = long_pair
    script = RUN_CORRELATE.format(settings=settings)
    reference, out = tmp_path / "reference.zarr", tmp_path / "r.zarr"
    correlate(a, b, reference, CorrelationSettings.from_dict(settings), workers=1)  # the same blocks, in-process

    job, workers = start_correlate(long_pair, out)
    time.sleep(2)  # the workers are in their blocks
    assert job.poll() is None and not out.exists(), "the job ended before it could be killed: make it longer"
    everyone = children(job.pid)
    job.send_signal(signal.SIGKILL)
    job.wait()
    assert survivors(everyone) == [], "processes of the killed job live on"
    assert set(workers) <= set(everyone) and list(tmp_path.glob("r.zarr.partial*"))  # it was killed mid-way

    subprocess.run([sys.executable, "-c", script, str(a), str(b), str(out)], check=True, timeout=900)
    assert not list(tmp_path.glob("r.zarr.partial*"))
    files = sorted(p.relative_to(reference) for p in reference.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(out) for p in out.rglob("*") if p.is_file())
    for name in files:
        assert (reference / name).read_bytes() == (out / name).read_bytes(), name


def start_correlate(long_pair, out: Path) -> tuple[subprocess.Popen, list[int]]:
    """correlate with two workers in a process of its own, once both workers run: (job, worker pids)."""
    a, b, settings = long_pair
    job = subprocess.Popen([sys.executable, "-c", RUN_CORRELATE.format(settings=settings), str(a), str(b), str(out)],
                           stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 300
    while len(workers := [pid for pid in children(job.pid) if b"spawn_main" in Path(f"/proc/{pid}/cmdline").read_bytes()]) < 2:
        assert time.monotonic() < deadline and job.poll() is None, "the workers never started"
        time.sleep(0.1)
    return job, workers


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_a_worker_killed_by_the_oom_killer_ends_the_job_with_one_line_and_no_worker_left(long_pair, tmp_path):
    job, workers = start_correlate(long_pair, tmp_path / "r.zarr")
    time.sleep(2)
    everyone = children(job.pid)
    os.kill(workers[0], signal.SIGKILL)  # what the kernel's out-of-memory killer does
    _, stderr = job.communicate(timeout=300)
    assert job.returncode != 0 and "a worker process of correlate died in its block" in stderr, stderr[-2000:]
    assert "lower `correlation.block_latents` or `correlation.workers`" in stderr
    assert survivors(everyone) == [] and not (tmp_path / "r.zarr").exists()


def test_a_failing_block_stops_every_worker_at_once(long_pair, tmp_path):
    a, b, _ = long_pair
    corrupt = copy(a, tmp_path)
    group = zarr.open_group(str(corrupt), mode="r+")
    n, sums, squares = 12000, group["sum"][:], group["sum_squares"][:]
    means = sums[:50] / n  # the first block's latents get a 100x smaller spread than their codes have: it fails,
    squares[:50] = n * (means**2 + (squares[:50] / n - means**2) / 1e4)  # the others would run to their end
    group["sum_squares"][:] = squares
    with pytest.raises(ArtifactError, match="outside \\[-1, 1\\]"):
        correlate(corrupt, b, tmp_path / "r.zarr", correlation_settings(block_latents=50, token_chunk=32), workers=2)
    workers = [pid for pid in children(os.getpid()) if b"spawn_main" in Path(f"/proc/{pid}/cmdline").read_bytes()]
    assert workers == [] and not list(tmp_path.glob("r.zarr*"))


# ---- as a user meets it: the consumer job stops with one line ---------------------------------------

CONSUMERS = {
    # artifact (under results/tiny), how to damage it, the consumer's target, its rule, the message
    "features_values_chunk": ("features/w16/main.zarr", "values/c/0", "correlations/main/w16__w32.zarr", "correlate",
                              "results/tiny/features/w16/main.zarr cannot be read (RuntimeError: Zstd decompression error"),
    "model_weights": ("models/w16/model.safetensors", "", "saes/w16/main/eval.json", "evaluate_sae",
                      "results/tiny/models/w16/model.safetensors has changed since it was written"),
    "sae_weights": ("saes/w16/main/sae_weights.safetensors", "", "features/w16/main.zarr", "encode_features",
                    "results/tiny/saes/w16/main/sae_weights.safetensors has changed since it was written"),
    "token_store_chunk": ("data/tokens.zarr", "val/c/0", "saes/w16/main/eval.json", "evaluate_sae",
                          "results/tiny/data/tokens.zarr cannot be read"),
    "correlation_max_similarity": ("correlations/main/w16__w32.zarr", "a_max_similarity/c/0", "analysis/main/pairs.csv",
                                   "universality", "results/tiny/correlations/main/w16__w32.zarr cannot be read"),
}


@pytest.mark.slow
@pytest.mark.parametrize("case", CONSUMERS)
def test_a_damaged_artifact_stops_its_consumer_job_with_one_line(case, tiny_run, tmp_path):
    artifact, part, target, rule, expected = CONSUMERS[case]
    shutil.copytree(tiny_run / "results", tmp_path / "results")
    shutil.copytree(tiny_run / ".snakemake" / "metadata", tmp_path / ".snakemake" / "metadata")
    damaged = tmp_path / "results" / "tiny" / artifact / part
    flip(damaged, at=40 if part else damaged.stat().st_size - 100)
    done = snakemake(f"results/tiny/{target}", "--force", "--allowed-rules", rule, "--cores", "2",
                     "--configfile", str(CONFIGS["tiny"]), cwd=tmp_path, check=False)
    output = done.stdout + done.stderr
    assert done.returncode != 0 and f"Error in rule {rule}: {expected}" in output, output[-3000:]
    assert f"rm -rf 'results/tiny/{artifact}' && snakemake 'results/tiny/{artifact}'" in output
    assert "Traceback" not in output
    log = json.dumps([p.read_text() for p in (tmp_path / "results" / "tiny" / "logs" / rule).rglob("*.log")])
    assert "Traceback" in log and "ArtifactError" in log
