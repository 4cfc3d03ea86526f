"""The measurement protocol: energy per call of captured callables, to a stated precision.

For each capture: replay it back-to-back (unrolled K times per launch so one
launch lasts ~2 ms, R launches so a trial lasts settle + window); take the
driver's power samples stamped inside the trial's steady window (after the
settle time the sensor profile measured, before the tail); energy per call =
mean steady power x GPU time per call of the launches inside that window
(an event after every launch: Note [Time the window's launches] in csrc/replay.hpp).
Trials go round-robin over the captures, so slow drifts hit all alike, until
each capture's 95 % confidence interval is within the target or the time
budget ends. Each capture's settle time and window adapt to what its power
does (Note [Trials that adapt]). Resting idle power and the power of the GPU awake but idle
(launching empty kernels) are measured in the same run; "dynamic" energy is
above the baseline the result names. The energy counter over the whole run
cross-checks the integral of the samples.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass, field
from typing import Callable, Sequence

import numpy as np

from ._native import core
from .profile import SensorProfile, calibrate
from .sampler import Sampler, SamplerResult
from .stats import Summary

# NVML clocks-event reason bits (nvmlClocksEventReasons).
CLOCK_EVENT_REASONS = {
    0x1: "gpu_idle", 0x2: "applications_clocks_setting", 0x4: "sw_power_cap", 0x8: "hw_slowdown",
    0x10: "sync_boost", 0x20: "sw_thermal_slowdown", 0x40: "hw_thermal_slowdown",
    0x80: "hw_power_brake_slowdown", 0x100: "display_clock_setting",
}
BASELINES = ("awake_idle", "idle")


def reason_names(mask: int) -> list[str]:
    return [name for bit, name in CLOCK_EVENT_REASONS.items() if mask & bit] + (
        [f"unknown_0x{mask & ~sum(CLOCK_EVENT_REASONS):x}"] if mask & ~sum(CLOCK_EVENT_REASONS) else [])


@dataclass
class Measurement:
    """Energy per call of one capture. Units are in the names (J, W, s, °C, MHz)."""

    name: str
    energy_per_call_j: float          # mean over trials: mean steady power x GPU time per call
    energy_per_call_ci95_j: float     # half-width of the 95 % confidence interval of that mean
    dynamic_energy_per_call_j: float  # (mean power - baseline power) x GPU time per call
    baseline: str                     # which power "dynamic" is above: "awake_idle" or "idle"
    baseline_power_w: float
    idle_power_w: float               # resting, measured in this run
    awake_idle_power_w: float         # launching empty kernels, measured in this run
    gpu_time_per_call_s: float
    mean_power_w: float
    trials: int
    cv: float                         # across trials, of energy per call
    ci95_rel: float
    unroll: int                       # copies of the capture per graph launch (K)
    launches_per_trial: int           # R
    steady_window_s: float            # seconds of samples used per trial (mean)
    samples_per_trial: float
    temperature_c: tuple              # (min, max) over the trials' windows
    sm_clock_mhz: tuple               # (min, max)
    clock_event_reasons: list         # reasons NVML gave in the windows (throttling, idle...)
    converged: bool                   # CI within the target
    time_to_target_s: float           # wall time from the run's start until it converged (NaN if not)
    eager: bool = False               # True: replayed from a Python loop (capture failed)
    trial_energy_per_call_j: list = field(default_factory=list)
    trial_power_w: list = field(default_factory=list)
    trial_time_per_call_s: list = field(default_factory=list)
    trial_after: list = field(default_factory=list)       # the capture whose trial ran just before each trial
    trial_drift_rel: list = field(default_factory=list)   # (2nd half - 1st half of the window's samples) / mean
    trial_window_launches: list = field(default_factory=list)  # launches timed inside the window (0: whole run used)
    trial_run_time_per_call_s: list = field(default_factory=list)  # over the whole trial, settle and tail included
    settle_s: float = math.nan        # settle time its last trials used (Note [Trials that adapt])
    rejected_trials: list = field(default_factory=list)  # (drift, z, after) of windows rejected as still moving
    window_restarts: int = 0          # times its window doubled and its trials started again


@dataclass
class MeasureRun:
    """One measure() call: its measurements, baselines, cross-check and settings."""

    measurements: list
    gpu: dict
    profile: dict
    idle_power_w: float
    awake_idle_power_w: float
    counter_energy_j: float           # energy counter over the run's sampled span
    sample_energy_j: float            # integral of the driver's samples over the same span
    counter_vs_samples_rel: float     # (counter - samples) / samples
    samples_lost: int
    wall_s: float
    stop_reason: str
    settings: dict

    def __getitem__(self, key):
        if isinstance(key, int):
            return self.measurements[key]
        for m in self.measurements:
            if m.name == key:
                return m
        raise KeyError(f"no measurement named {key!r}; have {[m.name for m in self.measurements]}")

    def to_dict(self) -> dict:
        d = asdict(self)
        return json.loads(json.dumps(d, default=float))

    def table(self) -> str:
        rows = ["| capture | energy/call | ±95 % | dynamic/call | GPU time/call | power | trials | CV | K |",
                "|---|---|---|---|---|---|---|---|---|"]
        for m in self.measurements:
            rows.append(f"| {m.name}{' (eager)' if m.eager else ''} | {m.energy_per_call_j * 1e3:.4g} mJ | "
                        f"{m.ci95_rel * 100:.2f} % | {m.dynamic_energy_per_call_j * 1e3:.4g} mJ | "
                        f"{m.gpu_time_per_call_s * 1e6:.2f} µs | {m.mean_power_w:.1f} W | {m.trials} | "
                        f"{m.cv * 100:.2f} % | {m.unroll} |")
        rows.append(f"\nidle {self.idle_power_w:.1f} W, awake idle {self.awake_idle_power_w:.1f} W; "
                    f"counter vs samples {self.counter_vs_samples_rel * 100:+.2f} %; {self.stop_reason}")
        return "\n".join(rows)


# Note [Trials that adapt]
# Two things seen on an H200 make one settle time and one window length wrong for
# some captures (docs/measured.md):
# - a capture whose power still moves after the settle time: above ~650 W the
#   power limiter reacts to the last second's mean, so a feed-forward block that
#   follows a cooler capture ramps up for longer than the sensor's settle time
#   (BERT-large's output block: +6 % within the first windows). A window whose
#   second half differs from its first by more than `unsettled_z` times the
#   sample noise (estimated from successive differences, which a trend does not
#   inflate) is rejected, and the capture's settle time doubles (up to 4x);
# - a capture whose samples swing from sample to sample (the limiter cycling,
#   or the sample grid beating with a multi-ms call): 0.2 s windows then differ
#   by a few %. Once it has `min_trials` trials with a CV above `target_cv`, its
#   window doubles (up to `max_window_s`) and its trials start again, so that all
#   the trials of a capture share one window.
# Both are per capture: the others keep their short trials.


@dataclass
class _Plan:
    item: object
    name: str
    handle: object
    copies: int
    t1: float                                     # s per call, launched singly
    settle_s: float
    window_s: float
    tail_s: float
    stretch: int = 1                              # x launches, where windows held too few samples
    results: list = field(default_factory=list)   # (ReplayResult, steady window) per trial
    values: list = field(default_factory=list)    # (power_w, time_per_call_s, n_samples, window_s)
    after: list = field(default_factory=list)     # per value: the capture measured just before
    drift: list = field(default_factory=list)     # per value: power drift within its window, relative
    timing: list = field(default_factory=list)    # per value: (launches timed in the window, whole run's s/call)
    converged_at: float = math.nan
    tried: int = 0                                # trials run, rejected and restarted ones included
    rejected: list = field(default_factory=list)  # (drift, z, after) of the trials rejected as unsettled
    restarts: int = 0                             # times the window doubled and the trials started again

    @property
    def launches(self) -> int:
        """Launches per trial: settle + window + tail of back-to-back calls."""
        trial_s = self.settle_s + self.window_s + self.tail_s
        return self.stretch * max(1, math.ceil(trial_s / (self.copies * self.t1)))

    def restart(self) -> None:
        self.values, self.after, self.drift, self.timing = [], [], [], []


def _name(item, i: int) -> str:
    return getattr(item, "name", None) or f"capture{i}"


def measure(items, *, backend=None, device: int = 0, profile: SensorProfile | None = None,
            target_ci_rel: float = 0.005, min_trials: int = 5, max_trials: int = 40, window_s: float = 1.0,
            budget_s: float = 300.0, launch_s: float = 2e-3, idle_s: float = 1.0, max_warmup_s: float = 5.0,
            baseline: str = "awake_idle", target_cv: float | None = 0.01, max_window_s: float | None = None,
            unsettled_z: float = 4.0, progress: Callable[[str], None] | None = None) -> MeasureRun:
    """Measures the energy per call of each capture (a Capture, or a list of them).

    Args:
        target_ci_rel: stop a capture once the 95 % CI half-width of its mean is within this fraction.
        min_trials, max_trials: trials per capture at least / at most.
        window_s: steady seconds of samples per trial (after the profile's settle time).
        budget_s: wall-clock budget of the whole run; when it ends, results say they did not converge.
        launch_s: GPU time one unrolled graph launch should last (sets the unroll K).
        baseline: what dynamic energy is above: "awake_idle" (GPU launching empty kernels) or "idle".
        target_cv: a capture whose trials vary more than this (CV) gets longer windows and starts
            again (Note [Trials that adapt]); None keeps every window at window_s.
        max_window_s: the longest window target_cv may grow to (default 4 x window_s).
        unsettled_z: a window whose halves differ by more than this many standard errors is
            rejected and the capture's settle time doubles (up to 4x); math.inf turns it off.
    """
    if isinstance(items, (list, tuple)):
        items = list(items)
    else:
        items = [items]
    if not items:
        raise ValueError("measure() needs at least one capture")
    if baseline not in BASELINES:
        raise ValueError(f"baseline must be one of {BASELINES}, got {baseline!r}")
    if not (0 < target_ci_rel < 1) or min_trials < 2 or max_trials < min_trials or window_s <= 0 or budget_s <= 0:
        raise ValueError("need 0 < target_ci_rel < 1, 2 <= min_trials <= max_trials, window_s > 0, budget_s > 0")
    max_window_s = 4 * window_s if max_window_s is None else max_window_s
    if (target_cv is not None and not target_cv > 0) or max_window_s < window_s or not unsettled_z > 0:
        raise ValueError("need target_cv > 0 (or None), max_window_s >= window_s and unsettled_z > 0")
    say = progress or (lambda msg: None)
    if backend is None:
        from .backend import GpuBackend

        backend = GpuBackend(device)
    profile = profile or calibrate(backend)
    settle_s = profile.settle_s
    max_settle_s = 4 * settle_s
    tail_s = max(profile.sample_period_s, 0.02)
    t_begin = time.monotonic()

    sampler = Sampler(source=backend.source, drain_interval_s=drain_interval_for(profile, backend.source),
                      energy_interval_s=0.25, max_duration_s=budget_s + 300)
    sampler.start()
    error, res, plans, idle_window, awake_window = None, None, [], None, None
    stop_reason = "every capture reached its target"
    try:
        time.sleep(idle_s)
        now = core.monotonic_ns()
        idle_window = (now - int(idle_s * 2 / 3 * 1e9), now)  # the last two thirds of the rest
        plans = []
        for i, item in enumerate(items):
            name = _name(item, i)
            t1 = backend.time_per_call_s(item)
            copies = int(np.clip(math.ceil(launch_s / t1), 1, 20_000))
            plan = _Plan(item, name, backend.prepare(item, copies), copies, t1, settle_s, window_s, tail_s)
            plans.append(plan)
            say(f"plan {name}: {t1 * 1e6:.2f} µs/call single, K={copies}, R={plan.launches}")
        _warm_up(backend, sampler, plans[0], settle_s, tail_s, max_warmup_s, say)
        previous = "awake_idle"
        awake = backend.awake_idle(settle_s + window_s)
        awake_window = _steady_window(awake, settle_s, tail_s)
        while True:
            active = [p for p in plans
                      if math.isnan(p.converged_at) and len(p.values) < max_trials and p.tried < 3 * max_trials]
            if not active:
                if any(math.isnan(p.converged_at) for p in plans):
                    stop_reason = f"max_trials={max_trials} reached before every capture reached ±{target_ci_rel:.2%}"
                break
            if time.monotonic() - t_begin > budget_s:
                stop_reason = f"time budget of {budget_s:.0f} s ended before every capture reached ±{target_ci_rel:.2%}"
                break
            before = {}
            for p in active:
                before[p.name] = previous
                r = backend.run(p.handle, p.launches)
                p.results.append((r, _steady_window(r, p.settle_s, tail_s)))
                p.tried += 1
                previous = p.name
            sampler.wait_for_samples(max(p.results[-1][0].host_end_ns for p in active))
            snap = sampler.snapshot()
            for p in active:
                r, (a, b) = p.results[-1]
                m = snap.in_window(a, b)
                if m.sum() < 3:
                    p.stretch *= 2  # too short to see: lengthen the next trials
                    say(f"{p.name}: trial window held {int(m.sum())} samples; doubling R to {p.launches}")
                    continue
                drift, z = _drift(snap.power_w[m])
                if abs(z) > unsettled_z and abs(drift) > 0.005 and p.settle_s < max_settle_s:
                    p.rejected.append((drift, z, before[p.name]))
                    p.settle_s = min(2 * p.settle_s, max_settle_s)
                    say(f"{p.name}: window still moving ({drift:+.1%}, z={z:.1f}) after {before[p.name]}; "
                        f"trial rejected, settle now {p.settle_s:.2f} s")
                    continue
                t_call, n_launches = r.window_time_per_call_s(a, b)
                p.values.append((float(snap.power_w[m].mean()), t_call, int(m.sum()), (b - a) * 1e-9))
                p.timing.append((n_launches, r.gpu_time_per_call_s))
                p.after.append(before[p.name])
                p.drift.append(drift)
                e = Summary.of([pw * tc for pw, tc, _, _ in p.values])
                noisy = target_cv is not None and e.n >= min_trials and e.cv > target_cv
                if noisy and 2 * p.window_s <= max_window_s * (1 + 1e-9):
                    p.window_s *= 2
                    p.restarts += 1
                    p.restart()
                    say(f"{p.name}: CV {e.cv:.2%} over {e.n} trials; window now {p.window_s:.2f} s, trials restart")
                    continue
                if e.n >= min_trials and e.ci95_rel <= target_ci_rel:
                    p.converged_at = time.monotonic() - t_begin
                say(f"{p.name}: trial {e.n}, {e.mean * 1e3:.4g} mJ/call ±{e.ci95_rel:.2%}")
    except BaseException as exc:  # noqa: BLE001 - stop the sampler, keep what was measured, re-raise
        error = exc
    try:
        res = sampler.stop()
    except Exception as exc:  # noqa: BLE001
        res, error = getattr(exc, "result", None), error or exc
    if error is not None and (res is None or idle_window is None or not any(p.values for p in plans)):
        raise error
    run = _summarise(res, plans, profile, backend, idle_window, awake_window, baseline,
                     stop_reason if error is None else f"interrupted: {type(error).__name__}: {error}",
                     time.monotonic() - t_begin,
                     dict(target_ci_rel=target_ci_rel, min_trials=min_trials, max_trials=max_trials,
                          window_s=window_s, budget_s=budget_s, launch_s=launch_s, settle_s=settle_s,
                          tail_s=tail_s, baseline=baseline, target_cv=target_cv, max_window_s=max_window_s,
                          unsettled_z=unsettled_z))
    if error is not None:
        error.partial = run  # the trials measured before the failure (or Ctrl-C)
        raise error
    return run


def _drift(power_w: np.ndarray) -> tuple[float, float]:
    """How much a window's power still moves: (drift, z).

    drift = (mean of its 2nd half - mean of its 1st half) / mean; z = that
    difference over its standard error, with the sample noise estimated from
    successive differences (von Neumann), which a steady trend does not inflate
    but sample-to-sample swings do (Note [Trials that adapt]).
    """
    n = power_w.size
    half = n // 2
    if half == 0:
        return math.nan, math.nan
    diff = float(power_w[half:].mean() - power_w[:half].mean())
    sigma = math.sqrt(float(np.mean(np.diff(power_w) ** 2)) / 2) if n > 1 else math.nan
    se = sigma * math.sqrt(1 / half + 1 / (n - half))
    z = diff / se if se > 0 else (math.inf if diff else 0.0)
    return diff / float(power_w.mean()), z


def _steady_window(r, settle_s: float, tail_s: float) -> tuple[int, int]:
    """The monotonic span of a run whose samples are steady: after the settle time, before the tail."""
    return r.host_start_ns + int(settle_s * 1e9), r.host_end_ns - int(tail_s * 1e9)


def drain_interval_for(profile: SensorProfile, source) -> float:
    """Drain 10x as often as the driver's buffer fills (Note [Sampler cadence]), at most every 200 ms."""
    return min(0.2, source.sample_buffer_capacity * profile.sample_period_s / 10)


def _warm_up(backend, sampler, plan, settle_s, tail_s, max_s, say) -> None:
    """Runs the first capture until two consecutive trials' mean power agree within 0.5 %."""
    t0, last = time.monotonic(), None
    while time.monotonic() - t0 < max_s:
        r = backend.run(plan.handle, plan.launches)
        sampler.wait_for_samples(r.host_end_ns)
        s = sampler.snapshot()
        power = s.mean_power_w(*_steady_window(r, settle_s, tail_s))
        if last is not None and abs(power - last) <= 0.005 * last:
            say(f"warm: {power:.1f} W after {time.monotonic() - t0:.1f} s")
            return
        last = power
    say(f"warm-up stopped after {max_s:.1f} s without two trials within 0.5 %")


def _range(values: np.ndarray) -> tuple:
    v = values[np.isfinite(values)]
    return (float(v.min()), float(v.max())) if v.size else (math.nan, math.nan)


def _summarise(res: SamplerResult, plans: Sequence[_Plan], profile, backend, idle_window, awake_window, baseline,
               stop_reason, wall_s, settings) -> MeasureRun:
    idle_w = res.mean_power_w(*idle_window)
    awake_w = res.mean_power_w(*awake_window) if awake_window else math.nan
    base_w = awake_w if baseline == "awake_idle" else idle_w
    out = []
    for p in plans:
        pw = np.array([v[0] for v in p.values])
        tc = np.array([v[1] for v in p.values])
        e = Summary.of(pw * tc)
        in_windows = np.zeros(res.status_t_ns.shape, dtype=bool)
        for _, (a, b) in p.results:
            in_windows |= (res.status_t_ns >= a) & (res.status_t_ns <= b)
        reasons = int(np.bitwise_or.reduce(res.clock_event_reasons[in_windows])) if in_windows.any() else 0
        out.append(Measurement(
            name=p.name, energy_per_call_j=e.mean, energy_per_call_ci95_j=e.ci95_half,
            dynamic_energy_per_call_j=float(np.mean((pw - base_w) * tc)) if pw.size else math.nan,
            baseline=baseline, baseline_power_w=base_w, idle_power_w=idle_w, awake_idle_power_w=awake_w,
            gpu_time_per_call_s=float(tc.mean()) if tc.size else math.nan,
            mean_power_w=float(pw.mean()) if pw.size else math.nan, trials=e.n, cv=e.cv, ci95_rel=e.ci95_rel,
            unroll=p.copies, launches_per_trial=p.launches,
            steady_window_s=float(np.mean([v[3] for v in p.values])) if p.values else math.nan,
            samples_per_trial=float(np.mean([v[2] for v in p.values])) if p.values else math.nan,
            temperature_c=_range(res.temperature_c[in_windows]), sm_clock_mhz=_range(res.sm_clock_mhz[in_windows]),
            clock_event_reasons=reason_names(reasons), converged=not math.isnan(p.converged_at),
            time_to_target_s=p.converged_at, eager=bool(getattr(p.item, "eager", False)),
            trial_energy_per_call_j=(pw * tc).tolist(), trial_power_w=pw.tolist(), trial_time_per_call_s=tc.tolist(),
            trial_after=list(p.after), trial_drift_rel=list(p.drift),
            trial_window_launches=[n for n, _ in p.timing], trial_run_time_per_call_s=[t for _, t in p.timing],
            settle_s=p.settle_s, rejected_trials=list(p.rejected), window_restarts=p.restarts))
    a, b = res.sample_span_ns(int(res.energy_t_ns[0]), int(res.energy_t_ns[-1])) if res.energy_t_ns.size else (0, 0)
    sample_j = res.sample_integral_j(a, b)
    counter_j = res.counter_energy_j(a, b)
    return MeasureRun(
        measurements=out, gpu=dict(backend.info), profile=profile.to_dict(), idle_power_w=idle_w,
        awake_idle_power_w=awake_w, counter_energy_j=counter_j, sample_energy_j=sample_j,
        counter_vs_samples_rel=(counter_j - sample_j) / sample_j if sample_j else math.nan,
        samples_lost=res.samples_lost, wall_s=wall_s, stop_reason=stop_reason, settings=settings)
