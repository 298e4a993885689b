"""Matplotlib figures for reports; each saved as PNG and SVG. Returns (stem, title) of what was drawn."""
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from harness import report  # noqa: E402


def save(fig, out, stem):
    fig.tight_layout()
    fig.savefig(out / f"{stem}.png", dpi=130)
    fig.savefig(out / f"{stem}.svg")
    plt.close(fig)


def lines_by_method(table, ylabel, title, out, stem, log_y=False, hline=None):
    models = table.index.get_level_values("model").unique()
    fig, axes = plt.subplots(1, len(models), figsize=(6 * len(models), 4), squeeze=False)
    for ax, model in zip(axes[0], models):
        for spec, row in table.xs(model, level="model").iterrows():
            row = row.dropna()
            ax.plot(row.index.astype(int), row.values, marker="o", label=spec)
        ax.set_xscale("log", base=2)
        if log_y:
            ax.set_yscale("log")
        if hline is not None:
            ax.axhline(hline, color="grey", lw=0.8, ls="--")
        ax.set(title=f"{model}: {title}", xlabel="prompt length (tokens)", ylabel=ylabel)
        ax.legend(fontsize=7)
    save(fig, out, stem)


def pareto(frame, baseline, out, stem):
    speed = report.speedup_table(frame, baseline).stack().rename("speedup")
    acc = report.relative_accuracy_table(frame, baseline).groupby(level=["model", "method_spec"]).mean()
    acc = acc.stack().rename("relative_accuracy")
    joined = speed.to_frame().join(acc, how="inner").reset_index()
    fig, ax = plt.subplots(figsize=(6, 4.5))
    for spec, group in joined.groupby("method_spec"):
        ax.scatter(group["speedup"], group["relative_accuracy"], label=spec)
        for _, point in group.iterrows():
            ax.annotate(str(int(point["length"])), (point["speedup"], point["relative_accuracy"]), fontsize=6)
    ax.axhline(0.99, color="grey", lw=0.8, ls="--")
    ax.axvline(1.0, color="grey", lw=0.8, ls="--")
    ax.set(xlabel=f"TTFT speedup vs {baseline}", ylabel="accuracy relative to dense",
           title="accuracy vs speed (labels: length)")
    ax.legend(fontsize=7)
    save(fig, out, stem)


def needle_heatmaps(grid, out, stem):
    keys = grid.index.droplevel("meta.depth").unique()
    fig, axes = plt.subplots(1, len(keys), figsize=(3.2 * len(keys) + 1, 3.8), squeeze=False, layout="constrained")
    for ax, (model, spec) in zip(axes[0], keys):
        panel = grid.xs((model, spec), level=["model", "method_spec"])
        image = ax.imshow(panel.values, vmin=0, vmax=1, cmap="RdYlGn", aspect="auto", origin="upper")
        ax.set_xticks(range(len(panel.columns)), [str(c) for c in panel.columns], rotation=90, fontsize=6)
        ax.set_yticks(range(len(panel.index)), [f"{d:g}" for d in panel.index], fontsize=6)
        ax.set(title=f"{model}\n{spec}", xlabel="length", ylabel="depth %")
        ax.title.set_fontsize(7)
    fig.colorbar(image, ax=axes[0].tolist(), shrink=0.8)
    fig.savefig(out / f"{stem}.png", dpi=130)
    fig.savefig(out / f"{stem}.svg")
    plt.close(fig)


def density_lines(density, out, stem):
    fig, ax = plt.subplots(figsize=(6, 4))
    for (model, spec, length), group in density.groupby(["model", "method_spec", "length"]):
        ax.plot(group["layer"], group["density"], marker=".", label=f"{spec} @ {length}")
    ax.set(xlabel="layer", ylabel="density (share of causal area)", title="density per layer")
    ax.legend(fontsize=6)
    save(fig, out, stem)


def all_plots(frame, baseline, out):
    drawn = []
    lines_by_method(report.ttft_table(frame), "TTFT (ms)", "TTFT vs length", out, "ttft_vs_length", log_y=True)
    drawn.append(("ttft_vs_length", "TTFT vs length"))
    lines_by_method(report.speedup_table(frame, baseline), f"speedup vs {baseline}", "speedup", out,
                    "speedup_vs_length", hline=1.0)
    drawn.append(("speedup_vs_length", f"Speedup vs {baseline}"))
    pareto(frame, baseline, out, "pareto")
    drawn.append(("pareto", "Accuracy vs speedup"))
    grid = report.needle_grid(frame)
    if not grid.empty:
        needle_heatmaps(grid, out, "needle_heatmaps")
        drawn.append(("needle_heatmaps", "Needle in a haystack (score by length x depth)"))
    density = report.density_per_layer(frame)
    if not density.empty:
        density_lines(density, out, "density_per_layer")
        drawn.append(("density_per_layer", "Density per layer"))
    return drawn
