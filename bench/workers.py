"""Where a run's jobs execute: in this process, in one fresh process per job on each GPU of a host
(``--gpus``), or as Ray tasks on a cluster (``--ray``). Every executor yields (job, record) pairs.

Note [One writer]
~~~~~~~~~~~~~~~~~
Workers measure and return records; only the driver (bench/run.py) appends them to the run's
files, one at a time, so that records never interleave and a crash of any worker, or of the
driver itself, loses at most the jobs in flight: --resume measures exactly those again. A job
runs on one whole GPU in a process of its own, which ends with the job, so no CUDA or NVML
state is carried from one job to the next. A worker process that dies (killed, out of memory,
a crashed driver) leaves no result; its job is tried again, at most ``retries`` times, then
recorded as failed with the reason. A job that raises inside a healthy worker returns a failed
record at once (the same code would fail again). Cards are named by UUID and PCI bus id, never
by an index alone: CUDA_VISIBLE_DEVICES carries the UUID, and each record names its card.

On a Ray cluster, Ray does what the host executor does by hand: one GPU per task, a fresh worker
process per task (max_calls=1), retries of tasks whose worker died (max_retries). Ray chooses
the card, so jobs that must run on a given card (repeats, a card's closing check) run where Ray
puts them; their records say which card that was.
"""

from __future__ import annotations

import collections
import ctypes
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

if __package__ in (None, ""):  # `python bench/workers.py JOB RESULT`: the installed clear_native, then bench
    sys.path.pop(0)
    sys.path.append(str(Path(__file__).resolve().parents[1]))

from bench import tasks, turns  # noqa: E402
from bench.cards import Card, host_cards  # noqa: E402,F401 - the executors' cards

WORKER = Path(__file__).resolve()


def _may_run_on(job: dict, card: str | None) -> bool:
    """A job unpinned, or pinned to ``card``."""
    return job.get("card") in (None, card)


# Note [A time limit]
# ~~~~~~~~~~~~~~~~~~~
# A lease or a batch system's slot ends at a set time, and a job stopped by it loses all it measured (its record is
# written when it ends). With a time limit (--time-limit S of bench/run.py and bench/reproducibility.py) no job
# starts that could not end within S seconds of the command's start by its bound (bound): a task its budget of
# trials (task_budget_s; side by side already its rounds' together) plus TASK_SETUP_S for its import, model,
# captures and warm-up; the others the longest seen on H200s, with room: a card check 54-115 s, the thermal job
# 150-160 s, the CLEAR authors' procedure at its defaults 96-105 s (results/study/nvidia-h200/*/cards.jsonl,
# reference.jsonl; results/reproducibility/2026-11-29_104052 and _105225, where GPT-2's two processes side by side
# took 355 s on a budget of 320). Jobs start in their order: the first that does not fit holds back the ones after
# it on its card. The run ends once the jobs running have; the command names what it left and how to measure it
# (--resume), and exits with TIME_LIMIT_LEFT. A Ray cluster queues every job at once, before any starts, so no
# start can be bounded there: bench/run.py refuses --time-limit with --ray.
TASK_SETUP_S, CHECK_BOUND_S, THERMAL_BOUND_S, REFERENCE_BOUND_S = 90.0, 150.0, 200.0, 200.0
REFERENCE_DEFAULT_CALLS = 10_000 * 20  # the authors' procedure's calls x trials that REFERENCE_BOUND_S was seen at
TIME_LIMIT_LEFT = 3  # the exit code of a run that a time limit left jobs of


def bound(job: dict) -> float:
    """The longest ``job`` is expected to run (s): Note [A time limit]."""
    kind, args = job["job"], job.get("args") or {}
    if kind == "task":
        return args["task_budget_s"] + TASK_SETUP_S
    if kind == "reference":
        calls = args.get("reference_calls", 0) * args.get("reference_trials", 0)  # unknown: as at the defaults
        return REFERENCE_BOUND_S * max(1.0, calls / REFERENCE_DEFAULT_CALLS)
    return THERMAL_BOUND_S if kind == "thermal" else CHECK_BOUND_S


