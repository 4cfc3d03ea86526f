"""Where repetitions run: on the GPU (GpuBackend), or in a simulation with a known truth.

The protocol (protocol.py, profile.py) talks only to this interface, so the same
code is tested on the CPU against the synthetic sensor and run on the GPU.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from . import clock
from ._native import core
from .graphs import ReplayResult, UnrolledGraph, awake_idle, calibration_load, replay


class GpuBackend:
    """Replays captures natively on a CUDA device and reads its sensors through NVML."""

    kind = "gpu"

    def __init__(self, device: int = 0) -> None:
        from .device import gpu_info, nvml_device
        from .errors import ClearNativeError

        if clock.is_virtual():
            raise ClearNativeError("a GPU runs on the real clock: leave clock.virtual() before measuring a GPU")
        self.device = device
        self.info = gpu_info(device).to_dict()
        self.source = core.NvmlSource(nvml_device(device))
        self._unrolled: dict = {}

    @property
    def identity(self) -> str:
        return f"{self.info['uuid']}-driver-{self.info['driver_version']}"

    def time_per_call_s(self, cap) -> float:
        """GPU time of one call, launched singly (a short probe)."""
        if cap.eager:
            return self._eager(cap, 20).gpu_time_per_call_s
        r = replay(cap.exec_handle, 20, device=cap.device)
        n = max(20, min(100_000, int(0.02 / max(r.gpu_time_per_call_s, 1e-7))))
        return replay(cap.exec_handle, n, device=cap.device).gpu_time_per_call_s

    def prepare(self, cap, copies: int):
        """What run() launches: the capture unrolled `copies` times (one graph)."""
        if cap.eager:
            return (cap, copies)
        key = (id(cap), copies)
        if key not in self._unrolled:
            self._unrolled[key] = (cap, UnrolledGraph(cap.graph_handle, copies, device=cap.device))
        return self._unrolled[key][1]

    def run(self, handle, launches: int) -> ReplayResult:
        if isinstance(handle, tuple):  # an eager capture
            cap, copies = handle
            return self._eager(cap, launches * copies)
        return replay(handle, launches, stamp_launches=True)

    def load(self, duration_s: float) -> ReplayResult:
        return calibration_load(duration_s, device=self.device)

    def awake_idle(self, duration_s: float) -> ReplayResult:
        return awake_idle(duration_s, device=self.device)

    def _eager(self, cap, calls: int) -> ReplayResult:
        import torch

        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        torch.cuda.synchronize(cap.device)
        t0 = core.monotonic_ns()
        start.record()
        with torch.no_grad():
            for _ in range(calls):
                cap.fn(*cap.args, **cap.kwargs)
        end.record()
        torch.cuda.synchronize(cap.device)
        return ReplayResult(start.elapsed_time(end) * 1e-3, calls, calls, t0, core.monotonic_ns())


@dataclass(frozen=True)
class SimulatedCall:
    """A component with a known truth: each call keeps the GPU busy `kernel_s` at `power_w`;
    each graph launch adds `launch_gap_s` at the backend's awake-idle power."""

    name: str
    kernel_s: float
    power_w: float
    launch_gap_s: float = 2e-6
    eager: bool = False
    swing_w: float = 0.0     # power swings +/- this much around its mean, as a power limiter cycling does
    swing_s: float = 0.0     # ... every swing_s (a square wave with a random phase per run)

    def true_time_per_call_s(self, copies: int) -> float:
        return self.kernel_s + self.launch_gap_s / copies

    def true_energy_per_call_j(self, copies: int, awake_w: float) -> float:
        return self.power_w * self.kernel_s + awake_w * self.launch_gap_s / copies


class SimulatedBackend:
    """Runs SimulatedCalls on the synthetic sensor: while a run lasts, the sensor's
    true power is what the call draws, so the protocol's answer can be checked."""

    kind = "simulated"

    def __init__(self, source, *, awake_w: float = 110.0, load_w: float = 650.0) -> None:
        self.source = source
        self.awake_w = awake_w
        self.load_w = load_w
        self.info = {"name": "simulated GPU", "uuid": "synthetic", "driver_version": "none"}
        self._rng = random.Random(0)

    identity = "synthetic"

    def time_per_call_s(self, call: SimulatedCall) -> float:
        return call.true_time_per_call_s(1)

    def prepare(self, call: SimulatedCall, copies: int):
        return (call, copies)

    def _hold(self, watts: float, seconds: float, swing_w: float = 0.0, swing_s: float = 0.0) -> tuple[int, int]:
        """Draws `watts` for `seconds`; with a swing, watts +/- swing_w alternating every swing_s (random phase)."""
        t0 = core.monotonic_ns()
        self.source.set_power(watts, t0)
        if swing_w and swing_s:
            step, sign = int(swing_s * 1e9), self._rng.choice((-1.0, 1.0))
            t = t0 - int(self._rng.uniform(0, swing_s) * 1e9)
            self.source.set_power(watts + sign * swing_w, t0)
            while t + step < t0 + seconds * 1e9:
                t, sign = t + step, -sign
                self.source.set_power(watts + sign * swing_w, t)
        clock.sleep(seconds)
        t1 = core.monotonic_ns()
        self.source.set_power(self.source.params.idle_w, t1)
        return t0, t1

    def run(self, handle, launches: int) -> ReplayResult:
        call, copies = handle
        per_call = call.true_time_per_call_s(copies)
        watts = call.true_energy_per_call_j(copies, self.awake_w) / per_call
        t0, t1 = self._hold(watts, launches * copies * per_call, call.swing_w, call.swing_s)
        # The GPU time is what the events would say: the sleep, as it really lasted,
        # its launches evenly spread over it.
        span_s = (t1 - t0) * 1e-9
        ends = tuple(span_s * (i + 1) / launches for i in range(launches))
        return ReplayResult(span_s, launches, launches * copies, t0, t1, launch_end_s=ends)

    def load(self, duration_s: float) -> ReplayResult:
        t0, t1 = self._hold(self.load_w, duration_s)
        return ReplayResult((t1 - t0) * 1e-9, 1, 0, t0, t1)

    def awake_idle(self, duration_s: float) -> ReplayResult:
        t0, t1 = self._hold(self.awake_w, duration_s)
        return ReplayResult((t1 - t0) * 1e-9, 1, 0, t0, t1)

    def python_loop_call(self, call: SimulatedCall, python_overhead_s: float = 100e-6):
        """A callable as a Python loop sees the component: each call costs the
        interpreter `python_overhead_s` of wall time, of which the GPU is busy only
        `kernel_s`; between calls it sits at awake-idle power."""
        busy = min(1.0, call.kernel_s / python_overhead_s)
        watts = busy * call.power_w + (1 - busy) * self.awake_w
        idle = self.source.params.idle_w

        def one_call() -> None:
            t0 = core.monotonic_ns()
            self.source.set_power(watts, t0)
            self.source.set_power(idle, t0 + int(python_overhead_s * 1e9))
            if clock.is_virtual():
                clock.sleep(python_overhead_s)
                return
            while core.monotonic_ns() - t0 < python_overhead_s * 1e9:
                pass

        return one_call
