# How a transformer's SAE features change with its width (see README.md).
# This file only loads and validates the config, includes the stages and names the targets;
# each stage is one file under workflow/rules/, its work one function of workflow/featscale/.


# first: common.smk loads config.yaml (beside this file, also when workflow/Snakefile, the catalog's
# entry point, includes this one), the --configfile files over it, and checks the result before
# any job runs
include: "workflow/rules/common.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/models.smk"
include: "workflow/rules/saes.smk"
include: "workflow/rules/features.smk"
include: "workflow/rules/universality.smk"
include: "workflow/rules/planted.smk"
include: "workflow/rules/browser.smk"


rule all:
    default_target: True
    input:
        tokens=rules.tokenize_corpus.output[0],
        models=model_artifacts(),
        # a planted family has no language model to export
        hf=[] if PLANTED else expand(rules.export_hf.output[0], model=MODELS),
        saes=expand(rules.evaluate_sae.output[0], model=MODELS, sae=SAES),
        correlations=[path for sae in SAES for path in correlation_paths(sae)],
        figures=expand(rules.figures.output.grid, sae=SAES),
        truth=(
            expand(rules.score_truth.output.truth_summary, sae=SAES) if PLANTED else []
        ),
        report=rules.study_report.output[0],
        browser=expand(rules.feature_browser.output[0], sae=SAES),
