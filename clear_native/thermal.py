"""The die's temperature in a run: the warm-up that brings it to a steady temperature, and the card's leakage
(static power against temperature), measured in every run so that an energy can be given at a reference
temperature.

Note [Warm to a steady temperature]
~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~
A die follows its own load within 0.4 s on an H200, then warms a few °C more over ~10 s (the card reference's
copy: 49.6 -> 53 °C in 8 s, docs/measured.md), and power at a clock rises with temperature (leakage: +3.3 % per
10 °C for the copy). Stopped once two trials' power agreed (within 5 s), the warm-up left BLOOM-560m's decode
trials warming 40 -> 44 °C, their energy +3 % (CV 1.02 %). So it also waits until the temperature moved less
than WARM_MOVE_C over the last WARM_SPAN_S (at most max_warmup_s; power alone where the card reports no
temperature). It runs the first capture: measure_model lists the whole model first, the load its parts share.

Note [Leakage measured in every run]
~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~
The warm-up reaches the die's steady state, not the heatsink's: after a hot task the card stays warm for
minutes, so the same task in two fresh processes ran 3-5 °C apart and every light part moved with the card's
static power (Llama-3.2-1B's decode on GPU-279e5ac7: parts -3.8 W at 4.5 °C cooler, awake idle -3.5 W; parts
of ~130 W moved 2.9 %; docs/measured.md, 2026-11-28). A run therefore measures awake idle twice: as the card
came (after its rest, before the warm-up: "cool") and after the warm-up (at the workload's temperature). The
power between the two over the temperature between them is the card's leakage slope s (W/°C) at awake idle's
clocks; where the two lie less than MIN_SPAN_C apart the run gives none (NaN), and a card's runs together give
a steadier one (leakage_slope over every run's two points). An energy per call E at temperature T, taken at a
reference temperature T_ref, is E - s (T - T_ref) t (at_temperature): what the card's static power would have
cost at T_ref over the call's GPU time t. Heavier parts, at higher voltage and temperature, leak more per °C
than awake idle does, so for them this takes out part of the temperature's effect, not all of it. On four H200s
(protocol 8, docs/measured.md) the cards' slopes were 0.48-0.65 W/°C (residuals 0.3-0.5 W over 36-50 °C), one
run's own two readings 0.2-1.2 W/°C; repeats taken to 45 °C moved at most 1.10 % instead of 2.23 %.

Note [Hold a temperature]
~~~~~~~~~~~~~~~~~~~~~~~~~
The warm-up brings the die to its steady state over the heatsink as the card came, and the heatsink drifts for
minutes with what ran before: one task's two fresh processes on one card ran up to 4 °C apart and their parts
moved 0.5-1.6 % (results/reproducibility/2026-11-28_194941), while in five runs the repeats whose temperature held
within 1 °C, in one launch state and read to their target, moved at most 0.41-0.67 % (RMS 0.18-0.33 %).
measure(temperature_c=T) therefore sets the heatsink before the trials: it replays the first capture for
HOLD_LOAD_S and reads the die over its last HOLD_READ_S; below T - HOLD_TOL_C it heats the card (backend.heat: bf16
GEMMs at the power limit on a GPU), above T + HOLD_TOL_C it rests (the GPU idle), each step as long as the degrees
missing times the seconds a degree took so far (HOLD_S_PER_C to begin with; HOLD_PROBE_S at most until a step in
that direction moved it, HOLD_STEP_S after), and reads again,
until within HOLD_TOL_C or until max_s ends (the run then says so, and what it reached). The die follows its load
within a second, so what a hold matches between two processes is the heatsink under the same load; the trials
that follow then move both alike. A temperature the card cannot reach in max_s (below the heatsink's idle, above
what the heater holds) is reported, not waited for.
"""

from __future__ import annotations

import math
from typing import Callable

import numpy as np

from . import clock

