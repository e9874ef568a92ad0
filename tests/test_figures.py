"""The study's figures (featscale.analysis.figures): what each draws, where, and what it refuses."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest
from matplotlib.collections import PolyCollection
from matplotlib.figure import Figure
from PIL import Image

from featscale.analysis import figures as figures
from featscale.analysis.fits import fit_talk_curve, talk_curve
from featscale.analysis.scaling import fit_scaling_law
from featscale.config import non_embedding_params

# given out of order on purpose: the grid must sort by (width, seed), not by string
MODELS = ("w256-s1", "w96", "w256", "w128")
ORDERED = ("w96", "w128", "w256", "w256-s1")


def talk_points(n: int, b: float = 5.0, c: float = 0.1, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    x = rng.uniform(0, 1, n) ** 2
    y = np.clip(talk_curve(x, b, c) + rng.normal(0, 0.1, n), -1, 1)
    return pd.DataFrame({"relative_importance": x, "max_similarity": y})


def grid_inputs(failed: tuple[str, str] = ("w256", "w96"), models: tuple[str, ...] = MODELS):
    """Every ordered pair of `models`, each with its own number of points (so a panel's data
    identifies its pair) and its own r; `failed` has NaN b and c."""
    pairs, rows = {}, []
    for k, (source, target) in enumerate((s, t) for s in models for t in models if s != t):
        pairs[source, target] = talk_points(40 + k, seed=k)
        b, c = (np.nan, np.nan) if (source, target) == failed else (4.0 + k, 0.05)
        rows.append({"source": source, "target": target, "b": b, "c": c, "pearson_r": k / 20})
    return pairs, pd.DataFrame(rows)


def png_size(path) -> tuple[int, int]:
    with Image.open(path) as image:
        image.verify()
    with Image.open(path) as image:
        assert image.format == "PNG"
        return image.size


def expected_pixels(figure: Figure) -> tuple[int, int]:
    width, height = figure.get_size_inches() * figures.DPI
    plt.close(figure)
    return round(width), round(height)


@pytest.fixture(autouse=True)
def no_figure_left_open():
    yield
    leaked = plt.get_fignums()
    plt.close("all")
    assert not leaked, "a figure was left open"


# --- the universality grid ---------------------------------------------------------------


def test_grid_puts_source_down_the_rows_and_target_across_ordered_by_width_then_seed():
    pairs, fits = grid_inputs()
    grid = figures.build_universality_grid(pairs, fits)
    n = len(MODELS)
    assert grid.models == ORDERED
    assert grid.axes.shape == (n, n)
    assert sum(ax.get_visible() for ax in grid.figure.axes) == n * (n - 1)
    r_of = {(row.source, row.target): row.pearson_r for row in fits.itertuples()}
    for i, source in enumerate(ORDERED):
        for j, target in enumerate(ORDERED):
            ax = grid.axes[i, j]
            if i == j:
                assert not ax.get_visible()
                continue
            assert ax.get_visible()
            title = ax.get_title()
            assert title.startswith(f"{source} → {target}\n")
            assert f"r = {r_of[source, target]:.2f}" in title
            # the panel draws this pair's points, not another pair's
            offsets = ax.collections[0].get_offsets()
            expected = pairs[source, target]
            assert len(offsets) == len(expected)
            assert np.allclose(np.sort(offsets[:, 0]), np.sort(expected["relative_importance"]))
    plt.close(grid.figure)


def test_grid_draws_the_fitted_curve_and_no_curve_where_the_fit_failed():
    pairs, fits = grid_inputs(failed=("w256", "w96"))
    grid = figures.build_universality_grid(pairs, fits)
    index = {name: k for k, name in enumerate(grid.models)}
    for row in fits.itertuples():
        ax = grid.axes[index[row.source], index[row.target]]
        curves = [line for line in ax.get_lines() if line.get_label() == "fit"]
        if (row.source, row.target) == ("w256", "w96"):
            assert curves == []
            assert "fit failed" in ax.get_title()
        else:
            (curve,) = curves
            x, y = curve.get_xdata(), curve.get_ydata()
            assert x[0] == 0 and x[-1] == 1
            assert np.allclose(y, 1 - np.exp(-row.b * (x - row.c)))
            assert "fit failed" not in ax.get_title()
    plt.close(grid.figure)


def test_grid_labels_only_the_outer_visible_panels_and_keeps_the_talks_y_range():
    pairs, fits = grid_inputs()
    grid = figures.build_universality_grid(pairs, fits)
    n = len(MODELS)
    for i in range(n):
        for j in range(n):
            if i == j:
                continue
            ax = grid.axes[i, j]
            lowest = i == (n - 2 if j == n - 1 else n - 1)  # the diagonal hides the corner
            leftmost = j == (1 if i == 0 else 0)
            assert (ax.get_xlabel() == "relative importance") == lowest
            assert (ax.get_ylabel() == "max similarity") == leftmost
            low, high = ax.get_ylim()
            assert low <= -0.2 and high == pytest.approx(1.05)
    plt.close(grid.figure)


def test_grid_draws_reference_lines_and_marks_replicate_pairs_only_where_asked():
    pairs, fits = grid_inputs()
    grid = figures.build_universality_grid(
        pairs, fits, replicate_pairs=[("w256", "w256-s1")], reference_lines={("w256", "w256-s1"): 0.8}
    )
    index = {name: k for k, name in enumerate(grid.models)}
    for source, target in pairs:
        ax = grid.axes[index[source], index[target]]
        references = [line for line in ax.get_lines() if line.get_label() == "reference"]
        if (source, target) == ("w256", "w256-s1"):
            (line,) = references
            assert np.allclose(line.get_ydata(), 0.8)
            assert line.get_linestyle() == "--"
            assert ax.get_title().startswith("w256 → w256-s1†")
        else:
            assert references == []
            assert "†" not in ax.get_title()
    plt.close(grid.figure)


def test_grid_refuses_incomplete_or_inconsistent_inputs():
    pairs, fits = grid_inputs()
    with pytest.raises(ValueError, match="lacks the ordered pair"):
        figures.build_universality_grid({k: v for k, v in pairs.items() if k != ("w96", "w128")}, fits)
    with pytest.raises(ValueError, match="no row for the pair w96 -> w128"):
        figures.build_universality_grid(pairs, fits[~((fits.source == "w96") & (fits.target == "w128"))])
    with pytest.raises(ValueError, match="twice"):
        figures.build_universality_grid(pairs, pd.concat([fits, fits.iloc[:1]]))
    with pytest.raises(ValueError, match="reference_lines names pair"):
        figures.build_universality_grid(pairs, fits, reference_lines={("w96", "w1024"): 0.5})
    with pytest.raises(ValueError, match="diagonal"):
        figures.build_universality_grid({**pairs, ("w96", "w96"): talk_points(10)}, fits)


def test_the_universality_grid_is_written_as_a_png_of_the_figures_size(tmp_path):
    pairs, fits = grid_inputs(models=("w256", "w96", "w128"))
    size = expected_pixels(figures.build_universality_grid(pairs, fits).figure)
    path = tmp_path / "figures" / "grid.png"  # the folder is made
    assert figures.universality_grid(pairs, fits, path) == path
    assert png_size(path) == size
    assert [p.name for p in path.parent.iterdir()] == ["grid.png"]


def test_a_full_size_pair_of_24576_latents_is_drawn(tmp_path):
    points = talk_points(24_576)
    fit = {"b": 5.0, "c": 0.1, "pearson_r": 0.7}
    size = expected_pixels(figures.build_universality_pair(points, fit, "w128 → w256"))
    path = figures.universality_pair(points, fit, tmp_path / "pair.png", "w128 → w256", reference=0.9)
    assert png_size(path) == size


def test_a_pair_takes_a_fit_object_and_computes_r_from_the_points_it_draws():
    points = talk_points(500)
    points.loc[0, "max_similarity"] = np.nan  # left out of the drawing and of r
    finite = points.dropna()
    fit = fit_talk_curve(finite["relative_importance"].to_numpy(), finite["max_similarity"].to_numpy())
    figure = figures.build_universality_pair(points, fit, "w128 → w256")
    (ax,) = figure.axes
    r = np.corrcoef(finite["relative_importance"], finite["max_similarity"])[0, 1]
    assert f"r = {r:.2f}" in ax.get_title()
    assert len(ax.collections[0].get_offsets()) == len(finite)
    (curve,) = [line for line in ax.get_lines() if line.get_label() == "fit"]
    assert np.allclose(curve.get_ydata(), fit.curve(curve.get_xdata()))
    plt.close(figure)

    failed = fit_talk_curve(np.ones(10), np.ones(10))  # every x the same: no fit
    figure = figures.build_universality_pair(points, failed, "w128 → w256")
    assert "fit failed" in figure.axes[0].get_title()
    assert not [line for line in figure.axes[0].get_lines() if line.get_label() == "fit"]
    plt.close(figure)


# --- the density colouring ---------------------------------------------------------------


def test_the_grid_density_agrees_with_the_exact_gaussian_kde():
    points = talk_points(1500)
    x, y = points["relative_importance"].to_numpy(), points["max_similarity"].to_numpy()
    exact = figures.point_density(x, y)
    gridded = figures.point_density(x, y, exact_max_points=0)
    assert np.corrcoef(exact, gridded)[0, 1] > 0.999
    assert np.abs(gridded / exact - 1).max() < 0.05


def test_points_without_a_2d_density_still_get_finite_colours():
    x = np.linspace(0, 1, 50)
    for y in (x, np.zeros(50)):  # on a line: the exact KDE's covariance is singular
        density = figures.point_density(x, y)
        assert density.shape == (50,) and np.isfinite(density).all() and (density > 0).all()
    assert figures.point_density(np.array([0.5]), np.array([0.5])).shape == (1,)


# --- the other figures -------------------------------------------------------------------


def losses_table() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "model": ["w512", "w128", "w256"],
            "clean": [3.25, 4.06, 3.60],
            "spliced": [3.40, 4.20, 3.80],
            "zero": [7.0, 9.0, 8.0],
        }
    )


def budget_table() -> pd.DataFrame:
    rows = []
    for model in ("w256", "w128", "w256-s1", "w512"):
        for n in (0, 1, 10, 100, 1000):
            rows.append({"model": model, "n_features": n, "loss": 3 + 5 / (n + 1), "full_sae_loss": 3.1, "clean_loss": 3.0})
    return pd.DataFrame(rows)


def ablation_table() -> pd.DataFrame:
    rows = []
    for model in ("w256", "w128"):
        for percent in (0, 10, 50):
            rows.append({"model": model, "percent": percent, "kind": "top", "draw": 0, "loss": 3 + percent / 10})
            rows.append({"model": model, "percent": percent, "kind": "frequent", "draw": 0, "loss": 3 + percent / 20})
            for draw in range(3):
                rows.append(
                    {"model": model, "percent": percent, "kind": "random", "draw": draw, "loss": 3 + percent / 50 + draw}
                )
    return pd.DataFrame(rows)


def measures_table() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "model": ["w128", "w256", "w256-s1", "w512"],
            "width": [128, 256, 256, 512],
            "l0": [22, 33, 35, 49],
            "live_latents": [20000, 21000, 21500, 23000],
            "non_collapsed_latents": [19000, np.nan, 20000, 22000],
            "n_for_recovery": [np.nan] * 4,
        }
    )


def scaling_inputs():
    widths = np.array([128, 256, 512, 768])
    n_params = np.array([non_embedding_params(8, w) for w in widths])
    clean = np.array([4.06, 3.60, 3.25, 3.05])
    points = pd.DataFrame(
        {"model": [f"w{w}" for w in widths], "n_params": n_params, "clean_loss": clean, "spliced_loss": clean * 1.05}
    )
    fits = {"clean": fit_scaling_law(n_params, clean), "spliced": fit_scaling_law(n_params, clean * 1.05)}
    return points, fits


def null_inputs():
    rng = np.random.default_rng(0)
    return pd.DataFrame({"max_similarity": rng.beta(5, 2, 2000)}), rng.beta(2, 5, (3, 2000))


def training_inputs():
    """The models' and SAEs' metrics.csv stacked, as run_figures reads them; w128's SAE last."""
    models, saes = [], []
    for model in ("w256", "w128"):
        for step in range(1, 11):
            models.append({"model": model, "tokens": 1000 * step, "train_loss": 8 - step / 4,
                           "val_loss": 8 - step / 4 if step % 5 == 0 else np.nan})
    for model in ("w256", "w128"):
        for step in range(5, 45, 5):
            saes.append({"model": model, "tokens": 400 * step, "mse": 100 / step, "sparsity_loss": 10 / step,
                         "aux_loss": 1 / step, "l0": 300 / step, "dead_fraction": step / 200})
    return pd.DataFrame(models), pd.DataFrame(saes)


