from featscale.runtime import log_to, set_threads

log_to(snakemake.log[0])

from pathlib import Path

from featscale.features import analysis_windows, encode_features
from featscale.runtime import pick_device
from featscale.sae import SparseAutoencoder
from featscale.token_store import open_split
from featscale.train import load_model

set_threads(snakemake.threads)
spec, features = snakemake.params.spec, snakemake.params.features
model = load_model(snakemake.input.model_weights, snakemake.input.model_config)
sae = SparseAutoencoder.load(Path(snakemake.input.sae).parent)
windows = analysis_windows(
    open_split(snakemake.input.tokens, features["split"]),
    features["tokens"],
    model.config.context,
    features["include_position_0"],
    random_seed=snakemake.params.run_seed if features["split"] == "train" else None,
)
encode_features(
    model,
    sae,
    windows,
    spec["layer"],
    spec["site"],
    features["include_position_0"],
    features["tokens"],
    features["batch_windows"],
    pick_device(snakemake.params.device),
    snakemake.output[0],
    attrs={"model": snakemake.wildcards.model, "sae": snakemake.wildcards.sae, "split": features["split"]},
)
