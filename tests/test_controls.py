"""Controls: seed replicates in the model list and the tables, the nulls' and ceilings' place in them."""

from __future__ import annotations

import json
import re
import shutil

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from safetensors.torch import load_file

from conftest import CONFIGS, load_merged, settings_of, snakemake, tiny
from featscale.analysis.correlation import correlate, open_correlations
from featscale.analysis.statistics import pearson_r
from featscale.analysis.tables import control_table, pair_r_table, pair_table, sae_seed_points, universality_points
from featscale.analysis.verdicts import importance_claim
from featscale.features.encode import FeatureWriter
from featscale.features.store import tokens_sha256
from featscale.models.gpt import GPT, GPTConfig
from featscale.names import (
    is_untrained,
    model_names,
    parse_model_name,
    replicate_of,
    sae_seed_replicate_name,
    untrained_null_correlations,
)
from featscale.seeds import derive_seed


def test_seed_replicates_follow_their_width_and_must_be_trained_widths():
    models = model_names([256, 128], seed_replicates=[256])
    assert models == ["w128", "w256", "w256-s1"]
    assert replicate_of("w256", models) == "w256-s1" and replicate_of("w128", models) is None
    # a replicate of a width that is not trained is refused: tests/test_config.py's BROKEN cases


def synthetic_points(rng: np.random.Generator) -> pd.DataFrame:
    """Three models, w8 with a seed replicate: real max similarity well above a low null."""
    frames = []
    models = ("w8", "w8-s1", "w16")
    for source in models:
        for target in models:
            if source == target:
                continue
            n = 400
            frequency = rng.uniform(1e-4, 1e-1, n)
            ceiling = target.startswith("w8") and source.startswith("w8")
            real = rng.uniform(0.5, 0.9, n) if ceiling else rng.uniform(0.2, 0.6, n)
            real[:40] = 0.0  # 10% sit at zero: never above the null
            frames.append(pd.DataFrame({
                "source": source, "target": target, "latent": np.arange(n), "relative_importance": rng.random(n),
                "max_similarity": real, "frequency": frequency, "collapsed": False,
                "null_max_similarity": rng.uniform(0.0, 0.1, n),
            }))
    return pd.concat(frames, ignore_index=True)


def test_control_table_places_each_pair_between_null_and_ceiling():
    points = synthetic_points(np.random.default_rng(0))
    table = control_table(points, tiny("controls", null_percentile=99, frequency_bins=5)).set_index(["source", "target"])
    assert table.loc[("w8", "w8-s1"), "same_width_replicate"] and not table.loc[("w8", "w16"), "same_width_replicate"]
    assert table.loc[("w8", "w8-s1"), "position_null_to_ceiling"] == pytest.approx(1.0)
    assert table.loc[("w8", "w16"), "ceiling_mean"] == pytest.approx(table.loc[("w8", "w8-s1"), "real_mean"])
    assert np.isnan(table.loc[("w16", "w8"), "ceiling_mean"])  # w16 has no replicate
    assert 0.1 < table.loc[("w8", "w16"), "position_null_to_ceiling"] < 0.9
    # 10% of latents were planted at 0: exactly those fail to beat the null
    assert table["fraction_above_null"].to_numpy() == pytest.approx(0.9)


def test_without_a_null_the_fraction_is_missing_not_invented():
    points = synthetic_points(np.random.default_rng(1)).assign(null_max_similarity=np.nan)
    table = control_table(points, tiny("controls", null_percentile=99, frequency_bins=5))
    assert table["fraction_above_null"].isna().all() and table["null_mean"].isna().all()


def test_replicate_pairs_are_marked_in_the_r_table():
    pairs = pd.DataFrame([
        {"source": "w8", "target": "w8-s1", "mask": "all", "pearson_r": 0.5},
        {"source": "w8-s1", "target": "w8", "mask": "all", "pearson_r": 0.4},
        {"source": "w8", "target": "w16", "mask": "all", "pearson_r": 0.3},
    ])
    markdown = pair_r_table(pairs, "all").to_markdown()
    assert "0.5000†" in markdown and "0.3000†" not in markdown and "same width, different seed" in markdown


