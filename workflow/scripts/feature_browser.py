from featscale.runtime import log_to

log_to(snakemake.log[0])

from featscale.browser import BrowserInputs, StudySettings, build_browser

models, params, inputs = snakemake.params.models, snakemake.params, snakemake.input
build_browser(
    snakemake.output[0],
    BrowserInputs(
        features=dict(zip(models, inputs.features)),
        sae_weights=dict(zip(models, inputs.saes)),
        tokens=inputs.tokens,
        tokenizer=inputs.tokenizer,
        points=inputs.points,
        census=inputs.census,
        pairs=inputs.pairs,
    ),
    StudySettings(params.min_count, params.collapsed_threshold, params.collapsed_min_neighbours, params.window_seed),
    run=params.run,
    sae=snakemake.wildcards.sae,
)
