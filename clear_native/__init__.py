"""clear_native: component-level energy of neural networks on NVIDIA GPUs.

The CLEAR method (repeat a component until the slow power sensor sees it),
with a native core: CUDA-graph replay from C++ and a lossless NVML sampler.
``import clear_native`` works with no GPU, driver or CUDA toolkit; what needs
them raises a typed error (clear_native.errors) when called.
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version as _version

from . import baselines, errors
from ._native import HAS_CUDA
from .backend import GpuBackend, SimulatedBackend, SimulatedCall
from .components import Component, ComponentGroup, find_components, group_components
from .context import ContextAccounting, InContext
from .device import GpuInfo, cuda_pci_bus_id, gpu_info, nvml_device
from .graph_capture import Capture, CaptureError, capture
from .graphs import PrunedGraph, ReplayResult, UnrolledGraph, awake_idle, calibration_load, replay
from .meter import Meter, MeterResult
from .model import ColdCopies, ModelInputError, ModelReport, decode_inputs, l2_copies, measure_model
from .profile import SensorProfile, calibrate
from .protocol import MeasureRun, Measurement, measure
from .sampler import Sampler, SamplerResult, synthetic_sensor

try:
    __version__ = _version("clear_native")
except PackageNotFoundError:  # pragma: no cover - running from a source tree
    __version__ = "0+unknown"

__all__ = [
    "awake_idle",
    "baselines",
    "calibrate",
    "calibration_load",
    "capture",
    "Capture",
    "CaptureError",
    "ColdCopies",
    "Component",
    "ComponentGroup",
    "ContextAccounting",
    "cuda_pci_bus_id",
    "decode_inputs",
    "errors",
    "find_components",
    "gpu_info",
    "GpuBackend",
    "GpuInfo",
    "group_components",
    "HAS_CUDA",
    "InContext",
    "l2_copies",
    "measure",
    "measure_model",
    "Measurement",
    "MeasureRun",
    "Meter",
    "MeterResult",
    "ModelInputError",
    "ModelReport",
    "nvml_device",
    "PrunedGraph",
    "replay",
    "ReplayResult",
    "Sampler",
    "SamplerResult",
    "SensorProfile",
    "SimulatedBackend",
    "SimulatedCall",
    "synthetic_sensor",
    "UnrolledGraph",
    "__version__",
]
