"""What one job does on one GPU (or on the simulated one): the code every executor runs.

A job is a JSON-able dict, so that it can cross a process (bench/workers.py) or a Ray cluster:

    {"job": "task" | "reference" | "card_check", "id": "...", "task": Task dict (task jobs),
     "args": the run's settings, "profiles": the sensor profiles of the cards known (by UUID), "simulate": bool,
     "card": the card's UUID it must run on, or None}

run_job(job, lab) measures it in this process and returns its record, the same record whichever
executor ran it; nothing here writes a file (Note [One writer], bench/workers.py).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import time
import types

import clear_native as cn
from bench import heldout_cases, suite
from clear_native.simulated import QUICK_SENSOR, OpCosts
from bench.common import run_identity


def job_seed(job: dict) -> int:
    """The simulated sensor's seed for a job: fixed by its id, so a simulated run is reproducible."""
    return int(hashlib.sha256(job["id"].encode()).hexdigest()[:8], 16)


def gpu_libraries():
    """(torch, transformers), imported when a job starts measuring."""
    import torch
    import transformers

    return torch, transformers


# A simulated card that heats: idle at 38 °C, +0.08 °C per watt above idle (a 4 s lag), and 0.5 W more per °C.
SIM_THERMAL = {"sensor": {"temperature_c": 38, "thermal_c_per_w": 0.08, "thermal_tau_s": 4.0}, "leak_w_per_c": 0.5}


def sim_card_gain(uuid: str) -> float:
    """A simulated card's energy gain over the nominal card (0.95-1.05, fixed by its UUID): simulated
    cards differ as real ones do (issue 14: 5-6 % between H200s), with a truth the tests know."""
    h = int(hashlib.sha256(uuid.encode()).hexdigest()[:8], 16)
    return 0.95 + 0.10 * (h % 1001) / 1000


def model_class(job: dict) -> str | None:
    """The transformers class a job builds (None: a job without a model of the study's)."""
    if job.get("job") == "reference":
        return suite.MODELS["bert-base"].cls
    task = job.get("task") or {}
    return suite.MODELS[task["model"]].cls if task.get("model") in suite.MODELS else None


class Lab:
    """This process's measuring environment: libraries, device, backend and card identity.
    ``simulate``: the simulated GPU on the CPU, on the virtual clock (for testing the pipeline).
    ``between_rounds``: what a task's measurement calls between its rounds of trials (another process's turn on
    the card: bench/turns.py), or None."""

    between_rounds = None

    def __init__(self, simulate: bool = False, seed: int = 1):
        self.torch, self.T = gpu_libraries()
        self.simulate = simulate
        self._stack = contextlib.ExitStack()
        if simulate:
            card = os.environ.get("CUDA_VISIBLE_DEVICES", "0").split(",")[0] or "0"
            uuid = card if card.startswith("SIM-") else f"SIM-GPU-{card}"
            gain = sim_card_gain(uuid)
            self._stack.enter_context(cn.clock.virtual())
            costs = OpCosts(awake_w=110.0 * gain, j_per_flop=0.6e-12 * gain, j_per_byte=25e-12 * gain)
            # Each job its own noise (``seed``, from its id), as two processes on a real card differ.
            sensor = cn.synthetic_sensor(**QUICK_SENSOR, seed=seed)  # a simulated study in seconds
            self.backend = cn.SimulatedBackend(sensor, awake_w=110.0 * gain, costs=costs)
            self._sim = (gain, costs, seed)
            self.device = "cpu"
            self.identity = run_identity(self.torch, gpu={"name": "Simulated GPU", "uuid": uuid,
                                                          "pci_bus_id": f"sim:{card}", "driver_version": "none",
                                                          "power_limit_w": 700.0}) | {"simulated": True}
        else:
            # Every launch of this process on one stream, before its first: Note [One stream], backend.py.
            self._stack.enter_context(cn.one_stream(0))
            self.backend, self.device = None, "cuda"
            self.identity = run_identity(self.torch)
        self.identity["transformers"] = self.T.__version__

    def heating_backend(self):
        """This simulated card as one whose die heats as it draws and then draws more (SIM_THERMAL): what the
        thermal job measures (bench/cardref.py, Note [Two temperatures]). The other jobs keep a card at one
        temperature, so that their truth (sim_card_gain) stays exact."""
        gain, costs, seed = self._sim
        sensor = cn.synthetic_sensor(**QUICK_SENSOR, **SIM_THERMAL["sensor"], seed=seed)
        return cn.SimulatedBackend(sensor, awake_w=110.0 * gain, costs=costs,
                                   leak_w_per_c=SIM_THERMAL["leak_w_per_c"] * gain)

    @property
    def uuid(self) -> str:
        return self.identity["gpu"]["uuid"]

    def profile(self, saved: dict | None):
        """The card's sensor profile: the one the run saved for this card, or a new one."""
        if saved is not None:
            return cn.SensorProfile(**saved)
        print("calibrating the power sensor ...", flush=True)
        if self.simulate:
            return cn.calibrate(self.backend, rest_s=0.3, load_s=0.4)
        return cn.calibrate(cache=False)

    def close(self) -> None:
        self._stack.close()

    def cuda_usable(self) -> bool:
        if self.simulate or not self.torch.cuda.is_available():
            return True
        try:
            self.torch.cuda.synchronize()
            return True
        except Exception:  # noqa: BLE001 - a lost context raises RuntimeError; no CUDA at all, AssertionError
            return False


# --------------------------------------------------------------------------- the jobs


