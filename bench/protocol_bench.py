"""Benchmark of the measurement protocol on a GPU.

Writes results/protocol.json (card, driver, date, sensor profile) and results/protocol.md:
1. linearity: captures of k = 1, 2, 4 chained 1024^2 bf16 matmuls: energy ratios vs k;
2. precision: CV over >= 10 trials for BERT-base's intermediate block (~5 us), attention
   block (~28 us) and whole model (~1 ms) at batch 1, sequence 8, fp16, and the wall
   time each took to reach the CI target;
3. energy counter vs the integral of the samples, for every run;
4. side by side with the CLEAR authors' reference loop on BERT-base's attention block:
   energy per call, CV, GPU busy fraction, wall time.

Usage: python bench/protocol_bench.py [--out results] [--ref-trials 20] [--ref-calls 10000]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
import time

if __package__ in (None, ""):  # run as a file: import the package bench, not loose files beside this one
    sys.path.pop(0)
    sys.path.append(str(Path(__file__).resolve().parents[1]))

import clear_native as cn  # noqa: E402
from bench.common import kernel_time_in_replay_s, kernel_time_per_call_s, require_gpu, run_identity, write_results  # noqa: E402


def say(msg: str) -> None:
    print(f"  {msg}", flush=True)


def linearity(torch, profile) -> dict:
    a = torch.randn(1024, 1024, device="cuda", dtype=torch.bfloat16)
    b = torch.randn(1024, 1024, device="cuda", dtype=torch.bfloat16) / 32  # keeps chained values in range

    def chain(k):
        def f(x, w):
            for _ in range(k):
                x = x @ w
            return x
        return f

    caps = [cn.capture(chain(k), a, b, name=f"matmul1024_x{k}") for k in (1, 2, 4)]
    run = cn.measure(caps, profile=profile, min_trials=10, target_ci_rel=0.005, budget_s=120, progress=say)
    e1 = run["matmul1024_x1"].energy_per_call_j
    ratios = {m.name: m.energy_per_call_j / e1 for m in run.measurements}
    return {"run": run.to_dict(), "energy_ratio_to_k1": ratios,
            "ratio_error_rel": {n: r / k - 1 for (n, r), k in zip(ratios.items(), (1, 2, 4))}}


def bert(torch):
    from transformers import BertConfig, BertModel

    model = BertModel(BertConfig()).to(device="cuda", dtype=torch.float16).eval()
    ids = torch.randint(0, 30000, (1, 8), device="cuda")
    x = torch.randn(1, 8, 768, device="cuda", dtype=torch.float16)
    layer = model.encoder.layer[5]
    return model, ids, x, layer


def precision(torch, profile, model, ids, x, layer) -> dict:
    caps = [cn.capture(layer.intermediate, x, name="bert_intermediate"),
            cn.capture(layer.attention, x, name="bert_attention"),
            cn.capture(model, ids, name="bert_whole_model")]
    run = cn.measure(caps, profile=profile, min_trials=10, target_ci_rel=0.005, budget_s=180, progress=say)
    return {"run": run.to_dict(), "captures": caps}


def reference(torch, attention, x, trials: int, calls: int) -> dict:
    ref = cn.baselines.counter_loop(attention, x, n=calls, trials=trials)
    kernel_s = kernel_time_per_call_s(torch, lambda: attention(x))
    return {**ref.to_dict(), "kernel_time_per_call_s": kernel_s,
            "gpu_busy_fraction": kernel_s / ref.wall_time_per_call_s,
            "wall_time_s": trials * (calls * ref.wall_time_per_call_s + 0.5)}


def markdown(res: dict) -> str:
    g, p = res["gpu"], res["profile"]
    lines = [f"# Measurement protocol on {g['name']} (driver {g['driver_version']}), {res['date']}", "",
             f"Sensor profile: sample period {p['sample_period_s'] * 1e3:.1f} ms, rise lag {p['rise_lag_s'] * 1e3:.0f} ms, "
             f"settle {p['settle_s'] * 1e3:.0f} ms (overshoot x{p['overshoot_ratio']:.2f}), energy counter every "
             f"{p['energy_counter_update_s'] * 1e3:.0f} ms, idle {p['idle_power_w']:.0f} W, calibration load "
             f"{p['loaded_power_w']:.0f} W.", "", "## Linearity (k chained 1024² bf16 matmuls)", "",
             "| capture | energy/call | ratio to k=1 | error vs k | CV | trials |", "|---|---|---|---|---|---|"]
    lin = res["linearity"]
    for m in lin["run"]["measurements"]:
        lines.append(f"| {m['name']} | {m['energy_per_call_j'] * 1e3:.4f} mJ | {lin['energy_ratio_to_k1'][m['name']]:.4f} | "
                     f"{lin['ratio_error_rel'][m['name']] * 100:+.2f} % | {m['cv'] * 100:.3f} % | {m['trials']} |")
    lines += ["", "## Precision (BERT-base, batch 1, sequence 8, fp16; target ±0.5 % CI)", "",
              "| capture | GPU time/call | K | energy/call | ±95 % | CV | trials | time to target |",
              "|---|---|---|---|---|---|---|---|"]
    for m in res["precision"]["run"]["measurements"]:
        lines.append(f"| {m['name']} | {m['gpu_time_per_call_s'] * 1e6:.2f} µs | {m['unroll']} | "
                     f"{m['energy_per_call_j'] * 1e3:.4f} mJ | {m['ci95_rel'] * 100:.3f} % | {m['cv'] * 100:.3f} % | "
                     f"{m['trials']} | {m['time_to_target_s']:.1f} s |")
    lines += ["", "## Energy counter vs integral of the samples", "", "| run | counter | samples | difference |",
              "|---|---|---|---|"]
    for name in ("linearity", "precision"):
        r = res[name]["run"]
        lines.append(f"| {name} | {r['counter_energy_j']:.1f} J | {r['sample_energy_j']:.1f} J | "
                     f"{r['counter_vs_samples_rel'] * 100:+.2f} % |")
    att = next(m for m in res["precision"]["run"]["measurements"] if m["name"] == "bert_attention")
    ref = res["reference"]
    lines += ["", "## BERT-base attention block: clear_native vs the CLEAR authors' loop", "",
              "| method | energy/call | CV | GPU busy | wall time |", "|---|---|---|---|---|",
              f"| clear_native | {att['energy_per_call_j'] * 1e3:.4f} mJ | {att['cv'] * 100:.3f} % | "
              f"{res['attention_busy_fraction']:.2f} | {att['time_to_target_s']:.1f} s to ±0.5 % (in a run shared with 2 other captures) |",
              f"| counter loop ({ref['trials']} x {ref['calls_per_trial']} calls) | {ref['energy_per_call_j'] * 1e3:.4f} mJ | "
              f"{ref['cv'] * 100:.2f} % | {ref['gpu_busy_fraction']:.2f} | {ref['wall_time_s']:.1f} s |"]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default="results")
    ap.add_argument("--ref-trials", type=int, default=20)
    ap.add_argument("--ref-calls", type=int, default=10_000)
    a = ap.parse_args(argv)
    torch = require_gpu("bench/protocol_bench.py")
    res = run_identity(torch)
    t0 = time.monotonic()
    print("calibrating the sensor ...", flush=True)
    profile = cn.calibrate(cache=False)
    res["profile"] = profile.to_dict()
    print("linearity ...", flush=True)
    res["linearity"] = linearity(torch, profile)
    model, ids, x, layer = bert(torch)
    print("precision ...", flush=True)
    prec = precision(torch, profile, model, ids, x, layer)
    att_cap = prec.pop("captures")[1]
    res["precision"] = prec
    att = next(m for m in prec["run"]["measurements"] if m["name"] == "bert_attention")
    unrolled = cn.UnrolledGraph(att_cap.graph_handle, att["unroll"])
    launches = max(3, int(0.2 / (att["unroll"] * att["gpu_time_per_call_s"])))
    res["attention_busy_fraction"] = kernel_time_in_replay_s(torch, unrolled, launches) / att["gpu_time_per_call_s"]
    print("reference loop ...", flush=True)
    res["reference"] = reference(torch, layer.attention, x, a.ref_trials, a.ref_calls)
    res["bench_wall_s"] = time.monotonic() - t0
    write_results(a.out, "protocol", res, markdown(res))
    return 0


if __name__ == "__main__":
    sys.exit(main())
