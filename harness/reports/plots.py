"""Matplotlib figures for reports, drawn from tables harness.reports.report computed (this module computes nothing and
imports nothing from the harness but the length format). Each figure is saved as PNG and SVG; all_plots returns
(stem, title) of what was drawn."""
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import FixedLocator, FuncFormatter, LogLocator, NullLocator  # noqa: E402

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
    specs = sorted(table.index.get_level_values("method_spec").unique())  # one colour and marker per method
    height = max(3.8, 0.2 * len(specs))  # tall enough for the legend beside the panels
    fig, axes = plt.subplots(1, len(panels), figsize=(5.5 * len(panels), height), squeeze=False)
    for ax, panel in zip(axes[0], panels):
        part = table.xs(panel if isinstance(panel, tuple) else (panel,), level=panel_levels)
        for spec, row in part.iterrows():
            row, i = row.dropna(), specs.index(spec)
            ax.plot(row.index.astype(int), row.values, marker=MARKERS[i % len(MARKERS)], ms=6, lw=1.2,
                    alpha=0.85, color=f"C{i % 10}", zorder=3 + i)
        length_axis(ax, table.columns)
        if log_y:
            ax.set_yscale("log")
        if reference is not None:
            ax.axhline(reference[0], color="grey", lw=0.8, ls="--")
        # run and model each on a line of their own: a long run name never runs into the next panel's title
        name = "\n".join(map(str, panel)) if isinstance(panel, tuple) else str(panel)
        ax.set_title(name, fontsize=9)
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
    handles = [plt.Line2D([], [], color=f"C{i % 10}", marker=MARKERS[i % len(MARKERS)], label=s)
               for i, s in enumerate(specs)]
    if reference is not None:
        handles.append(plt.Line2D([], [], color="grey", lw=0.8, ls="--", label=reference[1]))
    axes[0][-1].legend(handles=handles, fontsize=8, loc="upper left", bbox_to_anchor=(1.02, 1.0), frameon=False)
    fig.suptitle(title, fontsize=11, y=1.0)
    fig.subplots_adjust(top=0.82, wspace=0.3)  # room for the two-line panel titles under the figure title
    save(fig, out, stem)


def colour(i: int, count: int):
    """The i-th of `count` distinct colours: matplotlib's ten, tab20's twenty, or spread over turbo beyond."""
    if count <= 10:
        return f"C{i % 10}"
    return plt.get_cmap("tab20")(i % 20) if count <= 20 else plt.get_cmap("turbo")(i / (count - 1))


def pareto(points, baseline, out, stem):
    """Accuracy (with its 95% interval) against speedup, one panel per (model, length), one colour per method;
    with several runs one marker per run (a run's points never look like another's), else one per method."""
    panels = sorted(points.groupby(["model", "length"]).groups)
    specs = sorted(points["method_spec"].unique())
    runs = sorted(points["run"].unique()) if "run" in points else []
    columns = min(3, len(panels))
    rows = -(-len(panels) // columns)
    fig, axes = plt.subplots(rows, columns, figsize=(4.3 * columns, 3.6 * rows), squeeze=False)
    for ax, (model, length) in zip(axes.flat, panels):
        part = points[(points["model"] == model) & (points["length"] == length)]
        for _, p in part.iterrows():
            i = specs.index(p["method_spec"])
            marker = MARKERS[(runs.index(p["run"]) if runs else i) % len(MARKERS)]
            ax.errorbar(p["speedup"], p["mean"], yerr=[[max(0.0, p["mean"] - p["low"])],
                                                       [max(0.0, p["high"] - p["mean"])]],
                        fmt=marker, color=colour(i, len(specs)), ms=7, capsize=3, alpha=0.85,
                        mfc="none" if p["dense_like"] else colour(i, len(specs)))
        ax.axvline(1.0, color="grey", lw=0.8, ls="--")
        ax.set_title(f"{model} @ {format_length(int(length))}", fontsize=10)
        ax.set(xlabel=f"TTFT speedup vs {baseline}", ylabel="accuracy (95% CI)", ylim=(-0.05, 1.05))
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(panels):]:
        ax.axis("off")
    if runs:
        handles = [plt.Line2D([], [], color=colour(i, len(specs)), lw=6, label=s) for i, s in enumerate(specs)]
        handles += [plt.Line2D([], [], color="black", marker=MARKERS[j % len(MARKERS)], ls="", label=f"run {r}")
                    for j, r in enumerate(runs)]
    else:
        handles = [plt.Line2D([], [], color=colour(i, len(specs)), marker=MARKERS[i % len(MARKERS)], ls="",
                              label=s) for i, s in enumerate(specs)]
    handles.append(plt.Line2D([], [], color="grey", ls="--", label=f"{baseline} speed (= 1)"))
    axes[0][-1].legend(handles=handles, fontsize=8, loc="upper left", bbox_to_anchor=(1.02, 1.0), frameon=False)
    fig.tight_layout()
    save(fig, out, stem)


