# Importance against universality per ordered pair, what each width does with its features,
# the figures. All CPU rules: no gpu resource.


rule universality:
    input:
        features=lambda wildcards: expand(
            rules.encode_features.output[0], model=MODELS, sae=wildcards.sae
        ),
        saes=lambda wildcards: expand(
            rules.train_sae.output.weights, model=MODELS, sae=wildcards.sae
        ),
        sae_configs=lambda wildcards: expand(
            rules.train_sae.output.config, model=MODELS, sae=wildcards.sae
        ),
        correlations=lambda wildcards: correlation_paths(wildcards.sae),
        nulls=lambda wildcards: shifted_null_paths(wildcards.sae),
        untrained=lambda wildcards: untrained_null_paths(wildcards.sae),
        sae_seed=lambda wildcards: sae_seed_paths(wildcards.sae),
        sae_seed_nulls=lambda wildcards: sae_seed_paths(wildcards.sae, shifted=True),
    output:
        points=analysis_path("points.parquet"),
        pairs=analysis_path("pairs.csv"),
        census=analysis_path("latents.csv"),
        r_table=analysis_path("r_table.csv"),
        r_table_md=analysis_path("r_table.md"),
        r_table_masked=analysis_path("r_table_masked.csv"),
        r_table_masked_md=analysis_path("r_table_masked.md"),
        controls=analysis_path("controls.csv"),
    log:
        log_path("universality/{sae}"),
    benchmark:
        benchmark_path("universality/{sae}")
    conda:
        "../../envs/analysis.yaml"
    threads: 1
    resources:
        mem_mb=8000,
    params:
        min_count=SETTINGS.correlation.min_count,
        analysis=SETTINGS.analysis.to_dict(),
        controls=SETTINGS.controls.to_dict(),
        run_seed=SETTINGS.seed,
    script:
        "../scripts/universality.py"


rule width_summary:
    input:
        evaluations=lambda wildcards: expand(
            rules.evaluate_sae.output[0], model=MODELS, sae=wildcards.sae
        ),
        budgets=lambda wildcards: budget_paths(wildcards.sae),
        census=rules.universality.output.census,
    output:
        losses=analysis_path("losses.csv"),
        budget=analysis_path("budget.csv"),
        widths=analysis_path("widths.csv"),
        scaling=analysis_path("scaling.csv"),
        scaling_fits=analysis_path("scaling_fits.json"),
    log:
        log_path("width_summary/{sae}"),
    benchmark:
        benchmark_path("width_summary/{sae}")
    conda:
        "../../envs/analysis.yaml"
    threads: 1
    params:
        n_layers=SETTINGS.models.n_layers,
        recovery=SETTINGS.feature_budget.recovery,
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
        scaling_fits=rules.width_summary.output.scaling_fits,
        model_metrics=(
            [] if PLANTED else expand(rules.train_model.output.metrics, model=MODELS)
        ),
        # a planted family trains none
        sae_metrics=lambda wildcards: expand(
            rules.train_sae.output.metrics, model=MODELS, sae=wildcards.sae
        ),
    output:
        grid=report(
            figure_path("universality_grid.png"),
            caption="../report/universality_grid.rst",
            category="Universality",
        ),
        grid_masked=report(
            figure_path("universality_grid_masked.png"),
            caption="../report/universality_grid_masked.rst",
            category="Universality",
        ),
        pairs=report(
            directory(figure_path("pairs")),
            patterns=["{source}__{target}.png"],
            caption="../report/universality_pair.rst",
            category="Universality pairs",
        ),
        nulls=report(
            directory(figure_path("nulls")),
            patterns=["{source}__{target}.png"],
            caption="../report/null_distributions.rst",
            category="Controls",
        ),
        losses=report(
            figure_path("reconstructed_losses.png"),
            caption="../report/reconstructed_losses.rst",
            category="Losses",
        ),
        budget=report(
            figure_path("feature_budget.png"),
            caption="../report/feature_budget.rst",
            category="Feature budget",
        ),
        ablation=report(
            figure_path("ablation.png"),
            caption="../report/ablation.rst",
            category="Feature budget",
        ),
        widths=report(
            figure_path("features_by_width.png"),
            caption="../report/features_by_width.rst",
            category="Feature budget",
        ),
        scaling=report(
            figure_path("scaling_law.png"),
            caption="../report/scaling_law.rst",
            category="Losses",
        ),
        training=report(
            figure_path("training_curves.png"),
            caption="../report/training_curves.rst",
            category="Training",
        ),
    log:
        log_path("figures/{sae}"),
    benchmark:
        benchmark_path("figures/{sae}")
    conda:
        "../../envs/analysis.yaml"
    threads: 1
    script:
        "../scripts/figures.py"


rule verdicts:
    input:
        pairs=rules.universality.output.pairs,
        points=rules.universality.output.points,
        controls=rules.universality.output.controls,
        budget_windows=lambda wildcards: budget_paths(wildcards.sae, "windows"),
        matched_widths=lambda wildcards: matched_widths(wildcards.sae),
    output:
        verdicts=analysis_path("verdicts.csv"),
        talk_comparison=analysis_path("talk_comparison.csv"),
    log:
        log_path("verdicts/{sae}"),
    benchmark:
        benchmark_path("verdicts/{sae}")
    conda:
        "../../envs/analysis.yaml"
    threads: 1
    params:
        verdicts=SETTINGS.verdicts.to_dict(),
        matched=lambda wildcards: SETTINGS.matched_spec(wildcards.sae),
        recovery=SETTINGS.feature_budget.recovery,
        confidence=SETTINGS.analysis.confidence,
        run_seed=SETTINGS.seed,
    script:
        "../scripts/verdicts.py"


rule study_report:
    input:
        unpack(truth_tables),  # a planted family's measurement scored against its truth
        pairs=expand(rules.universality.output.pairs, sae=SAES),
        points=expand(rules.universality.output.points, sae=SAES),
        census=expand(rules.universality.output.census, sae=SAES),
        controls=expand(rules.universality.output.controls, sae=SAES),
        losses=expand(rules.width_summary.output.losses, sae=SAES),
        widths=expand(rules.width_summary.output.widths, sae=SAES),
        scaling_fits=expand(rules.width_summary.output.scaling_fits, sae=SAES),
        budget=expand(rules.width_summary.output.budget, sae=SAES),
        figures=expand(rules.figures.output.grid, sae=SAES),
        verdicts=expand(rules.verdicts.output.verdicts, sae=SAES),
        talk_comparison=expand(rules.verdicts.output.talk_comparison, sae=SAES),
    output:
        report(
            f"{RESULTS}/report.md",
            caption="../report/report_md.rst",
            category="Report",
        ),
    log:
        log_path("study_report"),
    conda:
        "../../envs/analysis.yaml"
    threads: 1
    params:
        settings=SETTINGS.report().to_dict(),
    script:
        "../scripts/study_report.py"
