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
    card (CUDA device 0); {uuid: (exit code, [each JSON line the process printed, parsed])}."""
    import json
    import os
    import subprocess

    procs = {c.uuid: subprocess.Popen(argv_of(k, c), stdout=subprocess.PIPE, text=True,
                                      env=dict(os.environ, CUDA_VISIBLE_DEVICES=c.uuid, PYTHONUNBUFFERED="1"))
             for k, c in enumerate(cards)}
    out = {}
    for uuid, p in procs.items():
        text, _ = p.communicate()
        out[uuid] = (p.returncode, [json.loads(line) for line in text.splitlines() if line.startswith("{")])
    return out
