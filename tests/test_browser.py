"""The feature browser: the builder on small planted stores, then the tiny run's page in headless Chromium."""

from __future__ import annotations

import dataclasses
import json
import shutil
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import zarr
from safetensors.numpy import save_file

from conftest import tiny
from featscale.analysis.correlation import correlate
from featscale.analysis.tables import latent_census, pair_table, universality_points
from featscale.browser import BrowserInputs, StudySettings, build_browser
from featscale.browser.contexts import ExampleSettings, Windows
from featscale.browser.payload import pack_arrays, read_binary, read_json, unpack_arrays
from featscale.browser.vocabulary import token_strings
from featscale.data.token_store import FORMAT as TOKENS_FORMAT
from featscale.data.token_store import open_split
from featscale.data.tokenizer import train_bpe
from featscale.features.encode import FeatureWriter
from featscale.features.store import analysis_windows, counted_tokens, open_features, tokens_sha256

CONTEXT, N_TOKENS = 8, 40  # position 0 left out: 7 counted per window, 6 windows, the last counted in part
MIN_COUNT, THRESHOLD, MIN_NEIGHBOURS = 3, 0.9, 3
DEAD, RARE, BUSY, PLANTED = 0, 1, 3, 5  # latents of w8 with a known story; B's PLANTED follows A's BUSY
CLUSTER = [4, 6, 8, 9]  # w8 latents that share one decoder direction
TEXTS = ["the cat sat on the mat. ", "a dog ran to the park, then home. ", "naïve café über — ok\n"] * 40


@pytest.fixture(scope="session")
def tiny_results(tiny_run) -> Path:
    """The tiny run's results/tiny/ (the session's one run of the whole tiny config)."""
    return tiny_run / "results" / "tiny"


# ---------------------------------------------------------------- a small study, planted


def _write_store(path: Path, codes: np.ndarray, model: str, windows: np.ndarray, decoder: np.ndarray) -> None:
    writer = FeatureWriter(path, codes.shape[1])
    for start in range(0, len(codes), 13):  # uneven batches, as encode_features writes them
        writer.add(torch.from_numpy(codes[start : start + 13]))
    writer.finish(torch.from_numpy(np.linalg.norm(decoder, axis=1)), {
        "model": model, "sae": "main", "split": "analysis", "n_windows": len(windows), "context": CONTEXT,
        "include_position_0": False, "tokens_sha256": tokens_sha256(counted_tokens(windows, False, N_TOKENS)),
    })


