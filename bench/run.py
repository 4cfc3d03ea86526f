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
import sys
import time
from pathlib import Path

if __package__ in (None, ""):  # `python bench/run.py`: import the package bench, not loose files beside this one
    sys.path.pop(0)
    sys.path.append(str(Path(__file__).resolve().parents[1]))

import clear_native as cn  # noqa: E402
from bench import preflight, store, suite, workers  # noqa: E402
from bench import tasks as tasks_mod  # noqa: E402
from bench.common import code_version  # noqa: E402
from bench.store import fmt_s  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


# --------------------------------------------------------------------------- plan


def print_plan(tasks, args) -> int:
    """--dry-run: components, signatures, FLOPs, bytes and estimated time of every task (no GPU)."""
    settle_s = 0.45  # an H200's measured settle time; the run uses the card's own profile
    total, ests = 0.0, []
    print(f"{len(tasks)} tasks; per capture {args.min_trials}+ trials of {settle_s:.2f} s settle + "
          f"{args.window_s:.2f} s window\n")
    print("| task | purpose | components | groups | GFLOP/forward | MB moved (min) | est. time |")
    print("|---|---|---|---|---|---|---|")
    for t in tasks:
        p = suite.flops_plan(t)
        est = suite.estimate_s(len(p["groups"]), args.min_trials, settle_s, args.window_s)
        total += est
        ests.append(est)
        flops = sum(g["flops"] * g["occurrences"] for g in p["groups"])
        mb = sum(g["bytes_min"] * g["occurrences"] for g in p["groups"]) / 1e6
        print(f"| {t.id} | {','.join(t.purpose)} | {p['components']} | {len(p['groups'])} | {flops / 1e9:.2f} | "
              f"{mb:.1f} | {est:.0f} s |", flush=True)
        if args.verbose:
            for g in p["groups"]:
                print(f"|   {g['name']} | {g['kind']} | ×{g['occurrences']} | | {g['flops'] / 1e9:.4f} | "
                      f"{g['bytes_min'] / 1e6:.2f} | |")
    # The authors' loop: 3 parts x trials x (calls x ~150 µs of Python per call + 0.2 s sleep), and ours beside it.
    ref = 0 if args.no_reference else 3 * args.reference_trials * (args.reference_calls * 150e-6 + 0.2) + 30
    checks = 0 if args.no_card_check else cardref_s()
    again = 0 if args.no_repeats else sum(est for t, est in zip(tasks, ests) if t.id in suite.REPEATED)
    print(f"\nestimated GPU time on one GPU: {fmt_s(total + ref + checks + again)} (min:s): the tasks {fmt_s(total)}, "
          f"the reference procedure {fmt_s(ref)}, card checks {fmt_s(checks)}, repeats {fmt_s(again)}; with --gpus, "
          "about that divided by the GPUs, plus each card's checks")
    return 0


def cardref_s() -> float:
    """A card check's GPU time at the start (soak included, at most) and at the end."""
    from bench.cardref import SOAK_MAX_S

    return SOAK_MAX_S + 2 * 20.0


# --------------------------------------------------------------------------- measuring


SETTINGS = ("window_s", "min_trials", "max_trials", "target_ci", "target_cv", "task_budget_s", "l2",
            "reference_calls", "reference_trials", "verbose")


def executor(args, folder: Path):
    """Where the jobs run: a Ray cluster (--ray), every chosen GPU of this host (--gpus), or this process."""
    if args.ray:
        n = len(workers.host_cards(args.gpus or "all", simulate=True)) if args.simulate else 0
        return workers.RayCluster(args.ray, simulate=args.simulate, retries=args.retries, simulated_gpus=n)
    if args.gpus:
        return workers.HostProcesses(workers.host_cards(args.gpus, args.simulate), folder, simulate=args.simulate,
                                     retries=args.retries)
    return workers.InProcess(simulate=args.simulate)


def this_card(args):
    """The card an in-process run measures (the one preflight made CUDA device 0)."""
    if args.simulate:
        return workers.Card("SIM-GPU-0", "sim:0", "Simulated GPU", 0)
    info = cn.gpu_info(0)
    return workers.Card(info.uuid, info.pci_bus_id, info.name, -1)


