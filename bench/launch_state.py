"""The launch-latency state of each GPU over time, beside what NVML reports (issue 14; Note
[Launch-latency state], clear_native/backend.py); writes results/launch_state.json and .md.

On every chosen GPU at once, a fresh process replays GPT-2's decode step (a CUDA graph, batch 1,
512 cached tokens, 3 steps a launch) for --seconds, and every --every seconds reads its GPU time
per step and GpuBackend.launch_state(): the GPU time per tiny kernel in a graph, the SM and memory
clocks, the PCIe link's generation and width. Card k starts k x --stagger seconds after the first
(an H200 was seen to switch state while a neighbour started). The summary groups each card's
readings by what NVML reported: if the slow state goes with one link generation, the table shows it.

Usage:
  python bench/launch_state.py                       # every GPU, 60 s
  python bench/launch_state.py --gpus 0 --seconds 30
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.pop(0)
    sys.path.append(str(Path(__file__).resolve().parents[1]))

from bench.cards import host_cards  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
NVML_KEYS = ("pcie_generation", "pcie_width", "sm_clock_mhz", "memory_clock_mhz")


def child(seconds: float, every: float) -> int:
    """This process's GPU (CUDA device 0): one JSON line a reading."""
    import torch
    import transformers as T

    import clear_native as cn
    from bench import suite
    from clear_native.model import prepare_inputs

    task = suite.Task("gpt2", mode="decode", batch=1, seq=1, cache_len=512)
    model, inputs, kw = suite.build(T, torch, task, "cuda")
    inputs, kw = prepare_inputs(model, inputs, kw, "decode", 512)
    backend = cn.GpuBackend(0)
    step = backend.prepare(backend.capture(model, *inputs, name="gpt2-decode", **kw), 3)
    t0 = time.monotonic()
    while time.monotonic() - t0 < seconds:
        r = backend.run(step, max(1, int(every / 2 / 2.4e-3)))  # about half of each interval
        print(json.dumps({"t_s": time.monotonic() - t0, "step_s": r.gpu_time_per_call_s} | backend.launch_state()),
              flush=True)
    return 0


def measure(cards, seconds: float, every: float, stagger: float) -> dict:
    """{card uuid: [readings]} from one fresh process per card, all at once (card k after k x stagger s)."""
    procs = {}
    for k, card in enumerate(cards):
        env = dict(os.environ, CUDA_VISIBLE_DEVICES=card.uuid, PYTHONUNBUFFERED="1")
        cmd = [sys.executable, str(Path(__file__).resolve()), "--child", str(seconds), str(every),
               "--delay", str(k * stagger)]
        procs[card.uuid] = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, text=True)
    out = {}
    for uuid, p in procs.items():
        text, _ = p.communicate()
        if p.returncode != 0:
            raise SystemExit(f"bench/launch_state.py: the process on {uuid} exited {p.returncode}")
        out[uuid] = [json.loads(line) for line in text.splitlines() if line.startswith("{")]
    return out


def summarise(readings: dict) -> dict:
    """Per card: its readings grouped by what NVML reported (link generation and width, clocks), with the
    median GPU time per tiny kernel and per step in each group, and the times the group was seen."""
    out = {}
    for uuid, rows in readings.items():
        groups: dict = {}
        for r in rows:
            groups.setdefault(tuple(r.get(k, 0) for k in NVML_KEYS), []).append(r)
        out[uuid] = [{**dict(zip(NVML_KEYS, key)), "readings": len(g),
                      "latency_us": statistics.median(x["latency_s"] for x in g) * 1e6,
                      "step_us": statistics.median(x["step_s"] for x in g) * 1e6,
                      "first_s": min(x["t_s"] for x in g), "last_s": max(x["t_s"] for x in g)}
                     for key, g in sorted(groups.items())]
    return out


def markdown(res: dict) -> str:
    ident = res["identity"]
    L = ["# The launch-latency state beside what NVML reports", "",
         f"{ident['gpu']['name']}, driver {ident['gpu'].get('driver_version')}; code {ident.get('code_version')}; "
         f"{ident.get('date')}. GPT-2's decode step (graph, 3 steps a launch) replayed {res['seconds']:.0f} s on each "
         f"card, cards started {res['stagger_s']:.0f} s apart; a reading every {res['every_s']} s "
         "(Note [Launch-latency state], clear_native/backend.py).", "",
         "| card | PCIe gen | width | SM MHz | memory MHz | readings | tiny kernel (µs) | step (µs) | seen (s) |",
         "|---|---|---|---|---|---|---|---|---|"]
    for uuid, groups in res["summary"].items():
        for g in groups:
            L.append(f"| {uuid} | {g['pcie_generation']} | {g['pcie_width']} | {g['sm_clock_mhz']} | "
                     f"{g['memory_clock_mhz']} | {g['readings']} | {g['latency_us']:.3f} | {g['step_us']:.1f} | "
                     f"{g['first_s']:.1f}-{g['last_s']:.1f} |")
    return "\n".join(L) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--gpus", default="all")
    ap.add_argument("--seconds", type=float, default=60.0)
    ap.add_argument("--every", type=float, default=0.25, help="seconds between readings")
    ap.add_argument("--stagger", type=float, default=20.0, help="seconds between the cards' starts")
    ap.add_argument("--out", default=str(ROOT / "results"))
    ap.add_argument("--child", nargs=2, type=float, metavar=("SECONDS", "EVERY"), help=argparse.SUPPRESS)
    ap.add_argument("--delay", type=float, default=0.0, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        time.sleep(args.delay)
        return child(*args.child)
    if not (args.seconds > 0 and args.every > 0 and args.stagger >= 0):
        print("bench/launch_state.py: need --seconds > 0, --every > 0, --stagger >= 0", file=sys.stderr)
        return 2
    from bench.common import require_gpu, run_identity, write_results

    torch = require_gpu("bench/launch_state.py")
    try:
        cards = host_cards(args.gpus)
    except ValueError as exc:
        print(f"bench/launch_state.py: {exc}", file=sys.stderr)
        return 2
    readings = measure(cards, args.seconds, args.every, args.stagger)
    res = {"identity": run_identity(torch), "seconds": args.seconds, "every_s": args.every, "stagger_s": args.stagger,
           "cards": [c.uuid for c in cards], "summary": summarise(readings), "readings": readings}
    write_results(args.out, "launch_state", res, markdown(res))
    return 0


if __name__ == "__main__":
    sys.exit(main())
