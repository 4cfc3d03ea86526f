"""The launch-latency state of each GPU over time, beside what NVML reports (issue 14; Note
[Launch-latency state], clear_native/backend.py); writes results/launch_state.json and .md.

On every chosen GPU at once, a fresh process replays GPT-2's decode step (a CUDA graph, batch 1,
512 cached tokens, 3 steps a launch; --task: another study task's whole model) for --seconds, and every
--every seconds reads its GPU time per step and GpuBackend.launch_state(): the GPU time per tiny kernel in a
graph, the SM and memory clocks, the PCIe link's generation and width. Card k starts k x --stagger seconds after
the first (an H200 was seen to switch state while a neighbour started). The summary groups each card's
readings by what NVML reported: if the slow state goes with one link generation, the table shows it.
The link was refuted (results/launch_state.md). The next guess is the host: the state moved in 6 of 8
processes under the protocol's busy interleaving, never in 45 s of one graph's replay with the host
waiting. With --host-load-after S, all host CPUs but two are kept busy from S seconds in, and every
reading says whether they were and which CPU the process ran on (and its clock, where the machine tells).

The host's load was refuted too (results/launch_state_host_load.md). So were the NVML sampler, idle rests and
gaps, and a process's age (--sampler, --idle; results/launch_state-runs/): bare processes held one state for
100-150 s while measure_model's began slow. --prelude runs one of measure_model's steps (or all of it, briefly)
on the model first, to find which leaves a process slow; it reads the state after each of its steps
(measure_model's progress lines, the backend's calls, the sampler's start and stop, measure()'s idle rest), and the
report shows that trace. Five traces on three cards (results/launch_state-runs/2026-11-28_1256*-1322*): slow from
the first awake idle on one card, from the captures after the first on two, and fast again after the profiler's
pass in all five (Note [Launch-latency state]). Protocol 11's reset took GPT-2's from 1.119 to 0.952 µs
(2026-11-28_1511*), while BERT-base prefill's processes in a reproducibility run began their trials slow after it:
--task traces that task's set-up: on four H200s (2026-11-28_1705*) it turned slow among the captures after the
first, which --trace-every 0 (each capture traced, named, with the memory PyTorch held) narrows to one.

Usage:
  python bench/launch_state.py                       # every GPU, 60 s
  python bench/launch_state.py --gpus 0 --seconds 30
  python bench/launch_state.py --seconds 60 --host-load-after 30
  python bench/launch_state.py --seconds 100 --idle 3 0.25 --sampler --prelude measure_cold
  python bench/launch_state.py --gpus 0 --seconds 10 --prelude measure_cold_blocks --task bert-base/prefill/b8s128/bf16
  python bench/launch_state.py --prelude measure_cold_blocks --trace-every 0 --task bert-base/prefill/b8s128/bf16
  python bench/launch_state.py --prelude measure_cold --trace-every 0 --task bert-base/prefill/b8s128/bf16 \
      --select encoder.layer.0.intermediate        # that capture's set-up without the others'
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from unittest import mock

if __package__ in (None, ""):
    sys.path.pop(0)
    sys.path.append(str(Path(__file__).resolve().parents[1]))

from bench.cards import on_each  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
NVML_KEYS = ("pcie_generation", "pcie_width", "sm_clock_mhz", "memory_clock_mhz")
KEYS = NVML_KEYS + ("host_load",)  # what a reading is grouped by


def spin(n: int) -> list:
    """``n`` processes that keep a host CPU busy each (killed by the caller)."""
    return [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(n)]


# What a process does before its readings (--prelude), to find which of measure_model's steps leaves a process in
# the slow state (Note [Launch-latency state]): nothing; its forward pass recorded and grouped (discover, FLOPs);
# the whole of it, briefly, on one copy of each part (l2 "hot"), on cold copies, and with the blocks too.
PRELUDES = ("none", "discover", "measure_hot", "measure_cold", "measure_cold_blocks")


# The backend's calls a prelude's trace reads the state before and after (the first of each name, then at most one
# every TRACE_EVERY_S seconds, or every one with --trace-every 0): every step of measure_model that touches the GPU
# goes through one of them. A capture's step also names what it captured.
TRACED = ("capture", "prepare", "run", "awake_idle", "idle", "load", "kernel_times_s", "l2_bytes", "idle_fn",
          "reset_launch_state")
TRACE_EVERY_S = 1.0


class Traced:
    """``backend``, reading its launch state around its TRACED calls (``trace(step)`` does: traced()), so that a
    prelude's trace shows the first of measure_model's steps after which the state is slow."""

    def __init__(self, backend, trace, every_s: float = TRACE_EVERY_S) -> None:
        self._backend, self._trace, self._last, self._every_s = backend, trace, {}, every_s

    def __getattr__(self, name: str):
        attr = getattr(self._backend, name)
        if name not in TRACED or not callable(attr):
            return attr
        return traced(attr, name, self._trace, self._last, self._every_s)


def traced(fn, name: str, trace, last: dict, every_s: float = TRACE_EVERY_S):
    """``fn``, calling ``trace("before NAME")`` and ``trace("after NAME")`` around its calls: the first, then at
    most one every ``every_s`` seconds (``last``: when each name was last traced). A call with a ``name`` keyword
    (a capture's) is traced as "NAME its-name"."""
    def call(*args, **kwargs):
        due = time.monotonic() - last.get(name, -math.inf) >= every_s
        step = f"{name} {kwargs['name']}" if isinstance(kwargs.get("name"), str) else name
        if due:
            trace(f"before {step}")
        out = fn(*args, **kwargs)
        if due:
            last[name] = time.monotonic()
            trace(f"after {step}")
        return out
    return call


def prelude(name: str, model, raw: tuple, backend, cache_len: int = 512, trace=None, mode: str = "decode",
            trace_every_s: float = TRACE_EVERY_S, select=None, **measure_kw):
    """Runs ``name`` (PRELUDES) on a model's ``mode`` pass (``raw``: its (inputs, kwargs) before prepare_inputs);
    what it made: discover's (components, blocks), measure_model's report, or None. ``trace(step)``, where
    given, is called after each step (measure_model's progress lines and the backend's TRACED calls).
    ``select``: the components (qualified names, as measure_model's select), None for the rules: which captures
    of a set-up leave the process slow."""
    import clear_native as cn
    from clear_native.components import discover, group_components
    from clear_native.model import prepare_inputs

    trace = trace or (lambda step: None)
    if name == "discover":
        inputs, kw = prepare_inputs(model, raw[0], dict(raw[1]), mode, cache_len)
        comps, found = discover(model, *inputs, select=select, model_kwargs=kw)
        trace("after discover")
        return group_components(comps), group_components(found)
    if name.startswith("measure"):
        opts = dict(min_trials=2, max_trials=3, budget_s=20.0) | measure_kw
        last: dict = {}
        # measure()'s own steps between the backend's calls: the sampler's start and stop, and its idle rest.
        every = trace_every_s
        with mock.patch.object(cn.Sampler, "start", traced(cn.Sampler.start, "sampler start", trace, last, every)), \
                mock.patch.object(cn.Sampler, "stop", traced(cn.Sampler.stop, "sampler stop", trace, last, every)), \
                mock.patch.object(cn.clock, "sleep", traced(cn.clock.sleep, "sleep", trace, last, every)):
            return cn.measure_model(model, *raw[0], model_kwargs=dict(raw[1]), mode=mode, cache_len=cache_len,
                                    select=select, backend=Traced(backend, trace, every),
                                    l2="hot" if name == "measure_hot" else "cold", blocks=name.endswith("blocks"),
                                    pace=None, progress=lambda m: trace(f"say: {m}"), **opts)
    return None


# The task each process replays (and runs its prelude on) unless --task names another of the study's.
TASK = "gpt2/decode/b1kv512/bf16"


def task_of(task_id: str):
    """The study's task ``task_id`` (ValueError that says where to find the ids, where it is none)."""
    from bench import suite

    return suite.by_ids([task_id], "--task")[task_id]


def child(seconds: float, every: float, host_load_after_s: float = -1.0, idle_between_s: float = 0.0,
          rest_first_s: float = 0.0, sampler: bool = False, before: str = "none", task_id: str = TASK,
          trace_every_s: float = TRACE_EVERY_S, select: str = "") -> int:
    """This process's GPU (CUDA device 0): one JSON line a reading. From ``host_load_after_s`` on (where >= 0),
    all host CPUs but two are kept busy: whether the host's load moves the state (Note [Launch-latency state]).
    ``rest_first_s``: the GPU idles this long before the first replay, ``idle_between_s`` after every reading
    (as the protocol's rest and the waits between its trials leave it). ``sampler``: NVML read throughout as
    measure() reads it (every buffered power sample, the energy counter every 0.25 s, status every 0.1 s).
    ``before``: a prelude (PRELUDES) run first, on the same model (``task_id``'s, a study task), its trace read
    ``trace_every_s`` apart at most for each kind of step (0: around every call), on the components ``select``
    names (comma-separated; "": the rules)."""
    import torch
    import transformers as T

    import clear_native as cn
    from bench import suite
    from clear_native.model import prepare_inputs

    task = task_of(task_id)
    cache_len = task.cache_len or 512
    model, inputs, kw = suite.build(T, torch, task, "cuda")
    backend = cn.GpuBackend(0)
    t_begin = time.monotonic()

    def trace(step: str) -> None:  # the state after one of the prelude's steps, one JSON line
        print(json.dumps({"phase": "prelude", "step": step, "t_s": time.monotonic() - t_begin,
                          "reserved_gib": torch.cuda.memory_reserved() / 2**30} | backend.launch_state()), flush=True)

    trace("model built")
    prelude(before, model, (inputs, dict(kw)), backend, cache_len=cache_len, trace=trace, mode=task.mode,
            trace_every_s=trace_every_s, select=select.split(",") if select else None)
    prelude_s = time.monotonic() - t_begin
    inputs, kw = prepare_inputs(model, inputs, kw, task.mode, cache_len)
    cap = backend.capture(model, *inputs, name=task.model, **kw)
    step, launches = backend.prepare(cap, 3), max(1, int(every / 2 / (3 * backend.time_per_call_s(cap))))
    nvml = cn.Sampler(source=backend.source, energy_interval_s=0.25, max_duration_s=seconds + 120) if sampler \
        else None
    if nvml is not None:
        nvml.start()
    time.sleep(rest_first_s)
    t0, spinners = time.monotonic(), []
    try:
        while time.monotonic() - t0 < seconds:
            if 0 <= host_load_after_s <= time.monotonic() - t0 and not spinners:
                spinners = spin(max(1, (os.cpu_count() or 4) - 2))
            r = backend.run(step, launches)  # about half of each interval
            now = time.monotonic()  # also on the host's monotonic clock, to line up with the host's own logs
            print(json.dumps({"t_s": now - t0, "monotonic_s": now, "prelude_s": prelude_s,
                              "step_s": r.gpu_time_per_call_s, "host_load": bool(spinners)} | backend.launch_state()),
                  flush=True)
            time.sleep(idle_between_s)
    finally:
        for p in spinners:
            p.kill()
        if nvml is not None:
            nvml.stop()
    return 0


def measure(cards, seconds: float, every: float, stagger: float, host_load_after_s: float = -1.0,
            idle: tuple = (0.0, 0.0), sampler: bool = False, before: str = "none", task_id: str = TASK,
            trace_every_s: float = TRACE_EVERY_S, select: str = "") -> dict:
    """{card uuid: [readings]} from one fresh process per card, all at once (card k after k x stagger s)."""
    runs = on_each(cards, lambda k, card: [sys.executable, str(Path(__file__).resolve()), "--child", str(seconds),
                                           str(every), "--delay", str(k * stagger), "--host-load-after",
                                           str(host_load_after_s), "--idle", *map(str, idle)]
                  + (["--sampler"] if sampler else [])
                  + ["--prelude", before, "--task", task_id, "--trace-every", str(trace_every_s),
                     "--select", select])
    for uuid, (code, _) in runs.items():
        if code != 0:
            raise SystemExit(f"bench/launch_state.py: the process on {uuid} exited {code}")
    return {uuid: rows for uuid, (_, rows) in runs.items()}


def summarise(readings: dict) -> dict:
    """Per card: its readings grouped by what NVML reported (link generation and width, clocks) and whether the
    host was loaded, with the median GPU time per tiny kernel and per step in each group, and the times the group
    was seen."""
    out = {}
    for uuid, rows in readings.items():
        groups: dict = {}
        for r in rows:
            if r.get("phase") == "prelude":
                continue
            groups.setdefault(tuple(r.get(k, 0) for k in KEYS), []).append(r)
        out[uuid] = [{**dict(zip(KEYS, key)), "readings": len(g),
                      "latency_us": statistics.median(x["latency_s"] for x in g) * 1e6,
                      "step_us": statistics.median(x["step_s"] for x in g) * 1e6,
                      "first_s": min(x["t_s"] for x in g), "last_s": max(x["t_s"] for x in g)}
                     for key, g in sorted(groups.items())]
    return out


def markdown(res: dict) -> str:
    from bench.common import cuda_env_text

    ident = res["identity"]
    L = ["# The launch-latency state beside what NVML reports", "",
         f"{ident['gpu']['name']}, driver {ident['gpu'].get('driver_version')}; code {ident.get('code_version')}"
         f"{cuda_env_text(ident)}; {ident.get('date')}. {res.get('task', TASK)}'s whole model (graph, 3 calls a "
         f"launch; before --task, always GPT-2's decode step) replayed {res['seconds']:.0f} s on each card, cards "
         f"started {res['stagger_s']:.0f} s apart; a reading every {res['every_s']} s "
         "(Note [Launch-latency state], clear_native/backend.py).", "",
         "| card | PCIe gen | width | SM MHz | memory MHz | host busy | readings | tiny kernel (µs) | step (µs) | "
         "seen (s) |", "|---|---|---|---|---|---|---|---|---|---|"]
    for uuid, groups in res["summary"].items():
        for g in groups:
            L.append(f"| {uuid} | {g['pcie_generation']} | {g['pcie_width']} | {g['sm_clock_mhz']} | "
                     f"{g['memory_clock_mhz']} | {'yes' if g.get('host_load') else 'no'} | {g['readings']} | "
                     f"{g['latency_us']:.3f} | {g['step_us']:.1f} | {g['first_s']:.1f}-{g['last_s']:.1f} |")
    return "\n".join(L + _trace_table(res)) + "\n"


def _trace_table(res: dict) -> list:
    """The prelude's trace: the state after each of its steps, a run of one kind of step with one state in one row
    (the captures in a run named by their first and last), with the memory PyTorch held by then (GiB)."""
    L = []
    for uuid, rows in res.get("readings", {}).items():
        steps = [r for r in rows if r.get("phase") == "prelude"]
        if not steps:
            continue
        chosen = f" (components {res['select']})" if res.get("select") else ""
        L += ["", f"## Prelude {res.get('prelude')}{chosen} on {uuid}", "",
              "| step | readings | seen (s) | tiny kernel (µs) | reserved (GiB) |", "|---|---|---|---|---|"]
        runs: list = []
        fastest = min(x["latency_s"] for x in steps)
        for r in steps:
            key = (_step_kind(r["step"]), r["latency_s"] > 1.05 * fastest)
            if runs and runs[-1][0] == key:
                runs[-1][1].append(r)
            else:
                runs.append((key, [r]))
        for (kind, _), g in runs:
            lat = [x["latency_s"] * 1e6 for x in g]
            names = [x["step"].split(" ", 2)[2] for x in g if x["step"].count(" ") >= 2]
            label = f"{kind} {names[0]} ... {names[-1]}" if kind == "capture" and len(set(names)) > 1 else \
                g[0]["step"] if kind == "capture" else kind
            reserved = max(x.get("reserved_gib", math.nan) for x in g)
            L.append(f"| {label} | {len(g)} | {g[0]['t_s']:.1f}-{g[-1]['t_s']:.1f} | "
                     f"{min(lat):.3f}-{max(lat):.3f} | {reserved:.2f} |")
    return L


def _step_kind(step: str) -> str:
    """A trace step's kind: "capture" for the steps around any capture, else the step up to its first colon."""
    return "capture" if step.startswith(("before capture", "after capture")) else step.split(":")[0]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--gpus", default="all")
    ap.add_argument("--seconds", type=float, default=60.0)
    ap.add_argument("--every", type=float, default=0.25, help="seconds between readings")
    ap.add_argument("--stagger", type=float, default=20.0, help="seconds between the cards' starts")
    ap.add_argument("--out", default=str(ROOT / "results"))
    ap.add_argument("--child", nargs=2, type=float, metavar=("SECONDS", "EVERY"), help=argparse.SUPPRESS)
    ap.add_argument("--delay", type=float, default=0.0, help=argparse.SUPPRESS)
    ap.add_argument("--idle", nargs=2, type=float, default=(0.0, 0.0), metavar=("FIRST", "BETWEEN"),
                    help="seconds the GPU idles before the first replay, and after every reading")
    ap.add_argument("--sampler", action="store_true", help="read NVML throughout, as measure() does")
    ap.add_argument("--prelude", choices=PRELUDES, default="none",
                    help="what each process does first with its model: which of measure_model's steps slows it")
    ap.add_argument("--task", default=TASK, help="the study task each process replays and runs its prelude on "
                                                "(an id of bench/run.py --dry-run)")
    ap.add_argument("--trace-every", type=float, default=TRACE_EVERY_S, metavar="SECONDS",
                    help="a prelude's trace: at most one reading this far apart for each kind of step (0: every call)")
    ap.add_argument("--select", default="", metavar="NAMES",
                    help="a prelude's components: qualified names, comma-separated (default: the rules)")
    ap.add_argument("--host-load-after", type=float, default=-1.0, metavar="SECONDS",
                    help="from this many seconds into each card's run, keep all host CPUs but two busy")
    args = ap.parse_args(argv)
    if args.child:
        time.sleep(args.delay)
        return child(*args.child, args.host_load_after, args.idle[1], args.idle[0], args.sampler, args.prelude,
                     args.task, args.trace_every, args.select)
    if not (args.seconds > 0 and args.every > 0 and args.stagger >= 0 and args.trace_every >= 0):
        print("bench/launch_state.py: need --seconds > 0, --every > 0, --stagger >= 0, --trace-every >= 0",
              file=sys.stderr)
        return 2
    try:
        task_of(args.task)
    except ValueError as exc:
        print(f"bench/launch_state.py: {exc}", file=sys.stderr)
        return 2
    from bench.common import require_cards, run_identity, write_results

    torch, cards = require_cards("bench/launch_state.py", args.gpus)
    readings = measure(cards, args.seconds, args.every, args.stagger, args.host_load_after, tuple(args.idle),
                       args.sampler, args.prelude, args.task, args.trace_every, args.select)
    res = {"identity": run_identity(torch), "task": args.task, "trace_every_s": args.trace_every,
           "seconds": args.seconds, "every_s": args.every, "stagger_s": args.stagger,
           "host_load_after_s": args.host_load_after, "idle_first_s": args.idle[0], "idle_between_s": args.idle[1],
           "sampler": args.sampler, "prelude": args.prelude, "select": args.select,
           "cards": [c.uuid for c in cards], "summary": summarise(readings), "readings": readings}
    write_results(args.out, "launch_state", res, markdown(res))
    return 0


if __name__ == "__main__":
    sys.exit(main())
