"""The trial state machine of one capture: what each trial's window says, and what to do next.

Pure: it sees the power samples of a window and the GPU time per call of the
launches inside it, never a clock or a GPU, so every rule is tested by feeding
it numbers (tests/test_trials.py).

Note [Trials that adapt]
Two things seen on an H200 make one settle time and one window length wrong for
some captures (docs/measured.md):
- a capture whose power still moves after the settle time: above ~650 W the
  power limiter reacts to the last second's mean, so a feed-forward block that
  follows a cooler capture ramps up for longer than the sensor's settle time
  (BERT-large's output block: +6 % within the first windows). A window whose
  second half differs from its first by more than `unsettled_z` times the
  sample noise (estimated from successive differences, which a trend does not
  inflate) is rejected, and the capture's settle time doubles (up to 4x);
- a capture whose samples swing from sample to sample (the limiter cycling,
  or the sample grid beating with a multi-ms call): 0.2 s windows then differ
  by a few %. Once it has `min_trials` trials with a CV above `target_cv`, its
  window doubles (up to `max_window_s`) and its trials start again, so that all
  the trials of a capture share one window.
Both are per capture: the others keep their short trials.

Note [The limiter's cycle]
A capture that draws the card's power limit alone does not draw a steady power:
the limiter cycles. Measured on an H200 at its 700 W limit (bench/limit_step.py,
results/limit_step.*, 2026-11-27): a GEMM started after a rest drew 802 W in its
first 0.1 s, held 720-727 W until 0.7 s, fell to 584 W at 0.9 s, and went on in
a ~0.9-1.0 s cycle whose 0.1 s bins ran 622-729 W; its mean over the last second
was 693 W. A 0.2-0.8 s window after a 0.4 s settle sat in the first plateau:
every part measured alone at the limit had read 730-754 W, 4-8 % over what it
draws while it runs, and windows at other phases of the cycle made trials differ
(Mistral-7B-2L's LM head: CV 1.8 %). So a capture whose window reads at least
WINDOW_AT_LIMIT of the limit (Rules.power_limit_w) is judged LIMITED, once: its window
becomes LIMIT_CYCLES cycles of the limiter (Rules.limiter_s), its settle time
one cycle, its launches are planned from its calls' time at the limit (slower
than planned alone: the window would not be whole cycles), its kept trials
start again, and the unsettled test no longer applies to it (its power moves by
design; the window covers whole cycles). Measured after (lease E of
docs/measured.md): parts at the limit read 694-696 W, CVs 0.03-0.44 %.

A capture whose trials still vary more than target_cv at max_window_s gets the
same windows of LIMIT_CYCLES cycles, once, as its last restart: its power swings
slower than its window. Seen on an H200 (GPU-e1a7bc38, docs/measured.md): the
whole Phi-2-2L prefill, 480 W on average (its LM head alone at the limit), read
440-510 W from trial to trial in 0.8 s windows at constant clocks and GPU time
(CV 4.98 %).

Note [Trials a restart dropped]
A restart drops a capture's kept trials so that all it reports share one window
(or one launch-latency state). Where the run's budget then ends before the new
trials number two, the capture would report nothing although it was measured:
on GPU-c14a3bfe (results/reproducibility/2026-11-28_110210) BERT-base's and
Llama-3.2-1B's whole models ended their 130 s runs with 0 trials, the parts
beside them measured: unsettled windows had grown their settle time to 1.6 s
and their windows to 2.7 s, and Llama's trials restarted when the state moved
(what each restart dropped was not recorded then). So a restart
keeps the largest set it dropped, and a capture whose last set holds fewer than
two trials reports that one instead (never converged), saying which it is
(Measurement.trials_from). And every set a restart dropped goes into the record
(Measurement.dropped_sets: why, its window, each trial's power, time and
temperature): BERT-base's whole model read 1.4-1.5 % more energy in the one of
two processes whose window had grown to 1.6 s, at the same GPU time (three
cards, docs/measured.md 2026-11-29 evening), and without the dropped trials
nothing said whether the power had moved under the process (its restarts'
cause) or the longer window read it higher. Measured since, in one process on
four H200s (bench/window_length.py): a 1.6 s window reads as a 0.4 s one, so it
was the process (Note [Window length and repeats], bench/reproducibility.py).
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass, field

import numpy as np

from .instances import unroll_for
from .stats import Summary

NOISY = "its trials varied more than target_cv"  # why a restart that doubled the window dropped its trials
MIN_SAMPLES = 3          # a window with fewer samples says nothing: the next trials launch more
MAX_STRETCH = 16         # ... at most this many times more (a sensor that never reports is an error)
MAX_UNROLL = 20_000      # calls per graph launch (K), at most: an unrolled graph's copies are instantiated nodes
MAX_LAUNCHES = 1 << 20   # launches per trial, at most: what a replay times one by one (csrc/replay.hpp)
WINDOW_AT_LIMIT = 0.95   # of the power limit: a window reading this much is at the limit (accounting.AT_LIMIT: a regime)
LIMIT_CYCLES = 3         # limiter cycles a window at the limit covers


class Verdict(enum.Enum):
    SHORT = "too few samples in the window: more launches per trial"
    LOST = "no samples in the window even at the longest trials: counted as failed"
    UNSETTLED = "power still moving within the window: rejected, settle time doubled"
    RESTART = "trials vary more than target_cv: window doubled, trials start again"
    LIMITED = "at the power limit: window and settle time cover the limiter's cycles, trials start again"
    ACCEPTED = "accepted"
    CONVERGED = "accepted; the capture reached its target"


@dataclass(frozen=True)
class Rules:
    """The protocol's settings that judge a window."""

    min_trials: int = 5
    max_trials: int = 40
    target_ci_rel: float = 0.005
    target_cv: float | None = 0.01
    max_window_s: float = 4.0
    max_settle_s: float = 2.0
    unsettled_z: float = 4.0
    power_limit_w: float | None = None  # the card's enforced limit (None or 0: not known, never LIMITED)
    limiter_s: float = 1.0              # the limiter's cycle (Note [The limiter's cycle])


