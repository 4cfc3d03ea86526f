"""The native sampler, from Python: every power sample the driver buffers, the
energy counter and the GPU's status, stamped on the host's monotonic clock.

    with Sampler(device=0) as s:
        run_workload()
    r = s.result
    r.power_w, r.power_t_ns   # every driver sample in the window

``synthetic_sensor()`` gives a modelled sensor with a known truth for tests.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields

import numpy as np

from . import clock
from ._native import core
from .device import nvml_device
from .errors import ClearNativeError


# NVML clocks-event reason bits (nvmlClocksEventReasons).
CLOCK_EVENT_REASONS = {
    0x1: "gpu_idle", 0x2: "applications_clocks_setting", 0x4: "sw_power_cap", 0x8: "hw_slowdown",
    0x10: "sync_boost", 0x20: "sw_thermal_slowdown", 0x40: "hw_thermal_slowdown",
    0x80: "hw_power_brake_slowdown", 0x100: "display_clock_setting",
}


def reason_names(mask: int) -> list[str]:
    """The names of the bits set in an NVML clocks-event reasons mask."""
    return [name for bit, name in CLOCK_EVENT_REASONS.items() if mask & bit] + (
        [f"unknown_0x{mask & ~sum(CLOCK_EVENT_REASONS):x}"] if mask & ~sum(CLOCK_EVENT_REASONS) else [])


def synthetic_sensor(**params) -> "core.SyntheticSource":
    """A modelled power sensor with a known truth (see csrc/synthetic.hpp).

    Defaults follow the Hopper sensor of SENSORS.md. Parameters (units in names):
    sample_period_s, period_jitter_s, window_s, lag_s, noise_w, buffer_size,
    energy_update_s, energy_read_delay_s, status_update_s, idle_w,
    overshoot_fraction, overshoot_s, wall_offset_ns, seed, fail_after_reads,
    fail_code, temperature_c (at idle), thermal_c_per_w and thermal_tau_s (the card heats as it draws: 0, never),
    sm_clock_mhz.

    The returned source has ``set_power(watts, at_ns=-1)`` to drive the load and
    ``true_energy_j(t0_ns, t1_ns)`` / ``true_power_w(t_ns)`` / ``true_temperature_c(t_ns)`` to read the truth.
    """
    p = core.SyntheticParams()
    for name, value in params.items():
        if not hasattr(p, name):
            raise TypeError(f"synthetic_sensor() got an unknown parameter {name!r}")
        setattr(p, name, value)
    return core.SyntheticSource(p)


@dataclass
class SamplerResult:
    """What one start()..stop() window collected. Times are host monotonic ns."""

    source: str
    power_t_ns: np.ndarray          # int64, each driver sample's stamp on the monotonic clock
    power_wall_us: np.ndarray       # int64, the driver's own stamp (µs of its wall clock)
    power_mw: np.ndarray            # float64, board power, mW
    energy_t_ns: np.ndarray         # int64, middle of each counter read
    energy_mj: np.ndarray           # uint64, energy counter, mJ since an arbitrary origin
    energy_call_ns: np.ndarray      # int64, how long each counter read blocked
    status_t_ns: np.ndarray         # int64
    instant_power_mw: np.ndarray    # float64, NaN where unsupported
    temperature_c: np.ndarray       # float64, °C
    sm_clock_mhz: np.ndarray        # float64, MHz
    clock_event_reasons: np.ndarray # uint64 bit mask (NVML clocks-event reasons)
    gap_after_ns: np.ndarray        # int64, last sample before each gap
    gap_before_ns: np.ndarray       # int64, first sample after it
    gap_lost: np.ndarray            # int64, samples missing in it (estimate)
    gap_overflow: np.ndarray        # bool, True: the driver buffer overflowed (lost by us)
    start_ns: int
    stop_ns: int
    drains: int
    duplicates: int                 # re-stamped repeats of samples already kept (dropped)
    max_drain_interval_ns: int
    fast_thread_cpu_s: float        # CPU time of the drain/status thread
    energy_thread_cpu_s: float      # CPU time of the energy-counter thread
    clock_offset_ns: int            # wall clock minus monotonic clock at start
    clock_offset_uncertainty_ns: int
    clock_drift_ns: int             # change of that offset between start and stop
    driver_buffer_capacity: int     # samples the driver keeps

    @property
    def power_w(self) -> np.ndarray:
        return self.power_mw / 1000.0

    @property
    def duration_s(self) -> float:
        return (self.stop_ns - self.start_ns) * 1e-9

    @property
    def samples_lost(self) -> int:
        """Samples the driver overwrote before they were drained (0 when lossless)."""
        return int(self.gap_lost[self.gap_overflow].sum())

    @property
    def sensor_gaps(self) -> int:
        """Long intervals the sensor itself left (no overflow): no sample was lost, none was made."""
        return int((~self.gap_overflow).sum())

    @property
    def sampler_cpu_fraction(self) -> float:
        """CPU time of both sampler threads, as a fraction of one core over the window."""
        d = self.duration_s
        return (self.fast_thread_cpu_s + self.energy_thread_cpu_s) / d if d > 0 else math.nan

    @property
    def median_sample_period_s(self) -> float:
        if self.power_wall_us.size < 2:
            return math.nan
        return float(np.median(np.diff(self.power_wall_us))) * 1e-6

    def in_window(self, t0_ns: int, t1_ns: int) -> np.ndarray:
        """Boolean mask of the power samples stamped in [t0_ns, t1_ns]."""
        return (self.power_t_ns >= t0_ns) & (self.power_t_ns <= t1_ns)

    def mean_power_w(self, t0_ns: int, t1_ns: int) -> float:
        """Mean of the driver's samples stamped in [t0_ns, t1_ns]; NaN if none."""
        m = self.in_window(t0_ns, t1_ns)
        return float(self.power_w[m].mean()) if m.any() else math.nan

    def temperature_in(self, t0_ns: int, t1_ns: int) -> float:
        """The GPU's temperature during [t0_ns, t1_ns] (°C): the mean of the status rows inside, else the last row
        before its end (status is read every ~0.1 s; a short window can fall between two reads); NaN if none."""
        ok = np.isfinite(self.temperature_c)
        inside = ok & (self.status_t_ns >= t0_ns) & (self.status_t_ns <= t1_ns)
        if inside.any():
            return float(self.temperature_c[inside].mean())
        before = np.flatnonzero(ok & (self.status_t_ns <= t1_ns))
        return float(self.temperature_c[before[-1]]) if before.size else math.nan

    def clock_events_in(self, t0_ns: int, t1_ns: int) -> list[str]:
        """The NVML clocks-event reasons any status row in [t0_ns, t1_ns] reported (reason_names)."""
        rows = (self.status_t_ns >= t0_ns) & (self.status_t_ns <= t1_ns)
        return reason_names(int(np.bitwise_or.reduce(self.clock_event_reasons[rows]))) if rows.any() else []

    def sm_clock_range_mhz(self, t0_ns: int, t1_ns: int) -> list[float]:
        """[lowest, highest] SM clock the status rows in [t0_ns, t1_ns] read, MHz ([] where none)."""
        rows = (self.status_t_ns >= t0_ns) & (self.status_t_ns <= t1_ns) & np.isfinite(self.sm_clock_mhz)
        return [float(self.sm_clock_mhz[rows].min()), float(self.sm_clock_mhz[rows].max())] if rows.any() else []

    def temperature_moved_c(self, t0_ns: int, t1_ns: int) -> float:
        """The temperature at the last status row in [t0_ns, t1_ns] minus at the first (°C); NaN with fewer than two."""
        ok = np.isfinite(self.temperature_c) & (self.status_t_ns >= t0_ns) & (self.status_t_ns <= t1_ns)
        temps = self.temperature_c[ok]
        return float(temps[-1] - temps[0]) if temps.size >= 2 else math.nan

    def sample_span_ns(self, t0_ns: int, t1_ns: int) -> tuple[int, int]:
        """Stamps of the first and last sample in [t0_ns, t1_ns]: the span sample_integral_j covers."""
        t = self.power_t_ns[self.in_window(t0_ns, t1_ns)]
        return (int(t[0]), int(t[-1])) if t.size else (t0_ns, t0_ns)

    def sample_integral_j(self, t0_ns: int, t1_ns: int) -> float:
        """Energy from the samples in [t0_ns, t1_ns] (trapezoids between their stamps), J.

        It covers sample_span_ns(t0_ns, t1_ns); compare the counter over that span.
        """
        m = self.in_window(t0_ns, t1_ns)
        if m.sum() < 2:
            return math.nan
        return float(np.trapezoid(self.power_w[m], self.power_t_ns[m].astype(np.float64))) * 1e-9

    def counter_energy_j(self, t0_ns: int, t1_ns: int) -> float:
        """Energy in [t0_ns, t1_ns] from the energy counter, interpolated between reads, J."""
        if self.energy_t_ns.size < 2:
            return math.nan
        e = self.energy_mj.astype(np.float64)
        e0, e1 = np.interp([t0_ns, t1_ns], self.energy_t_ns, e)
        return float(e1 - e0) / 1000.0

    def to_dict(self) -> dict:
        """JSON-ready: arrays become lists."""
        out = {}
        for f in fields(self):
            v = getattr(self, f.name)
            out[f.name] = v.tolist() if isinstance(v, np.ndarray) else v
        return out


