"""The package imports, and fails helpfully, on a machine with no GPU, driver or toolkit."""

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import clear_native


def _run(code: str, **env) -> subprocess.CompletedProcess:
    full_env = {**os.environ, "CLEAR_NATIVE_NVML_LIBRARY": "/nonexistent/libnvidia-ml.so.1",
                "CUDA_VISIBLE_DEVICES": "", **env}
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], env=full_env,
                          capture_output=True, text=True, timeout=120)


def test_import_without_driver_or_gpu():
    r = _run("""
        import clear_native as cn
        print("imported", cn.__version__)
        try:
            cn.Sampler(device=0)
        except cn.errors.ClearNativeError as e:
            print("raised", type(e).__name__)
    """)
    assert r.returncode == 0, r.stderr
    assert "imported" in r.stdout
    # Without a GPU the index cannot be mapped; with one, NVML is missing: both typed.
    assert ("raised CudaUnavailableError" in r.stdout) or ("raised NvmlLibraryNotFoundError" in r.stdout)


def test_native_module_links_nothing_of_cuda_or_the_driver():
    so = Path(clear_native._native.core.__file__)
    out = subprocess.run(["readelf", "-d", str(so)], capture_output=True, text=True, check=True).stdout
    needed = [line for line in out.splitlines() if "NEEDED" in line]
    assert needed, out
    for lib in ("libcuda.so", "libcudart", "libnvidia-ml"):
        assert not any(lib in line for line in needed), needed


def test_cuda_work_without_a_gpu_is_a_typed_error():
    r = _run("""
        import clear_native as cn
        for call in (lambda: cn.replay(1, 10), lambda: cn.calibration_load(0.1), lambda: cn.UnrolledGraph(1, 2)):
            try:
                call()
            except cn.errors.CudaUnavailableError as e:
                print("ok:", e)
    """)
    assert r.returncode == 0, r.stderr
    assert r.stdout.count("ok:") == 3, r.stdout


def test_no_public_name_shadows_a_submodule():
    # Regression: `from . import replay` inside the package returned the function
    # clear_native.replay, not the module, and GpuBackend failed on the GPU.
    import pkgutil

    for mod in pkgutil.iter_modules(clear_native.__path__):
        attr = getattr(clear_native, mod.name, None)
        assert attr is None or type(attr).__name__ == "module", f"clear_native.{mod.name} is {attr!r}"