@dataclass
class Trials:
    """One capture's trials: its launch plan, what was accepted, what was rejected."""

    item: object
    name: str
    handle: object
    unroll: int                                   # K: calls per graph launch
    t1: float                                     # s per call, launched singly
    settle_s: float
    window_s: float
    tail_s: float
    instances: tuple = ()                         # the graphs the handle runs in blocks (Note [Graph instances])
    instance_t1: tuple = ()                       # s per call of each, launched singly
    stretch: int = 1                              # x launches, where windows held too few samples
    results: list = field(default_factory=list)   # (ReplayResult, steady window) per trial
    values: list = field(default_factory=list)    # (power_w, time_per_call_s, n_samples, window_s)
    after: list = field(default_factory=list)     # per value: the capture measured just before
    drift: list = field(default_factory=list)     # per value: power drift within its window, relative
    timing: list = field(default_factory=list)    # per value: (launches timed in the window, whole run's s/call)
    temperatures: list = field(default_factory=list)  # per value: the GPU's mean temperature in its window, °C
    converged_at: float = math.nan
    tried: int = 0                                # trials run, rejected and restarted ones included
    failed: int = 0                               # trials whose window held no usable samples
    rejected: list = field(default_factory=list)  # (drift, z, after) of the trials rejected as unsettled
    restarts: int = 0                             # times the window doubled and the trials started again
    at_limit: bool = False                        # judged LIMITED (Note [The limiter's cycle])
    dropped: tuple = ()                           # (why, the kept trials then: _kept()) of the largest set
    dropped_sets: list = field(default_factory=list)  # every set a restart dropped, summarised (dropped_set())

    @property
    def launches(self) -> int:
        """Launches per trial: settle + window + tail of back-to-back calls (at most MAX_LAUNCHES: fit_launches())."""
        return min(MAX_LAUNCHES, self._launches())

    def _launches(self) -> int:
        trial_s = self.settle_s + self.window_s + self.tail_s
        return self.stretch * max(1, math.ceil(trial_s / (self.unroll * self.t1)))

    def fit_launches(self, prepare) -> None:
        """More calls per launch (K) where the next trial's launches would pass MAX_LAUNCHES, which a replay cannot
        time one by one; ``prepare(item, K)``: the backend's, the graph of K calls. A graph that is launch-bound
        alone (a few tiny kernels; a model without its components) runs unrolled far faster than singly: the plan
        learns its time from its first runs (judge()), then lengthens its window, and the launches grow thousands
        of times (GPU-cda91c8e, 2026-11-29: BERT without its components, 0.49 µs a call singly, asked 1.6 M)."""
        if self._launches() > MAX_LAUNCHES and self.unroll < MAX_UNROLL:
            n = max(1, len(self.instances))
            k = unroll_for(min(MAX_UNROLL, math.ceil(self.unroll * self._launches() / MAX_LAUNCHES) + 1), n, MAX_UNROLL)
            self.unroll, self.handle = k, prepare(self.instances or self.item, k)

    @property
    def converged(self) -> bool:
        return not math.isnan(self.converged_at)

    def active(self, rules: Rules) -> bool:
        """Still to be measured: not converged, under max_trials, not tried hopelessly often."""
        return not self.converged and len(self.values) < rules.max_trials and self.tried < 3 * rules.max_trials

    def start_again(self, why: str) -> None:
        """Every kept trial dropped (``why``: a longer window, the power limit, or the card's state moved under
        them: Note [One state per run], launch_state.py); the plan's adaptations (window, settle time, launches)
        stay. The largest set dropped is kept aside (Note [Trials a restart dropped])."""
        if len(self.values) >= 2 and len(self.values) > (len(self.dropped[1][0]) if self.dropped else 0):
            self.dropped = (why, self._kept())
        if self.values:
            self.dropped_sets.append(dropped_set(why, self.values, self.temperatures))
        self.values, self.after, self.drift, self.timing, self.temperatures = [], [], [], [], []
        self.converged_at = math.nan

    def _kept(self) -> tuple:
        """The kept trials: (values, after, drift, timing, temperatures)."""
        return self.values, self.after, self.drift, self.timing, self.temperatures

    def reported(self) -> tuple:
        """(values, after, drift, timing, temperatures, trials_from) the capture reports: its last set of trials,
        or where that holds fewer than two the set a restart dropped (trials_from says so; "" for the last)."""
        if len(self.values) >= 2 or not self.dropped:
            return *self._kept(), ""
        why, kept = self.dropped
        window = float(np.mean([v[3] for v in kept[0]]))
        return (*kept, f"trials dropped when {why} ({len(kept[0])} of {window:.2f} s windows): the run ended before "
                       f"its next ones numbered two")

    def energy(self) -> Summary:
        return Summary.of([pw * tc for pw, tc, _, _ in self.values])

    def judge(self, power_w: np.ndarray, window_s: float, t_call: float, n_launches: int, run_t_call: float,
              after: str, rules: Rules, now_s: float, temperature_c: float = math.nan) -> Verdict:
        """Takes one trial's window (its samples' power, W; GPU time per call of its launches, s; the GPU's
        temperature in it, °C) and updates the plan; ``now_s`` is the run's elapsed time, kept as the time
        to converge."""
        if power_w.size < MIN_SAMPLES:
            if 0 < run_t_call < 0.5 * self.t1:
                # Unrolled, the calls ran far faster than one call launched singly (a graph of a few tiny
                # kernels is launch-bound alone): plan the next trials from the time they really took.
                self.t1 = run_t_call
                return Verdict.SHORT
            if self.stretch >= MAX_STRETCH:
                self.failed += 1
                return Verdict.LOST
            self.stretch *= 2
            return Verdict.SHORT
        if not self.at_limit and rules.power_limit_w and power_w.mean() >= WINDOW_AT_LIMIT * rules.power_limit_w:
            self.at_limit = True
            if run_t_call > 0:  # slowed at the limit: plan the longer trials from the calls' time at the limit
                self.t1 = run_t_call
            self.window_s = max(self.window_s, LIMIT_CYCLES * rules.limiter_s)
            self.settle_s = max(self.settle_s, rules.limiter_s)
            self.start_again("the window read the power limit")
            return Verdict.LIMITED
        drift, z = drift_of(power_w)
        if not self.at_limit and abs(z) > rules.unsettled_z and abs(drift) > 0.005 and \
                self.settle_s < rules.max_settle_s:
            self.rejected.append((drift, z, after))
            self.settle_s = min(2 * self.settle_s, rules.max_settle_s)
            return Verdict.UNSETTLED
        self.values.append((float(power_w.mean()), t_call, int(power_w.size), window_s))
        self.timing.append((n_launches, run_t_call))
        self.after.append(after)
        self.drift.append(drift)
        self.temperatures.append(temperature_c)
        e = self.energy()
        noisy = rules.target_cv is not None and e.n >= rules.min_trials and e.cv > rules.target_cv
        cycles_s = LIMIT_CYCLES * rules.limiter_s
        longer = 2 * self.window_s <= rules.max_window_s * (1 + 1e-9)
        if noisy and (longer or self.window_s < cycles_s):
            self.window_s = 2 * self.window_s if longer else cycles_s  # then whole cycles of a slower swing
            self.restarts += 1
            self.start_again(f"{NOISY} (CV {e.cv:.2%})")
            return Verdict.RESTART
        if e.n >= rules.min_trials and e.ci95_rel <= rules.target_ci_rel:
            self.converged_at = now_s
            return Verdict.CONVERGED
        return Verdict.ACCEPTED


