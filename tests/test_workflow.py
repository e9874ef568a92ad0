"""The workflow as a user runs it: lint, dry runs, and the data stage of the tiny and demo configs."""

from __future__ import annotations

import re
import subprocess
import sys

import numpy as np
import pytest
import yaml
import zarr

from conftest import CONFIGS, REPO, snakemake
from featscale.config import SPLITS
from featscale.data.token_store import FORMAT, open_split

ENTRY_POINTS = ("Snakefile", "workflow/Snakefile")  # the design card's, and the workflow catalog's


@pytest.mark.parametrize("entry_point", ENTRY_POINTS)
def test_lint_has_no_findings(entry_point, tmp_path):
    done = snakemake("--lint", cwd=tmp_path, snakefile=REPO / entry_point)
    assert "Congratulations, your workflow is in a good condition!" in done.stdout + done.stderr


def test_every_snakemake_file_is_formatted_by_snakefmt():
    files = [REPO / "Snakefile", REPO / "workflow" / "Snakefile", *sorted((REPO / "workflow" / "rules").glob("*.smk"))]
    done = subprocess.run([sys.executable, "-m", "snakefmt", "--check", *map(str, files)], capture_output=True, text=True)
    assert done.returncode == 0, f"run `snakefmt Snakefile workflow/Snakefile workflow/rules`:\n{done.stderr}"


def planned_jobs(dry_run: str) -> list[tuple[str, ...]]:
    """Every job of a dry run: its rule and its input, output, wildcards, threads and resources lines."""
    jobs, job = [], None
    for line in dry_run.splitlines():
        heading = re.match(r"^(?:local)?rule (\w+):$", line)
        if heading:
            job = [heading[1]]
            jobs.append(job)
        elif job is not None and re.match(r"^    (input|output|wildcards|threads|resources):", line):
            job.append(line.strip())
        elif not line.startswith("    "):
            job = None
    return sorted(tuple(job) for job in jobs)


def test_the_catalog_entry_point_plans_the_demo_with_the_same_jobs_as_the_top_level(tmp_path):
    plans = {entry_point: planned_jobs(snakemake("-n", "--configfile", str(CONFIGS["demo"]), cwd=tmp_path,
                                                 snakefile=REPO / entry_point).stdout)
             for entry_point in ENTRY_POINTS}
    assert len(plans["Snakefile"]) > 30 and any(job[0] == "all" for job in plans["Snakefile"])
    assert plans["workflow/Snakefile"] == plans["Snakefile"]


def test_the_catalog_finds_its_files_and_the_license_is_the_package_metadatas():
    import tomllib

    catalog = yaml.safe_load((REPO / ".snakemake-workflow-catalog.yml").read_text())["usage"]
    assert catalog["software-stack-deployment"]["conda"] is True and catalog["report"] is True
    assert (REPO / "config" / "README.md").is_file() and (REPO / "workflow" / "Snakefile").is_file()
    license_name = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["license"]
    assert license_name == "MIT" and (REPO / "LICENSE").read_text().startswith("MIT License\n")


@pytest.mark.parametrize("name", CONFIGS)
def test_dry_run_plans_every_job_under_its_own_run(name, tmp_path):
    done = snakemake("-n", "--configfile", str(CONFIGS[name]), cwd=tmp_path)
    out = done.stdout
    assert "tokenize_corpus" in out and "train_tokenizer" in out
    outputs = [line.split(":", 1)[1].strip() for line in out.splitlines() if line.strip().startswith("output:")]
    assert outputs and all(path.startswith(f"results/{name}/") for path in outputs), outputs
    assert ("fetch_corpus" in out) == (name == "demo")  # only the embedded corpus is fetched


def _documents(tokens: np.ndarray, eot: int) -> set[bytes]:
    cuts = np.flatnonzero(tokens == eot)
    return {doc.tobytes() for doc in np.split(tokens, cuts + 1) if len(doc) > 1}


def test_tiny_store_has_disjoint_splits_and_records_its_provenance(tiny_store):
    group = zarr.open_group(str(tiny_store), mode="r")
    attrs = dict(group.attrs)
    assert attrs["format"] == FORMAT and attrs["source"]["source"] == "synthetic"
    assert len(attrs["tokenizer_sha256"]) == 64 and attrs["vocab_size"] == 512
    documents = {}
    for split in SPLITS:
        array = open_split(tiny_store, split)
        assert array.dtype == np.uint16  # 512 ids fit in 16 bits
        assert array.metadata.dimension_names == ("token",)
        assert array.shape[0] == attrs["tokens"][split] > 0
        tokens = array[:]
        assert tokens[-1] == attrs["eot_id"]  # every document ends with end-of-text
        documents[split] = _documents(tokens, attrs["eot_id"])
        assert len(documents[split]) == attrs["documents"][split]
    assert not documents["train"] & documents["val"]
    assert not documents["train"] & documents["analysis"]
    assert not documents["val"] & documents["analysis"]


