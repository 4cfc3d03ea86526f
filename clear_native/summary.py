"""A run's samples and trials summarised: each capture's Measurement and the run's MeasureRun (protocol.py's last
phase)."""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np

from . import thermal
from .results import Measurement, MeasureRun
from .sampler import SamplerResult, reason_names
from .stats import Summary
from .trials import Trials


def _range(values: np.ndarray) -> tuple:
    v = values[np.isfinite(values)]
    return (float(v.min()), float(v.max())) if v.size else (math.nan, math.nan)


def summarise(res: SamplerResult, plans: Sequence[Trials], profile, backend, idle_window, awake_windows, baseline,
               stop_reason, wall_s, settings) -> MeasureRun:
    """``awake_windows``: awake idle's after the warm-up and before it (Note [Leakage measured in every run])."""
    idle_w = res.mean_power_w(*idle_window)
    (awake_w, awake_c), cool = ((res.mean_power_w(*w), res.temperature_in(*w)) if w else (math.nan, math.nan)
                                for w in awake_windows)
    base_w = awake_w if baseline == "awake_idle" else idle_w
    out = []
    for p in plans:
        values, after, drift, timing, temps, trials_from = p.reported()
        pw = np.array([v[0] for v in values])
        tc = np.array([v[1] for v in values])
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
            unroll=p.unroll, launches_per_trial=p.launches,
            steady_window_s=float(np.mean([v[3] for v in values])) if values else math.nan,
            samples_per_trial=float(np.mean([v[2] for v in values])) if values else math.nan,
            temperature_c=_range(res.temperature_c[in_windows]), sm_clock_mhz=_range(res.sm_clock_mhz[in_windows]),
            clock_event_reasons=reason_names(reasons), converged=not math.isnan(p.converged_at),
            time_to_target_s=p.converged_at, eager=bool(getattr(p.item, "eager", False)),
            trial_energy_per_call_j=(pw * tc).tolist(), trial_power_w=pw.tolist(), trial_time_per_call_s=tc.tolist(),
            trial_after=list(after), trial_drift_rel=list(drift), trial_temperature_c=list(temps),
            trial_window_launches=[n for n, _ in timing], trial_run_time_per_call_s=[t for _, t in timing],
            settle_s=p.settle_s, rejected_trials=list(p.rejected), window_restarts=p.restarts,
            failed_trials=p.failed, trials_from=trials_from, dropped_sets=list(p.dropped_sets),
            graph_kernels_per_call=float(getattr(p.item, "graph_kernels", math.nan)),
            graph_instances=max(1, len(p.instances)), instance_time_per_call_s=list(p.instance_t1)))
    a, b = res.sample_span_ns(int(res.energy_t_ns[0]), int(res.energy_t_ns[-1])) if res.energy_t_ns.size else (0, 0)
    sample_j = res.sample_integral_j(a, b)
    counter_j = res.counter_energy_j(a, b)
    return MeasureRun(
        measurements=out, gpu=dict(backend.info), profile=profile.to_dict(), idle_power_w=idle_w,
        awake_idle_power_w=awake_w, counter_energy_j=counter_j, sample_energy_j=sample_j,
        counter_vs_samples_rel=(counter_j - sample_j) / sample_j if sample_j else math.nan,
        samples_lost=res.samples_lost, wall_s=wall_s, stop_reason=stop_reason, settings=settings,
        awake_idle_temperature_c=awake_c, cool_awake_idle_power_w=cool[0], cool_awake_idle_temperature_c=cool[1],
        leakage_w_per_c=thermal.leakage_slope([cool[::-1], (awake_c, awake_w)]))
