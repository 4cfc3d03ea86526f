import pytest


def _gpu_missing_reason() -> str | None:
    """Why the GPU tests cannot run here, or None when they can."""
    import clear_native as cn
    from clear_native._native import core

    if not cn.HAS_CUDA:
        return "clear_native was built without the CUDA toolkit"
    if core.cuda_device_count() == 0:
        return "no NVIDIA GPU visible to CUDA"
    try:
        core.nvml_device_count()
    except cn.errors.NvmlError as e:
        return f"NVML unavailable: {e}"
    try:
        import torch
    except ImportError:
        return "PyTorch is not installed"
    if not torch.cuda.is_available():
        return "PyTorch sees no GPU (a CPU build?)"
    return None


def pytest_collection_modifyitems(config, items):
    gpu_items = [i for i in items if "gpu" in i.keywords]
    if not gpu_items:
        return
    reason = _gpu_missing_reason()
    if reason is not None:
        for item in gpu_items:
            item.add_marker(pytest.mark.skip(reason=f"GPU test: {reason}"))
