from featscale.runtime import log_to

log_to(snakemake.log[0])

import pandas as pd

from featscale.runtime import write_atomically, write_json
from featscale.study import loss_table, scaling_fits_json, scaling_table, width_table

models = snakemake.params.models
losses = loss_table(dict(zip(models, snakemake.input.evaluations)))
budget = pd.concat([pd.read_csv(path) for path in snakemake.input.budgets], ignore_index=True)
census = pd.read_csv(snakemake.input.census)
widths = width_table(census, losses, budget, snakemake.params.recovery)
scaling, fits = scaling_table(losses, snakemake.params.n_layers)
out = snakemake.output
for frame, path in ((losses, out.losses), (budget, out.budget), (widths, out.widths), (scaling, out.scaling)):
    write_atomically(path, lambda p, f=frame: f.to_csv(p, index=False))
write_json(out.scaling_fits, scaling_fits_json(fits))
