from featscale.runtime import log_to

log_to(snakemake.log[0])

from pathlib import Path

from featscale.report import write_study_report

inputs = snakemake.input
names = ("pairs", "census", "controls", "losses", "widths", "scaling_fits", "budget")
tables = {
    sae: {name: Path(inputs[name][i]) for name in names} | {"figures": Path(inputs.figures[i]).parent}
    for i, sae in enumerate(snakemake.params.saes)
}
write_study_report(snakemake.output[0], snakemake.params.config, tables)
