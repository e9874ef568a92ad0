from featscale.runtime import log_to, set_threads

log_to(snakemake.log[0])

from pathlib import Path

import zarr

from featscale.evaluation import evaluate_sae
from featscale.runtime import pick_device, write_json
from featscale.sae import SparseAutoencoder
from featscale.sampler import heldout_windows
from featscale.train import load_model

set_threads(snakemake.threads)
spec = snakemake.params.spec
model = load_model(snakemake.input.model_weights, snakemake.input.model_config)
windows = heldout_windows(
    zarr.open_group(snakemake.input.tokens, mode="r")["val"], snakemake.params.evaluation_tokens, model.config.context
)
result = evaluate_sae(
    model,
    SparseAutoencoder.load(Path(snakemake.input.sae).parent),
    windows,
    spec["layer"],
    spec["site"],
    snakemake.params.batch_size,
    pick_device(snakemake.params.device),
    first_position=0 if spec["train_on_position_0"] else 1,
)
write_json(snakemake.output[0], result)
