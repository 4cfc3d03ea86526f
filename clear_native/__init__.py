"""clear_native: component-level energy of neural networks on NVIDIA GPUs.

The CLEAR method (repeat a component until the slow power sensor sees it),
with a native core: CUDA-graph replay from C++ and a lossless NVML sampler.
``import clear_native`` works with no GPU, driver or CUDA toolkit; what needs
them raises a typed error (clear_native.errors) when called.
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version as _version

from . import analysis, baselines, clock, errors, records, thermal
from ._native import HAS_CUDA
from .backend import GpuBackend
from .simulated import OpCosts, SimulatedBackend, SimulatedCall
from .cold_l2 import ColdCopies, l2_copies
from .components import Component, ComponentGroup, find_components, group_components
from .device import GpuInfo, cuda_pci_bus_id, gpu_info, nvml_device, nvml_device_count, nvml_devices
from .errors import CaptureError, ModelInputError
from .graph_capture import Capture, capture
from .graphs import PrunedGraph, ReplayResult, UnrolledGraph, awake_idle, calibration_load, one_stream, replay
from .hf_compat import decode_inputs
from .meter import Meter, MeterResult, MultiMeterResult
from .model import measure_model
from .profile import SensorProfile, calibrate
from .protocol import measure
from .results import (Accounting, ContextAccounting, GroupResult, InContext, MeasureRun, Measurement,
                      ModelReport)
from .sampler import Sampler, SamplerResult, synthetic_sensor

try:
    __version__ = _version("clear_native")
except PackageNotFoundError:  # pragma: no cover - running from a source tree
    __version__ = "0+unknown"

__all__ = [
    "Accounting",
    "analysis",
    "awake_idle",
    "baselines",
    "calibrate",
    "calibration_load",
    "capture",
    "Capture",
    "clock",
    "CaptureError",
    "ColdCopies",
    "Component",
    "ComponentGroup",
    "ContextAccounting",
    "cuda_pci_bus_id",
    "nvml_devices",
    "decode_inputs",
    "errors",
    "find_components",
    "gpu_info",
    "GpuBackend",
    "GroupResult",
    "GpuInfo",
    "group_components",
    "HAS_CUDA",
    "InContext",
    "l2_copies",
    "measure",
    "measure_model",
    "one_stream",
    "Measurement",
    "MeasureRun",
    "Meter",
    "MeterResult",
    "MultiMeterResult",
    "ModelInputError",
    "ModelReport",
    "nvml_device",
    "nvml_device_count",
    "OpCosts",
    "PrunedGraph",
    "records",
    "replay",
    "ReplayResult",
    "Sampler",
    "SamplerResult",
    "SensorProfile",
    "SimulatedBackend",
    "SimulatedCall",
    "synthetic_sensor",
    "thermal",
    "UnrolledGraph",
    "__version__",
]