def _codes(rng: np.random.Generator, n_latents: int) -> np.ndarray:
    codes = (rng.random((N_TOKENS, n_latents)) < 0.25) * rng.uniform(0.1, 1.0, (N_TOKENS, n_latents))
    return codes.astype(np.float32)


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    """Token store, tokenizer, two feature stores and SAEs, and the study's own tables over them."""
    root = tmp_path_factory.mktemp("browser-study")
    rng = np.random.default_rng(0)
    tokenizer = train_bpe(TEXTS, 300)
    tokenizer.save(str(root / "tokenizer.json"))
    ids = np.array(tokenizer.encode("".join(TEXTS)).ids[:60], dtype=np.uint16)
    group = zarr.open_group(str(root / "tokens.zarr"), mode="w", zarr_format=3)
    group.attrs["format"] = TOKENS_FORMAT
    group.create_array("analysis", data=ids, chunks=(16,), dimension_names=["token"])
    windows = analysis_windows(open_split(root / "tokens.zarr", "analysis"), N_TOKENS, CONTEXT, False, None)

    a, b = _codes(rng, 48), _codes(rng, 40)
    a[:, DEAD] = 0
    a[:, RARE] = 0
    a[17, RARE] = 0.7  # one firing: below min_count
    a[:, BUSY] = rng.permutation(np.arange(1, N_TOKENS + 1)) / 10  # active on every row, all values distinct
    a[5, BUSY] = 0  # ... but one, so that it varies and is counted
    b[:, PLANTED] = a[:, BUSY] * 0.5
    decoders = {"w8": rng.standard_normal((48, 16)).astype(np.float32),
                "w16": rng.standard_normal((40, 16)).astype(np.float32)}
    decoders["w8"][CLUSTER] = decoders["w8"][CLUSTER[0]] * np.array([[1.0], [2.0], [0.5], [1.5]], dtype=np.float32)
    paths = {}
    for model, codes in (("w8", a), ("w16", b)):
        paths[model] = root / "features" / f"{model}.zarr"
        _write_store(paths[model], codes, model, windows, decoders[model])
        weights = root / "saes" / model / "sae_weights.safetensors"
        weights.parent.mkdir(parents=True)
        save_file({"W_dec": decoders[model]}, str(weights))
    correlate(paths["w8"], paths["w16"], root / "w8__w16.zarr",
              tiny("correlation", min_count=MIN_COUNT, matrix_dtype="none", workers=1))
    saes = {m: root / "saes" / m / "sae_weights.safetensors" for m in paths}
    analysis = tiny("analysis", collapsed_threshold=THRESHOLD, collapsed_min_neighbours=MIN_NEIGHBOURS,
                    talk_compatible=False, bootstrap_resamples=0, bootstrap_fit_resamples=0, confidence=0.95)
    census, masks = latent_census(paths, saes, MIN_COUNT, analysis)
    points = universality_points(paths, {("w8", "w16"): root / "w8__w16.zarr"}, masks, MIN_COUNT)
    pairs = pair_table(points, analysis, seed=0)
    points.to_parquet(root / "points.parquet", index=False)
    census.to_csv(root / "latents.csv", index=False)
    pairs.to_csv(root / "pairs.csv", index=False)
    inputs = BrowserInputs(features=paths, sae_weights=saes, tokens=root / "tokens.zarr",
                           tokenizer=root / "tokenizer.json", points=root / "points.parquet",
                           census=root / "latents.csv", pairs=root / "pairs.csv")
    manifest = build_browser(root / "browser", inputs, StudySettings(MIN_COUNT, THRESHOLD, MIN_NEIGHBOURS, None),
                             run="unit", sae="main")
    return {"root": root, "inputs": inputs, "manifest": manifest, "codes": {"w8": a, "w16": b}, "points": points,
            "windows": windows, "tokenizer": tokenizer, "out": root / "browser"}


def _latent(study, model: str, latent: int) -> dict[str, np.ndarray]:
    """The shard arrays of one latent, as the page slices them."""
    entry = study["manifest"]["model_data"][model]
    shard = latent // entry["latents_per_shard"]
    _, arrays, meta = read_binary(study["out"] / "data" / model / f"shard-{shard}.js")
    local = latent - meta["first_latent"]
    lo, hi = arrays["offsets"][local], arrays["offsets"][local + 1]
    return {"rows": arrays["rows"][lo:hi], "values": arrays["values"][lo:hi], "band": arrays["band"][lo:hi],
            "shades": arrays["shades"][lo:hi], "histogram": arrays["histogram"][local]}


def _index(study, model: str) -> dict[str, np.ndarray]:
    return read_binary(study["out"] / "data" / model / "index.js")[1]


# ---------------------------------------------------------------- the builder


def test_rows_map_back_to_their_windows_positions_and_stop_at_the_window_edges():
    windows = Windows(context=8, first=1, n_tokens=40)  # 7 counted rows per window
    rows, counted = windows.neighbours(np.array([7, 39]), radius=2)
    # row 7 is position 1 of window 1: position 0 (row "6.x") is not counted, nor is window 0's row 6
    assert rows[0, 2:].tolist() == [7, 8, 9] and counted[0].tolist() == [False, False, True, True, True]
    # row 39 is position 5 of window 5; rows 40, 41 (positions 6, 7) lie past n_tokens
    assert rows[1, :3].tolist() == [37, 38, 39] and counted[1].tolist() == [True, True, True, False, False]


def test_top_contexts_are_the_largest_activations_largest_first_starting_at_the_argmax(study):
    codes = study["codes"]["w8"][:, BUSY]
    shown = _latent(study, "w8", BUSY)
    top = shown["band"] == 0
    assert top.sum() == 20
    expected = np.argsort(-codes, kind="stable")[:20]
    assert shown["rows"][top].tolist() == expected.tolist()
    np.testing.assert_array_equal(shown["values"][top], codes[expected])
    assert shown["rows"][0] == open_features(study["inputs"].features["w8"]).stat("argmax")[BUSY]


