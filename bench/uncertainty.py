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

Which pairs set sigma_p: the card reference's heavy workloads move less between processes than a
model's parts (0.09 % against 0.18 % on four H200s, results/reproducibility/2026-11-28_064818), so
an interval built on them held 60 % of the tasks' repeats. sigma_p is therefore taken from the
tasks' own repeats, each task's repeats judged with the sigma_p of the other tasks' (held_out_coverage),
and at one temperature (REFERENCE_TEMPERATURE_C, at_reference): a reading taken at another die
temperature moves by what the card's leakage costs over its GPU time, which this interval does not
hold (Note [Leakage measured in every run], clear_native/thermal.py); under load it moves more than idle's
leakage says, ~0.33 % of energy per call per °C on H200s, and the reports also judge the repeats scaled by
that (Note [Energy per call per °C] below).
How sigma_p is set from them: the repeats are not normal. Most land within their CIs, a few (a card
still cooling, a launch state that moved) several times further, so a normal spread fitted to them
(process_sigma, Paule-Mandel) makes an interval that holds fewer than 95 % of the repeats it was not
fitted on: 92.5 % of 40 at 45 °C on three H200s (results/reproducibility/2026-11-28_194941), where the
moment estimate it replaced gave 85.0 %. The sigma_p a report states is therefore calibrated: the
smallest whose interval holds 95 % of the other tasks' repeats, counted as split-conformal prediction
counts (calibrated_sigma); the normal spread is reported beside it. Where every repeat is of one task (runs of
one task joined across hosts), each card's repeats are judged with the sigma_p of the other cards' instead
(bench/reproducibility.py held_out_by): the card reference's sigma_p, the fallback, held 83 % of BERT-base's 24
repeats on four H200s (results/reproducibility/2026-11-29_091056/joined_4_cards.md).

Note [Card normalisation]
~~~~~~~~~~~~~~~~~~~~~~~~~
Each card measures the card reference (bench/cardref.py). Two models of a card's offset from the
reference card, both fitted on the reference workloads only:
- "one factor": every energy scales by f = geometric mean of the workloads' energy ratios;
- "static + dynamic": the awake-idle part (P_awake x time) scales by the awake-power ratio, the rest
  by the geometric mean of the workloads' dynamic-energy ratios;
- "static + dynamic below the limit": the same, the dynamic ratio from the workloads that ran below the
  power limit on every card. At the limit a card's energy per call is the limit times its time, set by
  the clocks the limiter allows, not by what the card's silicon draws at a clock: on four H200s
  (results/reproducibility/2026-11-27_180053) the bf16 GEMM at the limit read 0.997-1.007 of the
  reference card where the copy read 0.967-1.011, and the tasks' parts followed the copy.
  On seven more H200s (2026-11-28, round 0 of two runs; the fp32 GEMM just under the limit, 661-696 W)
  this model did worse than the others: median spread 1.29 % (3 cards) and 1.79 % (4 cards), against
  1.01 / 1.50 % for the best (results/reproducibility/2026-11-28_*/summary.md).
- "static + median dynamic": the same, the dynamic ratio the median of the workloads' (three or more), so
  that one workload departing on one card does not move the factor. On GPU-3a6067ee-d777-682f-2a5a-e1ce55cf6dd3
  (results/reproducibility/2026-11-29_084238) the copy drew 546 W where three other H200s drew 618-620 W (in
  126.9 µs; it took 127.6), its dynamic energy 0.86 of the reference card's, while both GEMMs read 0.976;
  BERT-base's parts there read 0.6-2.4 % below the reference card's, the memory-bound embeddings 0.6 %. Joined
  with two more cards (2026-11-29_052856, _064442) the geometric mean over-corrected every part (median spread
  2.95 % normalised, 2.21 % raw) where the median brought them to 0.74 % (max 1.17 %). A fourth card measured
  after this model was written, GPU-7260ca5a-fdbf-45ca-53bd-bc3e7edddbe0 (2026-11-29_091056), was the second
  of that kind (copy 560 W in 127.6 µs, its parts -0.4..+1.6 % raw): over the four, median spread 0.99 % (max
  1.64 %) with the median, 3.58-4.95 % with the others, 2.33 % raw. On older runs, where no workload departed
  so, it did no better than the others (1.30-5.58 % against the best 0.75-4.97 %).
