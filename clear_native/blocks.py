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
  proportion to their in-context marginals where every part of the block has one (measure_model's
  in_context=True), else to their energies alone (BlockResult.attributed_basis says which), so that
  the parts add up to the block exactly; what a user asking where a model's joules go wants. Its
  95 % CI (attributed_ci95_j) carries the block's and every part's CI through the share.
"""

from __future__ import annotations

import math
from dataclasses import replace

from .accounting import account_against
from .results import BlockResult


def parts_of(block, components: list) -> dict:
    """Component qualname -> calls per block call, for the components inside the block's representative."""
    prefix = block.representative.qualname + "."
    calls = max(block.representative.calls, 1)
    return {c.qualname: c.calls / calls for c in components if c.qualname.startswith(prefix)}


def group_of(groups: list) -> dict:
    """Member qualname -> its group's result."""
    return {q: g for g in groups for q in g.members}


def block_result(block, measured, components: list, part_results: list, in_context: tuple = ()) -> BlockResult:
    """``block``: a ComponentGroup of blocks; ``measured``: its GroupResult; ``part_results``: the GroupResults
    of the components; ``in_context``: their InContext rows, if measured. The parts inside one block add up
    (alone) to parts_energy_j."""
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
    basis, weights = attribution_weights(counts, results, {c.name: c for c in in_context})
    attributed, attributed_ci = attribute(measured.energy_per_call_j, block_ci, weights)
    return BlockResult(
        name=measured.name, members=measured.members, occurrences=measured.occurrences,
        energy_per_call_j=measured.energy_per_call_j, ci95_j=block_ci, cv=measured.cv, trials=measured.trials,
        gpu_time_per_call_s=measured.gpu_time_per_call_s, mean_power_w=measured.mean_power_w,
        sm_clock_mhz=measured.sm_clock_mhz, clock_event_reasons=measured.clock_event_reasons,
        l2_copies=measured.l2_copies, parts=counts, parts_energy_j=parts_e, parts_ci95_j=parts_ci,
        interaction_j=measured.energy_per_call_j - parts_e, interaction_ci95_j=math.hypot(block_ci, parts_ci),
        attributed_j=attributed, attributed_ci95_j=attributed_ci, attributed_basis=basis)


def attribution_weights(counts: dict, alone: dict, in_context: dict) -> tuple:
    """("in context" or "alone", {part: (weight J, its 95 % CI J)}): each part's calls per block x its energy
    per call in context, where every part has a positive in-context marginal, else alone."""
    ctx = [in_context.get(name) for name in counts]
    if counts and all(c is not None and c.energy_per_call_j > 0 for c in ctx):
        return "in context", {name: (n * c.energy_per_call_j, n * c.energy_per_call_ci95_j)
                              for (name, n), c in zip(counts.items(), ctx)}
    return "alone", {name: (n * alone[name].energy_per_call_j, n * alone[name].energy_per_call_j * alone[name].ci95_rel)
                     for name, n in counts.items()}


def attribute(block_j: float, block_ci_j: float, weights: dict) -> tuple:
    """The block's energy shared in proportion to ``weights`` ({part: (w, its CI)}), and each share's 95 % CI:
    f_i = B w_i / W with W = sum w, its half-widths carried through the partial derivatives
    (w_i / W for B, B (W - w_i) / W^2 for w_i, -B w_i / W^2 for every other w_j)."""
    total = sum(w for w, _ in weights.values())
    if not total > 0:
        return {k: math.nan for k in weights}, {k: math.nan for k in weights}
    shares, cis = {}, {}
    for k, (w, _) in weights.items():
        shares[k] = block_j * w / total
        terms = [(w / total) * block_ci_j]
        terms += [(block_j * (total - w) / total ** 2 if j == k else -block_j * w / total ** 2) * cj
                  for j, (_, cj) in weights.items()]
        cis[k] = math.sqrt(sum(t * t for t in terms))
    return shares, cis


def outside_blocks(part_results: list, blocks: list, calls: dict | None = None) -> list:
    """The part groups' members outside every block: a group with all of its members outside as it is, one with
    some inside (Llama's final norm, grouped with the layers' norms) as those outside only, counted by ``calls``
    (qualname -> calls per forward pass; 1 each where not given). Such a group used to be left out whole, and
    its outside member's kernels went to glue."""
    prefixes = tuple(q + "." for b in blocks for q in b.members)
    out = []
    for g in part_results:
        outside = [m for m in g.members if not m.startswith(prefixes)]
        if len(outside) == len(g.members):
            out.append(g)
        elif outside:
            out.append(replace(g, members=outside, occurrences=sum((calls or {}).get(m, 1) for m in outside)))
    return out


def block_accounting(block_groups: list, others: list, wm, kernels: tuple):
    """The model by blocks: Accounting with blocks and the components outside them as its parts (``kernels``: the
    profiled pass with those marked, accounting.account_against)."""
    return account_against(block_groups + others, wm, kernels)
