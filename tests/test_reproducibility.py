"""The three layers of uncertainty (issue 14), on simulated cards whose truth is known: each simulated card
spends a fixed gain times the nominal energy (bench/tasks.py: sim_card_gain), and each process its own
sensor noise. bench/reproducibility.py must find the cards' spread, remove it with the card reference
it never fitted on the tasks, and state intervals that repeats land in."""

import json
import math
import os
import statistics
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")

from bench import tasks, uncertainty as U  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
CARDS = ["SIM-GPU-0", "SIM-GPU-1", "SIM-GPU-2"]


@pytest.fixture(scope="module")
def result(tmp_path_factory):
    out = tmp_path_factory.mktemp("repro")
    p = subprocess.run([sys.executable, str(ROOT / "bench" / "reproducibility.py"), "--simulate", "--gpus", "0,1,2",
                        "--tasks", "bert-base/prefill/b1s8/bf16", "--window-s", "0.1", "--out", str(out),
                        # the pipeline at the +-0.5 % readings these tests' bounds were set for (the default is
                        # +-0.25 %, for the real cards' 0.5 % repeatability target)
                        "--target-ci", "0.005", "--target-cv", "0.01", "--max-trials", "12"],
                       capture_output=True, text=True, timeout=900, cwd=ROOT)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    return json.loads((out / "reproducibility.json").read_text()), (out / "reproducibility.md").read_text()


def test_the_card_spread_is_measured_and_the_card_reference_removes_it(result):
    res, md = result
    gains = [tasks.sim_card_gain(c) for c in CARDS]
    truth = (max(gains) - min(gains)) / statistics.fmean(gains)
    assert truth > 0.02  # the three simulated cards differ as H200s do
    assert res["cards"] == CARDS
    assert res["card_spread_raw_rel"] == pytest.approx(truth, abs=0.003)
    # A simulated card scales everything (static and dynamic) by its gain: both models fit it, down to the
    # trials' own noise (each part's 95 % CI is ~0.3-0.5 % here; the range of three such readings ~0.2 %).
    assert res["card_spread_normalized_rel"] < 0.005 and res["card_spread_normalized_rel"] < truth / 10
    assert all(v < 0.005 for v in res["card_spread_normalized_by_model"].values())
    # No simulated card runs in another launch state here: taken at the fastest card's GPU time, as close.
    assert res["card_spread_normalized_state_corrected_rel"] < 0.005
    f = res["card_factors"]
    for c, g in zip(CARDS, gains):
        assert f[c]["one"] == pytest.approx(g / gains[0], rel=0.003)
    assert "card_spread_normalized_rel" in md and "SIM-GPU-1" in md
    # One task: no other task's parts to choose the model by (test_each_tasks_card_spread_is_read_...).
    assert res["normalisation_held_out"] == {} and "none to choose by" in md


def test_repeats_in_fresh_processes_land_inside_the_stated_interval(result):
    res, md = result
    assert res["rounds"] == 2
    long = [x for x in res["repeat"] if x["gpu_time_s"] >= 5e-6]
    assert len(long) >= 3 * 4  # every part of >= 5 µs, on three cards
    # The simulated sensor's noise differs between processes: repeats move, a little.
    assert 0 < res["repeatability_max_rel"] < 0.01
    assert res["repeatability_max_rel"] == max(abs(x["rel_diff"]) for x in long)
    assert res["interval_coverage"] >= 0.9 and res["interval_pairs"] == len(long)
    # The simulated cards hold one temperature: no leakage to take readings to 45 °C by, and the report says so
    # rather than repeat the raw numbers as if they had been taken there.
    assert all(math.isnan(w) for w in res["leakage_w_per_c"].values())
    assert "repeatability_max_rel_at_reference" not in res and "as read (no card's leakage known)" in md


def test_the_interval_combines_the_layers():
    assert U.interval(0.006, 0.0) == pytest.approx(0.006)
    assert U.interval(0.0, 0.01) == pytest.approx(0.0196)
    assert U.interval(0.003, 0.002, 0.004) == pytest.approx(math.sqrt(0.003 ** 2 + (1.96 * 0.002) ** 2 +
                                                                      (1.96 * 0.004) ** 2))
    # Two processes that differ by 1 % where the CIs explain nothing: sigma_p = 1 % / sqrt(2).
    pairs = [((1.0, 0.0), (1.01, 0.0)), ((1.0, 0.0), (0.99, 0.0))]
    assert U.process_sigma(pairs) == pytest.approx(0.01 / math.sqrt(2), rel=0.01)
    # A pair compared by another change (the launch state taken out) is judged by that change.
    assert U.interval_coverage(pairs, 0.0) == 0.0 and U.interval_coverage(pairs, 0.0, diffs=[0.0, 0.0]) == 1.0
    # ... and the part their CIs explain is not counted twice.
    assert U.process_sigma([((1.0, 0.0196), (1.01, 0.0196))] * 2) < 0.01 / math.sqrt(2)


def test_one_wide_ci_neither_hides_nor_sets_the_spread_of_the_other_repeats():
    # 20 repeats moving +-0.5 % with CIs of 0.1 %, and one whose second reading ran out of trials at +-7 %: the
    # process spread of the 20 is 0.5 % / sqrt(2) less their CIs' share; the wide one, weighed by its own CIs,
    # barely moves it (the moment estimate fell to the floor: results/reproducibility/2026-11-28_194941).
    tight = [((1.0, 0.001), (1.0 + s * 0.005, 0.001)) for s in (1, -1) * 10]
    alone = math.sqrt((0.005 ** 2 - 2 * (0.001 / 1.96) ** 2) / 2)
    assert U.process_sigma(tight) == pytest.approx(alone, rel=1e-3)
    wide = tight + [((1.0, 0.001), (1.001, 0.07))]
    assert alone * 0.9 < U.process_sigma(wide) < alone
    # At the estimate each repeat's squared change over its variance averages 1 (Paule and Mandel's condition).
    s = U.process_sigma(wide)
    z2 = [(b - a) ** 2 / ((ca / 1.96) ** 2 + (cb / 1.96) ** 2 + 2 * s * s) for (a, ca), (b, cb) in wide]
    assert statistics.fmean(z2) == pytest.approx(1.0, rel=1e-6)
    # Readings their CIs explain give the floor, not zero.
    assert U.process_sigma([((1.0, 0.02), (1.001, 0.02))] * 3) == U.SIGMA_FLOOR


def test_the_calibrated_sigma_holds_the_share_of_repeats_it_claims():
    # 38 repeats within their CIs and two that moved 2 % (a card still cooling): a normal spread fitted to all 40
    # is 0.33 %, and its interval (1.96 sqrt(2) sigma = 0.9 %) leaves both out; the split-conformal rank is
    # ceil(41 x 0.95) = 39: the interval must hold one of the two, 2 % = 1.96 sqrt(2) sigma.
    pairs = [((1.0, 0.002), (1.001, 0.002))] * 38 + [((1.0, 0.0), (1.02, 0.0))] * 2
    assert U.interval_coverage(pairs, U.process_sigma(pairs)) == pytest.approx(38 / 40)
    sigma = U.calibrated_sigma(pairs)
    assert sigma == pytest.approx(0.02 / (1.96 * math.sqrt(2)))
    assert U.interval_coverage(pairs, sigma) == 1.0
    # 20 repeats, one outside: the rank is ceil(21 x 0.95) = 20, the outlier itself (too few to leave one out);
    # 39 repeats, one outside: ceil(40 x 0.95) = 38, and it is left out.
    assert U.calibrated_sigma(pairs[:19] + pairs[-1:]) == pytest.approx(0.02 / (1.96 * math.sqrt(2)))
    assert U.calibrated_sigma(pairs[:38] + pairs[-1:]) == U.SIGMA_FLOOR


def test_the_largest_repeat_the_readings_cis_alone_would_give_is_the_floor_under_the_target(result):
    # 40 pairs read to +-0.25 % each (95 % CI), no process spread: each change is normal with sd sqrt(2) x 0.25 % /
    # 1.96, and the largest of 40 stays below x with probability (2 Phi(x / sd) - 1) ** 40.
    unit = statistics.NormalDist()
    pairs = [((1.0, 0.0025), (1.0, 0.0025))] * 40
    sd = math.sqrt(2) * 0.0025 / 1.96
    for share in (0.5, 0.95):
        truth = sd * unit.inv_cdf((1 + share ** (1 / 40)) / 2)
        assert U.largest_from_ci(pairs, share) == pytest.approx(truth, rel=1e-6)
    assert 0.0042 < U.largest_from_ci(pairs) < 0.0044 < 0.0057 < U.largest_from_ci(pairs, 0.95) < 0.0059
    # One wide reading sets the floor by itself; pairs without CIs say nothing.
    wide = pairs[:39] + [((1.0, 0.05), (1.0, 0.0025))]
    sd_wide = math.hypot(0.05, 0.0025) / 1.96  # the others, 7 sd below it, hardly move the median of its |change|
    assert U.largest_from_ci(wide) == pytest.approx(sd_wide * unit.inv_cdf(0.75), rel=1e-3)
    assert math.isnan(U.largest_from_ci([((1.0, math.nan), (1.0, math.nan))])) and math.isnan(U.largest_from_ci([]))
    # The simulated run's report gives it beside its largest repeat.
    an, md = result
    floor = U.largest_from_ci([((1.0, a), (1.0, b)) for x in an["repeat"] if x["gpu_time_s"] >= 5e-6
                               for a, b in [x["ci95_rel"]]])
    assert an["repeatability_max_rel_from_ci"] == pytest.approx(floor)
    assert "| ... from the readings' CIs alone | " in md


def test_the_temperature_effect_is_measured_per_workload(result, monkeypatch):
    # Note [Two temperatures]: the thermal job's simulated card heats as it draws (also while a run lasts) and
    # leaks SIM_THERMAL's watts per °C more: d(energy per call)/dT = leak x time per call, so the slope per 10 °C of a workload
    # that draws P watts cool is 10 x leak / P (the card's gain scales both). P from the cost model here.
    from bench import cardref

    res, md = result
    per = res["thermal"]["per_card"]
    assert set(per) == set(CARDS) and set(per["SIM-GPU-0"]) == {"gemm", "copy", "gemm_fp32"}
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "SIM-GPU-0")
    lab = tasks.Lab(simulate=True)
    try:
        gain = tasks.sim_card_gain("SIM-GPU-0")
        watts = {c.name: c.power_w / gain for c in cardref.captures(lab, lab.backend)}
    finally:
        lab.close()
    leak, idle_c = tasks.SIM_THERMAL["leak_w_per_c"], tasks.SIM_THERMAL["sensor"]["temperature_c"]
    for card, ws in per.items():
        for w, v in ws.items():
            # The bins span from the idle card warming to the GEMM's heat cooling.
            assert v["hot_c"] > v["cold_c"] + 5 and v["span_c"] >= 5 and v["bins"] >= 40, (card, w, v)
            mid_c = (v["cold_c"] + v["hot_c"]) / 2
            truth = 100 * 10 * leak / (watts[w] + leak * (mid_c - idle_c))
            assert v["pct_per_10c"] == pytest.approx(truth, rel=0.25), (card, w, v, truth)
    assert "% per 10 °C" in md and "n/a (no temperature change)" not in md


def test_the_authors_reading_is_explained_by_idle_power_times_python_time_plus_the_component():
    from bench.reference import explain

    # A loop of 100 µs per call around a 10 µs component; awake idle 120 W; our dynamic 1 mJ per call.
    ref = {"wall_time_per_call_s": 100e-6, "energy_per_call_j": 13e-3, "calls_per_trial": 10_000,
           "trial_energy_per_call_j": [13e-3] * 20}
    e = explain(ref, {"dynamic_energy_per_call_j": 1e-3, "gpu_time_per_call_s": 10e-6}, awake_w=120.0,
                counter_update_s=0.1)
    assert e["idle_term_j"] == pytest.approx(12e-3) and e["predicted_j"] == pytest.approx(13e-3)
    assert e["predicted_over_measured"] == pytest.approx(1.0) and e["wall_over_gpu_time"] == pytest.approx(10)
    assert e["implied_power_w"] == pytest.approx(130.0) and e["counter_step_j"] == pytest.approx(13.0)
    assert e["quantisation_cv"] == pytest.approx(13.0 / math.sqrt(6) / 130.0)


def test_the_temperature_slope_comes_from_each_trials_temperature():
    from bench.reproducibility import thermal_slope

    # Energy rising 1 % per 10 °C from 1.0 J at 40 °C, trials from 40 to 70 °C: +1 % per 10 °C (of the mean).
    trials = [(t, 1.0 + 0.001 * (t - 40)) for t in range(40, 71, 2)]
    mean_e = statistics.fmean(e for _, e in trials)
    assert thermal_slope(trials) == pytest.approx(100 * 0.001 * 10 / mean_e)
    assert math.isnan(thermal_slope([(50.0, 1.0), (51.0, 1.01), (52.0, 1.02)]))  # a 2 °C span says nothing


def test_repeats_are_split_by_whether_their_gpu_time_held():
    # (energy change, GPU-time change) of five repeats: two held their time, three moved with the launch state.
    diffs = [(0.004, 0.001), (-0.010, -0.015), (0.16, 0.21), (0.07, 0.07), (-0.12, -0.17)]
    split = U.by_time_state(diffs)
    assert split["time_held"]["n"] == 2 and split["time_held"]["max_rel"] == pytest.approx(0.010)
    assert split["time_held"]["rms_rel"] == pytest.approx(math.sqrt((0.004 ** 2 + 0.010 ** 2) / 2))
    assert split["time_moved"]["n"] == 3 and split["time_moved"]["max_rel"] == pytest.approx(0.16)
    assert math.isnan(U.by_time_state([(0.01, 0.0)])["time_moved"]["max_rel"])
    assert "time_and_temperature_held" not in split  # no temperatures given, no such split


