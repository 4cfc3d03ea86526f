"""The study's report, from its records alone: REPORT.md, report.json and PNG figures.

Everything here is computed from <card>/measurements.jsonl and reference.jsonl,
so a run joined from several --resume invocations gives the same report as one
run, and the report can be rebuilt anywhere (python bench/run.py --report-only DIR).
"""

from __future__ import annotations

import json
import math
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np

from run import MEASUREMENTS, REFERENCE, SUPERSEDED, fmt_s, load_records, record_l2

KIND_ORDER = ("embeddings", "self_attention", "cross_attention", "mlp", "norm", "head", "custom")
SWEEP_X = {"batch": ("batch", "batch size"), "seq": ("seq", "sequence length"), "kv": ("cache_len", "KV-cache length"),
           "heads": ("num_attention_heads", "attention heads (hidden 768)"),
           "hidden": ("hidden_size", "hidden size (head dim 64)"), "dtype": ("dtype", "dtype")}


def latest_ok(records: list[dict]) -> dict:
    """task id -> its last successful record; failures kept apart (a retried task's success wins)."""
    ok, failed = {}, {}
    for r in records:
        tid = r["task"]["id"]
        if r.get("status") == "ok":
            ok[tid] = r
            failed.pop(tid, None)
        elif tid not in ok:
            failed[tid] = r
    return {"ok": ok, "failed": failed}


def by_kind(report: dict) -> dict:
    """kind -> (energy, dynamic energy, FLOPs, bytes, GPU time) per forward pass, summed over groups."""
    out: dict = defaultdict(lambda: np.zeros(5))
    for g in report["groups"]:
        n = g["occurrences"]
        out[g["kind"]] += n * np.array([g["energy_per_call_j"], g["dynamic_energy_per_call_j"], g["flops"],
                                        g["bytes_min"], g["gpu_time_per_call_s"]])
    return dict(out)


def max_cv(report: dict) -> float:
    return max([g["cv"] for g in report["groups"]] + [report["whole"]["cv"]])


def fit_energy_model(points: list[dict], features: tuple) -> np.ndarray:
    """Non-negative least squares of energy per call on the features, in relative terms (every component
    counts alike). Energy per FLOP, per byte and power cannot be negative: with three features, trying
    every subset and keeping the best all-positive solution is the exact NNLS."""
    X = np.array([[p[f] for f in features] for p in points], dtype=float)
    y = np.array([p["energy"] for p in points], dtype=float)
    A = X / y[:, None]
    scale = np.linalg.norm(A, axis=0)
    scale[scale == 0] = 1.0  # FLOPs, bytes and seconds differ by 1e14: solve on columns of equal norm
    A = A / scale
    best, best_err = np.zeros(len(features)), math.inf
    for mask in range(1, 2 ** len(features)):
        cols = [i for i in range(len(features)) if mask >> i & 1]
        sol, *_ = np.linalg.lstsq(A[:, cols], np.ones_like(y), rcond=None)
        if np.any(sol < 0):
            continue
        err = float(np.sum((A[:, cols] @ sol - 1) ** 2))
        if err < best_err:
            best, best_err = np.zeros(len(features)), err
            best[cols] = sol
    return best / scale


def lomo(points: list[dict], features: tuple) -> dict:
    """Leave-one-model-out: fit on the other models, predict the held-out model's component energy per task."""
    errs = {}
    for model in sorted({p["model"] for p in points}):
        train = [p for p in points if p["model"] != model]
        if len(train) < len(features) + 1:
            continue
        coef = fit_energy_model(train, features)
        for tid in sorted({p["task"] for p in points if p["model"] == model}):
            held = [p for p in points if p["task"] == tid]
            pred = sum(p["occurrences"] * float(np.dot(coef, [p[f] for f in features])) for p in held)
            true = sum(p["occurrences"] * p["energy"] for p in held)
            errs[tid] = pred / true - 1
    return errs


