"""Do components add up at one granularity and not at another?

On an H200, Llama-3.2-1B at batch 8 x 128 (bf16) was the model whose sub-layer
components (attention, MLP, norms) covered only ~90 % of its energy while their
time covered all of it: the parts alone drew less power than the model. This
measures a model twice with measure_model: once with the default components,
once with whole decoder layers (select by type, plus the modules outside the
layers), and writes both accountings side by side, with each layer's energy
next to the sum of its sub-parts (same run conditions, same card).
Writes results/granularity.{json,md}.

Usage: python bench/granularity.py [--model llama-3.2-1b] [--out results]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a file: import the package bench, not loose files beside this one
    sys.path.pop(0)
    sys.path.append(str(Path(__file__).resolve().parents[1]))

import clear_native as cn  # noqa: E402
from bench import suite  # noqa: E402
from bench.common import require_gpu, run_identity, write_results  # noqa: E402

LAYERS = {"llama-3.2-1b": ("transformers.models.llama.modeling_llama", "LlamaDecoderLayer",
                           ["lm_head", "model.embed_tokens", "model.norm", "model.rotary_emb"]),
          "qwen2.5-0.5b": ("transformers.models.qwen2.modeling_qwen2", "Qwen2DecoderLayer",
                           ["lm_head", "model.embed_tokens", "model.norm", "model.rotary_emb"]),
          "bert-base": ("transformers.models.bert.modeling_bert", "BertLayer", ["embeddings", "pooler"])}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="llama-3.2-1b", choices=sorted(LAYERS))
    ap.add_argument("--out", default="results")
    a = ap.parse_args(argv)
    torch = require_gpu("bench/granularity.py")
    import importlib

    import transformers as T

    module, layer_cls, outside = LAYERS[a.model]
    layer_type = getattr(importlib.import_module(module), layer_cls)
    task = suite.Task(a.model)
    model, inputs, kw = suite.build(T, torch, task, "cuda")
    res = run_identity(torch)
    res.update(task=task.to_dict(), reports={})
    profile = cn.calibrate(cache=False)
    lines = [f"# Component granularity: {task.id} on {res['gpu']['name']} ({res['date']})", "",
             "| components | coverage | explained | parts' time ÷ model | parts' power | model power |",
             "|---|---|---|---|---|---|"]
    for label, select in (("decoder layers", [layer_type] + outside), ("default (sub-layer)", None)):
        rep = cn.measure_model(model, *inputs, profile=profile, select=select, min_trials=3, max_trials=12,
                               window_s=0.2, target_ci_rel=0.01, budget_s=120, model_kwargs=kw)
        acc = rep.accounting
        t = acc.components_time_s + acc.glue_time_s + acc.gaps_time_s
        e = acc.components_energy_j + acc.glue_energy_j + acc.gaps_energy_j
        lines.append(f"| {label} | {rep.coverage:.1%} | {rep.explained_coverage:.1%} | "
                     f"{t / acc.model_time_s:.1%} | {e / t:.0f} W | {acc.model_energy_j / acc.model_time_s:.0f} W |")
        res["reports"][label] = rep.to_dict()
    lines += ["", "| group | × | GPU time | energy | power | CV |", "|---|---|---|---|---|---|"]
    for label, rep in res["reports"].items():
        for g in rep["groups"]:
            lines.append(f"| {label}: {g['name']} | {g['occurrences']} | {g['gpu_time_per_call_s'] * 1e6:.1f} µs | "
                         f"{g['energy_per_call_j'] * 1e3:.2f} mJ | "
                         f"{g['energy_per_call_j'] / g['gpu_time_per_call_s']:.0f} W | {g['cv'] * 100:.2f} % |")
    write_results(a.out, "granularity", res, "\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
