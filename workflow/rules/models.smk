# One model per width (and seed), trained on the same tokens in the same order; with
# controls.untrained_null also w<width>-init, the same initialisation saved after zero steps.


rule train_model:
    input:
        tokens=rules.tokenize_corpus.output[0],
    output:
        weights=f"{RESULTS}/models/{{model}}/model.safetensors",
        config=f"{RESULTS}/models/{{model}}/config.json",
        metrics=f"{RESULTS}/models/{{model}}/metrics.csv",
        final=f"{RESULTS}/models/{{model}}/final.json",
    log:
        log_path("train_model/{model}"),
    benchmark:
        benchmark_path("train_model/{model}")
    conda:
        "../../envs/torch.yaml"
    threads: 2
    resources:
        gpu=1,
        mem_mb=gpu_job_mem_mb,
        runtime=train_model_runtime,
    params:
        models=SETTINGS.models.to_dict(),
        width=width_of,
        model_seed=lambda wildcards: names.parse_model_name(wildcards.model)[1],
        run_seed=SETTINGS.seed,
        training=training_settings,
        evaluation_tokens=SETTINGS.evaluation.tokens,
        checkpoints=lambda wildcards: f"{RESULTS}/checkpoints/models/{wildcards.model}",
    script:
        "../scripts/train_model.py"


rule export_hf:
    input:
        weights=rules.train_model.output.weights,
        config=rules.train_model.output.config,
        final=rules.train_model.output.final,
        tokenizer=rules.train_tokenizer.output[0],
    output:
        directory(hf_export_path()),
    log:
        log_path("export_hf/{model}"),
    benchmark:
        benchmark_path("export_hf/{model}")
    conda:
        "../../envs/torch.yaml"
    params:
        # for the model card
        run=SETTINGS.run,
        corpus=SETTINGS.data.corpus().to_dict(),
        widths=SETTINGS.models.widths,
    script:
        "../scripts/export_hf.py"
