"""Where repetitions run: on the GPU (GpuBackend here), or in a simulation with a known truth
(simulated.py: SimulatedBackend).

The protocol (protocol.py, profile.py) and measure_model talk only to this interface, so the
same code is tested on the CPU against the synthetic sensor and run on the GPU:
- time_per_call_s(item), prepare(item or its instances, unroll), run(handle, launches), load(s), awake_idle(s);
- instances(item, n, say): the item and fresh captures of its call, up to n (Note [Graph instances], instances.py);
- capture(fn, *args, name=, **kwargs): what measure() takes for a callable;
- l2_bytes(model), kernel_times_s(model, components, inputs, kw, graph) -> (all kernels s, inside components
  s, the glue's largest ops [(op, µs)]; graph: leave out what a captured graph does not run), in_context (bool);
- launch_state() (optional): GPU time per tiny kernel in a graph now, with what else the card can tell of
  its state (Note [Launch-latency state]);
- source (a power source), info (the card), identity (the profile cache key), kind.
"""

from __future__ import annotations

# Note [Launch-latency state]
# ~~~~~~~~~~~~~~~~~~~~~~~~~~~
# Measured on H200s (driver 580.159.04, 2026-11-27): a card runs the same graph of short kernels in
# one of two states, ~20 % apart in GPU time, at the same SM clock (1980 MHz), memory clock (3201
# MHz), P-state (P0) and with no clocks-event reason set. GPT-2's decode step: 692 vs 814 µs; a graph
# of 200 one-element-block adds: 0.96 vs 1.21 µs per kernel. A card can switch while a process runs
# (once seen after ~25 s of replays, then held for the remaining 45 s); of 6 fresh processes on two
# cards, 5 began in the slow state. Light, latency-bound parts move with it (the study's repeats on
# one card: +7 to +22 % GPU time, +7 to +16 % energy, dynamic energy +2 to +8 %), while work of
# tens of µs per kernel and more does not (t5-small's parts within 0.3 % in time, 1.1 % in energy).
# NVML's clocks do not tell it, nor the PCIe link (four H200s held gen 5
# x16 in every reading, in the slow state, for 45 s of continuous replay: results/launch_state.*).
# The state does change inside a measurement: three of four fresh processes read 1.14-1.18 µs before
# GPT-2's trials and 0.96-1.01 µs after them (docs/measured.md, 2026-11-27 night). So measure() reads
# the state before the trials, after each round of them and after them, keeps the kept trials in one
# state (Note [One state per run], clear_native/launch_state.py) and records every reading with the
# run (MeasureRun.launch_state); the reports split repeats whose GPU time held from those whose time
# moved. The state is not confined to light work: BERT-base prefill (b8 x 128) on GPU-d2443dd2 (2026-11-28)
# ran one process slow throughout (1.13 µs) and the next fast (0.95 µs from its second reading): whole model
# 869 -> 814 µs (-6.4 %) at 475 -> 502 W, energy -1.0 %; its MLP parts moved -4.7/-5.9 % in time and
# +0.1/-0.1 % in energy, the 5 µs pooler -12.7 % / -9.4 %. What the slow state adds is time at about
# awake-idle power (the pooler: 0.10 mJ over 0.73 µs, 141 W; awake idle 123 W), so energy above awake idle
# moves far less (whole model +0.9 %, pooler -3.3 %).
# One cause, measured (bench/launch_streams.py, results/launch_streams.*; GPU-279e5ac7 and GPU-7a6b1f31,
# 2026-11-28): the streams a process has launched eager kernels on. A fresh process that ran eager adds on the
# default stream *and* on a side stream replays a graph of 200 tiny adds at 1.090 µs a kernel, in every reading
# of every process; one that ran them on either stream alone, or on none, at 0.911-0.913 µs, whichever stream
# the graph was captured or replayed on (pytorch/pytorch#161104 sees the same, open). Every process of
# measure() did both: a model's set-up and eager passes on the default stream, the capture warm-ups on a side
# stream (as PyTorch's examples warm up). capture() and the probe below now warm up on the current stream, and
# torch.cuda.graph's own capture stream launches nothing eagerly (PROTOCOL_VERSION 7; tests/test_gpu_protocol.py
# checks that a capture() leaves a fresh process as fast as one that never left the default stream).
# That was one cause, not the only one: on four more H200s (protocol 8, docs/measured.md 2026-11-28 midday) the
# processes of measure_model still began slow (1.08-1.21 µs) and on three cards turned fast (0.90-1.04 µs) within
# their warm-up, while on GPU-35c64b04 every process of one run stayed slow. So the probe and the restart below
# stay. Narrowed on six more H200s (results/launch_state-runs/, 2026-11-28 evening): a bare process that builds
# GPT-2, captures its decode step and replays it (bench/launch_state.py) held one state for 100-150 s, 0.91-0.96
# µs on five cards and 1.06 on one, also after a 3 s idle rest, with the GPU idle 0.25 s after every reading, and
# with the NVML sampler reading throughout as measure() does; while measure_model's processes on two other cards
# began at 1.12-1.21 µs and turned to 0.95-1.03 µs 26-95 s into their measurement (most near 50 s), or not within
# 58-69 s. So the likeliest cause is something measure_model does before its trials (FLOP counting's eager
# passes, the cold copies' allocations, the part and in-context captures, the graph edits), not the sensor,
# idling or process age; the cards differed (each lease is a fresh host), so a card or host effect is not excluded.
# Traced step by step (bench/launch_state.py --prelude, results/launch_state-runs/2026-11-28_1256*-1322*): five
# fresh measure_model processes on three H200s began fast (0.93-1.05 µs) and turned slow (1.11-1.27) during the
# set-up, at the first awake idle on GPU-8056d33f, among the captures after the first on GPU-286895ec and
# GPU-39fbcea4; in all five, the profiler's pass after the trials (kernel_times_s) took them back to fast
# (0.94-1.07) and they stayed fast through the 10-45 s of replays that followed. Awake idle replayed as a graph
# did not keep a process fast (protocol 9, GPU-1966a272). The profiler around one tiny add (protocol 10) did not
# end it (GPU-fc055883: 1.122 -> 1.134 µs; kernel_times_s later in that process: 1.140 -> 0.953). So measure() runs
# the profiler around one eager call of each capture, as kernel_times_s around a forward pass, after its baselines
# and before its trials (reset_launch_state, protocol 11), then reads the state: on GPU-47321202 it took measure_model
# on GPT-2 from 1.119 to 0.952 µs, fast through the 14 s of trials and replays after it (results/launch_state-runs/
# 2026-11-28_1511*). It is not a cure: in the study's tasks (results/reproducibility/2026-11-28_151302, two H200s)
# BERT-base prefill's processes read 1.14 µs right after it, and 3 of 4 turned fast 22-116 s into their run;
# the decode tasks read 1.04-1.06 throughout, and their repeats held (<= 0.67 %). The state two streams leave is
# another: no profiler pass, eager forward or capture ended it (results/launch_streams_reset.md), so clear_native
# launches nothing on a side stream (above). The restart above stays for a state that moves later.
# Refuted as levers (results/launch_state-runs/2026-11-28_1705_cuda_env.md): CUDA_DEVICE_MAX_CONNECTIONS=1 (two
# streams still 1.171 vs 0.992 µs) and CUDA_MODULE_LOADING=EAGER (1.193). BERT-base's set-up on four more H200s
# turned slow among the captures after the first, every time, and the reset left it slow; in a reproducibility run
# (results/reproducibility/2026-11-28_171710) 6 of 8 such processes turned fast by themselves 20-78 s in.
# Between the two states each part's GPU time moved by its kernel count times the probe's change (BERT-base's pooler
# ~4, its whole model ~290, on four cards): measure() keeps each capture's graph kernels per call, and a reading can
# be taken to another latency by them (launch_state.at_latency), the time at awake-idle power.
# Traced around every capture (GPU-6865f056, 2026-11-28 night): BERT-base's process turned from 0.941 to 1.121 µs
# across its capture of encoder.layer.0.intermediate; yet in a fresh process that capture alone, its linear or GELU
# alone, 16 GiB allocated or 300 small graphs kept all left 0.911-0.913 µs (results/launch_state-runs/2026-11-28_19*,
# _2024*): it takes the process's earlier work too. Bisected with launch_state --select (GPU-1b3d42f2, results/
# launch_state-runs/2026-11-28_2252_select_*): it turns at the process's third capture whichever parts they are
# (two captures stayed fast: 0.94 µs; a third, 1.12), at 0.6 GiB reserved as at 0.97. Found: Note [One stream].
# A state of the process, not of the card: two processes of one task taking turns on GPU-1f738388 (2026-11-29,
# results/reproducibility/2026-11-29_003520) sat at 1.04-1.05 and 0.96 µs at the same time, in each of three
# pairs. Not every part follows the probe: Llama's rotary embedding moved by its 9 kernels x the probe's 0.080 µs,
# its input layernorm (8 kernels) by 0.06 µs; the reports take a repeat's slower reading to the faster one's time.

