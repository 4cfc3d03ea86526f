"""Energy of an arbitrary code region, like other energy tools' begin/end windows.

    with Meter(device=0) as m:
        train_step()
    m.result.energy_j, m.result.mean_power_w

Backed by the native sampler: every driver power sample in the window, and the
energy counter as a cross-check. The sensor reports every ~20 ms over a short
window; regions much shorter than ~0.1 s are not resolved (use measure()).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np

from ._native import core
from .errors import SamplerStateError
from .sampler import Sampler, SamplerResult


@dataclass(frozen=True)
class MeterResult:
    duration_s: float        # host monotonic time between begin() and end()
    energy_j: float          # mean of the samples stamped in the window x duration
    counter_energy_j: float  # the energy counter over the window (interpolated between reads)
    mean_power_w: float
    samples: int             # driver samples in the window
    samples_lost: int
    temperature_c: tuple     # (min, max)
    sm_clock_mhz: tuple      # (min, max)

    def to_dict(self) -> dict:
        return asdict(self)


class Meter:
    """A begin()/end() energy window (also a context manager). See the module's doc."""

    def __init__(self, device: int = 0, *, source=None, drain_interval_s: float = 0.2) -> None:
        self._sampler = Sampler(device, source=source, drain_interval_s=drain_interval_s, energy_interval_s=0.25)
        self._begin_ns: int | None = None
        self.result: MeterResult | None = None
        self.samples: SamplerResult | None = None  # the raw rows of the last window

    def begin(self) -> "Meter":
        self._sampler.start()
        self._begin_ns = core.monotonic_ns()
        return self

    def end(self) -> MeterResult:
        if self._begin_ns is None:
            raise SamplerStateError("Meter.end() without begin()")
        t1 = core.monotonic_ns()
        self._sampler.wait_for_samples(t1, timeout_s=0.5)  # the sample covering the end
        r = self._sampler.stop()
        t0, self._begin_ns = self._begin_ns, None
        m = r.in_window(t0, t1)
        mean_w = float(r.power_w[m].mean()) if m.any() else math.nan
        st = (r.status_t_ns >= t0) & (r.status_t_ns <= t1)

        def span(v):
            v = v[st & np.isfinite(v)]
            return (float(v.min()), float(v.max())) if v.size else (math.nan, math.nan)

        self.samples = r
        self.result = MeterResult(duration_s=(t1 - t0) * 1e-9, energy_j=mean_w * (t1 - t0) * 1e-9,
                                  counter_energy_j=r.counter_energy_j(t0, t1), mean_power_w=mean_w,
                                  samples=int(m.sum()), samples_lost=r.samples_lost,
                                  temperature_c=span(r.temperature_c), sm_clock_mhz=span(r.sm_clock_mhz))
        return self.result

    def __enter__(self) -> "Meter":
        return self.begin()

    def __exit__(self, exc_type, exc, tb) -> None:
        if self._begin_ns is not None:
            self.end()
