"""Graph instances: one call captured several times, each into its own memory, measured as their mean.

Note [Graph instances]
~~~~~~~~~~~~~~~~~~~~~~
Measured on an H200 (GPU-10ca9bd3-ce45-30c9-6fd5-1bf1362de21f, driver 580.159.04, 2026-11-29, two fresh processes
on one stream): six captures of BERT-base's layer-0 attention (bf16, 8 x 128 tokens) on the same module and the
same inputs ran 32.99-33.40 µs a call in one process (1.2 % apart) and 32.90-33.65 µs in the other (2.3 %), each
graph read as the median of 5 interleaved rounds of 3000 calls; the fastest and the slowest were the same
captures in both processes (they ran one after the other, alone on the card). Six deep copies with their own
inputs spread alike (1.0 / 1.2 %); so did the intermediate part (0.6-1.6 %) and the embeddings (1.1-1.7 %).
Meanwhile a part's trials inside one process held its GPU time to +-0.05 %, and two processes measuring it side
by side read it 0.8-1.0 % apart, its energy with it (protocol 12: results/reproducibility/2026-11-29_052856 and
_064442). So the offset is fixed when the graph is captured: what
differs between two captures of one call is where its intermediates and outputs land (every capture has its own
memory pool), and no number of trials of one graph averages it out; a repeat in a fresh process draws it again.

So measure(instances=n) takes each capture's number over n graphs of its call (recapture(): the capture itself and
fresh captures of its callable on the same arguments), all of them in every launch (UnrolledGraph over the
instances; in blocks since protocol 14, below): the offset of their mean should shrink as 1 / sqrt(n). A launch
holds ~2 ms of calls (measure()'s launch_s), so a call longer than that over n gets fewer (BERT-base's whole model,
0.8 ms: three; a call of 2 ms or more: one): a long call runs many kernels on many intermediates, whose placements
average within the call (that whole model, 154 kernels, moved 0.2-0.6 % between two processes where its 35 µs
attention moved 0.8-1.0 %), and fewer spare the largest calls' memory and capture time. Each instance's GPU time,
launched singly, is kept with the measurement (Measurement.instance_time_per_call_s), so a report can state this
layer. Instances cost memory (a pool of intermediates each): recapture() stops adding them where free memory would
fall below twice what one took plus a margin, and says so. A capture that is eager, or is not a plain capture of a
callable (a pruned graph of the model without a group: measure_model's in_context), is its own one instance; the
simulated backend places its calls' instances as this note says (SimulatedBackend.instances).

Measured with it (GPU-32d382d1-ea10-41d1-2e47-a3f3b5da6679, 2026-11-29, code d32e846, BERT-base b8 x 128, two
processes side by side, instances=8: results/reproducibility/2026-11-29_070853): the parts' GPU time moved at most
0.34 % between the processes (attention -0.19 %, where protocol 12 had read +1.02 % and +0.79 % on two other
cards), their energy at most 0.89 % (the intermediate part, whose die ran 2.5 °C cooler in the second process),
0.26 % over the five pairs whose GPU time and temperature held. Inside each process the instances, launched
singly, spread 0.1-1.2 %. But on that card, in one process, six groups of 8 graphs of a plain attention (no cold
copies) unrolled in turn spread 0.70 %, six single graphs 0.54 %, and the groups ran 1.0 % slower (intermediate:
0.37 % against 0.14 %, 2.6 % slower; results/launch_state-runs/2026-11-29_0716_graph_instance_groups_*),
presumably because a call on other intermediates than the last loses the L2 hits that reused buffers give, which
a model's layers, reusing their freed blocks, keep. measure_model's cold copies (Note [Cold L2]) call one
instance 22-27 times in a row and lose little of it; a plain capture loses it all.

So the instances run in blocks (protocol 14): copy i of a launch of K calls is instance i n / K, each instance's
calls in a row. On GPU-3a6067ee-d777-682f-2a5a-e1ce55cf6dd3 (2026-11-29, one process, K = 64, six graphs of each
kind, medians of 5 interleaved rounds; results/launch_state-runs/2026-11-29_0855_instance_blocks_GPU-3a6067ee.txt)
BERT-base's layer-0 intermediate part spread 0.63 % (sd 0.22 %) as single graphs, 0.73 % (sd 0.32 %) as groups of
8 in turn, 2.8 % slower, and 0.14 % (sd 0.05 %) as groups of 8 in blocks, 0.25 % slower; the attention part
1.05 / 0.54 / 0.61 % (sd 0.40 / 0.20 / 0.21 %), 1.3 and 1.1 % slower. ``instances`` stays 1 by default
(protocol 12's number): with it, two processes side by side read BERT-base's parts within 0.34 % on that card
(results/reproducibility/2026-11-29_084238), and a light part's GPU time is what a model's layers keep.

And measured in blocks across processes, it did worse (docs/measured.md, 2026-11-29 afternoon): with instances=8,
BERT-base, GPT-2 and Llama-3.2-1B decode side by side on four H200s of one host (results/reproducibility/
2026-11-29_133857) repeated within 3.00 % (1.57 % where time and temperature held and both readings reached their
target); Llama's whole model, itself one graph, ran 1.6-2.2 % faster in the second process on all four cards, and
on a fifth card 1.6 % slower with instances=8 and 0.27 % apart with 1, one run after the other
(2026-11-29_140715, _140915). The whole model's single call was timed (_plan, protocol.py) before its process made
any instance of a part, so what differed was not that process's own instances but the other process's memory,
eight instances of each part, held on the card while the second process set up (Note [Repeats side by side]):
the second process's whole model read 2154-2163 µs on the four cards and 2236 on the fifth, the first processes'
2187-2210, and at one graph per part both 2196-2217. One graph per part is the default for that reason too.
"""