# Note [One stream]
# ~~~~~~~~~~~~~~~~~
# What turned measure_model's processes slow at their third capture (bench/launch_streams.py, results/launch_state-
# runs/2026-11-29_03*; H200s GPU-2e44a228, GPU-18b30f05, GPU-50f52ab4, two fresh processes a condition): eager
# kernels on the default stream, then three graphs captured with torch.cuda.graph on its own stream. The probe read
# 1.089-1.133 µs a kernel after three or four such captures, 0.911-0.954 after one or two, after four with nothing
# eager before them, or with the eager work, the captures and the replays all on one stream. What the captures
# allocate, a stream of each capture's own, or eager work on the default stream again after them changed nothing.
# Each capture launches two fills on its capture stream before it begins (PyTorch's RNG state for graphs); the
# counts fit "more than six eager kernels on other streams after work on the default one" (2 or 4 eager adds on a
# side stream left a process fast, pytorch#161104's 6 slow), not shown further. So a process that measures launches
# everything on one stream from its first CUDA work (graphs.one_stream: bench's task processes, the CLI), and
# capture() and the probe capture on the current stream where it is not the default (graphs.capture_stream). A
# BERT-base process so made read 0.960-0.998 µs in all 16 of its readings over 200 s (results/reproducibility/
# 2026-11-29_035811, GPU-cda91c8e), where every earlier one read 1.11-1.14 from its captures on. A user whose process
# built the model on the default stream gets the slow state after three captures, as before; one_stream() avoids it.
# The probe's own level on a stream of its own is not the default's: a bare process that launched nothing before it
# reads 1.031-1.035 µs there and 0.910-0.913 on the default stream (GPU-419cdb72, GPU-4e1c2156, 2026-11-29 05:15),
# while task processes inside one_stream read 0.91-0.99. So a probe reading compares processes made alike, not a
# one_stream process with a default-stream one; and it does not predict every part's time (docs/measured.md).

