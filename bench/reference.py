"""The CLEAR authors' procedure beside ours, like for like, and why the two readings differ (issue 16).

Their code reads the GPU's energy counter, calls the module N times from a Python loop, reads the
counter again and divides by N; 20 trials of 10,000 calls by default. Ours replays the same
module, in the same state (one copy, hot L2, as their loop runs it), as CUDA-graph launches and
reads every power sample. Their reading is explained by three measured terms (Note [Reading a
Python loop]):

    theirs per call  ~  P_awake x wall time per call  +  our dynamic energy per call

and its trial-to-trial spread by the counter's quantisation: the counter moves in steps of about
its update period x power (~100 ms x ~120 W on an H200), so a trial of a few hundred ms reads a
whole number of steps.
"""

from __future__ import annotations

import math
import time

import clear_native as cn


# Note [Reading a Python loop]
# ~~~~~~~~~~~~~~~~~~~~~~~~~~~~
# During the loop the GPU runs the component for t seconds of every call and waits for Python for
# the rest of the call's wall time w. While it waits it is awake (clocks up, nothing to do) and
# draws the awake-idle power P_awake, which our protocol measures; while it runs it draws P_awake
# plus the component's dynamic power. So the counter reads, per call,
#     P_awake * w + E_dyn,    E_dyn = our (mean power - P_awake) * t,
# when the kernels do not overlap Python's time (they do not: w >> t for small modules). Where
# w is 10x t, the first term is almost all of it: their number measures Python's speed at idle
# power, not the module. The counter itself advances in steps (SENSORS.md): trial energies are
# whole multiples of one step, so a trial's reading is off by up to a step, a CV of about
# step / sqrt(12) / trial energy, with no relation to the module's own variation.


def explain(ref: dict, ours: dict, awake_w: float, counter_update_s: float) -> dict:
    """The terms of their reading (Note [Reading a Python loop]), all measured; joules per call.
    ``counter_update_s``: how often the energy counter moves (the sensor profile's)."""
    wall = ref["wall_time_per_call_s"]
    idle_term = awake_w * wall
    predicted = idle_term + ours["dynamic_energy_per_call_j"]
    implied_w = ref["energy_per_call_j"] / wall if wall else math.nan
    trial_j = ref["energy_per_call_j"] * ref["calls_per_trial"]
    step = implied_w * counter_update_s  # the energy one counter update adds at the loop's power
    return {"awake_idle_w": awake_w, "wall_time_per_call_s": wall,
            "wall_over_gpu_time": wall / ours["gpu_time_per_call_s"],
            "idle_term_j": idle_term, "component_dynamic_j": ours["dynamic_energy_per_call_j"],
            "predicted_j": predicted, "measured_j": ref["energy_per_call_j"],
            "predicted_over_measured": predicted / ref["energy_per_call_j"] if ref["energy_per_call_j"] else math.nan,
            "implied_power_w": implied_w, "counter_step_j": step, "trial_energy_j": trial_j,
            # each of a trial's two readings is late by up to one update: the difference is off by a
            # triangular error of one step, whose standard deviation is step / sqrt(6)
            "quantisation_cv": step / math.sqrt(6) / trial_j if trial_j else math.nan}


def compare(lab, model, inputs, kw, profile, args) -> dict:
    """Their procedure and ours on BERT-base's attention and feed-forward parts, with explain()."""
    comps = cn.find_components(model, *inputs, model_kwargs=kw)
    groups = [g for g in cn.group_components(comps) if g.kind in ("self_attention", "mlp")]
    backend = lab.backend or cn.GpuBackend(0)
    caps = [backend.capture(g.representative.module, *g.representative.args, name=g.name,
                            **g.representative.kwargs) for g in groups]
    t0 = time.monotonic()
    ours = cn.measure(caps, backend=backend, profile=profile, min_trials=args.min_trials,
                      target_ci_rel=args.target_ci, window_s=args.window_s, budget_s=120)
    ours_wall = time.monotonic() - t0
    rows = []
    for g in groups:
        rep = g.representative
        t1 = time.monotonic()
        if lab.simulate:  # the loop as the simulated GPU sees it: Python's time per call at awake power
            loop = backend.python_loop_call(backend.capture(rep.module, *rep.args, name=g.name, **rep.kwargs))
            ref = cn.baselines.counter_loop(loop, n=args.reference_calls, trials=args.reference_trials, sleep_s=0.2,
                                            source=backend.source)
        else:
            ref = cn.baselines.counter_loop(rep.module, *rep.args, n=args.reference_calls,
                                            trials=args.reference_trials, sleep_s=0.2, **rep.kwargs)
        m = ours[g.name]
        o = {"energy_per_call_j": m.energy_per_call_j, "dynamic_energy_per_call_j": m.dynamic_energy_per_call_j,
             "cv": m.cv, "ci95_rel": m.ci95_rel, "trials": m.trials, "gpu_time_per_call_s": m.gpu_time_per_call_s,
             "mean_power_w": m.mean_power_w}
        rows.append({"component": g.name, "kind": g.kind, "ours": o, "reference": ref.to_dict(),
                     "reference_wall_s": time.monotonic() - t1,
                     "explained": explain(ref.to_dict(), o, ours.awake_idle_power_w,
                                          profile.energy_counter_update_s)})
    return {"rows": rows, "ours_wall_s": ours_wall, "calls": args.reference_calls, "trials": args.reference_trials,
            "run": {k: v for k, v in ours.to_dict().items() if k != "measurements"}}


__all__ = ["compare", "explain"]