def test_sampled_contexts_come_one_from_each_lower_rank_band(study):
    codes = study["codes"]["w8"][:, BUSY]
    shown = _latent(study, "w8", BUSY)
    sampled = shown["band"] > 0
    below = np.sort(codes[codes > 0])[:-20]  # the 19 activations under the top 20, ascending
    assert shown["band"][sampled].tolist() == list(range(1, 11))  # 19 ranks in 10 bands: none empty
    edges = np.arange(11) * len(below) // 10
    for band, value in zip(shown["band"][sampled], shown["values"][sampled]):
        rank = int(np.flatnonzero(below == value)[0])
        assert edges[band - 1] <= rank < edges[band]
    np.testing.assert_array_equal(codes[shown["rows"][sampled]], shown["values"][sampled])


def test_shades_show_the_latents_activation_around_the_peak_within_its_window(study):
    codes = study["codes"]["w8"][:, BUSY]
    top = codes.max()
    shown = _latent(study, "w8", BUSY)
    radius = ExampleSettings().radius
    windows = Windows(CONTEXT, 1, N_TOKENS)
    for row, shades in zip(shown["rows"], shown["shades"]):
        around, counted = windows.neighbours(np.array([row]), radius)
        expected = np.where(counted[0], np.ceil(255 * codes[around[0]] / top), 0)
        np.testing.assert_array_equal(shades, expected)
        assert shades[radius] > 0  # the peak itself is always shaded
        assert (shades[: radius - CONTEXT] == 0).all()  # further back than a window: nothing


def test_histogram_counts_every_activation_and_dead_latents_have_no_contexts(study):
    codes = study["codes"]["w8"]
    for latent in (RARE, BUSY, 20):
        assert _latent(study, "w8", latent)["histogram"].sum() == (codes[:, latent] > 0).sum()
    dead = _latent(study, "w8", DEAD)
    assert len(dead["rows"]) == 0 and dead["histogram"].sum() == 0
    rare = _latent(study, "w8", RARE)
    assert rare["rows"].tolist() == [17] and rare["values"].tolist() == [np.float32(0.7)]


def test_the_index_carries_the_studys_numbers_and_status(study):
    points = study["points"]
    for source, target in (("w8", "w16"), ("w16", "w8")):
        index = _index(study, source)
        rows = points[(points["source"] == source) & (points["target"] == target)]
        latents = rows["latent"].to_numpy()
        np.testing.assert_array_equal(index[f"similarity/{target}"][latents], rows["max_similarity"].astype(np.float32))
        np.testing.assert_array_equal(index[f"partner/{target}"][latents], rows["best_partner"])
        np.testing.assert_array_equal(index["relative_importance"][latents],
                                      rows["relative_importance"].astype(np.float32))
        assert (index["status"][latents] == 0).all()
    index = _index(study, "w8")
    assert index["status"][DEAD] == 2 and index["status"][RARE] == 1
    assert np.isnan(index["similarity/w16"][RARE]) and index["partner/w16"][RARE] == -1
    assert _index(study, "w16")["partner/w8"][PLANTED] == BUSY  # the planted partner is found
    assert index["count"][BUSY] == N_TOKENS - 1


def test_collapsed_latents_list_the_members_of_their_cluster(study):
    index = _index(study, "w8")
    assert np.flatnonzero(index["collapsed"]).tolist() == CLUSTER
    for latent in CLUSTER:
        lo, hi = index["cluster_offsets"][latent], index["cluster_offsets"][latent + 1]
        assert sorted(index["cluster_members"][lo:hi]) == [m for m in CLUSTER if m != latent]
        assert index["neighbours"][latent] == 3
    points = study["points"]
    assert set(points[points["collapsed"]]["latent"]) <= set(CLUSTER)


def test_tokens_and_vocabulary_give_back_the_windows_text(study):
    _, arrays, _ = read_binary(study["out"] / "data" / "tokens.js")
    np.testing.assert_array_equal(arrays["tokens"], study["windows"])
    _, vocab = read_json(study["out"] / "data" / "vocab.js")
    tokenizer = study["tokenizer"]
    window = study["windows"][0].tolist()
    assert "".join(vocab[i] for i in window) == tokenizer.decode(window)
    assert vocab[tokenizer.token_to_id("<|endoftext|>")] == "<|endoftext|>"


