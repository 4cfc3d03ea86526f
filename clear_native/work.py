"""The work of one call: FLOPs and bytes of a component, and the kernel time of a forward pass.

FLOPs come from PyTorch's flop counter on the component's recorded inputs;
bytes are the least a call must move (parameters + inputs + outputs, each
tensor once); kernel times come from the profiler over one warm eager forward
pass, with each component's calls marked, so the kernels outside every
component (the glue) can be told apart.
"""

from __future__ import annotations


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


def tensor_bytes(tree) -> int:
    """Bytes of the distinct tensors in a nested structure (a tensor seen twice counts once)."""
    import torch
    from torch._subclasses.fake_tensor import is_fake
    from torch.utils._pytree import tree_leaves

    seen, total = set(), 0
    for x in tree_leaves(tree):
        if hasattr(x, "to_tuple") and not isinstance(x, torch.Tensor):  # a ModelOutput pytree does not know
            total += tensor_bytes(x.to_tuple())
            continue
        if not isinstance(x, torch.Tensor):
            continue
        # A dry run's fake tensors have no data pointer: count each tensor object once.
        key = ("fake", id(x)) if is_fake(x) else (x.untyped_storage().data_ptr(), x.storage_offset(), tuple(x.shape))
        if key not in seen:
            seen.add(key)
            total += x.numel() * x.element_size()
    return total


def _count_flops(module, args, kwargs):
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        output = module(*args, **kwargs)
    return int(counter.get_total_flops()), output


def work_per_call(comp) -> tuple[int, int]:
    """(FLOPs, bytes a call must move at least: parameters + inputs + outputs) of one call of a Component."""
    _register_cpu_sdpa_flops()
    try:
        flops, output = _count_flops(comp.module, comp.args, comp.kwargs)
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
            flops, output = _count_flops(comp.module, comp.args, comp.kwargs)
        finally:
            for k, c in configs.items():
                c._attn_implementation = saved[k]
    params = sum(p.numel() * p.element_size() for p in comp.module.parameters())
    return flops, int(params + tensor_bytes(((comp.args, comp.kwargs), output)))


def profiled_events(fn, calls: int = 1, warmup: int = 0):
    """The profiler's events (CPU and CUDA) of ``calls`` calls of ``fn()`` after ``warmup`` unprofiled ones."""
    import torch
    from torch.profiler import ProfilerActivity, profile

    with torch.no_grad():
        for _ in range(warmup):
            fn()
        torch.cuda.synchronize()
        # acc_events: one cycle either way; without it torch 2.11 warns that it clears events.
        with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA], acc_events=True) as prof:
            for _ in range(calls):
                fn()
            torch.cuda.synchronize()
    return prof.events()


def kernel_profile(fn, calls: int = 50, warmup: int = 5) -> tuple:
    """(kernels launched per call, µs per call by kernel name) of ``fn()``."""
    from collections import Counter

    from torch.autograd import DeviceType

    by_name: Counter = Counter()
    count = 0
    for e in profiled_events(fn, calls, warmup):
        if e.device_type == DeviceType.CUDA:
            by_name[e.name] += e.time_range.elapsed_us() / calls
            count += 1
    return count / calls, by_name


def _depth(e) -> int:
    n, p = 0, e.cpu_parent
    while p is not None:
        n, p = n + 1, p.cpu_parent
    return n


def launching_ops(events) -> list:
    """The CPU events that launched the profiled kernels, one per launch (correlation id), with its kernels.

    Note [Profiler overhead claims kernels]: the profiler's own overhead records (CUPTI's "Activity Buffer
    Request", "Lazy Function Loading") inherit the correlation id of the op they happen in, and torch then gives
    them that op's kernels too (pytorch/pytorch#193924). Seen on an H200 with torch 2.11: a Linear between an add
    and a mul listed "Activity Buffer Request" with the add's 1.25 µs kernel. A range's device_time_total sums
    its children's, so such a record counted its op's kernels twice. Of the events that claim one id's kernels
    this keeps the outermost (the op the overhead happened in; the first where two are level). A ``cn::`` range
    is one too where a call that is no op (torch.cuda._sleep) launched a kernel in it."""
    from torch.autograd import DeviceType

    chosen: dict = {}
    for i, e in enumerate(events):
        if e.device_type != DeviceType.CPU or not _kernels_us(e):
            continue
        key = (_depth(e), i)
        if e.id not in chosen or key < chosen[e.id][0]:
            chosen[e.id] = (key, e)
    return [e for _, e in chosen.values()]


