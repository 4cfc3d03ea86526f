"""The study: component energy of 15 transformer models on one GPU, sweeps, energy vs FLOPs.

Reproduces the CLEAR study (arXiv 2510.02810) with clear_native's public API:
every model of the suite (encoder, decoder, encoder-decoder, vision; configs at
the published sizes, random weights, nothing downloaded) is measured component
by component (prefill, and one decode step after a 512-token static cache for
the decoders) with coverage, glue and gaps; sweeps of batch, sequence length,
KV-cache length, heads, hidden size and dtype; the CLEAR authors' reference
procedure on BERT-base's components beside ours; J/FLOP per component kind and
a fitted energy model. Each run gets a folder of its own,
<out>/<card>/<date_time>/; every measurement is appended to its
measurements.jsonl as it completes; --resume RUN continues an interrupted run;
the report (REPORT.md, PNG figures) is written from those records.

Usage:
  python bench/run.py                        # the default suite, sweeps and reference (GPU)
  python bench/run.py --quick                # 4 models, 2 sweeps, a few minutes
  python bench/run.py --dry-run              # the plan: components, FLOPs, bytes, estimated time (no GPU)
  python bench/run.py --resume RUN           # continue the run in folder RUN where it stopped
  python bench/run.py --report-only RUN      # rewrite RUN's report from its records
"""

from __future__ import annotations

import argparse
import signal
import sys
import time
from pathlib import Path

if __package__ in (None, ""):  # `python bench/run.py`: import the package bench, not loose files beside this one
    sys.path.pop(0)
    sys.path.append(str(Path(__file__).resolve().parents[1]))

import clear_native as cn  # noqa: E402
from bench import preflight, store, suite  # noqa: E402
from bench.common import run_identity  # noqa: E402
from bench.store import fmt_s  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


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
              f"{mb:.1f} | {est:.0f} s |", flush=True)
        if args.verbose:
            for g in p["groups"]:
                print(f"|   {g['name']} | {g['kind']} | ×{g['occurrences']} | | {g['flops'] / 1e9:.4f} | "
                      f"{g['bytes_min'] / 1e6:.2f} | |")
    ref = 0 if args.no_reference else 30
    print(f"\nestimated GPU time: {fmt_s(total + ref)} (min:s), reference procedure included: {ref} s")
    return 0


# --------------------------------------------------------------------------- measuring


def _on_sigterm(signum, frame):  # `timeout` and batch schedulers send SIGTERM: stop like Ctrl-C
    raise KeyboardInterrupt(f"signal {signum}")


def measure_task(torch, T, task, profile, args):
    """One task on the GPU: a ModelReport as a dict."""
    model, inputs, kw = suite.build(T, torch, task, "cuda")
    try:
        verbose = (lambda m: print(f"      {m}", flush=True)) if args.verbose else None
        rep = cn.measure_model(model, *inputs, model_kwargs=kw, mode=task.mode, cache_len=task.cache_len or 512,
                               profile=profile, min_trials=args.min_trials, max_trials=args.max_trials,
                               target_ci_rel=args.target_ci, window_s=args.window_s, budget_s=args.task_budget_s,
                               l2=args.l2, target_cv=args.target_cv, progress=verbose)
        return rep.to_dict()
    finally:
        del model
        torch.cuda.empty_cache()


def reference_task(torch, T, profile, args) -> dict:
    """The CLEAR authors' procedure (energy counter around a Python loop) on BERT-base's components,
    beside clear_native's protocol on the same captures, at batch 1 x sequence 8."""
    task = suite.Task("bert-base", batch=1, seq=8, purpose=("reference",))
    model, inputs, kw = suite.build(T, torch, task, "cuda")
    comps = cn.find_components(model, *inputs, model_kwargs=kw)
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


def _profile(folder: Path):
    """The run's sensor profile: the one its start measured (one run, one profile), or a new one."""
    saved = store.load_profile(folder)
    if saved is not None:
        return cn.SensorProfile(**saved)
    print("calibrating the power sensor ...", flush=True)
    profile = cn.calibrate(cache=False)
    store.save_profile(folder, profile.to_dict())
    return profile


def _one(torch, T, task, ident, profile, settings, args) -> dict:
    """One task's record: measured, or failed with its reason (one task's failure never loses the others)."""
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
    return rec


def _reference(torch, T, profile, args, ident, folder) -> None:
    print("reference procedure (CLEAR authors' loop) on BERT-base's components ...", flush=True)
    try:
        store.append(folder, reference_task(torch, T, profile, args) | {"identity": ident}, store.REFERENCE)
    except KeyboardInterrupt:
        raise
    except Exception as exc:  # noqa: BLE001
        store.append(folder, {"task": {"id": "reference/bert-base/b1s8/bf16"}, "status": "failed",
                              "error": f"{type(exc).__name__}: {exc}", "identity": ident}, store.REFERENCE)
        print(f"    failed: {type(exc).__name__}: {exc}", flush=True)


def _gpu_libraries():
    """(torch, transformers), imported when a run starts measuring."""
    import torch
    import transformers

    return torch, transformers


