"""bench/run.py on several GPUs at once (issue 15), on the simulated GPU: one fresh process per task on
each card of a host (--gpus), and Ray tasks on a real local Ray cluster (--ray). The records, the
retries and the single writer are the product's own; only the GPU is simulated (--simulate)."""

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")

from bench import run, store, workers  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
# Two short tasks (BERT-base at 8 x 128 and at 1 x 8), each card's checks, one repeat.
SMALL = ["--simulate", "--models", "bert-base", "--sweeps", "none", "--no-reference", "--window-s", "0.1",
         "--min-trials", "3", "--max-trials", "6"]


def start(args, out) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, str(ROOT / "bench" / "run.py"), *SMALL, *args, "--out", str(out)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=ROOT,
                            env=dict(os.environ, PYTHONUNBUFFERED="1"))


def the_run(out: Path) -> Path:
    runs = store.runs_under(out)
    assert len(runs) == 1, runs
    return runs[0]


def test_cards_are_chosen_by_index_or_uuid_and_a_wrong_choice_names_the_cards_there_are():
    every = workers.host_cards("all", simulate=True)
    assert [c.uuid for c in every] == [f"SIM-GPU-{i}" for i in range(4)]
    assert [c.uuid for c in workers.host_cards("2,0", simulate=True)] == ["SIM-GPU-2", "SIM-GPU-0"]
    assert [c.uuid for c in workers.host_cards("SIM-GPU-3", simulate=True)] == ["SIM-GPU-3"]
    with pytest.raises(ValueError, match=r"'7' names 0 GPUs; this host has 0=SIM-GPU-0, 1=SIM-GPU-1"):
        workers.host_cards("0,7", simulate=True)
    with pytest.raises(ValueError, match="'SIM' names 4 GPUs"):
        workers.host_cards("SIM", simulate=True)


def test_a_pinned_job_runs_only_on_its_card_and_every_job_carries_the_profiles_known():
    jobs = workers.Jobs([{"id": "a", "card": "GPU-b"}, {"id": "b", "card": None}, {"id": "c", "card": "GPU-a"}])
    jobs.profiles["GPU-a"] = {"settle_s": 0.4}
    assert jobs.take("GPU-a")["id"] == "b"
    got = jobs.take("GPU-a")
    assert got["id"] == "c" and got["profiles"] == {"GPU-a": {"settle_s": 0.4}}
    assert jobs.take("GPU-a") is None and jobs.take(None) is None and len(jobs) == 1
    assert jobs.take("GPU-b")["id"] == "a"


def test_a_cards_first_profile_is_kept_and_a_record_without_one_changes_nothing():
    jobs = workers.Jobs()
    card = {"identity": {"gpu": {"uuid": "GPU-a"}}}
    assert jobs.keep_profile(card | {"profile": {"settle_s": 0.4}})
    assert not jobs.keep_profile(card | {"profile": {"settle_s": 0.9}})  # calibrated once: the first stays
    assert not jobs.keep_profile({"status": "failed"}) and not jobs.keep_profile(card)
    assert jobs.profiles == {"GPU-a": {"settle_s": 0.4}}


