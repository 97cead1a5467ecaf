"""Figures a scientist can read: the lr bowls, log axes that keep their labels on a narrow span, units on every
axis, no panel for an axis that did not vary."""

import matplotlib

matplotlib.use("Agg")

from synthetic import synthetic_sweep  # noqa: E402

from scaling.fit.plots import _log, plot_all  # noqa: E402
from scaling.fit.report import fit_all  # noqa: E402


def test_a_log_axis_spanning_less_than_a_decade_keeps_tick_labels():
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots()
    ax.plot([2e-3, 8e-3], [1, 2])
    _log(ax)
    ax.set_xlim(2e-3, 8e-3)
    fig.canvas.draw()
    labels = [t.get_text() for t in ax.get_xticklabels(minor=True) + ax.get_xticklabels() if t.get_text()]
    assert len(labels) >= 2, labels
    plt.close(fig)


def test_fit_figures_include_the_lr_bowls_and_skip_axes_that_did_not_vary(tmp_path):
    import matplotlib.pyplot as plt

    runs = synthetic_sweep(0)
    report = fit_all(runs, n_boot=200)
    opened = []
    original = plt.subplots

    def spy(*a, **k):
        fig, axes = original(*a, **k)
        opened.append(fig)
        return fig, axes

    plt.subplots = spy
    try:
        written = plot_all(report, runs.df, tmp_path)
    finally:
        plt.subplots = original
    names = {p.stem for p in written}
    assert {"lr_bowls", "optima_vs_compute", "loss_vs_compute"} <= names
    assert "lr_batch_losses" not in names  # one batch size: no lr x batch figure
    axes = [ax for fig in opened for ax in fig.axes if ax.get_xlabel()]
    assert all(ax.get_ylabel() or ax is not ax.figure.axes[0] for ax in axes)
    optima = next(fig for fig in opened if any(ax.get_title() == "lr_opt" for ax in fig.axes))
    assert len([ax for ax in optima.axes if ax.get_xlabel()]) == 1  # no batch panel
    units = {ax.get_xlabel() for ax in axes} | {ax.get_ylabel() for ax in axes if ax.get_ylabel()}
    assert "compute C (FLOPs, M)" in units and "validation loss (nats/token)" in units
    assert "peak learning rate" in units
    bowls = next(fig for fig in opened if any(ax.get_title().startswith("C = ") for ax in fig.axes))
    assert len([ax for ax in bowls.axes if ax.get_title().startswith("C = ")]) == 3  # a panel per budget
