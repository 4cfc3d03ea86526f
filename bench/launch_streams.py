"""Does the launch-latency state follow the streams a process has used? (issue 14; Note [Launch-latency state],
clear_native/backend.py); writes results/launch_streams.json and .md.

pytorch/pytorch#161104 (open) replays a CUDA graph of tiny adds at 1.3 µs a kernel after eager work on the
default stream *and* on a side stream, and at 1.1 µs after either alone: the two states this project has
measured on H200s (1.13-1.23 vs 0.95-1.04 µs a kernel), which no NVML reading, host load or PCIe link explained.
clear_native's processes did both until protocol 7: eager forwards on the default stream, capture warm-ups on a
side stream. Measured on two H200s (results/launch_streams.md): 1.090 µs a kernel after both, 0.911-0.913 µs after
either alone or none, in every process; capture() now warms up on the current stream, which the last condition
checks.

Each CONDITION runs in fresh processes on every card (``--repeats`` each, conditions interleaved): an eager
history (adds on the default stream, on a side stream, on the stream the graph is captured on; or clear_native's
capture() of a small model after adds on the default stream), then a graph of
KERNELS tiny adds captured on its own stream and replayed on the default stream or on the capture stream,
read ``--readings`` times over ``--seconds`` with the graph replayed without a break between readings.

Usage:
  python bench/launch_streams.py                     # every GPU, 2 processes per condition and card
  python bench/launch_streams.py --gpus 0 --repeats 3 --seconds 4
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.pop(0)
    sys.path.append(str(Path(__file__).resolve().parents[1]))

from bench.cards import on_each  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
KERNELS = 200
CHILD_START_S = 90.0  # a child's PyTorch import and CUDA start, beyond its --seconds of readings
EAGER_CALLS = {"default": 100, "side": 6, "capture": 106}  # as pytorch#161104's repro, and both on one stream
ALLOC_GIB, GRAPHS = 16, 300  # BERT-base's cold copies and captures are of this order (measure_model, l2="cold")
# name -> (eager history, stream the graph is replayed on)
CONDITIONS = {
    "nothing eager, replay on the capture stream": ((), "capture"),
    "nothing eager, replay on the default stream": ((), "default"),
    "eager on default, replay on default": (("default",), "default"),
    "eager on a side stream, replay on default": (("side",), "default"),
    "eager on default and a side stream, replay on default (as measure() did before protocol 7)": (
        ("default", "side"), "default"),
    "eager on default and a side stream, replay on the capture stream (pytorch#161104)": (("default", "side"),
                                                                                          "capture"),
    "eager, capture and replay on one stream": (("capture",), "capture"),
    "eager on default, then capture() of a small model, replay on default (as measure() does)": (
        ("default", "capture()"), "default"),
    # What ends the slow state the two streams leave (protocol 11's reset, Note [Launch-latency state]):
    "eager on default and a side stream, then the profiler around one eager add (protocol 10's reset)": (
        ("default", "side", "profiler(add)"), "default"),
    "eager on default and a side stream, then a small model's eager forward": (("default", "side", "mlp"), "default"),
    "eager on default and a side stream, then the profiler around its eager forward (as kernel_times_s)": (
        ("default", "side", "profiler(mlp)"), "default"),
    "eager on default and a side stream, then capture() of it": (("default", "side", "capture()"), "default"),
    "eager on default and a side stream, then capture() of it and GpuBackend.reset_launch_state (protocol 11)": (
        ("default", "side", "capture()", "reset"), "default"),
    # What measure_model does among its captures after the first, where BERT-base's processes turned slow on three
    # H200s (2026-11-28 evening, Note [Launch-latency state]): allocate copies of weights, instantiate many graphs.
    f"nothing eager, then {ALLOC_GIB} GiB allocated and kept": (("alloc",), "default"),
    f"nothing eager, then {GRAPHS} small graphs captured and kept": (("graphs",), "default"),
    f"nothing eager, then {GRAPHS} small graphs captured and freed": (("graphs", "free"), "default"),
    # The capture that turned BERT-base's process slow (bench/launch_state.py --trace-every 0 on GPU-6865f056,
    # 2026-11-28 night: 0.941 µs before capturing encoder.layer.0.intermediate, 1.121 after it), and its halves.
    "nothing eager, then capture() of BERT-base's intermediate (its linear and GELU)": (("intermediate",), "default"),
    "nothing eager, then capture() of BERT-base's intermediate's linear alone": (("linear",), "default"),
    "nothing eager, then capture() of BERT-base's intermediate's GELU alone": (("gelu",), "default"),
    "nothing eager, then BERT-base's intermediate run eager, not captured": (("intermediate eager",), "default"),
    # measure_model's processes turned slow at their third capture of a model's parts, whichever parts they were
    # (results/launch_state-runs/2026-11-28_2252_select_*): the count of captures after eager work, or what those
    # captures allocate in their private memory pools (a model's parts do, the small graphs above did not)?
    "eager on default, then 1 small graph captured": (("default", "graphs:1"), "default"),
    "eager on default, then 4 small graphs captured": (("default", "graphs:4"), "default"),
    "eager on default, then 1 small graph captured that allocates": (("default", "graphs:1:alloc"), "default"),
    "eager on default, then 4 small graphs captured that allocate": (("default", "graphs:4:alloc"), "default"),
    "nothing eager, then 4 small graphs captured that allocate": (("graphs:4:alloc",), "default"),
    "eager on default, then capture() of 4 small models": (("default", "capture()x4"), "default"),
    # Each torch.cuda.graph capture launches two fills eagerly on its capture stream before the capture begins (the
    # RNG state's prologue, pytorch's CUDAGraph::capture_begin): is it the count of eager kernels on a second stream?
    "eager on default, then 2 small graphs captured": (("default", "graphs:2"), "default"),
    "eager on default, then 3 small graphs captured": (("default", "graphs:3"), "default"),
    "eager on default, then 2 adds on a side stream": (("default", "side:2"), "default"),
    "eager on default, then 4 adds on a side stream": (("default", "side:4"), "default"),
    "eager on default, then 4 small graphs captured, each on a stream of its own": (
        ("default", "graphs:4:own"), "default"),
    "eager on the capture stream, then 4 small graphs captured on it, replay on it": (
        ("capture", "graphs:4:here"), "capture"),
    "eager on default, then 4 small graphs captured, then eager on default again": (
        ("default", "graphs:4", "default"), "default"),
    # The cure: every launch of the process on one stream (clear_native.one_stream(), Note [One stream]).
    "clear_native.one_stream(), then eager, capture() of 4 small models and replay on it": (
        ("one_stream", "default", "capture()x4"), "default"),
}
TOKENS, HIDDEN, INNER = 1024, 768, 3072  # BERT-base prefill, batch 8 x 128 tokens, bf16: its intermediate's shapes


def _mlp(made: dict):
    import torch

    if "mlp" not in made:
        made["mlp"] = (torch.nn.Sequential(torch.nn.Linear(64, 64), torch.nn.LayerNorm(64)).cuda(),
                       torch.randn(8, 64, device="cuda"))
    return made["mlp"]


def _capture(x, made: dict) -> None:
    """What measure() does before its trials: clear_native's capture of a module."""
    import clear_native as cn

    model, inp = _mlp(made)
    made["cap"] = cn.capture(model, inp, name="mlp")