@pytest.mark.parametrize("layer, expected", [
    ("demo-controls.yaml", ["correlate_shifted", "w64-s1", "correlate_untrained", "models/w128-init/model.safetensors",
                            "saes/w64/main-seed1/cfg.json", "correlate_sae_seed_shifted"]),
    ("demo-sae-sweep.yaml", ["saes/w128/latents512", "saes/w128/latents2048", "correlations/latents2048/w32__w64"]),
    ("demo-authors.yaml", ["saes/w128/authors/cfg.json", "saes/w32/topk/cfg.json", "correlations/topk/w32__w64",
                           "analysis/authors/verdicts.csv"]),
    ("demo-one-lr.yaml", ["results/demo-one-lr/saes/w128/main/cfg.json"]),
])
def test_shipped_layers_over_the_demo_plan_their_extra_jobs(layer, expected, tmp_path):
    done = snakemake("-n", "--configfile", str(CONFIGS["demo"]), str(CONFIGS["demo"].parent / layer), cwd=tmp_path)
    assert all(item in done.stdout for item in expected), done.stdout[-3000:]


# --- the untrained-model null ----------------------------------------------------------------


def test_untrained_models_are_named_apart_and_each_needed_correlation_is_planned_once():
    models = model_names([32, 16], seed_replicates=[16])
    assert models == ["w16", "w16-s1", "w32"]  # the study's models: no untrained one among them
    assert parse_model_name("w32-init") == (32, 0) and is_untrained("w32-init") and not is_untrained("w32-s1")
    # every ordered pair (source, target) needs the source against the untrained model of the target's width
    assert untrained_null_correlations(models) == [
        ("w16", "w16-init"), ("w16", "w32-init"), ("w16-s1", "w16-init"), ("w16-s1", "w32-init"), ("w32", "w16-init"),
    ]


def write_codes(path, codes: np.ndarray, model: str, sae: str = "main") -> str:
    """A feature store of dense codes (tokens, latents), all stores over the same tokens."""
    writer = FeatureWriter(path, codes.shape[1])
    writer.add(torch.from_numpy(codes))
    writer.finish(torch.ones(codes.shape[1]), {"model": model, "sae": sae, "tokens_sha256": tokens_sha256(np.arange(len(codes))),
                                               "model_sha256": f"{model}-weights", "sae_sha256": f"{model}-{sae}"})
    return str(path)


def sparse_codes(rng: np.random.Generator, n_tokens: int, n_latents: int) -> np.ndarray:
    rate = rng.uniform(0.02, 0.1, n_latents)
    return ((rng.random((n_tokens, n_latents)) < rate) * rng.exponential(1.0, (n_tokens, n_latents))).astype(np.float32)


@pytest.fixture(scope="module")
def control_stores(tmp_path_factory):
    """w8 and w16 (half of w8's latents planted in w16), the untrained w8-init and w16-init (unrelated
    codes), and w8's SAE-seed replicate (w8's latents in another order, slightly perturbed)."""
    root, rng, n = tmp_path_factory.mktemp("controls"), np.random.default_rng(0), 2000
    w8 = sparse_codes(rng, n, 40)
    w16 = sparse_codes(rng, n, 50)
    w16[:, :20] = w8[:, :20] * 1.5 + 0.1 * sparse_codes(rng, n, 20)
    seed1 = w8[:, rng.permutation(40)] + 0.05 * sparse_codes(rng, n, 40)
    features = {"w8": write_codes(root / "w8.zarr", w8, "w8"), "w16": write_codes(root / "w16.zarr", w16, "w16")}
    untrained_features = {m: write_codes(root / f"{m}.zarr", sparse_codes(rng, n, width), m)
                          for m, width in (("w8-init", 40), ("w16-init", 50))}
    replicate = write_codes(root / "w8-seed1.zarr", seed1, "w8", "main-seed1")
    settings = tiny("correlation", min_count=3, block_latents=16, token_chunk=512, matrix_dtype="none", workers=1)

    def correlated(a: str, b: str, name: str) -> str:
        correlate(a, b, root / name, settings)
        return str(root / name)

    correlations = {("w8", "w16"): correlated(features["w8"], features["w16"], "w8__w16.zarr")}
    untrained = {(source, init): correlated(features[source], untrained_features[init], f"{source}__{init}.zarr")
                 for source, init in untrained_null_correlations(["w8", "w16"])}
    sae_seed = {"w8": correlated(features["w8"], replicate, "sae_seed_w8.zarr")}
    masks = {"w8": np.zeros(40, dtype=bool), "w16": np.zeros(50, dtype=bool)}
    return features, correlations, untrained, sae_seed, masks