Which one a report uses is chosen by how well each brings components together that were not
used to fit it (the study's and reproducibility's own tasks). That choice is made on the parts whose spread
is then reported, so the report also reads each task's parts with the model the other tasks' parts chose
(held_out_model). Seven H200s (BERT-base on four, GPT-2 and Llama-3.2-1B decode on two more measured after
the median model was written; results/reproducibility/2026-11-29_105225/joined_7_cards.md): chosen on all the
parts, the median model, 0.97 % (max 1.64 %); held out 1.04 % (max 5.52 %): the decode tasks' two cards, where no
workload departed, chose "below the limit" for BERT-base, which that model over-corrects by up to 5.5 % on the two
cards whose copy departed, while the decode tasks, read with the median model BERT-base chose, kept 0.21-1.18 %.
Four more H200s of one host (results/reproducibility/2026-11-29_133857): one card's awake idle read 137.5 W where
the others read 124-129 (its leakage 0.95 W/°C); its static factor, 1.099, over-corrected GPT-2's decode parts
(1.3-8.9 % normalised against 0.6-7.9 % raw), every model gave 1.68-2.03 %, held out 2.90 %; taken to 45 °C by
each card's leakage first, 0.97 %. A static factor read at a card's own temperature carries that temperature.
"""

from __future__ import annotations

import copy
import math
import statistics
from pathlib import Path

from clear_native import thermal
from clear_native.accounting import clock_range, regime
from clear_native.analysis import parts
from clear_native.trials import NOISY

Z95 = 1.96
SIGMA_FLOOR = 0.0005  # the repeatability layer is never taken below 0.05 % (few pairs)


def rel_diff(a: float, b: float) -> float:
    return (b - a) / a if a else math.nan


def _changes(pairs: list) -> tuple:
    """Each pair's squared relative change and the variance its within-run CIs explain (0 where a CI is unknown:
    a record without them counts as all process spread, not as no spread)."""
    d2 = [rel_diff(a, b) ** 2 for (a, _), (b, _) in pairs]
    within = [((ca / Z95) ** 2 + (cb / Z95) ** 2) if math.isfinite(ca + cb) else 0.0 for (_, ca), (_, cb) in pairs]
    return d2, within


def largest_from_ci(pairs: list, share: float = 0.5) -> float:
    """The largest |relative change| that ``pairs`` ((a, ci_a), (b, ci_b)) would show with no process spread at all,
    each moving only by its two readings' within-run CIs (normal): the value that a run's largest stays below with
    probability ``share`` (0.5: its median), the floor under repeatability_max_rel. NaN where no pair has CIs."""
    sds = [math.sqrt(v) for v in _changes(pairs)[1] if v > 0]
    if not sds:
        return math.nan
    unit = statistics.NormalDist()

    def below(x: float) -> float:  # P(every pair's |change| <= x), rising with x
        return math.prod(2 * unit.cdf(x / sd) - 1 for sd in sds)

    lo, hi = 0.0, 10 * max(sds)
    for _ in range(100):
        lo, hi = ((lo + hi) / 2, hi) if below((lo + hi) / 2) < share else (lo, (lo + hi) / 2)
    return (lo + hi) / 2


def process_sigma(pairs: list) -> float:
    """sigma_p as a normal spread (Note [The reported interval]) from pairs ((a, ci_a), (b, ci_b)) of one
    measurement in two processes: Paule and Mandel's estimate (J. Res. NBS 87, 1982), the sigma at which every
    pair's squared change over its own variance (its CIs' share plus 2 sigma^2) averages 1. Each pair is weighed by
    its own CIs, so one wide CI neither hides the others' spread nor sets it: the moment estimate this replaced
    (mean square change less mean CI share) fell to the floor when one of 40 pairs read +-6.9 %
    (results/reproducibility/2026-11-28_194941)."""
    if not pairs:
        return math.nan
    d2, within = _changes(pairs)

    def excess(s: float) -> float:  # falls as s grows; <= 0 once 2 s^2 >= every squared change
        return statistics.fmean(x / (v + 2 * s * s) for x, v in zip(d2, within)) - 1

    lo, hi = SIGMA_FLOOR, math.sqrt(max(d2) / 2) + SIGMA_FLOOR
    if excess(lo) <= 0:
        return SIGMA_FLOOR
    for _ in range(60):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if excess(mid) > 0 else (lo, mid)
    return hi


def calibrated_sigma(pairs: list, level: float = 0.95) -> float:
    """The sigma_p whose interval holds ``level`` of the pairs (Note [The reported interval]): each pair's own need
    (the sigma_p at which its change just fits the combined interval of its two readings), ranked as split-conformal
    calibration ranks scores, the ceil((n + 1) level)-th smallest (the largest where n < 1 / (1 - level) - 1)."""
    if not pairs:
        return math.nan
    d2, within = _changes(pairs)
    need = sorted(math.sqrt(max(x - v * Z95 ** 2, 0.0) / (2 * Z95 ** 2)) for x, v in zip(d2, within))
    return max(SIGMA_FLOOR, need[min(len(need), math.ceil((len(need) + 1) * level)) - 1])


def interval(ci95_rel: float, sigma_p: float, sigma_c: float = 0.0) -> float:
    """The 95 % half-width a user should read a number with (relative; Note [The reported interval])."""
    return math.sqrt(ci95_rel ** 2 + (Z95 * sigma_p) ** 2 + (Z95 * sigma_c) ** 2)


def interval_coverage(pairs: list, sigma_p: float, diffs: list | None = None) -> float:
    """The share of pairs whose second reading lands within the combined interval of both; ``diffs``: each pair's
    relative change as compared (state_corrected_diff), where not the raw one. NaN where there are none, or no
    sigma_p to state an interval with (one task and no card reference: a share of 0 would say the intervals failed)."""
    if not pairs or math.isnan(sigma_p):
        return math.nan
    diffs = [rel_diff(a, b) for (a, _), (b, _) in pairs] if diffs is None else diffs
    inside = [abs(d) <= math.hypot(interval(ca, sigma_p), interval(cb, sigma_p))
              for d, ((_, ca), (_, cb)) in zip(diffs, pairs)]
    return sum(inside) / len(inside)


# --------------------------------------------------------------------------- the card reference


def card_reference(checks: list) -> dict:
    """Each card's reference workloads, averaged over its checks: {uuid: {"awake_w", "gemm": {...}, ...}}."""
    by: dict = {}
    for rec in checks:
        if rec.get("status") != "ok":
            continue
        uuid = rec["identity"]["gpu"]["uuid"]
        by.setdefault(uuid, []).append((rec["card_check"], rec["identity"]["gpu"].get("power_limit_w")))
    out = {}
    for uuid, cs in by.items():
        names = set.intersection(*(set(c["workloads"]) for c, _ in cs))
        out[uuid] = {"awake_w": statistics.fmean(c["awake_idle_power_w"] for c, _ in cs), "checks": len(cs)}
        for n in sorted(names):
            ws = [(c["workloads"][n], limit) for c, limit in cs]
            out[uuid][n] = {k: statistics.fmean(w[k] for w, _ in ws)
                            for k in ("energy_per_call_j", "dynamic_energy_per_call_j", "gpu_time_per_call_s",
                                      "ci95_rel")}
            out[uuid][n]["at_limit"] = any(_at_limit(c, n, limit) for c, limit in cs)
    return out


