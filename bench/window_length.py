"""Does a longer window read a part higher, within one process (issue 14)? Writes
results/window_length/<date>_<card>.json and .md.

Across 14 side-by-side BERT-base pairs (protocol 11-14), the three where one process's whole model ended on 1.6 s
windows (two restarts: its trials varied more than target_cv) and the other's on shorter ones read +1.41..+1.49 %
higher, the longer window always the higher, at the same GPU time; pairs that restarted as often agreed within
0.12-0.27 % (docs/measured.md, 2026-11-29 evening). Either the power moved under that process (the cause of its
restarts), or a longer window reads higher whatever the process: the die warms within a trial (the card
reference's copy, replayed without a break from cool, read +0.85 % between 0.5 and 2.0 s in: run 155415's thermal
job). This bench asks the second directly, in one process on one card, where no process offset can enter:
  - BERT-base's whole model (prefill, 8 x 128 tokens, bf16, cold L2 as the study replays it) and the card
    reference's copy (memory-bound, below the power limit), measured together at each window (fixed: target_cv
    None; --trials trials each), the windows in ABBA order over --rounds rounds;
  - then each replayed without a break for --transient-s s, read in 0.25 s bins (bench/cardref.transient): how its
    energy per call moves with the time since its load began, which is what a longer window averages over.
Measured on four H200s of one host (results/window_length.md, 2026-11-29): no. The whole model at 1.6 s read
-0.30..+0.07 % from 0.4 s, the copy -0.04..+0.08 %, each inside its 95 % interval (0.22-0.98 %); their transients
moved -0.3..+0.5 % over 4 s. Note [Window length and repeats] (bench/reproducibility.py) says what followed.

Usage: python bench/window_length.py [--windows 0.4,1.6] [--rounds 2] [--trials 4] [--out results]
       python bench/window_length.py --report results/window_length   (the table of every card's file)
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a file: import the package bench, not loose files beside this one
    sys.path.pop(0)
    sys.path.append(str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

import clear_native as cn  # noqa: E402
from bench import cardref, suite  # noqa: E402
from bench.common import write_results  # noqa: E402
from clear_native.cold_l2 import cold, per_copy  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
TASK = suite.Task("bert-base", batch=8, seq=128, dtype="bf16")
TRANSIENT_AT_S = (0.5, 1.0, 2.0, 4.0)  # the transient's bins quoted, s after its load began


def captures(lab, backend) -> tuple[list, dict]:
    """(captures, {name: calls per replay}): the task's whole model over its cold-L2 copies, and the card
    reference's copy."""
    model, inputs, kw = suite.build(lab.T, lab.torch, TASK, lab.device)
    copies = cn.l2_copies(model, backend.l2_bytes(model))
    whole = backend.capture(cold(model, copies), *inputs, name="whole_model", **kw)
    copy = next(c for c in cardref.captures(lab, backend) if c.name == "copy")
    return [whole, copy], {"whole_model": copies, "copy": 1}


def measure(backend, profile, caps, per_call: dict, windows, rounds: int, trials: int, say=print) -> list:
    """One row per capture and measurement: the windows in ABBA order, each a fresh measure() of every capture."""
    rows = []
    for r in range(rounds):
        for w in (windows if r % 2 == 0 else windows[::-1]):
            say(f"round {r}: {w:.2f} s windows")
            run = cn.measure(caps, backend=backend, profile=profile, window_s=w, max_window_s=w, target_cv=None,
                             min_trials=trials, max_trials=trials, target_ci_rel=1e-6, budget_s=600.0)
            for m in (per_copy(m, per_call[m.name]) for m in run.measurements):
                rows.append({"round": r, "window_s": w, "name": m.name, "trials": m.trials,
                             "energy_per_call_j": m.energy_per_call_j, "mean_power_w": m.mean_power_w,
                             "gpu_time_per_call_s": m.gpu_time_per_call_s,
                             "trial_energy_per_call_j": list(m.trial_energy_per_call_j),
                             "trial_power_w": list(m.trial_power_w), "trial_drift_rel": list(m.trial_drift_rel),
                             "trial_temperature_c": list(m.trial_temperature_c),
                             "steady_window_s": m.steady_window_s, "window_restarts": m.window_restarts})
    return rows


def summarise(rows: list, transients: dict) -> dict:
    """Per capture: each window's energy per call over all its trials, and each longer window's change from the
    shortest (relative, with the 95 % interval of a difference of two means); the transient's energy per call at
    TRANSIENT_AT_S relative to its first bin."""
    out = {}
    for name in dict.fromkeys(r["name"] for r in rows):
        by_w = {}
        for r in rows:
            if r["name"] == name:
                by_w.setdefault(r["window_s"], []).extend(r["trial_energy_per_call_j"])
        short = min(by_w)
        e0 = np.asarray(by_w[short])
        windows = {}
        for w, es in sorted(by_w.items()):
            e = np.asarray(es)
            half = 1.96 * math.sqrt(e.var(ddof=1) / e.size + e0.var(ddof=1) / e0.size) / e0.mean() \
                if min(e.size, e0.size) > 1 else math.nan
            windows[f"{w:g}"] = {"energy_per_call_j": float(e.mean()), "trials": int(e.size),
                                 "cv": float(e.std(ddof=1) / e.mean()) if e.size > 1 else math.nan,
                                 "change_rel": float(e.mean() / e0.mean() - 1), "change_ci95_rel": half}
        out[name] = {"windows": windows, "transient": transient_points(transients.get(name))}
    return out


