"""Numbers that reproduce (issue 14): the same measurements in fresh processes on every card of a host,
the card reference on each, and the temperature effect; writes results/reproducibility.json and .md.

On each card, in this order, every job in a process of its own (bench/workers.py):
  1. thermal: each card-reference workload's energy per call, and an fp32 GEMM's, as the die warms from idle
     and as it cools after a soak with the GEMM: how energy per call moves with temperature, compute- and
     memory-bound;
  2. the card reference, then TASKS (three whole models and their components), each ``--rounds`` times in a row
     (``--order rounds``: all of them once per round, one round after the other).
Then: repeatability (same card, rounds in fresh processes), the card-to-card spread raw and
normalised by the card reference (fitted on its workloads only, checked on the tasks' components),
and how often a repeat lands inside the stated 95 % interval (Note [The reported interval],
bench/uncertainty.py).

Note [Repeats back-to-back]
~~~~~~~~~~~~~~~~~~~~~~~~~~~
A part's energy per call moves ~0.33 % per °C of its die (Note [Energy per call per °C], bench/uncertainty.py),
and the die sits on a heatsink that drifts for minutes: on GPU-e8dde3fa awake idle read 44.8 °C as the first
process began and 40.0 °C ten minutes later (cooling from before the lease), so BERT's second round ran 2-5 °C
cooler than its first and its parts read 0.9-1.9 % less, while the repeats whose temperature held moved at most
0.45 % (results/reproducibility/2026-11-28_093900). A process's warm-up brings its die to a steady temperature
in seconds (Note [Warm to a steady temperature], clear_native/thermal.py), not the heatsink: heating it a few °C
takes minutes of load, and BERT's 10 s warm-up had raised awake idle 2.5 °C that were gone by the next process.
So a job's rounds run back-to-back, each a fresh process minutes apart: repeatability is then what a fresh
process moves on a card in one state, and what the card's temperature does is reported as its own layer (per
10 °C, and the repeats scaled to one temperature), not mixed into it.

Note [Cards in lockstep]
~~~~~~~~~~~~~~~~~~~~~~~
On GPU-f0266543 BERT-base's lead-in and first round, beside two cards running BERT-base too (~500 W each), read
56.9 and 56.7 °C under the whole model, and its second, once both neighbours had gone on to Llama's decode (~290 W),
53.3 °C, its light parts 0.6-1.6 % less (results/reproducibility/2026-11-28_194941; each card ran the same jobs, but
they drifted apart by up to 3 minutes). So --lockstep starts every card's next job only once every card's job
before has ended: a task's rounds run beside the same neighbours doing the same task (the waiting costs the slowest
card's lead per job). Measured, it is not what held the temperatures: on two H200s of one host
(results/thermal_coupling.md, GPU-d55f0075 and GPU-7a75a53d) 60 s of a neighbour at 695 W moved a card's die by
0.0 °C (its sensor reads whole °C), while a card's own 60 s at 695 W left its die 2 °C warmer under a light load
3-13 s later and 1 °C warmer a minute later; and in lockstep on those two cards (2026-11-28_215952) 16 of 28 repeats
still moved more than 1 °C (BERT-base's second rounds 1.4-4.9 °C warmer than its first, after a first round of its
own load; Llama's 0.7-3.6 °C cooler), the largest 1.59 %, while the 12 within 1 °C moved at most 0.50 %. It stays an
option (the cards then measure each task at one time, under one load on the host).

Usage:
  python bench/reproducibility.py --gpus all               # every GPU of this host (>= 3 for card spread)
  python bench/reproducibility.py --report RUN             # the analysis again, from RUN's records
  python bench/reproducibility.py --report RUN1,RUN2,RUN3  # runs on other cards (other hosts) as one
  python bench/reproducibility.py --resume RUN             # measures what RUN lacks (an interrupted run), then reports
  python bench/reproducibility.py --gpus all --lead-in     # a process of each task first, never compared
  python bench/reproducibility.py --gpus all --lockstep    # every job started on every card together
  python bench/reproducibility.py --gpus all --side-by-side  # a task's rounds as processes taking turns on a card
  python bench/reproducibility.py --simulate --gpus 0,1,2  # the pipeline on the simulated GPU (CPU)
"""

from __future__ import annotations

import argparse
import datetime as _dt
import math
import statistics
import sys
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.pop(0)
    sys.path.append(str(Path(__file__).resolve().parents[1]))

from bench import store, suite, uncertainty as U, workers  # noqa: E402
from bench.common import code_version, write_results  # noqa: E402
from bench.store import fmt_s  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
# A compute-bound encoder, a memory-bound decode step of a larger decoder, and GPT-2's decode step.
TASKS = ("bert-base/prefill/b8s128/bf16", "llama-3.2-1b/decode/b1kv512/bf16", "gpt2/decode/b1kv512/bf16")
MIN_TIME_S = 5e-6  # repeatability is judged on parts of at least 5 µs (shorter ones are in the table)
READ_TO_TARGET = 2.0  # a reading "read to its target": its 95 % CI within twice the target (a budget that ran out)


ORDERS = ("interleaved", "rounds")
# Note [A lead-in before the repeats]
# ~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~
# Back-to-back rounds still begin on a card the task before left warmer (Note [Repeats back-to-back]): on four
# H200s (results/reproducibility/2026-11-28_171710) each card cooled through the whole run (card checks, BERT-base
# at ~500 W, Llama at ~290 W, GPT-2 at ~185 W), so every task's second process ran up to 3.7 °C cooler than its
# first, and its parts read 0.9-2.3 % less with the GPU time held. With --lead-in, a process of the same task runs
# first (round LEAD_IN: recorded, kept out of every comparison), so the two compared processes follow the task's
# own load, not a heavier one's. Measured on three more H200s (2026-11-28_194941) it did not hold them: 13 of 40
# repeats still moved more than 1 °C (20 of 60 without it), mean -0.68 °C (-0.86): one process of ~60-90 s is
# shorter than a heatsink's drift. It stays an option; the report's scaling to one temperature is what held them.
LEAD_IN = -1

# Note [Repeats side by side]
# ~~~~~~~~~~~~~~~~~~~~~~~~~~~
# Rounds one after the other read the card minutes apart, and a card's heatsink drifts by degrees in minutes
# whatever ran before (Notes [Repeats back-to-back], [A lead-in before the repeats], [Cards in lockstep]): in the
# headline run (2026-11-28_194941) 13 of 40 repeats moved more than 1 °C, the largest of those up to 1.63 %,
# while the ones within 1 °C whose readings reached their target moved at most 0.41 %. Scaling by a coefficient per
# °C did not take it out (a part's coefficient varied 0.1-0.8 %/°C). With --side-by-side a task's rounds run as
# processes of their own at the same time on their card, taking turns (bench/turns.py): one process uses the GPU
# at a time, from making its CUDA context on, and hands the card on after each round of trials (measure's
# between_rounds), so their trials interleave in time and read the card's one thermal history. Each is still a
# fresh process (its own import, model, captures, launch-latency state, warm-up and baselines); what the repeat
# leaves out is the card's drift between two moments, a layer of its own (% per 10 °C from the thermal job, and
# the repeats of runs one after the other). Each process's budget covers the others' turns
# (task_budget_s x rounds + SIDE_BY_SIDE_SETUP_S per other process: its making ready, while this one waits).
# Measured on GPU-1f738388 (results/reproducibility/2026-11-29_003520, three tasks, 16 pairs): 15 pairs within
# 1 °C (one 1.4 °C); the repeats moved up to 1.10 % where the GPU time held and 0.38 % (RMS 0.18 %) with each pair
# taken at its faster reading's GPU time, while the same card's BERT-base one process after the other
# (2026-11-29_004900) moved up to 1.17 % at 0.5 °C and 0.08 % of GPU time (side by side 0.20 %). What is left is the
# launch-latency state, which in each pair differed between the two processes at the same time (Llama's rotary
# embedding 5.71 % apart: Note [Launch-latency state], clear_native/backend.py).
# What side by side adds: the second process sets up while the first holds its memory on the card. With eight
# graph instances of every part in the first, the second's Llama-3.2-1B decode step ran 1.6-2.2 % apart from the
# first's, either sign, timed before the second made any instance of its own (Note [Graph instances]).
SIDE_BY_SIDE_SETUP_S = 60.0
LEAD_IN_BESIDE = "--lead-in and --side-by-side: a task's rounds side by side share one history already; choose one"

