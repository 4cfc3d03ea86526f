"""The study's models (transformers configs at the published sizes, random weights) and its plan.

A task is one measure_model() call: a model, a mode, a shape, a dtype and
config changes (for the sweeps). Its id is stable, so a resumed run knows what
is done. Nothing here needs a GPU: the plan is also what --dry-run prints.
"""

from __future__ import annotations

import contextlib
from dataclasses import asdict, dataclass

from clear_native.hf_compat import accepts, no_init_weights

DTYPES = ("fp32", "fp16", "bf16")


@dataclass(frozen=True)
class ModelSpec:
    name: str
    family: str
    cls: str                      # transformers class name
    config_cls: str
    config: dict                  # arguments of the config class (published sizes)

    def build_config(self, T, **overrides):
        return getattr(T, self.config_cls)(**{**self.config, **overrides})


_LLAMA_1B = dict(hidden_size=2048, intermediate_size=8192, num_hidden_layers=16, num_attention_heads=32,
                 num_key_value_heads=8, head_dim=64, vocab_size=128256, rope_theta=500000.0,
                 tie_word_embeddings=True, max_position_embeddings=131072)
_QWEN25_05B = dict(hidden_size=896, intermediate_size=4864, num_hidden_layers=24, num_attention_heads=14,
                   num_key_value_heads=2, vocab_size=151936, rope_theta=1000000.0, tie_word_embeddings=True,
                   max_position_embeddings=32768)

MODELS = {m.name: m for m in [
    ModelSpec("bert-base", "encoder", "BertModel", "BertConfig", {}),
    ModelSpec("bert-large", "encoder", "BertModel", "BertConfig",
              dict(hidden_size=1024, num_hidden_layers=24, num_attention_heads=16, intermediate_size=4096)),
    ModelSpec("roberta-base", "encoder", "RobertaModel", "RobertaConfig",
              dict(vocab_size=50265, max_position_embeddings=514, type_vocab_size=1, pad_token_id=1)),
    ModelSpec("distilbert-base", "encoder", "DistilBertModel", "DistilBertConfig", {}),
    ModelSpec("albert-base-v2", "encoder", "AlbertModel", "AlbertConfig",
              dict(embedding_size=128, hidden_size=768, num_attention_heads=12, intermediate_size=3072,
                   num_hidden_layers=12, vocab_size=30000)),
    ModelSpec("gpt2", "decoder", "GPT2LMHeadModel", "GPT2Config", {}),
    ModelSpec("gpt2-medium", "decoder", "GPT2LMHeadModel", "GPT2Config", dict(n_embd=1024, n_layer=24, n_head=16)),
    ModelSpec("llama-3.2-1b", "decoder", "LlamaForCausalLM", "LlamaConfig", _LLAMA_1B),
    ModelSpec("qwen2.5-0.5b", "decoder", "Qwen2ForCausalLM", "Qwen2Config", _QWEN25_05B),
    ModelSpec("t5-small", "encoder-decoder", "T5ForConditionalGeneration", "T5Config",
              dict(d_model=512, d_ff=2048, d_kv=64, num_layers=6, num_heads=8, vocab_size=32128)),
    ModelSpec("t5-base", "encoder-decoder", "T5ForConditionalGeneration", "T5Config",
              dict(d_model=768, d_ff=3072, d_kv=64, num_layers=12, num_heads=12, vocab_size=32128)),
    ModelSpec("bart-base", "encoder-decoder", "BartForConditionalGeneration", "BartConfig",
              dict(d_model=768, encoder_layers=6, decoder_layers=6, encoder_attention_heads=12,
                   decoder_attention_heads=12, encoder_ffn_dim=3072, decoder_ffn_dim=3072, vocab_size=50265)),
    ModelSpec("vit-b-16", "vision", "ViTModel", "ViTConfig", {}),
    ModelSpec("vit-l-16", "vision", "ViTModel", "ViTConfig",
              dict(hidden_size=1024, num_hidden_layers=24, num_attention_heads=16, intermediate_size=4096)),
    ModelSpec("deit-s-16", "vision", "DeiTModel", "DeiTConfig",
              dict(hidden_size=384, num_hidden_layers=12, num_attention_heads=6, intermediate_size=1536)),
]}


