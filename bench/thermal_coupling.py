"""How a GPU's die temperature follows its own past load and its neighbour's (issue 14); writes
results/thermal_coupling.json and .md.

A task measured twice on one card, minutes apart, ran up to 4 °C cooler the second time and its light parts read
up to 1.6 % less (results/reproducibility/2026-11-28_194941), though the card ran the same task before both: on
GPU-f0266543 BERT-base's second process read 3.4 °C cooler while its two neighbours had moved from BERT-base
(~500 W) to Llama's decode (~290 W). So the drift may be the host's, not the card's own heatsink. On two cards of
one host, at once:
  - the observer launches empty kernels (awake idle, one light, steady load) throughout;
  - the neighbour launches them for --before s, runs bf16 GEMMs at its power limit (GpuBackend's heater) for
    --heat s, then empty kernels again for --after s.
Both cards' temperature and power are read every 0.1 s (NVML, clear_native's sampler). The neighbour's own
temperature under the same light load before and after its heat says how long its own past load stays with it
(its heatsink); the observer's, how much a neighbour's load moves a card that did nothing different.
Measured on two H200s of one host (results/thermal_coupling.md, 2026-11-28): the neighbour's heater at 695 W moved
the observer by 0.0 °C (its sensor reads whole °C: 38 throughout); the neighbour's own die, 37 °C under empty kernels
before, read 39 °C 3-13 s after 60 s of the heater and 38 °C a minute later. A card keeps ~1-2 °C of its own last
minute's load; its neighbour's did not reach it here (another host's cooling may differ: rerun this there).

Usage:
  python bench/thermal_coupling.py --gpus 0,1
  python bench/thermal_coupling.py --gpus 0,1 --before 20 --heat 60 --after 60
"""

from __future__ import annotations

import argparse
import statistics
import sys
import threading
from pathlib import Path

if __package__ in (None, ""):
    sys.path.pop(0)
    sys.path.append(str(Path(__file__).resolve().parents[1]))

from bench.common import run_identity, write_results  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
AFTER_SKIP_S = 3.0  # the neighbour's die leaves the heater's own heat within seconds: its "after" reading skips them
SPAN_S = 10.0       # each reading: the mean over this many seconds


def trace(observer: int, neighbour: int, before_s: float, heat_s: float, after_s: float) -> dict:
    """Both cards' temperature and power through the neighbour's light -> heat -> light schedule."""
    import clear_native as cn

    total = before_s + heat_s + after_s
    samplers = [cn.Sampler(i, drain_interval_s=0.1, energy_interval_s=0.25, max_duration_s=total + 120)
                for i in (observer, neighbour)]
    ob, nb = cn.GpuBackend(observer), cn.GpuBackend(neighbour)
    stop = threading.Event()

    def light():  # the observer: empty kernels, one second at a time, until told
        while not stop.is_set():
            ob.awake_idle(1.0)

    for s in samplers:
        s.start()
    thread = threading.Thread(target=light, daemon=True)
    t0 = cn.clock.now_ns()
    thread.start()
    try:
        nb.awake_idle(before_s)
        t_heat = cn.clock.now_ns()
        nb.heat(heat_s)
        t_after = cn.clock.now_ns()
        nb.awake_idle(after_s)
        t_end = cn.clock.now_ns()
    finally:
        stop.set()
        thread.join()
    res = [s.stop() for s in samplers]
    marks = {"heat_s": (t_heat - t0) * 1e-9, "after_s": (t_after - t0) * 1e-9, "end_s": (t_end - t0) * 1e-9}
    return {"marks": marks, "cards": {role: _series(r, t0, t_end) for role, r in zip(("observer", "neighbour"), res)},
            "identity": {role: cn.gpu_info(i).to_dict() for role, i in (("observer", observer),
                                                                        ("neighbour", neighbour))}}


def _series(res, t0: int, t_end: int) -> list:
    """[seconds from the start, °C, W] every status row in the span."""
    keep = (res.status_t_ns >= t0) & (res.status_t_ns <= t_end)
    return [[round((t - t0) * 1e-9, 3), float(c), float(w)] for t, c, w in
            zip(res.status_t_ns[keep], res.temperature_c[keep], res.instant_power_mw[keep] / 1e3)]


def _mean(series: list, a: float, b: float, col: int) -> float:
    vals = [row[col] for row in series if a <= row[0] < b]
    return statistics.mean(vals) if vals else float("nan")


