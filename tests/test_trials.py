"""The trial state machine, fed numbers: no clock, no GPU, no sensor (Note [Trials that adapt])."""

import json

import numpy as np
import pytest

from clear_native.trials import MAX_STRETCH, Rules, Trials, Verdict, drift_of

RULES = Rules(min_trials=3, max_trials=10, target_ci_rel=0.005, target_cv=0.01, max_window_s=0.8,
              max_settle_s=1.6, unsettled_z=4.0)


def fresh() -> Trials:
    # 10 µs per call, unrolled 200x: one launch is 2 ms; settle 0.4 + window 0.2 + tail 0.02 s = 310 launches.
    return Trials(item=None, name="c", handle=None, unroll=200, t1=10e-6, settle_s=0.4, window_s=0.2, tail_s=0.02)


def flat(watts: float, n: int = 10, seed: int = 0) -> np.ndarray:
    return watts + np.random.default_rng(seed).normal(0, 0.5, n)


def judge(t: Trials, power, t_call=10e-6):
    return t.judge(np.asarray(power, dtype=float), 0.2, t_call, 90, t_call, "before", RULES, now_s=1.0)


def test_launches_cover_settle_window_and_tail():
    t = fresh()
    assert 310 <= t.launches <= 311  # the fewest 2 ms launches that last 0.62 s


def test_a_window_without_samples_stretches_the_trial_but_not_forever():
    t = fresh()
    verdicts = [judge(t, [300.0, 301.0]) for _ in range(6)]
    # 1 -> 2 -> 4 -> 8 -> 16, then every further empty window is a failed trial, not a longer one.
    assert verdicts[:4] == [Verdict.SHORT] * 4 and t.stretch == MAX_STRETCH == 16
    assert verdicts[4:] == [Verdict.LOST, Verdict.LOST] and t.failed == 2
    assert t.launches == 16 * fresh().launches and t.values == []


def test_calls_far_faster_unrolled_than_alone_replan_the_trial_from_their_real_time():
    # A near-empty graph: 10 µs launched alone (launch-bound), 0.1 µs a call unrolled. The trial lasted
    # 1 % of its plan; doubling would take 7 doublings and hit the cap. It is re-planned at once.
    t = fresh()
    planned = t.launches
    assert t.judge(np.array([300.0]), 0.2, 0.1e-6, 0, 0.1e-6, "x", RULES, 1.0) is Verdict.SHORT
    assert t.t1 == 0.1e-6 and t.stretch == 1 and t.failed == 0
    assert t.launches == pytest.approx(100 * planned, rel=0.01)


def test_a_window_still_ramping_is_rejected_and_the_settle_time_doubles():
    t = fresh()
    ramp = np.linspace(300, 330, 20)  # +10 % across the window, far above its sample noise
    drift, z = drift_of(ramp)
    assert drift == pytest.approx((np.mean(ramp[10:]) - np.mean(ramp[:10])) / np.mean(ramp))
    assert judge(t, ramp) is Verdict.UNSETTLED and t.settle_s == pytest.approx(0.8)
    assert judge(t, ramp) is Verdict.UNSETTLED and t.settle_s == pytest.approx(1.6)
    # At the longest settle time the window is kept, with its drift on record.
    assert judge(t, ramp) is Verdict.ACCEPTED and t.drift == [pytest.approx(drift)]
    assert len(t.rejected) == 2 and t.rejected[0][2] == "before"


def test_steady_trials_converge_with_the_mean_of_power_times_time():
    t = fresh()
    verdicts = [judge(t, flat(300.0, seed=i)) for i in range(3)]
    assert verdicts == [Verdict.ACCEPTED, Verdict.ACCEPTED, Verdict.CONVERGED] and t.converged
    energies = [v[0] * v[1] for v in t.values]
    assert t.energy().mean == pytest.approx(np.mean(energies)) == pytest.approx(300.0 * 10e-6, rel=1e-3)
    assert not t.active(RULES)


def test_noisy_trials_double_the_window_and_start_again():
    t = fresh()
    for watts in (300.0, 330.0, 270.0):  # CV 10 %: over the 1 % target after min_trials
        v = judge(t, flat(watts))
    assert v is Verdict.RESTART and t.window_s == pytest.approx(0.4) and t.values == [] and t.restarts == 1
    for watts in (300.0, 330.0, 270.0):
        v = judge(t, flat(watts))
    assert v is Verdict.RESTART and t.window_s == pytest.approx(0.8)
    for watts in (300.0, 330.0, 270.0):  # at max_window_s: a swing slower than the window, whole limiter cycles
        v = judge(t, flat(watts))
    assert v is Verdict.RESTART and t.window_s == pytest.approx(3 * RULES.limiter_s) and t.restarts == 3
    for watts in (300.0, 330.0, 270.0):  # then the trials are kept, noisy as they are
        v = judge(t, flat(watts))
    assert v is Verdict.ACCEPTED and len(t.values) == 3 and t.restarts == 3


def test_a_capture_tried_too_often_stops_being_active():
    t = fresh()
    t.tried = 3 * RULES.max_trials
    assert not t.active(RULES)


LIMIT = Rules(min_trials=3, max_trials=10, target_ci_rel=0.005, target_cv=0.01, max_window_s=0.8, max_settle_s=1.6,
              unsettled_z=4.0, power_limit_w=700.0, limiter_s=1.0)


