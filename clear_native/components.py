"""Components of a model: find them, record what each one receives, group identical ones.

Rules that work across transformer families pick the outermost module of each
kind (embeddings, self-attention, cross-attention, feed-forward, norm, head);
or the user names the modules (qualified names, types, or a predicate). One
forward pass with hooks records each component's real inputs (positional and
keyword: masks, position embeddings, caches), so it is replayed on exactly what
it sees inside the model. Components that are the same computation share a
signature and are measured once.
"""

from __future__ import annotations

import re
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable

from .errors import ModelInputError
from .work import work_per_call

_CROSS_NAMES = {"encoder_attn", "crossattention", "EncDecAttention", "cross_attn", "cross_attention"}
_MLP_LINEAR_NAMES = {"fc1", "fc2", "ffn", "ffn_output"}
_HEAD_NAMES = {"lm_head", "pooler", "classifier", "cls", "qa_outputs", "score", "head"}


def kind_of(qualname: str, module) -> str | None:
    """The component kind the rules give a module, or None. Outermost matches win (see find_components)."""
    import torch.nn as nn

    cls = type(module).__name__
    last = qualname.rsplit(".", 1)[-1]
    if "Rotary" in cls or cls.endswith("Embeddings") or isinstance(module, nn.Embedding):
        return "embeddings"
    if "Attention" in cls:
        return "cross_attention" if ("Cross" in cls or last in _CROSS_NAMES) else "self_attention"
    if (re.search(r"(MLP|FFN|FeedForward|LayerFF)$", cls) or cls.endswith("Intermediate")
            or (cls.endswith("Output") and not cls.endswith("SelfOutput") and "." in qualname)
            or (isinstance(module, nn.Linear) and last in _MLP_LINEAR_NAMES)):
        return "mlp"
    if isinstance(module, (nn.LayerNorm, nn.GroupNorm)) or re.search(r"(LayerNorm|RMSNorm)$", cls):
        return "norm"
    if (qualname.count(".") == 0 and last in _HEAD_NAMES) or cls.endswith(("Pooler", "Head")):
        return "head"
    return None


@dataclass
class Component:
    """One module of the model chosen as a component, with what it received in the forward pass."""

    qualname: str
    kind: str
    module: Any
    calls: int = 0                  # times it ran in one forward pass
    args: tuple = ()                # its first call's inputs (tensors cloned)
    kwargs: dict = field(default_factory=dict)
    output: Any = None              # its first call's output (tensors cloned)
    signature: tuple = ()


@dataclass
class ComponentGroup:
    """Components that are the same computation: measured once, counted `occurrences` times."""

    name: str                       # the first member's qualified name
    kind: str
    members: list                   # qualified names
    occurrences: int                # calls in one forward pass, summed over members
    representative: Component
    flops: int = 0                  # per call (torch.utils.flop_counter)
    bytes_min: int = 0              # parameters + inputs + outputs of one call


def _select(model, select) -> Callable[[str, Any], str | None]:
    """A function (qualname, module) -> kind or None, from the user's choice or the rules."""
    if select is None:
        return kind_of
    if callable(select) and not isinstance(select, type):
        return lambda q, m: (kind_of(q, m) or "custom") if select(q, m) else None
    items = list(select) if isinstance(select, (list, tuple, set)) else [select]
    names = {s for s in items if isinstance(s, str)}
    types = tuple(s for s in items if isinstance(s, type))
    known = {q for q, _ in model.named_modules()}
    missing = sorted(names - known)
    if missing:
        raise ValueError(f"no module named {missing[0]!r} in the model; names look like "
                         f"{[q for q in known if q][:4]}")
    return lambda q, m: (kind_of(q, m) or "custom") if (q in names or (types and isinstance(m, types))) else None


def _clone(tree):
    """Tensors cloned (detached); caches and other objects kept as they are (a static cache is the same object)."""
    import torch
    from torch.utils._pytree import tree_map

    return tree_map(lambda x: x.detach().clone() if isinstance(x, torch.Tensor) else x, tree)


def _leaf_sig(x):
    import torch

    if isinstance(x, torch.Tensor):
        return ("T", tuple(x.shape), str(x.dtype), tuple(x.stride()), x.device.type)
    if x is None or isinstance(x, (bool, int, float, str)):
        return ("V", x)
    return ("O", type(x).__name__)


def _sig(tree) -> tuple:
    """The structure of nested inputs and what each leaf is (a tensor's shape, dtype, strides)."""
    from torch.utils._pytree import tree_flatten

    leaves, spec = tree_flatten(tree)
    return (str(spec),) + tuple(_leaf_sig(x) for x in leaves)


