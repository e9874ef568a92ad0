import os
import sys

from snakemake.exceptions import WorkflowError
from snakemake.utils import min_version, validate

min_version("9.0")

# The package that does the work lives beside the rules; jobs (also on cluster nodes and
# in conda environments) find it through PYTHONPATH, so it need not be installed there.
PACKAGE_ROOT = os.path.abspath(os.path.join(workflow.basedir, "workflow"))
sys.path.insert(0, PACKAGE_ROOT)
os.environ.update(
    PYTHONPATH=os.pathsep.join(p for p in (PACKAGE_ROOT, os.environ.get("PYTHONPATH")) if p)
)

from featscale.config import (
    ConfigError,
    check_config,
    describe_schema_error,
    feature_window_tokens,
    is_untrained,
    model_names,
    parse_model_name,
    sae_seed_replicate_models,
    sae_seed_replicate_name,
    sae_spec,
    untrained_null_correlations,
)
from featscale.gpus import gpu_slots


try:
    validate(config, "../schemas/config.schema.yaml")
except WorkflowError as error:
    cause = error.__context__  # the jsonschema ValidationError
    if not hasattr(cause, "absolute_path"):
        raise
    raise ConfigError(describe_schema_error(cause)) from None
check_config(
    config,
    configfiles=workflow.overwrite_configfiles or [],
    command_line=workflow.config_settings.overwrite_config,
)

report: "../report/workflow.rst"

# GPU slots of a local run: as many GPU jobs at once as there are visible GPUs, and at least
# one, so that a machine without a GPU still runs every rule; each GPU job then claims a GPU of
# its own (featscale.gpus). `--resources gpu=N` overrides this; a cluster run (a remote
# executor, which sets --jobs) leaves GPUs to the cluster's scheduler.
if "gpu" not in workflow.global_resources and workflow.nodes is None:
    workflow.global_resources["gpu"] = gpu_slots()


RESULTS = f"results/{config['run']}"
# the study's models; the untrained null models (w<width>-init) are controls only, never in here
MODELS = model_names(config)


wildcard_constraints:
    model=r"w[0-9]+(-s[0-9]+)?(-init)?",
    sae=r"[A-Za-z0-9][A-Za-z0-9_-]*",

# the artifacts (README, "Outputs"), relative to the working directory
TOKENIZER = f"{RESULTS}/data/tokenizer.json"
TOKENS = f"{RESULTS}/data/tokens.zarr"
EMBEDDED_ARCHIVE = f"{RESULTS}/data/corpus/embedded.tar.gz"


def corpus_settings():
    """The data settings that decide which documents exist and where each goes, and no others
    (editing an unused source's block, or the store's chunking, reruns nothing upstream)."""
    data = config["data"]
    source = data["source"]
    return {
        "source": source,
        source: data[source],
        "split_fractions": data["split_fractions"],
    }


def store_settings():
    """What shapes the token store: the corpus settings, the caps and the chunking."""
    data = config["data"]
    return corpus_settings() | {
        key: data[key] for key in ("max_tokens", "chunk_tokens", "shard_chunks")
    }


def corpus_archive(wildcards):
    return [EMBEDDED_ARCHIVE] if config["data"]["source"] == "embedded" else []


def log_path(name):
    return f"{RESULTS}/logs/{name}.log"


def benchmark_path(name):
    return f"{RESULTS}/benchmarks/{name}.tsv"


def model_architecture(wildcards):
    """The shape of one model (its vocabulary comes from the token store)."""
    width, _ = parse_model_name(wildcards.model)
    models = config["models"]
    return {
        "width": width,
        "n_layers": models["n_layers"],
        "head_size": models["head_size"],
        "context": models["context"],
    }


def training_settings(model):
    """How a model is trained: config["training"], except that an untrained null model
    (w<width>-init) takes zero steps, so train_model saves its initialisation as it is."""
    return config["training"] | ({"tokens": 0} if is_untrained(model) else {})


def spec_of(wildcards):
    """The SAE spec of an {sae} wildcard: a spec of config["saes"] or the SAE-seed replicate of one."""
    return sae_spec(config, wildcards.sae)


def _training_flops(model):
    """6 N D: the compute of training one model, N counting non-embedding parameters."""
    width, _ = parse_model_name(model)
    return 6 * 12 * config["models"]["n_layers"] * width**2 * training_settings(model)["tokens"]


def train_model_runtime(model):
    """Minutes asked of the scheduler: 1 h plus the 6ND compute at a conservative 20 TFLOP/s."""
    return 60 + int(_training_flops(model) / 20e12 / 60)


def gpu_job_mem_mb(model):
    """Host memory of a model's GPU jobs: grows with width (weights, optimizer, batches)."""
    width, _ = parse_model_name(model)
    return 8000 + 16 * width


def train_sae_runtime(sae):
    """Minutes asked of the scheduler for one SAE: 1 h plus 1 h per 250M training tokens."""
    return 60 + int(60 * sae_spec(config, sae)["tokens"] / 250e6)


def model_pairs():
    """Unordered pairs of models, each once, narrower (then lower seed) first: `a__b` names."""
    return [(a, b) for i, a in enumerate(MODELS) for b in MODELS[i + 1 :]]


def correlation_paths(sae):
    return [f"{RESULTS}/correlations/{sae}/{a}__{b}.zarr" for a, b in model_pairs()]


def shifted_null_paths(sae):
    """The shifted-token null of every pair, when controls.shifted_null is on."""
    if not config["controls"]["shifted_null"]:
        return []
    return [f"{RESULTS}/controls/{sae}/shifted/{a}__{b}.zarr" for a, b in model_pairs()]


def untrained_null_pairs():
    """(source, untrained model) of every correlation the untrained null needs, when it is on."""
    return untrained_null_correlations(MODELS) if config["controls"]["untrained_null"] else []


def untrained_null_paths(sae):
    """Each source model against the untrained model of a target's width (rule correlate_untrained)."""
    return [f"{RESULTS}/controls/{sae}/untrained/{a}__{b}.zarr" for a, b in untrained_null_pairs()]


def sae_seed_paths(sae, shifted=False):
    """The correlation of each replicated model's SAE with its SAE-seed replicate (and its shifted null)."""
    if shifted and not config["controls"]["shifted_null"]:
        return []
    folder = "sae_seed_shifted" if shifted else "sae_seed"
    return [f"{RESULTS}/controls/{sae}/{folder}/{model}.zarr" for model in sae_seed_replicate_models(config)]


def sae_seed_inputs(wildcards):
    """One model's codes under spec {sae} (side a) and under its SAE-seed replicate (side b)."""
    return {
        "a": f"{RESULTS}/features/{wildcards.model}/{wildcards.sae}.zarr",
        "b": f"{RESULTS}/features/{wildcards.model}/{sae_seed_replicate_name(wildcards.sae)}.zarr",
    }


def correlation_block_mb(sae):
    """One correlation worker's co-occurrence block in MB: block_latents x latents x 8 bytes, x2 headroom."""
    latents = sae_spec(config, sae)["n_latents"]
    return int(2 * min(config["correlation"]["block_latents"], latents) * latents * 8 / 1e6)