# Note [Window length and repeats]
# ~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~
# With --target-cv 0.004 a part whose trials vary more than 0.4 % doubles its window and starts again (Note [Trials
# that adapt], clear_native/trials.py), so two processes of one part can end on different windows. In the headline
# of 2026-11-29 (four H200s, 42 pairs) repeats whose windows restarted as often moved up to 0.66 %, the 10 whose
# counts differed up to 1.49 %, the longer window always the higher. Does a longer window read higher? In one
# process, no (bench/window_length.py on four H200s of one host, results/window_length.md): BERT-base's whole model
# at 1.6 s read -0.30..+0.07 % from 0.4 s and the copy -0.04..+0.08 %, each within its interval. What differs is
# the process: the one whose power moved varied more, restarted, and read higher. Every part kept at --window-s
# (--target-cv none; run 2026-11-29_185417 on four H200s of one host) moved up to 1.08 % over 60 pairs, but 29 % of
# its parts missed ±0.25 % (5 % missed ±0.5 %) with 8.9 trials on average, where growing windows had read every part
# to ±0.25 % with 5.0 (the four runs of the earlier headline, same wall time). So windows grow by default again;
# --target-cv none keeps them fixed.


def plan(cards, rounds: int, settings: dict, simulate: bool, thermal: bool = True, task_ids=TASKS,
         done=frozenset(), order: str = "interleaved", lead_in: bool = False,
         side_by_side: bool = False, card_checks: bool = True) -> workers.Jobs:
    """Every card's jobs in order, less those whose ids are in ``done`` (measured by an earlier invocation).
    ``order``: "interleaved" takes a job's rounds back-to-back (Note [Repeats back-to-back]); "rounds" takes
    every job once per round, one round after the other. ``lead_in``: each task's first round follows, on its
    card, a process of the same task (round LEAD_IN, never compared: Note [A lead-in before the repeats]).
    ``side_by_side``: a task's rounds on a card run at the same time, taking turns (Note [Repeats side by side]).
    ``card_checks``: False leaves out the card reference (repeats only: no card spread, no normalisation)."""
    by_id = suite.by_ids(task_ids, "--tasks:")
    if order not in ORDERS:
        raise ValueError(f"--order {order!r}: choose one of {', '.join(ORDERS)}")
    if side_by_side and lead_in:
        raise ValueError(LEAD_IN_BESIDE)
    beside = settings | ({"task_budget_s": settings["task_budget_s"] * rounds + SIDE_BY_SIDE_SETUP_S * (rounds - 1)}
                         if side_by_side else {})
    jobs = workers.Jobs()
    add = lambda job: job["id"] in done or jobs.add(job)  # noqa: E731
    for c in cards:
        if thermal:
            add({"job": "thermal", "id": f"thermal/{c.uuid}", "args": settings, "simulate": simulate,
                 "card": c.uuid})

    def one(c, key, r):  # the card check (key None) or a task, in round r
        if key is None:
            return {"job": "card_check", "id": f"card_check/round{r}/{c.uuid}", "args": settings,
                    "simulate": simulate, "card": c.uuid, "phase": f"round{r}", "round": r}
        job = {"job": "task", "id": f"{key}@{c.uuid}#{'lead' if r == LEAD_IN else r}", "args": settings,
               "simulate": simulate, "card": c.uuid, "task": by_id[key].to_dict(), "round": r}
        return job | ({"args": beside, "turns": {"key": f"{key}@{c.uuid}", "me": r, "members": rounds}}
                      if side_by_side else {})

    keys = [None, *task_ids] if card_checks else list(task_ids)
    steps = ([(k, r) for k in keys for r in range(rounds)] if order == "interleaved" else
             [(k, r) for r in range(rounds) for k in keys])
    if lead_in:  # a task's lead-in right before its first round
        steps = [s for k, r in steps for s in ([(k, LEAD_IN)] if k is not None and r == 0 else []) + [(k, r)]]
    for k, r in steps:
        for c in cards:
            add(one(c, k, r))
    return jobs


# --------------------------------------------------------------------------- analysis


def _round(rec: dict) -> int:
    return int(rec.get("round", 0))


def analyse(recs: list, at_reference: bool = True, folders: tuple = ()) -> dict:
    """The run's repeats, card spread and temperature effect from its records (``folders``: its runs', where
    known)."""
    ok = [r for r in recs if r.get("status") == "ok"]
    tasks = [r for r in ok if r["job"] == "task" and _round(r) != LEAD_IN]
    checks = [r for r in ok if r["job"] == "card_check"]
    thermal = [r for r in ok if r["job"] == "thermal"]
    cards = sorted({r["identity"]["gpu"]["uuid"] for r in ok})
    values, fastest = _readings(tasks)
    ref_pairs = U.reference_pairs(checks, "round0", "round1")  # the card reference, round 0 vs 1: sets sigma_p
    sigma_p = U.process_sigma(ref_pairs)
    rows, pairs_long, repeat = [], [], []
    for (task, name), by_card in sorted(values.items()):
        t_s = statistics.fmean([v[2] for rs in by_card.values() for v in rs.values() if math.isfinite(v[2])]
                               or [math.nan])
        for c, rs in by_card.items():
            if 0 in rs and 1 in rs and math.isfinite(rs[0][0]) and math.isfinite(rs[1][0]):  # both read a number
                d = U.rel_diff(rs[0][0], rs[1][0])
                repeat.append({"task": task, "part": name, "card": c, "rel_diff": d, "gpu_time_s": t_s,
                               "time_rel_diff": U.rel_diff(rs[0][2], rs[1][2]),
                               "temperature_diff_c": rs[1][4] - rs[0][4],
                               "ci95_rel": (rs[0][1], rs[1][1]),
                               "window_restarts": (rs[0][7], rs[1][7]),
                               "at_other_window_rel_diff": U.at_other_window(*((rs[k][0], *rs[k][7:9])
                                                                               for k in (0, 1))),
                               "state_corrected_rel_diff": U.state_corrected_diff(
                                   *((rs[k][0], rs[k][2], rs[k][3]) for k in (0, 1))),
                               "launch_normalised_rel_diff": _launch_normalised_diff(rs, fastest.get(c, math.nan))})
                if t_s >= MIN_TIME_S:
                    pairs_long.append((rs[0][:2], rs[1][:2]))
        rows.append({"task": task, "part": name, "gpu_time_s": t_s,
                     "energy_j": {c: statistics.fmean(v[0] for v in rs.values()) for c, rs in by_card.items()},
                     "gpu_time_s_by_card": {c: statistics.fmean(v[2] for v in rs.values())
                                            for c, rs in by_card.items()},
                     "ci95_rel": max(v[1] for rs in by_card.values() for v in rs.values())})
    rounds = 1 + max([_round(r) for r in tasks + checks] or [0])  # a run of no tasks still has its card checks
    out = {"cards": cards, "tasks": sorted({r["task"]["id"] for r in tasks}), "rounds": rounds, "sigma_p_rel": sigma_p,
           "sigma_p_from": f"the card reference's workloads, round 0 vs 1 on each card ({len(ref_pairs)} pairs)",
           "repeat": repeat, "versions": sorted(store.versions(ok)), "instances": sorted(store.instances(tasks)),
           "launch_states": _launch_states(tasks)}
    runs: dict = {}  # (task, card) -> the rounds measured
    for r in tasks:
        runs.setdefault((r["task"]["id"], r["identity"]["gpu"]["uuid"]), set()).add(_round(r))
    out["task_runs_repeated"] = [sum(1 for rs in runs.values() if {0, 1} <= rs), len(runs)]
    long = [x for x in repeat if x["gpu_time_s"] >= MIN_TIME_S]
    kinds = _kinds(ok)
    out |= _launch_normalised(long, pairs_long, sigma_p)
    out |= _repeatability(long, pairs_long, sigma_p, _target(tasks)) | _temperature_scaled(
        long, pairs_long, sigma_p, _main_kind(kinds), folders)
    out["target_ci"] = sorted({r.get("settings", {}).get("target_ci") for r in tasks} - {None})
    out["target_cv"] = sorted({r["settings"]["target_cv"] for r in tasks if "target_cv" in r.get("settings", {})},
                              key=lambda c: -1.0 if c is None else c)  # None: fixed windows
    out["order"] = sorted({r.get("settings", {}).get("order", "rounds") for r in tasks + checks})
    out["lead_ins"] = sum(r["job"] == "task" and _round(r) == LEAD_IN for r in ok)
    out["lockstep"] = sorted({bool(r.get("settings", {}).get("lockstep")) for r in tasks + checks})
    out["side_by_side"] = [sum(1 for r in tasks if (r.get("turns") or {}).get("handed_on")), len(tasks)]
    out |= _cards(checks, rows, kinds)
    out["thermal"] = _thermal(thermal)
    out["interval_coverage_as_read"] = out["interval_coverage"]  # _at_reference's, at 45 °C, takes the name
    return out | (_at_reference(ok) if at_reference else {})


# What the report takes from the analysis of the records taken to the reference temperature (_at_reference).
AT_REFERENCE = ("repeatability_max_rel", "repeatability_rms_rel", "card_spread_raw_rel", "card_spread_normalized_rel",
                "card_spread_normalized_state_corrected_rel", "normalisation")