def test_each_pair_reads_the_untrained_model_of_its_targets_width(control_stores):
    features, correlations, untrained, _, masks = control_stores
    points = universality_points(features, correlations, masks, 3, untrained=untrained)
    for source, target, right, wrong in (("w8", "w16", "w16-init", "w8-init"), ("w16", "w8", "w8-init", "w16-init")):
        values = points[(points.source == source) & (points.target == target)]["untrained_max_similarity"].to_numpy()
        np.testing.assert_array_equal(values, open_correlations(untrained[source, right]).side("a")["max_similarity"])
        if (source, wrong) in untrained:
            assert not np.array_equal(values, open_correlations(untrained[source, wrong]).side("a")["max_similarity"])


def test_untrained_models_stay_out_of_the_study_and_stand_in_the_control_table(control_stores):
    features, correlations, untrained, _, masks = control_stores
    points = universality_points(features, correlations, masks, 3, untrained=untrained)
    analysis = tiny("analysis", talk_compatible=False, bootstrap_resamples=0, bootstrap_fit_resamples=0, confidence=0.9)
    pairs = pair_table(points, analysis, seed=0)
    table = pair_r_table(pairs, "all")
    assert set(pairs.source) | set(pairs.target) == {"w8", "w16"}
    assert list(table.value.index) == list(table.value.columns) == ["w8", "w16"]
    control = control_table(points, tiny("controls", null_percentile=99, frequency_bins=2)).set_index(["source", "target"])
    assert control.loc[("w8", "w16"), "untrained_model"] == "w16-init"
    assert control.loc[("w16", "w8"), "untrained_model"] == "w8-init"
    # half of w8's latents were planted in w16: those, and about 1% of the rest by chance, beat the null
    assert 0.5 <= control.loc[("w8", "w16"), "fraction_above_untrained"] <= 0.6
    assert control.loc[("w8", "w16"), "untrained_mean"] < control.loc[("w8", "w16"), "real_mean"]
    assert np.isnan(control["fraction_above_null"]).all()  # the shifted null did not run


def test_a_pair_whose_latents_are_all_collapsed_has_no_statistics_and_its_verdict_cannot_pass(control_stores):
    features, correlations, _, _, masks = control_stores
    every_latent_collapsed = {**masks, "w16": np.ones(50, dtype=bool)}
    points = universality_points(features, correlations, every_latent_collapsed, 3)
    analysis = tiny("analysis", talk_compatible=True, bootstrap_resamples=20, bootstrap_fit_resamples=0, confidence=0.9)
    pairs = pair_table(points, analysis, seed=0).set_index(["source", "target", "mask"])
    assert pairs.loc[("w16", "w8", "masked"), "n"] == 0 and np.isnan(pairs.loc[("w16", "w8", "masked"), "pearson_r"])
    assert pairs.loc[("w16", "w8", "all"), "n"] == 50 and np.isfinite(pairs.loc[("w16", "w8", "all"), "pearson_r"])
    assert np.isfinite(pairs.loc[("w8", "w16", "masked"), "spearman_rho_low"])
    table = pair_r_table(pairs.reset_index(), "masked")
    assert np.isnan(table.value.loc["w16", "w8"]) and np.isfinite(table.value.loc["w8", "w16"])
    verdict = importance_claim(pairs.reset_index(), tiny("verdicts", min_rank_correlation=-1.0, min_partial_r=-1.0))
    assert verdict.verdict != "reproduced" and "w16 → w8 (n = 0)" in verdict.detail, verdict


