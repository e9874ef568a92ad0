from featscale.runtime import log_to

log_to(snakemake.log[0])

from featscale.config import sae_seed_replicate_name
from featscale.runtime import write_atomically
from featscale.study import (
    control_table,
    latent_census,
    pair_r_table,
    pair_table,
    sae_seed_points,
    universality_points,
)

models, analysis = snakemake.params.models, snakemake.params.analysis
features = dict(zip(models, snakemake.input.features))
saes = dict(zip(models, snakemake.input.saes))
correlations = dict(zip(map(tuple, snakemake.params.pairs), snakemake.input.correlations))
# the controls' inputs: each empty when its switch is off
nulls = dict(zip(map(tuple, snakemake.params.pairs), snakemake.input.nulls))
untrained = dict(zip(map(tuple, snakemake.params.untrained_pairs), snakemake.input.untrained))
sae_seed = dict(zip(snakemake.params.sae_seed_models, snakemake.input.sae_seed))
sae_seed_nulls = dict(zip(snakemake.params.sae_seed_models, snakemake.input.sae_seed_nulls))
controls = snakemake.params.controls
out = snakemake.output

census, masks = latent_census(
    features, saes, snakemake.params.min_count, analysis["collapsed_threshold"], analysis["collapsed_min_neighbours"]
)
points = universality_points(features, correlations, masks, snakemake.params.min_count, nulls, untrained)
pairs = pair_table(
    points, analysis["talk_compatible"], analysis["bootstrap_resamples"], analysis["confidence"], snakemake.params.seed,
    fit_resamples=analysis["bootstrap_fit_resamples"],
)
ceilings = sae_seed_points(features, sae_seed, masks, snakemake.params.min_count,
                           sae_seed_replicate_name(snakemake.wildcards.sae), sae_seed_nulls)
control = control_table(points, controls["null_percentile"], controls["frequency_bins"], ceilings)
write_atomically(out.controls, lambda path: control.to_csv(path, index=False))
write_atomically(out.census, lambda path: census.to_csv(path, index=False))
write_atomically(out.points, lambda path: points.to_parquet(path, index=False))
write_atomically(out.pairs, lambda path: pairs.to_csv(path, index=False))
for mask, csv, markdown in (("all", out.r_table, out.r_table_md), ("masked", out.r_table_masked, out.r_table_masked_md)):
    table = pair_r_table(pairs, mask)
    table.to_csv(csv)
    write_atomically(markdown, lambda path, t=table: path.write_text(t.to_markdown()))
