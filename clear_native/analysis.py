"""The study's numbers, from its records: public, so a user who measured their own models can call it.

A record is what bench/run.py appends per task: ``{"task": {...}, "status": "ok", "report":
ModelReport.to_dict(), ...}``. Everything here is plain arithmetic over those dicts (no GPU,
no torch): energy per FLOP by component kind, shares of energy vs FLOPs, an energy model
fitted with non-negative coefficients and its leave-one-model-out error, coverage ranges and
the sweeps.
"""

from __future__ import annotations

import math
from collections import defaultdict

import numpy as np

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


def j_per_flop_by_kind(prefill: dict) -> tuple[dict, dict]:
    """(kind -> energy-weighted J/FLOP with its per-model range, task -> kind -> energy and FLOP shares)
    over prefill records (task id -> record)."""
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
    return jpf, shares


def energy_model(records: dict) -> dict:
    """E = a·FLOPs + b·bytes + P·t over every component group of ``records`` (task id -> record),
    with its leave-one-model-out error beside that of FLOPs alone; {} with fewer than 3 models."""
    points = [{"model": r["task"]["model"], "task": tid, "occurrences": g["occurrences"],
               "energy": g["energy_per_call_j"], "flops": float(g["flops"]), "bytes": float(g["bytes_min"]),
               "time": g["gpu_time_per_call_s"]}
              for tid, r in records.items() for g in r["report"]["groups"] if g["energy_per_call_j"] > 0]
    if len({p["model"] for p in points}) < 3:
        return {}
    full, flops_only = ("flops", "bytes", "time"), ("flops",)
    coef = fit_energy_model(points, full)
    e_full, e_flops = lomo(points, full), lomo(points, flops_only)
    return {"coefficients": {"j_per_flop": coef[0], "j_per_byte": coef[1], "power_w": coef[2]},
            "flops_only_j_per_flop": fit_energy_model(points, flops_only)[0],
            "lomo_error": e_full, "lomo_error_flops_only": e_flops,
            "lomo_mean_abs": float(np.mean(np.abs(list(e_full.values())))),
            "lomo_mean_abs_flops_only": float(np.mean(np.abs(list(e_flops.values())))),
            "points": len(points)}


def _span(values: list) -> list:
    """[min, max] of the values that are numbers (a coverage is NaN where the whole model ran as a loop)."""
    values = [v for v in values if not math.isnan(v)]
    return [min(values), max(values)] if values else []


def analyse(ok: dict) -> dict:
    """Every number of the study's report, from the successful records (task id -> record)."""
    suite = {tid: r for tid, r in ok.items() if "suite" in r["task"]["purpose"]}
    prefill = {tid: r for tid, r in suite.items() if r["task"]["mode"] == "prefill"}
    jpf, shares = j_per_flop_by_kind(prefill)
    rows = [r for r in ok.values() if "report" in r]
    cov = [r["report"]["accounting"] for r in rows]
    return {"suite": sorted(suite), "j_per_flop": jpf, "shares": shares, "energy_model": energy_model(suite),
            "energy_model_by_regime": energy_model_by_regime(suite),
            "attention_premium": attention_premium(prefill),
            "premium_by_sweep": {s: attention_premium({t: r for t, r in ok.items()
                                                       if f"sweep:{s}" in r["task"]["purpose"]}) for s in SWEEP_X},
            "explained_range": _span([a["explained_coverage"] for a in cov]),
            "coverage_range": _span([a["coverage"] for a in cov]),
            "component_cv_range": _span([g["cv"] for r in rows for g in r["report"]["groups"]]),
            "measure_wall_s": sum(r.get("wall_s", 0.0) for r in ok.values())}


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
        out.append({"x": x, "task": t["id"], "tokens": tokens(t), "energy_j": rep["whole"]["energy_per_call_j"],
                    "ci95_j": rep["whole"]["energy_per_call_ci95_j"], "time_s": rep["whole"]["gpu_time_per_call_s"],
                    "kinds": {k: v[0] for k, v in kinds.items()},
                    "kind_flops": {k: float(v[2]) for k, v in kinds.items()},
                    "kind_ci": {k: kind_ci(rep, k) for k in kinds},
                    "explained": rep["accounting"]["explained_coverage"]})
    order = {"fp32": 0, "fp16": 1, "bf16": 2}
    return sorted(out, key=lambda d: order.get(d["x"], d["x"]) if isinstance(d["x"], str) else d["x"])


