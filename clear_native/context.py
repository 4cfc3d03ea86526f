"""Components in context: what each component costs inside the model's own graph.

Note [A component in context] (csrc/graph_edit.hpp) says why: a component
replayed alone runs at the power state it puts the GPU in by itself, not at the
one the whole forward pass sets. While the whole model is captured, a
NodeRecorder notes which graph nodes every component's forward adds; the model's
graph is then replayed without a group's nodes (graphs.PrunedGraph), and

    in-context energy of a group = model energy - energy of the model without it,

measured in the same run as everything else. The model without any component
is what glue and gaps really cost (measured, not estimated), and

    interaction = model - sum(in-context energies) - the model without components

is what the parts' costs do not add up to: negative where removing a part
also makes the rest cheaper (each marginal then overstates its part: Llama-3.2-1B
at 8x128 on an H200, at its power limit, where a denser rest runs at lower
clocks), positive where it makes the rest dearer.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import partial

from .graphs import capturing_graph_nodes


class NodeRecorder:
    """Records, while a callable is captured into a CUDA graph, which nodes each named set of modules adds.

    ``modules`` maps a name to the modules that count for it (every occurrence,
    every copy). Use as a context manager around the capture; outside a capture
    (warm-up calls) the hooks do nothing. ``nodes[name]`` is the set of node
    handles of the captured graph; ``calls[name]`` how many forwards added them.

    Note [Removed kernels leave their outputs]: while capturing, the recorder
    holds every tensor any operation returns, so the allocator never hands one
    tensor's memory to another within the forward: every buffer of the graph
    is written by the kernels that make its one tensor. A graph without a
    module's kernels then leaves the module's outputs as the last full replay
    wrote them, and what reads them computes what it computes in the model: the
    same work on the same data (measure_model checks it on the model's output).
    With the memory reused as usual, an output's block held the bytes of an
    earlier temporary once the kernels that overwrote it were gone (NaN, 1e38):
    on an H200, Llama-3.2-1B's attention then "cost" 2.1x its isolated energy in
    context and its norms 4.8x, because the GEMMs downstream ran on garbage.
    Holding only the modules' outputs was not enough: a temporary freed before
    an output was allocated could still share its block.
    """

    def __init__(self, modules: dict) -> None:
        self.modules = {name: list(mods) for name, mods in modules.items()}
        self.nodes = {name: set() for name in self.modules}
        self.calls = {name: 0 for name in self.modules}
        self.kept: list = []             # every tensor made while capturing: Note [Removed kernels leave their outputs]
        self._stack: list = []
        self._handles: list = []
        self._keep = None

    def __enter__(self) -> "NodeRecorder":
        for name, mods in self.modules.items():
            for m in mods:
                self._handles.append(m.register_forward_pre_hook(partial(self._pre, name)))
                self._handles.append(m.register_forward_hook(partial(self._post, name)))
        self._keep = _keep_alive(self.kept)
        if self._keep is not None:
            self._keep.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        if self._keep is not None:
            self._keep.__exit__(None, None, None)
            self._keep = None
        for h in self._handles:
            h.remove()
        self._handles.clear()
        self._stack.clear()

    def _pre(self, name, module, args) -> None:
        if _capturing():
            self._stack.append((name, id(module), capturing_graph_nodes()))

    def _post(self, name, module, args, output) -> None:
        if not self._stack or self._stack[-1][:2] != (name, id(module)):
            return  # its pre-hook ran outside the capture
        _, _, before = self._stack.pop()
        self.nodes[name] |= capturing_graph_nodes() - before
        self.calls[name] += 1


def _capturing() -> bool:
    import torch

    return torch.cuda.is_available() and torch.cuda.is_current_stream_capturing()


def _keep_alive(into: list):
    """A dispatch mode that appends every tensor an operation returns during a capture to ``into``
    (Note [Removed kernels leave their outputs]); None where PyTorch has no CUDA."""
    import torch
    from torch.utils._python_dispatch import TorchDispatchMode
    from torch.utils._pytree import tree_leaves

    if not torch.cuda.is_available():
        return None

    class KeepAlive(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            out = func(*args, **(kwargs or {}))
            if _capturing():
                into.extend(t for t in tree_leaves(out) if isinstance(t, torch.Tensor))
            return out

    return KeepAlive()


@dataclass
class InContext:
    """One component group's cost inside the model: the model minus the model without the group."""

    name: str
    occurrences: int
    removed_nodes: int               # graph nodes its calls added (all occurrences, all copies)
    energy_per_call_j: float         # (model - model without it) / occurrences
    energy_per_call_ci95_j: float    # 95 % CI half-width of that difference (both means' CIs combined)
    gpu_time_per_call_s: float       # (model time - time without it) / occurrences
    isolated_ratio: float            # in-context / isolated energy per call
    share: float                     # occurrences x energy per call / model energy
    without_power_w: float           # mean power of the model without it
    output_max_abs_diff: float = math.nan  # the model's output without it vs with it (0: the same work)

    @property
    def mean_power_w(self) -> float:
        t = self.gpu_time_per_call_s
        return self.energy_per_call_j / t if t > 0 else math.nan


@dataclass
class ContextAccounting:
    """The model's energy per forward pass, from its own graph with parts removed."""

    model_energy_j: float            # the in-context graph, whole (Note [The in-context graph is its own baseline])
    components_energy_j: float       # sum of the groups' in-context energies
    rest_energy_j: float             # the model without any component: glue and gaps, measured (NaN if not)
    rest_time_s: float
    interaction_energy_j: float      # model - components - rest
    coverage: float                  # components / model
    explained_coverage: float        # (components + rest) / model
    layout_rel: float = math.nan     # (this graph's energy - the model's usual capture's) / the latter


def context_accounting(whole, without: dict, rest, groups: list,
                       removed: dict | None = None, output_diff: dict | None = None,
                       model_energy_j: float | None = None, failed=()) -> tuple[list, ContextAccounting]:
    """In-context energies of ``groups`` (their isolated GroupResults, or anything with name,
    occurrences, energy_per_call_j) from Measurements, all per forward pass (already divided
    by copies): ``whole`` the model, ``without[name]`` the model without that group's nodes
    (absent: the group added no node, its in-context energy is 0), ``rest`` the model without
    any component's nodes (None if not measured). ``removed[name]``: how many nodes went;
    ``output_diff[name]``: how far the model's output moved without them. ``model_energy_j``:
    the model as usually captured, when ``whole`` is a graph laid out differently. ``failed``:
    groups whose graph without them could not be made (NaN, not 0, and in no sum).
    """
    removed, output_diff = removed or {}, output_diff or {}
    rows = []
    e_model = whole.energy_per_call_j
    for g in groups:
        m = without.get(g.name)
        n = g.occurrences
        if g.name in failed:
            nan = math.nan
            rows.append(InContext(g.name, n, 0, nan, nan, nan, nan, nan, nan))
            continue
        if m is None:
            rows.append(InContext(g.name, n, 0, 0.0, 0.0, 0.0, 0.0, 0.0, whole.mean_power_w))
            continue
        e = (e_model - m.energy_per_call_j) / n
        ci = math.hypot(whole.energy_per_call_ci95_j, m.energy_per_call_ci95_j) / n
        t = (whole.gpu_time_per_call_s - m.gpu_time_per_call_s) / n
        iso = g.energy_per_call_j
        rows.append(InContext(g.name, n, removed.get(g.name, 0), e, ci, t,
                              e / iso if iso else math.nan, n * e / e_model, m.mean_power_w,
                              output_diff.get(g.name, math.nan)))
    comp = sum(r.occurrences * r.energy_per_call_j for r in rows if r.name not in failed)
    rest_e = rest.energy_per_call_j if rest is not None else math.nan
    rest_t = rest.gpu_time_per_call_s if rest is not None else math.nan
    layout = (e_model / model_energy_j - 1) if model_energy_j else math.nan
    acc = ContextAccounting(e_model, comp, rest_e, rest_t, e_model - comp - rest_e, comp / e_model,
                            (comp + rest_e) / e_model, layout)
    return rows, acc