def _at_reference(ok: list) -> dict:
    """The run analysed again with every energy and awake idle taken to REFERENCE_TEMPERATURE_C by its card's
    leakage (Note [Leakage measured in every run]): its repeatability, its card spread, and the interval's coverage
    (sigma_p from the tasks' own repeats, each task judged with the others': Note [The reported interval])."""
    leak = U.card_leakage(ok)
    head = {"leakage_w_per_c": leak, "reference_temperature_c": U.REFERENCE_TEMPERATURE_C}
    if all(math.isnan(w) for w in leak.values()):  # records before protocol 8 (or cards held at one temperature)
        return head
    again = analyse(U.taken_to_reference(ok, leak), at_reference=False)
    return head | {k: again[k] for k in ("interval_coverage", "sigma_p_tasks_rel", "sigma_p_normal_rel",
                                         "interval_pairs")} | {
        f"{k}_at_reference": again[k] for k in AT_REFERENCE if k in again}


def _launch_states(tasks: list) -> list:
    """Each task process's launch-latency state (Note [Launch-latency state], clear_native/backend.py): the probe
    before its trials, where its kept trials began, and after them (µs per tiny graph kernel), in task order."""
    from clear_native.launch_state import kept_from

    out = []
    for r in sorted(tasks, key=lambda r: (r["task"]["id"], r["identity"]["gpu"]["uuid"], _round(r))):
        states = r["report"].get("run", {}).get("launch_state") or []
        us = [s.get("latency_s", math.nan) * 1e6 for s in states]
        if us:
            out.append({"task": r["task"]["id"], "card": r["identity"]["gpu"]["uuid"], "round": _round(r),
                        "before_us": us[0], "kept_from_us": us[kept_from(states)], "after_us": us[-1],
                        "readings": len(us)})
    return out


def _readings(tasks: list) -> tuple:
    """values[(task, part)][card][round] = (J, ci95_rel, GPU s, awake-idle W of its run, °C, graph kernels per call,
    its kept trials' launch latency s, window restarts, the sets of trials its restarts dropped), and each card's
    fastest such latency in the run (Note [Launch-latency state])."""
    from clear_native.launch_state import kept_latency_s

    values: dict = {}
    fastest: dict = {}
    for r in tasks:
        run, card = r["report"].get("run", {}), r["identity"]["gpu"]["uuid"]
        awake_w, temps, kernels = run.get("awake_idle_power_w", math.nan), U.temperatures(r), U.kernels_of(r["report"])
        restarts, dropped = U.restarts(r), U.dropped_sets(r)
        lat = kept_latency_s(run.get("launch_state") or [])
        if lat > 0:
            fastest[card] = min(fastest.get(card, math.inf), lat)
        for name, v in U.measurements(r).items():
            rounds_of = values.setdefault((r["task"]["id"], name), {}).setdefault(card, {})
            rounds_of[_round(r)] = v + (awake_w, temps.get(name, math.nan), kernels.get(name, math.nan), lat,
                                        restarts.get(name, math.nan), dropped.get(name, []))
    return values, fastest


def _launch_normalised_diff(rs: dict, ref_latency_s: float) -> float:
    """A repeat's change once both readings (``rs``: round -> _readings' tuple) are taken to ``ref_latency_s``, its
    card's fastest launch latency (clear_native.launch_state.at_latency); NaN where a count or latency is unknown."""
    from clear_native.launch_state import at_latency

    return U.rel_diff(*(at_latency(rs[k][0], rs[k][2], rs[k][5], rs[k][6], ref_latency_s, rs[k][3])[0]
                        for k in (0, 1)))


def held_out_by(long: list) -> str:
    """What each repeat is held out by when the interval's coverage is judged (Note [The reported interval]): its
    task; where every repeat is of one task, its card. With one task there is no other task's sigma_p, and the
    fallback, the card reference's, is the spread the note found too small (it held 83 % of BERT-base's 24 repeats
    on four cards, results/reproducibility/2026-11-29_091056/joined_4_cards.md)."""
    one_task = len({x["task"] for x in long}) < 2
    return "card" if one_task and len({x["card"] for x in long}) > 1 else "task"


def _judged(long: list, pairs_long: list, diffs: list, sigma_p: float, keep=None) -> tuple:
    """(largest, RMS, held-out coverage, sigma_p of them all, pairs) of the repeats ``long`` (``pairs_long`` theirs
    as _repeatability takes them) compared by ``diffs``, each one's change as corrected (NaN: left out; ``keep``: a
    mask), each task's (held_out_by) judged with sigma_p from the others' (held_out_coverage; ``sigma_p`` where
    none)."""
    by_task: dict = {}  # each pair as its first reading and the second moved by the compared change
    key = held_out_by(long)
    for x, d, ((_, ca), (_, cb)), k in zip(long, diffs, pairs_long, keep or [True] * len(long)):
        if k and math.isfinite(d):
            by_task.setdefault(x[key], []).append(((1.0, ca), (1.0 + d, cb)))
    kept = [abs(b - 1.0) for ps in by_task.values() for _, (b, _) in ps]
    return (*U.largest_and_rms(kept), *U.held_out_coverage(by_task, sigma_p), len(kept))


def _launch_normalised(long: list, pairs_long: list, sigma_p: float) -> dict:
    """The repeats taken to each card's fastest launch latency (their "launch_normalised_rel_diff"): how far they
    moved and how many land in the interval (_judged). {} where no record counts its kernels."""
    largest, rms, coverage, sigma, n = _judged(long, pairs_long, [x["launch_normalised_rel_diff"] for x in long],
                                               sigma_p)
    if not n:
        return {}
    return {"repeatability_launch_normalised_max_rel": largest, "repeatability_launch_normalised_rms_rel": rms,
            "repeatability_launch_normalised_pairs": n, "interval_coverage_launch_normalised": coverage,
            "sigma_p_launch_normalised_rel": sigma}


def _target(tasks: list) -> float:
    """The loosest CI target the tasks' processes were given (relative; NaN where none says)."""
    return max((t for r in tasks if (t := r.get("settings", {}).get("target_ci")) is not None), default=math.nan)


def _repeatability(long: list, pairs_long: list, sigma_p: float, target_ci: float = math.nan) -> dict:
    """The repeats of parts >= MIN_TIME_S (``long``; ``pairs_long`` the same, in the same order, as ((J, ci),
    (J, ci))): how far they moved, split by GPU time and temperature held, and taken at the faster one's GPU time;
    how many land in the interval, with sigma_p from the other tasks' repeats (Note [The reported interval]) and
    with the card reference's ``sigma_p``."""
    out: dict = {}
    out["repeatability_max_rel"], out["repeatability_rms_rel"] = U.largest_and_rms([abs(x["rel_diff"]) for x in long])
    out["repeatability_worst"] = max(long, key=lambda x: abs(x["rel_diff"]), default=None)
    out["repeatability_max_rel_from_ci"] = U.largest_from_ci(pairs_long)  # the floor with no process spread
    out["repeatability_max_rel_from_ci_95"] = U.largest_from_ci(pairs_long, 0.95)
    corrected = [x["state_corrected_rel_diff"] for x in long if not math.isnan(x["state_corrected_rel_diff"])]
    out["repeatability_state_corrected_max_rel"], out["repeatability_state_corrected_rms_rel"] = \
        U.largest_and_rms([abs(x) for x in corrected])
    read = [max(x.get("ci95_rel", (math.inf,))) <= READ_TO_TARGET * target_ci for x in long]
    out["repeatability_by_time_state"] = U.by_time_state([(x["rel_diff"], x["time_rel_diff"],
                                                           x["temperature_diff_c"], r) for x, r in zip(long, read)])
    out["repeatability_by_window"] = U.by_restarts([(x["rel_diff"], *x.get("window_restarts", (math.nan,) * 2))
                                                     for x in long])
    at_other = [abs(x["at_other_window_rel_diff"]) for x in long if math.isfinite(x.get("at_other_window_rel_diff",
                                                                                         math.nan))]
    out["repeatability_at_other_window"] = dict(zip(("max_rel", "rms_rel"), U.largest_and_rms(at_other)),
                                                n=len(at_other))
    out["repeatability_by_task"] = {t: U.by_time_state([(x["rel_diff"], x["time_rel_diff"]) for x in long
                                                        if x["task"] == t]) for t in sorted({x["task"] for x in long})}
    held_out: dict = {}
    out["interval_held_out_by"] = key = held_out_by(long)
    for x, pair in zip(long, pairs_long):
        held_out.setdefault(x[key], []).append(pair)
    out["interval_coverage"], out["sigma_p_tasks_rel"] = U.held_out_coverage(held_out, sigma_p)
    out["interval_pairs"] = len(pairs_long)
    out["sigma_p_normal_rel"] = U.process_sigma(pairs_long)  # beside the calibrated one (Note [The reported interval])
    # The interval with the card reference's sigma_p instead, raw and at the faster reading's GPU time.
    out["interval_coverage_card_reference_sigma"] = U.interval_coverage(pairs_long, sigma_p)
    out["interval_coverage_state_corrected"] = U.interval_coverage(pairs_long, sigma_p,
                                                                   [x["state_corrected_rel_diff"] for x in long])
    return out


