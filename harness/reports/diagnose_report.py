"""Report sections from diagnostics.jsonl: recall vs density (oracle top-k as the frontier), per-layer x head
heatmaps of density and recall, and the share of heads whose worst sampled row keeps less than alpha."""
import dataclasses
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

from attention.registry import available_methods  # noqa: E402
from harness.options import InputError, format_length  # noqa: E402
from harness.running.store import DIAGNOSTICS_FILE, RunStore  # noqa: E402

HEATMAP_PANELS = 12  # per figure; the longest length of each method is drawn first
FALLBACK_OPTIONS = ("dense_above", "dense_backend")  # when a layer runs dense, not which keys the mask keeps


def has_diagnostics(run_dirs) -> bool:
    return any(RunStore(d).has(DIAGNOSTICS_FILE) for d in run_dirs)


def short_label(method: str, config: dict, spec: str) -> str:
    """'sample:alpha=0.9' instead of every option: only the ones that differ from the method's defaults."""
    cls = available_methods().get(method)
    if cls is None or not isinstance(config, dict):
        return spec
    defaults = dataclasses.asdict(cls.Config())
    changed = [f"{k}={v}" for k, v in config.items() if defaults.get(k) != v]
    return f"{method}:{','.join(changed)}" if changed else method


def setting_label(method: str, config: dict, spec: str) -> str:
    """short_label without the dense fallback's options: the mask a setting keeps, so that a sweep's
    `sample:dense_above=1.0` and a diagnose run's `sample` name the same setting."""
    if not isinstance(config, dict):
        return spec
    return short_label(method, {k: v for k, v in config.items() if k not in FALLBACK_OPTIONS}, spec)


def load_heads(run_dirs) -> pd.DataFrame:
    """One row per (run, model, method, length, sample, layer, head) of every ok diagnostics line."""
    rows = []
    for folder in map(Path, run_dirs):
        for line in RunStore(folder).cells(DIAGNOSTICS_FILE):
            if line.get("status") != "ok":
                continue
            label = short_label(line["method"], line.get("method_config"), line["method_spec"])
            setting = setting_label(line["method"], line.get("method_config"), line["method_spec"])
            for layer in line.get("layers", []):
                for head, recall in enumerate(layer.get("recall_mean", [])):
                    rows.append({"run": folder.name, "model": line["model"], "method": line["method"],
                                 "label": label, "setting": setting, "length": line["length"],
                                 "sample_id": line["sample_id"],
                                 "alpha": line.get("alpha", 0.95), "layer": layer["layer"], "head": head,
                                 "density": layer["density"][head], "recall": recall,
                                 "recall_min": layer["recall_min"][head],
                                 "oracle_recall": layer["oracle_recall_mean"][head]})
    return pd.DataFrame(rows)


def load_frontier(run_dirs) -> pd.DataFrame:
    """Oracle top-k recall at fixed per-row shares, mean over every measured line, layer and head."""
    rows = []
    for folder in map(Path, run_dirs):
        for line in RunStore(folder).cells(DIAGNOSTICS_FILE):
            for layer in line.get("layers", []) if line.get("status") == "ok" else []:
                for per_head in layer.get("frontier_recall", []):
                    rows += [{"model": line["model"], "length": line["length"], "share": share, "recall": value}
                             for share, value in zip(layer["frontier_share"], per_head)]
    if not rows:
        return pd.DataFrame()
    return pd.DataFrame(rows).groupby(["model", "length", "share"])["recall"].mean().reset_index()


def summary_table(heads: pd.DataFrame) -> pd.DataFrame:
    """Per (model, method, length): mean density and recall over heads, worst row, the oracle at the same
    per-row budget, and the share of heads whose worst row is below alpha."""
    heads = heads.assign(below=heads["recall_min"] < heads["alpha"])
    return heads.groupby(["model", "label", "length"]).agg(
        density=("density", "mean"), recall=("recall", "mean"), worst_row=("recall_min", "min"),
        oracle_same_budget=("oracle_recall", "mean"), heads_below_alpha=("below", "mean"), alpha=("alpha", "first"))


def _save(fig, out: Path, stem: str) -> None:
    fig.savefig(out / f"{stem}.png", dpi=110, bbox_inches="tight")
    fig.savefig(out / f"{stem}.svg", bbox_inches="tight")
    plt.close(fig)


def recall_vs_density(heads, frontier, out, stem):
    """Panels per (model, length): heads as faint dots, method means as large markers, the oracle frontier."""
    keys = sorted(heads.groupby(["model", "length"]).groups)
    fig, axes = plt.subplots(1, len(keys), figsize=(5 * len(keys), 4.5), squeeze=False, layout="constrained")
    colors = {label: f"C{i % 10}" for i, label in enumerate(sorted(heads["label"].unique()))}
    for ax, (model, length) in zip(axes[0], keys):
        panel = heads[(heads["model"] == model) & (heads["length"] == length)]
        for label, group in panel.groupby("label"):
            ax.scatter(group["density"], group["recall"], s=6, alpha=0.25, color=colors[label])
            marker = "D" if group["method"].iloc[0] == "oracle-topk" else "o"
            ax.scatter(group["density"].mean(), group["recall"].mean(), s=70, marker=marker, color=colors[label],
                       edgecolor="black", label=label)
        oracle = panel[panel["method"] == "oracle-topk"].groupby("label")[["density", "recall"]].mean()
        if len(oracle) > 1:  # oracle-topk runs at several densities: join them as the measured frontier
            oracle = oracle.sort_values("density")
            ax.plot(oracle["density"], oracle["recall"], color="black", lw=1)
        curve = frontier[(frontier["model"] == model) & (frontier["length"] == length)] if len(frontier) else []
        if len(curve):
            ax.plot(curve["share"], curve["recall"], color="black", ls="--", lw=1,
                    label="oracle top-k frontier (same rows)")
        ax.set(xlim=(0, 1.02), ylim=(0, 1.02), xlabel="density (share of causal area)",
               ylabel="recall (kept share of dense mass)", title=f"{model} @ {format_length(int(length))}")
        ax.legend(fontsize=7, loc="lower right")
    _save(fig, out, stem)


