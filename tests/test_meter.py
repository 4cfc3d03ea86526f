"""Meter: a code region's energy. Each test here pins a bug found in review (issue 12).
On the virtual clock (Note [Virtual time])."""

import pytest

import clear_native as cn


@pytest.fixture(autouse=True)
def virtual_clock():
    with cn.clock.virtual():
        yield

FAST = dict(sample_period_s=0.002, period_jitter_s=0.0004, window_s=0.0005, lag_s=0.0015, noise_w=1.0,
            energy_update_s=0.01, energy_read_delay_s=0.0, status_update_s=0.01, idle_w=80.0)


def test_the_window_waits_for_queued_work():
    # The region only queues work (as kernels are queued); the GPU keeps drawing 300 W until the
    # queue drains, which is what sync() waits for. A window that closed when the host left the
    # region measured ~0 s of it.
    src = cn.synthetic_sensor(**FAST)
    drained = []

    def sync():  # stands in for torch.cuda.synchronize: returns once the queued work is done
        if src.true_power_w(cn.clock.now_ns()) > 200:
            cn.clock.sleep(0.25)
            src.set_power(src.params.idle_w)
            drained.append(True)

    with cn.Meter(source=src, sync=sync, drain_interval_s=0.02) as m:
        src.set_power(300.0)  # "launch" the work and leave the region at once
    r = m.result
    assert drained == [True]
    assert r.duration_s >= 0.25
    assert r.energy_j == pytest.approx(300.0 * 0.25, rel=0.1)


def test_the_body_exception_is_never_hidden_by_a_sampler_error():
    src = cn.synthetic_sensor(**FAST, fail_after_reads=20, fail_code=15)  # the GPU is lost after 20 reads
    with pytest.raises(ValueError, match="the body's own error"):
        with cn.Meter(source=src, sync=None, drain_interval_s=0.005):
            cn.clock.sleep(0.2)  # the sampler fails meanwhile
            raise ValueError("the body's own error")


def test_a_sampler_error_without_a_body_error_is_raised():
    src = cn.synthetic_sensor(**FAST, fail_after_reads=20, fail_code=15)
    with pytest.raises(cn.errors.NvmlGpuLostError):
        with cn.Meter(source=src, sync=None, drain_interval_s=0.005):
            cn.clock.sleep(0.2)


@pytest.mark.parametrize("device", [0, "cuda", "cuda:0"])
def test_device_is_an_index_or_a_cuda_name(device):
    src = cn.synthetic_sensor(**FAST)
    with cn.Meter(device, source=src, sync=None) as m:
        cn.clock.sleep(0.05)
    assert m.result.duration_s >= 0.05


@pytest.mark.parametrize("device", ["gpu0", "cpu", True, 1.5])
def test_a_bad_device_is_a_type_error_that_says_what_is_accepted(device):
    with pytest.raises(TypeError, match="cuda:N"):
        cn.Meter(device, source=cn.synthetic_sensor(**FAST), sync=None)


def test_a_region_over_several_gpus_is_one_window_with_each_gpus_energy():
    # Two GPUs of a tensor-parallel step: one draws 300 W, the other 200 W for 0.4 s, then both rest.
    a, b = cn.synthetic_sensor(**FAST), cn.synthetic_sensor(**FAST, seed=7)
    with cn.Meter(sources=[a, b], sync=None, drain_interval_s=0.02) as m:
        t0 = cn.clock.now_ns()
        a.set_power(300.0, t0)
        b.set_power(200.0, t0)
        cn.clock.sleep(0.4)
        t1 = cn.clock.now_ns()
        a.set_power(a.params.idle_w, t1)
        b.set_power(b.params.idle_w, t1)
    r = m.result
    assert isinstance(r, cn.MultiMeterResult) and len(r.per_device) == 2
    assert r.per_device[0].duration_s == r.per_device[1].duration_s == r.duration_s  # one window, one clock
    truth = [src.true_energy_j(t1 - int(r.duration_s * 1e9), t1) for src in (a, b)]
    assert [d.energy_j for d in r.per_device] == pytest.approx(truth, rel=0.03)
    assert r.energy_j == pytest.approx(sum(truth), rel=0.03)
    assert r.counter_energy_j == pytest.approx(sum(truth), rel=0.1)


def test_several_devices_need_a_source_each():
    with pytest.raises(ValueError, match="one per device"):
        cn.Meter(devices=[0, 1], sources=[cn.synthetic_sensor(**FAST)], sync=None)