def test_a_bad_gpu_choice_is_refused_before_any_work(tmp_path, capsys):
    assert run.main(SMALL + ["--gpus", "0,9", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "'9' names 0 GPUs" in err
    assert not any(tmp_path.rglob("*.jsonl"))


def test_every_gpu_of_a_host_in_fresh_processes_and_a_killed_worker_loses_nothing(tmp_path):
    seen, killed = "", None
    with start(["--gpus", "0,1"], tmp_path) as p:
        for line in p.stdout:  # kill the first worker that starts a task, while it measures
            seen += line
            m = re.search(r"started (bert-base/\S+) on (SIM-GPU-\d) \(pid (\d+), attempt 1\)", line)
            if m and killed is None:
                time.sleep(0.5)
                os.kill(int(m.group(3)), signal.SIGKILL)
                killed = m.group(1)
    assert p.returncode == 0, seen
    assert killed and f"{killed} goes back in the queue" in seen
    folder = the_run(tmp_path)
    recs = store.load(folder)
    ids = [r["task"]["id"] for r in recs]
    assert sorted(ids) == sorted(["bert-base/prefill/b8s128/bf16", "bert-base/prefill/b1s8/bf16",
                                  "bert-base/prefill/b1s8/bf16/repeat1"])  # each once: one writer
    assert all(r["status"] == "ok" for r in recs)
    by_id = {r["task"]["id"]: r for r in recs}
    assert by_id[killed]["attempts"] == 2
    cards = {r["identity"]["gpu"]["uuid"] for r in recs}
    assert cards <= {"SIM-GPU-0", "SIM-GPU-1"}
    # A repeat runs on the card that measured its task first; each card checked at start and end.
    assert by_id["bert-base/prefill/b1s8/bf16/repeat1"]["identity"]["gpu"]["uuid"] == \
        by_id["bert-base/prefill/b1s8/bf16"]["identity"]["gpu"]["uuid"]
    checks = store.load(folder, store.CARDS)
    assert sorted(r["task"]["id"] for r in checks) == [f"card_check/{ph}/SIM-GPU-{i}" for ph in ("end", "start")
                                                       for i in (0, 1)]
    assert all(r["identity"]["gpu"]["uuid"] == r["task"]["id"].split("/")[-1] for r in checks)
    # Each worker process ran one job: as many processes as jobs (the killed one counted twice).
    assert len(set(re.findall(r"\(pid (\d+),", seen))) == len(recs) + len(checks) + 1
    assert set(json.loads((folder / store.PROFILES).read_text())) == {"SIM-GPU-0", "SIM-GPU-1"}
    assert (folder / "REPORT.md").exists()


def test_the_study_on_a_local_ray_cluster_writes_the_same_records(tmp_path):
    pytest.importorskip("ray")
    p = start(["--ray", "--gpus", "0,1"], tmp_path)
    out = p.communicate(timeout=600)[0]
    assert p.returncode == 0, out
    folder = the_run(tmp_path)
    recs = store.load(folder)
    assert sorted(r["task"]["id"] for r in recs) == sorted(["bert-base/prefill/b8s128/bf16",
                                                            "bert-base/prefill/b1s8/bf16",
                                                            "bert-base/prefill/b1s8/bf16/repeat1"])
    assert all(r["status"] == "ok" and r["identity"]["gpu"]["uuid"] in ("SIM-GPU-0", "SIM-GPU-1") for r in recs)
    for r in recs:  # the simulated truth: whole model and its parts add up
        assert 0.97 < r["report"]["accounting"]["explained_coverage"] < 1.03
    assert "Ray cluster local" in out and (folder / "REPORT.md").exists()


def test_an_interrupted_multi_gpu_run_stops_its_workers_and_resumes_where_it_stopped(tmp_path):
    seen = ""
    with start(["--gpus", "0,1", "--no-card-check"], tmp_path) as p:
        for line in p.stdout:  # stop the driver as soon as its first record is written
            seen += line
            if line.startswith("[1/"):
                p.send_signal(signal.SIGTERM)
                break
        seen += p.stdout.read()
    assert p.returncode == 130, seen
    folder = the_run(tmp_path)
    assert f"--resume {folder} --gpus 0,1 --simulate" in seen
    first = [r["task"]["id"] for r in store.load(folder)]
    assert 1 <= len(first) < 3
    pids = [int(x) for x in re.findall(r"\(pid (\d+),", seen)]
    time.sleep(0.5)
    for pid in pids:  # no worker outlives the driver that stopped
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
    with start(["--gpus", "0,1", "--no-card-check", "--resume", str(folder)], tmp_path) as p:
        out = p.stdout.read()
    assert p.returncode == 0, out
    done_before = sum(1 for i in first if "repeat" not in i)
    assert f"2 tasks, {done_before} already measured, {2 - done_before} to go" in out
    ids = [r["task"]["id"] for r in store.load(folder)]
    assert sorted(ids) == sorted(["bert-base/prefill/b8s128/bf16", "bert-base/prefill/b1s8/bf16",
                                  "bert-base/prefill/b1s8/bf16/repeat1"]) and ids[:len(first)] == first
