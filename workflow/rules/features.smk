# Every model's SAE codes over the same tokens, and the exact correlation of each pair of models.


rule encode_features:
    input:
        unpack(model_inputs),
        tokens=rules.tokenize_corpus.output[0],
        sae_weights=rules.train_sae.output.weights,
        sae_config=rules.train_sae.output.config,
    output:
        directory(features_path()),
    log:
        log_path("encode_features/{model}/{sae}"),
    benchmark:
        benchmark_path("encode_features/{model}/{sae}")
    conda:
        "../../envs/torch.yaml"
    threads: TORCH_THREADS
    resources:
        gpu=1,
        mem_mb=gpu_job_mem_mb,
    params:
        spec=spec_of,
        features=lambda wildcards: SETTINGS.features_for(wildcards.sae).to_dict(),
        run_seed=SETTINGS.seed,
        device=SETTINGS.training.device,
    script:
        "../scripts/encode_features.py"


rule correlate:
    input:
        a=features_path("{a}"),
        b=features_path("{b}"),
    output:
        directory(correlation_path()),
    log:
        log_path("correlate/{sae}/{a}__{b}"),
    benchmark:
        benchmark_path("correlate/{sae}/{a}__{b}")
    wildcard_constraints:
        a=names.TRAINED_MODEL_PATTERN,
        b=names.TRAINED_MODEL_PATTERN,
    conda:
        "../../envs/analysis.yaml"
    # CPU only: no gpu resource, so a cluster never spends a GPU on it
    threads: SETTINGS.correlation.workers
    resources:
        mem_mb=lambda wildcards, threads: 4000
        + threads * correlation_block_mb(wildcards),
    params:
        correlation=SETTINGS.correlation.to_dict(),
    script:
        "../scripts/correlate.py"


# The nulls and ceilings below are correlate with other inputs and outputs; each stores only
# every latent's max and partner (the full matrix is never read).
use rule correlate as correlate_shifted with:
    output:
        directory(correlation_path(control="shifted")),
    log:
        log_path("correlate_shifted/{sae}/{a}__{b}"),
    benchmark:
        benchmark_path("correlate_shifted/{sae}/{a}__{b}")
    params:
        correlation=SETTINGS.correlation.to_dict() | {"matrix_dtype": "none"},
        shift_fraction=SETTINGS.controls.shift_fraction,


# The untrained null: a source model's codes against those of the untrained model (w<width>-init)
# of a target's width; the source is side a.
use rule correlate as correlate_untrained with:
    output:
        directory(correlation_path(control="untrained")),
    log:
        log_path("correlate_untrained/{sae}/{a}__{b}"),
    benchmark:
        benchmark_path("correlate_untrained/{sae}/{a}__{b}")
    wildcard_constraints:
        a=names.TRAINED_MODEL_PATTERN,
        b=names.UNTRAINED_MODEL_PATTERN,
    params:
        correlation=SETTINGS.correlation.to_dict() | {"matrix_dtype": "none"},


# The SAE-seed ceiling: two SAEs of one model that differ only in their seed.
use rule correlate as correlate_sae_seed with:
    input:
        unpack(sae_seed_inputs),
    output:
        directory(sae_seed_path()),
    log:
        log_path("correlate_sae_seed/{sae}/{model}"),
    benchmark:
        benchmark_path("correlate_sae_seed/{sae}/{model}")
    params:
        correlation=SETTINGS.correlation.to_dict() | {"matrix_dtype": "none"},


# ... and its shifted-token null, when controls.shifted_null is on.
use rule correlate_shifted as correlate_sae_seed_shifted with:
    input:
        unpack(sae_seed_inputs),
    output:
        directory(sae_seed_path(shifted=True)),
    log:
        log_path("correlate_sae_seed_shifted/{sae}/{model}"),
    benchmark:
        benchmark_path("correlate_sae_seed_shifted/{sae}/{model}")


rule feature_budget:
    input:
        tokens=rules.tokenize_corpus.output[0],
        model_weights=rules.train_model.output.weights,
        model_config=rules.train_model.output.config,
        sae_weights=rules.train_sae.output.weights,
        sae_config=rules.train_sae.output.config,
        features=rules.encode_features.output[0],
    output:
        table=analysis_path("budget/{model}.csv"),
        windows=analysis_path("budget/{model}.windows.csv"),
    log:
        log_path("feature_budget/{model}/{sae}"),
    benchmark:
        benchmark_path("feature_budget/{model}/{sae}")
    conda:
        "../../envs/torch.yaml"
    threads: 2
    resources:
        gpu=1,
        mem_mb=gpu_job_mem_mb,
    params:
        spec=spec_of,
        budget=SETTINGS.feature_budget.to_dict(),
        run_seed=SETTINGS.seed,
        batch_size=SETTINGS.training.micro_batch,
        device=SETTINGS.training.device,
    script:
        "../scripts/feature_budget.py"