def _at_limit(check: dict, name: str, power_limit_w) -> bool:
    """Whether the card-reference workload ``name`` ran at the power limit in ``check`` (accounting.regime: by its
    mean power, and its SM clocks below the highest any workload of the check reached) rather than free."""
    w = check["workloads"][name]
    tops = [c[1] for c in (clock_range(x.get("sm_clock_mhz")) for x in check["workloads"].values()) if c]
    power = w.get("mean_power_w", w["energy_per_call_j"] / w["gpu_time_per_call_s"])
    return regime(w.get("clock_event_reasons", ()), power, power_limit_w, w.get("sm_clock_mhz", ()),
                  max(tops, default=None)) == "power limit"


def _geomean(xs) -> float:
    xs = list(xs)
    return math.exp(statistics.fmean(math.log(x) for x in xs)) if xs else math.nan


def workloads_of(ref: dict) -> tuple:
    """The card-reference workloads every card measured (awake idle aside), and those of them that ran below
    the power limit on every card."""
    names = set.intersection(*({k for k, v in c.items() if isinstance(v, dict)} for c in ref.values()))
    return tuple(sorted(names)), tuple(sorted(n for n in names if not any(c[n].get("at_limit") for c in ref.values())))


# The models of Note [Card normalisation]: name -> the factor its dynamic part (or, for "one", all) scales by.
MODELS = {"one": "one", "two": "dynamic", "two_below_limit": "dynamic_below_limit", "two_median": "dynamic_median"}