WARM_MOVE_C, WARM_SPAN_S = 1.0, 3.0
MIN_SPAN_C = 2.0  # a run's cool and warm awake idle this far apart give its leakage slope
# hold(): the die read over the last HOLD_READ_S of HOLD_LOAD_S under the load; within HOLD_TOL_C of the target it
# is held; a step heats or rests HOLD_S_PER_C a degree missing (then as measured), HOLD_MIN_STEP_S-HOLD_STEP_S.
HOLD_LOAD_S, HOLD_READ_S, HOLD_TOL_C = 2.0, 1.0, 0.5
HOLD_S_PER_C, HOLD_MIN_STEP_S, HOLD_STEP_S = 4.0, 0.5, 10.0
HOLD_PROBE_S = 3.0  # a direction's first step at most, before its rate is known (a fast heatsink would overshoot)


def warm_up(backend, sampler, handle, launches: int, steady_window: Callable, max_s: float, say: Callable) -> float:
    """Phase warm-up: replay ``handle`` until two consecutive trials' mean power (over ``steady_window(result)``)
    agree within 0.5 % and the GPU's temperature is steady (Note [Warm to a steady temperature]). Returns the die's
    temperature over the last HOLD_READ_S under ``handle`` (°C; NaN where the card tells none), as hold() reads it."""
    t0, last, r, snap = clock.now_s(), None, None, None
    while clock.now_s() - t0 < max_s:
        r = backend.run(handle, launches)
        sampler.wait_for_samples(r.host_end_ns)
        snap = sampler.snapshot()
        power = snap.mean_power_w(*steady_window(r))
        if last is not None and abs(power - last) <= 0.005 * last and steady_temperature(snap, r.host_end_ns):
            say(f"warm: {power:.1f} W after {clock.now_s() - t0:.1f} s")
            break
        last = power
    else:
        say(f"warm-up stopped after {max_s:.1f} s without two trials within 0.5 % at a steady temperature")
    return snap.temperature_in(r.host_end_ns - int(HOLD_READ_S * 1e9), r.host_end_ns) if r is not None else math.nan


def hold(backend, sampler, handle, launches: int, target_c: float, max_s: float, say: Callable) -> dict:
    """Phase hold: heat or rest the card until the die reads ``target_c`` (within HOLD_TOL_C) under ``handle``
    (Note [Hold a temperature]). Returns what it did: target_c, temperature_c (the last reading under the load),
    reached, seconds, heated_s, rested_s, steps, readings ([seconds from its start, °C] under the load)."""
    t0 = clock.now_s()
    out = {"target_c": float(target_c), "reached": False, "heated_s": 0.0, "rested_s": 0.0, "steps": 0,
           "readings": []}
    s_per_c, learned = {"heat": HOLD_S_PER_C, "rest": HOLD_S_PER_C}, set()
    last = None  # (what the step did, its seconds, the reading before it)
    while True:
        now_c = _under_load(backend, sampler, handle, launches)
        out["readings"].append([round(clock.now_s() - t0, 2), round(now_c, 2)])
        out["temperature_c"] = now_c
        if not math.isfinite(now_c):
            say("hold: the card reports no temperature; measuring as it is")
            break
        if last is not None:  # how many seconds a degree took in that direction, where it moved enough to tell
            kind, secs, before = last
            moved = (now_c - before) * (1 if kind == "heat" else -1)
            if moved > 0.25:
                s_per_c[kind] = secs / moved
                learned.add(kind)
        gap = float(target_c) - now_c
        if abs(gap) <= HOLD_TOL_C:
            out["reached"] = True
            break
        if clock.now_s() - t0 >= max_s:
            say(f"hold: {now_c:.1f} °C after {max_s:.0f} s, not {target_c:.1f} ± {HOLD_TOL_C} °C; measuring as it is")
            break
        kind = "heat" if gap > 0 else "rest"
        secs = min(max(abs(gap) * s_per_c[kind], HOLD_MIN_STEP_S), HOLD_STEP_S if kind in learned else HOLD_PROBE_S,
                   max(max_s - (clock.now_s() - t0), 0.0))
        if kind == "heat":
            backend.heat(secs)
        else:
            clock.sleep(secs)
        out[f"{'heated' if kind == 'heat' else 'rested'}_s"] += secs
        out["steps"] += 1
        last = (kind, secs, now_c)
    out["seconds"] = clock.now_s() - t0
    if out["reached"]:
        say(f"hold: {now_c:.1f} °C (target {target_c:.1f}) after {out['seconds']:.1f} s, heated {out['heated_s']:.1f} s, "
            f"rested {out['rested_s']:.1f} s")
    return out