def analyse(ok: dict) -> dict:
    """Every number of the report, from the successful records."""
    suite = {tid: r for tid, r in ok.items() if "suite" in r["task"]["purpose"]}
    prefill = {tid: r for tid, r in suite.items() if r["task"]["mode"] == "prefill"}
    # J/FLOP per kind, energy-weighted over the suite's prefill tasks.
    kinds: dict = defaultdict(lambda: {"e": 0.0, "d": 0.0, "f": 0.0, "per_model": []})
    shares = {}
    for tid, r in prefill.items():
        k = by_kind(r["report"])
        tot_e = sum(v[0] for v in k.values())
        tot_f = sum(v[2] for v in k.values())
        shares[tid] = {kind: {"energy": v[0] / tot_e, "flops": v[2] / tot_f if tot_f else math.nan}
                       for kind, v in k.items()}
        for kind, v in k.items():
            if v[2] > 0:
                kinds[kind]["e"] += v[0]
                kinds[kind]["d"] += v[1]
                kinds[kind]["f"] += v[2]
                kinds[kind]["per_model"].append((r["task"]["model"], v[0] / v[2]))
    jpf = {kind: {"j_per_flop": v["e"] / v["f"], "dynamic_j_per_flop": v["d"] / v["f"],
                  "models": len(v["per_model"]), "min": min(x for _, x in v["per_model"]),
                  "max": max(x for _, x in v["per_model"]), "per_model": v["per_model"]}
           for kind, v in kinds.items()}
    # Energy model over every component group of the suite (prefill and decode).
    points = [{"model": r["task"]["model"], "task": tid, "occurrences": g["occurrences"],
               "energy": g["energy_per_call_j"], "flops": float(g["flops"]), "bytes": float(g["bytes_min"]),
               "time": g["gpu_time_per_call_s"]}
              for tid, r in suite.items() for g in r["report"]["groups"] if g["energy_per_call_j"] > 0]
    energy_model = {}
    if len({p["model"] for p in points}) >= 3:
        full, flops_only = ("flops", "bytes", "time"), ("flops",)
        coef = fit_energy_model(points, full)
        e_full, e_flops = lomo(points, full), lomo(points, flops_only)
        energy_model = {
            "coefficients": {"j_per_flop": coef[0], "j_per_byte": coef[1], "power_w": coef[2]},
            "flops_only_j_per_flop": fit_energy_model(points, flops_only)[0],
            "lomo_error": e_full, "lomo_error_flops_only": e_flops,
            "lomo_mean_abs": float(np.mean(np.abs(list(e_full.values())))),
            "lomo_mean_abs_flops_only": float(np.mean(np.abs(list(e_flops.values())))),
            "points": len(points)}
    rows = [r for r in ok.values() if "report" in r]
    cov = [r["report"]["accounting"] for r in rows]
    wall = sum(r.get("wall_s", 0.0) for r in ok.values())
    return {"suite": sorted(suite), "j_per_flop": jpf, "shares": shares, "energy_model": energy_model,
            "explained_range": [min(a["explained_coverage"] for a in cov), max(a["explained_coverage"] for a in cov)]
            if cov else [], "coverage_range": [min(a["coverage"] for a in cov), max(a["coverage"] for a in cov)]
            if cov else [], "component_cv_range": [min(g["cv"] for r in rows for g in r["report"]["groups"]),
                                                   max(g["cv"] for r in rows for g in r["report"]["groups"])]
            if rows else [], "measure_wall_s": wall}


def sweep_rows(ok: dict, name: str) -> list[dict]:
    key, _ = SWEEP_X[name]
    out = []
    for r in ok.values():
        if f"sweep:{name}" not in r["task"]["purpose"]:
            continue
        t = r["task"]
        over = dict(t["overrides"])
        if key in over:
            x = over[key]
        elif key in t:
            x = t[key]
        else:
            x = {"num_attention_heads": 12, "hidden_size": 768}[key]
        rep = r["report"]
        kinds = by_kind(rep)
        out.append({"x": x, "task": t["id"], "energy_j": rep["whole"]["energy_per_call_j"],
                    "ci95_j": rep["whole"]["energy_per_call_ci95_j"], "time_s": rep["whole"]["gpu_time_per_call_s"],
                    "kinds": {k: v[0] for k, v in kinds.items()},
                    "kind_ci": {k: _kind_ci(rep, k) for k in kinds},
                    "explained": rep["accounting"]["explained_coverage"]})
    order = {"fp32": 0, "fp16": 1, "bf16": 2}
    return sorted(out, key=lambda d: order.get(d["x"], d["x"]) if isinstance(d["x"], str) else d["x"])


