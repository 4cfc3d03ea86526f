"""The native core on a real GPU (marker `gpu`: skipped, with the reason, where there is none)."""

import os
import signal
import statistics
import threading
import time

import numpy as np
import pytest

import clear_native as cn

pytestmark = pytest.mark.gpu


@pytest.fixture(scope="module")
def torch():
    import torch

    torch.cuda.init()
    return torch


@pytest.fixture(scope="module")
def matmul_capture(torch):
    a = torch.randn(1024, 1024, device="cuda", dtype=torch.bfloat16)
    b = torch.randn(1024, 1024, device="cuda", dtype=torch.bfloat16)
    return cn.capture(torch.matmul, a, b, name="matmul1024")


def test_gpu_identity():
    info = cn.gpu_info(0)
    assert info.name and info.uuid.startswith("GPU-")
    assert info.driver_version
    assert info.multiprocessors > 0
    assert info.cuda_runtime_version >= 12000


def test_real_sampler_is_lossless_and_on_the_monotonic_clock():
    with cn.Sampler(device=0) as s:
        time.sleep(3.0)
    r = s.result
    assert r.samples_lost == 0
    assert np.all(np.diff(r.power_wall_us) > 1000)  # no sample twice, re-stamped or not
    assert r.power_mw.size >= 3.0 / 0.05  # a sample every ~20 ms
    assert 0.005 < r.median_sample_period_s < 0.05
    assert np.all(np.diff(r.power_t_ns) > 0)
    # Stamps mapped from the wall clock land inside the window (± one period).
    assert r.power_t_ns[0] >= r.start_ns - 50_000_000 and r.power_t_ns[-1] <= r.stop_ns + 50_000_000
    assert np.all(r.power_w > 10) and np.all(r.power_w < 2000)
    assert np.isfinite(r.temperature_c).all() and np.isfinite(r.sm_clock_mhz).all()
    assert r.energy_mj.size >= 3 and np.all(np.diff(r.energy_mj.astype(np.int64)) >= 0)


def test_real_sampler_detects_a_starved_drain():
    # Drain every 4 s: the driver keeps ~2.4 s, so samples must be reported lost.
    s = cn.Sampler(device=0, drain_interval_s=4.0)
    s.start()
    time.sleep(5.0)
    r = s.stop()
    assert r.samples_lost > 20
    assert r.gap_overflow.any()


