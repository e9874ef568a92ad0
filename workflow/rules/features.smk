# Every model's SAE codes over the same tokens, and the exact correlation of each pair of models.


rule encode_features:
    input:
        tokens=TOKENS,
        model_weights=rules.train_model.output.weights,
        model_config=rules.train_model.output.config,
        sae=rules.train_sae.output.weights,
        sae_config=rules.train_sae.output.config,
    output:
        directory(f"{RESULTS}/features/{{model}}/{{sae}}.zarr"),
    params:
        spec=spec_of,
        features=config["features"],
        run_seed=config["seed"],
        device=config["training"]["device"],
    threads: 2
    resources:
        gpu=1,
        mem_mb=lambda wildcards: gpu_job_mem_mb(wildcards.model),
    log:
        log_path("encode_features/{model}/{sae}"),
    benchmark:
        benchmark_path("encode_features/{model}/{sae}")
    conda:
        "../../envs/torch.yaml"
    script:
        "../scripts/encode_features.py"


rule correlate:
    input:
        a=f"{RESULTS}/features/{{a}}/{{sae}}.zarr",
        b=f"{RESULTS}/features/{{b}}/{{sae}}.zarr",
    output:
        directory(f"{RESULTS}/correlations/{{sae}}/{{a}}__{{b}}.zarr"),
    params:
        correlation=config["correlation"],
    wildcard_constraints:
        a=r"w[0-9]+(-s[0-9]+)?",
        b=r"w[0-9]+(-s[0-9]+)?",
    # CPU only: no gpu resource, so a cluster never spends a GPU on it
    threads: config["correlation"]["workers"]
    resources:
        mem_mb=lambda wildcards, threads: 4000
        + threads * correlation_block_mb(wildcards.sae),
    log:
        log_path("correlate/{sae}/{a}__{b}"),
    benchmark:
        benchmark_path("correlate/{sae}/{a}__{b}")
    conda:
        "../../envs/analysis.yaml"
    script:
        "../scripts/correlate.py"


# The nulls and ceilings below are correlate with other inputs and outputs; each stores only
# every latent's max and partner (the full matrix is never read).
use rule correlate as correlate_shifted with:
    output:
        directory(f"{RESULTS}/controls/{{sae}}/shifted/{{a}}__{{b}}.zarr"),
    params:
        correlation=config["correlation"] | {"matrix_dtype": "none"},
        shift_fraction=config["controls"]["shift_fraction"],
    log:
        log_path("correlate_shifted/{sae}/{a}__{b}"),
    benchmark:
        benchmark_path("correlate_shifted/{sae}/{a}__{b}")


# The untrained null: a source model's codes against those of the untrained model (w<width>-init)
# of a target's width; the source is side a.
use rule correlate as correlate_untrained with:
    output:
        directory(f"{RESULTS}/controls/{{sae}}/untrained/{{a}}__{{b}}.zarr"),
    params:
        correlation=config["correlation"] | {"matrix_dtype": "none"},
    wildcard_constraints:
        a=r"w[0-9]+(-s[0-9]+)?",
        b=r"w[0-9]+-init",
    log:
        log_path("correlate_untrained/{sae}/{a}__{b}"),
    benchmark:
        benchmark_path("correlate_untrained/{sae}/{a}__{b}")


# The SAE-seed ceiling: two SAEs of one model that differ only in their seed.
use rule correlate as correlate_sae_seed with:
    input:
        unpack(sae_seed_inputs),
    output:
        directory(f"{RESULTS}/controls/{{sae}}/sae_seed/{{model}}.zarr"),
    params:
        correlation=config["correlation"] | {"matrix_dtype": "none"},
    log:
        log_path("correlate_sae_seed/{sae}/{model}"),
    benchmark:
        benchmark_path("correlate_sae_seed/{sae}/{model}")


# ... and its shifted-token null, when controls.shifted_null is on.
use rule correlate_shifted as correlate_sae_seed_shifted with:
    input:
        unpack(sae_seed_inputs),
    output:
        directory(f"{RESULTS}/controls/{{sae}}/sae_seed_shifted/{{model}}.zarr"),
    log:
        log_path("correlate_sae_seed_shifted/{sae}/{model}"),
    benchmark:
        benchmark_path("correlate_sae_seed_shifted/{sae}/{model}")


rule feature_budget:
    input:
        tokens=TOKENS,
        model_weights=rules.train_model.output.weights,
        model_config=rules.train_model.output.config,
        sae=rules.train_sae.output.weights,
        sae_config=rules.train_sae.output.config,
        features=rules.encode_features.output[0],
    output:
        f"{RESULTS}/analysis/{{sae}}/budget/{{model}}.csv",
    params:
        spec=spec_of,
        budget=config["feature_budget"],
        run_seed=config["seed"],
        batch_size=config["training"]["micro_batch"],
        device=config["training"]["device"],
    threads: 2
    resources:
        gpu=1,
        mem_mb=lambda wildcards: gpu_job_mem_mb(wildcards.model),
    log:
        log_path("feature_budget/{model}/{sae}"),
    benchmark:
        benchmark_path("feature_budget/{model}/{sae}")
    conda:
        "../../envs/torch.yaml"
    script:
        "../scripts/feature_budget.py"
