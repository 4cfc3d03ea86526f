"""CUDA-graph replay from C++ (Note [Why replay natively] in csrc/replay.hpp).

Handles are integers: ``torch.cuda.CUDAGraph(keep_graph=True)`` gives them as
``raw_cuda_graph()`` and, after ``instantiate()``, ``raw_cuda_graph_exec()``.
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass, field

from ._native import core, require_cuda


def _current_stream_and_device(stream, device) -> tuple[int, int]:
    """Integer stream handle and CUDA device index; PyTorch's current ones by default."""
    try:
        import torch
    except ImportError:
        torch = None
    if device is None:
        device = torch.cuda.current_device() if torch is not None and torch.cuda.is_available() else 0
    if stream is None:
        stream = torch.cuda.current_stream(device).cuda_stream if torch is not None and torch.cuda.is_available() else 0
    elif hasattr(stream, "cuda_stream"):
        stream = stream.cuda_stream
    if not isinstance(stream, int) or stream < 0:
        raise TypeError(f"stream must be a torch.cuda.Stream or an integer cudaStream_t, got {stream!r}")
    return stream, int(device)


@contextlib.contextmanager
def one_stream(device: int | None = None):
    """Runs everything the block launches on CUDA ``device`` (the current one by default) on one new stream: eager
    calls, every capture() and replay, and the launch-latency probe. Enter it before the process's first CUDA work
    (building the model, making its inputs): a process that has launched on the default stream and captured three
    graphs on another replays short kernels ~20 % slower for as long as it lives, one whose every launch went to one
    stream does not (Note [One stream], backend.py). Yields the stream."""
    require_cuda("one_stream()")
    import torch

    device = torch.cuda.current_device() if device is None else int(device)
    stream = torch.cuda.Stream(device)
    with torch.cuda.device(device), torch.cuda.stream(stream):
        yield stream


def capture_stream(device: int):
    """The stream a graph on ``device`` is captured on: the current one where it is not the default stream (as under
    one_stream()), else None, torch.cuda.graph's own (the default stream cannot capture)."""
    import torch

    current = torch.cuda.current_stream(device)
    return None if current == torch.cuda.default_stream(device) else current