def run(args, tasks, folder: Path) -> int:
    """Measures the tasks not yet in ``folder``'s records, then writes its report."""
    torch, T = _gpu_libraries()
    ident = run_identity(torch)
    ident["transformers"] = T.__version__
    records = store.load(folder)
    now = (str(ident.get("code_version", "?")), str(ident.get("protocol_version", "?")))
    other = store.versions(records) - {now}
    if other and not args.allow_mixed:
        print(f"bench/run.py: {folder} was measured by code/protocol {sorted(other)}, this is {now}: one report "
              "would mix them; pass --allow-mixed to resume anyway, or start a new run", file=sys.stderr)
        return 2
    cards = {r["identity"]["gpu"].get("uuid") for r in records if "identity" in r} - {ident["gpu"].get("uuid")}
    if cards:
        print(f"note: this card ({ident['gpu'].get('uuid')}) is not the one that measured the earlier records "
              f"({', '.join(sorted(map(str, cards)))}); the report lists the cards", file=sys.stderr)
    profile = _profile(folder)
    if args.redo:
        records = store.supersede(folder, records, suite.as_list(args.redo, []))
        print(f"--redo: earlier records of {args.redo} moved to {folder / store.SUPERSEDED}", flush=True)
    skip = store.done_ids(records, args.retry_failed)
    todo = [t for t in tasks if t.id not in skip]
    want_ref = not args.no_reference and not any(r.get("status") == "ok" for r in store.load(folder, store.REFERENCE))
    est = {t.id: suite.estimate_s(7, args.min_trials, profile.settle_s, args.window_s) for t in todo}
    print(f"{ident['gpu']['name']} ({ident['gpu']['uuid']}): {len(tasks)} tasks, {len(tasks) - len(todo)} already "
          f"measured, {len(todo)} to go{' + reference procedure' if want_ref else ''}; results in {folder}", flush=True)
    signal.signal(signal.SIGTERM, _on_sigterm)
    settings = {k: getattr(args, k)
                for k in ("window_s", "min_trials", "max_trials", "target_ci", "target_cv", "task_budget_s", "l2")}
    t_start, spent_est, rc = time.monotonic(), 0.0, 0
    try:
        for i, task in enumerate(todo, 1):
            elapsed = time.monotonic() - t_start
            eta = (elapsed / spent_est if spent_est else 1.0) * sum(est[t.id] for t in todo[i - 1:])
            print(f"[{i}/{len(todo)}] {task.id} ({', '.join(task.purpose)})  elapsed {fmt_s(elapsed)}, "
                  f"ETA {fmt_s(eta)}", flush=True)
            rec = _one(torch, T, task, ident, profile, settings, args)
            store.append(folder, rec)
            spent_est += est[task.id]
            if rec["status"] == "failed" and torch.cuda.is_available() and not _cuda_usable(torch):
                print(f"the CUDA context is lost (a device-side error): stopping; run again with --resume {folder}",
                      file=sys.stderr)
                rc = 3
                break
        if want_ref and rc == 0:
            _reference(torch, T, profile, args, ident, folder)
    except KeyboardInterrupt:
        print(f"\ninterrupted after {fmt_s(time.monotonic() - t_start)}: the measurements so far are in {folder}; "
              f"continue with: python bench/run.py --resume {folder}", file=sys.stderr)
        rc = 130
    _report(folder, tasks)
    print(f"this invocation: {fmt_s(time.monotonic() - t_start)} min:s", flush=True)
    return rc


def _report(folder: Path, tasks, allow_mixed: bool = True) -> None:
    from bench import report

    written = report.write(folder, tasks, allow_mixed=allow_mixed)
    print(f"report: {folder / 'REPORT.md'}" + (f" ({written['figures_note']})" if written.get("figures_note") else ""),
          flush=True)


def _cuda_usable(torch) -> bool:
    try:
        torch.cuda.synchronize()
        return True
    except Exception:  # noqa: BLE001 - a lost context raises RuntimeError; no CUDA at all, AssertionError
        return False


def parse(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__.split("\n\n", 1)[1])
    ap.add_argument("--quick", action="store_true", help=f"models {','.join(suite.QUICK_MODELS)}, sweeps batch,dtype")
    ap.add_argument("--models", help=f"comma-separated, from: {', '.join(suite.MODELS)}")
    ap.add_argument("--sweeps", help=f"comma-separated from {', '.join(suite.SWEEPS)}, or 'none'")
    ap.add_argument("--device", type=int, default=0, help="CUDA device index")
    ap.add_argument("--out", default=str(ROOT / "results" / "study"),
                    help="a new run goes to <out>/<card>/<date_time>/ (default: the repository's results/study)")
    ap.add_argument("--resume", metavar="RUN", help="continue the run in folder RUN (its measurements.jsonl)")
    ap.add_argument("--retry-failed", action="store_true", help="with --resume: measure failed tasks again")
    ap.add_argument("--dry-run", action="store_true", help="print the plan; needs PyTorch on the CPU, no GPU")
    ap.add_argument("--report-only", metavar="RUN", help="rewrite REPORT.md and figures from a run's records")
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
    ap.add_argument("--allow-mixed", action="store_true",
                    help="let one run's records (and its report) come from several code or protocol versions")
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
        return preflight.fail(str(exc))
    if args.report_only:
        if not store.load(Path(args.report_only)):
            return preflight.fail(f"no measurements in {Path(args.report_only) / store.MEASUREMENTS}: "
                                  "name a run folder that bench/run.py wrote")
        try:
            _report(Path(args.report_only), tasks, allow_mixed=args.allow_mixed)
        except ValueError as exc:
            return preflight.fail(str(exc))
        return 0
    if args.dry_run:
        problem = preflight.for_dry_run()
        return preflight.fail(problem) if problem else print_plan(tasks, args)
    problem, folder = preflight.for_run(args)  # everything checked before any GPU work
    if problem:
        return preflight.fail(problem)
    return run(args, tasks, folder)


if __name__ == "__main__":
    sys.exit(main())
