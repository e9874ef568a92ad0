from pathlib import Path

from featscale.runtime import log_to

log_to(snakemake.log[0])

from tokenizers import Tokenizer

from featscale.hf_export import export_hf
from featscale.tokenizer import eot_id
from featscale.train import load_model

model = load_model(snakemake.input.weights, snakemake.input.config)
eot = eot_id(Tokenizer.from_file(snakemake.input.tokenizer))
export_hf(model, Path(snakemake.output[0]), eos_token_id=eot)