def _intermediate(made: dict, which: str, captured: bool = True) -> None:
    """BERT-base's intermediate (a HIDDEN -> INNER linear, then the exact GELU, as transformers' BertIntermediate),
    or one half of it ("linear", "gelu"), in bf16 on TOKENS tokens: captured by clear_native as measure() captures a
    part, or run once eagerly."""
    import torch

    import clear_native as cn

    kw = dict(device="cuda", dtype=torch.bfloat16)
    layers = {"linear": [torch.nn.Linear(HIDDEN, INNER, **kw)], "gelu": [torch.nn.GELU()],
              "intermediate": [torch.nn.Linear(HIDDEN, INNER, **kw), torch.nn.GELU()]}[which]
    model, inp = torch.nn.Sequential(*layers), torch.randn(TOKENS, INNER if which == "gelu" else HIDDEN, **kw)
    if captured:
        made["cap"] = cn.capture(model, inp, name=which)
    else:
        with torch.no_grad():
            model(inp)


def _profiled(fn) -> None:
    from clear_native.work import profiled_events

    profiled_events(fn)


def _forward(made: dict) -> None:
    import torch

    model, inp = _mlp(made)
    with torch.no_grad():
        model(inp)


def _reset(x, made: dict) -> None:
    import clear_native as cn

    cn.GpuBackend(0).reset_launch_state([made["cap"]])


