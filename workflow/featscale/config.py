"""The run's settings as typed, frozen dataclasses, and the checks a JSON Schema cannot express.

The schema (workflow/schemas/config.schema.yaml) is the one home of keys, types, defaults and
their descriptions; each section's dataclass takes its fields from it (`section`), and the
settings are built once from the validated config (`Settings.from_config`). A rule passes the
section it needs as plain data (`section.to_dict()`: Snakemake compares params by value to
decide reruns) and the rule's script rebuilds it (`Section.from_dict`), so a package function's
signature says what it depends on.

Every cross-key problem is reported as one line naming the key, the value and the fix, and all
of them are reported at once, before any job runs.
"""

from __future__ import annotations

import dataclasses
import functools
import glob
import operator
import os
import types
import typing
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import yaml

from featscale import names
from featscale.io import InputError

SPLITS = ("train", "val", "analysis")
GPT2_VOCAB_SIZE = 50257
SCHEMA_PATH = Path(__file__).resolve().parents[1] / "schemas" / "config.schema.yaml"

S = TypeVar("S", bound="Section")


class ConfigError(InputError):
    """A config that the workflow refuses before any job runs (or, for what only the data can tell, in
    the first job that can)."""


class Section:
    """A frozen dataclass of one config section: built from and turned back into plain data."""

    @classmethod
    def from_dict(cls: type[S], values: Mapping[str, Any]) -> S:
        """The section from its config mapping; nested sections are built too, lists become tuples.

        Every field must be present (the schema fills defaults) and no other key: a renamed key
        fails here, at the start of a job, not deep inside it.
        """
        hints = typing.get_type_hints(cls)
        fields = {field.name for field in dataclasses.fields(cls)}
        unknown, missing = sorted(set(values) - fields), sorted(fields - set(values))
        if unknown or missing:
            raise ConfigError(
                f"{cls.__name__} got unknown keys {unknown} and lacks {missing}: the schema and "
                "featscale.config disagree, or the params were not made with to_dict()"
            )
        return cls(**{name: _build(hints[name], values[name]) for name in fields})

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)  # type: ignore[call-overload]


class Record:
    """A dataclass saved as plain data beside what it describes (a model's or an SAE's config):
    read back with its unknown keys refused, since a typo would otherwise be ignored."""

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)  # type: ignore[call-overload]

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Any:
        known = {field.name for field in dataclasses.fields(cls)}  # type: ignore[arg-type]
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown {cls.__name__} keys {unknown}: the known keys are {sorted(known)}")
        return cls(**data)


def _build(hint: Any, value: Any) -> Any:
    """`value` as the type `hint` names: a Section, a mapping of Sections, a tuple, or as it is."""
    for option in typing.get_args(hint) if isinstance(hint, types.UnionType) else (hint,):
        if isinstance(option, type) and issubclass(option, Section) and isinstance(value, Mapping):
            return option.from_dict(value)
        origin = typing.get_origin(option)
        if origin is dict and isinstance(value, Mapping):
            inner = typing.get_args(option)[1]
            return {key: _build(inner, item) for key, item in value.items()}
        if (option is tuple or origin is tuple) and isinstance(value, (list, tuple)):
            return tuple(value)
    return value


@functools.cache
def schema() -> dict[str, Any]:
    """The config's JSON Schema (workflow/schemas/config.schema.yaml), the one home of its keys."""
    return yaml.safe_load(SCHEMA_PATH.read_text())


class _StrictLoader(yaml.SafeLoader):
    """YAML's safe loader, except that a key given twice in one mapping is refused: YAML keeps
    the last one silently, so a second `saes:` block would drop the first."""


def _construct_mapping(loader: _StrictLoader, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
    first: dict[Any, yaml.Node] = {}
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=True)
        if key in first and key != "<<":
            raise yaml.constructor.ConstructorError(
                None, None,
                f"key `{key}` appears twice in one block (also at line {first[key].start_mark.line + 1}); YAML would "
                f"keep only the last: merge the two into one",
                key_node.start_mark,
            )
        first[key] = key_node
    return loader.construct_mapping(node, deep=deep)


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def read_config_file(path: str | Path) -> dict[str, Any]:
    """A config file's mapping, or ConfigError naming the file and the line of a YAML mistake (a
    syntax error, a key given twice)."""
    try:
        with open(path, encoding="utf-8") as handle:
            loaded = yaml.load(handle, Loader=_StrictLoader)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f", line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = " ".join(str(getattr(error, "problem", None) or error).split())
        fix = "" if "appears twice" in problem else ": fix the YAML there"
        raise ConfigError(f"config file {str(path)!r}{where}: {problem}{fix}.") from None
    except OSError as error:
        raise ConfigError(f"config file {str(path)!r} cannot be read ({error.strerror}): fix the path.") from None
    if loaded is None:
        return {}
    if not isinstance(loaded, dict):
        raise ConfigError(f"config file {str(path)!r} holds a {type(loaded).__name__}, not keys and values: "
                          "write it as `key: value` lines.")
    return loaded


