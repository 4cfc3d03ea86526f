"""Where repetitions run: on the GPU (GpuBackend here), or in a simulation with a known truth
(simulated.py: SimulatedBackend).

The protocol (protocol.py, profile.py) and measure_model talk only to this interface, so the
same code is tested on the CPU against the synthetic sensor and run on the GPU:
- time_per_call_s(item), prepare(item, unroll), run(handle, launches), load(s), awake_idle(s);
- capture(fn, *args, name=, **kwargs): what measure() takes for a callable;
- l2_bytes(model), kernel_times_s(model, components, inputs, kw), in_context (bool);
- source (a power source), info (the card), identity (the profile cache key), kind.
"""

from __future__ import annotations

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

    in_context = True

    def capture(self, fn, *args, name: str, **kwargs):
        from .graph_capture import capture

        return capture(fn, *args, name=name, eager_fallback=True, **kwargs)

    def l2_bytes(self, model) -> int:
        from .cold_l2 import l2_bytes_of

        return l2_bytes_of(model)

    def kernel_times_s(self, model, components, inputs, kw) -> tuple:
        from .work import kernel_times_s

        return kernel_times_s(model, components, inputs, kw)

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