def _kind_ci(rep: dict, kind: str) -> float:
    """95 % CI half-width of a kind's energy per forward pass (groups independent)."""
    return math.sqrt(sum((g["occurrences"] * g["energy_per_call_j"] * g["ci95_rel"]) ** 2
                         for g in rep["groups"] if g["kind"] == kind))


# --------------------------------------------------------------------------- writing


def _pct(x) -> str:
    return "–" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x * 100:.1f} %"


def markdown(ident: dict, profile: dict, ok: dict, failed: dict, refs: list, an: dict, tasks,
             superseded: tuple = ()) -> str:
    g = ident.get("gpu", {})
    L = [f"# CLEAR study on {g.get('name', '?')}", "",
         f"Driver {g.get('driver_version', '?')}, NVML {g.get('nvml_version', '?')}, power limit "
         f"{g.get('power_limit_w', math.nan):.0f} W; PyTorch {ident.get('torch', '?')}, transformers "
         f"{ident.get('transformers', '?')}, clear_native {ident.get('clear_native', '?')}; first record "
         f"{ident.get('date', '?')}.",
         f"Sensor profile: a sample every {profile.get('sample_period_s', math.nan) * 1e3:.1f} ms, settle "
         f"{profile.get('settle_s', math.nan) * 1e3:.0f} ms, idle {profile.get('idle_power_w', math.nan):.0f} W.",
         f"Random weights from transformers configs at the published sizes. {len(ok)} of {len(tasks)} planned tasks "
         f"measured, {len(failed)} failed; measuring took {fmt_s(an['measure_wall_s'])} (min:s) of GPU wall time "
         "(sum over tasks, whatever the number of invocations)."]
    uuids = Counter(r.get("identity", {}).get("gpu", {}).get("uuid", "?") for r in ok.values())
    if len(uuids) > 1:
        L.append(f"The records come from {len(uuids)} cards of this model (same driver; the sensor profile of the "
                 "first): " + ", ".join(f"{u} ({n} tasks)" for u, n in uuids.most_common()) + ".")
    if superseded:
        ids = sorted({r["task"]["id"] for r in superseded})
        L.append(f"Measured again with `--redo` ({len(ids)} tasks; their {len(superseded)} earlier records, "
                 f"{fmt_s(sum(r.get('wall_s', 0) for r in superseded))} min:s of GPU time not counted above, are "
                 "in superseded.jsonl): " + ", ".join(ids) + ".")
    missing = [t.id for t in tasks if t.id not in ok and t.id not in failed]
    if missing:
        modes = {record_l2(r) for r in ok.values()}
        resume = "bench/run.py --resume" + (f" --l2 {modes.pop()}" if len(modes) == 1 else "")
        L.append(f"Planned but not measured yet ({len(missing)}; `{resume}` measures them): "
                 + ", ".join(missing) + ".")
    L.append("")
    jpf = an["j_per_flop"]
    L += ["## Headline", ""]
    if "self_attention" in jpf and "mlp" in jpf:
        a, m = jpf["self_attention"], jpf["mlp"]
        L.append(f"- Attention spends **{a['j_per_flop'] / m['j_per_flop']:.1f}×** the energy per FLOP of the "
                 f"feed-forward blocks: {a['j_per_flop'] * 1e12:.2f} vs {m['j_per_flop'] * 1e12:.2f} pJ/FLOP "
                 f"(energy-weighted over {a['models']} models' prefill; above awake idle "
                 f"{a['dynamic_j_per_flop'] * 1e12:.2f} vs {m['dynamic_j_per_flop'] * 1e12:.2f} pJ/FLOP).")
    if an["explained_range"]:
        L.append(f"- Explained coverage (components + glue + gaps) {_pct(an['explained_range'][0])} to "
                 f"{_pct(an['explained_range'][1])}; plain coverage (components alone) {_pct(an['coverage_range'][0])} "
                 f"to {_pct(an['coverage_range'][1])}.")
        L.append(f"- Component CV across trials {an['component_cv_range'][0] * 100:.2f} % to "
                 f"{an['component_cv_range'][1] * 100:.2f} %.")
    em = an["energy_model"]
    if em:
        c = em["coefficients"]
        L.append(f"- Energy model E ≈ a·FLOPs + b·bytes + P·t: a = {c['j_per_flop'] * 1e12:.3g} pJ/FLOP, "
                 f"b = {c['j_per_byte'] * 1e12:.3g} pJ/byte, P = {c['power_w']:.0f} W; leave-one-model-out error "
                 f"{em['lomo_mean_abs'] * 100:.1f} % (mean |error|) vs {em['lomo_mean_abs_flops_only'] * 100:.1f} % "
                 f"for FLOPs alone.")
    L += targets(ok)
    L += ["", "## Models", "",
          "Energy and GPU time per forward pass (decode: per token). Coverage = Σ components ÷ whole model; "
          "explained adds glue kernels and the gaps between kernels.", "",
          "| task | groups | whole model | ±95 % | GPU time | coverage | glue | gaps | explained | max CV | wall |",
          "|---|---|---|---|---|---|---|---|---|---|---|"]
    for tid in sorted(ok, key=lambda t: (tuple(ok[t]["task"]["purpose"]) != ("suite",), t)):
        rep = ok[tid]["report"]
        a, w = rep["accounting"], rep["whole"]
        eager = " (eager)" if rep["settings"].get("whole_model_eager") else ""
        L.append(f"| {tid}{eager} | {len(rep['groups'])} | {a['model_energy_j'] * 1e3:.4g} mJ | "
                 f"{w['ci95_rel'] * 100:.2f} % | {a['model_time_s'] * 1e6:.0f} µs | {_pct(a['coverage'])} | "
                 f"{a['glue_time_s'] * 1e6:.0f} µs | {a['gaps_time_s'] * 1e6:.0f} µs | "
                 f"{_pct(a['explained_coverage'])} | {max_cv(rep) * 100:.2f} % | {ok[tid]['wall_s']:.0f} s |")
    for tid, r in failed.items():
        L.append(f"| {tid} | failed: {r['error'].splitlines()[0][:120]} ||||||||||")
    L += ["", "## Energy per FLOP by component kind", "",
          "Prefill of the suite's models; energy-weighted mean (Σ energy ÷ Σ FLOPs) and the per-model range.", "",
          "| kind | models | pJ/FLOP | above awake idle | per-model min | per-model max |", "|---|---|---|---|---|---|"]
    for kind in sorted(jpf, key=lambda k: KIND_ORDER.index(k) if k in KIND_ORDER else 99):
        v = jpf[kind]
        L.append(f"| {kind} | {v['models']} | {v['j_per_flop'] * 1e12:.3g} | {v['dynamic_j_per_flop'] * 1e12:.3g} | "
                 f"{v['min'] * 1e12:.3g} | {v['max'] * 1e12:.3g} |")
    L += ["", "## Measured share vs FLOP-proportional share", "",
          "Each kind's share of the components' energy, next to its share of their FLOPs.", "",
          "| model | " + " | ".join(k for k in KIND_ORDER[:-1]) + " |", "|---" * (len(KIND_ORDER)) + "|"]
    for tid, sh in sorted(an["shares"].items()):
        cells = [f"{_pct(sh[k]['energy'])} / {_pct(sh[k]['flops'])}" if k in sh else "" for k in KIND_ORDER[:-1]]
        L.append(f"| {tid.split('/')[0]} | " + " | ".join(cells) + " |")
    L.append("\n(energy share / FLOP share)")
    if em:
        L += ["", "## Energy model (per component call)", "",
              f"Fitted on {em['points']} component groups of the suite (prefill and decode) in relative terms; "
              "the error is that of a held-out model's components' total energy per forward pass.", "",
              "| task | E = a·F + b·B + P·t | E = a·F |", "|---|---|---|"]
        for tid in sorted(em["lomo_error"]):
            L.append(f"| {tid} | {em['lomo_error'][tid] * 100:+.1f} % | {em['lomo_error_flops_only'][tid] * 100:+.1f} % |")
    for name in SWEEP_X:
        rows = sweep_rows(ok, name)
        if not rows:
            continue
        kinds = sorted({k for r in rows for k in r["kinds"]}, key=lambda k: KIND_ORDER.index(k))
        L += ["", f"## Sweep: {SWEEP_X[name][1]}", "",
              "| x | task | whole model (mJ ± 95 %) | GPU time | " + " | ".join(kinds) + " | explained |",
              "|---" * (5 + len(kinds)) + "|"]
        for r in rows:
            L.append(f"| {r['x']} | {r['task']} | {r['energy_j'] * 1e3:.4g} ± {r['ci95_j'] * 1e3:.2g} | "
                     f"{r['time_s'] * 1e6:.0f} µs | " + " | ".join(f"{r['kinds'].get(k, 0) * 1e3:.4g}" for k in kinds)
                     + f" | {_pct(r['explained'])} |")
    ref = [r for r in refs if r.get("status") == "ok"]
    if ref:
        r = ref[-1]
        L += ["", "## The CLEAR authors' procedure beside ours", "",
              f"BERT-base, batch 1 × sequence 8, bf16, same captures and card. Reference: energy counter around a "
              f"Python loop of {r['rows'][0]['reference']['calls_per_trial']} calls, "
              f"{r['rows'][0]['reference']['trials']} trials. Ours: graph replays, {r['ours_wall_s']:.0f} s for all "
              "three.", "",
              "| component | ours (mJ/call) | CV | reference (mJ/call) | CV | reference ÷ ours | reference wall |",
              "|---|---|---|---|---|---|---|"]
        for row in r["rows"]:
            o, f = row["ours"], row["reference"]
            L.append(f"| {row['component']} | {o['energy_per_call_j'] * 1e3:.4g} | {o['cv'] * 100:.2f} % | "
                     f"{f['energy_per_call_j'] * 1e3:.4g} | {f['cv'] * 100:.1f} % | "
                     f"{f['energy_per_call_j'] / o['energy_per_call_j']:.2f} | {row['reference_wall_s']:.0f} s |")
    L += ["", "## Figures", ""] + [f"![{n}]({n}.png)" for n in FIGURES]
    return "\n".join(L) + "\n"


