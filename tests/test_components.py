"""Components of tiny models of every family, on the CPU: discovery, recorded inputs,
signatures, FLOPs, and the coverage arithmetic."""

import collections
import json
import math

import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

import clear_native as cn  # noqa: E402
from clear_native.accounting import account
from clear_native.results import Accounting, GroupResult, ModelReport  # noqa: E402

H = dict(hidden_size=32, num_attention_heads=2, intermediate_size=64, num_hidden_layers=3)
T = transformers


def tiny(family: str, dtype=torch.float32, attn="sdpa"):
    """A 3-layer model of the family with random weights, and its inputs."""
    torch.manual_seed(0)
    ids = torch.randint(0, 100, (2, 8))
    dec = dict(decoder_input_ids=torch.randint(0, 100, (2, 4)), use_cache=False)
    configs = {
        "bert": (T.BertModel, T.BertConfig(**H, vocab_size=100), (ids,), {}),
        "roberta": (T.RobertaModel, T.RobertaConfig(**H, vocab_size=100), (ids,), {}),
        "distilbert": (T.DistilBertModel, T.DistilBertConfig(dim=32, n_heads=2, hidden_dim=64, n_layers=3,
                                                             vocab_size=100), (ids,), {}),
        "albert": (T.AlbertModel, T.AlbertConfig(**H, embedding_size=16, vocab_size=100), (ids,), {}),
        "gpt2": (T.GPT2LMHeadModel, T.GPT2Config(n_embd=32, n_head=2, n_layer=3, vocab_size=100, bos_token_id=0,
                                                 eos_token_id=0), (ids,), dict(use_cache=False)),
        "llama": (T.LlamaForCausalLM, T.LlamaConfig(**H, num_key_value_heads=1, vocab_size=100), (ids,),
                  dict(use_cache=False)),
        "qwen2": (T.Qwen2ForCausalLM, T.Qwen2Config(**H, num_key_value_heads=1, vocab_size=100), (ids,),
                  dict(use_cache=False)),
        "t5": (T.T5ForConditionalGeneration, T.T5Config(d_model=32, d_kv=16, d_ff=64, num_layers=3, num_heads=2,
                                                        vocab_size=100), (ids,), dec),
        "bart": (T.BartForConditionalGeneration, T.BartConfig(d_model=32, encoder_layers=3, decoder_layers=3,
                 encoder_attention_heads=2, decoder_attention_heads=2, encoder_ffn_dim=64, decoder_ffn_dim=64,
                 vocab_size=100), (ids,), dec),
        "vit": (T.ViTModel, T.ViTConfig(**H, image_size=32, patch_size=8), (torch.randn(2, 3, 32, 32),), {}),
    }
    cls, config, inputs, kw = configs[family]
    config._attn_implementation = attn
    model = cls(config).to(dtype).eval()
    return model, tuple(x.to(dtype) if x.is_floating_point() else x for x in inputs), kw


# Calls per forward pass of each kind, for 3 layers.
EXPECTED = {
    "bert": dict(embeddings=1, self_attention=3, mlp=6, head=1),
    "roberta": dict(embeddings=1, self_attention=3, mlp=6, head=1),
    "distilbert": dict(embeddings=1, self_attention=3, mlp=3, norm=6),
    "albert": dict(embeddings=1, self_attention=3, mlp=6, norm=3, head=1),
    "gpt2": dict(embeddings=2, self_attention=3, mlp=3, norm=7, head=1),
    "llama": dict(embeddings=2, self_attention=3, mlp=3, norm=7, head=1),
    "qwen2": dict(embeddings=2, self_attention=3, mlp=3, norm=7, head=1),
    "t5": dict(embeddings=2, self_attention=6, cross_attention=3, mlp=6, norm=2, head=1),
    "bart": dict(embeddings=4, self_attention=6, cross_attention=3, mlp=12, norm=17, head=1),
    "vit": dict(embeddings=1, self_attention=3, mlp=3, norm=7, head=1),
}


