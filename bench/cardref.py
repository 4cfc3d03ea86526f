"""The card reference: a short, fixed set of workloads every card measures with every run (issue 14).

Two H200s read the same component 5-6 % apart, yet the ratio between two cards is the same for
every capture to about 0.5 %: a per-card factor explains nearly all of it. The card reference
measures that factor, so that energies can be reported raw and normalised to a reference card:

- ``gemm``: a bf16 matrix product (4096^3, compute-bound: tensor cores, high power);
- ``copy``: a 256 MiB device-to-device copy (memory-bound: HBM, moderate power);
- ``awake_idle``: the GPU launching empty kernels (the static part: what a card draws doing nothing).

Before its trials, a "start" check brings the GPU to a steady temperature (Note [Steady
temperature]), so that the first tasks of a run are not measured on a colder card than the last.
"""

from __future__ import annotations

import math

import clear_native as cn

GEMM_N = 4096
COPY_BYTES = 256 * 2**20
WORKLOADS = ("gemm", "copy")
SOAK_MAX_S = 45.0
SOAK_STEP_S = 5.0
SOAK_STEADY_C = 1.0     # a rise of at most this over the last two steps is steady


# Note [Steady temperature]
# ~~~~~~~~~~~~~~~~~~~~~~~~~
# A GPU's power at a given clock rises with its temperature (leakage), so a component measured on
# a cold card reads lower than on a hot one. A run therefore starts with a soak: a calibration load
# in steps of SOAK_STEP_S until the temperature rose by at most SOAK_STEADY_C over the last two steps
# (at most SOAK_MAX_S). The card check records the temperatures it saw; the thermal measurement
# (bench/reproducibility.py) says how much a component's energy moves per 10 °C.


def temperature_c(backend) -> float:
    """The GPU's temperature now (°C), from a short sample of its sensors."""
    sampler = cn.Sampler(source=backend.source, drain_interval_s=0.02, status_interval_s=0.02, max_duration_s=5)
    sampler.start()
    try:
        cn.clock.sleep(0.1)
    finally:
        r = sampler.stop()
    return float(r.temperature_c[-1]) if len(r.temperature_c) else math.nan


def soak(backend, max_s: float = SOAK_MAX_S) -> dict:
    """Loads the GPU until its temperature is steady (Note [Steady temperature]); the temperatures seen."""
    temps, spent = [temperature_c(backend)], 0.0
    while spent < max_s:
        backend.load(SOAK_STEP_S)
        spent += SOAK_STEP_S
        temps.append(temperature_c(backend))
        if len(temps) >= 3 and temps[-1] - temps[-3] <= SOAK_STEADY_C:
            break
    return {"temperatures_c": temps, "soak_s": spent, "steady": len(temps) >= 3 and temps[-1] - temps[-3] <= SOAK_STEADY_C}


def captures(lab, backend):
    """The reference workloads as captures on ``backend``."""
    torch = lab.torch
    dev = lab.device
    a = torch.randn(GEMM_N, GEMM_N, dtype=torch.bfloat16, device=dev)
    b = torch.randn(GEMM_N, GEMM_N, dtype=torch.bfloat16, device=dev)
    src = torch.randn(COPY_BYTES // 2, dtype=torch.bfloat16, device=dev)
    dst = torch.empty_like(src)
    return [backend.capture(torch.matmul, a, b, name="gemm"),
            backend.capture(lambda: dst.copy_(src), name="copy")]


def backend_of(lab):
    """The simulated backend of a simulated lab; on a GPU, a backend of this job's own, so that its graphs
    are freed with it and never kept for the tasks that follow in the same process."""
    return lab.backend if lab.backend is not None else cn.GpuBackend(0)


def measure(lab, profile, args, soak_first: bool = True) -> dict:
    """The card reference on ``lab``'s card: energy per call of each workload, awake-idle power and the
    temperatures, as a dict for the record."""
    backend = backend_of(lab)
    soaked = soak(backend) if soak_first else None
    caps = captures(lab, backend)
    run = cn.measure(caps, backend=backend, profile=profile, min_trials=max(5, args.min_trials),
                     max_trials=max(12, args.max_trials), target_ci_rel=0.003, window_s=max(0.3, args.window_s),
                     budget_s=120)
    out = {}
    for m in run.measurements:
        out[m.name] = {"energy_per_call_j": m.energy_per_call_j, "dynamic_energy_per_call_j": m.dynamic_energy_per_call_j,
                       "ci95_rel": m.ci95_rel, "cv": m.cv, "trials": m.trials,
                       "gpu_time_per_call_s": m.gpu_time_per_call_s, "mean_power_w": m.mean_power_w,
                       "temperature_c": list(m.temperature_c), "sm_clock_mhz": list(m.sm_clock_mhz),
                       "clock_event_reasons": list(m.clock_event_reasons),
                       "trial_energy_per_call_j": list(m.trial_energy_per_call_j),
                       "trial_temperature_c": list(m.trial_temperature_c)}
    return {"workloads": out, "awake_idle_power_w": run.awake_idle_power_w, "idle_power_w": run.idle_power_w,
            "soak": soaked, "temperature_after_c": temperature_c(backend)}


__all__ = ["measure", "soak", "temperature_c", "WORKLOADS"]
