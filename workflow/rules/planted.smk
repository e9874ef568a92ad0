# A planted family (models.kind planted, docs/planted.md): plant_family stands in for train_model
# (no language model is trained; train_sae, evaluate_sae and encode_features read the family's
# truth store through model_inputs), and score_truth scores the study's measurement against it.


rule plant_family:
    output:
        directory(TRUTH),
    log:
        log_path("plant_family"),
    benchmark:
        benchmark_path("plant_family")
    conda:
        "../../envs/analysis.yaml"
    threads: 1
    params:
        planted=SETTINGS.planted.to_dict(),
        widths=list(SETTINGS.models.widths),
        model_names=MODELS,
        context=SETTINGS.models.context,
        run_seed=SETTINGS.seed,
    script:
        "../scripts/plant_family.py"


rule score_truth:
    input:
        truth=TRUTH,
        saes=lambda wildcards: expand(
            rules.train_sae.output.weights, model=MODELS, sae=wildcards.sae
        ),
        sae_configs=lambda wildcards: expand(
            rules.train_sae.output.config, model=MODELS, sae=wildcards.sae
        ),
        points=rules.universality.output.points,
        pairs=rules.universality.output.pairs,
        widths=rules.width_summary.output.widths,
        verdict_table=rules.verdicts.output.verdicts,
    output:
        truth_recovery=analysis_path("truth_recovery.csv"),
        truth_recovery_bins=analysis_path("truth_recovery_bins.csv"),
        truth_pairs=analysis_path("truth_pairs.csv"),
        truth_widths=analysis_path("truth_widths.csv"),
        truth_summary=analysis_path("truth_summary.json"),
    log:
        log_path("score_truth/{sae}"),
    benchmark:
        benchmark_path("score_truth/{sae}")
    conda:
        "../../envs/analysis.yaml"
    threads: 1
    params:
        truth=SETTINGS.truth.to_dict(),
        verdicts=SETTINGS.verdicts.to_dict(),
        resamples=SETTINGS.analysis.bootstrap_resamples,
        confidence=SETTINGS.analysis.confidence,
        run_seed=SETTINGS.seed,
    script:
        "../scripts/score_truth.py"