# (build, write, inputs) per figure: every figure goes through the same checks below
FIGURES = {
    "reconstructed_losses": (figures.build_reconstructed_losses, figures.reconstructed_losses, lambda: (losses_table(),)),
    "feature_budget_curves": (figures.build_feature_budget_curves, figures.feature_budget_curves, lambda: (budget_table(),)),
    "ablation_curves": (figures.build_ablation_curves, figures.ablation_curves, lambda: (ablation_table(),)),
    "features_by_width": (figures.build_features_by_width, figures.features_by_width, lambda: (measures_table(),)),
    "scaling_law": (figures.build_scaling_law, figures.scaling_law, scaling_inputs),
    "training_curves": (figures.build_training_curves, figures.training_curves, training_inputs),
}


@pytest.mark.parametrize("name", FIGURES)
def test_each_figure_is_written_as_a_png_of_its_figures_size(name, tmp_path):
    build, write, inputs = FIGURES[name]
    size = expected_pixels(build(*inputs()))
    path = tmp_path / f"{name}.png"
    assert write(*inputs(), path) == path
    assert png_size(path) == size


def test_null_distributions_is_written_as_a_png_of_its_figures_size(tmp_path):
    real, null = null_inputs()
    size = expected_pixels(figures.build_null_distributions(real, null, "w128 → w256"))
    path = figures.null_distributions(real, null, tmp_path / "null.png", "w128 → w256", ceiling=0.9)
    assert png_size(path) == size


