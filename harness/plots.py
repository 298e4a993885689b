"""Matplotlib figures for reports, drawn from tables harness.report computed (this module computes nothing and
imports nothing from the harness but the length format). Each figure is saved as PNG and SVG; all_plots returns
(stem, title) of what was drawn."""
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import FixedLocator, NullLocator  # noqa: E402

from harness.options import format_length  # noqa: E402

MARKERS = "osD^vP*Xh<>"
DPI = 110


def save(fig, out, stem):
    fig.savefig(out / f"{stem}.png", dpi=DPI, bbox_inches="tight")
    fig.savefig(out / f"{stem}.svg", bbox_inches="tight")
    plt.close(fig)


def length_axis(ax, lengths):
    """A log2 length axis whose ticks are exactly the measured lengths, written 1K, 8K, 32K."""
    lengths = sorted({int(n) for n in lengths})
    ax.set_xscale("log", base=2)
    ax.xaxis.set_major_locator(FixedLocator(lengths))
    ax.xaxis.set_minor_locator(NullLocator())
    ax.set_xticklabels([format_length(n) for n in lengths])
    if len(lengths) == 1:
        ax.set_xlim(lengths[0] / 1.5, lengths[0] * 1.5)
    ax.set_xlabel("prompt length (tokens)")


def lines_by_method(table, ylabel, title, out, stem, log_y=False, reference=None):
    """One panel per model (and run, when the table is per run): a line per method against length."""
    panel_levels = [n for n in table.index.names if n != "method_spec"]
    panels = list(table.index.droplevel("method_spec").unique())
    fig, axes = plt.subplots(1, len(panels), figsize=(5.5 * len(panels), 3.8), squeeze=False)
    for ax, panel in zip(axes[0], panels):
        part = table.xs(panel if isinstance(panel, tuple) else (panel,), level=panel_levels)
        for i, (spec, row) in enumerate(part.iterrows()):
            row = row.dropna()
            ax.plot(row.index.astype(int), row.values, marker=MARKERS[i % len(MARKERS)], ms=6, lw=1.2,
                    alpha=0.85, label=spec, zorder=3 + i)
        length_axis(ax, table.columns)
        if log_y:
            ax.set_yscale("log")
        if reference is not None:
            ax.axhline(reference[0], color="grey", lw=0.8, ls="--", label=reference[1])
        name = " / ".join(map(str, panel)) if isinstance(panel, tuple) else str(panel)
        ax.set(title=f"{name}: {title}", ylabel=ylabel)
        ax.grid(alpha=0.3)
    axes[0][-1].legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.02, 1.0), frameon=False)
    save(fig, out, stem)


def pareto(points, baseline, out, stem):
    """Accuracy (with its 95% interval) against speedup: one colour per method, one marker per length."""
    models = sorted(points["model"].unique())
    lengths = sorted(points["length"].unique())
    specs = sorted(points["method_spec"].unique())
    fig, axes = plt.subplots(1, len(models), figsize=(5.5 * len(models), 4.2), squeeze=False)
    for ax, model in zip(axes[0], models):
        part = points[points["model"] == model]
        for _, p in part.iterrows():
            color = f"C{specs.index(p['method_spec']) % 10}"
            marker = MARKERS[lengths.index(p["length"]) % len(MARKERS)]
            ax.errorbar(p["speedup"], p["mean"], yerr=[[max(0.0, p["mean"] - p["low"])], [max(0.0, p["high"] - p["mean"])]],
                        fmt=marker, color=color, ms=7, capsize=3, alpha=0.8, mfc="none" if p["dense_like"] else color)
        ax.axvline(1.0, color="grey", lw=0.8, ls="--")
        ax.set(xlabel=f"TTFT speedup vs {baseline} (dashed: 1 = as fast)", ylabel="accuracy (mean score, 95% CI)",
               title=f"{model}: accuracy vs speed", ylim=(-0.05, 1.05))
        ax.grid(alpha=0.3)
    handles = [plt.Line2D([], [], color=f"C{i % 10}", marker="o", ls="", label=s) for i, s in enumerate(specs)]
    handles += [plt.Line2D([], [], color="black", marker=MARKERS[i % len(MARKERS)], ls="", mfc="none",
                           label=format_length(int(n))) for i, n in enumerate(lengths)]
    axes[0][-1].legend(handles=handles, fontsize=8, loc="upper left", bbox_to_anchor=(1.02, 1.0), frameon=False,
                       title="method / length", title_fontsize=8)
    save(fig, out, stem)


def needle_heatmaps(grid, out, stem):
    keys = grid.index.droplevel("meta.depth").unique()
    columns = min(4, len(keys))
    rows = -(-len(keys) // columns)
    fig, axes = plt.subplots(rows, columns, figsize=(3.3 * columns + 1, 3.2 * rows), squeeze=False,
                             layout="constrained")
    image = None
    for ax, (model, spec) in zip(axes.flat, keys):
        panel = grid.xs((model, spec), level=["model", "method_spec"])
        image = ax.imshow(panel.values, vmin=0, vmax=1, cmap="RdYlGn", aspect="auto", origin="upper")
        ax.set_xticks(range(len(panel.columns)), [format_length(int(c)) for c in panel.columns], fontsize=9)
        ax.set_yticks(range(len(panel.index)), [f"{d:g}" for d in panel.index], fontsize=9)
        ax.set_xlabel("length", fontsize=9)
        ax.set_ylabel("needle depth (%)", fontsize=9)
        ax.set_title(f"{spec}\n{model}", fontsize=9)
    for ax in list(axes.flat)[len(keys):]:
        ax.axis("off")
    fig.colorbar(image, ax=axes.ravel().tolist(), shrink=0.8, label="score")
    save(fig, out, stem)


def density_lines(density, out, stem):
    fig, ax = plt.subplots(figsize=(6.5, 4))
    for i, ((model, spec, length), group) in enumerate(density.groupby(["model", "method_spec", "length"])):
        ax.plot(group["layer"], group["density"], marker=MARKERS[i % len(MARKERS)], ms=4, lw=1,
                label=f"{spec} @ {format_length(int(length))}")
    ax.set(xlabel="layer", ylabel="density (share of causal area)", title="executed density per layer",
           ylim=(0, 1.05))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.02, 1.0), frameon=False)
    save(fig, out, stem)


def all_plots(ttft, speedup, points, needle, density, baseline, out, cpu=False):
    """Draw what the tables hold; speed figures only from the timings handed in (GPU unless asked)."""
    drawn = []
    where = " (includes CPU timings: exact fp32 path, no performance evidence)" if cpu else ""
    if not ttft.empty:
        lines_by_method(ttft, "TTFT (ms, log scale)", "TTFT vs length", out, "ttft_vs_length", log_y=True)
        drawn.append(("ttft_vs_length", "TTFT vs length" + where))
    if not speedup.empty:
        lines_by_method(speedup, f"speedup vs {baseline}", "speedup", out, "speedup_vs_length",
                        reference=(1.0, f"{baseline} (= 1)"))
        drawn.append(("speedup_vs_length", f"Speedup vs {baseline}" + where))
    if not points.empty:
        pareto(points, baseline, out, "pareto")
        drawn.append(("pareto", "Accuracy vs speedup (hollow: executed density > 0.95)" + where))
    if not needle.empty:
        needle_heatmaps(needle, out, "needle_heatmaps")
        drawn.append(("needle_heatmaps", "Needle in a haystack (score by length x depth)"))
    if not density.empty:
        density_lines(density, out, "density_per_layer")
        drawn.append(("density_per_layer", "Density per layer"))
    return drawn
