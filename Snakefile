# How a transformer's SAE features change with its width (see README.md).
# This file only loads and validates the config, includes the stages and names the targets;
# each stage is one file under workflow/rules/, its work one function of workflow/featscale/.

import os

# beside this file, wherever the working directory (--directory) is
configfile: os.path.join(workflow.basedir, "config.yaml")


include: "workflow/rules/common.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/models.smk"
include: "workflow/rules/saes.smk"
include: "workflow/rules/features.smk"
include: "workflow/rules/universality.smk"
include: "workflow/rules/browser.smk"


rule all:
    default_target: True
    input:
        tokens=TOKENS,
        models=expand(f"{RESULTS}/models/{{model}}/final.json", model=MODELS),
        hf=expand(f"{RESULTS}/models/{{model}}/hf", model=MODELS),
        saes=expand(f"{RESULTS}/saes/{{model}}/{{sae}}/eval.json", model=MODELS, sae=config["saes"]),
        correlations=[path for sae in config["saes"] for path in correlation_paths(sae)],
        figures=expand(f"{RESULTS}/figures/{{sae}}/universality_grid.png", sae=config["saes"]),
        report=f"{RESULTS}/report.md",
        browser=expand(f"{RESULTS}/browser/{{sae}}", sae=config["saes"]),
