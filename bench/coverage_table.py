"""Coverage benchmark on a GPU: do the components add up to the whole model?

For BERT-base, GPT-2, Llama-3.2-1B and T5-small (bench/suite.py's configs, random
weights, bf16), at batch 8 x sequence 128 and batch 1 x sequence 8 (prefill), and
one decode step of GPT-2 and Llama after a 512-token static cache:
every component group's energy, coverage, glue, gaps, explained coverage, CVs
and the wall time each model took; and each group's energy in context (the
model's own graph replayed without it: Note [A component in context]). Each
model's report is written as soon as it is measured
(results/coverage/<model>-<mode>-<b>x<s>.json); the summary, from every case
file there (so runs with --only add up), goes to results/coverage.json and
results/coverage.md.

Usage: python bench/coverage_table.py [--out results] [--only bert-base,gpt2:decode,...] [--window-s 0.3]
                                [--no-in-context]
       python bench/coverage_table.py --from-study results/study/<card>   # the same table from the study's records
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a file: import the package bench, not loose files beside this one
    sys.path.pop(0)
    sys.path.append(str(Path(__file__).resolve().parents[1]))

import clear_native as cn  # noqa: E402
from bench import suite  # noqa: E402
from bench.common import require_gpu, run_identity, write_results  # noqa: E402


def cases() -> list:
    """Issue 4's cases as the study's tasks (bench/suite.py builds the models)."""
    names = ("bert-base", "gpt2", "llama-3.2-1b", "t5-small")
    out = [suite.Task(n, batch=b, seq=s, purpose=("coverage",)) for b, s in ((8, 128), (1, 8)) for n in names]
    return out + [suite.Task(n, "decode", batch=1, seq=1, cache_len=512, purpose=("coverage",))
                  for n in ("gpt2", "llama-3.2-1b")]


def run_case(torch, T, task, profile, window_s, in_context) -> cn.ModelReport:
    model, inputs, kw = suite.build(T, torch, task, "cuda")
    return cn.measure_model(model, *inputs, mode=task.mode, cache_len=task.cache_len or 512, profile=profile,
                            min_trials=5, target_ci_rel=0.01, window_s=window_s, budget_s=240,
                            in_context=in_context, progress=lambda m: print(f"    {m}", flush=True), model_kwargs=kw)


def case_file(folder: Path, task) -> Path:
    return folder / f"{task.model}-{task.mode}-{task.batch}x{task.seq}.json"


def l2_modes(res: dict) -> set:
    """How the cases' components were replayed; reports from before the option replayed hot."""
    return {c["report"]["settings"].get("l2", "hot") for c in res["cases"] if "report" in c} or {"?"}


def _range(pair, unit: str) -> str:
    return f"{pair[0]:.0f}-{pair[1]:.0f} {unit}" if pair and pair[0] != pair[1] else (f"{pair[0]:.0f} {unit}" if pair else "?")


