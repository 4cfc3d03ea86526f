"""The exceptions clear_native raises, and the one table that maps NVML codes to them.

Every exception keeps what failed (the NVML or CUDA code, the call) and says what
to do about it. Native code raises through :func:`_from_native`.
"""

from __future__ import annotations


class ClearNativeError(Exception):
    """Base class of every error clear_native raises on purpose."""


class NvmlError(ClearNativeError):
    """An NVML call failed.

    Attributes:
        code: NVML's return code (``nvmlReturn_t``).
        function: the NVML call that failed.
    """

    hint = "See NVML's documentation of this return code."

    def __init__(self, message: str, code: int, function: str = "") -> None:
        super().__init__(f"{message}. {self.hint}")
        self.code = code
        self.function = function


class NvmlLibraryNotFoundError(NvmlError):
    hint = ("libnvidia-ml.so.1 could not be loaded: install the NVIDIA driver, or set "
            "CLEAR_NATIVE_NVML_LIBRARY to the library's path.")


class NvmlDriverNotLoadedError(NvmlError):
    hint = "The NVIDIA kernel driver is not running: check `nvidia-smi` on this machine."


class NvmlFunctionNotFoundError(NvmlError):
    hint = "The installed driver lacks an NVML call clear_native needs: update the NVIDIA driver."


class NvmlNotSupportedError(NvmlError):
    hint = "This GPU or driver does not support the reading; use a datacenter GPU (Volta or newer)."


class NvmlNoPermissionError(NvmlError):
    hint = "The process may not read this sensor: run with the permissions the GPU's administrator grants."


class NvmlNotFoundError(NvmlError):
    hint = "No such GPU: check the device index and CUDA_VISIBLE_DEVICES."


class NvmlGpuLostError(NvmlError):
    hint = "The GPU fell off the bus or needs a reset: results after this point are invalid; tell the machine's administrator."


class NvmlUninitializedError(NvmlError):
    hint = "NVML was not initialised: this is a bug in clear_native, please report it."


class NvmlInvalidArgumentError(NvmlError):
    hint = "NVML rejected an argument: check the device handle or PCI bus id."


class NvmlTimeoutError(NvmlError):
    hint = "The driver did not answer in time: the GPU may be overloaded or hung; retry."


# Note [NVML error table]: one code -> class table; codes not listed map to NvmlError.
_NVML_ERRORS: dict[int, type[NvmlError]] = {
    1: NvmlUninitializedError,
    2: NvmlInvalidArgumentError,
    3: NvmlNotSupportedError,
    4: NvmlNoPermissionError,
    6: NvmlNotFoundError,
    9: NvmlDriverNotLoadedError,
    10: NvmlTimeoutError,
    12: NvmlLibraryNotFoundError,
    13: NvmlFunctionNotFoundError,
    15: NvmlGpuLostError,
    16: NvmlGpuLostError,  # GPU requires reset
    28: NvmlNotFoundError,  # GPU not found
}


class CudaError(ClearNativeError):
    """A CUDA runtime call failed. ``code`` is the ``cudaError_t``."""

    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.code = code


class CudaUnavailableError(ClearNativeError):
    """CUDA work was asked for where it cannot run (no toolkit at build time, no GPU)."""


class CaptureError(ClearNativeError):
    """The callable cannot be captured into a CUDA graph; the message says why."""


class ModelInputError(ClearNativeError):
    """The model does not run on the given inputs; nothing was measured."""


class SamplerCapacityError(ClearNativeError):
    """The sampler's preallocated buffers filled up: give it a larger ``max_duration_s``."""


class SamplerStateError(ClearNativeError, RuntimeError):
    """A sampler was used out of order (stop before start, start twice)."""


def nvml_error(code: int, function: str = "", message: str | None = None) -> NvmlError:
    """The exception for an NVML return code."""
    cls = _NVML_ERRORS.get(code, NvmlError)
    return cls(message or f"{function or 'NVML'} failed (NVML code {code})", code, function)


def _from_native(kind: str, code: int, function: str, message: str) -> ClearNativeError:
    """Called by the native module's exception translator."""
    if kind == "nvml":
        return nvml_error(code, function, message)
    if kind == "cuda":
        return CudaError(message, code)
    if kind == "capacity":
        return SamplerCapacityError(message)
    return SamplerStateError(message)
