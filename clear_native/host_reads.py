"""Replaying what a forward pass reads back from the GPU, so that it can be captured.

Note [Host reads replayed]: a forward that reads a device value on the host
(``.item()``, ``bool(t)``, ``if mask.any():``, ``.tolist()``, ``.cpu()``,
``nonzero()`` and other ops whose output shape depends on data) synchronises
the GPU with the CPU, which a CUDA graph cannot hold: capture() used to fall
back to a Python loop for it (BLOOM-560m: 25 % CV). Its inputs are fixed for a
repetition-based measurement, so every such read returns, in every call, what
it returned in the first eager call. One eager call records each read in
order (a TorchDispatchMode under the op), and the synchronisation pre-check and
the capture replay them: the op is not run, its recorded result is returned
(a Python number, a CPU tensor, or a device tensor kept from the eager call).
The graph then holds the eager forward's kernels minus those of the replayed
ops, with the branches and shapes the eager forward took. capture() replays
the graph once and compares its output with the eager call's before it trusts
it (Capture.meta: host_reads, output_max_abs_diff).

The other way round, a tensor made on the device from host data inside the
forward (``torch.tensor(0.0, device=mask.device)``, as transformers' eager
attention mask does: seen on an H200 with BLOOM) is a copy the GPU must wait
for; it happens before any dispatch mode sees an op. HostConstants records
what ``torch.tensor`` and ``torch.as_tensor`` made on the device in the eager
call and hands the same tensors back, in order, in later calls: constants of
the graph, made once. A host tensor copied to the device later
(``torch.tensor(mid - 1).type_as(relative_pos)``, DeBERTa-v2's position
buckets; ``device_tensor.copy_(host_tensor)``) is an upload: HostReads records
it with its host data, and replays the device tensor it made wherever the same
host data is uploaded again in that place (other host data: the copy runs, and
capture says why it fails).
"""

from __future__ import annotations

import contextlib

# Ops whose result the host must wait for, whatever their device arguments (on a CUDA tensor).
_DATA_DEPENDENT = {"_local_scalar_dense", "nonzero", "nonzero_static", "equal", "is_nonzero", "masked_select",
                   "_unique", "_unique2", "unique_dim", "unique_consecutive", "unique_dim_consecutive",
                   "repeat_interleave"}


def reads_host(func, args, kwargs, device_type: str = "cuda") -> bool:
    """Whether an ATen op makes the host wait for data on the device (a device of ``device_type``)."""
    import torch

    def on_device(x) -> bool:
        return isinstance(x, torch.Tensor) and x.device.type == device_type

    name = func.overloadpacket.__name__
    if name in _DATA_DEPENDENT:
        return any(on_device(a) for a in args)
    if device_type == "cpu":
        return False  # copies to the host are reads only from another device
    if name == "_to_copy":  # .cpu(), .tolist(), .numpy() of a device tensor
        device = kwargs.get("device")
        return bool(args) and on_device(args[0]) and device is not None and torch.device(device).type == "cpu"
    if name == "copy_":  # cpu_tensor.copy_(device_tensor)
        return len(args) > 1 and on_device(args[1]) and isinstance(args[0], torch.Tensor) \
            and args[0].device.type == "cpu"
    return False


def uploads(func, args, kwargs, device_type: str = "cuda") -> bool:
    """Whether an ATen op copies host data to the device (a device of ``device_type``): from pageable memory the
    host waits for it, and a CUDA graph cannot hold it."""
    import torch

    if device_type == "cpu":
        return False
    name = func.overloadpacket.__name__
    if name == "_to_copy":  # host_tensor.to(device), .type_as(device_tensor), .cuda()
        device = kwargs.get("device")
        return bool(args) and isinstance(args[0], torch.Tensor) and args[0].device.type == "cpu" \
            and device is not None and torch.device(device).type == device_type
    if name == "copy_":  # device_tensor.copy_(host_tensor)
        return len(args) > 1 and all(isinstance(a, torch.Tensor) for a in args[:2]) \
            and args[0].device.type == device_type and args[1].device.type == "cpu"
    return False


def _kept(out):
    """What a read returned, kept apart from what the caller may do to it."""
    import torch
    from torch.utils._pytree import tree_map

    return tree_map(lambda x: x.clone() if isinstance(x, torch.Tensor) else x, out)


def _same(a, b) -> bool:
    """Whether two host tensors hold the same data (dtype, shape and values; NaN never matches)."""
    import torch

    return a.dtype == b.dtype and torch.equal(a, b)


