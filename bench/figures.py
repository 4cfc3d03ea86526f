"""The study's figures, drawn from the analysis and the records (matplotlib, PNG)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from clear_native.analysis import KIND_ORDER, SWEEP_X, by_kind, max_cv, sweep_rows

FIGURES = ("energy_by_component", "j_per_flop", "shares", "cv_coverage", "sweeps")


def _tick(task_id: str) -> str:
    """A task id short enough for an axis: bf16 left out, config overrides abbreviated."""
    for long, short in (("/bf16", ""), ("hidden_size=", "h"), ("intermediate_size=", "ff"),
                        ("num_attention_heads=", "heads")):
        task_id = task_id.replace(long, short)
    return task_id


def _energy_by_component(plt, colors, ok, an):
    suite = [t for t in an["suite"] if t in ok]
    if not suite:
        return None
    fig, ax = plt.subplots(figsize=(9, 0.35 * len(suite) + 1.5))
    labelled: set = set()  # each kind in the legend once, whichever model has it first
    for i, tid in enumerate(suite):
        rep = ok[tid]["report"]
        total, left = rep["accounting"]["model_energy_j"], 0.0
        parts = [(k, v[0]) for k, v in sorted(by_kind(rep).items(), key=lambda kv: KIND_ORDER.index(kv[0]))]
        parts += [("glue", rep["accounting"]["glue_energy_j"]), ("gaps", rep["accounting"]["gaps_energy_j"])]
        for k, e in parts:
            ax.barh(i, e / total, left=left, color=colors[k], label=None if k in labelled else k)
            labelled.add(k)
            left += e / total
    ax.axvline(1.0, color="k", lw=0.8)
    ax.set_yticks(range(len(suite)), [t.split("/bf16")[0] for t in suite], fontsize=7)
    ax.set_xlabel("share of the whole model's energy per forward pass")
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    return fig


def _j_per_flop(plt, colors, ok, an):
    jpf = an["j_per_flop"]
    if not jpf:
        return None
    fig, ax = plt.subplots(figsize=(7, 4))
    kinds = [k for k in KIND_ORDER if k in jpf]
    for i, k in enumerate(kinds):
        vals = [v * 1e12 for _, v in jpf[k]["per_model"]]
        ax.scatter(np.full(len(vals), i) + np.linspace(-0.15, 0.15, len(vals)), vals, s=14, color=colors[k])
        ax.hlines(jpf[k]["j_per_flop"] * 1e12, i - 0.3, i + 0.3, color="k")
    ax.set_xticks(range(len(kinds)), kinds)
    ax.set_yscale("log")
    ax.set_ylabel("pJ per FLOP (dots: models; bar: weighted mean)")
    return fig


def _shares(plt, colors, ok, an):
    if not an["shares"]:
        return None
    fig, ax = plt.subplots(figsize=(5, 5))
    for tid, sh in an["shares"].items():
        for k, v in sh.items():
            if not math.isnan(v["flops"]):
                ax.scatter(v["flops"], v["energy"], s=14, color=colors.get(k, "gray"))
    for k in KIND_ORDER:
        ax.scatter([], [], color=colors[k], label=k)
    ax.plot([0, 1], [0, 1], "k--", lw=0.8)
    ax.set_xlabel("share of the components' FLOPs")
    ax.set_ylabel("share of the components' energy")
    ax.legend(fontsize=7)
    return fig


def _cv_coverage(plt, colors, ok, an):
    rows = sorted(ok)
    if not rows:
        return None
    fig, (a1, a2) = plt.subplots(2, 1, figsize=(10, 6), sharex=True)
    x = np.arange(len(rows))
    a1.bar(x, [max_cv(ok[t]["report"]) * 100 for t in rows])
    a1.axhline(1.0, color="r", lw=0.8)
    a1.set_ylabel("max CV (%)")
    acc = [ok[t]["report"]["accounting"] for t in rows]
    a2.plot(x, [a["coverage"] * 100 for a in acc], "o", label="coverage")
    a2.plot(x, [a["explained_coverage"] * 100 for a in acc], "s", label="explained")
    a2.axhspan(97, 103, color="g", alpha=0.15)
    a2.set_ylabel("% of the whole model")
    a2.legend(fontsize=7)
    a2.set_xticks(x, [_tick(t) for t in rows], rotation=80, fontsize=6)
    return fig


def _sweeps(plt, colors, ok, an):
    sweeps = [n for n in SWEEP_X if sweep_rows(ok, n)]
    if not sweeps:
        return None
    fig, axes = plt.subplots(1, len(sweeps), figsize=(3.2 * len(sweeps), 3.2), squeeze=False)
    for ax, name in zip(axes[0], sweeps):
        rows = sweep_rows(ok, name)
        xs = [str(r["x"]) for r in rows]
        ax.errorbar(xs, [r["energy_j"] * 1e3 for r in rows], yerr=[r["ci95_j"] * 1e3 for r in rows],
                    fmt="k-o", ms=3, capsize=2, label="whole")
        for k in sorted({k for r in rows for k in r["kinds"]}, key=KIND_ORDER.index):
            ax.errorbar(xs, [r["kinds"].get(k, 0) * 1e3 for r in rows],
                        yerr=[r["kind_ci"].get(k, 0) * 1e3 for r in rows], fmt="-o", ms=2, capsize=2,
                        color=colors[k], label=k)
        ax.set_yscale("log")
        ax.set_xlabel(SWEEP_X[name][1], fontsize=8)
        ax.set_ylabel("mJ per forward pass", fontsize=8)
    handles = {lab: h for ax in axes[0] for h, lab in zip(*ax.get_legend_handles_labels())}
    fig.legend(handles.values(), handles.keys(), fontsize=7, loc="upper center", ncol=len(handles),
               bbox_to_anchor=(0.5, 1.0))
    fig._cn_rect = (0, 0, 1, 0.88)
    return fig


_DRAW = {"energy_by_component": _energy_by_component, "j_per_flop": _j_per_flop, "shares": _shares,
         "cv_coverage": _cv_coverage, "sweeps": _sweeps}


def draw(folder: Path, ok: dict, an: dict) -> list[str]:
    """Draws every figure the records allow into ``folder``; returns the names drawn."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    colors = dict(zip(KIND_ORDER + ("glue", "gaps"), plt.get_cmap("tab10").colors))
    made = []
    for name in FIGURES:
        fig = _DRAW[name](plt, colors, ok, an)
        if fig is None:
            continue
        fig.tight_layout(rect=getattr(fig, "_cn_rect", (0, 0, 1, 1)))
        fig.savefig(Path(folder) / f"{name}.png", dpi=110)
        plt.close(fig)
        made.append(name)
    return made
