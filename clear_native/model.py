"""measure_model(): from a model and its input to the energy of every component,
and a check that the components add up to the whole model.

coverage = sum(occurrences x energy per call) / whole-model energy per call.
The remainder is split, from the profiler's kernel list of one forward pass:
- glue: kernels outside every component (residual adds, casts, masks...), whose
  energy is taken at the components' mean power;
- gaps: the whole model's GPU time per call minus the components' GPU time and
  the glue's, spent at the power of the GPU awake but idle.
explained coverage = (components + glue + gaps) / whole model.

With in_context=True each group is also measured where it runs: the model's own
graph replayed without the group's kernels (clear_native/context.py).
"""

from __future__ import annotations

import copy
import csv
import inspect
import io
import json
import math
import time
from dataclasses import asdict, dataclass, field, replace

from .components import find_components, group_components
from .context import ContextAccounting, NodeRecorder, context_accounting
from .errors import ClearNativeError
from .graph_capture import capture
from .graphs import replay
from .protocol import measure


class ModelInputError(ClearNativeError):
    """The model does not run on the given inputs; nothing was measured."""


@dataclass
class GroupResult:
    name: str
    kind: str
    members: list
    occurrences: int                 # calls per forward pass
    gpu_time_per_call_s: float
    energy_per_call_j: float
    dynamic_energy_per_call_j: float
    cv: float
    ci95_rel: float
    trials: int
    flops: int                       # per call
    bytes_min: int                   # per call: parameters + inputs + outputs
    j_per_flop: float                # energy per call / FLOPs (NaN without FLOPs)
    share: float                     # occurrences x energy per call / whole-model energy
    eager: bool = False              # measured from a Python loop (its capture failed)
    copies: int = 1                  # distinct copies called in turn per replay (Note [Cold L2])
    trial_energy_per_call_j: list = field(default_factory=list)
    trial_power_w: list = field(default_factory=list)    # mean power of each trial's window
    trial_after: list = field(default_factory=list)      # the capture measured just before each trial
    trial_drift_rel: list = field(default_factory=list)  # power drift within each trial's window
    mean_power_w: float = math.nan
    temperature_c: tuple = ()        # (min, max) over its trials' windows
    sm_clock_mhz: tuple = ()         # (min, max)
    clock_event_reasons: list = field(default_factory=list)  # throttling NVML reported in its windows

    @property
    def energy_total_j(self) -> float:
        return self.occurrences * self.energy_per_call_j


@dataclass
class Accounting:
    """Where the whole model's energy goes (per forward pass)."""

    model_energy_j: float
    model_time_s: float
    components_energy_j: float
    components_time_s: float
    glue_time_s: float
    glue_energy_j: float
    gaps_time_s: float
    gaps_energy_j: float
    coverage: float                  # components / model
    explained_coverage: float        # (components + glue + gaps) / model


def account(groups: list, model_energy_j: float, model_time_s: float, kernel_time_s: float,
            component_kernel_time_s: float, awake_idle_power_w: float) -> Accounting:
    """The coverage arithmetic (see the module's doc). Times are per forward pass."""
    comp_e = sum(g.occurrences * g.energy_per_call_j for g in groups)
    comp_t = sum(g.occurrences * g.gpu_time_per_call_s for g in groups)
    glue_t = max(0.0, kernel_time_s - component_kernel_time_s)
    glue_e = glue_t * (comp_e / comp_t) if comp_t > 0 else math.nan
    gaps_t = max(0.0, model_time_s - comp_t - glue_t)
    gaps_e = gaps_t * awake_idle_power_w
    return Accounting(model_energy_j, model_time_s, comp_e, comp_t, glue_t, glue_e, gaps_t, gaps_e,
                      comp_e / model_energy_j, (comp_e + glue_e + gaps_e) / model_energy_j)


