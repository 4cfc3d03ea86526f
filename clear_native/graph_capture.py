"""Capture a callable (an nn.Module or any function of CUDA tensors) into a CUDA graph.

The graph keeps its inputs static: replaying it recomputes the same call on
the same tensors, which is what a repetition-based energy measurement needs.
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass, field
from typing import Any, Callable

from .errors import CaptureError
from .hf_compat import EagerDecisions
from .host_reads import HostConstants, HostReads

__all__ = ["Capture", "CaptureError", "capture"]


def _tensors(tree, root: str):
    """(path, tensor) for every tensor in nested inputs; paths read like ``args[0]`` or ``kwargs['mask']``."""
    import torch
    from torch.utils._pytree import keystr, tree_flatten_with_path

    leaves, _ = tree_flatten_with_path(tree)
    return [(root + keystr(path), x) for path, x in leaves if isinstance(x, torch.Tensor)]


@dataclass
class Capture:
    """A captured call: its CUDA graph (kept, instantiated), and what it closes over."""

    name: str
    fn: Callable
    args: tuple
    kwargs: dict
    device: int
    graph: Any = None                 # torch.cuda.CUDAGraph, None for an eager fallback
    outputs: Any = None               # the static outputs the graph writes
    eager: bool = False               # True: not captured; replays run the callable from Python
    reason: str = ""                  # why it was not captured
    meta: dict = field(default_factory=dict)
    # What the graph reads that its own call did not make: the device tensors of the eager call's replayed host
    # reads, uploads and constants (Note [Host reads replayed]). Held as long as the graph, or their memory would
    # go back to the allocator while the graph still reads it.
    held: Any = field(default=None, repr=False)

    @property
    def graph_handle(self) -> int:
        self._need_graph()
        return self.graph.raw_cuda_graph()

    @property
    def exec_handle(self) -> int:
        self._need_graph()
        return self.graph.raw_cuda_graph_exec()

    def run_once(self) -> None:
        """One call, the way it was captured (graph replay, or eager)."""
        if self.eager:
            self.fn(*self.args, **self.kwargs)
        else:
            self.graph.replay()

    @property
    def graph_kernels(self) -> float:
        """Kernel nodes in its graph: the kernels one call launches (NaN: eager, not captured)."""
        return float(self.meta.get("graph_kernels", math.nan))

    def _need_graph(self) -> None:
        if self.eager:
            raise CaptureError(f"{self.name} runs eagerly (not captured: {self.reason}); it has no graph")


def capture(fn: Callable, *args, name: str | None = None, warmup: int = 3, eager_fallback: bool = False,
            **kwargs) -> Capture:
    """Captures ``fn(*args, **kwargs)`` into a CUDA graph, after ``warmup`` calls on the current stream (never a
    stream of its own: Note [Launch-latency state], backend.py).

    Every tensor argument must already be on one CUDA device. Runs under
    ``torch.no_grad()``. If the call cannot be captured (it synchronises with
    the CPU, has data-dependent shapes, touches CPU tensors...), raises
    CaptureError naming the reason, or with ``eager_fallback=True`` returns an
    eager Capture flagged ``eager=True`` with that reason. Synchronising calls
    are found before any capture starts (Note [Reject before capturing]).
    Data-dependent branches of transformers' masks are taken as in the first,
    eager call (Note [Capture what eager runs]), and so is every value the call
    reads back from the GPU and every host tensor it copies to the GPU (Note
    [Host reads replayed]).
    """
    import torch

    name = name or getattr(fn, "__qualname__", None) or type(fn).__name__
    tensors = _tensors(args, "args") + _tensors(kwargs, "kwargs")
    devices = {t.device for _, t in tensors}
    cpu = [p for p, t in tensors if t.device.type != "cuda"]
    if cpu:
        raise CaptureError(f"cannot capture {name}: {', '.join(cpu)} is not on a CUDA device; move inputs with .cuda()")
    if len(devices) > 1:
        raise CaptureError(f"cannot capture {name}: inputs are on several devices {sorted(map(str, devices))}")
    if not torch.cuda.is_available():
        raise CaptureError(f"cannot capture {name}: PyTorch sees no CUDA device")
    device = next(iter(devices)).index if devices else torch.cuda.current_device()
    cap = Capture(name=name, fn=fn, args=args, kwargs=kwargs, device=device)

    with torch.cuda.device(device), torch.no_grad():
        replay, reference, reason = _record(torch, cap, warmup)
        error = None
        if not reason:
            reason, error = _capture_graph(torch, cap, replay, reference)
        if not reason:
            return cap
        if not eager_fallback:
            raise CaptureError(f"cannot capture {name} into a CUDA graph: {reason}; pass "
                               "eager_fallback=True to measure it eagerly (flagged)") from error
        cap.eager, cap.reason = True, reason
        return cap


def _record(torch, cap: Capture, warmup: int) -> tuple:
    """One eager call recorded (its outputs and what it read from the host), then ``warmup - 1`` calls replaying
    it under CUDA's sync debug mode, all on the caller's current stream: (replay, reference outputs, why it
    synchronised or ""). Not on a side stream, as PyTorch's examples warm up: eager kernels on two streams of one
    process put the card in its slow launch state (Note [Launch-latency state], backend.py); the capture itself
    runs on torch.cuda.graph's own stream, which launches nothing eagerly. Inside TorchScript too, the dispatch
    mode sees every upload of every call (probed on an H200), optimised plan or not: DeBERTa-v3's failed because a
    decision's own read stood first in the record (Note [Reads inside a decision])."""
    replay = _Replay()
    with replay.recording():
        reference = _kept_outputs(cap.fn(*cap.args, **cap.kwargs))  # may synchronise once (lazy initialisation)
    reason = _synchronises(torch, cap.fn, cap.args, cap.kwargs, max(1, warmup - 1), replay)
    torch.cuda.synchronize(cap.device)
    return replay, reference, reason