def kind_ci(rep: dict, kind: str) -> float:
    """95 % CI half-width of a kind's energy per forward pass (groups independent)."""
    return math.sqrt(sum((g["occurrences"] * g["energy_per_call_j"] * g["ci95_rel"]) ** 2
                         for g in rep["groups"] if g["kind"] == kind))


def tokens(task: dict) -> int:
    """Tokens one call processes: batch x sequence for prefill (vision: patches are not tokens here, the
    batch counts), batch for one decode step."""
    if task["mode"] == "decode":
        return task["batch"]
    return task["batch"] * (1 if task["id"].split("/")[2].endswith("img224") else task["seq"])


def attention_premium(records: dict) -> dict:
    """Attention's energy per FLOP over the feed-forward's, per task (records: task id -> record), with
    the median over tasks and the tasks where it is reversed (< 1)."""
    per = {}
    for tid, r in records.items():
        k = by_kind(r["report"])
        if "self_attention" in k and "mlp" in k and k["self_attention"][2] > 0 and k["mlp"][2] > 0:
            per[tid] = (k["self_attention"][0] / k["self_attention"][2]) / (k["mlp"][0] / k["mlp"][2])
    vals = sorted(per.values())
    return {"per_task": per, "median": float(np.median(vals)) if vals else math.nan,
            "reversed": sorted(t for t, v in per.items() if v < 1)}


def energy_model_by_regime(records: dict) -> dict:
    """The energy model fitted apart for prefill and for decode (their kernels are compute- and
    memory-bound respectively), each with its held-out error by task: median and worst |error|."""
    out = {}
    for mode in ("prefill", "decode"):
        em = energy_model({t: r for t, r in records.items() if r["task"]["mode"] == mode})
        if em:
            errs = [abs(e) for e in em["lomo_error"].values()]
            em["lomo_median_abs"], em["lomo_worst_abs"] = float(np.median(errs)), float(max(errs))
        out[mode] = em
    return out


def parts(report: dict) -> dict:
    """{name: (energy J per call, its 95 % CI relative, GPU s per call)} of a ModelReport dict: the whole
    model (as "whole model") and each group."""
    w = report["whole"]
    out = {"whole model": (w["energy_per_call_j"], w.get("ci95_rel", math.nan), w["gpu_time_per_call_s"])}
    out.update({g["name"]: (g["energy_per_call_j"], g["ci95_rel"], g["gpu_time_per_call_s"]) for g in report["groups"]})
    return out


def across_processes(reports: list) -> list:
    """One measurement repeated in fresh processes (ModelReport dicts): for the whole model and each group,
    the mean energy per call, the spread between processes (relative standard deviation), the largest
    within-run 95 % CI, and the 95 % interval that combines both, sqrt(CI^2 + (1.96 sd)^2), which a
    further repeat on the same card should fall in."""
    each = [parts(r) for r in reports]
    names = [n for n in each[0] if all(n in e for e in each)] if each else []
    rows = []
    for n in names:
        e = np.array([x[n][0] for x in each])
        mean = float(e.mean())
        sd = float(e.std(ddof=1) / mean) if len(e) > 1 and mean else math.nan
        ci = max(x[n][1] for x in each)
        rows.append({"name": n, "energy_per_call_j": mean, "processes": len(e), "process_sd_rel": sd,
                     "max_ci95_rel": ci, "interval95_rel": math.hypot(ci, 1.96 * sd) if not math.isnan(sd) else ci,
                     "range_rel": float((e.max() - e.min()) / mean) if mean else math.nan})
    return rows