@dataclass
class ModelReport:
    model: str
    mode: str
    inputs: dict                     # shapes and dtypes
    groups: list                     # GroupResult
    whole: dict                      # the whole model's Measurement, as a dict
    accounting: Accounting
    failures: list                   # (component, reason): not measured
    run: dict                        # gpu, profile, settings, counter check of the measure run
    wall_s: float
    settings: dict = field(default_factory=dict)
    in_context: list = field(default_factory=list)       # InContext per group (measure_model(in_context=True))
    context_accounting: ContextAccounting | None = None

    @property
    def coverage(self) -> float:
        return self.accounting.coverage

    @property
    def explained_coverage(self) -> float:
        return self.accounting.explained_coverage

    def to_dict(self) -> dict:
        return json.loads(json.dumps(asdict(self), default=float))

    def to_json(self, path=None) -> str:
        text = json.dumps(self.to_dict(), indent=1)
        if path is not None:
            with open(path, "w") as f:
                f.write(text + "\n")
        return text

    _CSV = ("name", "kind", "occurrences", "gpu_time_per_call_s", "energy_per_call_j", "dynamic_energy_per_call_j",
            "cv", "ci95_rel", "trials", "flops", "bytes_min", "j_per_flop", "share", "eager", "copies")

    _CONTEXT_CSV = ("energy_per_call_j", "energy_per_call_ci95_j", "gpu_time_per_call_s", "isolated_ratio")

    def _rows(self) -> list:
        """One dict per group: the isolated columns, and the in-context ones (prefixed context_) when measured."""
        ctx = {r.name: r for r in self.in_context}
        rows = []
        for g in self.groups:
            row = {c: getattr(g, c) for c in self._CSV}
            if ctx:
                r = ctx.get(g.name)
                row.update({f"context_{c}": getattr(r, c) if r else math.nan for c in self._CONTEXT_CSV})
            rows.append(row)
        return rows

    def to_csv(self, path=None) -> str:
        rows = self._rows()
        buf = io.StringIO()
        w = csv.DictWriter(buf, fieldnames=list(rows[0]) if rows else list(self._CSV))
        w.writeheader()
        w.writerows(rows)
        if path is not None:
            with open(path, "w", newline="") as f:
                f.write(buf.getvalue())
        return buf.getvalue()

    def to_dataframe(self):
        import pandas as pd  # optional: only for this conversion

        return pd.DataFrame(self._rows())

    def table(self) -> str:
        a = self.accounting
        rows = [f"{self.model} ({self.mode}, {self.inputs}) on {self.run.get('gpu', {}).get('name', '?')}", "",
                "| component | kind | × | GPU time/call | energy/call | CV | FLOPs | J/FLOP | share |",
                "|---|---|---|---|---|---|---|---|---|"]
        for g in self.groups:
            rows.append(f"| {g.name}{' (eager)' if g.eager else ''}{f' (x{g.copies} copies)' if g.copies > 1 else ''} | "
                        f"{g.kind} | {g.occurrences} | "
                        f"{g.gpu_time_per_call_s * 1e6:.2f} µs | {g.energy_per_call_j * 1e3:.4g} mJ | {g.cv * 100:.2f} % | "
                        f"{g.flops:.3g} | {g.j_per_flop:.3g} | {g.share * 100:.1f} % |")
        rows += [f"| whole model | | 1 | {a.model_time_s * 1e6:.1f} µs | {a.model_energy_j * 1e3:.4g} mJ | "
                 f"{self.whole.get('cv', math.nan) * 100:.2f} % | | | 100 % |", "",
                 f"coverage {a.coverage * 100:.1f} %; glue {a.glue_time_s * 1e6:.1f} µs / {a.glue_energy_j * 1e3:.3g} mJ; "
                 f"gaps {a.gaps_time_s * 1e6:.1f} µs / {a.gaps_energy_j * 1e3:.3g} mJ; explained coverage "
                 f"{a.explained_coverage * 100:.1f} %"]
        if self.context_accounting is not None:
            c = self.context_accounting
            rows += ["", "In context (the model's graph without the group: Note [A component in context]):", "",
                     "| component | × | GPU time/call | energy/call | ±95 % | vs alone | share |", "|---|---|---|---|---|---|---|"]
            for r in self.in_context:
                rows.append(f"| {r.name} | {r.occurrences} | {r.gpu_time_per_call_s * 1e6:.2f} µs | "
                            f"{r.energy_per_call_j * 1e3:.4g} mJ | {r.energy_per_call_ci95_j * 1e3:.2g} mJ | "
                            f"{r.isolated_ratio:.3f}x | {r.share * 100:.1f} % |")
            rows += ["", f"in-context coverage {c.coverage * 100:.1f} %; without any component "
                         f"{c.rest_time_s * 1e6:.1f} µs / {c.rest_energy_j * 1e3:.3g} mJ; interaction "
                         f"{c.interaction_energy_j * 1e3:+.3g} mJ; explained {c.explained_coverage * 100:.1f} %; "
                         f"the in-context graph {c.model_energy_j * 1e3:.4g} mJ ({c.layout_rel * 100:+.1f} % vs the model)"]
        for name, reason in self.failures:
            rows.append(f"not measured: {name}: {reason}")
        return "\n".join(rows)