@pytest.fixture(scope="module")
def untrained_run(tiny_store, tmp_path_factory):
    """The tiny run's w16 and w16-init, made by the workflow's train_model rule."""
    workdir = tmp_path_factory.mktemp("untrained")
    shutil.copytree(tiny_store.parent, workdir / "results" / "tiny" / "data")  # the same data, mtimes kept
    layer = workdir / "untrained.yaml"
    layer.write_text(yaml.safe_dump({"run": "tiny", "controls": {"untrained_null": True}}))
    models = workdir / "results" / "tiny" / "models"
    snakemake(str(models.relative_to(workdir) / "w16-init" / "final.json"), str(models.relative_to(workdir) / "w16" / "final.json"),
              "--cores", "2", "--configfile", str(CONFIGS["tiny"]), str(layer), cwd=workdir)
    return models


def test_the_untrained_model_is_its_widths_initialisation_saved_unchanged(untrained_run):
    config = json.loads((untrained_run / "w16-init" / "config.json").read_text())
    assert config["training"]["tokens"] == 0 and config["model_seed"] == 0
    assert json.loads((untrained_run / "w16-init" / "final.json").read_text())["steps"] == 0
    torch.manual_seed(derive_seed(config["run_seed"], "model_init", 0))  # w16's own initialisation
    initial = GPT(GPTConfig.from_dict(config["model"])).state_dict()
    saved = load_file(str(untrained_run / "w16-init" / "model.safetensors"))
    trained = load_file(str(untrained_run / "w16" / "model.safetensors"))
    assert saved.keys() == initial.keys()
    assert all(torch.equal(saved[name], initial[name]) for name in saved)
    assert not all(torch.equal(trained[name], initial[name]) for name in saved)
    # the same architecture as the trained model of its width
    trained_config = json.loads((untrained_run / "w16" / "config.json").read_text())
    assert trained_config["model"] == config["model"] and trained_config["training"]["tokens"] > 0


# --- the SAE-seed ceiling --------------------------------------------------------------------


def test_the_sae_seed_replicate_is_the_spec_with_another_seed_and_no_spec_of_its_own():
    config = load_merged("tiny")
    config["saes"]["main"]["seed"] = 3
    settings = settings_of(config)
    replicate = sae_seed_replicate_name("main")
    spec, original = settings.sae_spec(replicate).to_dict(), settings.saes["main"].to_dict()
    assert spec["seed"] == 4 and {k for k in spec if spec[k] != original[k]} == {"seed"}
    assert replicate not in settings.saes and settings.sae_spec("main").to_dict() == original
    with pytest.raises(KeyError, match="no SAE spec"):
        settings.sae_spec("other-seed1")


def test_the_sae_seed_ceiling_is_a_control_row_with_its_r(control_stores):
    features, _, _, sae_seed, masks = control_stores
    ceiling = sae_seed_points(features, sae_seed, masks, 3, "main-seed1")
    assert set(ceiling.target) == {"w8/main-seed1"}
    control = control_table(ceiling.iloc[:0], tiny("controls", null_percentile=99, frequency_bins=2), sae_seed=ceiling)
    row = control.set_index("kind").loc["sae_seed"]
    assert row["source"] == "w8" and row["n"] == 40
    assert row["pearson_r"] == pytest.approx(pearson_r(ceiling["relative_importance"], ceiling["max_similarity"]))
    assert row["real_mean"] > 0.95  # the replicate holds w8's latents, reordered
    assert np.isnan(row["fraction_above_null"]) and row["untrained_model"] == ""


# --- what a run with the controls plans ------------------------------------------------------


def job_counts(dry_run: str) -> dict[str, int]:
    """The `Job stats` table of a dry run: {rule: jobs}."""
    table = dry_run.split("Job stats:")[1].split("total")[0]
    return {m[1]: int(m[2]) for m in re.finditer(r"^(\w+)\s+(\d+)$", table, re.MULTILINE)}


CONTROL_JOBS = {  # the extra jobs of the tiny config (w16, w32) per switch
    "untrained_null": ({"untrained_null": True}, {"train_model": 2, "train_sae": 2, "encode_features": 2,
                                                  "correlate_untrained": 2}),
    "sae_seed": ({"sae_seed_replicates": [16]}, {"train_sae": 1, "encode_features": 1, "correlate_sae_seed": 1}),
    "sae_seed_shifted": ({"sae_seed_replicates": [16], "shifted_null": True},
                         {"train_sae": 1, "encode_features": 1, "correlate_sae_seed": 1, "correlate_sae_seed_shifted": 1,
                          "correlate_shifted": 1}),
}


