"""Every mistake that can be known before the work is refused before any job runs; what only the
data can tell stops its first job with one line naming the file, the problem and the fix.

The cases here are listed, with where each is refused and its message's first line, in
docs/validation.md (`python tests/test_validation.py` prints that table again).
"""

from __future__ import annotations

import copy
import json
import sys
from pathlib import Path

import pytest
import yaml

from conftest import CONFIGS, REPO, load_merged, snakemake, tiny
from featscale.config import ConfigError, FileSource, read_config_file
from featscale.data.build import build_tokenizer
from featscale.data.corpus import CorpusError, file_documents
from featscale.validation import SKIP_DEVICE_CHECK, check_files, settings_from_config

BEFORE = "before any job runs (snakemake -n)"

# name -> (the user's config file over tiny.yaml, a fragment of the message). Each is refused by
# featscale.validation.settings_from_config, what workflow/rules/common.smk runs on the merged config.
CONFIGS_REFUSED = {
    "seed_written_as_float": ({"seed": 0.0}, "`seed` = 0.0 must be a whole number written without a decimal point"),
    "latents_written_as_float": ({"saes": {"main": {"n_latents": 128.0}}}, "`saes.main.n_latents` = 128.0 must be a whole number"),
    "width_written_as_float": ({"models": {"widths": [16.0, 32]}}, "`models.widths[0]` = 16.0 must be a whole number"),
    "cap_written_as_float": ({"data": {"max_tokens": {"train": 100000.0}}}, "`data.max_tokens.train` = 100000.0 must be a whole number"),
    "topk_k_written_as_float": ({"saes": {"main": {"architecture": "topk", "k": 8.0}}}, "`saes.main.k` = 8.0 must be a whole number"),
    "evaluation_tokens_written_as_float": ({"evaluation": {"tokens": 2048.0}}, "`evaluation.tokens` = 2048.0 must be a whole number"),
    "learning_rate_read_as_text": ({"training": {"lr": "3e-4"}}, "`training.lr` = '3e-4' is text, not a number"),
    "layers_as_a_boolean": ({"models": {"n_layers": True}}, "`models.n_layers` = True is invalid"),
    "no_budget_percents": ({"feature_budget": {"percents": []}}, "`feature_budget.percents` is an empty list"),
    "budget_percent_twice": ({"feature_budget": {"percents": [5, 20, 5]}}, "`feature_budget.percents` = [5, 20, 5] lists 5 more than once"),
    "width_twice": ({"models": {"widths": [16, 32, 16]}}, "`models.widths` = [16, 32, 16] lists 16 more than once"),
    "seed_replicate_twice": ({"controls": {"seed_replicates": [16, 16]}}, "`controls.seed_replicates` = [16, 16] lists 16 more than once"),
    "sae_seed_replicate_twice": ({"controls": {"sae_seed_replicates": [32, 32]}}, "`controls.sae_seed_replicates` = [32, 32] lists 32 more than once"),
    "negative_evaluation_tokens": ({"evaluation": {"tokens": -1}}, "`evaluation.tokens` = -1 is invalid"),
    "unknown_device": ({"training": {"device": "gpu"}}, "`training.device` = 'gpu' is invalid"),
    "negative_split_fraction": ({"data": {"split_fractions": {"val": -0.1}}}, "`data.split_fractions.val` = -0.1 is invalid"),
    "min_count_above_feature_tokens": ({"correlation": {"min_count": 5000}}, "`correlation.min_count` = 5,000 exceeds `features.tokens` = 2,048"),
    "min_count_above_a_specs_feature_tokens": ({"saes": {"big": {"extends": "main", "features": {"tokens": 1000}}},
                                                "sae_specs": ["main", "big"], "correlation": {"min_count": 1500}},
                                               "`correlation.min_count` = 1,500 exceeds `saes.big.features.tokens` = 1,000"),
    "train_cap_below_one_window": ({"data": {"max_tokens": {"train": 32}}}, "`data.max_tokens.train` = 32 is below one training window of `models.context` + 1 = 33"),
    "budget_tokens_below_one_window": ({"feature_budget": {"tokens": 20}}, "`feature_budget.tokens` = 20 is less than one window"),
    "budget_tokens_above_val_cap": ({"data": {"max_tokens": {"val": 5000}}, "feature_budget": {"tokens": 6000}}, "`feature_budget.tokens` = 6,000 exceeds `data.max_tokens.val` = 5,000"),
    "analysis_windows_above_cap": ({"data": {"max_tokens": {"analysis": 2100}}}, "`features.tokens` = 2,048 needs 2,144 analysis tokens"),
    "evaluation_above_val_cap": ({"data": {"max_tokens": {"val": 1000}}}, "`evaluation.tokens` = 2,048 exceeds `data.max_tokens.val` = 1,000"),
    "periodic_eval_above_evaluation": ({"training": {"eval_tokens": 4096}}, "`training.eval_tokens` = 4,096 exceeds `evaluation.tokens` = 2,048"),
    "batch_not_whole_sequences": ({"training": {"batch_tokens": 500}}, "`training.batch_tokens` = 500 is not a multiple of `models.context` = 32"),
    "one_synthetic_document": ({"data": {"synthetic": {"documents": 1}}}, "`data.synthetic.documents` gives 1 document(s), but each of the three splits"),
    "extends_an_unknown_spec": ({"saes": {"big": {"extends": "nope"}}}, "`saes.big.extends` = 'nope' names no spec of `saes`"),
    "files_source_without_paths": ({"data": {"source": "files"}}, "`data.files.paths` is empty but `data.source` is files"),
}