def _time_or_power(a: dict, reasons: list) -> str:
    """Whether an explained-coverage miss is one of time or of power, from a task's accounting.

    Explained energy = its parts' time x their mean power; the model's = its time x its power.
    """
    t = a["components_time_s"] + a["glue_time_s"] + a["gaps_time_s"]
    e = a["components_energy_j"] + a["glue_energy_j"] + a["gaps_energy_j"]
    return (f"the parts take {_pct(t / a['model_time_s'])} of the model's GPU time at {e / t:.0f} W, the model "
            f"{a['model_energy_j'] / a['model_time_s']:.0f} W" + (f" ({', '.join(reasons)})" if reasons else ""))


def targets(ok: dict) -> list[str]:
    """Which measurements miss the study's targets (CV <= 1 %, explained 100 ± 3 %, plain 100 ± 5 % at 8 x 128)."""
    cv_miss, expl_miss, plain_miss = [], [], []
    modes = {record_l2(r) for r in ok.values()}
    for tid, r in sorted(ok.items()):
        rep = r["report"]
        reasons = rep["whole"].get("clock_event_reasons", [])
        for g in rep["groups"] + [dict(rep["whole"], name="whole model")]:
            if g["cv"] > 0.01:
                drift = [abs(x) for x in g.get("trial_drift_rel", []) if x == x]
                cv_miss.append(f"{tid} {g['name']}: {g['cv'] * 100:.2f} % over {g['trials']} trials"
                               + (f", window drift up to {max(drift) * 100:.1f} %" if drift else "")
                               + (f" ({', '.join(reasons)} during the run)" if reasons else ""))
        a = rep["accounting"]
        if abs(a["explained_coverage"] - 1) > 0.03:
            expl_miss.append(f"{tid}: {_pct(a['explained_coverage'])}; {_time_or_power(a, reasons)}")
        t = r["task"]
        if t["mode"] == "prefill" and t["batch"] == 8 and t["seq"] == 128 and abs(a["coverage"] - 1) > 0.05:
            plain_miss.append(f"{tid}: {_pct(a['coverage'])}")
    L = ["", "## Against the targets", "",
         f"Components replayed with **{'/'.join(sorted(modes))} L2** "
         + ("(one copy: its weights stay in the L2 cache, unlike inside the model, so components read low; "
            "bench/cold_cache.py measures that bias and `--l2 cold` removes it)." if "hot" in modes else
            "(distinct copies whose weights overflow the L2 cache, as inside the model)."), ""]
    for title, items in (("component or whole-model CV above 1 %", cv_miss),
                         ("explained coverage outside 100 ± 3 %", expl_miss),
                         ("plain coverage outside 100 ± 5 % at batch 8 × 128", plain_miss)):
        L.append(f"- {len(items)} {title}" + (":" if items else "."))
        L += [f"  - {x}" for x in items]
    if expl_miss:
        L += ["", "Where the parts cover the model's GPU time but not its power, the parts draw together, inside "
                  "the model, a different power than each draws alone: their energies in isolation do not add up "
                  "to the model's. `bench/granularity.py` measures this for one model by comparing its coverage "
                  "by decoder layer with its coverage by sub-layer part (docs/measured.md)."]
    return L


