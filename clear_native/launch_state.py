"""What a report says of the card's launch-latency state (Note [Launch-latency state], clear_native/backend.py)."""

from __future__ import annotations

import math

STATE_MOVED = 0.05  # the probe reads within 0.01 µs (1 %) for 45 s in one state; the two states are ~15-20 % apart


def launch_state_line(states: list) -> list:
    """A report's warning where the card's launch-latency state moved between the probes before and after the
    trials (Note [Launch-latency state], backend.py), else nothing."""
    lat = [s.get("latency_s", math.nan) for s in states]
    if len(lat) < 2 or any(math.isnan(x) or x <= 0 for x in lat[:2]):
        return []
    moved = lat[1] / lat[0] - 1
    if abs(moved) <= STATE_MOVED:
        return []
    return [f"the card's launch-latency state moved during the trials: {lat[0] * 1e6:.3f} -> {lat[1] * 1e6:.3f} µs "
            f"per tiny graph kernel ({moved * 100:+.0f} %); parts of a few µs per kernel follow it (on H200s up to "
            "~20 % in time and ~15 % in energy): compare them only with a run whose state matched (Note "
            "[Launch-latency state])"]