def l2_copies(module, l2_bytes: int, max_copies: int = 64) -> int:
    """How many distinct copies of a component to call in turn so that its parameters cannot stay in L2."""
    params = sum(p.numel() * p.element_size() for p in module.parameters())
    if params == 0 or l2_bytes <= 0:
        return 1
    return int(min(max_copies, max(1, math.ceil(2 * l2_bytes / params))))


def per_copy(m, copies: int):
    """A Measurement of ``copies`` calls in turn as the Measurement of one call (energies, times / copies)."""
    if copies == 1:
        return m
    return replace(
        m, energy_per_call_j=m.energy_per_call_j / copies, energy_per_call_ci95_j=m.energy_per_call_ci95_j / copies,
        dynamic_energy_per_call_j=m.dynamic_energy_per_call_j / copies,
        gpu_time_per_call_s=m.gpu_time_per_call_s / copies,
        trial_energy_per_call_j=[x / copies for x in m.trial_energy_per_call_j],
        trial_time_per_call_s=[x / copies for x in m.trial_time_per_call_s],
        trial_run_time_per_call_s=[x / copies for x in m.trial_run_time_per_call_s])


class ColdCopies:
    """Calls ``copies`` distinct deep copies of a module in turn on the same inputs; returns the last output.

    Note [Cold L2]: a component replayed back-to-back keeps its parameters in
    the GPU's L2 cache (50 MB on an H200), while inside the model every layer's
    weights come from HBM. Measured on an H200 (results/cold_cache.md), BERT-base
    components replayed alone cost 9-69 % less energy than as distinct copies
    whose parameters overflow L2, and coverage went from 75.3 % to 98.6 % (1x8)
    and from 90.0 % to 98.9 % (8x128). So a replay calls enough copies that
    their parameters are twice the L2, and energy and time per call are divided
    by the number of copies. Inputs stay hot, as they are in the model (the
    previous kernel just wrote them).
    """

    def __init__(self, module, copies: int) -> None:
        if copies < 1:
            raise ValueError(f"copies must be >= 1, got {copies}")
        self.modules = [module] + [copy.deepcopy(module) for _ in range(copies - 1)]
        self.__qualname__ = f"ColdCopies[{type(module).__name__} x{copies}]"

    @property
    def copies(self) -> int:
        return len(self.modules)

    def __call__(self, *args, **kwargs):
        out = None
        for m in self.modules:
            out = m(*args, **kwargs)
        return out


def _accepts(fn, name: str) -> bool:
    try:
        return name in inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return False


