"""A simulated GPU with a known truth, for the CPU tests: the synthetic sensor, and a cost model
that turns any PyTorch callable into a SimulatedCall.

SimulatedBackend runs SimulatedCalls on the synthetic sensor: while a run lasts, the sensor's
true power is what the call draws, so the protocol's answer can be checked against it. Its
cost model (OpCosts) runs a callable eagerly on the CPU and prices every ATen operation as a
GPU would spend it: a kernel of max(FLOPs / peak, bytes / bandwidth) seconds at awake power
plus energy per FLOP and per byte, then a gap between kernels at awake power. A model's cost
is the sum of its operations' costs, so measure_model's whole pipeline (discovery, grouping,
capture, trials, accounting) runs on the CPU with every term's truth known (OpCosts.ledger).
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field, replace

from . import clock
from ._native import core
from .graphs import ReplayResult
from .trials import MAX_LAUNCHES


# The Hopper sensor's sampling 10x faster (a sample every 2 ms, 10 ms counter and status updates): a simulated
# measurement in seconds; for synthetic_sensor(**QUICK_SENSOR) wherever the simulated GPU stands in for a card.
QUICK_SENSOR = dict(sample_period_s=0.002, period_jitter_s=0.0004, window_s=0.0005, lag_s=0.0015, noise_w=2.0,
                    energy_update_s=0.01, energy_read_delay_s=0.0, status_update_s=0.01, idle_w=80.0)


@dataclass(frozen=True)
class SimulatedCall:
    """A component with a known truth: each call keeps the GPU busy `kernel_s` at `power_w`;
    each graph launch adds `launch_gap_s` at the backend's awake-idle power. `gaps_s` of `kernel_s`
    are the gaps between its kernels: in a card's slow launch-latency state they last `gap_scale`
    times as long, at awake-idle power (Note [Launch-latency state], backend.py)."""

    name: str
    kernel_s: float
    power_w: float
    launch_gap_s: float = 2e-6
    eager: bool = False
    swing_w: float = 0.0     # power swings +/- this much around its mean, as a power limiter cycling does
    swing_s: float = 0.0     # ... every swing_s (a square wave with a random phase per run)
    reason: str = ""         # why it is eager (as Capture.reason)
    gaps_s: float = 0.0      # of kernel_s: the gaps between its kernels
    graph_kernels: float = math.nan  # kernels one call launches (Capture.graph_kernels), one gap each

    def true_time_per_call_s(self, unroll: int, gap_scale: float = 1.0) -> float:
        return self.kernel_s + self.gaps_s * (gap_scale - 1) + self.launch_gap_s / unroll

    def true_energy_per_call_j(self, unroll: int, awake_w: float, gap_scale: float = 1.0) -> float:
        return self.power_w * self.kernel_s + awake_w * (self.gaps_s * (gap_scale - 1) + self.launch_gap_s / unroll)


class SimulatedBackend:
    """Runs SimulatedCalls on the synthetic sensor: while a run lasts, the sensor's
    true power is what the call draws, so the protocol's answer can be checked."""

    kind = "simulated"
    in_context = False  # no graph to remove components from

    def __init__(self, source, *, awake_w: float = 110.0, load_w: float = 650.0, costs=None,
                 slow_gap_scale: float = 1.0, slow_for_s: float = 0.0, power_limit_w: float | None = None,
                 leak_w_per_c: float = 0.0, limiter_s: float = 1.0, limiter_swing: float = 0.04,
                 slow_resets: bool = True, instance_spread_rel: float = 0.0, seed: int = 0) -> None:
        """``slow_gap_scale``, ``slow_for_s``: the card's launch-latency state (Note [Launch-latency state],
        backend.py): for its first ``slow_for_s`` seconds the gaps between kernels last ``slow_gap_scale`` times
        as long, then the card switches to the fast state (the default: always fast); ``slow_resets``: whether
        reset_launch_state() ends the slow state (False: a card where the reset does not hold). ``power_limit_w``: a run
        that would draw more is slowed until it draws the limit on average (limited()); its power cycles around
        the limit, +/- ``limiter_swing`` of it, every ``limiter_s``, starting high (Note [The limiter's cycle],
        trials.py). ``leak_w_per_c``: a card draws this much more per °C its die is above the sensor's idle
        temperature (leakage), on a sensor that heats as it draws (synthetic_sensor's thermal_c_per_w), also while
        a run lasts. ``instance_spread_rel``: how far each graph instance of a call runs from the call's time
        (instances()); ``seed``: where this backend (a process) places them."""
        self.source = source
        self.awake_w = awake_w
        self.load_w = load_w
        self.costs = costs or OpCosts(awake_w=awake_w)
        self.info = {"name": "simulated GPU", "uuid": "synthetic", "driver_version": "none",
                     "power_limit_w": power_limit_w or 0.0}
        self.power_limit_w = power_limit_w
        self._rng = random.Random(0)
        self.slow_gap_scale, self.slow_for_s, self.slow_resets = slow_gap_scale, slow_for_s, slow_resets
        self._t_made = clock.now_s()
        self.leak_w_per_c = leak_w_per_c
        self.limiter_s, self.limiter_swing = limiter_s, limiter_swing
        self.instance_spread_rel, self._place, self._instances = instance_spread_rel, random.Random(seed), {}

    def gap_scale(self) -> float:
        """How much longer than the cost model's the gaps between kernels last now (1: the fast state)."""
        return self.slow_gap_scale if clock.now_s() - self._t_made < self.slow_for_s else 1.0

    identity = "synthetic"

    def time_per_call_s(self, call: SimulatedCall) -> float:
        return call.true_time_per_call_s(1, self.gap_scale())

    def prepare(self, call, unroll: int):
        """(the call, unroll); a tuple of a call's instances (instances()) runs as their mean call."""
        if isinstance(call, tuple):
            call = replace(call[0], kernel_s=sum(c.kernel_s for c in call) / len(call))
        return (call, unroll)

    def instances(self, call: SimulatedCall, n: int, say=lambda msg: None) -> tuple:
        """``n`` instances of the call (Note [Graph instances], instances.py): each placed by this backend (a
        process) at a GPU time, and so an energy, ``instance_spread_rel`` x N(0, 1) off the call's, drawn once
        (the first is the call itself where the spread is 0); kept, as a GPU backend keeps its captures. An eager
        call is its own one instance."""
        if call.eager:
            return (call,)
        made = self._instances.get(id(call), (call, ()))[1]  # the call held with them: its id stays its own
        if n > len(made):
            made += tuple(replace(call, name=call.name if i == 0 else f"{call.name} #{i}",
                                  kernel_s=call.kernel_s * (1 + self.instance_spread_rel * self._place.gauss(0, 1)))
                          for i in range(len(made), n))
            self._instances[id(call)] = (call, made)
        return made[:max(1, n)]

    def capture(self, fn, *args, name: str, **kwargs) -> SimulatedCall:
        """The callable as the cost model prices one call of it."""
        rows = self.costs.ledger(fn, args, kwargs)
        kernels = len(rows)  # one kernel an op, each with its gap
        idle_s = getattr(fn, "idle_s", 0.0)  # paced.Paced: the part, then idle (idle_fn) for idle_s
        if idle_s:
            rows.append(OpRow("sleep", 0, 0, idle_s, 0.0, self.awake_w * idle_s, False))
        t, e = self.costs.totals(rows)
        return SimulatedCall(name, kernel_s=t, power_w=e / t, gaps_s=sum(r.gap_s for r in rows),
                             graph_kernels=kernels)

    def idle_fn(self, seconds: float):
        """What keeps the GPU idle ``seconds`` (paced.Paced): capture() prices a Paced's idle_s at awake power."""
        return lambda: None

    def limited(self, per_call_s: float, watts: float) -> tuple[float, float]:
        """(time per call, watts) under the power limit: a call that would draw more runs at lower clocks,
        slower by s = ((limit - awake) / (watts - awake)) ** (1/3) (dynamic power ~ f V^2 ~ f^3), at the limit:
        less energy per call than at full clocks, as a heavy part alone at the limit on an H200 (Note [At the
        model's power], paced.py)."""
        lim = self.power_limit_w
        if not lim or watts <= lim:
            return per_call_s, watts
        s = ((lim - self.awake_w) / (watts - self.awake_w)) ** (1 / 3)
        return per_call_s / s, lim

    def l2_bytes(self, model) -> int:
        return 0  # no cache to overflow: every replay is as cold as the model

    def kernel_times_s(self, model, components, inputs, kw, graph: bool = True) -> tuple:
        """(all kernels, kernels inside components, the glue's ops (op, µs) largest first) of one forward pass:
        gaps left out, as the profiler does. The ledger prices the ops a graph runs, so ``graph`` changes nothing
        (work.py's Note [What the graph does not run])."""
        from collections import Counter

        rows = self.costs.ledger(model, inputs, kw, marks=[c.module for c in components])
        glue = Counter()
        for r in rows:
            if not r.inside:
                glue[f"aten::{r.op}"] += r.kernel_s * 1e6
        return (sum(r.kernel_s for r in rows), sum(r.kernel_s for r in rows if r.inside),
                [(op, round(us, 3)) for op, us in glue.most_common(8)])

    def _hold(self, watts: float, seconds: float, swing_w: float = 0.0, swing_s: float = 0.0,
              from_high: bool = False) -> tuple[int, int]:
        """Draws `watts` for `seconds`; with a swing, watts +/- swing_w alternating every swing_s (a random phase,
        or from the start of a high half where ``from_high``: a limiter's cycle); on a leaking card, plus the
        leak at the die's temperature, followed in steps of a 40th of the die's time constant."""
        t0 = core.monotonic_ns()
        end = t0 + int(seconds * 1e9)
        times = {t0}
        if swing_w and swing_s:
            step = int(swing_s * 1e9)
            sign = 1.0 if from_high else self._rng.choice((-1.0, 1.0))
            phase = t0 if from_high else t0 - int(self._rng.uniform(0, swing_s) * 1e9)
            times |= set(range(phase + step, end, step))
        tau_s = self.source.params.thermal_tau_s
        if self.leak_w_per_c and tau_s > 0:
            times |= set(range(t0, end, max(1, int(tau_s / 40 * 1e9))))
        idle_c = self.source.params.temperature_c
        for t in sorted(times):
            w = watts + (sign * swing_w * (-1) ** ((t - phase) // step) if swing_w and swing_s else 0.0)
            if self.leak_w_per_c:
                w += self.leak_w_per_c * (self.source.true_temperature_c(t) - idle_c)
            self.source.set_power(w, t)
        clock.sleep(seconds)
        t1 = core.monotonic_ns()
        self.source.set_power(self.source.params.idle_w, t1)
        return t0, t1

    def run(self, handle, launches: int) -> ReplayResult:
        call, unroll = handle
        if launches > MAX_LAUNCHES:  # as a GPU's replay refuses to time them one by one (csrc/replay.cu)
            raise ValueError(f"stamp_launches allows at most {MAX_LAUNCHES} launches per replay: unroll the graph "
                             "more instead")
        scale = self.gap_scale()
        per_call = call.true_time_per_call_s(unroll, scale)
        per_call, watts = self.limited(per_call, call.true_energy_per_call_j(unroll, self.awake_w, scale) / per_call)
        if self.power_limit_w and watts >= self.power_limit_w:
            t0, t1 = self._hold(watts, launches * unroll * per_call, self.limiter_swing * watts, self.limiter_s / 2,
                                from_high=True)
        else:
            t0, t1 = self._hold(watts, launches * unroll * per_call, call.swing_w, call.swing_s)
        # The GPU time is what the events would say: the sleep, as it really lasted,
        # its launches evenly spread over it.
        span_s = (t1 - t0) * 1e-9
        ends = tuple(span_s * (i + 1) / launches for i in range(launches))
        return ReplayResult(span_s, launches, launches * unroll, t0, t1, launch_end_s=ends)

    def launch_state(self) -> dict:
        """A tiny kernel in a graph as the cost model prices it: its shortest kernel plus the gap after it, in the
        card's present state (Note [Launch-latency state], backend.py). Takes no simulated time (a real probe takes ~5 ms)."""
        return {"latency_s": self.costs.min_kernel_s + self.costs.gap_s * self.gap_scale()}

    def reset_launch_state(self, captures=()) -> None:
        """As the profiler around the captures' eager calls does on a GPU (Note [Launch-latency state],
        backend.py): the card's slow state, where it is in one, ends now (unless the card was made with
        ``slow_resets=False``)."""
        if self.slow_resets:
            self.slow_for_s = min(self.slow_for_s, clock.now_s() - self._t_made)

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



@dataclass(frozen=True)
class OpRow:
    """One ATen operation as the simulated GPU spends it."""

    op: str
    flops: int
    bytes: int
    kernel_s: float    # the kernel itself
    gap_s: float       # the gap before the next kernel (inside a graph: launch latency)
    energy_j: float    # kernel and gap
    inside: bool       # ran inside one of the marked modules


@dataclass(frozen=True)
class OpCosts:
    """The simulated GPU's prices (an H100-like roofline; the truth of the CPU tests)."""

    awake_w: float = 110.0
    peak_flops: float = 400e12
    bandwidth_bps: float = 2.5e12
    min_kernel_s: float = 2e-6
    gap_s: float = 2e-6
    j_per_flop: float = 0.6e-12
    j_per_byte: float = 25e-12
    free_ops: tuple = field(default=("view", "_unsafe_view", "t", "transpose", "permute", "expand", "slice",
                                     "select", "unsqueeze", "squeeze", "detach", "alias", "as_strided",
                                     "split", "split_with_sizes", "chunk", "unbind", "lift_fresh", "empty",
                                     "_local_scalar_dense", "sym_size", "sym_stride", "is_same_size"))

    def ledger(self, fn, args, kwargs, marks=()) -> list:
        """Runs ``fn(*args, **kwargs)`` once (CPU, no grad) and prices every operation that moves data.
        ``marks``: modules whose operations are flagged ``inside``."""
        import torch
        from torch.utils._python_dispatch import TorchDispatchMode
        from torch.utils._pytree import tree_leaves
        from torch.utils.flop_counter import flop_registry

        rows, depth = [], [0]
        costs = self

        class Price(TorchDispatchMode):
            def __torch_dispatch__(self, func, types, args=(), kwargs=None):
                kwargs = kwargs or {}
                out = func(*args, **kwargs)
                name = func.overloadpacket.__name__
                if name in costs.free_ops:
                    return out
                counter = flop_registry.get(func.overloadpacket)
                flops = int(counter(*args, **kwargs, out_val=out)) if counter else 0
                nbytes = sum(t.numel() * t.element_size() for t in tree_leaves((args, kwargs, out))
                             if isinstance(t, torch.Tensor))
                kernel = max(costs.min_kernel_s, flops / costs.peak_flops, nbytes / costs.bandwidth_bps)
                energy = costs.awake_w * (kernel + costs.gap_s) + costs.j_per_flop * flops + costs.j_per_byte * nbytes
                rows.append(OpRow(name, flops, nbytes, kernel, costs.gap_s, energy, depth[0] > 0))
                return out

        def enter(module, args):
            depth[0] += 1

        def leave(module, args, output):
            depth[0] -= 1

        handles = [h for m in marks for h in (m.register_forward_pre_hook(enter), m.register_forward_hook(leave))]
        try:
            with torch.no_grad(), Price():
                fn(*args, **kwargs)
        finally:
            for h in handles:
                h.remove()
        return rows

    @staticmethod
    def totals(rows) -> tuple:
        """(GPU seconds, joules) of the rows."""
        return sum(r.kernel_s + r.gap_s for r in rows), sum(r.energy_j for r in rows)
