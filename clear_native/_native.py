"""Access to the compiled core, with a clear error where it is missing."""

from __future__ import annotations

from .errors import ClearNativeError, CudaUnavailableError

try:
    from . import _core as core
except ImportError as exc:  # pragma: no cover - only without a build
    raise ClearNativeError(
        "clear_native's compiled core (_core) is missing: install the package with "
        "`pip install --no-build-isolation -e .` from the repository root"
    ) from exc

HAS_CUDA: bool = bool(core.HAS_CUDA)


def require_cuda(what: str) -> None:
    """Raises CudaUnavailableError unless the replay engine was compiled and a GPU is visible."""
    if not HAS_CUDA:
        raise CudaUnavailableError(
            f"{what} needs the CUDA replay engine, but clear_native was built without a CUDA toolkit: "
            "reinstall with nvcc on PATH (or CUDACXX set) to compile it"
        )
    if core.cuda_device_count() == 0:
        raise CudaUnavailableError(f"{what} needs an NVIDIA GPU, and CUDA sees none on this machine")