def test_repeats_whose_time_held_are_split_again_by_their_temperature():
    # (energy change, GPU-time change, temperature change °C): the leakage of a die 4 °C cooler moved the third.
    diffs = [(0.004, 0.001, 0.5), (-0.006, 0.0, -1.0), (-0.025, 0.001, -4.0), (0.15, 0.2, 0.0)]
    split = U.by_time_state(diffs)
    assert split["time_held"]["n"] == 3 and split["time_held"]["max_rel"] == pytest.approx(0.025)
    assert split["time_and_temperature_held"]["n"] == 2  # 1.0 °C is held, 4 °C is not; the moved time is out
    assert split["time_and_temperature_held"]["max_rel"] == pytest.approx(0.006)
    assert split["time_moved"]["n"] == 1
    assert "held_and_read" not in split
    # With whether both readings reached their CI target: a held pair whose second process ran out of budget
    # (BERT's output part on GPU-296a3c72, 194941: -1.72 % at +0.2 °C, read to ±1.09 %) is set apart.
    read = U.by_time_state([d + (ok,) for d, ok in zip(diffs + [(-0.0172, -0.008, 0.2)], (1, 1, 1, 1, 0))])
    assert read["time_and_temperature_held"]["n"] == 3 and read["time_and_temperature_held"]["max_rel"] == 0.0172
    assert read["held_and_read"]["n"] == 2 and read["held_and_read"]["max_rel"] == pytest.approx(0.006)


def test_a_parts_temperature_is_the_mean_of_its_trials_or_the_middle_of_their_range():
    rec = {"report": {"whole": {"temperature_c": [41.0, 45.0], "trial_temperature_c": [41.0, 42.0, 45.0]},
                      "groups": [{"name": "mlp", "temperature_c": [50.0, 51.0]}, {"name": "norm", "temperature_c": []}]}}
    t = U.temperatures(rec)
    assert t["whole model"] == pytest.approx(128 / 3) and t["mlp"] == 50.5 and math.isnan(t["norm"])


def test_each_cards_leakage_comes_from_every_runs_awake_idle_cool_and_warm():
    # Card A: static power 100 W + 0.6 W/°C (T - 40) read at 38/44 °C and 41/47 °C in two runs; card B only ever
    # at 40-41 °C: no slope. Records of protocol 7 (no cool reading) still add their warm point.
    def run(uuid, job, cool_c, warm_c, watts=lambda t: 100 + 0.6 * (t - 40)):
        d = {"awake_idle_temperature_c": warm_c, "awake_idle_power_w": watts(warm_c)}
        if cool_c is not None:
            d |= {"cool_awake_idle_temperature_c": cool_c, "cool_awake_idle_power_w": watts(cool_c)}
        rec = {"status": "ok", "job": job, "identity": {"gpu": {"uuid": uuid}}}
        return rec | ({"card_check": d} if job == "card_check" else {"report": {"run": d}})

    recs = [run("A", "task", 38, 44), run("A", "card_check", 41, 47), run("A", "task", None, 45),
            run("B", "task", 40, 41), run("B", "card_check", 40, 40.5), {"status": "failed", "job": "task"}]
    leak = U.card_leakage(recs)
    assert leak["A"] == pytest.approx(0.6) and math.isnan(leak["B"])
    # 100 µs a call at 50 °C on card A: 0.6 W/°C x 5 °C above 45 °C x 100 µs = 0.3 mJ less at 45 °C.
    assert U.at_reference(0.020, 100e-6, 50.0, leak["A"]) == pytest.approx(0.0197)
    assert U.at_reference(0.020, 100e-6, 50.0, leak["B"]) == 0.020  # no slope: the reading itself


def test_records_are_taken_to_the_reference_temperature_by_their_cards_leakage():
    # A task on card A (0.6 W/°C): its part ran at 50 °C for 100 µs a call, its whole model at 40 °C for 1 ms, its
    # awake idle at 47 °C; a card check's workload at 55 °C for 2 ms. Card B has no slope: as it was.
    task = {"status": "ok", "job": "task", "identity": {"gpu": {"uuid": "A"}}, "report": {
        "run": {"awake_idle_power_w": 130.0, "awake_idle_temperature_c": 47.0},
        "whole": {"energy_per_call_j": 0.3, "dynamic_energy_per_call_j": 0.17, "gpu_time_per_call_s": 1e-3,
                  "trial_temperature_c": [40.0]},
        "groups": [{"name": "mlp", "energy_per_call_j": 0.02, "dynamic_energy_per_call_j": 0.007,
                    "gpu_time_per_call_s": 100e-6, "temperature_c": [49.0, 51.0]}]}}
    check = {"status": "ok", "job": "card_check", "identity": {"gpu": {"uuid": "A"}}, "card_check": {
        "awake_idle_power_w": 131.0, "awake_idle_temperature_c": 50.0, "workloads": {"copy": {
            "energy_per_call_j": 1.0, "dynamic_energy_per_call_j": 0.7, "gpu_time_per_call_s": 2e-3,
            "trial_temperature_c": [54.0, 56.0]}}}}
    other = dict(task, identity={"gpu": {"uuid": "B"}})
    t, c, o = U.taken_to_reference([task, check, other], {"A": 0.6, "B": math.nan})
    assert t["report"]["groups"][0]["energy_per_call_j"] == pytest.approx(0.02 - 0.6 * 5 * 100e-6)
    assert t["report"]["groups"][0]["dynamic_energy_per_call_j"] == pytest.approx(0.007 - 0.6 * 5 * 100e-6)
    assert t["report"]["whole"]["energy_per_call_j"] == pytest.approx(0.3 + 0.6 * 5 * 1e-3)
    assert t["report"]["run"]["awake_idle_power_w"] == pytest.approx(130.0 - 0.6 * 2)
    assert c["card_check"]["workloads"]["copy"]["energy_per_call_j"] == pytest.approx(1.0 - 0.6 * 10 * 2e-3)
    assert c["card_check"]["awake_idle_power_w"] == pytest.approx(131.0 - 0.6 * 5)
    assert o is other and task["report"]["groups"][0]["energy_per_call_j"] == 0.02  # the records are not changed


def test_the_interval_is_judged_on_each_task_with_the_spread_of_the_others():
    # Task "steady" moves 0.1 % between processes, task "loose" 1 %: each judged by the other's sigma_p, the loose
    # task's repeats fall outside the interval the steady one sets; the steady task's fall inside the loose one's.
    steady = [((1.0, 0.0), (1.001, 0.0))] * 4
    loose = [((1.0, 0.0), (1.01, 0.0))] * 4
    coverage, sigma = U.held_out_coverage({"steady": steady, "loose": loose}, fallback_sigma=0.5)
    assert coverage == pytest.approx(0.5)
    assert sigma == pytest.approx(U.calibrated_sigma(steady + loose))
    # One task alone is judged with the fallback (the card reference's sigma_p): 0.5 % holds a 1 % move.
    assert U.held_out_coverage({"loose": loose}, fallback_sigma=0.005)[0] == 1.0
    assert U.held_out_coverage({"loose": loose}, fallback_sigma=0.001)[0] == 0.0
    # ... and with none (no card reference: --no-card-checks), no interval is stated, so no share is either.
    assert math.isnan(U.held_out_coverage({"loose": loose}, fallback_sigma=math.nan)[0])


def test_repeats_of_one_task_on_several_cards_are_held_out_by_card():
    # One task on three cards: no other task's sigma_p exists, so each card's repeats are judged with the sigma_p
    # the other cards' repeats set, not with the card reference's (which the note found too small).
    from bench import reproducibility as R

    def rep(task, card, d):
        return {"task": task, "card": card, "rel_diff": d}

    one = [rep("bert", c, d) for c, d in (("A", 0.004), ("A", -0.003), ("B", 0.005), ("C", -0.004))]
    assert R.held_out_by(one) == "card"
    assert R.held_out_by(one + [rep("gpt2", "A", 0.001)]) == "task"
    assert R.held_out_by([rep("bert", "A", 0.004)] * 2) == "task"  # one card: nothing to hold out by
    pairs = [((1.0, 0.0), (1.0 + x["rel_diff"], 0.0)) for x in one]
    out = R._repeatability([x | {"state_corrected_rel_diff": x["rel_diff"], "time_rel_diff": 0.0,
                                 "temperature_diff_c": 0.0, "ci95_rel": (0.0,)} for x in one], pairs, sigma_p=0.0005)
    # Each card judged by the others' calibrated sigma_p (with so few, the largest need among them): A's two
    # repeats and C's by an interval that holds 0.5 %, B's 0.5 % by one that holds 0.4 % only: 3 of 4 inside.
    # With the fallback of 0.05 % none would be.
    assert out["interval_held_out_by"] == "card" and out["interval_coverage"] == pytest.approx(0.75)
    assert U.held_out_coverage({"bert": pairs}, fallback_sigma=0.0005)[0] == 0.0


def test_the_study_report_names_every_code_version_of_a_joined_reproducibility_report(tmp_path, monkeypatch):
    # The study's REPORT.md quotes results/reproducibility.json; joined from runs of several code versions, its
    # identity is the first run's, and quoting that code alone would say one version measured it all.
    from bench import report_trust

    rp = {"cards": ["GPU-a", "GPU-b", "GPU-c"], "identity": {"gpu": {"name": "NVIDIA H200"}, "code_version": "aaa"},
          "card_spread_raw_rel": 0.0259, "card_spread_normalized_rel": 0.0097, "repeatability_max_rel": 0.0141,
          "interval_coverage": 0.9318, "versions": [["aaa", "12"], ["bbb", "14"]]}
    monkeypatch.setattr(report_trust, "REPRODUCIBILITY", tmp_path / "reproducibility.json")
    report_trust.REPRODUCIBILITY.write_text(json.dumps(rp))
    line = "\n".join(report_trust._across_cards([]))
    assert "on 3 cards of NVIDIA H200 (2 code/protocol versions)" in line and "0.97 % after the card reference" in line
    report_trust.REPRODUCIBILITY.write_text(json.dumps(rp | {"versions": [["aaa", "12"]]}))
    assert "(code aaa)" in "\n".join(report_trust._across_cards([]))
    # ... and a report measured over other than one graph per part (Note [Graph instances]) says so.
    report_trust.REPRODUCIBILITY.write_text(json.dumps(rp | {"versions": [["aaa", "12"]], "instances": [8]}))
    assert "(code aaa; 8 graph instances per part)" in "\n".join(report_trust._across_cards([]))
    report_trust.REPRODUCIBILITY.write_text(json.dumps(rp | {"instances": [1, 8]}))
    assert "(2 code/protocol versions; 1 and 8 graph instances per part)" in "\n".join(report_trust._across_cards([]))
    # ... and the largest repeat beside what the readings' own CIs would give with no process spread.
    assert "1.41 % apart at most, " in "\n".join(report_trust._across_cards([]))  # not given: nothing said
    report_trust.REPRODUCIBILITY.write_text(json.dumps(rp | {"repeatability_max_rel_from_ci": 0.0038}))
    assert "1.41 % apart at most (the readings' own CIs alone would give 0.38 %), " in "\n".join(
        report_trust._across_cards([]))


def test_the_report_names_the_light_parts_that_moved_with_the_launch_state():
    from bench import report_trust

    def rec(task, pid, parts, latency):  # parts: {name: (J, GPU s)}
        groups = [{"name": n, "energy_per_call_j": e, "ci95_rel": 0.002, "gpu_time_per_call_s": t, "occurrences": 1}
                  for n, (e, t) in parts.items() if n != "whole"]
        e, t = parts["whole"]
        return {"task": {"id": task}, "pid": pid, "identity": {"gpu": {"uuid": "GPU-a"}}, "status": "ok",
                "report": {"groups": groups, "whole": {"energy_per_call_j": e, "energy_per_call_ci95_j": 0.002 * e,
                                                       "gpu_time_per_call_s": t},
                           "run": {"launch_state": [{"latency_s": x} for x in latency]}}}

    light = "gpt2/decode/b1kv512/bf16"
    heavy = "t5-small/prefill/b8s128/bf16"
    ok = {light: rec(light, 1, {"mlp": (4.0e-3, 19.0e-6), "whole": (0.124, 692e-6)}, [0.96e-6, 0.96e-6]),
          heavy: rec(heavy, 2, {"attn": (50e-3, 156e-6), "whole": (0.70, 2344e-6)}, [1.21e-6, 1.21e-6])}
    repeats = [rec(light + "/repeat1", 3, {"mlp": (4.6e-3, 23.1e-6), "whole": (0.140, 809e-6)}, [1.21e-6, 1.20e-6]),
               rec(heavy + "/repeat1", 4, {"attn": (50.2e-3, 156.1e-6), "whole": (0.705, 2344.5e-6)}, [1.2e-6, 1.2e-6])]
    text = "\n".join(report_trust.uncertainty(ok, repeats, []))
    assert "at most 15.00 %" in text  # the light MLP: 4.6 / 4.0 - 1
    assert "held (within 2 %; 2 pairs) the energy moved at most 0.71 %" in text  # t5's whole: 0.705 / 0.70 - 1
    assert f"the light parts of {light})" in text and heavy not in text.split("where it moved")[1].split(")")[0]
    assert f"{light}: 0.96/0.96 then 1.21/1.20" in text
    # No awake-idle power in these records: no corrected line (it would be NaN), rather than a wrong one.
    assert "faster reading's GPU time" not in text
    for r in [ok[light], ok[heavy]] + repeats:
        r["report"]["run"]["awake_idle_power_w"] = 125.0
    text = "\n".join(report_trust.uncertainty(ok, repeats, []))
    # The light MLP at the fast repeat's time: 4.6 mJ - 125 W x 4.1 µs = 4.0875 mJ against 4.0 mJ: +2.19 %.
    assert "faster reading's GPU time (the slow launch state's extra time at awake-idle power): at most 2.19 %" in text
    # sigma_p from the two repeats whose GPU time held (t5's attn +0.4 % with CIs of 0.2 %, whole +0.714 % whose
    # records carry no CI: all of it process spread), the smallest whose interval holds both: the whole's, 0.714 % =
    # 1.96 sqrt(2) sigma_p; the light MLP's 15 % is left out.
    sigma = (0.705 / 0.70 - 1) / (1.96 * math.sqrt(2))
    assert f"sigma_p = {sigma * 100:.2f} %, from the 2 repeats whose GPU time held" in text