def signature(module, args, kwargs) -> tuple:
    """What makes two calls the same computation: module class, parameters, inputs' structure."""
    params = tuple((n, tuple(p.shape), str(p.dtype)) for n, p in module.named_parameters())
    return (type(module).__qualname__, params, _sig(tuple(args)), _sig(dict(sorted(kwargs.items()))))


def _choose(model, select) -> "OrderedDict[str, Component]":
    """The chosen modules (outermost wins), before anything runs."""
    choose = _select(model, select)
    chosen: "OrderedDict[str, Component]" = OrderedDict()
    seen_ids = set()
    for q, m in model.named_modules():
        if not q or any(q.startswith(p + ".") for p in chosen):
            continue  # the model itself is not a component; inside a component is not another
        k = choose(q, m)
        if k is not None and id(m) not in seen_ids:
            chosen[q] = Component(q, k, m)
            seen_ids.add(id(m))
    if not chosen:
        raise ValueError("no component found: name the modules with select=[...]")
    return chosen


def repeated_blocks(model, component_names) -> "OrderedDict[str, Component]":
    """The enclosing blocks: members of a repeated stack of layers (an nn.ModuleList of two or more)
    that hold at least one component (decoder and encoder layers, vision blocks), outermost first."""
    import torch.nn as nn

    names = list(component_names)
    blocks: "OrderedDict[str, Component]" = OrderedDict()
    for q, m in model.named_modules():
        if not isinstance(m, nn.ModuleList) or len(m) < 2 or any(q.startswith(b + ".") for b in blocks):
            continue
        for i, child in enumerate(m):
            bq = f"{q}.{i}" if q else str(i)
            if bq not in names and any(n.startswith(bq + ".") for n in names):
                blocks[bq] = Component(bq, "block", child)
    return blocks


def _record(model, comps: list, inputs, kw: dict) -> list:
    """One forward pass that records, for each Component, its calls and its first call's inputs and output."""
    import torch

    def pre(comp):
        def hook(module, args, kwargs):
            comp.calls += 1
            if comp.calls == 1:
                comp.args, comp.kwargs = _clone(tuple(args)), _clone(dict(kwargs))
        return hook

    def post(comp):
        def hook(module, args, kwargs, output):
            if comp.calls == 1 and comp.output is None:
                comp.output = _clone(output)
        return hook

    handles = []
    try:
        for comp in comps:
            handles.append(comp.module.register_forward_pre_hook(pre(comp), with_kwargs=True))
            handles.append(comp.module.register_forward_hook(post(comp), with_kwargs=True))
        with torch.no_grad():
            model(*inputs, **kw)
    except Exception as exc:
        raise ModelInputError(f"{type(model).__name__} does not run on the given inputs: "
                              f"{type(exc).__name__}: {exc}") from exc
    finally:
        for h in handles:
            h.remove()
    out = [c for c in comps if c.calls > 0]
    for c in out:
        c.signature = signature(c.module, c.args, c.kwargs)
    return out


def find_components(model, *inputs, select=None, model_kwargs: dict | None = None, **kw) -> list[Component]:
    """The components of ``model``, with the inputs each received in ``model(*inputs, **model_kwargs, **kw)``.

    ``select``: None for the rules; or qualified names, module types, or a
    predicate ``(qualname, module) -> bool`` choosing modules at any depth. The
    outermost chosen module wins: nothing is counted twice. The forward pass
    runs under ``torch.no_grad()``; a model that does not run on its inputs raises ModelInputError.
    """
    return discover(model, *inputs, select=select, model_kwargs={**kw, **(model_kwargs or {})}, blocks=False)[0]


def discover(model, *inputs, select=None, model_kwargs: dict | None = None, blocks: bool = True) -> tuple:
    """(components, enclosing blocks) from one forward pass; see find_components and repeated_blocks.
    Blocks are the repeated layers that hold components (kind "block"); none when ``blocks`` is False."""
    chosen = _choose(model, select)
    found = repeated_blocks(model, chosen) if blocks else OrderedDict()
    recorded = _record(model, list(chosen.values()) + list(found.values()), inputs, model_kwargs or {})
    return [c for c in recorded if c.kind != "block"], [c for c in recorded if c.kind == "block"]


def group_components(components: Iterable[Component]) -> list[ComponentGroup]:
    """Groups components with equal signatures, in order of first appearance."""
    groups: "OrderedDict[tuple, ComponentGroup]" = OrderedDict()
    for c in components:
        key = (c.kind, c.signature)
        if key in groups:
            g = groups[key]
            g.members.append(c.qualname)
            g.occurrences += c.calls
        else:
            groups[key] = ComponentGroup(c.qualname, c.kind, [c.qualname], c.calls, c)
    for g in groups.values():
        g.flops, g.bytes_min = work_per_call(g.representative)
    return list(groups.values())
