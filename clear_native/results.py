"""What measurements give back: the result types, and one writer for tables, CSV and JSON.

Units are in the field names (J, W, s, °C, MHz) or beside them. Every result
converts to plain JSON (``to_dict``), and the tables are markdown.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from .launch_state import launch_state_line
from .tables import blocks_table, context_table, glue_line, paced_table
from .writers import coverage_pc as _pc, csv_text, json_text, markdown_table, plain


# --------------------------------------------------------------------------- measure()


@dataclass
class Measurement:
    """Energy per call of one capture. Units are in the names (J, W, s, °C, MHz)."""

    name: str
    energy_per_call_j: float          # mean over trials: mean steady power x GPU time per call
    energy_per_call_ci95_j: float     # half-width of the 95 % confidence interval of that mean
    dynamic_energy_per_call_j: float  # (mean power - baseline power) x GPU time per call
    baseline: str                     # which power "dynamic" is above: "awake_idle" or "idle"
    baseline_power_w: float
    idle_power_w: float               # resting, measured in this run
    awake_idle_power_w: float         # launching empty kernels, measured in this run
    gpu_time_per_call_s: float
    mean_power_w: float
    trials: int
    cv: float                         # across trials, of energy per call
    ci95_rel: float
    unroll: int                       # copies of the capture per graph launch (K)
    launches_per_trial: int           # R
    steady_window_s: float            # seconds of samples used per trial (mean)
    samples_per_trial: float
    temperature_c: tuple              # (min, max) over the trials' windows
    sm_clock_mhz: tuple               # (min, max)
    clock_event_reasons: list         # reasons NVML gave in the windows (throttling, idle...)
    converged: bool                   # CI within the target
    time_to_target_s: float           # wall time from the run's start until it converged (NaN if not)
    eager: bool = False               # True: replayed from a Python loop (capture failed)
    trial_energy_per_call_j: list = field(default_factory=list)
    trial_power_w: list = field(default_factory=list)
    trial_time_per_call_s: list = field(default_factory=list)
    trial_after: list = field(default_factory=list)       # the capture whose trial ran just before each trial
    trial_drift_rel: list = field(default_factory=list)   # (2nd half - 1st half of the window's samples) / mean
    trial_window_launches: list = field(default_factory=list)  # launches timed inside the window (0: whole run used)
    trial_run_time_per_call_s: list = field(default_factory=list)  # over the whole trial, settle and tail included
    settle_s: float = math.nan        # settle time its last trials used (Note [Trials that adapt])
    rejected_trials: list = field(default_factory=list)  # (drift, z, after) of windows rejected as still moving
    window_restarts: int = 0          # times its window doubled and its trials started again
    failed_trials: int = 0            # trials lost to a sampler error or a window without samples
    trial_temperature_c: list = field(default_factory=list)  # the GPU's mean temperature in each trial's window
    trials_from: str = ""             # "": its last set of trials; else the set a restart dropped, and why
    dropped_sets: list = field(default_factory=list)  # each set a restart dropped (trials.dropped_set)
    # Kernels one call launches in its graph (NaN: eager, or a backend that cannot count them). In the card's slow
    # launch-latency state a call lasts this many times the probe's change longer (Note [Launch-latency state]).
    graph_kernels_per_call: float = math.nan
    graph_instances: int = 1  # graphs of its call, a block of calls each (Note [Graph instances], instances.py)
    instance_time_per_call_s: list = field(default_factory=list)  # GPU time per call of each, launched singly


@dataclass
class MeasureRun:
    """One measure() call: its measurements, baselines, cross-check and settings."""

    measurements: list
    gpu: dict
    profile: dict
    idle_power_w: float
    awake_idle_power_w: float
    counter_energy_j: float           # energy counter over the run's sampled span
    sample_energy_j: float            # integral of the driver's samples over the same span
    counter_vs_samples_rel: float     # (counter - samples) / samples
    samples_lost: int
    wall_s: float
    stop_reason: str
    settings: dict
    # The card's launch-latency state before and after the trials (Note [Launch-latency state]), [] with no probe:
    # dicts with latency_s, the GPU time per tiny kernel in a graph (NaN: not read), and the clocks and PCIe link.
    launch_state: list = field(default_factory=list)
    # The GPU's temperature while awake idle was measured (°C; NaN: not read): with awake_idle_power_w, across
    # runs, how the card's static power moves with its temperature (its leakage; docs/measured.md, 2026-11-28).
    awake_idle_temperature_c: float = math.nan
    # Awake idle before the warm-up too (the card as it came), and the leakage slope between the two (W/°C; NaN
    # where they lie < 2 °C apart): Note [Leakage measured in every run], thermal.py.
    cool_awake_idle_power_w: float = math.nan
    cool_awake_idle_temperature_c: float = math.nan
    leakage_w_per_c: float = math.nan

    def __getitem__(self, key):
        if isinstance(key, int):
            return self.measurements[key]
        for m in self.measurements:
            if m.name == key:
                return m
        raise KeyError(f"no measurement named {key!r}; have {[m.name for m in self.measurements]}")

    def to_dict(self) -> dict:
        return plain(self)

    def to_json(self, path=None) -> str:
        return json_text(self, path)

    def table(self) -> str:
        rows = [[f"{m.name}{' (eager)' if m.eager else ''}", f"{m.energy_per_call_j * 1e3:.4g} mJ",
                 f"{m.ci95_rel * 100:.2f} %", f"{m.dynamic_energy_per_call_j * 1e3:.4g} mJ",
                 f"{m.gpu_time_per_call_s * 1e6:.2f} µs", f"{m.mean_power_w:.1f} W", m.trials,
                 f"{m.cv * 100:.2f} %", m.unroll] for m in self.measurements]
        lines = markdown_table(("capture", "energy/call", "±95 %", "dynamic/call", "GPU time/call", "power",
                                "trials", "CV", "K"), rows)
        lines.append(f"\nidle {self.idle_power_w:.1f} W, awake idle {self.awake_idle_power_w:.1f} W; "
                     f"counter vs samples {self.counter_vs_samples_rel * 100:+.2f} %; {self.stop_reason}")
        lines += [f"{m.name}: {m.trials_from}" for m in self.measurements if m.trials_from]
        return "\n".join(lines + launch_state_line(self.launch_state))


# --------------------------------------------------------------------------- measure_model()


@dataclass
class GroupResult:
    """One component group of a model, measured alone (per call: one occurrence in the forward pass)."""

    name: str
    kind: str
    members: list
    occurrences: int                 # calls per forward pass
    gpu_time_per_call_s: float
    energy_per_call_j: float
    dynamic_energy_per_call_j: float
    cv: float
    ci95_rel: float
    trials: int
    flops: int                       # per call
    bytes_min: int                   # per call: parameters + inputs + outputs
    j_per_flop: float                # energy per call / FLOPs (NaN without FLOPs)
    share: float                     # occurrences x energy per call / whole-model energy
    eager: bool = False              # measured from a Python loop (its capture failed)
    l2_copies: int = 1               # distinct copies called in turn per replay (Note [Cold L2])
    trial_energy_per_call_j: list = field(default_factory=list)
    trial_power_w: list = field(default_factory=list)    # mean power of each trial's window
    trial_after: list = field(default_factory=list)      # the capture measured just before each trial
    trial_drift_rel: list = field(default_factory=list)  # power drift within each trial's window
    mean_power_w: float = math.nan
    temperature_c: tuple = ()        # (min, max) over its trials' windows
    sm_clock_mhz: tuple = ()         # (min, max)
    clock_event_reasons: list = field(default_factory=list)  # throttling NVML reported in its windows
    settle_s: float = math.nan       # the settle time its last trials used (Note [Trials that adapt])
    rejected_trials: int = 0         # windows rejected as still moving
    window_restarts: int = 0         # times its window doubled and its trials started again
    failed_trials: int = 0           # windows that held no samples
    trial_temperature_c: list = field(default_factory=list)  # the GPU's mean temperature in each trial's window
    unroll: int = 0                  # K: calls per graph launch its trials used (Measurement.unroll)
    trial_time_per_call_s: list = field(default_factory=list)  # GPU time per call in each trial's window
    trials_from: str = ""            # Measurement.trials_from: "" or the set a restart dropped
    dropped_sets: list = field(default_factory=list)  # Measurement.dropped_sets
    graph_kernels_per_call: float = math.nan  # Measurement.graph_kernels_per_call, for one copy's call
    graph_instances: int = 1         # Measurement.graph_instances (Note [Graph instances])
    instance_time_per_call_s: list = field(default_factory=list)  # each instance's, launched singly, one copy's call

    @property
    def energy_total_j(self) -> float:
        return self.occurrences * self.energy_per_call_j


@dataclass
class BlockResult:
    """An enclosing block (a repeated layer) measured alone, beside its parts (Note [Blocks and interaction]).
    Energies are per call of the block (J); ``parts`` maps a part group to its calls per block call."""

    name: str
    members: list
    occurrences: int                 # block calls per forward pass
    energy_per_call_j: float
    ci95_j: float                    # 95 % CI half-width of energy_per_call_j
    cv: float
    trials: int
    gpu_time_per_call_s: float
    mean_power_w: float
    sm_clock_mhz: tuple
    clock_event_reasons: list
    l2_copies: int
    parts: dict                      # part group -> calls per block call
    parts_energy_j: float            # sum of the parts alone, per block call
    parts_ci95_j: float
    interaction_j: float             # block - parts
    interaction_ci95_j: float
    attributed_j: dict               # part group -> its share of the block (parts scaled to add up to it)
    attributed_ci95_j: dict = field(default_factory=dict)  # part group -> its share's 95 % CI half-width
    attributed_basis: str = "alone"  # what the shares are in proportion to: "in context" or "alone"

    @property
    def interaction_rel(self) -> float:
        return self.interaction_j / self.energy_per_call_j if self.energy_per_call_j else math.nan


@dataclass
class Accounting:
    """Where the whole model's energy goes (per forward pass)."""

    model_energy_j: float
    model_time_s: float
    components_energy_j: float
    components_time_s: float
    glue_time_s: float
    glue_energy_j: float
    gaps_time_s: float
    gaps_energy_j: float
    coverage: float                  # components / model
    explained_coverage: float        # (components + glue + gaps) / model
    glue_ops: list = field(default_factory=list)  # (op, µs per forward): the largest glue, from the profiled pass


