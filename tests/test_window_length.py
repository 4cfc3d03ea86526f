"""bench/window_length.py on the CPU: its arithmetic against numbers worked by hand, and the whole bench on the
simulated card that heats as it draws (Note [Window length and repeats], bench/reproducibility.py)."""

import json

import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")

from bench import window_length as W  # noqa: E402


def row(window_s, energies, name="part", r=0):
    return {"round": r, "window_s": window_s, "name": name, "trial_energy_per_call_j": energies}


def test_a_longer_windows_change_and_its_interval_are_those_of_two_means():
    # 0.4 s: 1.00, 1.02 J (mean 1.01, variance 2e-4); 1.6 s over two rounds: 1.03, 1.05 (mean 1.04, variance 2e-4).
    s = W.summarise([row(0.4, [1.00]), row(1.6, [1.03]), row(1.6, [1.05], r=1), row(0.4, [1.02], r=1)], {})
    long = s["part"]["windows"]["1.6"]
    assert long["trials"] == 2 and long["energy_per_call_j"] == pytest.approx(1.04)
    assert long["change_rel"] == pytest.approx(1.04 / 1.01 - 1)
    assert long["change_ci95_rel"] == pytest.approx(1.96 * (2e-4 / 2 + 2e-4 / 2) ** 0.5 / 1.01)
    assert s["part"]["windows"]["0.4"]["change_rel"] == 0.0


def test_the_transient_is_read_at_its_nearest_bins_against_its_first():
    bins = [{"t_s": 0.25 * i, "energy_per_call_j": 2.0 * (1 + 0.01 * 0.25 * i)} for i in range(12)]  # +1 % per s
    pts = W.transient_points({"bins": bins})
    assert pts["0.5"] == pytest.approx(0.005) and pts["2"] == pytest.approx(0.02)
    assert "4" not in pts  # the transient ended at 2.75 s
    assert W.transient_points(None) == {} and W.transient_points({"bins": []}) == {}


def test_the_bench_on_the_simulated_card_writes_every_window_of_every_capture(tmp_path, capsys):
    assert W.main(["--simulate", "--rounds", "2", "--trials", "2", "--transient-s", "1.5", "--windows", "0.2,0.4",
                   "--out", str(tmp_path)]) == 0
    files = list((tmp_path / "window_length").glob("*.json"))
    assert len(files) == 1 and files[0].name.endswith("_SIM-GPU-0.json")
    res = json.loads(files[0].read_text())
    # ABBA: the first round shortest first, the second longest first; each a measure() of both captures
    assert [(r["round"], r["window_s"]) for r in res["rows"]][::2] == [(0, 0.2), (0, 0.4), (1, 0.4), (1, 0.2)]
    assert {r["name"] for r in res["rows"]} == {"whole_model", "copy"}
    assert all(r["trials"] == 2 and r["window_restarts"] == 0 for r in res["rows"])
    # each row read at its own window: none grew
    for r in res["rows"]:
        assert r["steady_window_s"] == pytest.approx(r["window_s"], rel=0.25)
    assert set(res["summary"]) == {"whole_model", "copy"} and res["summary"]["copy"]["transient"]
    capsys.readouterr()
    assert W.main(["--report", str(tmp_path / "window_length")]) == 0
    table = capsys.readouterr().out
    assert table.count("| SIM-GPU-0 |") == 4 and "| whole_model | 0.4 s |" in table


def test_bad_windows_are_refused_before_any_gpu_time(capsys):
    for bad in (["--windows", "0.4"], ["--windows", "0,0.4"], ["--windows", "a,b"], ["--trials", "1"]):
        with pytest.raises(SystemExit) as e:
            W.parse(bad)
        assert e.value.code == 2
    assert "--windows" in capsys.readouterr().err
