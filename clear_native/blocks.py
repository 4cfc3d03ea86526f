"""Blocks and their parts: each enclosing layer measured in the same run as its parts, and what
the parts alone do not account for.

Note [Blocks and interaction]: near the power limit, parts measured alone do not add up to the
model (Llama-3.2-1B at 8x128 on an H200: 88-91 %): the clocks are set by the whole kernel mix, so
a part alone runs in another regime than inside its layer. Whole decoder layers did add up there
(98.5 %, results/granularity.md). So measure_model measures each repeated layer (a block, found by
components.repeated_blocks) beside its parts, and reports for each

    block = sum(its parts alone) + interaction

with the interaction's 95 % CI (the block's and the parts' combined), and the model by blocks:

    model = sum(blocks) + the components outside any block + glue + gaps.

Three numbers per part, and when to use which:
- alone (GroupResult.energy_per_call_j): the part replayed by itself; what a user comparing kernels
  or implementations wants;
- in context (InContext, measure_model(in_context=True)): the model without the part, subtracted
  from the model; the marginal cost of the part where it runs;
- attributed (BlockResult.attributed_j): the block's measured energy shared among its parts in
  proportion to their energies alone, so that the parts add up to the block exactly; what a user
  asking where a model's joules go wants.
"""

from __future__ import annotations

import math

from .accounting import account
from .results import BlockResult


def parts_of(block, components: list) -> dict:
    """Component qualname -> calls per block call, for the components inside the block's representative."""
    prefix = block.representative.qualname + "."
    calls = max(block.representative.calls, 1)
    return {c.qualname: c.calls / calls for c in components if c.qualname.startswith(prefix)}


def group_of(groups: list) -> dict:
    """Member qualname -> its group's result."""
    return {q: g for g in groups for q in g.members}


def block_result(block, measured, components: list, part_results: list) -> BlockResult:
    """``block``: a ComponentGroup of blocks; ``measured``: its GroupResult; ``part_results``: the GroupResults
    of the components. The parts inside one block add up (alone) to parts_energy_j."""
    by_member = group_of(part_results)
    counts: dict = {}
    for q, n in parts_of(block, components).items():
        g = by_member.get(q)
        if g is not None:
            counts[g.name] = counts.get(g.name, 0.0) + n
    results = {g.name: g for g in part_results}
    parts_e = sum(n * results[name].energy_per_call_j for name, n in counts.items())
    parts_ci = math.sqrt(sum((n * results[name].energy_per_call_j * results[name].ci95_rel) ** 2
                             for name, n in counts.items()))
    block_ci = measured.energy_per_call_j * measured.ci95_rel
    scale = measured.energy_per_call_j / parts_e if parts_e > 0 else math.nan
    return BlockResult(
        name=measured.name, members=measured.members, occurrences=measured.occurrences,
        energy_per_call_j=measured.energy_per_call_j, ci95_j=block_ci, cv=measured.cv, trials=measured.trials,
        gpu_time_per_call_s=measured.gpu_time_per_call_s, mean_power_w=measured.mean_power_w,
        sm_clock_mhz=measured.sm_clock_mhz, clock_event_reasons=measured.clock_event_reasons,
        l2_copies=measured.l2_copies, parts=counts, parts_energy_j=parts_e, parts_ci95_j=parts_ci,
        interaction_j=measured.energy_per_call_j - parts_e, interaction_ci95_j=math.hypot(block_ci, parts_ci),
        attributed_j={name: n * results[name].energy_per_call_j * scale for name, n in counts.items()})


def outside_blocks(part_results: list, blocks: list) -> list:
    """The part groups none of whose members is inside a block."""
    prefixes = tuple(q + "." for b in blocks for q in b.members)
    return [g for g in part_results if not any(m.startswith(prefixes) for m in g.members)]


def block_accounting(block_groups: list, others: list, wm, kernels_s: float, inside_s: float):
    """The model by blocks: Accounting with blocks and the components outside them as its parts."""
    return account(block_groups + others, wm.energy_per_call_j, wm.gpu_time_per_call_s, kernels_s, inside_s,
                   wm.awake_idle_power_w)
