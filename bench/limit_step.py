"""How the power limiter answers a load step: why parts at the limit read more than the limit (issue 14, item 4);
writes results/limit_step.json and .md.

Every part measured alone at the limit on H200s read 730-754 W in its windows (results/heldout.json: seven LM
heads and MLPs, clocks capped at 1500-1935 MHz, sw_power_cap set), 4-8 % above the enforced 700 W, with flat
windows (drift within +-0.7 %) and the energy counter agreeing with the samples within 0.18 % over their runs.
Here each card rests, then replays the card reference's GEMM for --load-s seconds while every power sample, SM
clock and reason is kept; the summary gives the power in the first 0.1 s (the overshoot), in the span a protocol
window sees, in the last second, how long the power took to come within 1 % of that last second, and the range
of its 0.1 s bins from 1 s on. Found on an H200 (results/limit_step.md): the limiter cycles (~1 s, 622-729 W,
693 W on average) after a first plateau at 720-727 W where the protocol's windows sat: Note [The limiter's
cycle], clear_native/trials.py.

Usage:
  python bench/limit_step.py                  # every GPU at once, 3 s rest, 6 s load
  python bench/limit_step.py --gpus 0 --load-s 10
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

if __package__ in (None, ""):
    sys.path.pop(0)
    sys.path.append(str(Path(__file__).resolve().parents[1]))

from bench.cards import on_each  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
WINDOW_SPAN_S = (0.4, 0.6)  # where a protocol window sits after a load starts (settle ~0.4 s, window 0.2 s)
BIN_S = 0.1
WITHIN = 0.01


def step_profile(t_s, power_w, load_s: float) -> dict:
    """The step response from samples (``t_s``: seconds from the load's start): mean power (W) over the first
    BIN_S (the overshoot), over WINDOW_SPAN_S and over the last second of the load; ``settle_s``: the start of the
    first BIN_S bin from which every bin stays within WITHIN of the last second's mean (NaN where none does);
    ``cycle_w``: the lowest and highest BIN_S bin from 1 s on (a limiter that cycles never settles: Note [The
    limiter's cycle], clear_native/trials.py)."""
    pts = [(t, p) for t, p in zip(t_s, power_w) if 0 <= t < load_s]

    def mean(a: float, b: float) -> float:
        v = [p for t, p in pts if a <= t < b]
        return sum(v) / len(v) if v else math.nan

    last = mean(load_s - 1.0, load_s)
    bins = [(k * BIN_S, mean(k * BIN_S, (k + 1) * BIN_S)) for k in range(int(load_s / BIN_S))]
    settle = math.nan
    for start, p in reversed(bins):
        if math.isnan(p) or abs(p / last - 1) > WITHIN:
            break
        settle = start
    later = [p for t, p in bins if t >= 1.0 and not math.isnan(p)]
    return {"first_w": mean(0.0, BIN_S), "window_w": mean(*WINDOW_SPAN_S), "last_second_w": last,
            "window_over_last": mean(*WINDOW_SPAN_S) / last - 1, "settle_s": settle,
            "cycle_w": [min(later), max(later)] if later else [],
            "bins": [{"t_s": round(t, 3), "power_w": p} for t, p in bins]}


def child(rest_s: float, load_s: float) -> int:
    """This process's GPU (CUDA device 0): rest, then the GEMM for ``load_s``; one JSON line."""
    import numpy as np
    import torch

    import clear_native as cn
    from bench import cardref

    backend = cn.GpuBackend(0)
    a = torch.randn(cardref.GEMM_N, cardref.GEMM_N, dtype=torch.bfloat16, device="cuda")
    gemm = backend.capture(torch.matmul, a, a.clone(), name="gemm")
    backend.time_per_call_s(gemm)  # warm, before the rest
    sampler = cn.Sampler(0, drain_interval_s=0.1, status_interval_s=0.02, max_duration_s=rest_s + load_s + 10)
    sampler.start()
    try:
        cn.clock.sleep(rest_s)
        r = cardref.replay_for(backend, gemm, load_s)
        cn.clock.sleep(0.5)
    finally:
        s = sampler.stop()
    t0, span = r.host_start_ns, (r.host_end_ns - r.host_start_ns) * 1e-9
    out = step_profile((s.power_t_ns - t0) * 1e-9, s.power_mw / 1000, span)
    status_t = (s.status_t_ns - t0) * 1e-9
    loaded = (status_t >= 0) & (status_t < span)
    reasons = sorted(s.clock_events_in(r.host_start_ns, r.host_end_ns))
    out |= {"load_s": span, "rest_s": rest_s, "power_limit_w": backend.info.get("power_limit_w"),
            "uuid": backend.info["uuid"], "gemm_time_s": r.gpu_time_per_call_s,
            "sm_clock_mhz": {"first": float(np.median(s.sm_clock_mhz[loaded & (status_t < BIN_S * 3)])),
                             "last_second": float(np.median(s.sm_clock_mhz[loaded & (status_t >= span - 1)]))},
            "reasons": reasons}
    print(json.dumps(out, default=float), flush=True)
    return 0


def markdown(res: dict) -> str:
    ident = res["identity"]
    L = ["# The power limiter's step response", "",
         f"{ident['gpu']['name']}, driver {ident['gpu'].get('driver_version')}; code {ident.get('code_version')}; "
         f"{ident.get('date')}. After {res['rest_s']:.0f} s of rest, the card reference's GEMM replayed "
         f"{res['load_s']:.0f} s; every power sample kept (bench/limit_step.py).", "",
         "| card | limit (W) | first 0.1 s (W) | 0.4-0.6 s (W) | last second (W) | window vs last | within 1 % after "
         "| 0.1 s bins from 1 s (W) | SM MHz first / last | reasons |", "|---|---|---|---|---|---|---|---|---|---|"]
    for c in res["cards"]:
        settle = "never" if math.isnan(c["settle_s"]) else f"{c['settle_s']:.1f} s"
        L.append(f"| {c['uuid']} | {c['power_limit_w']:.0f} | {c['first_w']:.0f} | {c['window_w']:.0f} | "
                 f"{c['last_second_w']:.0f} | {c['window_over_last'] * 100:+.1f} % | {settle} | "
                 f"{'-'.join(f'{w:.0f}' for w in c.get('cycle_w') or []) or '-'} | "
                 f"{c['sm_clock_mhz']['first']:.0f} / {c['sm_clock_mhz']['last_second']:.0f} | "
                 f"{', '.join(c['reasons']) or '-'} |")
    return "\n".join(L) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--gpus", default="all")
    ap.add_argument("--rest-s", type=float, default=3.0)
    ap.add_argument("--load-s", type=float, default=6.0)
    ap.add_argument("--out", default=str(ROOT / "results"))
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if not (args.rest_s >= 0 and args.load_s >= 2):
        print("bench/limit_step.py: need --rest-s >= 0 and --load-s >= 2 (the last second is the reference)",
              file=sys.stderr)
        return 2
    if args.child:
        return child(args.rest_s, args.load_s)
    from bench.common import require_cards, run_identity, write_results

    torch, cards = require_cards("bench/limit_step.py", args.gpus)
    runs = on_each(cards, lambda k, card: [sys.executable, str(Path(__file__).resolve()), "--child", "--rest-s",
                                           str(args.rest_s), "--load-s", str(args.load_s)])
    found = []
    for uuid, (code, lines) in runs.items():
        if code != 0 or not lines:
            print(f"bench/limit_step.py: the process on {uuid} exited {code}", file=sys.stderr)
            continue
        found.append(lines[-1])
    if not found:
        return 1
    res = {"identity": run_identity(torch), "rest_s": args.rest_s, "load_s": args.load_s, "cards": found}
    write_results(args.out, "limit_step", res, markdown(res))  # prints the table too
    return 0 if len(found) == len(cards) else 1


if __name__ == "__main__":
    sys.exit(main())