def _temperature_scaled(long: list, pairs_long: list, sigma_p: float, kind: str, runs: tuple = ()) -> dict:
    """The repeats (as _repeatability takes them) with each second reading scaled to its first's temperature by
    the energy per call's coefficient per °C, for each task's repeats fitted on the other tasks', or where none of
    those moved on the ``kind``'s earlier run unless that is one of ``runs`` (Note [Energy per call per °C],
    bench/uncertainty.py): how far they moved, and how many land in the interval (sigma_p from the other tasks'
    scaled repeats; ``sigma_p`` where there is no other task)."""
    held = [U.time_held(x["time_rel_diff"]) for x in long]  # the launch state's moves set no coefficient
    scaled, used = U.scaled_repeats([(x["task"], x["rel_diff"], x["temperature_diff_c"]) for x in long], kind, runs,
                                    fit=held)
    out = {"temperature_coefficient_per_c": U.temperature_coefficient(
        [(x["rel_diff"], x["temperature_diff_c"]) for x, h in zip(long, held) if h]),
           "temperature_coefficient_used": {t: {"per_c": b, "from": f} for t, (b, f) in sorted(used.items())}}
    for suffix, keep in (("", None), ("_time_held", held)):
        largest, rms, coverage, sigma, n = _judged(long, pairs_long, scaled, sigma_p, keep)
        out |= {f"repeatability_max_rel{suffix}_temperature_scaled": largest,
                f"repeatability_rms_rel{suffix}_temperature_scaled": rms,
                f"interval_coverage{suffix}_temperature_scaled": coverage,
                f"sigma_p{suffix}_temperature_scaled_rel": sigma, f"pairs{suffix}_temperature_scaled": n}
    return out


def _main_kind(kinds: dict) -> str:
    """The GPU name most of the run's cards carry (``kinds``: _kinds); '' for none."""
    return max(kinds, key=lambda k: (len(kinds[k]), k), default="")


def _kinds(ok: list) -> dict:
    """{GPU name: [UUIDs]} of the run's cards."""
    kinds: dict = {}
    for r in ok:
        kinds.setdefault(r["identity"]["gpu"]["name"], set()).add(r["identity"]["gpu"]["uuid"])
    return {k: sorted(v) for k, v in kinds.items()}


def _cards(checks: list, rows: list, kinds: dict) -> dict:
    """Card-to-card spread, raw and normalised both ways, among the cards of the kind most of the run's cards are
    (an H100 and an H200 differ by far more than two cards of one kind); the model that does better on the
    components."""
    kind = _main_kind(kinds)
    cards, head = kinds.get(kind, []), {"kinds": kinds, "spread_kind": kind}
    if len(cards) < 2:
        return head | {"card_spread_raw_rel": math.nan, "card_spread_normalized_rel": math.nan}
    checks = [c for c in checks if c["identity"]["gpu"]["uuid"] in cards]
    rows = [r | {k: {c: v for c, v in r[k].items() if c in cards} for k in ("energy_j", "gpu_time_s_by_card")}
            for r in rows]
    ref = U.card_reference(checks)
    base = cards[0]
    factors = U.card_factors(ref, base)
    raw, norm, by_task = [], {m: [] for m in U.models_of(factors)}, {}

    def normalised(row, model):  # the static part from each card's own GPU time (its launch state, its clocks)
        return {c: U.normalise(e, row["gpu_time_s_by_card"][c], ref[c]["awake_w"], factors[c], model)
                for c, e in row["energy_j"].items()}

    for row in rows:
        if len(row["energy_j"]) < 2 or row["gpu_time_s"] < MIN_TIME_S:
            continue
        raw.append(U.spread(list(row["energy_j"].values())))
        for model in norm:
            norm[model].append(U.spread(list(normalised(row, model).values())))
            by_task.setdefault(row["task"], {}).setdefault(model, []).append(norm[model][-1])
    best = min(norm, key=lambda m: statistics.median(norm[m]) if norm[m] else math.inf)
    held_out, held_out_max, chosen = U.held_out_model(by_task)
    for row in rows:
        row["normalised_j"] = normalised(row, best)

    def at_fastest(row):  # each card's reading at the fastest card's GPU time (Note [Launch-latency state])
        t = row["gpu_time_s_by_card"]
        return [U.normalise(e - ref[c]["awake_w"] * (t[c] - min(t.values())), min(t.values()), ref[c]["awake_w"],
                            factors[c], best) for c, e in row["energy_j"].items()]

    corrected = [U.spread(at_fastest(r)) for r in rows if len(r["energy_j"]) > 1 and r["gpu_time_s"] >= MIN_TIME_S]
    return head | {
        "reference_card": base, "card_reference": ref, "card_factors": factors, "normalisation": best,
        "card_spread_normalized_state_corrected_rel": statistics.median(corrected) if corrected else math.nan,
        "workloads": dict(zip(("every", "below_limit"), U.workloads_of(ref))),
        "card_spread_raw_rel": statistics.median(raw) if raw else math.nan,
        "card_spread_raw_max_rel": max(raw, default=math.nan),
        "card_spread_normalized_rel": statistics.median(norm[best]) if norm[best] else math.nan,
        "card_spread_normalized_max_rel": max(norm[best], default=math.nan),
        "card_spread_normalized_by_model": {m: statistics.median(v) if v else math.nan for m, v in norm.items()},
        "card_spread_normalized_held_out_rel": held_out, "card_spread_normalized_held_out_max_rel": held_out_max,
        "normalisation_held_out": chosen,
        "parts": rows}


def thermal_slope(points: list) -> float:
    """% change of energy per call per 10 °C: the least-squares line through (temperature, energy) points
    (a transient's bins), relative to their mean energy; NaN where their temperatures span less than 3 °C."""
    pts = [(t, e) for t, e in points if not (math.isnan(t) or math.isnan(e))]
    if len(pts) < 3 or max(t for t, _ in pts) - min(t for t, _ in pts) < 3.0:
        return math.nan
    mt, me = statistics.fmean(t for t, _ in pts), statistics.fmean(e for _, e in pts)
    slope = sum((t - mt) * (e - me) for t, e in pts) / sum((t - mt) ** 2 for t, _ in pts)
    return 100 * slope / me * 10


def _thermal_points(th: dict) -> dict:
    """{workload: ([(temperature, energy per call)], clock events)}: every bin of its transients, or in a thermal
    record written before them (two protocol readings, cool and hot) every trial of both."""
    legs = ("warming", "cooling")
    if "transients" in th:
        return {w: ([(b["temperature_c"], b["energy_per_call_j"]) for leg in legs for b in tr[leg]["bins"]],
                    sorted({x for leg in legs for x in tr[leg]["clock_event_reasons"]}))
                for w, tr in th["transients"].items()}
    cold, hot = th["cold"]["workloads"], th["hot"]["workloads"]
    return {w: ([(t, e) for x in (cold[w], hot[w])
                 for t, e in zip(x.get("trial_temperature_c", []), x.get("trial_energy_per_call_j", []))],
                sorted(set(cold[w].get("clock_event_reasons", [])) | set(hot[w].get("clock_event_reasons", []))))
            for w in cold}


def _thermal(recs: list) -> dict:
    """Energy per call of each workload, % per 10 °C, per card and on average: fitted through every bin of its
    warming and cooling transients (Note [Two temperatures], bench/cardref.py)."""
    per = {}
    for r in recs:
        card = {}
        for w, (pts, reasons) in _thermal_points(r["thermal"]).items():
            temps = [t for t, _ in pts]
            slope = thermal_slope(pts)
            span = max(temps) - min(temps) if temps else 0.0
            card[w] = {"cold_c": min(temps, default=math.nan), "hot_c": max(temps, default=math.nan), "span_c": span,
                       "bins": len(pts), "pct_per_10c": slope,
                       "rel_change": slope / 100 * span / 10 if not math.isnan(slope) else math.nan,
                       "clock_event_reasons": reasons}
        per[r["identity"]["gpu"]["uuid"]] = card
    mean = {w: statistics.fmean(c[w]["pct_per_10c"] for c in per.values() if not math.isnan(c[w]["pct_per_10c"]))
            for w in next(iter(per.values()), {}) if any(not math.isnan(c[w]["pct_per_10c"]) for c in per.values())}
    return {"per_card": per, "pct_per_10c": mean}


# --------------------------------------------------------------------------- report


def _graphs(an: dict) -> str:
    """How many graphs of each part were measured (Note [Graph instances]), in words: a setting that moves them."""
    n = an.get("instances") or []
    if len(n) > 1:
        return f" Graph instances per part mixed: {', '.join(map(str, n))} (`--instances`; joined with --allow-mixed)."
    if not n or n == [1]:
        return " Each part over one graph of it (`--instances 1`)."
    return (f" Each part over up to {n[0]} graph instances, measured in blocks (`--instances {n[0]}`, Note [Graph "
            "instances]; a call longer than a launch's ~2 ms over that many gets fewer).")