def _alloc(x, made: dict) -> None:
    """ALLOC_GIB GiB in 256 MiB tensors, kept: memory mapped, no kernel launched."""
    import torch

    made["alloc"] = [torch.empty(256 << 20, dtype=torch.uint8, device=x.device) for _ in range(ALLOC_GIB * 4)]


def _graphs(x, made: dict, n: int = GRAPHS, how: str = "") -> None:
    """``n`` graphs of 4 tiny adds each, captured on torch.cuda.graph's own stream (nothing eager), kept; ``how``:
    "alloc", each add writes a new 4 MiB tensor, which the capture takes from its private memory pool; "own", each
    captured on a new stream; "here", on the stream the probe is captured on."""
    import torch

    made["graphs"] = []
    alloc = how == "alloc"
    for _ in range(n):
        g = torch.cuda.CUDAGraph()
        on = torch.cuda.Stream() if how == "own" else made["streams"]["capture"] if how == "here" else None
        with torch.cuda.graph(g, stream=on):
            y = torch.zeros(1 << 20, device=x.device) if alloc else x
            outs = [y + 1 if alloc else x.add_(1) for _ in range(4)]
        made["graphs"].append((g, outs))


def _captures(x, made: dict, n: int) -> None:
    """clear_native's capture() of ``n`` small models, each its own (as measure_model captures a model's parts)."""
    import clear_native as cn

    made["caps"] = []
    for k in range(n):
        made.pop("mlp", None)
        model, inp = _mlp(made)
        made["caps"].append(cn.capture(model, inp, name=f"mlp{k}"))


def _eager_on(stream, x, calls: int) -> None:
    import torch

    with torch.cuda.stream(stream):
        for _ in range(calls):
            x.add_(1)


def _one_stream(x, made: dict) -> None:
    """clear_native.one_stream() entered for the rest of the process: the history's "default" stream, the probe's
    capture and its replay all become that one stream."""
    import clear_native as cn

    made["one_stream"] = cn.one_stream()
    made["streams"]["default"] = made["streams"]["capture"] = made["one_stream"].__enter__()


def _step(where: str):
    """What a history step that is not a stream's eager adds does: a STEPS entry, or one named with a count
    ("graphs:N", "graphs:N:alloc|own|here", "side:N", "capture()xN"); None for any other name."""
    if m := re.fullmatch(r"graphs:(\d+)(?::(alloc|own|here))?", where):
        return lambda x, made: _graphs(x, made, int(m[1]), m[2] or "")
    if m := re.fullmatch(r"side:(\d+)", where):
        return lambda x, made: _eager_on(made["streams"]["side"], x, int(m[1]))
    if m := re.fullmatch(r"capture\(\)x(\d+)", where):
        return lambda x, made: _captures(x, made, int(m[1]))
    return STEPS.get(where)


def known_step(where: str) -> bool:
    """Whether a child can take this history step (a misspelt one would fail only on a GPU)."""
    return where in EAGER_CALLS or _step(where) is not None


def _free(x, made: dict) -> None:
    import torch

    made.pop("graphs", None)
    made.pop("alloc", None)
    torch.cuda.synchronize()
    torch.cuda.empty_cache()


