"""Everything a run needs, checked before any GPU time is spent: one line that says what to do.

Each check returns None when it passes, or the problem and its fix as one sentence.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from bench import store, suite

# The transformers releases the study is tested with (CI runs both ends; pyproject.toml says the same).
TRANSFORMERS_MIN = (5, 17)
TRANSFORMERS_BELOW = (6, 0)
INSTALL = 'pip install ".[study]"'


def fail(problem: str) -> int:
    print(f"bench/run.py: {problem}", file=sys.stderr)
    return 2


def _version(text: str) -> tuple:
    out = []
    for part in text.split(".")[:2]:
        digits = "".join(c for c in part if c.isdigit())
        out.append(int(digits or 0))
    return tuple(out)


def libraries() -> str | None:
    """PyTorch and transformers importable, transformers in the tested range."""
    try:
        import torch  # noqa: F401
    except ImportError:
        return f"needs PyTorch (a CUDA build to measure; a CPU build is enough for --dry-run): {INSTALL}"
    try:
        import transformers
    except ImportError:
        return f"needs transformers: {INSTALL}"
    v = _version(transformers.__version__)
    if not TRANSFORMERS_MIN <= v < TRANSFORMERS_BELOW:
        lo, hi = ".".join(map(str, TRANSFORMERS_MIN)), ".".join(map(str, TRANSFORMERS_BELOW))
        return (f"transformers {transformers.__version__} is outside the tested range >={lo},<{hi}: "
                f'pip install "transformers>={lo},<{hi}"')
    return None


def for_dry_run() -> str | None:
    return libraries()


def figures_available() -> str | None:
    """Why figures cannot be drawn, or None."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return f"matplotlib is not installed: the report is written without figures ({INSTALL} brings it)"
    return None


def gpu(device: int) -> str | None:
    """clear_native's CUDA engine, a GPU at index ``device``, NVML — without starting CUDA, so that
    CUDA_VISIBLE_DEVICES can still be set for the chosen card."""
    import clear_native as cn

    if not cn.HAS_CUDA:
        return ("clear_native was built without the CUDA toolkit, so it cannot replay graphs: reinstall it with "
                f"nvcc on PATH ({INSTALL}); --dry-run prints the plan without a GPU")
    visible = [v for v in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if v]
    try:
        count = len(visible) if "CUDA_VISIBLE_DEVICES" in os.environ else cn.nvml_device_count()
    except cn.errors.NvmlError as exc:
        return f"needs an NVIDIA GPU with its driver (NVML: {exc}); --dry-run prints the plan without one"
    return device_problem(device, count)


def device_problem(device: int, count: int) -> str | None:
    """Whether CUDA device index ``device`` exists among ``count`` visible GPUs."""
    if count == 0:
        return "needs an NVIDIA GPU, and none is visible (CUDA_VISIBLE_DEVICES?); --dry-run prints the plan without one"
    if not 0 <= device < count:
        return f"--device {device} does not exist: {count} GPU(s) visible, so pass --device 0..{count - 1}"
    return None


def card_name(device: int = 0) -> str:
    """The card's name, from NVML."""
    import clear_native as cn

    return cn.gpu_info(device).name


def torch_sees_gpu() -> bool:
    import torch

    return torch.cuda.is_available()


def resumable(args) -> tuple:
    """(problem, run folder) of --resume RUN, with --redo's patterns checked against its records."""
    folder = Path(args.resume)
    if not store.is_run(folder):
        runs = store.runs_under(Path(args.out))[:3]
        hint = f"; recent runs: {', '.join(map(str, runs))}" if runs else ""
        return f"--resume {folder}: no run there (no {store.MEASUREMENTS}){hint}", None
    recs = store.load(folder)
    modes = {store.record_l2(r) for r in recs if r.get("status") == "ok"}
    if modes - {args.l2}:
        return (f"{folder} holds measurements with {'/'.join(sorted(modes))} L2 replay, and this run asks for "
                f"--l2 {args.l2}: one report cannot mix them; pass --l2 {'/'.join(sorted(modes))}"), None
    if args.redo and not store.matching(recs, suite.as_list(args.redo, [])):
        return f"--redo {args.redo} matches no task id recorded in {folder / store.MEASUREMENTS}", None
    return None, folder


def writable(out: Path) -> str | None:
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / f".write-test-{os.getpid()}"
        probe.write_text("ok")
        probe.unlink()
    except OSError as exc:
        return f"cannot write results under {out} ({exc.strerror or exc}): pass --out <a folder you can write>"
    return None


def for_run(args) -> tuple:
    """(problem, run folder): every check of a measuring run, in the order a user would fix them.
    One GPU in this process: sets CUDA_VISIBLE_DEVICES to the chosen card, before CUDA starts, so
    that it is device 0 for PyTorch and for the NVML mapping alike. --gpus and --ray leave CUDA to
    their workers (each gets its card by UUID); --simulate needs no GPU at all."""
    if args.redo and args.resume is None:
        return "--redo needs --resume RUN: it measures again tasks of an existing run", None
    if args.retries < 0:
        return f"--retries must be >= 0, got {args.retries}", None
    if args.time_limit is not None and (args.time_limit <= 0 or args.ray):
        return ("--time-limit must be > 0 (seconds)" if args.time_limit <= 0 else
                "--time-limit with --ray: a Ray cluster queues every job at once, so no job's start can be held "
                "back; use the cluster's own limits, or --gpus"), None
    problem = libraries() or (None if args.simulate or args.ray else gpu(0 if args.gpus else args.device)) or \
        (ray_available() if args.ray else None)
    if problem:
        return problem, None
    cards, problem = _cards(args)
    if problem:
        return problem, None
    folder = None
    if args.resume is not None:  # an empty --resume (a script's unset variable) is an error, not a new run
        problem, folder = resumable(args)
    else:
        problem = writable(Path(args.out))
    if problem:
        return problem, None
    if not (args.simulate or args.gpus or args.ray):
        visible = [v for v in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if v]
        os.environ["CUDA_VISIBLE_DEVICES"] = visible[args.device] if visible else str(args.device)
        if not torch_sees_gpu():
            return "PyTorch sees no GPU (a CPU build of torch?): install a CUDA build of PyTorch", None
    note = figures_available()
    if note:
        print(f"bench/run.py: note: {note}", file=sys.stderr)
    if folder is None:
        name = "Simulated GPU" if args.simulate else cards[0].name if cards else card_name() if not args.ray else "ray"
        folder = store.new_run(Path(args.out), name)
    return None, folder


def _cards(args) -> tuple:
    """(the cards --gpus names, problem)."""
    if not args.gpus:
        return [], None
    from bench.cards import host_cards

    try:
        return host_cards(args.gpus, simulate=args.simulate), None
    except ValueError as exc:
        return [], str(exc)


def ray_available() -> str | None:
    try:
        import ray  # noqa: F401
    except ImportError:
        return 'needs Ray for --ray: pip install "ray[default]" (on every machine of the cluster, with clear_native)'
    return None