def _fixed_slot_update(layer, key_states, value_states, *args, **kwargs):
    """A StaticLayer.update that writes at a fixed position instead of advancing its counter.

    Note [Decode replays write one slot]: transformers' StaticCache advances a
    device-side counter on every step, so replaying a captured step would write
    the next slot each time (and run out of bounds). For repetitions every
    replay must do the same work: the same index arithmetic (arange + base) and
    the same copies, from a base that never moves.
    """
    import torch

    cache_position = torch.arange(key_states.shape[-2], device=layer.keys.device) + layer._cn_base
    layer.keys.index_copy_(2, cache_position, key_states)
    layer.values.index_copy_(2, cache_position, value_states)
    return layer.keys, layer.values


def decode_inputs(model, input_ids, cache_len: int, kw: dict):
    """Inputs of one decode step after `cache_len` tokens, with a static (fixed-size) KV cache.

    The cache is filled with a prefill of random tokens; then every layer writes
    the new token at slot `cache_len` on every call (Note [Decode replays write one slot]).
    An encoder-decoder model encodes ``input_ids`` once: the step is the
    decoder's, with the encoder's output and its cross-attention cache fixed.
    """
    import types

    import torch
    from transformers import EncoderDecoderCache, StaticCache

    config, dev = model.config, input_ids.device
    b = input_ids.shape[0]
    self_cache = StaticCache(config=config, max_cache_len=cache_len + 1)
    prompt = torch.randint(0, config.vocab_size, (b, cache_len), device=dev)
    positions = torch.arange(cache_len, device=dev)
    with torch.no_grad():
        if config.is_encoder_decoder:
            encoded = model.get_encoder()(input_ids)
            cache = EncoderDecoderCache(self_cache, StaticCache(config=config, max_cache_len=input_ids.shape[1]))
            model(encoder_outputs=encoded, decoder_input_ids=prompt, past_key_values=cache, use_cache=True,
                  cache_position=positions)
        else:
            cache = self_cache
            model(prompt, past_key_values=cache, use_cache=True, cache_position=positions)
    for layer in self_cache.layers:
        if not hasattr(layer, "cumulative_length"):
            raise ValueError(f"decode mode needs transformers' StaticCache layers; got {type(layer).__name__}")
        layer._cn_base = torch.full((), cache_len, dtype=torch.long, device=layer.keys.device)
        layer.update = types.MethodType(_fixed_slot_update, layer)
    step_kw = dict(kw, past_key_values=cache, use_cache=True, cache_position=torch.tensor([cache_len], device=dev))
    if config.is_encoder_decoder:
        step_kw.update(encoder_outputs=encoded, decoder_input_ids=prompt[:, -1:])
        if _accepts(model.forward, "decoder_attention_mask"):
            # As generate() does. Without it BART builds torch.ones(b, cache length + 1) from the
            # static cache's length, a GPU tensor: a host sync that forbids capturing the step.
            step_kw["decoder_attention_mask"] = torch.ones(b, cache_len + 1, dtype=torch.long, device=dev)
        return (), step_kw
    return (input_ids[:, -1:],), step_kw


def _l2_bytes(torch, model) -> int:
    """The L2 cache size of the GPU holding the model's parameters (0 if not on a GPU)."""
    p = next(model.parameters(), None)
    if p is None or p.device.type != "cuda":
        return 0
    return int(torch.cuda.get_device_properties(p.device).L2_cache_size)