def measure_task(lab: Lab, task, profile, args) -> dict:
    """One study task: a ModelReport as a dict."""
    torch = lab.torch
    model, inputs, kw = suite.build(lab.T, torch, task, lab.device)
    try:
        verbose = (lambda m: print(f"      {m}", flush=True)) if getattr(args, "verbose", False) else None
        rep = cn.measure_model(model, *inputs, model_kwargs=kw, mode=task.mode, cache_len=task.cache_len or 512,
                               backend=lab.backend, profile=profile, min_trials=args.min_trials,
                               max_trials=args.max_trials, target_ci_rel=args.target_ci, window_s=args.window_s,
                               budget_s=args.task_budget_s, l2=args.l2, target_cv=args.target_cv, progress=verbose,
                               between_rounds=lab.between_rounds, instances=getattr(args, "instances", 1))
        return rep.to_dict()
    finally:
        del model
        if not lab.simulate:
            torch.cuda.empty_cache()


REFERENCE_ID = "reference/bert-base/b1s8/bf16"


def reference_task(lab: Lab, profile, args) -> dict:
    """The CLEAR authors' procedure (energy counter around a Python loop, at ``args.reference_calls`` x
    ``args.reference_trials``) on BERT-base's attention and feed-forward, beside clear_native's protocol on
    the same modules in the same state (hot L2: one copy, as their loop runs it), at batch 1 x sequence 8;
    with the terms that explain their reading (bench/reference.py)."""
    from bench import reference

    task = suite.Task("bert-base", batch=1, seq=8, purpose=("reference",))
    model, inputs, kw = suite.build(lab.T, lab.torch, task, lab.device)
    return reference.compare(lab, model, inputs, kw, profile, args) | {
        "task": task.to_dict() | {"id": REFERENCE_ID}, "status": "ok"}


def card_check(lab: Lab, profile, args) -> dict:
    """The card reference (bench/cardref.py): fixed workloads every card measures, for normalising
    energies between cards, with the GPU's temperature."""
    from bench import cardref

    return {"card_check": cardref.measure(lab, profile, args), "status": "ok"}


def thermal(lab: Lab, profile, args) -> dict:
    """Each reference workload's energy per call as the die warms and cools (bench/cardref.py, Note [Two
    temperatures])."""
    from bench import cardref

    return {"thermal": cardref.thermal(lab, profile, args), "status": "ok"}


def run_job(job: dict, lab: Lab) -> dict:
    """One job's record: measured, or failed with its reason (one job's failure never loses the others)."""
    t0 = time.monotonic()
    args = types.SimpleNamespace(**job["args"])
    profile = lab.profile(job.get("profiles", {}).get(lab.uuid))
    rec = {"job": job["job"], "job_id": job["id"], "identity": lab.identity, "profile": profile.to_dict(),
           "settings": job["args"], "pid": os.getpid()} | ({"round": job["round"]} if "round" in job else {})
    if job["job"] == "task":
        rec["task"] = job["task"]
    else:
        rec["task"] = {"id": job["id"]}
    try:
        if job["job"] == "task":
            rec["report"] = measure_task(lab, suite.Task.from_dict(job["task"]), profile, args)
            rec["status"] = "ok"
        elif job["job"] == "reference":
            rec |= reference_task(lab, profile, args)
        elif job["job"] == "card_check":
            rec |= card_check(lab, profile, args) | {"phase": job.get("phase", "start")}
        elif job["job"] == "thermal":
            rec |= thermal(lab, profile, args)
        elif job["job"] == "heldout":  # a family outside the study (bench/heldout.py)
            rec["heldout"] = heldout_cases.measure_case(lab, job["case"], job["mode"], profile, args)
            rec["status"] = "ok"
        else:
            raise ValueError(f"unknown job kind {job['job']!r}")
    except KeyboardInterrupt:
        raise
    except Exception as exc:  # noqa: BLE001 - one job's failure never loses the others
        rec["status"], rec["error"] = "failed", f"{type(exc).__name__}: {exc}"
    rec["wall_s"] = time.monotonic() - t0
    return rec


def run_alone(job: dict) -> dict:
    """A job in a process of its own (a host worker's, a Ray worker's): its own Lab, closed with it. A job with
    "turns" (the folder its executor shares with the jobs beside it on the card: bench/turns.py) starts the GPU
    only on its turn, hands the card on between rounds of trials, and its record says how it went."""
    turns = None
    if (how := job.get("turns") or {}).get("folder"):
        from bench.turns import Turns

        turns = Turns(how["folder"], how["me"], how["members"])
        turns.wait()  # before this process starts CUDA: a context made beside a measurement could disturb it
    try:
        lab = Lab(job.get("simulate", False), seed=job_seed(job))
        lab.between_rounds = turns.hand_on if turns else None
        try:
            rec = run_job(job, lab)
        finally:
            lab.close()
    finally:
        if turns:
            turns.leave()
    return rec | ({"turns": turns.summary()} if turns else {})


def summary(rec: dict) -> str:
    """One line on a finished job, for the run's progress."""
    if rec.get("status") != "ok":
        return f"failed: {str(rec.get('error', '?')).splitlines()[0]}"
    if "report" in rec:
        a = rec["report"]["accounting"]
        cvs = [g["cv"] for g in rec["report"]["groups"]] + [rec["report"]["whole"]["cv"]]
        return (f"coverage {a['coverage']:.1%}, explained {a['explained_coverage']:.1%}, max CV {max(cvs):.2%}, "
                f"{rec.get('wall_s', 0):.0f} s")
    if "card_check" in rec:
        w = rec["card_check"]["workloads"]
        return "card reference: " + ", ".join(f"{k} {v['energy_per_call_j'] * 1e3:.3f} mJ" for k, v in w.items())
    return f"{rec.get('wall_s', 0):.0f} s"


__all__ = ["Lab", "run_job", "run_alone", "measure_task", "reference_task", "card_check", "summary", "REFERENCE_ID"]
