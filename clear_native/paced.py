"""Parts measured at the model's power: each call followed by an idle gap, so that the power limit does not act.

Note [At the model's power]: a heavy part replayed back to back draws more than the card's limit, and the limiter
lowers its clocks; inside the model the same kernels run between lighter ones, below the limit, at full clocks.
Alone it then costs less than it does in the model (lower clocks, lower voltage: less energy per operation), and
the parts do not add up. Seen on an H200 (results/heldout.md, 2026-11-27): Gemma-2B's LM head (256k vocabulary,
half the model's energy) alone at 745 W and 1425 MHz, 224 mJ a call; in the model's graph its marginal was 274 mJ,
the model running at 634 W and 1980 MHz; the model by blocks came to 91.9 %. Phi-2's LM head alone ran at
810-1515 MHz (54 mJ; 71 mJ in context).

So a part measured in another regime than the model (the limit acting alone but not in the model, or SM clocks
alone below the model's) is measured once more, paced: each call followed by a spin kernel that keeps the GPU
awake and nearly idle for ``gap_s``, long enough that the pair's mean power stays below the model's (gap_for).
The gap alone is measured too, and

    energy of the part at the model's power = E(part + gap) - E(gap)

with the two 95 % CIs combined. The paced measurement is used only where it ran in the model's regime (not at the
power limit, SM clocks overlapping the model's): ``freed``. The parts' accounting is then done again with those
energies (ModelReport.paced: its rows, accounting and block_accounting), beside the one with the parts alone;
nothing measured alone is overwritten. A part at full clocks alone but slowed inside a model at the limit
(Llama-3.2-1B at 8x128) cannot be slowed down this way, and is only flagged (ModelReport.regime_mismatch).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

from .accounting import CLOCK_MARGIN_MHZ, clock_range, regime, top_clock_mhz

TARGET = 0.9  # of the model's mean power: the paced pair's mean power aimed at


@dataclass
class PacedResult:
    """One part measured paced (per call of the part, after its L2 copies)."""

    name: str
    gap_s: float                  # idle after each call
    energy_per_call_j: float      # E(part + gap) - E(gap)
    ci95_j: float
    gpu_time_per_call_s: float    # t(part + gap) - t(gap)
    alone_energy_per_call_j: float
    ratio: float                  # paced / alone
    mean_power_w: float           # of the paced pair
    sm_clock_mhz: list
    clock_event_reasons: list
    freed: bool                   # ran in the model's regime: used in the paced accounting
    why: str = ""                 # why not, where not freed


class Paced:
    """A callable: ``fn``, then ``idle()`` (a kernel that keeps the GPU idle ``idle_s``)."""

    def __init__(self, fn, idle, idle_s: float) -> None:
        self.fn, self.idle, self.idle_s = fn, idle, idle_s

    def __call__(self, *args, **kwargs):
        out = self.fn(*args, **kwargs) if self.fn is not None else None
        self.idle()
        return out


def _slower(part_clk: tuple, model_clk: tuple) -> bool:
    return bool(part_clk and model_clk) and part_clk[1] < model_clk[0] - CLOCK_MARGIN_MHZ


def candidates(parts: list, whole: dict, power_limit_w: float | None, pace) -> list:
    """Names of the parts to measure paced: ``pace`` "auto" (the parts at the power limit alone, or slower alone,
    in a model that runs free), a list of names, or None/False (none)."""
    if not pace:
        return []
    if pace != "auto":
        wanted = set(pace)
        return [p.name for p in parts if p.name in wanted]
    top, model_clk = top_clock_mhz(parts, whole), clock_range(whole.get("sm_clock_mhz"))
    if regime(whole.get("clock_event_reasons"), whole.get("mean_power_w", 0.0), power_limit_w, model_clk, top) != "free":
        return []
    return [p.name for p in parts if _slower(clock_range(p.sm_clock_mhz), model_clk) or
            regime(p.clock_event_reasons, p.mean_power_w, power_limit_w, p.sm_clock_mhz, top) == "power limit"]


def gap_for(part, whole: dict, idle_w: float) -> float:
    """Idle seconds after each call of ``part`` (measured alone) for the pair to draw about TARGET of the model's
    mean power. Its time and power at the model's clocks are guessed from the clocks: time / speed-up, dynamic
    power x speed-up (a guess only; whether it held is measured: PacedResult.freed)."""
    clk, model_clk = clock_range(part.sm_clock_mhz), clock_range(whole.get("sm_clock_mhz"))
    speed = max(1.0, sum(model_clk) / sum(clk)) if clk and model_clk else 1.0
    t_free = part.gpu_time_per_call_s / speed
    p_free = idle_w + (part.mean_power_w - idle_w) * speed
    target = TARGET * whole.get("mean_power_w", p_free)
    if not target > idle_w:
        return t_free
    return max(0.25 * t_free, t_free * (p_free - target) / (target - idle_w))


def paced_result(part, pair, gap, gap_s: float, whole: dict, power_limit_w: float | None) -> PacedResult:
    """``part``: its result alone; ``pair``, ``gap``: Measurements per call of the part (+ gap) and of the gap."""
    e = pair.energy_per_call_j - gap.energy_per_call_j
    ci = math.hypot(pair.energy_per_call_ci95_j, gap.energy_per_call_ci95_j)
    reg = regime(pair.clock_event_reasons, pair.mean_power_w, power_limit_w)
    clk, model_clk = clock_range(pair.sm_clock_mhz), clock_range(whole.get("sm_clock_mhz"))
    why = ("still at the power limit paced" if reg == "power limit" else
           f"SM clock {clk[0]:.0f}-{clk[1]:.0f} MHz paced, below the model's" if _slower(clk, model_clk) else "")
    return PacedResult(part.name, gap_s, e, ci, pair.gpu_time_per_call_s - gap.gpu_time_per_call_s,
                       part.energy_per_call_j, e / part.energy_per_call_j if part.energy_per_call_j else math.nan,
                       pair.mean_power_w, list(clk), list(pair.clock_event_reasons or ()), not why, why)


def substituted(results: list, paced: list) -> list:
    """``results`` (GroupResults, BlockResults' measurements) with the freed parts' energy and time paced."""
    by = {p.name: p for p in paced if p.freed}
    return [replace(r, energy_per_call_j=p.energy_per_call_j, ci95_rel=p.ci95_j / p.energy_per_call_j,
                    gpu_time_per_call_s=p.gpu_time_per_call_s) if (p := by.get(r.name)) else r for r in results]


def measure_paced(backend, groups: list, measured: dict, copies: dict, whole: dict, power_limit_w, pace,
                  failures: list, measure_opts: dict) -> list:
    """PacedResults of the parts ``candidates`` picks among ``groups`` (ComponentGroups measured alone: their
    GroupResults in ``measured``), each measured paced and its gap alone, in one more measure() run."""
    from .cold_l2 import cold, per_copy
    from .protocol import measure

    names = candidates([measured[g.name] for g in groups if g.name in measured], whole, power_limit_w, pace)
    if not names or not hasattr(backend, "idle_fn"):
        return []
    caps, gaps = [], {}
    for g in (g for g in groups if g.name in names):
        n, rep = copies[g.name], g.representative
        gap = gaps[g.name] = gap_for(measured[g.name], whole, whole.get("awake_idle_power_w", 0.0))
        try:  # n copies, then one gap for all n: the same mean power
            idle = backend.idle_fn(n * gap)
            caps += [backend.capture(Paced(cold(rep.module, n), idle, n * gap), *rep.args, name=f"{g.name} [paced]",
                                     **rep.kwargs), backend.capture(Paced(None, idle, n * gap), name=f"{g.name} [gap]")]
        except Exception as exc:  # noqa: BLE001 - named and reported; the rest is still measured
            failures.append((f"{g.name} [paced]", f"{type(exc).__name__}: {exc}"))
            gaps.pop(g.name)
    if not caps:
        return []
    run = measure(caps, backend=backend, **measure_opts)
    return [paced_result(measured[name], per_copy(run[f"{name} [paced]"], copies[name]),
                         per_copy(run[f"{name} [gap]"], copies[name]), gap, whole, power_limit_w)
            for name, gap in gaps.items()]


__all__ = ["Paced", "PacedResult", "candidates", "gap_for", "measure_paced", "paced_result",
           "substituted"]