from __future__ import annotations

import math

FREE_MARGIN_BYTES = 1 << 30  # free memory left after the instances at least, beyond twice what one took


def recapture(made: tuple, n: int, say=lambda msg: None) -> tuple:
    """``made`` (a capture, then the instances of it made before) and fresh captures of its callable on its arguments
    (graph_capture.capture), each into its own memory pool, up to ``n`` in all; fewer where memory runs short or a
    capture fails (``say`` tells why). Eager captures and what is not a graph_capture.Capture stay alone."""
    from .graph_capture import Capture, capture

    cap = made[0]
    if n <= len(made) or not isinstance(cap, Capture) or cap.eager:
        return made
    import torch

    made, took = list(made), 0
    for i in range(len(made), n):
        free, _ = torch.cuda.mem_get_info(cap.device)
        if free < 2 * took + FREE_MARGIN_BYTES:
            say(f"{cap.name}: {len(made)} graph instances, not {n}: {free / 2**30:.1f} GiB free, one took up to "
                f"{took / 2**30:.2f} GiB")
            break
        before = torch.cuda.memory_reserved(cap.device)
        try:
            made.append(capture(cap.fn, *cap.args, name=f"{cap.name} #{i}", **cap.kwargs))
        except Exception as exc:  # noqa: BLE001 - the instances made so far measure it; the reason is said
            say(f"{cap.name}: {len(made)} graph instances, not {n}: {type(exc).__name__}: {str(exc)[:200]}")
            break
        took = max(took, torch.cuda.memory_reserved(cap.device) - before)
    return tuple(made)


def unroll_for(unroll: int, instances: int, max_unroll: int) -> int:
    """Calls per launch: ``unroll`` rounded up to a whole number of rounds of the instances (each as often in
    every launch), at most ``max_unroll`` rounded down to whole rounds (at least one round)."""
    k = instances * math.ceil(unroll / instances)
    return max(instances, min(k, instances * (max_unroll // instances)))


def spread_rel(times_s) -> float:
    """(max - min) / mean of the instances' GPU times per call; NaN for fewer than two."""
    t = [x for x in times_s if math.isfinite(x)]
    return (max(t) - min(t)) / (sum(t) / len(t)) if len(t) >= 2 else math.nan
