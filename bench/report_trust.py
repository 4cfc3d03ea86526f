"""The sections of REPORT.md that say how far to trust the numbers: the three layers of uncertainty
(issue 14) and the CLEAR authors' procedure beside ours with its reading explained (issue 16)."""

from __future__ import annotations

import json
import math
import statistics
from pathlib import Path

from bench import uncertainty as U
from clear_native import launch_state

ROOT = Path(__file__).resolve().parents[1]
REPRODUCIBILITY = ROOT / "results" / "reproducibility.json"


def _pc(x, digits=2) -> str:
    return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x * 100:.{digits}f} %"


def repeat_pairs(ok: dict, repeats: list) -> list:
    """(task, part, first, repeat, fresh process?) for each repeat measured on the card of its first; first and
    repeat as (J, ci95_rel, GPU s, awake-idle W of its run)."""
    out = []
    for r in repeats:
        first = ok.get(r["task"]["id"].rsplit("/repeat", 1)[0])
        if first is None or first["identity"]["gpu"]["uuid"] != r["identity"]["gpu"]["uuid"]:
            continue
        fresh = r.get("pid") is not None and r.get("pid") != first.get("pid")
        a, b = U.measurements(first), U.measurements(r)
        wa, wb = (x["report"].get("run", {}).get("awake_idle_power_w", math.nan) for x in (first, r))
        ta, tb = U.temperatures(first), U.temperatures(r)
        for name in sorted(a.keys() & b.keys()):  # (J, ci95_rel, GPU s, awake-idle W of its run)
            out.append({"task": first["task"]["id"], "part": name, "a": a[name] + (wa,), "b": b[name] + (wb,),
                        "fresh": fresh, "temperature_diff_c": tb.get(name, math.nan) - ta.get(name, math.nan)})
    return out


def uncertainty(ok: dict, repeats: list, checks: list) -> list:
    """## Uncertainty: within run, repeatability, across cards, and the interval a user should read."""
    cis = [v[1] for r in ok.values() for v in U.measurements(r).values() if not math.isnan(v[1])]
    L = ["", "## Uncertainty: three layers", ""]
    if cis:
        L.append(f"- **Within run** (each number's 95 % CI from its trials): median {_pc(statistics.median(cis))}, "
                 f"largest {_pc(max(cis))}, over {len(cis)} parts and whole models.")
    pairs = repeat_pairs(ok, repeats)
    long = [p for p in pairs if p["a"][2] >= 5e-6]
    split = U.by_time_state([(U.rel_diff(p["a"][0], p["b"][0]), U.rel_diff(p["a"][2], p["b"][2])) for p in long])
    ref_pairs = U.reference_pairs(checks, "start", "end")
    sigma_ref = U.process_sigma(ref_pairs) if ref_pairs else math.nan  # the tasks' own repeats where there are any
    held = [p for p in long if _time_held(p)]  # the interval's domain (below)
    sigma_p = U.calibrated_sigma([(p["a"][:2], p["b"][:2]) for p in held]) if held else sigma_ref
    if long:
        d = [abs(U.rel_diff(p["a"][0], p["b"][0])) for p in long]
        how = "in fresh processes" if all(p["fresh"] for p in long) else "in the same process"
        L.append(f"- **Repeatability** (same card): {len({p['task'] for p in long})} tasks measured again at the run's "
                 f"end {how}: their parts of >= 5 µs and whole models moved by at most {_pc(max(d))} (RMS "
                 f"{_pc(math.sqrt(statistics.fmean(x * x for x in d)))}, {len(d)} pairs).")
        L += _by_time_state(split, long, ok, repeats) + _temperature_scaled(long, ok)
        corrected = [abs(U.state_corrected_diff(*((p[k][0], p[k][2], p[k][3]) for k in "ab"))) for p in long]
        corrected = [x for x in corrected if not math.isnan(x)]  # records without awake-idle power are left out
        if split["time_moved"]["n"] and corrected:
            L.append(f"  Each repeat taken at the faster reading's GPU time (the slow launch state's extra time at "
                     f"awake-idle power): at most {_pc(max(corrected))} (RMS "
                     f"{_pc(math.sqrt(statistics.fmean(x * x for x in corrected)))}).")
    if ref_pairs or held:
        source = f"the {len(held)} repeats whose GPU time held" if held else "the card reference"
        L.append(f"  The repeatability layer sigma_p = {_pc(sigma_p)}, from {source} (the smallest whose interval "
                 f"holds 95 % of them); the card reference at the run's "
                 f"start and end ({len(ref_pairs)} readings) moved {_pc(sigma_ref)} (Note [The reported interval], "
                 "bench/uncertainty.py).")
    L += _across_cards(checks)
    if not math.isnan(sigma_p):
        ex = statistics.median(cis) if cis else 0.005
        L.append(f"- **The interval to read a number with**: sqrt(CI^2 + (1.96 sigma_p)^2) on this card; add (1.96 "
                 f"sigma_c)^2 for another card of this kind. A part with the median CI ({_pc(ex)}) reads ± "
                 f"{_pc(U.interval(ex, sigma_p))} on this card.")
        moved = split["time_moved"]
        if moved["n"]:
            L.append(f"  It holds for work whose GPU time does not depend on the launch-latency state; a light, "
                     f"latency-bound part (a few µs per kernel) can read up to {_pc(moved['max_rel'])} apart in two "
                     "processes (above), and this interval does not cover that.")
    return L + [""]