# each table with each required column dropped in turn
MISSING = [
    (name, column)
    for name, columns in {
        "reconstructed_losses": ("model", "clean", "spliced", "zero"),
        "feature_budget_curves": ("model", "n_features", "loss"),
        "ablation_curves": ("model", "percent", "kind", "draw", "loss"),
        "features_by_width": ("model", "width", "l0", "live_latents", "non_collapsed_latents", "n_for_recovery"),
        "scaling_law": ("model", "n_params", "clean_loss", "spliced_loss"),
        "training_curves": ("model", "tokens", "train_loss", "val_loss"),
    }.items()
    for column in columns
]


@pytest.mark.parametrize(("name", "column"), MISSING)
def test_a_missing_column_is_named_and_nothing_is_written(name, column, tmp_path):
    _, write, inputs = FIGURES[name]
    table, *rest = inputs()
    path = tmp_path / "figure.png"
    with pytest.raises(ValueError, match=f"no column '{column}'"):
        write(table.drop(columns=column), *rest, path)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("fits_column", "points_column"), [("b", None), ("pearson_r", None), (None, "max_similarity")]
)
def test_universality_inputs_missing_a_column_are_refused_by_name(fits_column, points_column):
    pairs, fits = grid_inputs()
    if fits_column:
        fits = fits.drop(columns=fits_column)
    if points_column:
        pairs[("w96", "w128")] = pairs[("w96", "w128")].drop(columns=points_column)
    with pytest.raises(ValueError, match=f"no column '{fits_column or points_column}'"):
        figures.build_universality_grid(pairs, fits)
    if points_column:
        with pytest.raises(ValueError, match=f"no column '{points_column}'"):
            figures.build_universality_pair(pairs[("w96", "w128")], {"b": 1, "c": 0, "pearson_r": 0}, "t")


