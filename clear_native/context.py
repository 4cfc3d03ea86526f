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
clocks), positive where it makes the rest dearer. The arithmetic is in
accounting.py; this module makes the graphs.
"""

from __future__ import annotations

from functools import partial

from .graphs import PrunedGraph, capturing_graph_nodes, replay


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


REST = "\0components"  # the key of the model without any component's nodes
CONTEXT_GRAPH = "whole_model (in-context graph)"

# Note [The in-context graph is its own baseline]
# The graph the components are removed from is captured with every tensor of
# the forward kept alive (Note [Removed kernels leave their outputs]), so its
# activations never share memory: more of them miss L2 than in the model as it
# is normally captured. On an H200, T5-small at 8x128 cost 6.4 % more that way.
# So the model keeps its usual capture for everything else (coverage, glue,
# gaps, shares), and each group's in-context energy is taken against the
# in-context graph measured whole in the same run; ContextAccounting says how
# far that graph's energy is from the model's (layout_rel).


def recorder_for(models: list, groups) -> NodeRecorder:
    """Hooks that note, while the whole model (every copy in ``models``) is captured, which graph
    nodes each group's modules add."""
    return NodeRecorder({g.name: [m.get_submodule(q) for m in models for q in g.members] for g in groups})


def output_diffs(whole, pruned: dict) -> dict:
    """For each pruned graph: the largest |difference| of the model's outputs from a full replay's.

    Replayed after a full replay, a graph without a component computes the
    model's output from the component's last output (Note [Removed kernels leave
    their outputs]): the same output, up to kernels that are not bitwise
    deterministic. A difference says the kernels left did other work.
    """
    import torch
    from torch.utils._pytree import tree_leaves

    def outputs():
        return [t for t in tree_leaves(whole.outputs) if isinstance(t, torch.Tensor) and t.is_floating_point()]

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


def graphs_without(whole, recorder: NodeRecorder, groups, failures: list) -> dict:
    """The whole model's graph without each group's nodes, and without every component's (key REST).
    A graph that cannot be made is named in ``failures``; the others are still made."""
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
            out[REST] = PrunedGraph(whole.graph_handle, every, name="whole_model without components",
                                    device=whole.device)
        except Exception as exc:  # noqa: BLE001
            failures.append(("in context: the model without components", f"{type(exc).__name__}: {exc}"))
    return out
