"""Models outside the study, measured with no per-model code: issue 13's held-out families.

Each case (bench/heldout_cases.py) is a transformers config at its published size (layers cut where the model is large),
built with random weights through the same path as `clear-native measure` (clear_native.cli), and
measured by measure_model with blocks: prefill at batch 1 x 128 (vision: batch 8), and for
decoders one decode step after 512 cached tokens. Writes results/heldout.json (a list of records:
case, mode, whole_model_eager, max_cv, coverage and explained_coverage of the model by blocks with the
parts paced where any was (heldout_cases.yardstick), the same by parts and by blocks alone, card) and
results/heldout.md. Every case runs in a fresh process (bench/workers.py: a crash costs that case, which
is recorded as such, and no other), on one GPU or spread over --gpus.

Usage: python bench/heldout.py [--cases bloom-560m,mistral-7b-2l,...] [--modes prefill,decode] [--gpus 0,1,2,3]
                               [--out results]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

if __package__ in (None, ""):  # run as a file: import the package bench, not loose files beside this one
    sys.path.pop(0)
    sys.path.append(str(Path(__file__).resolve().parents[1]))

from bench import workers  # noqa: E402
from bench.common import require_gpu  # noqa: E402
from bench.heldout_cases import CASES, DECODERS  # noqa: E402
from bench.store import write_atomic  # noqa: E402
from clear_native.model import MODES  # noqa: E402

def markdown(recs: list) -> str:
    lines = ["# Held-out families (issue 13)", "",
             "Coverage and explained coverage of the model by blocks (the blocks + the other components + glue + "
             "gaps; each block = its parts + interaction), with the parts paced where any was (Note [At the model's "
             "power]); beside them, by parts alone and by blocks with every part alone.", "",
             "| case | mode | whole model | max CV | coverage | explained coverage | parts: coverage / explained | "
             "blocks alone: explained | paced parts | block interaction | card | code |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    pct = (lambda x: "–" if x is None or x != x else f"{x * 100:.1f} %")  # NaN: a loop, no yardstick
    for r in recs:
        if "error" in r:
            lines.append(f"| {r['case']} | {r['mode']} | failed: {r['error'][:100]} |||||||||")
            continue
        inter = ", ".join(f"{x * 100:+.1f} %" for x in r["interaction_rel"]) or "–"
        lines.append(f"| {r['case']} | {r['mode']} | {'eager' if r['whole_model_eager'] else 'graph'} | "
                     f"{r['max_cv'] * 100:.2f} % | {pct(r['coverage'])} | {pct(r['explained_coverage'])} | "
                     f"{pct(r.get('coverage_parts'))} / {pct(r.get('explained_coverage_parts'))} | "
                     f"{pct(r.get('explained_coverage_by_blocks'))} | {_paced_parts(r) or '–'} | {inter} | "
                     f"{r['card']['uuid'][:12]} | {r.get('code_version', '?')[:7]} |")
    return "\n".join(lines) + "\n"


def _paced_parts(r: dict) -> str:
    """The parts measured paced (Note [At the model's power]): each part's paced / alone energy."""
    rows = r.get("paced") or ()
    return "; ".join(f"{name.split('.')[-1]} x{ratio:.2f}{'' if freed else ' (not freed)'}"
                     for name, ratio, freed, _ in rows)


def plan(names: list, modes: list) -> list:
    """(case, mode) in the order they are run and reported."""
    return [(n, m) for n in names for m in modes if m == "prefill" or n in DECODERS]


def _say(r: dict) -> str:
    if "error" in r:
        return f"{r['case']} {r['mode']}: failed: {r['error'][:300]}"
    return (f"{r['case']} {r['mode']}: {'eager' if r['whole_model_eager'] else 'graph'}, coverage "
            f"{r['coverage']:.1%} / explained {r['explained_coverage']:.1%} ({r['explained_coverage_basis']}); "
            f"by parts {r['coverage_parts']:.1%} / {r['explained_coverage_parts']:.1%}; max CV {r['max_cv']:.2%}; "
            f"{r['wall_s']:.0f} s on "
            f"{r['card']['uuid'][:12]}")


def run_all(cases: list, ex, settings: dict, out: Path) -> list:
    """Every case as a job of ``ex`` (workers.HostProcesses: a fresh process per case, on each card at once; a
    process that dies, as BLOOM-560m's prefill did with SIGSEGV on an H200, is tried again once, then recorded
    with how it died, and the others run on: Note [One writer], bench/workers.py). heldout.json is rewritten
    whole after every case, in plan order."""
    out.mkdir(parents=True, exist_ok=True)
    ctx = settings.get("in_context", ())  # the cases measured in context too
    jobs = workers.Jobs({"job": "heldout", "id": f"{name}/{mode}", "case": name, "mode": mode,
                         "args": settings | {"in_context": name in ctx}} for name, mode in cases)
    done = {}
    for job, rec in ex.run(jobs):
        jobs.keep_profile(rec)  # a card calibrated once
        key = (job["case"], job["mode"])
        card = rec.get("identity", {}).get("gpu")  # a process that died left no identity: its error names the card
        done[key] = (rec["heldout"] | {"wall_s": rec["wall_s"]} if rec["status"] == "ok" else
                     {"case": key[0], "mode": key[1], "error": rec["error"], "card": card})
        print("  " + _say(done[key]), flush=True)
        write_atomic(out / "heldout.json", json.dumps([done[c] for c in cases if c in done], indent=1,
                                                      default=float) + "\n")
    recs = [done[c] for c in cases if c in done]
    write_atomic(out / "heldout.md", markdown(recs))
    return recs


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--cases", default=",".join(CASES))
    ap.add_argument("--modes", default="prefill,decode")
    ap.add_argument("--gpus", default="0", help="the cards to spread the cases over: 'all', or nvidia-smi indices or "
                    "UUIDs, e.g. 0,1,2,3 (default: 0)")
    ap.add_argument("--out", default=str(Path(__file__).resolve().parents[1] / "results"))
    ap.add_argument("--window-s", type=float, default=0.2)
    ap.add_argument("--in-context", nargs="?", const="all", default="", metavar="CASES",
                    help="also each part's in-context marginal (the model's graph without it; one more whole-model "
                    "measurement a part), for every case or the ones listed (e.g. gemma-2b-2l,mistral-7b-2l): for "
                    "parts that run at the power limit alone (Gemma-2B's LM head)")
    ap.add_argument("--dry-run", action="store_true", help="print the cases and modes that would run, measure nothing")
    args = ap.parse_args(argv)
    names = [c for c in args.cases.split(",") if c]
    ctx = names if args.in_context == "all" else [c for c in args.in_context.split(",") if c]
    unknown = [c for c in names + ctx if c not in CASES] + [m for m in args.modes.split(",") if m not in MODES]
    if unknown:
        print(f"bench/heldout.py: unknown case or mode {unknown[0]!r}; cases: {', '.join(CASES)}; modes: "
              f"{', '.join(MODES)}", file=sys.stderr)
        return 2
    cases = plan(names, args.modes.split(","))
    if args.dry_run:
        for name, mode in cases:
            cls, _, why, batch, seq = CASES[name]
            shape = f"batch {batch}, one new token after 512 cached" if mode == "decode" else f"batch {batch} x {seq}"
            print(f"{name} {mode}: {cls}, {shape}{', in context too' if name in ctx else ''}; {why}")
        return 0
    require_gpu("bench/heldout.py")  # one clear line before any process starts, not one failure per case
    try:
        cards = workers.host_cards(args.gpus)
    except ValueError as exc:
        print(f"bench/heldout.py: {exc}", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="heldout-") as scratch:  # the workers' job files and logs
        ex = workers.HostProcesses(cards, Path(scratch), retries=1)
        print(f"{len(cases)} cases on {ex.description}", flush=True)
        recs = run_all(cases, ex, {"window_s": args.window_s, "in_context": ctx}, Path(args.out))
    print(markdown(recs))
    return 0 if recs and all("error" not in r for r in recs) else 1


if __name__ == "__main__":
    sys.exit(main())
