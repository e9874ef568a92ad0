from featscale.runtime import log_to

log_to(snakemake.log[0])

from featscale.correlation import correlate
from featscale.features import open_features

settings = snakemake.params.correlation
# the shifted-token null (rule correlate_shifted); 0 for the real correlation
fraction = snakemake.params.get("shift_fraction", 0.0)
correlate(
    snakemake.input.a,
    snakemake.input.b,
    snakemake.output[0],
    min_count=settings["min_count"],
    block_latents=settings["block_latents"],
    token_chunk=settings["token_chunk"],
    matrix_dtype=settings["matrix_dtype"],
    workers=snakemake.threads,
    shift=int(fraction * open_features(snakemake.input.a).n_tokens),
)
