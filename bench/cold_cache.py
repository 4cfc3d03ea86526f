"""Does a component replayed alone cost less because its weights stay in L2?

A component repeated back-to-back keeps its parameters in the GPU's L2 cache
(50 MB on an H100 or H200); inside the model every layer's weights come from HBM.
For each component group of BERT-base (bf16) this captures the component once
("hot", as measure_model(l2="hot") does) and as M distinct deep copies called in turn on
the same inputs ("cold": M x its parameters exceed twice the L2), measures both
with the whole model in one measure() run, and compares coverage
(Σ occurrences x energy per call ÷ whole model) hot and cold.
Writes results/cold_cache.{json,md}. (The committed results came from this script
with its own copy helper and a fixed 50 MiB L2, before clear_native.ColdCopies.)

Usage: python bench/cold_cache.py [--shapes 1x8,8x128] [--out results]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a file: import the package bench, not loose files beside this one
    sys.path.pop(0)
    sys.path.append(str(Path(__file__).resolve().parents[1]))

import clear_native as cn  # noqa: E402
from bench.common import require_gpu, run_identity, write_results  # noqa: E402


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--shapes", default="1x8,8x128")
    ap.add_argument("--out", default="results")
    a = ap.parse_args(argv)
    torch = require_gpu("bench/cold_cache.py")
    import transformers as T

    res = run_identity(torch)
    profile = cn.calibrate()
    res["cases"] = []
    lines = [f"# Hot vs cold L2: BERT-base components on {res['gpu']['name']} ({res['date']})", "",
             "| shape | group | × | copies | hot mJ/call | cold mJ/call | cold ÷ hot | hot µs | cold µs |",
             "|---|---|---|---|---|---|---|---|---|"]
    for shape in a.shapes.split(","):
        b, s = map(int, shape.split("x"))
        with torch.device("cuda"):
            model = T.BertModel(T.BertConfig()).to(torch.bfloat16).eval()
        ids = torch.randint(0, 30000, (b, s), device="cuda")
        groups = cn.group_components(cn.find_components(model, ids))
        caps, copies = [cn.capture(model, ids, name="whole")], {}
        l2_bytes = torch.cuda.get_device_properties(0).L2_cache_size
        for g in groups:
            rep = g.representative
            copies[g.name] = max(2, cn.l2_copies(rep.module, l2_bytes))
            caps.append(cn.capture(rep.module, *rep.args, name=f"hot:{g.name}", **rep.kwargs))
            caps.append(cn.capture(cn.ColdCopies(rep.module, copies[g.name]), *rep.args, name=f"cold:{g.name}",
                                   **rep.kwargs))
        run = cn.measure(caps, profile=profile, min_trials=3, target_ci_rel=0.01, window_s=0.2, budget_s=60)
        whole = run["whole"].energy_per_call_j
        case = {"shape": shape, "whole_j": whole, "whole_cv": run["whole"].cv, "groups": []}
        hot_sum = cold_sum = 0.0
        for g in groups:
            h, c = run[f"hot:{g.name}"], run[f"cold:{g.name}"]
            n = copies[g.name]
            e_cold, t_cold = c.energy_per_call_j / n, c.gpu_time_per_call_s / n
            hot_sum += g.occurrences * h.energy_per_call_j
            cold_sum += g.occurrences * e_cold
            case["groups"].append({"name": g.name, "occurrences": g.occurrences, "copies": n,
                                   "hot_j": h.energy_per_call_j, "cold_j": e_cold, "hot_cv": h.cv, "cold_cv": c.cv,
                                   "hot_s": h.gpu_time_per_call_s, "cold_s": t_cold})
            lines.append(f"| {shape} | {g.name} | {g.occurrences} | {n} | {h.energy_per_call_j * 1e3:.4g} | "
                         f"{e_cold * 1e3:.4g} | {e_cold / h.energy_per_call_j:.3f} | "
                         f"{h.gpu_time_per_call_s * 1e6:.2f} | {t_cold * 1e6:.2f} |")
        case.update(coverage_hot=hot_sum / whole, coverage_cold=cold_sum / whole)
        lines.append(f"| {shape} | **coverage** | | | {hot_sum / whole:.1%} | {cold_sum / whole:.1%} | | "
                     f"whole {run['whole'].gpu_time_per_call_s * 1e6:.0f} µs | |")
        res["cases"].append(case)
        del model, caps
        torch.cuda.empty_cache()
    write_results(a.out, "cold_cache", res, "\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