def card_factors(ref: dict, reference_card: str) -> dict:
    """Per card: the "one factor" f, and the static + dynamic factors (s, d; d also from the workloads below the
    power limit alone, where there are any), relative to ``reference_card`` (Note [Card normalisation]); with
    each factor's own uncertainty (relative), the spread of the workloads' ratios around it."""
    base = ref[reference_card]
    every, below = workloads_of(ref)
    out = {}
    for uuid, c in ref.items():
        ratios = [c[w]["energy_per_call_j"] / base[w]["energy_per_call_j"] for w in every]
        f = _geomean(ratios)
        out[uuid] = {"one": f, "one_u_rel": max(abs(r / f - 1) for r in ratios),
                     "static": c["awake_w"] / base["awake_w"]}
        for key, names, centre in (("dynamic", every, _geomean), ("dynamic_below_limit", below, _geomean),
                                   ("dynamic_median", every if len(every) >= 3 else (), statistics.median)):
            dyn = [c[w]["dynamic_energy_per_call_j"] / base[w]["dynamic_energy_per_call_j"] for w in names]
            if dyn:
                out[uuid][key] = centre(dyn)
                out[uuid][key + "_u_rel"] = max(abs(r / out[uuid][key] - 1) for r in dyn)
    return out


def models_of(factors: dict) -> list:
    """The normalisation models ``factors`` (card_factors) can apply on every card."""
    return [m for m, key in MODELS.items() if all(key in f for f in factors.values())]


def normalise(energy_j: float, time_s: float, awake_w: float, factors: dict, model: str) -> float:
    """An energy measured on a card in ``time_s`` of GPU time, as the reference card would read it."""
    if model == "one":
        return energy_j / factors["one"]
    static = awake_w * time_s
    return static / factors["static"] + (energy_j - static) / factors[MODELS[model]]


def spread(values: list) -> float:
    """(max - min) / mean of one measurement over cards."""
    return (max(values) - min(values)) / statistics.fmean(values) if len(values) > 1 else math.nan


def measurements(rec: dict) -> dict:
    """{name: (energy J, ci95_rel, GPU time s)} of a study record: the whole model and each group."""
    return parts(rec["report"])


def per_part(report: dict, read) -> dict:
    """{name: read(its measurement dict)} of a ModelReport dict's whole model and groups, named as parts() names
    them."""
    return {"whole model": read(report["whole"])} | {g["name"]: read(g) for g in report["groups"]}