@pytest.mark.parametrize("family", sorted(EXPECTED))
def test_discovery_finds_the_expected_components(family):
    model, inputs, kw = tiny(family)
    comps = cn.find_components(model, *inputs, **kw)
    calls = collections.Counter()
    for c in comps:
        calls[c.kind] += c.calls
    assert dict(calls) == EXPECTED[family]
    # Nothing counted twice: no component inside another.
    names = [c.qualname for c in comps]
    assert not any(a != b and b.startswith(a + ".") for a in names for b in names)


@pytest.mark.parametrize("family", sorted(EXPECTED))
def test_recorded_inputs_replay_to_the_same_outputs(family):
    model, inputs, kw = tiny(family)
    for c in cn.find_components(model, *inputs, **kw):
        with torch.no_grad():
            again = c.module(*c.args, **c.kwargs)
        first = lambda o: o if isinstance(o, torch.Tensor) else o[0]  # noqa: E731
        torch.testing.assert_close(first(again), first(c.output), msg=c.qualname)


@pytest.mark.parametrize("family", ["bert", "llama", "t5", "vit"])
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_discovery_in_half_precision(family, dtype):
    model, inputs, kw = tiny(family, dtype)
    comps = cn.find_components(model, *inputs, **kw)
    assert sum(c.calls for c in comps) == sum(EXPECTED[family].values())
    assert all(p.dtype == dtype for c in comps for p in c.module.parameters())


def test_signatures_group_identical_layers():
    model, inputs, kw = tiny("bert")
    groups = cn.group_components(cn.find_components(model, *inputs, **kw))
    att = next(g for g in groups if g.kind == "self_attention")
    assert att.members == [f"encoder.layer.{i}.attention" for i in range(3)] and att.occurrences == 3
    assert len(groups) == 5  # embeddings, attention, intermediate, output, pooler: a 3-layer model costs a 1-layer's
    # T5's first block carries the relative position bias: a different computation.
    model, inputs, kw = tiny("t5")
    groups = cn.group_components(cn.find_components(model, *inputs, **kw))
    enc_att = [g for g in groups if g.kind == "self_attention" and g.name.startswith("encoder")]
    assert [g.occurrences for g in enc_att] == [1, 2]


def test_flops_of_a_linear_layer_and_an_attention_block():
    model, inputs, kw = tiny("bert", attn="eager")
    comps = {c.qualname: c for c in cn.find_components(model, *inputs, **kw)}
    tokens, hidden = 2 * 8, 32
    flops, nbytes = cn.work.work_per_call(comps["encoder.layer.0.intermediate"])  # Linear 32 -> 64 + GELU
    assert flops == 2 * tokens * hidden * 64
    params = (32 * 64 + 64) * 4
    assert nbytes == params + tokens * hidden * 4 + tokens * 64 * 4
    expected_att = 4 * 2 * tokens * hidden * hidden + 2 * 2 * 2 * 8 * 8 * hidden  # projections + QK^T + AV
    assert cn.work.work_per_call(comps["encoder.layer.0.attention"])[0] == expected_att
    # SDPA on the CPU counts the same (clear_native registers the CPU kernel's formula).
    model, inputs, kw = tiny("bert", attn="sdpa")
    comps = {c.qualname: c for c in cn.find_components(model, *inputs, **kw)}
    assert cn.work.work_per_call(comps["encoder.layer.0.attention"])[0] == expected_att


def test_user_selection_by_name_type_and_predicate():
    model, inputs, kw = tiny("llama")
    by_name = cn.find_components(model, *inputs, select=["model.layers.0.self_attn.q_proj", "model.layers.1.mlp"], **kw)
    assert [(c.qualname, c.kind) for c in by_name] == [("model.layers.0.self_attn.q_proj", "custom"),
                                                        ("model.layers.1.mlp", "mlp")]
    by_type = cn.find_components(model, *inputs, select=[T.models.llama.modeling_llama.LlamaDecoderLayer], **kw)
    assert [c.qualname for c in by_type] == [f"model.layers.{i}" for i in range(3)]
    linears = cn.find_components(model, *inputs, select=lambda q, m: isinstance(m, torch.nn.Linear), **kw)
    assert len(linears) == 3 * 7 + 1  # q, k, v, o, gate, up, down per layer, and the LM head
    with pytest.raises(ValueError, match="no module named"):
        cn.find_components(model, *inputs, select=["model.layers.9"], **kw)


