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