def kernels_of(report: dict) -> dict:
    """{name: graph kernels per call} of a ModelReport dict (NaN: not recorded, as before 2026-11-28 evening, or
    eager)."""
    return per_part(report, lambda x: x.get("graph_kernels_per_call", math.nan))


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


def state_corrected_diff(a: tuple, b: tuple) -> float:
    """The relative change from ``a`` to ``b`` (each (J per call, GPU s per call, awake-idle W of its run)) once
    each reading is taken at the faster one's GPU time, the time beyond it at its run's awake-idle power: what a
    repeat moved beyond the launch-latency state (Note [Launch-latency state], clear_native/backend.py: the
    slow state adds time at about awake-idle power)."""
    fastest = min(a[1], b[1])
    ea, eb = (e - watts * (t - fastest) for e, t, watts in (a, b))
    return rel_diff(ea, eb)


# A repeat whose GPU time per call moved by this much or more ran in the other launch-latency state
# (Note [Launch-latency state], clear_native/backend.py): its energy moves with its time.
TIME_MOVED = 0.02


def time_held(time_rel_diff: float) -> bool:
    """A repeat's GPU time per call held (within TIME_MOVED): both readings in one launch-latency state."""
    return abs(time_rel_diff) < TIME_MOVED


TEMPERATURE_HELD_C = 1.0  # a repeat whose part ran within this of its first reading's temperature


def by_time_state(diffs: list) -> dict:
    """Repeats split by whether their GPU time per call held: ``diffs`` is [(energy rel diff, time rel diff)], or
    [(energy rel diff, time rel diff, temperature change °C)], or also (..., both read to their target); for
    "time_held" and "time_moved" (and with temperatures, "time_and_temperature_held": the time held and the part
    ran within TEMPERATURE_HELD_C of its first reading's temperature, Note [Warm to a steady temperature]; with the
    last, "held_and_read": those whose readings both reached their CI target): how many, the largest and RMS
    |energy change|."""
    def both_held(d) -> bool:
        return time_held(d[1]) and abs(d[2]) <= TEMPERATURE_HELD_C

    splits = [("time_held", lambda d: time_held(d[1])), ("time_moved", lambda d: not time_held(d[1]))]
    if diffs and all(len(d) > 2 for d in diffs):
        splits.append(("time_and_temperature_held", both_held))
    if diffs and all(len(d) > 3 for d in diffs):  # and both readings read to their target (d[3])
        splits.append(("held_and_read", lambda d: both_held(d) and d[3]))
    out = {}
    for key, keep in splits:
        e = [abs(d[0]) for d in diffs if keep(d)]
        largest, rms = largest_and_rms(e)
        out[key] = {"n": len(e), "max_rel": largest, "rms_rel": rms}
    return out


def largest_and_rms(xs: list) -> tuple:
    """(largest, RMS) of relative changes already taken absolute; NaN for none."""
    return max(xs, default=math.nan), math.sqrt(statistics.fmean(x * x for x in xs)) if xs else math.nan


def temperature_of(x: dict) -> float:
    """°C a measurement (a part, a whole model, a card-reference workload) ran at: the mean of its trials'
    temperatures, or where it has none per trial the middle of their range; NaN where none was recorded."""
    trials = [t for t in x.get("trial_temperature_c") or () if t is not None and math.isfinite(t)]
    r = clock_range(x.get("temperature_c"))
    return statistics.fmean(trials) if trials else sum(r) / 2 if r else math.nan


def temperatures(rec: dict) -> dict:
    """{name: °C} of a study record: the whole model's and each part's temperature_of."""
    return per_part(rec["report"], temperature_of)


def restarts(rec: dict) -> dict:
    """{name: times its window doubled and its trials started again} of a study record's whole model and parts
    (NaN: not recorded)."""
    return per_part(rec["report"], lambda x: x.get("window_restarts", math.nan))


