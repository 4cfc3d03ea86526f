"""The sensor profile: what this GPU's power sensor does, measured, not assumed.

``calibrate()`` runs the calibration kernel (all SMs busy) between two rests and
reads off the sample period, how far the samples lag a load step, how long the
start-up overshoot lasts, the energy counter's update period and idle power.
The profile is cached per GPU (UUID + driver version) and stored with results.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from . import clock
from .device import utc_now_iso
from .sampler import Sampler


@dataclass(frozen=True)
class SensorProfile:
    identity: str                  # GPU UUID and driver version (the cache key)
    sample_period_s: float         # median spacing of the driver's power samples
    sample_period_p99_s: float
    rise_lag_s: float              # load start -> first sample past half-way
    fall_lag_s: float              # load end -> first sample below half-way
    settle_s: float                # load start -> samples steady (overshoot over, lag included)
    overshoot_ratio: float         # highest sample during the load / steady level
    energy_counter_update_s: float # median interval between changes of the energy counter
    idle_power_w: float            # resting, before the load
    loaded_power_w: float          # steady level under the calibration load
    created: str

    def to_dict(self) -> dict:
        return asdict(self)


def _cache_path(identity: str) -> Path:
    root = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "clear_native"
    safe = "".join(c if c.isalnum() or c in "-._" else "_" for c in identity)
    return root / f"sensor-{safe}.json"


def calibrate(backend=None, *, device: int = 0, cache: bool = True, rest_s: float = 1.0,
              load_s: float = 1.5) -> SensorProfile:
    """Measures the sensor profile of a GPU (or of a backend), or loads it from the cache."""
    if backend is None:
        from .backend import GpuBackend

        backend = GpuBackend(device)
    path = _cache_path(backend.identity)
    if cache and backend.kind == "gpu" and path.exists():
        return SensorProfile(**json.loads(path.read_text()))
    # The period is not known yet: drain often enough for a sensor 10x faster than Hopper's.
    sampler = Sampler(source=backend.source, drain_interval_s=0.02, max_duration_s=60)
    sampler.start()
    try:
        clock.sleep(rest_s)
        load = backend.load(load_s)
        clock.sleep(0.6)
    finally:
        r = sampler.stop()
    profile = _profile_from(r, load.host_start_ns, load.host_end_ns, backend.identity,
                            _counter_update_s(backend.source))
    if backend.kind == "gpu":
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(profile.to_dict(), indent=1))
    return profile


def _counter_update_s(source, seconds: float = 0.6) -> float:
    """Reads the energy counter back-to-back and returns the median time between its changes."""
    stamps, values = [], []
    end = clock.now_s() + seconds
    while clock.now_s() < end:
        values.append(source.read_energy_mj())
        stamps.append(clock.now_s())
        if clock.is_virtual():
            clock.sleep(0.001)  # a real read blocks ~2.5 ms; on the virtual clock time must be moved
    v, t = np.array(values), np.array(stamps)
    changes = t[1:][np.diff(v) != 0]
    return float(np.median(np.diff(changes))) if changes.size >= 3 else math.nan


def _profile_from(r, t_on: int, t_off: int, identity: str, counter_s: float) -> SensorProfile:
    t, p = r.power_t_ns, r.power_w
    spacing = np.diff(r.power_wall_us) * 1e-6
    idle = float(np.median(p[(t >= r.start_ns + 200_000_000) & (t < t_on)]))
    loaded = p[(t >= t_on) & (t <= t_off)]
    lt = t[(t >= t_on) & (t <= t_off)]
    steady = float(np.median(loaded[lt >= t_on + (t_off - t_on) // 2]))
    half = idle + 0.5 * (steady - idle)
    above = lt[loaded > half]
    rise = (above[0] - t_on) * 1e-9 if above.size else math.nan
    after = t[t > t_off]
    below = after[p[t > t_off] < half]
    fall = (below[0] - t_off) * 1e-9 if below.size else math.nan
    # Settled: from here to the end of the load every sample stays in a band
    # around the steady level (3 % or 3 sigma of the late samples, the larger).
    late = loaded[lt >= t_on + (t_off - t_on) // 2]
    band = max(0.03 * steady, 3 * float(np.std(late)))
    outside = lt[(np.abs(loaded - steady) > band) & (lt < t_on + (t_off - t_on) // 2)]
    settle = ((outside[-1] - t_on) * 1e-9 if outside.size else rise) + float(np.median(spacing))
    return SensorProfile(
        identity=identity,
        sample_period_s=float(np.median(spacing)),
        sample_period_p99_s=float(np.percentile(spacing, 99)),
        rise_lag_s=float(rise),
        fall_lag_s=float(fall),
        settle_s=float(settle),
        overshoot_ratio=float(loaded.max() / steady),
        energy_counter_update_s=counter_s,
        idle_power_w=idle,
        loaded_power_w=steady,
        created=utc_now_iso(),
    )
