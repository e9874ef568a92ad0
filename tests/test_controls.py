"""Controls: seed replicates in the model list and the tables, the shifted null's place in them."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from conftest import CONFIGS, snakemake
from featscale.config import model_names
from featscale.study import control_table, pair_r_table, replicate_of


def test_seed_replicates_follow_their_width_and_must_be_trained_widths():
    config = {"models": {"widths": [256, 128]}, "controls": {"seed_replicates": [256]}}
    assert model_names(config) == ["w128", "w256", "w256-s1"]
    assert replicate_of("w256", model_names(config)) == "w256-s1" and replicate_of("w128", model_names(config)) is None
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
    table = control_table(points, percentile=99, bins=5).set_index(["source", "target"])
    assert table.loc[("w8", "w8-s1"), "same_width_replicate"] and not table.loc[("w8", "w16"), "same_width_replicate"]
    assert table.loc[("w8", "w8-s1"), "position_null_to_ceiling"] == pytest.approx(1.0)
    assert table.loc[("w8", "w16"), "ceiling_mean"] == pytest.approx(table.loc[("w8", "w8-s1"), "real_mean"])
    assert np.isnan(table.loc[("w16", "w8"), "ceiling_mean"])  # w16 has no replicate
    assert 0.1 < table.loc[("w8", "w16"), "position_null_to_ceiling"] < 0.9
    # 10% of latents were planted at 0: exactly those fail to beat the null
    assert table["fraction_above_null"].to_numpy() == pytest.approx(0.9)


def test_without_a_null_the_fraction_is_missing_not_invented():
    points = synthetic_points(np.random.default_rng(1)).assign(null_max_similarity=np.nan)
    table = control_table(points, percentile=99, bins=5)
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
    ("demo-controls.yaml", ["correlate_shifted", "w64-s1"]),
    ("demo-sae-sweep.yaml", ["saes/w128/latents512", "saes/w128/latents2048", "correlations/latents2048/w32__w64"]),
])
def test_shipped_layers_over_the_demo_plan_their_extra_jobs(layer, expected, tmp_path):
    done = snakemake("-n", "--configfile", str(CONFIGS["demo"]), str(CONFIGS["demo"].parent / layer), cwd=tmp_path)
    assert all(item in done.stdout for item in expected), done.stdout[-3000:]
