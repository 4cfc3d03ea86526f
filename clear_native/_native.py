"""Access to the compiled core, with a clear error where it is missing."""

from __future__ import annotations

from .errors import ClearNativeError, CudaUnavailableError

try:
    from . import _core as core
except ImportError as exc:  # pragma: no cover - only without a build
    raise ClearNativeError(
        "clear_native's compiled core (_core) is missing: install the package with "
        "`python3 -m pip install .` from the repository root (that builds it; nvcc on PATH adds the CUDA "
        "engine). If it is installed, you are importing the source folder instead: run from another folder"
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
