"""Benchmark of the native core on a GPU: the sampler and the replay engine.

Writes results/native.json (with card, driver, date) and results/native.md.

1. Sampler: a 10 s window read by the native sampler and, side by side in the
   same window, by a Python thread polling the same NVML calls with pynvml:
   driver samples received vs expected, samples lost, CPU time of each as a
   fraction of one core; and whether the native sampler has every sample the
   Python poller saw.
2. Replay, for a tiny component (LayerNorm on 8x768 bf16), BERT-base's attention
   block (batch 1, sequence 8, fp16) and a 4096^2 bf16 matmul: GPU time per call
   and GPU busy fraction (kernel time per call from the PyTorch profiler / GPU
   time per call) for the native unrolled replay, the native loop of single
   launches, a Python loop of CUDAGraph.replay() and an eager Python loop.

Usage: python bench/native.py [--out results] [--sampler-window-s 10] [--replay-s 0.5]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
import threading
import time

import numpy as np

if __package__ in (None, ""):  # run as a file: import the package bench, not loose files beside this one
    sys.path.pop(0)
    sys.path.append(str(Path(__file__).resolve().parents[1]))

import clear_native as cn  # noqa: E402
from bench.common import kernel_time_in_replay_s, kernel_time_per_call_s, require_gpu, run_identity, write_results  # noqa: E402


# --------------------------------------------------------------------------- sampler
def python_poller(stop: threading.Event, out: dict, drain_s=0.2, status_s=0.1, energy_s=1.0) -> None:
    """What a Python tool does: poll the same NVML calls from a thread, with pynvml."""
    import pynvml as nv

    h = nv.nvmlDeviceGetHandleByPciBusId(cn.cuda_pci_bus_id(0))
    stamps, last_seen = [], int(time.time() * 1e6)
    next_d = next_s = next_e = time.monotonic()
    while not stop.is_set():
        now = time.monotonic()
        if now >= next_d:
            try:
                _, samples = nv.nvmlDeviceGetSamples(h, nv.NVML_TOTAL_POWER_SAMPLES, last_seen)
                for smp in samples:
                    stamps.append(int(smp.timeStamp))
                if len(samples):
                    last_seen = int(samples[-1].timeStamp)
            except nv.NVMLError_NotFound:
                pass
            next_d += drain_s
        if now >= next_s:
            nv.nvmlDeviceGetFieldValues(h, [186])  # NVML_FI_DEV_POWER_INSTANT
            nv.nvmlDeviceGetTemperature(h, nv.NVML_TEMPERATURE_GPU)
            nv.nvmlDeviceGetClockInfo(h, nv.NVML_CLOCK_SM)
            nv.nvmlDeviceGetCurrentClocksEventReasons(h)
            next_s += status_s
        if now >= next_e:
            nv.nvmlDeviceGetTotalEnergyConsumption(h)
            next_e += energy_s
        time.sleep(max(0.0, min(next_d, next_s, next_e) - time.monotonic()))
    out["stamps_us"] = stamps
    out["cpu_s"] = time.thread_time()


def bench_sampler(window_s: float) -> dict:
    import pynvml as nv

    nv.nvmlInit()
    stop, py = threading.Event(), {}
    s = cn.Sampler(device=0)
    s.start()
    t0 = time.monotonic()
    th = threading.Thread(target=python_poller, args=(stop, py))
    th.start()
    time.sleep(window_s)
    stop.set()
    th.join()
    wall = time.monotonic() - t0
    r = s.stop()
    period = r.median_sample_period_s
    # Each Python sample's nearest native one: the same sample unless the driver re-stamps it.
    nat = r.power_wall_us
    py_in = np.array([t for t in py["stamps_us"] if nat[0] <= t <= nat[-1]], dtype=np.int64)
    i = np.clip(np.searchsorted(nat, py_in), 1, nat.size - 1)
    nearest_us = np.minimum(np.abs(nat[i] - py_in), np.abs(nat[i - 1] - py_in)) if py_in.size else py_in
    return {
        "window_s": r.duration_s,
        "median_sample_period_ms": period * 1e3,
        "native": {
            "samples_received": int(r.power_mw.size),
            "samples_expected": int(round(r.duration_s / period)),
            "samples_lost": r.samples_lost,
            "sensor_gaps": r.sensor_gaps,
            "driver_buffer_capacity": r.driver_buffer_capacity,
            "drains": r.drains,
            "duplicates_dropped": r.duplicates,
            "max_drain_interval_ms": r.max_drain_interval_ns * 1e-6,
            "energy_reads": int(r.energy_mj.size),
            "energy_read_ms_median": float(np.median(r.energy_call_ns)) * 1e-6,
            "energy_read_ms_p99": float(np.percentile(r.energy_call_ns, 99)) * 1e-6,
            "status_reads": int(r.status_t_ns.size),
            "fast_thread_cpu_s": r.fast_thread_cpu_s,
            "energy_thread_cpu_s": r.energy_thread_cpu_s,
            "cpu_fraction_of_one_core": r.sampler_cpu_fraction,
            "clock_drift_us": r.clock_drift_ns * 1e-3,
        },
        "python_pynvml": {
            "samples_received": len(py["stamps_us"]),
            "cpu_s": py["cpu_s"],
            "cpu_fraction_of_one_core": py["cpu_s"] / wall,
            "samples_in_native_window": int(py_in.size),
            "same_stamp_in_native": int((nearest_us == 0).sum()),
            "native_sample_within_1ms": int((nearest_us <= 1000).sum()),
            "no_native_sample_within_1ms": int((nearest_us > 1000).sum()),
            "nearest_native_us_max": int(nearest_us.max()) if py_in.size else 0,
        },
    }


# --------------------------------------------------------------------------- replay
def timed_python_loop(torch, body, seconds: float) -> tuple[float, int]:
    """GPU time per call of a Python loop of `body`, with CUDA events around it."""
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    with torch.no_grad():
        n = 50
        while True:
            torch.cuda.synchronize()
            t = time.perf_counter()
            start.record()
            for _ in range(n):
                body()
            end.record()
            torch.cuda.synchronize()
            wall = time.perf_counter() - t
            if wall >= seconds or n >= 10_000_000:
                return start.elapsed_time(end) * 1e-3 / n, n
            n = int(n * min(100.0, 1.2 * seconds / max(wall, 1e-6))) + 1


def workloads(torch):
    bf16, fp16 = torch.bfloat16, torch.float16

    def layernorm():
        ln = torch.nn.LayerNorm(768, device="cuda", dtype=bf16)
        x = torch.randn(8, 768, device="cuda", dtype=bf16)
        return ln, (x,)

    def bert_attention():
        from transformers import BertConfig, BertModel

        model = BertModel(BertConfig()).to(device="cuda", dtype=fp16).eval()
        x = torch.randn(1, 8, 768, device="cuda", dtype=fp16)
        return model.encoder.layer[5].attention, (x,)

    def matmul():
        a = torch.randn(4096, 4096, device="cuda", dtype=bf16)
        b = torch.randn(4096, 4096, device="cuda", dtype=bf16)
        return torch.matmul, (a, b)

    return {"layernorm_8x768_bf16": layernorm, "bert_base_attention_b1_s8_fp16": bert_attention,
            "matmul_4096_bf16": matmul}


def _same_output(torch, cap, call) -> bool:
    """The captured graph computes what the callable computes (first tensor of the output)."""
    first = lambda o: o if isinstance(o, torch.Tensor) else o[0]  # noqa: E731
    cap.run_once()
    torch.cuda.synchronize()
    with torch.no_grad():
        ref = first(call())
    return bool(torch.allclose(first(cap.outputs).float(), ref.float(), rtol=1e-2, atol=1e-2))


def bench_replay(torch, name, build, seconds: float) -> dict:
    fn, args = build()
    call = lambda: fn(*args)  # noqa: E731
    eager_kernel_s = kernel_time_per_call_s(torch, call)
    cap = cn.capture(fn, *args, name=name)
    probe = cn.replay(cap.exec_handle, 200)
    k = int(np.clip(round(2e-3 / probe.gpu_time_per_call_s), 1, 2000))  # ~2 ms per unrolled launch
    unrolled = cn.UnrolledGraph(cap.graph_handle, k)
    launches = max(3, int(seconds / (k * probe.gpu_time_per_call_s)))
    cn.replay(unrolled, max(3, launches // 2))  # warm to the sustained clock
    kernel_s = kernel_time_in_replay_s(torch, unrolled, max(3, launches // 5)) or eager_kernel_s
    u = cn.replay(unrolled, launches)
    single = cn.replay(cap.exec_handle, launches * k)
    py_graph_s, py_graph_n = timed_python_loop(torch, cap.graph.replay, seconds)
    eager_s, eager_n = timed_python_loop(torch, call, seconds)
    rows = {
        "native_unrolled": (u.gpu_time_per_call_s, u.calls),
        "native_single_launches": (single.gpu_time_per_call_s, single.calls),
        "python_graph_replay_loop": (py_graph_s, py_graph_n),
        "python_eager_loop": (eager_s, eager_n),
    }
    return {
        "kernel_time_per_call_us": kernel_s * 1e6,  # inside the sustained native replay
        "kernel_time_per_call_eager_us": eager_kernel_s * 1e6,  # 50 eager calls, from cold
        "output_check": "graph output equals eager output" if _same_output(torch, cap, call) else "MISMATCH",
        "unroll_copies": k,
        "methods": {m: {"gpu_time_per_call_us": t * 1e6, "calls": n, "busy_fraction": kernel_s / t}
                    for m, (t, n) in rows.items()},
    }


def markdown(res: dict) -> str:
    g, s = res["gpu"], res["sampler"]
    lines = [f"# Native core on {g['name']} (driver {g['driver_version']}), {res['date']}", "",
             f"## Sampler: {s['window_s']:.1f} s window, median sample period {s['median_sample_period_ms']:.1f} ms", "",
             "| reader | samples received | expected | lost | CPU, % of one core |", "|---|---|---|---|---|"]
    n, p = s["native"], s["python_pynvml"]
    lines.append(f"| native sampler (2 threads) | {n['samples_received']} | {n['samples_expected']} | "
                 f"{n['samples_lost']} | {100 * n['cpu_fraction_of_one_core']:.2f} |")
    lines.append(f"| Python thread, pynvml | {p['samples_received']} | {n['samples_expected']} | "
                 f"{p['no_native_sample_within_1ms']} of its samples have no native sample within 1 ms | "
                 f"{100 * p['cpu_fraction_of_one_core']:.2f} |")
    lines += ["", f"Energy counter reads: median {n['energy_read_ms_median']:.2f} ms, p99 "
              f"{n['energy_read_ms_p99']:.2f} ms (own thread; CPU: fast thread {n['fast_thread_cpu_s']:.3f} s, "
              f"energy thread {n['energy_thread_cpu_s']:.3f} s); longest interval between drains "
              f"{n['max_drain_interval_ms']:.0f} ms; driver buffer {n['driver_buffer_capacity']} samples.", "",
              "## Replay: GPU time per call (µs) and GPU busy fraction", "",
              "Busy fraction = kernel time per call (PyTorch profiler, inside a sustained native replay) "
              "/ GPU time per call of the method (CUDA events).", "",
              "| component | kernel µs/call | K | native unrolled | native single launches | Python graph.replay() loop | Python eager loop |",
              "|---|---|---|---|---|---|---|"]
    for name, r in res["replay"].items():
        if "error" in r:
            lines.append(f"| {name} | failed: {r['error']} | | | | | |")
            continue
        cells = [f"{m['gpu_time_per_call_us']:.2f} ({m['busy_fraction']:.2f})" for m in r["methods"].values()]
        lines.append(f"| {name} | {r['kernel_time_per_call_us']:.2f} | {r['unroll_copies']} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default="results", help="folder for native.json and native.md")
    ap.add_argument("--sampler-window-s", type=float, default=10.0)
    ap.add_argument("--replay-s", type=float, default=0.5, help="GPU seconds per replay method")
    a = ap.parse_args(argv)
    torch = require_gpu("bench/native.py")
    res = run_identity(torch)
    print(f"{res['gpu']['name']}, driver {res['gpu']['driver_version']}: sampler window {a.sampler_window_s} s ...",
          flush=True)
    res["sampler"] = bench_sampler(a.sampler_window_s)
    res["replay"] = {}
    for name, build in workloads(torch).items():
        print(f"replay: {name} ...", flush=True)
        try:
            res["replay"][name] = bench_replay(torch, name, build, a.replay_s)
        except Exception as exc:  # noqa: BLE001 - one failure must not lose the other results
            res["replay"][name] = {"error": f"{type(exc).__name__}: {exc}"}
    write_results(a.out, "native", res, markdown(res))
    return 0


if __name__ == "__main__":
    sys.exit(main())
