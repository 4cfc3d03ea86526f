"""Three layers of uncertainty, from records (issue 14): within a run, between fresh processes on one
card (repeatability), and between cards (reproducibility, raw and normalised by the card reference).

Note [The reported interval]
~~~~~~~~~~~~~~~~~~~~~~~~~~~~
A measurement's within-run 95 % CI (ci95_rel) says how well its trials pin down the mean of that
run. Measured again in a fresh process the number moves further: the process, the replay's
placement in memory, the card's temperature. That layer is estimated as a relative standard
deviation sigma_p from pairs of the same measurement in two processes, after removing the part
the within-run CIs already explain. A user's number then carries

    U95 = sqrt(ci95_rel^2 + (1.96 sigma_p)^2)                  (this card)
    U95 = sqrt(ci95_rel^2 + (1.96 sigma_p)^2 + (1.96 sigma_c)^2) (any card of the kind)

with sigma_c the spread of cards after normalisation (raw, if not normalised). A repeat on the
same card should land within sqrt(U95_a^2 + U95_b^2) of the first reading 95 % of the time; the
share that does is the interval's coverage, checked on measurements that did not set sigma_p.

Note [Card normalisation]
~~~~~~~~~~~~~~~~~~~~~~~~~
Each card measures the card reference (bench/cardref.py). Two models of a card's offset from the
reference card, both fitted on the reference workloads only:
- "one factor": every energy scales by f = geometric mean of the workloads' energy ratios;
- "static + dynamic": the awake-idle part (P_awake x time) scales by the awake-power ratio, the rest
  by the geometric mean of the workloads' dynamic-energy ratios.
Which one a report uses is chosen by how well each brings components together that were not
used to fit it (the study's and reproducibility's own tasks).
"""

from __future__ import annotations

import math
import statistics

from clear_native.analysis import parts

Z95 = 1.96
SIGMA_FLOOR = 0.0005  # the repeatability layer is never taken below 0.05 % (few pairs)


def rel_diff(a: float, b: float) -> float:
    return (b - a) / a if a else math.nan


def process_sigma(pairs: list) -> float:
    """sigma_p (Note [The reported interval]) from pairs ((a, ci_a), (b, ci_b)) of one measurement in two
    processes: the RMS relative difference over sqrt(2), less what the within-run CIs explain."""
    if not pairs:
        return math.nan
    d2 = [rel_diff(a, b) ** 2 for (a, _), (b, _) in pairs]
    within = [((ca / Z95) ** 2 + (cb / Z95) ** 2) for (_, ca), (_, cb) in pairs]
    excess = statistics.fmean(d2) - statistics.fmean(within)
    return max(SIGMA_FLOOR, math.sqrt(max(excess, 0.0) / 2))


def interval(ci95_rel: float, sigma_p: float, sigma_c: float = 0.0) -> float:
    """The 95 % half-width a user should read a number with (relative; Note [The reported interval])."""
    return math.sqrt(ci95_rel ** 2 + (Z95 * sigma_p) ** 2 + (Z95 * sigma_c) ** 2)


def interval_coverage(pairs: list, sigma_p: float) -> float:
    """The share of pairs whose second reading lands within the combined interval of both."""
    if not pairs:
        return math.nan
    inside = [abs(rel_diff(a, b)) <= math.hypot(interval(ca, sigma_p), interval(cb, sigma_p))
              for (a, ca), (b, cb) in pairs]
    return sum(inside) / len(inside)


# --------------------------------------------------------------------------- the card reference


def card_reference(checks: list) -> dict:
    """Each card's reference workloads, averaged over its checks: {uuid: {"awake_w", "gemm": {...}, ...}}."""
    by: dict = {}
    for rec in checks:
        if rec.get("status") != "ok":
            continue
        uuid = rec["identity"]["gpu"]["uuid"]
        by.setdefault(uuid, []).append(rec["card_check"])
    out = {}
    for uuid, cs in by.items():
        names = set.intersection(*(set(c["workloads"]) for c in cs))
        out[uuid] = {"awake_w": statistics.fmean(c["awake_idle_power_w"] for c in cs), "checks": len(cs)}
        for n in sorted(names):
            ws = [c["workloads"][n] for c in cs]
            out[uuid][n] = {k: statistics.fmean(w[k] for w in ws)
                            for k in ("energy_per_call_j", "dynamic_energy_per_call_j", "gpu_time_per_call_s",
                                      "ci95_rel")}
    return out


