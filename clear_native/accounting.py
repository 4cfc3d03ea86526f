"""How measured parts add up to the whole model: the arithmetic, apart from any measuring.

Isolated parts (account):
    coverage = sum(occurrences x energy per call) / whole-model energy per call.
    The remainder is split, from the profiler's kernel list of one forward pass:
    - glue: kernels outside every component (residual adds, casts, masks...), whose
      energy is taken at the components' mean power;
    - gaps: the whole model's GPU time per call minus the components' GPU time and
      the glue's, spent at the power of the GPU awake but idle.
    explained coverage = (components + glue + gaps) / whole model.

Parts in context (context_accounting, Note [A component in context]):
    in-context energy of a group = model energy - energy of the model without it;
    interaction = model - sum(in-context energies) - the model without components.
"""

from __future__ import annotations

import math

from .results import Accounting, ContextAccounting, InContext


def account(groups: list, model_energy_j: float, model_time_s: float, kernel_time_s: float,
            component_kernel_time_s: float, awake_idle_power_w: float, glue_ops=()) -> Accounting:
    """The coverage arithmetic (see the module's doc). Times are per forward pass. ``glue_ops``: what the glue
    is, (op, µs) largest first, as the profiled pass saw it (kept with the accounting)."""
    comp_e = sum(g.occurrences * g.energy_per_call_j for g in groups)
    comp_t = sum(g.occurrences * g.gpu_time_per_call_s for g in groups)
    glue_t = max(0.0, kernel_time_s - component_kernel_time_s)
    glue_e = glue_t * (comp_e / comp_t) if comp_t > 0 else math.nan
    gaps_t = max(0.0, model_time_s - comp_t - glue_t)
    gaps_e = gaps_t * awake_idle_power_w
    return Accounting(model_energy_j, model_time_s, comp_e, comp_t, glue_t, glue_e, gaps_t, gaps_e,
                      comp_e / model_energy_j, (comp_e + glue_e + gaps_e) / model_energy_j, list(glue_ops))


def account_against(parts: list, wm, kernels: tuple) -> Accounting:
    """account() of ``parts`` against the whole model as measured (``wm``: its energy, GPU time and awake-idle
    power per call), with a profiled pass's ``kernels``: (all kernels s, kernels inside the parts s, glue ops)."""
    total_s, inside_s, glue_ops = kernels
    return account(parts, wm.energy_per_call_j, wm.gpu_time_per_call_s, total_s, inside_s, wm.awake_idle_power_w,
                   glue_ops)


def context_accounting(whole, without: dict, rest, groups: list,
                       removed: dict | None = None, output_diff: dict | None = None,
                       model_energy_j: float | None = None, failed=()) -> tuple[list, ContextAccounting]:
    """In-context energies of ``groups`` (their isolated GroupResults, or anything with name,
    occurrences, energy_per_call_j) from Measurements, all per forward pass (already divided
    by L2 copies): ``whole`` the model, ``without[name]`` the model without that group's nodes
    (absent: the group added no node, its in-context energy is 0), ``rest`` the model without
    any component's nodes (None if not measured). ``removed[name]``: how many nodes went;
    ``output_diff[name]``: how far the model's output moved without them. ``model_energy_j``:
    the model as usually captured, when ``whole`` is a graph laid out differently. ``failed``:
    groups whose graph without them could not be made (NaN, not 0, and in no sum).
    """
    removed, output_diff = removed or {}, output_diff or {}
    rows = []
    e_model = whole.energy_per_call_j
    for g in groups:
        m = without.get(g.name)
        n = g.occurrences
        if g.name in failed:
            nan = math.nan
            rows.append(InContext(g.name, n, 0, nan, nan, nan, nan, nan, nan))
            continue
        if m is None:
            rows.append(InContext(g.name, n, 0, 0.0, 0.0, 0.0, 0.0, 0.0, whole.mean_power_w))
            continue
        e = (e_model - m.energy_per_call_j) / n
        ci = math.hypot(whole.energy_per_call_ci95_j, m.energy_per_call_ci95_j) / n
        t = (whole.gpu_time_per_call_s - m.gpu_time_per_call_s) / n
        iso = g.energy_per_call_j
        rows.append(InContext(g.name, n, removed.get(g.name, 0), e, ci, t,
                              e / iso if iso else math.nan, n * e / e_model, m.mean_power_w,
                              output_diff.get(g.name, math.nan)))
    comp = sum(r.occurrences * r.energy_per_call_j for r in rows if r.name not in failed)
    rest_e = rest.energy_per_call_j if rest is not None else math.nan
    rest_t = rest.gpu_time_per_call_s if rest is not None else math.nan
    layout = (e_model / model_energy_j - 1) if model_energy_j else math.nan
    acc = ContextAccounting(e_model, comp, rest_e, rest_t, e_model - comp - rest_e, comp / e_model,
                            (comp + rest_e) / e_model, layout)
    return rows, acc


