"""The GPUs of a host, named by UUID and PCI bus id (what does not change with CUDA_VISIBLE_DEVICES)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Card:
    """One GPU of a host, named by what does not change with CUDA_VISIBLE_DEVICES."""

    uuid: str
    pci_bus_id: str
    name: str
    nvml_index: int       # as nvidia-smi numbers it (PCI order)


def host_cards(selection: str, simulate: bool = False, simulated_count: int = 4) -> list[Card]:
    """The cards ``selection`` names: "all", or comma-separated nvidia-smi indices or UUIDs (a prefix
    is enough). Raises ValueError naming the cards there are."""
    if simulate:
        every = [Card(f"SIM-GPU-{i}", f"sim:{i}", "Simulated GPU", i) for i in range(simulated_count)]
    else:
        import clear_native as cn

        every = [Card(d["uuid"], d["pci_bus_id"], d["name"], d["nvml_index"]) for d in cn.nvml_devices()]
    if not every:
        raise ValueError("no GPU on this host (NVML lists none)")
    if selection.strip() == "all":
        return every
    chosen = []
    for token in (t.strip() for t in selection.split(",") if t.strip()):
        found = [c for c in every if (token.isdigit() and c.nvml_index == int(token)) or
                 (not token.isdigit() and c.uuid.startswith(token))]
        if len(found) != 1:
            there = ", ".join(f"{c.nvml_index}={c.uuid}" for c in every)
            raise ValueError(f"--gpus {selection}: {token!r} names {len(found)} GPUs; this host has {there}")
        if found[0] not in chosen:
            chosen.append(found[0])
    return chosen


def on_each(cards: list[Card], argv_of) -> dict:
    """Runs ``argv_of(k, card)`` (a command line) in a fresh process per card, all at once, each seeing only its
    card (CUDA device 0); {uuid: (exit code, [each JSON line the process printed, parsed])}.

    Each process writes to a file of its own, read when it ends: with pipes, a process whose output filled its
    pipe (64 KiB) stopped while the parent waited on another card's (seen on an H200 pair: the second card's
    launch-state readings ended at 36.8 s of 80, before its host load began)."""
    import json
    import os
    import subprocess
    import tempfile

    with tempfile.TemporaryDirectory(prefix="cn-cards-") as tmp:
        procs = {}
        for k, c in enumerate(cards):
            with open(os.path.join(tmp, f"{k}.out"), "w") as out:
                procs[c.uuid] = (k, subprocess.Popen(argv_of(k, c), stdout=out, text=True, env=dict(
                    os.environ, CUDA_VISIBLE_DEVICES=c.uuid, PYTHONUNBUFFERED="1")))
        out = {}
        for uuid, (k, p) in procs.items():
            p.wait()
            with open(os.path.join(tmp, f"{k}.out")) as f:
                out[uuid] = (p.returncode, [json.loads(line) for line in f if line.startswith("{")])
    return out