def dropped_sets(rec: dict) -> dict:
    """{name: the sets of trials its restarts dropped} of a study record's whole model and parts ([] where none, or
    recorded before they were kept: Note [Trials a restart dropped], clear_native/trials.py)."""
    return per_part(rec["report"], lambda x: x.get("dropped_sets") or [])


def at_other_window(first: tuple, second: tuple) -> float:
    """A repeat whose two readings' windows restarted unequally, taken at one window: the reading that restarted
    more, as the set of trials its restart dropped at the window the other kept, against the other (relative, as
    second against first). ``first``, ``second``: (J, restarts, dropped sets). A restart for noise doubles the
    window, so the other's k restarts name the k-th set dropped for noise. NaN where the counts agree or no such
    set was kept."""
    if not all(math.isfinite(x[1]) for x in (first, second)) or first[1] == second[1]:
        return math.nan
    more, other = (first, second) if first[1] > second[1] else (second, first)
    noisy = [d for d in more[2] if d.get("why", "").startswith(NOISY)]
    if len(noisy) <= other[1]:
        return math.nan
    d = noisy[int(other[1])]
    e = statistics.fmean(p * t for p, t in zip(d["trial_power_w"], d["trial_time_per_call_s"]))
    return rel_diff(first[0], e) if more is second else rel_diff(e, second[0])


def by_restarts(diffs: list) -> dict:
    """Repeats split by whether both processes' windows restarted as often, so kept one window length (a restart
    doubles it: Note [Trials that adapt], clear_native/trials.py) (``diffs``: [(energy rel diff, restarts of the
    first, of the second)]): for "same_window" and "window_differed", how many, the largest and RMS |energy change|
    (Note [Trials a restart dropped])."""
    known = [d for d in diffs if math.isfinite(d[1]) and math.isfinite(d[2])]
    out = {}
    for key, keep in (("same_window", lambda d: d[1] == d[2]), ("window_differed", lambda d: d[1] != d[2])):
        largest, rms = largest_and_rms([abs(d[0]) for d in known if keep(d)])
        out[key] = {"n": sum(map(keep, known)), "max_rel": largest, "rms_rel": rms}
    return out


# Energies are compared at one temperature (Note [Leakage measured in every run], clear_native/thermal.py): near
# where H200s run light and mid-weight work (36-50 °C in results/reproducibility/2026-11-28_064818).
REFERENCE_TEMPERATURE_C = 45.0
_AWAKE = (("cool_awake_idle_temperature_c", "cool_awake_idle_power_w"), ("awake_idle_temperature_c",
                                                                         "awake_idle_power_w"))


def card_leakage(recs: list) -> dict:
    """{uuid: W per °C}: each card's leakage slope through every run's awake idle, cool and warm (its tasks' and
    card checks' records; Note [Leakage measured in every run]); NaN where they span < thermal.MIN_SPAN_C."""
    points: dict = {}
    for r in recs:
        run = r.get("card_check") if r.get("job") == "card_check" else (r.get("report") or {}).get("run")
        if r.get("status") != "ok" or not run:
            continue
        pts = points.setdefault(r["identity"]["gpu"]["uuid"], [])
        pts += [(run[t], run[w]) for t, w in _AWAKE if t in run and w in run]
    return {c: thermal.leakage_slope([p for p in pts if all(map(math.isfinite, p))]) for c, pts in points.items()}


def at_reference(energy_j: float, time_s: float, temperature_c: float, slope_w_per_c: float) -> float:
    """An energy per call as its card would read it at REFERENCE_TEMPERATURE_C (thermal.at_temperature); the
    reading itself where its card's slope or its temperature is unknown."""
    if math.isnan(slope_w_per_c) or math.isnan(temperature_c):
        return energy_j
    return thermal.at_temperature(energy_j, time_s, temperature_c, slope_w_per_c, REFERENCE_TEMPERATURE_C)


