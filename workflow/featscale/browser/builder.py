"""Build the feature browser of one SAE spec from the stores and the study's tables.

Layout of `browser/{sae}/` (opens from the file system: no server, no network):

    index.html, browser.js, browser.css    the page (static, copied from assets/)
    data/manifest.js      JSON: run, SAE, a note for the reader (what a planted family's tokens
                          are; empty otherwise), models, ordered pairs with the report's r and fit,
                          the windows' geometry, each model's census and shards
    data/vocab.js         JSON: the display text of every token id (the run's tokenizer)
    data/tokens.js        binary: the analysis windows' token ids, (n_windows, context)
    data/{model}/index.js binary: per latent, count, max, importance, relative importance,
                          status (0 counted, 1 excluded as rare or constant, 2 dead), collapsed
                          flag and cluster members, and per other model its max similarity and
                          best partner (the rows of points.parquet)
    data/{model}/shard-{k}.js  binary: latents k·S .. (k+1)·S - 1: contexts and histograms
                          (featscale.browser.contexts), loaded when one of them is opened

Data files are scripts that register their payload (featscale.browser.payload), because Chromium
refuses fetch() of file:// URLs. Where the study computed a number (points.parquet: relative
importance, max similarity, best partner, collapsed), the browser shows that number; the rest
(contexts, histograms, counts, rare and dead latents) comes from the feature stores, mapped back
to tokens through the windows the config defines, checked against the stores' token hash.
"""

from __future__ import annotations

import logging
import shutil
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy import sparse

from featscale.analysis.tables import by_model, decoder_directions, saes_by_model
from featscale.analysis.universality import collapsed_latents, relative_importance
from featscale.browser.contexts import ExampleSettings, Windows, latent_examples
from featscale.browser.payload import write_binary, write_json
from featscale.browser.vocabulary import token_strings
from featscale.config import AnalysisSettings
from featscale.data.token_store import open_split
from featscale.features.store import FeatureStore, analysis_windows, counted_tokens, open_features, tokens_sha256
from featscale.io import recorded_sha256, write_atomically
from featscale.names import ordered

FORMAT = "featscale.browser/1"
ASSETS = Path(__file__).with_name("assets")
PAGE_FILES = ("index.html", "browser.js", "browser.css")
MAX_LATENTS_PER_SHARD = 2048  # ~2 MB per shard at the paper's size: one opens in well under a second
MIN_SHARDS = 4  # a few per model even for small SAEs, so the page always loads on demand
CLUSTER_MEMBERS_SHOWN = 100  # per collapsed latent; the page says how many more there are
STATUS = {"counted": 0, "excluded": 1, "dead": 2}
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class BrowserInputs:
    """The files one browser is built from (the feature_browser rule's inputs)."""

    features: Mapping[str, str | Path]
    """{model: feature store}, in the study's order of models."""
    sae_weights: Mapping[str, str | Path]
    """{model: sae_weights.safetensors}: decoder directions, for the collapsed clusters."""
    tokens: str | Path
    """The run's token store."""
    tokenizer: str | Path
    """The run's tokenizer.json."""
    points: str | Path
    """analysis/{sae}/points.parquet."""
    census: str | Path
    """analysis/{sae}/latents.csv."""
    pairs: str | Path
    """analysis/{sae}/pairs.csv."""


@dataclass(frozen=True)
class StudySettings:
    """The settings of the study that the browser must repeat to match its numbers."""

    min_count: int
    """correlation.min_count: fewer firings exclude a latent from the correlation."""
    collapsed_threshold: float
    """analysis.collapsed_threshold: decoder cosine of two latents in one cluster."""
    collapsed_min_neighbours: int
    """analysis.collapsed_min_neighbours."""
    window_seed: int | None
    """The run's seed: it places the random train windows of a store over the train split (the
    analysis split's windows are consecutive and need none)."""


