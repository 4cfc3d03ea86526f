"""The reference procedure of the CLEAR paper's public code, for side-by-side comparison.

Read nvmlDeviceGetTotalEnergyConsumption, call the module N times from a Python
loop, read the counter again, divide; sleep between trials. No synchronisation,
no idle subtraction: faithful to the original, biases included (FINDINGS.md).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from . import clock
from .stats import Summary


@dataclass(frozen=True)
class CounterLoopResult:
    energy_per_call_j: float       # mean over trials
    cv: float
    ci95_rel: float
    trials: int
    calls_per_trial: int
    wall_time_per_call_s: float    # mean wall time of one call in the loop
    trial_energy_per_call_j: list

    def to_dict(self) -> dict:
        return asdict(self)


def counter_loop(fn, *args, n: int = 10_000, trials: int = 20, sleep_s: float = 0.5, device: int = 0,
                 source=None, **kwargs) -> CounterLoopResult:
    """Energy per call of ``fn(*args, **kwargs)`` by the CLEAR authors' loop.

    ``source`` is a power source (default: the NVML sensors of CUDA ``device``).
    """
    if n < 1 or trials < 1 or sleep_s < 0:
        raise ValueError("need n >= 1, trials >= 1, sleep_s >= 0")
    if source is None:
        from ._native import core
        from .device import nvml_device

        source = core.NvmlSource(nvml_device(device))
    per_call, walls = [], []
    for _ in range(trials):
        e0 = source.read_energy_mj()
        t0 = clock.now_s()
        for _ in range(n):
            fn(*args, **kwargs)
        t1 = clock.now_s()
        e1 = source.read_energy_mj()
        per_call.append((e1 - e0) / 1000.0 / n)
        walls.append((t1 - t0) / n)
        clock.sleep(sleep_s)
    s = Summary.of(per_call)
    return CounterLoopResult(energy_per_call_j=s.mean, cv=s.cv, ci95_rel=s.ci95_rel, trials=trials,
                             calls_per_trial=n, wall_time_per_call_s=sum(walls) / len(walls),
                             trial_energy_per_call_j=per_call)