def kernel_times_s(model, components, inputs, kw) -> tuple[float, float]:
    """(all kernels, kernels launched inside components) of one eager forward pass, from the profiler."""
    import torch
    from torch.autograd import DeviceType
    from torch.profiler import ProfilerActivity, profile, record_function

    stack, handles = [], []
    for c in components:
        def pre(module, args, name=f"cn::{c.qualname}"):
            stack.append(record_function(name))
            stack[-1].__enter__()

        def post(module, args, output):
            stack.pop().__exit__(None, None, None)

        handles += [c.module.register_forward_pre_hook(pre), c.module.register_forward_hook(post)]
    try:
        with torch.no_grad():
            model(*inputs, **kw)  # warm
            torch.cuda.synchronize()
            # acc_events: one cycle either way; without it torch 2.11 warns that it clears events.
            with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA], acc_events=True) as prof:
                model(*inputs, **kw)
                torch.cuda.synchronize()
    finally:
        for h in handles:
            h.remove()
    events = prof.events()
    kernels = sum(e.time_range.elapsed_us() for e in events
                  if e.device_type == DeviceType.CUDA and not e.name.startswith("cn::"))
    inside = sum(e.device_time_total for e in events if e.device_type == DeviceType.CPU and e.name.startswith("cn::"))
    return kernels * 1e-6, inside * 1e-6