def override_file(tmp_path: Path, override: dict, name: str = "mine.yaml") -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump({"run": "mine"} | override))
    return path


def refusal(configfiles: list[Path], *, local: bool = False) -> str:
    """The ConfigError message for tiny.yaml and `configfiles` merged over config.yaml, as Snakemake merges them."""
    with pytest.raises(ConfigError) as refused:
        check_files([CONFIGS["tiny"], *configfiles], local=local)
    return str(refused.value)


@pytest.mark.parametrize("case", CONFIGS_REFUSED)
def test_a_config_mistake_is_refused_with_one_line_naming_key_value_and_fix(case, tmp_path):
    override, expected = CONFIGS_REFUSED[case]
    message = refusal([override_file(tmp_path, override)])
    assert expected in message, message
    assert all(line.startswith("config key `") for line in message.splitlines()), message


def test_schema_problems_are_reported_together_and_then_each_cross_key_problem(tmp_path):
    schema_stage = refusal([override_file(tmp_path, {"seed": 1.0, "models": {"widths": [16.0, 32]},
                                                     "feature_budget": {"percents": []}})])
    assert len(schema_stage.splitlines()) == 3
    cross_key = refusal([override_file(tmp_path, {"correlation": {"min_count": 5000},
                                                  "data": {"max_tokens": {"train": 10}}})])
    assert len(cross_key.splitlines()) == 2


def test_valid_integers_and_numbers_are_still_accepted(tmp_path):
    settings = check_files([CONFIGS["tiny"], override_file(tmp_path, {"training": {"lr": 0.001, "grad_clip": 1}})])
    assert settings.training.lr == 0.001 and settings.training.grad_clip == 1
    assert isinstance(settings.seed, int) and settings.models.widths == (16, 32)


def test_a_key_given_twice_in_a_config_file_is_refused_naming_both_lines(tmp_path):
    twice = tmp_path / "twice.yaml"
    twice.write_text("run: mine\nsaes:\n  main: {layer: 1}\nfeatures: {tokens: 1024}\nsaes:\n  main: {layer: 0}\n")
    message = refusal([twice])
    assert message == (f"config file {str(twice)!r}, line 5, column 1: key `saes` appears twice in one block (also at "
                       "line 2); YAML would keep only the last: merge the two into one.")


def test_a_key_given_twice_inside_a_block_is_refused_too(tmp_path):
    twice = tmp_path / "twice.yaml"
    twice.write_text("run: mine\ntraining:\n  lr: 0.001\n  tokens: 16384\n  lr: 0.01\n")
    assert "line 5, column 3: key `lr` appears twice in one block (also at line 3)" in refusal([twice])


def test_a_yaml_syntax_error_names_the_file_and_the_line(tmp_path):
    broken = tmp_path / "broken.yaml"
    broken.write_text("run: mine\nmodels:\n  widths: [16, 32\n  n_layers: 2\n")
    message = refusal([broken])
    assert message.startswith(f"config file {str(broken)!r}, line 4, column 11: expected ',' or ']'"), message
    with pytest.raises(ConfigError, match="line 4"):
        read_config_file(broken)


def test_a_config_file_that_is_not_a_mapping_is_refused(tmp_path):
    listed = tmp_path / "listed.yaml"
    listed.write_text("- run: mine\n")
    assert "holds a list, not keys and values" in refusal([listed])


def test_a_corpus_path_that_is_a_folder_is_refused(tmp_path):
    folder = tmp_path / "texts"
    folder.mkdir()
    message = refusal([override_file(tmp_path, {"data": {"source": "files", "files": {"paths": [str(folder)]}}})])
    assert f"names {str(folder)!r}, which matches the folder {str(folder)!r}: name the files in it" in message


