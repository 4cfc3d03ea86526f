"""The study's report, from its records alone: REPORT.md, report.json and PNG figures.

Everything here is computed from a run's measurements.jsonl and reference.jsonl,
so a run joined from several --resume invocations gives the same report as one
run, and the report can be rebuilt anywhere (python bench/run.py --report-only RUN).
The numbers come from clear_native.analysis; this module only writes them.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from pathlib import Path

from bench import report_trust, store
from bench.figures import FIGURES
from bench.store import fmt_s, record_l2
from clear_native.analysis import KIND_ORDER, SWEEP_X, analyse, latest_ok, max_cv, sweep_rows


# --------------------------------------------------------------------------- writing


def _pct(x) -> str:
    return "–" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x * 100:.1f} %"


def markdown(ident: dict, profile: dict, ok: dict, failed: dict, refs: list, an: dict, tasks,
             superseded: tuple = (), repeats: tuple = (), checks: tuple = ()) -> str:
    L = _header(ident, profile, ok, failed, an, tasks, superseded)
    L += report_trust.uncertainty(ok, list(repeats), list(checks))
    L += _headline(an) + _findings(an, ok) + targets(ok) + _models(ok, failed) + _kinds(an) + _energy_model(an)
    L += _energy_model_by_regime(an) + _sweeps(ok)
    L += report_trust.reference(refs, ok)
    L += ["", "## Figures", ""] + [f"![{n}]({n}.png)" for n in FIGURES]
    return "\n".join(L) + "\n"


def _header(ident, profile, ok, failed, an, tasks, superseded) -> list:
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
    vers = store.versions(list(ok.values()))
    L.append(f"Code/protocol version{'s' if len(vers) > 1 else ''} of the records: "
             + ", ".join(f"{c} / protocol {p}" for c, p in sorted(vers)) + ".")
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
        resume = "python bench/run.py --resume <this folder>" + (f" --l2 {modes.pop()}" if len(modes) == 1 else "")
        L.append(f"Planned but not measured yet ({len(missing)}; `{resume}` measures them): "
                 + ", ".join(missing) + ".")
    L.append("")
    return L


def _headline(an) -> list:
    jpf = an["j_per_flop"]
    L = ["## Headline", ""]
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
    return L


def _findings(an: dict, ok: dict) -> list:
    """The CLEAR paper's claims, ours beside each (issue 16)."""
    models = sorted({r["task"]["model"] for r in ok.values() if "suite" in r["task"]["purpose"]})
    cvs = [max_cv(r["report"]) for r in ok.values()]
    cov = [(t, r["report"]["accounting"]["coverage"]) for t, r in sorted(ok.items())]
    loops = [t for t, c in cov if math.isnan(c)]  # the whole model ran as a Python loop: no yardstick
    cov = [(t, c) for t, c in cov if not math.isnan(c)]
    low = [t for t, c in cov if c < 0.9]
    p, ps = an["attention_premium"], an["premium_by_sweep"]
    rev = ", ".join(f"{t.split('/')[0]} ({p['per_task'][t]:.2f}×)" for t in p["reversed"]) or "none"
    L = ["", "## Findings beside the paper's", "",
         "| the paper (CLEAR, arXiv 2510.02810) | this study |", "|---|---|",
         f"| 15 models, 4 families | {len(models)} models, configs at published sizes, random weights |",
         f"| every component's CV across trials < 9.5 % | max CV {max(cvs) * 100:.2f} % over {len(cvs)} tasks "
         "(trial-to-trial within one run; run to run and card to card are larger: issue 14) |",
         f"| components capture > 90 % of the model's energy | plain coverage {_pct(min(c for _, c in cov))} to "
         f"{_pct(max(c for _, c in cov))}, below 90 % in {len(low)} of {len(cov)} tasks; with glue and gaps "
         f"{_pct(an['explained_range'][0])} to {_pct(an['explained_range'][1])} |",
         f"| attention spends more energy per FLOP than the rest | in {len(p['per_task']) - len(p['reversed'])} of "
         f"{len(p['per_task'])} models' prefill; median {p['median']:.2f}× the feed-forward's; reversed: {rev} |",
         ""]
    if low:
        L.append(f"Plain coverage below 90 %: {', '.join(low)}.")
    if loops:
        L.append(f"Kept out of coverage (the whole model ran as a Python loop): {', '.join(loops)}.")
    for name, (_, label) in SWEEP_X.items():  # the premium along each sweep (figure sweeps_per_flop)
        per = ps.get(name, {}).get("per_task", {})
        rows = [r for r in sweep_rows(ok, name) if r["task"] in per]
        if len(rows) > 1:
            model = ok[rows[0]["task"]]["task"]["model"]
            L.append(f"- The premium against {label} ({model}, {ok[rows[0]['task']]['task']['mode']}): "
                     + ", ".join(f"{r['x']}: {per[r['task']]:.2f}×" for r in rows) + " (measured).")
    L.append("- Why the premium shrinks with batch and sequence (more work per kernel) and grows with the KV cache "
             "(decode attention reads the cache: bytes, not FLOPs) is our reading of these numbers, not measured "
             "by a kernel-level experiment here.")
    L += ["- FLOPs are PyTorch's flop counter's: 2·m·n·k per matrix product, attention as its two products "
          "(4·b·h·s²·d), softmax, norms and element-wise work counted 0. Attention's energy per FLOP therefore "
          "carries its softmax, masking and reshapes; the feed-forward's carries its activation.",
          "- GPT-2 and GPT-2-medium reverse the premium (measured). A reading to test, not a finding: their "
          "attention block holds the fused QKV and output projections (Conv1D GEMMs) beside few attention FLOPs "
          "at sequence 128, so its energy per FLOP is mostly GEMM's."]
    return L