def test_null_distributions_refuses_a_table_without_max_similarity():
    with pytest.raises(ValueError, match="no column 'max_similarity'"):
        figures.build_null_distributions(pd.DataFrame({"similarity": [0.1]}), np.array([0.2]), "t")


def test_reconstructed_losses_orders_models_by_width_and_shows_the_loss_recovered():
    figure = figures.build_reconstructed_losses(losses_table())
    (ax,) = figure.axes
    labels = [label.get_text() for label in ax.get_xticklabels()]
    assert [label.split("\n")[0] for label in labels] == ["w128", "w256", "w512"]
    # w128: (9.0 - 4.20) / (9.0 - 4.06)
    assert f"{(9.0 - 4.20) / (9.0 - 4.06):.1%} recovered" in labels[0]
    clean_bars = ax.containers[0]
    assert [bar.get_height() for bar in clean_bars] == [4.06, 3.60, 3.25]
    plt.close(figure)


def test_feature_budget_has_one_line_per_model_coloured_by_width_on_a_log_axis():
    figure = figures.build_feature_budget_curves(budget_table())
    (ax,) = figure.axes
    assert ax.get_xscale() == "log"
    lines = {line.get_label(): line for line in ax.get_lines() if not line.get_label().startswith("_")}
    assert list(lines) == ["w128", "w256", "w256-s1", "w512"]
    assert list(lines["w128"].get_xdata()) == [1, 10, 100, 1000]  # the zero budget is left out
    # a seed replicate shares its width's colour and differs in dashes; other widths differ
    assert lines["w256"].get_color() == lines["w256-s1"].get_color()
    assert lines["w256"].get_linestyle() != lines["w256-s1"].get_linestyle()
    assert len({tuple(lines[m].get_color()) for m in ("w128", "w256", "w512")}) == 3
    # wider is darker on the sequential palette
    luminance = [np.dot(lines[m].get_color()[:3], (0.299, 0.587, 0.114)) for m in ("w128", "w256", "w512")]
    assert luminance == sorted(luminance, reverse=True)
    plt.close(figure)


