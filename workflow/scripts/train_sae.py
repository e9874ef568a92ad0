from featscale.runtime import log_to, set_threads

log_to(snakemake.log[0])

from pathlib import Path

from featscale.sae_train import train_sae
from featscale.train import load_model

set_threads(snakemake.threads)
spec = snakemake.params.spec
train_sae(
    load_model(snakemake.input.weights, snakemake.input.config),
    snakemake.input.weights,
    spec,
    {"model": snakemake.wildcards.model, "layer": spec["layer"], "site": spec["site"]},
    snakemake.params.run_seed,
    snakemake.input.tokens,
    Path(snakemake.output.weights).parent,
    snakemake.output.metrics,
    snakemake.params.checkpoints,
    snakemake.params.device,
)