class Jobs:
    """The jobs still to run, in order; a job with a "card" runs only on that card. The driver may add
    jobs while an executor runs (repeats of finished tasks). ``profiles``: each card's sensor profile,
    sent with every job so that a card is calibrated once per run. After ``limit``, no job is taken that could
    not end by its deadline (``held_back`` then says that one was not)."""

    def __init__(self, jobs=()):
        self._items = collections.deque(jobs)
        self.profiles: dict = {}
        self.stop_at: float | None = None
        self._clock = None
        self.held_back = False

    def limit(self, stop_at: float, clock=None) -> None:
        """Take no job that could not end by ``stop_at``, a deadline on ``clock`` (time.monotonic, looked up when
        read) (Note [A time limit])."""
        self.stop_at, self._clock = stop_at, clock

    def add(self, job: dict, first: bool = False) -> None:
        (self._items.appendleft if first else self._items.append)(job)

    def peek(self, card: str | None) -> dict | None:
        """The next job that may run on ``card`` (None: a card not known yet, so only unpinned jobs), left in
        the queue."""
        return next((job for job in self._items if _may_run_on(job, card)), None)

    def take(self, card: str | None) -> dict | None:
        """The next job that may run on ``card``, out of the queue, with the cards' sensor profiles."""
        job = self.peek(card)
        if job is None:
            return None
        if self.stop_at is not None and (self._clock or time.monotonic)() + bound(job) > self.stop_at:
            self.held_back = True
            return None
        self._items.remove(job)
        return self._with_profiles(job)

    def take_beside(self, job: dict, card: str) -> list:
        """The jobs queued to run beside ``job`` on ``card``, taking turns with it (those whose "turns" share its
        key: bench/turns.py), out of the queue, in member order; [] for a job that runs alone."""
        key = (job.get("turns") or {}).get("key")
        if key is None:
            return []
        beside = [j for j in self._items if (j.get("turns") or {}).get("key") == key and _may_run_on(j, card)]
        for j in beside:
            self._items.remove(j)
        return sorted((self._with_profiles(j) for j in beside), key=lambda j: j["turns"]["me"])

    def _with_profiles(self, job: dict) -> dict:
        return job | {"profiles": dict(self.profiles)}

    def keep_profile(self, rec: dict) -> bool:
        """A finished job's card profile, sent with the later jobs (its card is calibrated once per run); True
        where it is the card's first."""
        uuid = (rec.get("identity") or {}).get("gpu", {}).get("uuid")
        if not (uuid and rec.get("profile")) or uuid in self.profiles:
            return False
        self.profiles[uuid] = rec["profile"]
        return True

    def __len__(self) -> int:
        return len(self._items)

    def left(self) -> list:
        return list(self._items)


def held_back(jobs: Jobs, limit_s: float) -> str:
    """What a time limit left (Note [A time limit]), in words."""
    left = jobs.left()
    return (f"time limit: {len(left)} job(s) not started (the next, {left[0]['id']}, could take up to "
            f"{bound(left[0]):.0f} s, past the limit of {limit_s:.0f} s from the start)")


def _on_sigterm(signum, frame):
    raise KeyboardInterrupt(f"signal {signum}")


def stop_on_sigterm() -> None:
    """SIGTERM (what `timeout` and batch schedulers send) stops this process as Ctrl-C does: the driver's
    KeyboardInterrupt handler keeps what was measured and says how to go on, and the executors stop the workers
    that were running (HostProcesses.run's finally)."""
    signal.signal(signal.SIGTERM, _on_sigterm)


def failed(job: dict, reason: str) -> dict:
    """The record of a job that could not be measured."""
    return {"job": job["job"], "task": job.get("task") or {"id": job["id"]}, "status": "failed", "error": reason,
            "settings": job["args"]}


# --------------------------------------------------------------------------- in this process


class InProcess:
    """Every job in this process, one after another (one GPU: CUDA_VISIBLE_DEVICES's first)."""

    pins = True
    description = "this process"

    def __init__(self, simulate: bool = False):
        self.simulate = simulate

    def run(self, jobs: Jobs):
        lab = tasks.Lab(self.simulate)
        try:
            while (job := jobs.take(lab.uuid)) is not None:
                rec = tasks.run_job(job, lab)
                yield job, rec
                if rec["status"] == "failed" and not lab.cuda_usable():
                    raise CudaLost(f"the CUDA context is lost (a device-side error) after {job['id']}")
        finally:
            lab.close()


class CudaLost(RuntimeError):
    """A job broke this process's CUDA context: nothing more can run in it."""


# --------------------------------------------------------------------------- one process per job, per GPU


def _spawn(card: Card, log_path: Path, likely: dict | None = None) -> subprocess.Popen:
    """A worker process for ``card`` that imports what a job needs (and the model class of ``likely``, the
    job it will probably get), then waits for its job on stdin (Note [Spare workers])."""
    env = dict(os.environ, CUDA_VISIBLE_DEVICES=card.uuid, PYTHONUNBUFFERED="1")
    hint = tasks.model_class(likely) if likely else None
    with open(log_path, "w") as log:
        return subprocess.Popen([sys.executable, str(WORKER), "-", *([hint] if hint else [])], stdin=subprocess.PIPE,
                                stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True, text=True)


