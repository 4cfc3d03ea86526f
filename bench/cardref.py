"""The card reference: a short, fixed set of workloads every card measures with every run (issue 14).

Two H200s read the same component 5-6 % apart, yet the ratio between two cards is the same for
every capture to about 0.5 %: a per-card factor explains nearly all of it. The card reference
measures that factor, so that energies can be reported raw and normalised to a reference card:

- ``gemm``: a bf16 matrix product (4096^3, compute-bound: tensor cores, at the power limit on an H100/H200);
- ``copy``: a 256 MiB device-to-device copy (memory-bound: HBM, moderate power);
- ``gemm_fp32``: an fp32 matrix product (4096^3 on the CUDA cores, 2.67 ms a call: compute-bound, meant to
  run below the power limit, where a card's energy is what its silicon draws at its clock, not what the
  limiter allows; Note [Card normalisation], bench/uncertainty.py). Measured on seven H200s (2026-11-28) it
  drew 661-696 W of 700 at 1950-1980 MHz: just under the limit, at its edge on the leakier cards;
- ``awake_idle``: the GPU launching empty kernels (the static part: what a card draws doing nothing).

Before its trials, a "start" check brings the GPU to a steady temperature (Note [Steady
temperature]), so that the first tasks of a run are not measured on a colder card than the last;
the thermal job (``thermal``) follows each workload's energy per call as the die warms from idle and as it
cools from the GEMM's heat (Note [Two temperatures]).
"""

from __future__ import annotations

import math

import clear_native as cn

GEMM_N = 4096
COPY_BYTES = 256 * 2**20
WORKLOADS = ("gemm", "copy", "gemm_fp32")
SOAK_MAX_S = 45.0
SOAK_STEP_S = 5.0
SOAK_STEADY_C = 1.0     # a rise of at most this over the last two steps is steady
COOL_MAX_S = 120.0
COOL_STEP_S = 3.0       # a fall of at most SOAK_STEADY_C over the last two steps is cool (idle and steady)
TRANSIENT_S = 8.0       # one workload replayed without a break while its die warms or cools
BIN_S = 0.25            # ... read in bins of this long: energy per call and temperature


# Note [Steady temperature]
# ~~~~~~~~~~~~~~~~~~~~~~~~~
# A GPU's power at a given clock rises with its temperature (leakage), so a component measured on
# a cold card reads lower than on a hot one. A run therefore starts with a soak: the reference's GEMM
# replayed in steps of SOAK_STEP_S until the temperature rose by at most SOAK_STEADY_C over the last two
# steps (at most SOAK_MAX_S). The soak was the calibration kernel until two H200s showed it cooler than the
# workloads (results/reproducibility/2026-11-27_205137): 45-51 °C where the GEMM ran at 58-68 °C, so the
# "hot" reading began on a card the soak had cooled. The card check records the temperatures it saw.
#
# Note [Two temperatures]
# ~~~~~~~~~~~~~~~~~~~~~~~~
# How much a component's energy moves with temperature (bench/reproducibility.py, % per 10 °C) needs
# readings far apart in temperature. A die follows its own load within seconds: on two H200s (GPU-b375e7a8,
# GPU-e1a7bc38; results/reproducibility/2026-11-27_231347) the GEMM's trials ran at 56-62 °C whether they
# followed 6 s of idle at 36-38 °C or a soak, and the copy's card cooled from 48 to 36 °C in 3 s of idle:
# the protocol's own rest, warm-up and baselines take longer than that, so two protocol readings of one
# workload sit at one temperature (0.5-4 °C apart; the slopes from them were noise). So ``thermal`` reads the
# transients themselves: each workload replayed for TRANSIENT_S without a break, once on a card left idle
# until its temperature stopped falling (the die warming under it), once after a soak with the GEMM, the
# hottest workload (the die cooling, or for the GEMM itself staying hot), both read in bins of BIN_S
# (energy per call = the bin's mean power x its launches' GPU time per call; the bin's temperature), the
# first profile.settle_s of each left out (the sensor's lag and the load-step overshoot). The slope is
# fitted through every bin of both. A workload at the power limit (the GEMM) trades power for clocks along
# the limiter's cycle inside a bin (Note [The limiter's cycle], clear_native/trials.py): on GPU-e4d8b7cb its
# energy fell 2.6 % over 8 s as the limiter left its first plateau while the die warmed, which no slope
# separates. So the job also reads an fp32 GEMM (CUDA cores, not tensor cores): compute-bound, meant to run below
# the limit (one of the card reference's workloads); on three H200s it drew 669-708 W with its clocks at
# 1950-1980 MHz (results/reproducibility/2026-11-28_011450): at the limit's edge, so its slope (+0.2 to +2.8 % per
# 10 °C) is not wholly free of the limiter either. The table names each workload's clock events.