def test_ablation_draws_a_panel_per_model_and_random_as_mean_with_a_min_max_band():
    figure = figures.build_ablation_curves(ablation_table())
    visible = [ax for ax in figure.axes if ax.get_visible()]
    assert [ax.get_title() for ax in visible] == ["w128", "w256"]
    ax = visible[0]
    lines = {line.get_label().split(" ")[0]: line for line in ax.get_lines()}
    assert set(lines) == {"top", "random", "frequent"}
    # random at 10%: losses 3.2, 4.2, 5.2 over three draws
    assert np.allclose(lines["random"].get_ydata(), [4.0, 4.2, 5.0])
    (band,) = [c for c in ax.collections if isinstance(c, PolyCollection)]
    vertices = band.get_paths()[0].vertices
    at_ten = vertices[np.isclose(vertices[:, 0], 10), 1]
    assert at_ten.min() == pytest.approx(3.2) and at_ten.max() == pytest.approx(5.2)
    plt.close(figure)
    with pytest.raises(ValueError, match="kind"):
        figures.build_ablation_curves(ablation_table().replace({"kind": {"frequent": "often"}}))


def test_features_by_width_has_a_panel_per_measure_with_ticks_at_the_widths():
    figure = figures.build_features_by_width(measures_table())
    axes = figure.axes
    assert len(axes) == 4
    for ax in axes:
        assert ax.get_xscale() == "log"
        assert list(ax.get_xticks()) == [128, 256, 512]
    assert "not measured" in [text.get_text() for text in axes[3].texts]
    # the line joins the mean over seeds of each width
    (line,) = axes[0].get_lines()
    assert np.allclose(line.get_ydata(), [22, 34, 49])
    plt.close(figure)
    wrong = measures_table()
    wrong.loc[0, "width"] = 64
    with pytest.raises(ValueError, match="w128 has width 64"):
        figures.build_features_by_width(wrong)


def test_scaling_law_draws_the_fitted_lines_with_alpha_in_the_legend():
    points, fits = scaling_inputs()
    figure = figures.build_scaling_law(points, fits)
    (ax,) = figure.axes
    assert ax.get_xscale() == ax.get_yscale() == "log"
    legend = [text.get_text() for text in ax.get_legend().get_texts()]
    for kind, fit in fits.items():
        assert any(label.startswith(f"{kind} fit: α = {fit.alpha:.3f}") for label in legend)
        (line,) = [line for line in ax.get_lines() if line.get_label().startswith(f"{kind} fit")]
        assert np.allclose(line.get_ydata(), fit.loss(line.get_xdata()))
    plt.close(figure)
    with pytest.raises(ValueError, match="clean and/or spliced"):
        figures.build_scaling_law(points, {"clen": fits["clean"]})


