"""NVML and CUDA failures become typed exceptions that keep the code and say what to do."""

import os
import subprocess
import sys

import pytest

from clear_native import errors
from clear_native._native import core


@pytest.mark.parametrize("code, cls", [
    (3, errors.NvmlNotSupportedError),
    (4, errors.NvmlNoPermissionError),
    (12, errors.NvmlLibraryNotFoundError),
    (15, errors.NvmlGpuLostError),
    (9, errors.NvmlDriverNotLoadedError),
    (777, errors.NvmlError),
])
def test_native_nvml_errors_map_to_classes(code, cls):
    with pytest.raises(cls) as info:
        core._raise_native_error("nvml", code)
    e = info.value
    assert type(e) is cls
    assert e.code == code
    assert e.function == "nvmlTestCall"
    assert f"NVML code {code}" in str(e)
    assert cls.hint in str(e)


def test_other_native_errors():
    with pytest.raises(errors.CudaError) as info:
        core._raise_native_error("cuda", 2)
    assert info.value.code == 2
    with pytest.raises(errors.SamplerCapacityError):
        core._raise_native_error("capacity", 0)
    with pytest.raises(errors.SamplerStateError):
        core._raise_native_error("state", 0)


def test_missing_nvml_library_is_typed_and_names_the_library():
    code = ("import clear_native as cn\n"
            "from clear_native._native import core\n"
            "try:\n    core.nvml_device_count()\n"
            "except cn.errors.NvmlLibraryNotFoundError as e:\n    print('code', e.code, str(e))\n")
    env = {**os.environ, "CLEAR_NATIVE_NVML_LIBRARY": "/nonexistent/libnvidia-ml.so.1"}
    r = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert "code 12" in r.stdout
    assert "/nonexistent/libnvidia-ml.so.1" in r.stdout
    assert "CLEAR_NATIVE_NVML_LIBRARY" in r.stdout  # the hint says what to do


def test_every_typed_error_is_in_clear_native_errors():
    import clear_native as cn

    assert cn.CaptureError is errors.CaptureError and cn.ModelInputError is errors.ModelInputError
    for name in ("CaptureError", "ModelInputError", "CudaError", "CudaUnavailableError", "NvmlError",
                 "SamplerCapacityError", "SamplerStateError"):
        assert issubclass(getattr(errors, name), errors.ClearNativeError)
