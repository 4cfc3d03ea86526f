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

KINDS = ("embeddings", "self_attention", "cross_attention", "mlp", "norm", "head", "custom")

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


def _clone(x):
    import torch

    if isinstance(x, torch.Tensor):
        return x.detach().clone()
    if isinstance(x, tuple):
        return tuple(_clone(v) for v in x)
    if isinstance(x, list):
        return [_clone(v) for v in x]
    if isinstance(x, dict):
        return {k: _clone(v) for k, v in x.items()}
    return x  # caches and other objects are kept as they are (a static cache is the same object)


def _sig(x):
    import torch

    if isinstance(x, torch.Tensor):
        return ("T", tuple(x.shape), str(x.dtype), tuple(x.stride()), x.device.type)
    if isinstance(x, (tuple, list)):
        return (type(x).__name__,) + tuple(_sig(v) for v in x)
    if isinstance(x, dict):
        return ("dict",) + tuple((k, _sig(v)) for k, v in sorted(x.items()))
    if x is None or isinstance(x, (bool, int, float, str)):
        return ("V", x)
    return ("O", type(x).__name__)


def signature(module, args, kwargs) -> tuple:
    """What makes two calls the same computation: module class, parameters, inputs' structure."""
    params = tuple((n, tuple(p.shape), str(p.dtype)) for n, p in module.named_parameters())
    return (type(module).__qualname__, params, _sig(tuple(args)), _sig(dict(kwargs)))


def find_components(model, *inputs, select=None, **kw) -> list[Component]:
    """The components of ``model``, with the inputs each received in ``model(*inputs, **kw)``.

    ``select``: None for the rules; or qualified names, module types, or a
    predicate ``(qualname, module) -> bool`` choosing modules at any depth. The
    outermost chosen module wins: nothing is counted twice. The forward pass
    runs under ``torch.no_grad()``.
    """
    import torch

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
        for comp in chosen.values():
            handles.append(comp.module.register_forward_pre_hook(pre(comp), with_kwargs=True))
            handles.append(comp.module.register_forward_hook(post(comp), with_kwargs=True))
        with torch.no_grad():
            model(*inputs, **kw)
    finally:
        for h in handles:
            h.remove()
    out = [c for c in chosen.values() if c.calls > 0]
    for c in out:
        c.signature = signature(c.module, c.args, c.kwargs)
    return out


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


def _register_cpu_sdpa_flops() -> None:
    """PyTorch's flop counter has no formula for the CPU flash-attention kernel; give it SDPA's."""
    import torch
    from torch.utils import flop_counter as fc

    op = getattr(torch.ops.aten, "_scaled_dot_product_flash_attention_for_cpu", None)
    if op is None or op in fc.flop_registry:
        return

    @fc.register_flop_formula(op)
    def _cpu_sdpa_flop(query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs):
        return fc.sdpa_flop_count(query_shape, key_shape, value_shape)


def _tensor_bytes(x, seen: set) -> int:
    import torch
    from torch._subclasses.fake_tensor import is_fake

    if isinstance(x, torch.Tensor):
        if is_fake(x):  # a dry run's fake tensors have no data pointer: count each tensor once
            key = ("fake", id(x))
        else:
            key = (x.untyped_storage().data_ptr(), x.storage_offset(), tuple(x.shape))
        if key in seen:
            return 0
        seen.add(key)
        return x.numel() * x.element_size()
    if isinstance(x, (tuple, list)):
        return sum(_tensor_bytes(v, seen) for v in x)
    if isinstance(x, dict):
        return sum(_tensor_bytes(v, seen) for v in x.values())
    if hasattr(x, "to_tuple"):  # transformers' ModelOutput
        return _tensor_bytes(x.to_tuple(), seen)
    return 0


def work_per_call(comp: Component) -> tuple[int, int]:
    """(FLOPs, bytes a call must move at least: parameters + inputs + outputs) of one call."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    _register_cpu_sdpa_flops()
    try:
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            output = comp.module(*comp.args, **comp.kwargs)
    except AssertionError:
        # PyTorch's SDPA formula rejects grouped-query shapes (fewer K/V heads than Q heads,
        # seen with Llama on CUDA). The same attention in transformers' eager form is plain matmuls.
        # The attention may be the component or inside it (a whole decoder layer): every config below.
        configs = {id(c): c for m in comp.module.modules()
                   if hasattr(c := getattr(m, "config", None), "_attn_implementation")}
        if not configs:
            raise
        saved = {k: c._attn_implementation for k, c in configs.items()}
        try:
            for c in configs.values():
                c._attn_implementation = "eager"
            with torch.no_grad(), FlopCounterMode(display=False) as counter:
                output = comp.module(*comp.args, **comp.kwargs)
        finally:
            for k, c in configs.items():
                c._attn_implementation = saved[k]
    seen: set = set()
    params = sum(p.numel() * p.element_size() for p in comp.module.parameters())
    return int(counter.get_total_flops()), int(params + _tensor_bytes((comp.args, comp.kwargs), seen)
                                               + _tensor_bytes(output, seen))