def test_a_token_that_holds_part_of_a_character_shows_its_bytes(tmp_path):
    tokenizer = train_bpe(["ab"] * 5, 260)
    tokenizer.save(str(tmp_path / "tokenizer.json"))
    vocab = token_strings(tmp_path / "tokenizer.json")
    e2 = tokenizer.token_to_id("â")  # GPT-2's symbol for the byte 0xE2, a lead byte on its own
    assert vocab[e2] == "\\xe2"
    assert vocab[tokenizer.token_to_id("Ġ")] == " "


def test_packed_arrays_round_trip_aligned():
    arrays = {"a": np.arange(5, dtype=np.uint8), "b": np.array([1.5, -2], dtype=np.float32),
              "c": np.arange(6, dtype=np.int32).reshape(2, 3), "d": np.zeros(0, dtype=np.uint32)}
    packed = pack_arrays(arrays, {"first_latent": 7})
    header = json.loads(packed[4 : 4 + int(np.frombuffer(packed[:4], "<u4")[0])])
    assert all((header["data_offset"] + spec["offset"]) % 8 == 0 for spec in header["arrays"].values())
    back, meta = unpack_arrays(packed)
    assert meta == {"first_latent": 7}
    for name, array in arrays.items():
        np.testing.assert_array_equal(back[name], array)
        assert back[name].dtype == array.dtype


def test_the_page_loads_only_files_beside_it_in_a_few_shards_per_model(study):
    out = study["out"]
    files = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file())
    per_model = [f for f in files if f.startswith("data/w8/")]
    assert per_model == ["data/w8/index.js"] + [f"data/w8/shard-{k}.js" for k in range(4)]
    for path in out.rglob("*"):
        if path.is_file():
            text = path.read_text()
            # the one URL is SVG's namespace name, never fetched
            assert "https:" not in text and text.count("http:") == text.count("http://www.w3.org/2000/svg")
            assert "fetch(" not in text and "XMLHttpRequest" not in text and "import(" not in text


def test_stores_over_other_tokens_and_stale_tables_are_refused(study, tmp_path):
    inputs, settings = study["inputs"], StudySettings(MIN_COUNT, THRESHOLD, MIN_NEIGHBOURS, None)
    other = tmp_path / "tokens.zarr"
    shutil.copytree(inputs.tokens, other)
    array = zarr.open_array(str(other / "analysis"), mode="r+")
    array[3] = (int(array[3]) + 1) % 300
    with pytest.raises(ValueError, match="rerun encode_features"):
        build_browser(tmp_path / "b1", _replace(inputs, tokens=other), settings, "unit", "main")
    census = pd.read_csv(inputs.census)
    census.loc[census["model"] == "w8", "rare"] += 1
    census.to_csv(tmp_path / "latents.csv", index=False)
    with pytest.raises(ValueError, match="stale"):
        build_browser(tmp_path / "b2", _replace(inputs, census=tmp_path / "latents.csv"), settings, "unit", "main")
    old = tmp_path / "old.zarr"
    shutil.copytree(inputs.features["w8"], old)
    group = zarr.open_group(str(old), mode="r+")
    attrs = dict(group.attrs)
    del attrs["n_windows"]
    group.attrs.clear()
    group.attrs.update(attrs)
    with pytest.raises(ValueError, match="lacks .*n_windows.*re-encode"):
        build_browser(tmp_path / "b3", _replace(inputs, features={"w8": old, "w16": inputs.features["w16"]}),
                      settings, "unit", "main")
    assert not any((tmp_path / name).exists() for name in ("b1", "b2", "b3"))  # nothing half-written


def _replace(inputs: BrowserInputs, **changes) -> BrowserInputs:
    return dataclasses.replace(inputs, **changes)


# ---------------------------------------------------------------- the tiny run's page in headless Chromium


def _missing_for_chromium() -> list[str]:
    missing = [name for name in ("chromium", "chromedriver") if shutil.which(name) is None]
    try:
        import selenium  # noqa: F401
    except ImportError:
        missing.append("the selenium package (pip install -e '.[test]')")
    return missing