def summarise(tr: dict) -> dict:
    """The neighbour's own light-load temperature before and after its heat, and the observer's as it heated."""
    m, ob, nb = tr["marks"], tr["cards"]["observer"], tr["cards"]["neighbour"]
    before = (m["heat_s"] - SPAN_S, m["heat_s"])
    late_heat = (m["after_s"] - SPAN_S, m["after_s"])
    after = (m["after_s"] + AFTER_SKIP_S, m["after_s"] + AFTER_SKIP_S + SPAN_S)
    last = (m["end_s"] - SPAN_S, m["end_s"])
    out = {}
    for role, s in (("observer", ob), ("neighbour", nb)):
        t = {k: _mean(s, *span, 1) for k, span in (("before", before), ("late_heat", late_heat), ("after", after),
                                                   ("last", last))}
        w = {k: _mean(s, *span, 2) for k, span in (("before", before), ("late_heat", late_heat), ("after", after))}
        out[role] = {"temperature_c": t, "power_w": w}
    n, o = out["neighbour"], out["observer"]
    out["neighbour_heater_w"] = n["power_w"]["late_heat"]
    out["neighbour_own_c"] = n["temperature_c"]["after"] - n["temperature_c"]["before"]
    out["neighbour_own_last_c"] = n["temperature_c"]["last"] - n["temperature_c"]["before"]
    out["observer_during_heat_c"] = o["temperature_c"]["late_heat"] - o["temperature_c"]["before"]
    out["observer_per_100w_c"] = out["observer_during_heat_c"] / max(
        (n["power_w"]["late_heat"] - n["power_w"]["before"]) / 100, 1e-9)
    return out


def markdown(res: dict) -> str:
    s, a = res["summary"], res["args"]
    ob, nb = res["trace"]["identity"]["observer"], res["trace"]["identity"]["neighbour"]
    c = lambda x: f"{x:+.2f} °C"  # noqa: E731
    rows = [f"| {role} | {x['uuid']} | " + " | ".join(f"{s[role]['temperature_c'][k]:.2f}" for k in (
        "before", "late_heat", "after", "last")) + f" | {s[role]['power_w']['before']:.0f} / "
        f"{s[role]['power_w']['late_heat']:.0f} / {s[role]['power_w']['after']:.0f} |"
        for role, x in (("observer", ob), ("neighbour", nb))]
    return "\n".join([
        "# Thermal coupling: a card's own past load, and its neighbour's", "",
        f"{ob['name']} x 2 of one host; driver {ob.get('driver_version')}; code {res['identity']['code_version']}; "
        f"{res['identity']['date']}. The observer ran empty kernels throughout; the neighbour ran them "
        f"{a['before']:.0f} s, then bf16 GEMMs {a['heat']:.0f} s (its heater), then empty kernels {a['after']:.0f} s. "
        f"Each reading: the mean over {SPAN_S:.0f} s (after the heat: from {AFTER_SKIP_S:.0f} s on).", "",
        "| card | role | before (°C) | heat's last 10 s | after | last 10 s | power before / heat / after (W) |",
        "|---|---|---|---|---|---|---|", *rows, "",
        f"- The neighbour's own past load: under the same empty kernels it read {c(s['neighbour_own_c'])} after "
        f"{a['heat']:.0f} s of its heater ({s['neighbour_heater_w']:.0f} W) than before, "
        f"{c(s['neighbour_own_last_c'])} at the end.",
        f"- The neighbour's load on the observer: {c(s['observer_during_heat_c'])} by the end of the heat "
        f"({s['observer_per_100w_c']:+.3f} °C per 100 W its neighbour drew more).", ""])


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--gpus", default="0,1", help="two CUDA devices of one host: observer,neighbour")
    ap.add_argument("--before", type=float, default=20.0)
    ap.add_argument("--heat", type=float, default=60.0)
    ap.add_argument("--after", type=float, default=60.0)
    ap.add_argument("--out", default=str(ROOT / "results"))
    args = ap.parse_args(argv)
    gpus = [int(g) for g in args.gpus.split(",") if g.strip().isdigit()]
    if len(gpus) != 2 or gpus[0] == gpus[1]:
        print(f"bench/thermal_coupling.py: --gpus {args.gpus!r}: give two CUDA devices, observer,neighbour",
              file=sys.stderr)
        return 2
    if min(args.before, args.heat, args.after) < SPAN_S + AFTER_SKIP_S:
        print(f"bench/thermal_coupling.py: --before, --heat and --after need >= {SPAN_S + AFTER_SKIP_S:.0f} s each "
              "(each reading is a 10 s mean)", file=sys.stderr)
        return 2
    import torch

    tr = trace(gpus[0], gpus[1], args.before, args.heat, args.after)
    res = {"identity": run_identity(torch, tr["identity"]["observer"]), "args": vars(args), "trace": tr}
    res["summary"] = summarise(tr)
    write_results(args.out, "thermal_coupling", res, markdown(res))
    return 0


if __name__ == "__main__":
    sys.exit(main())
