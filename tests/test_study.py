"""bench/run.py on the CPU: the dry run of the whole suite, an interrupted run resumed, the report,
the checks made before any GPU work.

Measurements come from a fake executor whose component energies follow a known
energy model E = a·FLOPs + b·bytes + P·t (with the FLOPs and bytes the dry run
plans), so the report's fit can be checked against the truth.
"""

import contextlib
import csv
import json
import math
import sys
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")
pytest.importorskip("matplotlib")

import clear_native as cn  # noqa: E402
from bench import coverage_table, figures, preflight, run, store, suite, tasks  # noqa: E402
from clear_native.accounting import account  # noqa: E402
from clear_native.analysis import fit_energy_model  # noqa: E402
from clear_native.protocol import PROTOCOL_VERSION  # noqa: E402
from clear_native.results import GroupResult, ModelReport  # noqa: E402

TRUTH = dict(a=0.6e-12, b=25e-12, p=140.0)  # J/FLOP, J/byte, W
SMALL = ["--models", "bert-base,gpt2,t5-small,deit-s-16", "--sweeps", "batch,kv,dtype", "--no-reference",
         "--no-card-check"]


def test_dry_run_plans_the_whole_suite_without_a_gpu(capsys):
    assert run.main(["--dry-run"]) == 0
    out = capsys.readouterr().out
    tasks = suite.plan()
    for name in suite.MODELS:
        assert f"| {name}/prefill/" in out
    for t in tasks:
        assert f"| {t.id} |" in out
    assert "estimated GPU time" in out
    # 15 models, decode for the 4 decoders and 3 encoder-decoders, 4 coverage cases, 5 sweeps of 2 new points
    # each, and the KV-cache sweep: Llama-3.2-1B's decode at 6 cache lengths to 8k, one already a suite task.
    assert len(tasks) == len({t.id for t in tasks}) == 41
    kv = sorted(t.cache_len for t in tasks if "sweep:kv" in t.purpose)
    assert kv == [128, 512, 1024, 2048, 4096, 8192] and {t.model for t in tasks if "sweep:kv" in t.purpose} == \
        {"llama-3.2-1b"}
    assert {t.model for t in tasks if t.mode == "decode"} == {"gpt2", "gpt2-medium", "llama-3.2-1b", "qwen2.5-0.5b",
                                                              "t5-small", "t5-base", "bart-base"}


def test_plan_rejects_unknown_names_clearly(capsys):
    assert run.main(["--dry-run", "--models", "bert-huge"]) == 2
    assert "unknown model 'bert-huge'" in capsys.readouterr().err
    assert run.main(["--dry-run", "--sweeps", "depth"]) == 2


