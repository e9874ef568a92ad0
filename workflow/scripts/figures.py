from featscale.runtime import log_to

log_to(snakemake.log[0])

from pathlib import Path

import pandas as pd

from featscale import figures
from featscale.runtime import write_atomically
from featscale.study import scaling_table

inputs, out = snakemake.input, snakemake.output
points = pd.read_parquet(inputs.points)
pairs = pd.read_csv(inputs.pairs)
controls = pd.read_csv(inputs.controls)
# the same-width seed replicate's mean max similarity: a ceiling line in the source's other panels
ceilings = {(row.source, row.target): row.ceiling_mean for row in controls.itertuples()
            if not row.same_width_replicate and row.ceiling_mean == row.ceiling_mean}
replicates = [(row.source, row.target) for row in controls.itertuples() if row.same_width_replicate]

for mask, path in (("all", out.grid), ("masked", out.grid_masked)):
    chosen = points if mask == "all" else points[~points["collapsed"]]
    panels = {key: group for key, group in chosen.groupby(["source", "target"])}
    figures.universality_grid(panels, pairs[pairs["mask"] == mask], path, replicate_pairs=replicates,
                              reference_lines=ceilings)


def null_figures(folder: Path) -> None:
    folder.mkdir()
    columns = {"shifted-token null": "null_max_similarity", "untrained-model null": "untrained_max_similarity"}
    columns = {label: column for label, column in columns.items()
               if column in points and points[column].notna().any()}
    if not columns:
        (folder / "README.txt").write_text("controls.shifted_null and controls.untrained_null are off: "
                                           "no null was computed.\n")
        return
    for (source, target), group in points.groupby(["source", "target"]):
        figures.null_distributions(group["max_similarity"].to_numpy(),
                                   {label: group[column].to_numpy() for label, column in columns.items()},
                                   folder / f"{source}__{target}.png", title=f"{source} → {target}: real and {'nulls' if len(columns) > 1 else 'null'}",
                                   ceiling=ceilings.get((source, target)))


write_atomically(out.nulls, null_figures)


def per_pair(folder: Path) -> None:
    folder.mkdir()
    fits = pairs[pairs["mask"] == "all"].set_index(["source", "target"])
    for (source, target), group in points.groupby(["source", "target"]):
        figures.universality_pair(group, fits.loc[(source, target)], folder / f"{source}__{target}.png",
                                  title=f"{source} → {target}", reference=ceilings.get((source, target)))


write_atomically(out.pairs, per_pair)
losses = pd.read_csv(inputs.losses)
figures.reconstructed_losses(losses, out.losses)
budget = pd.read_csv(inputs.budget)
keep = budget[budget["kind"] == "keep"].copy()
baselines = budget[budget["kind"].isin(["spliced", "clean"])].pivot(index="model", columns="kind", values="loss")
keep["full_sae_loss"] = keep["model"].map(baselines["spliced"])
keep["clean_loss"] = keep["model"].map(baselines["clean"])
figures.feature_budget_curves(keep, out.budget)
figures.ablation_curves(budget[budget["kind"].isin(["top", "random", "frequent"])], out.ablation)
figures.features_by_width(pd.read_csv(inputs.widths), out.widths)
scaling = pd.read_csv(inputs.scaling)
_, fits = scaling_table(losses, snakemake.config["models"]["n_layers"])
figures.scaling_law(scaling, fits, out.scaling)
