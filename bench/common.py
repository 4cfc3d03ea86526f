"""What every benchmark shares: the GPU check, the run's identity, writing results."""

from __future__ import annotations

import json
import platform
import sys
from pathlib import Path

import clear_native as cn
from clear_native.work import kernel_profile  # noqa: F401 - the benchmarks' name for it

ROOT = Path(__file__).resolve().parents[1]


def require_gpu(script: str):
    """PyTorch with a GPU and clear_native's CUDA engine, or one line that says what to do and exit code 2."""
    from bench import preflight

    problem = preflight.libraries() or preflight.gpu(0)
    if problem is None:
        import torch

        if not torch.cuda.is_available():
            problem = "PyTorch sees no GPU (a CPU build of torch?): install a CUDA build of PyTorch"
    if problem:
        print(f"{script}: {problem}", file=sys.stderr)
        sys.exit(2)
    import torch

    return torch


def require_cards(script: str, selection: str) -> tuple:
    """(torch, the cards ``selection`` names: bench.cards.host_cards), after require_gpu; or one line that says
    what to do (the cards there are) and exit code 2."""
    from bench.cards import host_cards

    torch = require_gpu(script)
    try:
        return torch, host_cards(selection)
    except ValueError as exc:
        print(f"{script}: {exc}", file=sys.stderr)
        sys.exit(2)


def code_version() -> str:
    """The code that measured: $CLEAR_NATIVE_CODE_VERSION where set (a copy of the tree without its .git says
    which commit it is), else the git commit of this checkout (with -dirty for uncommitted changes), else
    the package's version."""
    import os
    import subprocess

    if os.environ.get("CLEAR_NATIVE_CODE_VERSION"):
        return os.environ["CLEAR_NATIVE_CODE_VERSION"]
    try:
        out = subprocess.run(["git", "describe", "--always", "--dirty", "--abbrev=12"], cwd=Path(__file__).parent,
                             capture_output=True, text=True, timeout=10)
        if out.returncode == 0 and out.stdout.strip():
            return out.stdout.strip()
    except (OSError, subprocess.SubprocessError):
        pass
    return cn.__version__


def package_sha(folder: Path) -> str:
    """12 hex digits of SHA-256 over a package's Python sources (each file's path in it and its bytes, in order)."""
    import hashlib

    h = hashlib.sha256()
    for f in sorted(Path(folder).rglob("*.py")):
        h.update(f.relative_to(folder).as_posix().encode() + b"\0" + f.read_bytes() + b"\0")
    return h.hexdigest()[:12]


def run_identity(torch, gpu: dict | None = None) -> dict:
    """Card (``gpu``, default CUDA device 0's), driver, date and versions (code and protocol): stored with every
    result file. code_version names this checkout; clear_native_sha the Python code that measured, wherever it was
    imported from, and clear_native_from_checkout whether that was this checkout (an installed wheel of an older
    commit once measured under a newer code_version, unseen: docs/measured.md, 2026-11-28 late afternoon).
    cuda_env: the CUDA_* variables the process ran under (but the card it was given), which change how the driver
    launches work (CUDA_DEVICE_MAX_CONNECTIONS, CUDA_MODULE_LOADING: Note [Launch-latency state])."""
    import os

    from clear_native.protocol import PROTOCOL_VERSION

    pkg = Path(cn.__file__).resolve().parent
    return {"gpu": gpu if gpu is not None else cn.gpu_info(0).to_dict(), "date": cn.device.utc_now_iso(),
            "torch": torch.__version__, "clear_native": cn.__version__, "code_version": code_version(),
            "clear_native_sha": package_sha(pkg), "clear_native_from_checkout": pkg.parent == ROOT,
            "protocol_version": PROTOCOL_VERSION, "python": platform.python_version(),
            "cuda_env": {k: v for k, v in sorted(os.environ.items())
                         if k.startswith("CUDA_") and k != "CUDA_VISIBLE_DEVICES"}}


def cuda_env_text(ident: dict) -> str:
    """The launch-affecting CUDA_* variables a result's process ran under (its identity's cuda_env, less where
    CUDA lives and which version it is), as "; under A=1, B=2" for a report's header line, or ""."""
    env = {k: v for k, v in ident.get("cuda_env", {}).items() if k not in ("CUDA_HOME", "CUDA_PATH", "CUDA_VERSION")}
    return "; under " + ", ".join(f"{k}={v}" for k, v in env.items()) if env else ""


def write_results(out, name: str, res: dict, md: str) -> None:
    """A benchmark's results as ``out``/NAME.json and NAME.md, each written whole or not at all; prints the md."""
    from bench.store import write_atomic

    folder = Path(out)
    folder.mkdir(parents=True, exist_ok=True)
    write_atomic(folder / f"{name}.json", json.dumps(res, indent=1, default=float) + "\n")
    write_atomic(folder / f"{name}.md", md)
    print(md)


def kernel_time_per_call_s(torch, fn, calls: int = 50) -> float:
    """Sum of the GPU kernels' durations in one call, from the PyTorch profiler."""
    return sum(kernel_profile(fn, calls)[1].values()) * 1e-6


def kernel_time_in_replay_s(torch, graph, launches: int) -> float:
    """Kernel time per call of the component inside a native replay, from the PyTorch profiler.

    Measured in the same sustained run as the replay: a kernel that runs at a
    lower clock under sustained load is compared with the same clock.
    """
    from torch.autograd import DeviceType
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CUDA], acc_events=True) as prof:
        r = cn.replay(graph, launches)
    us = sum(e.time_range.elapsed_us() for e in prof.events() if e.device_type == DeviceType.CUDA)
    return us * 1e-6 / r.calls