# A history's steps other than eager adds on a stream: each takes (the tensor the adds write, what earlier steps made).
STEPS = {"capture()": _capture, "mlp": lambda x, made: _forward(made),
         "profiler(add)": lambda x, made: _profiled(lambda: x.add_(1)),
         "profiler(mlp)": lambda x, made: _profiled(lambda: _forward(made)), "reset": _reset,
         "alloc": _alloc, "graphs": _graphs, "free": _free, "one_stream": _one_stream,
         "intermediate": lambda x, made: _intermediate(made, "intermediate"),
         "linear": lambda x, made: _intermediate(made, "linear"), "gelu": lambda x, made: _intermediate(made, "gelu"),
         "intermediate eager": lambda x, made: _intermediate(made, "intermediate", captured=False)}


def child(condition: str, seconds: float, readings: int) -> int:
    """One fresh process on CUDA device 0: the condition's history, then its readings, a JSON line each."""
    import torch

    from clear_native.graphs import replay

    history, replay_on = CONDITIONS[condition]
    made: dict = {}  # what a history's steps made (the small model, its capture)
    x = torch.empty(256, device="cuda")  # an allocation launches no kernel
    streams = {"default": torch.cuda.default_stream(), "side": torch.cuda.Stream(), "capture": torch.cuda.Stream()}
    made["streams"] = streams
    for where in history:
        if (step := _step(where)) is not None:
            step(x, made)
            continue
        _eager_on(streams[where], x, EAGER_CALLS[where])
    torch.cuda.synchronize()
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g, stream=streams["capture"]):
        for _ in range(KERNELS):
            x.add_(1)
    handle, on = g.raw_cuda_graph_exec(), streams[replay_on]
    replay(handle, 1, stream=on)
    t0 = time.monotonic()
    for k in range(readings):
        r = replay(handle, 20, stream=on)
        print(json.dumps({"condition": condition, "t_s": time.monotonic() - t0,
                          "latency_s": r.gpu_time_s / (KERNELS * 20)}), flush=True)
        while time.monotonic() < t0 + (k + 1) * seconds / readings:
            replay(handle, 100, stream=on)  # ~20 ms of tiny kernels: the card stays busy between readings
    return 0


def _chosen(condition: str, only: str) -> bool:
    """Whether --only chooses ``condition``: it holds one of the |-separated texts (or --only is empty)."""
    return any(text in condition for text in only.split("|"))


def card_run(repeats: int, seconds: float, readings: int, only: str = "") -> int:
    """On this process's card: every condition (whose name holds ``only``) in a fresh process, ``repeats`` rounds,
    conditions interleaved."""
    for rep in range(repeats):
        for condition in [c for c in CONDITIONS if _chosen(c, only)]:
            argv = [sys.executable, str(Path(__file__).resolve()), "--child", condition, str(seconds), str(readings)]
            try:  # a child that hangs (a capture that never ends) costs its condition one process, not the run
                p = subprocess.run(argv, capture_output=True, text=True, env=os.environ,
                                   timeout=seconds + CHILD_START_S)
                code, out, err = p.returncode, p.stdout, p.stderr[-500:] if p.returncode else ""
            except subprocess.TimeoutExpired as exc:
                code, out, err = -1, exc.stdout or "", f"timed out after {seconds + CHILD_START_S:.0f} s"
            out = out.decode() if isinstance(out, bytes) else out
            rows = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
            print(json.dumps({"condition": condition, "repeat": rep, "exit": code, "readings": rows, "error": err}),
                  flush=True)
    return 0


