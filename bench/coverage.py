"""Coverage benchmark on a GPU: do the components add up to the whole model?

For BERT-base, GPT-2, Llama-3.2-1B and T5-small (bench/suite.py's configs, random
weights, bf16), at batch 8 x sequence 128 and batch 1 x sequence 8 (prefill), and
one decode step of GPT-2 and Llama after a 512-token static cache:
every component group's energy, coverage, glue, gaps, explained coverage, CVs
and the wall time each model took. Each model's report is written as soon as it
is measured (results/coverage/<model>.json); the summary goes to
results/coverage.json and results/coverage.md.

Usage: python bench/coverage.py [--out results] [--only bert-base,gpt2:decode,...] [--window-s 0.3]
       python bench/coverage.py --from-study results/study/<card>   # the same table from the study's records
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import clear_native as cn
import suite
from common import require_gpu, run_identity, write_results


def cases() -> list:
    """Issue 4's cases as the study's tasks (bench/suite.py builds the models)."""
    names = ("bert-base", "gpt2", "llama-3.2-1b", "t5-small")
    out = [suite.Task(n, batch=b, seq=s, purpose=("coverage",)) for b, s in ((8, 128), (1, 8)) for n in names]
    return out + [suite.Task(n, "decode", batch=1, seq=1, cache_len=512, purpose=("coverage",))
                  for n in ("gpt2", "llama-3.2-1b")]


def run_case(torch, T, task, profile, window_s) -> cn.ModelReport:
    model, inputs, kw = suite.build(T, torch, task, "cuda")
    return cn.measure_model(model, *inputs, mode=task.mode, cache_len=task.cache_len or 512, profile=profile,
                            min_trials=5, target_ci_rel=0.01, window_s=window_s, budget_s=240,
                            progress=lambda m: print(f"    {m}", flush=True), **kw)


def l2_modes(res: dict) -> set:
    """How the cases' components were replayed; reports from before the option replayed hot."""
    return {c["report"]["settings"].get("l2", "hot") for c in res["cases"] if "report" in c} or {"?"}


def markdown(res: dict) -> str:
    g = res["gpu"]
    lines = [f"# Coverage on {g['name']} (driver {g['driver_version']}), {res['date']}", "",
             "bf16, random weights. Coverage = Σ components / whole model; explained adds glue kernels "
             "(at the components' mean power) and gaps between kernels (at awake-idle power). Components replayed "
             f"with {'/'.join(sorted(l2_modes(res)))} L2 (Note [Cold L2] in clear_native/model.py).", "",
             "| model | mode | batch×seq | groups | whole model | coverage | glue | gaps | explained | max CV | eager | wall |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for c in res["cases"]:
        if "error" in c:
            lines.append(f"| {c['model']} | {c['mode']} | {c['batch']}×{c['seq']} | failed: {c['error'].splitlines()[0]} |||||||||")
            continue
        a = c["report"]["accounting"]
        cvs = [x["cv"] for x in c["report"]["groups"]] + [c["report"]["whole"]["cv"]]
        eager = sum(x["eager"] for x in c["report"]["groups"]) + int(c["report"]["settings"]["whole_model_eager"])
        lines.append(f"| {c['model']} | {c['mode']} | {c['batch']}×{c['seq']} | {len(c['report']['groups'])} | "
                     f"{a['model_energy_j'] * 1e3:.3f} mJ, {a['model_time_s'] * 1e6:.0f} µs | {a['coverage'] * 100:.1f} % | "
                     f"{a['glue_time_s'] * 1e6:.0f} µs | {a['gaps_time_s'] * 1e6:.0f} µs | "
                     f"{a['explained_coverage'] * 100:.1f} % | {max(cvs) * 100:.2f} % | {eager} | {c['wall_s']:.0f} s |")
    return "\n".join(lines) + "\n"


def from_study(folder: Path) -> dict:
    """The coverage cases, taken from a study's records (bench/run.py measures them all)."""
    from report import latest_ok
    from run import MEASUREMENTS, load_records

    records = load_records(Path(folder) / MEASUREMENTS)
    if not records:
        raise SystemExit(f"no study records in {folder}: run bench/run.py first")
    ok = latest_ok(records)["ok"]
    res = dict(records[0]["identity"], source=str(folder), cases=[])
    for task in cases():
        r = ok.get(task.id)
        case = {"model": task.model, "mode": task.mode, "batch": task.batch, "seq": task.seq, "study_task": task.id}
        if r is None:
            case["error"] = "not in the study's records"
        else:
            case.update(report=r["report"], wall_s=r["wall_s"])
        res["cases"].append(case)
    return res


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--from-study", metavar="CARD_DIR", help="write the table from a study's records (no GPU)")
    ap.add_argument("--out", default="results")
    ap.add_argument("--only", default="", help="comma-separated model names, or name:mode (e.g. gpt2:decode)")
    ap.add_argument("--window-s", type=float, default=0.3)
    a = ap.parse_args(argv)
    if a.from_study:
        res = from_study(Path(a.from_study))
        write_results(a.out, "coverage", res, markdown(res) + f"\nFrom the study's records in {a.from_study}.\n")
        return 0
    torch = require_gpu("bench/coverage.py")
    import transformers as T

    res = run_identity(torch)
    res["profile"] = cn.calibrate(cache=False).to_dict()
    profile = cn.SensorProfile(**res["profile"])
    res["cases"] = []
    folder = Path(a.out) / "coverage"
    folder.mkdir(parents=True, exist_ok=True)
    only = set(filter(None, a.only.split(",")))
    for task in cases():
        name, mode, b, s = task.model, task.mode, task.batch, task.seq
        if only and name not in only and f"{name}:{mode}" not in only:
            continue
        print(f"{task.id} ...", flush=True)
        t0 = time.monotonic()
        case = {"model": name, "mode": mode, "batch": b, "seq": s}
        try:
            rep = run_case(torch, T, task, profile, a.window_s)
            case["report"] = rep.to_dict()
            print(rep.table(), flush=True)
        except Exception as exc:  # noqa: BLE001 - one model's failure must not lose the others
            case["error"] = f"{type(exc).__name__}: {exc}"
            print(f"  failed: {case['error']}", flush=True)
        case["wall_s"] = time.monotonic() - t0
        res["cases"].append(case)
        (folder / f"{name}-{mode}-{b}x{s}.json").write_text(json.dumps(case, indent=1, default=float) + "\n")
        try:
            torch.cuda.empty_cache()
        except RuntimeError as exc:  # a device-side assert leaves the CUDA context unusable
            print(f"  CUDA context lost ({exc}); stopping here", flush=True)
            break
    write_results(a.out, "coverage", res, markdown(res))
    return 0


if __name__ == "__main__":
    sys.exit(main())
