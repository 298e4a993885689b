"""What a multi-run report draws: panel titles that never overlap, one marker per run in the pareto plot, and
lengths in numeric order (512 before 1K) in the density and diagnose figures."""
import pandas as pd
import pytest

from harness.reports import diagnose_report, plots


@pytest.fixture
def figures(monkeypatch):
    drawn = {}

    def keep(fig, out, stem):
        fig.canvas.draw()
        drawn[stem] = fig

    monkeypatch.setattr(plots, "save", keep)
    monkeypatch.setattr(diagnose_report, "_save", keep)
    return drawn


RUNS = ["20261123-190930-smollm2-ttft-a-long-run-name", "20261126-031547-smollm2-accuracy-another-long-name"]


def test_panel_titles_of_several_runs_do_not_overlap(figures, tmp_path):
    index = pd.MultiIndex.from_tuples([(run, "smollm2-135m", spec) for run in RUNS for spec in ("dense", "sample")],
                                      names=["run", "model", "method_spec"])
    table = pd.DataFrame([[30.0, 60.0], [20.0, 30.0]] * 2, index=index, columns=[8192, 16384])
    plots.lines_by_method(table, "TTFT (ms)", "TTFT vs length", tmp_path, "ttft_vs_length", log_y=True)
    fig = figures["ttft_vs_length"]
    renderer = fig.canvas.get_renderer()
    left, right = (ax.title.get_window_extent(renderer) for ax in fig.axes[:2])
    assert left.x1 < right.x0  # the first panel's title ends before the second's begins
    assert [ax.get_title() for ax in fig.axes[:2]] == [f"{run}\nsmollm2-135m" for run in RUNS]


def test_pareto_gives_each_run_its_own_marker(figures, tmp_path):
    points = pd.DataFrame([{"run": run, "model": "m", "method_spec": spec, "length": 4096, "speedup": speed,
                            "mean": 0.8, "low": 0.6, "high": 0.9, "dense_like": False}
                           for run, speed in zip(RUNS, (1.5, 2.5)) for spec in ("dense", "sample")])
    plots.pareto(points, "dense", tmp_path, "pareto")
    ax = figures["pareto"].axes[0]
    markers = {(round(line.get_xdata()[0], 1), line.get_marker()) for line in ax.lines
               if line.get_marker() not in (None, "None", "", "_")}
    first, second = ({m for x, m in markers if x == speed} for speed in (1.5, 2.5))
    assert first and second and not first & second  # no marker shared between the two runs' points


def test_density_panels_and_diagnose_heatmaps_order_lengths_as_numbers(figures, tmp_path):
    density = pd.DataFrame([{"model": "m", "method_spec": "sample", "length": n, "layer": layer, "density": 0.5}
                            for n in (512, 1024, 2048) for layer in range(2)])
    plots.density_lines(density, tmp_path, "density_per_layer")
    titles = [ax.get_title() for ax in figures["density_per_layer"].axes if ax.get_title()]
    assert titles == ["m @ 512", "m @ 1K", "m @ 2K"]
    heads = pd.DataFrame([{"model": "m", "label": "sample", "length": n, "layer": layer, "head": head,
                           "density": 0.5, "recall": 0.9} for n in (512, 1024) for layer in range(2)
                          for head in range(2)])
    diagnose_report.heatmaps(heads, "density", "density", tmp_path, "diag_heatmap_density")
    titles = [ax.get_title() for ax in figures["diag_heatmap_density"].axes if ax.get_title()]
    assert titles == ["sample @ 512\nm", "sample @ 1K\nm"]
