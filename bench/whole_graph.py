"""Diagnose a whole-model graph: its kernels in an eager forward vs in its CUDA-graph replay.

Prints, per model, the GPU time per replay (CUDA events), the kernel count and
summed kernel time of an eager forward and of a graph replay (profiler), and
the kernels whose summed time differs most. Writes results/whole_graph.json.

Usage: python bench/whole_graph.py [--cases bert-base:8x128,gpt2:1x8]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a file: import the package bench, not loose files beside this one
    sys.path.pop(0)
    sys.path.append(str(Path(__file__).resolve().parents[1]))

import clear_native as cn  # noqa: E402
from bench import suite  # noqa: E402
from bench.common import kernel_profile, require_gpu, run_identity  # noqa: E402


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--cases", default="bert-base:8x128,bert-base:1x8,gpt2:1x8,llama-3.2-1b:1x8")
    ap.add_argument("--out", default="results")
    a = ap.parse_args(argv)
    torch = require_gpu("bench/whole_graph.py")
    import transformers as T

    res = run_identity(torch)
    res["cases"] = []
    for case in a.cases.split(","):
        name, shape = case.split(":")
        b, s = map(int, shape.split("x"))
        model, inputs, kw = suite.build(T, torch, suite.Task(name, batch=b, seq=s), "cuda")
        cap = cn.capture(model, *inputs, name=name, eager_fallback=True, **kw)
        out = {"case": case, "eager": cap.eager, "reason": cap.reason, "meta": cap.meta}
        print(f"== {case}: eager={cap.eager} {cap.reason} {cap.meta}", flush=True)
        n_e, k_e = kernel_profile(lambda m=model: m(*inputs, **kw), 5)
        out.update(eager_kernels=n_e, eager_kernel_us=sum(k_e.values()))
        if not cap.eager:
            r = cn.replay(cap.exec_handle, 50)
            n_g, k_g = kernel_profile(cap.graph.replay, 5)
            diff = sorted(set(k_e) | set(k_g), key=lambda k: -abs(k_g[k] - k_e[k]))[:12]
            out.update(graph_us=r.gpu_time_per_call_s * 1e6, graph_kernels=n_g, graph_kernel_us=sum(k_g.values()),
                       top_diff=[(k, k_e[k], k_g[k]) for k in diff])
            for k in diff:
                print(f"  eager {k_e[k]:9.1f} µs  graph {k_g[k]:9.1f} µs  {k[:90]}")
        print({k: v for k, v in out.items() if k != "top_diff"}, flush=True)
        res["cases"].append(out)
        del model, cap
        torch.cuda.empty_cache()
    Path(a.out).mkdir(exist_ok=True)
    (Path(a.out) / "whole_graph.json").write_text(json.dumps(res, indent=1, default=str) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