def test_training_curves_draw_each_model_and_its_sae_against_tokens_narrowest_first():
    models, saes = training_inputs()
    figure = figures.build_training_curves(models, saes)
    loss, sae_loss, l0, dead = figure.axes
    # per model a thin train line and a line through the validation points only
    train, val = loss.lines[0], loss.lines[1]
    np.testing.assert_array_equal(train.get_xdata(), np.arange(1, 11) * 1000)
    np.testing.assert_array_equal(val.get_xdata(), [5000, 10000])
    assert val.get_marker() == "o" and train.get_marker() == "None"
    assert [text.get_text() for text in loss.get_legend().get_texts()] == ["w128", "w256"]  # by width
    assert train.get_color() == val.get_color() != loss.lines[2].get_color()
    first = saes[saes["model"] == "w128"]
    np.testing.assert_allclose(sae_loss.lines[0].get_ydata(), first["mse"] + first["sparsity_loss"] + first["aux_loss"])
    np.testing.assert_allclose(l0.lines[0].get_ydata(), first["l0"])
    np.testing.assert_allclose(dead.lines[1].get_ydata(), saes[saes["model"] == "w256"]["dead_fraction"])
    assert sae_loss.get_yscale() == l0.get_yscale() == "log" and dead.get_yscale() == "linear"
    assert all(ax.get_xlabel() == "training tokens" for ax in figure.axes)
    plt.close(figure)
    with pytest.raises(ValueError, match="saes has no column 'l0'"):
        figures.build_training_curves(models, saes.drop(columns="l0"))


def test_training_metrics_are_named_by_their_folder(tmp_path):
    for model in ("w16", "w32"):
        folder = tmp_path / "saes" / model / "main"
        folder.mkdir(parents=True)
        pd.DataFrame({"tokens": [1, 2], "l0": [3.0, 4.0]}).to_csv(folder / "metrics.csv", index=False)
    paths = sorted((tmp_path / "saes").glob("*/main/metrics.csv"))
    stacked = figures.stacked_metrics(paths, 2)
    assert list(stacked["model"]) == ["w16", "w16", "w32", "w32"] and list(stacked["l0"]) == [3.0, 4.0] * 2


def test_null_distributions_overlays_real_and_null_with_the_ceiling():
    real, null = null_inputs()
    figure = figures.build_null_distributions(real, null, "w128 → w256", ceiling=0.9)
    (ax,) = figure.axes
    legend = [text.get_text() for text in ax.get_legend().get_texts()]
    assert legend == ["null (n = 6,000)", "real (n = 2,000)", "ceiling = 0.90"]
    plt.close(figure)


# --- nothing half-written ----------------------------------------------------------------


def test_a_figure_that_fails_while_saving_leaves_nothing_behind(tmp_path):
    # mathtext is parsed when the figure is drawn, i.e. inside savefig, after validation
    path = tmp_path / "pair.png"
    with pytest.raises(ValueError):
        figures.universality_pair(talk_points(100), {"b": 5, "c": 0.1, "pearson_r": 0.5}, path, r"$\notacommand{$")
    assert list(tmp_path.iterdir()) == []


def test_a_save_that_dies_half_way_keeps_the_previous_figure(tmp_path, monkeypatch):
    path = tmp_path / "losses.png"
    path.write_bytes(b"the previous figure")

    def half_write(self, fname, **kwargs):
        with open(fname, "wb") as handle:
            handle.write(b"\x89PNG half")
        raise OSError("disk full")

    monkeypatch.setattr(Figure, "savefig", half_write)
    with pytest.raises(OSError, match="disk full"):
        figures.reconstructed_losses(losses_table(), path)
    assert path.read_bytes() == b"the previous figure"
    assert [p.name for p in tmp_path.iterdir()] == ["losses.png"]
