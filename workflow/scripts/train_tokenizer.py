from pathlib import Path

from featscale.runtime import log_to, set_threads

log_to(snakemake.log[0])
set_threads(snakemake.threads)

from featscale.tokenizer import build_tokenizer  # after set_threads: tokenizers reads it once

build_tokenizer(
    snakemake.params.data,
    snakemake.params.tokenizer,
    snakemake.params.seed,
    snakemake.output[0],
    archive=Path(snakemake.input.corpus[0]) if snakemake.input.corpus else None,
)
