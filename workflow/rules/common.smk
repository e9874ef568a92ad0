import os
import sys

from snakemake.utils import min_version

min_version("9.0")

# The package that does the work lives beside the rules; jobs (also on cluster nodes and
# in conda environments) find it through PYTHONPATH, so it need not be installed there.
# (workflow/, the parent of this file's folder, whichever Snakefile includes it)
PACKAGE_ROOT = os.path.abspath(os.path.join(workflow.current_basedir, ".."))
sys.path.insert(0, PACKAGE_ROOT)
os.environ.update(
    PYTHONPATH=os.pathsep.join(
        p for p in (PACKAGE_ROOT, os.environ.get("PYTHONPATH")) if p
    )
)

from featscale import names
from featscale.config import read_config_file
from featscale.execution.gpus import gpu_slots
from featscale.validation import settings_from_config

# The paper config, beside the top-level Snakefile wherever the working directory (--directory) is
# and whichever Snakefile is the entry point, read first by us so that a YAML mistake in it is named
# by file and line (Snakemake reads the --configfile files itself, before this runs, and names
# neither), then merged under the --configfile files.
CONFIG_YAML = os.path.join(os.path.dirname(PACKAGE_ROOT), "config.yaml")
read_config_file(CONFIG_YAML)


configfile: CONFIG_YAML


# the typed settings, built once from the checked config with its defaults filled in (all problems
# of a stage at once: featscale.validation.settings_from_config); rules pass each job the section it
# needs, as plain data
SETTINGS = settings_from_config(
    config,
    configfiles=workflow.overwrite_configfiles or [],
    command_line=workflow.config_settings.overwrite_config,
    # jobs run here (not sent to a cluster, not a cluster job itself): the device must be here too
    local=workflow.local_exec and not workflow.remote_exec,
)


report: "../report/workflow.rst"


# GPU slots of a local run: as many GPU jobs at once as there are visible GPUs, and at least
# one, so that a machine without a GPU still runs every rule; each GPU job then claims a GPU of
# its own (featscale.execution.gpus). `--resources gpu=N` overrides this; a cluster run (a
# remote executor, which sets --jobs) leaves GPUs to the cluster's scheduler.
if "gpu" not in workflow.global_resources and workflow.nodes is None:
    workflow.global_resources["gpu"] = gpu_slots()


RESULTS = f"results/{SETTINGS.run}"
# the study's models; the untrained null models (w<width>-init) are controls only, never in here
MODELS = SETTINGS.model_names()
SAES = list(SETTINGS.saes)
# a family with known features instead of trained language models (docs/planted.md)
PLANTED = SETTINGS.models.planted
# torch threads of the jobs that read a model: a planted family's SAEs are small (widths of tens, hundreds
# of latents), where a second thread only waits on the first (ten times slower on a busy 2-core machine):
# one thread each, and as many jobs at once as there are cores
TORCH_THREADS = 1 if PLANTED else 2


wildcard_constraints:
    model=names.MODEL_PATTERN,
    sae=names.SAE_PATTERN,


# the artifacts (README, "Outputs"), relative to the working directory
TOKENIZER = f"{RESULTS}/data/tokenizer.json"
TOKENS = f"{RESULTS}/data/tokens.zarr"
EMBEDDED_ARCHIVE = f"{RESULTS}/data/corpus/embedded.tar.gz"
TRUTH = f"{RESULTS}/planted/truth.zarr"


def corpus_archive(wildcards):
    return [EMBEDDED_ARCHIVE] if SETTINGS.data.source == "embedded" else []


def log_path(name):
    return f"{RESULTS}/logs/{name}.log"


def benchmark_path(name):
    return f"{RESULTS}/benchmarks/{name}.tsv"


def width_of(wildcards):
    return names.width_of(wildcards.model)


def training_settings(wildcards):
    """How a model is trained: the training section, except that an untrained null model
    (w<width>-init) takes zero steps, so train_model saves its initialisation as it is.
    """
    tokens = 0 if names.is_untrained(wildcards.model) else SETTINGS.training.tokens
    return SETTINGS.training.to_dict() | {"tokens": tokens}


def spec_of(wildcards):
    """The SAE spec of an {sae} wildcard (a spec of `saes` or the SAE-seed replicate of one), as data."""
    return SETTINGS.sae_spec(wildcards.sae).to_dict()


def train_model_runtime(wildcards):
    """Minutes asked of the scheduler: 1 h plus the 6ND compute at a conservative 20 TFLOP/s."""
    flops = (
        6
        * SETTINGS.models.non_embedding_params(names.width_of(wildcards.model))
        * training_settings(wildcards)["tokens"]
    )
    return 60 + int(flops / 20e12 / 60)


def gpu_job_mem_mb(wildcards):
    """Host memory of a model's GPU jobs: grows with width (weights, optimizer, batches)."""
    return 8000 + 16 * names.width_of(wildcards.model)