def frontier(rows, baseline, title, out, stem):
    """Accuracy (with its 95% interval) against TTFT speedup over the baseline (log x), for one (model, length):
    one panel per (task, device), one numbered point per method setting (the legend names the numbers; the
    baseline at x = 1; hollow: executed density > 0.95), and the rows marked on_frontier joined as a step line:
    the best accuracy reached at least that fast."""
    panels = sorted(rows.groupby(["task", "device"]).groups)
    specs = sorted(rows["method_spec"].unique(), key=lambda s: (s != baseline, s))  # one number, one colour each
    runs = sorted(rows["run"].unique()) if "run" in rows and rows["run"].nunique() > 1 else []
    fig, axes = plt.subplots(1, len(panels), figsize=(6.0 * len(panels) + 3.2, 4.8), squeeze=False,
                             layout="constrained")  # constrained: the legend outside keeps the panels' width
    for ax, (task, device) in zip(axes[0], panels):
        part = rows[(rows["task"] == task) & (rows["device"] == device)]
        for _, p in part.iterrows():
            i = specs.index(p["method_spec"])
            marker = MARKERS[(runs.index(p["run"]) if runs else 0) % len(MARKERS)]
            ax.errorbar(p["speedup"], p["mean"], yerr=[[max(0.0, p["mean"] - p["low"])],
                                                       [max(0.0, p["high"] - p["mean"])]],
                        fmt=marker, color=colour(i, len(specs)), ms=7, capsize=3, alpha=0.85, zorder=3,
                        mfc="none" if p["dense_like"] and p["method_spec"] != baseline else colour(i, len(specs)))
            ax.annotate(str(i + 1), (p["speedup"], p["mean"]), xytext=(4, 3), textcoords="offset points",
                        fontsize=8, color=colour(i, len(specs)), zorder=4)
        front = part[part["on_frontier"]].sort_values("speedup")
        ax.step(front["speedup"], front["mean"], where="pre", color="black", lw=1.2, alpha=0.7, zorder=2)
        ax.axvline(1.0, color="grey", lw=0.8, ls="--")
        ax.set_xscale("log")
        low, high = min(part["speedup"].min(), 1.0), max(part["speedup"].max(), 1.0)
        ax.set_xlim(low / 1.3, high * 1.3)
        ax.xaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
        ax.xaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}x"))
        ax.xaxis.set_minor_locator(NullLocator())
        ax.set(xlabel=f"TTFT speedup vs {baseline} (log scale)", ylabel="accuracy (mean, 95% interval)",
               ylim=(-0.05, 1.05))
        ax.set_title(f"{title}: {task}, {device}", fontsize=10)
        ax.grid(alpha=0.3)
    handles = [plt.Line2D([], [], color=colour(i, len(specs)), marker="o", ls="", label=f"{i + 1}  {s}")
               for i, s in enumerate(specs)]
    handles += [plt.Line2D([], [], color="black", marker=MARKERS[j % len(MARKERS)], ls="", label=f"run {r}")
                for j, r in enumerate(runs)]
    handles += [plt.Line2D([], [], color="black", lw=1.2, alpha=0.7, label="Pareto frontier"),
                plt.Line2D([], [], color="grey", lw=0.8, ls="--", label=f"{baseline} speed (= 1)")]
    fig.legend(handles=handles, fontsize=8, loc="outside right upper", frameon=False)
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


def density_lines(density, out, stem, panels: int = 3):
    """Executed density per layer: one panel per (model, length), the longest `panels` lengths; a line per method."""
    longest = sorted(density.groupby(["model", "length"]).groups, key=lambda k: (k[0], -int(k[1])))[:panels]
    keys = sorted(longest, key=lambda k: (k[0], int(k[1])))  # drawn shortest to longest, as numbers
    drawn = density[density.set_index(["model", "length"]).index.isin(keys)]
    specs = sorted(drawn["method_spec"].unique())  # the legend lists only what is drawn
    fig, axes = plt.subplots(1, len(keys), figsize=(4.6 * len(keys), 3.6), squeeze=False, sharey=True)
    for ax, (model, length) in zip(axes[0], keys):
        part = density[(density["model"] == model) & (density["length"] == length)]
        for spec, group in part.groupby("method_spec"):
            i = specs.index(spec)
            ax.plot(group["layer"], group["density"], marker=MARKERS[i % len(MARKERS)], ms=4, lw=1,
                    color=f"C{i % 10}", label=spec)
        ax.set_title(f"{model} @ {format_length(int(length))}", fontsize=10)
        ax.set(xlabel="layer", ylim=(0, 1.05))
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("density (share of causal area)")
    handles = [plt.Line2D([], [], color=f"C{i % 10}", marker=MARKERS[i % len(MARKERS)], label=s)
               for i, s in enumerate(specs)]
    axes[0][-1].legend(handles=handles, fontsize=8, loc="upper left", bbox_to_anchor=(1.02, 1.0), frameon=False)
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
        drawn.append(("pareto", "Accuracy vs speedup, at lengths where dense scores clearly above zero (hollow "
                      "marker: executed density > 0.95)" + where))
    if not needle.empty:
        needle_heatmaps(needle, out, "needle_heatmaps")
        drawn.append(("needle_heatmaps", "Needle in a haystack (score by length x depth)"))
    if not density.empty:
        density_lines(density, out, "density_per_layer")
        drawn.append(("density_per_layer", "Density per layer"))
    return drawn