class _Replay:
    """Both replays a capture needs: transformers' decisions (Note [Capture what eager runs]) and host
    reads (Note [Host reads replayed])."""

    def __init__(self, device_type: str = "cuda") -> None:
        self.decisions = EagerDecisions()
        self.reads, self.constants = HostReads(device_type), HostConstants(device_type)
        # Note [Reads inside a decision]: a decision replays whole, so the host reads it made when it ran are not
        # the forward's; recorded, they stood first in the record, and every later read of the forward was
        # compared with them (DeBERTa-v3 on an H200: the padding check's read, then an upload: a mismatch, and
        # the upload synchronised). Two reads of one kind would have been answered with each other's values.
        self.reads.skip = lambda: self.decisions.depth > 0

    @contextlib.contextmanager
    def recording(self):
        with self.decisions.recording(), self.reads.recording(), self.constants.recording():
            yield

    @contextlib.contextmanager
    def replaying(self):
        with self.decisions.replaying(), self.reads.replaying(), self.constants.replaying():
            yield


def _kept_outputs(out) -> list:
    import torch
    from torch.utils._pytree import tree_leaves

    return [t.detach().clone() for t in tree_leaves(out) if isinstance(t, torch.Tensor) and t.is_floating_point()]


def _capture_graph(torch, cap: Capture, replay: _Replay, reference: list) -> tuple:
    """Captures and instantiates cap's graph; ("", None) or (why it failed, the exception)."""
    import warnings

    from .graphs import capture_stream

    graph = torch.cuda.CUDAGraph(keep_graph=True)
    try:
        with replay.replaying(), warnings.catch_warnings():
            # An empty graph is refused below with a reason; PyTorch's warning about it would only repeat it.
            warnings.filterwarnings("ignore", message="The CUDA Graph is empty")
            with torch.cuda.graph(graph, stream=capture_stream(cap.device), capture_error_mode="thread_local"):
                cap.outputs = cap.fn(*cap.args, **cap.kwargs)
        graph.instantiate()
    except Exception as exc:  # noqa: BLE001 - any capture failure is reported with its reason
        torch.cuda.synchronize(cap.device)
        return f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}", exc
    from .graphs import graph_node_kinds

    kinds = graph_node_kinds(graph.raw_cuda_graph())
    if kinds["kernel"] + kinds["memset"] + kinds["memcpy"] == 0:
        return (f"the graph holds no kernel: all it did was {len(replay.reads.recorded)} host read(s), replayed "
                "(Note [Host reads replayed]); there is nothing on the GPU to measure"), None
    cap.graph, cap.held = graph, replay
    cap.meta.update(graph_kernels=kinds["kernel"])  # what the slow launch state costs it: Note [Launch-latency state]
    cap.meta.update(eager_decisions=len(replay.decisions.recorded), decision_mismatches=replay.decisions.mismatches,
                    host_reads=len(replay.reads.recorded), host_read_mismatches=replay.reads.mismatches,
                    host_constants=len(replay.constants.recorded))
    if replay.reads.recorded or replay.constants.recorded:  # Note [Host reads replayed]: trust the graph once it computes what eager did
        graph.replay()
        torch.cuda.synchronize(cap.device)
        diff = max((float((a.float() - b.float()).abs().max()) for a, b in zip(_kept_outputs(cap.outputs), reference)
                    if a.shape == b.shape and a.numel()), default=0.0)
        scale = max((float(b.float().abs().max()) for b in reference if b.numel()), default=1.0) or 1.0
        cap.meta["output_max_abs_diff"] = diff
        if not diff <= _tolerance(torch, reference) * scale:
            cap.graph = cap.held = None
            return (f"the graph with {len(replay.reads.recorded)} host reads replayed computes another output "
                    f"than the eager call (max |difference| {diff:.3g}, output scale {scale:.3g})"), None
    return "", None


