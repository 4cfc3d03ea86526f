"""The tables of a ModelReport beyond its parts': by blocks, in context, paced (ModelReport.table())."""

from __future__ import annotations

import math

from .writers import coverage_pc as _pc
from .writers import markdown_table


def blocks_table(rep) -> list:
    """Note [Blocks and interaction]: each block against its parts, and each part's attributed share."""
    rows = [[b.name, b.occurrences, f"{b.energy_per_call_j * 1e3:.4g} ± {b.ci95_j * 1e3:.2g} mJ",
             f"{b.parts_energy_j * 1e3:.4g} mJ", f"{b.interaction_j * 1e3:+.3g} ± {b.interaction_ci95_j * 1e3:.2g} mJ "
             f"({b.interaction_rel * 100:+.1f} %)", f"{b.mean_power_w:.0f} W"] for b in rep.blocks]
    a = rep.block_accounting
    alone = {g.name: g.energy_per_call_j for g in rep.groups}
    shares = [[b.name, part, f"{n:g}", f"{n * alone.get(part, math.nan) * 1e3:.4g} mJ",
               f"{b.attributed_j[part] * 1e3:.4g} ± {b.attributed_ci95_j.get(part, math.nan) * 1e3:.2g} mJ",
               b.attributed_basis] for b in rep.blocks for part, n in b.parts.items()]
    return (["", "By blocks (Note [Blocks and interaction]): block = its parts alone + interaction", ""]
            + markdown_table(("block", "×", "energy/call", "parts alone", "interaction", "power"), rows)
            + ([f"\nby blocks: coverage {_pc(a.coverage)}; explained {_pc(a.explained_coverage)}"]
               if a else [])
            + ["", "Each part's share of its block (attributed: the block shared in proportion to the basis):", ""]
            + markdown_table(("block", "part", "per block", "alone", "attributed ±95 %", "basis"), shares))


def context_table(rep) -> list:
    """Note [A component in context]: each group's marginal in the model's own graph."""
    c = rep.context_accounting
    rows = [[r.name, r.occurrences, f"{r.gpu_time_per_call_s * 1e6:.2f} µs", f"{r.energy_per_call_j * 1e3:.4g} mJ",
             f"{r.energy_per_call_ci95_j * 1e3:.2g} mJ", f"{r.isolated_ratio:.3f}x", f"{r.share * 100:.1f} %"]
            for r in rep.in_context]
    return (["", "In context (the model's graph without the group: Note [A component in context]):", ""]
            + markdown_table(("component", "×", "GPU time/call", "energy/call", "±95 %", "vs alone", "share"),
                             rows)
            + ["", f"in-context coverage {c.coverage * 100:.1f} %; without any component "
                   f"{c.rest_time_s * 1e6:.1f} µs / {c.rest_energy_j * 1e3:.3g} mJ; interaction "
                   f"{c.interaction_energy_j * 1e3:+.3g} mJ; explained {c.explained_coverage * 100:.1f} %; "
                   f"the in-context graph {c.model_energy_j * 1e3:.4g} mJ ({c.layout_rel * 100:+.1f} % vs the model)"])


def paced_table(rep) -> list:
    """Note [At the model's power]: each paced part against itself alone, and the accounting with them."""
    rows = [[r.name, f"{r.gap_s * 1e6:.1f} µs", f"{r.alone_energy_per_call_j * 1e3:.4g} mJ",
             f"{r.energy_per_call_j * 1e3:.4g} ± {r.ci95_j * 1e3:.2g} mJ", f"{r.ratio:.3f}x", f"{r.mean_power_w:.0f} W",
             "yes" if r.freed else f"no: {r.why}"] for r in rep.paced["rows"]]
    a, b = rep.paced["accounting"], rep.paced["block_accounting"]
    return (["", "At the model's power (Note [At the model's power]): parts the limiter slowed alone, measured "
                 "again with an idle gap after each call, minus the gap:", ""]
            + markdown_table(("part", "gap/call", "alone", "paced ±95 %", "vs alone", "power paced", "used"), rows)
            + ["", f"with the paced parts: explained coverage {_pc(a.explained_coverage)}"
                   + (f"; by blocks {_pc(b.explained_coverage)}" if b else "")])


def glue_line(acc) -> str:
    """What the glue (kernels outside every component) is: its largest ops, µs per forward pass, as the profiled
    eager pass saw them."""
    return "glue's largest ops (profiled eager pass): " + ", ".join(f"{op} {us:.1f} µs" for op, us in acc.glue_ops)