def taken_to_reference(recs: list, leak: dict) -> list:
    """Copies of task and card-check records with every energy per call (a task's whole model and parts, a card
    check's workloads, dynamic too) and awake-idle power taken to REFERENCE_TEMPERATURE_C by its card's leakage
    slope (``leak``: card_leakage); records of cards without a slope, and other jobs, as they were."""
    out = []
    for r in recs:
        slope = leak.get(r.get("identity", {}).get("gpu", {}).get("uuid"), math.nan)
        if r.get("status") != "ok" or r.get("job") not in ("task", "card_check") or math.isnan(slope):
            out.append(r)
            continue
        r = copy.deepcopy(r)
        if r["job"] == "task":
            run, parts_of = r["report"]["run"], [r["report"]["whole"], *r["report"]["groups"]]
        else:
            run, parts_of = r["card_check"], list(r["card_check"]["workloads"].values())
        for x in parts_of:
            e = at_reference(x["energy_per_call_j"], x["gpu_time_per_call_s"], temperature_of(x), slope)
            x["dynamic_energy_per_call_j"] = x.get("dynamic_energy_per_call_j", math.nan) + e - x["energy_per_call_j"]
            x["energy_per_call_j"] = e
        if math.isfinite(run.get("awake_idle_temperature_c", math.nan)):
            run["awake_idle_power_w"] -= slope * (run["awake_idle_temperature_c"] - REFERENCE_TEMPERATURE_C)
        out.append(r)
    return out


# Note [Energy per call per °C]
# ~~~~~~~~~~~~~~~~~~~~~~~~~~~~
# Awake idle's leakage slope (at_reference) is what the card's static power costs per °C at idle clocks; under
# load the energy per call moves more. On GPU-e8dde3fa (protocol 8, +-0.25 % readings, results/reproducibility/
# 2026-11-28_093900) BERT's parts (200-670 W) ran 2-5 °C cooler in their second process, as the card's heatsink
# cooled 45 -> 40 °C over ten minutes, and read 0.9-1.9 % less: 0.21-0.65 % per °C, where the idle slope (0.74
# W/°C) explains 0.1 % per °C for a 650 W part. Fitted through every repeat, energy per call moved 0.33 % per °C
# there and 0.34 % per °C on four other H200s (2026-11-28_064818): one relative coefficient beta, light parts and
# heavy alike. A reading E at T is then E / (1 + beta (T - T_ref)) at T_ref (scaled_to_temperature); beta comes
# from repeats that moved in temperature (temperature_coefficient), for a task's own repeats from the others';
# where none of the others moved, from the kind's earlier run (KIND_TEMPERATURE_COEFFICIENT), never from the
# repeats it then judges.


# {GPU name: (beta per °C, the run it was fitted on)}: repeats of earlier runs, for runs whose other tasks held
# their temperature (Note [Energy per call per °C]).
KIND_TEMPERATURE_COEFFICIENT = {"NVIDIA H200": (0.00343, "results/reproducibility/2026-11-28_064818")}


def temperature_coefficient(points: list) -> float:
    """beta (per °C): the least-squares line through the origin of repeats' relative energy change against their
    temperature change (``points``: [(rel_diff, delta °C)]); NaN where no repeat moved thermal.MIN_SPAN_C or more
    (Note [Energy per call per °C])."""
    pts = [(d, t) for d, t in points if math.isfinite(d) and math.isfinite(t)]
    if not any(abs(t) >= thermal.MIN_SPAN_C for _, t in pts):
        return math.nan
    return sum(d * t for d, t in pts) / sum(t * t for _, t in pts)


def scaled_to_temperature(rel_diff_: float, delta_c: float, beta: float) -> float:
    """A repeat's relative change with its second reading scaled to the first's temperature by beta (Note [Energy
    per call per °C]); as it was where beta or the temperature change is unknown."""
    if math.isnan(beta) or math.isnan(delta_c):
        return rel_diff_
    return (1 + rel_diff_) / (1 + beta * delta_c) - 1