def markdown(res: dict) -> str:
    g = res["gpu"]
    cards = sorted({c.get("gpu_uuid", g.get("uuid", "?")) for c in res["cases"]})
    lines = [f"# Coverage on {g['name']} (driver {g['driver_version']}), {res['date']}", "",
             f"Card{'s' if len(cards) > 1 else ''}: {', '.join(cards)}. "
             "bf16, random weights. Coverage = Σ components / whole model; explained adds glue kernels "
             "(at the components' mean power) and gaps between kernels (at awake-idle power). Components replayed "
             f"with {'/'.join(sorted(l2_modes(res)))} L2 (Note [Cold L2] in clear_native/model.py). "
             "In context: each group's energy is the model's minus the model's own graph without the group's "
             "kernels; 'rest' is the graph without any component (glue and gaps, measured); interaction = model − "
             "Σ in context − rest, all against the in-context graph measured whole; 'graph vs model': that graph's "
             "energy against the model's usual capture (Note [The in-context graph is its own baseline] in "
             "clear_native/model.py; Note [A component in context], csrc/graph_edit.hpp).", "",
             "| model | mode | batch×seq | groups | whole model | coverage | glue | gaps | explained | max CV | eager "
             "| in context | rest | interaction | explained in context | graph vs model | wall |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for c in res["cases"]:
        if "error" in c:
            lines.append(f"| {c['model']} | {c['mode']} | {c['batch']}×{c['seq']} | failed: {c['error'].splitlines()[0]} "
                         "|||||||||||||")
            continue
        a = c["report"]["accounting"]
        cvs = [x["cv"] for x in c["report"]["groups"]] + [c["report"]["whole"]["cv"]]
        eager = sum(x["eager"] for x in c["report"]["groups"]) + int(c["report"]["settings"]["whole_model_eager"])
        ctx = c["report"].get("context_accounting")
        ctx_cells = (f"{ctx['coverage'] * 100:.1f} % | {ctx['rest_energy_j'] / ctx['model_energy_j'] * 100:.1f} % | "
                     f"{ctx['interaction_energy_j'] / ctx['model_energy_j'] * 100:+.1f} % | "
                     f"{ctx['explained_coverage'] * 100:.1f} % | {ctx.get('layout_rel', float('nan')) * 100:+.1f} %"
                     ) if ctx else "— | — | — | — | —"
        lines.append(f"| {c['model']} | {c['mode']} | {c['batch']}×{c['seq']} | {len(c['report']['groups'])} | "
                     f"{a['model_energy_j'] * 1e3:.3f} mJ, {a['model_time_s'] * 1e6:.0f} µs | {a['coverage'] * 100:.1f} % | "
                     f"{a['glue_time_s'] * 1e6:.0f} µs | {a['gaps_time_s'] * 1e6:.0f} µs | "
                     f"{a['explained_coverage'] * 100:.1f} % | {max(cvs) * 100:.2f} % | {eager} | {ctx_cells} | "
                     f"{c['wall_s']:.0f} s |")
    groups = [c for c in res["cases"] if c.get("report", {}).get("in_context")]
    if groups:
        lines += ["", "## Each group alone and in context", "",
                  "Alone: replayed by itself (the CLEAR measurement), with the power, SM clocks and throttle reasons "
                  "of its windows. In context: (model − model without it) / occurrences, ± its 95 % CI.", "",
                  "| case | group | × | alone | alone at | clocks | throttled | in context | ratio | share in context "
                  "| output Δ |",
                  "|---|---|---|---|---|---|---|---|---|---|---|"]
        for c in groups:
            rows = {r["name"]: r for r in c["report"]["in_context"]}
            for x in c["report"]["groups"]:
                r = rows.get(x["name"])
                power = x.get("mean_power_w") or x["energy_per_call_j"] / x["gpu_time_per_call_s"]
                ctx_e = (f"{r['energy_per_call_j'] * 1e3:.4g} ± {r['energy_per_call_ci95_j'] * 1e3:.2g} mJ | "
                         f"{r['isolated_ratio']:.2f} | {r['share'] * 100:.1f} % | "
                         f"{r.get('output_max_abs_diff', float('nan')):.2g}") if r else "— | — | — | —"
                lines.append(f"| {c['model']} {c['mode']} {c['batch']}×{c['seq']} | {x['name']} | {x['occurrences']} | "
                             f"{x['energy_per_call_j'] * 1e3:.4g} mJ | {power:.0f} W | "
                             f"{_range(x.get('sm_clock_mhz'), 'MHz')} | "
                             f"{', '.join(x.get('clock_event_reasons') or []) or '—'} | {ctx_e} |")
            w = c["report"]["whole"]
            lines.append(f"| {c['model']} {c['mode']} {c['batch']}×{c['seq']} | whole model | 1 | "
                         f"{w['energy_per_call_j'] * 1e3:.4g} mJ | {w['mean_power_w']:.0f} W | "
                         f"{_range(w.get('sm_clock_mhz'), 'MHz')} | {', '.join(w.get('clock_event_reasons') or []) or '—'} "
                         "| | | | |")
    return "\n".join(lines) + "\n"


def from_study(folder: Path) -> dict:
    """The coverage cases, taken from a study's records (bench/run.py measures them all)."""
    from bench import store
    from clear_native.analysis import latest_ok

    records = store.load(Path(folder))
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
            case.update(report=r["report"], wall_s=r["wall_s"], date=r["identity"]["date"],
                        gpu_uuid=r["identity"]["gpu"].get("uuid", "?"))
        res["cases"].append(case)
    return res


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--from-study", metavar="CARD_DIR", help="write the table from a study's records (no GPU)")
    ap.add_argument("--out", default="results")
    ap.add_argument("--only", default="", help="comma-separated model names, or name:mode (e.g. gpt2:decode)")
    ap.add_argument("--window-s", type=float, default=0.3)
    ap.add_argument("--no-in-context", action="store_true", help="skip measuring each group inside the model's graph")
    a = ap.parse_args(argv)
    if a.from_study:
        res = from_study(Path(a.from_study))
        write_results(a.out, "coverage", res, markdown(res) + f"\nFrom the study's records in {a.from_study}.\n")
        return 0
    torch = require_gpu("bench/coverage_table.py")
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
        case = {"model": name, "mode": mode, "batch": b, "seq": s, "date": cn.device.utc_now_iso(),
                "gpu_uuid": res["gpu"]["uuid"]}
        try:
            rep = run_case(torch, T, task, profile, a.window_s, not a.no_in_context)
            case["report"] = rep.to_dict()
            print(rep.table(), flush=True)
        except Exception as exc:  # noqa: BLE001 - one model's failure must not lose the others
            case["error"] = f"{type(exc).__name__}: {exc}"
            print(f"  failed: {case['error']}", flush=True)
        case["wall_s"] = time.monotonic() - t0
        case_file(folder, task).write_text(json.dumps(case, indent=1, default=float) + "\n")
        try:
            torch.cuda.empty_cache()
        except RuntimeError as exc:  # a device-side assert leaves the CUDA context unusable
            print(f"  CUDA context lost ({exc}); stopping here", flush=True)
            break
    # The summary: every case measured so far, this run's and earlier ones' (each names its card and date).
    res["cases"] = [json.loads(case_file(folder, t).read_text()) for t in cases() if case_file(folder, t).exists()]
    write_results(a.out, "coverage", res, markdown(res))
    return 0


if __name__ == "__main__":
    sys.exit(main())