_JSON_TYPES = {"integer": int, "number": float, "boolean": bool, "string": str, "array": tuple, "null": type(None),
               "object": dict}


def section(key: str, doc: str, *, skip: Iterable[str] = (), **nested: Any) -> type[Section]:
    """A frozen dataclass with one field per key of the schema's section `key` (dotted; `saes.*` is
    an SAE spec), in the schema's order: the schema says what the keys are, once.

    Each field is typed from its JSON type (an object key by `nested`, a list as a tuple); keys in
    `skip` are not fields (an SAE spec's `extends`, resolved before the settings are built).
    """
    node = schema()
    for part in key.split(".") if key else ():
        node = node["additionalProperties"] if part == "*" else node["properties"][part]
    fields = []
    for name, sub in node["properties"].items():
        if name in skip:
            continue
        kinds = sub.get("type", "string")  # an enum of strings has no type
        kinds = kinds if isinstance(kinds, list) else [kinds]
        python = nested.get(name) or functools.reduce(operator.or_, (_JSON_TYPES[kind] for kind in kinds))
        fields.append((name, python))
    name = "".join(part.capitalize() for part in (key or "settings").replace("*", "spec").split(".")) + "Fields"
    return dataclasses.make_dataclass(name, fields, bases=(Section,), frozen=True,
                                      namespace={"__doc__": doc, "__module__": __name__})


class BySplit:
    """A number per split of the token store, also read as `numbers[split]`."""

    def __getitem__(self, split: str) -> Any:
        return getattr(self, split)


class SplitFractions(BySplit, section("data.split_fractions", "The share of documents each split gets.")):
    pass


class TokenCaps(BySplit, section("data.max_tokens", "The most tokens each split keeps (None: all).")):
    pass


SyntheticSource = section("data.synthetic", "The synthetic stories (data.source: synthetic).")
EmbeddedSource = section("data.embedded", "The embedded public-domain corpus (data.source: embedded).")
FileSource = section("data.files", "Local corpus files (data.source: files).")
HubSource = section("data.hub", "A Hugging Face hub dataset (data.source: hub).")
SOURCES = ("synthetic", "embedded", "files", "hub")


class DataSettings(section("data", "Where the documents come from, how they are split, how the store is chunked.",
                           synthetic=SyntheticSource, embedded=EmbeddedSource, files=FileSource, hub=HubSource,
                           split_fractions=SplitFractions, max_tokens=TokenCaps)):
    def corpus(self) -> CorpusSettings:
        """Only what decides which documents exist and where each goes (editing another source's
        block, or the store's chunking, reruns nothing upstream)."""
        blocks = {name: getattr(self, name) if name == self.source else None for name in SOURCES}
        return CorpusSettings(self.source, **blocks, split_fractions=self.split_fractions)

    def store(self) -> StoreSettings:
        """What shapes the token store: the corpus, the caps per split and the chunking."""
        return StoreSettings(self.corpus(), self.max_tokens, self.chunk_tokens, self.shard_chunks)


@dataclass(frozen=True)
class CorpusSettings(Section):
    """The configured source (its block; the other sources' are None) and the split fractions."""

    source: str
    synthetic: SyntheticSource | None
    embedded: EmbeddedSource | None
    files: FileSource | None
    hub: HubSource | None
    split_fractions: SplitFractions

    @property
    def pretokenized(self) -> bool:
        """A hub dataset of GPT-2 token ids: rows are concatenated as they are, not tokenized."""
        return self.source == "hub" and self.hub.token_field is not None


