# One SAE per model and SAE spec, trained on the model's activations made on the fly.


rule train_sae:
    input:
        tokens=TOKENS,
        weights=rules.train_model.output.weights,
        config=rules.train_model.output.config,
    output:
        weights=f"{RESULTS}/saes/{{model}}/{{sae}}/sae_weights.safetensors",
        config=f"{RESULTS}/saes/{{model}}/{{sae}}/cfg.json",
        metrics=f"{RESULTS}/saes/{{model}}/{{sae}}/metrics.csv",
    params:
        spec=spec_of,
        run_seed=config["seed"],
        device=config["training"]["device"],
        checkpoints=lambda wildcards: f"{RESULTS}/checkpoints/saes/{wildcards.model}/{wildcards.sae}",
    threads: 2
    resources:
        gpu=1,
        mem_mb=lambda wildcards: gpu_job_mem_mb(wildcards.model),
        runtime=lambda wildcards: train_sae_runtime(wildcards.sae),
    log:
        log_path("train_sae/{model}/{sae}"),
    benchmark:
        benchmark_path("train_sae/{model}/{sae}")
    conda:
        "../../envs/torch.yaml"
    script:
        "../scripts/train_sae.py"


rule evaluate_sae:
    input:
        tokens=TOKENS,
        model_weights=rules.train_model.output.weights,
        model_config=rules.train_model.output.config,
        sae=rules.train_sae.output.weights,
        sae_config=rules.train_sae.output.config,
    output:
        f"{RESULTS}/saes/{{model}}/{{sae}}/eval.json",
    params:
        spec=spec_of,
        evaluation_tokens=config["evaluation"]["tokens"],
        batch_size=config["training"]["micro_batch"],
        device=config["training"]["device"],
    threads: 2
    resources:
        gpu=1,
        mem_mb=lambda wildcards: gpu_job_mem_mb(wildcards.model),
    log:
        log_path("evaluate_sae/{model}/{sae}"),
    benchmark:
        benchmark_path("evaluate_sae/{model}/{sae}")
    conda:
        "../../envs/torch.yaml"
    script:
        "../scripts/evaluate_sae.py"