def test_launch_state_readings_are_grouped_by_what_nvml_reported(capsys):
    from bench import launch_state

    slow = dict(pcie_generation=1, pcie_width=16, sm_clock_mhz=1980, memory_clock_mhz=3201)
    fast = dict(slow, pcie_generation=5)
    rows = [{"t_s": t, "step_s": 814e-6 + d, "latency_s": 1.21e-6 + d / 100, **slow}
            for t, d in ((0.25, 0.0), (0.5, 2e-6), (0.75, -1e-6))]
    rows += [{"t_s": t, "step_s": 692e-6, "latency_s": 0.96e-6, **fast} for t in (25.0, 25.25)]
    s = launch_state.summarise({"GPU-a": rows})["GPU-a"]
    assert [(g["pcie_generation"], g["readings"]) for g in s] == [(1, 3), (5, 2)]
    assert s[0]["step_us"] == pytest.approx(814.0) and s[0]["latency_us"] == pytest.approx(1.21)
    assert s[1]["step_us"] == pytest.approx(692.0) and (s[1]["first_s"], s[1]["last_s"]) == (25.0, 25.25)
    md = launch_state.markdown({"identity": {"gpu": {"name": "H200"}}, "seconds": 30, "every_s": 0.25,
                                "stagger_s": 20, "summary": {"GPU-a": s}})
    assert "| GPU-a | 5 | 16 | 1980 | 3201 | no | 2 | 0.960 | 692.0 | 25.0-25.2 |" in md
    # Bad arguments are refused before any GPU work.
    assert launch_state.main(["--seconds", "0"]) == 2
    assert "--seconds > 0" in capsys.readouterr().err
    assert launch_state.main(["--trace-every", "-1"]) == 2
    assert "--trace-every >= 0" in capsys.readouterr().err


def test_launch_state_readings_are_grouped_by_whether_the_host_was_busy():
    # --host-load-after: readings before and after the host's CPUs were made busy land in two rows, each with
    # its own median tiny-kernel time (the host guess of Note [Launch-latency state]).
    import os

    from bench import launch_state

    link = dict(pcie_generation=5, pcie_width=16, sm_clock_mhz=1980, memory_clock_mhz=3201)
    rows = [link | {"t_s": t, "step_s": 810e-6, "latency_s": lat * 1e-6, "host_load": False}
            for t, lat in [(0.1, 1.21), (0.4, 1.22), (0.7, 1.23)]]
    rows += [link | {"t_s": t, "step_s": 690e-6, "latency_s": 1.04e-6, "host_load": True} for t in (30.1, 30.4)]
    idle, busy = launch_state.summarise({"GPU-x": rows})["GPU-x"]
    assert (idle["host_load"], idle["readings"], busy["host_load"], busy["readings"]) == (False, 3, True, 2)
    assert idle["latency_us"] == pytest.approx(1.22) and busy["latency_us"] == pytest.approx(1.04)
    assert (busy["first_s"], busy["last_s"]) == (30.1, 30.4)
    md = launch_state.markdown({"identity": {"gpu": {"name": "H200"}}, "seconds": 60, "every_s": 0.3,
                                "stagger_s": 0, "summary": {"GPU-x": [idle, busy]}})
    assert "| yes | 2 | 1.040 | 690.0 | 30.1-30.4 |" in md and "| no | 3 | 1.220 | 810.0 |" in md
    from clear_native.launch_state import host_cpu

    here = host_cpu()  # the CPU each reading names (GpuBackend.launch_state) is one this process may run on
    assert here["cpu"] in os.sched_getaffinity(0) and here["cpu_mhz"] >= 0


def test_a_runs_launch_state_is_read_where_its_kept_trials_began_and_ended():
    # Protocol 4 reads the state after every round; a restart marks where the kept trials began (Note [One state
    # per run]). The report names that reading and the last, not every reading.
    from bench.report_trust import _kept_state

    readings = [{"latency_s": 1.21e-6}, {"latency_s": 0.96e-6, "restart": True}, {"latency_s": 0.96e-6},
                {"latency_s": 0.97e-6}]
    assert _kept_state(readings) == "0.96/0.97"
    assert _kept_state(readings[:1] + [{"latency_s": 1.2e-6}] * 5) == "1.21/1.20" and _kept_state([]) == ""


def test_a_soak_with_the_gemm_heats_the_card_to_the_gemms_temperature_and_idling_cools_it(monkeypatch):
    # Note [Steady temperature]: on two H200s the old soak (the calibration kernel) ran the card at 45-51 °C
    # where the GEMM ran at 58-68 °C. The soak now replays the GEMM itself until the temperature is steady: the
    # simulated card's die then sits where its model puts it for the GEMM's power; idling brings it back.
    from bench import cardref

    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "SIM-GPU-0")
    lab = tasks.Lab(simulate=True)
    try:
        backend = lab.heating_backend()
        gemm = cardref.captures(lab, backend)[0]
        params = backend.source.params
        soaked = cardref.soak(backend, lambda s: cardref.replay_for(backend, gemm, s))
        # Steady: T - idle = c (P + leak (T - idle) - idle power), P the GEMM's power when cool.
        c, leak = params.thermal_c_per_w, backend.leak_w_per_c
        steady_c = params.temperature_c + c * (gemm.power_w - params.idle_w) / (1 - c * leak)
        assert soaked["steady"] and soaked["temperatures_c"][-1] == pytest.approx(steady_c, abs=1.5)
        assert soaked["temperatures_c"][-1] > soaked["temperatures_c"][0] + 10
        cooled = cardref.cool_down(backend)
        assert cooled["steady"] and cooled["temperatures_c"][-1] <= params.temperature_c + 1.5
    finally:
        lab.close()


def test_the_limiters_step_response_is_read_from_the_samples():
    # bench/limit_step.py (issue 14, item 4): a load that overshoots for 80 ms, then decays to the limit with a
    # 0.5 s time constant (700 + 50 exp(-t / 0.5) W), sampled every 20 ms for 6 s.
    from bench.limit_step import main, step_profile

    t = [0.01 + 0.02 * k for k in range(300)]
    p = [950.0 if x < 0.08 else 700 + 50 * math.exp(-x / 0.5) for x in t]
    s = step_profile(t, p, 6.0)
    assert s["first_w"] == pytest.approx((4 * 950 + 700 + 50 * math.exp(-0.09 / 0.5)) / 5)
    window = [700 + 50 * math.exp(-x / 0.5) for x in t if 0.4 <= x < 0.6]
    assert s["window_w"] == pytest.approx(statistics.fmean(window)) and s["window_w"] > 712
    assert s["last_second_w"] == pytest.approx(700, abs=0.1) and s["window_over_last"] > 0.015
    # within 1 % of 700 W from 50 exp(-t / 0.5) < 7 W, t > 0.98 s: the bin from 1.0 s on (0.9-1.0 s is 1.1 % up)
    assert s["settle_s"] == pytest.approx(1.0)
    falling = [800 - 100 * x / 6 for x in t]  # still falling at the end: its last bin is 1.1 % under the last second
    assert math.isnan(step_profile(t, falling, 6.0)["settle_s"])
    first_bin = statistics.fmean(700 + 50 * math.exp(-x / 0.5) for x in t if 1.0 <= x < 1.1)  # the highest from 1 s
    assert s["cycle_w"] == [pytest.approx(700, abs=0.1), pytest.approx(first_bin)]
    # A limiter cycling 0.5 s high (728 W), 0.5 s low (660 W) after 1 s: the range of its 0.1 s bins.
    cycling = [740.0 if x < 1 else (728.0 if int(x / 0.5) % 2 == 0 else 660.0) for x in t]
    assert step_profile(t, cycling, 6.0)["cycle_w"] == [660.0, 728.0]
    assert main(["--load-s", "1"]) == 2  # refused before any GPU work
    from bench.limit_step import markdown

    card = s | {"uuid": "GPU-x", "power_limit_w": 700.0, "sm_clock_mhz": {"first": 1800.0, "last_second": 1500.0},
                "reasons": ["sw_power_cap"]}
    md = markdown({"identity": {"gpu": {"name": "H200"}}, "rest_s": 3, "load_s": 6, "cards": [card]})
    assert f"| GPU-x | 700 | {s['first_w']:.0f} | {s['window_w']:.0f} | 700 | +" in md and "| 1.0 s | 700-706 | 1800 / 1500 |" in md


def test_each_card_gets_a_process_that_sees_only_it():
    # bench/cards.on_each (launch_state, limit_step): one process per card at once, CUDA device 0 its card.
    from bench.cards import host_cards, on_each

    cards = host_cards("0,2", simulate=True)
    code = "import json, os, sys; print('noise'); print(json.dumps({'seen': os.environ['CUDA_VISIBLE_DEVICES']}))"
    runs = on_each(cards, lambda k, c: [sys.executable, "-c", code + f"; sys.exit({k})"])
    assert runs == {"SIM-GPU-0": (0, [{"seen": "SIM-GPU-0"}]), "SIM-GPU-2": (1, [{"seen": "SIM-GPU-2"}])}


def test_a_card_process_that_prints_much_does_not_stop_the_others(tmp_path):
    # The first card's process ends only once the second's has printed more than a pipe holds (64 KiB) and said
    # so in a file: a parent reading one process's pipe at a time would stall the second, and the first would
    # give up (exit 3). Seen on an H200 pair with launch_state's readings.
    from bench.cards import host_cards, on_each

    done = tmp_path / "done"
    first = (f"import os, sys, time; t = time.monotonic()\nwhile not os.path.exists({str(done)!r}):\n"
             "    time.sleep(0.01)\n    if time.monotonic() - t > 30: sys.exit(3)")
    second = ("import json\nfor i in range(20000): print(json.dumps({'n': i}))\n"
              f"open({str(done)!r}, 'w').close()")
    runs = on_each(host_cards("0,1", simulate=True), lambda k, c: [sys.executable, "-c", (first, second)[k]])
    assert runs["SIM-GPU-0"] == (0, [])
    assert runs["SIM-GPU-1"] == (0, [{"n": i} for i in range(20_000)])


def test_thermal_records_from_before_the_transients_are_still_read():
    # --report on a run whose thermal job made two protocol readings (cool, hot): each trial is a point.
    from bench.reproducibility import _thermal

    def reading(temps):
        return {"trial_temperature_c": temps, "trial_energy_per_call_j": [1.0 + 0.002 * (t - 40) for t in temps],
                "clock_event_reasons": ["sw_power_cap"]}

    rec = {"identity": {"gpu": {"uuid": "GPU-old"}},
           "thermal": {"cold": {"workloads": {"gemm": reading([40.0, 41.0, 42.0])}},
                       "hot": {"workloads": {"gemm": reading([50.0, 51.0, 52.0])}}}}
    v = _thermal([rec])["per_card"]["GPU-old"]["gemm"]
    mean_e = statistics.fmean(1.0 + 0.002 * (t - 40) for t in (40, 41, 42, 50, 51, 52))
    assert (v["cold_c"], v["hot_c"], v["bins"]) == (40.0, 52.0, 6) and v["clock_event_reasons"] == ["sw_power_cap"]
    assert v["pct_per_10c"] == pytest.approx(100 * 0.002 * 10 / mean_e)


def test_a_run_stopped_by_sigterm_keeps_its_records_and_says_how_to_measure_the_rest(tmp_path):
    # `timeout` and batch schedulers send SIGTERM: the run stops as on Ctrl-C (exit 130), keeps every record that
    # came back, stops the job in flight, reports what it has, and prints the command that measures the rest; that
    # command, run, completes the run with each job measured once.
    import os
    import signal

    from bench import store

    args = ["--simulate", "--gpus", "0", "--tasks", "bert-base/prefill/b1s8/bf16", "--window-s", "0.1",
            "--target-ci", "0.005", "--target-cv", "0.01", "--max-trials", "12", "--lead-in"]
    p = subprocess.Popen([sys.executable, str(ROOT / "bench" / "reproducibility.py"), *args, "--out", str(tmp_path)],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT)
    lines = []
    for line in p.stdout:  # each job takes seconds of simulated trials: the signal lands while the second runs
        lines.append(line)
        if line.lstrip().startswith("[1/6] "):
            p.send_signal(signal.SIGTERM)
            break
    out, err = p.communicate(timeout=120)
    lines += out.splitlines(keepends=True)
    assert p.returncode == 130, "".join(lines)[-2000:] + err[-2000:]
    folder = Path(lines[0].rsplit("records in ", 1)[1].strip())
    assert any(x.lstrip().startswith("[1/6] thermal/") and "elapsed" in x and "ETA" in x for x in lines)
    pids = [int(x.split("(pid ")[1].split(",")[0]) for x in lines if "started " in x]
    for pid in pids:  # the job in flight was stopped with the run (no worker left behind)
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
    kept = [r["job_id"] for r in store.load(folder, "records.jsonl")]
    assert kept and len(kept) < 6 and kept[0].startswith("thermal/")
    resume = err.split("measure the rest with: ")[1].strip().split()
    assert resume[:4] == ["python", "bench/reproducibility.py", "--resume", str(folder)]
    for flag, value in zip(args[1:-1:2], args[2::2]):  # the same plan and settings (their values as given)
        assert resume[resume.index(flag) + 1] == value
    assert {"--simulate", "--lead-in"} <= set(resume)
    again = subprocess.run([sys.executable, *resume[1:], "--out", str(tmp_path)], capture_output=True, text=True,
                           timeout=300, cwd=ROOT)
    assert again.returncode == 0, again.stdout[-2000:] + again.stderr[-2000:]
    ids = [r["job_id"] for r in store.load(folder, "records.jsonl") if r["status"] == "ok"]
    assert len(ids) == len(set(ids)) == 6 and set(kept) <= set(ids)
    assert json.loads((tmp_path / "reproducibility.json").read_text())["task_runs_repeated"] == [1, 1]


def test_a_time_limit_starts_no_job_that_could_run_past_it_and_leaves_the_rest_for_resume(tmp_path):
    # Note [A time limit]: jobs start in order while each can end by the limit by its bound; the first that
    # cannot holds back every later one on its card, and the run ends once the jobs running have.
    from bench import reproducibility as R, workers

    cards = workers.host_cards("0", simulate=True)
    settings = dict(window_s=0.1, min_trials=3, max_trials=12, target_ci=0.005, target_cv=0.01, task_budget_s=130.0,
                    l2="cold", reference_calls=0, reference_trials=0, verbose=False, instances=1)
    jobs = R.plan(cards, 2, settings, simulate=True, task_ids=["bert-base/prefill/b1s8/bf16"])
    planned = [j["id"] for j in jobs.left()]
    assert [j.split("/")[0] for j in planned[:3]] == ["thermal", "card_check", "card_check"]
    # A deadline of 250 s: the thermal job's bound (200 s) fits at its start; once it has run (here a virtual clock
    # that each reading moves on by 1000 s), the card check's (150 s) no longer does.
    clock = iter(range(0, 10**9, 1000))
    jobs.limit(250.0, clock=lambda: float(next(clock)))
    ex = workers.HostProcesses(cards, tmp_path, simulate=True)
    ran = [(job["id"], rec["status"]) for job, rec in ex.run(jobs)]
    assert ran == [(planned[0], "ok")] and jobs.held_back
    assert [j["id"] for j in jobs.left()] == planned[1:]
    assert workers.held_back(jobs, 250.0).startswith(f"time limit: {len(planned) - 1} job(s) not started")
    # A task's bound is its budget (side by side: its rounds' together) and its setup; the others' as measured.
    task = next(j for j in R.plan(cards, 2, settings | {"task_budget_s": 100.0}, simulate=True, thermal=False,
                                  task_ids=["bert-base/prefill/b1s8/bf16"], side_by_side=True).left()
                if j["job"] == "task")
    assert workers.bound(task) == 2 * 100.0 + R.SIDE_BY_SIDE_SETUP_S + workers.TASK_SETUP_S
    assert workers.bound(jobs.left()[0]) == workers.CHECK_BOUND_S