def _geomean(xs) -> float:
    xs = list(xs)
    return math.exp(statistics.fmean(math.log(x) for x in xs)) if xs else math.nan


def card_factors(ref: dict, reference_card: str, workloads=("gemm", "copy")) -> dict:
    """Per card: the "one factor" f, and the "static + dynamic" pair (s, d), relative to
    ``reference_card`` (Note [Card normalisation]); with each factor's own uncertainty (relative), the
    spread of the workloads' ratios around it."""
    base = ref[reference_card]
    out = {}
    for uuid, c in ref.items():
        ratios = [c[w]["energy_per_call_j"] / base[w]["energy_per_call_j"] for w in workloads]
        dyn = [c[w]["dynamic_energy_per_call_j"] / base[w]["dynamic_energy_per_call_j"] for w in workloads]
        f = _geomean(ratios)
        spread = max(abs(r / f - 1) for r in ratios)
        out[uuid] = {"one": f, "one_u_rel": spread, "static": c["awake_w"] / base["awake_w"],
                     "dynamic": _geomean(dyn), "dynamic_u_rel": max(abs(r / _geomean(dyn) - 1) for r in dyn)}
    return out


def normalise(energy_j: float, time_s: float, awake_w: float, factors: dict, model: str) -> float:
    """An energy measured on a card, as the reference card would read it."""
    if model == "one":
        return energy_j / factors["one"]
    static = awake_w * time_s
    return static / factors["static"] + (energy_j - static) / factors["dynamic"]


def spread(values: list) -> float:
    """(max - min) / mean of one measurement over cards."""
    return (max(values) - min(values)) / statistics.fmean(values) if len(values) > 1 else math.nan


def measurements(rec: dict) -> dict:
    """{name: (energy J, ci95_rel, GPU time s)} of a study record: the whole model and each group."""
    return parts(rec["report"])


def reference_pairs(checks: list, first: str, second: str) -> list:
    """The card reference's readings at phases ``first`` and ``second`` on each card, paired per workload as
    ((J, ci95_rel), (J, ci95_rel)): the same work in two processes, for process_sigma."""
    by_card: dict = {}
    for c in checks:
        if c.get("status") == "ok":
            by_card.setdefault(c["identity"]["gpu"]["uuid"], {})[c.get("phase")] = c["card_check"]["workloads"]
    return [((w[first][k]["energy_per_call_j"], w[first][k]["ci95_rel"]),
             (w[second][k]["energy_per_call_j"], w[second][k]["ci95_rel"]))
            for w in by_card.values() if first in w and second in w for k in sorted(w[first])]


# A repeat whose GPU time per call moved by this much or more ran in the other launch-latency state
# (Note [Launch-latency state], clear_native/backend.py): its energy moves with its time.
TIME_MOVED = 0.02


def by_time_state(diffs: list) -> dict:
    """Repeats split by whether their GPU time per call held: ``diffs`` is [(energy rel diff, time rel diff)];
    for "time_held" and "time_moved": how many, and the largest and RMS |energy change|."""
    out = {}
    for key, keep in (("time_held", lambda t: abs(t) < TIME_MOVED), ("time_moved", lambda t: abs(t) >= TIME_MOVED)):
        d = [abs(e) for e, t in diffs if keep(t)]
        out[key] = {"n": len(d), "max_rel": max(d, default=math.nan),
                    "rms_rel": math.sqrt(sum(x * x for x in d) / len(d)) if d else math.nan}
    return out


__all__ = ["process_sigma", "interval", "interval_coverage", "card_reference", "card_factors", "normalise",
           "spread", "measurements", "rel_diff", "reference_pairs", "TIME_MOVED", "by_time_state"]