@dataclass(frozen=True)
class ReplayResult:
    """One back-to-back run of graph launches."""

    gpu_time_s: float     # CUDA events around all launches
    launches: int         # graph launches issued
    calls: int            # component calls: launches x copies per launch (0: not a component)
    host_start_ns: int    # monotonic time the stream reached the first launch
    host_end_ns: int      # ... and finished the last
    # GPU seconds from the start of the first launch to the end of each launch
    # (replay(stamp_launches=True)); empty where launches were not stamped.
    launch_end_s: tuple = field(default=(), repr=False)

    @property
    def gpu_time_per_call_s(self) -> float:
        return self.gpu_time_s / self.calls

    def window_time_per_call_s(self, start_ns: int, end_ns: int, min_launches: int = 3) -> tuple[float, int]:
        """GPU time per call of the launches that ran inside a host-clock window, and how many there were.

        Note [Time the window's launches] (csrc/replay.hpp): launch ends are placed
        on the host clock from ``host_start_ns``; a launch counts when it began at
        or after ``start_ns`` and ended by ``end_ns``. Where the launches were not
        stamped, or fewer than ``min_launches`` fit, the whole run's time per call
        is returned with a count of 0.
        """
        n = len(self.launch_end_s)
        if n == 0 or self.calls == 0:
            return self.gpu_time_per_call_s, 0
        ends = [self.host_start_ns + round(e * 1e9) for e in self.launch_end_s]
        starts = [self.host_start_ns] + ends[:-1]
        inside = [i for i in range(n) if starts[i] >= start_ns and ends[i] <= end_ns]
        if len(inside) < min_launches:
            return self.gpu_time_per_call_s, 0
        first, last = inside[0], inside[-1]
        span_s = self.launch_end_s[last] - (self.launch_end_s[first - 1] if first > 0 else 0.0)
        calls = len(inside) * (self.calls // self.launches)
        return (span_s / calls if calls else math.nan), len(inside)


class UnrolledGraph:
    """``copies`` copies of a graph, chained as child-graph nodes in one graph.

    One launch of it runs the component ``copies`` times with no launch gap
    between calls. Owns its graph and executable; keep the source graph alive.
    ``graph_handle`` may be a sequence of graphs, the instances of one call: copy i
    is then a copy of entry i mod its length (GpuBackend.prepare gives one entry per
    copy, in blocks); ``instances`` counts the distinct graphs (Note [Graph instances]).
    """

    def __init__(self, graph_handle, copies: int, *, device: int | None = None) -> None:
        require_cuda("UnrolledGraph")
        handles = [graph_handle] if isinstance(graph_handle, int) else list(graph_handle)
        if not handles or not all(isinstance(h, int) and h != 0 for h in handles):
            raise ValueError("graph_handle must be a non-null cudaGraph_t (torch: CUDAGraph(keep_graph=True)"
                             ".raw_cuda_graph()), or a non-empty sequence of them")
        if not isinstance(copies, int) or copies < 1:
            raise ValueError(f"copies must be an integer >= 1, got {copies!r}")
        _, device = _current_stream_and_device(0, device)
        self._native = core.UnrolledGraph(device, handles if len(handles) > 1 else handles[0], copies)
        self.copies = copies
        self.instances = len(set(handles))
        self.device = device

    @property
    def exec_handle(self) -> int:
        return self._native.exec_handle


def replay(graph_exec, launches: int, *, stream=None, device: int | None = None,
           check_every: int = 256, stamp_launches: bool = False) -> ReplayResult:
    """Launches a graph ``launches`` times back-to-back from C++ and waits for it.

    ``graph_exec`` is an integer ``cudaGraphExec_t`` or an :class:`UnrolledGraph`.
    The GIL is released; Ctrl-C is honoured every ``check_every`` launches (the
    launches already queued finish first, then KeyboardInterrupt is raised).
    ``stamp_launches`` times every launch (``ReplayResult.launch_end_s``), for
    the time per call inside a power window; at most 2**20 launches.
    """
    require_cuda("replay()")
    copies, owner = 1, graph_exec  # owner: keeps an UnrolledGraph made for this call alive until it has run
    if isinstance(graph_exec, UnrolledGraph):
        copies, device, graph_exec = graph_exec.copies, graph_exec.device, graph_exec.exec_handle
    if not isinstance(graph_exec, int) or graph_exec == 0:
        raise ValueError("graph_exec must be an UnrolledGraph or a non-null cudaGraphExec_t "
                         "(torch: CUDAGraph.instantiate(), then raw_cuda_graph_exec())")
    if not isinstance(launches, int) or launches < 1:
        raise ValueError(f"launches must be an integer >= 1, got {launches!r}")
    stream, device = _current_stream_and_device(stream, device)
    result = _result(core.replay(device, graph_exec, stream, launches, check_every, stamp_launches), copies)
    del owner
    return result


def calibration_load(duration_s: float, sms: int | None = None, *, stream=None,
                     device: int | None = None) -> ReplayResult:
    """Runs a compute-bound kernel that keeps ``sms`` SMs (all by default) busy for ``duration_s``.

    Blocks until it has run; the result's host stamps say when (monotonic ns).
    """
    require_cuda("calibration_load()")
    stream, device = _current_stream_and_device(stream, device)
    if sms is None:
        sms = core.cuda_device_info(device)["multiprocessors"]
    return _result(core.calibration_load(device, stream, float(duration_s), int(sms)), copies=0)


def awake_idle(duration_s: float, *, stream=None, device: int | None = None) -> ReplayResult:
    """Launches empty kernels back-to-back for ``duration_s``: the GPU awake, doing no work. Blocks."""
    require_cuda("awake_idle()")
    stream, device = _current_stream_and_device(stream, device)
    return _result(core.awake_idle(device, stream, float(duration_s)), copies=0)


def _result(r: dict, copies: int) -> ReplayResult:
    return ReplayResult(gpu_time_s=r["gpu_time_s"], launches=r["launches"], calls=r["launches"] * copies,
                        host_start_ns=r["host_start_ns"], host_end_ns=r["host_end_ns"],
                        launch_end_s=tuple(r.get("launch_end_s", ())))


def capturing_graph_nodes(stream=None) -> frozenset:
    """The nodes (integer handles) of the graph the stream is capturing into, now.

    Called before and after a stretch of capture, the difference is the nodes
    that stretch added (Note [A component in context] in csrc/graph_edit.hpp).
    Raises RuntimeError when the stream is not capturing.
    """
    require_cuda("capturing_graph_nodes()")
    stream, _ = _current_stream_and_device(stream, None)
    return frozenset(core.capturing_graph_nodes(stream))


class PrunedGraph:
    """A copy of a captured graph without the kernel, memset and memcpy nodes among ``remove``, instantiated.

    The removed nodes' predecessors come before their successors instead, so
    everything else runs in the same order (Note [A component in context] in
    csrc/graph_edit.hpp). Quacks like a Capture for measure(): ``name``,
    ``device``, ``graph_handle``, ``exec_handle``, ``eager`` (False).
    """

    eager = False

    def __init__(self, graph_handle: int, remove, *, name: str = "pruned", device: int | None = None) -> None:
        require_cuda("PrunedGraph")
        if not isinstance(graph_handle, int) or graph_handle == 0:
            raise ValueError("graph_handle must be a non-null cudaGraph_t (torch: CUDAGraph(keep_graph=True)"
                             ".raw_cuda_graph())")
        remove = sorted(set(remove))
        if not remove:
            raise ValueError(f"{name}: no nodes to remove; a pruned graph would be the graph itself")
        _, device = _current_stream_and_device(0, device)
        self._native = core.PrunedGraph(device, graph_handle, remove)
        self.name = name
        self.device = device

    @property
    def graph_handle(self) -> int:
        return self._native.graph_handle

    @property
    def exec_handle(self) -> int:
        return self._native.exec_handle

    @property
    def removed(self) -> int:
        return self._native.removed

    @property
    def kept(self) -> int:
        """Nodes asked to be removed that only order work (events, child graphs): kept."""
        return self._native.kept

    @property
    def nodes_left(self) -> int:
        return self._native.nodes_left


def graph_node_kinds(graph_handle: int) -> dict:
    """How many kernel, memset, memcpy and other nodes a graph holds."""
    require_cuda("graph_node_kinds()")
    return dict(zip(("kernel", "memset", "memcpy", "other"), core.graph_node_kinds(graph_handle)))
