"""bench/launch_state.py's bookkeeping, on made-up readings (its measuring needs a GPU: tests/test_gpu.py)."""

import os

from bench.launch_state import host_cpu, markdown, summarise

LINK = {"pcie_generation": 5, "pcie_width": 16, "sm_clock_mhz": 1980, "memory_clock_mhz": 3201}


def test_readings_are_grouped_by_whether_the_host_was_busy():
    # The host-load guess of Note [Launch-latency state]: a card's readings before and after the host's CPUs
    # were made busy land in two rows, each with its own median tiny-kernel time.
    rows = [LINK | {"t_s": t, "step_s": 810e-6, "latency_s": lat * 1e-6, "host_load": False}
            for t, lat in [(0.1, 1.21), (0.4, 1.22), (0.7, 1.23)]]
    rows += [LINK | {"t_s": t, "step_s": 690e-6, "latency_s": 1.04e-6, "host_load": True} for t in (30.1, 30.4)]
    (idle, busy), = summarise({"GPU-x": rows}).values()
    assert (idle["host_load"], idle["readings"], busy["host_load"], busy["readings"]) == (False, 3, True, 2)
    assert abs(idle["latency_us"] - 1.22) < 1e-9 and abs(busy["latency_us"] - 1.04) < 1e-9
    assert (busy["first_s"], busy["last_s"]) == (30.1, 30.4)
    res = {"identity": {"gpu": {"name": "H200"}}, "seconds": 60, "stagger_s": 0, "every_s": 0.3,
           "summary": summarise({"GPU-x": rows})}
    lines = markdown(res).splitlines()
    assert any("| yes | 2 | 1.040 | 690.0 |" in x for x in lines) and any("| no | 3 | 1.220 |" in x for x in lines)


def test_the_host_cpu_is_one_this_process_may_run_on():
    here = host_cpu()
    assert here["cpu"] in os.sched_getaffinity(0) and here["cpu_mhz"] >= 0
