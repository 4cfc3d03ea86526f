"""The study: component energy of 15 transformer models on one GPU, sweeps, energy vs FLOPs.

Reproduces the CLEAR study (arXiv 2510.02810) with clear_native's public API:
every model of the suite (encoder, decoder, encoder-decoder, vision; configs at
the published sizes, random weights, nothing downloaded) is measured component
by component (prefill, and one decode step after a 512-token static cache for
the decoders) with coverage, glue and gaps; sweeps of batch, sequence length,
KV-cache length, heads, hidden size and dtype; the CLEAR authors' reference
procedure on BERT-base's components beside ours; J/FLOP per component kind and
a fitted energy model. Every measurement is appended as it completes to
<out>/<card>/measurements.jsonl; --resume continues an interrupted run; the
report (REPORT.md, PNG figures) is written from those records.

Usage:
  python bench/run.py                        # the default suite, sweeps and reference (GPU)
  python bench/run.py --quick                # 4 models, 2 sweeps, a few minutes
  python bench/run.py --dry-run              # the plan: components, FLOPs, bytes, estimated time (no GPU)
  python bench/run.py --resume               # continue where an interrupted run stopped
  python bench/run.py --report-only          # rewrite the report from the records
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time
from pathlib import Path

import clear_native as cn
import suite
from common import run_identity

ROOT = Path(__file__).resolve().parents[1]
MEASUREMENTS = "measurements.jsonl"
REFERENCE = "reference.jsonl"
SUPERSEDED = "superseded.jsonl"   # records --redo replaced, kept


def card_slug(name: str) -> str:
    """'NVIDIA H200' -> 'nvidia-h200': the folder of a card's results."""
    return "-".join("".join(c if c.isalnum() else " " for c in name.lower()).split())


def fmt_s(seconds: float) -> str:
    seconds = max(0, int(seconds))
    return f"{seconds // 60}:{seconds % 60:02d}"


def load_records(path: Path) -> list[dict]:
    """The records of a jsonl file; a line cut short by an interruption is skipped."""
    if not path.exists():
        return []
    out = []
    for line in path.read_text().splitlines():
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return out


def append_record(path: Path, record: dict) -> None:
    """Appends one record and forces it to disk: an interruption loses nothing already measured."""
    with open(path, "a") as f:
        f.write(json.dumps(record, default=float) + "\n")
        f.flush()
        os.fsync(f.fileno())


def record_l2(record: dict) -> str:
    """The L2 mode a record was measured with; records from before the option replayed hot."""
    return record.get("settings", {}).get("l2", "hot")


def supersede(folder: Path, records: list[dict], patterns: list[str]) -> list[dict] | None:
    """Moves the records of tasks whose id starts with one of ``patterns`` to superseded.jsonl.

    They are measured again by this run; nothing is deleted (the report counts them).
    Returns the records left, or None (and moves nothing) where no id matches.
    """
    redo = [any(r["task"]["id"].startswith(p) for p in patterns) for r in records]
    old = [r for r, x in zip(records, redo) if x]
    if not old:
        return None
    keep = [r for r, x in zip(records, redo) if not x]
    for r in old:
        append_record(folder / SUPERSEDED, r)
    tmp = folder / (MEASUREMENTS + ".tmp")
    tmp.write_text("".join(json.dumps(r) + "\n" for r in keep))
    os.replace(tmp, folder / MEASUREMENTS)
    print(f"--redo: {len(old)} records moved to {folder / SUPERSEDED}; measuring them again", flush=True)
    return keep


def done_ids(records: list[dict], retry_failed: bool) -> set:
    return {r["task"]["id"] for r in records if r.get("status") == "ok" or not retry_failed}


# --------------------------------------------------------------------------- plan


