# The feature browser: a static page per SAE spec to explore the study latent by latent.
# CPU only: no gpu resource.


rule feature_browser:
    input:
        tokens=TOKENS,
        tokenizer=TOKENIZER,
        features=lambda wildcards: expand(f"{RESULTS}/features/{{model}}/{wildcards.sae}.zarr", model=MODELS),
        saes=lambda wildcards: expand(
            f"{RESULTS}/saes/{{model}}/{wildcards.sae}/sae_weights.safetensors", model=MODELS
        ),
        points=rules.universality.output.points,
        census=rules.universality.output.census,
        pairs=rules.universality.output.pairs,
    output:
        directory(f"{RESULTS}/browser/{{sae}}"),
    params:
        run=config["run"],
        models=MODELS,
        min_count=config["correlation"]["min_count"],
        collapsed_threshold=config["analysis"]["collapsed_threshold"],
        collapsed_min_neighbours=config["analysis"]["collapsed_min_neighbours"],
        # random train windows depend on the run's seed; the analysis split's windows do not
        window_seed=config["seed"] if config["features"]["split"] == "train" else None,
    threads: 1
    resources:
        mem_mb=4000,
    log:
        log_path("feature_browser/{sae}"),
    benchmark:
        benchmark_path("feature_browser/{sae}")
    conda:
        "../../envs/analysis.yaml"
    script:
        "../scripts/feature_browser.py"
