"""The workflow on SLURM, through profiles/slurm: a dry run of the paper config, and the tiny
config on a real one-node cluster (tests/slurm/start-slurm.sh starts one on this machine),
including a training job cancelled halfway."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from conftest import CONFIGS, REPO, snakemake

PROFILE = REPO / "profiles" / "slurm" / "config.yaml"
GPU_RULES = {"train_model", "train_sae", "evaluate_sae", "encode_features", "feature_budget"}
LOCAL_RULES = {"fetch_corpus", "train_tokenizer", "tokenize_corpus"}
SIGNAL = "--signal=TERM@300"


def _plugin_missing() -> str | None:
    try:
        import snakemake_executor_plugin_slurm  # noqa: F401
    except ImportError:
        return "snakemake-executor-plugin-slurm is not installed (pip install -e '.[test]')"
    return None


def _cluster_missing() -> str | None:
    """Why no SLURM cluster can run the tests here, or None."""
    if missing := _plugin_missing():
        return missing
    if shutil.which("sbatch") is None:
        return "SLURM is not installed: tests/slurm/start-slurm.sh installs and starts a one-node cluster (as root, on Debian)"
    try:
        done = subprocess.run(["sinfo", "-h", "-o", "%P %a %G"], check=False, capture_output=True, text=True, timeout=30)
    except subprocess.TimeoutExpired:
        return "sinfo did not answer within 30 s"
    if done.returncode != 0:
        return f"no SLURM controller answers (sinfo: {done.stderr.strip()}): start one with tests/slurm/start-slurm.sh"
    if "gpu" not in done.stdout:
        return f"the SLURM cluster declares no GPU (sinfo: {done.stdout.strip()}): tests/slurm/start-slurm.sh declares one"
    return None


@pytest.fixture(scope="module")
def partition() -> str:
    """The test cluster's default partition (its name, without sinfo's '*')."""
    if reason := _cluster_missing():
        pytest.skip(reason)
    lines = subprocess.run(["sinfo", "-h", "-o", "%P"], capture_output=True, text=True, check=True).stdout.split()
    return next(line for line in lines if line.endswith("*")).rstrip("*")


def cluster_profile(folder: Path, partition: str) -> Path:
    """profiles/slurm as users have it, but for this one small node: its partition, small
    resources, and status checks every few seconds instead of after 40 s."""
    profile = yaml.safe_load(PROFILE.read_text())
    profile["default-resources"] = profile["default-resources"] | {"slurm_partition": partition, "mem_mb": 500, "runtime": 10}
    profile["set-resources"] = {rule: resources | {"mem_mb": 1000, "runtime": 10, "cpus_per_gpu": 1}
                                for rule, resources in profile["set-resources"].items()}
    profile["set-threads"] = dict.fromkeys(profile["set-threads"], 1)
    profile["slurm-init-seconds-before-status-checks"] = 2
    profile["seconds-between-status-checks"] = 2
    folder.mkdir(parents=True)
    (folder / "config.yaml").write_text(yaml.safe_dump(profile, sort_keys=False))
    return folder


def sbatch_calls(log: str) -> dict[str, list[str]]:
    """The sbatch command lines of a --verbose run, by rule (from the job comment)."""
    calls: dict[str, list[str]] = {}
    for call in re.findall(r"sbatch call: (sbatch .*)", log):
        rule = re.search(r"--comment '?rule_(\w+?)(?:_wildcards_\S*?)?'? ", call).group(1)
        calls.setdefault(rule, []).append(call)
    return calls


def test_the_profile_gives_every_gpu_rule_a_gpu_and_the_warning_signal_and_cpu_rules_neither():
    profile = yaml.safe_load(PROFILE.read_text())
    assert profile["executor"] == "slurm" and profile["retries"] >= 1 and profile["rerun-incomplete"]
    assert set(profile["set-resources"]) == GPU_RULES
    for rule, resources in profile["set-resources"].items():
        assert resources["gpu"] == 1 and resources["slurm_extra"].strip("'") == SIGNAL, rule
        assert profile["set-threads"][rule] == resources["cpus_per_gpu"]
    assert not {"gpu", "gpu_model", "gres", "slurm_extra"} & set(profile["default-resources"])
    assert profile["slurm-status-command"] == "squeue"  # works without an accounting daemon


@pytest.mark.skipif(bool(_plugin_missing()), reason=str(_plugin_missing()))
def test_a_dry_run_of_the_paper_config_lists_every_job_with_its_slurm_resources(tmp_path):
    done = snakemake("-n", "--workflow-profile", str(PROFILE.parent), cwd=tmp_path)
    jobs = re.findall(r"^rule (\w+):\n(.*?)(?=^rule |^Job stats|\Z)", done.stdout, flags=re.MULTILINE | re.DOTALL)
    counts = {rule: sum(1 for name, _ in jobs if name == rule) for rule, _ in jobs}
    # four widths, each a model and its HF export, and an SAE per spec (main, authors, topk: 12, trained and
    # evaluated); the controls: four untrained models, an SAE per spec on each and one SAE-seed replicate per spec
    assert {rule: counts.get(rule) for rule in ("train_model", "export_hf", "train_sae", "evaluate_sae")} == {
        "train_model": 4 + 4, "export_hf": 4, "train_sae": 12 + 12 + 3, "evaluate_sae": 12}
    for rule, text in jobs:
        if rule == "all":
            continue
        resources = dict(item.split("=", 1) for item in re.search(r"resources: (.*)", text).group(1).split(", "))
        assert int(resources["mem_mb"]) > 0 and int(resources["runtime"]) > 0, (rule, resources)
        if rule in GPU_RULES:
            assert resources["gpu"] == "1" and resources["slurm_extra"] == SIGNAL and int(resources["cpus_per_gpu"]) > 0
        else:
            assert "gpu" not in resources and "slurm_extra" not in resources, (rule, resources)
    trained = [text for rule, text in jobs if rule == "train_model" and not re.search(r"model=w\d+-init", text)]
    widths = [int(re.search(r"model=w(\d+)", text).group(1)) for text in trained]
    runtimes = [int(re.search(r"runtime=(\d+)", text).group(1)) for text in trained]
    assert [r for _, r in sorted(zip(widths, runtimes))] == sorted(runtimes)  # wider models ask for longer


@pytest.mark.slow
@pytest.mark.slurm
def test_the_tiny_config_runs_on_slurm_with_a_gpu_for_gpu_rules_only(partition, tmp_path):
    profile = cluster_profile(tmp_path / "profile", partition)
    work = tmp_path / "run"
    work.mkdir()
    done = snakemake("--workflow-profile", str(profile), "--verbose", "--configfile", str(CONFIGS["tiny"]),
                     cwd=work, timeout=600)
    log = done.stdout + done.stderr
    (tmp_path / "snakemake.log").write_text(log)

    assert "Provided remote nodes: 100" in log and "Provided resources: gpu" not in log  # GPUs: SLURM's business
    calls = sbatch_calls(log)
    per_model = {"train_model", "export_hf", "train_sae", "evaluate_sae", "encode_features", "feature_budget"}
    once = {"correlate", "universality", "width_summary", "verdicts", "figures", "feature_browser",
            "study_report"}  # one pair, one SAE spec
    assert set(calls) == per_model | once, calls.keys()
    assert not LOCAL_RULES & set(calls)  # the data rules ran on this host
    for rule, rule_calls in calls.items():
        assert len(rule_calls) == (2 if rule in per_model else 1), rule_calls  # one per job, none retried
        for call in rule_calls:
            assert f"-p {partition}" in call
            if rule in GPU_RULES:
                assert " --gpus=1" in call and SIGNAL in call and "--cpus-per-gpu=1" in call, call
            else:
                assert "--gpus" not in call and "--gres" not in call and "--signal" not in call, call
    results = work / "results" / "tiny"
    for model in ("w16", "w32"):
        assert (results / "models" / model / "hf" / "config.json").exists()
        assert json.loads((results / "saes" / model / "main" / "eval.json").read_text())["l0"] > 0
        # SLURM showed each GPU job its GPU (here a stand-in for one: torch ran on the CPU)
        for rule_log in (f"train_model/{model}", f"train_sae/{model}/main", f"evaluate_sae/{model}/main"):
            assert "GPU 0 of the visible 0 is this job's" in (results / "logs" / f"{rule_log}.log").read_text()
    assert "GPU" not in (results / "logs" / "export_hf" / "w16.log").read_text()


@pytest.mark.slow
@pytest.mark.slurm
def test_a_training_job_cancelled_halfway_is_resubmitted_and_ends_as_an_uninterrupted_run(partition, tmp_path):
    # 400 steps (about 10 s here): long enough to cancel the job between two checkpoints
    longer = tmp_path / "longer.yaml"
    longer.write_text("run: preempt\ntraining: {tokens: 204800}\n")
    target = "results/preempt/models/w16/final.json"
    configs = ("--configfile", str(CONFIGS["tiny"]), str(longer))

    reference = tmp_path / "local"
    reference.mkdir()
    snakemake(target, "--cores", "2", "--set-threads", "train_model=1", *configs, cwd=reference)

    profile = cluster_profile(tmp_path / "profile", partition)
    work = tmp_path / "slurm"
    work.mkdir()
    command = [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), target,
               "--workflow-profile", str(profile), "--verbose", *configs]
    with open(tmp_path / "snakemake.log", "w") as out:
        run = subprocess.Popen(command, cwd=work, stdout=out, stderr=subprocess.STDOUT, text=True)
        try:
            job, cancelled_log = _cancel_when_checkpointed(work / "results" / "preempt", run)
            assert run.wait(timeout=400) == 0, (tmp_path / "snakemake.log").read_text()[-4000:]
        finally:
            if run.poll() is None:
                run.kill()
    log = (tmp_path / "snakemake.log").read_text()
    assert len(sbatch_calls(log)["train_model"]) == 2  # cancelled, then resubmitted
    assert re.search(rf"SLURM-job '{job}' failed, SLURM status is: 'CANCELLED'", log)
    assert "SIGTERM received: checkpointing and stopping" in cancelled_log  # the signal reached the training
    resumed = (work / "results" / "preempt" / "logs" / "train_model" / "w16.log").read_text()  # the retry's
    assert "resuming from checkpoint" in resumed and int(re.search(r"from step (\d+)", resumed).group(1)) > 0

    ours, theirs = (folder / "results" / "preempt" / "models" / "w16" for folder in (work, reference))
    assert (ours / "model.safetensors").read_bytes() == (theirs / "model.safetensors").read_bytes()
    assert json.loads((ours / "final.json").read_text()) == json.loads((theirs / "final.json").read_text())


def _cancel_when_checkpointed(results: Path, run: subprocess.Popen) -> tuple[str, str]:
    """scancel the running train_model job of w16 once it has written a checkpoint: its SLURM
    id, and its log once the training has seen the signal (Snakemake clears it for the retry)."""
    deadline = time.time() + 300
    while not list((results / "checkpoints" / "models" / "w16").glob("*/checkpoint.pt")):
        assert run.poll() is None, "snakemake ended before the training job wrote a checkpoint"
        assert time.time() < deadline, "no checkpoint within 300 s"
        time.sleep(0.1)
    jobs = subprocess.run(["squeue", "-h", "-t", "RUNNING", "-o", "%i|%k"], capture_output=True, text=True, check=True)
    (job,) = [line.split("|")[0] for line in jobs.stdout.split() if "|rule_train_model" in line]
    subprocess.run(["scancel", job], check=True)
    log = results / "logs" / "train_model" / "w16.log"
    deadline = time.time() + 30
    while "SIGTERM received" not in (text := log.read_text()) and time.time() < deadline:
        time.sleep(0.1)
    return job, text