def print_plan(tasks, args) -> int:
    """--dry-run: components, signatures, FLOPs, bytes and estimated time of every task (no GPU)."""
    settle_s = 0.45  # an H200's measured settle time; the run uses the card's own profile
    total = 0.0
    print(f"{len(tasks)} tasks; per capture {args.min_trials}+ trials of {settle_s:.2f} s settle + "
          f"{args.window_s:.2f} s window\n")
    print("| task | purpose | components | groups | GFLOP/forward | MB moved (min) | est. time |")
    print("|---|---|---|---|---|---|---|")
    for t in tasks:
        p = suite.flops_plan(t)
        est = suite.estimate_s(len(p["groups"]), args.min_trials, settle_s, args.window_s)
        total += est
        flops = sum(g["flops"] * g["occurrences"] for g in p["groups"])
        mb = sum(g["bytes_min"] * g["occurrences"] for g in p["groups"]) / 1e6
        print(f"| {t.id} | {','.join(t.purpose)} | {p['components']} | {len(p['groups'])} | {flops / 1e9:.2f} | "
              f"{mb:.1f} | {est:.0f} s |")
        if args.verbose:
            for g in p["groups"]:
                print(f"|   {g['name']} | {g['kind']} | ×{g['occurrences']} | | {g['flops'] / 1e9:.4f} | "
                      f"{g['bytes_min'] / 1e6:.2f} | |")
        if p["note"]:
            print(f"|   ({p['note']}) | | | | | | |")
    ref = 0 if args.no_reference else 30
    print(f"\nestimated GPU time: {fmt_s(total + ref)} (min:s), reference procedure included: {ref} s")
    return 0


# --------------------------------------------------------------------------- measuring


class Interrupted(Exception):
    pass


def _on_sigterm(signum, frame):  # `timeout` and batch schedulers send SIGTERM: stop like Ctrl-C
    raise KeyboardInterrupt(f"signal {signum}")


def measure_task(torch, T, task, profile, args):
    """One task on the GPU: a ModelReport as a dict."""
    model, inputs, kw = suite.build(T, torch, task, "cuda")
    try:
        verbose = (lambda m: print(f"      {m}", flush=True)) if args.verbose else None
        rep = cn.measure_model(model, *inputs, mode=task.mode, cache_len=task.cache_len or 512, profile=profile,
                               min_trials=args.min_trials, max_trials=args.max_trials, target_ci_rel=args.target_ci,
                               window_s=args.window_s, budget_s=args.task_budget_s, l2=args.l2,
                               target_cv=args.target_cv, progress=verbose,
                               **kw)
        return rep.to_dict()
    finally:
        del model
        torch.cuda.empty_cache()


def reference_task(torch, T, profile, args) -> dict:
    """The CLEAR authors' procedure (energy counter around a Python loop) on BERT-base's components,
    beside clear_native's protocol on the same captures, at batch 1 x sequence 8."""
    task = suite.Task("bert-base", batch=1, seq=8, purpose=("reference",))
    model, inputs, kw = suite.build(T, torch, task, "cuda")
    comps = cn.find_components(model, *inputs, **kw)
    groups = [g for g in cn.group_components(comps) if g.kind in ("self_attention", "mlp")]
    caps = [cn.capture(g.representative.module, *g.representative.args, name=g.name,
                       **g.representative.kwargs) for g in groups]
    t0 = time.monotonic()
    ours = cn.measure(caps, profile=profile, min_trials=args.min_trials, target_ci_rel=args.target_ci,
                      window_s=args.window_s, budget_s=120)
    ours_wall = time.monotonic() - t0
    rows = []
    for g in groups:
        rep = g.representative
        t1 = time.monotonic()
        ref = cn.baselines.counter_loop(rep.module, *rep.args, n=args.reference_calls, trials=args.reference_trials,
                                        sleep_s=0.2, **rep.kwargs)
        m = ours[g.name]
        rows.append({"component": g.name, "kind": g.kind, "ours": {
            "energy_per_call_j": m.energy_per_call_j, "cv": m.cv, "ci95_rel": m.ci95_rel, "trials": m.trials,
            "gpu_time_per_call_s": m.gpu_time_per_call_s},
            "reference": ref.to_dict(), "reference_wall_s": time.monotonic() - t1})
    return {"task": task.to_dict() | {"id": "reference/bert-base/b1s8/bf16"}, "status": "ok", "rows": rows,
            "ours_wall_s": ours_wall, "run": {k: v for k, v in ours.to_dict().items() if k != "measurements"}}