@dataclass(frozen=True)
class StoreSettings(Section):
    """The corpus and what shapes its token store: caps per split, chunking (DataSettings.store)."""

    corpus: CorpusSettings
    max_tokens: TokenCaps
    chunk_tokens: int
    shard_chunks: int

    def provenance(self) -> dict[str, Any]:
        """The store's `source` attribute: the settings it was built with, flat."""
        corpus = self.corpus
        return {"source": corpus.source, corpus.source: getattr(corpus, corpus.source).to_dict(),
                "split_fractions": corpus.split_fractions.to_dict(), "max_tokens": self.max_tokens.to_dict(),
                "chunk_tokens": self.chunk_tokens, "shard_chunks": self.shard_chunks}


TokenizerSettings = section("tokenizer", "The run's tokenizer: GPT-2's or a BPE learned on the train split.")


class ModelSettings(section("models", "The model family: every width at one depth, head size and context.")):
    def non_embedding_params(self, width: int) -> int:
        return non_embedding_params(self.n_layers, width)

    @property
    def planted(self) -> bool:
        """A planted family (models.kind planted): no language model, features known."""
        return self.kind == "planted"


class PlantedSettings(section("planted", "A family whose features are known (models.kind planted).")):
    def held_by_width(self, widths: Iterable[int]) -> dict[int, int]:
        """{width: features its models hold}: `held` is listed in the order of models.widths."""
        return dict(zip(widths, self.held, strict=True))


TrainingSettings = section("training", "How every model is trained: the same tokens, schedule and budget.")


class Reading(typing.NamedTuple):
    """Where and how an SAE reads its model: the site, the first position read, the precision."""

    layer: int
    site: str
    first_position: int
    """0 when position 0 is read (and spliced), else 1."""
    autocast: bool
    """bf16 autocast on CUDA (SAESpec.model_autocast)."""


class SAESpec(section("saes.*", "One SAE spec (`saes.<name>`): architecture, size, site and its training.",
                      skip=("extends",))):
    @property
    def first_position(self) -> int:
        """The first position the SAE reads (and is spliced at): 1 unless it trains on position 0."""
        return first_position(self.train_on_position_0)

    def reading(self, include_position_0: bool | None = None) -> Reading:
        """Where and how this SAE reads its model; `include_position_0` (a feature store's choice)
        replaces the spec's own train_on_position_0."""
        first = self.first_position if include_position_0 is None else first_position(include_position_0)
        return Reading(self.layer, self.site, first, self.model_autocast)


EvaluationSettings = section("evaluation", "Held-out evaluation of the models and SAEs.")


