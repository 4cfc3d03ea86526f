"""The study on every GPU of a host vs one GPU, and the energy of a region that spans GPUs (issue 15);
writes results/scale.json and .md.

1. The first ``--tasks`` tasks of the study's plan, measured by `bench/run.py` on one GPU (in one
   process, as a single-GPU run does), then with `--gpus all` (one fresh process per task, every GPU
   busy): wall times, speedup, and each part's difference between the two. A task that ran on the
   same card both ways shows what busy neighbours do to a measurement; on other cards the difference
   is the card's (normalised with the factors of results/reproducibility.json where given).
2. A tensor-parallel MLP forward over NCCL on two GPUs (Megatron-style: column- then row-parallel,
   one all-reduce), measured by Meter(devices=[0, 1]): per-GPU and total energy on one clock.

Usage:
  python bench/scale.py                         # both, on this host's GPUs
  python bench/scale.py --meter-only            # only the two-GPU region
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.pop(0)
    sys.path.append(str(Path(__file__).resolve().parents[1]))

from bench import store, suite, uncertainty as U  # noqa: E402
from bench.common import write_results  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
RUN_FLAGS = ["--sweeps", "none", "--no-card-check", "--no-repeats", "--no-reference"]


def timed_run(extra: list, ids: list, out: Path) -> tuple:
    """(wall seconds, run folder) of one bench/run.py invocation over ``ids``."""
    cmd = [sys.executable, str(ROOT / "bench" / "run.py"), *RUN_FLAGS, "--only", ",".join(ids), "--out", str(out),
           *extra]
    print("$ " + " ".join(cmd), flush=True)
    t0 = time.monotonic()
    p = subprocess.run(cmd, env=dict(os.environ, PYTHONUNBUFFERED="1"))
    wall = time.monotonic() - t0
    if p.returncode != 0:
        raise SystemExit(f"bench/scale.py: bench/run.py exited {p.returncode}")
    return wall, store.runs_under(out)[0]


def compare(single: list, multi: list, factors: dict | None) -> dict:
    """Each part of each task measured both ways: the relative difference, same card or normalised."""
    one = {r["task"]["id"]: r for r in single if r.get("status") == "ok"}
    rows = []
    for r in multi:
        if r.get("status") != "ok" or r["task"]["id"] not in one:
            continue
        s = one[r["task"]["id"]]
        c1, cn_ = s["identity"]["gpu"]["uuid"], r["identity"]["gpu"]["uuid"]
        a, b = U.measurements(s), U.measurements(r)
        for name in a.keys() & b.keys():
            e1, en = a[name][0], b[name][0]
            f = None
            if c1 != cn_ and factors and c1 in factors and cn_ in factors:
                f = factors[cn_]["one"] / factors[c1]["one"]
            rows.append({"task": r["task"]["id"], "part": name, "gpu_time_s": a[name][2], "same_card": c1 == cn_,
                         "card_single": c1, "card_multi": cn_, "rel_diff": U.rel_diff(e1, en),
                         "rel_diff_normalised": U.rel_diff(e1, en / f) if f else (U.rel_diff(e1, en) if c1 == cn_
                                                                                  else math.nan),
                         "ci95_rel": max(a[name][1], b[name][1])})
    return {"rows": rows}


def analyse_runs(f1: Path, fn: Path, w1: float, wn: float, ids: list, fpath: Path) -> dict:
    """scale.json's comparison of the single-GPU run ``f1`` and the all-GPU run ``fn``."""
    single, multi = store.load(f1), store.load(fn)
    factors = json.loads(fpath.read_text()).get("card_factors") if fpath.exists() else None
    rows = compare(single, multi, factors)["rows"]
    same = [r for r in rows if r["same_card"]]
    res = {"gpus": len({r["identity"]["gpu"]["uuid"] for r in multi if "identity" in r}),
           "cards": sorted({r["identity"]["gpu"]["uuid"] for r in multi if "identity" in r}),
           "tasks": ids, "wall_s_1": w1, "wall_s_n": wn, "speedup": w1 / wn,
           "runs": {"single": str(f1), "multi": str(fn)},
           "task_wall_s_sum": {"single": sum(r.get("wall_s", 0) for r in single),
                               "multi": sum(r.get("wall_s", 0) for r in multi)},
           "max_rel_diff_same_card": _max_abs(same, "rel_diff"),
           "max_rel_diff_normalised": _max_abs([r for r in rows if not r["same_card"]], "rel_diff_normalised"),
           "max_rel_diff_raw_other_cards": _max_abs([r for r in rows if not r["same_card"]], "rel_diff"),
           "median_abs_diff_same_card": statistics.median([abs(r["rel_diff"]) for r in same]) if same else math.nan,
           "rows": rows, "factors_from": str(fpath) if factors else None}
    vals = [x for x in (res["max_rel_diff_same_card"], res["max_rel_diff_normalised"]) if not math.isnan(x)]
    res["max_rel_diff_vs_single"] = max(vals) if vals else math.nan
    return res