def test_a_time_limit_too_short_for_any_job_measures_nothing_and_says_how_to_go_on(tmp_path):
    args = ["--simulate", "--gpus", "0", "--tasks", "bert-base/prefill/b1s8/bf16", "--no-thermal"]
    p = subprocess.run([sys.executable, str(ROOT / "bench" / "reproducibility.py"), *args, "--time-limit", "60",
                        "--out", str(tmp_path)], capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert p.returncode == 3, p.stdout[-2000:] + p.stderr[-2000:]
    assert "time limit: 4 job(s) not started" in p.stderr and "started " not in p.stdout  # the card check: 150 s
    resume = p.stderr.split("measure the rest with: ")[1].split()
    assert resume[2] == "--resume" and "--simulate" in resume and "--no-thermal" in resume
    bad = subprocess.run([sys.executable, str(ROOT / "bench" / "reproducibility.py"), *args, "--time-limit", "0",
                          "--out", str(tmp_path)], capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert bad.returncode == 2 and "--time-limit must be > 0" in bad.stderr


def test_an_interrupted_run_is_resumed_where_it_stopped(result, tmp_path):
    # --resume RUN measures exactly the jobs RUN has no ok record of (here: the last two, as if the driver had
    # been killed while they ran) and analyses every record, so a run cut by a time limit loses nothing.
    import shutil

    from bench import store

    res, _ = result
    run = tmp_path / "run"
    shutil.copytree(res["run"], run)
    recs = store.load(run, "records.jsonl")
    lost = [r["job_id"] for r in recs[-2:]]
    (run / "records.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs[:-2]))
    from bench import reproducibility as R

    cut = R.analyse(recs[:-2])  # the run as it was cut: its report says so, and how much it lacks
    tasks_lost = sum(1 for r in recs[-2:] if r["job"] == "task")
    assert cut["task_runs_repeated"] == [3 - tasks_lost, 3] and res["task_runs_repeated"] == [3, 3]
    assert ("**Incomplete**: " in R.markdown(cut, recs[0]["identity"] | {"date": "now"})) == (tasks_lost > 0)
    args = [sys.executable, str(ROOT / "bench" / "reproducibility.py"), "--simulate", "--gpus", "0,1,2",
            "--tasks", "bert-base/prefill/b1s8/bf16", "--window-s", "0.1", "--out", str(tmp_path)]
    p = subprocess.run(args + ["--resume", str(run)], capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    assert "2 jobs on" in p.stdout and f"({len(recs) - 2} measured before)" in p.stdout
    after = [r["job_id"] for r in store.load(run, "records.jsonl")]
    assert sorted(after) == sorted(r["job_id"] for r in recs) and after[-2:] != [] and set(after[-2:]) == set(lost)
    again = json.loads((tmp_path / "reproducibility.json").read_text())
    assert again["rounds"] == 2 and again["interval_pairs"] == res["interval_pairs"]
    # A run another code version measured is not resumed unless told to.
    first = json.loads((run / "records.jsonl").read_text().splitlines()[0])
    first["identity"]["code_version"] = "0000000other"
    lines = (run / "records.jsonl").read_text().splitlines()
    (run / "records.jsonl").write_text("\n".join([json.dumps(first)] + lines[1:]) + "\n")
    p = subprocess.run(args + ["--resume", str(run)], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert p.returncode == 2 and "--allow-mixed" in p.stderr
    # Nor one measured on another kind of card (an H100 run resumed on a host of H200s, say).
    other_kind = [json.loads(x) for x in lines]
    for r in other_kind:
        r.get("identity", {}).get("gpu", {})["name"] = "NVIDIA H100 80GB HBM3"
    (run / "records.jsonl").write_text("".join(json.dumps(r) + "\n" for r in other_kind))
    p = subprocess.run(args + ["--resume", str(run)], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert p.returncode == 2 and "NVIDIA H100 80GB HBM3" in p.stderr and "Simulated GPU" in p.stderr
    # Nor one whose parts were measured over other graph instances (a setting that moves the numbers).
    (run / "records.jsonl").write_text("".join(line + "\n" for line in lines))
    p = subprocess.run(args + ["--resume", str(run), "--allow-mixed", "--instances", "8"], capture_output=True,
                       text=True, timeout=120, cwd=ROOT)
    assert p.returncode == 0 and "0 jobs on" in p.stdout, p.stderr[-2000:]  # told to: nothing left to measure
    p = subprocess.run(args + ["--resume", str(run), "--instances", "8"], capture_output=True, text=True,
                       timeout=120, cwd=ROOT)
    assert p.returncode == 2 and "[1] graph instances" in p.stderr and "--instances 8" in p.stderr, p.stderr
    # An empty --resume (a script's unset variable) is refused, not taken for a new run.
    p = subprocess.run(args + ["--resume", ""], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert p.returncode == 2 and "no records.jsonl there" in p.stderr
    assert not (tmp_path / "reproducibility").exists()


def test_runs_on_other_cards_are_reported_as_one(result, tmp_path):
    # Note [Runs of several hosts]: a host lent one card at a time; the run of three simulated cards split into a
    # run of two and a run of one (as two leases would give) reports the spread the cards' gains set, and the same
    # repeats, as the one run did.
    from bench import store

    res, _ = result
    recs = store.load(res["run"], "records.jsonl")
    card = lambda r: r["identity"]["gpu"]["uuid"]  # noqa: E731
    runs = {"a": [r for r in recs if card(r) != CARDS[2]], "b": [r for r in recs if card(r) == CARDS[2]]}
    for name, rs in runs.items():
        (tmp_path / name).mkdir()
        (tmp_path / name / "records.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rs))
    both = f"{tmp_path / 'a'},{tmp_path / 'b'}"
    report = [sys.executable, str(ROOT / "bench" / "reproducibility.py"), "--out", str(tmp_path / "out"), "--report"]
    p = subprocess.run(report + [both], capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    joined = json.loads((tmp_path / "out" / "reproducibility.json").read_text())
    gains = [tasks.sim_card_gain(c) for c in CARDS]
    assert sorted(joined["cards"]) == sorted(CARDS) and joined["runs"] == [str(tmp_path / "a"), str(tmp_path / "b")]
    assert joined["card_spread_raw_rel"] == pytest.approx((max(gains) - min(gains)) / statistics.fmean(gains),
                                                          abs=0.003)
    assert joined["card_spread_normalized_rel"] < 0.005
    assert joined["interval_pairs"] == res["interval_pairs"]
    assert sorted(x["rel_diff"] for x in joined["repeat"]) == sorted(x["rel_diff"] for x in res["repeat"])
    assert "Joined from 2 runs" in (tmp_path / "out" / "reproducibility.md").read_text()
    # One card in two runs: its rounds would overwrite each other, so the runs are refused, and nothing is written.
    (tmp_path / "out" / "reproducibility.json").unlink()
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "records.jsonl").write_text("".join(json.dumps(r) + "\n" for r in runs["b"]))
    p = subprocess.run(report + [f"{both},{tmp_path / 'c'}"], capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert p.returncode == 2 and CARDS[2] in p.stderr and "report those runs apart" in p.stderr, p.stderr
    assert not (tmp_path / "out" / "reproducibility.json").exists()
    # Runs of other code versions are joined only when told to, and the report then names both versions.
    other = [r | {"identity": r["identity"] | {"code_version": "0000000other"}} for r in runs["b"]]
    (tmp_path / "b" / "records.jsonl").write_text("".join(json.dumps(r) + "\n" for r in other))
    p = subprocess.run(report + [both], capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert p.returncode == 2 and "--allow-mixed" in p.stderr and "0000000other" in p.stderr, p.stderr
    p = subprocess.run(report + [both, "--allow-mixed"], capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert p.returncode == 0, p.stderr[-3000:]
    mixed_md = (tmp_path / "out" / "reproducibility.md").read_text()
    assert "0000000other" in mixed_md
    # ... and its heading names no one version as the run's: the first run's alone would read as all of them.
    assert "2 code/protocol versions (below)" in mixed_md.splitlines()[2]
    # So are runs that measured their parts over other numbers of graph instances (Note [Graph instances]), and
    # the report then says so where a single run's says how many it used.
    assert "Each part over one graph of it (`--instances 1`)." in mixed_md.splitlines()[2]  # 1 in both runs
    eight = [r | {"settings": r["settings"] | {"instances": 8}} for r in runs["b"]]
    (tmp_path / "b" / "records.jsonl").write_text("".join(json.dumps(r) + "\n" for r in eight))
    p = subprocess.run(report + [both], capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert p.returncode == 2 and "[1, 8] graph instances" in p.stderr, p.stderr
    p = subprocess.run(report + [both, "--allow-mixed"], capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert p.returncode == 0, p.stderr[-3000:]
    heading = (tmp_path / "out" / "reproducibility.md").read_text().splitlines()[2]
    assert "Graph instances per part mixed: 1, 8" in heading and "one graph of it" not in heading
    assert json.loads((tmp_path / "out" / "reproducibility.json").read_text())["instances"] == [1, 8]
    p = subprocess.run(report + [str(tmp_path / "b")], capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert p.returncode == 0, p.stderr[-3000:]
    assert "up to 8 graph instances, measured in blocks (`--instances 8`" in (
        tmp_path / "out" / "reproducibility.md").read_text().splitlines()[2]
    # A folder with no records is named in the error.
    p = subprocess.run(report + [f"{tmp_path / 'a'},{tmp_path / 'nowhere'}"], capture_output=True, text=True,
                       timeout=120, cwd=ROOT)
    assert p.returncode == 2 and "nowhere" in p.stderr and "no records.jsonl" in p.stderr


def _card_check(uuid, gemm_j, copy_j, fp32_j, awake_w):
    """A card-check record of the three reference workloads: the bf16 GEMM at the 700 W limit (sw_power_cap, its
    clocks held below the check's top), the copy and the fp32 GEMM below it."""
    def w(e, t, power, reasons, clk):
        return {"energy_per_call_j": e, "dynamic_energy_per_call_j": e - awake_w * t, "gpu_time_per_call_s": t,
                "ci95_rel": 0.002, "mean_power_w": power, "clock_event_reasons": reasons, "sm_clock_mhz": clk}
    return {"status": "ok", "identity": {"gpu": {"uuid": uuid, "power_limit_w": 700.0}},
            "card_check": {"awake_idle_power_w": awake_w, "workloads": {
                "gemm": w(gemm_j, gemm_j / 690, 690.0, ["sw_power_cap"], [1400.0, 1600.0]),
                "copy": w(copy_j, 127e-6, copy_j / 127e-6, ["sw_power_cap"], [1965.0, 1980.0]),
                "gemm_fp32": w(fp32_j, 2e-3, fp32_j / 2e-3, [], [1980.0, 1980.0])}}}


def test_the_dynamic_factor_below_the_limit_leaves_out_workloads_the_limiter_held():
    # Three cards; the bf16 GEMM runs at the limit (sw_power_cap, 690 W of 700, clocks below the check's top), so
    # its energy says how far the limiter let the clocks go, not what the card draws: card B's silicon draws 4 %
    # more dynamic power (copy and fp32 GEMM read +4 %) but its GEMM reads +0.5 %. "two_below_limit" takes B's
    # dynamic factor from the copy and the fp32 GEMM alone.
    def parts(scale):  # (static at 120 W for t, dynamic): the energy a card reads
        return lambda dyn_j, t, awake: awake * t + dyn_j * scale

    check = _card_check
    a = check("GPU-a", 0.1440, 120 * 127e-6 + 0.0620, 120 * 2e-3 + 0.8, 120.0)
    b = check("GPU-b", 0.1447, 120 * 127e-6 + 0.0620 * 1.04, 120 * 2e-3 + 0.8 * 1.04, 120.0)
    ref = U.card_reference([a, b])
    assert U.workloads_of(ref) == (("copy", "gemm", "gemm_fp32"), ("copy", "gemm_fp32"))
    assert ref["GPU-a"]["gemm"]["at_limit"] and not ref["GPU-a"]["copy"]["at_limit"]
    f = U.card_factors(ref, "GPU-a")
    assert f["GPU-b"]["dynamic_below_limit"] == pytest.approx(1.04)
    assert U.models_of(f) == ["one", "two", "two_below_limit", "two_median"]
    # A part that draws 10 mJ dynamic in 20 µs reads 120 W x 20 µs + 10.4 mJ on B; normalised back: 12.4 mJ.
    e_b = parts(1.04)(10e-3, 20e-6, 120.0)
    assert U.normalise(e_b, 20e-6, 120.0, f["GPU-b"], "two_below_limit") == pytest.approx(120 * 20e-6 + 10e-3)
    assert abs(U.normalise(e_b, 20e-6, 120.0, f["GPU-b"], "two") / (120 * 20e-6 + 10e-3) - 1) > 0.005


def test_the_median_dynamic_factor_leaves_out_one_workload_that_departs_on_one_card():
    # As GPU-3a6067ee (results/reproducibility/2026-11-29_084238): its copy read 14 % less dynamic energy than the
    # reference card's while both GEMMs read 2.4 % less, and BERT-base's parts (a memory-bound gather among them)
    # read 0.6-2.4 % less. The geometric mean of the three ratios (0.93) over-corrects every part; their median
    # (0.976) is the GEMMs'.
    check = _card_check
    a = check("GPU-a", 0.1440, 120 * 127e-6 + 0.0620, 120 * 2e-3 + 0.8, 120.0)
    c = check("GPU-c", 0.1440 * 0.976, 120 * 127e-6 + 0.0620 * 0.86,  # at the limit: dynamic energy as its time
              120 * 2e-3 + 0.8 * 0.976, 120.0)
    f = U.card_factors(U.card_reference([a, c]), "GPU-a")["GPU-c"]
    assert f["dynamic_median"] == pytest.approx(0.976)
    assert f["dynamic"] == pytest.approx((0.976 * 0.976 * 0.86) ** (1 / 3))
    assert f["dynamic_median_u_rel"] == pytest.approx(1 - 0.86 / 0.976)  # the copy, as far as it departs
    e_c = 120 * 20e-6 + 10e-3 * 0.976  # a part drawing 10 mJ dynamic on A, 2.4 % less on C
    assert U.normalise(e_c, 20e-6, 120.0, f, "two_median") == pytest.approx(120 * 20e-6 + 10e-3)
    assert U.normalise(e_c, 20e-6, 120.0, f, "two") > 1.03 * (120 * 20e-6 + 10e-3)  # 4.3 % of its dynamic part
    # Two workloads have no median apart from their mean: no such model then.
    two = U.card_factors(U.card_reference([{**a, "card_check": {**a["card_check"], "workloads": {
        k: v for k, v in a["card_check"]["workloads"].items() if k != "gemm"}}}, c]), "GPU-a")
    assert "dynamic_median" not in two["GPU-a"] and "two_median" not in U.models_of(two)


def test_each_tasks_card_spread_is_read_with_the_model_the_other_tasks_chose():
    # As the seven-card join of 2026-11-29: BERT-base on cards where the copy departed, best read with the median
    # model; the decode tasks on cards where it did not, best read with the below-the-limit one. Chosen on all the
    # parts together, one model reads every part; held out, each task is read with the model the others chose, and
    # its spread is what that model leaves of it.
    spreads = {"bert": {"two_below_limit": [0.030, 0.050, 0.055], "two_median": [0.006, 0.016, 0.012]},
               "gpt2": {"two_below_limit": [0.002, 0.004], "two_median": [0.010, 0.012]},
               "llama": {"two_below_limit": [0.003, 0.005], "two_median": [0.009, 0.010]}}
    median, largest, chosen = U.held_out_model(spreads)
    # bert's model from gpt2 + llama (below the limit: median 0.35 % against 1.0 %); gpt2's from bert + llama
    # (the median model: 1.0 % against 3.0 %); llama's from bert + gpt2 (1.2 % against 3.0 %).
    assert chosen == {"bert": "two_below_limit", "gpt2": "two_median", "llama": "two_median"}
    kept = [0.030, 0.050, 0.055, 0.010, 0.012, 0.009, 0.010]
    assert median == pytest.approx(statistics.median(kept)) and largest == pytest.approx(0.055)
    # One task (or tasks of which only one was measured on several cards): none to choose by.
    assert all(math.isnan(x) for x in U.held_out_model({"bert": spreads["bert"]})[:2])
    assert U.held_out_model({"bert": spreads["bert"], "gpt2": {"two_median": []}})[2] == {}


def test_the_launch_streams_probe_summarises_each_condition_over_fresh_processes(capsys):
    # bench/launch_streams.py: per condition, every process's first and last tiny-kernel time, over all cards; a
    # process that failed is counted, not averaged in.
    from bench import launch_streams as LS

    slow, fast = list(LS.CONDITIONS)[4], list(LS.CONDITIONS)[6]

    def proc(cond, first, last, code=0):
        return {"condition": cond, "repeat": 0, "exit": code, "error": "",
                "readings": [{"t_s": 0.0, "latency_s": first * 1e-6}, {"t_s": 4.0, "latency_s": last * 1e-6}]}

    s = LS.summarise({"GPU-a": [proc(slow, 1.21, 1.20), proc(fast, 0.95, 0.96)],
                      "GPU-b": [proc(slow, 1.13, 0.95), proc(slow, 1.23, 1.22), proc(fast, 1.0, 1.0, code=1)]})
    assert s[slow]["processes"] == 3 and s[slow]["first_us"] == pytest.approx([1.13, 1.21, 1.23])
    assert s[slow]["median_first_us"] == pytest.approx(1.21) and s[slow]["median_last_us"] == pytest.approx(1.20)
    assert s[fast]["processes"] == 1 and s[fast]["failed"] == 1 and s[fast]["median_first_us"] == pytest.approx(0.95)
    assert math.isnan(s[list(LS.CONDITIONS)[0]]["median_first_us"])
    md = LS.markdown({"identity": {"gpu": {"name": "H200"}}, "cards": ["GPU-a", "GPU-b"], "repeats": 2,
                      "seconds": 4.0, "readings": 2, "summary": s})
    assert f"| {slow} | 3 | 1.210 | 1.130-1.230 | 1.200 | 0.950-1.220 | 0 |" in md
    assert f"| {list(LS.CONDITIONS)[0]} |" not in md  # no process ran it (--only): no row of NaNs
    assert LS.main(["--only", "no such history"]) == 2 and "names no condition" in capsys.readouterr().err
    # Every step a history names is one a child can take (a stream's eager adds or a STEPS entry): a misspelt step
    # would fail only on a GPU, one process at a time.
    assert all(LS.known_step(w) for h, _ in LS.CONDITIONS.values() for w in h)
    assert not any(LS.known_step(w) for w in ("graphs:", "graphs:4:allocate", "side:x", "capture()x", "defualt"))
    assert LS.main(["--readings", "0"]) == 2 and "--readings >= 1" in capsys.readouterr().err
    # Without a GPU (this CPU test), one line that says so and exit code 2, before any child starts.
    with pytest.raises(SystemExit) as stop:
        LS.main(["--gpus", "0"])
    err = capsys.readouterr().err.strip()
    assert stop.value.code == 2 and err.startswith("bench/launch_streams.py: ") and len(err.splitlines()) == 1


def test_the_launch_streams_card_run_keeps_a_line_for_every_process_that_failed(capsys, monkeypatch):
    # Each condition's child is a fresh process; here (no GPU) every one fails at its first CUDA call, and the card's
    # run still says so, one line per condition, with the exit code and the error's end, for summarise() to count.
    from bench import launch_streams as LS

    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    assert LS.card_run(repeats=1, seconds=0.1, readings=1) == 0
    lines = [json.loads(x) for x in capsys.readouterr().out.splitlines() if x.startswith("{")]
    assert [x["condition"] for x in lines] == list(LS.CONDITIONS)
    assert all(x["exit"] != 0 and x["readings"] == [] and x["error"] for x in lines)
    # Every condition's history is made of eager adds on a named stream or of named steps, and replays on a stream
    # the child makes: a misspelt step would only fail on a GPU.
    for history, replay_on in LS.CONDITIONS.values():
        assert all(LS.known_step(h) for h in history) and replay_on in LS.EAGER_CALLS
    assert all(s["failed"] == 1 and s["processes"] == 0 for s in LS.summarise({"GPU-x": lines}).values())


def test_a_repeat_in_the_slow_launch_state_is_compared_at_the_faster_ones_gpu_time():
    # Note [Launch-latency state]: the slow state adds time at about awake-idle power. A part of 10 mJ in 20 µs
    # (fast), and in 24 µs (slow) at 125 W awake idle: 10 mJ + 125 W x 4 µs = 10.5 mJ, +5 % raw, 0 corrected.
    fast, slow = (10e-3, 20e-6, 125.0), (10e-3 + 125.0 * 4e-6, 24e-6, 125.0)
    assert U.rel_diff(fast[0], slow[0]) == pytest.approx(0.05)
    assert U.state_corrected_diff(fast, slow) == pytest.approx(0.0, abs=1e-12)
    assert U.state_corrected_diff(slow, fast) == pytest.approx(0.0, abs=1e-12)  # order does not matter
    # A change beyond the state survives: the slow repeat drew 1 % more on top.
    more = (slow[0] + 0.01 * 10e-3, 24e-6, 125.0)
    assert U.state_corrected_diff(fast, more) == pytest.approx(0.01)
    # Where the GPU time held, it is the raw change.
    assert U.state_corrected_diff((1.0, 5e-6, 120.0), (1.02, 5e-6, 130.0)) == pytest.approx(0.02)


def test_the_card_spread_compares_cards_of_one_kind(result):
    # A run resumed with --allow-mixed on another kind of card: the spread compares the most numerous kind only
    # (two cards of the three here), and the report says which cards it left out.
    from bench import reproducibility as R, store

    res, _ = result
    recs = store.load(res["run"], "records.jsonl")
    odd = res["cards"][2]
    mixed = json.loads(json.dumps(recs))
    for r in mixed:
        if r.get("identity", {}).get("gpu", {}).get("uuid") == odd:
            r["identity"]["gpu"]["name"] = "Other GPU"
    an = R.analyse(mixed)
    assert an["kinds"] == {"Simulated GPU": sorted(res["cards"][:2]), "Other GPU": [odd]}
    assert an["spread_kind"] == "Simulated GPU" and set(an["card_factors"]) == set(res["cards"][:2])
    assert all(set(p["energy_j"]) <= set(res["cards"][:2]) for p in an["parts"])
    rel = lambda a: [(x["card"], x["part"], x["rel_diff"]) for x in a["repeat"]]  # noqa: E731
    assert rel(an) == rel(R.analyse(recs))  # repeats are per card: every card keeps its own
    md = R.markdown(an, recs[0]["identity"] | {"date": "now"})
    assert "Cards of several kinds (Other GPU: 1; Simulated GPU: 2): the card spread compares the 2 Simulated GPU" in md


def test_a_run_without_the_thermal_job_says_so(result):
    from bench import reproducibility as R, store

    res, md = result
    assert "## Temperature" in md and "% per 10 °C" in md  # this run measured it
    recs = [r for r in store.load(res["run"], "records.jsonl") if r["job"] != "thermal"]
    md = R.markdown(R.analyse(recs), recs[0]["identity"] | {"date": "now"})
    assert "## Temperature\n\nNot measured in this run (`--no-thermal`" in md and "% per 10 °C |" not in md


def test_energy_per_call_per_degree_is_fitted_through_the_repeats_that_moved():
    # Repeats made on a card whose energy per call rises 0.3 % per °C: 1.003^dT exactly linear is not what a card
    # does, so the readings are (1 + 0.003 dT), with a +-0.05 % process scatter that cancels over the pairs.
    points = [(0.003 * dt + e, dt) for dt, e in ((-4.0, 0.0005), (-4.0, -0.0005), (2.5, 0.0005), (2.5, -0.0005))]
    assert U.temperature_coefficient(points) == pytest.approx(0.003)
    # No repeat moved MIN_SPAN_C: there is nothing to fit a slope on (a 0.1 % scatter over 0.5 °C would read 0.2 %
    # per °C).
    assert math.isnan(U.temperature_coefficient([(0.001, 0.5), (-0.0005, -0.3)]))
    assert math.isnan(U.temperature_coefficient([(0.01, math.nan)]))
    # A reading 4 °C cooler, scaled back to the first reading's temperature, reads what the first read.
    first, dt = 0.0125, -4.0
    second = first * (1 + 0.003 * dt)
    assert U.scaled_to_temperature(U.rel_diff(first, second), dt, 0.003) == pytest.approx(0.0, abs=1e-12)
    assert U.scaled_to_temperature(-0.012, dt, math.nan) == -0.012  # no coefficient: as it was


def _repeat(task, rel, dt, energy=0.01, time_rel=0.0):
    x = {"task": task, "part": "p", "card": "GPU-a", "rel_diff": rel, "temperature_diff_c": dt, "gpu_time_s": 1e-5,
         "time_rel_diff": time_rel}
    return x, ((energy, 0.0), (energy * (1 + rel), 0.0))


def test_each_tasks_repeats_are_scaled_by_a_coefficient_they_did_not_set():
    from bench import reproducibility as R

    # Task "hot" moved 4 °C and 1.6 % (0.4 % per °C); task "mild" moved 2 °C and 0.4 % (0.2 % per °C).
    reps = [_repeat("hot", 0.016, 4.0), _repeat("mild", 0.004, 2.0)]
    out = R._temperature_scaled([r[0] for r in reps], [r[1] for r in reps], 0.001, "Simulated GPU")
    used = out["temperature_coefficient_used"]
    assert used["hot"] == {"per_c": pytest.approx(0.002), "from": "the other tasks' repeats"}
    assert used["mild"]["per_c"] == pytest.approx(0.004)
    # hot scaled by mild's 0.2 %/°C keeps 1.016 / 1.008 - 1; mild scaled by hot's 0.4 %/°C goes 0.4 % under.
    assert out["repeatability_max_rel_temperature_scaled"] == pytest.approx(1.016 / 1.008 - 1)
    assert out["temperature_coefficient_per_c"] == pytest.approx((0.016 * 4 + 0.004 * 2) / (16 + 4))
    assert R._per_degree(out | {"repeat": [r[0] for r in reps]}) == [
        "", "From the tasks' repeats (2 of 2 moved 2.0-4.0 °C between their processes): "
            "energy per call +3.60 % per 10 °C of the die, parts and whole models together (a "
            "line through the origin; Note [Energy per call per °C], bench/uncertainty.py): what "
            "a hotter card costs a model's components (the thermal job's reference workloads, "
            "where measured, are held by the power limiter)."]
    # No repeat moved 2 °C: nothing is claimed.
    held = [_repeat("a", 0.001, 0.5), _repeat("b", -0.001, -1.0)]
    out = R._temperature_scaled([r[0] for r in held], [r[1] for r in held], 0.001, "x")
    assert R._per_degree(out | {"repeat": [r[0] for r in held]}) == []


def test_where_no_other_task_moved_the_kinds_earlier_coefficient_scales_the_repeats(monkeypatch):
    from bench import reproducibility as R

    # "hot" read 1.2 % less 4 °C cooler; "held" kept its temperature, so it gives no coefficient for "hot".
    reps = [_repeat("hot", -0.012, -4.0), _repeat("held", 0.001, 0.2)]
    monkeypatch.setitem(U.KIND_TEMPERATURE_COEFFICIENT, "Simulated GPU", (0.003, "an earlier run"))
    out = R._temperature_scaled([r[0] for r in reps], [r[1] for r in reps], 0.001, "Simulated GPU")
    assert out["temperature_coefficient_used"]["hot"] == {"per_c": 0.003, "from": "an earlier run"}
    assert out["temperature_coefficient_used"]["held"]["per_c"] == pytest.approx(0.003)  # from hot's repeats
    assert out["repeatability_max_rel_temperature_scaled"] == pytest.approx(1.001 / (1 + 0.003 * 0.2) - 1)
    # A kind no earlier run measured: "hot" stays as read, and the report says it was not scaled.
    out = R._temperature_scaled([r[0] for r in reps], [r[1] for r in reps], 0.001, "Other GPU")
    assert out["temperature_coefficient_used"]["hot"]["from"] is None
    assert out["repeatability_max_rel_temperature_scaled"] == pytest.approx(0.012)
    pc = lambda x: "n/a" if math.isnan(x) else f"{x * 100:.2f} %"  # noqa: E731
    assert R._coefficients(out, pc).startswith("held 0.30 % from the other tasks' repeats; hot n/a from nowhere")
    # The earlier run judging itself (its report made again): not scaled by the coefficient it set.
    out = R._temperature_scaled([r[0] for r in reps], [r[1] for r in reps], 0.001, "Simulated GPU",
                                ("/elsewhere/results/reproducibility/an earlier run",))
    assert out["temperature_coefficient_used"]["hot"]["from"] is None


@pytest.mark.parametrize("bad, says", [(["--target-ci", "1.5"], "0.005 is ±0.5 %"), (["--rounds", "1"], "needs two"),
                                       (["--max-trials", "2"], ">= 3"), (["--window-s", "0"], "(seconds)"),
                                       (["--lead-in", "--side-by-side"], "choose one")])
def test_bad_measuring_arguments_are_refused_before_any_card_is_touched(bad, says, tmp_path, capsys):
    from bench import reproducibility as R

    assert R.main(["--simulate", "--gpus", "0", "--out", str(tmp_path), *bad]) == 2
    assert says in capsys.readouterr().err
    assert not (tmp_path / "reproducibility").exists()  # no run folder, no process started


def test_the_study_report_scales_its_repeats_to_one_temperature_by_the_other_tasks_coefficient():
    from bench import report_trust

    def rec(task, pid, energy_j, temperature_c, time_s=20e-6):  # one part, its trials at one temperature
        part = {"name": "mlp", "energy_per_call_j": energy_j, "ci95_rel": 0.001, "gpu_time_per_call_s": time_s,
                "occurrences": 1, "trial_temperature_c": [temperature_c] * 3}
        whole = {"energy_per_call_j": 10 * energy_j, "energy_per_call_ci95_j": 0.01 * energy_j,
                 "gpu_time_per_call_s": 10 * time_s, "temperature_c": [temperature_c, temperature_c]}
        return {"task": {"id": task}, "pid": pid, "identity": {"gpu": {"uuid": "GPU-a", "name": "Simulated GPU"}},
                "status": "ok", "report": {"groups": [part], "whole": whole, "run": {}}}

    # "hot" read 1.6 % less 4 °C cooler (0.4 %/°C), "mild" 0.4 % less 2 °C cooler (0.2 %/°C), whole and part alike.
    ok = {"hot": rec("hot", 1, 1.0e-3, 60.0), "mild": rec("mild", 2, 2.0e-3, 50.0)}
    repeats = [rec("hot/repeat1", 3, 0.984e-3, 56.0), rec("mild/repeat1", 4, 1.992e-3, 48.0)]
    text = "\n".join(report_trust.uncertainty(ok, repeats, []))
    assert "temperature moved up to 4.0 °C" in text
    assert "hot: 0.20 % per °C from the other tasks' repeats; mild: 0.40 % per °C from the other tasks'" in text
    # hot at mild's 0.2 %/°C: 0.984 / 0.992 - 1 = -0.81 %; mild at hot's 0.4 %/°C: 0.996 / 0.992 - 1 = +0.40 %.
    assert f"moved at most {(1 - 0.984 / 0.992) * 100:.2f} %" in text
    # A third task whose part ran its repeat in the slow launch state (+15 % GPU time, +12 % energy, 2 °C warmer)
    # sets no coefficient: hot is still scaled by mild's 0.2 %/°C alone.
    ok["slow"] = rec("slow", 5, 1.0e-3, 40.0)
    slow = rec("slow/repeat1", 6, 1.12e-3, 42.0, time_s=23e-6)
    text = "\n".join(report_trust.uncertainty(ok, repeats + [slow], []))
    assert "hot: 0.20 % per °C from the other tasks' repeats" in text
    del ok["slow"]
    # Repeats that kept their temperature: no such line.
    repeats = [rec("hot/repeat1", 3, 0.984e-3, 60.0), rec("mild/repeat1", 4, 1.992e-3, 50.0)]
    assert "energy per call per °C" not in "\n".join(report_trust.uncertainty(ok, repeats, []))


def test_each_jobs_rounds_run_back_to_back_unless_told_one_round_after_the_other():
    # Note [Repeats back-to-back]: a card's heatsink drifts for minutes, so a job's repeat follows it at once.
    from bench import reproducibility as R
    from bench.cards import Card

    cards = [Card(f"SIM-GPU-{i}", f"sim:{i}", "Simulated GPU", i) for i in range(2)]
    tids = ("bert-base/prefill/b1s8/bf16", "gpt2/decode/b1kv512/bf16")

    def order(jobs, card):  # the ids one card takes, in the order it takes them
        out = []
        while (job := jobs.take(card)) is not None:
            out.append(job["id"].replace(f"@{card}", "").replace(f"/{card}", ""))
        return out

    inter = order(R.plan(cards, 2, {}, True, thermal=False, task_ids=tids), "SIM-GPU-1")
    assert inter == ["card_check/round0", "card_check/round1", f"{tids[0]}#0", f"{tids[0]}#1", f"{tids[1]}#0",
                     f"{tids[1]}#1"]
    rounds = order(R.plan(cards, 2, {}, True, thermal=False, task_ids=tids, order="rounds"), "SIM-GPU-0")
    assert rounds == ["card_check/round0", f"{tids[0]}#0", f"{tids[1]}#0", "card_check/round1", f"{tids[0]}#1",
                      f"{tids[1]}#1"]
    # Repeats only (--no-card-checks): the same tasks in the same order, no card reference.
    bare = order(R.plan(cards, 2, {}, True, thermal=False, task_ids=tids, card_checks=False), "SIM-GPU-1")
    assert bare == [f"{tids[0]}#0", f"{tids[0]}#1", f"{tids[1]}#0", f"{tids[1]}#1"]
    # What an earlier invocation measured is left out; a bad order is refused before any job exists.
    done = {f"{tids[0]}@SIM-GPU-0#0"}
    assert f"{tids[0]}#0" not in order(R.plan(cards, 2, {}, True, thermal=False, task_ids=tids, done=done),
                                       "SIM-GPU-0")
    with pytest.raises(ValueError, match="interleaved, rounds"):
        R.plan(cards, 2, {}, True, task_ids=tids, order="shuffled")


def test_the_report_says_how_the_rounds_were_ordered(result):
    res, md = result
    assert res["order"] == ["interleaved"] and "each job's back-to-back" in md
    from bench import reproducibility as R

    old = R.analyse([dict(r, settings={k: v for k, v in r["settings"].items() if k != "order"})
                     for r in json.loads("[" + ",".join((Path(res["run"]) / "records.jsonl").read_text()
                                                      .splitlines()) + "]")])
    assert old["order"] == ["rounds"]  # records from before the option were taken one round after the other


def test_a_repeat_the_launch_state_moved_sets_no_coefficient_per_degree():
    # GPU-6e8f6690 (results/reproducibility/2026-11-28_110210): light parts read +10-14 % in a slower launch state,
    # 0-1 °C apart. Such a repeat must not be read as a temperature effect, nor hide the ones taken in one state.
    from bench import reproducibility as R

    reps = [_repeat("hot", 0.016, 4.0), _repeat("mild", 0.004, 2.0),
            _repeat("slow", 0.12, 2.0, time_rel=0.14)]  # 6 % per °C if it were taken for temperature
    out = R._temperature_scaled([r[0] for r in reps], [r[1] for r in reps], 0.001, "Simulated GPU")
    assert out["temperature_coefficient_per_c"] == pytest.approx((0.016 * 4 + 0.004 * 2) / (16 + 4))
    assert out["temperature_coefficient_used"]["hot"]["per_c"] == pytest.approx(0.002)  # mild's alone
    assert out["temperature_coefficient_used"]["slow"]["per_c"] == pytest.approx(0.0036)
    assert out["pairs_temperature_scaled"] == 3 and out["pairs_time_held_temperature_scaled"] == 2
    assert out["repeatability_max_rel_time_held_temperature_scaled"] == pytest.approx(1.016 / 1.008 - 1)
    assert out["repeatability_max_rel_temperature_scaled"] == pytest.approx(1.12 / (1 + 0.0036 * 2) - 1)


def test_a_reading_that_came_back_empty_makes_no_repeat_and_leaves_the_parts_time_known(result):
    # Two whole models of 2026-11-28_110210 ended their runs with no trial (now: Note [Trials a restart dropped]):
    # their NaN must not stand as a repeat, nor turn the whole model's GPU time NaN for the cards that read it.
    import copy

    from bench import reproducibility as R, store

    res, _ = result
    recs = copy.deepcopy(store.load(Path(res["run"]), "records.jsonl"))
    lost = next(r for r in recs if r["job"] == "task" and r["status"] == "ok" and r["round"] == 1)
    lost["report"]["whole"].update(energy_per_call_j=math.nan, gpu_time_per_call_s=math.nan, ci95_rel=math.nan)
    an = R.analyse(recs)
    card = lost["identity"]["gpu"]["uuid"]
    whole = [x for x in an["repeat"] if x["part"] == "whole model"]
    assert all(math.isfinite(x["rel_diff"]) and math.isfinite(x["gpu_time_s"]) for x in an["repeat"])
    assert card not in {x["card"] for x in whole} and len(whole) == len(CARDS) - 1


def test_each_launch_state_prelude_runs_the_step_of_measure_model_it_names():
    # bench/launch_state.py --prelude: which of measure_model's steps leaves a process in the slow launch state.
    # Each must do what its name says, here on a tiny GPT-2's decode step on the simulated GPU.
    import clear_native as cn
    import torch
    import transformers as T

    from bench import launch_state, suite

    task = suite.Task("gpt2", mode="decode", batch=1, seq=1, dtype="fp32", cache_len=16,
                      overrides=(("n_embd", 64), ("n_head", 2), ("n_layer", 2), ("n_positions", 64),
                                 ("vocab_size", 200)))
    model, inputs, kw = suite.build(T, torch, task, "cpu")
    raw = (inputs, dict(kw))
    with cn.clock.virtual():
        backend = cn.SimulatedBackend(cn.synthetic_sensor(sample_period_s=0.002, period_jitter_s=0.0004,
                                                          window_s=0.0005, lag_s=0.0015, status_update_s=0.01,
                                                          energy_update_s=0.01, energy_read_delay_s=0.0))
        assert launch_state.prelude("none", model, raw, backend, cache_len=16) is None
        groups, blocks = launch_state.prelude("discover", model, raw, backend, cache_len=16)
        assert {"attention", "mlp"} <= {g.kind.split("_")[-1] for g in groups} and len(blocks) == 1
        short = dict(window_s=0.05, budget_s=60.0)
        steps = []
        hot = launch_state.prelude("measure_hot", model, raw, backend, cache_len=16, trace=steps.append, **short)
        cold = launch_state.prelude("measure_cold_blocks", model, raw, backend, cache_len=16, **short)
    assert hot.mode == cold.mode == "decode" and math.isfinite(hot.whole["energy_per_call_j"])
    assert all(g.l2_copies == 1 for g in hot.groups) and not hot.blocks
    assert cold.blocks and (hot.settings["l2"], cold.settings["l2"]) == ("hot", "cold")
    assert set(launch_state.PRELUDES) == {"none", "discover", "measure_hot", "measure_cold", "measure_cold_blocks"}
    # Its trace: the state read after the backend's first capture, the sampler's start, the idle rest, before and
    # after awake idle, after the first replay and before the profiler, and after each progress line, in the order
    # measure_model takes them.
    first = {s: next(i for i, x in enumerate(steps) if x == s or x.startswith(s + " "))
             for s in ("after capture", "after sampler start", "after sleep", "before awake_idle", "after awake_idle",
                       "after run", "before kernel_times_s")}
    assert list(first.values()) == sorted(first.values()), steps
    assert any(s.startswith("say: ") and "components" in s for s in steps[:first["after capture"]])
    # A capture's step names what it captured (the first: a part, as measure_model captures the parts first).
    assert steps[first["after capture"]] == "after capture transformer.wte"
    # --trace-every 0: around every call, so every capture measure_model made is in the trace, before and after
    # (by default, one capture a second: the others among them go unseen).
    with cn.clock.virtual():
        backend = cn.SimulatedBackend(cn.synthetic_sensor(sample_period_s=0.002, period_jitter_s=0.0004,
                                                          window_s=0.0005, lag_s=0.0015, status_update_s=0.01,
                                                          energy_update_s=0.01, energy_read_delay_s=0.0))
        made, every = [], []
        real_capture = backend.capture
        backend.capture = lambda *a, **k: made.append(k.get("name")) or real_capture(*a, **k)
        launch_state.prelude("measure_hot", model, raw, backend, cache_len=16, trace=every.append, trace_every_s=0.0,
                             **short)
    captured = [s[len("after capture "):] for s in every if s.startswith("after capture ")]
    assert captured == made and len(made) > 3 and every.count("after capture whole_model") == 1
    assert sum(s.startswith("after capture ") for s in steps) < len(made)
    assert len([s for s in every if s.startswith("before capture ")]) == len(made)
    # --select: the set-up of the named components alone (and the whole model), to tell which captures it takes.
    with cn.clock.virtual():
        backend = cn.SimulatedBackend(cn.synthetic_sensor(sample_period_s=0.002, period_jitter_s=0.0004,
                                                          window_s=0.0005, lag_s=0.0015, status_update_s=0.01,
                                                          energy_update_s=0.01, energy_read_delay_s=0.0))
        some = []
        launch_state.prelude("measure_hot", model, raw, backend, cache_len=16, trace=some.append, trace_every_s=0.0,
                             select=["transformer.h.0.mlp"], **short)
    assert [s[len("after capture "):] for s in some if s.startswith("after capture ")] == \
        ["transformer.h.0.mlp", "whole_model"]


def test_the_report_gives_each_tasks_largest_repeat_in_and_out_of_one_launch_state(result):
    # BERT-base's pairs moved 10 % with the launch state while the decode tasks' held within 0.67 % (2026-11-28,
    # results/reproducibility/2026-11-28_151302): the report says so per task, not only as one largest number.
    from bench import reproducibility as R

    def row(task, d, dt):
        return {"task": task, "part": "p", "card": "GPU-a", "rel_diff": d, "gpu_time_s": 1e-4, "time_rel_diff": dt,
                "temperature_diff_c": 0.0, "state_corrected_rel_diff": d}

    long = [row("bert", -0.10, -0.12), row("bert", 0.004, 0.001), row("bert", -0.06, -0.08),
            row("gpt2", 0.002, 0.0), row("gpt2", -0.003, 0.001)]
    pairs = [((1.0, 0.002), (1.0 + x["rel_diff"], 0.002)) for x in long]
    by = R._repeatability(long, pairs, 0.002)["repeatability_by_task"]
    assert list(by) == ["bert", "gpt2"]
    assert (by["bert"]["time_held"]["n"], by["bert"]["time_moved"]["n"]) == (1, 2)
    assert by["bert"]["time_held"]["max_rel"] == pytest.approx(0.004)
    assert by["bert"]["time_moved"]["max_rel"] == pytest.approx(0.10)
    assert by["gpt2"]["time_held"]["max_rel"] == pytest.approx(0.003) and by["gpt2"]["time_moved"]["n"] == 0
    line = R._by_task({"repeatability_by_task": by}, lambda x: f"{x * 100:.2f} %")[1]
    assert line == ("Repeatability by task: bert 10.00 % (3 pairs: 0.40 % over the 1 whose GPU time held, 10.00 % over "
                    "the 2 whose GPU time moved); gpt2 0.30 % (2 pairs: 0.30 % over the 2 whose GPU time held).")
    # The simulated run's report: each task's largest is its largest repeat of a part >= MIN_TIME_S.
    an, md = result
    for task, s in an["repeatability_by_task"].items():
        mine = [abs(x["rel_diff"]) for x in an["repeat"] if x["task"] == task and x["gpu_time_s"] >= R.MIN_TIME_S]
        assert s["time_held"]["n"] + s["time_moved"]["n"] == len(mine)
        assert max(v for v in (s["time_held"]["max_rel"], s["time_moved"]["max_rel"]) if not math.isnan(v)) == \
            pytest.approx(max(mine))
    assert "Repeatability by task: " in md


def test_repeats_are_split_by_whether_both_processes_windows_restarted_as_often(result):
    # Note [Trials a restart dropped]: BERT-base's whole model read +1.49 % where one process's window restarted
    # twice and the other's never (GPU-c917f4c4, 2026-11-29), 0.12-0.27 % with fixed windows on the same card.
    from bench import reproducibility as R

    def row(d, restarts):
        return {"task": "bert", "part": "p", "card": "GPU-a", "rel_diff": d, "gpu_time_s": 1e-4, "time_rel_diff": 0.0,
                "temperature_diff_c": 0.0, "state_corrected_rel_diff": d, "window_restarts": restarts}

    long = [row(0.0149, (0, 2)), row(-0.002, (1, 1)), row(0.003, (0, 0)), row(0.006, (2, 1)),
            row(0.009, (math.nan, 0))]  # a record without the count: in neither split
    pairs = [((1.0, 0.002), (1.0 + x["rel_diff"], 0.002)) for x in long]
    by = R._repeatability(long, pairs, 0.002)["repeatability_by_window"]
    assert by["same_window"]["n"] == 2 and by["same_window"]["max_rel"] == pytest.approx(0.003)
    assert by["window_differed"]["n"] == 2 and by["window_differed"]["max_rel"] == pytest.approx(0.0149)
    assert by["window_differed"]["rms_rel"] == pytest.approx(math.sqrt((0.0149 ** 2 + 0.006 ** 2) / 2))
    rows = R._window_rows({"repeatability_by_window": by}, lambda x: f"{x * 100:.2f} %")
    assert rows[0].startswith("| ... where both processes kept one window length | 0.30 % (RMS ")
    assert rows[1].startswith("| ... where one process's window grew more than the other's | 1.49 % (RMS 1.14 %, "
                              "2 pairs)")
    # Where the restart counts differ, the one that restarted more is also read at the other's window, from the
    # trials its restart dropped there: the k-th set dropped for noise, k the other's restarts.
    def dropped(why, watts, t=1e-3):
        return {"why": why, "window_s": 0.4, "trial_power_w": list(watts), "trial_time_per_call_s": [t] * len(watts),
                "trial_temperature_c": [45.0] * len(watts)}

    noise = "its trials varied more than target_cv (CV 0.6%)"
    sets = [dropped("the launch-latency state moved (+9%)", [900.0]), dropped(noise, [1000.0, 1002.0]),
            dropped(noise, [1010.0, 1012.0])]
    assert U.at_other_window((1.0, 0, []), (1.015, 2, sets)) == pytest.approx(0.001)  # its 0.4 s set: 1.001 J
    assert U.at_other_window((1.015, 2, sets), (1.0, 1, [])) == pytest.approx(1.0 / 1.011 - 1)  # its 0.8 s set
    assert math.isnan(U.at_other_window((1.0, 1, sets), (1.01, 1, sets)))  # one window: nothing to take
    assert math.isnan(U.at_other_window((1.0, 2, []), (1.01, 3, sets)))  # none kept at the other's 1.6 s window
    rows = [dict(row(0.0149, (0, 2)), at_other_window_rel_diff=0.001), dict(row(0.006, (2, 1)),
                                                                             at_other_window_rel_diff=-0.004)]
    an = R._repeatability(rows, [((1.0, 0.002), (1.01, 0.002))] * 2, 0.002)
    assert an["repeatability_at_other_window"] == pytest.approx({"max_rel": 0.004, "n": 2,
                                                                 "rms_rel": math.sqrt((0.001 ** 2 + 0.004 ** 2) / 2)})
    assert R._window_rows(an, lambda x: f"{x * 100:.2f} %")[-1].startswith(
        "| ... those, the one that restarted more read at the other's window | 0.40 % (RMS 0.29 %, 2 pairs) |")
    # The simulated run: every repeat carries both processes' restart counts, as their records say.
    an, md = result
    assert all(len(x["window_restarts"]) == 2 for x in an["repeat"])
    long = [x for x in an["repeat"] if x["gpu_time_s"] >= R.MIN_TIME_S]
    by = an["repeatability_by_window"]
    assert by["same_window"]["n"] + by["window_differed"]["n"] == len(long)
    assert "| window restarts |" in md


def test_launch_state_traces_a_prefill_task_and_refuses_a_task_the_study_lacks(capsys):
    # --task: the prelude runs measure_model on another study task's model in its own mode (BERT-base's processes
    # began their trials slow where GPT-2's decode did not). Here a tiny BERT's prefill on the simulated GPU.
    import clear_native as cn
    import torch
    import transformers as T

    from bench import launch_state, suite

    task = suite.Task("bert-base", mode="prefill", batch=1, seq=8, dtype="fp32",
                      overrides=(("hidden_size", 32), ("intermediate_size", 64), ("num_attention_heads", 2),
                                 ("num_hidden_layers", 2), ("vocab_size", 100)))
    model, inputs, kw = suite.build(T, torch, task, "cpu")
    with cn.clock.virtual():
        backend = cn.SimulatedBackend(cn.synthetic_sensor(sample_period_s=0.002, period_jitter_s=0.0004,
                                                          window_s=0.0005, lag_s=0.0015, status_update_s=0.01,
                                                          energy_update_s=0.01, energy_read_delay_s=0.0))
        steps = []
        rep = launch_state.prelude("measure_hot", model, (inputs, dict(kw)), backend, trace=steps.append,
                                   mode="prefill", window_s=0.05, budget_s=60.0)
    assert rep.mode == "prefill" and math.isfinite(rep.whole["energy_per_call_j"])
    assert "after reset_launch_state" in steps and steps.index("after reset_launch_state") < len(steps) - 1
    assert launch_state.task_of("bert-base/prefill/b8s128/bf16").mode == "prefill"
    assert launch_state.task_of(launch_state.TASK).mode == "decode"
    # An id the study's plan lacks: one line and exit code 2, before any GPU is looked for.
    assert launch_state.main(["--task", "bert-base/prefill/b9/bf16"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("bench/launch_state.py: --task 'bert-base/prefill/b9/bf16'") and "--dry-run" in err


def test_launch_state_report_keeps_a_preludes_trace_apart_from_the_readings():
    from bench import launch_state

    def row(t, lat, **kw):
        return {"t_s": t, "latency_s": lat, "step_s": 7e-4, "pcie_generation": 5, "pcie_width": 16,
                "sm_clock_mhz": 1980, "memory_clock_mhz": 3201} | kw

    trace = [row(0.0, 0.95e-6, phase="prelude", step="model built"),
             row(1.0, 0.96e-6, phase="prelude", step="say: 9 components"),
             row(2.0, 1.20e-6, phase="prelude", step="after capture"),
             row(3.0, 1.19e-6, phase="prelude", step="after capture"),
             row(9.0, 1.18e-6, phase="prelude", step="say: warm: 300 W after 5 s")]
    readings = {"GPU-x": trace + [row(0.25, 1.1e-6), row(0.5, 1.2e-6)]}
    summary = launch_state.summarise(readings)
    assert [g["readings"] for g in summary["GPU-x"]] == [2]  # the trace's five are not readings
    res = {"identity": {"gpu": {"name": "H200"}}, "seconds": 1, "stagger_s": 0, "every_s": 0.25,
           "prelude": "measure_cold", "summary": summary, "readings": readings}
    table = launch_state.markdown(res).split("## Prelude measure_cold on GPU-x")[1]
    assert [ln.split(" | ")[:2] for ln in table.splitlines() if ln.startswith("| ") and "---" not in ln][1:] == [
        ["| model built", "1"], ["| say", "1"], ["| after capture", "2"], ["| say", "1"]]
    # --trace-every 0 reads around every capture: a run of them in one state is one row, named by its first and
    # last, with the memory PyTorch held by its end; the capture after which the state turned starts a row of its own.
    named = [row(0.0, 0.95e-6, phase="prelude", step="before capture wte", reserved_gib=0.5),
             row(0.1, 0.95e-6, phase="prelude", step="after capture wte", reserved_gib=0.5),
             row(0.2, 0.96e-6, phase="prelude", step="after capture h.0.attn", reserved_gib=1.0),
             row(0.3, 1.20e-6, phase="prelude", step="after capture h.0.mlp", reserved_gib=3.0),
             row(0.4, 1.21e-6, phase="prelude", step="after capture whole_model", reserved_gib=4.25)]
    res["readings"] = {"GPU-x": named}
    rows = [ln for ln in launch_state.markdown(res).splitlines() if ln.startswith("| capture ")]
    assert rows == ["| capture wte ... h.0.attn | 3 | 0.0-0.2 | 0.950-0.960 | 1.00 |",
                    "| capture h.0.mlp ... whole_model | 2 | 0.3-0.4 | 1.200-1.210 | 4.25 |"]
    # A prelude on chosen components (--select) says which.
    assert "## Prelude measure_cold (components h.0.mlp) on GPU-x" in launch_state.markdown(res | {"select": "h.0.mlp"})


def test_the_report_shows_each_task_processs_launch_state(result):
    # Whether a process's trials ran fast or slow is read off the report, not the records: each task process's
    # probe before its trials, where its kept trials began, and after them.
    from bench import reproducibility as R
    from clear_native.simulated import OpCosts

    an, md = result
    fast_us = (OpCosts().min_kernel_s + OpCosts().gap_s) * 1e6  # the simulated cards never leave the fast state
    assert sorted((x["card"], x["round"]) for x in an["launch_states"]) == [(c, k) for c in CARDS for k in (0, 1)]
    assert all(x["before_us"] == x["kept_from_us"] == x["after_us"] == pytest.approx(fast_us)
               for x in an["launch_states"])
    assert "## Launch state of each task's processes" in md and f"| 0 | {fast_us:.3f} | {fast_us:.3f} |" in md
    # A process that turned fast and started its trials again: kept from the restart's reading.
    rec = {"task": {"id": "gpt2"}, "identity": {"gpu": {"uuid": "GPU-a"}}, "round": 1,
           "report": {"run": {"launch_state": [{"latency_s": 1.21e-6}, {"latency_s": 0.95e-6, "restart": True},
                                               {"latency_s": 0.96e-6}]}}}
    [row] = R._launch_states([rec])
    assert (row["before_us"], row["kept_from_us"], row["after_us"]) == pytest.approx((1.21, 0.95, 0.96))


def test_a_reading_is_taken_to_the_cards_fastest_launch_latency_by_its_kernel_count(result):
    # BERT-base's pooler on GPU-42eb9326 (results/reproducibility/2026-11-28_171710): 5.2 µs a call, 4 graph kernels,
    # one process at 0.961 µs a probe kernel, the other at 1.131: 0.68 µs longer at ~125 W awake idle (+0.085 mJ).
    # Taken to the card's fastest latency, the two readings agree to what else moved (+0.1 % here).
    from bench import reproducibility as R
    from clear_native.launch_state import at_latency, kept_latency_s

    assert at_latency(1.0e-3, 5.2e-6, 4, 1.131e-6, 0.961e-6, 125.0) == pytest.approx(
        (1.0e-3 - 125.0 * 4 * 0.170e-6, 5.2e-6 - 4 * 0.170e-6))
    assert all(math.isnan(x) for x in at_latency(1.0e-3, 5.2e-6, math.nan, 1.131e-6, 0.961e-6, 125.0))
    # The kept trials' state: the readings from the one they started again at (restart) to the last.
    states = [{"latency_s": 1.14e-6}, {"latency_s": 0.96e-6, "restart": True}, {"latency_s": 0.98e-6}]
    assert kept_latency_s(states) == pytest.approx(0.97e-6) and math.isnan(kept_latency_s([]))
    assert kept_latency_s([{"latency_s": 1.13e-6}, {"latency_s": math.nan}, {"latency_s": 0.97e-6}]) == \
        pytest.approx(1.05e-6)  # a state that moved under the trials, no restart: by the rounds each lasted

    def rec(rnd, lat_us, e_j, t_s, kernels):
        whole = {"energy_per_call_j": 0.4, "ci95_rel": 0.002, "gpu_time_per_call_s": 838e-6,
                 "graph_kernels_per_call": kernels and 290}
        return {"task": {"id": "bert"}, "identity": {"gpu": {"uuid": "GPU-a"}}, "round": rnd,
                "report": {"whole": whole, "groups": [{"name": "pooler", "energy_per_call_j": e_j, "ci95_rel": 0.002,
                                                       "gpu_time_per_call_s": t_s, "graph_kernels_per_call": kernels}],
                           "run": {"launch_state": [{"latency_s": lat_us * 1e-6}] * 3, "awake_idle_power_w": 125.0}}}

    fast_j, extra = 0.60e-3, 4 * 0.170e-6
    tasks = [rec(0, 0.961, fast_j, 5.2e-6, 4), rec(1, 1.131, fast_j * 1.001 + 125.0 * extra, 5.2e-6 + extra, 4)]
    def repeats(recs):  # the pooler's repeat taken to its card's fastest latency, as analyse() takes it
        values, fastest = R._readings(recs)
        return [{"task": "bert", "part": "pooler", "card": "GPU-a", "gpu_time_s": 5.5e-6, "launch_normalised_rel_diff":
                 R._launch_normalised_diff(values[("bert", "pooler")]["GPU-a"], fastest["GPU-a"])}]

    long = repeats(tasks)
    got = R._launch_normalised(long, [((1.0, 0.002), (1.143, 0.002))], 0.002)
    assert got["repeatability_launch_normalised_pairs"] == 1
    # One task: judged with the fallback sigma_p (0.2 %): 0.1 % lands inside, where the raw 14.3 % would not.
    assert got["interval_coverage_launch_normalised"] == 1.0
    assert long[0]["launch_normalised_rel_diff"] == pytest.approx(0.001, abs=1e-9)  # raw: +14.3 %
    assert got["repeatability_launch_normalised_max_rel"] == pytest.approx(0.001, abs=1e-9)
    # Records that do not count their kernels (before 2026-11-28 evening) give no such line, not a wrong one.
    old = [rec(0, 0.961, fast_j, 5.2e-6, None), rec(1, 1.131, fast_j * 1.14, 5.2e-6 + extra, None)]
    for r in old:
        for part in [r["report"]["whole"], *r["report"]["groups"]]:
            part.pop("graph_kernels_per_call")
    assert R._launch_normalised(repeats(old), [((1.0, 0.002), (1.14, 0.002))], 0.002) == {}
    # The simulated pipeline: its cards never leave the fast state, so every reading is already at its card's
    # fastest latency and the line repeats the raw repeats.
    an, md = result
    norm = [x for x in an["repeat"] if math.isfinite(x["launch_normalised_rel_diff"])]
    assert norm and all(x["launch_normalised_rel_diff"] == pytest.approx(x["rel_diff"], abs=1e-12) for x in norm)
    assert "| ... at each card's fastest launch latency | " in md
    assert an["interval_coverage_launch_normalised"] == pytest.approx(an["interval_coverage"])  # the same repeats


def test_a_lead_in_process_runs_right_before_each_tasks_first_round_and_is_never_compared(result):
    # Note [A lead-in before the repeats]: on four H200s each task's second process ran up to 3.7 °C cooler than
    # its first, which followed a heavier task. A lead-in process of the task itself goes first, on its card.
    import copy

    from bench import reproducibility as R
    from bench.cards import Card

    cards = [Card(f"SIM-GPU-{i}", f"sim:{i}", "Simulated GPU", i) for i in range(2)]
    tids = ("bert-base/prefill/b1s8/bf16", "gpt2/decode/b1kv512/bf16")

    def order(jobs, card):
        out = []
        while (job := jobs.take(card)) is not None:
            out.append(job["id"].replace(f"@{card}", "").replace(f"/{card}", ""))
        return out

    inter = order(R.plan(cards, 2, {}, True, thermal=False, task_ids=tids, lead_in=True), "SIM-GPU-0")
    assert inter == ["card_check/round0", "card_check/round1", f"{tids[0]}#lead", f"{tids[0]}#0", f"{tids[0]}#1",
                     f"{tids[1]}#lead", f"{tids[1]}#0", f"{tids[1]}#1"]
    rounds = order(R.plan(cards, 2, {}, True, thermal=False, task_ids=tids, order="rounds", lead_in=True),
                   "SIM-GPU-1")
    assert rounds == ["card_check/round0", f"{tids[0]}#lead", f"{tids[0]}#0", f"{tids[1]}#lead", f"{tids[1]}#0",
                      "card_check/round1", f"{tids[0]}#1", f"{tids[1]}#1"]
    # Its record is kept but never compared: a lead-in that read 50 % more (a card far from the task's own
    # temperature) changes no repeat, spread or launch-state row; the report says lead-ins ran.
    res, _ = result
    recs = [json.loads(x) for x in (Path(res["run"]) / "records.jsonl").read_text().splitlines()]
    lead = copy.deepcopy(next(r for r in recs if r["job"] == "task" and r.get("round") == 0 and r["status"] == "ok"))
    lead["round"], lead["job_id"] = R.LEAD_IN, lead["job_id"].replace("#0", "#lead")
    for part in [lead["report"]["whole"], *lead["report"]["groups"]]:
        part["energy_per_call_j"] *= 1.5
    base, led = R.analyse(recs, at_reference=False), R.analyse(recs + [lead], at_reference=False)
    assert (base["lead_ins"], led["lead_ins"]) == (0, 1)
    for key in ("repeat", "card_spread_raw_rel", "launch_states", "rounds", "task_runs_repeated"):
        assert led[key] == base[key], key
    assert "after a lead-in process of it (1, never compared" in R.markdown(led, lead["identity"])
    assert "lead-in" not in R.markdown(base, lead["identity"])


def test_lead_in_from_the_command_line_measures_one_more_process_per_task(tmp_path):
    out = tmp_path / "out"
    p = subprocess.run([sys.executable, str(ROOT / "bench" / "reproducibility.py"), "--simulate", "--gpus", "0",
                        "--tasks", "bert-base/prefill/b1s8/bf16", "--window-s", "0.1", "--out", str(out),
                        "--no-thermal", "--lead-in", "--target-ci", "0.01", "--target-cv", "0.02", "--max-trials", "4"],
                       capture_output=True, text=True, timeout=900, cwd=ROOT)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    res = json.loads((out / "reproducibility.json").read_text())
    recs = [json.loads(x) for x in (Path(res["run"]) / "records.jsonl").read_text().splitlines()]
    assert sorted(r.get("round") for r in recs if r["job"] == "task") == [-1, 0, 1]
    assert all(r["settings"]["lead_in"] for r in recs) and res["lead_ins"] == 1 and res["task_runs_repeated"] == [1, 1]
    assert "after a lead-in process of it (1," in (out / "reproducibility.md").read_text()


def test_in_lockstep_the_cards_start_each_job_together(tmp_path):
    # Note [Cards in lockstep]: no card starts its next job while another's is still running, and every card's
    # jobs run in the plan's order; the report says the run was in lockstep.
    import re

    out = tmp_path / "out"
    p = subprocess.run([sys.executable, str(ROOT / "bench" / "reproducibility.py"), "--simulate", "--gpus", "0,1",
                        "--tasks", "gpt2/decode/b1kv512/bf16", "--window-s", "0.1", "--out", str(out),
                        "--no-thermal", "--lockstep", "--target-ci", "0.01", "--target-cv", "0.02",
                        "--max-trials", "4"],
                       capture_output=True, text=True, timeout=900, cwd=ROOT)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    running, starts = set(), []
    for line in p.stdout.splitlines():
        if m := re.search(r"started (\S+) on (SIM-GPU-\d)", line):
            assert not running or starts[-1] == "burst", line  # started only while nothing runs, in one burst
            running.add(m.group(1))
            starts.append("burst")
        elif m := re.search(r"\] (\S+): (ok|failed)", line):
            running.discard(m.group(1))
            starts.append("end")
    assert starts.count("burst") == 8 and not running  # 2 rounds of the card check and of the task, on 2 cards
    assert "the cards in lockstep" in (out / "reproducibility.md").read_text()


def test_a_tasks_rounds_side_by_side_take_turns_on_their_card(tmp_path):
    # Note [Repeats side by side]: both rounds of a task run at once on the card, each a fresh process, handing
    # the card on between rounds of trials; the card checks still run one after the other.
    p = subprocess.run([sys.executable, str(ROOT / "bench" / "reproducibility.py"), "--simulate", "--gpus", "0",
                        "--side-by-side", "--no-thermal", "--tasks", "gpt2/decode/b1kv512/bf16", "--window-s", "0.1",
                        "--task-budget-s", "40", "--out", str(tmp_path)],
                       capture_output=True, text=True, timeout=900, cwd=ROOT)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    log = p.stdout
    # Both rounds started before either finished; the checks each alone.
    started = [log.index(f"started gpt2/decode/b1kv512/bf16@SIM-GPU-0#{r} ") for r in (0, 1)]
    assert max(started) < log.index("gpt2/decode/b1kv512/bf16@SIM-GPU-0#0: ok")
    assert log.index("card_check/round0/SIM-GPU-0: ok") < log.index("started card_check/round1/SIM-GPU-0")
    recs = [json.loads(line) for line in next((tmp_path / "reproducibility").iterdir()).joinpath(
        "records.jsonl").read_text().splitlines()]
    tasks_ = sorted((r for r in recs if r["job"] == "task"), key=lambda r: r["round"])
    assert [r["status"] for r in tasks_] == ["ok", "ok"]
    assert [(r["turns"]["member"], r["turns"]["members"]) for r in tasks_] == [(0, 2), (1, 2)]
    # Each handed the card to the other (so both were there at once), and their turns alternated: counts within one.
    assert all(r["turns"]["handed_on"] >= 3 for r in tasks_)
    assert abs(tasks_[0]["turns"]["turns"] - tasks_[1]["turns"]["turns"]) <= 1
    # Each budget covers the other's turns: 2 x 40 s + 60 s for the other's making ready.
    assert {r["settings"]["task_budget_s"] for r in tasks_} == {2 * 40 + 60}
    assert all(r["report"]["run"]["settings"]["between_rounds"] for r in tasks_)
    assert not any("turns" in r for r in recs if r["job"] == "card_check")
    res = json.loads((tmp_path / "reproducibility.json").read_text())
    assert res["side_by_side"] == [2, 2] and res["repeat"]
    assert "each task's rounds side by side on its card" in (tmp_path / "reproducibility.md").read_text()
    # Resumed from a copy of its records alone, round 1 missing: it runs alone and waits for nobody.
    run = tmp_path / "copied"
    run.mkdir()
    (run / "records.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs if r.get("round") != 1))
    p = subprocess.run([sys.executable, str(ROOT / "bench" / "reproducibility.py"), "--simulate", "--gpus", "0",
                        "--side-by-side", "--no-thermal", "--tasks", "gpt2/decode/b1kv512/bf16", "--window-s", "0.1",
                        "--task-budget-s", "40", "--out", str(tmp_path), "--resume", str(run)],
                       capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    again = [json.loads(line) for line in (run / "records.jsonl").read_text().splitlines()]
    resumed = [r for r in again if r["job"] == "task"]
    assert [r["round"] for r in resumed] == [0, 1] and resumed[-1]["status"] == "ok"
    assert resumed[-1]["turns"]["handed_on"] == 0  # nobody else there


def test_a_side_by_side_process_killed_mid_run_loses_nothing_and_never_holds_the_card(tmp_path):
    import re
    import signal
    import time

    cmd = [sys.executable, str(ROOT / "bench" / "reproducibility.py"), "--simulate", "--gpus", "0", "--side-by-side",
           "--no-thermal", "--tasks", "gpt2/decode/b1kv512/bf16", "--window-s", "0.1", "--task-budget-s", "40",
           "--out", str(tmp_path)]
    seen, killed = "", False
    with subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=ROOT) as p:
        for line in p.stdout:  # member 0 killed while the two take turns
            seen += line
            m = re.search(r"started gpt2/decode/b1kv512/bf16@SIM-GPU-0#0 on SIM-GPU-0 \(pid (\d+), attempt 1\)", line)
            if m:
                time.sleep(1.0)
                os.kill(int(m.group(1)), signal.SIGKILL)
                killed = True
    assert p.returncode == 0 and killed, seen
    assert "goes back in the queue" in seen
    recs = [json.loads(line) for line in next((tmp_path / "reproducibility").iterdir()).joinpath(
        "records.jsonl").read_text().splitlines()]
    by_round = {r["round"]: r for r in recs if r["job"] == "task"}
    assert sorted(by_round) == [0, 1] and all(r["status"] == "ok" for r in by_round.values())
    # Member 1 went on without the dead one (it never waited for it to the end); member 0 ran again, alone.
    assert by_round[0]["attempts"] == 2 and by_round[1]["attempts"] == 1
    assert by_round[0]["turns"]["handed_on"] == 0


@pytest.mark.parametrize("target_cv, restarted", [("none", False), ("0.001", True)])
def test_with_target_cv_none_every_part_keeps_one_window(tmp_path, target_cv, restarted):
    # Note [Window length and repeats]: with --target-cv none no part's window doubles on its trials' CV (the
    # simulated card's noise, ~0.1-0.3 %, doubles them at --target-cv 0.001), and the report says which rule chose.
    out = tmp_path / "out"
    p = subprocess.run([sys.executable, str(ROOT / "bench" / "reproducibility.py"), "--simulate", "--gpus", "0",
                        "--tasks", "bert-base/prefill/b1s8/bf16", "--window-s", "0.1", "--out", str(out),
                        "--no-thermal", "--no-card-checks", "--target-ci", "0.01", "--max-trials", "4"]
                       + ["--target-cv", target_cv],
                       capture_output=True, text=True, timeout=900, cwd=ROOT)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    res = json.loads((out / "reproducibility.json").read_text())
    recs = [json.loads(x) for x in (Path(res["run"]) / "records.jsonl").read_text().splitlines()]
    reports = [r["report"] for r in recs if r["job"] == "task"]
    assert len(reports) == 2 and all(r["settings"]["target_cv"] == (None if target_cv == "none" else float(target_cv))
                                     for r in recs if r["job"] == "task")
    restarts = [g["window_restarts"] for rep in reports for g in rep["groups"] + [rep["whole"]]]
    assert any(restarts) == restarted
    md = (out / "reproducibility.md").read_text()
    assert ("each part at one window (`--target-cv none`" in md) != restarted
    assert ("windows doubled where trials varied more than 0.10 %" in md) == restarted


def test_a_bad_target_cv_is_refused_before_any_gpu_time():
    from bench import reproducibility as R

    assert "--target-cv must lie in (0, 1)" in R._bad(R._parser().parse_args(["--target-cv", "1.5"]))
    assert R._bad(R._parser().parse_args(["--target-cv", "none"])) == ""
    assert R._parser().parse_args([]).target_cv == 0.004 and R._parser().parse_args(["--target-cv", "None"]).target_cv is None