def _partial(an: dict) -> str:
    """What a run cut short lacks, and cards of several kinds, in words ('' for a complete run of one kind)."""
    kinds = an.get("kinds", {})
    mixed = "" if len(kinds) < 2 else (" Cards of several kinds (" + "; ".join(
        f"{k}: {len(v)}" for k, v in sorted(kinds.items())) + f"): the card spread compares the "
        f"{len(kinds[an['spread_kind']])} {an['spread_kind']} cards only.")
    done, seen = an.get("task_runs_repeated", (0, 0))
    if not seen or done == seen:
        return mixed
    return mixed + (f" **Incomplete**: {done} of {seen} (task, card) pairs were measured in both rounds, so the "
                    "repeats below rest on those alone (`--resume RUN` measures the rest).")


def _card_table(an: dict) -> list:
    """## Card reference: each card's workloads, awake idle and factors (Note [Card normalisation])."""
    if not an.get("card_factors"):
        return []
    every = an.get("workloads", {}).get("every") or ("gemm", "copy")
    below = an.get("workloads", {}).get("below_limit") or ()
    L = ["", "## Card reference", "", f"Workloads below the power limit on every card: {', '.join(below) or 'none'}.",
         "", "| card | " + " | ".join(f"{w} (mJ)" for w in every) + " | awake idle (W) | one factor | static | "
         "dynamic | dynamic below the limit | dynamic, median |", "|---|" + "---|" * (len(every) + 6)]
    for c, f in an["card_factors"].items():
        r = an["card_reference"][c]
        below_f, median_f = (f"{f[k]:.4f}" if k in f else "-" for k in ("dynamic_below_limit", "dynamic_median"))
        L.append(f"| {c} | " + " | ".join(f"{r[w]['energy_per_call_j'] * 1e3:.3f}" for w in every) +
                 f" | {r['awake_w']:.1f} | {f['one']:.4f} (±{f['one_u_rel'] * 100:.2f} %) | {f['static']:.4f} | "
                 f"{f['dynamic']:.4f} | {below_f} | {median_f} |")
    return L


def _temperature_section(th: dict) -> list:
    """## Temperature: each card's transients and the slopes fitted through them (Note [Two temperatures]), or a
    line that says this run measured none."""
    if not th.get("per_card"):
        return ["", "## Temperature", "", "Not measured in this run (`--no-thermal`, or its thermal jobs failed): "
                "docs/measured.md names the runs that did."]
    L = ["", "## Temperature", "", "Each reference workload (the fp32 GEMM: compute-bound, meant to run below "
         "the power limit; its clock events say where it did not) replayed 8 s without a break, once from a "
         "card left idle until its temperature stopped falling (the die warming), once after a soak with the "
         "GEMM (the die cooling, or the GEMM staying hot), read in 0.25 s bins; the slope is fitted through "
         "every bin of both (Note [Two temperatures], bench/cardref.py).", "",
         "| card | workload | coolest (°C) | hottest (°C) | bins | energy change over the span | % per 10 °C | "
         "clock events |", "|---|---|---|---|---|---|---|---|"]
    for c, ws in th["per_card"].items():
        for w, v in ws.items():
            slope = "n/a (no temperature change)" if math.isnan(v["pct_per_10c"]) else f"{v['pct_per_10c']:+.2f}"
            L.append(f"| {c} | {w} | {v['cold_c']:.1f} | {v['hot_c']:.1f} | {v['bins']} | "
                     f"{v['rel_change'] * 100:+.2f} % | {slope} | {', '.join(v['clock_event_reasons']) or '-'} |")
    if th["pct_per_10c"]:
        L += ["", "Mean: " + ", ".join(f"{w} {v:+.2f} % per 10 °C" for w, v in th["pct_per_10c"].items()) + "."]
    return L


def _per_degree(an: dict) -> list:
    """What a hotter card costs the tasks' parts and whole models, from the repeats that moved in temperature."""
    beta = an.get("temperature_coefficient_per_c", math.nan)
    dts = [x["temperature_diff_c"] for x in an.get("repeat", ()) if x["gpu_time_s"] >= MIN_TIME_S]
    moved = [abs(t) for t in dts if math.isfinite(t) and abs(t) >= U.thermal.MIN_SPAN_C]
    if math.isnan(beta) or not moved:
        return []
    return ["", f"From the tasks' repeats ({len(moved)} of {len(dts)} moved {U.thermal.MIN_SPAN_C:.1f}-"
            f"{max(moved):.1f} °C between their processes): energy per call {beta * 1000:+.2f} % per 10 °C of the "
            "die, parts and whole models together (a line through the origin; Note [Energy per call per °C], "
            "bench/uncertainty.py): what a hotter card costs a model's components (the thermal job's reference "
            "workloads, where measured, are held by the power limiter)."]


_SPLITS = {"time_held": "the GPU time held", "time_moved": "the GPU time moved",
           "time_and_temperature_held": "the GPU time and the temperature held",
           "held_and_read": "the GPU time and the temperature held, both read to their target"}
_SPLIT_READ = (f"; each reading's 95 % CI within {READ_TO_TARGET:.0f} x its target (not a process whose budget ran "
               "out first)")
_SPLIT_TEMPERATURE = (f"; the part's trials within {U.TEMPERATURE_HELD_C:.0f} °C of the first process's (Note [Warm "
                      "to a steady temperature])")


def _coefficients(an: dict, pc) -> str:
    """Which coefficient per °C scaled each task's repeats, and where it came from, in words."""
    used = an.get("temperature_coefficient_used") or {}
    return "; ".join(f"{t.split('/')[0]} {pc(u['per_c'])} from {u['from'] or 'nowhere (not scaled)'}"
                     for t, u in used.items()) or "no repeats"


def _launch_normalised_row(an: dict, pc) -> list:
    """The summary's row of the repeats taken to each card's fastest launch latency, where the records allowed."""
    if "repeatability_launch_normalised_max_rel" not in an:
        return []
    return [f"| ... at each card's fastest launch latency | {pc(an['repeatability_launch_normalised_max_rel'])} (RMS "
            f"{pc(an['repeatability_launch_normalised_rms_rel'])}, {an['repeatability_launch_normalised_pairs']} "
            f"pairs; {pc(an['interval_coverage_launch_normalised'])} inside the interval, sigma_p "
            f"{pc(an['sigma_p_launch_normalised_rel'])}) | each reading less its graph kernels x (its kept trials' "
            "probe - the card's fastest in the run) at its run's awake-idle power (Note [Launch-latency state]) |"]


def _window_rows(an: dict, pc) -> list:
    """The summary's rows of the repeats whose two processes kept one window length, and of those whose windows
    differed (a restart in one: Note [Trials a restart dropped], clear_native/trials.py)."""
    words = {"same_window": "both processes kept one window length",
             "window_differed": "one process's window grew more than the other's"}
    rows = [f"| ... where {words[k]} | {pc(v['max_rel'])} (RMS {pc(v['rms_rel'])}, {v['n']} pairs) | the two "
            "readings' windows restarted as often, or not: a capture whose trials vary more than target_cv doubles "
            "its window and starts again (Note [Trials a restart dropped]) |"
            for k, v in an.get("repeatability_by_window", {}).items() if v["n"]]
    v = an.get("repeatability_at_other_window") or {"n": 0}
    if v["n"]:
        rows.append(f"| ... those, the one that restarted more read at the other's window | {pc(v['max_rel'])} (RMS "
                    f"{pc(v['rms_rel'])}, {v['n']} pairs) | the trials its restart dropped at the window the other "
                    "kept, against the other reading (recorded from 2026-11-29 evening: Note [Trials a restart "
                    "dropped]) |")
    return rows