def test_any_module_with_explicit_names():
    net = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 4))
    comps = cn.find_components(net, torch.randn(3, 8), select=["0", "2"])
    assert [(c.qualname, c.calls) for c in comps] == [("0", 1), ("2", 1)]
    with pytest.raises(ValueError, match="no component"):
        cn.find_components(net, torch.randn(3, 8))  # no rule matches a plain Sequential's parts


def _group(name, occ, e, t, flops=1e6):
    return GroupResult(name=name, kind="mlp", members=[name], occurrences=occ, gpu_time_per_call_s=t,
                       energy_per_call_j=e, dynamic_energy_per_call_j=e / 2, cv=0.001, ci95_rel=0.001, trials=5,
                       flops=int(flops), bytes_min=1000, j_per_flop=e / flops, share=0.0)


def test_coverage_arithmetic():
    groups = [_group("a", 4, 1e-3, 10e-6), _group("b", 2, 3e-3, 20e-6)]  # 10 mJ in 80 us of component time
    acc = account(groups, model_energy_j=14e-3, model_time_s=110e-6, kernel_time_s=70e-6,
                  component_kernel_time_s=60e-6, awake_idle_power_w=100.0)
    assert acc.components_energy_j == pytest.approx(10e-3)
    assert acc.coverage == pytest.approx(10 / 14)
    assert acc.glue_time_s == pytest.approx(10e-6)
    assert acc.glue_energy_j == pytest.approx(10e-6 * 10e-3 / 80e-6)  # at the components' mean power
    assert acc.gaps_time_s == pytest.approx(110e-6 - 80e-6 - 10e-6)
    assert acc.gaps_energy_j == pytest.approx(20e-6 * 100.0)
    assert acc.explained_coverage == pytest.approx((10e-3 + 1.25e-3 + 2e-3) / 14e-3)


@pytest.fixture
def virtual_clock():
    with cn.clock.virtual():  # Note [Virtual time]: the answer does not depend on how busy the machine is
        yield


def test_coverage_on_a_simulated_gpu(virtual_clock):
    """Components and a whole model with known energies, measured by the protocol: coverage adds up."""
    backend = cn.SimulatedBackend(cn.synthetic_sensor(sample_period_s=0.002, period_jitter_s=0.0004, window_s=0.0005,
                                                      lag_s=0.0015, noise_w=2.0, energy_update_s=0.01,
                                                      energy_read_delay_s=0.0, status_update_s=0.01))
    profile = cn.calibrate(backend, rest_s=0.3, load_s=0.4)
    att = cn.SimulatedCall("attention", kernel_s=20e-6, power_w=300.0, launch_gap_s=0.0)
    mlp = cn.SimulatedCall("mlp", kernel_s=30e-6, power_w=400.0, launch_gap_s=0.0)
    # The model: 4 x (attention + mlp) of kernels, 20 us of gaps at awake-idle power, no glue.
    kern_t = 4 * (20e-6 + 30e-6)
    kern_e = 4 * (300.0 * 20e-6 + 400.0 * 30e-6)
    whole_t = kern_t + 20e-6
    whole = cn.SimulatedCall("whole", kernel_s=whole_t, power_w=(kern_e + 20e-6 * backend.awake_w) / whole_t,
                             launch_gap_s=0.0)
    run = cn.measure([att, mlp, whole], backend=backend, profile=profile, window_s=0.1, idle_s=0.2,
                     max_warmup_s=0.3, min_trials=4)
    groups = [_group(n, 4, run[n].energy_per_call_j, run[n].gpu_time_per_call_s) for n in ("attention", "mlp")]
    acc = account(groups, run["whole"].energy_per_call_j, run["whole"].gpu_time_per_call_s, kern_t, kern_t,
                  run.awake_idle_power_w)
    assert acc.coverage == pytest.approx(kern_e / (kern_e + 20e-6 * backend.awake_w), rel=0.01)
    assert acc.explained_coverage == pytest.approx(1.0, abs=0.01)
    assert acc.glue_time_s == 0 and acc.gaps_time_s == pytest.approx(20e-6, rel=0.05)