def test_building_twice_with_the_same_seed_gives_identical_stores(tiny_store, tmp_path):
    snakemake("results/tiny/data/tokens.zarr", "--cores", "2", "--configfile", str(CONFIGS["tiny"]), cwd=tmp_path)
    again = tmp_path / "results" / "tiny" / "data" / "tokens.zarr"
    assert dict(zarr.open_group(str(again), mode="r").attrs) == dict(zarr.open_group(str(tiny_store), mode="r").attrs)
    for split in SPLITS:
        np.testing.assert_array_equal(open_split(again, split)[:], open_split(tiny_store, split)[:])
    # another seed splits the documents differently
    snakemake("results/tiny1/data/tokens.zarr", "--cores", "2", "--configfile", str(CONFIGS["tiny"]),
              "--config", "seed=1", "run=tiny1", cwd=tmp_path)
    other = tmp_path / "results" / "tiny1" / "data" / "tokens.zarr"
    assert not np.array_equal(open_split(other, "val")[:], open_split(tiny_store, "val")[:])


def test_a_corpus_too_small_for_the_config_fails_and_leaves_no_store(tmp_path):
    greedy = tmp_path / "greedy.yaml"
    greedy.write_text("run: tiny\nfeatures: {tokens: 10000000}\n")
    done = snakemake("results/tiny/data/tokens.zarr", "--cores", "2", "--configfile", str(CONFIGS["tiny"]), str(greedy),
                     cwd=tmp_path, check=False)
    assert done.returncode != 0
    log = (tmp_path / "results" / "tiny" / "logs" / "tokenize_corpus.log").read_text()
    assert "the analysis split holds" in log and "`features.tokens` asks for the analysis tokens (10,32" in log  # whole windows of 31 counted positions
    data = tmp_path / "results" / "tiny" / "data"
    assert not (data / "tokens.zarr").exists() and not list(data.glob("tokens.zarr.partial*"))


@pytest.mark.slow
@pytest.mark.network
def test_demo_builds_its_store_from_the_embedded_corpus(tmp_path):
    snakemake("results/demo/data/tokens.zarr", "--cores", "2", "--configfile", str(CONFIGS["demo"]), cwd=tmp_path)
    store = tmp_path / "results" / "demo" / "data" / "tokens.zarr"
    attrs = dict(zarr.open_group(str(store), mode="r").attrs)
    vocab_size = yaml.safe_load(CONFIGS["demo"].read_text())["tokenizer"]["vocab_size"]
    assert attrs["source"]["source"] == "embedded" and attrs["vocab_size"] == vocab_size
    assert attrs["documents"]["val"] >= 50 and attrs["documents"]["analysis"] >= 50  # scenes, not plays
    assert attrs["tokens"]["train"] > 1_000_000
    text = open_split(store, "train")[:200]
    assert text.max() < vocab_size


@pytest.mark.slow
def test_tiny_config_trains_every_width_and_exports_it_for_transformers(tiny_run):
    import json

    import torch
    from transformers import GPT2LMHeadModel

    from featscale.models.gpt import load_model

    tmp_path = tiny_run
    models = tmp_path / "results" / "tiny" / "models"
    losses = {}
    for name, width in (("w16", 16), ("w32", 32)):
        final = json.loads((models / name / "final.json").read_text())
        assert final["width"] == width and final["non_embedding_params"] == 12 * 2 * width**2
        losses[name] = final["val_loss"]
        ours = load_model(models / name / "model.safetensors", models / name / "config.json").eval()
        theirs = GPT2LMHeadModel.from_pretrained(models / name / "hf").eval()
        ids = torch.randint(0, ours.config.vocab_size, (2, ours.config.context))
        with torch.no_grad():
            assert (ours(ids).logits - theirs(ids).logits).abs().max() < 1e-5
    assert all(loss < 6.0 for loss in losses.values())  # ln(512) = 6.24: both learned something
    for name in ("w16", "w32"):  # an SAE per model, evaluated spliced into its model
        evaluation = json.loads((tmp_path / "results" / "tiny" / "saes" / name / "main" / "eval.json").read_text())
        assert evaluation["ce_clean"] == pytest.approx(losses[name], rel=0.05)
        assert evaluation["ce_clean"] <= evaluation["ce_sae"] + 1e-3 and 0 < evaluation["l0"] < 128
    check_tiny_study(tmp_path / "results" / "tiny")
    # nothing left to do: a second run is a no-op
    done = snakemake("-n", "--configfile", str(CONFIGS["tiny"]), cwd=tmp_path)
    assert "Nothing to be done" in done.stdout + done.stderr