# checked before any fixture is set up, so that without Chromium the tiny run is not made for nothing
needs_chromium = pytest.mark.skipif(
    bool(_missing_for_chromium()),
    reason=f"no {' and no '.join(_missing_for_chromium())}: the browser tests need Debian's chromium and "
    "chromium-driver (apt-get install -y chromium chromium-driver)",
)


@pytest.fixture
def driver():
    """Headless Chromium (Debian's, with its chromedriver) that logs the console and every request."""
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    options = Options()
    options.binary_location = shutil.which("chromium")
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1400,1000"):
        options.add_argument(argument)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL", "performance": "ALL"})
    chrome = webdriver.Chrome(service=Service(shutil.which("chromedriver")), options=options)
    yield chrome
    chrome.quit()


def _wait(condition, timeout: float = 30, what: str = "the page"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def _open(driver, browser: Path, latent: str = "") -> None:
    driver.get(browser.joinpath("index.html").as_uri() + (f"#{latent}" if latent else ""))
    _wait(lambda: driver.execute_script("return document.body.dataset.state") == "ready", what="the overview")


def _panel(driver, latent: str):
    from selenium.webdriver.common.by import By

    _wait(lambda: driver.execute_script(
        "const p = document.getElementById('panel'); return p.dataset.state === 'ready' && p.dataset.latent")
        == latent, what=f"the panel of {latent}")
    return driver.find_element(By.ID, "panel")


def _assert_offline_and_quiet(driver, browser: Path) -> None:
    """Every request the page made was for a file beside it, and the console shows no error."""
    requests = [json.loads(entry["message"])["message"] for entry in driver.get_log("performance")]
    urls = [m["params"]["request"]["url"] for m in requests if m["method"] == "Network.requestWillBeSent"]
    assert urls and all(url.startswith(browser.as_uri() + "/") for url in urls), urls
    errors = [entry for entry in driver.get_log("browser") if entry["level"] in ("SEVERE", "ERROR")]
    assert not errors, errors
    assert not driver.execute_script("return document.getElementById('problem').textContent")


def _peak_text(tiny_results: Path, model: str, latent: int) -> str:
    """What the page must mark as the peak of the top context: the token at the store's argmax."""
    store = open_features(tiny_results / "features" / model / "main.zarr")
    row = int(store.stat("argmax")[latent])
    context = int(store.attrs["context"])
    windows = analysis_windows(open_split(tiny_results / "data" / "tokens.zarr", "analysis"), store.n_tokens, context,
                               False, None)
    token = windows[row // (context - 1), 1 + row % (context - 1)]
    return token_strings(tiny_results / "data" / "tokenizer.json")[token].replace("\n", "↵").replace("\t", "⇥").replace("\r", "␍")


def _check_contexts(panel, tiny_results: Path, model: str, latent: int) -> None:
    from selenium.webdriver.common.by import By

    count = int(open_features(tiny_results / "features" / model / "main.zarr").stat("count")[latent])
    top = panel.find_elements(By.CSS_SELECTOR, "ol.top li.context")
    sampled = panel.find_elements(By.CSS_SELECTOR, "ol.sampled li.context")
    assert len(top) == min(count, 20) and len(sampled) == min(max(count - 20, 0), 10)
    for context in top + sampled:  # one marked peak per context, shaded
        peaks = context.find_elements(By.CSS_SELECTOR, ".token.peak")
        assert len(peaks) == 1 and peaks[0].value_of_css_property("background-color") != "rgba(0, 0, 0, 0)"
    assert top[0].find_element(By.CSS_SELECTOR, ".token.peak").get_attribute("textContent") == \
        _peak_text(tiny_results, model, latent)


@pytest.mark.slow
@needs_chromium
def test_the_overview_draws_the_reports_points_and_clicking_one_opens_its_contexts(tiny_results, driver):
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By

    browser = tiny_results / "browser" / "main"
    _open(driver, browser)
    points = pd.read_parquet(tiny_results / "analysis" / "main" / "points.parquet")
    pair = points[(points["source"] == "w16") & (points["target"] == "w32")]
    assert driver.find_element(By.ID, "plot").get_attribute("data-points") == str(len(pair))
    r = pd.read_csv(tiny_results / "analysis" / "main" / "pairs.csv").query("source == 'w16' and target == 'w32'")
    summary = driver.find_element(By.ID, "pair-summary").text
    assert f"r = {r['pearson_r'].iloc[0]:.3f}" in summary
    # the page's own r over the points it draws: the same numbers as the report's
    assert float(summary.split("r of the points shown: ")[1].rstrip(".")) == pytest.approx(r["pearson_r"].iloc[0],
                                                                                           abs=1.5e-3)

    # the most isolated point, so that the mouse lands on it alone
    xy = pair[["relative_importance", "max_similarity"]].to_numpy()
    gaps = np.linalg.norm(xy[:, None] - xy[None], axis=2) + np.eye(len(xy)) * 9
    latent = int(pair["latent"].iloc[int(gaps.min(axis=1).argmax())])
    where = driver.execute_script(f"return featscaleBrowser.pointPosition('w16', {latent})")
    canvas = driver.find_element(By.ID, "scatter")
    dx, dy = where["x"] - canvas.size["width"] / 2, where["y"] - canvas.size["height"] / 2
    ActionChains(driver).move_to_element_with_offset(canvas, int(round(dx)), int(round(dy))).perform()
    tooltip = _wait(lambda: driver.find_element(By.ID, "tooltip").text, what="the tooltip")
    assert tooltip.splitlines()[0] == f"w16/{latent}"
    ActionChains(driver).click().perform()
    panel = _panel(driver, f"w16/{latent}")
    _check_contexts(panel, tiny_results, "w16", latent)
    _assert_offline_and_quiet(driver, browser)


@pytest.mark.slow
@needs_chromium
def test_a_search_result_opens_its_latent_and_a_partner_link_leads_to_the_partner(tiny_results, driver):
    from selenium.webdriver.common.by import By

    browser = tiny_results / "browser" / "main"
    _open(driver, browser)
    driver.find_element(By.ID, "search").send_keys("w32/7")
    driver.find_element(By.CSS_SELECTOR, "#search-results a.search-result[data-latent='w32/7']").click()
    panel = _panel(driver, "w32/7")
    _check_contexts(panel, tiny_results, "w32", 7)

    points = pd.read_parquet(tiny_results / "analysis" / "main" / "points.parquet").set_index(["source", "target",
                                                                                          "latent"])
    partner = int(points.loc[("w32", "w16", 7), "best_partner"])
    back = int(points.loc[("w16", "w32", partner), "best_partner"])
    row = panel.find_element(By.CSS_SELECTOR, "table.partners tbody tr")
    assert row.find_element(By.CSS_SELECTOR, ".mutual, .one-way").text.startswith("✓" if back == 7 else "✗")
    row.find_element(By.CSS_SELECTOR, "a.partner").click()
    panel = _panel(driver, f"w16/{partner}")
    _check_contexts(panel, tiny_results, "w16", partner)
    link = panel.find_element(By.CSS_SELECTOR, "table.partners a.partner")
    assert link.get_attribute("data-latent") == f"w32/{back}"  # the partner's own best match, back
    _assert_offline_and_quiet(driver, browser)


@pytest.mark.slow
@needs_chromium
def test_a_latent_excluded_from_the_correlation_still_shows_its_contexts(tiny_results, driver):
    from selenium.webdriver.common.by import By

    census = pd.read_csv(tiny_results / "analysis" / "main" / "latents.csv").set_index("model")
    points = pd.read_parquet(tiny_results / "analysis" / "main" / "points.parquet")
    model = "w16" if census.loc["w16", "rare"] else "w32"
    count = open_features(tiny_results / "features" / model / "main.zarr").stat("count")
    excluded = sorted(set(np.flatnonzero(count > 0)) - set(points[points["source"] == model]["latent"]))
    if not excluded:
        pytest.skip("the tiny run left no latent excluded from the correlation")
    browser = tiny_results / "browser" / "main"
    _open(driver, browser, f"{model}/{excluded[0]}")
    panel = _panel(driver, f"{model}/{excluded[0]}")
    assert "excluded from the correlation" in panel.find_element(By.CSS_SELECTOR, ".status").text
    _check_contexts(panel, tiny_results, model, int(excluded[0]))
    _assert_offline_and_quiet(driver, browser)