def run(args, tasks) -> int:
    torch = _require_gpu()
    import transformers as T

    ident = run_identity(torch)
    ident["transformers"] = T.__version__
    folder = Path(args.out) / card_slug(ident["gpu"]["name"])
    folder.mkdir(parents=True, exist_ok=True)
    mpath, rpath = folder / MEASUREMENTS, folder / REFERENCE
    records = load_records(mpath)
    if records and not args.resume:
        print(f"{mpath} already holds {len(records)} measurements: pass --resume to continue that run, "
              f"or --out <folder> to start another", file=sys.stderr)
        return 2
    modes = {record_l2(r) for r in records if r.get("status") == "ok"}
    if modes - {args.l2}:
        print(f"{mpath} holds measurements with {'/'.join(sorted(modes))} L2 replay, and this run asks for "
              f"--l2 {args.l2}: one report cannot mix them; pass --l2 {'/'.join(sorted(modes))} or --out <folder>",
              file=sys.stderr)
        return 2
    cards = {r["identity"]["gpu"].get("uuid") for r in records if "identity" in r} - {ident["gpu"].get("uuid")}
    if cards:
        print(f"note: this card ({ident['gpu'].get('uuid')}) is not the one that measured the earlier records "
              f"({', '.join(sorted(map(str, cards)))}); the report lists the cards", file=sys.stderr)
    ppath = folder / "profile.json"
    if ppath.exists():  # a resumed run keeps the sensor profile of its start: one run, one profile
        profile = cn.SensorProfile(**json.loads(ppath.read_text()))
    else:
        print("calibrating the power sensor ...", flush=True)
        profile = cn.calibrate(cache=False)
        ppath.write_text(json.dumps(profile.to_dict(), indent=1) + "\n")
    if args.redo:
        kept = supersede(folder, records, suite.as_list(args.redo, []))
        if kept is None:
            print(f"--redo {args.redo} matches no task id recorded in {mpath}", file=sys.stderr)
            return 2
        records = kept
    skip = done_ids(records, args.retry_failed)
    todo = [t for t in tasks if t.id not in skip]
    want_ref = not args.no_reference and not any(r.get("status") == "ok" for r in load_records(rpath))
    est = {t.id: suite.estimate_s(7, args.min_trials, profile.settle_s, args.window_s) for t in todo}
    print(f"{card_slug(ident['gpu']['name'])}: {len(tasks)} tasks, {len(tasks) - len(todo)} already measured, "
          f"{len(todo)} to go{' + reference procedure' if want_ref else ''}; results in {folder}", flush=True)
    signal.signal(signal.SIGTERM, _on_sigterm)
    settings = {k: getattr(args, k)
                for k in ("window_s", "min_trials", "max_trials", "target_ci", "target_cv", "task_budget_s", "l2")}
    t_start, spent_est, rc = time.monotonic(), 0.0, 0
    try:
        for i, task in enumerate(todo, 1):
            elapsed = time.monotonic() - t_start
            rate = elapsed / spent_est if spent_est else 1.0
            eta = rate * sum(est[t.id] for t in todo[i - 1:])
            print(f"[{i}/{len(todo)}] {task.id} ({', '.join(task.purpose)})  elapsed {fmt_s(elapsed)}, "
                  f"ETA {fmt_s(eta)}", flush=True)
            t0 = time.monotonic()
            rec = {"task": task.to_dict(), "identity": ident, "profile": profile.to_dict(), "settings": settings}
            try:
                rec["report"] = measure_task(torch, T, task, profile, args)
                rec["status"] = "ok"
                a = rec["report"]["accounting"]
                cvs = [g["cv"] for g in rec["report"]["groups"]] + [rec["report"]["whole"]["cv"]]
                print(f"    coverage {a['coverage']:.1%}, explained {a['explained_coverage']:.1%}, "
                      f"max CV {max(cvs):.2%}, {time.monotonic() - t0:.0f} s", flush=True)
            except KeyboardInterrupt:
                raise
            except Exception as exc:  # noqa: BLE001 - one task's failure never loses the others
                rec["status"], rec["error"] = "failed", f"{type(exc).__name__}: {exc}"
                print(f"    failed: {rec['error'].splitlines()[0]}", flush=True)
            rec["wall_s"] = time.monotonic() - t0
            append_record(mpath, rec)
            spent_est += est[task.id]
            if rec["status"] == "failed" and torch.cuda.is_available() and not _cuda_usable(torch):
                print("the CUDA context is lost (a device-side error): stopping; run again with --resume",
                      file=sys.stderr)
                rc = 3
                break
        if want_ref and rc == 0:
            print("reference procedure (CLEAR authors' loop) on BERT-base's components ...", flush=True)
            try:
                append_record(rpath, reference_task(torch, T, profile, args) | {"identity": ident})
            except KeyboardInterrupt:
                raise
            except Exception as exc:  # noqa: BLE001
                append_record(rpath, {"task": {"id": "reference/bert-base/b1s8/bf16"}, "status": "failed",
                                      "error": f"{type(exc).__name__}: {exc}", "identity": ident})
                print(f"    failed: {type(exc).__name__}: {exc}", flush=True)
    except KeyboardInterrupt:
        print(f"\ninterrupted after {fmt_s(time.monotonic() - t_start)}: the measurements so far are in {mpath}; "
              "run again with --resume to continue", file=sys.stderr)
        rc = 130
    import report

    report.write(folder, tasks)
    print(f"report: {folder / 'REPORT.md'} (this invocation: {fmt_s(time.monotonic() - t_start)} min:s)")
    return rc