def build_browser(out: str | Path, inputs: BrowserInputs, study: StudySettings, run: str, sae: str, *,
                  examples: ExampleSettings = ExampleSettings(), note: str = "") -> dict[str, Any]:
    """Write the browser into the folder `out` (atomically); returns its manifest. `note`: a line the
    page shows under its title (what a reader should know of this run's tokens)."""
    manifest: dict[str, Any] = {}

    def write(folder: Path) -> None:
        started = time.perf_counter()
        data = folder / "data"
        data.mkdir(parents=True)
        for name in PAGE_FILES:
            shutil.copyfile(ASSETS / name, folder / name)
        models = list(inputs.features)
        stores = {model: open_features(inputs.features[model]) for model in models}
        windows = _check_windows(stores)
        token_ids = _window_tokens(stores[models[0]], inputs.tokens, study.window_seed)
        sizes = {"tokens.js": write_binary(data / "tokens.js", "tokens", {"tokens": token_ids})}
        vocabulary = token_strings(inputs.tokenizer)
        if int(token_ids.max()) >= len(vocabulary):
            raise ValueError(f"token id {int(token_ids.max())} in the windows, but {inputs.tokenizer} has "
                             f"{len(vocabulary)} tokens: is it the tokenizer of this token store?")
        sizes["vocab.js"] = write_json(data / "vocab.js", "vocab", vocabulary)
        points = pd.read_parquet(inputs.points, columns=["source", "target", "latent", "relative_importance",
                                                         "max_similarity", "best_partner", "collapsed"])
        census = pd.read_csv(inputs.census).set_index("model")
        model_entries = {}
        for position, model in enumerate(models):
            entry, model_sizes = _write_model(
                data / model, model, position=position, models=models, store=stores[model],
                sae_weights=inputs.sae_weights[model], points=points, census=census, study=study, windows=windows,
                examples=examples,
            )
            model_entries[model] = entry
            sizes.update({f"{model}/{name}": size for name, size in model_sizes.items()})
            log.info("%s: %d latents in %d shards, %.1f MB, %.0f s so far", model, entry["n_latents"],
                     entry["n_shards"], sum(model_sizes.values()) / 1e6, time.perf_counter() - started)
        first = stores[models[0]]
        manifest.update({
            "format": FORMAT,
            "run": run,
            "sae": sae,
            "note": note,
            "models": models,
            "pairs": _pair_summaries(pd.read_csv(inputs.pairs), models),
            "n_tokens": first.n_tokens,
            "context": windows.context,
            "first_position": windows.first,
            "n_windows": int(first.attrs["n_windows"]),
            "split": first.attrs.get("split", ""),
            "min_count": study.min_count,
            "collapsed_threshold": study.collapsed_threshold,
            "collapsed_min_neighbours": study.collapsed_min_neighbours,
            "examples": examples._asdict(),
            "model_data": model_entries,
        })
        manifest["sizes"] = dict(sizes)  # bytes of each data file but the manifest itself
        sizes["manifest.js"] = write_json(data / "manifest.js", "manifest", manifest)
        manifest["sizes"] = sizes  # the caller's copy counts it too
        log.info("browser of %d models written in %.0f s: %.1f MB of data", len(models),
                 time.perf_counter() - started, sum(sizes.values()) / 1e6)

    write_atomically(out, write)
    return manifest


def run_feature_browser(
    inputs: Mapping[str, Any],
    out: str | Path,
    *,
    run: str,
    sae: str,
    min_count: int,
    analysis: AnalysisSettings,
    run_seed: int,
    planted: bool = False,
) -> dict[str, Any]:
    """Rule feature_browser: the browser of SAE spec `sae`. `inputs`: features (the stores), saes
    (their weights), tokens, tokenizer, points, census, pairs; each store and SAE is matched to its
    model by what it records. `planted`: the models are a planted family (the page says what its
    token contexts are)."""
    features = by_model(inputs["features"])
    study = StudySettings(min_count, analysis.collapsed_threshold, analysis.collapsed_min_neighbours, run_seed)
    files = BrowserInputs(
        features={model: features[model] for model in ordered(features)}, sae_weights=saes_by_model(inputs["saes"]),
        tokens=inputs["tokens"], tokenizer=inputs["tokenizer"], points=inputs["points"], census=inputs["census"],
        pairs=inputs["pairs"],
    )
    return build_browser(out, files, study, run=run, sae=sae, note=PLANTED_NOTE if planted else "")


# the contexts of a planted family's latents are real windows of its tokens, but the tokens only key
# the draws of the planted activations (featscale.planted): they show where a latent fires, not why
PLANTED_NOTE = ("A planted family (docs/planted.md): its features are known and its tokens only index their "
                "random draws, so a latent's contexts show where it fires, not what it means; "
                "analysis/<spec>/truth_recovery.csv names the latent that recovers each planted feature best.")


# ---------------------------------------------------------------- windows and tokens


def _check_windows(stores: Mapping[str, FeatureStore]) -> Windows:
    """The stores' common geometry, after checking that they cover the same tokens."""
    keys = ("n_tokens", "context", "include_position_0", "n_windows", "split", "tokens_sha256")
    reference_model, reference = next(iter(stores.items()))
    for model, store in stores.items():
        missing = [key for key in keys if key not in store.attrs]
        if missing:
            raise ValueError(f"{store.path} lacks {missing} in its attrs: re-encode it (rule encode_features)")
        differ = [key for key in keys if store.attrs[key] != reference.attrs[key]]
        if differ:
            raise ValueError(f"{store.path} and {reference.path} differ in {differ}: {model} and "
                             f"{reference_model} were encoded over other tokens; rerun encode_features")
    first = 0 if reference.attrs["include_position_0"] else 1
    return Windows(int(reference.attrs["context"]), first, reference.n_tokens)


