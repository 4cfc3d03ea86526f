"""The native sampler against the synthetic sensor, whose truth is known."""

import dataclasses
import math
import time

import numpy as np
import pytest

import clear_native as cn
from clear_native import errors

# A sensor 10x faster than Hopper's (2 ms samples, 119-sample buffer = 0.24 s),
# so that draining and overflow are exercised in a fraction of a second.
FAST = dict(sample_period_s=0.002, period_jitter_s=0.0004, window_s=0.0005, lag_s=0.001,
            energy_update_s=0.01, energy_read_delay_s=0.0, status_update_s=0.01)


def produced(src, first_stamp_us: int, last_stamp_us: int) -> int:
    """How many samples the model produced with stamps in [first, last + 1].

    (+1: a read may report a sample's stamp 1 µs early, as the real driver does.)
    """
    last_stamp_us += 1
    k = 1
    while src.sample_stamp_us(k) < first_stamp_us:
        k += 1
    n = 0
    while src.sample_stamp_us(k) <= last_stamp_us:
        n, k = n + 1, k + 1
    return n


def test_start_stop_cycles():
    src = cn.synthetic_sensor(**FAST)
    s = cn.Sampler(source=src, drain_interval_s=0.02, status_interval_s=0.01, energy_interval_s=0.02,
                   max_duration_s=5)
    for _ in range(25):
        s.start()
        time.sleep(0.03)
        r = s.stop()
        assert r.power_mw.size >= 5
        assert r.energy_mj.size >= 2
        assert r.status_t_ns.size >= 1
        assert r.samples_lost == 0
        assert np.all(np.diff(r.power_t_ns) > 0)
        assert r.start_ns <= r.stop_ns


def test_lossless_draining_of_a_10s_stream_through_a_2_4s_buffer():
    # Hopper-like sensor: a sample every ~20 ms, the driver keeps 119 (~2.4 s).
    src = cn.synthetic_sensor(noise_w=3.0, energy_read_delay_s=0.0025)
    assert src.sample_buffer_capacity == 119
    s = cn.Sampler(source=src)  # default cadence: drain every 200 ms
    s.start()
    time.sleep(10.0)
    r = s.stop()
    assert r.duration_s >= 10.0
    assert r.samples_lost == 0
    assert r.gap_after_ns.size == 0
    assert r.duplicates > 0  # the sensor re-stamps samples by 1 µs: each repeat was dropped
    assert np.all(np.diff(r.power_wall_us) > 1000)
    assert r.power_mw.size == produced(src, int(r.power_wall_us[0]), int(r.power_wall_us[-1]))
    assert r.power_mw.size >= 10.0 / 0.020 - 2
    assert r.median_sample_period_s == pytest.approx(0.020, abs=0.002)
    assert r.driver_buffer_capacity == 119
    assert r.max_drain_interval_ns < 0.3e9


def test_starved_draining_is_detected_as_lost_samples():
    src = cn.synthetic_sensor(**FAST)
    s = cn.Sampler(source=src, drain_interval_s=0.5, max_duration_s=5)  # buffer holds 0.24 s
    s.start()
    time.sleep(1.2)
    r = s.stop()
    assert r.gap_overflow.size >= 1 and r.gap_overflow.all()
    start_wall_us = (r.start_ns + r.clock_offset_ns) // 1000
    truth = produced(src, start_wall_us + 1, int(r.power_wall_us[-1]))
    missing = truth - r.power_mw.size
    assert missing > 100
    # The estimate counts spacings, the truth samples: they agree to a sample per gap.
    assert abs(r.samples_lost - missing) <= r.gap_lost.size + 1
    # Never interpolated: what we return is only what the driver gave.
    assert r.power_mw.size < truth


def test_wall_clock_stamps_are_mapped_onto_the_monotonic_clock():
    offset = 1_700_000_000_123_456_789
    src = cn.synthetic_sensor(**FAST, wall_offset_ns=offset)
    s = cn.Sampler(source=src, drain_interval_s=0.02, max_duration_s=5)
    s.start()
    time.sleep(0.3)
    r = s.stop()
    assert abs(r.clock_offset_ns - offset) < 100_000  # measured, within the bracket of two reads
    assert abs(r.clock_drift_ns) < 100_000
    k = 1
    while abs(src.sample_stamp_us(k) - r.power_wall_us[0]) > 1:  # a read may stamp 1 µs early
        k += 1
    truth = np.array([src.sample_time_ns(k + i) for i in range(r.power_t_ns.size)])
    assert np.abs(r.power_t_ns - truth).max() < 3_000 + r.clock_offset_uncertainty_ns  # µs stamps


def test_window_statistics_recover_the_truth():
    src = cn.synthetic_sensor(**FAST, noise_w=5.0, idle_w=90.0)
    s = cn.Sampler(source=src, drain_interval_s=0.02, energy_interval_s=0.01, max_duration_s=5)
    s.start()
    t_load = cn._native.core.monotonic_ns() + 100_000_000
    src.set_power(400.0, t_load)
    time.sleep(0.9)
    r = s.stop()
    t0, t1 = t_load + 50_000_000, r.stop_ns - 50_000_000
    assert r.mean_power_w(t0, t1) == pytest.approx(400.0, rel=0.01)
    a, b = r.sample_span_ns(t0, t1)
    assert r.sample_integral_j(t0, t1) == pytest.approx(src.true_energy_j(a, b), rel=0.01)
    # The counter steps every 10 ms: over ~0.7 s it is good to a step or two.
    assert r.counter_energy_j(t0, t1) == pytest.approx(src.true_energy_j(t0, t1), rel=0.03)
    assert np.nanmax(r.temperature_c) == 45 and np.nanmax(r.sm_clock_mhz) == 1980