def test_report_serialises_and_prints(tmp_path):
    groups = [_group("a", 4, 1e-3, 10e-6), _group("b", 2, 3e-3, 20e-6)]
    acc = account(groups, 14e-3, 110e-6, 70e-6, 60e-6, 100.0)
    rep = ModelReport(model="Tiny", mode="prefill", inputs={"arg0": [1, 8]}, groups=groups,
                      whole={"cv": 0.001}, accounting=acc, failures=[("c", "CaptureError: reason")],
                      run={"gpu": {"name": "sim"}}, wall_s=1.0)
    d = json.loads(rep.to_json(tmp_path / "r.json"))
    assert d["accounting"]["coverage"] == pytest.approx(10 / 14)
    assert json.loads((tmp_path / "r.json").read_text()) == d
    lines = rep.to_csv(tmp_path / "r.csv").strip().splitlines()
    assert lines[0].startswith("name,kind,occurrences") and len(lines) == 3
    text = rep.table()
    assert "explained coverage" in text and "not measured: c" in text
    assert isinstance(acc, Accounting) and not math.isnan(rep.explained_coverage)


def test_in_context_arithmetic_on_a_simulated_gpu(virtual_clock):
    """Note [A component in context]: the model, the model without each group, and without both,
    measured by the protocol; what each group costs in context, and the interaction, come out."""
    from clear_native.accounting import context_accounting

    backend = cn.SimulatedBackend(cn.synthetic_sensor(sample_period_s=0.002, period_jitter_s=0.0004, window_s=0.0005,
                                                      lag_s=0.0015, noise_w=2.0, energy_update_s=0.01,
                                                      energy_read_delay_s=0.0, status_update_s=0.01))
    profile = cn.calibrate(backend, rest_s=0.3, load_s=0.4)
    # 4 x (attention + mlp): interleaved, attention draws 450 W (300 W alone), the mlp 400 W; glue 20 us at 200 W.
    att_t, mlp_t, rest_t = 20e-6, 30e-6, 20e-6
    truth = {"whole": 4 * (att_t * 450 + mlp_t * 400) + rest_t * 200, "without attention": 4 * mlp_t * 400 + rest_t * 200,
             "without mlp": 4 * att_t * 450 + rest_t * 200, "rest": rest_t * 200}
    times = {"whole": 4 * (att_t + mlp_t) + rest_t, "without attention": 4 * mlp_t + rest_t,
             "without mlp": 4 * att_t + rest_t, "rest": rest_t}
    calls = [cn.SimulatedCall(n, kernel_s=times[n], power_w=truth[n] / times[n], launch_gap_s=0.0) for n in truth]
    alone = cn.SimulatedCall("attention", kernel_s=att_t, power_w=300.0, launch_gap_s=0.0)
    run = cn.measure(calls + [alone], backend=backend, profile=profile, window_s=0.1, idle_s=0.2, max_warmup_s=0.3,
                     min_trials=4)
    groups = [_group("attention", 4, run["attention"].energy_per_call_j, att_t), _group("mlp", 4, 1e-3, mlp_t),
              _group("pooler", 1, 1e-4, 1e-6)]  # the pooler added no node to the graph: 0 in context
    rows, acc = context_accounting(run["whole"], {"attention": run["without attention"], "mlp": run["without mlp"]},
                                   run["rest"], groups, removed={"attention": 8, "mlp": 12})
    att, mlp, pooler = rows
    assert att.energy_per_call_j == pytest.approx(att_t * 450, rel=0.03)
    assert att.energy_per_call_j == pytest.approx(
        (run["whole"].energy_per_call_j - run["without attention"].energy_per_call_j) / 4)
    assert att.isolated_ratio == pytest.approx(1.5, rel=0.03) and att.removed_nodes == 8
    assert att.gpu_time_per_call_s == pytest.approx(att_t, rel=0.05)
    assert att.mean_power_w == pytest.approx(450, rel=0.05)
    assert att.energy_per_call_ci95_j == pytest.approx(math.hypot(run["whole"].energy_per_call_ci95_j,
                                                                  run["without attention"].energy_per_call_ci95_j) / 4)
    assert mlp.energy_per_call_j == pytest.approx(mlp_t * 400, rel=0.03)
    assert pooler.energy_per_call_j == 0 and pooler.removed_nodes == 0
    # A group whose graph could not be made is unknown, not free, and in no sum.
    rows2, acc2 = context_accounting(run["whole"], {"attention": run["without attention"]}, run["rest"], groups,
                                     failed={"mlp"})
    assert math.isnan(rows2[1].energy_per_call_j) and acc2.components_energy_j == pytest.approx(4 * att.energy_per_call_j)
    assert acc.rest_energy_j == pytest.approx(truth["rest"], rel=0.03)
    assert acc.coverage == pytest.approx(1 - truth["rest"] / truth["whole"], rel=0.02)
    # Additive by construction here: no interaction beyond the sensor's noise.
    assert acc.explained_coverage == pytest.approx(1.0, abs=0.02)
    assert abs(acc.interaction_energy_j) < 0.02 * truth["whole"]


