from featscale.runtime import log_to

log_to(snakemake.log[0])

from featscale.correlation import correlate

settings = snakemake.params.correlation
correlate(
    snakemake.input.a,
    snakemake.input.b,
    snakemake.output[0],
    min_count=settings["min_count"],
    block_latents=settings["block_latents"],
    token_chunk=settings["token_chunk"],
    matrix_dtype=settings["matrix_dtype"],
    workers=snakemake.threads,
)