# Note [Spare workers]
# ~~~~~~~~~~~~~~~~~~~~
# A fresh process spends seconds importing PyTorch and transformers before it touches the GPU
# (6.6 s on an H200 host, measured: .gpu probe of 2026-11-27; importing one model's transformers
# module is 1-2 s more). So while a card runs a job, the next process for that card is already
# started: it imports, and imports the model class of the job now first in the queue for that card
# (a hint: another job may come, which then imports its own), then waits on its stdin for a job. It
# does nothing on the GPU before its job comes: it has not started CUDA (a context being made on a
# card while another process measures there could disturb that measurement), so it carries no state
# of any job. The next job on that card goes to it; a spare that died meanwhile is replaced.


class _Running:
    def __init__(self, job: dict, card: Card, attempt: int, folder: Path, simulate: bool,
                 spare: tuple | None = None):
        self.job, self.card, self.attempt = job, card, attempt
        stem = folder / f"{_safe(job['id'])}.{attempt}"
        self.job_path, self.result_path, self.log_path = (stem.with_name(stem.name + s)
                                                          for s in (".job.json", ".result.json", ".log"))
        self.job_path.write_text(json.dumps(job | {"simulate": simulate}))
        proc, spare_log = spare if spare and spare[0].poll() is None else (None, None)
        if proc is None:
            proc = _spawn(card, self.log_path)
        else:
            spare_log.replace(self.log_path)  # the open log follows the job
        if "turns" in job:  # its process is known before the job reaches it (bench/turns.py)
            turns.register(Path(job["turns"]["folder"]), job["turns"]["me"], proc.pid)
        proc.stdin.write(f"{self.job_path}\t{self.result_path}\n")
        proc.stdin.close()
        self.proc = proc
        self.t0 = time.monotonic()

    def result(self) -> dict | None:
        if self.proc.returncode != 0 or not self.result_path.exists():
            return None
        return json.loads(self.result_path.read_text())

    def why(self) -> str:
        rc = self.proc.returncode
        how = f"killed by signal {-rc} ({signal.Signals(-rc).name})" if rc < 0 else f"exit status {rc}"
        tail = self.log_path.read_text(errors="replace").strip().splitlines()[-3:] if self.log_path.exists() else []
        return f"worker process {self.proc.pid} on {self.card.uuid} died ({how})" + \
            (f"; its last output: {' | '.join(tail)}" if tail else "")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def clean(self) -> None:
        for p in (self.job_path, self.result_path):
            p.unlink(missing_ok=True)


def _safe(job_id: str) -> str:
    return "".join(c if c.isalnum() or c in "-_.=" else "_" for c in job_id)


class HostProcesses:
    """One fresh process per job, one job per GPU at a time, on ``cards`` (Note [One writer]); jobs that take turns
    (their "turns" share a key: bench/turns.py) run side by side on their card, each in its process. ``lockstep``:
    the cards start their next jobs together, once every card's job before has ended (Note [Cards in lockstep]).
    A time limit on ``jobs`` (Jobs.limit) holds back what could not end by it."""

    pins = True

    def __init__(self, cards: list[Card], folder: Path, simulate: bool = False, retries: int = 2,
                 poll_s: float = 0.1, lockstep: bool = False):
        self.cards, self.simulate, self.retries, self.poll_s = cards, simulate, retries, poll_s
        self.lockstep = lockstep
        self.folder = Path(folder) / "workers"
        self.description = f"{len(cards)} GPU(s), one process per job{', in lockstep' if lockstep else ''}: " + \
            ", ".join(c.uuid for c in cards)

    def run(self, jobs: Jobs):
        self.folder.mkdir(parents=True, exist_ok=True)
        running: dict = {}  # card uuid -> its workers (several where jobs take turns on it)
        spares: dict = {}  # card uuid -> (process, its log) waiting for the card's next job
        tries = collections.Counter()
        try:
            while True:
                for card in () if self.lockstep and running else self.cards:
                    if card.uuid not in running and (job := jobs.take(card.uuid)) is not None:
                        group = self._ring([job, *jobs.take_beside(job, card.uuid)])
                        running[card.uuid] = [self._start(j, card, tries, spares) for j in group]
                        if len(jobs):
                            log = self.folder / f"spare.{card.uuid}.{running[card.uuid][0].proc.pid}.log"
                            spares[card.uuid] = (_spawn(card, log, jobs.peek(card.uuid)), log)
                if not running:
                    return
                time.sleep(self.poll_s)
                for uuid, ws in list(running.items()):
                    for w in [w for w in ws if w.proc.poll() is not None]:
                        ws.remove(w)
                        rec = self._finished(w, jobs, tries)
                        if rec is not None:
                            yield w.job, rec
                    if not ws:
                        del running[uuid]
        finally:
            for w in (w for ws in running.values() for w in ws):
                w.stop()
            for proc, log in spares.values():  # never given a job: its stdin is still open
                proc.kill()
                proc.wait()
                proc.stdin.close()
                log.unlink(missing_ok=True)

    def _ring(self, group: list) -> list:
        """Jobs that take turns (bench/turns.py), each told the folder they share, set up for these members alone;
        a job that runs alone, as it is."""
        if "turns" not in group[0]:
            return group
        folder = self.folder / "turns" / _safe(group[0]["turns"]["key"])
        turns.begin(folder, group[0]["turns"]["members"], [j["turns"]["me"] for j in group])
        return [j | {"turns": j["turns"] | {"folder": str(folder)}} for j in group]

    def _start(self, job: dict, card: Card, tries, spares: dict) -> _Running:
        """A worker for ``job`` on ``card`` (the card's spare where one waits)."""
        w = _Running(job, card, tries[job["id"]] + 1, self.folder, self.simulate, spares.pop(card.uuid, None))
        print(f"    started {job['id']} on {card.uuid} (pid {w.proc.pid}, attempt {w.attempt})", flush=True)
        return w

    def _finished(self, w: _Running, jobs: Jobs, tries) -> dict | None:
        """The record of a finished worker, or None where its job went back in the queue."""
        rec = w.result()
        if rec is None:
            tries[w.job["id"]] += 1
            reason = w.why()
            if tries[w.job["id"]] <= self.retries:
                print(f"    {reason}: {w.job['id']} goes back in the queue", flush=True)
                jobs.add({k: v for k, v in w.job.items() if k != "profiles"}, first=True)
                return None
            rec = failed(w.job, f"{reason}; gave up after {w.attempt} attempts")
        rec["attempts"] = w.attempt
        w.clean()
        return rec