def _max_abs(rows, key, min_time_s=5e-6) -> float:
    vals = [abs(r[key]) for r in rows if r["gpu_time_s"] >= min_time_s and not math.isnan(r[key])]
    return max(vals, default=math.nan)


# --------------------------------------------------------------------------- a region over two GPUs


def tp_meter(torch, hidden: int = 8192, ffn: int = 28672, tokens: int = 1024, seconds: float = 3.0) -> dict:
    """A Megatron-style tensor-parallel MLP over cuda:0 and cuda:1 (W1 split by columns, W2 by rows, the
    partial outputs summed by an NCCL all-reduce), measured with Meter(devices=[0, 1]); checked against
    the same MLP on one GPU."""
    import clear_native as cn

    os.environ.setdefault("NCCL_NVLS_ENABLE", "0")  # NVLink multicast stays off on these hosts
    from torch.cuda import nccl

    g = torch.Generator().manual_seed(0)
    x = torch.randn(tokens, hidden, generator=g).to(torch.bfloat16)
    w1 = (torch.randn(hidden, ffn, generator=g) / hidden ** 0.5).to(torch.bfloat16)
    w2 = (torch.randn(ffn, hidden, generator=g) / ffn ** 0.5).to(torch.bfloat16)
    half = ffn // 2
    shards = [(x.to(f"cuda:{d}"), w1[:, d * half:(d + 1) * half].contiguous().to(f"cuda:{d}"),
               w2[d * half:(d + 1) * half].contiguous().to(f"cuda:{d}")) for d in (0, 1)]
    outs = [torch.empty(tokens, hidden, dtype=torch.bfloat16, device=f"cuda:{d}") for d in (0, 1)]

    def step():
        for d, (xs, a, b) in enumerate(shards):
            with torch.cuda.device(d):
                torch.matmul(torch.nn.functional.gelu(xs @ a), b, out=outs[d])
        nccl.all_reduce(outs)  # sum of the partial outputs, on both GPUs

    step()
    for d in (0, 1):
        torch.cuda.synchronize(d)
    ref = torch.matmul(torch.nn.functional.gelu(shards[0][0] @ w1.to("cuda:0")), w2.to("cuda:0"))
    err = ((outs[0].float() - ref.float()).abs().max() / ref.float().abs().max()).item()
    same = torch.equal(outs[0].cpu(), outs[1].cpu())
    t0, n = time.monotonic(), 0
    while time.monotonic() - t0 < 0.3:  # how many steps fill the window
        step()
        n += 1
    for d in (0, 1):
        torch.cuda.synchronize(d)
    steps = max(10, int(n * seconds / (time.monotonic() - t0)))

    def sync_all():
        for d in (0, 1):
            torch.cuda.synchronize(d)

    with cn.Meter(devices=[0, 1], sync=sync_all) as m:
        for _ in range(steps):
            step()
    r = m.result
    flops = 2 * 2 * tokens * hidden * ffn  # two matmuls over the whole MLP, split across the GPUs
    return {"hidden": hidden, "ffn": ffn, "tokens": tokens, "steps": steps, "duration_s": r.duration_s,
            "energy_j": r.energy_j, "counter_energy_j": r.counter_energy_j, "energy_per_step_j": r.energy_j / steps,
            "per_gpu": [{"device": d, "uuid": cn.gpu_info(d).uuid, "energy_j": p.energy_j,
                         "counter_energy_j": p.counter_energy_j, "mean_power_w": p.mean_power_w,
                         "samples": p.samples, "temperature_c": list(p.temperature_c),
                         "sm_clock_mhz": list(p.sm_clock_mhz)} for d, p in zip((0, 1), r.per_device)],
            "pj_per_flop": r.energy_j / steps / flops * 1e12, "max_rel_error_vs_one_gpu": err,
            "outputs_identical_on_both_gpus": same}


# --------------------------------------------------------------------------- report