def dropped_set(why: str, values: list, temperatures: list) -> dict:
    """What a restart dropped, as a record keeps it (Note [Trials a restart dropped]): why, its window (s) and
    each trial's power (W), GPU time per call (s) and temperature (°C)."""
    return {"why": why, "window_s": float(np.mean([v[3] for v in values])),
            "trial_power_w": [float(v[0]) for v in values], "trial_time_per_call_s": [float(v[1]) for v in values],
            "trial_temperature_c": [float(c) for c in temperatures]}


def drift_of(power_w: np.ndarray) -> tuple[float, float]:
    """How much a window's power still moves: (drift, z).

    drift = (mean of its 2nd half - mean of its 1st half) / mean; z = that
    difference over its standard error, with the sample noise estimated from
    successive differences (von Neumann), which a steady trend does not inflate
    but sample-to-sample swings do (Note [Trials that adapt]).
    """
    n = power_w.size
    half = n // 2
    if half == 0:
        return math.nan, math.nan
    diff = float(power_w[half:].mean() - power_w[:half].mean())
    sigma = math.sqrt(float(np.mean(np.diff(power_w) ** 2)) / 2) if n > 1 else math.nan
    se = sigma * math.sqrt(1 / half + 1 / (n - half))
    z = diff / se if se > 0 else (math.inf if diff else 0.0)
    return diff / float(power_w.mean()), z