def measure_model(model, *inputs, mode: str = "prefill", cache_len: int = 512, select=None, backend=None,
                  profile=None, min_trials: int = 5, max_trials: int = 30, target_ci_rel: float = 0.01,
                  window_s: float = 0.5, budget_s: float = 600.0, l2: str = "cold", target_cv: float | None = 0.01,
                  in_context: bool = False, progress=None,
                  **kw) -> ModelReport:
    """Energy of every component of ``model`` on ``inputs``, and how they add up to the model.

    mode: "prefill" (one forward pass of the inputs) or "decode" (one new token,
    inputs[0] its ids, after ``cache_len`` cached tokens in a static KV cache).
    select: the components (see find_components); None for the rules.
    l2: "cold" replays each component as distinct copies whose parameters overflow
    the L2 cache, as inside the model (Note [Cold L2]); "hot" replays one copy.
    target_cv: a capture whose trials vary more than this gets longer windows (see measure()).
    in_context: also measure the model's own graph without each group's kernels, and without
    every component's: each group's energy where it runs (Note [A component in context],
    clear_native/context.py). Adds one whole-model measurement per group, plus two (the
    in-context graph whole, and without any component).
    The rest goes to measure() for every component group and the whole model together.
    """
    import torch

    if mode not in ("prefill", "decode"):
        raise ValueError(f"mode must be 'prefill' or 'decode', got {mode!r}")
    if l2 not in ("cold", "hot"):
        raise ValueError(f"l2 must be 'cold' or 'hot', got {l2!r}")
    say = progress or (lambda msg: None)
    t0 = time.monotonic()
    model.eval()
    if mode == "decode":
        if not hasattr(model, "config") or not _accepts(model.forward, "past_key_values"):
            raise ValueError("decode mode needs a transformers model with a KV cache (past_key_values)")
        inputs, kw = decode_inputs(model, inputs[0], cache_len, kw)
    elif _accepts(model.forward, "use_cache"):
        kw.setdefault("use_cache", False)  # prefill: no cache that grows between replays
    try:
        with torch.no_grad():
            model(*inputs, **kw)
    except Exception as exc:
        raise ModelInputError(f"{type(model).__name__} does not run on the given inputs: "
                              f"{type(exc).__name__}: {exc}") from exc
    comps = find_components(model, *inputs, select=select, **kw)
    groups = group_components(comps)
    say(f"{len(comps)} components in {len(groups)} groups")
    l2_bytes = _l2_bytes(torch, model) if l2 == "cold" else 0
    caps, failures, copies = [], [], {}
    for g in groups:
        rep = g.representative
        n = copies[g.name] = l2_copies(rep.module, l2_bytes)
        try:  # copying (memory) and capturing may fail: named and reported, the others still measured
            fn = ColdCopies(rep.module, n) if n > 1 else rep.module
            caps.append(capture(fn, *rep.args, name=g.name, eager_fallback=True, **rep.kwargs))
        except Exception as exc:  # noqa: BLE001 - named and reported; the others are still measured
            failures.append((g.name, f"{type(exc).__name__}: {exc}"))
    # A model whose parameters fit the L2 keeps them there from one back-to-back call to the next:
    # replayed cold like its components, or they would not add up to it (Note [Cold L2]).
    copies["whole_model"] = l2_copies(model, l2_bytes)
    whole_fn = ColdCopies(model, copies["whole_model"]) if copies["whole_model"] > 1 else model
    whole = capture(whole_fn, *inputs, name="whole_model", eager_fallback=True, **kw)
    ctx_caps = []
    if in_context:  # a second capture: Note [The in-context graph is its own baseline]
        recorder = _recorder(whole_fn, model, groups)
        try:  # it holds every activation at once: it may not fit where the model does
            with recorder:
                whole_ctx = capture(whole_fn, *inputs, name=_CTX_GRAPH, eager_fallback=True, **kw)
            pruned = _graphs_without(whole_ctx, recorder, groups, failures)
            output_diff = _output_diffs(whole_ctx, pruned) if pruned else {}
            ctx_caps = [whole_ctx] + list(pruned.values()) if pruned else []
        except Exception as exc:  # noqa: BLE001 - reported; the model and its components are still measured
            failures.append(("in context", f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"))
    kernels_s, inside_s = kernel_times_s(model, comps, inputs, kw)
    run = measure(caps + [whole] + ctx_caps, backend=backend, profile=profile, min_trials=min_trials,
                  max_trials=max_trials, target_ci_rel=target_ci_rel, target_cv=target_cv, window_s=window_s,
                  budget_s=budget_s, progress=progress)
    wm = per_copy(run["whole_model"], copies["whole_model"])
    results = []
    by_name = {g.name: g for g in groups}
    for cap in caps:
        m, g, n = per_copy(run[cap.name], copies[cap.name]), by_name[cap.name], copies[cap.name]
        e = m.energy_per_call_j
        results.append(GroupResult(
            name=g.name, kind=g.kind, members=g.members, occurrences=g.occurrences,
            gpu_time_per_call_s=m.gpu_time_per_call_s, energy_per_call_j=e,
            dynamic_energy_per_call_j=m.dynamic_energy_per_call_j, cv=m.cv, ci95_rel=m.ci95_rel, trials=m.trials,
            flops=g.flops, bytes_min=g.bytes_min, j_per_flop=e / g.flops if g.flops else math.nan,
            share=g.occurrences * e / wm.energy_per_call_j, eager=cap.eager, copies=n,
            trial_energy_per_call_j=m.trial_energy_per_call_j, trial_power_w=m.trial_power_w,
            trial_after=m.trial_after, trial_drift_rel=m.trial_drift_rel, mean_power_w=m.mean_power_w,
            temperature_c=m.temperature_c, sm_clock_mhz=m.sm_clock_mhz, clock_event_reasons=m.clock_event_reasons))
    ctx_rows, ctx_acc = [], None
    if ctx_caps:
        without = {g: per_copy(run[p.name], copies["whole_model"]) for g, p in pruned.items() if g != _REST}
        rest = per_copy(run[pruned[_REST].name], copies["whole_model"]) if _REST in pruned else None
        failed = {g.name for g in groups if recorder.nodes[g.name] and g.name not in pruned}
        ctx_rows, ctx_acc = context_accounting(per_copy(run[_CTX_GRAPH], copies["whole_model"]), without, rest,
                                               results, {g: p.removed for g, p in pruned.items()}, output_diff,
                                               model_energy_j=wm.energy_per_call_j, failed=failed)
    acc = account(results, wm.energy_per_call_j, wm.gpu_time_per_call_s, kernels_s, inside_s, wm.awake_idle_power_w)
    run_meta = {k: v for k, v in run.to_dict().items() if k != "measurements"}
    shapes = {f"arg{i}": list(getattr(x, "shape", ())) for i, x in enumerate(inputs)}
    shapes.update({k: list(v.shape) for k, v in kw.items() if isinstance(v, torch.Tensor)})
    shapes["dtype"] = str(next(model.parameters()).dtype)
    return ModelReport(model=type(model).__name__, mode=mode, inputs=shapes, groups=results,
                       whole=asdict(wm), accounting=acc, failures=failures, run=run_meta,
                       wall_s=time.monotonic() - t0,
                       settings=dict(cache_len=cache_len if mode == "decode" else None, min_trials=min_trials,
                                     l2=l2, l2_bytes=l2_bytes, whole_model_copies=copies["whole_model"],
                                     target_ci_rel=target_ci_rel, window_s=window_s,
                                     kernel_time_s=kernels_s, component_kernel_time_s=inside_s,
                                     whole_model_eager=whole.eager, whole_model_eager_reason=whole.reason,
                                     in_context=in_context),
                       in_context=ctx_rows, context_accounting=ctx_acc)


_REST = "\0components"  # the key of the model without any component's nodes
_CTX_GRAPH = "whole_model (in-context graph)"

# Note [The in-context graph is its own baseline]
# The graph the components are removed from is captured with every tensor of
# the forward kept alive (Note [Removed kernels leave their outputs]), so its
# activations never share memory: more of them miss L2 than in the model as it
# is normally captured. On an H200, T5-small at 8x128 cost 6.4 % more that way.
# So the model keeps its usual capture for everything else (coverage, glue,
# gaps, shares), and each group's in-context energy is taken against the
# in-context graph measured whole in the same run; ContextAccounting says how
# far that graph's energy is from the model's (layout_rel).


def _recorder(whole_fn, model, groups) -> NodeRecorder:
    """Hooks that note, while the whole model is captured, which graph nodes each group's modules add."""
    models = whole_fn.modules if isinstance(whole_fn, ColdCopies) else [model]
    return NodeRecorder({g.name: [m.get_submodule(q) for m in models for q in g.members] for g in groups})


def _output_diffs(whole, pruned: dict) -> dict:
    """For each pruned graph: the largest |difference| of the model's outputs from a full replay's.

    Note [Removed kernels leave their outputs]: replayed after a full replay, a
    graph without a component computes the model's output from the component's
    last output: the same output, up to kernels that are not bitwise
    deterministic. A difference says the kernels left did other work.
    """
    import torch

    from .graph_capture import _tensors

    def outputs():
        return [t for _, t in _tensors(whole.outputs) if t.is_floating_point()]

    whole.run_once()
    torch.cuda.synchronize(whole.device)
    reference = [t.clone() for t in outputs()]
    diffs = {}
    for key, p in pruned.items():
        replay(p.exec_handle, 1, device=p.device)
        torch.cuda.synchronize(p.device)
        diffs[key] = max((float((a.float() - b.float()).abs().max()) for a, b in zip(outputs(), reference)
                          if a.numel()), default=0.0)
        whole.run_once()  # the next graph starts from a full replay's buffers
    torch.cuda.synchronize(whole.device)
    return diffs


def _graphs_without(whole, recorder: NodeRecorder, groups, failures: list) -> dict:
    """The whole model's graph without each group's nodes, and without every component's (key _REST)."""
    from .graphs import PrunedGraph

    if whole.eager:
        failures.append(("in context", f"the whole model was not captured ({whole.reason}): nothing to remove "
                                       "components from"))
        return {}
    out, every = {}, set()
    for g in groups:
        nodes = recorder.nodes[g.name]
        every |= nodes
        if not nodes:
            continue
        try:
            out[g.name] = PrunedGraph(whole.graph_handle, nodes, name=f"whole_model without {g.name}",
                                      device=whole.device)
        except Exception as exc:  # noqa: BLE001 - named and reported; the others are still measured
            failures.append((f"{g.name} in context", f"{type(exc).__name__}: {exc}"))
    if every:
        try:
            out[_REST] = PrunedGraph(whole.graph_handle, every, name="whole_model without components",
                                     device=whole.device)
        except Exception as exc:  # noqa: BLE001
            failures.append(("in context: the model without components", f"{type(exc).__name__}: {exc}"))
    return out