def _window_tokens(store: FeatureStore, tokens: str | Path, window_seed: int | None) -> np.ndarray:
    """The token ids of the store's windows (n_windows, context), recomputed from the token store
    as the config defines them, and checked against the store's hash of its counted tokens."""
    attrs = store.attrs
    split = attrs["split"]
    seed = window_seed if split == "train" else None
    windows = analysis_windows(open_split(tokens, split), store.n_tokens, int(attrs["context"]),
                               bool(attrs["include_position_0"]), random_seed=seed)
    counted = counted_tokens(windows, bool(attrs["include_position_0"]), store.n_tokens)
    if len(windows) != int(attrs["n_windows"]) or tokens_sha256(counted) != attrs["tokens_sha256"]:
        raise ValueError(
            f"the windows that the config defines over split {split!r} of {tokens} (seed {seed}) are not the "
            f"tokens {store.path} was encoded over (their SHA-256 differs): the store is older than the token "
            "store or was encoded under other features.* settings; rerun encode_features"
        )
    dtype = np.uint16 if int(windows.max(initial=0)) <= np.iinfo(np.uint16).max else np.uint32
    return windows.astype(dtype)


# ---------------------------------------------------------------- one model


def _write_model(folder: Path, model: str, *, position: int, models: Sequence[str], store: FeatureStore,
                 sae_weights: str | Path, points: pd.DataFrame, census: pd.DataFrame, study: StudySettings,
                 windows: Windows, examples: ExampleSettings) -> tuple[dict[str, Any], dict[str, int]]:
    """Write one model's index and shards (`position`: its place among `models`, seeding its samples);
    returns its manifest entry and file sizes."""
    folder.mkdir()
    n = store.n_latents
    count = store.stat("count")
    maxima = store.stat("max").astype(np.float32)
    importance = store.stat("importance")
    own = points[points["source"] == model]
    counted = np.zeros(n, dtype=bool)
    counted[own["latent"].to_numpy()] = True
    status = np.where(counted, STATUS["counted"], np.where(count > 0, STATUS["excluded"], STATUS["dead"]))
    _check_census(model, census, status, store)

    # relative importance: the study's for counted latents; for the others the same division
    relative = relative_importance(importance, counted) if counted.any() else np.zeros(n)
    first_rows = own.drop_duplicates("latent")
    relative[first_rows["latent"].to_numpy()] = first_rows["relative_importance"].to_numpy()

    decoder = decoder_directions(sae_weights)  # (n_latents, d_model), the weights verified
    store.check_made_with(sae_weights, recorded_sha256(sae_weights))
    cluster = collapsed_latents(decoder, study.collapsed_threshold, study.collapsed_min_neighbours)
    if len(cluster.collapsed) != n:
        raise ValueError(f"{sae_weights} has {len(cluster.collapsed)} latents, {store.path} has {n}")
    study_flag = np.zeros(n, dtype=bool)
    study_flag[first_rows["latent"].to_numpy()] = first_rows["collapsed"].to_numpy()
    if (study_flag != cluster.collapsed)[counted].any():
        raise ValueError(f"{model}: the collapsed latents of points.parquet differ from those of {sae_weights} at "
                         f"threshold {study.collapsed_threshold}: the universality tables are stale")
    member_offsets, members = _cluster_members(decoder, np.flatnonzero(cluster.collapsed),
                                               study.collapsed_threshold, n)

    index: dict[str, np.ndarray] = {
        "count": count.astype(np.uint32),
        "max": maxima,
        "importance": importance.astype(np.float32),
        "relative_importance": relative.astype(np.float32),
        "status": status.astype(np.uint8),
        "collapsed": cluster.collapsed.astype(np.uint8),
        "neighbours": cluster.neighbours.astype(np.uint32),
        "cluster_offsets": member_offsets,
        "cluster_members": members,
    }
    for target in models:
        if target == model:
            continue
        rows = own[own["target"] == target]
        similarity = np.full(n, np.nan, dtype=np.float32)
        partner = np.full(n, -1, dtype=np.int32)
        similarity[rows["latent"].to_numpy()] = rows["max_similarity"].to_numpy()
        partner[rows["latent"].to_numpy()] = rows["best_partner"].to_numpy()
        index[f"similarity/{target}"] = similarity
        index[f"partner/{target}"] = partner
    sizes = {"index.js": write_binary(folder / "index.js", f"{model}/index", index)}

    # contexts, shard by shard, from the codes turned column-major (one latent's rows together)
    indptr, indices, values = store.rows(0, store.n_tokens)
    if len(indices) < np.iinfo(np.int32).max:  # int32 row pointers keep scipy from widening the indices
        indptr = indptr.astype(np.int32)
    columns = sparse.csr_matrix((values, indices, indptr), shape=(store.n_tokens, n)).tocsc()
    del indptr, indices, values
    columns.sort_indices()  # rows ascending within each latent's column
    per_shard = min(MAX_LATENTS_PER_SHARD, -(-n // MIN_SHARDS))
    n_shards = -(-n // per_shard)
    for shard in range(n_shards):
        latents = range(shard * per_shard, min((shard + 1) * per_shard, n))
        found = latent_examples(columns.indptr, columns.indices, columns.data, latents=latents, maxima=maxima,
                                windows=windows, settings=examples, seed=position)
        sizes[f"shard-{shard}.js"] = write_binary(
            folder / f"shard-{shard}.js", f"{model}/shard-{shard}", found._asdict(),
            meta={"first_latent": latents.start, "n_latents": len(latents)},
        )
    entry = {
        "n_latents": n,
        "latents_per_shard": per_shard,
        "n_shards": n_shards,
        "l0": float(store.attrs.get("l0", np.nan)),
        "census": {key: int(value) for key, value in census.loc[model].items()
                   if key in ("n_latents", "dead", "rare", "counted", "live", "collapsed", "collapsed_counted")},
    }
    return entry, sizes


def _check_census(model: str, census: pd.DataFrame, status: np.ndarray, store: FeatureStore) -> None:
    """latents.csv must count what the store and points.parquet give, else the tables are stale."""
    if model not in census.index:
        raise ValueError(f"latents.csv has no row for {model}: rerun the universality rule")
    row = census.loc[model]
    found = {"n_latents": store.n_latents, "dead": int((status == STATUS["dead"]).sum()),
             "rare": int((status == STATUS["excluded"]).sum()), "counted": int((status == STATUS["counted"]).sum())}
    wrong = {key: (int(row[key]), value) for key, value in found.items() if int(row[key]) != value}
    if wrong:
        raise ValueError(f"{model}: latents.csv and the feature store / points.parquet disagree on "
                         f"{ {k: f'{a} vs {b}' for k, (a, b) in wrong.items()} }: the universality tables are stale")


def _cluster_members(decoder: np.ndarray, latents: np.ndarray, threshold: float,
                     n: int) -> tuple[np.ndarray, np.ndarray]:
    """CSR (offsets (n + 1,) uint32, members int32) of the latents whose decoder cosine with each of
    `latents` is >= threshold (itself excluded), most similar first, at most CLUSTER_MEMBERS_SHOWN.
    In float64, as collapsed_latents decides near the threshold, so the members match its counts."""
    norms = np.linalg.norm(decoder.astype(np.float64), axis=1)
    unit = decoder / np.where(norms > 0, norms, 1.0)[:, None]
    lists: dict[int, np.ndarray] = {}
    for start in range(0, len(latents), 256):
        block = latents[start : start + 256]
        cosine = unit[block] @ unit.T  # (block, n) float64
        cosine[np.arange(len(block)), block] = -np.inf
        for latent, row in zip(block, cosine):
            close = np.flatnonzero(row >= threshold)
            close = close[np.argsort(-row[close], kind="stable")][:CLUSTER_MEMBERS_SHOWN]
            lists[int(latent)] = close
    offsets = np.zeros(n + 1, dtype=np.uint32)
    for latent, close in lists.items():
        offsets[latent + 1] = len(close)
    np.cumsum(offsets, out=offsets)
    members = np.concatenate([lists[i] for i in sorted(lists)]) if lists else np.zeros(0)
    return offsets, members.astype(np.int32)


def _pair_summaries(pairs: pd.DataFrame, models: Sequence[str]) -> list[dict[str, Any]]:
    """Per ordered pair, the report's n, r and fitted (b, c) for both masks (pairs.csv)."""
    out = []
    for source in models:
        for target in models:
            if source == target:
                continue
            entry: dict[str, Any] = {"source": source, "target": target}
            for mask in ("all", "masked"):
                row = pairs[(pairs["source"] == source) & (pairs["target"] == target) & (pairs["mask"] == mask)]
                if len(row):
                    row = row.iloc[0]
                    entry[mask] = {key: _finite(row.get(key)) for key in ("n", "pearson_r", "spearman_rho", "b", "c")}
            out.append(entry)
    return out


def _finite(value: Any) -> float | None:
    """A number for JSON, None for NaN or missing."""
    try:
        value = float(value)
    except (TypeError, ValueError):
        return None
    return value if np.isfinite(value) else None

