from featscale.execution.jobs import run_rule

# the rule's params, wildcards, inputs and outputs are this function's arguments, by name
run_rule(snakemake, "featscale.analysis.truth:run_score_truth")