def scaled_repeats(repeats: list, kind: str, runs: tuple = (), fit=None) -> tuple:
    """([each repeat's relative change scaled to one temperature], {task: (beta per °C, where it came from)}) for
    ``repeats`` [(task, rel_diff, delta °C)]: each task's by the coefficient the other tasks' repeats give (those
    ``fit`` marks True, where given: the ones whose GPU time held, not moved by the launch state), or where none of
    those moved, the ``kind``'s earlier run's (KIND_TEMPERATURE_COEFFICIENT; (NaN, None): not scaled), unless that
    run is one of ``runs`` (folders). Note [Energy per call per °C]."""
    earlier = KIND_TEMPERATURE_COEFFICIENT.get(kind, (math.nan, None))
    if earlier[1] and Path(earlier[1]).name in {Path(r).name for r in runs}:
        earlier = (math.nan, None)  # the run that set the coefficient is not judged by it
    fit = [True] * len(repeats) if fit is None else list(fit)
    used = {}
    for task in {t for t, _, _ in repeats}:
        own = temperature_coefficient([(d, dt) for (t, d, dt), ok in zip(repeats, fit) if t != task and ok])
        used[task] = (own, "the other tasks' repeats") if not math.isnan(own) else earlier
    return [scaled_to_temperature(d, dt, used[t][0]) for t, d, dt in repeats], used


def held_out_coverage(pairs_by_task: dict, fallback_sigma: float) -> tuple:
    """(coverage, sigma_p of all the pairs): each task's repeats ({task: [((a, ci_a), (b, ci_b))]}) checked against
    the interval whose sigma_p the other tasks' repeats set (calibrated_sigma), so that no repeat is judged by a
    spread it helped set; ``fallback_sigma`` where there is no other task."""
    inside, n = 0.0, 0
    for task, pairs in pairs_by_task.items():
        others = [p for t, ps in pairs_by_task.items() if t != task for p in ps]
        inside += interval_coverage(pairs, calibrated_sigma(others) if others else fallback_sigma) * len(pairs)
        n += len(pairs)
    every = [p for ps in pairs_by_task.values() for p in ps]
    return (inside / n if n else math.nan), calibrated_sigma(every)


def held_out_model(spreads_by_task: dict) -> tuple:
    """(median spread, largest, {task: model}): each task's parts ({task: {model: [spread of a part over cards]}})
    normalised by the model whose median spread over the other tasks' parts is smallest, so that no part's spread
    is read with a model it helped choose (Note [Card normalisation]); NaN and {} where fewer than two tasks have
    parts on several cards (then there is no other task to choose by)."""
    tasks = [t for t, by_model in spreads_by_task.items() if any(by_model.values())]
    if len(tasks) < 2:
        return math.nan, math.nan, {}
    chosen, kept = {}, []
    for task in tasks:
        others = {m: [x for t in tasks if t != task for x in spreads_by_task[t].get(m, [])]
                  for m in spreads_by_task[task]}
        chosen[task] = min((m for m in others if others[m]), key=lambda m: statistics.median(others[m]))
        kept += spreads_by_task[task][chosen[task]]
    return statistics.median(kept), max(kept), chosen


__all__ = ["process_sigma", "calibrated_sigma", "interval", "interval_coverage", "card_reference", "card_factors",
           "normalise", "workloads_of", "models_of", "MODELS", "state_corrected_diff", "largest_and_rms",
           "spread", "measurements", "rel_diff", "reference_pairs", "TIME_MOVED", "time_held", "by_time_state",
           "temperatures", "TEMPERATURE_HELD_C", "REFERENCE_TEMPERATURE_C", "card_leakage", "at_reference",
           "held_out_coverage", "held_out_model", "taken_to_reference", "temperature_of", "temperature_coefficient",
           "scaled_to_temperature", "KIND_TEMPERATURE_COEFFICIENT", "scaled_repeats"]
