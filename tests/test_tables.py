"""The per-width tables of a run without a language model (a planted family): losses missing, not invented."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd

from featscale.analysis.figures import build_not_measured
from featscale.analysis.tables import loss_table, run_width_summary


def planted_evaluation(model: str, l0: float) -> dict:
    """An eval.json of a planted family's SAE: reconstruction measures, no next-token loss."""
    return {"model": model, "sae": "main", "fvu": 0.05, "l0": l0, "dead_fraction": 0.1, "dense_fraction": 0.0,
            "tokens": 1000, "language_model": False, "predictions": 0, "first_position": 1}


def test_without_a_language_model_the_width_summary_has_no_loss_budget_or_scaling_fit(tmp_path):
    evaluations = []
    for model, l0 in (("w16", 3.0), ("w32", 4.0)):
        path = tmp_path / f"{model}.json"
        path.write_text(json.dumps(planted_evaluation(model, l0)))
        evaluations.append(path)
    census = pd.DataFrame({"model": ["w16", "w32"], "width": [16, 32], "n_latents": 64, "live": [40, 50],
                           "non_collapsed_live": [40, 50], "counted": [30, 45]})
    census.to_csv(tmp_path / "latents.csv", index=False)
    outputs = {name: tmp_path / f"{name}.csv" for name in ("losses", "budget", "widths", "scaling")}
    outputs["scaling_fits"] = tmp_path / "scaling_fits.json"
    run_width_summary({"evaluations": evaluations, "budgets": [], "census": tmp_path / "latents.csv"}, outputs,
                      n_layers=1, recovery=0.9)
    losses = pd.read_csv(outputs["losses"])
    assert losses[["clean", "spliced", "ce_loss_score"]].isna().all().all() and list(losses["l0"]) == [3.0, 4.0]
    assert pd.read_csv(outputs["budget"]).empty
    widths = pd.read_csv(outputs["widths"])
    assert widths["n_for_recovery_mean"].isna().all() and list(widths["live_latents"]) == [40, 50]
    assert json.loads(outputs["scaling_fits"].read_text()) == {}
    assert np.isnan(loss_table(evaluations)["kl_score"]).all()


def test_a_figure_the_run_cannot_measure_says_so():
    figure = build_not_measured("Reconstructed losses", "not measured: no language model")
    assert figure.axes[0].get_title() == "Reconstructed losses"
    assert "no language model" in figure.axes[0].texts[0].get_text()