THROTTLES = ("hw_power_brake_slowdown", "hw_slowdown", "sw_thermal_slowdown", "hw_thermal_slowdown")
AT_LIMIT = 0.85  # of the enforced power limit: NVML sets sw_power_cap far below it too (seen at 250 W of 700)
CLOCK_MARGIN_MHZ = 30.0  # SM clocks closer than this are the same clocks


def clock_range(x) -> tuple:
    """(lowest, highest) SM clock of a measurement's windows, or () where not read."""
    clk = tuple(x or ())
    return clk if len(clk) == 2 and all(map(math.isfinite, clk)) else ()


def top_clock_mhz(parts: list, whole: dict) -> float | None:
    """The highest SM clock read in any window of the whole model or of ``parts`` (None where none was read)."""
    tops = [c[1] for c in [clock_range(whole.get("sm_clock_mhz"))] + [clock_range(p.sm_clock_mhz) for p in parts] if c]
    return max(tops) if tops else None


def regime(reasons, mean_power_w: float, power_limit_w: float | None, sm_clock_mhz=(),
           top_clock_mhz: float | None = None) -> str:
    """'throttled' (a hardware or thermal slowdown), 'power limit' (sw_power_cap while drawing at least
    85 % of the enforced limit, with SM clocks below ``top_clock_mhz``, the highest any measurement of the run
    read) or 'free'. On an H200 NVML reported sw_power_cap for windows at 250-310 W, and for Gemma-2B-2L's whole
    prefill at 604 W of 700 with its SM clock at 1980 MHz in every window, the highest any part reached: the
    bit alone does not say the limit acted."""
    reasons = set(reasons or ())
    if reasons & set(THROTTLES):
        return "throttled"
    near = power_limit_w is None or not power_limit_w > 0 or mean_power_w >= AT_LIMIT * power_limit_w
    clk = clock_range(sm_clock_mhz)
    at_top = bool(clk) and top_clock_mhz is not None and clk[0] >= top_clock_mhz - CLOCK_MARGIN_MHZ
    return "power limit" if "sw_power_cap" in reasons and near and not at_top else "free"


def regime_mismatch(parts: list, whole: dict, power_limit_w: float | None = None) -> list:
    """(name, why) for each part (GroupResult or BlockResult) measured in another regime than the whole
    model (see regime()), or at SM clocks that do not overlap the model's. Note [Blocks and interaction]
    says why it matters: such a part alone does not cost what it costs inside."""
    top = top_clock_mhz(parts, whole)
    model_clk = clock_range(whole.get("sm_clock_mhz"))
    model_reg = regime(whole.get("clock_event_reasons"), whole.get("mean_power_w", 0.0), power_limit_w, model_clk, top)
    out = []
    for p in parts:
        clk = clock_range(p.sm_clock_mhz)
        reg = regime(p.clock_event_reasons, p.mean_power_w, power_limit_w, clk, top)
        if reg != model_reg:
            out.append((p.name, f"{reg} alone ({p.mean_power_w:.0f} W), {model_reg} in the model "
                                f"({whole.get('mean_power_w', math.nan):.0f} W)"))
        elif clk and model_clk and (clk[1] < model_clk[0] - CLOCK_MARGIN_MHZ or
                                    clk[0] > model_clk[1] + CLOCK_MARGIN_MHZ):
            out.append((p.name, f"SM clock {clk[0]:.0f}-{clk[1]:.0f} MHz alone, {model_clk[0]:.0f}-"
                                f"{model_clk[1]:.0f} MHz in the model"))
    return out