def temperature_c(backend) -> float:
    """The GPU's temperature now (°C), from a short sample of its sensors."""
    sampler = cn.Sampler(source=backend.source, drain_interval_s=0.02, status_interval_s=0.02, max_duration_s=5)
    sampler.start()
    try:
        cn.clock.sleep(0.1)
    finally:
        r = sampler.stop()
    return float(r.temperature_c[-1]) if len(r.temperature_c) else math.nan


def replay_for(backend, cap, seconds: float):
    """Replays ``cap`` back-to-back for about ``seconds`` (launches of ~2 ms): a load as hot as the workload."""
    t = backend.time_per_call_s(cap)
    unroll = max(1, int(2e-3 / t))
    return backend.run(backend.prepare(cap, unroll), max(1, round(seconds / (t * unroll))))


def _settle(backend, step, max_s: float, step_s: float, rising: bool) -> dict:
    """Runs ``step(step_s)`` until the temperature moved by at most SOAK_STEADY_C over the last two steps (in
    the direction expected: ``rising`` while loaded, falling while idle) or ``max_s`` passed; the temperatures."""
    temps, spent = [temperature_c(backend)], 0.0
    steady = False
    while spent < max_s and not steady:
        step(step_s)
        spent += step_s
        temps.append(temperature_c(backend))
        steady = len(temps) >= 3 and (temps[-1] - temps[-3] if rising else temps[-3] - temps[-1]) <= SOAK_STEADY_C
    return {"temperatures_c": temps, "seconds": spent, "steady": steady}


def soak(backend, load, max_s: float = SOAK_MAX_S) -> dict:
    """Runs ``load(seconds)`` until the temperature is steady (Note [Steady temperature]); the temperatures."""
    return _settle(backend, load, max_s, SOAK_STEP_S, rising=True)


def cool_down(backend, max_s: float = COOL_MAX_S) -> dict:
    """Leaves the GPU idle until its temperature stops falling (Note [Two temperatures]); the temperatures."""
    return _settle(backend, cn.clock.sleep, max_s, COOL_STEP_S, rising=False)


