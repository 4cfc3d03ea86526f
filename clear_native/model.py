"""measure_model(): from a model and its input to the energy of every component, and a check
that the components add up to the whole model.

The walk, one step each: prepare the inputs (decode: a static KV cache,
hf_compat.py) -> one eager pass that checks the model runs and records the
inputs of every component and enclosing block (components.py) -> one profiled
pass for kernel times (work.py, through the backend) -> a CUDA graph per
component group and per block group, replayed cold (cold_l2.py,
graph_capture.py), and the whole model's -> optionally the model's graph
without each group (context.py) -> measure() over all of them (protocol.py) ->
results and the accounting, by parts and by blocks (results.py, accounting.py,
blocks.py). The backend (backend.py on a GPU, simulated.py in the CPU tests)
is the only thing that touches the device.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import asdict, replace

from . import clock
from .accounting import account_against, context_accounting, regime_mismatch
from .blocks import block_accounting, block_result, outside_blocks
from .cold_l2 import ColdCopies, cold, l2_copies, per_copy
from .components import discover, group_components
from .context import CONTEXT_GRAPH, REST, graphs_without, output_diffs, recorder_for
from .graph_capture import capture
from .hf_compat import accepts, decode_inputs, supports_decode
from .paced import measure_paced, substituted
from .protocol import measure
from .results import GroupResult, ModelReport

MODES = ("prefill", "decode")
L2_MODES = ("cold", "hot")


def _quiet(msg: str) -> None:
    """measure_model's progress where none is asked for."""