def check_tiny_study(results):
    """The tiny run's feature stores, correlation, budgets and report, against first principles."""
    import pandas as pd

    from featscale.analysis.correlation import open_correlations
    from featscale.features.store import open_features

    stores = {name: open_features(results / "features" / name / "main.zarr") for name in ("w16", "w32")}
    assert stores["w16"].attrs["tokens_sha256"] == stores["w32"].attrs["tokens_sha256"]
    assert stores["w16"].n_tokens == 2048 and stores["w16"].attrs["include_position_0"] is False
    correlation = open_correlations(results / "correlations" / "main" / "w16__w32.zarr")
    a, b = (stores[name].dense().astype(np.float64) for name in ("w16", "w32"))
    side_a, side_b = correlation.side("a"), correlation.side("b")
    expected = np.corrcoef(a[:, side_a["latent"]], b[:, side_b["latent"]], rowvar=False)
    expected = expected[: len(side_a["latent"]), len(side_a["latent"]) :]
    np.testing.assert_allclose(side_a["max_similarity"], expected.max(1), atol=1e-6, rtol=0)
    np.testing.assert_array_equal(side_a["best_partner"], side_b["latent"][expected.argmax(1)])
    np.testing.assert_allclose(side_b["max_similarity"], expected.max(0), atol=1e-6, rtol=0)
    np.testing.assert_allclose(correlation.group["matrix"][:], expected, atol=1e-3, rtol=0)  # float16
    budgets = pd.concat(pd.read_csv(results / "analysis" / "main" / "budget" / f"{m}.csv") for m in ("w16", "w32"))
    assert budgets["tokens_sha256"].nunique() == 1  # every width's budget on the same tokens
    pairs = pd.read_csv(results / "analysis" / "main" / "pairs.csv")
    assert set(zip(pairs.source, pairs.target)) == {("w16", "w32"), ("w32", "w16")}
    table = pd.read_csv(results / "analysis" / "main" / "r_table.csv", index_col="source")
    r = pairs[(pairs["mask"] == "all") & (pairs.source == "w16")]["pearson_r"].item()
    assert table.loc["w16", "w32"].startswith(f"{r:.4f}")  # row = source
    report = (results / "report.md").read_text()
    assert "Deviations from the authors' setup" in report and f"{r:.4f}" in report
    for figure in ("universality_grid.png", "feature_budget.png", "scaling_law.png", "pairs/w32__w16.png",
                   "training_curves.png"):
        assert (results / "figures" / "main" / figure).stat().st_size > 1000


def documented_attrs(module) -> set[str]:
    """The attribute names a store module's docstring lists after `attrs` (explanations in parentheses dropped)."""
    text = module.__doc__.split("attrs", 1)[1].split("\n\n", 1)[0]
    while "(" in text:  # innermost parentheses first
        text = re.sub(r"\([^()]*\)", "", text)
    return {word for word in re.split(r"[\s,]+", text) if word}


@pytest.mark.slow
def test_every_store_writes_exactly_the_attributes_its_format_documents(tiny_run):
    from featscale.analysis import correlation
    from featscale.data import token_store
    from featscale.features import store

    results = tiny_run / "results" / "tiny"
    written = {
        token_store: zarr.open_group(str(results / "data" / "tokens.zarr"), mode="r").attrs,
        store: zarr.open_group(str(results / "features" / "w16" / "main.zarr"), mode="r").attrs,
        correlation: zarr.open_group(str(results / "correlations" / "main" / "w16__w32.zarr"), mode="r").attrs,
    }
    for module, attrs in written.items():
        assert documented_attrs(module) == set(attrs), module.__name__


@pytest.mark.slow
def test_the_report_bundles_every_figure_of_the_tiny_run_with_its_caption(tiny_run, tmp_path):
    from html import escape

    report = tmp_path / "report.html"
    snakemake("--report", str(report), "--configfile", str(CONFIGS["tiny"]), cwd=tiny_run)
    html = report.read_text()
    figures = tiny_run / "results" / "tiny" / "figures" / "main"
    drawn = sorted(path.relative_to(tiny_run).as_posix() for path in figures.rglob("*.png"))
    assert "results/tiny/figures/main/training_curves.png" in drawn and len(drawn) >= 9
    for path in drawn + ["results/tiny/report.md"]:
        assert f'"{path}"' in html, f"{path} is not in the report"
    # each caption's first words (null_distributions: the tiny run has no null, so no such figure)
    for caption in sorted((REPO / "workflow" / "report").glob("*.rst")):
        if caption.stem not in ("workflow", "null_distributions"):
            first_words = " ".join(caption.read_text().split()[:5])
            assert escape(first_words, quote=False) in html, caption.name