def _kernels_us(e) -> float:
    """µs of the kernels the profiler gave ``e`` (a range's own GPU span, named as the range, is none)."""
    return sum(k.duration for k in e.kernels if not k.name.startswith(RANGES))


# Note [What the graph does not run]
# ~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~
# The kernel times come from an eager pass, but the model is measured as a graph, and a graph leaves out two
# kinds of eager work: a host read (.item(), bool(t): aten::_local_scalar_dense, a device-to-host copy) is
# replayed there as the value read (Note [Host reads replayed]), and a decision (hf_compat.DECISIONS:
# transformers' mask and padding checks) is not run but its result returned. Counted, their kernels were glue the
# graph does not have, taken at the parts' mean power: on an H200 among the largest glue ops of Mistral-7B-2L's and
# OPT-125m's prefill were such a read (2.5-3.3 µs) beside the mask's cumsum and copies. With ``graph`` they
# are left out of every sum; a model measured eagerly (its capture failed) runs them and keeps them.
HOST_READ_OPS = frozenset({"aten::_local_scalar_dense"})
EAGER_ONLY = "cn-eager::"   # the range of a decision (hf_compat.EagerDecisions.marking)
RANGES = ("cn::", EAGER_ONLY)


def _under(e, is_it) -> bool:
    """Whether ``e`` or an event it ran inside (its CPU parents) ``is_it``."""
    while e is not None and not is_it(e.name):
        e = e.cpu_parent
    return e is not None


def _not_in_graph(e) -> bool:
    """Whether ``e``'s kernels are eager-only work (Note [What the graph does not run])."""
    return _under(e, lambda name: name in HOST_READ_OPS or name.startswith(EAGER_ONLY))


def _in_a_range(e) -> bool:
    """Whether ``e`` is or ran inside a ``cn::`` range (a component's call)."""
    return _under(e, lambda name: name.startswith("cn::"))


def split_kernels(events, top: int = 8, graph: bool = True) -> tuple[float, float, list]:
    """(µs of all kernels, µs of those launched inside a ``cn::`` range, glue_ops) of the profiler's events;
    glue_ops: (op, µs) of the kernels that ops outside every range launched, summed by op, largest first (what
    the accounting calls glue). A kernel is the CPU op's that launched it, counted once (launching_ops). With
    ``graph`` (the model is measured as a graph), eager-only work is left out (Note [What the graph does not
    run])."""
    from collections import Counter

    from torch.autograd import DeviceType

    total = sum(e.time_range.elapsed_us() for e in events
                if e.device_type == DeviceType.CUDA and not e.name.startswith(RANGES))
    inside, out = 0.0, Counter()
    for e in launching_ops(events):
        us = _kernels_us(e)
        if graph and _not_in_graph(e):
            total -= us
        elif _in_a_range(e):
            inside += us
        else:
            out[e.name] += us
    return total, inside, [(name, round(us, 3)) for name, us in out.most_common(top)]


def kernel_times_s(model, components, inputs, kw, graph: bool = True) -> tuple[float, float, list]:
    """(all kernels, kernels launched inside components, glue_ops) of one eager forward pass, from the profiler;
    ``graph``: the model is measured as a graph (Note [What the graph does not run]).

    The model must have run once already (find_components' pass): this pass is warm.
    """
    from torch.profiler import record_function

    from .hf_compat import EagerDecisions

    stack, handles = [], []
    for c in components:
        def pre(module, args, name=f"cn::{c.qualname}"):
            stack.append(record_function(name))
            stack[-1].__enter__()

        def post(module, args, output):
            stack.pop().__exit__(None, None, None)

        handles += [c.module.register_forward_pre_hook(pre), c.module.register_forward_hook(post)]
    try:
        with EagerDecisions().marking():
            events = profiled_events(lambda: model(*inputs, **kw))
    finally:
        for h in handles:
            h.remove()
    kernels, inside, glue = split_kernels(events, graph=graph)
    return kernels * 1e-6, inside * 1e-6, glue