def _given(kept):
    """A replayed read: CPU tensors as fresh copies, device tensors as kept (no kernel, no copy in the graph)."""
    import torch
    from torch.utils._pytree import tree_map

    return tree_map(lambda x: x.clone() if isinstance(x, torch.Tensor) and x.device.type == "cpu" else x, kept)


class HostReads:
    """Records the host reads and uploads of one eager call; replays them, in order, in later calls."""

    def __init__(self, device_type: str = "cuda") -> None:
        self.device_type = device_type  # "cpu" only in tests: the reads of the CPU's own data-dependent ops
        # (op name, kept result) in call order; an upload as ("upload <op>", (device tensor made, host data)), so
        # that a read back to the host (a _to_copy too) never answers for an upload, nor an upload for it.
        self.recorded: list = []
        self.replayed = 0            # reads answered from the record
        self.mismatches = 0          # reads that did not match the record (the op ran)
        self.skip = lambda: False    # True while reads are not the forward's own (inside a replayed decision)

    def _mode(self, replay: bool):
        from torch.utils._python_dispatch import TorchDispatchMode

        outer = self
        cursor = iter(list(self.recorded))

        class Mode(TorchDispatchMode):
            def __torch_dispatch__(self, func, types, args=(), kwargs=None):
                kwargs = kwargs or {}
                if outer.skip():
                    return func(*args, **kwargs)
                upload = uploads(func, args, kwargs, outer.device_type)
                if not upload and not reads_host(func, args, kwargs, outer.device_type):
                    return func(*args, **kwargs)
                name = f"upload {func}" if upload else str(func)  # a read by .cpu() is a _to_copy too
                host = (args[1] if func.overloadpacket.__name__ == "copy_" else args[0]) if upload else None
                if not replay:
                    out = func(*args, **kwargs)
                    outer.recorded.append((name, (_kept(out), host.clone()) if upload else _kept(out)))
                    return out
                rec = next(cursor, None)
                if rec is None or rec[0] != name or (upload and not _same(rec[1][1], host)):
                    outer.mismatches += 1
                    return func(*args, **kwargs)
                outer.replayed += 1
                if not upload:
                    return _given(rec[1])
                if func.overloadpacket.__name__ == "copy_":  # a copy on the device, which a graph holds
                    return args[0].copy_(rec[1][0])
                return rec[1][0]

        return Mode()

    def recording(self):
        """Calls inside run as usual; their host reads are recorded."""
        self.recorded.clear()
        return self._mode(replay=False)

    def replaying(self):
        """Calls inside get the recorded host reads in order (one forward pass per ``with``);
        without any recorded read, nothing is intercepted."""
        return self._mode(replay=True) if self.recorded else contextlib.nullcontext()


class HostConstants:
    """Records the device tensors ``torch.tensor``/``torch.as_tensor`` make from host data in one eager
    call; hands them back, in order, in later calls (Note [Host reads replayed])."""

    FUNCTIONS = ("tensor", "as_tensor")

    def __init__(self, device_type: str = "cuda") -> None:
        self.device_type = device_type
        self.recorded: list = []     # (function, dtype, shape, tensor) in call order
        self.replayed = 0
        self.mismatches = 0

    def _made_from_host(self, data, out) -> bool:
        import torch

        return (isinstance(out, torch.Tensor) and out.device.type == self.device_type
                and not isinstance(data, torch.Tensor))

    @contextlib.contextmanager
    def _patched(self, replay: bool):
        import functools

        import torch

        saved = {name: getattr(torch, name) for name in self.FUNCTIONS}
        cursor = iter(list(self.recorded))

        def wrap(name, fn):
            @functools.wraps(fn)
            def made(data, *args, **kwargs):
                if not replay:
                    out = fn(data, *args, **kwargs)
                    if self._made_from_host(data, out):
                        self.recorded.append((name, out.dtype, tuple(out.shape), out))
                    return out
                if isinstance(data, torch.Tensor):
                    return fn(data, *args, **kwargs)
                rec = next(cursor, None)
                if rec is not None and rec[0] == name:
                    self.replayed += 1
                    return rec[3]
                self.mismatches += 1
                return fn(data, *args, **kwargs)
            return made

        try:
            for name, fn in saved.items():
                setattr(torch, name, wrap(name, fn))
            yield self
        finally:
            for name, fn in saved.items():
                setattr(torch, name, fn)

    def recording(self):
        self.recorded.clear()
        return self._patched(replay=False)

    def replaying(self):
        return self._patched(replay=True) if self.recorded else contextlib.nullcontext()
