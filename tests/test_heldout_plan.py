"""Every held-out family of bench/heldout.py builds and is planned (components, blocks) by the library as
it is: adding a family needs no library change (issue 13). Fake tensors: no memory, no GPU."""

import pytest

torch = pytest.importorskip("torch")
T = pytest.importorskip("transformers")

from torch._subclasses.fake_tensor import FakeTensorMode  # noqa: E402

from bench import heldout  # noqa: E402
from clear_native import cli  # noqa: E402
from clear_native.components import discover, group_components  # noqa: E402
from clear_native.model import prepare_inputs  # noqa: E402

# BLOOM builds its ALiBi bias from the attention mask's length: with transformers 5.17 its decode step on a
# static cache ran only once decode_inputs gave its prefill the mask over the whole cache (it is planned here
# on both ends of the transformers range .ci/run tests).
CASES = [(n, "prefill") for n in heldout.CASES] + [(n, "decode") for n in sorted(heldout.DECODERS)]


@pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated:DeprecationWarning")  # DeBERTa's import
@pytest.mark.parametrize("name, mode", CASES)
def test_the_family_is_planned_with_its_blocks(name, mode):
    _, sizes, _, batch, seq = heldout.CASES[name]
    with FakeTensorMode(allow_non_fake_inputs=True):
        model = cli.build(heldout.config_of(name), "bf16", "cpu", init_weights=False)
        inputs, kw = prepare_inputs(model, *cli.inputs_for(model, batch, seq, "cpu"), mode, 512)
        comps, blocks = discover(model, *inputs, model_kwargs=kw)
    layers = sum(sizes.get(k, 0) for k in ("n_layer", "num_hidden_layers")) or 2 * sizes["encoder_layers"]
    assert len(blocks) == layers  # every layer is a block, found by the rules
    assert {c.kind for c in comps} >= {"self_attention", "mlp"} or name == "pythia-410m"
    assert all(g.flops > 0 for g in group_components(blocks))


def _fake_child(name, mode, opts, out):
    """A stand-in for one case's process: bloom-560m prefill dies of SIGSEGV (as it did on an H200), the
    others write a record naming the GPU they were given."""
    import sys

    if (name, mode) == ("bloom-560m", "prefill"):
        code = "import os, signal, sys; print('replaying...', file=sys.stderr); os.kill(os.getpid(), signal.SIGSEGV)"
    else:
        code = ("import json, os, sys; json.dump({'case': sys.argv[1], 'mode': sys.argv[2], 'whole_model_eager': False, "
                "'coverage': 0.9, 'explained_coverage': 1.0, 'block_coverage': 0.95, "
                "'explained_coverage_by_blocks': 1.01, 'max_cv': 0.005, 'interaction_rel': [0.05], "
                "'card': {'uuid': 'GPU-' + os.environ.get('CUDA_VISIBLE_DEVICES', '-')}}, open(sys.argv[3], 'w'))")
    return [sys.executable, "-c", code, name, mode, str(out)]


def test_a_case_whose_process_dies_is_recorded_and_the_others_still_run(tmp_path, monkeypatch):
    monkeypatch.setattr(heldout, "child_command", _fake_child)
    cases = heldout.plan(["opt-125m", "bloom-560m", "vit-l-16-b8"], ["prefill", "decode"])
    assert cases == [("opt-125m", "prefill"), ("opt-125m", "decode"), ("bloom-560m", "prefill"),
                     ("bloom-560m", "decode"), ("vit-l-16-b8", "prefill")]  # vision: no decode step
    recs = heldout.run_all(cases, ["0", "1"], {"window_s": 0.2, "in_context": False}, tmp_path)
    assert [(r["case"], r["mode"]) for r in recs] == cases  # plan order, whichever GPU finished first
    dead = recs[2]
    assert dead["error"].startswith("the process died of SIGSEGV") and "replaying..." in dead["error"]
    assert all("error" not in r for i, r in enumerate(recs) if i != 2)
    assert {r["card"]["uuid"] for r in recs if "card" in r} <= {"GPU-0", "GPU-1"}
    import json

    assert json.loads((tmp_path / "heldout.json").read_text()) == recs
    assert "| bloom-560m | prefill | failed: the process died of SIGSEGV" in (tmp_path / "heldout.md").read_text()


def test_dry_run_lists_the_plan_without_a_gpu_and_bad_input_is_refused_first(capsys):
    assert heldout.main(["--dry-run", "--cases", "opt-125m,vit-l-16-b8"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert [line.split(":")[0] for line in out] == ["opt-125m prefill", "opt-125m decode", "vit-l-16-b8 prefill"]
    assert "one new token after 512 cached" in out[1]
    assert heldout.main(["--cases", "opt-125m", "--modes", "decod"]) == 2
    assert "unknown case or mode 'decod'" in capsys.readouterr().err


def test_a_case_process_gets_the_options_of_the_run(tmp_path):
    cmd = heldout.child_command("gemma-2b-2l", "prefill", {"window_s": 0.3, "in_context": True}, tmp_path / "r.json")
    assert cmd[cmd.index("--child") + 1:cmd.index("--child") + 3] == ["gemma-2b-2l", "prefill"]
    assert cmd[cmd.index("--window-s") + 1] == "0.3" and "--in-context" in cmd
    assert "--in-context" not in heldout.child_command("opt-125m", "decode", {"window_s": 0.2, "in_context": False},
                                                       tmp_path / "r.json")
