"""The study's figures, drawn from the analysis and the records (matplotlib, PNG), each with the data
behind it as CSV beside it."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import numpy as np

from clear_native.analysis import KIND_ORDER, SWEEP_X, by_kind, kind_ci, max_cv, sweep_rows

FIGURES = ("energy_by_component", "j_per_flop", "shares", "cv_coverage", "sweeps", "sweeps_per_flop")


def _tick(task_id: str) -> str:
    """A task id short enough for an axis: bf16 left out, config overrides abbreviated."""
    for long, short in (("/bf16", ""), ("hidden_size=", "h"), ("intermediate_size=", "ff"),
                        ("num_attention_heads=", "heads")):
        task_id = task_id.replace(long, short)
    return task_id


def _csv(folder: Path, name: str, rows: list) -> None:
    """The data behind a figure, beside it as CSV."""
    if rows:
        with open(Path(folder) / f"{name}.csv", "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=list(rows[0]))
            w.writeheader()
            w.writerows(rows)


def _energy_by_component(plt, colors, ok, an, folder):
    """Joules per forward pass by kind (linear axes, prefill and decode apart), measured parts solid,
    estimated glue and gaps hatched, the whole model measured as a tick; the legend in stacking order."""
    suite = [t for t in an["suite"] if t in ok]
    if not suite:
        return None
    modes = [m for m in ("prefill", "decode") if any(ok[t]["task"]["mode"] == m for t in suite)]
    counts = [sum(ok[t]["task"]["mode"] == m for t in suite) for m in modes]
    fig, axes = plt.subplots(len(modes), 1, figsize=(9, 0.36 * len(suite) + 1.2 * len(modes)), squeeze=False,
                             gridspec_kw={"height_ratios": counts})
    order = list(KIND_ORDER) + ["glue", "gaps"]
    rows, drawn = [], {}
    for ax, mode in zip(axes[:, 0], modes):
        tasks = [t for t in suite if ok[t]["task"]["mode"] == mode]
        for i, tid in enumerate(tasks):
            rep = ok[tid]["report"]
            parts = {k: v[0] for k, v in by_kind(rep).items()}
            parts.update(glue=rep["accounting"]["glue_energy_j"], gaps=rep["accounting"]["gaps_energy_j"])
            left = 0.0
            for k in (k for k in order if k in parts):
                hatched = k in ("glue", "gaps")
                drawn[k] = ax.barh(i, parts[k] * 1e3, left=left, color=colors[k], hatch="//" if hatched else None,
                                   edgecolor="white" if hatched else None)
                left += parts[k] * 1e3
            ax.plot(rep["accounting"]["model_energy_j"] * 1e3, i, "k|", ms=12, mew=2)
            rows.append({"task": tid, **{f"{k}_mj": parts.get(k, 0.0) * 1e3 for k in order},
                         "whole_model_mj": rep["accounting"]["model_energy_j"] * 1e3})
        ax.set_yticks(range(len(tasks)), [t.split("/bf16")[0] for t in tasks], fontsize=8)
        ax.set_xlabel(f"{mode}: mJ per forward pass" + (" (per token)" if mode == "decode" else ""), fontsize=9)
    axes[0, 0].set_title("|: whole model, measured; hatched: glue and gaps, estimated", fontsize=9)
    axes[0, 0].legend([drawn[k] for k in order if k in drawn], [k for k in order if k in drawn], fontsize=8,
                      loc="upper left", bbox_to_anchor=(1.01, 1.0))
    _csv(folder, "energy_by_component", rows)
    return fig


def _j_per_flop(plt, colors, ok, an, folder):
    """Energy per FLOP of attention and feed-forward blocks, per model (labelled, with CI); the other kinds in
    mJ per forward pass beside them."""
    prefill = {t: r for t, r in ok.items() if t in an["suite"] and r["task"]["mode"] == "prefill"}
    if not prefill:
        return None
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(12, 4.5), gridspec_kw={"width_ratios": [3, 2]})
    rows = []
    for tid, r in sorted(prefill.items()):
        rep, model = r["report"], r["task"]["model"]
        for kind, v in by_kind(rep).items():
            ci = kind_ci(rep, kind)
            rows.append({"task": tid, "model": model, "kind": kind, "energy_mj": v[0] * 1e3, "ci95_mj": ci * 1e3,
                         "flops": v[2], "pj_per_flop": v[0] / v[2] * 1e12 if v[2] else math.nan})
    compute = [k for k in ("self_attention", "cross_attention", "mlp") if any(x["kind"] == k for x in rows)]
    # Heads mix LM heads (large GEMMs) with poolers (a few MFLOP at launch-bound efficiency): in mJ, beside
    # the kinds that do few or no FLOPs (embedding lookups, rotary, norms).
    light = [k for k in ("embeddings", "norm", "head") if any(x["kind"] == k for x in rows)]
    for i, k in enumerate(compute):
        pts = [x for x in rows if x["kind"] == k and x["flops"] > 1e6]
        for j, x in enumerate(pts):
            xpos = i + 0.6 * (j / max(1, len(pts) - 1) - 0.5)
            a1.errorbar(xpos, x["pj_per_flop"], yerr=x["ci95_mj"] * 1e-3 / x["flops"] * 1e12, fmt="o", ms=4,
                        color=colors[k], capsize=2)
            a1.annotate(x["model"], (xpos, x["pj_per_flop"]), fontsize=6, rotation=60, xytext=(2, 3),
                        textcoords="offset points")
    a1.set_xticks(range(len(compute)), compute)
    a1.set_yscale("log")
    a1.set_ylabel("pJ per FLOP (prefill, per model, ± 95 % CI)")
    for i, k in enumerate(light):
        pts = [x for x in rows if x["kind"] == k]
        a2.scatter([i] * len(pts), [x["energy_mj"] for x in pts], s=14, color=colors[k])
    a2.set_xticks(range(len(light)), light)
    a2.set_yscale("log")
    a2.set_ylabel("mJ per forward pass")
    _csv(folder, "j_per_flop", rows)
    return fig


def _shares(plt, colors, ok, an, folder):
    if not an["shares"]:
        return None
    fig, ax = plt.subplots(figsize=(5, 5))
    rows = []
    for tid, sh in an["shares"].items():
        for k, v in sh.items():
            rows.append({"task": tid, "kind": k, "energy_share": v["energy"], "flop_share": v["flops"]})
            if not math.isnan(v["flops"]):
                ax.scatter(v["flops"], v["energy"], s=14, color=colors.get(k, "gray"))
    for k in KIND_ORDER:
        ax.scatter([], [], color=colors[k], label=k)
    ax.plot([0, 1], [0, 1], "k--", lw=0.8)
    ax.set_xlabel("share of the components' FLOPs")
    ax.set_ylabel("share of the components' energy")
    ax.legend(fontsize=8)
    _csv(folder, "shares", rows)
    return fig


def _cv_coverage(plt, colors, ok, an, folder):
    rows = sorted(ok)
    if not rows:
        return None
    fig, (a1, a2) = plt.subplots(2, 1, figsize=(11, 7), sharex=True)
    x = np.arange(len(rows))
    cvs = [max_cv(ok[t]["report"]) * 100 for t in rows]
    a1.bar(x, cvs)
    a1.axhline(1.0, color="r", lw=0.8, label="target 1 %")
    a1.set_ylabel("max CV across trials (%)")
    a1.legend(fontsize=8)
    acc = [ok[t]["report"]["accounting"] for t in rows]
    a2.plot(x, [a["coverage"] * 100 for a in acc], "o", label="coverage (parts)")
    a2.plot(x, [a["explained_coverage"] * 100 for a in acc], "s", label="explained (parts + glue + gaps)")
    a2.axhspan(97, 103, color="g", alpha=0.15, label="100 ± 3 %")
    a2.set_ylabel("% of the whole model")
    a2.legend(fontsize=8)
    a2.set_xticks(x, [_tick(t) for t in rows], rotation=80, fontsize=8)
    _csv(folder, "cv_coverage", [{"task": t, "max_cv": c / 100, "coverage": a["coverage"],
                                  "explained_coverage": a["explained_coverage"]} for t, c, a in zip(rows, cvs, acc)])
    return fig


def _sweep_grid(plt, ok):
    """(figure, [(axis, sweep name, its rows, x positions)]) for every sweep the records hold, or None."""
    sweeps = [n for n in SWEEP_X if sweep_rows(ok, n)]
    if not sweeps:
        return None
    ncols = min(3, len(sweeps))
    nrows = math.ceil(len(sweeps) / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(4.2 * ncols, 3.6 * nrows + 0.6), squeeze=False)
    for ax in axes.flat[len(sweeps):]:
        ax.set_visible(False)
    panels = []
    for ax, name in zip(axes.flat, sweeps):
        rows = sweep_rows(ok, name)
        numeric = all(isinstance(r["x"], (int, float)) for r in rows)
        xs = [r["x"] for r in rows] if numeric else list(range(len(rows)))
        if numeric:
            ax.set_xscale("log")
            ax.minorticks_off()
            ax.set_xticks(xs, [str(x) for x in xs])
        else:
            ax.set_xticks(xs, [str(r["x"]) for r in rows])
        ax.set_yscale("log")
        ax.set_xlabel(SWEEP_X[name][1], fontsize=9)
        panels.append((ax, name, rows, xs))
    fig._cn_rect = (0, 0, 1, 1 - 0.5 / (3.6 * nrows + 0.6))
    return fig, panels


def _sweep_figure(plt, ok, folder, name: str, panel):
    """A grid of every sweep's panel: ``panel(ax, sweep, rows, xs)`` draws one and returns its CSV rows, written
    as ``name``.csv; one legend over the grid."""
    grid = _sweep_grid(plt, ok)
    if grid is None:
        return None
    fig, panels = grid
    csv_rows = []
    for ax, sweep, rows, xs in panels:
        csv_rows += panel(ax, sweep, rows, xs)
    handles = {lab: h for ax, *_ in panels for h, lab in zip(*ax.get_legend_handles_labels())}
    fig.legend(handles.values(), handles.keys(), fontsize=8, loc="upper center", ncol=len(handles),
               bbox_to_anchor=(0.5, 1.0))
    _csv(folder, name, csv_rows)
    return fig


def _sweeps(plt, colors, ok, an, folder):
    """Energy per token against each swept quantity, on numeric log axes (dtype: categorical), ± 95 % CI."""
    def panel(ax, name, rows, xs):
        per_tok = [r["energy_j"] / r["tokens"] * 1e3 for r in rows]
        ax.errorbar(xs, per_tok, yerr=[r["ci95_j"] / r["tokens"] * 1e3 for r in rows], fmt="k-o", ms=3, capsize=2,
                    label="whole model")
        for k in sorted({k for r in rows for k in r["kinds"]}, key=KIND_ORDER.index):
            ax.errorbar(xs, [r["kinds"].get(k, 0) / r["tokens"] * 1e3 for r in rows],
                        yerr=[r["kind_ci"].get(k, 0) / r["tokens"] * 1e3 for r in rows], fmt="-o", ms=2, capsize=2,
                        color=colors[k], label=k)
        ax.set_ylabel("mJ per token", fontsize=9)
        return [{"sweep": name, "x": r["x"], "task": r["task"], "tokens": r["tokens"], "energy_mj": r["energy_j"] * 1e3,
                 "ci95_mj": r["ci95_j"] * 1e3, "mj_per_token": p} for r, p in zip(rows, per_tok)]

    return _sweep_figure(plt, ok, folder, "sweeps", panel)


PER_FLOP_KINDS = ("self_attention", "cross_attention", "mlp")


def _sweeps_per_flop(plt, colors, ok, an, folder):
    """Energy per FLOP of attention and the feed-forward against each swept quantity (± 95 % CI), with the attention
    premium (self-attention's pJ/FLOP over the feed-forward's) printed above each point. Kinds whose FLOPs are a
    trifle of their work (embeddings and rotary tables, norms, poolers at batch 1) are left out: at 1e2-1e7
    pJ/FLOP they would squeeze the comparison the figure is for; their energy per token is in ``sweeps``."""
    def panel(ax, name, rows, xs):
        out = []
        for k in [k for k in PER_FLOP_KINDS if any(r["kind_flops"].get(k, 0) > 0 for r in rows)]:
            pts = [(x, r["kinds"][k] / r["kind_flops"][k] * 1e12, r["kind_ci"].get(k, 0) / r["kind_flops"][k] * 1e12)
                   for x, r in zip(xs, rows) if r["kind_flops"].get(k, 0) > 0]
            ax.errorbar([p[0] for p in pts], [p[1] for p in pts], yerr=[p[2] for p in pts], fmt="-o", ms=2, capsize=2,
                        color=colors[k], label=k)
            out += [{"sweep": name, "x": r["x"], "task": r["task"], "kind": k, "energy_mj": r["kinds"][k] * 1e3,
                     "flops": r["kind_flops"][k], "pj_per_flop": r["kinds"][k] / r["kind_flops"][k] * 1e12,
                     "ci95_pj_per_flop": r["kind_ci"].get(k, 0) / r["kind_flops"][k] * 1e12}
                    for r in rows if r["kind_flops"].get(k, 0) > 0]
        premium = an["premium_by_sweep"].get(name, {}).get("per_task", {})
        for x, r in zip(xs, rows):
            if r["task"] in premium:
                y = r["kinds"]["self_attention"] / r["kind_flops"]["self_attention"] * 1e12
                ax.annotate(f"{premium[r['task']]:.2f}x", (x, y), textcoords="offset points", xytext=(0, 6),
                            ha="center", fontsize=7)
        ax.set_ylabel("pJ per FLOP", fontsize=9)
        ax.margins(y=0.15)
        return out

    fig = _sweep_figure(plt, ok, folder, "sweeps_per_flop", panel)
    if fig is not None:
        fig.suptitle("labels: attention's pJ/FLOP over the feed-forward's", fontsize=8, y=0.0, va="bottom")
    return fig


_DRAW = {"energy_by_component": _energy_by_component, "j_per_flop": _j_per_flop, "shares": _shares,
         "cv_coverage": _cv_coverage, "sweeps": _sweeps, "sweeps_per_flop": _sweeps_per_flop}


def draw(folder: Path, ok: dict, an: dict) -> list[str]:
    """Draws every figure the records allow into ``folder``; returns the names drawn."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    colors = dict(zip(KIND_ORDER + ("glue", "gaps"), plt.get_cmap("tab10").colors))
    made = []
    for name in FIGURES:
        fig = _DRAW[name](plt, colors, ok, an, folder)
        if fig is None:
            continue
        fig.tight_layout(rect=getattr(fig, "_cn_rect", (0, 0, 1, 1)))
        fig.savefig(Path(folder) / f"{name}.png", dpi=110)
        plt.close(fig)
        made.append(name)
    return made
