"""Models outside the study, measured with no per-model code: issue 13's held-out families.

Each case is a transformers config at its published size (layers cut where the model is large),
built with random weights through the same path as `clear-native measure` (clear_native.cli), and
measured by measure_model with blocks: prefill at batch 1 x 128 (vision: batch 8), and for
decoders one decode step after 512 cached tokens. Writes results/heldout.json (a list of records:
case, mode, whole_model_eager, max_cv, coverage, explained_coverage, block coverage, card) and
results/heldout.md. Every case runs in a fresh process (bench/workers.py: a crash costs that case, which
is recorded as such, and no other), on one GPU or spread over --gpus.

Usage: python bench/heldout.py [--cases bloom-560m,mistral-7b-2l,...] [--modes prefill,decode] [--gpus 0,1,2,3]
                               [--out results]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

if __package__ in (None, ""):  # run as a file: import the package bench, not loose files beside this one
    sys.path.pop(0)
    sys.path.append(str(Path(__file__).resolve().parents[1]))

import clear_native as cn  # noqa: E402
from bench import workers  # noqa: E402
from bench.common import require_gpu  # noqa: E402
from bench.store import write_atomic  # noqa: E402
from clear_native import cli  # noqa: E402
from clear_native.model import MODES  # noqa: E402

# name: (config class, published sizes, why this family; batch, sequence). None of these is in the study.
CASES = {
    "bloom-560m": ("BloomConfig", dict(hidden_size=1024, n_layer=24, n_head=16, vocab_size=250880),
                   "ALiBi; its forward made a tensor from host data (was a Python loop, 25 % CV)", 1, 128),
    "mistral-7b-2l": ("MistralConfig", dict(hidden_size=4096, intermediate_size=14336, num_hidden_layers=2,
                                            num_attention_heads=32, num_key_value_heads=8, vocab_size=32000),
                      "7B widths at the power limit (parts alone 86.7 %)", 1, 128),
    "llama-3.2-1b-8x128": ("LlamaConfig", dict(hidden_size=2048, intermediate_size=8192, num_hidden_layers=16,
                                               num_attention_heads=32, num_key_value_heads=8, head_dim=64,
                                               vocab_size=128256, tie_word_embeddings=True),
                           "issue 4's miss at 8 x 128 (91 %)", 8, 128),
    "vit-l-16-b8": ("ViTConfig", dict(hidden_size=1024, num_hidden_layers=24, num_attention_heads=16,
                                      intermediate_size=4096), "vision at batch 8, near the limit", 8, 224),
    "opt-125m": ("OPTConfig", dict(hidden_size=768, ffn_dim=3072, num_hidden_layers=12, num_attention_heads=12,
                                   vocab_size=50272), "decoder with learned positions and ReLU", 1, 128),
    "pythia-410m": ("GPTNeoXConfig", dict(hidden_size=1024, intermediate_size=4096, num_hidden_layers=24,
                                          num_attention_heads=16, vocab_size=50304, use_parallel_residual=True),
                    "attention and MLP in parallel off one residual", 1, 128),
    "phi-2-2l": ("PhiConfig", dict(hidden_size=2560, intermediate_size=10240, num_hidden_layers=2,
                                   num_attention_heads=32, vocab_size=51200, partial_rotary_factor=0.4),
                 "partial rotary, parallel block, 2.7B widths", 1, 128),
    "gemma-2b-2l": ("GemmaConfig", dict(hidden_size=2048, intermediate_size=16384, num_hidden_layers=2,
                                        num_attention_heads=8, num_key_value_heads=1, head_dim=256,
                                        vocab_size=256000), "GeGLU, multi-query, a 256k vocabulary", 1, 128),
    "deberta-v3-base": ("DebertaV2Config", dict(hidden_size=768, num_hidden_layers=12, num_attention_heads=12,
                                                intermediate_size=3072, vocab_size=128100,
                                                relative_attention=True, position_buckets=256,
                                                pos_att_type=["p2c", "c2p"]),
                        "encoder with disentangled relative attention", 1, 128),
    "whisper-small-enc": ("WhisperConfig", dict(d_model=768, encoder_layers=12, decoder_layers=12,
                                                encoder_attention_heads=12, decoder_attention_heads=12,
                                                encoder_ffn_dim=3072, decoder_ffn_dim=3072),
                          "speech encoder-decoder (mel frames in, 3000 a 30 s window)", 1, 3000),
}
DECODERS = {"bloom-560m", "mistral-7b-2l", "llama-3.2-1b-8x128", "opt-125m", "pythia-410m", "phi-2-2l",
            "gemma-2b-2l"}


def config_of(name: str):
    import transformers as T

    cls, sizes, *_ = CASES[name]
    config = getattr(T, cls)(**sizes)
    arch = {"BloomConfig": "BloomForCausalLM", "MistralConfig": "MistralForCausalLM",
            "LlamaConfig": "LlamaForCausalLM", "ViTConfig": "ViTModel", "OPTConfig": "OPTForCausalLM",
            "GPTNeoXConfig": "GPTNeoXForCausalLM", "PhiConfig": "PhiForCausalLM", "GemmaConfig": "GemmaForCausalLM",
            "DebertaV2Config": "DebertaV2Model", "WhisperConfig": "WhisperForConditionalGeneration"}[cls]
    config.architectures = [arch]
    return config


def record(name: str, mode: str, rep, ident: dict) -> dict:
    """The summary a reader compares across cases, with the whole report beside it."""
    cvs = [g.cv for g in rep.groups] + [b.cv for b in rep.blocks] + [rep.whole["cv"]]
    ba, ctx = rep.block_accounting, rep.context_accounting  # ctx: with --in-context (Note [A component in context])
    return {"case": name, "mode": mode, "why": CASES[name][2], "whole_model_eager": rep.settings["whole_model_eager"],
            "whole_model_eager_reason": rep.settings["whole_model_eager_reason"], "max_cv": max(cvs),
            "coverage": rep.coverage, "explained_coverage": rep.explained_coverage,
            "block_coverage": ba.coverage if ba else None,
            "explained_coverage_by_blocks": ba.explained_coverage if ba else None,
            "interaction_rel": [b.interaction_rel for b in rep.blocks],
            "regime_mismatch": rep.regime_mismatch, "failures": rep.failures,
            "explained_coverage_in_context": ctx.explained_coverage if ctx else None,
            "card": ident["gpu"], "date": ident["date"], "clear_native": ident["clear_native"],
            "code_version": ident["code_version"], "protocol_version": ident["protocol_version"],
            "report": rep.to_dict()}


def markdown(recs: list) -> str:
    lines = ["# Held-out families (issue 13)", "",
             "| case | mode | whole model | max CV | coverage (parts) | explained (parts) | coverage (blocks) | "
             "explained (blocks) | block interaction | card | code |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in recs:
        if "error" in r:
            lines.append(f"| {r['case']} | {r['mode']} | failed: {r['error'][:100]} ||||||||")
            continue
        inter = ", ".join(f"{x * 100:+.1f} %" for x in r["interaction_rel"]) or "–"
        pct = (lambda x: "–" if x is None or x != x else f"{x * 100:.1f} %")  # NaN: a loop, no yardstick
        lines.append(f"| {r['case']} | {r['mode']} | {'eager' if r['whole_model_eager'] else 'graph'} | "
                     f"{r['max_cv'] * 100:.2f} % | {pct(r['coverage'])} | {pct(r['explained_coverage'])} | "
                     f"{pct(r['block_coverage'])} | {pct(r['explained_coverage_by_blocks'])} | {inter} | "
                     f"{r['card']['uuid'][:12]} | {r.get('code_version', '?')[:7]} |")
    return "\n".join(lines) + "\n"


def plan(names: list, modes: list) -> list:
    """(case, mode) in the order they are run and reported."""
    return [(n, m) for n in names for m in modes if m == "prefill" or n in DECODERS]


def measure_case(lab, name: str, mode: str, profile, args) -> dict:
    """One case measured in a worker process (bench/tasks.py's job kind "heldout"): its record. ``args``: the
    run's settings (window_s, in_context)."""
    model = cli.build(config_of(name), "bf16", lab.device)
    inputs, kw = cli.inputs_for(model, CASES[name][3], CASES[name][4], lab.device)
    rep = cn.measure_model(model, *inputs, model_kwargs=kw, mode=mode, cache_len=512, backend=lab.backend,
                           profile=profile, window_s=args.window_s, in_context=args.in_context, min_trials=3,
                           max_trials=12, budget_s=480 if args.in_context else 240)
    return record(name, mode, rep, lab.identity)


def _say(r: dict) -> str:
    if "error" in r:
        return f"{r['case']} {r['mode']}: failed: {r['error'][:300]}"
    return (f"{r['case']} {r['mode']}: {'eager' if r['whole_model_eager'] else 'graph'}, coverage "
            f"{r['coverage']:.1%} / explained {r['explained_coverage']:.1%}; by blocks {r['block_coverage'] or 0:.1%}"
            f" / {r['explained_coverage_by_blocks'] or 0:.1%}; max CV {r['max_cv']:.2%}; {r['wall_s']:.0f} s on "
            f"{r['card']['uuid'][:12]}")


def run_all(cases: list, ex, settings: dict, out: Path) -> list:
    """Every case as a job of ``ex`` (workers.HostProcesses: a fresh process per case, on each card at once; a
    process that dies, as BLOOM-560m's prefill did with SIGSEGV on an H200, is tried again once, then recorded
    with how it died, and the others run on: Note [One writer], bench/workers.py). heldout.json is rewritten
    whole after every case, in plan order."""
    out.mkdir(parents=True, exist_ok=True)
    jobs = workers.Jobs({"job": "heldout", "id": f"{name}/{mode}", "case": name, "mode": mode, "args": settings}
                        for name, mode in cases)
    done = {}
    for job, rec in ex.run(jobs):
        if rec.get("profile") and rec.get("identity"):
            jobs.profiles.setdefault(rec["identity"]["gpu"]["uuid"], rec["profile"])  # a card calibrated once
        key = (job["case"], job["mode"])
        card = rec.get("identity", {}).get("gpu")  # a process that died left no identity: its error names the card
        done[key] = (rec["heldout"] | {"wall_s": rec["wall_s"]} if rec["status"] == "ok" else
                     {"case": key[0], "mode": key[1], "error": rec["error"], "card": card})
        print("  " + _say(done[key]), flush=True)
        write_atomic(out / "heldout.json", json.dumps([done[c] for c in cases if c in done], indent=1,
                                                      default=float) + "\n")
    recs = [done[c] for c in cases if c in done]
    write_atomic(out / "heldout.md", markdown(recs))
    return recs


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--cases", default=",".join(CASES))
    ap.add_argument("--modes", default="prefill,decode")
    ap.add_argument("--gpus", default="0", help="the cards to spread the cases over: 'all', or nvidia-smi indices or "
                    "UUIDs, e.g. 0,1,2,3 (default: 0)")
    ap.add_argument("--out", default=str(Path(__file__).resolve().parents[1] / "results"))
    ap.add_argument("--window-s", type=float, default=0.2)
    ap.add_argument("--in-context", action="store_true", help="also each part's in-context marginal (the model's "
                    "graph without it; one more whole-model measurement a part): for parts that run at the power "
                    "limit alone (Gemma-2B's LM head)")
    ap.add_argument("--dry-run", action="store_true", help="print the cases and modes that would run, measure nothing")
    args = ap.parse_args(argv)
    names = [c for c in args.cases.split(",") if c]
    unknown = [c for c in names if c not in CASES] + [m for m in args.modes.split(",") if m not in MODES]
    if unknown:
        print(f"bench/heldout.py: unknown case or mode {unknown[0]!r}; cases: {', '.join(CASES)}; modes: "
              f"{', '.join(MODES)}", file=sys.stderr)
        return 2
    cases = plan(names, args.modes.split(","))
    if args.dry_run:
        for name, mode in cases:
            cls, _, why, batch, seq = CASES[name]
            shape = f"batch {batch}, one new token after 512 cached" if mode == "decode" else f"batch {batch} x {seq}"
            print(f"{name} {mode}: {cls}, {shape}; {why}")
        return 0
    require_gpu("bench/heldout.py")  # one clear line before any process starts, not one failure per case
    try:
        cards = workers.host_cards(args.gpus)
    except ValueError as exc:
        print(f"bench/heldout.py: {exc}", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="heldout-") as scratch:  # the workers' job files and logs
        ex = workers.HostProcesses(cards, Path(scratch), retries=1)
        print(f"{len(cases)} cases on {ex.description}", flush=True)
        recs = run_all(cases, ex, {"window_s": args.window_s, "in_context": args.in_context}, Path(args.out))
    print(markdown(recs))
    return 0 if recs and all("error" not in r for r in recs) else 1


if __name__ == "__main__":
    sys.exit(main())