def summarise(processes: dict) -> dict:
    """{condition: {"processes", "first_us" (each process's first reading, sorted), "last_us", "median_first_us",
    "median_last_us", "failed"}} over every card's processes (``processes``: {uuid: [process lines]})."""
    out = {c: {"processes": 0, "first_us": [], "last_us": [], "failed": 0} for c in CONDITIONS}
    for lines in processes.values():
        for p in lines:
            s = out[p["condition"]]
            if p["exit"] != 0 or not p["readings"]:
                s["failed"] += 1
                continue
            s["processes"] += 1
            s["first_us"].append(p["readings"][0]["latency_s"] * 1e6)
            s["last_us"].append(p["readings"][-1]["latency_s"] * 1e6)
    for s in out.values():
        s["first_us"].sort()
        s["last_us"].sort()
        s["median_first_us"] = statistics.median(s["first_us"]) if s["first_us"] else float("nan")
        s["median_last_us"] = statistics.median(s["last_us"]) if s["last_us"] else float("nan")
    return out


def markdown(res: dict) -> str:
    from bench.common import cuda_env_text

    ident = res["identity"]
    span = lambda xs: f"{xs[0]:.3f}-{xs[-1]:.3f}" if xs else "-"  # noqa: E731
    L = ["# The launch-latency state against the streams a process used", "",
         f"{ident['gpu']['name']} x {len(res['cards'])} ({', '.join(res['cards'])}), driver "
         f"{ident['gpu'].get('driver_version')}; code {ident.get('code_version')}{cuda_env_text(ident)}; "
         f"{ident.get('date')}. A graph of "
         f"{KERNELS} tiny adds, GPU time per kernel, {res['readings']} readings over {res['seconds']:.0f} s of "
         f"replay in each fresh process; {res['repeats']} processes per condition and card "
         "(Note [Launch-latency state], clear_native/backend.py; pytorch/pytorch#161104).", "",
         "| condition | processes | first reading (µs, median) | range | last reading (µs, median) | range | "
         "failed |",
         "|---|---|---|---|---|---|---|"]
    for c, s in res["summary"].items():
        if not s["processes"] + s["failed"]:
            continue  # not run (--only)
        L.append(f"| {c} | {s['processes']} | {s['median_first_us']:.3f} | {span(s['first_us'])} | "
                 f"{s['median_last_us']:.3f} | {span(s['last_us'])} | {s['failed']} |")
    return "\n".join(L) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--gpus", default="all")
    ap.add_argument("--repeats", type=int, default=2, help="fresh processes per condition and card")
    ap.add_argument("--seconds", type=float, default=4.0, help="replay per process")
    ap.add_argument("--readings", type=int, default=8, help="readings per process")
    ap.add_argument("--only", default="",
                    help="the conditions whose name holds this text, or one of several separated by | "
                    "(e.g. 'default and a side stream')")
    ap.add_argument("--out", default=str(ROOT / "results"))
    ap.add_argument("--child", nargs=3, metavar=("CONDITION", "SECONDS", "READINGS"), help=argparse.SUPPRESS)
    ap.add_argument("--card-run", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        return child(args.child[0], float(args.child[1]), int(args.child[2]))
    if not (args.repeats >= 1 and args.seconds > 0 and args.readings >= 1):
        print("bench/launch_streams.py: need --repeats >= 1, --seconds > 0, --readings >= 1", file=sys.stderr)
        return 2
    if not any(_chosen(c, args.only) for c in CONDITIONS):
        print(f"bench/launch_streams.py: --only {args.only!r} names no condition", file=sys.stderr)
        return 2
    if args.card_run:
        return card_run(args.repeats, args.seconds, args.readings, args.only)
    from bench.common import require_cards, run_identity, write_results

    torch, cards = require_cards("bench/launch_streams.py", args.gpus)
    runs = on_each(cards, lambda k, card: [sys.executable, str(Path(__file__).resolve()), "--card-run", "--repeats",
                                           str(args.repeats), "--seconds", str(args.seconds), "--readings",
                                           str(args.readings), "--only", args.only])
    processes = {uuid: lines for uuid, (_, lines) in runs.items()}
    res = {"identity": run_identity(torch), "cards": [c.uuid for c in cards], "repeats": args.repeats,
           "seconds": args.seconds, "readings": args.readings, "summary": summarise(processes),
           "processes": processes}
    write_results(args.out, "launch_streams", res, markdown(res))
    return 0


if __name__ == "__main__":
    sys.exit(main())
