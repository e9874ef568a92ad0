from featscale.runtime import log_to, set_threads

log_to(snakemake.log[0])

from pathlib import Path

from featscale.budget import budget_variants, feature_budget
from featscale.features import open_features, tokens_sha256
from featscale.runtime import pick_device, write_atomically
from featscale.sae import SparseAutoencoder
from featscale.sampler import heldout_windows
from featscale.token_store import open_split
from featscale.train import load_model

set_threads(snakemake.threads)
spec, budget = snakemake.params.spec, snakemake.params.budget
model = load_model(snakemake.input.model_weights, snakemake.input.model_config)
store = open_features(snakemake.input.features)
variants = budget_variants(
    store.stat("importance"),
    store.stat("count"),
    budget["percents"],
    budget["random_draws"],
    budget["keep_points"],
    seed=snakemake.params.run_seed,
)
windows = heldout_windows(open_split(snakemake.input.tokens, "val"), budget["tokens"], model.config.context)
table = feature_budget(
    model,
    SparseAutoencoder.load(Path(snakemake.input.sae).parent),
    windows,
    spec["layer"],
    spec["site"],
    0 if spec["train_on_position_0"] else 1,
    variants,
    snakemake.params.batch_size,
    pick_device(snakemake.params.device),
)
table.insert(0, "model", snakemake.wildcards.model)
table["tokens_sha256"] = tokens_sha256(windows)  # the same val windows for every width
write_atomically(snakemake.output[0], lambda path: table.to_csv(path, index=False))