def captures(lab, backend):
    """The reference workloads (WORKLOADS) as captures on ``backend``. The fp32 GEMM runs on the CUDA cores:
    PyTorch's default keeps TF32 off for matmul (checked here, since a caller's setting would change what it
    measures)."""
    torch = lab.torch
    dev = lab.device
    if torch.backends.cuda.matmul.allow_tf32:
        raise RuntimeError("the card reference's fp32 GEMM needs torch.backends.cuda.matmul.allow_tf32 = False "
                           "(PyTorch's default): with TF32 it runs on the tensor cores, at the power limit")
    a, b = (torch.randn(GEMM_N, GEMM_N, dtype=torch.bfloat16, device=dev) for _ in range(2))
    a32, b32 = (torch.randn(GEMM_N, GEMM_N, dtype=torch.float32, device=dev) for _ in range(2))
    src = torch.randn(COPY_BYTES // 2, dtype=torch.bfloat16, device=dev)
    dst = torch.empty_like(src)
    return [backend.capture(torch.matmul, a, b, name="gemm"),
            backend.capture(lambda: dst.copy_(src), name="copy"),
            backend.capture(torch.matmul, a32, b32, name="gemm_fp32")]


def backend_of(lab, thermal: bool = False):
    """The simulated backend of a simulated lab (``thermal``: of its card as one that heats as it draws,
    tasks.Lab.heating_backend); on a GPU, a backend of this job's own, so that its graphs are freed with it and
    never kept for the tasks that follow in the same process."""
    if lab.backend is None:
        return cn.GpuBackend(0)
    return lab.heating_backend() if thermal else lab.backend


def measure(lab, profile, args) -> dict:
    """The card reference on ``lab``'s card, after a soak with the GEMM (Note [Steady temperature]): energy per
    call of each workload, awake-idle power and the temperatures, as a dict for the record."""
    backend = backend_of(lab)
    caps = captures(lab, backend)
    soaked = soak(backend, lambda s: replay_for(backend, caps[0], s))
    return _measured(backend, caps, profile, args) | {"soak": soaked, "temperature_after_c": temperature_c(backend)}


def transient(backend, cap, profile, seconds: float = TRANSIENT_S, bin_s: float = BIN_S) -> dict:
    """``cap`` replayed without a break for ``seconds``, read in bins of ``bin_s`` after the sensor settled
    (Note [Two temperatures]): {"bins": [{"t_s", "temperature_c", "power_w", "time_per_call_s",
    "energy_per_call_j"}], "clock_event_reasons", "sm_clock_mhz"}."""
    sampler = cn.Sampler(source=backend.source, drain_interval_s=0.05, status_interval_s=0.02,
                         max_duration_s=seconds + 30)
    sampler.start()
    try:
        r = replay_for(backend, cap, seconds)
        sampler.wait_for_samples(r.host_end_ns)
    finally:
        res = sampler.stop()
    bins, step = [], int(bin_s * 1e9)
    for a in range(r.host_start_ns + int(profile.settle_s * 1e9), r.host_end_ns - step + 1, step):
        b = a + step
        t_call, n = r.window_time_per_call_s(a, b)
        power, temp = res.mean_power_w(a, b), res.temperature_in(a, b)
        if n and math.isfinite(temp) and math.isfinite(power):
            bins.append({"t_s": (a - r.host_start_ns) * 1e-9, "temperature_c": temp,
                         "power_w": power, "time_per_call_s": t_call, "energy_per_call_j": power * t_call})
    return {"bins": bins, "clock_event_reasons": res.clock_events_in(r.host_start_ns, r.host_end_ns),
            "sm_clock_mhz": res.sm_clock_range_mhz(r.host_start_ns, r.host_end_ns)}


def thermal(lab, profile, args) -> dict:
    """Each reference workload's transients (Note [Two temperatures]): {"cool": {workload: cool_down()},
    "soak": {workload: soak()}, "transients": {workload: {"warming": transient(), "cooling": transient()}}}."""
    backend = backend_of(lab, thermal=True)
    caps = captures(lab, backend)
    out = {"cool": {}, "soak": {}, "transients": {}}
    for cap in caps:
        out["cool"][cap.name] = cool_down(backend)
        warming = transient(backend, cap, profile)
        out["soak"][cap.name] = soak(backend, lambda s: replay_for(backend, caps[0], s))
        out["transients"][cap.name] = {"warming": warming, "cooling": transient(backend, cap, profile)}
    return out


def _measured(backend, caps, profile, args) -> dict:
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
            "awake_idle_temperature_c": run.awake_idle_temperature_c,
            "cool_awake_idle_power_w": run.cool_awake_idle_power_w,
            "cool_awake_idle_temperature_c": run.cool_awake_idle_temperature_c, "leakage_w_per_c": run.leakage_w_per_c}


__all__ = ["measure", "thermal", "captures", "transient", "soak", "cool_down", "temperature_c", "WORKLOADS"]