def measure_model(model, *inputs, model_kwargs: dict | None = None, mode: str = "prefill", cache_len: int = 512,
                  select=None, backend=None, profile=None, min_trials: int = 5, max_trials: int = 30,
                  target_ci_rel: float = 0.01, window_s: float = 0.5, budget_s: float = 600.0, l2: str = "cold",
                  target_cv: float | None = 0.01, in_context: bool = False, blocks: bool = True, pace="auto",
                  progress=None, between_rounds=None, instances: int = 1, **kw) -> ModelReport:
    """Energy of every component of ``model`` on ``inputs``, and how they add up to the model.

    model_kwargs: the model's own keyword arguments (attention_mask, decoder_input_ids...).
    mode: "prefill" (one forward pass of the inputs) or "decode" (one new token, inputs[0] its ids, after
    ``cache_len`` cached tokens in a static KV cache). select: the components (find_components); None: the rules.
    l2: "cold" replays each component as distinct copies whose parameters overflow the L2 cache, as inside the
    model (Note [Cold L2]); "hot" replays one copy.
    in_context: also measure the model's own graph without each group's kernels, and without every
    component's (Note [A component in context], context.py): one more whole-model measurement a group, and two.
    blocks: also measure each repeated layer that holds components: block = parts + interaction, and the model by
    blocks (Note [Blocks and interaction], blocks.py).
    pace: "auto" measures again, each call followed by an idle gap, the parts at the power limit (or lower clocks)
    alone in a model that runs free, and does the accounting again with them (report.paced: Note [At the model's
    power], paced.py); a list of group names paces those; None, none.
    The rest goes to measure() (every capture together, and each run after). Other keywords: the model's (deprecated).
    """
    kw, t0 = _check(mode, l2, kw, model_kwargs), clock.now_s()
    model.eval()
    inputs, kw = prepare_inputs(model, inputs, kw, mode, cache_len)
    comps, found = discover(model, *inputs, select=select, model_kwargs=kw, blocks=blocks)  # also: does it run?
    groups, block_groups = group_components(comps), group_components(found)
    (progress or _quiet)(f"{len(comps)} components ({len(groups)} groups), {len(found)} blocks ({len(block_groups)})")
    backend = backend or _gpu_backend(model)
    l2_bytes = backend.l2_bytes(model) if l2 == "cold" else 0
    copies, failures = {}, []
    caps = _capture_groups(backend, groups + block_groups, l2_bytes, copies, failures)
    copies["whole_model"] = l2_copies(model, l2_bytes)  # a model that fits the L2 is replayed cold too
    whole_fn = cold(model, copies["whole_model"])
    whole = backend.capture(whole_fn, *inputs, name="whole_model", **kw)
    profiled = _Profiled(backend, model, inputs, kw, graph=not whole.eager)
    ctx = _capture_in_context(backend, whole_fn, model, groups, inputs, kw, failures) if in_context else None
    opts = dict(profile=profile, min_trials=min_trials, max_trials=max_trials, target_ci_rel=target_ci_rel,
                target_cv=target_cv, window_s=window_s, budget_s=budget_s, progress=progress,
                between_rounds=between_rounds, instances=instances)
    run = measure([whole] + caps + (ctx["captures"] if ctx else []), backend=backend, **opts)
    wm = per_copy(run["whole_model"], copies["whole_model"])
    measured = _measured(run, caps, groups + block_groups, copies, wm)
    results = [measured[g.name] for g in groups if g.name in measured]
    ctx_rows, ctx_acc = _context_results(ctx, run, groups, results, copies["whole_model"], wm) if ctx else ([], None)
    kernel_s = profiled(comps)
    acc = account_against(results, wm, kernel_s)
    blocks_, block_acc = _blocks(profiled, block_groups, found, measured, comps, results, wm, ctx_rows)
    paced = _paced(backend, profiled, (comps, found), (groups, block_groups), measured, copies, wm, run,
                   (pace, failures, opts))
    return ModelReport(model=type(model).__name__, mode=mode, inputs=_shapes(model, inputs, kw), groups=results,
                       whole=asdict(wm), accounting=_yardstick(acc, whole), failures=failures,
                       run={k: v for k, v in run.to_dict().items() if k != "measurements"},
                       wall_s=clock.now_s() - t0, in_context=ctx_rows, context_accounting=ctx_acc,
                       blocks=blocks_, block_accounting=_yardstick(block_acc, whole), paced=paced,
                       regime_mismatch=regime_mismatch(results + blocks_, asdict(wm), run.gpu.get("power_limit_w")),
                       settings=dict(cache_len=cache_len if mode == "decode" else None, l2=l2, l2_bytes=l2_bytes,
                                     whole_model_l2_copies=copies["whole_model"], kernel_time_s=kernel_s[0],
                                     component_kernel_time_s=kernel_s[1], whole_model_eager=whole.eager,
                                     whole_model_eager_reason=whole.reason, in_context=in_context, blocks=blocks,
                                     pace=pace, **{k: opts[k] for k in ("min_trials", "target_ci_rel", "window_s")}))


def _yardstick(acc, whole):
    """The accounting, without coverage where the whole model ran as a Python loop (issue 13: not a yardstick
    for its parts; a BLOOM-560m loop once gave 20.9 % and 'explained' 99.9 %, both meaningless)."""
    if acc is None or not whole.eager:
        return acc
    return replace(acc, coverage=math.nan, explained_coverage=math.nan)


def _check(mode: str, l2: str, kw: dict, model_kwargs: dict | None) -> dict:
    """The options checked before anything runs; the model's keyword arguments."""
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    if l2 not in L2_MODES:
        raise ValueError(f"l2 must be one of {L2_MODES}, got {l2!r}")
    if kw:
        warnings.warn(f"measure_model(): pass the model's keyword arguments as model_kwargs={{...}}, not as "
                      f"keywords ({', '.join(sorted(kw))}): a model argument named like an option is lost",
                      DeprecationWarning, stacklevel=3)
    return {**kw, **(model_kwargs or {})}