def test_replay_counts_calls_and_times_them(torch, matmul_capture):
    c = matmul_capture
    single = cn.replay(c.exec_handle, 200)
    assert single.launches == single.calls == 200
    assert single.gpu_time_s > 0
    assert single.host_end_ns > single.host_start_ns
    # 1024^3 bf16 is ~2.1 GFLOP: a few µs to tens of µs per call on Hopper.
    assert 1e-6 < single.gpu_time_per_call_s < 1e-3
    unrolled = cn.UnrolledGraph(c.graph_handle, 16)
    u = cn.replay(unrolled, 20)
    assert u.calls == 320
    assert u.gpu_time_per_call_s <= single.gpu_time_per_call_s * 1.05
    # The replayed graph computes what the callable computes.
    a, b = c.args
    torch.testing.assert_close(c.outputs, a @ b)
    # Stamped launches: one end per launch, rising, the last at the run's GPU time; the window
    # of the middle half times about the same per call as the whole run.
    stamped = cn.replay(unrolled, 200, stamp_launches=True)
    ends = np.array(stamped.launch_end_s)
    assert ends.size == 200 and (np.diff(ends) > 0).all()
    assert ends[-1] == pytest.approx(stamped.gpu_time_s, rel=0.02)
    span = stamped.host_end_ns - stamped.host_start_ns
    t_mid, n_mid = stamped.window_time_per_call_s(stamped.host_start_ns + span // 4,
                                                  stamped.host_end_ns - span // 4)
    assert 80 <= n_mid <= 110
    assert t_mid == pytest.approx(stamped.gpu_time_per_call_s, rel=0.05)


def test_an_unrolled_graph_of_instances_runs_each_in_turn_and_the_backend_in_blocks(torch):
    # Note [Graph instances]: copy i of the unrolled graph is instance i mod n; each instance its own capture,
    # adding one to its own counter: a launch of 7 copies over 3 instances runs them 3, 2, 2 times; two, 6, 4, 4.
    counters = [torch.zeros(4, device="cuda") for _ in range(3)]
    caps = [cn.capture(lambda y=y: y.add_(1), name=f"add{i}") for i, y in enumerate(counters)]
    for y in counters:
        y.zero_()  # the capture's eager calls added to it
    graph = cn.UnrolledGraph([c.graph_handle for c in caps], 7)
    assert graph.instances == 3 and graph.copies == 7
    r = cn.replay(graph, 2)
    assert r.calls == 14
    torch.cuda.synchronize()
    assert [float(y[0]) for y in counters] == [6.0, 4.0, 4.0]
    with pytest.raises(ValueError, match="non-empty sequence"):
        cn.UnrolledGraph([], 2)
    # The backend's instances: fresh captures of the call, each writing its own output, kept for the next ask.
    from clear_native.backend import GpuBackend

    backend = GpuBackend(0)
    x = torch.randn(256, 256, device="cuda")
    cap = cn.capture(torch.mul, x, x, name="square")
    made = backend.instances(cap, 3)
    assert made[0] is cap and len(made) == 3 and backend.instances(cap, 2) == made[:2]
    assert len({c.outputs.data_ptr() for c in made}) == 3
    cn.replay(backend.prepare(made, 6), 1)
    torch.cuda.synchronize()
    for c in made:
        torch.testing.assert_close(c.outputs, x * x)
    # prepare() runs the instances in blocks (0 0 1 1 2 2), each keeping its own L2 hits: each instance copies a
    # shared count, then adds one to it, so what it copied last says where its calls ran (in turn: 3, 4, 5).
    count, seen = torch.zeros(1, device="cuda"), [torch.zeros(1, device="cuda") for _ in range(3)]
    order = tuple(cn.capture(lambda o=o: (o.copy_(count), count.add_(1)), name=f"step{i}") for i, o in enumerate(seen))
    count.zero_()
    blocks = backend.prepare(order, 6)
    assert blocks.instances == 3 and blocks.copies == 6
    cn.replay(blocks, 1)
    torch.cuda.synchronize()
    assert [float(o[0]) for o in seen] == [1.0, 3.0, 5.0] and float(count[0]) == 6.0


def test_replay_is_interruptible(torch, matmul_capture):
    timer = threading.Timer(0.3, lambda: os.kill(os.getpid(), signal.SIGINT))
    t0 = time.monotonic()
    timer.start()
    with pytest.raises(KeyboardInterrupt):
        cn.replay(matmul_capture.exec_handle, 5_000_000)  # far longer than the test
    assert time.monotonic() - t0 < 5.0
    torch.cuda.synchronize()


def test_calibration_kernel_duration_and_power(torch):
    sms = cn.gpu_info(0).multiprocessors
    with cn.Sampler(device=0) as s:
        time.sleep(0.3)
        load = cn.calibration_load(0.8, sms)
        time.sleep(0.3)
        awake = cn.awake_idle(0.5)
    assert load.gpu_time_s == pytest.approx(0.8, rel=0.02)
    assert (load.host_end_ns - load.host_start_ns) * 1e-9 == pytest.approx(0.8, rel=0.05)
    assert awake.gpu_time_s == pytest.approx(0.5, rel=0.1) and awake.launches > 1000
    t_on, t_off = load.host_start_ns, load.host_end_ns
    r = s.result
    idle = r.mean_power_w(r.start_ns, t_on)
    loaded = r.mean_power_w(t_on + 300_000_000, t_off)
    assert loaded > idle + 50  # all SMs busy draws far more than idle


def test_bad_handles_and_arguments(torch):
    with pytest.raises(ValueError, match="graph_exec"):
        cn.replay(0, 10)
    with pytest.raises(ValueError, match="launches"):
        cn.replay(1, 0)
    with pytest.raises(ValueError, match="sms"):
        cn.calibration_load(0.1, 10_000)
    with pytest.raises(cn.CaptureError, match="not on a CUDA device"):
        cn.capture(torch.matmul, torch.ones(2, 2), torch.ones(2, 2))
    x = torch.ones(4, device="cuda")

    def waits(t):  # waits for the GPU inside the call: no value to replay, so it cannot be captured
        torch.cuda.current_stream(t.device).synchronize()
        return t * 2

    with pytest.raises(cn.CaptureError, match="synchronises"):
        cn.capture(waits, x)
    eager = cn.capture(waits, x, eager_fallback=True)
    assert eager.eager and "synchronises" in eager.reason and "test_gpu.py" in eager.reason  # says where
    # A tensor made from host data inside the call is a constant of the graph (Note [Host reads replayed]).
    made = cn.capture(lambda t: t + torch.tensor([1.0, 2.0, 3.0, 4.0], device=t.device), x)
    assert not made.eager and made.meta["host_constants"] == 1
    with pytest.raises(cn.CaptureError, match="no kernel"):
        cn.capture(lambda t: t.nonzero(), x)  # only a host read, replayed: nothing left to measure
    with pytest.raises(cn.CaptureError, match="no graph"):
        eager.exec_handle
    # Rejected before capturing: PyTorch's CUDA RNG still works afterwards.
    assert torch.randn(8, device="cuda").isfinite().all()


def test_a_call_that_reads_device_values_on_the_host_is_captured(torch):
    # Note [Host reads replayed]: a branch on .item(), a shape from int(), a .tolist() and a nonzero().
    x = torch.randn(64, 64, device="cuda")

    def reads(t):
        scale = t.abs().max().item()
        y = t.relu() * scale if bool((t.sum() > -1e9)) else t
        rows = int(t.shape[0] // 2)
        picked = (y[:rows] > 0).nonzero()
        shift = sum(t[0, :4].tolist())
        return y[:rows] @ y[:rows].T + picked.float().mean() + shift

    expected = reads(x)
    cap = cn.capture(reads, x)
    assert not cap.eager and cap.meta["host_reads"] >= 4 and cap.meta["host_read_mismatches"] == 0
    assert cap.meta["output_max_abs_diff"] <= 1e-3 * float(expected.abs().max())
    cap.graph.replay()
    torch.cuda.synchronize()
    torch.testing.assert_close(cap.outputs, expected)
    r = cn.replay(cap.exec_handle, 100)
    assert r.launches == 100 and r.gpu_time_s > 0


def test_bloom_is_captured_whole(torch):
    # BLOOM-560m's forward fell back to a Python loop ("it synchronises the GPU with the CPU"): 25 % CV.
    import transformers as T

    torch.manual_seed(0)
    with torch.device("cuda"):
        model = T.BloomForCausalLM(T.BloomConfig(hidden_size=256, n_layer=2, n_head=4, vocab_size=1000))
    model = model.half().eval()
    ids = torch.randint(0, 1000, (1, 32), device="cuda")
    cap = cn.capture(model, ids, use_cache=False, eager_fallback=True)
    assert not cap.eager, cap.reason
    with torch.no_grad():
        expected = model(ids, use_cache=False).logits
    cap.graph.replay()
    torch.cuda.synchronize()
    torch.testing.assert_close(cap.outputs.logits, expected, atol=2e-3, rtol=2e-3)


@pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated:DeprecationWarning")  # transformers 5.17's DeBERTa
def test_deberta_v3_is_captured_whole(torch):
    # DeBERTa-v2/v3's position buckets upload a host tensor inside the forward (torch.tensor(mid - 1).type_as(...)):
    # it fell back to a Python loop (issue 13: CV 7 %). Uploads are now replayed (Note [Host reads replayed]).
    import transformers as T

    torch.manual_seed(0)
    config = T.DebertaV2Config(hidden_size=128, num_hidden_layers=2, num_attention_heads=4, intermediate_size=256,
                               vocab_size=1000, relative_attention=True, position_buckets=256,
                               pos_att_type=["p2c", "c2p"], max_relative_positions=-1, norm_rel_ebd="layer_norm",
                               share_att_key=True, position_biased_input=False)
    with torch.device("cuda"):
        model = T.DebertaV2Model(config)
    model = model.half().eval()
    ids = torch.randint(0, 1000, (1, 32), device="cuda")
    cap = cn.capture(model, ids, eager_fallback=True)
    assert not cap.eager, cap.reason
    assert cap.meta["host_read_mismatches"] == 0
    with torch.no_grad():
        expected = model(ids).last_hidden_state
    cap.graph.replay()
    torch.cuda.synchronize()
    torch.testing.assert_close(cap.outputs.last_hidden_state, expected, atol=2e-3, rtol=2e-3)


def test_a_constant_made_in_the_forward_outlives_the_capture(torch):
    # Note [Host reads replayed]: torch.tensor(..., device=) inside the forward is made once, in the eager call, and
    # the graph reads it. Capture.held keeps it: freed, its memory went back to the allocator for the next tensor.
    def scaled(x):
        return x * torch.tensor(3.0, device=x.device)

    x = torch.ones(1 << 16, device="cuda")
    cap = cn.capture(scaled, x)
    import gc

    gc.collect()
    junk = [torch.full((1 << 10,), -7.0, device="cuda") for _ in range(64)]  # reuses any block freed since
    cap.graph.replay()
    torch.cuda.synchronize()
    assert cap.meta["host_constants"] == 1
    assert torch.equal(cap.outputs, torch.full_like(x, 3.0)), float(cap.outputs[0])
    del junk


def test_the_profiled_pass_names_the_glue_by_its_ops(torch):
    # Accounting.glue_ops: kernels launched outside every component, by the op that launched them. Here the only
    # work outside the component (a Linear) is one add and one mul.
    from clear_native.backend import GpuBackend

    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = torch.nn.Linear(1024, 1024)

        def forward(self, x):
            return self.lin(x + 1.0) * 2.0

    net, x = Net().cuda().eval(), torch.randn(256, 1024, device="cuda")
    comps = cn.find_components(net, x, select=["lin"])
    net(x)  # kernel_times_s wants a warm model
    kernels_s, inside_s, glue = GpuBackend(0).kernel_times_s(net, comps, (x,), {})
    assert 0 < inside_s < kernels_s
    assert {op for op, _ in glue} == {"aten::add", "aten::mul"}, glue
    assert sum(us for _, us in glue) * 1e-6 == pytest.approx(kernels_s - inside_s, rel=0.05)


def test_a_paced_call_idles_as_long_as_asked_after_the_part(torch):
    # Note [At the model's power]: the gap after a paced part is a spin kernel timed on this card; a part paced
    # by 100 us lasts 100 us longer than alone, and the gap alone lasts 100 us.
    from clear_native.backend import GpuBackend
    from clear_native.paced import Paced

    backend = GpuBackend(0)
    lin, x = torch.nn.Linear(4096, 4096).cuda().half(), torch.randn(64, 4096, device="cuda").half()
    alone = backend.capture(lin, x, name="linear")
    idle = backend.idle_fn(100e-6)
    paced = backend.capture(Paced(lin, idle, 100e-6), x, name="linear [paced]")
    gap = backend.capture(Paced(None, idle, 100e-6), name="gap")
    assert not (alone.eager or paced.eager or gap.eager), (paced.reason, gap.reason)
    t_alone, t_paced, t_gap = (backend.time_per_call_s(c) for c in (alone, paced, gap))
    assert t_gap == pytest.approx(100e-6, rel=0.1)
    assert t_paced - t_alone == pytest.approx(t_gap, rel=0.1)
    torch.testing.assert_close(paced.outputs, alone.outputs)


def test_transformers_model_captures_its_eager_kernels(torch):
    # Note [Capture what eager runs]: no mask is materialised in the graph, the output matches eager.
    import transformers as T

    model = T.GPT2LMHeadModel(T.GPT2Config(n_layer=2)).cuda().eval()
    ids = torch.randint(0, 1000, (2, 16), device="cuda")
    cap = cn.capture(model, ids, use_cache=False)
    assert not cap.eager and cap.meta["eager_decisions"] >= 1 and cap.meta["decision_mismatches"] == 0
    cap.run_once()
    with torch.no_grad():
        ref = model(ids, use_cache=False).logits
    torch.cuda.synchronize()
    torch.testing.assert_close(cap.outputs.logits, ref)


def test_pruned_graph_runs_all_but_the_removed_kernels(torch):
    # Note [A component in context]: nodes recorded per module while capturing, then a graph without some.
    from clear_native.context import NodeRecorder
    from clear_native.graphs import PrunedGraph, capturing_graph_nodes, graph_node_kinds

    class Add(torch.nn.Module):
        def forward(self, y):
            return y.add_(1)

    class Double(torch.nn.Module):
        def forward(self, y):
            return y.mul_(2)

    net = torch.nn.Sequential(Add(), Double(), Add())
    y = torch.ones(1024, device="cuda")
    with NodeRecorder({"double": [net[1]], "adds": [net[0], net[2]]}) as rec:
        cap = cn.capture(net, y, name="chain")
    assert rec.calls == {"double": 1, "adds": 2}
    assert rec.nodes["double"] and len(rec.nodes["adds"]) >= 2 and not rec.nodes["double"] & rec.nodes["adds"]
    kinds = graph_node_kinds(cap.graph_handle)
    pruned = PrunedGraph(cap.graph_handle, rec.nodes["double"], name="no double")
    assert pruned.removed == len(rec.nodes["double"]) and pruned.kept == 0
    assert pruned.nodes_left == sum(kinds.values()) - pruned.removed
    y.fill_(1)
    cn.replay(cap.exec_handle, 1)
    torch.cuda.synchronize()
    assert y[0].item() == 5  # (1 + 1) * 2 + 1
    y.fill_(1)
    cn.replay(pruned.exec_handle, 1)
    torch.cuda.synchronize()
    assert y[0].item() == 3  # the doubling is gone, the adds run in order
    # Unrolled, as the protocol replays it.
    y.fill_(1)
    cn.replay(cn.UnrolledGraph(pruned.graph_handle, 3), 1)
    torch.cuda.synchronize()
    assert y[0].item() == 7
    with pytest.raises(ValueError, match="not in the graph"):
        PrunedGraph(cap.graph_handle, [pruned.exec_handle])
    with pytest.raises(ValueError, match="no nodes"):
        PrunedGraph(cap.graph_handle, [])
    with pytest.raises(RuntimeError, match="not capturing"):
        capturing_graph_nodes()


def test_a_tensor_parallel_region_over_two_gpus_is_metered_per_gpu_and_in_total(torch):
    """Meter(devices=[0, 1]) around a Megatron-style MLP over NCCL (issue 15)."""
    if torch.cuda.device_count() < 2:
        pytest.skip("needs two GPUs of one host (found one)")
    from bench.scale import tp_meter

    r = tp_meter(torch, hidden=4096, ffn=16384, tokens=512, seconds=1.0)
    assert r["max_rel_error_vs_one_gpu"] < 0.02 and r["outputs_identical_on_both_gpus"]
    a, b = r["per_gpu"]
    assert a["uuid"] != b["uuid"] and a["samples"] >= 20 and b["samples"] >= 20
    assert r["energy_j"] == pytest.approx(a["energy_j"] + b["energy_j"])
    for p in (a, b):  # each GPU worked through the window: well above idle, below the limit
        assert 150 < p["mean_power_w"] < 800
        assert p["energy_j"] == pytest.approx(p["counter_energy_j"], rel=0.15)
    # The two halves are the same work: the GPUs' shares agree to within their cards' spread.
    assert a["energy_j"] == pytest.approx(b["energy_j"], rel=0.2)


def test_every_measurement_reads_the_launch_latency_state(torch, matmul_capture):
    # Note [Launch-latency state]: a graph of tiny kernels, with NVML's clocks and PCIe link beside it.
    backend = cn.GpuBackend(0)
    s = backend.launch_state()
    assert 0.2e-6 < s["latency_s"] < 20e-6  # H200: 0.96 or 1.21 µs per kernel
    assert s["sm_clock_mhz"] > 0 and s["memory_clock_mhz"] > 0
    assert 0 <= s["pcie_generation"] <= 6 and s["pcie_width"] in (0, 1, 2, 4, 8, 16, 32)
    assert s["cpu"] in os.sched_getaffinity(0)  # the host CPU this process ran on, kept with the reading
    run = cn.measure([matmul_capture], backend=backend, min_trials=2, window_s=0.1, budget_s=60, instances=8)
    # before the trials, after each round (Note [One state per run]) and after them
    assert len(run.launch_state) >= 3 and all(0.2e-6 < x["latency_s"] < 20e-6 for x in run.launch_state)
    assert sum(bool(x.get("restart")) for x in run.launch_state) <= 1
    assert run.to_dict()["launch_state"] == run.launch_state
    # What the slow state costs a call: its graph's kernels (one GEMM here; cuBLAS may add a small one), each one
    # probe step (Note [Launch-latency state]). An add of two tensors is one kernel, exactly.
    assert run["matmul1024"].graph_kernels_per_call in (1.0, 2.0)
    # Note [Graph instances]: a ~10 µs call is measured over 8 graphs of it, each timed singly, their median near
    # its unrolled time (launched singly, one of them read more than 20 % off it once, presumably the host behind:
    # GPU-7260ca5a-fdbf-45ca-53bd-bc3e7edddbe0, 2026-11-29; it passed again on the same card).
    m = run["matmul1024"]
    assert m.graph_instances == 8 and len(m.instance_time_per_call_s) == 8 and m.unroll % 8 == 0
    assert abs(statistics.median(m.instance_time_per_call_s) / m.gpu_time_per_call_s - 1) < 0.2
    assert all(0.5 < t / m.gpu_time_per_call_s < 3 for t in m.instance_time_per_call_s)
    x = torch.ones(256, device="cuda")
    assert cn.capture(torch.add, x, x, name="add").graph_kernels == 1.0