def train_sae_runtime(wildcards):
    """Minutes asked of the scheduler for one SAE: 1 h plus 1 h per 250M training tokens."""
    return 60 + int(60 * SETTINGS.sae_spec(wildcards.sae).tokens / 250e6)


def model_inputs(wildcards):
    """The inputs that stand for model {model} where it is read: a trained GPT's weights and config,
    or, in a planted run, the family's truth store (featscale.models.source.load_source tells them
    apart by name)."""
    if PLANTED:
        return {"truth": TRUTH}
    return {
        "model_weights": expand(
            rules.train_model.output.weights, model=wildcards.model
        )[0],
        "model_config": expand(rules.train_model.output.config, model=wildcards.model)[
            0
        ],
    }


def model_artifacts():
    """What stands for the study's models: each trained GPT's final.json, or the planted family's truth."""
    return [TRUTH] if PLANTED else expand(rules.train_model.output.final, model=MODELS)


def budget_paths(sae, output="table"):
    """Each model's feature-budget table (or its per-window losses) of spec `sae`; none for a planted
    family, which has no language model to lose loss."""
    return (
        []
        if PLANTED
        else expand(getattr(rules.feature_budget.output, output), model=MODELS, sae=sae)
    )


def truth_tables(wildcards):
    """The truth-scoring tables of every spec, named as rule score_truth names them; none unless planted."""
    if not PLANTED:
        return {}
    return {
        name: expand(path, sae=SAES) for name, path in rules.score_truth.output.items()
    }


def model_pairs():
    """Unordered pairs of models, each once, narrower (then lower seed) first."""
    return names.model_pairs(MODELS)


def untrained_null_pairs():
    """(source, untrained model) of every correlation the untrained null needs, when it is on."""
    return (
        names.untrained_null_correlations(MODELS)
        if SETTINGS.controls.untrained_null
        else []
    )


def correlation_block_mb(wildcards):
    """One correlation worker's co-occurrence block in MB: block_latents x latents x 8 bytes, x2 headroom."""
    latents = SETTINGS.sae_spec(wildcards.sae).n_latents
    return int(2 * min(SETTINGS.correlation.block_latents, latents) * latents * 8 / 1e6)


# ---- where each artifact lives: one template each; rules fill in wildcards or expand them ----
def hf_export_path(model="{model}"):
    """A model in the Hugging Face format; its SAEs' cfg.json name it as the model SAELens should load."""
    return f"{RESULTS}/models/{model}/hf"


def features_path(model="{model}", sae="{sae}"):
    return f"{RESULTS}/features/{model}/{sae}.zarr"


def correlation_path(a="{a}", b="{b}", sae="{sae}", control=None):
    """A pair's correlation store, or with `control` (shifted, untrained) that of one of its nulls."""
    folder = f"correlations/{sae}" if control is None else f"controls/{sae}/{control}"
    return f"{RESULTS}/{folder}/{names.pair_name(a, b)}.zarr"


def sae_seed_path(model="{model}", sae="{sae}", shifted=False):
    """A model's SAE against its SAE-seed replicate (the ceiling), or that correlation's shifted null."""
    return f"{RESULTS}/controls/{sae}/{'sae_seed_shifted' if shifted else 'sae_seed'}/{model}.zarr"


def analysis_path(name, sae="{sae}"):
    return f"{RESULTS}/analysis/{sae}/{name}"


def figure_path(name, sae="{sae}"):
    return f"{RESULTS}/figures/{sae}/{name}"


def correlation_paths(sae):
    return [correlation_path(a, b, sae) for a, b in model_pairs()]


def shifted_null_paths(sae):
    """The shifted-token null of every pair, when controls.shifted_null is on."""
    if not SETTINGS.controls.shifted_null:
        return []
    return [correlation_path(a, b, sae, control="shifted") for a, b in model_pairs()]


def untrained_null_paths(sae):
    """Each source model against the untrained model of a target's width (rule correlate_untrained)."""
    return [
        correlation_path(a, b, sae, control="untrained")
        for a, b in untrained_null_pairs()
    ]


def sae_seed_paths(sae, shifted=False):
    """The correlation of each replicated model's SAE with its SAE-seed replicate (and its shifted null)."""
    if shifted and not SETTINGS.controls.shifted_null:
        return []
    return [
        sae_seed_path(model, sae, shifted)
        for model in SETTINGS.sae_seed_replicate_models()
    ]


def sae_seed_inputs(wildcards):
    """One model's codes under spec {sae} (side a) and under its SAE-seed replicate (side b)."""
    return {
        "a": features_path(wildcards.model, wildcards.sae),
        "b": features_path(
            wildcards.model, names.sae_seed_replicate_name(wildcards.sae)
        ),
    }


def matched_widths(sae):
    """The widths table of the spec at matched reconstruction that claim (d) of spec `sae` reads, if any."""
    matched = SETTINGS.matched_spec(sae)
    return [analysis_path("widths.csv", matched)] if matched else []