def _cuda_usable(torch) -> bool:
    try:
        torch.cuda.synchronize()
        return True
    except Exception:  # noqa: BLE001 - a lost context raises RuntimeError; no CUDA at all, AssertionError
        return False


def _require_gpu():
    try:
        import torch
    except ImportError:
        sys.exit("bench/run.py needs PyTorch (with CUDA to measure; --dry-run works without)")
    if not (cn.HAS_CUDA and torch.cuda.is_available()):
        print("bench/run.py needs an NVIDIA GPU and clear_native built with CUDA to measure; "
              "--dry-run prints the plan without one", file=sys.stderr)
        sys.exit(2)
    return torch


def parse(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__.split("\n\n", 1)[1])
    ap.add_argument("--quick", action="store_true", help=f"models {','.join(suite.QUICK_MODELS)}, sweeps batch,dtype")
    ap.add_argument("--models", help=f"comma-separated, from: {', '.join(suite.MODELS)}")
    ap.add_argument("--sweeps", help=f"comma-separated from {', '.join(suite.SWEEPS)}, or 'none'")
    ap.add_argument("--device", type=int, default=0, help="CUDA device index")
    ap.add_argument("--out", default=str(ROOT / "results" / "study"),
                    help="results go to <out>/<card>/ (default: the repository's results/study)")
    ap.add_argument("--resume", action="store_true", help="continue the run recorded in <out>/<card>/")
    ap.add_argument("--retry-failed", action="store_true", help="with --resume: measure failed tasks again")
    ap.add_argument("--dry-run", action="store_true", help="print the plan; needs no GPU")
    ap.add_argument("--report-only", metavar="CARD_DIR", help="rewrite REPORT.md and figures from a card's records")
    ap.add_argument("--no-reference", action="store_true", help="skip the CLEAR authors' procedure")
    ap.add_argument("--window-s", type=float, default=0.2, help="steady seconds of samples per trial")
    ap.add_argument("--min-trials", type=int, default=3)
    ap.add_argument("--max-trials", type=int, default=12)
    ap.add_argument("--target-ci", type=float, default=0.01, help="stop at this 95 %% CI half-width (fraction)")
    ap.add_argument("--target-cv", type=float, default=0.01,
                    help="a capture whose trials vary more than this gets longer windows (fraction)")
    ap.add_argument("--redo", metavar="IDS", help="with --resume: measure again the tasks whose id starts with "
                                                  "one of these (comma-separated); old records go to superseded.jsonl")
    ap.add_argument("--task-budget-s", type=float, default=120.0, help="wall-clock budget of one task's trials")
    ap.add_argument("--l2", choices=("cold", "hot"), default="cold",
                    help="replay components as copies that overflow the L2 cache, as in the model (cold), or one "
                         "copy (hot)")
    ap.add_argument("--reference-calls", type=int, default=2000)
    ap.add_argument("--reference-trials", type=int, default=5)
    ap.add_argument("-v", "--verbose", action="store_true")
    args = ap.parse_args(argv)
    if args.quick:
        args.window_s = min(args.window_s, 0.15)
    return args


def main(argv=None) -> int:
    args = parse(argv)
    try:
        models = suite.as_list(args.models, suite.QUICK_MODELS if args.quick else suite.MODELS)
        tasks = suite.plan(models, suite.as_list(args.sweeps, suite.SWEEPS), quick=args.quick)
    except ValueError as exc:
        print(f"bench/run.py: {exc}", file=sys.stderr)
        return 2
    if args.report_only:
        import report

        report.write(Path(args.report_only), tasks)
        print(f"report: {Path(args.report_only) / 'REPORT.md'}")
        return 0
    if args.dry_run:
        return print_plan(tasks, args)
    visible = [v for v in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if v]
    if visible and args.device >= len(visible):
        print(f"bench/run.py: --device {args.device} but CUDA_VISIBLE_DEVICES shows {len(visible)} GPU(s)",
              file=sys.stderr)
        return 2
    # Before CUDA starts: the chosen GPU becomes device 0 for PyTorch and for the NVML mapping alike.
    os.environ["CUDA_VISIBLE_DEVICES"] = visible[args.device] if visible else str(args.device)
    return run(args, tasks)


if __name__ == "__main__":
    sys.exit(main())