def plan_jobs(args, tasks, folder: Path, ex) -> tuple:
    """(Jobs, total, repeats, done): what this invocation runs, in order: each card's check, the tasks not yet
    measured and the reference procedure (on several GPUs the longest first), each card's closing check;
    repeats follow their first measurement (Note [One writer], bench/workers.py)."""
    settings = {k: getattr(args, k) for k in SETTINGS}
    records = store.load(folder)
    done = store.done_ids(records, args.retry_failed)
    jobs = workers.Jobs()
    jobs.profiles.update(store.load_profiles(folder))
    cards = ([] if not ex.pins or args.no_card_check else
             ex.cards if isinstance(ex, workers.HostProcesses) else [this_card(args)])
    checked = {r["task"]["id"] for r in store.load(folder, store.CARDS) if r.get("status") == "ok"}

    def card_checks(phase: str) -> None:
        for c in cards:
            if f"card_check/{phase}/{c.uuid}" not in checked:
                jobs.add(_job("card_check", f"card_check/{phase}/{c.uuid}", settings, args, card=c.uuid, phase=phase))

    card_checks("start")
    # On several GPUs the longest jobs start first (the reference procedure is the longest of all), so that
    # the cards finish together; one GPU keeps the plan's order.
    parallel = not isinstance(ex, workers.InProcess)
    reference = not args.no_reference and not any(r.get("status") == "ok"
                                                    for r in store.load(folder, store.REFERENCE))
    if reference and parallel:
        jobs.add(_job("reference", tasks_mod.REFERENCE_ID, settings, args))
    for t in suite.longest_first(tasks) if parallel else tasks:
        if t.id not in done:
            jobs.add(_job("task", t.id, settings, args, task=t.to_dict()))
    if reference and not parallel:
        jobs.add(_job("reference", tasks_mod.REFERENCE_ID, settings, args))
    card_checks("end")
    repeats = {r.base_id: r for r in suite.repeats(tasks)} if not args.no_repeats else {}
    total = len(jobs) + sum(1 for r in repeats.values() if r.id not in done and r.base_id not in done)
    for rec in records:  # repeats whose first measurement an earlier invocation made
        follow = _repeat_of(rec, repeats, done, ex, settings, args.simulate)
        if follow:
            jobs.add(follow)
            total += 1
    return jobs, total, repeats, done


def _job(kind: str, job_id: str, settings: dict, args, **extra) -> dict:
    return {"job": kind, "id": job_id, "args": settings, "simulate": args.simulate, "card": None} | extra


def _repeat_of(rec: dict, repeats: dict, done: set, ex, settings: dict, simulate: bool) -> dict | None:
    """The repeat job a finished task asks for (on the same card where the executor can pin), or None."""
    t = repeats.get(rec.get("task", {}).get("id"))
    if t is None or t.id in done or rec.get("status") != "ok":
        return None
    done.add(t.id)
    card = rec.get("identity", {}).get("gpu", {}).get("uuid") if ex.pins else None
    return {"job": "task", "id": t.id, "args": settings, "simulate": simulate, "card": card, "task": t.to_dict()}


def _store(folder: Path, job: dict, rec: dict, jobs, ex, repeats: dict, done: set) -> None:
    """Appends a finished job's record where it belongs (the one writer), keeps its card's profile, and
    queues the task's repeat."""
    if jobs.keep_profile(rec):
        store.save_profiles(folder, jobs.profiles)
    name = {"task": store.MEASUREMENTS, "reference": store.REFERENCE, "card_check": store.CARDS}[job["job"]]
    store.append(folder, rec, name)
    follow = _repeat_of(rec, repeats, done, ex, job["args"], job.get("simulate", False)) \
        if job["job"] == "task" else None
    if follow:
        jobs.add(follow)


def run(args, tasks, folder: Path) -> int:
    """Measures what ``folder``'s records lack, then writes its report."""
    from clear_native.protocol import PROTOCOL_VERSION

    records = store.load(folder)
    now = (code_version(), str(PROTOCOL_VERSION))
    other = store.versions(records) - {now}
    if other and not args.allow_mixed:
        print(f"bench/run.py: {folder} was measured by code/protocol {sorted(other)}, this is {now}: one report "
              "would mix them; pass --allow-mixed to resume anyway, or start a new run", file=sys.stderr)
        return 2
    if args.redo:
        store.supersede(folder, records, suite.as_list(args.redo, []))
        print(f"--redo: earlier records of {args.redo} moved to {folder / store.SUPERSEDED}", flush=True)
    try:
        ex = executor(args, folder)
        jobs, total, repeats, done = plan_jobs(args, tasks, folder, ex)
    except ValueError as exc:
        return preflight.fail(str(exc))
    n_tasks = sum(1 for j in jobs.left() if j["job"] == "task" and not j["task"].get("repeat"))
    print(f"{len(tasks)} tasks, {len(tasks) - n_tasks} already measured, {n_tasks} to go ({total} jobs with card "
          f"checks, repeats and the reference); on {ex.description}; results in {folder}", flush=True)
    if args.stop_at is not None:
        jobs.limit(args.stop_at)
    workers.stop_on_sigterm()
    t_start, finished, rc = time.monotonic(), 0, 0
    try:
        for job, rec in ex.run(jobs):
            _store(folder, job, rec, jobs, ex, repeats, done)
            finished += 1
            elapsed = time.monotonic() - t_start
            eta = elapsed / finished * len(jobs)
            card = rec.get("identity", {}).get("gpu", {}).get("uuid", "?")
            print(f"[{finished}/{max(total, finished + len(jobs))}] {job['id']} on {card}: {tasks_mod.summary(rec)}  "
                  f"elapsed {fmt_s(elapsed)}, ETA {fmt_s(eta)}", flush=True)
    except workers.CudaLost as exc:
        print(f"{exc}: stopping; run again with --resume {folder}{_where(args)}", file=sys.stderr)
        rc = 3
    except KeyboardInterrupt:
        print(f"\ninterrupted after {fmt_s(time.monotonic() - t_start)}: the measurements so far are in {folder}; "
              f"continue with: python bench/run.py --resume {folder}{_where(args)}", file=sys.stderr)
        rc = 130
    if rc == 0 and jobs.held_back:
        print(f"{workers.held_back(jobs, args.time_limit)}; the measurements so far are in {folder}; continue with: "
              f"python bench/run.py --resume {folder}{_where(args)}", file=sys.stderr)
        rc = workers.TIME_LIMIT_LEFT
    elif rc == 0 and len(jobs):  # e.g. a resumed run's repeats, pinned to a card this invocation does not have
        print(f"{len(jobs)} jobs wait for cards this invocation did not use: "
              + ", ".join(f"{j['id']} (card {j['card']})" for j in jobs.left()), file=sys.stderr)
    if store.load(folder):
        _report(folder, tasks)
    else:  # stopped before its first measurement (a time limit, Ctrl-C)
        print(f"no measurements in {folder} yet: no report yet", file=sys.stderr)
    print(f"this invocation: {fmt_s(time.monotonic() - t_start)} min:s", flush=True)
    return rc