def test_node_recorder_records_only_while_capturing_and_cleans_up():
    from clear_native.context import NodeRecorder

    net = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.ReLU(), torch.nn.Linear(4, 2))
    with NodeRecorder({"first": [net[0]], "relu": [net[1]]}) as rec:
        net(torch.randn(3, 4))  # on the CPU: no capture, so nothing recorded
        assert len(net[0]._forward_pre_hooks) == 1 and len(net[1]._forward_hooks) == 1
    assert rec.nodes == {"first": set(), "relu": set()} and rec.calls == {"first": 0, "relu": 0}
    assert not net[0]._forward_pre_hooks and not net[1]._forward_hooks


def test_report_with_in_context_columns(tmp_path):
    from clear_native.results import ContextAccounting, InContext

    groups = [_group("a", 4, 1e-3, 10e-6), _group("b", 2, 3e-3, 20e-6)]
    acc = account(groups, 14e-3, 110e-6, 70e-6, 60e-6, 100.0)
    ctx = [InContext("a", 4, 10, 1.2e-3, 0.1e-3, 9e-6, 1.2, 4.8 / 14, 500.0)]
    cacc = ContextAccounting(14e-3, 4.8e-3, 2e-3, 20e-6, 7.2e-3, 4.8 / 14, 6.8 / 14)
    rep = ModelReport(model="Tiny", mode="prefill", inputs={}, groups=groups, whole={"cv": 0.001}, accounting=acc,
                      failures=[], run={}, wall_s=1.0, in_context=ctx, context_accounting=cacc)
    header, row_a, row_b = rep.to_csv().strip().splitlines()
    assert header.endswith("context_energy_per_call_j,context_energy_per_call_ci95_j,"
                           "context_gpu_time_per_call_s,context_isolated_ratio")
    assert row_a.endswith("0.0012,0.0001,9e-06,1.2") and row_b.endswith("nan,nan,nan,nan")
    assert json.loads(rep.to_json())["context_accounting"]["explained_coverage"] == pytest.approx(6.8 / 14)
    assert "in-context coverage 34.3 %" in rep.table() and "+7.2 mJ" in rep.table()


