"""Which GPU: a CUDA device index, mapped to its NVML handle by PCI bus id.

CUDA numbers GPUs after ``CUDA_VISIBLE_DEVICES`` (and, by default, fastest
first); NVML numbers all of them in PCI order. The PCI bus id is the one name
both agree on, so that is how a CUDA index finds its sensors.
"""

from __future__ import annotations

import datetime as _dt
import platform
from dataclasses import asdict, dataclass

from ._native import HAS_CUDA, core
from .errors import CudaUnavailableError


def nvml_device_count() -> int:
    """GPUs the driver knows (all of them: NVML does not read CUDA_VISIBLE_DEVICES); raises NvmlError
    without a driver."""
    return int(core.nvml_device_count())


def nvml_devices() -> list:
    """Every GPU the driver knows, in NVML's (nvidia-smi's) order, whatever CUDA_VISIBLE_DEVICES says:
    dicts of nvml_index, name, uuid, pci_bus_id. Raises NvmlError without a driver."""
    out = []
    for i in range(nvml_device_count()):
        d = core.NvmlDevice.from_nvml_index(i)
        out.append({"nvml_index": i, "name": d.name, "uuid": d.uuid, "pci_bus_id": d.pci_bus_id})
    return out


def cuda_pci_bus_id(device: int = 0) -> str:
    """PCI bus id ("0000:65:00.0") of CUDA device ``device``."""
    if device < 0:
        raise ValueError(f"device must be a CUDA device index >= 0, got {device}")
    if HAS_CUDA:
        count = core.cuda_device_count()
        if device >= count:
            raise CudaUnavailableError(f"CUDA device {device} does not exist: CUDA sees {count} GPU(s)")
        return core.cuda_device_info(device)["pci_bus_id"]
    try:  # built without the toolkit: ask PyTorch, if it is there and sees the GPU
        import torch
    except ImportError:
        torch = None
    if torch is None or not torch.cuda.is_available():
        raise CudaUnavailableError(
            "cannot map a CUDA device index to its GPU: clear_native was built without CUDA and "
            "PyTorch sees no GPU; pass an NVML device instead"
        )
    p = torch.cuda.get_device_properties(device)
    return f"{p.pci_domain_id:04x}:{p.pci_bus_id:02x}:{p.pci_device_id:02x}.0"


def nvml_device(device: int = 0) -> "core.NvmlDevice":
    """The NVML handle of CUDA device ``device`` (respects CUDA_VISIBLE_DEVICES)."""
    return core.NvmlDevice.from_pci_bus_id(cuda_pci_bus_id(device))


@dataclass(frozen=True)
class GpuInfo:
    """What every result records about the card it was measured on."""

    name: str
    uuid: str
    pci_bus_id: str
    driver_version: str
    nvml_version: str
    power_limit_w: float  # enforced limit; 0 where NVML cannot tell
    cuda_runtime_version: int  # e.g. 13000; 0 without the CUDA engine
    multiprocessors: int
    host: str

    def to_dict(self) -> dict:
        return asdict(self)


def gpu_info(device: int = 0) -> GpuInfo:
    """Identity of CUDA device ``device`` (NVML and CUDA)."""
    nv = nvml_device(device)
    sms = core.cuda_device_info(device)["multiprocessors"] if HAS_CUDA else 0
    return GpuInfo(
        name=nv.name,
        uuid=nv.uuid,
        pci_bus_id=nv.pci_bus_id,
        driver_version=core.nvml_driver_version(),
        nvml_version=core.nvml_library_version(),
        power_limit_w=nv.power_limit_mw / 1000.0,
        cuda_runtime_version=core.cuda_runtime_version() if HAS_CUDA else 0,
        multiprocessors=sms,
        host=platform.node(),
    )


def utc_now_iso() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