def markdown(res: dict) -> str:
    L = ["# The study on every GPU of a host; a region over two GPUs", ""]
    ident = res.get("identity", {})
    if "wall_s_1" in res:
        L += [f"{ident.get('gpu', {}).get('name', '?')} host, {res['gpus']} GPUs ({', '.join(res['cards'])}); code "
              f"{ident.get('code_version')}; {ident.get('date')}.", "",
              f"The first {len(res['tasks'])} tasks of the study's plan: {', '.join(res['tasks'])}.", "",
              "| | wall time | |", "|---|---|---|",
              f"| one GPU, one process (bench/run.py) | {res['wall_s_1']:.0f} s | |",
              f"| --gpus all, a fresh process per task | {res['wall_s_n']:.0f} s | speedup {res['speedup']:.2f}x, "
              f"{res['wall_s_n'] / res['wall_s_1']:.0%} of the single-GPU time |", "",
              f"max_rel_diff_vs_single (parts >= 5 µs and whole models): same card {_pc(res['max_rel_diff_same_card'])} "
              f"(with every other GPU busy vs alone: neighbour interference plus repeatability); other cards, "
              f"normalised by the card reference {_pc(res['max_rel_diff_normalised'])}, raw "
              f"{_pc(res['max_rel_diff_raw_other_cards'])}.", "",
              "| task | part | same card | GPU time | difference | normalised |", "|---|---|---|---|---|---|"]
        for r in sorted(res["rows"], key=lambda r: (not r["same_card"], r["task"], r["part"])):
            if r["gpu_time_s"] >= 5e-6:
                L.append(f"| {r['task']} | {r['part']} | {'yes' if r['same_card'] else 'no'} | "
                         f"{r['gpu_time_s'] * 1e6:.1f} µs | {r['rel_diff'] * 100:+.2f} % | {_pc(r['rel_diff_normalised'], True)} |")
    if "tp_meter" in res:
        t = res["tp_meter"]
        L += ["", "## A tensor-parallel MLP over two GPUs (NCCL), Meter(devices=[0, 1])", "",
              f"Hidden {t['hidden']}, feed-forward {t['ffn']} split in two, {t['tokens']} tokens, bf16; {t['steps']} "
              f"steps in {t['duration_s']:.2f} s; one all-reduce per step (NCCL_NVLS_ENABLE=0). Output vs the same MLP "
              f"on one GPU: max relative error {t['max_rel_error_vs_one_gpu']:.2e}; identical on both GPUs: "
              f"{t['outputs_identical_on_both_gpus']}.", "",
              "| GPU | UUID | energy (J) | counter (J) | mean power (W) | samples | SM clock (MHz) |", "|---|---|---|---|---|---|---|"]
        for p in t["per_gpu"]:
            L.append(f"| cuda:{p['device']} | {p['uuid']} | {p['energy_j']:.2f} | {p['counter_energy_j']:.2f} | "
                     f"{p['mean_power_w']:.0f} | {p['samples']} | {p['sm_clock_mhz'][0]:.0f}-{p['sm_clock_mhz'][1]:.0f} |")
        L += [f"| total | | {t['energy_j']:.2f} | {t['counter_energy_j']:.2f} | | | |", "",
              f"{t['energy_per_step_j'] * 1e3:.1f} mJ per step, {t['pj_per_flop']:.3f} pJ/FLOP over both GPUs."]
    return "\n".join(L) + "\n"


def _pc(x, signed=False) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "n/a"
    return f"{x * 100:+.2f} %" if signed else f"{x * 100:.2f} %"


def reanalyse(path: Path, work: Path, fpath: Path, out: Path) -> int:
    old = json.loads(path.read_text())
    found = {k: next(work.glob(f"{k}/*/*/{store.MEASUREMENTS}")).parent for k in ("single", "multi")}
    res = old | analyse_runs(found["single"], found["multi"], old["wall_s_1"], old["wall_s_n"], old["tasks"], fpath)
    write_results(out, "scale", res, markdown(res))
    return 0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--tasks", type=int, default=12, help="the first N tasks of the study's plan (>= 12)")
    ap.add_argument("--gpus", default="all")
    ap.add_argument("--factors", default=str(ROOT / "results" / "reproducibility.json"),
                    help="card factors (bench/reproducibility.py) to compare tasks that ran on other cards")
    ap.add_argument("--out", default=str(ROOT / "results"))
    ap.add_argument("--work", default=str(ROOT / "results" / "scale-runs"), help="the two runs' folders")
    ap.add_argument("--meter-only", action="store_true")
    ap.add_argument("--reanalyse", metavar="SCALE_JSON", help="recompute the comparison from the two runs a "
                    "scale.json names (found under --work) with --factors; measures nothing")
    args = ap.parse_args(argv)
    if args.reanalyse:
        return reanalyse(Path(args.reanalyse), Path(args.work), Path(args.factors), Path(args.out))
    import torch

    from bench.common import run_identity

    res = {"identity": run_identity(torch)}
    if not args.meter_only:
        ids = [t.id for t in suite.plan(suite.MODELS, [])][:args.tasks]
        work = Path(args.work)
        w1, f1 = timed_run([], ids, work / "single")
        wn, fn = timed_run(["--gpus", args.gpus], ids, work / "multi")
        res |= analyse_runs(f1, fn, w1, wn, ids, Path(args.factors))
    if torch.cuda.device_count() >= 2:
        res["tp_meter"] = tp_meter(torch)
    out = Path(args.out)
    old = json.loads((out / "scale.json").read_text()) if (out / "scale.json").exists() else {}
    res = (old | res) if args.meter_only else res
    write_results(out, "scale", res, markdown(res))
    return 0


if __name__ == "__main__":
    sys.exit(main())