def _summary_rows(an: dict, pc, ref_c: float) -> list:
    """The report's table of the issue's quantities: repeats, the interval, the card spread."""
    at = f"at {ref_c:.0f} °C" if "repeatability_max_rel_at_reference" in an else "as read (no card's leakage known)"
    by = an.get("interval_held_out_by", "task")  # what each repeat is held out by (held_out_by)
    return [
        f"| repeatability_max_rel | {pc(an['repeatability_max_rel'])} | largest change of a part (>= 5 µs) or whole "
        "model between two fresh processes on one card |",
        f"| repeatability_rms_rel | {pc(an['repeatability_rms_rel'])} | its RMS |",
        *([f"| ... from the readings' CIs alone | {pc(an['repeatability_max_rel_from_ci'])} (95 % of runs below "
           f"{pc(an['repeatability_max_rel_from_ci_95'])}) | the largest change these pairs would show if each moved "
           "only by its two readings' 95 % CIs, with no process-to-process offset (median over runs): the floor "
           "under repeatability_max_rel |"] if math.isfinite(an.get("repeatability_max_rel_from_ci", math.nan))
          else []),
        *[f"| ... where {_SPLITS[k]} | {pc(v['max_rel'])} (RMS {pc(v['rms_rel'])}, {v['n']} pairs) | GPU time "
          f"per call within / beyond {U.TIME_MOVED * 100:.0f} % between the two processes (Note [Launch-latency "
          f"state]){_SPLIT_TEMPERATURE if k in ('time_and_temperature_held', 'held_and_read') else ''}"
          f"{_SPLIT_READ if k == 'held_and_read' else ''} |"
          for k, v in an.get("repeatability_by_time_state", {}).items() if v["n"]],
        *_window_rows(an, pc),
        f"| ... corrected for the launch state | {pc(an.get('repeatability_state_corrected_max_rel'))} (RMS "
        f"{pc(an.get('repeatability_state_corrected_rms_rel'))}) | each reading taken at the faster one's GPU time, "
        "the time beyond it at its run's awake-idle power (Note [Launch-latency state]) |",
        *_launch_normalised_row(an, pc),
        f"| ... at {ref_c:.0f} °C | {pc(an.get('repeatability_max_rel_at_reference'))} (RMS "
        f"{pc(an.get('repeatability_rms_rel_at_reference'))}) | each reading less the static power its card's leakage "
        f"adds above {ref_c:.0f} °C over its GPU time (slope from every run's awake idle, cool and warm: Note "
        "[Leakage measured in every run], clear_native/thermal.py) |",
        f"| ... at one temperature by energy per call per °C | "
        f"{pc(an.get('repeatability_max_rel_temperature_scaled'))} (RMS "
        f"{pc(an.get('repeatability_rms_rel_temperature_scaled'))}) | each second reading scaled to the first's "
        f"temperature by a coefficient per °C ({_coefficients(an, pc)}; fitted on repeats whose GPU time held; all "
        f"those repeats' fit {pc(an.get('temperature_coefficient_per_c'))}: Note [Energy per call per °C], "
        "bench/uncertainty.py) |",
        f"| ... where the GPU time held, at one temperature | "
        f"{pc(an.get('repeatability_max_rel_time_held_temperature_scaled'))} (RMS "
        f"{pc(an.get('repeatability_rms_rel_time_held_temperature_scaled'))}, "
        f"{an.get('pairs_time_held_temperature_scaled', 0)} pairs) | the same, on the repeats taken in one "
        "launch-latency state (Note [Launch-latency state]) |",
        f"| sigma_p (repeatability layer) | {pc(an.get('sigma_p_tasks_rel'))} | the smallest whose interval holds 95 % "
        f"of the tasks' repeats {at} (calibrated_sigma); as a normal spread they give "
        f"{pc(an.get('sigma_p_normal_rel'))}; {an['sigma_p_from']} give {pc(an['sigma_p_rel'])} |",
        f"| interval_coverage | {pc(an['interval_coverage'])} | share of {an['interval_pairs']} repeats {at} "
        f"inside the stated 95 % interval, each {by}'s judged with sigma_p from the other {by}s' "
        f"repeats (Note [The reported interval]); as read {pc(an.get('interval_coverage_as_read'))} |",
        f"| ... at one temperature by energy per call per °C | {pc(an.get('interval_coverage_temperature_scaled'))} | "
        f"the scaled repeats, sigma_p {pc(an.get('sigma_p_temperature_scaled_rel'))} (each {by}'s from the others') |",
        f"| ... where the GPU time held, at one temperature | "
        f"{pc(an.get('interval_coverage_time_held_temperature_scaled'))} | the scaled repeats taken in one "
        f"launch-latency state, sigma_p {pc(an.get('sigma_p_time_held_temperature_scaled_rel'))} (each {by}'s from "
        "the others') |",
        f"| ... with the card reference's sigma_p | {pc(an.get('interval_coverage_card_reference_sigma'))} | raw "
        f"readings; at the faster reading's GPU time {pc(an.get('interval_coverage_state_corrected'))} |",
        *_card_spread_rows(an, pc, ref_c)]


def _card_spread_rows(an: dict, pc, ref_c: float) -> list:
    """The summary table's rows of the card spread, raw and normalised (_summary_rows)."""
    return [
        f"| card_spread_raw_rel | {pc(an.get('card_spread_raw_rel'))} (max {pc(an.get('card_spread_raw_max_rel'))}) | "
        "median over parts of (max - min) / mean across cards |",
        f"| card_spread_normalized_rel | {pc(an.get('card_spread_normalized_rel'))} (max "
        f"{pc(an.get('card_spread_normalized_max_rel'))}) | the same after the card reference "
        f"({an.get('normalisation')!s} model; fitted on the reference workloads only) |",
        f"| ... the model chosen without the task | {pc(an.get('card_spread_normalized_held_out_rel'))} (max "
        f"{pc(an.get('card_spread_normalized_held_out_max_rel'))}) | each task's parts normalised by the model the "
        f"other tasks' parts chose ({_chosen(an.get('normalisation_held_out'))}; Note [Card normalisation]) |",
        f"| ... corrected for the launch state | {pc(an.get('card_spread_normalized_state_corrected_rel'))} | each "
        "card's reading taken at the fastest card's GPU time, the time beyond it at awake-idle power |",
        f"| ... at {ref_c:.0f} °C | {pc(an.get('card_spread_raw_rel_at_reference'))} raw, "
        f"{pc(an.get('card_spread_normalized_rel_at_reference'))} normalised "
        f"({an.get('normalisation_at_reference')!s}), "
        f"{pc(an.get('card_spread_normalized_state_corrected_rel_at_reference'))} also at the fastest card's GPU "
        "time | every energy and awake idle, the card reference's too, taken to "
        f"{ref_c:.0f} °C by its card's leakage (as above) before the factors are fitted |"]


def _chosen(chosen) -> str:
    """Which model each task's parts were read with (held_out_model), in words."""
    return "; ".join(f"{t}: {m}" for t, m in sorted(chosen.items())) if chosen else \
        "n/a: fewer than two tasks on several cards, none to choose by"


def _by_task(an: dict, pc) -> list:
    """One line: each task's largest repeat (parts >= MIN_TIME_S and the whole model), in and out of one launch
    state, so that a task whose state moved is told from one whose numbers did."""
    parts = []
    for task, s in (an.get("repeatability_by_task") or {}).items():
        held, moved = s["time_held"], s["time_moved"]
        largest = max((x for x in (held["max_rel"], moved["max_rel"]) if not math.isnan(x)), default=math.nan)
        split = [f"{pc(g['max_rel'])} over the {g['n']} whose GPU time {word}"
                 for g, word in ((held, "held"), (moved, "moved")) if g["n"]]
        parts.append(f"{task} {pc(largest)} ({held['n'] + moved['n']} pairs: {', '.join(split)})")
    return ["", "Repeatability by task: " + "; ".join(parts) + "."] if parts else []


def _windows(an: dict) -> str:
    """How the parts' windows were chosen, from the records' target_cv (Note [Window length and repeats])."""
    words = ["each part at one window (`--target-cv none`: Note [Window length and repeats])" if c is None else
             f"windows doubled where trials varied more than {c * 100:.2f} %" for c in an.get("target_cv") or []]
    return ", " + "; ".join(words) if words else ""


_ORDER_WORDS = {("interleaved",): "each job's back-to-back: Note [Repeats back-to-back]",
                ("rounds",): "one after the other"}


