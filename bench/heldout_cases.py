"""The held-out families of issue 13: each case's transformers config at its published size, and how one case
is measured and recorded. A case runs as a job of bench/workers.py (bench/tasks.py's kind "heldout");
bench/heldout.py plans the cases and writes results/heldout.*.
"""

from __future__ import annotations

import clear_native as cn
from clear_native import cli

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
    rec = {"case": name, "mode": mode, "why": CASES[name][2], "whole_model_eager": rep.settings["whole_model_eager"],
           "whole_model_eager_reason": rep.settings["whole_model_eager_reason"], "max_cv": max(cvs),
           "coverage_parts": rep.coverage, "explained_coverage_parts": rep.explained_coverage,
           "block_coverage": ba.coverage if ba else None,
           "explained_coverage_by_blocks": _explained(ba),
           "interaction_rel": [b.interaction_rel for b in rep.blocks],
           "regime_mismatch": rep.regime_mismatch, "failures": rep.failures,
           "explained_coverage_in_context": _explained(ctx),
           # Note [At the model's power]: the parts that ran at the power limit alone, measured again paced
           "paced": [(p.name, p.ratio, p.freed, p.why) for p in rep.paced.get("rows", ())],
           "explained_coverage_paced": _explained(rep.paced.get("accounting")),
           "explained_coverage_by_blocks_paced": _explained(rep.paced.get("block_accounting")),
           "card": ident["gpu"], "date": ident["date"], "clear_native": ident["clear_native"],
           "code_version": ident["code_version"], "protocol_version": ident["protocol_version"],
           "report": rep.to_dict()}
    return rec | yardstick(rec)


def yardstick(rec: dict) -> dict:
    """Issue 13's two numbers from a record's details: ``coverage`` and ``explained_coverage`` of the model by
    blocks (model = the blocks + the other components + glue + gaps; each block = its parts + interaction), with
    the parts paced where any was (Note [At the model's power]); by parts where the model has no blocks."""
    paced, alone = rec.get("explained_coverage_by_blocks_paced"), rec.get("explained_coverage_by_blocks")
    blocks = rec.get("block_coverage") is not None
    return {"coverage": rec["block_coverage"] if blocks else rec["coverage_parts"],
            "explained_coverage": paced if paced is not None else alone if blocks else rec["explained_coverage_parts"],
            "explained_coverage_basis": ("blocks, paced" if paced is not None else "blocks" if blocks else "parts")}


def _explained(acc):
    return acc.explained_coverage if acc is not None else None


def measure_case(lab, name: str, mode: str, profile, args) -> dict:
    """One case measured in a worker process (bench/tasks.py's job kind "heldout"): its record. ``args``: the
    run's settings (window_s, in_context)."""
    model = cli.build(config_of(name), "bf16", lab.device)
    inputs, kw = cli.inputs_for(model, CASES[name][3], CASES[name][4], lab.device)
    rep = cn.measure_model(model, *inputs, model_kwargs=kw, mode=mode, cache_len=512, backend=lab.backend,
                           profile=profile, window_s=args.window_s, in_context=args.in_context, min_trials=3,
                           max_trials=12, budget_s=480 if args.in_context else 240)
    return record(name, mode, rep, lab.identity)