@pytest.mark.parametrize("family", ["gpt2", "llama", "qwen2", "t5", "bart"])
def test_decode_steps_repeat_the_same_work(family):
    # transformers' StaticCache advances a counter each step; a decode replay must write one slot.
    from clear_native.hf_compat import cache_argument

    model, inputs, _ = tiny(family)
    torch.manual_seed(1)
    step, kw = cn.decode_inputs(model, inputs[0][:1, :6], cache_len=8, kw={})
    cache = kw[cache_argument(model)]
    with torch.no_grad():
        outs = [model(*step, **kw).logits for _ in range(4)]  # 4 steps: past the 9 slots if it advanced
    for o in outs[1:]:
        torch.testing.assert_close(o, outs[0])
    # The truth, from the model's own forward without any cache: the step's logits are those of the
    # last position of the whole sequence (the 8 cached tokens, then the new one).
    torch.manual_seed(1)
    prompt = torch.randint(0, model.config.vocab_size, (1, 8))
    with torch.no_grad():
        if family in ("t5", "bart"):
            full = model(encoder_outputs=kw["encoder_outputs"], use_cache=False,
                         decoder_input_ids=torch.cat([prompt, prompt[:, -1:]], 1)).logits[:, -1:]
        else:
            full = model(torch.cat([prompt, step[0]], 1), use_cache=False).logits[:, -1:]
    torch.testing.assert_close(outs[0], full, atol=1e-4, rtol=1e-4)
    self_cache = getattr(cache, "self_attention_cache", cache)
    assert self_cache.layers[0].keys.shape[2] == 9
    if family in ("t5", "bart"):  # the encoder ran once: the step is the decoder's, over 6 encoded tokens
        assert step == () and kw["encoder_outputs"][0].shape[:2] == (1, 6)
        assert kw["decoder_input_ids"].shape == (1, 1)
        assert cache.cross_attention_cache.layers[0].keys.shape[2] == 6
    comps = cn.find_components(model, *step, **kw)
    att = next(c for c in comps if c.kind == "self_attention")
    hidden = att.kwargs.get("hidden_states", att.args[0] if att.args else None)
    assert hidden.shape[:2] == (1, 1)  # one new token attends over the cache
    # A step reads no tensor value on the host (on a GPU: a sync, which capture refuses) once the
    # mask decisions are replayed as capture() replays them. BART did, without decoder_attention_mask.
    from torch.utils._python_dispatch import TorchDispatchMode

    from clear_native.hf_compat import EagerDecisions

    class HostReads(TorchDispatchMode):
        reads = 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            if func is torch.ops.aten._local_scalar_dense.default:
                HostReads.reads += 1
            return func(*args, **(kwargs or {}))

    decisions = EagerDecisions()
    with torch.no_grad(), decisions.recording():
        model(*step, **kw)
    with torch.no_grad(), decisions.replaying(), HostReads():
        model(*step, **kw)
    assert HostReads.reads == 0


@pytest.mark.parametrize("family", ["bloom", "opt"])
def test_decode_steps_of_models_that_read_the_2d_attention_mask(family):
    # BLOOM sizes its ALiBi bias from the 2-D attention mask and (transformers 5.17) its keys from the static
    # cache's full length: its prefill needs the mask over the whole cache, the empty slot masked (issue 13:
    # BLOOM decode failed on 5.17). OPT takes its positions from the mask: it must not get that one.
    torch.manual_seed(0)
    model = {"bloom": lambda: T.BloomForCausalLM(T.BloomConfig(hidden_size=32, n_layer=3, n_head=2, vocab_size=100)),
             "opt": lambda: T.OPTForCausalLM(T.OPTConfig(hidden_size=32, ffn_dim=64, num_hidden_layers=3,
                                                         num_attention_heads=2, vocab_size=100,
                                                         word_embed_proj_dim=32))}[family]().eval()
    new = torch.randint(0, 100, (1, 1))
    torch.manual_seed(1)
    step, kw = cn.decode_inputs(model, new, cache_len=8, kw={})
    with torch.no_grad():
        outs = [model(*step, **kw).logits for _ in range(3)]
    for o in outs[1:]:
        torch.testing.assert_close(o, outs[0])
    torch.manual_seed(1)
    prompt = torch.randint(0, 100, (1, 8))  # what decode_inputs drew for the cache
    with torch.no_grad():
        full = model(torch.cat([prompt, new], 1), use_cache=False).logits[:, -1:]
    torch.testing.assert_close(outs[0], full, atol=1e-4, rtol=1e-4)


def test_flops_of_grouped_query_attention_fall_back_to_eager_attention(monkeypatch):
    from torch.utils import flop_counter as fc

    model, inputs, kw = tiny("llama")  # 2 query heads, 1 key/value head
    comps = {c.qualname: c for c in cn.find_components(model, *inputs, **kw)}
    att = comps["model.layers.0.self_attn"]
    expected = cn.work.work_per_call(att)[0]
    # ... and where the attention sits inside the component: a whole decoder layer chosen by type.
    layer = next(c for c in cn.find_components(model, *inputs, select=[T.models.llama.modeling_llama.LlamaDecoderLayer],
                                               **kw) if c.qualname == "model.layers.0")
    expected_layer = cn.work.work_per_call(layer)[0]
    real = fc.sdpa_flop_count

    def strict(q, k, v):  # as on CUDA: the formula rejects fewer K/V heads
        assert q[1] == k[1], "sdpa_flop_count: query/key/value shapes are incompatible"
        return real(q, k, v)

    monkeypatch.setattr(fc, "sdpa_flop_count", strict)
    assert cn.work.work_per_call(att)[0] == expected
    assert cn.work.work_per_call(layer)[0] == expected_layer > expected
    assert att.module.config._attn_implementation == "sdpa"  # restored


