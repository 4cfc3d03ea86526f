"""The measurement protocol: energy per call of captured callables, to a stated precision.

For each capture: replay it back-to-back (unrolled K times per launch so one launch lasts ~2 ms, R launches
so a trial lasts settle + window); take the driver's power samples stamped inside the trial's steady window
(after the settle time the sensor profile measured, before the tail); energy per call = mean steady power x
GPU time per call of the launches inside that window (an event after every launch: Note [Time the window's
launches] in csrc/replay.hpp). Trials go round-robin over the captures, so slow drifts hit all alike, until
each capture's 95 % confidence interval is within the target or the time budget ends. Each capture's settle
time and window adapt to what its power does (Note [Trials that adapt], trials.py). Resting idle power and
the power of the GPU awake but idle (launching empty kernels) are measured in the same run; "dynamic" energy
is above the baseline the result names. The energy counter over the whole run cross-checks the integral of
the samples.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from . import clock, launch_state, thermal
from .instances import spread_rel, unroll_for
from .profile import SensorProfile, calibrate
from .results import MeasureRun
from .sampler import Sampler, SamplerResult, drain_interval_for
from .summary import summarise
from .trials import MAX_UNROLL, Rules, Trials, Verdict

BASELINES = ("awake_idle", "idle")
# Bumped whenever what a number means or how it is taken changes, so that records of different procedures are
# never averaged or compared unawares. 14: a capture's graph instances run in blocks, each a run of calls in a row
# (13: in turn, one call each); 13: a capture can be measured over several graph instances
# (Note [Graph instances], instances.py; settings["instances"], 1 by default: then as 12); 12: bench's and the CLI's
# processes launch on one stream, captures on the current one (Note [One stream], backend.py), and no trial asks a
# replay for more than MAX_LAUNCHES launches; 11: the
# reset runs the profiler around one eager call of each capture, as kernel_times_s around a forward pass; 10: trials
# begin after a launch-state reset (Note [Launch-latency state], backend.py), awake idle eager again; 9: awake idle
# replayed a graph of empty kernels (results/reproducibility/2026-11-28_130424); 8: awake idle also before the
# warm-up, for the card's leakage (Note [Leakage measured in every run], thermal.py); 7: capture warm-ups on the
# current stream; 6: so does a capture still noisy at the longest window, and the warm-up waits for a steady
# temperature; 5: a capture at the power limit gets windows of whole limiter cycles (Note [The limiter's cycle],
# trials.py); 4: trials start again once where the launch-latency state moved under them (Note [One state per
# run], launch_state.py); 3: re-planned short trials, bounded launches per trial; 2: adaptive trials and window
# timing; 1: before.
PROTOCOL_VERSION = 14


def _name(item, i: int) -> str:
    return getattr(item, "name", None) or f"capture{i}"


@dataclass
class _Run:
    """The state measure()'s phases share."""

    backend: object
    profile: SensorProfile
    rules: Rules
    sampler: Sampler
    say: Callable
    t_begin: float
    tail_s: float
    trials: list
    idle_window: tuple | None = None
    awake_window: tuple | None = None
    cool_window: tuple | None = None  # awake idle before the warm-up (Note [Leakage measured in every run])
    stop_reason: str = "every capture reached its target"
    launch_state: list = field(default_factory=list)
    state_restarts: int = 0
    between_rounds: Callable | None = None

    @classmethod
    def begin(cls, backend, profile, rules, say, budget_s: float, between_rounds) -> "_Run":
        """The run's state, its sampler started."""
        drain_s = drain_interval_for(profile.sample_period_s, backend.source)
        sampler = Sampler(source=backend.source, drain_interval_s=drain_s, energy_interval_s=0.25,
                          max_duration_s=budget_s + 300)
        st = cls(backend, profile, rules, sampler, say, clock.now_s(), max(profile.sample_period_s, 0.02), [],
                 between_rounds=between_rounds)
        sampler.start()
        return st


