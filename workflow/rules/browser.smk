# The feature browser: a static page per SAE spec to explore the study latent by latent.
# CPU only: no gpu resource.


rule feature_browser:
    input:
        tokens=rules.tokenize_corpus.output[0],
        tokenizer=rules.train_tokenizer.output[0],
        features=lambda wildcards: expand(
            rules.encode_features.output[0], model=MODELS, sae=wildcards.sae
        ),
        saes=lambda wildcards: expand(
            rules.train_sae.output.weights, model=MODELS, sae=wildcards.sae
        ),
        sae_configs=lambda wildcards: expand(
            rules.train_sae.output.config, model=MODELS, sae=wildcards.sae
        ),
        points=rules.universality.output.points,
        census=rules.universality.output.census,
        pairs=rules.universality.output.pairs,
    output:
        directory(f"{RESULTS}/browser/{{sae}}"),
    log:
        log_path("feature_browser/{sae}"),
    benchmark:
        benchmark_path("feature_browser/{sae}")
    conda:
        "../../envs/analysis.yaml"
    threads: 1
    resources:
        mem_mb=4000,
    params:
        run=SETTINGS.run,
        min_count=SETTINGS.correlation.min_count,
        analysis=SETTINGS.analysis.to_dict(),
        run_seed=SETTINGS.seed,
        planted=PLANTED,
    script:
        "../scripts/feature_browser.py"