@pytest.mark.parametrize("family", ["gpt2", "bert", "t5"])
def test_eager_decisions_replay_in_order(family):
    # Note [Capture what eager runs]: what the eager call decided is what later calls get.
    import transformers.masking_utils as mu

    from clear_native.hf_compat import DECISIONS, EagerDecisions

    model, inputs, kw = tiny(family)
    real = {name: getattr(mu, name) for mod, name in DECISIONS if mod == mu.__name__}
    d = EagerDecisions()
    with torch.no_grad(), d.recording():
        ref = model(*inputs, **kw)
    assert d.recorded, "transformers' mask decisions were not seen"
    with torch.no_grad(), d.replaying():
        assert all(getattr(mu, n) is not f for n, f in real.items())  # patched while replaying
        out = model(*inputs, **kw)
    assert all(getattr(mu, n) is f for n, f in real.items())  # and restored
    assert d.mismatches == 0
    torch.testing.assert_close(out[0], ref[0])


def test_the_profiled_pass_sees_each_decision_in_a_range_of_its_own():
    # Note [What the graph does not run] (work.py): what a decision runs is not in the captured graph, so the
    # profiled eager pass marks it, and work.split_kernels leaves out every op inside such a range.
    import transformers.masking_utils as mu
    from torch.profiler import ProfilerActivity, profile

    from clear_native.hf_compat import DECISIONS, EagerDecisions

    model, inputs, kw = tiny("gpt2")
    real = {name: getattr(mu, name) for mod, name in DECISIONS if mod == mu.__name__}
    d = EagerDecisions()
    with torch.no_grad(), d.recording():
        model(*inputs, **kw)
    with torch.no_grad(), EagerDecisions().marking(), profile(activities=[ProfilerActivity.CPU]) as prof:
        model(*inputs, **kw)
    ranges = [e for e in prof.events() if e.name.startswith("cn-eager::")]
    assert sorted(e.name for e in ranges) == sorted(f"cn-eager::{name}" for name, _ in d.recorded)
    assert all(getattr(mu, n) is f for n, f in real.items())  # restored


@pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated:DeprecationWarning")  # DeBERTa-v2's helpers
def test_a_models_padding_check_runs_in_the_eager_call_only(monkeypatch):
    # DeBERTa-v3 on an H200: PreTrainedModel.warn_if_padding_and_no_attention_mask indexes the ids with a Python
    # list, an upload inside the forward that no dispatch mode sees, so the model could not be captured. It only
    # warns: the eager call runs it, later calls are handed its result (None) and never run it.
    import transformers.modeling_utils as mu

    from clear_native.hf_compat import EagerDecisions

    ran = []
    original = mu.PreTrainedModel.warn_if_padding_and_no_attention_mask
    monkeypatch.setattr(mu.PreTrainedModel, "warn_if_padding_and_no_attention_mask",
                        lambda self, ids, mask: ran.append(ids.shape) or original(self, ids, mask))
    config = T.DebertaV2Config(**H, vocab_size=100, pad_token_id=0)
    model = T.DebertaV2Model(config).eval()
    ids = torch.randint(1, 100, (2, 8))
    d = EagerDecisions()
    with torch.no_grad(), d.recording():
        ref = model(ids).last_hidden_state
    assert ran == [ids.shape] and ("warn_if_padding_and_no_attention_mask", None) in d.recorded
    with torch.no_grad(), d.replaying():
        out = model(ids).last_hidden_state
    assert ran == [ids.shape] and d.mismatches == 0  # not run again, and the call sequence matched
    torch.testing.assert_close(out, ref)
    assert "warn_if_padding_and_no_attention_mask" not in vars(T.DebertaV2Model)  # restored on the class it was on


