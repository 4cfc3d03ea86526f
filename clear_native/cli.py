"""The command line: measure any transformers model a user brings.

    clear-native measure MODEL [--batch 8 --seq 128 --mode prefill|decode --cache-len 512 --dtype bf16]
                               [--layers N] [--weights] [--out DIR] [--dry-run] [--repeats N] [--simulate]

MODEL is a transformers model id, a local folder with a config.json, or a config.json file. The model
is built from its config with random weights (nothing downloaded but the config, where MODEL is an id
that is not cached); --weights loads the real weights (from_pretrained). --layers keeps the first N
layers (for models too large for one GPU). The report goes to DIR as report.json, groups.csv and
REPORT.md; --dry-run prints the components, blocks and FLOPs on the CPU, with no GPU. --repeats N
measures N times, each in a fresh process, and adds how much each number moves between processes
(repeats.json, REPEATS.md). --simulate measures on the simulated GPU (CPU): for trying the tool, not
numbers.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import subprocess
import sys
from pathlib import Path

DTYPES = {"fp32": "float32", "fp16": "float16", "bf16": "bfloat16"}
_LAYER_KEYS = ("num_hidden_layers", "n_layer", "num_layers", "decoder_layers", "encoder_layers")


class UsageError(Exception):
    """Bad input on the command line: the message says what to do (exit code 2)."""


def load_config(ref: str, layers: int | None = None):
    """The transformers config of a model id, a folder or a config.json; with ``layers``, cut to that depth."""
    from transformers import AutoConfig

    path = Path(ref)
    source = str(path.parent if path.name == "config.json" else path) if path.exists() else ref
    try:
        config = AutoConfig.from_pretrained(source)
    except (OSError, ValueError) as exc:
        raise UsageError(f"no transformers config for {ref!r}: give a model id (online, or in the Hugging Face "
                         f"cache), a folder with config.json, or a config.json ({str(exc).splitlines()[0]})") from exc
    if layers is not None:
        cut = [k for k in _LAYER_KEYS if isinstance(getattr(config, k, None), int)]
        if not cut:
            raise UsageError(f"--layers: {type(config).__name__} has none of {', '.join(_LAYER_KEYS)}")
        for k in cut:
            setattr(config, k, min(layers, getattr(config, k)))
    return config


def build(config, dtype: str, device: str, weights_from: str | None = None, init_weights: bool = True):
    """The model of a config, in eval mode, on ``device``: random weights, or ``weights_from``'s
    (``init_weights=False``: left as allocated, for fake tensors)."""
    import torch
    import transformers

    from .hf_compat import no_init_weights

    arch = (getattr(config, "architectures", None) or [None])[0]
    cls = getattr(transformers, arch, None) if arch else None
    cls = cls or transformers.AutoModel
    torch_dtype = getattr(torch, DTYPES[dtype])
    if weights_from:
        return cls.from_pretrained(weights_from, config=config, dtype=torch_dtype).to(device).eval()
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch_dtype)
    try:
        with torch.device(device), (contextlib.nullcontext() if init_weights else no_init_weights()):
            model = cls._from_config(config) if hasattr(cls, "_from_config") else cls.from_config(config)
    finally:
        torch.set_default_dtype(previous)
    return model.eval()


def inputs_for(model, batch: int, seq: int, device):
    """(positional inputs, model keyword arguments) of one forward pass with random data."""
    import torch

    config = model.config
    name = getattr(model, "main_input_name", "input_ids")
    dtype = next(model.parameters()).dtype
    text = config.get_text_config() if hasattr(config, "get_text_config") else config
    vocab = getattr(config, "vocab_size", None) or getattr(text, "vocab_size", None) or 2
    ids = torch.randint(0, vocab, (batch, seq), device=device)
    # An encoder-decoder's decoder reads tokens: the same ones, or 32 where the encoder reads signals.
    dec = {"decoder_input_ids": ids if name == "input_ids" else ids[:, :32]} \
        if getattr(config, "is_encoder_decoder", False) else {}
    if name == "pixel_values":
        size = config.image_size if isinstance(config.image_size, int) else config.image_size[0]
        return (torch.randn(batch, config.num_channels, size, size, dtype=dtype, device=device),), dec
    if name == "input_features":  # mel frames (Whisper: 3000, a 30 s window)
        return (torch.randn(batch, config.num_mel_bins, seq, dtype=dtype, device=device),), dec
    if name == "input_values":
        return (torch.randn(batch, seq, dtype=dtype, device=device),), dec
    return (ids,), dec


def parse(argv=None):
    ap = argparse.ArgumentParser(prog="clear-native", description=__doc__.split("\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__.split("\n\n", 1)[1])
    sub = ap.add_subparsers(dest="command", required=True)
    m = sub.add_parser("measure", help="measure a model's components, blocks and whole")
    m.add_argument("model", help="a transformers model id, a folder with config.json, or a config.json")
    m.add_argument("--batch", type=int, default=1)
    m.add_argument("--seq", type=int, default=128, help="tokens (or frames/samples for speech models)")
    m.add_argument("--mode", choices=("prefill", "decode"), default="prefill")
    m.add_argument("--cache-len", type=int, default=512, help="decode: tokens already in the KV cache")
    m.add_argument("--dtype", choices=tuple(DTYPES), default="bf16")
    m.add_argument("--layers", type=int, help="keep the first N layers")
    m.add_argument("--weights", action="store_true", help="load the real weights (from_pretrained)")
    m.add_argument("--device", type=int, default=0, help="CUDA device index")
    m.add_argument("--in-context", action="store_true", help="also measure each group inside the model's graph")
    m.add_argument("--window-s", type=float, default=0.3, help="steady seconds of samples per trial")
    m.add_argument("--instances", type=int, default=1, help="graphs of each part, captured apart and measured in "
                   "blocks of calls; 1 repeats best across processes (8 moved whole models ~2 %%: Note [Graph "
                   "instances])")
    m.add_argument("--out", default="clear_native_report", help="folder for report.json, groups.csv, REPORT.md")
    m.add_argument("--dry-run", action="store_true", help="print components, blocks and FLOPs; no GPU")
    m.add_argument("--repeats", type=int, default=1, help="measure N times, each in a fresh process, and say how "
                                                          "much each number moves between them")
    m.add_argument("--simulate", action="store_true", help="the simulated GPU on the CPU: tries the tool, its "
                                                           "numbers are not measurements")
    m.add_argument("--sim-seed", type=int, default=1, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.batch < 1 or args.seq < 1 or args.cache_len < 1 or args.instances < 1 or \
            (args.layers is not None and args.layers < 1):
        ap.error("--batch, --seq, --cache-len, --instances and --layers must be >= 1")
    if args.repeats < 1:
        ap.error("--repeats must be >= 1")
    return args


def dry_run(args, config) -> int:
    """Components, blocks and FLOPs of one call, on fake tensors (no memory, no GPU)."""
    from torch._subclasses.fake_tensor import FakeTensorMode

    from .components import discover, group_components
    from .model import prepare_inputs

    with FakeTensorMode(allow_non_fake_inputs=True):
        model = build(config, args.dtype, "cpu", init_weights=False)
        inputs, kw = prepare_inputs(model, *inputs_for(model, args.batch, args.seq, "cpu"), args.mode, args.cache_len)
        comps, blocks = discover(model, *inputs, model_kwargs=kw)
        groups, block_groups = group_components(comps), group_components(blocks)
    print(f"{type(model).__name__} ({args.mode}, batch {args.batch} x {args.seq}, {args.dtype}): "
          f"{len(comps)} components in {len(groups)} groups, {len(blocks)} blocks in {len(block_groups)} groups")
    print("| group | kind | × | GFLOP/call | MB/call |\n|---|---|---|---|---|")
    for g in groups + block_groups:
        print(f"| {g.name} | {g.kind} | {g.occurrences} | {g.flops / 1e9:.4g} | {g.bytes_min / 1e6:.3g} |")
    return 0


def measure(args, config) -> int:
    import torch

    from . import measure_model, one_stream

    if not args.simulate and not torch.cuda.is_available():
        raise UsageError("measuring needs an NVIDIA GPU that PyTorch sees; --dry-run shows the plan without one")
    device = "cpu" if args.simulate else f"cuda:{args.device}"
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    # On a GPU every launch on one stream, from building the model on: Note [One stream], backend.py.
    with contextlib.nullcontext() if args.simulate else one_stream(args.device), _simulated(args) as sim:
        model = build(config, args.dtype, device, args.model if args.weights else None)
        inputs, kw = inputs_for(model, args.batch, args.seq, device)
        rep = measure_model(model, *inputs, model_kwargs=kw, mode=args.mode, cache_len=args.cache_len,
                            window_s=args.window_s, in_context=args.in_context, instances=args.instances, **sim,
                            progress=lambda msg: print(f"  {msg}", file=sys.stderr, flush=True))
    rep.to_json(out / "report.json")
    rep.to_csv(out / "groups.csv")
    (out / "REPORT.md").write_text(rep.table() + "\n")
    print(rep.table())
    print(f"\nreport: {out / 'REPORT.md'}, {out / 'report.json'}, {out / 'groups.csv'}")
    return 0


@contextlib.contextmanager
def _simulated(args):
    """measure_model's backend and profile for --simulate (on the virtual clock), or nothing."""
    if not args.simulate:
        yield {}
        return
    from . import calibrate, clock, synthetic_sensor
    from .simulated import QUICK_SENSOR, SimulatedBackend

    with clock.virtual():
        backend = SimulatedBackend(synthetic_sensor(**QUICK_SENSOR, seed=args.sim_seed))
        yield {"backend": backend, "profile": calibrate(backend, rest_s=0.3, load_s=0.4)}