@dataclass(frozen=True)
class Task:
    model: str
    mode: str = "prefill"         # "prefill" or "decode"
    batch: int = 8
    seq: int = 128                # tokens (prefill; encoder tokens of an encoder-decoder's decode); vision: 224 px
    dtype: str = "bf16"
    cache_len: int = 0            # decode: tokens already in the static KV cache
    overrides: tuple = ()         # config changes, as sorted (key, value) pairs
    purpose: tuple = ("suite",)   # "suite", "coverage", "sweep:<name>", "reference", "repeat"
    repeat: int = 0               # > 0: the same measurement again, in a fresh process, at the run's end

    @property
    def id(self) -> str:
        family = MODELS[self.model].family
        if self.mode == "decode":
            shape = f"b{self.batch}kv{self.cache_len}" + (f"enc{self.seq}" if family == "encoder-decoder" else "")
        else:
            shape = f"b{self.batch}" + ("img224" if family == "vision" else f"s{self.seq}")
        extra = "".join(f"/{k}={v}" for k, v in self.overrides)
        again = f"/repeat{self.repeat}" if self.repeat else ""
        return f"{self.model}/{self.mode}/{shape}/{self.dtype}{extra}{again}"

    @property
    def base_id(self) -> str:
        """The id of the measurement a repeat repeats (its own id for a first measurement)."""
        return Task(**{**asdict(self), "repeat": 0}).id

    @classmethod
    def from_dict(cls, d: dict) -> "Task":
        """The Task of to_dict()'s output (lists back to tuples, the id dropped)."""
        fields = {k: v for k, v in d.items() if k in cls.__dataclass_fields__}
        fields["overrides"] = tuple(tuple(kv) for kv in fields.get("overrides", ()))
        fields["purpose"] = tuple(fields.get("purpose", ("suite",)))
        return cls(**fields)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["id"] = self.id
        return d


SWEEPS = ("batch", "seq", "kv", "heads", "hidden", "dtype")
KV_LENGTHS = (128, 512, 1024, 2048, 4096, 8192)
# Measured again at a run's end, in fresh processes on the card that measured them first: the run's
# own repeatability (issue 14). One encoder, one decode step, one encoder-decoder: short tasks.
REPEATED = ("bert-base/prefill/b1s8/bf16", "gpt2/decode/b1kv512/bf16", "t5-small/prefill/b8s128/bf16")


