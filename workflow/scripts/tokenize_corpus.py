from functools import partial
from pathlib import Path

from featscale.runtime import log_to, set_threads

log_to(snakemake.log[0])
set_threads(snakemake.threads)

from featscale.config import check_split_sizes  # after set_threads: tokenizers reads it once
from featscale.token_store import build_token_store

build_token_store(
    snakemake.params.data,
    snakemake.params.seed,
    snakemake.input.tokenizer,
    snakemake.output[0],
    archive=Path(snakemake.input.corpus[0]) if snakemake.input.corpus else None,
    check=partial(check_split_sizes, **snakemake.params.needs),
)