def _time_held(pair: dict) -> bool:
    """The pair's two readings ran in one launch-latency state (uncertainty.time_held)."""
    return U.time_held(U.rel_diff(pair["a"][2], pair["b"][2]))


def _temperature_scaled(long: list, ok: dict) -> list:
    """The repeats with each second reading scaled to its first's temperature (Note [Energy per call per °C],
    bench/uncertainty.py), where any of them moved in temperature; repeats the launch state moved set no coefficient."""
    dts = [p["temperature_diff_c"] for p in long if not math.isnan(p["temperature_diff_c"])]
    if not dts or max(map(abs, dts)) < U.TEMPERATURE_HELD_C:
        return []
    kind = next(iter(ok.values()))["identity"]["gpu"].get("name", "")
    scaled, used = U.scaled_repeats([(p["task"], U.rel_diff(p["a"][0], p["b"][0]), p["temperature_diff_c"])
                                     for p in long], kind, fit=[_time_held(p) for p in long])
    scaled = [abs(d) for d in scaled]
    by = "; ".join(f"{t}: {_pc(b)} per °C from {f or 'nowhere (not scaled)'}" for t, (b, f) in sorted(used.items()))
    return [f"  Between the two readings the parts' temperature moved up to {max(map(abs, dts)):.1f} °C; each "
            f"repeat scaled to its first reading's temperature by energy per call per °C ({by}; Note [Energy per "
            f"call per °C], bench/uncertainty.py) moved at most {_pc(max(scaled))} (RMS "
            f"{_pc(math.sqrt(statistics.fmean(x * x for x in scaled)))})."]


def _by_time_state(split: dict, long: list, ok: dict, repeats: list) -> list:
    """The repeats split by whether their GPU time per call held (``split``, Note [Launch-latency state]), with
    the probe's readings where the records have them."""
    held, moved = split["time_held"], split["time_moved"]
    if not moved["n"]:
        return []
    L = [f"  Where the GPU time per call held (within {U.TIME_MOVED * 100:.0f} %; {held['n']} pairs) the energy "
         f"moved at most {_pc(held['max_rel'])}; where it moved ({moved['n']} pairs, the light parts of "
         + ", ".join(sorted({p["task"] for p in long if not _time_held(p)}))
         + f") the energy moved with it, at most {_pc(moved['max_rel'])}: the card's launch-latency state "
         "(Note [Launch-latency state], clear_native/backend.py), which no card factor removes."]
    states = []
    for r in repeats:
        first = ok.get(r["task"]["id"].rsplit("/repeat", 1)[0])
        a, b = (_kept_state((x or {}).get("report", {}).get("run", {}).get("launch_state") or []) for x in (first, r))
        if a and b:
            states.append(f"{first['task']['id']}: {a} then {b}")
    if states:
        L.append("  Launch latency (µs per graph kernel, where the kept trials began/ended), first measurement then "
                 "repeat: " + "; ".join(states) + ".")
    return L


def _kept_state(readings: list) -> str:
    """'begin/end' latency of a run's kept trials (Note [One state per run], clear_native/launch_state.py)."""
    if not readings:
        return ""
    first = readings[launch_state.kept_from(readings)]["latency_s"]
    return f"{first * 1e6:.2f}/{readings[-1]['latency_s'] * 1e6:.2f}"