def _tick(task_id: str) -> str:
    """A task id short enough for an axis: bf16 left out, config overrides abbreviated."""
    for long, short in (("/bf16", ""), ("hidden_size=", "h"), ("intermediate_size=", "ff"),
                        ("num_attention_heads=", "heads")):
        task_id = task_id.replace(long, short)
    return task_id


FIGURES = ("energy_by_component", "j_per_flop", "shares", "cv_coverage", "sweeps")


def figures(folder: Path, ok: dict, an: dict) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    colors = dict(zip(KIND_ORDER + ("glue", "gaps"), plt.get_cmap("tab10").colors))
    made = []

    def save(fig, name, rect=(0, 0, 1, 1)):
        fig.tight_layout(rect=rect)
        fig.savefig(folder / f"{name}.png", dpi=110)
        plt.close(fig)
        made.append(name)

    suite = [t for t in an["suite"] if t in ok]
    if suite:  # stacked share of the whole model's energy per kind, glue and gaps
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
        save(fig, "energy_by_component")
    jpf = an["j_per_flop"]
    if jpf:
        fig, ax = plt.subplots(figsize=(7, 4))
        kinds = [k for k in KIND_ORDER if k in jpf]
        for i, k in enumerate(kinds):
            vals = [v * 1e12 for _, v in jpf[k]["per_model"]]
            ax.scatter(np.full(len(vals), i) + np.linspace(-0.15, 0.15, len(vals)), vals, s=14, color=colors[k])
            ax.hlines(jpf[k]["j_per_flop"] * 1e12, i - 0.3, i + 0.3, color="k")
        ax.set_xticks(range(len(kinds)), kinds)
        ax.set_yscale("log")
        ax.set_ylabel("pJ per FLOP (dots: models; bar: weighted mean)")
        save(fig, "j_per_flop")
    if an["shares"]:
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
        save(fig, "shares")
    rows = sorted(ok)
    if rows:
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
        save(fig, "cv_coverage")
    sweeps = [n for n in SWEEP_X if sweep_rows(ok, n)]
    if sweeps:
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
        save(fig, "sweeps", rect=(0, 0, 1, 0.88))
    return made


def write(folder: Path, tasks) -> dict:
    """Writes REPORT.md, report.json and the figures of a card's folder; returns the analysis."""
    folder = Path(folder)
    records = load_records(folder / MEASUREMENTS)
    if not records:
        raise FileNotFoundError(f"no measurements in {folder / MEASUREMENTS}: run bench/run.py first")
    split = latest_ok(records)
    ok, failed = split["ok"], split["failed"]
    refs = load_records(folder / REFERENCE)
    an = analyse(ok)
    ident = records[0].get("identity", {})
    profile = records[0].get("profile", {})
    made = figures(folder, ok, an)
    text = markdown(ident, profile, ok, failed, refs, an, tasks, load_records(folder / SUPERSEDED))
    text = "\n".join(line for line in text.splitlines()
                     if not (line.startswith("![") and line[2:line.index("]")] not in made)) + "\n"
    (folder / "REPORT.md").write_text(text)
    (folder / "report.json").write_text(json.dumps({"identity": ident, "profile": profile, "analysis": an,
                                                    "failed": {k: v["error"] for k, v in failed.items()}},
                                                   indent=1, default=float) + "\n")
    return an