def repeat(args, argv: list) -> int:
    """--repeats N: the same measurement in N fresh processes, then how much each number moves."""
    from .analysis import across_processes

    out = Path(args.out)
    reports = []
    for i in range(1, args.repeats + 1):
        child = _without(argv, ("--repeats", "--out", "--sim-seed")) + ["--repeats", "1", "--out", str(out / f"repeat{i}"),
                                                                        "--sim-seed", str(i)]
        print(f"repeat {i}/{args.repeats}, in a fresh process ...", file=sys.stderr, flush=True)
        p = subprocess.run([sys.executable, "-m", "clear_native.cli", *child], stdout=subprocess.DEVNULL)
        if p.returncode != 0:
            raise UsageError(f"repeat {i} failed (exit {p.returncode}); the repeats before it are in {out}")
        reports.append(json.loads((out / f"repeat{i}" / "report.json").read_text()))
    rows = across_processes(reports)
    (out / "repeats.json").write_text(json.dumps({"repeats": args.repeats, "rows": rows}, indent=1) + "\n")
    lines = [f"{args.repeats} measurements, each in a fresh process: the mean, how much it moves between processes, "
             "and the 95 % interval a further repeat should fall in (within-run CI and process spread combined).", "",
             "| part | energy/call | between processes (SD) | within run (CI) | 95 % interval |", "|---|---|---|---|---|"]
    lines += [f"| {r['name']} | {r['energy_per_call_j'] * 1e3:.4g} mJ | {r['process_sd_rel'] * 100:.2f} % | "
              f"{r['max_ci95_rel'] * 100:.2f} % | ± {r['interval95_rel'] * 100:.2f} % |" for r in rows]
    (out / "REPEATS.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


def _without(argv: list, options: tuple) -> list:
    """``argv`` without ``options`` and their values."""
    out, skip = [], False
    for a in argv:
        if skip:
            skip = False
        elif a in options:
            skip = True
        elif not any(a.startswith(o + "=") for o in options):
            out.append(a)
    return out


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse(argv)
    try:
        config = load_config(args.model, args.layers)
        if args.dry_run:
            return dry_run(args, config)
        return repeat(args, argv) if args.repeats > 1 else measure(args, config)
    except UsageError as exc:
        print(f"clear-native: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