def _across_cards(checks: list) -> list:
    ref = U.card_reference(checks)
    L = []
    if len(ref) >= 2:
        base = sorted(ref)[0]
        f = U.card_factors(ref, base)
        ones = [v["one"] for v in f.values()]
        L.append(f"- **Across cards**: this run's {len(ref)} cards read the card reference {_pc(U.spread(ones))} apart "
                 "(one factor each: " + ", ".join(f"{c[:12]} {v['one']:.4f}" for c, v in sorted(f.items()))
                 + f", relative to {base[:12]}); each task ran on one card, so compare tasks across cards through "
                   "these factors.")
    if REPRODUCIBILITY.exists():
        rp = json.loads(REPRODUCIBILITY.read_text())
        versions = rp.get("versions") or []  # a report joined from runs of several (--allow-mixed) names them all
        code = f"{len(versions)} code/protocol versions" if len(versions) > 1 else \
            f"code {rp.get('identity', {}).get('code_version', '?')}"
        graphs = rp.get("instances") or [1]  # graphs of each part measured (Note [Graph instances])
        code += "" if graphs == [1] else f"; {' and '.join(map(str, graphs))} graph instances per part"
        floor = rp.get("repeatability_max_rel_from_ci", math.nan)  # with no process spread (largest_from_ci)
        L.append(f"  bench/reproducibility.py on {len(rp.get('cards', []))} cards of "
                 f"{rp.get('identity', {}).get('gpu', {}).get('name', '?')} ({code}): parts spread "
                 f"{_pc(rp.get('card_spread_raw_rel'))} "
                 f"raw, {_pc(rp.get('card_spread_normalized_rel'))} after the card reference (sigma_c); fresh "
                 f"processes on one card {_pc(rp.get('repeatability_max_rel'))} apart at most"
                 + (f" (the readings' own CIs alone would give {_pc(floor)})" if math.isfinite(floor) else "") + ", "
                 f"{_pc(rp.get('repeatability_max_rel_at_reference'))} once taken to "
                 f"{rp.get('reference_temperature_c', U.REFERENCE_TEMPERATURE_C):.0f} °C by each card's leakage; "
                 f"repeats inside the stated interval {_pc(rp.get('interval_coverage'), 1)} "
                 "(results/reproducibility.md).")
    elif not L:
        L.append("- **Across cards**: not measured here (one card); bench/reproducibility.py measures it.")
    return L


def reference(refs: list, ok: dict) -> list:
    """## The CLEAR authors' procedure beside ours, and the terms that explain its reading."""
    ref = [r for r in refs if r.get("status") == "ok"]
    if not ref:
        return []
    r = ref[-1]
    f0 = r["rows"][0]["reference"]
    cold = ok.get("bert-base/prefill/b1s8/bf16")
    cold_groups = {g["name"]: g for g in cold["report"]["groups"]} if cold else {}
    L = ["", "## The CLEAR authors' procedure beside ours", "",
         f"BERT-base, batch 1 × sequence 8, bf16, same modules, same card, same state (one copy, hot L2, as their "
         f"loop runs it). Theirs: the energy counter around a Python loop of {f0['calls_per_trial']:,} calls, "
         f"{f0['trials']} trials" + (" (their code's defaults)" if (f0["calls_per_trial"], f0["trials"]) == (10_000, 20)
                                    else "") + f". Ours: CUDA-graph replays, {r['ours_wall_s']:.0f} s for both.",
         "", "| component | ours (mJ/call) | CV | study, cold L2 (mJ/call) | theirs (mJ/call) | CV | theirs ÷ ours |",
         "|---|---|---|---|---|---|---|"]
    for row in r["rows"]:
        o, f = row["ours"], row["reference"]
        c = cold_groups.get(row["component"])
        cold_mj = f"{c['energy_per_call_j'] * 1e3:.4g}" if c else "–"
        L.append(f"| {row['component']} | {o['energy_per_call_j'] * 1e3:.4g} | {o['cv'] * 100:.2f} % | {cold_mj} | "
                 f"{f['energy_per_call_j'] * 1e3:.4g} | {f['cv'] * 100:.1f} % | "
                 f"{f['energy_per_call_j'] / o['energy_per_call_j']:.2f} |")
    from bench.reference import explain

    awake = r.get("run", {}).get("awake_idle_power_w")
    update_s = r.get("profile", {}).get("energy_counter_update_s")
    rows = r["rows"] if awake and update_s else []
    if rows:
        L += ["", "Their reading, term by term (Note [Reading a Python loop], bench/reference.py): the GPU waits for "
              "Python most of each call at awake-idle power, and the counter moves in steps.", "",
              "| component | wall ÷ GPU time | P_awake × wall (mJ) | + our dynamic (mJ) | = predicted (mJ) | theirs "
              "(mJ) | predicted ÷ theirs | counter step (J) | its CV alone | their CV |", "|---|---|---|---|---|---|---|---|---|---|"]
        for row in rows:
            f = row["reference"]
            e = explain(f, row["ours"], awake, update_s)  # from the raw readings, whatever code measured them
            L.append(f"| {row['component']} | {e['wall_over_gpu_time']:.1f} | {e['idle_term_j'] * 1e3:.4g} | "
                     f"{e['component_dynamic_j'] * 1e3:.4g} | {e['predicted_j'] * 1e3:.4g} | {e['measured_j'] * 1e3:.4g} | "
                     f"{e['predicted_over_measured']:.3f} | {e['counter_step_j']:.3g} | {_pc(e['quantisation_cv'], 1)} | "
                     f"{_pc(f['cv'], 1)} |")
        L += ["", "The idle term is most of their reading: their number measures how long Python takes per call, at "
              "awake-idle power. Their trial-to-trial CV is the counter's steps (a trial reads whole updates of the "
              "counter, each ~0.1 s of energy) plus the loop's own wall time varying between trials, which the idle "
              "term carries straight into the reading."]
    return L


__all__ = ["uncertainty", "reference", "repeat_pairs"]