def test_without_a_gpu_it_says_so_in_one_line_and_exits_2(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0")  # run.main() sets it: restored after the test
    assert run.main(["--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("bench/run.py: ")
    assert "GPU" in err
    assert not any(tmp_path.rglob("*.jsonl"))


class FakeGpu:
    """Stands in for the GPU: components' energies follow TRUTH; can fail or be interrupted on cue."""

    def __init__(self, interrupt_at=None, fail=()):
        self.calls, self.interrupt_at, self.fail = 0, interrupt_at, set(fail)
        self.plans = {}

    def measure_task(self, lab, task, profile, args):
        self.calls += 1
        if self.calls == self.interrupt_at:
            raise KeyboardInterrupt("simulated Ctrl-C")
        if task.id in self.fail:
            raise RuntimeError("simulated capture failure")
        if task.id not in self.plans:
            self.plans[task.id] = suite.flops_plan(task)
        groups = []
        for i, g in enumerate(self.plans[task.id]["groups"]):
            t = 2e-6 + g["flops"] / 300e12 + g["bytes_min"] / 2e12
            e = TRUTH["a"] * g["flops"] + TRUTH["b"] * g["bytes_min"] + TRUTH["p"] * t
            cv = 0.002 + 0.001 * (i % 3)
            groups.append(GroupResult(g["name"], g["kind"], [g["name"]], g["occurrences"], t, e, e - 80 * t, cv,
                                      2.8 * cv / math.sqrt(5), 5, g["flops"], g["bytes_min"],
                                      e / g["flops"] if g["flops"] else math.nan, 0.0))
        comp_t = sum(g.occurrences * g.gpu_time_per_call_s for g in groups)
        comp_e = sum(g.occurrences * g.energy_per_call_j for g in groups)
        model_t = comp_t * 1.15
        model_e = 1.02 * comp_e + 0.13 * comp_t * 90.0  # glue 2 % at the components' power, gaps 13 % at 90 W
        acc = account(groups, model_e, model_t, comp_t * 1.02, comp_t, 90.0)
        whole = dict(energy_per_call_j=model_e, energy_per_call_ci95_j=model_e * 0.003, gpu_time_per_call_s=model_t,
                     cv=0.003, ci95_rel=0.003)
        return ModelReport(task.model, task.mode, {}, groups, whole, acc, [], {}, 1.0,
                           settings=dict(whole_model_eager=False, l2=args.l2)).to_dict()


@pytest.fixture
def fake(monkeypatch):
    """Patches the GPU-facing parts of bench/run.py; returns a function installing a FakeGpu."""
    profile = cn.SensorProfile("GPU-fake-driver-1", 0.02, 0.021, 0.009, 0.009, 0.43, 1.3, 0.1, 77.0, 250.0, "now")
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0")  # run.main() sets it: restored after the test
    monkeypatch.setattr(preflight, "gpu", lambda device: None)
    monkeypatch.setattr(preflight, "torch_sees_gpu", lambda: True)
    monkeypatch.setattr(preflight, "card_name", lambda device=0: "Fake H0")
    monkeypatch.setattr(tasks, "run_identity", lambda t: {"gpu": {"name": "Fake H0", "uuid": "GPU-fake",
                                                                    "driver_version": "1", "power_limit_w": 700.0},
                                                            "date": "2026-11-26", "code_version": "fake-code",
                                                            "protocol_version": PROTOCOL_VERSION})
    monkeypatch.setattr(run, "code_version", lambda: "fake-code")
    monkeypatch.setattr(cn, "calibrate", lambda **kw: profile)
    monkeypatch.setattr(cn, "one_stream", lambda device=None: contextlib.nullcontext())
    clock = iter(range(10**6))
    monkeypatch.setattr(run.time, "monotonic", lambda: float(next(clock)))  # deterministic wall times

    def install(gpu):
        monkeypatch.setattr(tasks, "measure_task", gpu.measure_task)
        return gpu
    return install


def the_run(out: Path) -> Path:
    """The one run folder a test's --out holds."""
    runs = store.runs_under(out)
    assert len(runs) == 1, runs
    return runs[0]


def planned(args) -> int:
    """Measurements a run of ``args`` makes: its tasks, and the few it repeats at its end."""
    tasks = suite.plan(args[1].split(","), args[3].split(","))
    return len(tasks) + len(suite.repeats(tasks))


def test_interrupted_run_resumes_and_gives_the_same_report_as_one_run(tmp_path, fake, capsys):
    one, two = tmp_path / "one", tmp_path / "two"
    fake(FakeGpu())
    assert run.main(SMALL + ["--out", str(one)]) == 0
    whole_run = (the_run(one) / "REPORT.md").read_text()
    assert the_run(one).parent.name == "fake-h0"  # <out>/<card>/<date_time>/

    fake(FakeGpu(interrupt_at=4))
    assert run.main(SMALL + ["--out", str(two)]) == 130
    folder = the_run(two)
    assert f"--resume {folder}" in capsys.readouterr().err
    assert len(store.load(folder)) == 3  # the three measured before the interruption are kept

    assert run.main(SMALL + ["--out", str(two)]) == 0  # a new run gets a folder of its own
    assert len(store.runs_under(two)) == 2 and len(store.load(folder)) == 3
    gpu = fake(FakeGpu())
    assert run.main(SMALL + ["--resume", str(folder)]) == 0
    assert gpu.calls == planned(SMALL) - 3  # only what was missing
    assert (folder / "REPORT.md").read_text() == whole_run.replace(str(the_run(one)), str(folder))
    for name in figures.FIGURES:
        assert (folder / f"{name}.png").stat().st_size > 1000


def test_a_time_limit_starts_no_task_that_could_run_past_it_and_resume_measures_the_rest(tmp_path, fake, capsys):
    # Note [A time limit] (bench/workers.py): a task's bound is its budget of trials (100 s here) and 90 s of setup.
    budget = ["--task-budget-s", "100"]
    gpu = fake(FakeGpu())
    assert run.main(SMALL + budget + ["--time-limit", "150", "--out", str(tmp_path)]) == 3
    folder = the_run(tmp_path)
    err = capsys.readouterr().err
    n_tasks = len(suite.plan(SMALL[1].split(","), SMALL[3].split(",")))  # the repeats are queued as tasks end
    assert gpu.calls == 0 and f"time limit: {n_tasks} job(s) not started" in err
    assert f"continue with: python bench/run.py --resume {folder}" in err and "no report yet" in err
    # The fake GPU's tasks end at once (its clock: a second each reading): with 1000 s every one fits.
    gpu = fake(FakeGpu())
    assert run.main(SMALL + budget + ["--resume", str(folder), "--time-limit", "1000"]) == 0
    assert gpu.calls == planned(SMALL) and "time limit" not in capsys.readouterr().err
    # Refused before any GPU time: a limit that is no time, and a Ray cluster, which queues every job at once.
    assert run.main(SMALL + ["--time-limit", "0", "--out", str(tmp_path)]) == 2
    assert "--time-limit must be > 0" in capsys.readouterr().err
    assert run.main(SMALL + ["--time-limit", "60", "--ray", "--out", str(tmp_path)]) == 2
    assert "--time-limit with --ray" in capsys.readouterr().err


def test_a_torn_last_record_is_kept_aside_and_its_task_measured_again(tmp_path, fake):
    fake(FakeGpu(interrupt_at=4))
    assert run.main(SMALL + ["--out", str(tmp_path)]) == 130
    folder = the_run(tmp_path)
    path = folder / store.MEASUREMENTS
    lines = path.read_bytes().splitlines(keepends=True)
    torn = lines[-1][: len(lines[-1]) // 2]  # a crash in the middle of the third record's write
    path.write_bytes(b"".join(lines[:-1]) + torn)
    with pytest.warns(cn.records.TornRecordWarning):
        assert len(store.load(folder)) == 2
    gpu = fake(FakeGpu())
    with pytest.warns(cn.records.TornRecordWarning):
        assert run.main(SMALL + ["--resume", str(folder)]) == 0
    assert gpu.calls == planned(SMALL) - 2
    ids = [r["task"]["id"] for r in store.load(folder)]
    assert len(ids) == len(set(ids)) == planned(SMALL)
    assert (folder / (store.MEASUREMENTS + cn.records.TORN_SUFFIX)).read_bytes() == torn + b"\n"


def test_a_failed_task_is_reported_and_retried_on_request(tmp_path, fake):
    bad = "gpt2/prefill/b8s128/bf16"  # not one the run repeats (its repeat would be a second call)
    fake(FakeGpu(fail={bad}))
    assert run.main(SMALL + ["--out", str(tmp_path)]) == 0
    folder = the_run(tmp_path)
    text = (folder / "REPORT.md").read_text()
    assert f"| {bad} | failed: RuntimeError: simulated capture failure" in text
    gpu = fake(FakeGpu())
    assert run.main(SMALL + ["--resume", str(folder)]) == 0 and gpu.calls == 0
    assert run.main(SMALL + ["--resume", str(folder), "--retry-failed"]) == 0 and gpu.calls == 1
    assert "failed:" not in (folder / "REPORT.md").read_text()


def test_redo_measures_tasks_again_and_keeps_their_old_records(tmp_path, fake, capsys):
    fake(FakeGpu())
    assert run.main(SMALL + ["--out", str(tmp_path)]) == 0
    folder = the_run(tmp_path)
    before = store.load(folder)
    gpu = fake(FakeGpu())
    assert run.main(SMALL + ["--resume", str(folder), "--redo", "gpt2/prefill/b8s128"]) == 0
    assert gpu.calls == 1
    after = store.load(folder)
    old = store.load(folder, store.SUPERSEDED)
    assert [r["task"]["id"] for r in old] == ["gpt2/prefill/b8s128/bf16"] and len(after) == len(before)
    assert "Measured again with `--redo` (1 tasks" in (folder / "REPORT.md").read_text()
    gpu = fake(FakeGpu())  # a task the run repeats at its end: redone with its repeat
    assert run.main(SMALL + ["--resume", str(folder), "--redo", "gpt2/decode/b1kv512"]) == 0 and gpu.calls == 2
    assert [r["task"]["id"] for r in store.load(folder, store.SUPERSEDED)][1:] == \
        ["gpt2/decode/b1kv512/bf16", "gpt2/decode/b1kv512/bf16/repeat1"]
    capsys.readouterr()
    gpu = fake(FakeGpu())
    assert run.main(SMALL + ["--resume", str(folder), "--redo", "nonesuch"]) == 2 and gpu.calls == 0
    assert "--redo nonesuch matches no task id" in capsys.readouterr().err
    assert len(store.load(folder)) == len(before)  # nothing moved


def test_report_from_records_recovers_the_energy_model(tmp_path, fake):
    fake(FakeGpu())
    assert run.main(SMALL + ["--out", str(tmp_path)]) == 0
    folder = the_run(tmp_path)
    (folder / "REPORT.md").unlink()
    assert run.main(SMALL + ["--report-only", str(folder)]) == 0
    an = json.loads((folder / "report.json").read_text())["analysis"]
    c = an["energy_model"]["coefficients"]
    assert c["j_per_flop"] == pytest.approx(TRUTH["a"], rel=1e-6)
    assert c["j_per_byte"] == pytest.approx(TRUTH["b"], rel=1e-6)
    assert c["power_w"] == pytest.approx(TRUTH["p"], rel=1e-6)
    assert an["energy_model"]["lomo_mean_abs"] < 1e-6
    assert an["energy_model"]["lomo_mean_abs_flops_only"] > 0.05  # FLOPs alone miss bytes and time
    text = (folder / "REPORT.md").read_text()
    assert "## Energy per FLOP by component kind" in text and "## Sweep: batch size" in text
    assert "## Sweep: KV-cache length" in text and "## Sweep: dtype" in text
    # The coverage arithmetic of the fake: components + glue + gaps = whole model.
    rec = store.load(folder)[0]["report"]["accounting"]
    assert rec["explained_coverage"] == pytest.approx(1.0, rel=1e-9)
    # The per-FLOP sweep figure's data: each kind's energy over its FLOPs, from the raw groups; attention and
    # feed-forward only (a rotary table's or a pooler's pJ/FLOP would squeeze the axis).
    reports = {r["task"]["id"]: r["report"] for r in store.load(folder)}
    with open(folder / "sweeps_per_flop.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert {r["sweep"] for r in rows} == {"batch", "kv", "dtype"}
    assert {r["kind"] for r in rows} <= {"self_attention", "cross_attention", "mlp"}
    assert {r["kind"] for r in rows} >= {"self_attention", "mlp"}
    for r in rows:
        gs = [g for g in reports[r["task"]]["groups"] if g["kind"] == r["kind"]]
        pj = sum(g["occurrences"] * g["energy_per_call_j"] for g in gs) / sum(g["occurrences"] * g["flops"] for g in gs)
        assert float(r["pj_per_flop"]) == pytest.approx(pj * 1e12, rel=1e-9)


def test_report_only_without_records_says_what_to_do(tmp_path, capsys):
    assert run.main(["--report-only", str(tmp_path)]) == 2
    assert "no measurements in" in capsys.readouterr().err


def test_without_matplotlib_the_report_is_still_written_and_says_why(tmp_path, fake, monkeypatch):
    fake(FakeGpu())
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib now raises ImportError
    assert run.main(SMALL + ["--out", str(tmp_path), "--models", "bert-base", "--sweeps", "none"]) == 0
    text = (the_run(tmp_path) / "REPORT.md").read_text()
    assert "No figures: matplotlib is not available" in text and "![" not in text


def test_a_resumed_run_cannot_mix_l2_modes(tmp_path, fake, capsys):
    fake(FakeGpu())
    assert run.main(SMALL + ["--out", str(tmp_path), "--models", "bert-base", "--sweeps", "none"]) == 0
    folder = the_run(tmp_path)
    assert store.load(folder)[0]["settings"]["l2"] == "cold"
    assert run.main(SMALL + ["--resume", str(folder), "--l2", "hot"]) == 2
    assert "cannot mix" in capsys.readouterr().err


@pytest.mark.parametrize("argv, says", [
    (["--device", "3"], "--device 3 does not exist"),
    (["--redo", "bert"], "--redo needs --resume RUN"),
    (["--resume", "/nonexistent/run"], "no run there"),
    (["--resume", ""], "no run there"),  # a script's unset variable: an error, not a new run (it once started one)
])
def test_bad_arguments_are_refused_before_any_gpu_work(tmp_path, fake, capsys, monkeypatch, argv, says):
    gpu = fake(FakeGpu())
    monkeypatch.setattr(preflight, "gpu", lambda device: preflight.device_problem(device, 1))
    monkeypatch.setattr(cn, "calibrate", lambda **kw: pytest.fail("calibrated before refusing"))
    assert run.main(SMALL + ["--out", str(tmp_path)] + argv) == 2
    err = capsys.readouterr().err.strip()
    assert says in err and len(err.splitlines()) == 1 and gpu.calls == 0


def test_an_unwritable_out_is_refused_before_any_gpu_work(tmp_path, fake, capsys, monkeypatch):
    fake(FakeGpu())
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    monkeypatch.setattr(cn, "calibrate", lambda **kw: pytest.fail("calibrated before refusing"))
    assert run.main(SMALL + ["--out", str(blocker / "results")]) == 2
    err = capsys.readouterr().err.strip()
    assert "cannot write results under" in err and "--out" in err and len(err.splitlines()) == 1


def test_missing_libraries_are_named_with_a_fix_that_works(monkeypatch):
    monkeypatch.setitem(sys.modules, "torch", None)
    assert 'pip install ".[study]"' in preflight.libraries()
    monkeypatch.undo()
    import transformers

    monkeypatch.setattr(transformers, "__version__", "4.45.0")
    problem = preflight.libraries()
    assert "outside the tested range" in problem and 'pip install "transformers>=' in problem


def test_energy_model_fit_keeps_coefficients_physical():
    # Energy that grows with FLOPs and time only: the bytes coefficient must come out 0, not negative.
    import numpy as np

    rng = np.random.default_rng(0)
    points = []
    for i in range(40):
        f, b, t = 10 ** rng.uniform(6, 11), 10 ** rng.uniform(5, 8), 10 ** rng.uniform(-6, -3)
        e = 1e-12 * f + 200.0 * t
        points.append({"model": f"m{i % 5}", "task": f"t{i % 5}", "occurrences": 1, "flops": f, "bytes": b,
                       "time": t, "energy": e * (1 + 0.01 * rng.standard_normal())})
    coef = fit_energy_model(points, ("flops", "bytes", "time"))
    assert (coef >= 0).all()
    assert coef[0] == pytest.approx(1e-12, rel=0.05) and coef[2] == pytest.approx(200.0, rel=0.05)
    assert coef[1] < 1e-14  # ~0 J/byte


def test_coverage_table_from_the_study_records(tmp_path, fake):
    fake(FakeGpu())
    assert run.main(SMALL + ["--out", str(tmp_path), "--sweeps", "none"]) == 0
    res = coverage_table.from_study(the_run(tmp_path))
    by_id = {c["study_task"]: c for c in res["cases"]}
    assert len(by_id) == 10
    assert "report" in by_id["bert-base/prefill/b8s128/bf16"] and "report" in by_id["gpt2/decode/b1kv512/bf16"]
    assert by_id["llama-3.2-1b/prefill/b8s128/bf16"]["error"] == "not in the study's records"
    text = coverage_table.markdown(res)
    assert "| bert-base | prefill | 8×128 |" in text and "cold L2" in text


def test_coverage_table_shows_groups_in_context():
    from clear_native.results import ContextAccounting, InContext

    g = GroupResult(name="mlp", kind="feed_forward", members=["m"], occurrences=4, gpu_time_per_call_s=10e-6,
                    energy_per_call_j=1e-3, dynamic_energy_per_call_j=5e-4, cv=0.004, ci95_rel=0.005, trials=5,
                    flops=10**9, bytes_min=1000, j_per_flop=1e-12, share=0.5, mean_power_w=100.0,
                    sm_clock_mhz=(1410.0, 1650.0), clock_event_reasons=["sw_power_cap"])
    acc = account([g], 8e-3, 50e-6, 40e-6, 40e-6, 100.0)
    rep = ModelReport(model="M", mode="prefill", inputs={}, groups=[g],
                      whole={"cv": 0.003, "energy_per_call_j": 8e-3, "mean_power_w": 160.0, "sm_clock_mhz": [1950, 1950],
                             "clock_event_reasons": []},
                      accounting=acc, failures=[], run={}, wall_s=1.0, settings={"whole_model_eager": False},
                      in_context=[InContext("mlp", 4, 12, 1.16e-3, 0.03e-3, 10e-6, 1.16, 0.55, 90.0, 0.0)],
                      context_accounting=ContextAccounting(8.4e-3, 4.64e-3, 0.1e-3, 2e-6, 3.66e-3, 0.552, 0.564, 0.05))
    res = {"gpu": {"name": "H", "driver_version": "d", "uuid": "GPU-x"}, "date": "today",
           "cases": [{"model": "m", "mode": "prefill", "batch": 8, "seq": 128, "report": rep.to_dict(), "wall_s": 9.0}]}
    text = coverage_table.markdown(res)
    assert "| 55.2 % | 1.2 % | +43.6 % | 56.4 % | +5.0 % | 9 s |" in text
    assert "| m prefill 8×128 | mlp | 4 | 1 mJ | 100 W | 1410-1650 MHz | sw_power_cap | 1.16 ± 0.03 mJ | 1.16 | 55.0 % | 0 |" in text
    assert "| m prefill 8×128 | whole model | 1 | 8 mJ | 160 W | 1950 MHz | — |" in text


def test_compare_two_runs_part_by_part(tmp_path, fake, capsys):
    from bench import compare

    fake(FakeGpu())
    assert run.main(SMALL + ["--out", str(tmp_path / "a"), "--models", "bert-base", "--sweeps", "none"]) == 0
    a = the_run(tmp_path / "a")
    b_records = store.load(a)
    for r in b_records:  # run B: every energy 2 % higher
        r["report"]["whole"]["energy_per_call_j"] *= 1.02
        for g in r["report"]["groups"]:
            g["energy_per_call_j"] *= 1.02
    cn.records.rewrite(tmp_path / "b.jsonl", b_records)
    assert compare.main([str(a), str(tmp_path / "b.jsonl"), "--out", str(tmp_path), "--name", "cmp"]) == 0
    rows = json.loads((tmp_path / "cmp.json").read_text())["rows"]
    assert rows and all(r["rel_diff"] == pytest.approx(0.02) for r in rows)
    assert "median 2.00 %" in (tmp_path / "cmp.md").read_text()


def test_energy_model_by_regime_recovers_the_truth_in_each(tmp_path, fake):
    fake(FakeGpu())
    assert run.main(SMALL + ["--out", str(tmp_path)]) == 0
    an = json.loads((the_run(tmp_path) / "report.json").read_text())["analysis"]
    em = an["energy_model_by_regime"]["prefill"]
    assert em["coefficients"]["j_per_flop"] == pytest.approx(TRUTH["a"], rel=1e-6)
    assert em["coefficients"]["power_w"] == pytest.approx(TRUTH["p"], rel=1e-6)
    assert em["lomo_worst_abs"] < 1e-6
    assert an["energy_model_by_regime"]["decode"] == {}  # two decoders: too few models to hold one out
    text = (the_run(tmp_path) / "REPORT.md").read_text()
    assert "## Findings beside the paper's" in text and "## Energy model by regime" in text


def test_attention_premium_per_model_and_its_reversals():
    from clear_native.analysis import attention_premium

    def rec(model, att_j, att_f, mlp_j, mlp_f):
        groups = [dict(kind="self_attention", occurrences=2, energy_per_call_j=att_j, dynamic_energy_per_call_j=0,
                       flops=att_f, bytes_min=0, gpu_time_per_call_s=0),
                  dict(kind="mlp", occurrences=2, energy_per_call_j=mlp_j, dynamic_energy_per_call_j=0, flops=mlp_f,
                       bytes_min=0, gpu_time_per_call_s=0)]
        return {"task": {"model": model}, "report": {"groups": groups}}

    p = attention_premium({"a": rec("a", 3.0, 1e12, 2.0, 2e12),     # 3 pJ/FLOP vs 1: 3x
                           "b": rec("b", 1.0, 2e12, 1.0, 1e12),     # 0.5 vs 1: reversed
                           "c": rec("c", 2.0, 1e12, 2.0, 1e12)})    # 1x
    assert p["per_task"] == pytest.approx({"a": 3.0, "b": 0.5, "c": 1.0})
    assert p["median"] == pytest.approx(1.0) and p["reversed"] == ["b"]


def test_a_run_never_mixes_code_or_protocol_versions_unless_told(tmp_path, fake, capsys, monkeypatch):
    ident = {"gpu": {"name": "Fake H0", "uuid": "GPU-fake", "driver_version": "1", "power_limit_w": 700.0},
             "date": "2026-11-26", "code_version": "abc123", "protocol_version": 3}
    monkeypatch.setattr(tasks, "run_identity", lambda t: dict(ident))
    monkeypatch.setattr(run, "code_version", lambda: ident["code_version"])
    fake(FakeGpu(interrupt_at=3))
    assert run.main(SMALL + ["--out", str(tmp_path)]) == 130
    folder = the_run(tmp_path)
    ident["code_version"] = "def456"  # the code changed before the resume
    gpu = fake(FakeGpu())
    assert run.main(SMALL + ["--resume", str(folder)]) == 2 and gpu.calls == 0
    assert "pass --allow-mixed" in capsys.readouterr().err
    assert run.main(SMALL + ["--resume", str(folder), "--allow-mixed"]) == 0
    assert store.versions(store.load(folder)) == {("abc123", "3"), ("def456", "3")}
    assert run.main(SMALL + ["--report-only", str(folder)]) == 2
    assert "several code/protocol versions" in capsys.readouterr().err
    assert run.main(SMALL + ["--report-only", str(folder), "--allow-mixed"]) == 0
    assert "abc123 / protocol 3, def456 / protocol 3" in (folder / "REPORT.md").read_text()


def test_the_identity_names_the_python_code_that_measured(tmp_path):
    # On a lent GPU an installed wheel of an older commit once measured while code_version named the newer
    # checkout: the identity also hashes the code imported, and says whether it was this checkout's.
    import shutil

    import torch

    from bench import common

    ident = common.run_identity(torch, gpu={"name": "Fake H0", "uuid": "GPU-fake"})
    pkg = Path(cn.__file__).resolve().parent
    assert ident["clear_native_from_checkout"] == (pkg.parent == Path(__file__).resolve().parents[1])
    copy = tmp_path / "clear_native"
    shutil.copytree(pkg, copy, ignore=shutil.ignore_patterns("*.so", "__pycache__"))
    assert common.package_sha(copy) == ident["clear_native_sha"]  # the same code elsewhere: the same hash
    (copy / "protocol.py").write_text((copy / "protocol.py").read_text() + "# changed\n")
    assert common.package_sha(copy) != ident["clear_native_sha"]


def test_the_identity_names_the_cuda_environment_but_the_card(monkeypatch):
    # CUDA_DEVICE_MAX_CONNECTIONS and CUDA_MODULE_LOADING change how the driver launches work (Note [Launch-latency
    # state]): a record says which were set; the card is named by the identity's gpu, not by the variable.
    import torch

    from bench import common

    monkeypatch.setenv("CUDA_DEVICE_MAX_CONNECTIONS", "1")
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "GPU-fake")
    monkeypatch.setenv("NOT_CUDA_X", "2")
    ident = common.run_identity(torch, gpu={"name": "Fake H0", "uuid": "GPU-fake"})
    assert ident["cuda_env"].get("CUDA_DEVICE_MAX_CONNECTIONS") == "1"
    assert "CUDA_VISIBLE_DEVICES" not in ident["cuda_env"] and "NOT_CUDA_X" not in ident["cuda_env"]
    monkeypatch.delenv("CUDA_DEVICE_MAX_CONNECTIONS")
    assert "CUDA_DEVICE_MAX_CONNECTIONS" not in common.run_identity(torch, gpu={"name": "F", "uuid": "G"})["cuda_env"]
    # A report's header names what was set beyond where CUDA lives: a run under one work queue says so.
    assert common.cuda_env_text(ident) == "; under CUDA_DEVICE_MAX_CONNECTIONS=1"
    assert common.cuda_env_text({"cuda_env": {"CUDA_HOME": "/usr/local/cuda", "CUDA_VERSION": "13.0.2"}}) == ""
    assert common.cuda_env_text({}) == ""  # results from before cuda_env was recorded


def test_a_task_builds_the_same_weights_and_inputs_whatever_drew_random_numbers_before():
    # Two processes of one task must replay the same tensors: a worker may have drawn random numbers before (its
    # own earlier tasks, a heater), and torch's generators are one stream per process.
    torch = pytest.importorskip("torch")
    import transformers as T

    from bench import suite

    task = suite.Task("gpt2", mode="prefill", batch=1, seq=8, dtype="fp32",
                      overrides=(("n_embd", 32), ("n_head", 2), ("n_layer", 1), ("n_positions", 16),
                                 ("vocab_size", 50)))
    m1, in1, _ = suite.build(T, torch, task, "cpu")
    torch.rand(1000)
    m2, in2, _ = suite.build(T, torch, task, "cpu")
    torch.testing.assert_close(in1, in2)
    for (n, a), (_, b) in zip(m1.state_dict().items(), m2.state_dict().items()):
        torch.testing.assert_close(a, b, msg=n)
    torch.manual_seed(123)
    _, in3, _ = suite.build(T, torch, task, "cpu")
    assert torch.equal(in3[0], in1[0])