def heatmaps(heads, metric, title, out, stem):
    """Layer x head heatmaps of `metric`, one panel per (method, length), longest lengths first; methods that
    were dense everywhere (dense, h2o's prefill) are left out: their panels would be flat."""
    sparse = heads.groupby(["model", "label", "length"])["density"].transform("min") < 1.0
    heads = heads[sparse] if sparse.any() else heads
    panels = heads.groupby(["model", "label", "length"]).size().reset_index()
    panels["length"] = panels["length"].astype(int)
    panels = (panels.sort_values(["length", "label"], ascending=[False, True]).head(HEATMAP_PANELS)
              .sort_values(["model", "label", "length"]))  # each method's lengths side by side, as numbers
    columns = min(4, len(panels))
    rows = -(-len(panels) // columns)
    fig, axes = plt.subplots(rows, columns, figsize=(3.2 * columns + 1, 3.4 * rows), squeeze=False,
                             layout="constrained")
    image = None
    for ax, (_, key) in zip(axes.flat, panels.iterrows()):
        part = heads[(heads["model"] == key["model"]) & (heads["label"] == key["label"])
                     & (heads["length"] == key["length"])]
        grid = part.pivot_table(index="layer", columns="head", values=metric, aggfunc="mean")
        image = ax.imshow(grid.values, vmin=0, vmax=1, cmap="viridis" if metric == "density" else "RdYlGn",
                          aspect="auto", origin="upper", interpolation="nearest")
        ax.set_title(f"{key['label']} @ {format_length(int(key['length']))}\n{key['model']}", fontsize=9)
        ax.set_xlabel("head", fontsize=9)
        ax.set_ylabel("layer", fontsize=9)
        ax.tick_params(labelsize=8)
    for ax in list(axes.flat)[len(panels):]:
        ax.axis("off")
    if image is not None:
        fig.colorbar(image, ax=axes.ravel().tolist(), shrink=0.8, label=title)
    _save(fig, out, stem)


def below_alpha(table, out, stem):
    """Share of heads whose worst sampled row keeps less than alpha, per method, against length."""
    fig, ax = plt.subplots(figsize=(6, 4), layout="constrained")
    for (model, label), group in table.reset_index().groupby(["model", "label"]):
        ax.plot(group["length"], group["heads_below_alpha"], marker="o",
                label=f"{label} (alpha {group['alpha'].iloc[0]:g})" + (f", {model}" if table.index.get_level_values(
                    "model").nunique() > 1 else ""))
    ax.set_xscale("log", base=2)
    lengths = sorted(table.index.get_level_values("length").unique())
    ax.set_xticks(lengths, [format_length(int(n)) for n in lengths])
    ax.minorticks_off()
    ax.set(ylim=(-0.02, 1.02), xlabel="prompt length (tokens)", ylabel="share of heads",
           title="heads whose worst sampled row has recall < alpha")
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.02, 1.0), frameon=False)
    _save(fig, out, stem)


def diagnostics_section(run_dirs, out) -> list[str]:
    """Markdown sections (with their tables and figures written into `out`); [] when no run has diagnostics."""
    heads = load_heads(run_dirs) if has_diagnostics(run_dirs) else pd.DataFrame()
    if heads.empty:
        return []
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    table = summary_table(heads)
    table.to_csv(out / "diagnostics_summary.csv")
    sections = ["## Mask diagnostics\n\nPer layer and head, on sampled query rows: recall is the share of the "
                "dense attention mass the method's mask keeps (exact, fp32); density the share of the causal "
                "area it computes. `oracle_same_budget` is what per-row top-k keeps with the same number of keys "
                "in each sampled row; `heads_below_alpha` is the share of heads (0 to 1) whose worst row is "
                "below alpha (the method's own, else 0.95).\n\n" + table.round(3).to_markdown()
                + "\n\n([CSV](diagnostics_summary.csv))\n"]
    recall_vs_density(heads, load_frontier(run_dirs), out, "diag_recall_vs_density")
    sections.append("## Recall vs density\n\nSmall dots: heads; large markers: method means (diamonds: "
                    "oracle-topk); dashed: per-row top-k at fixed shares on the same rows.\n\n"
                    "![Recall vs density](diag_recall_vs_density.png)\n")
    for metric, title in (("density", "density"), ("recall", "mean recall"), ("recall_min", "worst-row recall")):
        stem = f"diag_heatmap_{metric}"
        heatmaps(heads, metric, title, out, stem)
        sections.append(f"## Per-layer x head {title}\n\n![{title}]({stem}.png)\n")
    below_alpha(table, out, "diag_heads_below_alpha")
    sections.append("## Heads below alpha\n\n![Heads below alpha](diag_heads_below_alpha.png)\n")
    return sections


def build(run_dirs, out) -> Path:
    """report.md for run folders that hold only diagnostics (a `diagnose` run)."""
    out = Path(out)
    sections = diagnostics_section(run_dirs, out)
    if not sections:
        raise InputError(f"no finished cells or diagnostics in {', '.join(str(d) for d in run_dirs)}")
    names = ", ".join(Path(d).name for d in run_dirs)
    report = out / "report.md"
    report.write_text("\n".join([f"# Diagnostics report\n\nRuns: {names}\n", *sections]))
    return report