def transient_points(tr: dict | None) -> dict:
    """{t_s: energy per call relative to the first bin} at TRANSIENT_AT_S (the nearest bin), from cardref.transient."""
    bins = (tr or {}).get("bins") or []
    if not bins:
        return {}
    first = bins[0]["energy_per_call_j"]
    return {f"{t:g}": bins[int(np.argmin([abs(b["t_s"] - t) for b in bins]))]["energy_per_call_j"] / first - 1
            for t in TRANSIENT_AT_S if bins[-1]["t_s"] >= t - 0.25}


def markdown(res: dict) -> str:
    return "\n".join(markdown_lines([res])) + "\n"


def markdown_lines(results: list) -> list:
    lines = ["# Window length, within one process", "",
             "Each card: the windows in ABBA order, each a fresh measure() of both captures at fixed windows; "
             "change = energy per call against the shortest window (95 % interval of the difference of the "
             "trials' means). Transient: one replay without a break, energy per call t s after it began against "
             "its first 0.25 s bin (bench/window_length.py).", "",
             "| card | capture | window | energy per call | trials | CV | change | transient " +
             ", ".join(f"{t:g} s" for t in TRANSIENT_AT_S) + " |", "|---|---|---|---|---|---|---|---|"]
    for res in results:
        card = res["identity"]["gpu"]["uuid"][:12]
        for name, s in res["summary"].items():
            tr = ", ".join(f"{100 * s['transient'][k]:+.2f} %" if k in s["transient"] else "n/a"
                           for k in (f"{t:g}" for t in TRANSIENT_AT_S))
            for w, v in s["windows"].items():
                lines.append(f"| {card} | {name} | {w} s | {v['energy_per_call_j'] * 1e3:.4f} mJ | {v['trials']} | "
                             f"{100 * v['cv']:.2f} % | {100 * v['change_rel']:+.2f} % "
                             f"± {100 * v['change_ci95_rel']:.2f} | {tr} |")
    return lines


def run(lab, args, say=print) -> dict:
    """The bench on ``lab``'s card (a GPU, or the simulated one that heats as it draws)."""
    backend = lab.heating_backend() if lab.simulate else cn.GpuBackend(0)
    profile = (cn.calibrate(backend, rest_s=0.3, load_s=0.4) if lab.simulate else cn.calibrate(cache=False))
    caps, per_call = captures(lab, backend)
    rows = measure(backend, profile, caps, per_call, args.windows, args.rounds, args.trials, say)
    transients = {}
    for cap in caps:
        tr = cardref.transient(backend, cap, profile, seconds=args.transient_s)
        n = per_call[cap.name]
        for b in tr["bins"]:
            b["energy_per_call_j"] /= n
            b["time_per_call_s"] /= n
        transients[cap.name] = tr
    return {"identity": lab.identity, "profile": profile.to_dict(), "task": TASK.id, "settings": vars(args) |
            {"windows": list(args.windows)}, "rows": rows, "transients": transients,
            "summary": summarise(rows, transients)}


def parse(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--windows", default="0.4,1.6", help="window lengths, s, comma-separated (at least two)")
    ap.add_argument("--rounds", type=int, default=2, help="rounds of every window (ABBA order)")
    ap.add_argument("--trials", type=int, default=4, help="trials of each capture at each window and round")
    ap.add_argument("--transient-s", type=float, default=6.0, help="seconds of each capture's transient")
    ap.add_argument("--out", default=str(ROOT / "results"))
    ap.add_argument("--report", help="a folder of this bench's .json files: their table, printed")
    ap.add_argument("--simulate", action="store_true", help="the simulated card that heats as it draws (CPU)")
    args = ap.parse_args(argv)
    try:
        args.windows = sorted({float(w) for w in args.windows.split(",") if w.strip()})
    except ValueError:
        ap.error(f"--windows {args.windows!r}: give seconds, comma-separated, e.g. 0.4,1.6")
    if len(args.windows) < 2 or args.windows[0] <= 0:
        ap.error("--windows needs at least two window lengths > 0 s")
    if args.rounds < 1 or args.trials < 2 or args.transient_s < 1:
        ap.error("--rounds >= 1, --trials >= 2 and --transient-s >= 1 needed")
    return args


def main(argv=None) -> int:
    args = parse(argv)
    if args.report:
        files = sorted(Path(args.report).glob("*.json"))
        if not files:
            print(f"bench/window_length.py: no .json files in {args.report}", file=sys.stderr)
            return 2
        print("\n".join(markdown_lines([json.loads(f.read_text()) for f in files])))
        return 0
    from bench.tasks import Lab

    if not args.simulate:
        from bench.common import require_gpu

        require_gpu("bench/window_length.py")
    lab = Lab(simulate=args.simulate)
    try:
        res = run(lab, args)
    finally:
        lab.close()
    stamp = res["identity"]["date"][:19].replace("-", "").replace(":", "").replace("T", "_")
    write_results(Path(args.out) / "window_length", f"{stamp}_{res['identity']['gpu']['uuid'][:12]}", res,
                  markdown(res))
    return 0


if __name__ == "__main__":
    sys.exit(main())