def test_a_capture_at_the_power_limit_gets_windows_of_whole_limiter_cycles():
    # Note [The limiter's cycle]: the first window read the limiter's first plateau (725 W of a 700 W limit).
    t = fresh()
    assert t.judge(flat(725.0), 0.2, 10e-6, 90, 10e-6, "x", LIMIT, 1.0) is Verdict.LIMITED
    assert t.at_limit and t.window_s == pytest.approx(3.0) and t.settle_s == pytest.approx(1.0) and t.values == []
    assert t.launches == pytest.approx((1.0 + 3.0 + 0.02) / (200 * 10e-6), abs=1)
    # Its windows then move by design (a part of the limiter's cycle falling): kept, not rejected as unsettled,
    # and never LIMITED again.
    falling = np.linspace(728, 640, 120)
    assert abs(drift_of(falling)[1]) > LIMIT.unsettled_z
    assert t.judge(falling, 3.0, 10e-6, 90, 10e-6, "x", LIMIT, 2.0) is Verdict.ACCEPTED and t.rejected == []
    assert t.judge(flat(725.0), 3.0, 10e-6, 90, 10e-6, "x", LIMIT, 3.0) is Verdict.ACCEPTED and len(t.values) == 2


def test_below_the_limit_or_with_no_limit_known_the_windows_stay_short():
    below, unknown = fresh(), fresh()
    assert below.judge(flat(660.0), 0.2, 10e-6, 90, 10e-6, "x", LIMIT, 1.0) is Verdict.ACCEPTED  # 94 % of 700 W
    assert unknown.judge(flat(725.0), 0.2, 10e-6, 90, 10e-6, "x", RULES, 1.0) is Verdict.ACCEPTED
    assert not below.at_limit and not unknown.at_limit and below.window_s == unknown.window_s == 0.2


def test_a_restart_keeps_the_largest_set_it_dropped_for_a_run_that_ends_before_the_next_one():
    # Note [Trials a restart dropped]: the run's budget may end right after a restart.
    t = fresh()
    for watts in (300.0, 330.0, 270.0):  # CV 10 %: the window doubles, the three trials are dropped
        judge(t, flat(watts))
    assert t.values == [] and t.window_s == pytest.approx(0.4)
    judge(t, flat(310.0))  # one trial of the longer window: no mean with an interval yet
    values, after, drift, timing, temps, why = t.reported()
    assert [v[0] for v in values] == pytest.approx([300.0, 330.0, 270.0], abs=1.0)  # the dropped set, as judged
    assert len(after) == len(drift) == len(timing) == len(temps) == 3
    assert why.startswith("trials dropped when its trials varied more than target_cv") and "3 of 0.20 s" in why
    assert not t.converged
    judge(t, flat(300.0))  # two of the new window: those are reported, and nothing is said
    assert len(t.reported()[0]) == 2 and t.reported()[-1] == ""
    # A later restart keeps its set aside only where it is larger; one whose state moved says so.
    t.start_again("the launch-latency state moved (-16%)")
    assert len(t.reported()[0]) == 3 and "target_cv" in t.reported()[-1]
    for watts in (300.0, 301.0, 299.0, 300.5):
        t.values.append((watts, 10e-6, 10, 0.4))
    t.start_again("the launch-latency state moved (-16%)")
    assert len(t.reported()[0]) == 4 and "launch-latency state moved (-16%) (4 of 0.40 s" in t.reported()[-1]


def test_every_set_a_restart_dropped_goes_into_the_record_with_its_window_power_time_and_temperature():
    # Note [Trials a restart dropped]: BERT-base's whole model read +1.5 % in the process whose window had grown;
    # the sets its restarts dropped say whether the power moved under it or the longer window read higher.
    t = fresh()
    sets = [(300.0, 330.0, 270.0), (290.0, 335.0, 275.0)]
    for i, watts_set in enumerate(sets):  # CV 10 %: each set doubles the window and is dropped
        for j, watts in enumerate(watts_set):
            t.judge(flat(watts, seed=j), 0.2 * 2 ** i, 10e-6, 90, 10e-6, "x", RULES, 1.0, temperature_c=40.0 + j)
    assert t.restarts == 2 and t.values == []
    assert [d["window_s"] for d in t.dropped_sets] == pytest.approx([0.2, 0.4])
    for d, watts_set in zip(t.dropped_sets, sets):
        assert d["trial_power_w"] == pytest.approx(watts_set, abs=1.0)
        assert d["trial_time_per_call_s"] == pytest.approx([10e-6] * 3)
        assert d["trial_temperature_c"] == [40.0, 41.0, 42.0]
        assert d["why"].startswith("its trials varied more than target_cv")
    # A restart with nothing kept drops nothing; one whose state moved says so.
    t.start_again("the launch-latency state moved (+8%)")
    assert len(t.dropped_sets) == 2
    t.judge(flat(300.0), 0.8, 10e-6, 90, 10e-6, "x", RULES, 1.0, temperature_c=45.0)
    t.start_again("the launch-latency state moved (+8%)")
    assert len(t.dropped_sets) == 3 and t.dropped_sets[-1]["why"] == "the launch-latency state moved (+8%)"
    assert json.loads(json.dumps(t.dropped_sets)) == t.dropped_sets  # a record can hold them as they are


def test_a_capture_that_never_restarted_reports_what_it_has_even_one_trial():
    t = fresh()
    judge(t, flat(300.0))
    assert len(t.reported()[0]) == 1 and t.reported()[-1] == ""
