from featscale.runtime import log_to, set_threads

log_to(snakemake.log[0])

import zarr

from featscale.model import GPTConfig
from featscale.train import train_model

set_threads(snakemake.threads)
vocab_size = zarr.open_group(snakemake.input.tokens, mode="r").attrs["vocab_size"]
train_model(
    GPTConfig(vocab_size=vocab_size, **snakemake.params.architecture),
    snakemake.params.training,
    snakemake.params.run_seed,
    snakemake.params.model_seed,
    snakemake.input.tokens,
    snakemake.params.evaluation_tokens,
    dict(snakemake.output.items()),
    snakemake.params.checkpoints,
)