@dataclass
class InContext:
    """One component group's cost inside the model: the model minus the model without the group."""

    name: str
    occurrences: int
    removed_nodes: int               # graph nodes its calls added (all occurrences, all copies)
    energy_per_call_j: float         # (model - model without it) / occurrences
    energy_per_call_ci95_j: float    # 95 % CI half-width of that difference (both means' CIs combined)
    gpu_time_per_call_s: float       # (model time - time without it) / occurrences
    isolated_ratio: float            # in-context / isolated energy per call
    share: float                     # occurrences x energy per call / model energy
    without_power_w: float           # mean power of the model without it
    output_max_abs_diff: float = math.nan  # the model's output without it vs with it (0: the same work)

    @property
    def mean_power_w(self) -> float:
        t = self.gpu_time_per_call_s
        return self.energy_per_call_j / t if t > 0 else math.nan


@dataclass
class ContextAccounting:
    """The model's energy per forward pass, from its own graph with parts removed."""

    model_energy_j: float            # the in-context graph, whole (Note [The in-context graph is its own baseline])
    components_energy_j: float       # sum of the groups' in-context energies
    rest_energy_j: float             # the model without any component: glue and gaps, measured (NaN if not)
    rest_time_s: float
    interaction_energy_j: float      # model - components - rest
    coverage: float                  # components / model
    explained_coverage: float        # (components + rest) / model
    layout_rel: float = math.nan     # (this graph's energy - the model's usual capture's) / the latter


