"""Every held-out family of bench/heldout.py builds and is planned (components, blocks) by the library as
it is: adding a family needs no library change (issue 13). Fake tensors: no memory, no GPU."""

import pytest

torch = pytest.importorskip("torch")
T = pytest.importorskip("transformers")

from torch._subclasses.fake_tensor import FakeTensorMode  # noqa: E402

import clear_native as cn  # noqa: E402
from bench import heldout, heldout_cases, workers  # noqa: E402
from clear_native import cli  # noqa: E402
from clear_native.components import discover, group_components  # noqa: E402
from clear_native.model import prepare_inputs  # noqa: E402
from clear_native.simulated import QUICK_SENSOR  # noqa: E402

# BLOOM builds its ALiBi bias from the attention mask's length: with transformers 5.17 its decode step on a
# static cache ran only once decode_inputs gave its prefill the mask over the whole cache (it is planned here
# on both ends of the transformers range .ci/run tests).
CASES = [(n, "prefill") for n in heldout_cases.CASES] + [(n, "decode") for n in sorted(heldout_cases.DECODERS)]


@pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated:DeprecationWarning")  # DeBERTa's import
@pytest.mark.parametrize("name, mode", CASES)
def test_the_family_is_planned_with_its_blocks(name, mode):
    _, sizes, _, batch, seq = heldout_cases.CASES[name]
    with FakeTensorMode(allow_non_fake_inputs=True):
        model = cli.build(heldout_cases.config_of(name), "bf16", "cpu", init_weights=False)
        inputs, kw = prepare_inputs(model, *cli.inputs_for(model, batch, seq, "cpu"), mode, 512)
        comps, blocks = discover(model, *inputs, model_kwargs=kw)
    layers = sum(sizes.get(k, 0) for k in ("n_layer", "num_hidden_layers")) or 2 * sizes["encoder_layers"]
    assert len(blocks) == layers  # every layer is a block, found by the rules
    assert {c.kind for c in comps} >= {"self_attention", "mlp"} or name == "pythia-410m"
    assert all(g.flops > 0 for g in group_components(blocks))


class _FakeHost:
    """Stands in for workers.HostProcesses (whose retries and recorded deaths tests/test_workers.py tests with
    real processes): bloom-560m prefill's process dies of SIGSEGV (as it did on an H200), the others measure."""

    def __init__(self):
        self.jobs = []

    def run(self, jobs):
        while (job := jobs.take("GPU-0")) is not None:
            self.jobs.append(job)
            if job["id"] == "bloom-560m/prefill":
                yield job, workers.failed(job, "worker process 7 on GPU-0 died (killed by signal 11 (SIGSEGV)); "
                                               "gave up after 2 attempts")
                continue
            rec = {"case": job["case"], "mode": job["mode"], "whole_model_eager": False, "coverage_parts": 0.9,
                   "explained_coverage_parts": 1.0, "block_coverage": 0.95, "explained_coverage_by_blocks": 1.01,
                   "max_cv": 0.005, "interaction_rel": [0.05], "card": {"uuid": "GPU-0"}}
            rec |= heldout_cases.yardstick(rec)
            yield job, {"status": "ok", "heldout": rec, "wall_s": 3.0, "identity": {"gpu": {"uuid": "GPU-0"}},
                        "profile": {"settle_s": 0.4}}


def test_a_case_whose_process_dies_is_recorded_and_the_others_still_run(tmp_path):
    cases = heldout.plan(["opt-125m", "bloom-560m", "vit-l-16-b8"], ["prefill", "decode"])
    assert cases == [("opt-125m", "prefill"), ("opt-125m", "decode"), ("bloom-560m", "prefill"),
                     ("bloom-560m", "decode"), ("vit-l-16-b8", "prefill")]  # vision: no decode step
    host = _FakeHost()
    recs = heldout.run_all(cases, host, {"window_s": 0.3, "in_context": ["vit-l-16-b8"]}, tmp_path)
    assert [(j["case"], j["mode"]) for j in host.jobs] == cases
    assert all(j["job"] == "heldout" and j["args"] == {"window_s": 0.3, "in_context": j["case"] == "vit-l-16-b8"}
               for j in host.jobs)  # in context only where asked
    assert "profiles" in host.jobs[0] and host.jobs[1]["profiles"] == {"GPU-0": {"settle_s": 0.4}}  # calibrated once
    assert [(r["case"], r["mode"]) for r in recs] == cases
    dead = recs[2]
    assert "killed by signal 11 (SIGSEGV)" in dead["error"]
    assert all("error" not in r and r["wall_s"] == 3.0 for i, r in enumerate(recs) if i != 2)
    import json

    assert json.loads((tmp_path / "heldout.json").read_text()) == recs
    md = (tmp_path / "heldout.md").read_text()
    assert "| bloom-560m | prefill | failed: worker process 7 on GPU-0 died (killed by signal 11" in md
    assert "| opt-125m | prefill | graph | 0.50 % | 95.0 % | 101.0 % | 90.0 % / 100.0 % | 101.0 % | – | +5.0 % |" in md


