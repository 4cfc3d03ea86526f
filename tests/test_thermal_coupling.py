"""bench/thermal_coupling.py's readings from a trace whose truth is known (the trace itself needs two GPUs)."""

import math

import pytest

from bench import thermal_coupling as TC


def _trace(own_after_c: float, observer_rise_c: float) -> dict:
    # 20 s light, 60 s heat, 60 s light, a row every 0.1 s. The neighbour: 40 °C at 120 W, 60 °C at 690 W while
    # it heats, then own_after_c above 40 decaying in 20 s; the observer: 38 °C, observer_rise_c more once its
    # neighbour heats (reached 10 s into the heat), back in 10 s after it.
    nb, ob = [], []
    for k in range(1400):
        t = k / 10
        heating = 20 <= t < 80
        n_c = 60.0 if heating else 40.0 + (own_after_c * math.exp(-(t - 80) / 20) if t >= 80 else 0.0)
        o_c = 38.0 + observer_rise_c * (min(1.0, (t - 20) / 10) if heating else
                                        (max(0.0, 1 - (t - 80) / 10) if t >= 80 else 0.0))
        nb.append([t, n_c, 690.0 if heating else 120.0])
        ob.append([t, o_c, 118.0])
    return {"marks": {"heat_s": 20.0, "after_s": 80.0, "end_s": 139.9},
            "cards": {"observer": ob, "neighbour": nb},
            "identity": {r: {"name": "NVIDIA H200", "uuid": f"GPU-{r}", "driver_version": "x"}
                         for r in ("observer", "neighbour")}}


def test_the_readings_are_the_traces_own():
    s = TC.summarise(_trace(own_after_c=2.0, observer_rise_c=1.5))
    # The neighbour's own heat after its heater, read 3-13 s after it: 2 exp(-t/20) averaged over t in [3, 13].
    expect = 2.0 * 20 / 10 * (math.exp(-3 / 20) - math.exp(-13 / 20))
    assert s["neighbour_own_c"] == pytest.approx(expect, rel=0.02)
    assert s["neighbour_heater_w"] == pytest.approx(690.0)
    assert s["observer_during_heat_c"] == pytest.approx(1.5, rel=0.01)
    assert s["observer_per_100w_c"] == pytest.approx(1.5 / 5.7, rel=0.01)
    md = TC.markdown({"summary": s, "args": {"before": 20, "heat": 60, "after": 60},
                      "trace": _trace(2.0, 1.5), "identity": {"code_version": "abc", "date": "today"}})
    assert "+1.50 °C by the end of the heat" in md and f"read {s['neighbour_own_c']:+.2f} °C after 60 s" in md


def test_bad_choices_are_refused_before_any_gpu_work(capsys):
    assert TC.main(["--gpus", "0"]) == 2
    assert "give two CUDA devices" in capsys.readouterr().err
    assert TC.main(["--gpus", "0,1", "--heat", "5"]) == 2
    assert ">= 13 s each" in capsys.readouterr().err