from . import clock
from ._native import core
from .graphs import ReplayResult, UnrolledGraph, awake_idle, calibration_load, capture_stream, replay

HEATER_N, HEATER_BURST = 8192, 4  # heat(): 1.1 TFLOP a GEMM, ~2 ms on an H200; a sync every 4


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
        self._nvml = nvml_device(device)
        self.source = core.NvmlSource(self._nvml)
        self._unrolled: dict = {}
        self._instances: dict = {}  # id(capture) -> (instances asked, its instances): instances()
        self._latency_graph = None
        self._sleep_hz = None  # torch.cuda._sleep's cycles per second here (idle_fn)
        self._heater = None  # heat()'s operands, made on first use

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
        """What run() launches: the capture unrolled `copies` times (one graph); a tuple of a capture's instances
        (instances()) unrolled in blocks, each instance's calls in a row, `copies` calls in all (Note [Graph
        instances])."""
        caps = tuple(cap) if isinstance(cap, tuple) else (cap,)
        if caps[0].eager:
            return (caps[0], copies)
        key = (tuple(map(id, caps)), copies)
        if key not in self._unrolled:
            n = len(caps)  # copy i is instance i n / copies: a block of calls each, so each keeps its own L2 hits
            graph = UnrolledGraph([caps[i * n // copies].graph_handle for i in range(copies)] if n > 1
                                  else [caps[0].graph_handle], copies, device=caps[0].device)
            self._unrolled[key] = (caps, graph)
        return self._unrolled[key][1]

    def instances(self, cap, n: int, say=lambda msg: None) -> tuple:
        """``cap`` and fresh captures of its call, ``n`` in all where memory allows (Note [Graph instances],
        instances.py); kept, so that a later measure() of the same capture reuses them."""
        from .instances import recapture

        asked, made = self._instances.get(id(cap), (1, (cap,)))  # held here, so no other capture gets its id
        if n > asked:  # more than before: the instances made then, and fresh ones
            made = recapture(made, n, say)
            self._instances[id(cap)] = (n, made)
        return made[:max(1, n)]

    def run(self, handle, launches: int) -> ReplayResult:
        if isinstance(handle, tuple):  # an eager capture
            cap, copies = handle
            return self._eager(cap, launches * copies)
        return replay(handle, launches, stamp_launches=True)

    def load(self, duration_s: float) -> ReplayResult:
        return calibration_load(duration_s, device=self.device)

    def awake_idle(self, duration_s: float) -> ReplayResult:
        return awake_idle(duration_s, device=self.device)

    def heat(self, duration_s: float) -> ReplayResult:
        """Heats the card for ``duration_s`` (bench/thermal_coupling.py): square bf16 GEMMs of HEATER_N back-to-back
        on the current stream, synchronised after every HEATER_BURST (a few ms); an H200 runs them at its power
        limit, far hotter than calibration_load's ~250 W. Blocks."""
        import torch

        with torch.cuda.device(self.device):
            if self._heater is None:
                a = torch.randn(HEATER_N, HEATER_N, device=f"cuda:{self.device}").to(torch.bfloat16)
                self._heater = (a, torch.empty_like(a))
            a, out = self._heater
            t0 = clock.now_ns()
            end, n = t0 + int(duration_s * 1e9), 0
            while clock.now_ns() < end:
                for _ in range(HEATER_BURST):
                    torch.matmul(a, a, out=out)
                torch.cuda.current_stream().synchronize()
                n += HEATER_BURST
            t1 = clock.now_ns()
        return ReplayResult(gpu_time_s=(t1 - t0) * 1e-9, launches=n, calls=n, host_start_ns=t0, host_end_ns=t1)

    in_context = True

    def capture(self, fn, *args, name: str, **kwargs):
        from .graph_capture import capture

        return capture(fn, *args, name=name, eager_fallback=True, **kwargs)

    def idle_fn(self, seconds: float):
        """A capturable call that keeps the GPU awake and nearly idle ``seconds`` (paced.Paced): PyTorch's spin
        kernel (one thread, torch.cuda._sleep), its cycles per second timed once on this device."""
        import torch

        if self._sleep_hz is None:
            with torch.cuda.device(self.device):
                cap = self.capture(lambda: torch.cuda._sleep(1_000_000), name="sleep 1e6 cycles")
            self._sleep_hz = 1e6 / self.time_per_call_s(cap)
        cycles = max(1, round(seconds * self._sleep_hz))
        return lambda: torch.cuda._sleep(cycles)

    def l2_bytes(self, model) -> int:
        from .cold_l2 import l2_bytes_of

        return l2_bytes_of(model)

    def kernel_times_s(self, model, components, inputs, kw, graph: bool = True) -> tuple:
        from .work import kernel_times_s

        return kernel_times_s(model, components, inputs, kw, graph)

    def launch_state(self) -> dict:
        """The card's launch-latency state now (Note [Launch-latency state]): ``latency_s``, the GPU time per kernel
        of a graph of tiny kernels, the clocks and PCIe link NVML reports right after (0: NVML cannot tell), and
        the host CPU this process ran on (launch_state.host_cpu)."""
        from .launch_state import host_cpu

        latency = self._tiny_kernel_s()
        d = self._nvml
        return {"latency_s": latency, "sm_clock_mhz": d.sm_clock_mhz, "memory_clock_mhz": d.memory_clock_mhz,
                "pcie_generation": d.pcie_link_generation, "pcie_width": d.pcie_link_width} | host_cpu()

    def reset_launch_state(self, captures=()) -> None:
        """The profiler (CPU and CUDA activity) around one eager call of each capture (its callable on its own
        arguments, as an eager replay runs it), as kernel_times_s profiles a forward pass: what took measure_model's
        processes from the slow launch-latency state to the fast one in every trace, though not every process of
        BERT-base's (Note [Launch-latency state]); the profiler around one tiny kernel did not (GPU-fc055883)."""
        import torch

        from .work import profiled_events

        def calls():
            for cap in captures:
                if getattr(cap, "fn", None) is not None:  # a PrunedGraph (a model without a part) has no eager call
                    cap.fn(*cap.args, **cap.kwargs)

        with torch.cuda.device(self.device):
            profiled_events(calls)

    def _tiny_kernel_s(self, kernels: int = 200, replays: int = 20) -> float:
        """GPU time per kernel of a CUDA graph of tiny kernels (one add on 1 KiB each). About 5 ms of GPU time."""
        import torch

        with torch.cuda.device(self.device):
            if self._latency_graph is None:
                y = torch.zeros(256, device=f"cuda:{self.device}")
                y.add_(1)  # warm-up on the current stream, never a side one (Note [Launch-latency state])
                g = torch.cuda.CUDAGraph()
                with torch.cuda.graph(g, stream=capture_stream(self.device)):
                    for _ in range(kernels):
                        y.add_(1)
                self._latency_graph = (g, y, kernels)
        g, _, n = self._latency_graph
        replay(g.raw_cuda_graph_exec(), 1, device=self.device)  # warm
        return replay(g.raw_cuda_graph_exec(), replays, device=self.device).gpu_time_s / (n * replays)

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