def measure(items, *, backend=None, device: int = 0, profile: SensorProfile | None = None,
            target_ci_rel: float = 0.005, min_trials: int = 5, max_trials: int = 40, window_s: float = 1.0,
            budget_s: float = 300.0, launch_s: float = 2e-3, idle_s: float = 1.0, max_warmup_s: float = 10.0,
            baseline: str = "awake_idle", target_cv: float | None = 0.01, max_window_s: float | None = None,
            unsettled_z: float = 4.0, limiter_s: float = 1.0, progress: Callable[[str], None] | None = None,
            between_rounds: Callable[[], None] | None = None, instances: int = 1) -> MeasureRun:
    """Measures the energy per call of each capture (a Capture, or a list of them).

    Phases: check -> calibrate -> idle, awake idle -> plan -> warm-up -> awake idle -> launch reset -> trials -> summary

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
        limiter_s: the power limiter's cycle (s); a capture at the limit is read over 3 (Note [The limiter's cycle]).
        between_rounds: called after each round of trials (every capture still measuring, one trial each), with
            the GPU left as it was: e.g. another process's turn on the card (its time counts in budget_s).
        instances: graphs of each capture's call (fresh captures of it), in blocks of calls: less of the ~1 % a graph
            can be off, but light parts run slower (Note [Graph instances]); 1, one graph, as protocol 12.

    A failure (or Ctrl-C) during the trials is re-raised with what was measured before it
    attached as ``exc.partial`` (a MeasureRun).
    """
    items = _check(items, target_ci_rel, min_trials, max_trials, window_s, budget_s, baseline, target_cv,
                   max_window_s, unsettled_z, limiter_s, between_rounds, instances)
    say = progress or (lambda msg: None)
    backend = backend or _gpu(device)
    profile = profile or calibrate(backend)                                       # calibrate
    rules = Rules(min_trials, max_trials, target_ci_rel, target_cv,
                  4 * window_s if max_window_s is None else max_window_s, 4 * profile.settle_s, unsettled_z,
                  backend.info.get("power_limit_w") or None, limiter_s)
    st = _Run.begin(backend, profile, rules, say, budget_s, between_rounds)
    error = None
    try:
        _rest(st, idle_s, window_s)                                                 # baselines: idle, awake
        st.trials = _plan(st, items, window_s, launch_s, instances)                 # plan
        _warm_up(st, max_warmup_s)                                                  # warm-up
        st.awake_window = _awake_baseline(st, window_s)                             # baselines: awake idle
        _reset_launch_state(st)                                                     # launch reset
        _run_trials(st, budget_s)                                                   # trials
        _launch_state(st)
    except BaseException as exc:  # noqa: BLE001 - stop the sampler, keep what was measured, re-raise
        error = exc
    return _finish(st, error, dict(target_ci_rel=target_ci_rel, min_trials=min_trials, max_trials=max_trials,
                                   window_s=window_s, budget_s=budget_s, launch_s=launch_s,
                                   settle_s=profile.settle_s, tail_s=st.tail_s, baseline=baseline,
                                   target_cv=target_cv, max_window_s=rules.max_window_s, unsettled_z=unsettled_z,
                                   power_limit_w=rules.power_limit_w, limiter_s=limiter_s,
                                   between_rounds=between_rounds is not None, instances=instances,
                                   protocol_version=PROTOCOL_VERSION),
                   baseline)


def _gpu(device: int):
    from .backend import GpuBackend

    return GpuBackend(device)


def _check(items, target_ci_rel, min_trials, max_trials, window_s, budget_s, baseline, target_cv, max_window_s,
           unsettled_z, limiter_s, between_rounds, instances) -> list:
    """Phase check: the arguments, before any GPU time is spent."""
    if isinstance(instances, bool) or not isinstance(instances, int) or not 1 <= instances <= MAX_UNROLL:
        raise ValueError(f"instances must be an integer from 1 to {MAX_UNROLL} (graphs of each call), got "
                         f"{instances!r}")
    if between_rounds is not None and not callable(between_rounds):
        raise TypeError(f"between_rounds must be a function of no arguments or None, got {between_rounds!r}")
    items = list(items) if isinstance(items, (list, tuple)) else [items]
    if not items:
        raise ValueError("measure() needs at least one capture")
    names = [_name(item, i) for i, item in enumerate(items)]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise ValueError(f"measure(): several captures are named {dup[0]!r}; give each a distinct name "
                         f"(capture(..., name=...)) so that run[name] finds the right one")
    if baseline not in BASELINES:
        raise ValueError(f"baseline must be one of {BASELINES}, got {baseline!r}")
    if not (0 < target_ci_rel < 1) or min_trials < 2 or max_trials < min_trials or window_s <= 0 or budget_s <= 0:
        raise ValueError("need 0 < target_ci_rel < 1, 2 <= min_trials <= max_trials, window_s > 0, budget_s > 0")
    max_window_s = 4 * window_s if max_window_s is None else max_window_s
    if (target_cv is not None and not target_cv > 0) or max_window_s < window_s or not unsettled_z > 0 or \
            not limiter_s > 0:
        raise ValueError("need target_cv > 0 (or None), max_window_s >= window_s, unsettled_z > 0 and limiter_s > 0")
    return items