def test_a_blocking_energy_counter_does_not_stall_the_drains():
    # Each energy-counter read blocks 250 ms. Drains every 20 ms on their own thread: a drain stalled behind a
    # read would show a gap of >= 250 ms. The bound leaves room for a loaded host's scheduling (a 40 ms bound
    # with a 50 ms read failed at 49.6 ms with two CI runs on one machine), and stays far below a stall.
    src = cn.synthetic_sensor(**{**FAST, "energy_read_delay_s": 0.25})
    s = cn.Sampler(source=src, drain_interval_s=0.02, energy_interval_s=0.02, max_duration_s=5)
    s.start()
    time.sleep(1.0)
    r = s.stop()
    assert r.energy_call_ns.size >= 2 and r.energy_call_ns.min() >= 250_000_000
    assert r.max_drain_interval_ns < 150_000_000


def test_thread_errors_are_raised_from_stop_with_the_rows_so_far():
    src = cn.synthetic_sensor(**FAST, fail_after_reads=5, fail_code=15)
    s = cn.Sampler(source=src, drain_interval_s=0.02, max_duration_s=5)
    s.start()
    time.sleep(0.3)
    with pytest.raises(errors.NvmlGpuLostError) as info:
        s.stop()
    assert info.value.result.power_mw.size > 0
    assert not s.running


def test_full_buffers_raise_capacity_error_and_keep_what_fit():
    src = cn.synthetic_sensor(**FAST)
    s = cn.Sampler(source=src, drain_interval_s=0.02, max_duration_s=0.1)  # room for ~400 samples
    s.start()
    time.sleep(1.2)  # ~600 samples
    with pytest.raises(errors.SamplerCapacityError) as info:
        s.stop()
    assert info.value.result.power_mw.size > 0


def test_misuse_and_bad_arguments():
    src = cn.synthetic_sensor(**FAST)
    s = cn.Sampler(source=src, max_duration_s=5)
    with pytest.raises(errors.SamplerStateError):
        s.stop()
    with s:
        with pytest.raises(errors.SamplerStateError):
            s.start()
    assert s.result is not None
    with pytest.raises(ValueError, match="drain_interval_s"):
        cn.Sampler(source=src, drain_interval_s=0)
    with pytest.raises(TypeError, match="unknown parameter"):
        cn.synthetic_sensor(sample_period=0.02)
    with pytest.raises(ValueError, match="jitter"):
        cn.synthetic_sensor(sample_period_s=0.002, period_jitter_s=0.002)


def test_result_serialises():
    import json

    src = cn.synthetic_sensor(**FAST)
    with cn.Sampler(source=src, max_duration_s=5) as s:
        time.sleep(0.05)
    d = s.result.to_dict()
    json.dumps(d)
    assert d["source"] == "synthetic sensor"
    assert len(d["power_mw"]) == s.result.power_mw.size


def test_snapshot_while_running_and_waiting_for_samples():
    src = cn.synthetic_sensor(**FAST)
    s = cn.Sampler(source=src, drain_interval_s=5.0, max_duration_s=5)  # drains only on request
    s.start()
    t = cn._native.core.monotonic_ns() + 100_000_000
    assert s.wait_for_samples(t, timeout_s=1.0)
    snap = s.snapshot()
    assert snap.power_t_ns[-1] >= t
    assert snap.stop_ns == 0 and snap.samples_lost == 0
    assert not s.wait_for_samples(t + 10_000_000_000, timeout_s=0.05)  # 10 s ahead: times out
    r = s.stop()
    assert r.power_t_ns.size >= snap.power_t_ns.size
    np.testing.assert_array_equal(r.power_t_ns[: snap.power_t_ns.size], snap.power_t_ns)


def test_a_windows_status_says_its_temperature_clocks_and_clock_events():
    # Status rows every 0.1 s from t = 0: temperature 40, 41, ... °C, SM clock 1980 then 1500 MHz from 0.5 s,
    # sw_power_cap (0x4) from 0.5 s and gpu_idle (0x1) at 0.9 s; one row with no temperature (NaN) at 0.3 s.
    from clear_native.sampler import SamplerResult

    n = 10
    t = np.arange(n, dtype=np.int64) * 100_000_000
    temp = 40.0 + np.arange(n)
    temp[3] = math.nan
    reasons = np.array([0] * 5 + [0x4] * 4 + [0x5], dtype=np.uint64)
    empty = np.array([], dtype=np.int64)
    r = SamplerResult(**{f.name: empty for f in dataclasses.fields(SamplerResult)} | dict(
        source="test", status_t_ns=t, temperature_c=temp, sm_clock_mhz=np.where(t < 500_000_000, 1980.0, 1500.0),
        clock_event_reasons=reasons, start_ns=0, stop_ns=int(t[-1])))
    ms = 1_000_000
    assert r.temperature_in(0, 250 * ms) == 41.0                 # the rows inside: 40, 41, 42
    assert r.temperature_in(310 * ms, 390 * ms) == 42.0          # none inside: the last row before it with one
    assert r.temperature_moved_c(0, 900 * ms) == 9.0 and math.isnan(r.temperature_moved_c(850 * ms, 950 * ms))
    assert r.clock_events_in(0, 450 * ms) == [] and r.clock_events_in(400 * ms, 600 * ms) == ["sw_power_cap"]
    assert r.clock_events_in(0, 900 * ms) == ["gpu_idle", "sw_power_cap"]
    assert r.sm_clock_range_mhz(0, 900 * ms) == [1500.0, 1980.0] and r.sm_clock_range_mhz(950 * ms, 990 * ms) == []