def test_a_heldout_job_runs_as_a_job_kind_of_the_workers(monkeypatch):
    # bench/tasks.py dispatches it to heldout_cases.measure_case with the run's settings and the card's profile.
    import types

    from bench import tasks

    seen = {}
    monkeypatch.setattr(heldout_cases, "measure_case", lambda lab, name, mode, profile, args:
                        seen.update(name=name, mode=mode, window_s=args.window_s) or {"case": name})
    lab = types.SimpleNamespace(identity={"gpu": {"uuid": "GPU-0"}}, uuid="GPU-0",
                                profile=lambda saved: cn.SensorProfile(**saved))
    profile = cn.calibrate(cn.SimulatedBackend(cn.synthetic_sensor(**QUICK_SENSOR)), rest_s=0.3, load_s=0.4)
    job = {"job": "heldout", "id": "gemma-2b-2l/prefill", "case": "gemma-2b-2l", "mode": "prefill",
           "args": {"window_s": 0.3, "in_context": False}, "profiles": {"GPU-0": profile.to_dict()}}
    rec = tasks.run_job(job, lab)
    assert rec["status"] == "ok" and rec["heldout"] == {"case": "gemma-2b-2l"}
    assert seen == {"name": "gemma-2b-2l", "mode": "prefill", "window_s": 0.3}


def test_dry_run_lists_the_plan_without_a_gpu_and_bad_input_is_refused_first(capsys):
    assert heldout.main(["--dry-run", "--cases", "opt-125m,vit-l-16-b8"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert [line.split(":")[0] for line in out] == ["opt-125m prefill", "opt-125m decode", "vit-l-16-b8 prefill"]
    assert "one new token after 512 cached" in out[1]
    assert heldout.main(["--dry-run", "--cases", "opt-125m,vit-l-16-b8", "--in-context", "vit-l-16-b8"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert ["in context too" in line for line in out] == [False, False, True]
    assert heldout.main(["--dry-run", "--cases", "opt-125m", "--in-context", "gemma-2b"]) == 2
    assert "unknown case or mode 'gemma-2b'" in capsys.readouterr().err
    assert heldout.main(["--cases", "opt-125m", "--modes", "decod"]) == 2
    assert "unknown case or mode 'decod'" in capsys.readouterr().err


def test_the_yardstick_is_the_model_by_blocks_with_the_parts_paced_where_any_was():
    # Issue 13: explained coverage = (the blocks + the other components + glue + gaps) / model, each block its
    # parts + interaction; a part at the limit alone counts paced. Gemma-2B-2L's prefill on an H200 (lease E).
    from types import SimpleNamespace as NS

    acc = lambda c, e: NS(coverage=c, explained_coverage=e)  # noqa: E731
    rep = NS(groups=[NS(cv=0.002), NS(cv=0.008)], blocks=[NS(cv=0.0048, interaction_rel=0.079)], whole={"cv": 0.0046},
             block_accounting=acc(0.870, 0.872), context_accounting=None, coverage=0.840, explained_coverage=0.853,
             settings={"whole_model_eager": False, "whole_model_eager_reason": ""}, regime_mismatch=[], failures=[],
             paced={"rows": [NS(name="lm_head", ratio=1.24, freed=True, why="")], "accounting": acc(0.9, 0.95),
                    "block_accounting": acc(0.98, 0.987)}, to_dict=lambda: {})
    ident = {"gpu": {"uuid": "GPU-eda9a7f1"}, "date": "2026-11-27", "clear_native": "0.1.0", "code_version": "x",
             "protocol_version": 5}
    rec = heldout_cases.record("gemma-2b-2l", "prefill", rep, ident)
    assert rec["max_cv"] == 0.008 and rec["explained_coverage"] == 0.987 and rec["coverage"] == 0.870
    assert rec["explained_coverage_basis"] == "blocks, paced" and rec["explained_coverage_by_blocks"] == 0.872
    assert (rec["coverage_parts"], rec["explained_coverage_parts"]) == (0.840, 0.853)
    # Nothing paced: the blocks alone; no blocks (a model without repeated layers): the parts.
    unpaced = dict(rec, explained_coverage_by_blocks_paced=None)
    assert heldout_cases.yardstick(unpaced)["explained_coverage"] == 0.872
    flat = dict(unpaced, block_coverage=None, explained_coverage_by_blocks=None)
    assert heldout_cases.yardstick(flat) == {"coverage": 0.840, "explained_coverage": 0.853,
                                             "explained_coverage_basis": "parts"}