def _tolerance(torch, reference: list) -> float:
    """How far, relative to the output's largest value, a graph with host reads replayed may compute another output
    than the eager call: 1e-3, or two roundings of the output's dtype where that is coarser.

    Note [Two roundings]: the graph runs the eager call's kernels, but not always with the same rounding: OPT-125m's
    decode step in bf16 (two host reads replayed) came out of its graph 0.0156 from eager at an output scale of 2.52
    on an H200 (2026-11-27), one bf16 rounding at that magnitude (2**-7 * 2), and was refused, so it ran as a Python
    loop at 9 % CV. A replayed read that took another branch or shape moves the output by far more than two
    roundings (a wrong mask or position: of the order of the output itself)."""
    eps = max((torch.finfo(b.dtype).eps for b in reference if b.is_floating_point()), default=0.0)
    return max(1e-3, 2 * eps)


def _synchronises(torch, fn, args, kwargs, calls: int, replay: _Replay) -> str:
    """Runs ``fn`` with CUDA's sync debug mode set to "error"; returns why it synchronised, or "".

    Note [Reject before capturing]: a capture that fails half-way leaves
    PyTorch's CUDA RNG state unusable in this process ("Offset increment
    outside graph capture"). A call that synchronises with the CPU (.item(),
    nonzero(), data-dependent shapes) cannot be captured, and this finds it
    without starting a capture.
    """
    import warnings

    previous = torch.cuda.get_sync_debug_mode()
    try:
        with warnings.catch_warnings():  # "a prototype feature": known, and not the user's concern
            warnings.filterwarnings("ignore", message="Synchronization debug mode is a prototype")
            torch.cuda.set_sync_debug_mode("error")
        for _ in range(calls):
            with replay.replaying():
                fn(*args, **kwargs)
    except RuntimeError as exc:
        return f"it synchronises the GPU with the CPU ({_what(exc)}){_where(exc)}"
    finally:
        torch.cuda.set_sync_debug_mode(previous)
    return ""


def _what(exc) -> str:
    """The line of the error that says what synchronised: TorchScript's interpreter puts its own line first
    ("The following operation failed in the TorchScript interpreter", DeBERTa-v3 on an H200) and CUDA's below."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()] or [type(exc).__name__]
    return next((line for line in lines if "synchroniz" in line.lower()), lines[0])


def _where(exc) -> str:
    """' at file:line (function)' of the innermost frame outside the torch and clear_native packages, or ''.

    By the packages' own folders, not by a "/torch/" in the path: a Python installed under /opt/torch/ has every
    frame's path, the user's model's included, under such a folder (seen on the GPU hosts)."""
    import os
    import traceback

    import torch

    own = tuple(os.path.dirname(os.path.abspath(f)) + os.sep for f in (torch.__file__, __file__))
    frames = [f for f in traceback.extract_tb(exc.__traceback__) if not os.path.abspath(f.filename).startswith(own)]
    return f" at {frames[-1].filename}:{frames[-1].lineno} ({frames[-1].name})" if frames else ""