@dataclass
class ModelReport:
    """measure_model()'s answer: every group, the whole model, and how they add up."""

    model: str
    mode: str
    inputs: dict                     # shapes and dtypes
    groups: list                     # GroupResult
    whole: dict                      # the whole model's Measurement, as a dict
    accounting: Accounting
    failures: list                   # (component, reason): not measured
    run: dict                        # gpu, profile, settings, counter check of the measure run
    wall_s: float
    settings: dict = field(default_factory=dict)
    in_context: list = field(default_factory=list)       # InContext per group (measure_model(in_context=True))
    context_accounting: ContextAccounting | None = None
    blocks: list = field(default_factory=list)           # BlockResult per block group (Note [Blocks and interaction])
    block_accounting: Accounting | None = None           # the model by blocks + components outside them
    regime_mismatch: list = field(default_factory=list)  # (name, why): measured in another clock regime than the model
    paced: dict = field(default_factory=dict)  # rows, accounting, block_accounting: Note [At the model's power]

    @property
    def coverage(self) -> float:
        return self.accounting.coverage

    @property
    def explained_coverage(self) -> float:
        return self.accounting.explained_coverage

    def to_dict(self) -> dict:
        return plain(self)

    def to_json(self, path=None) -> str:
        return json_text(self, path)

    _CSV = ("name", "kind", "occurrences", "gpu_time_per_call_s", "energy_per_call_j", "dynamic_energy_per_call_j",
            "cv", "ci95_rel", "trials", "flops", "bytes_min", "j_per_flop", "share", "eager", "l2_copies")

    _CONTEXT_CSV = ("energy_per_call_j", "energy_per_call_ci95_j", "gpu_time_per_call_s", "isolated_ratio")

    _PACED_CSV = ("energy_per_call_j", "ci95_j", "gpu_time_per_call_s", "gap_s", "ratio", "freed")

    def rows(self) -> list:
        """One dict per group: the isolated columns, and the in-context ones (prefixed context_) and the paced ones
        (prefixed paced_: Note [At the model's power]) where measured."""
        ctx = {r.name: r for r in self.in_context}
        paced = {r.name: r for r in self.paced.get("rows", ())}
        rows = []
        for g in self.groups:
            row = {c: getattr(g, c) for c in self._CSV}
            if ctx:
                r = ctx.get(g.name)
                row.update({f"context_{c}": getattr(r, c) if r else math.nan for c in self._CONTEXT_CSV})
            if paced:
                r = paced.get(g.name)
                row.update({f"paced_{c}": getattr(r, c) if r else math.nan for c in self._PACED_CSV})
            rows.append(row)
        return rows

    def to_csv(self, path=None) -> str:
        return csv_text(self.rows(), self._CSV, path)

    def to_dataframe(self):
        import pandas as pd  # optional: only for this conversion

        return pd.DataFrame(self.rows())

    def table(self) -> str:
        a = self.accounting
        lines = [f"{self.model} ({self.mode}, {self.inputs}) on {self.run.get('gpu', {}).get('name', '?')}", ""]
        rows = [[f"{g.name}{' (eager)' if g.eager else ''}{f' (x{g.l2_copies} copies)' if g.l2_copies > 1 else ''}",
                 g.kind, g.occurrences, f"{g.gpu_time_per_call_s * 1e6:.2f} µs", f"{g.energy_per_call_j * 1e3:.4g} mJ",
                 f"{g.cv * 100:.2f} %", f"{g.flops:.3g}", f"{g.j_per_flop:.3g}", f"{g.share * 100:.1f} %"]
                for g in self.groups]
        rows.append(["whole model", "", 1, f"{a.model_time_s * 1e6:.1f} µs", f"{a.model_energy_j * 1e3:.4g} mJ",
                     f"{self.whole.get('cv', math.nan) * 100:.2f} %", "", "", "100 %"])
        lines += markdown_table(("component", "kind", "×", "GPU time/call", "energy/call", "CV", "FLOPs", "J/FLOP",
                                 "share"), rows)
        if self.settings.get("whole_model_eager"):
            lines += ["", "coverage not computed: the whole model ran as a Python loop "
                      f"({self.settings.get('whole_model_eager_reason') or 'not captured'}), no yardstick for its parts"]
        lines += ["", f"coverage {_pc(a.coverage)}; glue {a.glue_time_s * 1e6:.1f} µs / "
                      f"{a.glue_energy_j * 1e3:.3g} mJ; gaps {a.gaps_time_s * 1e6:.1f} µs / "
                      f"{a.gaps_energy_j * 1e3:.3g} mJ; explained coverage {_pc(a.explained_coverage)}"]
        lines += [glue_line(a)] if a.glue_ops else []
        lines += [f"{n}: {w}" for n, w in [(g.name, g.trials_from) for g in self.groups]
                  + [("whole model", self.whole.get("trials_from", ""))] if w]
        if self.context_accounting is not None:
            lines += context_table(self)
        if self.blocks:
            lines += blocks_table(self)
        if self.paced:
            lines += paced_table(self)
        lines += [f"measured in another regime than the model: {name}: {why}" for name, why in self.regime_mismatch]
        lines += [f"not measured: {name}: {reason}" for name, reason in self.failures]
        return "\n".join(lines + launch_state_line(self.run.get("launch_state", [])))
