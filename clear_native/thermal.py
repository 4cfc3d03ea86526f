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
"""

from __future__ import annotations

import math
from typing import Callable

import numpy as np

from . import clock

WARM_MOVE_C, WARM_SPAN_S = 1.0, 3.0
MIN_SPAN_C = 2.0  # a run's cool and warm awake idle this far apart give its leakage slope


def warm_up(backend, sampler, handle, launches: int, steady_window: Callable, max_s: float, say: Callable) -> None:
    """Phase warm-up: replay ``handle`` until two consecutive trials' mean power (over ``steady_window(result)``)
    agree within 0.5 % and the GPU's temperature is steady (Note [Warm to a steady temperature])."""
    t0, last = clock.now_s(), None
    while clock.now_s() - t0 < max_s:
        r = backend.run(handle, launches)
        sampler.wait_for_samples(r.host_end_ns)
        snap = sampler.snapshot()
        power = snap.mean_power_w(*steady_window(r))
        if last is not None and abs(power - last) <= 0.005 * last and steady_temperature(snap, r.host_end_ns):
            say(f"warm: {power:.1f} W after {clock.now_s() - t0:.1f} s")
            return
        last = power
    say(f"warm-up stopped after {max_s:.1f} s without two trials within 0.5 % at a steady temperature")


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


__all__ = ["warm_up", "steady_temperature", "leakage_slope", "at_temperature", "WARM_MOVE_C", "WARM_SPAN_S",
           "MIN_SPAN_C"]