def _where(args) -> str:
    """The flags that say where a run measures, for the command that resumes it."""
    return "".join(f" --{k} {getattr(args, k)}" for k in ("gpus", "ray") if getattr(args, k)) + \
        (" --simulate" if args.simulate else "")


def _report(folder: Path, tasks, allow_mixed: bool = True) -> None:
    from bench import report

    written = report.write(folder, tasks, allow_mixed=allow_mixed)
    print(f"report: {folder / 'REPORT.md'}" + (f" ({written['figures_note']})" if written.get("figures_note") else ""),
          flush=True)


def parse(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__.split("\n\n", 1)[1])
    ap.add_argument("--quick", action="store_true", help=f"models {','.join(suite.QUICK_MODELS)}, sweeps batch,dtype")
    ap.add_argument("--models", help=f"comma-separated, from: {', '.join(suite.MODELS)}")
    ap.add_argument("--sweeps", help=f"comma-separated from {', '.join(suite.SWEEPS)}, or 'none'")
    ap.add_argument("--only", metavar="IDS", help="of the planned tasks, only those whose id starts with one of these "
                                                  "(comma-separated; see --dry-run for the ids)")
    ap.add_argument("--device", type=int, default=0, help="CUDA device index (without --gpus: one GPU, in this process)")
    ap.add_argument("--gpus", metavar="all|LIST",
                    help="measure on these GPUs of this host at once, one fresh process per task: 'all', or "
                         "comma-separated nvidia-smi indices or UUIDs")
    ap.add_argument("--ray", nargs="?", const="local", metavar="ADDRESS",
                    help="run the tasks on a Ray cluster, one GPU each (ADDRESS: 'auto', ray://host:10001; "
                         "none: a local cluster)")
    ap.add_argument("--retries", type=int, default=2, help="times a task whose worker process died is tried again")
    ap.add_argument("--time-limit", type=float, metavar="S", help="start no job that could not end within S seconds "
                    "(a lease's or batch slot's end); continue with --resume, exit code 3 (Note [A time limit], "
                    "bench/workers.py)")
    ap.add_argument("--simulate", action="store_true",
                    help="the simulated GPU on the CPU, for testing a setup (--gpus, --ray) without GPUs: its "
                         "numbers are not measurements")
    ap.add_argument("--no-card-check", action="store_true",
                    help="skip each card's reference workloads at the run's start and end (bench/cardref.py)")
    ap.add_argument("--no-repeats", action="store_true",
                    help="skip measuring a few tasks again at the run's end (the run's own repeatability)")
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
    ap.add_argument("--reference-calls", type=int,
                    help="calls per trial of the CLEAR authors' procedure (default 10,000, their code's; --quick 2,000)")
    ap.add_argument("--reference-trials", type=int, help="its trials (default 20, their code's; --quick 5)")
    ap.add_argument("--allow-mixed", action="store_true",
                    help="let one run's records (and its report) come from several code or protocol versions")
    ap.add_argument("-v", "--verbose", action="store_true")
    args = ap.parse_args(argv)
    args.stop_at = None if args.time_limit is None else time.monotonic() + args.time_limit
    if args.quick:
        args.window_s = min(args.window_s, 0.15)
    if args.reference_calls is None:
        args.reference_calls = 2_000 if args.quick else 10_000
    if args.reference_trials is None:
        args.reference_trials = 5 if args.quick else 20
    return args


def main(argv=None) -> int:
    args = parse(argv)
    try:
        models = suite.as_list(args.models, suite.QUICK_MODELS if args.quick else suite.MODELS)
        tasks = suite.plan(models, suite.as_list(args.sweeps, suite.SWEEPS), quick=args.quick)
        if args.only:
            tasks = suite.only(tasks, suite.as_list(args.only, []))
    except ValueError as exc:
        return preflight.fail(str(exc))
    if args.report_only is not None:
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