def prepare_inputs(model, inputs: tuple, kw: dict, mode: str, cache_len: int) -> tuple:
    """The inputs of one measured call: a decode step on a static cache, or the prefill's without a cache."""
    if mode == "decode":
        if not supports_decode(model):
            raise ValueError("decode mode needs a transformers model with a KV cache (past_key_values)")
        return decode_inputs(model, inputs[0], cache_len, kw)
    if accepts(model.forward, "use_cache"):
        kw = {"use_cache": False, **kw}  # prefill: no cache that grows between replays
    return inputs, kw


def _gpu_backend(model):
    """The GPU the model's parameters are on (CUDA device 0 for a model without parameters)."""
    from .backend import GpuBackend

    p = next(model.parameters(), None)
    on_gpu = p is not None and p.device.type == "cuda"
    return GpuBackend((p.device.index or 0) if on_gpu else 0)


def _capture_groups(backend, groups, l2_bytes: int, copies: dict, failures: list) -> list:
    """One capture per group's representative, replayed cold; a group that fails is named in ``failures``."""
    caps = []
    for g in groups:
        rep = g.representative
        n = copies[g.name] = l2_copies(rep.module, l2_bytes)
        try:  # copying (memory) and capturing may fail: named and reported, the others still measured
            caps.append(backend.capture(cold(rep.module, n), *rep.args, name=g.name, **rep.kwargs))
        except Exception as exc:  # noqa: BLE001 - named and reported; the others are still measured
            failures.append((g.name, f"{type(exc).__name__}: {exc}"))
    return caps


