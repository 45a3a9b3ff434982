"""The figures, drawn from the committed results (no runs: the fast tier's check of
`l2l_opt.plotting`; the commands that draw them from fresh runs are in the full tier)."""

import json
import pathlib

from l2l_opt import plotting

PLOTS = pathlib.Path(__file__).parent.parent / "plots"


def test_loss_curves_figure_draws_every_optimizer_on_a_log_scale():
    results = json.loads((PLOTS / "quadratic.json").read_text())
    fig = plotting.loss_curves_figure(results)
    (ax,) = fig.axes
    assert ax.get_yscale() == "log"
    assert len(ax.get_legend().get_texts()) == len(results["optimizers"])
    assert ax.get_title() == plotting.title_of(results) and results["problem"] in ax.get_title()


def test_suite_figure_draws_one_point_per_cell_with_the_line_at_one():
    results = json.loads((PLOTS / "suite_default.json").read_text())
    fig = plotting.suite_figure(results)
    (ax,) = fig.axes
    assert ax.get_yscale() == "log"
    assert len(ax.get_xticks()) == len(results["cells"])
    assert any(set(line.get_ydata()) == {1.0} for line in ax.get_lines())