def temperature_line(warm_c: float, hold_: dict) -> list:
    """A report's line on the die's temperature as the trials began, and the hold before them (Note [Hold a
    temperature]); nothing where the card told none and there was no hold."""
    if not hold_:
        return [f"die at {warm_c:.1f} °C under the first capture as the trials began (not held)"] \
            if warm_c is not None and math.isfinite(warm_c) else []
    how = f"heated {hold_['heated_s']:.1f} s, rested {hold_['rested_s']:.1f} s, {hold_['seconds']:.0f} s in all"
    if hold_["reached"]:
        return [f"die held at {hold_['temperature_c']:.1f} °C (target {hold_['target_c']:.1f} ± {HOLD_TOL_C} °C) under "
                f"the first capture before the trials: {how}"]
    return [f"die NOT brought to {hold_['target_c']:.1f} ± {HOLD_TOL_C} °C: {hold_['temperature_c']:.1f} °C when the "
            f"hold's time ended ({how}); measured at that temperature"]


def _under_load(backend, sampler, handle, launches: int) -> float:
    """The die's temperature (°C) over the last HOLD_READ_S of HOLD_LOAD_S of ``handle``'s replay."""
    t0 = clock.now_ns()
    r = backend.run(handle, launches)
    while (r.host_end_ns - t0) * 1e-9 < HOLD_LOAD_S:
        r = backend.run(handle, launches)
    sampler.wait_for_samples(r.host_end_ns)
    return sampler.snapshot().temperature_in(r.host_end_ns - int(HOLD_READ_S * 1e9), r.host_end_ns)


def steady_temperature(snap, now_ns: int) -> bool:
    """The temperature moved less than WARM_MOVE_C over the last WARM_SPAN_S, all of which the run's status rows
    cover; True where the card reports no temperature."""
    if not np.isfinite(snap.temperature_c).any():
        return True
    since = now_ns - int(WARM_SPAN_S * 1e9)
    return bool(snap.status_t_ns.size) and snap.status_t_ns[0] <= since and \
        abs(snap.temperature_moved_c(since, now_ns)) < WARM_MOVE_C


def leakage_slope(points) -> float:
    """W per °C of static power: the least-squares slope of awake-idle power against temperature through
    ``points`` [(°C, W)] (a run's cool and warm awake idle, or every run's of one card); NaN where the points'
    temperatures span less than MIN_SPAN_C or any is missing (Note [Leakage measured in every run])."""
    pts = [(float(t), float(w)) for t, w in points]
    if len(pts) < 2 or any(not (math.isfinite(t) and math.isfinite(w)) for t, w in pts):
        return math.nan
    t = np.array([p[0] for p in pts])
    if t.max() - t.min() < MIN_SPAN_C:
        return math.nan
    return float(np.polyfit(t, np.array([p[1] for p in pts]), 1)[0])


def at_temperature(energy_j: float, time_s: float, temperature_c: float, slope_w_per_c: float,
                   reference_c: float) -> float:
    """An energy per call measured at ``temperature_c`` as the card would read it at ``reference_c``: less (or
    plus) the static power its leakage slope adds over the call's GPU time (Note [Leakage measured in every
    run]). NaN where the slope or the temperature is unknown."""
    return energy_j - slope_w_per_c * (temperature_c - reference_c) * time_s


__all__ = ["warm_up", "hold", "temperature_line", "steady_temperature", "leakage_slope", "at_temperature", "WARM_MOVE_C", "WARM_SPAN_S",
           "MIN_SPAN_C", "HOLD_TOL_C"]