def _capture_in_context(backend, whole_fn, model, groups, inputs, kw, failures: list) -> dict | None:
    """A second capture of the whole model (Note [The in-context graph is its own baseline]) and its graphs
    without each group; None (and a line in ``failures``) where that cannot be made."""
    if not backend.in_context:
        failures.append(("in context", f"the {backend.kind} backend has no graph to remove components from"))
        return None
    recorder = recorder_for(whole_fn.modules if isinstance(whole_fn, ColdCopies) else [model], groups)
    try:  # it holds every activation at once: it may not fit where the model does
        with recorder:
            whole_ctx = capture(whole_fn, *inputs, name=CONTEXT_GRAPH, eager_fallback=True, **kw)
        pruned = graphs_without(whole_ctx, recorder, groups, failures)
    except Exception as exc:  # noqa: BLE001 - reported; the model and its components are still measured
        failures.append(("in context", f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"))
        return None
    if not pruned:
        return None
    return {"recorder": recorder, "pruned": pruned, "output_diff": output_diffs(whole_ctx, pruned),
            "captures": [whole_ctx] + list(pruned.values())}


def _measured(run, caps, groups, copies: dict, wm) -> dict:
    """Group name -> GroupResult of each capture measured (per call: divided by its L2 copies)."""
    by_name = {g.name: g for g in groups}
    return {c.name: _group_result(per_copy(run[c.name], copies[c.name]), by_name[c.name], c, copies[c.name], wm)
            for c in caps}


class _Profiled:
    """The profiled eager pass (backend.kernel_times_s) of one measure_model call, once per set of marked
    components: the paced accounting asks again for the blocks' set, which the model by blocks profiled."""

    def __init__(self, backend, model, inputs, kw, graph: bool) -> None:
        self._pass = lambda marked: backend.kernel_times_s(model, marked, inputs, kw, graph=graph)
        self._done: dict = {}

    def __call__(self, marked: list) -> tuple:
        """(all kernels s, kernels inside ``marked`` s, glue ops)."""
        key = frozenset(c.qualname for c in marked)
        if key not in self._done:
            self._done[key] = self._pass(marked)
        return self._done[key]


def _blocks(profiled, block_groups, found, measured: dict, comps, results, wm, ctx_rows=()) -> tuple:
    """BlockResults of the measured block groups, and the model by blocks (Note [Blocks and interaction])."""
    done = [g for g in block_groups if g.name in measured]
    if not done:
        return [], None
    rows = [block_result(g, measured[g.name], comps, results, ctx_rows) for g in done]
    others = outside_blocks(results, done, {c.qualname: c.calls for c in comps})
    marked = [c for c in comps + found if any(c.qualname in g.members for g in others + done)]
    return rows, block_accounting([measured[g.name] for g in done], others, wm, profiled(marked))


def _paced(backend, profiled, parts: tuple, grouped: tuple, measured: dict, copies: dict, wm, run,
           how: tuple) -> dict:
    """Note [At the model's power] (paced.py): {"rows": PacedResults, "accounting", "block_accounting": the
    accounting again with the freed parts' paced energies}, or {} where no part was paced."""
    comps, found = parts
    (groups, block_groups), (pace, failures, opts) = grouped, how
    if wm.eager:
        return {}
    rows = measure_paced(backend, groups + block_groups, measured, copies, asdict(wm), run.gpu.get("power_limit_w"),
                         pace, failures, opts)
    if not rows:
        return {}
    sub = dict(zip(measured, substituted(list(measured.values()), rows)))
    results = [sub[g.name] for g in groups if g.name in sub]
    acc = account_against(results, wm, profiled(comps))
    _, block_acc = _blocks(profiled, block_groups, found, sub, comps, results, wm)
    return {"rows": rows, "accounting": acc, "block_accounting": block_acc}


def _group_result(m, g, cap, n: int, wm) -> GroupResult:
    e = m.energy_per_call_j
    return GroupResult(
        name=g.name, kind=g.kind, members=g.members, occurrences=g.occurrences,
        gpu_time_per_call_s=m.gpu_time_per_call_s, energy_per_call_j=e,
        dynamic_energy_per_call_j=m.dynamic_energy_per_call_j, cv=m.cv, ci95_rel=m.ci95_rel, trials=m.trials,
        flops=g.flops, bytes_min=g.bytes_min, j_per_flop=e / g.flops if g.flops else math.nan,
        share=g.occurrences * e / wm.energy_per_call_j, eager=cap.eager, l2_copies=n,
        trial_energy_per_call_j=m.trial_energy_per_call_j, trial_power_w=m.trial_power_w,
        trial_after=m.trial_after, trial_drift_rel=m.trial_drift_rel, mean_power_w=m.mean_power_w,
        temperature_c=m.temperature_c, sm_clock_mhz=m.sm_clock_mhz, clock_event_reasons=m.clock_event_reasons,
        settle_s=m.settle_s, rejected_trials=len(m.rejected_trials), window_restarts=m.window_restarts,
        failed_trials=m.failed_trials, trial_temperature_c=m.trial_temperature_c, unroll=m.unroll,
        trial_time_per_call_s=m.trial_time_per_call_s, trials_from=m.trials_from, dropped_sets=m.dropped_sets,
        graph_kernels_per_call=m.graph_kernels_per_call, graph_instances=m.graph_instances,
        instance_time_per_call_s=m.instance_time_per_call_s)


def _context_results(ctx: dict, run, groups, results: list, n: int, wm) -> tuple:
    pruned = ctx["pruned"]
    without = {g: per_copy(run[p.name], n) for g, p in pruned.items() if g != REST}
    rest = per_copy(run[pruned[REST].name], n) if REST in pruned else None
    failed = {g.name for g in groups if ctx["recorder"].nodes[g.name] and g.name not in pruned}
    return context_accounting(per_copy(run[CONTEXT_GRAPH], n), without, rest, results,
                              {g: p.removed for g, p in pruned.items()}, ctx["output_diff"],
                              model_energy_j=wm.energy_per_call_j, failed=failed)


def _shapes(model, inputs, kw) -> dict:
    """Shapes of the tensor inputs, and the model's dtype."""
    import torch

    shapes = {f"arg{i}": list(getattr(x, "shape", ())) for i, x in enumerate(inputs)}
    shapes.update({k: list(v.shape) for k, v in kw.items() if isinstance(v, torch.Tensor)})
    p = next(model.parameters(), None)
    shapes["dtype"] = str(p.dtype) if p is not None else "none"
    return shapes
