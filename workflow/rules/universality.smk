# Importance against universality per ordered pair, what each width does with its features,
# the figures. All CPU rules: no gpu resource.


rule universality:
    input:
        features=lambda wildcards: expand(f"{RESULTS}/features/{{model}}/{wildcards.sae}.zarr", model=MODELS),
        saes=lambda wildcards: expand(
            f"{RESULTS}/saes/{{model}}/{wildcards.sae}/sae_weights.safetensors", model=MODELS
        ),
        correlations=lambda wildcards: correlation_paths(wildcards.sae),
        nulls=lambda wildcards: shifted_null_paths(wildcards.sae),
        untrained=lambda wildcards: untrained_null_paths(wildcards.sae),
        sae_seed=lambda wildcards: sae_seed_paths(wildcards.sae),
        sae_seed_nulls=lambda wildcards: sae_seed_paths(wildcards.sae, shifted=True),
    output:
        points=f"{RESULTS}/analysis/{{sae}}/points.parquet",
        pairs=f"{RESULTS}/analysis/{{sae}}/pairs.csv",
        census=f"{RESULTS}/analysis/{{sae}}/latents.csv",
        r_table=f"{RESULTS}/analysis/{{sae}}/r_table.csv",
        r_table_md=f"{RESULTS}/analysis/{{sae}}/r_table.md",
        r_table_masked=f"{RESULTS}/analysis/{{sae}}/r_table_masked.csv",
        r_table_masked_md=f"{RESULTS}/analysis/{{sae}}/r_table_masked.md",
        controls=f"{RESULTS}/analysis/{{sae}}/controls.csv",
    params:
        models=MODELS,
        pairs=model_pairs(),
        untrained_pairs=untrained_null_pairs(),
        sae_seed_models=sae_seed_replicate_models(config),
        min_count=config["correlation"]["min_count"],
        analysis=config["analysis"],
        controls=config["controls"],
        seed=config["seed"],
    threads: 1
    resources:
        mem_mb=8000,
    log:
        log_path("universality/{sae}"),
    benchmark:
        benchmark_path("universality/{sae}")
    conda:
        "../../envs/analysis.yaml"
    script:
        "../scripts/universality.py"


rule width_summary:
    input:
        evaluations=lambda wildcards: expand(f"{RESULTS}/saes/{{model}}/{wildcards.sae}/eval.json", model=MODELS),
        budgets=lambda wildcards: expand(f"{RESULTS}/analysis/{wildcards.sae}/budget/{{model}}.csv", model=MODELS),
        census=rules.universality.output.census,
    output:
        losses=f"{RESULTS}/analysis/{{sae}}/losses.csv",
        budget=f"{RESULTS}/analysis/{{sae}}/budget.csv",
        widths=f"{RESULTS}/analysis/{{sae}}/widths.csv",
        scaling=f"{RESULTS}/analysis/{{sae}}/scaling.csv",
        scaling_fits=f"{RESULTS}/analysis/{{sae}}/scaling_fits.json",
    params:
        models=MODELS,
        n_layers=config["models"]["n_layers"],
        recovery=config["feature_budget"]["recovery"],
    threads: 1
    log:
        log_path("width_summary/{sae}"),
    benchmark:
        benchmark_path("width_summary/{sae}")
    conda:
        "../../envs/analysis.yaml"
    script:
        "../scripts/width_summary.py"


rule figures:
    input:
        points=rules.universality.output.points,
        pairs=rules.universality.output.pairs,
        controls=rules.universality.output.controls,
        losses=rules.width_summary.output.losses,
        budget=rules.width_summary.output.budget,
        widths=rules.width_summary.output.widths,
        scaling=rules.width_summary.output.scaling,
    output:
        grid=report(
            f"{RESULTS}/figures/{{sae}}/universality_grid.png",
            caption="../report/universality_grid.rst",
            category="Universality",
        ),
        grid_masked=report(
            f"{RESULTS}/figures/{{sae}}/universality_grid_masked.png",
            caption="../report/universality_grid_masked.rst",
            category="Universality",
        ),
        pairs=report(
            directory(f"{RESULTS}/figures/{{sae}}/pairs"),
            patterns=["{source}__{target}.png"],
            caption="../report/universality_pair.rst",
            category="Universality pairs",
        ),
        nulls=report(
            directory(f"{RESULTS}/figures/{{sae}}/nulls"),
            patterns=["{source}__{target}.png"],
            caption="../report/null_distributions.rst",
            category="Controls",
        ),
        losses=report(
            f"{RESULTS}/figures/{{sae}}/reconstructed_losses.png",
            caption="../report/reconstructed_losses.rst",
            category="Losses",
        ),
        budget=report(
            f"{RESULTS}/figures/{{sae}}/feature_budget.png",
            caption="../report/feature_budget.rst",
            category="Feature budget",
        ),
        ablation=report(
            f"{RESULTS}/figures/{{sae}}/ablation.png",
            caption="../report/ablation.rst",
            category="Feature budget",
        ),
        widths=report(
            f"{RESULTS}/figures/{{sae}}/features_by_width.png",
            caption="../report/features_by_width.rst",
            category="Feature budget",
        ),
        scaling=report(
            f"{RESULTS}/figures/{{sae}}/scaling_law.png",
            caption="../report/scaling_law.rst",
            category="Losses",
        ),
    threads: 1
    log:
        log_path("figures/{sae}"),
    benchmark:
        benchmark_path("figures/{sae}")
    conda:
        "../../envs/analysis.yaml"
    script:
        "../scripts/figures.py"


rule study_report:
    input:
        pairs=expand(f"{RESULTS}/analysis/{{sae}}/pairs.csv", sae=config["saes"]),
        census=expand(f"{RESULTS}/analysis/{{sae}}/latents.csv", sae=config["saes"]),
        controls=expand(f"{RESULTS}/analysis/{{sae}}/controls.csv", sae=config["saes"]),
        losses=expand(f"{RESULTS}/analysis/{{sae}}/losses.csv", sae=config["saes"]),
        widths=expand(f"{RESULTS}/analysis/{{sae}}/widths.csv", sae=config["saes"]),
        scaling_fits=expand(f"{RESULTS}/analysis/{{sae}}/scaling_fits.json", sae=config["saes"]),
        budget=expand(f"{RESULTS}/analysis/{{sae}}/budget.csv", sae=config["saes"]),
        figures=expand(f"{RESULTS}/figures/{{sae}}/universality_grid.png", sae=config["saes"]),
    output:
        report(f"{RESULTS}/report.md", caption="../report/report_md.rst", category="Report"),
    params:
        saes=list(config["saes"]),
        config=config,
    threads: 1
    log:
        log_path("study_report"),
    conda:
        "../../envs/analysis.yaml"
    script:
        "../scripts/study_report.py"