@pytest.fixture(scope="module")
def tiny_plan(tmp_path_factory) -> dict[str, int]:
    return job_counts(snakemake("-n", "--configfile", str(CONFIGS["tiny"]), cwd=tmp_path_factory.mktemp("plan")).stdout)


@pytest.mark.parametrize("case", CONTROL_JOBS)
def test_a_dry_run_with_a_control_plans_exactly_its_extra_jobs(case, tiny_plan, tmp_path):
    controls, extra = CONTROL_JOBS[case]
    layer = tmp_path / "controls.yaml"
    layer.write_text(yaml.safe_dump({"run": "tiny", "controls": controls}))
    done = snakemake("-n", "--configfile", str(CONFIGS["tiny"]), str(layer), cwd=tmp_path)
    counts = job_counts(done.stdout)
    added = {rule: counts.get(rule, 0) - tiny_plan.get(rule, 0) for rule in counts | tiny_plan}
    assert {rule: n for rule, n in added.items() if n} == extra
    outputs = re.findall(r"output: (\S+)", done.stdout)
    if "untrained_null" in controls:
        assert "results/tiny/models/w32-init/model.safetensors" in done.stdout
        assert "results/tiny/controls/main/untrained/w16__w32-init.zarr" in outputs
        assert not any("-init" in path for path in outputs if "/correlations/" in path or "/hf" in path)
    if "sae_seed_replicates" in controls:
        assert "results/tiny/saes/w16/main-seed1/cfg.json" in done.stdout
        assert "results/tiny/controls/main/sae_seed/w16.zarr" in outputs
        assert not any("main-seed1" in path for path in outputs if "/analysis/" in path or "/figures/" in path)


def test_the_report_states_the_untrained_null_and_the_sae_seed_ceiling_from_the_table():
    from featscale.analysis.report import control_findings, with_intervals

    controls = pd.DataFrame([
        {"kind": "pair", "source": "w8", "target": "w16", "pearson_r": 0.41, "real_mean": 0.5, "null_mean": np.nan,
         "fraction_above_null": np.nan, "untrained_mean": 0.21, "fraction_above_untrained": 0.625,
         "ceiling_mean": np.nan, "position_null_to_ceiling": np.nan},
        {"kind": "pair", "source": "w16", "target": "w8", "pearson_r": 0.35, "real_mean": 0.4, "null_mean": np.nan,
         "fraction_above_null": np.nan, "untrained_mean": 0.23, "fraction_above_untrained": 0.5,
         "ceiling_mean": np.nan, "position_null_to_ceiling": np.nan},
        {"kind": "sae_seed", "source": "w8", "target": "w8/main-seed1", "pearson_r": 0.55, "real_mean": 0.8,
         "null_mean": np.nan, "fraction_above_null": np.nan, "untrained_mean": np.nan,
         "fraction_above_untrained": np.nan, "ceiling_mean": np.nan, "position_null_to_ceiling": np.nan},
    ]).assign(same_width_replicate=False)
    lines = control_findings(controls, null_percentile=99)
    untrained = next(line for line in lines if line.startswith("Untrained-model null"))
    assert "0.210–0.230" in untrained and "0.400–0.500" in untrained and "50.0%–62.5%" in untrained
    ceiling = next(line for line in lines if line.startswith("SAE-seed ceiling"))
    assert "w8 → w8/main-seed1" in ceiling and "0.800" in ceiling and "0.550" in ceiling and "(r 0.410 against" in ceiling
    assert not any("Shifted-token null" in line for line in lines)  # it did not run
    shown = with_intervals(pd.DataFrame({"b": [4.0, np.nan], "b_low": [3.5, np.nan], "b_high": [4.5, np.nan],
                                         "c": [0.1, 0.2]}), ["b", "c"])
    assert list(shown.columns) == ["b", "c"] and list(shown["b"]) == ["4 [3.5, 4.5]", "-"]