def _rest(st: _Run, idle_s: float, window_s: float) -> None:
    """Phase baselines (idle, then awake idle as the card came): the GPU resting, the last two thirds its idle
    window; then empty kernels, the cool point of the run's leakage (Note [Leakage measured in every run])."""
    clock.sleep(idle_s)
    now = clock.now_ns()
    st.idle_window = (now - int(idle_s * 2 / 3 * 1e9), now)
    st.cool_window = _awake_baseline(st, window_s)


def _plan(st: _Run, items, window_s: float, launch_s: float, instances: int) -> list:
    """Phase plan: each capture's graph instances, as many as one launch of ``launch_s`` holds calls, up to
    ``instances`` (Note [Graph instances]), one call of each timed; in blocks so a launch lasts ``launch_s``."""
    out = []
    for i, item in enumerate(items):
        name = _name(item, i)
        made = st.backend.instances(item, 1, st.say)  # its own graph: timed once, whatever follows
        t1s = (st.backend.time_per_call_s(made[0]),)
        if (n := min(instances, math.ceil(launch_s / t1s[0]))) > 1:
            made = st.backend.instances(item, n, st.say)
            t1s += tuple(st.backend.time_per_call_s(c) for c in made[1:])
        t1 = float(np.mean(t1s))
        unroll = unroll_for(max(1, math.ceil(launch_s / t1)), len(made), MAX_UNROLL)
        t = Trials(item, name, st.backend.prepare(made, unroll), unroll, t1, st.profile.settle_s, window_s,
                   st.tail_s, instances=made, instance_t1=t1s)
        out.append(t)
        graphs = f" ({len(made)} graphs, {spread_rel(t1s):.2%} apart)" if len(made) > 1 else ""
        st.say(f"plan {name}: {t1 * 1e6:.2f} µs/call single{graphs}, K={unroll}, R={t.launches}")
    return out


def _warm_up(st: _Run, max_s: float) -> None:
    """Phase warm-up: the first capture until its power and the die's temperature are steady (thermal.py)."""
    t = st.trials[0]
    thermal.warm_up(st.backend, st.sampler, t.handle, t.launches,
                    lambda r: _steady_window(r, st.profile.settle_s, st.tail_s), max_s, st.say)


def _awake_baseline(st: _Run, window_s: float) -> tuple[int, int]:
    """Phase baselines (awake idle): empty kernels launched back-to-back; their steady window."""
    awake = st.backend.awake_idle(st.profile.settle_s + window_s)
    return _steady_window(awake, st.profile.settle_s, st.tail_s)


def _launch_state(st: _Run, say: Callable | None = None) -> dict | None:
    """The card's launch-latency state now, kept with the run (Note [One state per run], launch_state.py)."""
    state = launch_state.read(st.backend, say or st.say)
    if state is not None:
        st.launch_state.append(state | {"t_s": clock.now_s() - st.t_begin})
    return state


def _reset_launch_state(st: _Run) -> None:
    """The card's launch-latency state reset, then read: the state the trials begin in (backend.py's Note)."""
    launch_state.reset(st.backend, st.say, [t.item for t in st.trials])
    _launch_state(st)


