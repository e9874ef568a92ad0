# One SAE per model and SAE spec, trained on the model's activations made on the fly (a trained
# GPT's, or a planted family's: model_inputs).


rule train_sae:
    input:
        unpack(model_inputs),
        tokens=rules.tokenize_corpus.output[0],
    output:
        # SAELens's two files, in the SAE's folder
        weights=f"{RESULTS}/saes/{{model}}/{{sae}}/{names.SAE_WEIGHTS_FILENAME}",
        config=f"{RESULTS}/saes/{{model}}/{{sae}}/{names.SAE_CONFIG_FILENAME}",
        metrics=f"{RESULTS}/saes/{{model}}/{{sae}}/metrics.csv",
    log:
        log_path("train_sae/{model}/{sae}"),
    benchmark:
        benchmark_path("train_sae/{model}/{sae}")
    conda:
        "../../envs/torch.yaml"
    threads: TORCH_THREADS
    resources:
        gpu=1,
        mem_mb=gpu_job_mem_mb,
        runtime=train_sae_runtime,
    params:
        spec=spec_of,
        run_seed=SETTINGS.seed,
        device=SETTINGS.training.device,
        checkpoints=lambda wildcards: f"{RESULTS}/checkpoints/saes/{wildcards.model}/{wildcards.sae}",
        # the model SAELens' metadata name (not an input: the SAE is trained without it); the
        # untrained null models and a planted family are never exported
        model_export=lambda wildcards: (
            None
            if PLANTED or names.is_untrained(wildcards.model)
            else hf_export_path(wildcards.model)
        ),
    script:
        "../scripts/train_sae.py"


rule evaluate_sae:
    input:
        unpack(model_inputs),
        tokens=rules.tokenize_corpus.output[0],
        sae_weights=rules.train_sae.output.weights,
        sae_config=rules.train_sae.output.config,
    output:
        f"{RESULTS}/saes/{{model}}/{{sae}}/eval.json",
    log:
        log_path("evaluate_sae/{model}/{sae}"),
    benchmark:
        benchmark_path("evaluate_sae/{model}/{sae}")
    conda:
        "../../envs/torch.yaml"
    threads: TORCH_THREADS
    resources:
        gpu=1,
        mem_mb=gpu_job_mem_mb,
    params:
        spec=spec_of,
        evaluation_tokens=SETTINGS.evaluation.tokens,
        batch_size=SETTINGS.training.micro_batch,
        device=SETTINGS.training.device,
    script:
        "../scripts/evaluate_sae.py"