def drain_interval_for(sample_period_s: float, source) -> float:
    """Drain 10x as often as the driver's buffer fills (Note [Sampler cadence]), at most every 200 ms."""
    return min(0.2, source.sample_buffer_capacity * sample_period_s / 10)


class Sampler:
    """Samples a GPU's power sensors from a native thread between start() and stop().

    Args:
        device: CUDA device index whose sensors to read (ignored when ``source`` is given).
        source: a power source (``synthetic_sensor()``, or ``core.NvmlSource``).
        drain_interval_s: how often the driver's sample buffer (~2.4 s on Hopper) is drained.
        status_interval_s: how often instant power, temperature, SM clock and reasons are read.
        energy_interval_s: how often the energy counter is read (on a thread of its own).
        max_duration_s: longest window the preallocated buffers hold.
    """

    _MIN_SAMPLE_SPACING_S = 0.005  # the driver's samples come >= 10 ms apart (p1): a 2x margin

    def __init__(self, device: int = 0, *, source=None, drain_interval_s: float = 0.2,
                 status_interval_s: float = 0.1, energy_interval_s: float = 1.0,
                 max_duration_s: float = 3600.0) -> None:
        for name, v in (("drain_interval_s", drain_interval_s), ("status_interval_s", status_interval_s),
                        ("energy_interval_s", energy_interval_s), ("max_duration_s", max_duration_s)):
            if not (isinstance(v, (int, float)) and v > 0 and math.isfinite(v)):
                raise ValueError(f"{name} must be a positive number of seconds, got {v!r}")
        self.source = source if source is not None else core.NvmlSource(nvml_device(device))
        spacing = self._MIN_SAMPLE_SPACING_S
        if isinstance(self.source, core.SyntheticSource):
            p = self.source.params
            spacing = min(spacing, p.sample_period_s - 2 * p.period_jitter_s)
        cfg = core.SamplerConfig()
        cfg.drain_interval_s = drain_interval_s
        cfg.status_interval_s = status_interval_s
        cfg.energy_interval_s = energy_interval_s
        cfg.max_power_samples = int(max_duration_s / spacing) + 2 * self.source.sample_buffer_capacity + 64
        cfg.max_status_rows = int(1.5 * max_duration_s / status_interval_s) + 64
        cfg.max_energy_rows = int(1.5 * max_duration_s / energy_interval_s) + 64
        self.max_duration_s = max_duration_s
        self._native = core.Sampler(self.source, cfg)
        self.result: SamplerResult | None = None

    @property
    def running(self) -> bool:
        return self._native.running

    def start(self) -> "Sampler":
        """Reads every sensor once here (errors surface now), then starts the threads."""
        self._native.start()
        return self

    def stop(self) -> SamplerResult:
        """Stops the threads and returns what they collected.

        If a thread met an error, it is raised here with the rows collected up
        to it attached as ``err.result``.
        """
        self._native.stop()
        raw = self._native.result()
        self.result = SamplerResult(source=self.source.describe(), **raw)
        try:
            self._native.rethrow_error()
        except ClearNativeError as err:
            err.result = self.result
            raise
        return self.result

    def snapshot(self) -> SamplerResult:
        """The rows collected so far, while the threads keep running.

        Statistics that only stop() settles (CPU time, drains, stop_ns) are 0. If a
        thread met an error (the GPU lost, say), it is raised here, with the rows so
        far attached as ``err.result``: a caller learns of it at its next read.
        """
        result = SamplerResult(source=self.source.describe(), **self._native.result())
        try:
            self._native.rethrow_error()
        except ClearNativeError as err:
            err.result = result
            raise
        return result

    def wait_for_samples(self, t_ns: int, timeout_s: float = 2.0) -> bool:
        """Waits until a sample stamped at or after monotonic ``t_ns`` has been drained.

        Asks the drain thread to drain now (every 10 ms) rather than at its next
        tick. Returns False if none came within ``timeout_s``.
        """
        deadline = clock.now_s() + timeout_s
        while self._native.newest_sample_ns() < t_ns:
            if clock.now_s() > deadline:
                return False
            self._native.request_drain()
            clock.sleep(0.01)
        return True

    def __enter__(self) -> "Sampler":
        return self.start()

    def __exit__(self, exc_type, exc, tb) -> None:
        if self.running:
            try:
                self.stop()
            except ClearNativeError:
                if exc_type is None:
                    raise  # an error of the sampler's own; don't hide one from the body


__all__ = ["Sampler", "SamplerResult", "drain_interval_for", "synthetic_sensor"]