def _one_state(st: _Run, budget_s: float) -> None:
    """After a round of trials, the state read quietly; the trials start again where it moved under them."""
    if st.launch_state and _launch_state(st, lambda _: None) is not None and \
            launch_state.start_again_if_moved(st.launch_state, st.trials, budget_s, st.state_restarts):
        st.state_restarts += 1
        a, b = st.launch_state[-2]["latency_s"], st.launch_state[-1]["latency_s"]
        st.say(f"launch-latency state moved ({a * 1e6:.3f} -> {b * 1e6:.3f} µs): every capture's trials start again")


def _run_trials(st: _Run, budget_s: float) -> None:
    """Phase trials: round-robin over the active captures until each converges or the budget ends."""
    previous = "awake_idle"
    while True:
        active = [t for t in st.trials if t.active(st.rules)]
        if not active:
            if any(not t.converged for t in st.trials):
                st.stop_reason = (f"max_trials={st.rules.max_trials} reached before every capture reached "
                                  f"±{st.rules.target_ci_rel:.2%}")
            return
        if clock.now_s() - st.t_begin > budget_s:
            st.stop_reason = (f"time budget of {budget_s:.0f} s ended before every capture reached "
                              f"±{st.rules.target_ci_rel:.2%}")
            return
        before = {}
        for t in active:
            before[t.name] = previous
            t.fit_launches(st.backend.prepare)
            r = st.backend.run(t.handle, t.launches)
            t.results.append((r, _steady_window(r, t.settle_s, st.tail_s)))
            t.tried += 1
            previous = t.name
        st.sampler.wait_for_samples(max(t.results[-1][0].host_end_ns for t in active))
        snap = st.sampler.snapshot()  # a sampler that died raises here, not at stop()
        for t in active:
            _judge(st, t, snap, before[t.name])
        _one_state(st, budget_s)
        if st.between_rounds is not None:
            st.between_rounds()
            previous = "between_rounds"


def _judge(st: _Run, t: Trials, snap: SamplerResult, after: str) -> None:
    r, (a, b) = t.results[-1]
    m = snap.in_window(a, b)
    t_call, n_launches = r.window_time_per_call_s(a, b)
    v = t.judge(snap.power_w[m], (b - a) * 1e-9, t_call, n_launches, r.gpu_time_per_call_s, after, st.rules,
                clock.now_s() - st.t_begin, snap.temperature_in(a, b))
    if v in (Verdict.ACCEPTED, Verdict.CONVERGED):
        e = t.energy()
        st.say(f"{t.name}: trial {e.n}, {e.mean * 1e3:.4g} mJ/call ±{e.ci95_rel:.2%}")
    elif v is Verdict.SHORT:
        st.say(f"{t.name}: trial window held {int(m.sum())} samples; launches per trial now {t.launches}")
    elif v is Verdict.UNSETTLED:
        drift, z, _ = t.rejected[-1]
        st.say(f"{t.name}: window still moving ({drift:+.1%}, z={z:.1f}) after {after}; trial rejected, "
               f"settle now {t.settle_s:.2f} s")
    else:
        st.say(f"{t.name}: {v.value} (window now {t.window_s:.2f} s)")


def _finish(st: _Run, error, settings: dict, baseline: str) -> MeasureRun:
    """Phase summarise: stop the sampler; the run's results, or the error with them attached."""
    res = None
    try:
        res = st.sampler.stop()
    except Exception as exc:  # noqa: BLE001
        res, error = getattr(exc, "result", None), error or exc
    if error is not None and (res is None or st.idle_window is None or not any(t.values for t in st.trials)):
        raise error
    run = summarise(res, st.trials, st.profile, st.backend, st.idle_window, (st.awake_window, st.cool_window),
                     baseline, st.stop_reason if error is None else f"interrupted: {type(error).__name__}: {error}",
                     clock.now_s() - st.t_begin, settings)
    run.launch_state = list(st.launch_state)
    if error is not None:
        error.partial = run  # the trials measured before the failure (or Ctrl-C)
        raise error
    return run


def _steady_window(r, settle_s: float, tail_s: float) -> tuple[int, int]:
    """The monotonic span of a run whose samples are steady: after the settle time, before the tail."""
    return r.host_start_ns + int(settle_s * 1e9), r.host_end_ns - int(tail_s * 1e9)