def plan(models=None, sweeps=SWEEPS, quick: bool = False) -> list[Task]:
    """The study's tasks, in the order they run; a task wanted by several purposes runs once."""
    names = list(models) if models else list(MODELS)
    unknown = [m for m in names if m not in MODELS]
    if unknown:
        raise ValueError(f"unknown model {unknown[0]!r}; choose from {', '.join(MODELS)}")
    bad = [s for s in sweeps if s not in SWEEPS]
    if bad:
        raise ValueError(f"unknown sweep {bad[0]!r}; choose from {', '.join(SWEEPS)}")
    tasks: list[Task] = []
    for name in names:
        fam = MODELS[name].family
        tasks.append(Task(name))
        if fam == "decoder":
            tasks.append(Task(name, "decode", batch=1, seq=1, cache_len=512))
        elif fam == "encoder-decoder":  # one decoder token over 512 cached ones and a 128-token encoding
            tasks.append(Task(name, "decode", batch=1, seq=128, cache_len=512))
    # Issue 4's coverage cases at batch 1 x sequence 8 (the size where gaps between kernels dominate).
    for name in ("bert-base", "gpt2", "llama-3.2-1b", "t5-small"):
        if name in names and not quick:
            tasks.append(Task(name, batch=1, seq=8, purpose=("coverage",)))
    if quick:
        sweeps = [s for s in sweeps if s in ("batch", "dtype")]
    enc = "bert-base" if "bert-base" in names else None
    dec = "gpt2" if "gpt2" in names else None
    sweep_tasks = []
    if enc and "batch" in sweeps:
        sweep_tasks += [Task(enc, batch=b, purpose=("sweep:batch",)) for b in ((1, 8) if quick else (1, 8, 64))]
    if enc and "seq" in sweeps:
        sweep_tasks += [Task(enc, seq=s, purpose=("sweep:seq",)) for s in (32, 128, 512)]
    if "kv" in sweeps:  # to 8k cached tokens: a decoder whose positions reach that far (GPT-2's stop at 1024)
        long = next((m for m in ("llama-3.2-1b", "qwen2.5-0.5b") if m in names), None)
        if long or dec:
            sweep_tasks += [Task(long or dec, "decode", batch=1, seq=1, cache_len=c, purpose=("sweep:kv",))
                            for c in KV_LENGTHS if long or c <= 1024]
    if enc and "heads" in sweeps:  # hidden size fixed at 768
        sweep_tasks += [Task(enc, overrides=(("num_attention_heads", h),) if h != 12 else (),
                             purpose=("sweep:heads",)) for h in (4, 12, 24)]
    if enc and "hidden" in sweeps:  # head dim fixed at 64, feed-forward 4x
        sweep_tasks += [Task(enc, overrides=(("hidden_size", h), ("intermediate_size", 4 * h),
                                             ("num_attention_heads", h // 64)) if h != 768 else (),
                             purpose=("sweep:hidden",)) for h in (512, 768, 1024)]
    if enc and "dtype" in sweeps:
        sweep_tasks += [Task(enc, dtype=d, purpose=("sweep:dtype",)) for d in ((("fp16", "bf16")) if quick else DTYPES)]
    return _merge(tasks + sweep_tasks)


def by_ids(task_ids, option: str) -> dict:
    """{id: Task} of the study's plan for ``task_ids`` (ValueError naming ``option``, the command-line option they
    came from, and where to find the ids, for one the plan lacks)."""
    by_id = {t.id: t for t in plan()}
    unknown = [t for t in task_ids if t not in by_id]
    if unknown:
        raise ValueError(f"{option} {unknown[0]!r} is not a task of the study's plan (see bench/run.py --dry-run)")
    return {t: by_id[t] for t in task_ids}


def _merge(tasks: list[Task]) -> list[Task]:
    """One task per id; the purposes of duplicates are joined."""
    by_id: dict = {}
    for t in tasks:
        if t.id in by_id:
            old = by_id[t.id]
            by_id[t.id] = Task(**{**asdict(old), "purpose": old.purpose + tuple(p for p in t.purpose
                                                                                   if p not in old.purpose)})
        else:
            by_id[t.id] = t
    return list(by_id.values())


QUICK_MODELS = ("bert-base", "gpt2", "t5-small", "deit-s-16")


SEED = 0  # the random weights and inputs of every task


def torch_dtype(torch, name: str):
    return {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[name]


def build(T, torch, task: Task, device, init_weights: bool = True):
    """(model, positional inputs, keyword inputs) of a task, random weights, on ``device``: the same in every
    process, whatever drew random numbers before (torch's generators seeded with SEED; two seeds' BERT-base read
    within 0.27 % of each other as did captures of one model, results/launch_state-runs/2026-11-29_0858_*)."""
    spec = MODELS[task.model]
    torch.manual_seed(SEED)
    config = spec.build_config(T, **dict(task.overrides))
    dtype = torch_dtype(torch, task.dtype)
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)  # built in its dtype on its device: no fp32 copy on the CPU
    try:
        with torch.device(device), (contextlib.nullcontext() if init_weights else no_init_weights()):
            model = getattr(T, spec.cls)(config).eval()
    finally:
        torch.set_default_dtype(previous)
    kw: dict = {"use_cache": False} if accepts(model.forward, "use_cache") else {}
    if spec.family == "vision":
        size = config.image_size
        inputs = (torch.randn(task.batch, config.num_channels, size, size, dtype=dtype, device=device),)
    else:
        ids = torch.randint(0, config.vocab_size, (task.batch, task.seq), device=device)
        inputs = (ids,)
        if spec.family == "encoder-decoder":
            kw["decoder_input_ids"] = ids
    return model, inputs, kw


def flops_plan(task: Task) -> dict:
    """Components, signature groups, FLOPs and bytes of a task, with fake tensors (no GPU, no memory)."""
    import torch
    import transformers as T
    from torch._subclasses.fake_tensor import FakeTensorMode

    import clear_native as cn

    with FakeTensorMode(allow_non_fake_inputs=True):
        model, inputs, kw = build(T, torch, task, "cpu", init_weights=False)  # fake tensors: nothing to draw
        if task.mode == "decode":  # the step's use_cache and decoder_input_ids replace the prefill's
            inputs, kw = cn.decode_inputs(model, inputs[0], task.cache_len, kw)
        comps = cn.find_components(model, *inputs, model_kwargs=kw)
        groups = cn.group_components(comps)
    return {"components": len(comps),
            "groups": [{"name": g.name, "kind": g.kind, "occurrences": g.occurrences, "flops": g.flops,
                        "bytes_min": g.bytes_min} for g in groups]}


def estimate_s(n_groups: int, trials: int, settle_s: float, window_s: float, overhead_s: float = 12.0) -> float:
    """Wall seconds of one measure_model() call: every capture's trials, plus build, capture and baselines."""
    return overhead_s + (n_groups + 1) * trials * (settle_s + window_s + 0.02)


# Component groups a model of each family usually has (bench/run.py --dry-run counts them exactly).
TYPICAL_GROUPS = {"encoder": 5, "vision": 5, "decoder": 6, "encoder-decoder": 9}


def longest_first(tasks: list[Task], settle_s: float = 0.45, window_s: float = 0.2) -> list[Task]:
    """``tasks`` with the longest expected first (stable), for runs on several GPUs: the last jobs to start are
    then the short ones, so the cards finish together. Expected from the family's usual group count,
    without tracing the model (a guess; an exact plan costs a second a task)."""
    def expected(t: Task) -> float:
        return estimate_s(TYPICAL_GROUPS[MODELS[t.model].family], 3, settle_s, window_s)

    return sorted(tasks, key=expected, reverse=True)


def as_list(value: str | None, default) -> list:
    if value is None:
        return list(default)
    return [v for v in value.split(",") if v and v != "none"]


def only(tasks: list[Task], prefixes: list) -> list[Task]:
    """The tasks whose id starts with one of ``prefixes``; ValueError if a prefix matches none."""
    for p in prefixes:
        if not any(t.id.startswith(p) for t in tasks):
            raise ValueError(f"--only {p!r} matches no planned task id (bench/run.py --dry-run lists them)")
    return [t for t in tasks if any(t.id.startswith(p) for p in prefixes)]


def repeats(tasks: list[Task]) -> list[Task]:
    """The repeats a run of ``tasks`` ends with: those of REPEATED it holds, or its first task."""
    ids = {t.id: t for t in tasks}
    chosen = [ids[i] for i in REPEATED if i in ids] or tasks[:1]
    return [Task(**{**asdict(t), "repeat": 1, "purpose": ("repeat",)}) for t in chosen]


__all__ = ["MODELS", "SWEEPS", "Task", "plan", "by_ids", "repeats", "build", "flops_plan", "estimate_s",
           "longest_first", "QUICK_MODELS"]