# --------------------------------------------------------------------------- a Ray cluster


def ray_job(job: dict) -> dict:
    """A job in a Ray worker process of its own (max_calls=1): the same code as a host worker."""
    return tasks.run_alone(job)


class RayCluster:
    """Jobs as Ray tasks of one GPU each: ``address`` a running cluster ("auto", "ray://host:10001"), or
    "local" for a cluster on this machine (``simulated_gpus`` logical GPUs with --simulate)."""

    pins = False

    def __init__(self, address: str, simulate: bool = False, retries: int = 2, simulated_gpus: int = 2):
        self.address, self.simulate, self.retries, self.simulated_gpus = address, simulate, retries, simulated_gpus
        self.description = f"Ray cluster {address}"

    def _init(self):
        import ray

        import bench

        local = self.address == "local"
        kw = dict(num_cpus=max(2, self.simulated_gpus), num_gpus=self.simulated_gpus) if local and self.simulate else {}
        ray.init(address=None if local else self.address, runtime_env={"py_modules": [bench]},
                 include_dashboard=False, logging_level="WARNING", **kw)
        return ray

    def run(self, jobs: Jobs):
        ray = self._init()
        remote = ray.remote(num_gpus=1, max_calls=1, max_retries=self.retries)(ray_job)
        pending: dict = {}
        try:
            while True:
                while (job := jobs.take(None)) is not None:
                    pending[remote.remote(job | {"simulate": self.simulate})] = job
                if not pending:
                    return
                done, _ = ray.wait(list(pending), num_returns=1)
                job = pending.pop(done[0])
                try:
                    rec = ray.get(done[0])
                except ray.exceptions.RayError as exc:  # the worker died more than max_retries times
                    rec = failed(job, f"Ray task failed after {self.retries + 1} attempts: {type(exc).__name__}: "
                                      f"{str(exc).splitlines()[0]}")
                yield job, rec
        finally:
            for ref in pending:
                ray.cancel(ref, force=True)
            ray.shutdown()


# --------------------------------------------------------------------------- a worker process


def _die_with_parent() -> None:
    """Linux: this worker gets SIGTERM when the driver dies, so that no orphan keeps measuring."""
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def main(argv) -> int:
    """`workers.py JOB RESULT`, or `workers.py - [MODEL_CLASS]`: import first (the transformers class too),
    then read "JOB\tRESULT" from stdin (Note [Spare workers]); an empty stdin (a spare not needed) exits."""
    _die_with_parent()
    signal.signal(signal.SIGTERM, lambda s, f: sys.exit(128 + s))
    if argv[:1] == ["-"]:
        _, T = tasks.gpu_libraries()  # the slow imports, before the job comes; CUDA is not started
        for name in argv[1:]:
            getattr(T, name, None)  # transformers imports a model's module when its class is first asked for
        line = sys.stdin.readline().strip()
        if not line:
            return 0
        argv = line.split("\t")
    job_path, result_path = map(Path, argv)
    rec = tasks.run_alone(json.loads(job_path.read_text()))
    tmp = result_path.with_name(result_path.name + ".tmp")
    tmp.write_text(json.dumps(rec, default=float))
    tmp.replace(result_path)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