def markdown(an: dict, ident: dict) -> str:
    pc = lambda x: f"{x * 100:.2f} %" if isinstance(x, float) and not math.isnan(x) else "n/a"  # noqa: E731
    ref_c = an.get("reference_temperature_c", U.REFERENCE_TEMPERATURE_C)
    how = _side_by_side_words(an) or _ORDER_WORDS.get(tuple(an.get("order") or ()), "orders mixed")
    L = ["# Reproducibility: repeats, cards, temperature", "",
         f"{' + '.join(an.get('kinds') or [ident['gpu']['name']])} x {len(an['cards'])}: {', '.join(an['cards'])}; "
         f"driver {ident['gpu'].get('driver_version')}; "
         + (f"code {ident.get('code_version')}, protocol {ident.get('protocol_version')}"
            if len(an.get("versions") or ()) <= 1 else f"{len(an['versions'])} code/protocol versions (below)")
         + f"; {ident.get('date')}. Tasks: {', '.join(an['tasks']) or 'none'}; "
         f"{an['rounds']} rounds ({how}), every task and "
         "check in a fresh process" + (f", each task's first round after a lead-in process of it ({an['lead_ins']}, "
                                      "never compared: Note [A lead-in before the repeats])" if an.get("lead_ins")
                                      else "") + (
             "; the cards in lockstep (each job started on every card together: Note [Cards in lockstep])"
             if an.get("lockstep") == [True] else "") + "; each part read to "
         + (" / ".join(f"±{c * 100:.2f} %" for c in an.get("target_ci") or ()) or "n/a")
         + " (its trials' 95 % CI, where its budget allowed)" + _windows(an) + "." + _graphs(an) + _partial(an) + (
             " Records of several code/protocol versions: " + ", ".join("/".join(v) for v in an["versions"]) + "."
             if len(an.get("versions", ())) > 1 else "") + (
             f" Joined from {len(an['runs'])} runs, each card's from one (Note [Runs of several hosts]): "
             + ", ".join(Path(r).name for r in an["runs"]) + "." if an.get("runs") else ""), "",
         "| quantity | value | meaning |", "|---|---|---|",
         *_summary_rows(an, pc, ref_c)]
    L += _by_task(an, pc)
    if an.get("card_spread_normalized_by_model"):
        L += ["", "Normalisation models (median spread on the parts): " + ", ".join(
            f"{m}: {pc(v)}" for m, v in an["card_spread_normalized_by_model"].items()) + "."]
    L += _card_table(an)
    L += _temperature_section(an.get("thermal", {}))
    if an.get("leakage_w_per_c"):
        L += ["", "Leakage, each card's awake idle against its temperature through every run's two readings (cool, "
              "warm; Note [Leakage measured in every run]): " + ", ".join(
                  f"{c[:12]} {w:.2f} W/°C" if not math.isnan(w) else f"{c[:12]} n/a"
                  for c, w in sorted(an["leakage_w_per_c"].items())) + "."]
    L += _per_degree(an)
    if an.get("launch_states"):
        L += ["", "## Launch state of each task's processes", "", "The GPU time per tiny graph kernel (µs) before "
              "the trials (from protocol 10 on, right after the launch-state reset), where the kept trials began and "
              "after them (Note [Launch-latency state]).", "",
              "| task | card | round | before | kept from | after | readings |", "|---|---|---|---|---|---|---|"]
        L += [f"| {x['task']} | {x['card'][:12]} | {x['round']} | {x['before_us']:.3f} | {x['kept_from_us']:.3f} | "
              f"{x['after_us']:.3f} | {x['readings']} |" for x in an["launch_states"]]
    L += ["", "## Repeats (same card, two fresh processes)", "", "| task | part | card | GPU time | energy change | "
          "GPU time change | temperature change | window restarts |", "|---|---|---|---|---|---|---|---|"]
    for x in sorted(an["repeat"], key=lambda x: -abs(x["rel_diff"]))[:40]:
        dt = x.get("temperature_diff_c", math.nan)
        win = " / ".join("n/a" if math.isnan(n) else f"{n:.0f}" for n in x.get("window_restarts", (math.nan,) * 2))
        L.append(f"| {x['task']} | {x['part']} | {x['card'][:12]} | {x['gpu_time_s'] * 1e6:.1f} µs | "
                 f"{x['rel_diff'] * 100:+.2f} % | {x['time_rel_diff'] * 100:+.2f} % | "
                 + ("n/a" if math.isnan(dt) else f"{dt:+.1f} °C") + f" | {win} |")
    return "\n".join(L) + "\n"


def _side_by_side_words(an: dict) -> str:
    """How a run's rounds ran where its task processes took turns on their card (Note [Repeats side by side]); ''
    where none did."""
    beside, of = an.get("side_by_side") or (0, 0)
    if not beside:
        return ""
    return ("each task's rounds side by side on its card, taking turns round by round of trials" +
            ("" if beside == of else f" ({beside} of {of} task processes; the others alone)") +
            ": Note [Repeats side by side], the repeats leave out the card's drift between two moments")


def write(folders: list, out: Path, recs: list) -> dict:
    """Analyses ``recs``, the records of ``folders`` (one run's, or several: load_runs), and writes the report."""
    runs = tuple(str(f) for f in folders)
    an = analyse(recs, folders=runs) | ({"runs": list(runs)} if len(runs) > 1 else {})
    ident = next(r["identity"] for r in recs if r.get("status") == "ok")
    res = {"identity": ident, "run": ",".join(runs)} | an
    write_results(out, "reproducibility", res, markdown(an, ident))
    return res


# Note [Runs of several hosts]
# ~~~~~~~~~~~~~~~~~~~~~~~~~~~~
# The card spread asks for three cards or more of one kind, and a host of several is not always to be had (the
# lender gave one H200 at a time for whole sessions of 2026-11-29, a fresh card at nearly every start). Each run
# measures its own card reference (card_check, every round), so runs on other cards can be analysed as one:
# --report RUN1,RUN2,... joins their records. What a card's repeats say comes from its one run, never from two (a
# card in two runs is refused: its rounds would overwrite each other), and the spread then compares cards in other
# hosts, at other times and room temperatures: what a user comparing two machines sees, and what the card
# reference, fitted on its workloads only, has to take out. Runs of other code or protocol versions are refused
# unless --allow-mixed, as a resumed run's are.
def load_runs(report: str, allow_mixed: bool = False) -> tuple:
    """(folders, their records) for --report RUN[,RUN...]: several runs, one card or more each (a host lent one
    GPU at a time: Note [Runs of several hosts]). ValueError where a folder holds no records, where one card was
    measured in two of them (its rounds would overwrite each other), or, without ``allow_mixed``, where they were
    measured by other code or protocol versions."""
    folders = [Path(p.strip()) for p in report.split(",") if p.strip()]
    lacking = [str(f) for f in folders if not (f / "records.jsonl").exists()]
    if not folders or lacking:
        raise ValueError(f"--report {report!r}: no records.jsonl in {', '.join(lacking) or 'it'} (give run folders, "
                         "<out>/reproducibility/<date_time>, separated by commas)")
    by_run = {f: store.load(f, "records.jsonl") for f in folders}
    if len(folders) == 1:
        return folders, by_run[folders[0]]
    where: dict = {}
    for f, recs in by_run.items():
        for card in {r["identity"]["gpu"]["uuid"] for r in recs if r.get("status") == "ok"}:
            if card in where:
                raise ValueError(f"--report: {card} was measured in both {where[card]} and {f}: a card's rounds come "
                                 "from one run; report those runs apart")
            where[card] = f
    versions = set().union(*(store.versions(recs) for recs in by_run.values()))
    if len(versions) > 1 and not allow_mixed:
        raise ValueError(f"--report: the runs were measured by code/protocol {sorted(versions)}: pass --allow-mixed "
                         "to report them together (the report names every version), or report them apart")
    graphs = set().union(*(store.instances(recs) for recs in by_run.values()))
    if len(graphs) > 1 and not allow_mixed:
        raise ValueError(f"--report: the runs measured their parts over {sorted(graphs)} graph instances (--instances:"
                         " Note [Graph instances]): pass --allow-mixed to report them together (the report names "
                         "each), or report them apart")
    return folders, [r for recs in by_run.values() for r in recs]