def _energy_model_by_regime(an: dict) -> list:
    L = []
    for mode, em in an.get("energy_model_by_regime", {}).items():
        if not em:
            continue
        c = em["coefficients"]
        L.append(f"| {mode} | {em['points']} | {c['j_per_flop'] * 1e12:.3g} | {c['j_per_byte'] * 1e12:.3g} | "
                 f"{c['power_w']:.0f} | {em['lomo_median_abs'] * 100:.1f} % | {em['lomo_worst_abs'] * 100:.1f} % |")
    if not L:
        return []
    return (["", "## Energy model by regime", "",
             "Prefill (compute-bound GEMMs) and decode (memory-bound, one token) fitted apart, E = a·F + b·B + P·t "
             "with non-negative coefficients; held-out error of a model's components' total, by task.", "",
             "| regime | points | a (pJ/FLOP) | b (pJ/byte) | P (W) | median abs error | worst |",
             "|---|---|---|---|---|---|---|"] + L
            + ["", "P is the power of the GPU while the parts run beyond what FLOPs and bytes explain: compare it "
                   "with the awake-idle baseline (about 120 W on an H200), not with the resting idle."])


def _models(ok, failed) -> list:
    L = ["", "## Models", "",
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
    return L


def _kinds(an) -> list:
    jpf = an["j_per_flop"]
    L = ["", "## Energy per FLOP by component kind", "",
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
    return L


def _energy_model(an) -> list:
    em, L = an["energy_model"], []
    if em:
        L += ["", "## Energy model (per component call)", "",
              f"Fitted on {em['points']} component groups of the suite (prefill and decode) in relative terms; "
              "the error is that of a held-out model's components' total energy per forward pass.", "",
              "| task | E = a·F + b·B + P·t | E = a·F |", "|---|---|---|"]
        for tid in sorted(em["lomo_error"]):
            L.append(f"| {tid} | {em['lomo_error'][tid] * 100:+.1f} % | {em['lomo_error_flops_only'][tid] * 100:+.1f} % |")
    return L


def _sweeps(ok) -> list:
    L = []
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
    return L


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


def write(folder: Path, tasks, allow_mixed: bool = True) -> dict:
    """Writes REPORT.md, report.json and the figures of a run's folder; returns the analysis, with
    ``figures_note`` saying why figures are missing, if they are. Records of several code or protocol
    versions are refused (ValueError) unless ``allow_mixed``; the header lists them either way."""
    folder = Path(folder)
    records = store.load(folder)
    if not records:
        raise FileNotFoundError(f"no measurements in {folder / store.MEASUREMENTS}: run bench/run.py first")
    if len(store.versions(records)) > 1 and not allow_mixed:
        raise ValueError(f"{folder}'s records come from several code/protocol versions "
                         f"{sorted(store.versions(records))}: pass --allow-mixed to report them together")
    split = latest_ok([r for r in records if not r["task"].get("repeat")])
    ok, failed = split["ok"], split["failed"]
    repeats = [r for r in records if r["task"].get("repeat") and r.get("status") == "ok"]
    refs = store.load(folder, store.REFERENCE)
    an = analyse(ok)
    ident = records[0].get("identity", {})
    profile = records[0].get("profile", {})
    made, note = _figures(folder, ok, an)
    text = markdown(ident, profile, ok, failed, refs, an, tasks, store.load(folder, store.SUPERSEDED), repeats,
                    store.load(folder, store.CARDS))
    text = "\n".join(line for line in text.splitlines()
                     if not (line.startswith("![") and line[2:line.index("]")] not in made)) + "\n"
    if note:
        text += f"\nNo figures: {note}.\n"
    store.write_atomic(folder / "REPORT.md", text)
    store.write_atomic(folder / "report.json", json.dumps({"identity": ident, "profile": profile, "analysis": an,
                                                          "failed": {k: v["error"] for k, v in failed.items()}},
                                                         indent=1, default=float) + "\n")
    return dict(an, figures_note=note)


def _figures(folder: Path, ok: dict, an: dict) -> tuple:
    """(figures drawn, why none were): the report is written either way."""
    try:
        from bench.figures import draw

        return draw(folder, ok, an), ""
    except ImportError as exc:
        return [], (f"matplotlib is not available ({exc}); pip install matplotlib, then "
                    f"python bench/run.py --report-only {folder}")
