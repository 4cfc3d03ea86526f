"""Energy of an arbitrary code region, like other energy tools' begin/end windows.

    with Meter(device=0) as m:
        train_step()
    m.result.energy_j, m.result.mean_power_w

    with Meter(devices=[0, 1]) as m:   # a region over several GPUs (tensor parallel, say)
        step()
    m.result.energy_j, [d.energy_j for d in m.result.per_device]

Backed by the native sampler: every driver power sample in the window, and the
energy counter as a cross-check. The sensor reports every ~20 ms over a short
window; regions much shorter than ~0.1 s are not resolved (use measure()).

Note [A window ends when the GPU is done]: GPU work is asynchronous, so a
window that ended when the host left the region would leave the kernels still
queued outside it. begin() and end() call ``sync`` first: by default
``torch.cuda.synchronize(device)`` when PyTorch is already imported (and sees a
GPU), nothing otherwise; pass ``sync=None`` to measure the host's span alone, or
any callable (a stream's synchronize, say).
"""

from __future__ import annotations

import math
import sys
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


_DEFAULT = object()


def _device_index(device) -> int:
    """A CUDA device index from 0, "cuda:0", "cuda" or a torch.device."""
    if isinstance(device, bool):
        raise TypeError(f"device must be a CUDA device index, 'cuda:N' or a torch.device, got {device!r}")
    if isinstance(device, int):
        return device
    text = str(device)
    if text == "cuda":
        return 0
    if text.startswith("cuda:") and text[5:].isdigit():
        return int(text[5:])
    raise TypeError(f"device must be a CUDA device index, 'cuda:N' or a torch.device, got {device!r}")


def _torch_sync(device: int):
    """torch.cuda.synchronize(device) where PyTorch is loaded and sees a GPU; None otherwise."""
    torch = sys.modules.get("torch")
    if torch is None or not torch.cuda.is_available():
        return None
    return lambda: torch.cuda.synchronize(device)


@dataclass(frozen=True)
class MultiMeterResult:
    """A region over several GPUs: one window on one clock for all, each GPU's own result, and the total."""

    devices: tuple           # the CUDA device indices (or sources) measured, in order
    duration_s: float
    energy_j: float          # sum over the GPUs
    counter_energy_j: float  # sum of the energy counters
    per_device: tuple        # MeterResult per GPU

    def to_dict(self) -> dict:
        return asdict(self)


def _window(r: SamplerResult, t0: int, t1: int) -> MeterResult:
    """One GPU's energy in [t0, t1] from its sampler's rows."""
    m = r.in_window(t0, t1)
    mean_w = float(r.power_w[m].mean()) if m.any() else math.nan
    st = (r.status_t_ns >= t0) & (r.status_t_ns <= t1)

    def span(v):
        v = v[st & np.isfinite(v)]
        return (float(v.min()), float(v.max())) if v.size else (math.nan, math.nan)

    return MeterResult(duration_s=(t1 - t0) * 1e-9, energy_j=mean_w * (t1 - t0) * 1e-9,
                       counter_energy_j=r.counter_energy_j(t0, t1), mean_power_w=mean_w, samples=int(m.sum()),
                       samples_lost=r.samples_lost, temperature_c=span(r.temperature_c),
                       sm_clock_mhz=span(r.sm_clock_mhz))


class Meter:
    """A begin()/end() energy window (also a context manager). See the module's doc.

    Args:
        device: the CUDA device (an index, "cuda:N" or a torch.device) whose sensors to read.
        devices: several devices instead: one window on one clock over all of them, every sample of each
            GPU's sensor; ``result`` is then a MultiMeterResult (per GPU and total).
        sync: called before the window begins and before it ends, so that queued GPU work falls
            inside it (Note [A window ends when the GPU is done]); default: torch.cuda.synchronize of
            each device.
        source, sources: power sources instead of the devices' NVML sensors (tests: synthetic_sensor()).
    """

    def __init__(self, device=0, *, devices=None, sync=_DEFAULT, source=None, sources=None,
                 drain_interval_s: float = 0.2) -> None:
        self._multi = devices is not None or sources is not None
        self.devices = tuple(_device_index(d) for d in devices) if devices is not None else (_device_index(device),)
        srcs = list(sources) if sources is not None else [source] * len(self.devices)
        if sources is not None and devices is None:
            self.devices = tuple(range(len(srcs)))
        if len(srcs) != len(self.devices) or not srcs:
            raise ValueError(f"Meter: {len(srcs)} sources for {len(self.devices)} devices; give one per device")
        if sync is _DEFAULT:
            syncs = [s for s in (_torch_sync(d) for d in self.devices) if s is not None]
            sync = (lambda: [s() for s in syncs]) if syncs else None
        if sync is not None and not callable(sync):
            raise TypeError(f"sync must be a callable or None, got {sync!r}")
        self._sync = sync
        self._samplers = [Sampler(d, source=s, drain_interval_s=drain_interval_s, energy_interval_s=0.25)
                          for d, s in zip(self.devices, srcs)]
        self._begin_ns: int | None = None
        self.result: MeterResult | MultiMeterResult | None = None
        self.samples: SamplerResult | None = None  # the raw rows of the last window (the first device's)
        self.samples_per_device: list = []

    def begin(self) -> "Meter":
        if self._sync is not None:
            self._sync()  # work queued before the region stays out of it
        started = []
        try:
            for s in self._samplers:
                s.start()
                started.append(s)
        except BaseException:
            for s in started:
                self._stop_quietly(s)
            raise
        self._begin_ns = core.monotonic_ns()
        return self

    def end(self):
        if self._begin_ns is None:
            raise SamplerStateError("Meter.end() without begin()")
        if self._sync is not None:
            try:
                self._sync()  # the region's queued work falls inside the window
            except BaseException:
                self._abandon()
                raise
        t1 = core.monotonic_ns()
        for s in self._samplers:
            s.wait_for_samples(t1, timeout_s=0.5)  # the sample covering the end, on every GPU
        t0, self._begin_ns = self._begin_ns, None
        rows, error = [], None
        for s in self._samplers:  # every sampler is stopped, even after one fails
            try:
                rows.append(s.stop())
            except Exception as exc:  # noqa: BLE001 - raised below, once all are stopped
                error = error or exc
        if error is not None:
            raise error
        self.samples, self.samples_per_device = rows[0], rows
        per = tuple(_window(r, t0, t1) for r in rows)
        self.result = per[0] if not self._multi else MultiMeterResult(
            self.devices, (t1 - t0) * 1e-9, sum(p.energy_j for p in per), sum(p.counter_energy_j for p in per), per)
        return self.result

    @staticmethod
    def _stop_quietly(sampler) -> None:
        if sampler.running:
            try:
                sampler.stop()
            except Exception:  # noqa: BLE001 - the body's exception is the one the caller needs
                pass

    def _abandon(self) -> None:
        """Stops the samplers without a result (the body failed); never raises."""
        self._begin_ns = None
        for s in self._samplers:
            self._stop_quietly(s)

    def __enter__(self) -> "Meter":
        return self.begin()

    def __exit__(self, exc_type, exc, tb) -> None:
        if self._begin_ns is None:
            return
        if exc_type is not None:
            self._abandon()  # the body's exception propagates; a sampler error never hides it
            return
        self.end()