def test_a_corpus_of_fewer_files_than_splits_is_refused(tmp_path):
    (tmp_path / "only.txt").write_text("One document only.")
    paths = [str(tmp_path / "*.txt")]
    message = refusal([override_file(tmp_path, {"data": {"source": "files", "files": {"paths": paths}}})])
    assert "`data.files.paths` gives 1 file(s), each one document (format text), but each of the three splits" in message


def test_a_corpus_file_listed_twice_is_refused(tmp_path):
    (tmp_path / "a.txt").write_text("text")
    paths = [str(tmp_path / "a.txt")] * 2
    message = refusal([override_file(tmp_path, {"data": {"source": "files", "files": {"paths": paths}}})])
    assert "`data.files.paths` = " in message and "more than once" in message


def test_cuda_without_a_gpu_is_refused_for_a_local_run_only(tmp_path, monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    monkeypatch.delenv(SKIP_DEVICE_CHECK, raising=False)
    mine = override_file(tmp_path, {"training": {"device": "cuda"}})
    message = refusal([mine], local=True)
    assert message.startswith("config key `training.device` = 'cuda' but this machine cannot run a job on a GPU "
                              "(no NVIDIA GPU is visible: CUDA_VISIBLE_DEVICES hides every GPU)"), message
    check_files([CONFIGS["tiny"], mine], local=False)  # sent to a cluster: the compute nodes may have GPUs
    monkeypatch.setenv(SKIP_DEVICE_CHECK, "1")
    check_files([CONFIGS["tiny"], mine], local=True)


def test_the_merged_config_is_checked_with_its_defaults_filled_in():
    config = load_merged("tiny")
    del config["feature_budget"]["recovery"]
    settings = settings_from_config(copy.deepcopy(config))
    assert settings.feature_budget.recovery == 0.9  # the schema's default


# ---- the same checks as a user meets them: `snakemake -n`, before any job ----------------------


@pytest.mark.parametrize("override, expected", [
    ({"models": {"widths": [16.0, 32]}}, "config key `models.widths[0]` = 16.0 must be a whole number"),
    ({"correlation": {"min_count": 5000}}, "config key `correlation.min_count` = 5,000 exceeds `features.tokens`"),
    ({"training": {"device": "cuda"}}, "config key `training.device` = 'cuda' but this machine cannot run a job on a GPU"),
], ids=["integer", "cross_key", "device"])
def test_a_dry_run_refuses_the_config_before_any_job(override, expected, tmp_path, monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    mine = override_file(tmp_path, override)
    done = snakemake("-n", "--configfile", str(CONFIGS["tiny"]), str(mine), cwd=tmp_path, check=False)
    output = done.stdout + done.stderr
    assert done.returncode != 0 and "ConfigError" in output and expected in output, output[-3000:]
    assert "Traceback" not in output and not (tmp_path / "results").exists()


def test_a_dry_run_refuses_a_key_given_twice_and_a_float_from_the_command_line(tmp_path):
    twice = tmp_path / "twice.yaml"
    twice.write_text("run: mine\nsaes:\n  main: {layer: 1}\nsaes:\n  main: {layer: 0}\n")
    done = snakemake("-n", "--configfile", str(CONFIGS["tiny"]), str(twice), cwd=tmp_path, check=False)
    assert done.returncode != 0 and "key `saes` appears twice in one block (also at line 2)" in done.stderr + done.stdout
    done = snakemake("-n", "--configfile", str(CONFIGS["tiny"]), "--config", "seed=0.0", cwd=tmp_path, check=False)
    assert done.returncode != 0 and "config key `seed` = 0.0 must be a whole number" in done.stderr + done.stdout


# ---- what only the data can tell: the first job stops with one line -----------------------------

INPUTS_REFUSED = {
    "malformed_json_line": "line 3: not a JSON record (Expecting ',' delimiter at column 21)",
    "malformed_json_document": "line 4: not valid JSON (Expecting ',' delimiter at column 3)",
    "json_text_not_a_string": "holds int (7), not text; point `data.files.text_field` at a string column",
    "json_without_the_text_field": "have no field 'text'; available columns: ['body']; set `data.files.text_field`",
    "one_document_corpus": "the corpus gives no document to the",
    "vocabulary_larger_than_the_corpus_supports": "config key `tokenizer.vocab_size` = 60,000 but the BPE learned only",
}


def corpus_files(tmp_path: Path, case: str) -> list[str]:
    """The corpus file of an input case."""
    records = [{"text": f"Document number {i}: " + "the cat sat on the mat. " * (i % 7 + 1)} for i in range(40)]
    path = tmp_path / "corpus.jsonl"
    lines = [json.dumps(record) for record in records]
    if case == "malformed_json_line":
        lines[2] = '{"text": "unclosed" "x"}'
    elif case == "malformed_json_document":
        path = tmp_path / "corpus.json"
        lines = ["[", '  {"text": "one"},', '  {"text": "two"}', '  {"text": "three"}', "]"]
    elif case == "json_text_not_a_string":
        lines = [json.dumps({"text": 7}) for _ in range(3)]
    elif case == "json_without_the_text_field":
        lines = [json.dumps({"body": record["text"]}) for record in records]
    elif case == "one_document_corpus":
        lines = lines[:1]
    path.write_text("\n".join(lines) + "\n")
    return [str(path)]


@pytest.mark.parametrize("case", INPUTS_REFUSED)
def test_a_corpus_the_workflow_cannot_use_stops_the_tokenizer_job_with_the_file_and_the_fix(case, tmp_path):
    paths = corpus_files(tmp_path, case)
    files = FileSource(paths=tuple(paths), format="json", text_field="text")
    corpus = tiny("data", source="files", files=files).corpus()
    vocab = 60000 if case == "vocabulary_larger_than_the_corpus_supports" else 300
    with pytest.raises((CorpusError, ConfigError)) as refused:
        build_tokenizer(corpus, tiny("tokenizer", vocab_size=vocab), 0, tmp_path / "tokenizer.json")
    message = str(refused.value)
    assert INPUTS_REFUSED[case] in message and len(message.splitlines()) == 1, message
    if case.startswith(("malformed", "json")):
        assert paths[0] in message
    assert not (tmp_path / "tokenizer.json").exists()


def test_a_malformed_json_line_is_named_by_the_reader_itself(tmp_path):
    paths = corpus_files(tmp_path, "malformed_json_line")
    with pytest.raises(CorpusError, match=r"corpus.jsonl, line 3: not a JSON record"):
        list(file_documents(paths, "json", "text"))


def test_the_console_shows_one_line_and_the_log_the_traceback(tmp_path):
    paths = corpus_files(tmp_path, "malformed_json_line")
    mine = override_file(tmp_path, {"data": {"source": "files", "files": {"paths": paths, "format": "json"}}})
    done = snakemake("results/mine/data/tokenizer.json", "--cores", "1", "--configfile", str(CONFIGS["tiny"]), str(mine),
                     cwd=tmp_path, check=False)
    output = done.stdout + done.stderr
    assert done.returncode != 0
    assert f"Error in rule train_tokenizer: {paths[0]}, line 3: not a JSON record" in output, output[-3000:]
    assert "Traceback" not in output
    log = (tmp_path / "results" / "mine" / "logs" / "train_tokenizer.log").read_text()
    assert "Traceback" in log and "CorpusError" in log


# ---- the table in docs/validation.md -------------------------------------------------------------


def first_lines(tmp_path: Path) -> list[tuple[str, str, str]]:
    """(case, where it is refused, the first line of its message) of every case of this file's lists."""
    rows = []
    for case, (override, _) in CONFIGS_REFUSED.items():
        message = refusal([override_file(tmp_path, override)])
        rows.append((case, BEFORE, message.splitlines()[0]))
    for case in INPUTS_REFUSED:
        folder = tmp_path / case
        folder.mkdir()
        paths = corpus_files(folder, case)
        files = FileSource(paths=tuple(paths), format="json", text_field="text")
        vocab = 60000 if case == "vocabulary_larger_than_the_corpus_supports" else 300
        try:
            build_tokenizer(tiny("data", source="files", files=files).corpus(), tiny("tokenizer", vocab_size=vocab), 0,
                            folder / "tokenizer.json")
        except (CorpusError, ConfigError) as error:
            rows.append((case, "job train_tokenizer (the first job)", str(error).replace(str(folder) + "/", "")))
    return rows


def test_docs_list_every_case():
    table = (REPO / "docs" / "validation.md").read_text()
    for case in [*CONFIGS_REFUSED, *INPUTS_REFUSED]:
        assert f"`{case}`" in table, f"docs/validation.md lacks the case {case}"


if __name__ == "__main__":  # the rows of docs/validation.md's table: PYTHONPATH=workflow python tests/test_validation.py
    import tempfile

    with tempfile.TemporaryDirectory() as folder:
        for case, where, line in first_lines(Path(folder)):
            line = line.replace(folder + "/", "").replace("|", "\\|")
            print(f"| `{case}` | {where} | {line} |", file=sys.stdout)