def _run_folder(args, cards) -> tuple:
    """(the run's folder, the ids of jobs it measured already): a new folder, or --resume's (ValueError where it
    holds no records, or records of other code or protocol, or of another kind of card than ``cards``, without
    --allow-mixed)."""
    if args.resume is None:  # an empty --resume (a script's unset variable) is an error, not a new run
        folder = Path(args.out) / "reproducibility" / _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d_%H%M%S")
        folder.mkdir(parents=True)
        return folder, set()
    from clear_native.protocol import PROTOCOL_VERSION

    folder = Path(args.resume)
    if not args.resume or not (folder / "records.jsonl").exists():
        raise ValueError(f"--resume {args.resume!r}: no records.jsonl there (give the run's folder, "
                         "<out>/reproducibility/<date_time>)")
    recs = store.load(folder, "records.jsonl")
    other = store.versions(recs) - {(code_version(), str(PROTOCOL_VERSION))}
    if other and not args.allow_mixed:
        raise ValueError(f"{folder} was measured by code/protocol {sorted(other)}, this is "
                         f"{code_version()}/{PROTOCOL_VERSION}: pass --allow-mixed to resume anyway, or start a new "
                         "run")
    graphs = store.instances(recs)
    if graphs - {args.instances} and not args.allow_mixed:
        raise ValueError(f"{folder} measured its parts over {sorted(graphs)} graph instances, this is --instances "
                         f"{args.instances}: give the run's, or pass --allow-mixed")
    kinds, here = {r["identity"]["gpu"]["name"] for r in recs if r.get("identity")}, {c.name for c in cards}
    if kinds and not here <= kinds and not args.allow_mixed:
        raise ValueError(f"{folder} was measured on {', '.join(sorted(kinds))}, this host's cards are "
                         f"{', '.join(sorted(here))}: the card spread compares one kind; start a new run here, or pass "
                         "--allow-mixed (the report then compares the most numerous kind only)")
    return folder, {r.get("job_id") for r in recs if r.get("status") == "ok"}


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--gpus", default="all", help="'all' or nvidia-smi indices / UUIDs (comma-separated)")
    ap.add_argument("--rounds", type=int, default=2, help="fresh-process rounds per card (>= 2)")
    ap.add_argument("--out", default=str(ROOT / "results"), help="writes reproducibility.json/.md here")
    ap.add_argument("--report", metavar="RUN[,RUN...]", help="analyse RUN's records again, measure nothing; several "
                    "runs (each on other cards, e.g. hosts lent one GPU at a time) are analysed as one")
    ap.add_argument("--resume", metavar="RUN", help="measure what RUN's records lack (jobs with no ok record; give "
                                                    "the same --gpus, --rounds and --tasks), then analyse all of them")
    ap.add_argument("--allow-mixed", action="store_true", help="--resume a run that other code or protocol measured, "
                    "or --report runs of several versions together")
    ap.add_argument("--simulate", action="store_true", help="the simulated GPU (tests the pipeline, no GPU)")
    ap.add_argument("--no-thermal", action="store_true")
    ap.add_argument("--no-card-checks", action="store_true", help="no card reference: repeats only (no card spread, "
                    "no normalisation); the quickest check of repeatability on one card")
    ap.add_argument("--lead-in", action="store_true", help="a process of each task before its first round, never "
                    "compared: the repeats then follow the task's own load (Note [A lead-in before the repeats])")
    ap.add_argument("--side-by-side", action="store_true", help="a task's rounds run at the same time on their card, "
                    "each a fresh process, taking turns round by round of trials (Note [Repeats side by side])")
    ap.add_argument("--lockstep", action="store_true", help="the cards start each job together, once every card's "
                    "job before ended: a task's repeats then run beside the same neighbours' load (Note [Cards in "
                    "lockstep])")
    ap.add_argument("--order", choices=ORDERS, default="interleaved",
                    help="interleaved: each job's rounds back-to-back (Note [Repeats back-to-back]); rounds: one "
                         "round after the other")
    ap.add_argument("--tasks", default=",".join(TASKS), help="study task ids measured on every card, each round")
    # Readings to +-0.25 %: at +-0.5 % two readings of one part differ by up to ~0.7 % by chance alone, more than
    # the 0.5 % repeatability asked of them; on GPU-e8dde3fa the tighter target cost ~10 % more task time (longer
    # windows, few more trials) and repeats that kept their temperature moved <= 0.45 % (docs/measured.md).
    ap.add_argument("--window-s", type=float, default=0.4, help="steady seconds of samples per trial (s)")
    ap.add_argument("--target-ci", type=float, default=0.0025,
                    help="each part's trials go on until its 95 %% CI is within this (relative; 0.005 = ±0.5 %%)")
    # Windows grow (Note [Window length and repeats]): a longer one does not read higher in one process, and fixed
    # ones left 29 % of the parts short of ±0.25 %.
    ap.add_argument("--target-cv", type=_cv, default=0.004,
                    help="a part whose trials scatter more than this (relative) gets longer windows; none: every part "
                         "keeps --window-s (but at the power limit)")
    ap.add_argument("--max-trials", type=int, default=16)
    ap.add_argument("--instances", type=int, default=1, help="graphs of each part measured in blocks; 1 repeats best "
                    "(8 moved whole models ~2 %% between processes: Note [Graph instances], clear_native/instances.py)")
    ap.add_argument("--task-budget-s", type=float, default=130.0, help="seconds of trials per task at most")
    ap.add_argument("--time-limit", type=float, metavar="S", help="start no job that could not end within S seconds "
                    "(a lease's or batch slot's end); the rest is left for --resume, exit code 3 (Note [A time limit], "
                    "bench/workers.py)")
    return ap


def _cv(text: str) -> float | None:
    """--target-cv: a fraction, or none (fixed windows)."""
    return None if text.strip().lower() == "none" else float(text)


def _bad(args) -> str:
    """What is wrong with the measuring arguments, in words ('' where nothing is): before any GPU time."""
    return ("--rounds must be >= 2 (repeatability needs two)" if args.rounds < 2 else
            "--target-ci and --target-cv must lie in (0, 1): relative, 0.005 is ±0.5 %"
            if not (0 < args.target_ci < 1 and (args.target_cv is None or 0 < args.target_cv < 1)) else
            "--max-trials must be >= 3" if args.max_trials < 3 else
            LEAD_IN_BESIDE if args.lead_in and args.side_by_side else
            "--window-s and --task-budget-s must be > 0 (seconds)" if min(args.window_s, args.task_budget_s) <= 0
            else "--time-limit must be > 0 (seconds)" if args.time_limit is not None and args.time_limit <= 0
            else "")


def main(argv=None) -> int:
    t0 = time.monotonic()
    args = _parser().parse_args(argv)
    if args.report is not None:
        try:
            folders, recs = load_runs(args.report, args.allow_mixed)
        except ValueError as exc:
            print(f"bench/reproducibility.py: {exc}", file=sys.stderr)
            return 2
        write(folders, Path(args.out), recs)
        return 0
    bad = _bad(args)
    if bad:
        print(f"bench/reproducibility.py: {bad}", file=sys.stderr)
        return 2
    try:
        cards = workers.host_cards(args.gpus, simulate=args.simulate)
    except ValueError as exc:
        print(f"bench/reproducibility.py: {exc}", file=sys.stderr)
        return 2
    try:
        folder, done = _run_folder(args, cards)
    except ValueError as exc:
        print(f"bench/reproducibility.py: {exc}", file=sys.stderr)
        return 2
    settings = dict(window_s=args.window_s, min_trials=3, max_trials=args.max_trials, target_ci=args.target_ci,
                    target_cv=args.target_cv, task_budget_s=args.task_budget_s, l2="cold", reference_calls=0,
                    reference_trials=0, verbose=False, order=args.order, lead_in=args.lead_in,
                    lockstep=args.lockstep, side_by_side=args.side_by_side, instances=args.instances)
    try:
        jobs = plan(cards, args.rounds, settings, args.simulate, thermal=not args.no_thermal,
                    task_ids=suite.as_list(args.tasks, TASKS), done=done, order=args.order, lead_in=args.lead_in,
                    side_by_side=args.side_by_side, card_checks=not args.no_card_checks)
    except ValueError as exc:
        print(f"bench/reproducibility.py: {exc}", file=sys.stderr)
        return 2
    if args.time_limit is not None:
        jobs.limit(t0 + args.time_limit)
    ex = workers.HostProcesses(cards, folder, simulate=args.simulate, lockstep=args.lockstep)
    print(f"{len(jobs)} jobs on {ex.description} ({len(done)} measured before); code {code_version()}; records in "
          f"{folder}", flush=True)
    rc = _measure(ex, jobs, folder, args)
    recs = store.load(folder, "records.jsonl")
    if any(r.get("status") == "ok" for r in recs):
        write([folder], Path(args.out), recs)  # what was measured, "Incomplete" where a job is missing
    return rc


def _measure(ex, jobs: workers.Jobs, folder: Path, args) -> int:
    """Runs ``jobs`` on ``ex``, each record appended as it comes, with the elapsed time and an ETA; 130 where
    interrupted (Ctrl-C, or SIGTERM from `timeout` or a scheduler), with the command that measures the rest."""
    workers.stop_on_sigterm()
    t0, total = time.monotonic(), len(jobs)
    try:
        for finished, (job, rec) in enumerate(ex.run(jobs), 1):
            store.append(folder, rec, "records.jsonl")
            jobs.keep_profile(rec)
            elapsed = time.monotonic() - t0
            print(f"  [{finished}/{total}] {job['id']}: {rec['status']} {rec.get('error', '')[:200]}  elapsed "
                  f"{fmt_s(elapsed)}, ETA {fmt_s(elapsed / finished * len(jobs))}", flush=True)
    except KeyboardInterrupt:
        print(f"\ninterrupted after {fmt_s(time.monotonic() - t0)}: the records so far are in {folder}; measure the "
              f"rest with: python bench/reproducibility.py --resume {folder}{_same_flags(args)}", file=sys.stderr,
              flush=True)
        return 130
    if jobs.held_back:
        print(f"{workers.held_back(jobs, args.time_limit)}; the records so far are in {folder}; measure the rest "
              f"with: python bench/reproducibility.py --resume {folder}{_same_flags(args)}", file=sys.stderr,
              flush=True)
        return workers.TIME_LIMIT_LEFT
    return 0


def _same_flags(args) -> str:
    """The flags that plan and measure a run as ``args`` did (what --resume needs given again)."""
    values = " ".join(f"--{k.replace('_', '-')} {getattr(args, k)}" for k in (
        "gpus", "rounds", "tasks", "order", "window_s", "target_ci", "target_cv", "max_trials", "task_budget_s",
        "instances"))
    return f" {values}" + "".join(f" --{flag}" for flag, on in (
        ("lead-in", args.lead_in), ("lockstep", args.lockstep), ("side-by-side", args.side_by_side),
        ("no-thermal", args.no_thermal), ("no-card-checks", args.no_card_checks),
        ("simulate", args.simulate)) if on)


if __name__ == "__main__":
    sys.exit(main())