class FeatureSettings(section("features", "Which tokens every model's SAE codes are stored for.")):
    @property
    def first_position(self) -> int:
        return first_position(self.include_position_0)

    def window_tokens(self, context: int) -> int:
        """Tokens the feature windows span: whole windows of `context`, position 0 counted or not."""
        per_window = context - self.first_position
        return -(-self.tokens // max(per_window, 1)) * context


CorrelationSettings = section("correlation", "The exact correlation of two feature stores.")
AnalysisSettings = section("analysis", "The study's statistics, fits and collapse mask.")
BudgetSettings = section("feature_budget", "Losses when the spliced SAE may use only some of its latents.")
ControlSettings = section("controls", "The nulls and ceilings that place each pair's universality.")
VerdictSettings = section("verdicts", "The criteria that decide whether this run reproduces each claim of the talk.")
TruthSettings = section("truth", "How a planted family's measurement is scored against its truth.")


class Settings(section("", "The whole validated config.", data=DataSettings, tokenizer=TokenizerSettings,
                       models=ModelSettings, planted=PlantedSettings, training=TrainingSettings,
                       saes=dict[str, SAESpec],
                       evaluation=EvaluationSettings, features=FeatureSettings, correlation=CorrelationSettings,
                       analysis=AnalysisSettings, feature_budget=BudgetSettings, controls=ControlSettings,
                       truth=TruthSettings, verdicts=VerdictSettings)):
    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> Settings:
        """From the config that the schema validated (and filled with defaults): `saes` holds the
        specs `sae_specs` names, and only those (a spec another extends may stay out)."""
        missing = [name for name in config["sae_specs"] if name not in config["saes"]]
        if missing:
            raise ConfigError(
                f"config key `sae_specs` = {list(config['sae_specs'])} names {', '.join(map(repr, missing))}, which "
                f"`saes` does not define ({', '.join(config['saes'])}): define it or fix the name."
            )
        return cls.from_dict({**config, "saes": {name: config["saes"][name] for name in config["sae_specs"]}})

    def sae_spec(self, name: str) -> SAESpec:
        """The spec an `{sae}` wildcard names: a spec of `saes`, or the SAE-seed replicate of one
        (`main-seed1`: main's spec with seed + 1), which is derived here and never added to `saes`,
        so the study's analysis does not run for it."""
        if name in self.saes:
            return self.saes[name]
        base = names.sae_seed_replicate_base(name)
        if base is not None and base in self.saes:
            return dataclasses.replace(self.saes[base], seed=self.saes[base].seed + 1)
        raise KeyError(
            f"{name!r} is no SAE spec of config key `saes` ({', '.join(self.saes)}) nor an SAE-seed replicate of one"
        )

    def features_for(self, sae: str) -> FeatureSettings:
        """The feature tokens of spec `sae` (or its SAE-seed replicate): the run's, with the spec's
        own `features` keys in their place."""
        return spec_features(self.features, self.sae_spec(sae))

    def analysis_tokens_needed(self) -> int:
        """Analysis-split tokens the feature windows of every spec span (0 when none reads that split)."""
        context = self.models.context
        spans = [self.features_for(name).window_tokens(context) for name in self.saes
                 if self.features_for(name).split == "analysis"]
        return max(spans, default=0)

    def matched_spec(self, sae: str) -> str | None:
        """The spec at matched reconstruction for claim (d) of spec `sae`: verdicts.matched_spec, or
        `sae` itself when it is TopK (one k, hence one L0, for every width), else None."""
        if self.verdicts.matched_spec is not None:
            return self.verdicts.matched_spec
        return sae if self.sae_spec(sae).architecture == "topk" else None

    def report(self) -> ReportSettings:
        """What the report states, and nothing else: editing another key does not rewrite it."""
        return ReportSettings(
            run=self.run, models=self.models, training_tokens=self.training.tokens, features=self.features,
            saes=self.saes, min_count=self.correlation.min_count, analysis=self.analysis,
            recovery=self.feature_budget.recovery, null_percentile=self.controls.null_percentile,
            corpus_source=self.data.source, tokenizer_kind=self.tokenizer.kind,
            planted=self.planted if self.models.planted else None,
        )

    def model_names(self) -> list[str]:
        """The trained models of the study, narrowest first (see featscale.names.model_names)."""
        return names.model_names(self.models.widths, self.controls.seed_replicates)

    def untrained_models(self) -> list[str]:
        """The untrained null models (one per width) when controls.untrained_null is on."""
        if not self.controls.untrained_null:
            return []
        return [names.untrained_model_name(width) for width in sorted(self.models.widths)]

    def sae_seed_replicate_models(self) -> list[str]:
        """The models (first seed of each width in controls.sae_seed_replicates) that get a second SAE seed."""
        return [names.model_name(width) for width in sorted(self.controls.sae_seed_replicates)]


@dataclass(frozen=True)
class ReportSettings(Section):
    """The settings report.md states (Settings.report)."""

    run: str
    models: ModelSettings
    training_tokens: int
    features: FeatureSettings
    saes: dict[str, SAESpec]
    min_count: int
    analysis: AnalysisSettings
    recovery: float
    null_percentile: float
    corpus_source: str
    tokenizer_kind: str
    planted: PlantedSettings | None
    """The planted family's settings (models.kind planted), else None."""


def spec_features(features: FeatureSettings, spec: SAESpec) -> FeatureSettings:
    """The run's feature settings with a spec's own `features` keys in their place."""
    return dataclasses.replace(features, **(spec.features or {}))


def non_embedding_params(n_layers: int, width: int) -> int:
    """The N of the scaling laws: 4·width² for attention + 8·width² for the MLP, per layer.

    Biases and LayerNorm gains are left out by convention (Kaplan et al. 2020).
    """
    return 12 * n_layers * width**2


def first_position(include_position_0: bool) -> int:
    """The first position of a window that is read: 0 when position 0 is included, else 1."""
    return 0 if include_position_0 else 1


def resolve_extends(config: dict[str, Any]) -> None:
    """Let an SAE spec take another's keys: `latents512: {extends: main, n_latents: 512}`.

    Done in place on the merged config before the schema fills defaults, so a layered config
    (an SAE-size sweep) derives its specs from the run's own instead of restating them.
    """
    saes = config.get("saes")
    if not isinstance(saes, dict):
        return

    def resolved(name: str, seen: tuple[str, ...]) -> dict[str, Any]:
        spec = saes[name]
        if not isinstance(spec, dict) or "extends" not in spec:
            return spec
        base = spec["extends"]
        if base not in saes:
            raise ConfigError(
                f"config key `saes.{name}.extends` = {base!r} names no spec of `saes` ({', '.join(saes)}): fix the name."
            )
        if base in seen:
            raise ConfigError(f"config key `saes.{name}.extends` makes a cycle ({' -> '.join((*seen, base))}): break it.")
        return resolved(base, (*seen, base)) | {key: value for key, value in spec.items() if key != "extends"}

    for name in list(saes):
        saes[name] = resolved(name, (name,))


def describe_schema_error(error: Any) -> str:
    """One line for a jsonschema ValidationError: the key, the value, what is expected."""
    key = _key(error.absolute_path)
    if error.validator == "additionalProperties":
        known = ", ".join(sorted(error.schema.get("properties", {})))
        unknown = sorted(set(error.instance) - set(error.schema.get("properties", {})))
        return (
            f"config key `{key or '<top level>'}` has unknown key(s) {', '.join(map(repr, unknown))}: "
            f"fix the spelling; known keys are {known}."
        )
    value = error.instance
    if error.validator == "type" and isinstance(value, float) and value.is_integer():
        return (f"config key `{key}` = {value!r} must be a whole number written without a decimal point: "
                f"write {int(value)}.")
    if error.validator == "uniqueItems":
        repeated = sorted({repr(item) for item in value if value.count(item) > 1})
        return f"config key `{key}` = {value!r} lists {', '.join(repeated)} more than once: list each value once."
    if error.validator == "type" and isinstance(value, str) and _is_number(value):
        return (f"config key `{key}` = {value!r} is text, not a number: YAML reads a number such as 3e-4 as text "
                f"unless it has a dot and a signed exponent; write {float(value)!r}.")
    if error.validator == "minItems" and not value:
        return f"config key `{key}` is an empty list: give at least {error.validator_value} value(s)."
    expected = error.schema.get("description", "")
    expected = f" Expected: {' '.join(expected.split())}" if expected else ""
    return f"config key `{key}` = {value!r} is invalid: {error.message}.{expected}"


def check_config(
    settings: Settings,
    configfiles: Iterable[str | Path] = (),
    command_line: Mapping[str, Any] | None = None,
) -> None:
    """Raise ConfigError listing every cross-key problem of a schema-valid, merged config.

    `configfiles` are the files given with --configfile: each must be valid YAML without a key
    given twice, and set `run`, because a key it leaves out keeps the paper value, and a run named
    `paper` by accident would overwrite the paper's results. `command_line` is the --config
    dictionary.
    """
    problems = [
        *_check_config_files(configfiles, command_line or {}),
        *_check_inherited_specs(configfiles, settings),
        *_check_data(settings),
        *_check_bounds(settings),
        *_check_models(settings),
        *_check_saes(settings),
        *_check_training(settings),
        *_check_planted(settings),
    ]
    if problems:  # a check made once per SAE spec may find one problem several times
        raise ConfigError("\n".join(dict.fromkeys(problems)))


def check_split_sizes(
    tokens: Mapping[str, int], context: int, evaluation_tokens: int, features_tokens: int
) -> None:
    """Raise ConfigError if the token store's splits cannot hold what the config asks of them.

    Run once the corpus has been tokenized (its size is unknown before), and before the
    store is moved into place, so a too-small corpus leaves no output behind.
    """
    needs = {
        "train": (context + 1, "models.context", f"one training window of {context + 1} tokens"),
        "val": (evaluation_tokens, "evaluation.tokens", "the evaluation tokens"),
        "analysis": (features_tokens, "features.tokens", "the analysis tokens"),
    }
    problems = []
    for split, (needed, key, what) in needs.items():
        if tokens[split] < needed:
            problems.append(
                f"the {split} split holds {tokens[split]:,} tokens but `{key}` asks for {what} "
                f"({needed:,}): lower `{key}`, raise `data.split_fractions.{split}` or "
                f"`data.max_tokens.{split}`, or use a larger corpus."
            )
    if problems:
        raise ConfigError("\n".join(problems))


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _key(path: Iterable[Any]) -> str:
    return "".join(f"[{part}]" if isinstance(part, int) else f".{part}" for part in path).lstrip(".")


def _check_inherited_specs(configfiles: Iterable[str | Path], settings: Settings) -> Iterator[str]:
    """A config file that defines its own SAE specs but not `sae_specs` would run config.yaml's too."""
    layers = []
    for path in configfiles:
        try:
            layers.append(read_config_file(path))
        except ConfigError:
            return  # _check_config_files says what is wrong with the file
    if not layers or any("sae_specs" in layer for layer in layers):
        return
    defined = {name for layer in layers for name in (layer.get("saes") or {})}
    inherited = [name for name in settings.sae_specs if name not in defined]
    if defined and inherited:
        yield (f"config key `sae_specs` = {list(settings.sae_specs)} comes from config.yaml, and your config files define "
               f"other specs: {', '.join(map(repr, inherited))} would run with the paper's settings; list the specs "
               f"this run studies in `sae_specs` (e.g. `sae_specs: [{', '.join(sorted(defined))}]`).")


def _check_config_files(configfiles: Iterable[str | Path], command_line: Mapping[str, Any]) -> Iterator[str]:
    for path in configfiles:
        try:
            loaded = read_config_file(path)
        except ConfigError as error:
            yield str(error)
            continue
        if "run" not in loaded and "run" not in command_line:
            yield (
                f"config file {str(path)!r} does not set `run`: its outputs would mix with the "
                f"paper run's under results/paper/; add a line `run: <name>` to it."
            )


def _check_data(settings: Settings) -> Iterator[str]:
    data = settings.data
    total = sum(data.split_fractions[split] for split in SPLITS)
    if abs(total - 1.0) > 1e-9:
        fractions = {split: data.split_fractions[split] for split in SPLITS}
        yield (
            f"config key `data.split_fractions` = {fractions} sums to {total:g}: "
            f"make train + val + analysis equal 1."
        )
    for split, key, wanted in (("val", "evaluation.tokens", settings.evaluation.tokens),
                               ("analysis", "features.tokens", settings.features.tokens)):
        cap = data.max_tokens[split]
        if cap is not None and wanted > cap:
            yield (
                f"config key `{key}` = {wanted:,} exceeds `data.max_tokens.{split}` = {cap:,}: "
                f"the {split} split would be too small; lower `{key}` or raise the cap."
            )
    if data.source == "files":
        paths = data.files.paths
        if not paths:
            yield (
                "config key `data.files.paths` is empty but `data.source` is files: "
                "list the corpus files (paths or globs)."
            )
        files = []
        for pattern in paths:
            matches = sorted(glob.glob(pattern))
            if not matches:
                yield (
                    f"config key `data.files.paths` names {pattern!r}, which matches no file "
                    f"(relative to {Path.cwd()}): fix the path."
                )
            for match in matches:
                if os.path.isdir(match):
                    yield (
                        f"config key `data.files.paths` names {pattern!r}, which matches the folder {match!r}: "
                        f"name the files in it, e.g. '{os.path.join(match, '*.txt')}'."
                    )
                else:
                    files.append(match)
        if paths and data.files.format == "text" and len(set(files)) < len(SPLITS):
            yield _too_few_documents("data.files.paths", len(set(files)), "file(s), each one document (format text)")
    if data.source == "synthetic" and data.synthetic.documents < len(SPLITS):
        yield _too_few_documents("data.synthetic.documents", data.synthetic.documents, "document(s)")
    tokenizer = settings.tokenizer
    token_field = data.hub.token_field
    if token_field is not None and data.source == "hub" and tokenizer.kind != "gpt2":
        yield (
            f"config key `tokenizer.kind` = {tokenizer.kind!r}, but `data.hub.token_field` = "
            f"{token_field!r} reads GPT-2 token ids: set `tokenizer.kind: gpt2`."
        )
    if tokenizer.kind == "gpt2" and tokenizer.vocab_size != GPT2_VOCAB_SIZE:
        yield (
            f"config key `tokenizer.vocab_size` = {tokenizer.vocab_size} but GPT-2's tokenizer "
            f"has {GPT2_VOCAB_SIZE}: set it to {GPT2_VOCAB_SIZE} or use `tokenizer.kind: bpe`."
        )


def _too_few_documents(key: str, count: int, what: str) -> str:
    return (
        f"config key `{key}` gives {count} {what}, but each of the three splits (train, val, analysis) needs "
        f"documents of its own: use a corpus of many documents (hundreds at least)."
    )


def _check_bounds(settings: Settings) -> Iterator[str]:
    """What the token caps, the windows and the feature tokens must leave room for."""
    context, caps, budget = settings.models.context, settings.data.max_tokens, settings.feature_budget
    window = context + 1  # a training or held-out window: context inputs and their next tokens
    if caps.train is not None and caps.train < window:
        yield (
            f"config key `data.max_tokens.train` = {caps.train:,} is below one training window of `models.context` "
            f"+ 1 = {window:,} tokens: raise it (or null: no cap)."
        )
    if budget.tokens < window:
        yield (
            f"config key `feature_budget.tokens` = {budget.tokens:,} is less than one window of `models.context` + 1 "
            f"= {window:,} tokens: raise it."
        )
    if caps.val is not None and budget.tokens > caps.val:
        yield (
            f"config key `feature_budget.tokens` = {budget.tokens:,} exceeds `data.max_tokens.val` = {caps.val:,}: the "
            f"budget is measured on val tokens; lower it or raise the cap."
        )
    for name in settings.saes:  # the run's feature tokens, or a spec's own (`saes.<name>.features`)
        features = settings.features_for(name)
        key = f"saes.{name}.features.tokens" if "tokens" in (settings.saes[name].features or {}) else "features.tokens"
        needed = features.window_tokens(context)
        if features.split == "analysis" and caps.analysis is not None and features.tokens <= caps.analysis < needed:
            yield (
                f"config key `{key}` = {features.tokens:,} needs {needed:,} analysis tokens (whole windows of "
                f"`models.context` = {context}, position 0 {'counted' if features.include_position_0 else 'not counted'}"
                f") but `data.max_tokens.analysis` = {caps.analysis:,}: lower `{key}` or raise the cap."
            )
        min_count = settings.correlation.min_count
        if min_count > features.tokens:
            yield (
                f"config key `correlation.min_count` = {min_count:,} exceeds `{key}` = {features.tokens:,}: no latent "
                f"could fire that often, so none would be correlated; lower it (10 is the default)."
            )


def _check_models(settings: Settings) -> Iterator[str]:
    models = settings.models
    widths = list(models.widths)
    for width in widths if not models.planted else ():  # a planted family has no attention heads
        if width % models.head_size:
            yield (
                f"config key `models.widths` has {width}, which is not divisible by "
                f"`models.head_size` = {models.head_size}: use widths that are multiples of {models.head_size} "
                f"or another head size."
            )
    for key in ("seed_replicates", "sae_seed_replicates"):
        for width in getattr(settings.controls, key):
            if width not in widths:
                yield (
                    f"config key `controls.{key}` has {width}, which is not in `models.widths` = "
                    f"{widths}: a replicate is a second seed of a trained width; add it to models.widths."
                )
    if len(widths) < 2:
        yield (
            f"config key `models.widths` = {widths} names one model, but universality "
            f"correlates features across models: give at least two widths."
        )


def _check_training(settings: Settings) -> Iterator[str]:
    if settings.models.planted:
        return  # nothing is trained
    training, context = settings.training, settings.models.context
    batch = training.batch_tokens
    evaluation_tokens = settings.evaluation.tokens
    if batch % context:
        yield (
            f"config key `training.batch_tokens` = {batch:,} is not a multiple of `models.context` = "
            f"{context}: use a whole number of sequences, e.g. {max(1, batch // context) * context:,}."
        )
    if training.tokens < batch:
        yield (
            f"config key `training.tokens` = {training.tokens:,} is less than one batch "
            f"(`training.batch_tokens` = {batch:,}): raise it."
        )
    for key, value in (("training.eval_tokens", training.eval_tokens), ("evaluation.tokens", evaluation_tokens)):
        if value < context + 1:
            yield (
                f"config key `{key}` = {value:,} is less than one window of `models.context` + 1 = "
                f"{context + 1} tokens: raise it."
            )
    if training.eval_tokens > evaluation_tokens:
        yield (
            f"config key `training.eval_tokens` = {training.eval_tokens:,} exceeds `evaluation.tokens` = "
            f"{evaluation_tokens:,}: the periodic validation uses part of the evaluation tokens; lower it."
        )


def _check_saes(settings: Settings) -> Iterator[str]:
    n_layers = settings.models.n_layers
    matched = settings.verdicts.matched_spec
    if matched is not None and matched not in settings.saes:
        yield (f"config key `verdicts.matched_spec` = {matched!r} names no spec of `saes` ({', '.join(settings.saes)}): "
               f"name a TopK spec of this run, or null.")
    elif matched is not None and settings.saes[matched].architecture != "topk":
        yield (f"config key `verdicts.matched_spec` = {matched!r} is a {settings.saes[matched].architecture} spec: "
               f"matched reconstruction needs one k for every width; make it topk or name a TopK spec.")
    if settings.controls.sae_seed_replicates:
        for name in settings.saes:
            base = names.sae_seed_replicate_base(name)
            if base is not None and base in settings.saes:
                yield (
                    f"config key `saes.{name}` is also the name of spec {base}'s SAE-seed replicate, which "
                    f"`controls.sae_seed_replicates` trains: rename the spec."
                )
    for name, spec in settings.saes.items():
        key = f"saes.{name}"
        if spec.layer >= n_layers:
            yield (
                f"config key `{key}.layer` = {spec.layer} but the models have "
                f"`models.n_layers` = {n_layers} blocks, counted from 0: use a layer below {n_layers}."
            )
        if spec.architecture == "topk":
            if spec.k is None:
                yield (f"config key `{key}.k` is not set but `{key}.architecture` is topk: set k.")
            elif spec.k >= spec.n_latents:
                yield (
                    f"config key `{key}.k` = {spec.k} is not below `{key}.n_latents` = "
                    f"{spec.n_latents}: choose k < n_latents."
                )
        elif spec.k is not None:
            yield (
                f"config key `{key}.k` = {spec.k} is set but `{key}.architecture` is "
                f"{spec.architecture!r}, which has no k: remove k or use topk."
            )
        if settings.features_for(name).include_position_0 and not spec.train_on_position_0:
            where = f"{key}.features" if (spec.features or {}).get("include_position_0") else "features"
            yield (
                f"config key `{where}.include_position_0` is true but `{key}.train_on_position_0` is false: "
                f"the SAE would encode position 0, whose activations it never saw in training; set both true "
                f"(the authors' choice) or both false."
            )
        if spec.fold_decoder_norm == "saelens_4_1_1" and spec.architecture != "gated":
            yield (
                f"config key `{key}.fold_decoder_norm` = saelens_4_1_1 but `{key}.architecture` is "
                f"{spec.architecture!r}: that fold differs from the exact one only for gated SAEs; use exact."
            )
        positions = settings.models.context - spec.first_position
        buffer_tokens = spec.buffer_sequences * positions
        if buffer_tokens < spec.batch_tokens:
            yield (
                f"config key `{key}.buffer_sequences` = {spec.buffer_sequences} gives a shuffle buffer of "
                f"{buffer_tokens:,} activations, less than one batch (`{key}.batch_tokens` = "
                f"{spec.batch_tokens:,}): raise buffer_sequences."
            )
        if spec.bias_init_tokens > buffer_tokens:
            yield (
                f"config key `{key}.bias_init_tokens` = {spec.bias_init_tokens:,} exceeds one shuffle buffer "
                f"({buffer_tokens:,} activations): lower it or raise `{key}.buffer_sequences`."
            )
        if spec.tokens < spec.batch_tokens:
            yield (
                f"config key `{key}.tokens` = {spec.tokens:,} is less than one batch "
                f"(`{key}.batch_tokens` = {spec.batch_tokens:,}): raise it."
            )


def _check_planted(settings: Settings) -> Iterator[str]:
    if not settings.models.planted:
        return
    planted, widths = settings.planted, list(settings.models.widths)
    if len(planted.held) != len(widths):
        yield (f"config key `planted.held` = {list(planted.held)} has {len(planted.held)} entries but `models.widths` = "
               f"{widths} has {len(widths)}: give how many features each width holds, in the order of the widths.")
    for count in planted.held:
        if count > planted.features:
            yield (f"config key `planted.held` has {count}, more than the family's `planted.features` = "
                   f"{planted.features}: a model holds some of the family's features; lower it or raise features.")
    low, high = planted.importance_range
    if not low < high:
        yield (f"config key `planted.importance_range` = {list(planted.importance_range)} is not [lowest, highest] with "
               f"lowest < highest: e.g. [0.5, 4.0].")
    if settings.controls.untrained_null:
        yield ("config key `controls.untrained_null` is true but `models.kind` is planted: a planted family is never "
               "trained, so it has no untrained model; set it false.")
