"""clear_native: component-level energy of neural networks on NVIDIA GPUs.

The CLEAR method (repeat a component until the slow power sensor sees it),
with a native core: CUDA-graph replay from C++ and a lossless NVML sampler.
``import clear_native`` works with no GPU, driver or CUDA toolkit; what needs
them raises a typed error (clear_native.errors) when called.
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version as _version

from . import baselines, errors
from .backend import GpuBackend, SimulatedBackend, SimulatedCall
from ._native import HAS_CUDA
from .components import Component, ComponentGroup, find_components, group_components
from .graph_capture import Capture, CaptureError, capture
from .model import ModelInputError, ModelReport, measure_model
from .device import GpuInfo, cuda_pci_bus_id, gpu_info, nvml_device
from .graphs import ReplayResult, UnrolledGraph, awake_idle, calibration_load, replay
from .protocol import MeasureRun, Measurement, measure
from .meter import Meter, MeterResult
from .profile import SensorProfile, calibrate
from .sampler import Sampler, SamplerResult, synthetic_sensor

try:
    __version__ = _version("clear_native")
except PackageNotFoundError:  # pragma: no cover - running from a source tree
    __version__ = "0+unknown"

__all__ = [
    "Component",
    "ComponentGroup",
    "ModelInputError",
    "ModelReport",
    "find_components",
    "group_components",
    "measure_model",
    "GpuBackend",
    "MeasureRun",
    "Measurement",
    "Meter",
    "MeterResult",
    "SensorProfile",
    "SimulatedBackend",
    "SimulatedCall",
    "baselines",
    "calibrate",
    "measure",
    "HAS_CUDA",
    "Capture",
    "CaptureError",
    "capture",
    "GpuInfo",
    "ReplayResult",
    "Sampler",
    "SamplerResult",
    "UnrolledGraph",
    "calibration_load",
    "cuda_pci_bus_id",
    "awake_idle",
    "errors",
    "gpu_info",
    "nvml_device",
    "replay",
    "synthetic_sensor",
    "__version__",
]