def test_eager_decisions_fall_back_on_a_different_call_sequence():
    from clear_native.hf_compat import EagerDecisions

    model, inputs, kw = tiny("gpt2")
    d = EagerDecisions()
    d.recorded = [("something_else", True)]  # as if the eager call had taken another path
    with torch.no_grad(), d.replaying():
        model(*inputs, **kw)
    assert d.mismatches >= 1  # the originals ran, and the capture's meta will say so


def test_cold_copies_overflow_the_l2_and_repeat_the_same_work():
    # Note [Cold L2]: a 4.7 MB attention block needs 23 copies to be twice a 50 MB L2.
    from clear_native.cold_l2 import ColdCopies, l2_copies

    l2 = 50 * 2**20
    lin = torch.nn.Linear(1024, 1152)  # 4.7 MB of fp32 parameters
    assert l2_copies(lin, l2) == math.ceil(2 * l2 / (1024 * 1152 * 4 + 1152 * 4))
    assert l2_copies(torch.nn.GELU(), l2) == 1            # nothing to keep in the cache
    assert l2_copies(torch.nn.Linear(8192, 8192), l2) == 1  # 268 MB: already overflows
    assert l2_copies(torch.nn.Linear(8, 8), l2) == 64       # capped
    assert l2_copies(lin, 0) == 1                            # hot replay
    model, inputs, kw = tiny("bert")
    comps = cn.find_components(model, *inputs, **kw)
    att = next(c for c in comps if c.kind == "self_attention")
    cold = ColdCopies(att.module, 3)
    assert cold.l2_copies == 3
    ptrs = {id(m.query.weight if hasattr(m, "query") else next(m.parameters())) for m in cold.modules}
    assert len(ptrs) == 3  # distinct parameters, not one module three times
    with torch.no_grad():
        torch.testing.assert_close(cold(*att.args, **att.kwargs)[0], att.module(*att.args, **att.kwargs)[0])
    from torch.utils.flop_counter import FlopCounterMode

    with torch.no_grad(), FlopCounterMode(display=False) as one:
        att.module(*att.args, **att.kwargs)
    with torch.no_grad(), FlopCounterMode(display=False) as three:
        cold(*att.args, **att.kwargs)
    assert three.get_total_flops() == 3 * one.get_total_flops() > 0
    with pytest.raises(ValueError, match="copies"):
        ColdCopies(att.module, 0)


def test_per_copy_divides_what_scales_with_calls():
    from clear_native.cold_l2 import per_copy

    m = cn.Measurement(name="w", energy_per_call_j=3.0, energy_per_call_ci95_j=0.3, dynamic_energy_per_call_j=1.5,
                       baseline="awake_idle", baseline_power_w=100.0, idle_power_w=80.0, awake_idle_power_w=100.0,
                       gpu_time_per_call_s=0.006, mean_power_w=500.0, trials=2, cv=0.01, ci95_rel=0.1, unroll=1,
                       launches_per_trial=10, steady_window_s=0.2, samples_per_trial=10, temperature_c=(40, 41),
                       sm_clock_mhz=(1980, 1980), clock_event_reasons=[], converged=True, time_to_target_s=1.0,
                       trial_energy_per_call_j=[2.97, 3.03], trial_power_w=[495.0, 505.0],
                       trial_time_per_call_s=[0.006, 0.006], trial_run_time_per_call_s=[0.006, 0.006])
    one = per_copy(m, 3)
    assert (one.energy_per_call_j, one.energy_per_call_ci95_j, one.dynamic_energy_per_call_j) == pytest.approx(
        (1.0, 0.1, 0.5))
    assert one.gpu_time_per_call_s == pytest.approx(0.002) and one.trial_time_per_call_s == pytest.approx([0.002] * 2)
    assert one.trial_energy_per_call_j == pytest.approx([0.99, 1.01])
    assert (one.mean_power_w, one.cv, one.ci95_rel, one.trial_power_w) == (500.0, 0.01, 0.1, [495.0, 505.0])
    assert per_copy(m, 1) is m


def test_measure_model_rejects_an_unknown_l2_mode():
    model, inputs, kw = tiny("bert")
    with pytest.raises(ValueError, match="l2 must be"):
        cn.measure_model(model, *inputs, l2="warm", **kw)
